/*
 * HDF5 in the point reader (import.h), as ann-benchmarks ships its data sets: one file holding
 * 2-D datasets "train" (the vectors to index), "test" (queries), "neighbors" and "distances",
 * and a root attribute "distance" (euclidean, angular, ...). One dataset is read by hyperslabs
 * of whole rows, converted to float32 by HDF5 itself, so only a batch is ever in memory.
 *
 * HDF5 prints its error stack to stderr by default; every call here runs with that turned off
 * (H5E_BEGIN_TRY) and failures are reported through qv_status like the other formats.
 * Built only when CMake finds HDF5 (QV_WITH_HDF5); without it the format is QV_EUNIMPL.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/import.h"
#include "cli/import_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define fail qv__import_fail

#ifndef QV_WITH_HDF5

int qv__open_hdf5(qv_import_reader *r, const qv_import_opts *o, qv_status *err)
{
    return fail(err, QV_EUNIMPL,
                "%s: this build has no HDF5 support (install libhdf5-dev and "
                "rebuild)",
                r->path);
}

#else

#include <hdf5.h>

typedef struct h5_impl {
    hid_t file, dset, space;
    char name[256];
    uint64_t rows;
} h5_impl;

/* Names of the root group's links, comma-separated, for "no such dataset" messages. */
static void list_root(hid_t file, char *out, size_t cap)
{
    H5G_info_t gi;
    out[0] = '\0';
    if (H5Gget_info(file, &gi) < 0)
        return;
    size_t len = 0;
    for (hsize_t i = 0; i < gi.nlinks && len + 1 < cap; i++) {
        char name[128];
        ssize_t n = H5Lget_name_by_idx(file, ".", H5_INDEX_NAME, H5_ITER_INC, i, name, sizeof(name),
                                       H5P_DEFAULT);
        if (n < 0)
            continue;
        int w = snprintf(out + len, cap - len, "%s%s", len > 0 ? ", " : "", name);
        if (w < 0)
            break;
        len += (size_t)w < cap - len ? (size_t)w : cap - len - 1;
    }
}

/* ann-benchmarks' root attribute "distance", as a metric name the SDK knows, or NULL. */
static const char *metric_of(hid_t file)
{
    if (H5Aexists(file, "distance") <= 0)
        return NULL;
    const char *metric = NULL;
    char buf[64] = {0};
    hid_t a = H5Aopen(file, "distance", H5P_DEFAULT);
    hid_t t = a >= 0 ? H5Aget_type(a) : -1;
    if (t >= 0 && H5Tget_class(t) == H5T_STRING) {
        if (H5Tis_variable_str(t) > 0) {
            hid_t mt = H5Tcopy(H5T_C_S1);
            char *s = NULL;
            if (mt >= 0 && H5Tset_size(mt, H5T_VARIABLE) >= 0 &&
                H5Tset_cset(mt, H5Tget_cset(t)) >= 0 && H5Aread(a, mt, &s) >= 0 && s != NULL) {
                snprintf(buf, sizeof(buf), "%s", s);
                H5free_memory(s);
            }
            if (mt >= 0)
                H5Tclose(mt);
        } else if (H5Tget_size(t) < sizeof(buf)) {
            H5Aread(a, t, buf);
            buf[sizeof(buf) - 1] = '\0';
        }
    }
    if (strcmp(buf, "euclidean") == 0 || strcmp(buf, "l2") == 0)
        metric = "l2";
    else if (strcmp(buf, "angular") == 0 || strcmp(buf, "cosine") == 0)
        metric = "cosine";
    else if (strcmp(buf, "dot") == 0 || strcmp(buf, "ip") == 0 || strcmp(buf, "inner_product") == 0)
        metric = "dot";
    if (t >= 0)
        H5Tclose(t);
    if (a >= 0)
        H5Aclose(a);
    return metric;
}

static int h5_open_inner(qv_import_reader *r, h5_impl *h, qv_status *err)
{
    const char *path = r->path;
    h->file = H5Fopen(path, H5F_ACC_RDONLY, H5P_DEFAULT);
    if (h->file < 0)
        return fail(err, QV_ECORRUPT, "%s: not an HDF5 file (or a damaged one)", path);
    if (H5Lexists(h->file, h->name, H5P_DEFAULT) <= 0) {
        char names[160];
        list_root(h->file, names, sizeof(names));
        return fail(err, QV_ENOTFOUND,
                    "%s: no dataset '%s' (the file has: %s); pick one with "
                    "--dataset",
                    path, h->name, names[0] ? names : "nothing");
    }
    h->dset = H5Dopen2(h->file, h->name, H5P_DEFAULT);
    if (h->dset < 0)
        return fail(err, QV_ECORRUPT, "%s: '%s' is not a dataset", path, h->name);
    hid_t type = H5Dget_type(h->dset);
    if (type < 0)
        return fail(err, QV_ECORRUPT, "%s: dataset '%s': unreadable element type", path, h->name);
    H5T_class_t cls = H5Tget_class(type);
    size_t size = H5Tget_size(type);
    H5Tclose(type);
    if (cls != H5T_FLOAT && cls != H5T_INTEGER)
        return fail(err, QV_EUNIMPL, "%s: dataset '%s' does not hold numbers", path, h->name);
    if (cls == H5T_FLOAT && size != 4 && size != 8)
        return fail(err, QV_EUNIMPL, "%s: dataset '%s' holds %zu-byte floats (only 4 and 8)", path,
                    h->name, size);
    h->space = H5Dget_space(h->dset);
    int ndims = h->space >= 0 ? H5Sget_simple_extent_ndims(h->space) : -1;
    if (ndims != 2)
        return fail(err, QV_ECORRUPT, "%s: dataset '%s' has %d dimensions; expected 2 (rows, dim)",
                    path, h->name, ndims);
    hsize_t dims[2];
    if (H5Sget_simple_extent_dims(h->space, dims, NULL) < 0)
        return fail(err, QV_ECORRUPT, "%s: dataset '%s': unreadable shape", path, h->name);
    if (dims[0] == 0 || dims[1] == 0 || dims[1] > QV_IMPORT_MAX_DIM)
        return fail(err, QV_ECORRUPT,
                    "%s: dataset '%s' has shape (%llu, %llu), out of range (rows >= 1, 1 <= dim "
                    "<= %u)",
                    path, h->name, (unsigned long long)dims[0], (unsigned long long)dims[1],
                    QV_IMPORT_MAX_DIM);
    h->rows = dims[0];
    r->dim = (size_t)dims[1];
    r->has_total = true;
    r->total = dims[0];
    r->metric_hint = metric_of(h->file);
    return 0;
}

static int h5_next_inner(qv_import_reader *r, h5_impl *h, size_t n, qv_status *err)
{
    hsize_t start[2] = {r->row, 0}, count[2] = {n, r->dim};
    hid_t mem = H5Screate_simple(2, count, NULL);
    if (mem < 0)
        return fail(err, QV_ERESOURCE, "%s: HDF5 cannot make a %zu-row buffer", r->path, n);
    herr_t e = H5Sselect_hyperslab(h->space, H5S_SELECT_SET, start, NULL, count, NULL);
    if (e >= 0)
        e = H5Dread(h->dset, H5T_NATIVE_FLOAT, mem, h->space, H5P_DEFAULT, r->vectors);
    H5Sclose(mem);
    if (e < 0)
        return fail(err, QV_ECORRUPT, "%s: dataset '%s': cannot read rows %llu..%llu", r->path,
                    h->name, (unsigned long long)r->row, (unsigned long long)(r->row + n - 1));
    return 0;
}

static int h5_next(qv_import_reader *r, size_t max, size_t *n_out, qv_status *err)
{
    h5_impl *h = r->impl;
    uint64_t left = h->rows - r->row;
    size_t n = left < max ? (size_t)left : max;
    *n_out = 0;
    if (n == 0)
        return 0;
    int rc = 0;
    H5E_BEGIN_TRY
    {
        rc = h5_next_inner(r, h, n, err);
    }
    H5E_END_TRY;
    if (rc != 0)
        return rc;
    for (size_t i = 0; i < n; i++) {
        const float *v = r->vectors + i * r->dim;
        for (size_t j = 0; j < r->dim; j++)
            if (!isfinite(v[j]))
                return fail(err, QV_ECORRUPT,
                            "%s: dataset '%s', row %llu, column %zu is not a finite float32",
                            r->path, h->name, (unsigned long long)(r->row + i), j);
        rc = qv__import_seq_id(r, r->row + i, &r->ids[i], err);
        if (rc != 0)
            return rc;
    }
    *n_out = n;
    return 0;
}

static int h5_skip(qv_import_reader *r, uint64_t rows, qv_status *err)
{
    h5_impl *h = r->impl;
    if (rows > h->rows - r->row)
        return fail(err, QV_ERANGE, "%s: row %llu is past the end (dataset '%s' has %llu rows)",
                    r->path, (unsigned long long)(r->row + rows), h->name,
                    (unsigned long long)h->rows);
    return 0; /* hyperslabs start wherever r->row says */
}

static void h5_close(qv_import_reader *r)
{
    h5_impl *h = r->impl;
    if (h == NULL)
        return;
    H5E_BEGIN_TRY
    {
        if (h->space >= 0)
            H5Sclose(h->space);
        if (h->dset >= 0)
            H5Dclose(h->dset);
        if (h->file >= 0)
            H5Fclose(h->file);
    }
    H5E_END_TRY;
    free(h);
}

static const qv__import_ops h5_ops = {
    .next = h5_next,
    .skip = h5_skip,
    .close = h5_close,
};

int qv__open_hdf5(qv_import_reader *r, const qv_import_opts *o, qv_status *err)
{
    /* The usual open errors (missing file, a directory) read like the other formats'. */
    FILE *probe;
    uint64_t size;
    int rc = qv__open_regular(r->path, &probe, &size, err);
    if (rc != 0)
        return rc;
    fclose(probe);
    h5_impl *h = calloc(1, sizeof(*h));
    if (h == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    h->file = h->dset = h->space = -1;
    r->impl = h;
    r->ops = &h5_ops;
    const char *name = o->dataset != NULL ? o->dataset : "train";
    if (name[0] == '\0' || strlen(name) >= sizeof(h->name))
        return fail(err, QV_EINVAL, "%s: bad dataset name '%s'", r->path, name);
    memcpy(h->name, name, strlen(name) + 1);
    H5E_BEGIN_TRY
    {
        rc = h5_open_inner(r, h, err);
    }
    H5E_END_TRY;
    return rc;
}

#endif /* QV_WITH_HDF5 */
