/*
 * cli/import*.c: every format the point reader knows, read in batches, and malformed files of
 * each refused with a message naming the file, the row or line and the problem.
 *
 * Files are written by the tests themselves into a fresh temporary directory (HDF5 through the
 * C API). Under AddressSanitizer each test ends with a leak check of its own: Criterion would
 * otherwise report a test that leaks as passing.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/import.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <zlib.h>

#ifdef QV_WITH_HDF5
#include <hdf5.h>
#endif

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/qv-import-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(import, .init = setup, .fini = teardown);

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

static const char *tpath(const char *name)
{
    static char buf[4][256];
    static int next;
    char *p = buf[next++ % 4];
    snprintf(p, 256, "%s/%s", tmpdir, name);
    return p;
}

static void write_bytes(const char *path, const void *data, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    cr_assert_eq(fwrite(data, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

static void write_text(const char *path, const char *text)
{
    write_bytes(path, text, strlen(text));
}

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    cr_assert_not_null(gz);
    cr_assert_eq(gzwrite(gz, data, (unsigned)len), (int)len);
    cr_assert_eq(gzclose(gz), Z_OK);
}

/* An fvecs file of n rows of dim floats, value(i, j) = i * 10 + j. */
static void write_fvecs(const char *path, size_t n, int32_t dim)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f);
    for (size_t i = 0; i < n; i++) {
        cr_assert_eq(fwrite(&dim, 4, 1, f), 1);
        for (int32_t j = 0; j < dim; j++) {
            float x = (float)(i * 10 + (size_t)j);
            cr_assert_eq(fwrite(&x, 4, 1, f), 1);
        }
    }
    cr_assert_eq(fclose(f), 0);
}

/* An .npy file: magic, version 1, header dict padded to 64 bytes, data. */
static void write_npy(const char *path, const char *dict, const void *data, size_t len)
{
    char hdr[256];
    size_t hl = strlen(dict);
    size_t total = (10 + hl + 1 + 63) / 64 * 64;
    memset(hdr, ' ', sizeof(hdr));
    memcpy(hdr, dict, hl);
    size_t hlen = total - 10;
    hdr[hlen - 1] = '\n';
    uint8_t buf[4096];
    cr_assert(total + len <= sizeof(buf));
    memcpy(buf, "\x93NUMPY\x01\x00", 8);
    buf[8] = (uint8_t)hlen;
    buf[9] = (uint8_t)(hlen >> 8);
    memcpy(buf + 10, hdr, hlen);
    memcpy(buf + total, data, len);
    write_bytes(path, buf, total + len);
}

/* Opens, asserting success. */
static qv_import_reader *open_ok(const char *path, qv_import_format f, const qv_import_opts *o)
{
    qv_import_reader *r = NULL;
    qv_status err = {0};
    int rc = qv_import_open(path, f, o, &r, &err);
    cr_assert_eq(rc, 0, "%s: rc %d: %s", path, rc, err.msg);
    cr_assert_not_null(r);
    return r;
}

/* Opening must fail with `code` and a message containing `needle`. */
static void open_fails(const char *path, qv_import_format f, const qv_import_opts *o, int code,
                       const char *needle)
{
    qv_import_reader *r = (qv_import_reader *)1;
    qv_status err = {0};
    int rc = qv_import_open(path, f, o, &r, &err);
    cr_assert_eq(rc, code, "%s: rc %d (want %d): %s", path, rc, code, err.msg);
    cr_assert_null(r);
    cr_assert(strstr(err.msg, needle) != NULL, "'%s' not in '%s'", needle, err.msg);
}

/* Reading the whole file must fail with `code` and a message containing `needle`. */
static void read_fails(qv_import_reader *r, int code, const char *needle)
{
    qv_status err = {0};
    qv_import_batch b;
    int rc;
    do
        rc = qv_import_next(r, 2, &b, &err);
    while (rc == 0 && b.n > 0);
    cr_assert_eq(rc, code, "rc %d (want %d): %s", rc, code, err.msg);
    cr_assert(strstr(err.msg, needle) != NULL, "'%s' not in '%s'", needle, err.msg);
    qv_import_close(r);
}

static qv_import_batch next_ok(qv_import_reader *r, size_t max)
{
    qv_import_batch b;
    qv_status err = {0};
    int rc = qv_import_next(r, max, &b, &err);
    cr_assert_eq(rc, 0, "rc %d: %s", rc, err.msg);
    return b;
}

/* ---- format names --------------------------------------------------------------------------- */

Test(import, formats_are_guessed_from_file_names)
{
    static const struct {
        const char *name;
        qv_import_format f;
    } cases[] = {
        {"a/b.fvecs", QV_IMPORT_FVECS},
        {"B.BVECS", QV_IMPORT_BVECS},
        {"x.npy", QV_IMPORT_NPY},
        {"glove-25-angular.hdf5", QV_IMPORT_HDF5},
        {"x.h5", QV_IMPORT_HDF5},
        {"p.jsonl", QV_IMPORT_JSONL},
        {"p.ndjson", QV_IMPORT_JSONL},
        {"t.csv", QV_IMPORT_CSV},
        {"/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz", QV_IMPORT_IDX},
        {"train-images.idx3-ubyte", QV_IMPORT_IDX},
        {"x.idx", QV_IMPORT_IDX},
        {"x.txt", QV_IMPORT_AUTO},
        {"fvecs", QV_IMPORT_AUTO},
        {"dir.npy/file", QV_IMPORT_AUTO},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++)
        cr_assert_eq(qv_import_format_guess(cases[i].name), cases[i].f, "%s", cases[i].name);
    qv_import_format f;
    cr_assert_eq(qv_import_format_parse("HDF5", &f), 0);
    cr_assert_eq(f, QV_IMPORT_HDF5);
    cr_assert_eq(qv_import_format_parse("parquet", &f), QV_EINVAL);
    cr_assert_str_eq(qv_import_format_name(QV_IMPORT_JSONL), "jsonl");
    write_text(tpath("x.txt"), "1 2 3\n");
    open_fails(tpath("x.txt"), QV_IMPORT_AUTO, NULL, QV_EINVAL, "--format");
    open_fails(tpath("none.fvecs"), QV_IMPORT_AUTO, NULL, QV_ENOTFOUND, "none.fvecs");
    open_fails(tmpdir, QV_IMPORT_CSV, NULL, QV_EINVAL, "not a regular file");
    assert_no_leaks();
}

/* ---- fvecs / bvecs -------------------------------------------------------------------------- */

Test(import, fvecs_streams_batches_with_sequential_ids)
{
    write_fvecs(tpath("a.fvecs"), 5, 3);
    qv_import_opts o = {.start_id = 100};
    qv_import_reader *r = open_ok(tpath("a.fvecs"), QV_IMPORT_AUTO, &o);
    uint64_t rows = 0;
    cr_assert(qv_import_total_rows(r, &rows));
    cr_assert_eq(rows, 5);
    cr_assert_eq(qv_import_dim(r), 3);
    cr_assert_eq(qv_import_format_of(r), QV_IMPORT_FVECS);
    cr_assert_null(qv_import_metric_hint(r));
    uint64_t seen = 0;
    for (int round = 0; round < 3; round++) {
        qv_import_batch b = next_ok(r, 2);
        cr_assert_eq(b.n, round < 2 ? 2 : 1);
        cr_assert_eq(b.first_row, seen);
        cr_assert_null(b.payloads);
        for (size_t i = 0; i < b.n; i++) {
            cr_assert(!b.ids[i].is_uuid);
            cr_assert_eq(b.ids[i].num, 100 + seen + i);
            cr_assert_eq(b.vectors[i * 3 + 2], (float)((seen + i) * 10 + 2));
        }
        seen += b.n;
    }
    cr_assert_eq(next_ok(r, 2).n, 0, "end of file");
    uint64_t done, total;
    qv_import_bytes(r, &done, &total);
    cr_assert_eq(total, 5 * 16);
    cr_assert_eq(done, total);
    qv_import_close(r);
    assert_no_leaks();
}

Test(import, fvecs_skip_seeks_and_refuses_past_the_end)
{
    write_fvecs(tpath("a.fvecs"), 5, 2);
    qv_import_reader *r = open_ok(tpath("a.fvecs"), QV_IMPORT_FVECS, NULL);
    qv_status err = {0};
    cr_assert_eq(qv_import_skip(r, 3, &err), 0, "%s", err.msg);
    qv_import_batch b = next_ok(r, 10);
    cr_assert_eq(b.n, 2);
    cr_assert_eq(b.first_row, 3);
    cr_assert_eq(b.ids[0].num, 3);
    cr_assert_eq(b.vectors[0], 30.0f);
    cr_assert_eq(qv_import_skip(r, 1, &err), QV_ERANGE);
    cr_assert(strstr(err.msg, "5 rows") != NULL, "%s", err.msg);
    qv_import_close(r);
    assert_no_leaks();
}

Test(import, fvecs_malformed_files_are_refused)
{
    write_fvecs(tpath("a.fvecs"), 4, 2);
    uint8_t buf[64];
    FILE *f = fopen(tpath("a.fvecs"), "rb");
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_eq(len, 48);
    write_bytes(tpath("short.fvecs"), buf, len - 1);
    open_fails(tpath("short.fvecs"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "truncated");
    write_bytes(tpath("empty.fvecs"), buf, 0);
    open_fails(tpath("empty.fvecs"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "empty");
    int32_t bad = 0;
    memcpy(buf, &bad, 4);
    write_bytes(tpath("zero.fvecs"), buf, len);
    open_fails(tpath("zero.fvecs"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "dimension 0");
    /* Row 2 claims dimension 5 while the size still divides: found when row 2 is read. */
    int32_t two = 2, five = 5;
    memcpy(buf, &two, 4);
    memcpy(buf + 24, &five, 4);
    write_bytes(tpath("mix.fvecs"), buf, len);
    qv_import_reader *r = open_ok(tpath("mix.fvecs"), QV_IMPORT_AUTO, NULL);
    cr_assert_eq(next_ok(r, 2).n, 2, "rows 0 and 1 are fine");
    read_fails(r, QV_ECORRUPT, "row 2 declares dimension 5");
    float nan = NAN;
    memcpy(buf + 24, &two, 4);
    memcpy(buf + 12 + 8, &nan, 4); /* row 1, column 1 */
    write_bytes(tpath("nan.fvecs"), buf, len);
    r = open_ok(tpath("nan.fvecs"), QV_IMPORT_AUTO, NULL);
    read_fails(r, QV_ECORRUPT, "row 1, column 1");
    assert_no_leaks();
}

Test(import, bvecs_are_widened_to_float)
{
    uint8_t buf[2 * (4 + 3)] = {3, 0, 0, 0, 0, 128, 255, 3, 0, 0, 0, 1, 2, 3};
    write_bytes(tpath("a.bvecs"), buf, sizeof(buf));
    qv_import_reader *r = open_ok(tpath("a.bvecs"), QV_IMPORT_AUTO, NULL);
    qv_import_batch b = next_ok(r, 10);
    float want[6] = {0, 128, 255, 1, 2, 3};
    cr_assert_eq(b.n, 2);
    cr_assert_arr_eq(b.vectors, want, sizeof(want));
    qv_import_close(r);
    write_bytes(tpath("b.bvecs"), buf, sizeof(buf) - 1);
    open_fails(tpath("b.bvecs"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "b.bvecs");
    assert_no_leaks();
}

/* ---- .npy ----------------------------------------------------------------------------------- */

Test(import, npy_float32_float64_uint8_int8)
{
    float f4[6] = {1.5f, -2, 3, 4, 5, 6.25f};
    double f8[6] = {1.5, -2, 3, 4, 5, 6.25};
    uint8_t u1[6] = {0, 7, 200, 255, 1, 2};
    int8_t i1[6] = {-128, -1, 0, 1, 2, 127};
    write_npy(tpath("f4.npy"), "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", f4,
              sizeof(f4));
    write_npy(tpath("f8.npy"), "{'descr': '<f8', 'fortran_order': False, 'shape': (3, 2), }", f8,
              sizeof(f8));
    write_npy(tpath("u1.npy"), "{'descr': '|u1', 'fortran_order': False, 'shape': (3, 2), }", u1,
              sizeof(u1));
    write_npy(tpath("i1.npy"), "{'descr': '|i1', 'fortran_order': False, 'shape': (3, 2), }", i1,
              sizeof(i1));
    const char *names[4] = {"f4.npy", "f8.npy", "u1.npy", "i1.npy"};
    float want[4][6] = {{1.5f, -2, 3, 4, 5, 6.25f},
                        {1.5f, -2, 3, 4, 5, 6.25f},
                        {0, 7, 200, 255, 1, 2},
                        {-128, -1, 0, 1, 2, 127}};
    for (int k = 0; k < 4; k++) {
        qv_import_reader *r = open_ok(tpath(names[k]), QV_IMPORT_AUTO, NULL);
        cr_assert_eq(qv_import_dim(r), 2);
        qv_import_batch b = next_ok(r, 2);
        cr_assert_eq(b.n, 2);
        cr_assert_arr_eq(b.vectors, want[k], 4 * sizeof(float), "%s", names[k]);
        b = next_ok(r, 2);
        cr_assert_eq(b.n, 1);
        cr_assert_arr_eq(b.vectors, want[k] + 4, 2 * sizeof(float), "%s", names[k]);
        qv_import_close(r);
    }
    assert_no_leaks();
}

Test(import, npy_bad_headers_shapes_and_sizes_are_refused)
{
    uint8_t data[64] = {0};
    static const struct {
        const char *dict;
        size_t len;
        int code;
        const char *needle;
    } cases[] = {
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", 16, QV_EUNIMPL, "int32"},
        {"{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", 8, QV_EUNIMPL, "<f2"},
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, QV_EUNIMPL, "Fortran"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 16, QV_ECORRUPT, "2-D"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 12, QV_ECORRUPT,
         "truncated"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 20, QV_ECORRUPT,
         "trailing"},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 70000), }", 16, QV_ECORRUPT,
         "out of range"},
        {"{'descr': '<f4', 'fortran_order': False}", 16, QV_ECORRUPT, "lacks"},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (2, 2)}", 16, QV_ECORRUPT, "header"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_npy(tpath("bad.npy"), cases[i].dict, data, cases[i].len);
        open_fails(tpath("bad.npy"), QV_IMPORT_AUTO, NULL, cases[i].code, cases[i].needle);
    }
    write_bytes(tpath("magic.npy"), "\x93NUMPZ\x01\x00\x10\x00{}", 12);
    open_fails(tpath("magic.npy"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "magic");
    assert_no_leaks();
}

Test(import, dense_layer_keeps_integer_ids_exact_and_seeks)
{
    int64_t ids[6] = {0, 1, 5000000000LL, 3, 4, 5};
    write_npy(tpath("i8.npy"), "{'descr': '<i8', 'fortran_order': False, 'shape': (3, 2), }", ids,
              sizeof(ids));
    qv_dense_file *f;
    qv_status err = {0};
    cr_assert_eq(qv_dense_open(tpath("i8.npy"), QV_DENSE_NPY, &f, &err), 0, "%s", err.msg);
    const qv_dense_info *info = qv_dense_info_of(f);
    cr_assert_eq(info->elem, QV_ELEM_I64);
    cr_assert_eq(info->rows, 3);
    cr_assert_eq(info->dim, 2);
    int64_t got[4];
    cr_assert_eq(qv_dense_seek(f, 1, &err), 0);
    cr_assert_eq(qv_dense_read(f, 2, got, &err), 0, "%s", err.msg);
    cr_assert_eq(got[0], 5000000000LL);
    cr_assert_eq(got[3], 5);
    cr_assert_eq(qv_dense_read(f, 1, got, &err), QV_ERANGE);
    qv_dense_close(f);
    assert_no_leaks();
}

/* ---- HDF5 ----------------------------------------------------------------------------------- */

#ifdef QV_WITH_HDF5
/* An ann-benchmarks-like file: train (rows x dim float32, value i * 10 + j), test (2 x dim
 * float64), a 1-D dataset, and the root attribute distance = `distance` (variable-length). */
static void write_h5(const char *path, hsize_t rows, hsize_t dim, const char *distance)
{
    hid_t file = H5Fcreate(path, H5F_ACC_TRUNC, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(file, 0);
    float *train = malloc(rows * dim * sizeof(float));
    for (hsize_t i = 0; i < rows * dim; i++)
        train[i] = (float)((i / dim) * 10 + i % dim);
    hsize_t d2[2] = {rows, dim};
    hid_t sp = H5Screate_simple(2, d2, NULL);
    hid_t ds = H5Dcreate2(file, "train", H5T_IEEE_F32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_FLOAT, H5S_ALL, H5S_ALL, H5P_DEFAULT, train), 0);
    H5Dclose(ds);
    H5Sclose(sp);
    free(train);
    double test[2 * 64];
    cr_assert(dim <= 64);
    for (hsize_t i = 0; i < 2 * dim; i++)
        test[i] = 0.5 + (double)i;
    hsize_t t2[2] = {2, dim};
    sp = H5Screate_simple(2, t2, NULL);
    ds = H5Dcreate2(file, "test", H5T_IEEE_F64LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_DOUBLE, H5S_ALL, H5S_ALL, H5P_DEFAULT, test), 0);
    H5Dclose(ds);
    H5Sclose(sp);
    int32_t flat[3] = {1, 2, 3};
    hsize_t d1[1] = {3};
    sp = H5Screate_simple(1, d1, NULL);
    ds = H5Dcreate2(file, "flat", H5T_STD_I32LE, sp, H5P_DEFAULT, H5P_DEFAULT, H5P_DEFAULT);
    cr_assert_geq(H5Dwrite(ds, H5T_NATIVE_INT32, H5S_ALL, H5S_ALL, H5P_DEFAULT, flat), 0);
    H5Dclose(ds);
    H5Sclose(sp);
    if (distance != NULL) {
        hid_t st = H5Tcopy(H5T_C_S1);
        H5Tset_size(st, H5T_VARIABLE);
        H5Tset_cset(st, H5T_CSET_UTF8);
        hid_t as = H5Screate(H5S_SCALAR);
        hid_t a = H5Acreate2(file, "distance", st, as, H5P_DEFAULT, H5P_DEFAULT);
        cr_assert_geq(H5Awrite(a, st, &distance), 0);
        H5Aclose(a);
        H5Sclose(as);
        H5Tclose(st);
    }
    H5Fclose(file);
}
#endif

Test(import, hdf5_reads_train_or_test_by_hyperslabs)
{
#ifndef QV_WITH_HDF5
    cr_skip_test("built without HDF5");
#else
    write_h5(tpath("ann.hdf5"), 10, 4, "angular");
    qv_import_reader *r = open_ok(tpath("ann.hdf5"), QV_IMPORT_AUTO, NULL);
    uint64_t rows = 0;
    cr_assert(qv_import_total_rows(r, &rows));
    cr_assert_eq(rows, 10);
    cr_assert_eq(qv_import_dim(r), 4);
    cr_assert_str_eq(qv_import_metric_hint(r), "cosine");
    uint64_t seen = 0;
    for (;;) {
        qv_import_batch b = next_ok(r, 3);
        if (b.n == 0)
            break;
        for (size_t i = 0; i < b.n; i++) {
            cr_assert_eq(b.ids[i].num, seen + i);
            cr_assert_eq(b.vectors[i * 4 + 3], (float)((seen + i) * 10 + 3));
        }
        seen += b.n;
    }
    cr_assert_eq(seen, 10);
    qv_import_close(r);

    qv_import_opts o = {.dataset = "test"};
    r = open_ok(tpath("ann.hdf5"), QV_IMPORT_HDF5, &o);
    qv_status err = {0};
    cr_assert_eq(qv_import_skip(r, 1, &err), 0, "%s", err.msg);
    qv_import_batch b = next_ok(r, 5);
    cr_assert_eq(b.n, 1);
    cr_assert_eq(b.first_row, 1);
    cr_assert_eq(b.vectors[0], 4.5f, "float64 converted");
    cr_assert_eq(qv_import_skip(r, 1, &err), QV_ERANGE);
    qv_import_close(r);
    assert_no_leaks();
#endif
}

Test(import, hdf5_missing_datasets_and_bad_files_are_refused)
{
#ifndef QV_WITH_HDF5
    cr_skip_test("built without HDF5");
#else
    write_h5(tpath("ann.h5"), 3, 2, "euclidean");
    qv_import_opts o = {.dataset = "neighbors"};
    open_fails(tpath("ann.h5"), QV_IMPORT_AUTO, &o, QV_ENOTFOUND, "flat, test, train");
    o.dataset = "flat";
    open_fails(tpath("ann.h5"), QV_IMPORT_AUTO, &o, QV_ECORRUPT, "1 dimensions");
    write_text(tpath("text.hdf5"), "not hdf5 at all\n");
    open_fails(tpath("text.hdf5"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "not an HDF5 file");
    open_fails(tpath("none.hdf5"), QV_IMPORT_AUTO, NULL, QV_ENOTFOUND, "none.hdf5");
    qv_import_reader *r = open_ok(tpath("ann.h5"), QV_IMPORT_AUTO, NULL);
    cr_assert_str_eq(qv_import_metric_hint(r), "l2");
    qv_import_close(r);
    write_h5(tpath("plain.h5"), 3, 2, NULL);
    r = open_ok(tpath("plain.h5"), QV_IMPORT_AUTO, NULL);
    cr_assert_null(qv_import_metric_hint(r));
    qv_import_close(r);
    assert_no_leaks();
#endif
}

/* ---- JSON lines ----------------------------------------------------------------------------- */

Test(import, jsonl_ids_vectors_and_payloads_pass_through)
{
    write_text(tpath("p.jsonl"),
               "{\"id\": 7, \"vector\": [1, 2.5, -3e1], \"payload\": {\"label\": 3, \"tags\": "
               "[\"a\", \"b\\\"c\"], \"x\": null}}\n"
               "\n"
               "  {\"vector\":[4,5,6]}  \r\n"
               "{\"payload\": null, \"id\": \"6F9619FF-8B86-D011-B42D-00CF4FC964FF\", "
               "\"vector\": [0, 0, 1]}\n"
               "{\"id\": null, \"vector\": [7, 8, 9], \"payload\": {}}");
    qv_import_opts o = {.start_id = 1000};
    qv_import_reader *r = open_ok(tpath("p.jsonl"), QV_IMPORT_AUTO, &o);
    cr_assert_eq(qv_import_dim(r), 3);
    uint64_t rows;
    cr_assert(!qv_import_total_rows(r, &rows), "JSON lines are not counted up front");
    qv_import_batch b = next_ok(r, 3);
    cr_assert_eq(b.n, 3);
    cr_assert_not_null(b.payloads);
    cr_assert_eq(b.ids[0].num, 7);
    cr_assert_eq(b.vectors[2], -30.0f);
    cr_assert_str_eq(b.payloads[0], "{\"label\": 3, \"tags\": [\"a\", \"b\\\"c\"], \"x\": null}");
    cr_assert_eq(b.ids[1].num, 1001, "no id: start-id + row");
    cr_assert_null(b.payloads[1]);
    cr_assert(b.ids[2].is_uuid);
    cr_assert_str_eq(b.ids[2].uuid, "6f9619ff-8b86-d011-b42d-00cf4fc964ff");
    cr_assert_null(b.payloads[2]);
    b = next_ok(r, 3);
    cr_assert_eq(b.n, 1);
    cr_assert_eq(b.first_row, 3);
    cr_assert_eq(b.ids[0].num, 1003);
    cr_assert_str_eq(b.payloads[0], "{}");
    cr_assert_eq(next_ok(r, 3).n, 0);
    uint64_t done, total;
    qv_import_bytes(r, &done, &total);
    cr_assert_eq(done, total);
    qv_import_close(r);
    assert_no_leaks();
}

Test(import, jsonl_errors_name_the_line_and_column)
{
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 2, 3]}\n", "line 2: \"vector\" has 3 numbers"},
        {"{\"vector\": [1, 2]}\n\n{\"vector\": [1, 2}\n", "line 3, column 17"},
        {"{\"vector\": [1, 2]}\n{\"vectors\": [1, 2]}\n", "line 2, column 2: unknown member"},
        {"{\"vector\": [1, 2]}\n{\"id\": -1, \"vector\": [1, 2]}\n", "line 2, column 8"},
        {"{\"vector\": [1, 2]}\n{\"id\": 1.5, \"vector\": [1, 2]}\n", "integer 0..2^64-1"},
        {"{\"vector\": [1, 2]}\n{\"id\": \"abc\", \"vector\": [1, 2]}\n", "or a UUID"},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, \"2\"]}\n", "numbers only"},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 1e39]}\n", "float32 range"},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 2], \"payload\": [1]}\n", "must be an object"},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 2], \"payload\": {\"a\": }}\n",
         "line 2, column 37"},
        {"{\"vector\": [1, 2]}\n{\"id\": 3}\n", "line 2, column 1: no \"vector\""},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 2]} x\n", "trailing characters"},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 2], \"vector\": [1, 2]}\n", "given twice"},
        {"{\"vector\": [1, 2]}\n[1, 2]\n", "line 2, column 1: expected a JSON object"},
        {"{\"vector\": [1, 2]}\n{\"vector\": [1, 2], \"payload\": {\"s\": \"a\tb\"}}\n",
         "control character"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_text(tpath("bad.jsonl"), cases[i].text);
        qv_import_reader *r = open_ok(tpath("bad.jsonl"), QV_IMPORT_AUTO, NULL);
        read_fails(r, QV_ECORRUPT, cases[i].needle);
    }
    write_text(tpath("empty.jsonl"), "\n  \n");
    open_fails(tpath("empty.jsonl"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "no JSON lines");
    write_text(tpath("first.jsonl"), "{\"vector\": []}\n");
    open_fails(tpath("first.jsonl"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "line 1, column 13");
    assert_no_leaks();
}

Test(import, jsonl_skip_reads_through)
{
    write_text(tpath("p.jsonl"), "{\"vector\": [1]}\n{\"vector\": [2]}\n{\"vector\": [3]}\n");
    qv_import_reader *r = open_ok(tpath("p.jsonl"), QV_IMPORT_AUTO, NULL);
    qv_status err = {0};
    cr_assert_eq(qv_import_skip(r, 2, &err), 0, "%s", err.msg);
    qv_import_batch b = next_ok(r, 5);
    cr_assert_eq(b.n, 1);
    cr_assert_eq(b.vectors[0], 3.0f);
    cr_assert_eq(b.ids[0].num, 2);
    cr_assert_eq(qv_import_skip(r, 1, &err), QV_ERANGE);
    cr_assert(strstr(err.msg, "has 3 rows") != NULL, "%s", err.msg);
    qv_import_close(r);
    assert_no_leaks();
}

/* ---- CSV ------------------------------------------------------------------------------------ */

Test(import, csv_columns_quotes_and_typed_payload_fields)
{
    write_text(tpath("t.csv"), "id,v1,v0,label,name,price,flag,zip\r\n"
                               "5,2,1,3,\"a, b\",1.5,true,007\r\n"
                               "6,4,3,-2,\"say \"\"hi\"\"\nthere\",2e3,FALSE,\r\n"
                               "\r\n"
                               ", 6,5, 12 , plain ,0.1,yes,\"\"\r\n");
    qv_import_opts o = {.start_id = 100};
    qv_import_reader *r = open_ok(tpath("t.csv"), QV_IMPORT_AUTO, &o);
    cr_assert_eq(qv_import_dim(r), 2);
    qv_import_batch b = next_ok(r, 10);
    cr_assert_eq(b.n, 3);
    float want[6] = {1, 2, 3, 4, 5, 6};
    cr_assert_arr_eq(b.vectors, want, sizeof(want), "v0, v1 in any column order");
    cr_assert_eq(b.ids[0].num, 5);
    cr_assert_eq(b.ids[1].num, 6);
    cr_assert_eq(b.ids[2].num, 102, "empty id: start-id + row");
    cr_assert_str_eq(b.payloads[0], "{\"label\":3,\"name\":\"a, b\",\"price\":1.5,\"flag\":true,"
                                    "\"zip\":7}");
    cr_assert_str_eq(b.payloads[1], "{\"label\":-2,\"name\":\"say \\\"hi\\\"\\u000athere\","
                                    "\"price\":2000.0,\"flag\":false}");
    cr_assert_str_eq(b.payloads[2], "{\"label\":12,\"name\":\" plain \",\"price\":0.1,"
                                    "\"flag\":\"yes\"}");
    cr_assert_eq(next_ok(r, 10).n, 0);
    qv_import_close(r);
    assert_no_leaks();
}

Test(import, csv_vector_column_in_brackets_or_spaces)
{
    write_text(tpath("v.csv"), "vector,id\n\"[1.0, 2.0, 3]\",a1b2c3d4-0000-4000-8000-000000000001\n"
                               "4 5 6,2\n\" 7,8 , 9 \",3\n");
    qv_import_reader *r = open_ok(tpath("v.csv"), QV_IMPORT_CSV, NULL);
    cr_assert_eq(qv_import_dim(r), 3);
    qv_import_batch b = next_ok(r, 2);
    cr_assert_eq(b.n, 2);
    cr_assert_null(b.payloads, "no payload columns");
    cr_assert(b.ids[0].is_uuid);
    cr_assert_eq(b.vectors[2], 3.0f);
    cr_assert_eq(b.vectors[3], 4.0f);
    b = next_ok(r, 2);
    cr_assert_eq(b.n, 1);
    cr_assert_eq(b.vectors[1], 8.0f);
    qv_import_close(r);
    assert_no_leaks();
}

Test(import, csv_errors_name_the_line)
{
    static const struct {
        const char *text;
        const char *needle;
    } cases[] = {
        {"v0,v1\n1,2\n3\n", "line 3: 1 fields, the header has 2"},
        {"v0,v1\n1,2\n\n3,abc\n", "line 4, column 'v1': 'abc' is not a finite"},
        {"v0,v1,name\n1,2,\"open\n3,4,x\n",
         "unterminated quoted field (the quote opened on line 2)"},
        {"v0,v1,name\n1,2,\"x\"y\n", "line 2: field 3: unexpected 'y' after a closing quote"},
        {"id,v0\nabc,1\n", "line 2: id 'abc'"},
        {"vector\n\"[1, 2]\"\n\"[1, 2, 3]\"\n", "line 3, column 'vector': 3 numbers"},
        {"vector\n\"[1,,2]\"\n", "line 2, column 'vector': an empty element"},
        {"v0,v1\n1,nan\n", "'nan' is not a finite"},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_text(tpath("bad.csv"), cases[i].text);
        qv_import_reader *r = NULL;
        qv_status err = {0};
        int rc = qv_import_open(tpath("bad.csv"), QV_IMPORT_AUTO, NULL, &r, &err);
        if (rc != 0) { /* a 'vector' file's first row is read at open */
            cr_assert_eq(rc, QV_ECORRUPT, "case %zu: %s", i, err.msg);
            cr_assert(strstr(err.msg, cases[i].needle) != NULL, "'%s' not in '%s'", cases[i].needle,
                      err.msg);
            continue;
        }
        read_fails(r, QV_ECORRUPT, cases[i].needle);
    }
    write_text(tpath("h.csv"), "v0,v2\n1,2\n");
    open_fails(tpath("h.csv"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "column v1 is missing");
    write_text(tpath("h.csv"), "a,b\n1,2\n");
    open_fails(tpath("h.csv"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "no vector columns");
    write_text(tpath("h.csv"), "v0,vector\n1,2\n");
    open_fails(tpath("h.csv"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "keep one");
    write_text(tpath("h.csv"), "v0,a,a\n1,2,3\n");
    open_fails(tpath("h.csv"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "'a' appears twice");
    write_text(tpath("h.csv"), "");
    open_fails(tpath("h.csv"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "header row is required");
    write_text(tpath("h.csv"), "vector\n");
    open_fails(tpath("h.csv"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "no data rows");
    assert_no_leaks();
}

/* ---- IDX ------------------------------------------------------------------------------------ */

/* IDX images: n images of 2 x 2 pixels, pixel k of image i = i * 4 + k. */
static size_t idx_images(uint8_t *buf, uint32_t n)
{
    uint8_t hdr[16] = {0, 0, 8, 3, 0, 0, 0, (uint8_t)n, 0, 0, 0, 2, 0, 0, 0, 2};
    memcpy(buf, hdr, 16);
    for (uint32_t i = 0; i < n * 4; i++)
        buf[16 + i] = (uint8_t)i;
    return 16 + n * 4;
}

static size_t idx_labels(uint8_t *buf, uint32_t n)
{
    uint8_t hdr[8] = {0, 0, 8, 1, 0, 0, 0, (uint8_t)n};
    memcpy(buf, hdr, 8);
    for (uint32_t i = 0; i < n; i++)
        buf[8 + i] = (uint8_t)(9 - i % 10);
    return 8 + n;
}

Test(import, idx_images_with_sibling_labels_as_payload)
{
    uint8_t buf[256];
    write_gz(tpath("train-images-idx3-ubyte.gz"), buf, idx_images(buf, 5));
    write_gz(tpath("train-labels-idx1-ubyte.gz"), buf, idx_labels(buf, 5));
    qv_import_reader *r = open_ok(tpath("train-images-idx3-ubyte.gz"), QV_IMPORT_AUTO, NULL);
    cr_assert_eq(qv_import_dim(r), 4);
    qv_import_batch b = next_ok(r, 3);
    cr_assert_eq(b.n, 3);
    cr_assert_eq(b.vectors[5], 5.0f);
    cr_assert_str_eq(b.payloads[0], "{\"label\":9}");
    cr_assert_str_eq(b.payloads[2], "{\"label\":7}");
    qv_status err = {0};
    cr_assert_eq(qv_import_skip(r, 1, &err), 0, "%s", err.msg);
    b = next_ok(r, 3);
    cr_assert_eq(b.n, 1);
    cr_assert_eq(b.ids[0].num, 4);
    cr_assert_eq(b.vectors[0], 16.0f);
    cr_assert_str_eq(b.payloads[0], "{\"label\":5}", "labels seek along with the images");
    qv_import_close(r);

    qv_import_opts o = {.no_labels = true};
    r = open_ok(tpath("train-images-idx3-ubyte.gz"), QV_IMPORT_AUTO, &o);
    cr_assert_null(next_ok(r, 3).payloads);
    qv_import_close(r);

    /* Plain (not gzip) images without a sibling: no payload. */
    write_bytes(tpath("x.idx"), buf, idx_images(buf, 2));
    r = open_ok(tpath("x.idx"), QV_IMPORT_AUTO, NULL);
    b = next_ok(r, 3);
    cr_assert_eq(b.n, 2);
    cr_assert_null(b.payloads);
    qv_import_close(r);
    assert_no_leaks();
}

Test(import, idx_bad_files_and_mismatched_labels_are_refused)
{
    uint8_t buf[256];
    write_gz(tpath("t10k-images-idx3-ubyte.gz"), buf, idx_images(buf, 5));
    write_gz(tpath("t10k-labels-idx1-ubyte.gz"), buf, idx_labels(buf, 4));
    open_fails(tpath("t10k-images-idx3-ubyte.gz"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT,
               "4 labels for the 5 images");
    open_fails(tpath("t10k-labels-idx1-ubyte.gz"), QV_IMPORT_AUTO, NULL, QV_EINVAL, "label file");
    qv_import_opts o = {.labels_path = tpath("t10k-images-idx3-ubyte.gz")};
    write_gz(tpath("a-images-idx3-ubyte.gz"), buf, idx_images(buf, 5));
    open_fails(tpath("a-images-idx3-ubyte.gz"), QV_IMPORT_AUTO, &o, QV_ECORRUPT, "label file");
    size_t len = idx_images(buf, 5);
    write_bytes(tpath("cut-images-idx3-ubyte"), buf, len - 1);
    open_fails(tpath("cut-images-idx3-ubyte"), QV_IMPORT_AUTO, NULL, QV_ECORRUPT, "truncated");
    write_gz(tpath("cut2-images-idx3-ubyte.gz"), buf, len - 1);
    qv_import_reader *r = open_ok(tpath("cut2-images-idx3-ubyte.gz"), QV_IMPORT_AUTO, NULL);
    read_fails(r, QV_ECORRUPT, "truncated");
    buf[2] = 0x0d;
    write_gz(tpath("f-images-idx3-ubyte.gz"), buf, len);
    open_fails(tpath("f-images-idx3-ubyte.gz"), QV_IMPORT_AUTO, NULL, QV_EUNIMPL, "0x0d");
    assert_no_leaks();
}

Test(import, debian_fashion_mnist_streams_with_labels)
{
    const char *path = "/usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz";
    if (access(path, R_OK) != 0)
        cr_skip_test("dataset-fashion-mnist is not installed");
    qv_import_reader *r = open_ok(path, QV_IMPORT_AUTO, NULL);
    uint64_t rows = 0;
    cr_assert(qv_import_total_rows(r, &rows));
    cr_assert_eq(rows, 60000);
    cr_assert_eq(qv_import_dim(r), 784);
    qv_import_batch b = next_ok(r, 500);
    cr_assert_eq(b.n, 500);
    size_t per_label[10] = {0};
    for (size_t i = 0; i < b.n; i++) {
        unsigned label = 99;
        cr_assert_eq(sscanf(b.payloads[i], "{\"label\":%u}", &label), 1, "%s", b.payloads[i]);
        cr_assert_lt(label, 10);
        per_label[label]++;
    }
    /* One assertion, not 392,000: --full-stats reports each one to the runner. */
    size_t out_of_range = 0;
    for (size_t k = 0; k < b.n * 784; k++)
        out_of_range += b.vectors[k] < 0 || b.vectors[k] > 255;
    cr_assert_eq(out_of_range, 0, "pixels are 0..255");
    cr_assert_str_eq(b.payloads[0], "{\"label\":9}", "the first training image is an ankle boot");
    for (int l = 0; l < 10; l++)
        cr_assert_gt(per_label[l], 20, "label %d", l);
    qv_import_close(r);
    assert_no_leaks();
}

/* ---- vector text ---------------------------------------------------------------------------- */

Test(import, vector_text_forms)
{
    static const struct {
        const char *text;
        size_t dim;
        float last;
    } ok[] = {
        {"[1, 2.5, -3]", 3, -3.0f}, {"1 2 3 4", 4, 4.0f}, {"1,2", 2, 2.0f},
        {" [ 1e-3 ] ", 1, 1e-3f},   {"+.5, 6.", 2, 6.0f},
    };
    for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
        float *v = NULL;
        size_t dim = 0;
        qv_status err = {0};
        cr_assert_eq(qv_import_parse_vector(ok[i].text, &v, &dim, &err), 0, "%s: %s", ok[i].text,
                     err.msg);
        cr_assert_eq(dim, ok[i].dim, "%s", ok[i].text);
        cr_assert_eq(v[dim - 1], ok[i].last, "%s", ok[i].text);
        free(v);
    }
    static const char *const bad[] = {"",    "[]",  "[1, 2", "1,,2", "1, x",
                                      "nan", "inf", "1e40",  "0x10"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        float *v = (float *)1;
        size_t dim = 9;
        qv_status err = {0};
        cr_assert_eq(qv_import_parse_vector(bad[i], &v, &dim, &err), QV_EINVAL, "'%s'", bad[i]);
        cr_assert_null(v);
        cr_assert_eq(dim, 0);
        cr_assert(strstr(err.msg, "bad vector") != NULL, "%s", err.msg);
    }
    assert_no_leaks();
}
