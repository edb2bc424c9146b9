/*
 * cli/import.h - streaming readers of vector files: quiverctl's `import` and `search
 * --vector-file`, and quiver-bench's dataset loaders (bench/datasets.c), read files through here.
 *
 * Two layers:
 *
 *   qv_dense_*   dense row-major numeric files: .fvecs, .bvecs, .ivecs, .npy and IDX (MNIST).
 *                The header parsing and validation of each of these formats lives here once; rows
 *                come back with their raw element type (native byte order), so ids (ivecs, int64
 *                .npy) stay exact.
 *
 *   qv_import_*  the point reader: every import format (the dense ones, plus HDF5 as
 *                ann-benchmarks ships it, JSON lines and CSV) read in batches of points: an id, a
 *                float32 vector and an optional payload as JSON object text.
 *
 * Nothing is loaded whole: a reader keeps one batch (and, for text formats, one line or record)
 * in memory, so files larger than memory import fine.
 *
 * Errors are values (common/common.h): 0 or a negative QV_E* code with a message in *err that
 * names the file, the row or line, and what is wrong. Binary formats count rows from 0 ("row 0"
 * is the first vector, like numpy and `search --row`); text formats count lines from 1, like an
 * editor. Codes:
 *   QV_ENOTFOUND / QV_EPERM  the file cannot be opened (also a missing HDF5 dataset)
 *   QV_EINVAL                not a regular file, an unknown format or extension, bad options
 *   QV_ECORRUPT              malformed content: bad magic or header, a dimension that changes,
 *                            truncated or trailing bytes, non-finite values, bad JSON or CSV
 *   QV_EUNIMPL               a valid file of a kind not supported (Fortran order, float16,
 *                            complex), or HDF5 in a build without it
 *   QV_ERESOURCE             sizes that overflow, out of memory
 *   QV_EUNAVAIL              a read error from the operating system
 *
 * Thread-safety: no global state (HDF5 serialises its own calls); one reader or dense file must
 * not be used by two threads at once.
 */
#ifndef QV_CLI_IMPORT_H
#define QV_CLI_IMPORT_H

#include "common/common.h"
#include "sdk/c/quiver.h" /* qv_point_id (the struct only: no SDK call is made here) */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest vector dimension any reader accepts; the server's limit (CreateCollectionRequest). */
#define QV_IMPORT_MAX_DIM 65536u

/* ---------------------------------------------------------------------------------------------
 * Dense numeric files
 *
 *   .fvecs  rows of [int32 dim][dim x float32], little-endian (TEXMEX / ann formats)
 *   .bvecs  rows of [int32 dim][dim x uint8]
 *   .ivecs  rows of [int32 dim][dim x int32]
 *   .npy    a 2-D C-order array, format version 1, 2 or 3, integer or float elements of 1, 2
 *           (integers only), 4 or 8 bytes, either byte order
 *   IDX     MNIST / Fashion-MNIST: big-endian header, unsigned bytes, 1 to 4 dimensions,
 *           gzip-compressed or plain (zlib reads both); rows are the first dimension
 *
 * qv_dense_open checks the header and the file size against it before anything is allocated,
 * so a lying header neither allocates terabytes nor reads past the end.
 * ------------------------------------------------------------------------------------------- */

typedef enum qv_dense_kind {
    QV_DENSE_FVECS,
    QV_DENSE_BVECS,
    QV_DENSE_IVECS,
    QV_DENSE_NPY,
    QV_DENSE_IDX,
} qv_dense_kind;

typedef enum qv_elem_type {
    QV_ELEM_F32,
    QV_ELEM_F64,
    QV_ELEM_U8,
    QV_ELEM_I8,
    QV_ELEM_U16,
    QV_ELEM_I16,
    QV_ELEM_U32,
    QV_ELEM_I32,
    QV_ELEM_U64,
    QV_ELEM_I64,
} qv_elem_type;

/* Bytes per element; "float32", "uint8", ... for messages (static strings). */
size_t qv_elem_size(qv_elem_type t);
const char *qv_elem_name(qv_elem_type t);

typedef struct qv_dense_info {
    uint64_t rows;     /* >= 1 */
    size_t dim;        /* elements per row, 1..QV_IMPORT_MAX_DIM */
    qv_elem_type elem; /* element type as stored; rows are returned in native byte order */
    unsigned ndims;    /* IDX: dimensions of the array (1 for a label file); others: 2 */
} qv_dense_info;

typedef struct qv_dense_file qv_dense_file;

/* Opens `path` (borrowed for the call) as `kind` and validates its header and size. On success
 * *out is a file positioned at row 0 that the caller releases with qv_dense_close. */
int qv_dense_open(const char *path, qv_dense_kind kind, qv_dense_file **out, qv_status *err);

/* Shape and element type; valid until qv_dense_close. */
const qv_dense_info *qv_dense_info_of(const qv_dense_file *f);

/* Index of the next row qv_dense_read returns. */
uint64_t qv_dense_row(const qv_dense_file *f);

/* Reads the next n rows (n <= rows left; QV_ERANGE otherwise) into dst, n * dim elements of the
 * file's element type in native byte order. *vecs rows are checked against the first row's
 * dimension; reading the last row of a gzip IDX file checks that nothing trails it. */
int qv_dense_read(qv_dense_file *f, size_t n, void *dst, qv_status *err);

/* Positions the file at `row` (0..rows). Cheap for plain files; a gzip IDX file can only move
 * forward and decompresses what it skips. */
int qv_dense_seek(qv_dense_file *f, uint64_t row, qv_status *err);

/* Closes the file. NULL is ignored. */
void qv_dense_close(qv_dense_file *f);

/* Converts n elements of type t at src to float32 at dst. Fails (QV_ECORRUPT, returning the
 * offending element's index in *bad) on a NaN, an infinity or a value beyond float32's range;
 * integers are widened (64-bit ones may round). */
int qv_elem_to_f32(qv_elem_type t, const void *src, size_t n, float *dst, size_t *bad);

/* ---------------------------------------------------------------------------------------------
 * Point reader
 * ------------------------------------------------------------------------------------------- */

typedef enum qv_import_format {
    QV_IMPORT_AUTO = 0, /* by the file name (qv_import_format_guess) */
    QV_IMPORT_FVECS,
    QV_IMPORT_BVECS,
    QV_IMPORT_NPY,   /* float32, float64, uint8 or int8 */
    QV_IMPORT_HDF5,  /* a 2-D dataset, "train" unless opts->dataset says otherwise */
    QV_IMPORT_JSONL, /* {"id": 7 | "uuid", "vector": [...], "payload": {...}} per line */
    QV_IMPORT_CSV,   /* header row; id, v0..v{d-1} or vector, other columns -> payload */
    QV_IMPORT_IDX,   /* MNIST images; payload {"label": N} from the sibling labels file */
} qv_import_format;

/* "fvecs", "bvecs", "npy", "hdf5", "jsonl", "csv", "idx" ("auto" for QV_IMPORT_AUTO). */
const char *qv_import_format_name(qv_import_format f);

/* Parses a name as above (also "h5", "ndjson"); QV_EINVAL for anything else. */
int qv_import_format_parse(const char *name, qv_import_format *out);

/* The format a file name suggests, case-insensitively: .fvecs, .bvecs, .npy, .h5/.hdf5/.hdf,
 * .jsonl/.ndjson, .csv, and IDX names (*-idx1-ubyte, *-idx3-ubyte, .idx, each optionally .gz).
 * QV_IMPORT_AUTO when nothing matches. */
qv_import_format qv_import_format_guess(const char *path);

/* Options of qv_import_open; zero-initialise. Strings are read during qv_import_open only. */
typedef struct qv_import_opts {
    const char *dataset;     /* HDF5: the dataset to read; NULL: "train" */
    uint64_t start_id;       /* id of row 0 when the file carries no ids (row i: start_id + i);
                                JSONL/CSV lines without an id take start_id + their row index */
    const char *labels_path; /* IDX: labels file; NULL: the sibling (train-images-idx3-ubyte.gz
                                -> train-labels-idx1-ubyte.gz) when it exists, else no payload */
    bool no_labels;          /* IDX: ignore the labels file */
} qv_import_opts;

/* One batch. Every pointer belongs to the reader and stays valid until the next qv_import_next,
 * qv_import_skip or qv_import_close. */
typedef struct qv_import_batch {
    size_t n;                    /* points in the batch; 0 at the end of the file */
    size_t dim;                  /* floats per vector (the reader's dimension) */
    uint64_t first_row;          /* row index of the first point in the file (0-based) */
    const qv_point_id *ids;      /* n ids */
    const float *vectors;        /* n * dim floats, row-major, all finite */
    const char *const *payloads; /* NULL: the format has none; else n entries, each NULL (no
                                    payload) or the text of a JSON object, passed on unparsed
                                    (JSONL) or built here (CSV, IDX) */
} qv_import_batch;

typedef struct qv_import_reader qv_import_reader;

/* Opens `path` in `format` (QV_IMPORT_AUTO: guessed from the name; QV_EINVAL when it cannot be)
 * and reads what the dimension needs: the header of binary formats, the CSV header row, the first
 * JSON line. opts may be NULL. On success *out is a reader the caller releases with
 * qv_import_close. */
int qv_import_open(const char *path, qv_import_format format, const qv_import_opts *opts,
                   qv_import_reader **out, qv_status *err);

/* Dimension of every vector in the file (>= 1) and the format actually read. */
size_t qv_import_dim(const qv_import_reader *r);
qv_import_format qv_import_format_of(const qv_import_reader *r);

/* Rows in the file when the format says so up front (binary formats): true and *rows set; false
 * for JSONL and CSV, whose progress is measured in bytes instead. */
bool qv_import_total_rows(const qv_import_reader *r, uint64_t *rows);

/* Bytes of the file consumed so far and its size (for a progress bar of text formats). */
void qv_import_bytes(const qv_import_reader *r, uint64_t *done, uint64_t *total);

/* The metric the file declares, as the SDK spells it ("l2", "cosine", "dot"), or NULL: HDF5
 * files from ann-benchmarks carry a "distance" attribute (euclidean, angular, dot). Static. */
const char *qv_import_metric_hint(const qv_import_reader *r);

/* Reads up to max_rows (>= 1) points into *out; out->n == 0 at the end of the file. On error
 * *out is zeroed and the reader must only be closed. */
int qv_import_next(qv_import_reader *r, size_t max_rows, qv_import_batch *out, qv_status *err);

/* Skips the next `rows` points (seeking where the format allows, reading otherwise). QV_ERANGE
 * with a message saying how many rows the file has when it ends first. */
int qv_import_skip(qv_import_reader *r, uint64_t rows, qv_status *err);

/* Closes the reader and frees its buffers. NULL is ignored. */
void qv_import_close(qv_import_reader *r);

/* Parses a vector written as text, the way CSV's "vector" column (and `quiverctl search
 * --vector`) takes it: finite numbers separated by commas and/or white space, optionally in
 * brackets: "[1.0, 2.0]", "1 2", "1,-2e3". On success *out is a malloc'ed array of *dim floats
 * (1..QV_IMPORT_MAX_DIM) that the caller frees. QV_EINVAL with a message otherwise. */
int qv_import_parse_vector(const char *text, float **out, size_t *dim, qv_status *err);

#ifdef __cplusplus
}
#endif

#endif /* QV_CLI_IMPORT_H */
