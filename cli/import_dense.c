/*
 * Dense numeric files (see import.h): the one place that parses .fvecs/.bvecs/.ivecs, .npy and
 * IDX headers.
 *
 * Map: helpers (errors, byte order, opening) / *vecs / .npy (the header dictionary parser, then
 * its checks) / IDX through zlib / the public read, seek and close, which dispatch on the kind /
 * element conversion to float32.
 *
 * Every size read from a header is checked against the file's real length before a row is read,
 * so a hostile header cannot make a caller allocate terabytes or read past the end.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/import.h"
#include "cli/import_internal.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/types.h>

#include <zlib.h>

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "cli/import_dense.c assumes a little-endian host (the *vecs formats are little-endian)"
#endif

#define NPY_HEADER_MAX (1u << 20) /* numpy writes a few hundred bytes; refuse absurd lengths */
#define IO_CHUNK       (1u << 20)

struct qv_dense_file {
    char *path;
    qv_dense_kind kind;
    qv_dense_info info;
    FILE *f;             /* *vecs, .npy */
    gzFile gz;           /* IDX */
    uint64_t data_start; /* offset of row 0 (in the uncompressed stream for IDX) */
    uint64_t rowbytes;   /* bytes of one row in the file, with its *vecs header */
    uint64_t row;        /* next row */
    bool swap;           /* .npy stored big-endian */
    uint8_t *scratch;    /* *vecs: rows with their headers */
    size_t scratch_cap;
};

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

int qv__import_fail(qv_status *err, int code, const char *fmt, ...)
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

#define fail qv__import_fail

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

size_t qv_elem_size(qv_elem_type t)
{
    switch (t) {
    case QV_ELEM_U8:
    case QV_ELEM_I8:
        return 1;
    case QV_ELEM_U16:
    case QV_ELEM_I16:
        return 2;
    case QV_ELEM_F32:
    case QV_ELEM_U32:
    case QV_ELEM_I32:
        return 4;
    default:
        return 8;
    }
}

const char *qv_elem_name(qv_elem_type t)
{
    static const char *const names[] = {"float32", "float64", "uint8", "int8",   "uint16",
                                        "int16",   "uint32",  "int32", "uint64", "int64"};
    return (unsigned)t < sizeof(names) / sizeof(names[0]) ? names[t] : "unknown";
}

int qv__open_regular(const char *path, FILE **out, uint64_t *size, qv_status *err)
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

/* ---------------------------------------------------------------------------------------------
 * *vecs
 * ------------------------------------------------------------------------------------------- */

static int xvecs_open(qv_dense_file *d, uint64_t fsize, qv_status *err)
{
    const char *path = d->path;
    size_t esize = d->kind == QV_DENSE_BVECS ? 1 : 4;
    d->info.elem = d->kind == QV_DENSE_FVECS   ? QV_ELEM_F32
                   : d->kind == QV_DENSE_BVECS ? QV_ELEM_U8
                                               : QV_ELEM_I32;
    d->info.ndims = 2;
    if (fsize == 0)
        return fail(err, QV_ECORRUPT, "%s: empty file", path);
    if (fsize < 4)
        return fail(err, QV_ECORRUPT, "%s: truncated: %llu bytes, not even one row header", path,
                    (unsigned long long)fsize);
    uint8_t hdr[4];
    int rc = read_exact(d->f, hdr, 4, path, err);
    if (rc != 0)
        return rc;
    int32_t d0 = (int32_t)le32(hdr);
    if (d0 <= 0 || (uint32_t)d0 > QV_IMPORT_MAX_DIM)
        return fail(err, QV_ECORRUPT, "%s: row 0 declares dimension %d (expected 1..%u)", path,
                    (int)d0, QV_IMPORT_MAX_DIM);
    d->info.dim = (size_t)d0;
    d->rowbytes = 4 + (uint64_t)d0 * esize;
    if (fsize % d->rowbytes != 0)
        return fail(err, QV_ECORRUPT,
                    "%s: %llu bytes is not a whole number of %llu-byte rows (dimension %d): "
                    "truncated or trailing bytes",
                    path, (unsigned long long)fsize, (unsigned long long)d->rowbytes, (int)d0);
    d->info.rows = fsize / d->rowbytes;
    d->data_start = 0;
    if (fseeko(d->f, 0, SEEK_SET) != 0)
        return fail(err, QV_EUNAVAIL, "%s: cannot seek: %s", path, strerror(errno));
    return 0;
}

static int xvecs_read(qv_dense_file *d, size_t n, void *dst, qv_status *err)
{
    size_t rowbytes = (size_t)d->rowbytes;
    size_t elembytes = rowbytes - 4;
    size_t chunk = IO_CHUNK / rowbytes > 0 ? IO_CHUNK / rowbytes : 1;
    if (d->scratch_cap < chunk * rowbytes) {
        uint8_t *p = realloc(d->scratch, chunk * rowbytes);
        if (p == NULL)
            return fail(err, QV_ERESOURCE, "out of memory");
        d->scratch = p;
        d->scratch_cap = chunk * rowbytes;
    }
    uint8_t *out = dst;
    size_t done = 0;
    while (done < n) {
        size_t m = n - done < chunk ? n - done : chunk;
        int rc = read_exact(d->f, d->scratch, m * rowbytes, d->path, err);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < m; i++) {
            const uint8_t *row = d->scratch + i * rowbytes;
            uint32_t dd = le32(row);
            if (dd != (uint32_t)d->info.dim)
                return fail(err, QV_ECORRUPT, "%s: row %llu declares dimension %d, row 0 %zu",
                            d->path, (unsigned long long)(d->row + done + i), (int)(int32_t)dd,
                            d->info.dim);
            memcpy(out + (done + i) * elembytes, row + 4, elembytes);
        }
        done += m;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * .npy
 * ------------------------------------------------------------------------------------------- */

typedef struct npy_header {
    char descr[16];
    bool fortran;
    uint64_t shape[8];
    int ndim;
    bool have_descr, have_fortran, have_shape;
} npy_header;

static void skip_ws(const char **p, const char *end)
{
    while (*p < end && isspace((unsigned char)**p))
        (*p)++;
}

/* A Python string literal in single or double quotes, without escapes (numpy never writes any
 * in the keys and dtypes we accept). */
static bool parse_pystr(const char **p, const char *end, char *out, size_t cap)
{
    if (*p >= end || (**p != '\'' && **p != '"'))
        return false;
    char q = **p;
    (*p)++;
    size_t n = 0;
    while (*p < end && **p != q) {
        if (**p == '\\' || n + 1 >= cap)
            return false;
        out[n++] = **p;
        (*p)++;
    }
    if (*p >= end)
        return false;
    (*p)++;
    out[n] = '\0';
    return true;
}

/* "(3, 4)", "(4,)", "()": non-negative integers, Python 2's "3L" tolerated. */
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

/* "<f4", "|u1", ">i8": byte order, kind, size. Returns 0, or QV_EUNIMPL. */
static int parse_descr(const char *descr, qv_elem_type *elem, bool *swap)
{
    char order = descr[0];
    if (order != '<' && order != '>' && order != '|' && order != '=')
        return QV_EUNIMPL;
    char type = descr[1];
    if (type != 'f' && type != 'i' && type != 'u')
        return QV_EUNIMPL;
    if (!isdigit((unsigned char)descr[2]))
        return QV_EUNIMPL;
    char *endp;
    unsigned long size = strtoul(descr + 2, &endp, 10);
    if (*endp != '\0' || (size != 1 && size != 2 && size != 4 && size != 8))
        return QV_EUNIMPL;
    if (order == '|' && size != 1)
        return QV_EUNIMPL;
    if (type == 'f') {
        if (size != 4 && size != 8)
            return QV_EUNIMPL; /* float16 and friends */
        *elem = size == 4 ? QV_ELEM_F32 : QV_ELEM_F64;
    } else {
        static const qv_elem_type u[] = {QV_ELEM_U8, QV_ELEM_U16, 0, QV_ELEM_U32,
                                         0,          0,           0, QV_ELEM_U64};
        static const qv_elem_type s[] = {QV_ELEM_I8, QV_ELEM_I16, 0, QV_ELEM_I32,
                                         0,          0,           0, QV_ELEM_I64};
        *elem = type == 'u' ? u[size - 1] : s[size - 1];
    }
    *swap = order == '>' && size > 1;
    return 0;
}

static int npy_open(qv_dense_file *d, uint64_t fsize, qv_status *err)
{
    const char *path = d->path;
    char *hdr = NULL;
    uint8_t pre[12];
    int rc;
    d->info.ndims = 2;
    if (fsize < 10)
        return fail(err, QV_ECORRUPT, "%s: too short for an .npy file (%llu bytes)", path,
                    (unsigned long long)fsize);
    rc = read_exact(d->f, pre, 10, path, err);
    if (rc != 0)
        return rc;
    if (memcmp(pre, "\x93NUMPY", 6) != 0)
        return fail(err, QV_ECORRUPT, "%s: not an .npy file (bad magic)", path);
    uint8_t major = pre[6];
    uint64_t hlen, hstart;
    if (major == 1) {
        hlen = (uint64_t)pre[8] | (uint64_t)pre[9] << 8;
        hstart = 10;
    } else if (major == 2 || major == 3) {
        if (fsize < 12)
            return fail(err, QV_ECORRUPT, "%s: truncated .npy preamble", path);
        rc = read_exact(d->f, pre + 10, 2, path, err);
        if (rc != 0)
            return rc;
        hlen = le32(pre + 8);
        hstart = 12;
    } else {
        return fail(err, QV_EUNIMPL, "%s: .npy format version %u.%u is not supported", path,
                    (unsigned)major, (unsigned)pre[7]);
    }
    if (hlen == 0 || hlen > NPY_HEADER_MAX)
        return fail(err, QV_ECORRUPT, "%s: implausible .npy header length %llu", path,
                    (unsigned long long)hlen);
    if (hstart + hlen > fsize)
        return fail(err, QV_ECORRUPT, "%s: truncated inside the .npy header", path);
    hdr = malloc((size_t)hlen);
    if (hdr == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    rc = read_exact(d->f, hdr, (size_t)hlen, path, err);
    if (rc != 0)
        goto out;
    npy_header h;
    const char *why = parse_npy_dict(hdr, (size_t)hlen, &h);
    if (why != NULL) {
        rc = fail(err, why == npy_structured ? QV_EUNIMPL : QV_ECORRUPT, "%s: bad .npy header: %s",
                  path, why);
        goto out;
    }
    if (parse_descr(h.descr, &d->info.elem, &d->swap) != 0) {
        rc = fail(err, QV_EUNIMPL, "%s: .npy dtype '%s' is not supported", path, h.descr);
        goto out;
    }
    if (h.fortran) {
        rc =
            fail(err, QV_EUNIMPL,
                 "%s: Fortran-order arrays are not supported (save np.ascontiguousarray(a))", path);
        goto out;
    }
    if (h.ndim != 2) {
        rc = fail(err, QV_ECORRUPT, "%s: expected a 2-D array (rows, dim), the shape has %d axes",
                  path, h.ndim);
        goto out;
    }
    if (h.shape[0] == 0 || h.shape[1] == 0 || h.shape[1] > QV_IMPORT_MAX_DIM) {
        rc =
            fail(err, QV_ECORRUPT,
                 "%s: shape (%llu, %llu) out of range (rows >= 1, 1 <= dim <= %u)", path,
                 (unsigned long long)h.shape[0], (unsigned long long)h.shape[1], QV_IMPORT_MAX_DIM);
        goto out;
    }
    uint64_t rowbytes = h.shape[1] * qv_elem_size(d->info.elem);
    uint64_t avail = fsize - hstart - hlen;
    if (h.shape[0] > UINT64_MAX / rowbytes || h.shape[0] * rowbytes > avail) {
        rc = fail(err, QV_ECORRUPT,
                  "%s: truncated: shape (%llu, %llu) needs more than the %llu data bytes present",
                  path, (unsigned long long)h.shape[0], (unsigned long long)h.shape[1],
                  (unsigned long long)avail);
        goto out;
    }
    if (h.shape[0] * rowbytes != avail) {
        rc = fail(err, QV_ECORRUPT, "%s: %llu trailing bytes after the array data", path,
                  (unsigned long long)(avail - h.shape[0] * rowbytes));
        goto out;
    }
    d->info.rows = h.shape[0];
    d->info.dim = (size_t)h.shape[1];
    d->rowbytes = rowbytes;
    d->data_start = hstart + hlen;
    rc = 0;
out:
    free(hdr);
    return rc;
}

static int npy_read(qv_dense_file *d, size_t n, void *dst, qv_status *err)
{
    int rc = read_exact(d->f, dst, n * (size_t)d->rowbytes, d->path, err);
    if (rc == 0 && d->swap)
        bswap_inplace(dst, n * d->info.dim, qv_elem_size(d->info.elem));
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * IDX (gzip or plain, through zlib)
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

static int idx_open(qv_dense_file *d, uint64_t fsize, qv_status *err)
{
    const char *path = d->path;
    d->gz = gzopen(path, "rb");
    if (d->gz == NULL) {
        int e = errno;
        return fail(err, e ? qv_from_errno(e) : QV_ERESOURCE, "%s: cannot open: %s", path,
                    e ? strerror(e) : "zlib out of memory");
    }
    gzbuffer(d->gz, 256 * 1024);
    uint8_t magic[4], dimbuf[4 * 4];
    int rc = gz_read_exact(d->gz, magic, 4, path, "header", err);
    if (rc != 0)
        return rc;
    if (magic[0] != 0 || magic[1] != 0)
        return fail(err, QV_ECORRUPT, "%s: not an IDX file (bad magic %02x%02x%02x%02x)", path,
                    magic[0], magic[1], magic[2], magic[3]);
    if (magic[2] != 0x08)
        return fail(err, QV_EUNIMPL,
                    "%s: IDX element type 0x%02x is not supported (only 0x08, unsigned bytes)",
                    path, magic[2]);
    unsigned ndims = magic[3];
    if (ndims < 1 || ndims > 4)
        return fail(err, QV_ECORRUPT, "%s: IDX file with %u dimensions (expected 1..4)", path,
                    ndims);
    rc = gz_read_exact(d->gz, dimbuf, 4 * ndims, path, "header", err);
    if (rc != 0)
        return rc;
    uint64_t rows = be32(dimbuf), cols = 1;
    for (unsigned k = 1; k < ndims; k++) {
        cols *= be32(dimbuf + 4 * k); /* each factor < 2^32 and cols <= 2^16 before: no overflow */
        if (cols > QV_IMPORT_MAX_DIM)
            return fail(err, QV_ECORRUPT, "%s: IDX row size exceeds %u elements", path,
                        QV_IMPORT_MAX_DIM);
    }
    if (rows == 0 || cols == 0)
        return fail(err, QV_ECORRUPT, "%s: IDX file declares an empty array", path);
    uint64_t total = rows * cols, hdrlen = 4 + 4 * (uint64_t)ndims;
    if (gzdirect(d->gz)) {
        if (hdrlen + total > fsize)
            return fail(err, QV_ECORRUPT,
                        "%s: truncated: the header declares %llu x %llu bytes, the file holds "
                        "%llu after the header",
                        path, (unsigned long long)rows, (unsigned long long)cols,
                        (unsigned long long)(fsize - hdrlen));
        if (hdrlen + total < fsize)
            return fail(err, QV_ECORRUPT, "%s: %llu trailing bytes after the %llu declared", path,
                        (unsigned long long)(fsize - hdrlen - total), (unsigned long long)total);
    } else if (total / 1032 > fsize) {
        /* gzip cannot expand better than about 1032:1: a lying header is caught here. */
        return fail(err, QV_ECORRUPT,
                    "%s: header declares %llu x %llu bytes, more than a %llu-byte file can hold",
                    path, (unsigned long long)rows, (unsigned long long)cols,
                    (unsigned long long)fsize);
    }
    d->info.rows = rows;
    d->info.dim = (size_t)cols;
    d->info.elem = QV_ELEM_U8;
    d->info.ndims = ndims;
    d->rowbytes = cols;
    d->data_start = hdrlen;
    return 0;
}

static int idx_read(qv_dense_file *d, size_t n, void *dst, qv_status *err)
{
    int rc = gz_read_exact(d->gz, dst, n * (size_t)d->rowbytes, d->path,
                           d->info.ndims == 1 ? "labels" : "pixels", err);
    if (rc != 0 || d->row + n < d->info.rows)
        return rc;
    uint8_t extra;
    int r = gzread(d->gz, &extra, 1);
    if (r == 0)
        return 0;
    int zerr = Z_OK;
    const char *msg = gzerror(d->gz, &zerr);
    if (r > 0)
        return fail(err, QV_ECORRUPT, "%s: trailing bytes after the %llu x %zu declared", d->path,
                    (unsigned long long)d->info.rows, d->info.dim);
    return fail(err, QV_ECORRUPT, "%s: corrupt gzip stream: %s", d->path, msg);
}

/* ---------------------------------------------------------------------------------------------
 * Public entry points
 * ------------------------------------------------------------------------------------------- */

int qv_dense_open(const char *path, qv_dense_kind kind, qv_dense_file **out, qv_status *err)
{
    *out = NULL;
    qv_dense_file *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    d->kind = kind;
    d->path = strdup(path);
    uint64_t fsize = 0;
    int rc;
    if (d->path == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto fail_file;
    }
    rc = qv__open_regular(path, &d->f, &fsize, err);
    if (rc != 0)
        goto fail_file;
    switch (kind) {
    case QV_DENSE_FVECS:
    case QV_DENSE_BVECS:
    case QV_DENSE_IVECS:
        rc = xvecs_open(d, fsize, err);
        break;
    case QV_DENSE_NPY:
        rc = npy_open(d, fsize, err);
        break;
    case QV_DENSE_IDX:
        /* zlib reads through its own descriptor; ours only checked that it is a regular file. */
        fclose(d->f);
        d->f = NULL;
        rc = idx_open(d, fsize, err);
        break;
    default:
        rc = fail(err, QV_EINVAL, "%s: unknown dense file kind %d", path, (int)kind);
    }
    if (rc != 0)
        goto fail_file;
    *out = d;
    return 0;

fail_file:
    qv_dense_close(d);
    return rc;
}

const qv_dense_info *qv_dense_info_of(const qv_dense_file *f)
{
    return &f->info;
}

uint64_t qv_dense_row(const qv_dense_file *f)
{
    return f->row;
}

int qv_dense_read(qv_dense_file *d, size_t n, void *dst, qv_status *err)
{
    if (n > d->info.rows - d->row)
        return fail(err, QV_ERANGE, "%s: %zu rows asked at row %llu of %llu", d->path, n,
                    (unsigned long long)d->row, (unsigned long long)d->info.rows);
    if (n == 0)
        return 0;
    int rc;
    switch (d->kind) {
    case QV_DENSE_NPY:
        rc = npy_read(d, n, dst, err);
        break;
    case QV_DENSE_IDX:
        rc = idx_read(d, n, dst, err);
        break;
    default:
        rc = xvecs_read(d, n, dst, err);
    }
    if (rc == 0)
        d->row += n;
    return rc;
}

int qv_dense_seek(qv_dense_file *d, uint64_t row, qv_status *err)
{
    if (row > d->info.rows)
        return fail(err, QV_ERANGE, "%s: row %llu is past the end (%llu rows)", d->path,
                    (unsigned long long)row, (unsigned long long)d->info.rows);
    uint64_t off = d->data_start + row * d->rowbytes;
    if (d->kind == QV_DENSE_IDX) {
        if (off > (uint64_t)INT64_MAX || gzseek(d->gz, (z_off_t)off, SEEK_SET) < 0) {
            int zerr = Z_OK;
            const char *msg = gzerror(d->gz, &zerr);
            return fail(err, QV_ECORRUPT, "%s: cannot seek to row %llu: %s", d->path,
                        (unsigned long long)row, msg);
        }
    } else if (off > (uint64_t)INT64_MAX || fseeko(d->f, (off_t)off, SEEK_SET) != 0) {
        return fail(err, QV_EUNAVAIL, "%s: cannot seek to row %llu: %s", d->path,
                    (unsigned long long)row, strerror(errno));
    }
    d->row = row;
    return 0;
}

void qv_dense_close(qv_dense_file *d)
{
    if (d == NULL)
        return;
    if (d->f != NULL)
        fclose(d->f);
    if (d->gz != NULL)
        gzclose(d->gz);
    free(d->scratch);
    free(d->path);
    free(d);
}

/* ---------------------------------------------------------------------------------------------
 * Conversion to float32, one loop per element type
 * ------------------------------------------------------------------------------------------- */

/* Integers up to 32 bits always fit a float's range; wider ones are widened through double. */
#define WIDEN_INT(T)                                                                               \
    do {                                                                                           \
        const T *s = src;                                                                          \
        for (size_t i = 0; i < n; i++)                                                             \
            dst[i] = (float)s[i];                                                                  \
    } while (0)

int qv_elem_to_f32(qv_elem_type t, const void *src, size_t n, float *dst, size_t *bad)
{
    switch (t) {
    case QV_ELEM_F32:
        memcpy(dst, src, n * sizeof(float));
        for (size_t i = 0; i < n; i++)
            if (!isfinite(dst[i])) {
                *bad = i;
                return QV_ECORRUPT;
            }
        return 0;
    case QV_ELEM_F64: {
        const uint8_t *s = src;
        for (size_t i = 0; i < n; i++) {
            double x;
            memcpy(&x, s + i * 8, 8); /* .npy data need not be 8-byte aligned */
            if (!isfinite(x) || fabs(x) > (double)3.4028234663852886e38f) {
                *bad = i;
                return QV_ECORRUPT;
            }
            dst[i] = (float)x;
        }
        return 0;
    }
    case QV_ELEM_U8:
        WIDEN_INT(uint8_t);
        return 0;
    case QV_ELEM_I8:
        WIDEN_INT(int8_t);
        return 0;
    case QV_ELEM_U16:
        WIDEN_INT(uint16_t);
        return 0;
    case QV_ELEM_I16:
        WIDEN_INT(int16_t);
        return 0;
    case QV_ELEM_U32:
        WIDEN_INT(uint32_t);
        return 0;
    case QV_ELEM_I32:
        WIDEN_INT(int32_t);
        return 0;
    case QV_ELEM_U64:
        WIDEN_INT(uint64_t);
        return 0;
    case QV_ELEM_I64:
        WIDEN_INT(int64_t);
        return 0;
    }
    *bad = 0;
    return QV_EINVAL;
}
