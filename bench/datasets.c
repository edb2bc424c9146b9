/*
 * Vector file loaders and writers (see datasets.h for the formats and the contract).
 *
 * Map: helpers (errors, allocation, byte order, file opening) / the *vecs family, one reader for
 * the three element types / .npy (header dictionary parser, then the data) / IDX through zlib and
 * Fashion-MNIST on top of it / the writers.
 *
 * Every size read from a file is checked against the file's real length before anything is
 * allocated, so a hostile header cannot make us allocate terabytes or read past the end.
 */
#define _POSIX_C_SOURCE 200809L
#include "bench/datasets.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>

#include <zlib.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bench/datasets.c assumes a little-endian host (the *vecs formats are little-endian)"
#endif

#define NPY_HEADER_MAX (1u << 20) /* numpy writes a few hundred bytes; refuse absurd lengths */
#define IO_CHUNK       (1u << 20)

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

static uint32_t le32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint32_t be32(const uint8_t *p)
{
    return (uint32_t)p[3] | (uint32_t)p[2] << 8 | (uint32_t)p[1] << 16 | (uint32_t)p[0] << 24;
}

static void bswap_inplace(uint8_t *p, size_t count, size_t size)
{
    for (size_t i = 0; i < count; i++, p += size)
        for (size_t a = 0, b = size - 1; a < b; a++, b--) {
            uint8_t t = p[a];
            p[a] = p[b];
            p[b] = t;
        }
}

/* Opens a regular file for reading and returns its length. */
static int open_regular(const char *path, FILE **out, uint64_t *size, qv_status *err)
{
    *out = NULL;
    FILE *f = fopen(path, "rb");
    if (f == NULL) {
        int e = errno;
        return fail(err, qv_from_errno(e), "%s: cannot open: %s", path, strerror(e));
    }
    struct stat st;
    if (fstat(fileno(f), &st) != 0) {
        int e = errno;
        fclose(f);
        return fail(err, qv_from_errno(e), "%s: cannot stat: %s", path, strerror(e));
    }
    if (!S_ISREG(st.st_mode)) {
        fclose(f);
        return fail(err, QV_EINVAL, "%s: not a regular file", path);
    }
    *out = f;
    *size = (uint64_t)st.st_size;
    return 0;
}

/* Reads exactly len bytes; a short read means the file changed under us or an I/O error. */
static int read_exact(FILE *f, void *buf, size_t len, const char *path, qv_status *err)
{
    if (len == 0 || fread(buf, 1, len, f) == len)
        return 0;
    if (ferror(f))
        return fail(err, QV_EUNAVAIL, "%s: read error: %s", path, strerror(errno));
    return fail(err, QV_ECORRUPT, "%s: truncated (file shrank while reading?)", path);
}

static const char *extension(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *dot = strrchr(path, '.');
    if (dot == NULL || (slash != NULL && dot < slash))
        return "";
    return dot;
}

/* ---------------------------------------------------------------------------------------------
 * fvecs / bvecs / ivecs
 * ------------------------------------------------------------------------------------------- */

typedef enum elem_kind {
    ELEM_F32, /* fvecs -> float */
    ELEM_U8,  /* bvecs -> float */
    ELEM_I32, /* ivecs -> int32 ids >= 0 */
} elem_kind;

static size_t elem_size(elem_kind kind)
{
    return kind == ELEM_U8 ? 1 : 4;
}

/* Converts one row's payload into dst (float* or int32_t*); checks values. */
static int convert_row(elem_kind kind, const uint8_t *src, size_t dim, void *dst, size_t row,
                       const char *path, qv_status *err)
{
    if (kind == ELEM_U8) {
        float *d = dst;
        for (size_t j = 0; j < dim; j++)
            d[j] = (float)src[j];
        return 0;
    }
    if (kind == ELEM_F32) {
        float *d = dst;
        memcpy(d, src, dim * sizeof(float));
        for (size_t j = 0; j < dim; j++)
            if (!isfinite(d[j]))
                return fail(err, QV_ECORRUPT, "%s: row %zu, column %zu is not a finite number",
                            path, row, j);
        return 0;
    }
    int32_t *d = dst;
    memcpy(d, src, dim * sizeof(int32_t));
    for (size_t j = 0; j < dim; j++)
        if (d[j] < 0)
            return fail(err, QV_ECORRUPT, "%s: row %zu, column %zu holds a negative id (%d)", path,
                        row, j, (int)d[j]);
    return 0;
}

/* Reads a *vecs file into *data (float or int32 rows, allocated here). */
static int load_xvecs(const char *path, size_t limit, elem_kind kind, void **data, size_t *n_out,
                      size_t *dim_out, qv_status *err)
{
    *data = NULL;
    *n_out = *dim_out = 0;
    FILE *f = NULL;
    uint8_t *row = NULL;
    qv_vecs v = {0};
    qv_ids g = {0};
    uint64_t fsize;
    int rc = open_regular(path, &f, &fsize, err);
    if (rc != 0)
        return rc;
    uint8_t hdr[4];
    if (fsize == 0) {
        rc = fail(err, QV_ECORRUPT, "%s: empty file", path);
        goto fail_file;
    }
    if (fsize < 4) {
        rc = fail(err, QV_ECORRUPT, "%s: truncated: %llu bytes, not even one row header", path,
                  (unsigned long long)fsize);
        goto fail_file;
    }
    rc = read_exact(f, hdr, 4, path, err);
    if (rc != 0)
        goto fail_file;
    int32_t d0 = (int32_t)le32(hdr);
    if (d0 <= 0 || (uint32_t)d0 > QV_DS_MAX_DIM) {
        rc = fail(err, QV_ECORRUPT, "%s: first row declares dimension %d (expected 1..%u)", path,
                  (int)d0, QV_DS_MAX_DIM);
        goto fail_file;
    }
    size_t dim = (size_t)d0;
    uint64_t rowbytes = 4 + (uint64_t)dim * elem_size(kind);
    if (fsize % rowbytes != 0) {
        rc = fail(err, QV_ECORRUPT,
                  "%s: %llu bytes is not a whole number of %llu-byte rows (dimension %zu): "
                  "truncated or trailing bytes",
                  path, (unsigned long long)fsize, (unsigned long long)rowbytes, dim);
        goto fail_file;
    }
    uint64_t total = fsize / rowbytes;
    if (total > SIZE_MAX) {
        rc = fail(err, QV_ERESOURCE, "%s: %llu rows do not fit in memory", path,
                  (unsigned long long)total);
        goto fail_file;
    }
    size_t n = limit > 0 && limit < total ? limit : (size_t)total;
    rc = kind == ELEM_I32 ? ids_alloc(n, dim, &g, err) : qv_vecs_alloc(n, dim, &v, err);
    if (rc != 0)
        goto fail_file;
    row = malloc((size_t)rowbytes);
    if (row == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto fail_data;
    }
    rewind(f);
    for (size_t i = 0; i < n; i++) {
        rc = read_exact(f, row, (size_t)rowbytes, path, err);
        if (rc != 0)
            goto fail_data;
        int32_t d = (int32_t)le32(row);
        if (d != d0) {
            rc = fail(err, QV_ECORRUPT, "%s: row %zu declares dimension %d, the first row %d", path,
                      i, (int)d, (int)d0);
            goto fail_data;
        }
        void *dst = kind == ELEM_I32 ? (void *)(g.ids + i * dim) : (void *)(v.data + i * dim);
        rc = convert_row(kind, row + 4, dim, dst, i, path, err);
        if (rc != 0)
            goto fail_data;
    }
    free(row);
    fclose(f);
    *data = kind == ELEM_I32 ? (void *)g.ids : (void *)v.data;
    *n_out = n;
    *dim_out = dim;
    return 0;

fail_data:
    free(row);
    qv_vecs_free(&v);
    qv_ids_free(&g);
fail_file:
    fclose(f);
    return rc;
}

int qv_ds_load_fvecs(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    void *data;
    memset(out, 0, sizeof(*out));
    int rc = load_xvecs(path, limit, ELEM_F32, &data, &out->n, &out->dim, err);
    out->data = data;
    return rc;
}

int qv_ds_load_bvecs(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    void *data;
    memset(out, 0, sizeof(*out));
    int rc = load_xvecs(path, limit, ELEM_U8, &data, &out->n, &out->dim, err);
    out->data = data;
    return rc;
}

int qv_ds_load_ivecs(const char *path, size_t limit, qv_ids *out, qv_status *err)
{
    void *data;
    memset(out, 0, sizeof(*out));
    int rc = load_xvecs(path, limit, ELEM_I32, &data, &out->n, &out->k, err);
    out->ids = data;
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * .npy
 *
 * The header is a Python dict literal, e.g. {'descr': '<f4', 'fortran_order': False,
 * 'shape': (60000, 784), } padded with spaces and a newline. The parser accepts exactly that
 * grammar (either quote style, any whitespace, trailing commas) and nothing else.
 * ------------------------------------------------------------------------------------------- */

typedef struct npy_header {
    char descr[16];
    bool have_descr, have_fortran, have_shape;
    bool fortran;
    int ndim;
    uint64_t shape[8];
} npy_header;

typedef struct npy_dtype {
    char type; /* 'f', 'i', 'u' */
    size_t size;
    bool swap; /* big-endian data on this little-endian host */
} npy_dtype;

static void skip_ws(const char **p, const char *end)
{
    while (*p < end && isspace((unsigned char)**p))
        (*p)++;
}

static bool parse_pystr(const char **p, const char *end, char *buf, size_t cap)
{
    if (*p >= end || (**p != '\'' && **p != '"'))
        return false;
    char q = *(*p)++;
    size_t len = 0;
    while (*p < end && **p != q) {
        if (**p == '\\' || len + 1 >= cap)
            return false;
        buf[len++] = *(*p)++;
    }
    if (*p >= end)
        return false;
    (*p)++;
    buf[len] = '\0';
    return true;
}

static bool parse_shape(const char **p, const char *end, npy_header *h)
{
    if (*p >= end || **p != '(')
        return false;
    (*p)++;
    h->ndim = 0;
    for (;;) {
        skip_ws(p, end);
        if (*p < end && **p == ')') {
            (*p)++;
            return true;
        }
        if (*p >= end || !isdigit((unsigned char)**p))
            return false;
        uint64_t v = 0;
        while (*p < end && isdigit((unsigned char)**p)) {
            unsigned digit = (unsigned)(**p - '0');
            if (v > (UINT64_MAX - digit) / 10)
                return false;
            v = v * 10 + digit;
            (*p)++;
        }
        if (*p < end && **p == 'L') /* written by Python 2's numpy */
            (*p)++;
        if (h->ndim == (int)(sizeof(h->shape) / sizeof(h->shape[0])))
            return false;
        h->shape[h->ndim++] = v;
        skip_ws(p, end);
        if (*p < end && **p == ',') {
            (*p)++;
            continue;
        }
        if (*p < end && **p == ')') {
            (*p)++;
            return true;
        }
        return false;
    }
}

static bool parse_ident(const char **p, const char *end, const char *word)
{
    size_t len = strlen(word);
    if ((size_t)(end - *p) < len || memcmp(*p, word, len) != 0)
        return false;
    if ((size_t)(end - *p) > len && (isalnum((unsigned char)(*p)[len]) || (*p)[len] == '_'))
        return false;
    *p += len;
    return true;
}

static const char npy_structured[] = "structured dtypes are not supported";

/* Parses the dict; returns NULL on success or a description of the first problem. */
static const char *parse_npy_dict(const char *s, size_t len, npy_header *h)
{
    const char *p = s, *end = s + len;
    memset(h, 0, sizeof(*h));
    skip_ws(&p, end);
    if (p >= end || *p != '{')
        return "header does not start with '{'";
    p++;
    for (;;) {
        skip_ws(&p, end);
        if (p < end && *p == '}') {
            p++;
            break;
        }
        char key[32];
        if (!parse_pystr(&p, end, key, sizeof(key)))
            return "malformed key in the header dictionary";
        skip_ws(&p, end);
        if (p >= end || *p != ':')
            return "missing ':' in the header dictionary";
        p++;
        skip_ws(&p, end);
        if (strcmp(key, "descr") == 0) {
            if (p < end && *p == '[')
                return npy_structured;
            if (!parse_pystr(&p, end, h->descr, sizeof(h->descr)))
                return "malformed 'descr'";
            h->have_descr = true;
        } else if (strcmp(key, "fortran_order") == 0) {
            if (parse_ident(&p, end, "True"))
                h->fortran = true;
            else if (parse_ident(&p, end, "False"))
                h->fortran = false;
            else
                return "'fortran_order' is neither True nor False";
            h->have_fortran = true;
        } else if (strcmp(key, "shape") == 0) {
            if (!parse_shape(&p, end, h))
                return "malformed 'shape' (expected a tuple of non-negative integers)";
            h->have_shape = true;
        } else {
            return "unexpected key in the header dictionary";
        }
        skip_ws(&p, end);
        if (p < end && *p == ',') {
            p++;
            continue;
        }
        if (p < end && *p == '}') {
            p++;
            break;
        }
        return "expected ',' or '}' in the header dictionary";
    }
    skip_ws(&p, end);
    if (p != end)
        return "trailing characters after the header dictionary";
    if (!h->have_descr || !h->have_fortran || !h->have_shape)
        return "the header lacks 'descr', 'fortran_order' or 'shape'";
    return NULL;
}

static bool parse_descr(const char *descr, npy_dtype *dt)
{
    char order = descr[0];
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return false;
    dt->type = descr[1];
    if (dt->type != 'f' && dt->type != 'i' && dt->type != 'u')
        return false;
    char *endp;
    if (!isdigit((unsigned char)descr[2]))
        return false;
    unsigned long size = strtoul(descr + 2, &endp, 10);
    if (*endp != '\0' || (size != 1 && size != 2 && size != 4 && size != 8))
        return false;
    if (order == '|' && size != 1)
        return false;
    dt->size = size;
    dt->swap = order == '>' && size > 1;
    return true;
}

/* Opens an .npy file and validates header and length; on success the stream is positioned at
 * the data. */
static int npy_open(const char *path, FILE **out, npy_dtype *dt, uint64_t *rows, uint64_t *cols,
                    qv_status *err)
{
    FILE *f;
    uint64_t fsize;
    char *hdr = NULL;
    int rc = open_regular(path, &f, &fsize, err);
    if (rc != 0)
        return rc;
    uint8_t pre[12];
    if (fsize < 10) {
        rc = fail(err, QV_ECORRUPT, "%s: too short for an .npy file (%llu bytes)", path,
                  (unsigned long long)fsize);
        goto fail_file;
    }
    rc = read_exact(f, pre, 10, path, err);
    if (rc != 0)
        goto fail_file;
    if (memcmp(pre, "\x93NUMPY", 6) != 0) {
        rc = fail(err, QV_ECORRUPT, "%s: not an .npy file (bad magic)", path);
        goto fail_file;
    }
    uint8_t major = pre[6];
    uint64_t hlen, hstart;
    if (major == 1) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (fsize < 12) {
            rc = fail(err, QV_ECORRUPT, "%s: truncated .npy preamble", path);
            goto fail_file;
        }
        rc = read_exact(f, pre + 10, 2, path, err);
        if (rc != 0)
            goto fail_file;
        hlen = le32(pre + 8);
        hstart = 12;
    } else {
        rc = fail(err, QV_EUNIMPL, "%s: .npy format version %u.%u is not supported", path,
                  (unsigned)major, (unsigned)pre[7]);
        goto fail_file;
    }
    if (hlen == 0 || hlen > NPY_HEADER_MAX) {
        rc = fail(err, QV_ECORRUPT, "%s: implausible .npy header length %llu", path,
                  (unsigned long long)hlen);
        goto fail_file;
    }
    if (hstart + hlen > fsize) {
        rc = fail(err, QV_ECORRUPT, "%s: truncated inside the .npy header", path);
        goto fail_file;
    }
    hdr = malloc((size_t)hlen);
    if (hdr == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto fail_file;
    }
    rc = read_exact(f, hdr, (size_t)hlen, path, err);
    if (rc != 0)
        goto fail_hdr;
    npy_header h;
    const char *why = parse_npy_dict(hdr, (size_t)hlen, &h);
    if (why != NULL) {
        rc = fail(err, why == npy_structured ? QV_EUNIMPL : QV_ECORRUPT, "%s: bad .npy header: %s",
                  path, why);
        goto fail_hdr;
    }
    if (!parse_descr(h.descr, dt)) {
        rc = fail(err, QV_EUNIMPL, "%s: .npy dtype '%s' is not supported", path, h.descr);
        goto fail_hdr;
    }
    if (h.fortran) {
        rc =
            fail(err, QV_EUNIMPL,
                 "%s: Fortran-order arrays are not supported (save np.ascontiguousarray(a))", path);
        goto fail_hdr;
    }
    if (h.ndim != 2) {
        rc = fail(err, QV_ECORRUPT, "%s: expected a 2-D array (rows, dim), the shape has %d axes",
                  path, h.ndim);
        goto fail_hdr;
    }
    if (h.shape[0] == 0 || h.shape[1] == 0 || h.shape[1] > QV_DS_MAX_DIM) {
        rc = fail(err, QV_ECORRUPT,
                  "%s: shape (%llu, %llu) out of range (rows >= 1, 1 <= dim <= %u)", path,
                  (unsigned long long)h.shape[0], (unsigned long long)h.shape[1], QV_DS_MAX_DIM);
        goto fail_hdr;
    }
    uint64_t rowbytes = h.shape[1] * dt->size;
    uint64_t avail = fsize - hstart - hlen;
    if (h.shape[0] > UINT64_MAX / rowbytes || h.shape[0] * rowbytes > avail) {
        rc = fail(err, QV_ECORRUPT,
                  "%s: truncated: shape (%llu, %llu) needs more than the %llu "
                  "data bytes present",
                  path, (unsigned long long)h.shape[0], (unsigned long long)h.shape[1],
                  (unsigned long long)avail);
        goto fail_hdr;
    }
    if (h.shape[0] * rowbytes != avail) {
        rc = fail(err, QV_ECORRUPT, "%s: %llu trailing bytes after the array data", path,
                  (unsigned long long)(avail - h.shape[0] * rowbytes));
        goto fail_hdr;
    }
    if (h.shape[0] > SIZE_MAX) {
        rc = fail(err, QV_ERESOURCE, "%s: too many rows for this machine", path);
        goto fail_hdr;
    }
    free(hdr);
    *out = f;
    *rows = h.shape[0];
    *cols = h.shape[1];
    return 0;

fail_hdr:
    free(hdr);
fail_file:
    fclose(f);
    return rc;
}

int qv_ds_load_npy(const char *path, size_t limit, qv_vecs *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    FILE *f;
    npy_dtype dt;
    uint64_t rows, cols;
    int rc = npy_open(path, &f, &dt, &rows, &cols, err);
    if (rc != 0)
        return rc;
    qv_vecs v = {0};
    uint8_t *buf = NULL;
    bool ok_type =
        (dt.type == 'f' && (dt.size == 4 || dt.size == 8)) || (dt.type == 'u' && dt.size == 1);
    if (!ok_type) {
        rc = fail(err, QV_EUNIMPL, "%s: vectors must be float32, float64 or uint8, not %c%zu", path,
                  dt.type, dt.size);
        goto fail_file;
    }
    size_t n = limit > 0 && limit < rows ? limit : (size_t)rows;
    size_t dim = (size_t)cols;
    rc = qv_vecs_alloc(n, dim, &v, err);
    if (rc != 0)
        goto fail_file;
    size_t rowbytes = dim * dt.size;
    buf = malloc(rowbytes);
    if (buf == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto fail_data;
    }
    for (size_t i = 0; i < n; i++) {
        rc = read_exact(f, buf, rowbytes, path, err);
        if (rc != 0)
            goto fail_data;
        if (dt.swap)
            bswap_inplace(buf, dim, dt.size);
        float *d = v.data + i * dim;
        for (size_t j = 0; j < dim; j++) {
            if (dt.type == 'u') {
                d[j] = (float)buf[j];
                continue;
            }
            double x;
            if (dt.size == 4) {
                float fx;
                memcpy(&fx, buf + j * 4, 4);
                x = fx;
            } else {
                memcpy(&x, buf + j * 8, 8);
            }
            if (!isfinite(x) || fabs(x) > (double)3.4028234663852886e38f) {
                rc = fail(err, QV_ECORRUPT, "%s: row %zu, column %zu is not a finite float32", path,
                          i, j);
                goto fail_data;
            }
            d[j] = (float)x;
        }
    }
    free(buf);
    fclose(f);
    *out = v;
    return 0;

fail_data:
    free(buf);
    qv_vecs_free(&v);
fail_file:
    fclose(f);
    return rc;
}

int qv_ds_load_npy_ids(const char *path, size_t limit, qv_ids *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    FILE *f;
    npy_dtype dt;
    uint64_t rows, cols;
    int rc = npy_open(path, &f, &dt, &rows, &cols, err);
    if (rc != 0)
        return rc;
    qv_ids g = {0};
    uint8_t *buf = NULL;
    if ((dt.type != 'i' && dt.type != 'u') || (dt.size != 4 && dt.size != 8)) {
        rc = fail(err, QV_EUNIMPL, "%s: ids must be int32, int64, uint32 or uint64, not %c%zu",
                  path, dt.type, dt.size);
        goto fail_file;
    }
    size_t n = limit > 0 && limit < rows ? limit : (size_t)rows;
    size_t k = (size_t)cols;
    rc = ids_alloc(n, k, &g, err);
    if (rc != 0)
        goto fail_file;
    size_t rowbytes = k * dt.size;
    buf = malloc(rowbytes);
    if (buf == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto fail_data;
    }
    for (size_t i = 0; i < n; i++) {
        rc = read_exact(f, buf, rowbytes, path, err);
        if (rc != 0)
            goto fail_data;
        if (dt.swap)
            bswap_inplace(buf, k, dt.size);
        for (size_t j = 0; j < k; j++) {
            bool bad;
            int64_t id;
            if (dt.size == 4) {
                uint32_t u;
                memcpy(&u, buf + j * 4, 4);
                bad = dt.type == 'u' ? u > INT32_MAX : (int32_t)u < 0;
                id = dt.type == 'u' ? (int64_t)u : (int64_t)(int32_t)u;
            } else {
                uint64_t u;
                memcpy(&u, buf + j * 8, 8);
                bad = dt.type == 'u' ? u > INT32_MAX : ((int64_t)u < 0 || (int64_t)u > INT32_MAX);
                id = (int64_t)u;
            }
            if (bad) {
                rc = fail(err, QV_ECORRUPT, "%s: row %zu, column %zu: id out of 0..2^31-1", path, i,
                          j);
                goto fail_data;
            }
            g.ids[i * k + j] = (int32_t)id;
        }
    }
    free(buf);
    fclose(f);
    *out = g;
    return 0;

fail_data:
    free(buf);
    qv_ids_free(&g);
fail_file:
    fclose(f);
    return rc;
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

/* ---------------------------------------------------------------------------------------------
 * IDX (gzip or plain, through zlib) and Fashion-MNIST
 * ------------------------------------------------------------------------------------------- */

/* Reads exactly len bytes from a gz stream; tells truncation apart from a corrupt stream. */
static int gz_read_exact(gzFile gz, void *buf, size_t len, const char *path, const char *what,
                         qv_status *err)
{
    uint8_t *p = buf;
    size_t got = 0;
    while (got < len) {
        size_t want = len - got < IO_CHUNK ? len - got : IO_CHUNK;
        int r = gzread(gz, p + got, (unsigned)want);
        if (r < 0 || (size_t)r < want) {
            int zerr = Z_OK;
            const char *msg = gzerror(gz, &zerr);
            if (zerr == Z_ERRNO)
                return fail(err, QV_EUNAVAIL, "%s: read error: %s", path, strerror(errno));
            if (zerr != Z_OK && zerr != Z_BUF_ERROR)
                return fail(err, QV_ECORRUPT, "%s: corrupt gzip stream: %s", path, msg);
            return fail(err, QV_ECORRUPT, "%s: truncated in the %s (%zu of %zu bytes)", path, what,
                        got + (r > 0 ? (size_t)r : 0), len);
        }
        got += (size_t)r;
    }
    return 0;
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
    FILE *probe;
    uint64_t fsize;
    int rc = open_regular(path, &probe, &fsize, err);
    if (rc != 0)
        return rc;
    fclose(probe);
    gzFile gz = gzopen(path, "rb");
    if (gz == NULL) {
        int e = errno;
        return fail(err, e ? qv_from_errno(e) : QV_ERESOURCE, "%s: cannot open: %s", path,
                    e ? strerror(e) : "zlib out of memory");
    }
    gzbuffer(gz, 256 * 1024);
    qv_vecs v = {0};
    uint8_t *bytes = NULL;
    uint8_t magic[4], dimbuf[4 * 4];
    rc = gz_read_exact(gz, magic, 4, path, "header", err);
    if (rc != 0)
        goto fail_gz;
    if (magic[0] != 0 || magic[1] != 0) {
        rc = fail(err, QV_ECORRUPT, "%s: not an IDX file (bad magic %02x%02x%02x%02x)", path,
                  magic[0], magic[1], magic[2], magic[3]);
        goto fail_gz;
    }
    if (magic[2] != 0x08) {
        rc = fail(err, QV_EUNIMPL,
                  "%s: IDX element type 0x%02x is not supported (only 0x08, "
                  "unsigned bytes)",
                  path, magic[2]);
        goto fail_gz;
    }
    unsigned ndims = magic[3];
    if (ndims < 1 || ndims > 4) {
        rc = fail(err, QV_ECORRUPT, "%s: IDX file with %u dimensions (expected 1..4)", path, ndims);
        goto fail_gz;
    }
    if ((ndims == 1) != (labels != NULL)) {
        rc = fail(err, QV_ECORRUPT, "%s: expected an IDX %s file, found %u dimensions", path,
                  labels != NULL ? "label (1-D)" : "image (2-D or more)", ndims);
        goto fail_gz;
    }
    rc = gz_read_exact(gz, dimbuf, 4 * ndims, path, "header", err);
    if (rc != 0)
        goto fail_gz;
    size_t rows = be32(dimbuf), cols = 1;
    for (unsigned d = 1; d < ndims; d++) {
        if (mul_overflows(cols, be32(dimbuf + 4 * d), &cols) || cols > QV_DS_MAX_DIM) {
            rc =
                fail(err, QV_ECORRUPT, "%s: IDX row size exceeds %u elements", path, QV_DS_MAX_DIM);
            goto fail_gz;
        }
    }
    if (rows == 0 || cols == 0) {
        rc = fail(err, QV_ECORRUPT, "%s: IDX file declares an empty array", path);
        goto fail_gz;
    }
    size_t total;
    if (mul_overflows(rows, cols, &total)) {
        rc = fail(err, QV_ERESOURCE, "%s: IDX sizes overflow", path);
        goto fail_gz;
    }
    /* gzip cannot expand better than about 1032:1; a plain file must hold every byte. Catches a
     * lying header before it makes us allocate. */
    if ((uint64_t)total / 1032 > fsize) {
        rc = fail(err, QV_ECORRUPT,
                  "%s: header declares %zu x %zu bytes, more than a %llu-byte "
                  "file can hold",
                  path, rows, cols, (unsigned long long)fsize);
        goto fail_gz;
    }
    bytes = malloc(total);
    if (bytes == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory for %zu bytes", total);
        goto fail_gz;
    }
    rc = gz_read_exact(gz, bytes, total, path, labels != NULL ? "labels" : "pixels", err);
    if (rc != 0)
        goto fail_bytes;
    uint8_t extra;
    int r = gzread(gz, &extra, 1);
    if (r != 0) {
        int zerr = Z_OK;
        const char *msg = gzerror(gz, &zerr);
        rc = r > 0
                 ? fail(err, QV_ECORRUPT, "%s: trailing bytes after the %zu declared", path, total)
                 : fail(err, QV_ECORRUPT, "%s: corrupt gzip stream: %s", path, msg);
        goto fail_bytes;
    }
    if (labels != NULL) {
        gzclose(gz);
        *labels = bytes;
        *nlabels = rows;
        return 0;
    }
    rc = qv_vecs_alloc(rows, cols, &v, err);
    if (rc != 0)
        goto fail_bytes;
    for (size_t i = 0; i < total; i++)
        v.data[i] = (float)bytes[i];
    free(bytes);
    gzclose(gz);
    *out = v;
    return 0;

fail_bytes:
    free(bytes);
fail_gz:
    gzclose(gz);
    return rc;
}

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
