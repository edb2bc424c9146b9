/*
 * tests/index/test_index_file.c - HNSW snapshot files: save/load round trips, memory-mapped loads,
 * and refusal of truncated, bit-flipped, foreign-version and semantically corrupt files.
 *
 * Map: helpers (data, building, saving to a buffer, comparing two indexes result for result),
 * file surgery (the layout in index/index_internal.h: 64-byte header, 64-byte aligned sections,
 * then the section table with its own CRC; helpers rewrite a value and recompute the CRCs so the
 * loader's semantic checks, not the checksums, must catch it), then the tests.
 *
 * Every test ends with a leak check under AddressSanitizer: a refused load must free what it
 * built so far.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "index/index_internal.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define QV_TEST_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define QV_TEST_ASAN 1
#endif
#endif
#ifdef QV_TEST_ASAN
#include <sanitizer/lsan_interface.h>
#endif

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

/* The HNSW section tags (index/hnsw.c). */
#define T_PARM QV__TAG('P', 'A', 'R', 'M')
#define T_HMET QV__TAG('H', 'M', 'E', 'T')
#define T_LABL QV__TAG('L', 'A', 'B', 'L')
#define T_LEVL QV__TAG('L', 'E', 'V', 'L')
#define T_FLAG QV__TAG('F', 'L', 'A', 'G')
#define T_L0LK QV__TAG('L', '0', 'L', 'K')
#define T_UPLK QV__TAG('U', 'P', 'L', 'K')
#define T_VECF QV__TAG('V', 'E', 'C', 'F')
#define T_QUAN QV__TAG('Q', 'U', 'A', 'N')

#define NQ 40
#define K  10

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

static void assert_no_leaks(void)
{
#ifdef QV_TEST_ASAN
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

static uint64_t rng_next(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float *make_data(size_t n, size_t dim, uint64_t seed)
{
    uint64_t s = seed;
    float *v = malloc(n * dim * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n * dim; i++)
        v[i] = (float)((double)(rng_next(&s) >> 11) / 9007199254740992.0 * 2.0 - 1.0);
    return v;
}

/* A small index and the data it was built from; ids are 10 + 2 * position. */
typedef struct fixture {
    qv_index *idx;
    float *v; /* n base vectors, then NQ queries */
    size_t n, dim;
    qv_metric metric;
    qv_storage storage;
} fixture;

static void fixture_build(fixture *fx, qv_metric m, qv_storage st, size_t n, size_t dim, uint32_t M)
{
    fx->n = n;
    fx->dim = dim;
    fx->metric = m;
    fx->storage = st;
    fx->v = make_data(n + NQ, dim, 1234 + n + dim);
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_HNSW, m, (uint32_t)dim);
    p.storage = st;
    p.threads = 2;
    p.hnsw.M = M;
    p.hnsw.ef_construction = 64;
    qv_status err = {0};
    cr_assert_eq(qv_index_create(&p, &fx->idx, &err), 0, "%s", err.msg);
    uint64_t *ids = malloc((n ? n : 1) * sizeof(uint64_t));
    cr_assert_not_null(ids);
    for (size_t i = 0; i < n; i++)
        ids[i] = 10 + 2 * i;
    if (n > 0)
        cr_assert_eq(qv_index_add(fx->idx, ids, fx->v, n, &err), 0, "%s", err.msg);
    free(ids);
}

/* Removes every `every`-th id (tombstones). */
static void fixture_remove(fixture *fx, size_t every)
{
    for (size_t i = 0; i < fx->n; i += every) {
        uint64_t id = 10 + 2 * i;
        cr_assert_eq(qv_index_remove(fx->idx, &id, 1, NULL), 0);
    }
}

static void fixture_free(fixture *fx)
{
    qv_index_free(fx->idx);
    free(fx->v);
}

static char g_dir[64];

static const char *tmp_path(const char *name)
{
    static char path[128];
    if (g_dir[0] == '\0') {
        snprintf(g_dir, sizeof(g_dir), "/tmp/qv_test_index_file_XXXXXX");
        cr_assert_not_null(mkdtemp(g_dir), "mkdtemp");
    }
    snprintf(path, sizeof(path), "%s/%s", g_dir, name);
    return path;
}

static void tmp_cleanup(void)
{
    if (g_dir[0] == '\0')
        return;
    const char *names[] = {"a.qvi", "a.qvi.tmp", "b.qvi", "t.qvi"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
        unlink(tmp_path(names[i]));
    rmdir(g_dir);
    g_dir[0] = '\0';
}

typedef struct file_buf {
    uint8_t *p;
    size_t len;
} file_buf;

static file_buf read_file(const char *path)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f, "open %s", path);
    struct stat st;
    cr_assert_eq(fstat(fileno(f), &st), 0);
    file_buf b = {.p = malloc((size_t)st.st_size + 1), .len = (size_t)st.st_size};
    cr_assert_not_null(b.p);
    cr_assert_eq(fread(b.p, 1, b.len, f), b.len);
    fclose(f);
    return b;
}

static void write_file(const char *path, const uint8_t *p, size_t len)
{
    FILE *f = fopen(path, "wb");
    cr_assert_not_null(f, "create %s", path);
    cr_assert_eq(fwrite(p, 1, len, f), len);
    cr_assert_eq(fclose(f), 0);
}

/* Saves through qv_index_save (the real path) and reads the file back. */
static file_buf save_to_buf(qv_index *idx)
{
    const char *path = tmp_path("a.qvi");
    qv_status err = {0};
    int rc = qv_index_save(idx, path, &err);
    cr_assert_eq(rc, 0, "save: %d %s", rc, err.msg);
    file_buf b = read_file(path);
    unlink(path);
    return b;
}

static bool pred_mod3(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 3 != 0;
}

/* Both indexes answer every query identically: same ids, bit-identical distances, for graph
 * search, exact search and filtered search; same stats and membership. */
static void expect_same(const fixture *fx, qv_index *a, qv_index *b)
{
    qv_index_stats sa, sb;
    qv_index_stats_get(a, &sa);
    qv_index_stats_get(b, &sb);
    cr_expect_eq(sa.count, sb.count, "count %llu vs %llu", (unsigned long long)sa.count,
                 (unsigned long long)sb.count);
    cr_expect_eq(sa.deleted, sb.deleted);
    cr_expect_eq(sa.max_level, sb.max_level);
    cr_expect_eq(sa.trained, sb.trained);
    cr_expect_eq(sa.metric, sb.metric);
    cr_expect_eq(sa.storage, sb.storage);
    cr_expect_eq(sa.dim, sb.dim);
    cr_expect_eq(sa.params.hnsw.M, sb.params.hnsw.M);
    cr_expect_eq(sa.params.hnsw.ef_construction, sb.params.hnsw.ef_construction);
    cr_expect_eq(sa.params.hnsw.seed, sb.params.hnsw.seed);
    for (size_t i = 0; i < fx->n + 4; i++)
        CHECK(qv_index_contains(a, 10 + 2 * i) == qv_index_contains(b, 10 + 2 * i),
              "contains(%zu) differs", (size_t)(10 + 2 * i));
    qv_filter f = {.pred = pred_mod3};
    for (int mode = 0; mode < 3; mode++) {
        qv_search_params sp = {.ef = 32, .exact = mode == 1};
        for (size_t q = 0; q < NQ; q++) {
            const float *qv = fx->v + (fx->n + q) * fx->dim;
            qv_hit ha[K], hb[K];
            size_t na = 0, nb = 0;
            CHECK(qv_index_search(a, qv, K, &sp, mode == 2 ? &f : NULL, ha, &na, NULL) == 0,
                  "search a");
            CHECK(qv_index_search(b, qv, K, &sp, mode == 2 ? &f : NULL, hb, &nb, NULL) == 0,
                  "search b");
            CHECK(na == nb, "mode %d query %zu: %zu vs %zu results", mode, q, na, nb);
            for (size_t j = 0; j < na; j++)
                CHECK(ha[j].id == hb[j].id && memcmp(&ha[j].distance, &hb[j].distance, 4) == 0,
                      "mode %d query %zu rank %zu: %llu/%.9g vs %llu/%.9g", mode, q, j,
                      (unsigned long long)ha[j].id, ha[j].distance, (unsigned long long)hb[j].id,
                      hb[j].distance);
        }
    }
}

static qv_index *load_ok(const file_buf *b)
{
    qv_index *idx = NULL;
    qv_status err = {0};
    int rc = qv_index_load_buffer(b->p, b->len, &idx, &err);
    cr_assert_eq(rc, 0, "load: %d %s", rc, err.msg);
    cr_assert_not_null(idx);
    return idx;
}

/* Loads a file expected to be refused with `code` and a message containing `needle`. */
static void expect_refused(const file_buf *b, int code, const char *needle)
{
    qv_index *idx = (qv_index *)(uintptr_t)1;
    qv_status err = {0};
    int rc = qv_index_load_buffer(b->p, b->len, &idx, &err);
    cr_expect_eq(rc, code, "load returned %d (%s), expected %d mentioning '%s'", rc, err.msg, code,
                 needle);
    cr_expect_null(idx, "a refused load left *out set");
    cr_expect(strstr(err.msg, needle) != NULL, "message '%s' does not mention '%s'", err.msg,
              needle);
    if (rc == 0)
        qv_index_free(idx);
}

/* ---------------------------------------------------------------------------------------------
 * File surgery
 * ------------------------------------------------------------------------------------------- */

static uint32_t get32(const uint8_t *p)
{
    return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
}

static uint64_t get64(const uint8_t *p)
{
    return (uint64_t)get32(p) | (uint64_t)get32(p + 4) << 32;
}

static void put32(uint8_t *p, uint32_t v)
{
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void put64(uint8_t *p, uint64_t v)
{
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

static void fix_header_crc(uint8_t *b)
{
    put32(b + 12, 0);
    put32(b + 12, qv_crc32c(0, b, QV__FILE_HEADER));
}

static uint32_t nsec(const uint8_t *b)
{
    return get32(b + 32);
}

static uint64_t table_off(const uint8_t *b)
{
    return get64(b + 40);
}

static void fix_table_crc(uint8_t *b)
{
    uint8_t *t = b + table_off(b);
    put32(t + (size_t)nsec(b) * 32, qv_crc32c(0, t, (size_t)nsec(b) * 32));
}

static uint8_t *sec_entry(uint8_t *b, uint32_t tag)
{
    for (uint32_t i = 0; i < nsec(b); i++) {
        uint8_t *e = b + table_off(b) + (size_t)i * 32;
        if (get32(e) == tag)
            return e;
    }
    cr_assert_fail("section %08x not found", tag);
    return NULL;
}

static uint8_t *sec_data(uint8_t *b, uint32_t tag, size_t *len)
{
    uint8_t *e = sec_entry(b, tag);
    if (len != NULL)
        *len = (size_t)get64(e + 16);
    return b + get64(e + 8);
}

/* After editing a section's bytes: its CRC in the table, then the table's CRC. */
static void fix_section_crc(uint8_t *b, uint32_t tag)
{
    uint8_t *e = sec_entry(b, tag);
    put32(e + 24, qv_crc32c(0, b + get64(e + 8), (size_t)get64(e + 16)));
    fix_table_crc(b);
}

static file_buf copy_buf(const file_buf *b)
{
    file_buf c = {.p = malloc(b->len + 1), .len = b->len};
    cr_assert_not_null(c.p);
    memcpy(c.p, b->p, b->len);
    return c;
}

/* A saved small HNSW index (F32 or INT8, L2), M=8: layer 0 lists hold 1 + 16 uint32. */
#define SMALL_M 8
static file_buf small_file(qv_storage st, size_t n, size_t dim)
{
    fixture fx;
    fixture_build(&fx, QV_METRIC_L2, st, n, dim, SMALL_M);
    fixture_remove(&fx, 7);
    file_buf b = save_to_buf(fx.idx);
    fixture_free(&fx);
    return b;
}

/* ---------------------------------------------------------------------------------------------
 * Round trips
 * ------------------------------------------------------------------------------------------- */

static void check_round_trip(qv_metric m, qv_storage st)
{
    fixture fx;
    fixture_build(&fx, m, st, 600, 16, 8);
    fixture_remove(&fx, 10);
    for (int compacted = 0; compacted < 2; compacted++) {
        if (compacted)
            cr_assert_eq(qv_index_compact(fx.idx, NULL), 0);
        file_buf b = save_to_buf(fx.idx);
        qv_index *loaded = load_ok(&b);
        qv_index_stats st1;
        qv_index_stats_get(loaded, &st1);
        cr_expect_eq(st1.count, 540, "count after load %llu", (unsigned long long)st1.count);
        cr_expect_eq(st1.deleted, compacted ? 0 : 60);
        expect_same(&fx, fx.idx, loaded);
        qv_index_free(loaded);

        /* Through a file, too. */
        const char *path = tmp_path("b.qvi");
        write_file(path, b.p, b.len);
        qv_status err = {0};
        cr_assert_eq(qv_index_load(path, 0, &loaded, &err), 0, "%s", err.msg);
        expect_same(&fx, fx.idx, loaded);
        qv_index_free(loaded);
        unlink(path);
        free(b.p);
    }
    fixture_free(&fx);
    tmp_cleanup();
}

Test(index_file, round_trip_f32_l2)
{
    check_round_trip(QV_METRIC_L2, QV_STORAGE_F32);
    assert_no_leaks();
}

Test(index_file, round_trip_int8_l2)
{
    check_round_trip(QV_METRIC_L2, QV_STORAGE_INT8);
    assert_no_leaks();
}

Test(index_file, round_trip_f32_cosine)
{
    check_round_trip(QV_METRIC_COSINE, QV_STORAGE_F32);
    assert_no_leaks();
}

Test(index_file, round_trip_int8_cosine)
{
    check_round_trip(QV_METRIC_COSINE, QV_STORAGE_INT8);
    assert_no_leaks();
}

Test(index_file, round_trip_int8_ip)
{
    check_round_trip(QV_METRIC_IP, QV_STORAGE_INT8);
    assert_no_leaks();
}

Test(index_file, round_trip_of_an_empty_index)
{
    fixture fx;
    fixture_build(&fx, QV_METRIC_L2, QV_STORAGE_INT8, 0, 8, 8);
    file_buf b = save_to_buf(fx.idx);
    qv_index *loaded = load_ok(&b);
    expect_same(&fx, fx.idx, loaded);
    /* And it is usable: the first add trains the quantiser and builds the graph. */
    uint64_t ids[2] = {1, 2};
    float v[16] = {0.5f, 0, 0, 0, 0, 0, 0, 0, 0, 0.5f, 0, 0, 0, 0, 0, 0};
    cr_assert_eq(qv_index_add(loaded, ids, v, 2, NULL), 0);
    qv_hit out[2];
    size_t nout = 0;
    cr_assert_eq(qv_index_search(loaded, v + 8, 2, NULL, NULL, out, &nout, NULL), 0);
    cr_expect(nout == 2 && out[0].id == 2, "after load + add: %zu results, first %llu", nout,
              nout ? (unsigned long long)out[0].id : 0);
    qv_index_free(loaded);
    free(b.p);
    fixture_free(&fx);
    tmp_cleanup();
    assert_no_leaks();
}

/* Every vector removed, then compacted: the graph is empty (no entry point, top layer -1) but
 * the slots remain, free. Such an index must save and load like any other. */
Test(index_file, round_trip_after_removing_every_vector_and_compacting)
{
    fixture fx;
    fixture_build(&fx, QV_METRIC_L2, QV_STORAGE_F32, 50, 8, 8);
    fixture_remove(&fx, 1);
    cr_assert_eq(qv_index_compact(fx.idx, NULL), 0);
    file_buf b = save_to_buf(fx.idx);
    qv_index *loaded = NULL;
    qv_status err = {0};
    int rc = qv_index_load_buffer(b.p, b.len, &loaded, &err);
    cr_expect_eq(rc, 0, "an emptied, compacted index does not load: %d %s", rc, err.msg);
    if (rc == 0) {
        expect_same(&fx, fx.idx, loaded);
        qv_index_free(loaded);
    }
    free(b.p);
    fixture_free(&fx);
    tmp_cleanup();
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Memory-mapped loads
 * ------------------------------------------------------------------------------------------- */

static void check_mmap(qv_storage st)
{
    fixture fx;
    fixture_build(&fx, QV_METRIC_L2, st, 400, 16, 8);
    fixture_remove(&fx, 9);
    const char *path = tmp_path("t.qvi");
    qv_status err = {0};
    cr_assert_eq(qv_index_save(fx.idx, path, &err), 0, "%s", err.msg);
    qv_index *m = NULL;
    int rc = qv_index_load(path, QV_LOAD_MMAP, &m, &err);
    cr_assert_eq(rc, 0, "mmap load: %d %s", rc, err.msg);
    expect_same(&fx, fx.idx, m);

    uint64_t id = 99999;
    rc = qv_index_add(m, &id, fx.v, 1, &err);
    cr_expect_eq(rc, QV_EPRECONDITION, "add to a mapped index returned %d", rc);
    cr_expect(strstr(err.msg, "read-only") != NULL, "message: '%s'", err.msg);
    uint64_t rm = 10;
    size_t removed = 7;
    cr_expect_eq(qv_index_remove(m, &rm, 1, &removed), QV_EPRECONDITION);
    cr_expect_eq(removed, 0);
    cr_expect(qv_index_contains(m, 12), "id 12 vanished after a refused remove");
    cr_expect_eq(qv_index_compact(m, &err), QV_EPRECONDITION);
    /* Training is refused on INT8; on F32 it is documented as a no-op, so either answer is fine
     * as long as nothing changes. */
    rc = qv_index_train(m, fx.v, 4, &err);
    if (st == QV_STORAGE_INT8)
        cr_expect_eq(rc, QV_EPRECONDITION, "train on a mapped INT8 index returned %d", rc);
    else
        cr_expect(rc == 0 || rc == QV_EPRECONDITION, "train on a mapped F32 index returned %d", rc);
    /* Still answers the same after the refused writes. */
    expect_same(&fx, fx.idx, m);
    qv_index_free(m);
    unlink(path);
    fixture_free(&fx);
    tmp_cleanup();
}

Test(index_file, mmap_load_serves_searches_and_refuses_writes_f32)
{
    check_mmap(QV_STORAGE_F32);
    assert_no_leaks();
}

Test(index_file, mmap_load_serves_searches_and_refuses_writes_int8)
{
    check_mmap(QV_STORAGE_INT8);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Truncation
 * ------------------------------------------------------------------------------------------- */

Test(index_file, truncated_file_is_refused)
{
    file_buf b = small_file(QV_STORAGE_INT8, 120, 8);
    for (size_t len = 0; len < b.len; len++) {
        qv_index *idx = (qv_index *)(uintptr_t)1;
        qv_status err = {0};
        int rc = qv_index_load_buffer(b.p, len, &idx, &err);
        CHECK(rc == QV_ECORRUPT && idx == NULL && err.msg[0] != '\0',
              "%zu of %zu bytes: rc %d, message '%s'", len, b.len, rc, err.msg);
        if (rc == 0)
            qv_index_free(idx);
    }
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* Cut at every section boundary (and one byte either side) with the header's file length
 * patched to match and its CRC recomputed: the table check must catch it, not only the length. */
Test(index_file, truncated_file_with_a_consistent_header_is_refused)
{
    file_buf b = small_file(QV_STORAGE_INT8, 120, 8);
    size_t cuts[3 * (QV__MAX_SECTIONS * 2 + 2)];
    size_t ncut = 0;
    uint64_t toff = table_off(b.p);
    for (uint32_t i = 0; i < nsec(b.p); i++) {
        const uint8_t *e = b.p + toff + (size_t)i * 32;
        uint64_t off = get64(e + 8), len = get64(e + 16);
        uint64_t at[2] = {off, off + len};
        for (int k = 0; k < 2; k++)
            for (int d = -1; d <= 1; d++)
                cuts[ncut++] = (size_t)at[k] + (size_t)d;
    }
    cuts[ncut++] = (size_t)toff;
    cuts[ncut++] = b.len - 4;
    for (size_t c = 0; c < ncut; c++) {
        size_t len = cuts[c];
        if (len < QV__FILE_HEADER || len >= b.len)
            continue;
        file_buf t = copy_buf(&b);
        t.len = len;
        put64(t.p + 48, len);
        fix_header_crc(t.p);
        qv_index *idx = (qv_index *)(uintptr_t)1;
        qv_status err = {0};
        int rc = qv_index_load_buffer(t.p, t.len, &idx, &err);
        CHECK(rc == QV_ECORRUPT && idx == NULL && err.msg[0] != '\0',
              "cut at %zu (header patched): rc %d, message '%s'", len, rc, err.msg);
        free(t.p);
    }
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, truncated_file_on_disk_is_refused)
{
    file_buf b = small_file(QV_STORAGE_INT8, 120, 8);
    const char *path = tmp_path("t.qvi");
    size_t lens[] = {0, 1, 63, 64, 65, b.len / 2, b.len - 4, b.len - 1};
    for (size_t i = 0; i < sizeof(lens) / sizeof(lens[0]); i++) {
        write_file(path, b.p, lens[i]);
        for (int flags = 0; flags <= QV_LOAD_MMAP; flags += QV_LOAD_MMAP) {
            qv_index *idx = (qv_index *)(uintptr_t)1;
            qv_status err = {0};
            int rc = qv_index_load(path, flags, &idx, &err);
            cr_expect_eq(rc, QV_ECORRUPT, "%zu bytes, flags %d: rc %d (%s)", lens[i], flags, rc,
                         err.msg);
            cr_expect_null(idx);
            cr_expect(err.msg[0] != '\0', "%zu bytes: no message", lens[i]);
        }
    }
    unlink(path);
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Bit flips
 * ------------------------------------------------------------------------------------------- */

/* Whether byte `i` lies in the header, a section or the table (all under a CRC). */
static bool covered(const uint8_t *b, size_t len, size_t i)
{
    if (i < QV__FILE_HEADER || i >= table_off(b))
        return true;
    for (uint32_t s = 0; s < nsec(b); s++) {
        const uint8_t *e = b + table_off(b) + (size_t)s * 32;
        if (i >= get64(e + 8) && i < get64(e + 8) + get64(e + 16))
            return true;
    }
    (void)len;
    return false;
}

static void flip_all(bool want_covered, size_t *tried, size_t *accepted)
{
    file_buf b = small_file(QV_STORAGE_INT8, 40, 4);
    fixture ref; /* answers the queries the flipped files are compared on */
    fixture_build(&ref, QV_METRIC_L2, QV_STORAGE_INT8, 40, 4, SMALL_M);
    qv_index_free(ref.idx);
    ref.idx = load_ok(&b);
    *tried = *accepted = 0;
    for (size_t i = 0; i < b.len; i++) {
        if (covered(b.p, b.len, i) != want_covered)
            continue;
        (*tried)++;
        b.p[i] ^= (uint8_t)(1u << (i % 8));
        qv_index *idx = (qv_index *)(uintptr_t)1;
        qv_status err = {0};
        int rc = qv_index_load_buffer(b.p, b.len, &idx, &err);
        b.p[i] ^= (uint8_t)(1u << (i % 8));
        if (want_covered) {
            CHECK(rc == QV_ECORRUPT && idx == NULL && err.msg[0] != '\0',
                  "bit %zu of byte %zu (of %zu) flipped: rc %d, message '%s'", i % 8, i, b.len, rc,
                  err.msg);
        } else if (rc == 0) {
            (*accepted)++;
            expect_same(&ref, ref.idx, idx); /* harmless at least */
            qv_index_free(idx);
        } else {
            CHECK(rc == QV_ECORRUPT && idx == NULL, "padding byte %zu: rc %d", i, rc);
        }
    }
    fixture_free(&ref);
    free(b.p);
    tmp_cleanup();
}

Test(index_file, bit_flips_in_checksummed_bytes_are_refused, .timeout = 120)
{
    size_t tried, accepted;
    flip_all(true, &tried, &accepted);
    cr_log_info("%zu single-bit flips in checksummed bytes, all refused", tried);
    cr_expect_gt(tried, 1000);
    assert_no_leaks();
}

/* The bytes that align sections to 64 are covered by no CRC: a flip there must still be refused
 * (a file that is not byte for byte what qv_index_save wrote is corrupt). */
Test(index_file, bit_flips_in_padding_are_refused)
{
    size_t tried, accepted;
    flip_all(false, &tried, &accepted);
    cr_log_info("%zu single-bit flips in padding bytes, %zu accepted", tried, accepted);
    cr_expect_gt(tried, 0, "this file has no padding: the test checks nothing");
    cr_expect_eq(accepted, 0, "%zu of %zu flipped padding bytes were accepted", accepted, tried);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Version and semantic corruption behind valid CRCs
 * ------------------------------------------------------------------------------------------- */

Test(index_file, other_format_version_is_refused_with_precondition)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    uint32_t versions[] = {0, QV__FILE_VERSION + 1, 0xFFFFFFFFu};
    for (size_t i = 0; i < 3; i++) {
        file_buf t = copy_buf(&b);
        put32(t.p + 8, versions[i]);
        fix_header_crc(t.p);
        expect_refused(&t, QV_EPRECONDITION, "version");
        free(t.p);
    }
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* The first layer-0 list with at least one link. */
static uint8_t *first_l0_list(uint8_t *p, size_t *node)
{
    size_t len;
    uint8_t *l0 = sec_data(p, T_L0LK, &len);
    size_t words = 1 + 2 * SMALL_M;
    for (size_t s = 0; s * words * 4 < len; s++) {
        if (get32(l0 + s * words * 4) > 0) {
            *node = s;
            return l0 + s * words * 4;
        }
    }
    cr_assert_fail("no node has links");
    return NULL;
}

Test(index_file, out_of_range_link_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    size_t node;
    uint8_t *ls = first_l0_list(b.p, &node);
    put32(ls + 4, 60 + 5);
    fix_section_crc(b.p, T_L0LK);
    expect_refused(&b, QV_ECORRUPT, "out of range");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, too_many_links_are_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    size_t node;
    uint8_t *ls = first_l0_list(b.p, &node);
    put32(ls, 2 * SMALL_M + 1);
    fix_section_crc(b.p, T_L0LK);
    expect_refused(&b, QV_ECORRUPT, "links");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* An upper-layer link to a node that does not reach that layer. The node's upper lists were
 * already allocated when the check fails: the refusal must free them. */
Test(index_file, upper_layer_link_to_a_lower_node_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 200, 8);
    size_t n;
    const uint8_t *lv = sec_data(b.p, T_LEVL, &n);
    size_t low = n, off = 0, words = 1 + SMALL_M;
    for (size_t s = 0; s < n && low == n; s++)
        if (lv[s] == 0)
            low = s;
    cr_assert_lt(low, n);
    uint8_t *up = sec_data(b.p, T_UPLK, NULL);
    bool done = false;
    for (size_t s = 0; s < n && !done; s++) {
        if (lv[s] > 0 && get32(up + off) > 0) {
            put32(up + off + 4, (uint32_t)low);
            done = true;
        }
        off += (size_t)lv[s] * words * 4;
    }
    cr_assert(done, "no upper-layer list with links");
    fix_section_crc(b.p, T_UPLK);
    expect_refused(&b, QV_ECORRUPT, "invalid link on layer");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, entry_point_out_of_range_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    uint8_t *meta = sec_data(b.p, T_HMET, NULL);
    put64(meta + 3 * 8, 61);
    fix_section_crc(b.p, T_HMET);
    expect_refused(&b, QV_ECORRUPT, "entry point");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, inconsistent_counts_are_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    file_buf t = copy_buf(&b);
    uint8_t *meta = sec_data(t.p, T_HMET, NULL);
    put64(meta + 1 * 8, get64(meta + 8) + 1); /* live + 1 */
    fix_section_crc(t.p, T_HMET);
    expect_refused(&t, QV_ECORRUPT, "inconsistent");
    free(t.p);

    /* Counts that agree with each other but not with the flags. */
    t = copy_buf(&b);
    meta = sec_data(t.p, T_HMET, NULL);
    put64(meta + 1 * 8, get64(meta + 8) + 1);
    put64(meta + 2 * 8, get64(meta + 16) - 1);
    fix_section_crc(t.p, T_HMET);
    expect_refused(&t, QV_ECORRUPT, "inconsistent");
    free(t.p);

    /* An invalid flag value. */
    t = copy_buf(&b);
    uint8_t *fl = sec_data(t.p, T_FLAG, NULL);
    fl[3] = 4;
    fix_section_crc(t.p, T_FLAG);
    expect_refused(&t, QV_ECORRUPT, "flag");
    free(t.p);
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, duplicate_live_id_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    uint8_t *fl = sec_data(b.p, T_FLAG, NULL);
    uint8_t *lab = sec_data(b.p, T_LABL, NULL);
    size_t a = 60, c = 60;
    for (size_t s = 0; s < 60; s++) {
        if (fl[s] != 0)
            continue;
        if (a == 60)
            a = s;
        else if (c == 60)
            c = s;
    }
    cr_assert_lt(c, 60);
    memcpy(lab + c * 8, lab + a * 8, 8);
    fix_section_crc(b.p, T_LABL);
    expect_refused(&b, QV_ECORRUPT, "twice");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, non_finite_quantiser_is_refused)
{
    file_buf b = small_file(QV_STORAGE_INT8, 60, 8);
    size_t len;
    uint8_t *q = sec_data(b.p, T_QUAN, &len);
    float bad[2] = {NAN, INFINITY};
    for (int i = 0; i < 2; i++) {
        file_buf t = copy_buf(&b);
        q = sec_data(t.p, T_QUAN, &len);
        memcpy(q + len - 4, &bad[i], 4); /* the scale */
        fix_section_crc(t.p, T_QUAN);
        expect_refused(&t, QV_ECORRUPT, "non-finite");
        free(t.p);
    }
    /* A zero scale. */
    file_buf t = copy_buf(&b);
    q = sec_data(t.p, T_QUAN, &len);
    float zero = 0;
    memcpy(q + len - 4, &zero, 4);
    fix_section_crc(t.p, T_QUAN);
    expect_refused(&t, QV_ECORRUPT, "scale");
    free(t.p);
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* qv_index_add refuses NaN and infinities; a file must not smuggle them in either. */
Test(index_file, non_finite_vector_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    uint8_t *vf = sec_data(b.p, T_VECF, NULL);
    float nan = NAN;
    memcpy(vf + 5 * 8 * 4 + 4, &nan, 4);
    fix_section_crc(b.p, T_VECF);
    expect_refused(&b, QV_ECORRUPT, "non-finite");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, missing_section_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    put32(sec_entry(b.p, T_VECF), QV__TAG('X', 'X', 'X', 'X'));
    fix_table_crc(b.p);
    expect_refused(&b, QV_ECORRUPT, "'VECF'");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

Test(index_file, header_and_parameters_disagreeing_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    put32(b.p + 24, 9); /* dim 8 -> 9 in the header only */
    fix_header_crc(b.p);
    expect_refused(&b, QV_ECORRUPT, "disagree");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* A section table entry whose offset is not 64-byte aligned (CRCs recomputed): the index types
 * read sections as arrays of uint64/uint32/float in place, so the reader must refuse it. */
Test(index_file, misaligned_section_is_refused)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    uint8_t *e = sec_entry(b.p, T_HMET);
    put64(e + 8, get64(e + 8) + 4);
    fix_section_crc(b.p, T_HMET);
    expect_refused(&b, QV_ECORRUPT, "align");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}

/* A vector count far beyond what the sections hold must be refused by the section sizes, not by
 * first trying to allocate room for it. */
Test(index_file, huge_vector_count_is_refused_without_allocating)
{
    file_buf b = small_file(QV_STORAGE_F32, 60, 8);
    uint8_t *meta = sec_data(b.p, T_HMET, NULL);
    uint64_t n = 1ull << 30;
    put64(meta, n);
    put64(meta + 8, n - get64(meta + 16) - get64(meta + 48)); /* live = n - deleted - free */
    fix_section_crc(b.p, T_HMET);
    expect_refused(&b, QV_ECORRUPT, "LABL");
    free(b.p);
    tmp_cleanup();
    assert_no_leaks();
}
