/*
 * The point reader (import.h): format names and guessing, qv_import_open's dispatch, the batch
 * buffers every format fills, and the readers built on the dense files of import_dense.c
 * (fvecs, bvecs, .npy, IDX with its labels). JSONL and CSV live in import_text.c, HDF5 in
 * import_hdf5.c; each fills a qv__import_ops.
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
#include <strings.h>
#include <sys/stat.h>

#define fail qv__import_fail

/* ---------------------------------------------------------------------------------------------
 * Formats
 * ------------------------------------------------------------------------------------------- */

static const struct {
    const char *name;
    qv_import_format format;
} format_names[] = {
    {"auto", QV_IMPORT_AUTO},   {"fvecs", QV_IMPORT_FVECS},  {"bvecs", QV_IMPORT_BVECS},
    {"npy", QV_IMPORT_NPY},     {"hdf5", QV_IMPORT_HDF5},    {"h5", QV_IMPORT_HDF5},
    {"jsonl", QV_IMPORT_JSONL}, {"ndjson", QV_IMPORT_JSONL}, {"csv", QV_IMPORT_CSV},
    {"idx", QV_IMPORT_IDX},
};
#define NFORMAT_NAMES (sizeof(format_names) / sizeof(format_names[0]))

const char *qv_import_format_name(qv_import_format f)
{
    for (size_t i = 0; i < NFORMAT_NAMES; i++)
        if (format_names[i].format == f)
            return format_names[i].name;
    return "unknown";
}

int qv_import_format_parse(const char *name, qv_import_format *out)
{
    for (size_t i = 0; i < NFORMAT_NAMES; i++)
        if (strcasecmp(format_names[i].name, name) == 0) {
            *out = format_names[i].format;
            return 0;
        }
    return QV_EINVAL;
}

static bool ends_with(const char *s, size_t len, const char *suffix)
{
    size_t n = strlen(suffix);
    return len >= n && strncasecmp(s + len - n, suffix, n) == 0;
}

qv_import_format qv_import_format_guess(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    size_t len = strlen(base);
    if (ends_with(base, len, ".fvecs"))
        return QV_IMPORT_FVECS;
    if (ends_with(base, len, ".bvecs"))
        return QV_IMPORT_BVECS;
    if (ends_with(base, len, ".npy"))
        return QV_IMPORT_NPY;
    if (ends_with(base, len, ".h5") || ends_with(base, len, ".hdf5") ||
        ends_with(base, len, ".hdf"))
        return QV_IMPORT_HDF5;
    if (ends_with(base, len, ".jsonl") || ends_with(base, len, ".ndjson"))
        return QV_IMPORT_JSONL;
    if (ends_with(base, len, ".csv"))
        return QV_IMPORT_CSV;
    if (ends_with(base, len, ".gz"))
        len -= 3;
    if (ends_with(base, len, "-ubyte") || ends_with(base, len, ".idx"))
        return QV_IMPORT_IDX;
    return QV_IMPORT_AUTO;
}

/* ---------------------------------------------------------------------------------------------
 * Small shared helpers
 * ------------------------------------------------------------------------------------------- */

int qv__buf_put(qv__buf *b, const char *s, size_t len)
{
    if (b->cap - b->len <= len) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap - b->len <= len) {
            if (cap > SIZE_MAX / 2)
                return QV_ERESOURCE;
            cap *= 2;
        }
        char *p = realloc(b->p, cap);
        if (p == NULL)
            return QV_ERESOURCE;
        b->p = p;
        b->cap = cap;
    }
    memcpy(b->p + b->len, s, len);
    b->len += len;
    b->p[b->len] = '\0';
    return 0;
}

int qv__buf_printf(qv__buf *b, const char *fmt, ...)
{
    char tmp[128];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(tmp, sizeof(tmp), fmt, ap);
    va_end(ap);
    if (n < 0 || (size_t)n >= sizeof(tmp))
        return QV_EINVAL; /* only short numbers and keys go through here */
    return qv__buf_put(b, tmp, (size_t)n);
}

int qv__buf_json_str(qv__buf *b, const char *s, size_t len)
{
    int rc = qv__buf_put(b, "\"", 1);
    size_t run = 0; /* bytes copied verbatim in one go */
    for (size_t i = 0; i < len && rc == 0; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c >= 0x20 && c != '"' && c != '\\' && c != 0x7f)
            continue;
        rc = qv__buf_put(b, s + run, i - run);
        run = i + 1;
        if (rc != 0)
            break;
        if (c == '"' || c == '\\') {
            char esc[2] = {'\\', (char)c};
            rc = qv__buf_put(b, esc, 2);
        } else {
            rc = qv__buf_printf(b, "\\u%04x", c);
        }
    }
    if (rc == 0)
        rc = qv__buf_put(b, s + run, len - run);
    if (rc == 0)
        rc = qv__buf_put(b, "\"", 1);
    return rc;
}

bool qv__parse_point_id(const char *s, size_t len, qv_point_id *out)
{
    memset(out, 0, sizeof(*out));
    if (len == 36) {
        for (size_t i = 0; i < 36; i++) {
            bool dash = i == 8 || i == 13 || i == 18 || i == 23;
            if (dash ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
                return false;
            out->uuid[i] = (char)tolower((unsigned char)s[i]);
        }
        out->uuid[36] = '\0';
        out->is_uuid = true;
        return true;
    }
    if (len == 0 || len > 20)
        return false;
    uint64_t v = 0;
    for (size_t i = 0; i < len; i++) {
        if (!isdigit((unsigned char)s[i]))
            return false;
        unsigned d = (unsigned)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    out->num = v;
    return true;
}

bool qv__parse_f32(const char *s, size_t len, float *out)
{
    /* [+-] digits [. digits] [e [+-] digits], at least one mantissa digit; strtod alone would
     * also take "nan", "inf" and hex floats. */
    char tmp[128];
    size_t i = 0, digits = 0;
    if (len == 0 || len >= sizeof(tmp))
        return false;
    if (s[i] == '+' || s[i] == '-')
        i++;
    while (i < len && isdigit((unsigned char)s[i]))
        i++, digits++;
    if (i < len && s[i] == '.') {
        i++;
        while (i < len && isdigit((unsigned char)s[i]))
            i++, digits++;
    }
    if (digits == 0)
        return false;
    if (i < len && (s[i] == 'e' || s[i] == 'E')) {
        i++;
        if (i < len && (s[i] == '+' || s[i] == '-'))
            i++;
        size_t exp_digits = 0;
        while (i < len && isdigit((unsigned char)s[i]))
            i++, exp_digits++;
        if (exp_digits == 0)
            return false;
    }
    if (i != len)
        return false;
    memcpy(tmp, s, len);
    tmp[len] = '\0';
    double x = strtod(tmp, NULL);
    if (!isfinite(x) || fabs(x) > (double)3.4028234663852886e38f)
        return false;
    *out = (float)x;
    return true;
}

int qv__import_seq_id(qv_import_reader *r, uint64_t row, qv_point_id *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    if (row > UINT64_MAX - r->start_id)
        return fail(err, QV_ERANGE, "%s: row %llu: id %llu + %llu overflows 2^64 - 1", r->path,
                    (unsigned long long)row, (unsigned long long)r->start_id,
                    (unsigned long long)row);
    out->num = r->start_id + row;
    return 0;
}

/* Makes room for `rows` points in the batch buffers. */
static int reserve(qv_import_reader *r, size_t rows, qv_status *err)
{
    if (rows <= r->cap)
        return 0;
    size_t floats = rows * r->dim;
    if (floats / r->dim != rows || floats > (SIZE_MAX - 63) / sizeof(float))
        return fail(err, QV_ERESOURCE, "%zu rows of %zu floats overflow", rows, r->dim);
    size_t bytes = (floats * sizeof(float) + 63) & ~(size_t)63;
    float *v = aligned_alloc(64, bytes);
    qv_point_id *ids = malloc(rows * sizeof(*ids));
    size_t *off = malloc(rows * sizeof(*off));
    const char **pl = malloc(rows * sizeof(*pl));
    if (v == NULL || ids == NULL || off == NULL || pl == NULL) {
        free(v);
        free(ids);
        free(off);
        free(pl);
        return fail(err, QV_ERESOURCE, "out of memory for a batch of %zu x %zu floats", rows,
                    r->dim);
    }
    free(r->vectors);
    free(r->ids);
    free(r->payload_off);
    free(r->payloads);
    r->vectors = v;
    r->ids = ids;
    r->payload_off = off;
    r->payloads = pl;
    r->cap = rows;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Dense formats: fvecs, bvecs, .npy, IDX (+ labels)
 * ------------------------------------------------------------------------------------------- */

typedef struct dense_impl {
    qv_dense_file *f;
    qv_dense_file *labels; /* IDX only; NULL without */
    char *labels_path;
    void *raw;
    size_t raw_cap;
    uint8_t *lab;
    size_t lab_cap;
} dense_impl;

static int grow(void **p, size_t *cap, size_t want)
{
    if (want <= *cap)
        return 0;
    void *n = realloc(*p, want);
    if (n == NULL)
        return QV_ERESOURCE;
    *p = n;
    *cap = want;
    return 0;
}

static int dense_next(qv_import_reader *r, size_t max, size_t *n_out, qv_status *err)
{
    dense_impl *d = r->impl;
    const qv_dense_info *info = qv_dense_info_of(d->f);
    uint64_t left = info->rows - r->row;
    size_t n = left < max ? (size_t)left : max;
    *n_out = 0;
    if (n == 0)
        return 0;
    size_t esize = qv_elem_size(info->elem);
    if (grow(&d->raw, &d->raw_cap, n * info->dim * esize) != 0)
        return fail(err, QV_ERESOURCE, "out of memory");
    int rc = qv_dense_read(d->f, n, d->raw, err);
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        size_t bad = 0;
        const uint8_t *src = (const uint8_t *)d->raw + i * info->dim * esize;
        if (qv_elem_to_f32(info->elem, src, info->dim, r->vectors + i * r->dim, &bad) != 0)
            return fail(err, QV_ECORRUPT, "%s: row %llu, column %zu is not a finite float32",
                        r->path, (unsigned long long)(r->row + i), bad);
        rc = qv__import_seq_id(r, r->row + i, &r->ids[i], err);
        if (rc != 0)
            return rc;
    }
    if (d->labels != NULL) {
        if (grow((void **)&d->lab, &d->lab_cap, n) != 0)
            return fail(err, QV_ERESOURCE, "out of memory");
        rc = qv_dense_read(d->labels, n, d->lab, err);
        if (rc != 0)
            return rc;
        for (size_t i = 0; i < n; i++) {
            r->payload_off[i] = r->arena.len;
            if (qv__buf_printf(&r->arena, "{\"label\":%u}", (unsigned)d->lab[i]) != 0 ||
                qv__buf_put(&r->arena, "", 1) != 0)
                return fail(err, QV_ERESOURCE, "out of memory");
        }
    }
    *n_out = n;
    return 0;
}

static int dense_skip(qv_import_reader *r, uint64_t rows, qv_status *err)
{
    dense_impl *d = r->impl;
    const qv_dense_info *info = qv_dense_info_of(d->f);
    if (rows > info->rows - r->row)
        return fail(err, QV_ERANGE, "%s: row %llu is past the end (the file has %llu rows)",
                    r->path, (unsigned long long)(r->row + rows), (unsigned long long)info->rows);
    int rc = qv_dense_seek(d->f, r->row + rows, err);
    if (rc == 0 && d->labels != NULL)
        rc = qv_dense_seek(d->labels, r->row + rows, err);
    return rc;
}

static void dense_close(qv_import_reader *r)
{
    dense_impl *d = r->impl;
    if (d == NULL)
        return;
    qv_dense_close(d->f);
    qv_dense_close(d->labels);
    free(d->labels_path);
    free(d->raw);
    free(d->lab);
    free(d);
}

static const qv__import_ops dense_ops = {
    .next = dense_next,
    .skip = dense_skip,
    .close = dense_close,
};

/* The labels file next to an IDX images file: "images-idx3" -> "labels-idx1" in the base name
 * (also "images.idx3"). NULL when the name has no such part or the file does not exist. */
static char *sibling_labels(const char *path)
{
    const char *slash = strrchr(path, '/');
    const char *base = slash != NULL ? slash + 1 : path;
    const char *hit = strstr(base, "images-idx3");
    if (hit == NULL)
        hit = strstr(base, "images.idx3");
    if (hit == NULL)
        return NULL;
    char *out = strdup(path);
    if (out == NULL)
        return NULL;
    size_t at = (size_t)(hit - path);
    memcpy(out + at, "labels", 6);
    out[at + 10] = '1'; /* "images-idx3" and "labels-idx1" have the same length */
    struct stat st;
    if (stat(out, &st) != 0) {
        free(out);
        return NULL;
    }
    return out;
}

static int open_dense(qv_import_reader *r, const qv_import_opts *o, qv_status *err)
{
    dense_impl *d = calloc(1, sizeof(*d));
    if (d == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    r->impl = d;
    r->ops = &dense_ops;
    qv_dense_kind kind = r->format == QV_IMPORT_FVECS   ? QV_DENSE_FVECS
                         : r->format == QV_IMPORT_BVECS ? QV_DENSE_BVECS
                         : r->format == QV_IMPORT_NPY   ? QV_DENSE_NPY
                                                        : QV_DENSE_IDX;
    int rc = qv_dense_open(r->path, kind, &d->f, err);
    if (rc != 0)
        return rc;
    const qv_dense_info *info = qv_dense_info_of(d->f);
    if (kind == QV_DENSE_NPY && info->elem != QV_ELEM_F32 && info->elem != QV_ELEM_F64 &&
        info->elem != QV_ELEM_U8 && info->elem != QV_ELEM_I8)
        return fail(err, QV_EUNIMPL, "%s: vectors must be float32, float64, uint8 or int8, not %s",
                    r->path, qv_elem_name(info->elem));
    if (kind == QV_DENSE_IDX && info->ndims == 1)
        return fail(err, QV_EINVAL,
                    "%s: an IDX label file (1-D) holds no vectors; import the images file, whose "
                    "sibling labels file becomes the payload",
                    r->path);
    r->dim = info->dim;
    r->has_total = true;
    r->total = info->rows;
    if (kind != QV_DENSE_IDX || o->no_labels)
        return 0;
    d->labels_path = o->labels_path != NULL ? strdup(o->labels_path) : sibling_labels(r->path);
    if (o->labels_path != NULL && d->labels_path == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    if (d->labels_path == NULL)
        return 0;
    rc = qv_dense_open(d->labels_path, QV_DENSE_IDX, &d->labels, err);
    if (rc != 0)
        return rc;
    const qv_dense_info *li = qv_dense_info_of(d->labels);
    if (li->ndims != 1)
        return fail(err, QV_ECORRUPT, "%s: expected an IDX label file (1-D), found %u dimensions",
                    d->labels_path, li->ndims);
    if (li->rows != info->rows)
        return fail(err, QV_ECORRUPT, "%s holds %llu labels for the %llu images of %s",
                    d->labels_path, (unsigned long long)li->rows, (unsigned long long)info->rows,
                    r->path);
    r->has_payloads = true;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * The reader
 * ------------------------------------------------------------------------------------------- */

int qv_import_open(const char *path, qv_import_format format, const qv_import_opts *opts,
                   qv_import_reader **out, qv_status *err)
{
    *out = NULL;
    qv_import_opts none = {0};
    const qv_import_opts *o = opts != NULL ? opts : &none;
    if (format == QV_IMPORT_AUTO) {
        format = qv_import_format_guess(path);
        if (format == QV_IMPORT_AUTO)
            return fail(err, QV_EINVAL,
                        "%s: cannot tell the format from the file name; name it with --format "
                        "(fvecs, bvecs, npy, hdf5, jsonl, csv, idx)",
                        path);
    }
    qv_import_reader *r = calloc(1, sizeof(*r));
    if (r == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    r->format = format;
    r->start_id = o->start_id;
    r->path = strdup(path);
    int rc;
    if (r->path == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto fail_reader;
    }
    struct stat st;
    if (stat(path, &st) == 0)
        r->file_size = (uint64_t)st.st_size;
    switch (format) {
    case QV_IMPORT_FVECS:
    case QV_IMPORT_BVECS:
    case QV_IMPORT_NPY:
    case QV_IMPORT_IDX:
        rc = open_dense(r, o, err);
        break;
    case QV_IMPORT_HDF5:
        rc = qv__open_hdf5(r, o, err);
        break;
    case QV_IMPORT_JSONL:
        rc = qv__open_jsonl(r, o, err);
        break;
    case QV_IMPORT_CSV:
        rc = qv__open_csv(r, o, err);
        break;
    default:
        rc = fail(err, QV_EINVAL, "%s: unknown import format %d", path, (int)format);
    }
    if (rc != 0)
        goto fail_reader;
    if (r->dim == 0 || r->dim > QV_IMPORT_MAX_DIM) {
        rc = fail(err, QV_ECORRUPT, "%s: dimension %zu out of 1..%u", path, r->dim,
                  QV_IMPORT_MAX_DIM);
        goto fail_reader;
    }
    *out = r;
    return 0;

fail_reader:
    qv_import_close(r);
    return rc;
}

size_t qv_import_dim(const qv_import_reader *r)
{
    return r->dim;
}

qv_import_format qv_import_format_of(const qv_import_reader *r)
{
    return r->format;
}

bool qv_import_total_rows(const qv_import_reader *r, uint64_t *rows)
{
    if (r->has_total)
        *rows = r->total;
    return r->has_total;
}

void qv_import_bytes(const qv_import_reader *r, uint64_t *done, uint64_t *total)
{
    *total = r->file_size;
    if (r->ops->bytes_done != NULL)
        *done = r->ops->bytes_done(r);
    else if (r->has_total && r->total > 0)
        *done = (uint64_t)((double)r->file_size * ((double)r->row / (double)r->total));
    else
        *done = 0;
}

const char *qv_import_metric_hint(const qv_import_reader *r)
{
    return r->metric_hint;
}

int qv_import_next(qv_import_reader *r, size_t max_rows, qv_import_batch *out, qv_status *err)
{
    memset(out, 0, sizeof(*out));
    if (max_rows == 0)
        return fail(err, QV_EINVAL, "qv_import_next: max_rows must be at least 1");
    int rc = reserve(r, max_rows, err);
    if (rc != 0)
        return rc;
    r->arena.len = 0;
    for (size_t i = 0; i < max_rows; i++)
        r->payload_off[i] = SIZE_MAX;
    size_t n = 0;
    rc = r->ops->next(r, max_rows, &n, err);
    if (rc != 0)
        return rc;
    /* Offsets become pointers only now: the arena may have moved while the batch was built. */
    for (size_t i = 0; i < n; i++)
        r->payloads[i] = r->payload_off[i] == SIZE_MAX ? NULL : r->arena.p + r->payload_off[i];
    out->n = n;
    out->dim = r->dim;
    out->first_row = r->row;
    out->ids = r->ids;
    out->vectors = r->vectors;
    out->payloads = r->has_payloads ? r->payloads : NULL;
    r->row += n;
    return 0;
}

int qv_import_skip(qv_import_reader *r, uint64_t rows, qv_status *err)
{
    if (rows == 0)
        return 0;
    if (r->ops->skip != NULL) {
        int rc = r->ops->skip(r, rows, err);
        if (rc == 0)
            r->row += rows;
        return rc;
    }
    uint64_t left = rows;
    while (left > 0) {
        qv_import_batch b;
        int rc = qv_import_next(r, left < 1024 ? (size_t)left : 1024, &b, err);
        if (rc != 0)
            return rc;
        if (b.n == 0)
            return fail(err, QV_ERANGE, "%s: row %llu is past the end (the file has %llu rows)",
                        r->path, (unsigned long long)(r->row + left), (unsigned long long)r->row);
        left -= b.n;
    }
    return 0;
}

void qv_import_close(qv_import_reader *r)
{
    if (r == NULL)
        return;
    if (r->ops != NULL && r->ops->close != NULL)
        r->ops->close(r);
    free(r->path);
    free(r->ids);
    free(r->vectors);
    free(r->payload_off);
    free(r->payloads);
    free(r->arena.p);
    free(r);
}
