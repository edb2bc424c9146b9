/*
 * bench/datasets.h - loaders and writers for the vector file formats benchmarks use.
 *
 * Whole files in memory, for benchmarks; the formats are parsed by cli/import.h's qv_dense layer,
 * which quiverctl's streaming import shares. Formats:
 *   .fvecs  rows of [int32 dim][dim x float32], little-endian (the TEXMEX / ann format)
 *   .bvecs  rows of [int32 dim][dim x uint8], widened to float
 *   .ivecs  rows of [int32 dim][dim x int32]: ground-truth neighbour ids
 *   .npy    a 2-D C-order array, format version 1, 2 or 3; float32, float64, uint8 or int8 for
 *           vectors (float64 is narrowed to float32), int32 or int64 for ids; either byte order
 *   IDX     the MNIST / Fashion-MNIST format (big-endian header, unsigned bytes), gzip-compressed
 *           or not (zlib reads both)
 *
 * Every loader validates what it reads (magic numbers, header syntax, a dimension that changes
 * between rows, truncated or trailing bytes, sizes that overflow, non-finite floats, negative ids)
 * and fails with a qv_status naming the file and the problem: a bad file never crashes the caller
 * and never yields a half-filled result (on error the out-parameter is left empty).
 *
 * Thread-safety: the functions keep no global state; distinct calls may run concurrently.
 */
#ifndef QV_BENCH_DATASETS_H
#define QV_BENCH_DATASETS_H

#include "common/common.h"

#include <stddef.h>
#include <stdint.h>

/* Largest dimension (columns) accepted by every loader; matches QV_INDEX_MAX_DIM. */
#define QV_DS_MAX_DIM 65536u

/* A row-major matrix of float vectors: n rows of dim floats. `data` is 64-byte aligned, owned by
 * the struct and released by qv_vecs_free; it is NULL when n == 0. */
typedef struct qv_vecs {
    float *data;
    size_t n;
    size_t dim;
} qv_vecs;

/* A row-major matrix of neighbour ids (ground truth): n rows of k ids, each in [0, INT32_MAX].
 * Owned like qv_vecs, released by qv_ids_free. */
typedef struct qv_ids {
    int32_t *ids;
    size_t n;
    size_t k;
} qv_ids;

/* Releases the arrays and zeroes the struct. NULL and already-empty structs are fine. */
void qv_vecs_free(qv_vecs *v);
void qv_ids_free(qv_ids *g);

/* Allocates an n x dim matrix (64-byte aligned, uninitialised). QV_ERESOURCE when the size
 * overflows or memory runs out. On success the caller owns *out (qv_vecs_free). */
int qv_vecs_alloc(size_t n, size_t dim, qv_vecs *out, qv_status *err);

/*
 * Loaders. `path` is borrowed for the call. `limit` > 0 keeps only the first `limit` rows (the
 * rest of the file is still checked for size consistency but not read); 0 reads every row.
 * On success *out owns the data; on error *out is zeroed and *err says why:
 *   QV_ENOTFOUND / QV_EPERM  the file cannot be opened
 *   QV_ECORRUPT              malformed content (bad magic or header, dimension mismatch, truncated
 *                            or trailing bytes, non-finite floats, out-of-range ids)
 *   QV_EUNIMPL               a valid file of a kind not supported (Fortran order, complex dtype)
 *   QV_ERESOURCE             sizes that overflow size_t, or out of memory
 *   QV_EINVAL                an unknown file extension (qv_ds_load_vectors / qv_ds_load_ids)
 */
int qv_ds_load_fvecs(const char *path, size_t limit, qv_vecs *out, qv_status *err);
int qv_ds_load_bvecs(const char *path, size_t limit, qv_vecs *out, qv_status *err);
int qv_ds_load_npy(const char *path, size_t limit, qv_vecs *out, qv_status *err);
int qv_ds_load_ivecs(const char *path, size_t limit, qv_ids *out, qv_status *err);
/* Ground truth from an .npy array of int32 or int64. */
int qv_ds_load_npy_ids(const char *path, size_t limit, qv_ids *out, qv_status *err);

/* By extension: .fvecs, .bvecs, .npy for vectors; .ivecs, .npy for ids (case-insensitive). */
int qv_ds_load_vectors(const char *path, size_t limit, qv_vecs *out, qv_status *err);
int qv_ds_load_ids(const char *path, size_t limit, qv_ids *out, qv_status *err);

/* One IDX file of unsigned bytes (magic 0x0000 08 NDIMS), gzip-compressed or plain. Images
 * (ndims >= 2) become rows of prod(dims[1..]) floats with the raw values 0..255; `labels` is set
 * instead of `out` for a 1-D file. Exactly one of out / labels must be non-NULL and it must match
 * the file's dimensionality (QV_ECORRUPT otherwise). *labels is malloc'ed, *nlabels its length. */
int qv_ds_load_idx(const char *path, qv_vecs *out, uint8_t **labels, size_t *nlabels,
                   qv_status *err);

/* Fashion-MNIST as Debian's dataset-fashion-mnist ships it. */
#define QV_FASHION_MNIST_DIR "/usr/share/datasets/fashion-mnist"

typedef struct qv_fashion_mnist {
    qv_vecs train;         /* 60,000 x 784, raw pixel values 0..255 as floats */
    qv_vecs test;          /* 10,000 x 784 */
    uint8_t *train_labels; /* train.n labels, 0..9 */
    uint8_t *test_labels;  /* test.n labels, 0..9 */
} qv_fashion_mnist;

/* Reads {train,t10k}-{images-idx3,labels-idx1}-ubyte.gz from `dir` (NULL: QV_FASHION_MNIST_DIR)
 * and checks that images and labels agree in count, both image sets have the same dimension and
 * every label is 0..9. All or nothing; release with qv_fashion_mnist_free. */
int qv_ds_load_fashion_mnist(const char *dir, qv_fashion_mnist *out, qv_status *err);
void qv_fashion_mnist_free(qv_fashion_mnist *f);

/* Writers: create or truncate `path` and write n rows. Fails with QV_EINVAL when dim/k is 0 or
 * does not fit the format's int32 header, and with a code from errno (message naming the file)
 * when the file cannot be written; a failed write removes the partial file. */
int qv_ds_write_fvecs(const char *path, const float *data, size_t n, size_t dim, qv_status *err);
int qv_ds_write_ivecs(const char *path, const int32_t *ids, size_t n, size_t k, qv_status *err);

#endif /* QV_BENCH_DATASETS_H */
