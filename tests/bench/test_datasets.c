/* bench/datasets.c: the vector file loaders accept good files and refuse bad ones cleanly. */
#define _POSIX_C_SOURCE 200809L
#include "bench/datasets.h"

#include <criterion/criterion.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>
#include <zlib.h>

static char tmpdir[64];

static void setup(void)
{
    snprintf(tmpdir, sizeof(tmpdir), "/tmp/qv-datasets-XXXXXX");
    cr_assert_not_null(mkdtemp(tmpdir));
}

static void teardown(void)
{
    char cmd[128];
    snprintf(cmd, sizeof(cmd), "rm -rf '%s'", tmpdir);
    cr_assert_eq(system(cmd), 0);
}

TestSuite(datasets, .init = setup, .fini = teardown);

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

static void write_gz(const char *path, const void *data, size_t len)
{
    gzFile gz = gzopen(path, "wb");
    cr_assert_not_null(gz);
    cr_assert_eq(gzwrite(gz, data, (unsigned)len), (int)len);
    cr_assert_eq(gzclose(gz), Z_OK);
}

/* An .npy file: magic, version, header dict padded to 64 bytes, data. */
static void write_npy(const char *path, int version, const char *dict, const void *data, size_t len)
{
    char hdr[512];
    size_t pre = version == 1 ? 10 : 12;
    size_t hl = strlen(dict);
    size_t total = (pre + hl + 1 + 63) / 64 * 64;
    memset(hdr, ' ', sizeof(hdr));
    memcpy(hdr, dict, hl);
    size_t hlen = total - pre;
    hdr[hlen - 1] = '\n';
    uint8_t buf[4096];
    cr_assert(total + len <= sizeof(buf));
    memcpy(buf, "\x93NUMPY", 6);
    buf[6] = (uint8_t)version;
    buf[7] = 0;
    if (version == 1) {
        buf[8] = (uint8_t)hlen;
        buf[9] = (uint8_t)(hlen >> 8);
    } else {
        buf[8] = (uint8_t)hlen;
        buf[9] = (uint8_t)(hlen >> 8);
        buf[10] = buf[11] = 0;
    }
    memcpy(buf + pre, hdr, hlen);
    memcpy(buf + total, data, len);
    write_bytes(path, buf, total + len);
}

/* ------------------------------------------------------------------------------------------- */

Test(datasets, fvecs_round_trip_and_limit)
{
    float v[5 * 3];
    for (int i = 0; i < 15; i++)
        v[i] = (float)i * 0.5f - 3.0f;
    qv_status err = {0};
    cr_assert_eq(qv_ds_write_fvecs(tpath("a.fvecs"), v, 5, 3, &err), 0, "%s", err.msg);
    qv_vecs m;
    cr_assert_eq(qv_ds_load_vectors(tpath("a.fvecs"), 0, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m.n, 5);
    cr_assert_eq(m.dim, 3);
    cr_assert_eq(((uintptr_t)m.data) % 64, 0, "data is 64-byte aligned");
    cr_assert_arr_eq(m.data, v, sizeof(v));
    qv_vecs_free(&m);
    cr_assert_null(m.data);
    cr_assert_eq(qv_ds_load_fvecs(tpath("a.fvecs"), 2, &m, &err), 0);
    cr_assert_eq(m.n, 2);
    cr_assert_arr_eq(m.data, v, 2 * 3 * sizeof(float));
    qv_vecs_free(&m);
}

Test(datasets, fvecs_truncated_or_trailing_is_corrupt)
{
    float v[4 * 2] = {1, 2, 3, 4, 5, 6, 7, 8};
    qv_status err = {0};
    cr_assert_eq(qv_ds_write_fvecs(tpath("a.fvecs"), v, 4, 2, &err), 0);
    FILE *f = fopen(tpath("a.fvecs"), "rb");
    uint8_t buf[64];
    size_t len = fread(buf, 1, sizeof(buf), f);
    fclose(f);
    cr_assert_eq(len, 4 * 12);
    write_bytes(tpath("short.fvecs"), buf, len - 1);
    qv_vecs m = {.n = 99};
    cr_assert_eq(qv_ds_load_fvecs(tpath("short.fvecs"), 0, &m, &err), QV_ECORRUPT);
    cr_assert_eq(err.code, QV_ECORRUPT);
    cr_assert(strstr(err.msg, "truncated") != NULL, "%s", err.msg);
    cr_assert_eq(m.n, 0);
    cr_assert_null(m.data);
    buf[len] = 0;
    write_bytes(tpath("long.fvecs"), buf, len + 1);
    cr_assert_eq(qv_ds_load_fvecs(tpath("long.fvecs"), 0, &m, &err), QV_ECORRUPT);
    write_bytes(tpath("tiny.fvecs"), buf, 2);
    cr_assert_eq(qv_ds_load_fvecs(tpath("tiny.fvecs"), 0, &m, &err), QV_ECORRUPT);
    write_bytes(tpath("empty.fvecs"), buf, 0);
    cr_assert_eq(qv_ds_load_fvecs(tpath("empty.fvecs"), 0, &m, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "empty") != NULL, "%s", err.msg);
}

Test(datasets, fvecs_dimension_change_and_bad_headers_are_corrupt)
{
    /* Two 12-byte rows, the second claiming dimension 5: the size is a whole number of rows. */
    uint8_t buf[24] = {0};
    int32_t d = 2;
    memcpy(buf, &d, 4);
    d = 5;
    memcpy(buf + 12, &d, 4);
    qv_status err = {0};
    qv_vecs m;
    write_bytes(tpath("mix.fvecs"), buf, sizeof(buf));
    cr_assert_eq(qv_ds_load_fvecs(tpath("mix.fvecs"), 0, &m, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "row 1") != NULL, "%s", err.msg);
    int32_t bad[] = {0, -1, 65537, INT32_MIN};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memcpy(buf, &bad[i], 4);
        write_bytes(tpath("bad.fvecs"), buf, sizeof(buf));
        cr_assert_eq(qv_ds_load_fvecs(tpath("bad.fvecs"), 0, &m, &err), QV_ECORRUPT, "dimension %d",
                     (int)bad[i]);
    }
}

Test(datasets, fvecs_non_finite_values_are_corrupt)
{
    float v[2 * 2] = {1, 2, NAN, 4};
    qv_status err = {0};
    qv_vecs m;
    cr_assert_eq(qv_ds_write_fvecs(tpath("nan.fvecs"), v, 2, 2, &err), 0);
    cr_assert_eq(qv_ds_load_fvecs(tpath("nan.fvecs"), 0, &m, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "row 1, column 0") != NULL, "%s", err.msg);
    v[2] = INFINITY;
    cr_assert_eq(qv_ds_write_fvecs(tpath("inf.fvecs"), v, 2, 2, &err), 0);
    cr_assert_eq(qv_ds_load_fvecs(tpath("inf.fvecs"), 0, &m, &err), QV_ECORRUPT);
}

Test(datasets, bvecs_widen_to_float)
{
    uint8_t buf[2 * (4 + 3)] = {3, 0, 0, 0, 0, 128, 255, 3, 0, 0, 0, 1, 2, 3};
    write_bytes(tpath("a.bvecs"), buf, sizeof(buf));
    qv_status err = {0};
    qv_vecs m;
    cr_assert_eq(qv_ds_load_vectors(tpath("a.bvecs"), 0, &m, &err), 0, "%s", err.msg);
    float want[6] = {0, 128, 255, 1, 2, 3};
    cr_assert_eq(m.n, 2);
    cr_assert_eq(m.dim, 3);
    cr_assert_arr_eq(m.data, want, sizeof(want));
    qv_vecs_free(&m);
}

Test(datasets, ivecs_round_trip_and_negative_ids)
{
    int32_t ids[3 * 2] = {0, 5, 7, 1, 2147483647, 3};
    qv_status err = {0};
    cr_assert_eq(qv_ds_write_ivecs(tpath("g.ivecs"), ids, 3, 2, &err), 0);
    qv_ids g;
    cr_assert_eq(qv_ds_load_ids(tpath("g.ivecs"), 0, &g, &err), 0, "%s", err.msg);
    cr_assert_eq(g.n, 3);
    cr_assert_eq(g.k, 2);
    cr_assert_arr_eq(g.ids, ids, sizeof(ids));
    qv_ids_free(&g);
    ids[3] = -4;
    cr_assert_eq(qv_ds_write_ivecs(tpath("neg.ivecs"), ids, 3, 2, &err), 0);
    cr_assert_eq(qv_ds_load_ivecs(tpath("neg.ivecs"), 0, &g, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "negative") != NULL, "%s", err.msg);
    cr_assert_null(g.ids);
}

Test(datasets, missing_files_directories_and_unknown_extensions)
{
    qv_status err = {0};
    qv_vecs m;
    qv_ids g;
    cr_assert_eq(qv_ds_load_fvecs(tpath("none.fvecs"), 0, &m, &err), QV_ENOTFOUND);
    cr_assert(strstr(err.msg, "none.fvecs") != NULL, "%s", err.msg);
    cr_assert_eq(qv_ds_load_fvecs(tmpdir, 0, &m, &err), QV_EINVAL);
    cr_assert_eq(qv_ds_load_vectors(tpath("x.hdf5"), 0, &m, &err), QV_EINVAL);
    cr_assert_eq(qv_ds_load_vectors(tpath("noext"), 0, &m, &err), QV_EINVAL);
    cr_assert_eq(qv_ds_load_ids(tpath("x.fvecs"), 0, &g, &err), QV_EINVAL);
    float v[2] = {1, 2};
    cr_assert_neq(qv_ds_write_fvecs(tpath("no/such/dir.fvecs"), v, 1, 2, &err), 0);
    cr_assert_eq(qv_ds_write_fvecs(tpath("zero.fvecs"), v, 1, 0, &err), QV_EINVAL);
}

Test(datasets, npy_float32_float64_uint8_and_big_endian)
{
    qv_status err = {0};
    qv_vecs m;
    float f4[6] = {1.5f, -2, 3, 4, 5, 6.25f};
    write_npy(tpath("f4.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (3, 2), }", f4,
              sizeof(f4));
    cr_assert_eq(qv_ds_load_vectors(tpath("f4.npy"), 0, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m.n, 3);
    cr_assert_eq(m.dim, 2);
    cr_assert_arr_eq(m.data, f4, sizeof(f4));
    qv_vecs_free(&m);

    double f8[6] = {1.5, -2, 3, 4, 5, 6.25};
    write_npy(tpath("f8.npy"), 2, "{\"shape\":(2,3),\"fortran_order\":False,\"descr\":\"<f8\"}", f8,
              sizeof(f8));
    cr_assert_eq(qv_ds_load_npy(tpath("f8.npy"), 0, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m.n, 2);
    cr_assert_eq(m.dim, 3);
    cr_assert_arr_eq(m.data, f4, sizeof(f4));
    qv_vecs_free(&m);

    uint8_t u1[4] = {0, 7, 200, 255};
    write_npy(tpath("u1.npy"), 1, "{'descr': '|u1', 'fortran_order': False, 'shape': (2, 2)}", u1,
              sizeof(u1));
    cr_assert_eq(qv_ds_load_npy(tpath("u1.npy"), 1, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m.n, 1, "limit keeps the first row");
    cr_assert_eq(m.data[1], 7.0f);
    qv_vecs_free(&m);

    uint8_t be[8];
    float one = 1.0f, two = -2.0f;
    uint8_t t[4];
    memcpy(t, &one, 4);
    for (int i = 0; i < 4; i++)
        be[i] = t[3 - i];
    memcpy(t, &two, 4);
    for (int i = 0; i < 4; i++)
        be[4 + i] = t[3 - i];
    write_npy(tpath("be.npy"), 1, "{'descr': '>f4', 'fortran_order': False, 'shape': (1, 2), }", be,
              sizeof(be));
    cr_assert_eq(qv_ds_load_npy(tpath("be.npy"), 0, &m, &err), 0, "%s", err.msg);
    cr_assert_eq(m.data[0], 1.0f);
    cr_assert_eq(m.data[1], -2.0f);
    qv_vecs_free(&m);
}

Test(datasets, npy_bad_headers_and_sizes_are_refused)
{
    static const struct {
        const char *dict;
        size_t data_len;
        int code;
    } cases[] = {
        {"{'descr': '<f4', 'fortran_order': True, 'shape': (2, 2), }", 16, QV_EUNIMPL},
        {"{'descr': '<c8', 'fortran_order': False, 'shape': (2, 2), }", 32, QV_EUNIMPL},
        {"{'descr': '<i4', 'fortran_order': False, 'shape': (2, 2), }", 16, QV_EUNIMPL},
        {"{'descr': '<f2', 'fortran_order': False, 'shape': (2, 2), }", 8, QV_EUNIMPL},
        {"{'descr': [('a', '<f4')], 'fortran_order': False, 'shape': (2,), }", 8, QV_EUNIMPL},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (4,), }", 16, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (1, 2, 2), }", 16, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (0, 4), }", 0, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 12, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", 20, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (18446744073709551615, 4), }", 16,
         QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (99999999999999999999999, 4)}", 16,
         QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False}", 16, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), 'extra': 1}", 16, QV_ECORRUPT},
        {"{'descr': '<f4, 'fortran_order': False, 'shape': (2, 2)}", 16, QV_ECORRUPT},
        {"{'descr': '<f4' 'fortran_order': False, 'shape': (2, 2)}", 16, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': Maybe, 'shape': (2, 2)}", 16, QV_ECORRUPT},
        {"['descr', '<f4']", 16, QV_ECORRUPT},
        {"{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2)} junk", 16, QV_ECORRUPT},
    };
    uint8_t data[64] = {0};
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        write_npy(tpath("bad.npy"), 1, cases[i].dict, data, cases[i].data_len);
        qv_status err = {0};
        qv_vecs m = {.n = 1};
        int rc = qv_ds_load_npy(tpath("bad.npy"), 0, &m, &err);
        cr_assert_eq(rc, cases[i].code, "case %zu (%s): rc %d, %s", i, cases[i].dict, rc, err.msg);
        cr_assert_eq(err.code, rc);
        cr_assert_null(m.data);
        cr_assert_eq(m.n, 0);
    }
}

Test(datasets, npy_bad_preambles_are_refused)
{
    qv_status err = {0};
    qv_vecs m;
    write_bytes(tpath("magic.npy"), "\x93NUMPZ\x01\x00\x10\x00{}", 12);
    cr_assert_eq(qv_ds_load_npy(tpath("magic.npy"), 0, &m, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "magic") != NULL, "%s", err.msg);
    write_bytes(tpath("short.npy"), "\x93NUMPY", 6);
    cr_assert_eq(qv_ds_load_npy(tpath("short.npy"), 0, &m, &err), QV_ECORRUPT);
    write_bytes(tpath("ver.npy"), "\x93NUMPY\x09\x00\x10\x00{}", 12);
    cr_assert_eq(qv_ds_load_npy(tpath("ver.npy"), 0, &m, &err), QV_EUNIMPL);
    /* Header length pointing past the end of the file. */
    write_bytes(tpath("hlen.npy"), "\x93NUMPY\x01\x00\xff\x7f{}", 12);
    cr_assert_eq(qv_ds_load_npy(tpath("hlen.npy"), 0, &m, &err), QV_ECORRUPT);
    write_bytes(tpath("zero.npy"), "\x93NUMPY\x01\x00\x00\x00", 10);
    cr_assert_eq(qv_ds_load_npy(tpath("zero.npy"), 0, &m, &err), QV_ECORRUPT);
}

Test(datasets, npy_ids_int64_and_range)
{
    int64_t ids[4] = {0, 3, 2147483647, 9};
    write_npy(tpath("i8.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
              ids, sizeof(ids));
    qv_status err = {0};
    qv_ids g;
    cr_assert_eq(qv_ds_load_ids(tpath("i8.npy"), 0, &g, &err), 0, "%s", err.msg);
    int32_t want[4] = {0, 3, 2147483647, 9};
    cr_assert_arr_eq(g.ids, want, sizeof(want));
    qv_ids_free(&g);
    ids[1] = -1;
    write_npy(tpath("neg.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
              ids, sizeof(ids));
    cr_assert_eq(qv_ds_load_npy_ids(tpath("neg.npy"), 0, &g, &err), QV_ECORRUPT);
    ids[1] = 2147483648LL;
    write_npy(tpath("big.npy"), 1, "{'descr': '<i8', 'fortran_order': False, 'shape': (2, 2), }",
              ids, sizeof(ids));
    cr_assert_eq(qv_ds_load_npy_ids(tpath("big.npy"), 0, &g, &err), QV_ECORRUPT);
    write_npy(tpath("f.npy"), 1, "{'descr': '<f4', 'fortran_order': False, 'shape': (2, 2), }", ids,
              16);
    cr_assert_eq(qv_ds_load_npy_ids(tpath("f.npy"), 0, &g, &err), QV_EUNIMPL);
}

/* IDX: big-endian header, then bytes. Returns the declared length; fills at most 256 bytes. */
static size_t idx_image(uint8_t *buf, uint32_t n, uint32_t rows, uint32_t cols, uint8_t first)
{
    uint8_t hdr[16] = {0, 0, 8, 3};
    uint32_t dims[3] = {n, rows, cols};
    for (int d = 0; d < 3; d++)
        for (int b = 0; b < 4; b++)
            hdr[4 + 4 * d + b] = (uint8_t)(dims[d] >> (24 - 8 * b));
    memcpy(buf, hdr, 16);
    size_t len = (size_t)n * rows * cols;
    for (size_t i = 0; i < len && i < 240; i++)
        buf[16 + i] = (uint8_t)(first + i);
    return 16 + len;
}

static size_t idx_labels(uint8_t *buf, uint32_t n, uint8_t max)
{
    uint8_t hdr[8] = {0,         0, 8, 1, (uint8_t)(n >> 24), (uint8_t)(n >> 16), (uint8_t)(n >> 8),
                      (uint8_t)n};
    memcpy(buf, hdr, 8);
    for (uint32_t i = 0; i < n; i++)
        buf[8 + i] = (uint8_t)(i % (max + 1u));
    return 8 + n;
}

Test(datasets, idx_gzip_and_plain)
{
    uint8_t buf[256];
    size_t len = idx_image(buf, 3, 2, 2, 250); /* values wrap: 250..255, 0..5 */
    write_gz(tpath("img.gz"), buf, len);
    write_bytes(tpath("img.raw"), buf, len);
    qv_status err = {0};
    const char *files[2] = {tpath("img.gz"), tpath("img.raw")};
    for (int f = 0; f < 2; f++) {
        qv_vecs m;
        cr_assert_eq(qv_ds_load_idx(files[f], &m, NULL, NULL, &err), 0, "%s", err.msg);
        cr_assert_eq(m.n, 3);
        cr_assert_eq(m.dim, 4);
        cr_assert_eq(m.data[0], 250.0f);
        cr_assert_eq(m.data[5], 255.0f);
        cr_assert_eq(m.data[6], 0.0f);
        qv_vecs_free(&m);
    }
    len = idx_labels(buf, 5, 9);
    write_gz(tpath("lab.gz"), buf, len);
    uint8_t *labels = NULL;
    size_t nl = 0;
    cr_assert_eq(qv_ds_load_idx(tpath("lab.gz"), NULL, &labels, &nl, &err), 0, "%s", err.msg);
    cr_assert_eq(nl, 5);
    cr_assert_eq(labels[4], 4);
    free(labels);
    /* Asking for images from a label file and vice versa. */
    qv_vecs m;
    cr_assert_eq(qv_ds_load_idx(tpath("lab.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    cr_assert_eq(qv_ds_load_idx(tpath("img.gz"), NULL, &labels, &nl, &err), QV_ECORRUPT);
    cr_assert_null(labels);
}

Test(datasets, idx_bad_files_are_refused)
{
    uint8_t buf[256];
    size_t len = idx_image(buf, 3, 2, 2, 0);
    qv_status err = {0};
    qv_vecs m;
    /* truncated gzip stream */
    uint8_t z[256];
    write_gz(tpath("full.gz"), buf, len);
    FILE *f = fopen(tpath("full.gz"), "rb");
    size_t zlen = fread(z, 1, sizeof(z), f);
    fclose(f);
    write_bytes(tpath("cut.gz"), z, zlen - 12);
    cr_assert_eq(qv_ds_load_idx(tpath("cut.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    cr_assert_null(m.data);
    /* plain data cut short */
    write_bytes(tpath("cut.raw"), buf, len - 1);
    cr_assert_eq(qv_ds_load_idx(tpath("cut.raw"), &m, NULL, NULL, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "truncated") != NULL, "%s", err.msg);
    /* trailing bytes */
    buf[len] = 1;
    write_gz(tpath("long.gz"), buf, len + 1);
    cr_assert_eq(qv_ds_load_idx(tpath("long.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "trailing") != NULL, "%s", err.msg);
    /* bad magic, unsupported element type, zero dimensions */
    uint8_t bad[sizeof(buf)];
    memcpy(bad, buf, len);
    bad[0] = 1;
    write_gz(tpath("magic.gz"), bad, len);
    cr_assert_eq(qv_ds_load_idx(tpath("magic.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    memcpy(bad, buf, len);
    bad[2] = 0x0d;
    write_gz(tpath("float.gz"), bad, len);
    cr_assert_eq(qv_ds_load_idx(tpath("float.gz"), &m, NULL, NULL, &err), QV_EUNIMPL);
    memcpy(bad, buf, len);
    bad[3] = 0;
    write_gz(tpath("nodims.gz"), bad, len);
    cr_assert_eq(qv_ds_load_idx(tpath("nodims.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    /* a header that lies about the count: refused before allocating gigabytes */
    len = idx_image(buf, 0x7fffffff, 28, 28, 0);
    write_gz(tpath("liar.gz"), buf, 16 + 8);
    cr_assert_eq(qv_ds_load_idx(tpath("liar.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    /* dimensions whose product overflows */
    memset(buf + 4, 0xff, 12);
    write_gz(tpath("huge.gz"), buf, 16);
    cr_assert_eq(qv_ds_load_idx(tpath("huge.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    /* not gzip at all and not IDX either */
    write_bytes(tpath("text.gz"), "hello, world\n", 13);
    cr_assert_eq(qv_ds_load_idx(tpath("text.gz"), &m, NULL, NULL, &err), QV_ECORRUPT);
    cr_assert_eq(qv_ds_load_idx(tpath("none.gz"), &m, NULL, NULL, &err), QV_ENOTFOUND);
}

static void write_fm(const char *dir, uint32_t ntrain, uint32_t ntest, uint32_t ntrain_labels,
                     uint8_t max_label)
{
    static uint8_t buf[1 << 16];
    char path[512];
    mkdir(dir, 0777);
    snprintf(path, sizeof(path), "%s/train-images-idx3-ubyte.gz", dir);
    write_gz(path, buf, idx_image(buf, ntrain, 4, 4, 0));
    snprintf(path, sizeof(path), "%s/train-labels-idx1-ubyte.gz", dir);
    write_gz(path, buf, idx_labels(buf, ntrain_labels, max_label));
    snprintf(path, sizeof(path), "%s/t10k-images-idx3-ubyte.gz", dir);
    write_gz(path, buf, idx_image(buf, ntest, 4, 4, 1));
    snprintf(path, sizeof(path), "%s/t10k-labels-idx1-ubyte.gz", dir);
    write_gz(path, buf, idx_labels(buf, ntest, 9));
}

Test(datasets, fashion_mnist_layout_checks)
{
    qv_status err = {0};
    qv_fashion_mnist fm;
    write_fm(tpath("ok"), 20, 5, 20, 9);
    cr_assert_eq(qv_ds_load_fashion_mnist(tpath("ok"), &fm, &err), 0, "%s", err.msg);
    cr_assert_eq(fm.train.n, 20);
    cr_assert_eq(fm.test.n, 5);
    cr_assert_eq(fm.train.dim, 16);
    cr_assert_eq(fm.test.data[0], 1.0f);
    qv_fashion_mnist_free(&fm);
    write_fm(tpath("count"), 20, 5, 19, 9);
    cr_assert_eq(qv_ds_load_fashion_mnist(tpath("count"), &fm, &err), QV_ECORRUPT);
    write_fm(tpath("label"), 20, 5, 20, 10);
    cr_assert_eq(qv_ds_load_fashion_mnist(tpath("label"), &fm, &err), QV_ECORRUPT);
    cr_assert(strstr(err.msg, "label 10") != NULL, "%s", err.msg);
    cr_assert_null(fm.train.data);
    cr_assert_eq(qv_ds_load_fashion_mnist(tpath("nothing"), &fm, &err), QV_ENOTFOUND);
    cr_assert(strstr(err.msg, "dataset-fashion-mnist") != NULL, "%s", err.msg);
}

Test(datasets, debian_fashion_mnist_has_the_documented_shape)
{
    if (access(QV_FASHION_MNIST_DIR "/train-images-idx3-ubyte.gz", R_OK) != 0)
        cr_skip_test("dataset-fashion-mnist is not installed");
    qv_status err = {0};
    qv_fashion_mnist fm;
    cr_assert_eq(qv_ds_load_fashion_mnist(NULL, &fm, &err), 0, "%s", err.msg);
    cr_assert_eq(fm.train.n, 60000);
    cr_assert_eq(fm.test.n, 10000);
    cr_assert_eq(fm.train.dim, 784);
    cr_assert_eq(fm.test.dim, 784);
    float lo = 255, hi = 0;
    for (size_t i = 0; i < fm.test.n * fm.test.dim; i++) {
        lo = fminf(lo, fm.test.data[i]);
        hi = fmaxf(hi, fm.test.data[i]);
    }
    cr_assert_eq(lo, 0.0f);
    cr_assert_eq(hi, 255.0f);
    size_t per_class[10] = {0};
    for (size_t i = 0; i < fm.train.n; i++)
        per_class[fm.train_labels[i]]++;
    for (int c = 0; c < 10; c++)
        cr_assert_eq(per_class[c], 6000, "class %d", c);
    qv_fashion_mnist_free(&fm);
}
