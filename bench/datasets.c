/*
 * Vector file loaders and writers (see datasets.h for the formats and the contract).
 *
 * The formats themselves are parsed in one place, cli/import_dense.c (qv_dense_*, shared with
 * quiverctl's import): this file reads whole files through it into qv_vecs / qv_ids, adds the
 * checks only benchmarks need (ids in 0..2^31-1, IDX labels 0..9 for Fashion-MNIST), and writes
 * *vecs files.
 *
 * Map: helpers (errors, allocation) / whole-file loads on top of qv_dense (vectors, ids, IDX) /
 * Fashion-MNIST / the writers.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench/datasets.h"
#include "cli/import.h"

#include <errno.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define IO_CHUNK (1u << 20) /* bytes of raw rows converted per read */

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

static int fail(qv_status *err, int code, const char *fmt, ...) QV_PRINTF(3, 4);

static int fail(qv_status *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

static bool mul_overflows(size_t a, size_t b, size_t *out)
{
    if (a != 0 && b > SIZE_MAX / a)
        return true;
    *out = a * b;
    return false;
}

void qv_vecs_free(qv_vecs *v)
{
    if (v == NULL)
        return;
    free(v->data);
    memset(v, 0, sizeof(*v));
}

void qv_ids_free(qv_ids *g)
{
    if (g == NULL)
        return;
    free(g->ids);
    memset(g, 0, sizeof(*g));
}

int qv_vecs_alloc(size_t n, size_t dim, qv_vecs *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    size_t elems, bytes;
    if (mul_overflows(n, dim, &elems) || mul_overflows(elems, sizeof(float), &bytes) ||
        bytes > SIZE_MAX - 63)
        return fail(err, QV_ERESOURCE, "%zu x %zu floats overflow the address space", n, dim);
    if (bytes > 0) {
        out->data = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
        if (out->data == NULL)
            return fail(err, QV_ERESOURCE, "out of memory for %zu x %zu floats (%zu MiB)", n, dim,
                        bytes >> 20);
    }
    out->n = n;
    out->dim = dim;
    return 0;
}

static int ids_alloc(size_t n, size_t k, qv_ids *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    size_t elems, bytes;
    if (mul_overflows(n, k, &elems) || mul_overflows(elems, sizeof(int32_t), &bytes))
        return fail(err, QV_ERESOURCE, "%zu x %zu ids overflow the address space", n, k);
    if (bytes > 0) {
        out->ids = malloc(bytes);
        if (out->ids == NULL)
            return fail(err, QV_ERESOURCE, "out of memory for %zu x %zu ids", n, k);
    }
    out->n = n;
    out->k = k;
    return 0;
}

static const char *extension(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    if (dot == NULL || (slash != NULL && dot < slash))
        return "";
    return dot;
}

/* Rows to read: all, or the first `limit`. */
static int rows_wanted(const qv_dense_info *info, size_t limit, const char *path, size_t *n,
                       qv_status *err)
{
    if (info->rows > SIZE_MAX)
        return fail(err, QV_ERESOURCE, "%s: %llu rows do not fit in memory", path,
                    (unsigned long long)info->rows);
    *n = limit > 0 && limit < info->rows ? limit : (size_t)info->rows;
    return 0;
}

/* A buffer for up to IO_CHUNK bytes of raw rows (at least one row); *rows how many it holds. */
static void *chunk_alloc(const qv_dense_info *info, size_t *rows, qv_status *err)
{
    size_t rowbytes = info->dim * qv_elem_size(info->elem);
    *rows = IO_CHUNK / rowbytes > 0 ? IO_CHUNK / rowbytes : 1;
    void *p = malloc(*rows * rowbytes);
    if (p == NULL)
        fail(err, QV_ERESOURCE, "out of memory");
    return p;
}

/* ---------------------------------------------------------------------------------------------
 * Whole-file loads over qv_dense
 * ------------------------------------------------------------------------------------------- */

/* Every row (or `limit`) of an open dense file as float32 into *out. */
static int dense_vectors(qv_dense_file *f, const char *path, size_t limit, qv_vecs *out,
                         qv_status *err)
{
    const qv_dense_info *info = qv_dense_info_of(f);
    size_t n, chunk;
    qv_vecs v = {0};
    int rc = rows_wanted(info, limit, path, &n, err);
    if (rc != 0)
        return rc;
    rc = qv_vecs_alloc(n, info->dim, &v, err);
    if (rc != 0)
        return rc;
    uint8_t *raw = chunk_alloc(info, &chunk, err);
    if (raw == NULL) {
        rc = QV_ERESOURCE;
        goto fail_data;
    }
    size_t rowbytes = info->dim * qv_elem_size(info->elem);
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        rc = qv_dense_read(f, m, raw, err);
        if (rc != 0)
            goto fail_raw;
        for (size_t r = 0; r < m; r++) {
            size_t bad = 0;
            if (qv_elem_to_f32(info->elem, raw + r * rowbytes, info->dim,
                               v.data + (i + r) * info->dim, &bad) != 0) {
                rc = fail(err, QV_ECORRUPT, "%s: row %zu, column %zu is not a finite float32", path,
                          i + r, bad);
                goto fail_raw;
            }
        }
    }
    free(raw);
    *out = v;
    return 0;

fail_raw:
    free(raw);
fail_data:
    qv_vecs_free(&v);
    return rc;
}

/* Every row (or `limit`) of an open dense file of integers as ids in 0..2^31-1. */
static int dense_ids(qv_dense_file *f, const char *path, size_t limit, qv_ids *out, qv_status *err)
{
    const qv_dense_info *info = qv_dense_info_of(f);
    size_t n, chunk;
    qv_ids g = {0};
    int rc = rows_wanted(info, limit, path, &n, err);
    if (rc != 0)
        return rc;
    rc = ids_alloc(n, info->dim, &g, err);
    if (rc != 0)
        return rc;
    uint8_t *raw = chunk_alloc(info, &chunk, err);
    if (raw == NULL) {
        rc = QV_ERESOURCE;
        goto fail_data;
    }
    size_t k = info->dim, esize = qv_elem_size(info->elem);
    bool is_signed = info->elem == QV_ELEM_I32 || info->elem == QV_ELEM_I64;
    for (size_t i = 0; i < n; i += chunk) {
        size_t m = n - i < chunk ? n - i : chunk;
        rc = qv_dense_read(f, m, raw, err);
        if (rc != 0)
            goto fail_raw;
        for (size_t e = 0; e < m * k; e++) {
            int64_t id;
            bool bad;
            if (esize == 4) {
                uint32_t u;
                memcpy(&u, raw + e * 4, 4);
                id = is_signed ? (int64_t)(int32_t)u : (int64_t)u;
                bad = is_signed ? (int32_t)u < 0 : u > INT32_MAX;
            } else {
                uint64_t u;
                memcpy(&u, raw + e * 8, 8);
                id = (int64_t)u;
                bad = is_signed ? ((int64_t)u < 0 || (int64_t)u > INT32_MAX) : u > INT32_MAX;
            }
            if (bad) {
                size_t row = i + e / k, col = e % k;
                rc = id < 0 ? fail(err, QV_ECORRUPT,
                                   "%s: row %zu, column %zu holds a negative id (%lld)", path, row,
                                   col, (long long)id)
                            : fail(err, QV_ECORRUPT,
                                   "%s: row %zu, column %zu: id out of "
                                   "0..2^31-1",
                                   path, row, col);
                goto fail_raw;
            }
            g.ids[i * k + e] = (int32_t)id;
        }
    }
    free(raw);
    *out = g;
    return 0;

fail_raw:
    free(raw);
fail_data:
    qv_ids_free(&g);
    return rc;
}

static int load_vectors_as(const char *path, qv_dense_kind kind, size_t limit, qv_vecs *out,
                           qv_status *err)
{
    memset(out, 0, sizeof(*out));
    qv_dense_file *f;
    int rc = qv_dense_open(path, kind, &f, err);
    if (rc != 0)
        return rc;
    qv_elem_type t = qv_dense_info_of(f)->elem;
    if (kind == QV_DENSE_NPY && t != QV_ELEM_F32 && t != QV_ELEM_F64 && t != QV_ELEM_U8 &&
        t != QV_ELEM_I8)
        rc = fail(err, QV_EUNIMPL, "%s: vectors must be float32, float64, uint8 or int8, not %s",
                  path, qv_elem_name(t));
    else
        rc = dense_vectors(f, path, limit, out, err);
    qv_dense_close(f);
    return rc;
}

static int load_ids_as(const char *path, qv_dense_kind kind, size_t limit, qv_ids *out,
                       qv_status *err)
{
    memset(out, 0, sizeof(*out));
    qv_dense_file *f;
    int rc = qv_dense_open(path, kind, &f, err);
    if (rc != 0)
        return rc;
    qv_elem_type t = qv_dense_info_of(f)->elem;
    if (t != QV_ELEM_I32 && t != QV_ELEM_U32 && t != QV_ELEM_I64 && t != QV_ELEM_U64)
        rc = fail(err, QV_EUNIMPL, "%s: ids must be int32, int64, uint32 or uint64, not %s", path,
                  qv_elem_name(t));
    else
        rc = dense_ids(f, path, limit, out, err);
    qv_dense_close(f);
    return rc;
}

int qv_ds_load_fvecs(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    return load_vectors_as(path, QV_DENSE_FVECS, limit, out, err);
}

int qv_ds_load_bvecs(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    return load_vectors_as(path, QV_DENSE_BVECS, limit, out, err);
}

int qv_ds_load_npy(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    return load_vectors_as(path, QV_DENSE_NPY, limit, out, err);
}

int qv_ds_load_ivecs(const char *path, size_t limit, qv_ids *out, qv_status *err)
{
    return load_ids_as(path, QV_DENSE_IVECS, limit, out, err);
}

int qv_ds_load_npy_ids(const char *path, size_t limit, qv_ids *out, qv_status *err)
{
    return load_ids_as(path, QV_DENSE_NPY, limit, out, err);
}

int qv_ds_load_vectors(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    const char *ext = extension(path);
    memset(out, 0, sizeof(*out));
    if (strcasecmp(ext, ".fvecs") == 0)
        return qv_ds_load_fvecs(path, limit, out, err);
    if (strcasecmp(ext, ".bvecs") == 0)
        return qv_ds_load_bvecs(path, limit, out, err);
    if (strcasecmp(ext, ".npy") == 0)
        return qv_ds_load_npy(path, limit, out, err);
    return fail(err, QV_EINVAL, "%s: unknown vector file type '%s' (expected .fvecs, .bvecs, .npy)",
                path, ext);
}

int qv_ds_load_ids(const char *path, size_t limit, qv_ids *out, qv_status *err)
{
    const char *ext = extension(path);
    memset(out, 0, sizeof(*out));
    if (strcasecmp(ext, ".ivecs") == 0)
        return qv_ds_load_ivecs(path, limit, out, err);
    if (strcasecmp(ext, ".npy") == 0)
        return qv_ds_load_npy_ids(path, limit, out, err);
    return fail(err, QV_EINVAL, "%s: unknown ground-truth file type '%s' (expected .ivecs, .npy)",
                path, ext);
}

int qv_ds_load_idx(const char *path, qv_vecs *out, uint8_t **labels, size_t *nlabels,
                   qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (labels != NULL)
        *labels = NULL;
    if (nlabels != NULL)
        *nlabels = 0;
    if ((out == NULL) == (labels == NULL) || (labels != NULL && nlabels == NULL))
        return fail(err, QV_EINVAL, "qv_ds_load_idx: pass either out or labels+nlabels");
    qv_dense_file *f;
    int rc = qv_dense_open(path, QV_DENSE_IDX, &f, err);
    if (rc != 0)
        return rc;
    const qv_dense_info *info = qv_dense_info_of(f);
    if ((info->ndims == 1) != (labels != NULL)) {
        rc = fail(err, QV_ECORRUPT, "%s: expected an IDX %s file, found %u dimensions", path,
                  labels != NULL ? "label (1-D)" : "image (2-D or more)", info->ndims);
        goto out;
    }
    if (out != NULL) {
        rc = dense_vectors(f, path, 0, out, err);
        goto out;
    }
    size_t n;
    rc = rows_wanted(info, 0, path, &n, err);
    if (rc != 0)
        goto out;
    uint8_t *bytes = malloc(n);
    if (bytes == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory for %zu labels", n);
        goto out;
    }
    rc = qv_dense_read(f, n, bytes, err);
    if (rc != 0) {
        free(bytes);
        goto out;
    }
    *labels = bytes;
    *nlabels = n;
out:
    qv_dense_close(f);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Fashion-MNIST
 * ------------------------------------------------------------------------------------------- */

void qv_fashion_mnist_free(qv_fashion_mnist *f)
{
    if (f == NULL)
        return;
    qv_vecs_free(&f->train);
    qv_vecs_free(&f->test);
    free(f->train_labels);
    free(f->test_labels);
    memset(f, 0, sizeof(*f));
}

int qv_ds_load_fashion_mnist(const char *dir, qv_fashion_mnist *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    if (dir == NULL)
        dir = QV_FASHION_MNIST_DIR;
    static const char *const names[4] = {
        "train-images-idx3-ubyte.gz",
        "train-labels-idx1-ubyte.gz",
        "t10k-images-idx3-ubyte.gz",
        "t10k-labels-idx1-ubyte.gz",
    };
    qv_fashion_mnist f = {0};
    size_t nlab[2] = {0, 0};
    int rc = 0;
    for (int i = 0; i < 4 && rc == 0; i++) {
        char path[4096];
        if ((size_t)snprintf(path, sizeof(path), "%s/%s", dir, names[i]) >= sizeof(path)) {
            rc = fail(err, QV_EINVAL, "fashion-mnist directory name too long");
            break;
        }
        switch (i) {
        case 0:
            rc = qv_ds_load_idx(path, &f.train, NULL, NULL, err);
            break;
        case 1:
            rc = qv_ds_load_idx(path, NULL, &f.train_labels, &nlab[0], err);
            break;
        case 2:
            rc = qv_ds_load_idx(path, &f.test, NULL, NULL, err);
            break;
        default:
            rc = qv_ds_load_idx(path, NULL, &f.test_labels, &nlab[1], err);
            break;
        }
        if (rc == QV_ENOTFOUND && err != NULL) {
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof(err->msg) - len,
                     " (install Debian's dataset-fashion-mnist)");
        }
    }
    if (rc != 0)
        goto fail_all;
    if (nlab[0] != f.train.n || nlab[1] != f.test.n) {
        rc = fail(err, QV_ECORRUPT, "%s: %zu/%zu train images/labels and %zu/%zu test ones differ",
                  dir, f.train.n, nlab[0], f.test.n, nlab[1]);
        goto fail_all;
    }
    if (f.train.dim != f.test.dim) {
        rc = fail(err, QV_ECORRUPT, "%s: train images have %zu pixels, test images %zu", dir,
                  f.train.dim, f.test.dim);
        goto fail_all;
    }
    for (size_t i = 0; i < nlab[0] + nlab[1]; i++) {
        uint8_t l = i < nlab[0] ? f.train_labels[i] : f.test_labels[i - nlab[0]];
        if (l > 9) {
            rc = fail(err, QV_ECORRUPT, "%s: label %u out of 0..9 (%s #%zu)", dir, (unsigned)l,
                      i < nlab[0] ? "train" : "test", i < nlab[0] ? i : i - nlab[0]);
            goto fail_all;
        }
    }
    *out = f;
    return 0;

fail_all:
    qv_fashion_mnist_free(&f);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Writers
 * ------------------------------------------------------------------------------------------- */

static int write_xvecs(const char *path, const void *data, size_t n, size_t dim, qv_status *err)
{
    if (dim == 0 || dim > INT32_MAX)
        return fail(err, QV_EINVAL, "%s: row width %zu does not fit the format", path, dim);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        int e = errno;
        return fail(err, qv_from_errno(e), "%s: cannot create: %s", path, strerror(e));
    }
    const uint8_t *p = data;
    uint8_t hdr[4] = {(uint8_t)dim, (uint8_t)(dim >> 8), (uint8_t)(dim >> 16),
                      (uint8_t)(dim >> 24)};
    bool ok = true;
    for (size_t i = 0; i < n && ok; i++, p += dim * 4)
        ok = fwrite(hdr, 1, 4, f) == 4 && fwrite(p, 4, dim, f) == dim;
    int e = errno;
    if (fclose(f) != 0 && ok) {
        ok = false;
        e = errno;
    }
    if (!ok) {
        remove(path);
        return fail(err, qv_from_errno(e), "%s: write failed: %s", path, strerror(e));
    }
    return 0;
}

int qv_ds_write_fvecs(const char *path, const float *data, size_t n, size_t dim, qv_status *err)
{
    return write_xvecs(path, data, n, dim, err);
}

int qv_ds_write_ivecs(const char *path, const int32_t *ids, size_t n, size_t k, qv_status *err)
{
    return write_xvecs(path, ids, n, k, err);
}
