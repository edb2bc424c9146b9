/*
 * tests/index/test_ivf.c - the IVF-Flat index through the public qv_index interface, checked
 * against the flat index: recall at a documented nprobe, exact mode, filters, writers,
 * training rules and snapshots.
 */
#define _GNU_SOURCE /* mkdtemp */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#define N     2000
#define DIM   32
#define NQ    50
#define K     10
#define NLIST 32
#define NPROBE                                                                                     \
    8 /* recall@10 >= 0.95 on the clustered data below (measured 0.988; nprobe 1: 0.86) */

#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

/* ---- helpers --------------------------------------------------------------------------------- */

static uint64_t rng_state;

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(void)
{
    return (double)(rng_next() >> 11) * 0x1.0p-53;
}

static float rng_gauss(void)
{
    double u = rng_unit(), v = rng_unit();
    return (float)(sqrt(-2.0 * log(u + 1e-300)) * cos(6.283185307179586 * v));
}

/* n points around 64 random centres (spread 2, noise 1): clustered like real embeddings but
 * overlapping enough that probing one cell is not enough. */
static float *clustered(size_t n, size_t dim, uint64_t seed)
{
    rng_state = 1000; /* same centres for base and queries */
    const size_t nc = 64;
    float *centres = malloc(nc * dim * sizeof(float));
    for (size_t i = 0; i < nc * dim; i++)
        centres[i] = (float)(2 * (2 * rng_unit() - 1));
    rng_state = seed;
    float *x = malloc(n * dim * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        size_t c = rng_next() % nc;
        for (size_t d = 0; d < dim; d++)
            x[i * dim + d] = centres[c * dim + d] + rng_gauss();
    }
    free(centres);
    return x;
}

static qv_index *make(qv_index_type type, qv_metric m, uint32_t nlist)
{
    qv_index_params p;
    qv_index_params_default(&p, type, m, DIM);
    p.threads = 2;
    p.ivf.nlist = nlist;
    p.ivf.nprobe = nlist < NPROBE ? nlist : NPROBE;
    qv_index *idx = NULL;
    qv_status err;
    cr_assert_eq(qv_index_create(&p, &idx, &err), 0, "create: %s", err.msg);
    return idx;
}

static void add_range(qv_index *idx, const float *vecs, size_t n, uint64_t first)
{
    uint64_t *ids = malloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = first + i;
    qv_status err;
    int rc = qv_index_add(idx, ids, vecs, n, &err);
    free(ids);
    cr_assert_eq(rc, 0, "add: %s", err.msg);
}

static size_t search(qv_index *idx, const float *q, const qv_search_params *sp, const qv_filter *f,
                     qv_hit *out)
{
    size_t nout = 0;
    qv_status err;
    int rc = qv_index_search(idx, q, K, sp, f, out, &nout, &err);
    cr_assert_eq(rc, 0, "search: %s", err.msg);
    return nout;
}

/* IVF and flat over the same data. */
typedef struct pair {
    qv_index *ivf, *flat;
    float *base, *qs;
} pair;

static pair make_pair(qv_metric m)
{
    pair p;
    p.base = clustered(N, DIM, 1);
    p.qs = clustered(NQ, DIM, 2);
    p.ivf = make(QV_INDEX_IVF_FLAT, m, NLIST);
    p.flat = make(QV_INDEX_FLAT, m, NLIST);
    add_range(p.ivf, p.base, N, 0);
    add_range(p.flat, p.base, N, 0);
    return p;
}

static void free_pair(pair *p)
{
    qv_index_free(p->ivf);
    qv_index_free(p->flat);
    free(p->qs);
    free(p->base);
}

static double recall(qv_index *idx, qv_index *flat, const float *qs, size_t nq,
                     const qv_search_params *sp, const qv_filter *f)
{
    size_t found = 0, total = 0;
    qv_hit a[K], b[K];
    for (size_t q = 0; q < nq; q++) {
        size_t na = search(idx, qs + q * DIM, sp, f, a);
        size_t nb = search(flat, qs + q * DIM, NULL, f, b);
        total += nb;
        for (size_t i = 0; i < nb; i++)
            for (size_t j = 0; j < na; j++)
                if (a[j].id == b[i].id) {
                    found++;
                    break;
                }
    }
    return total == 0 ? 1.0 : (double)found / (double)total;
}

/* Identical answers with the same search parameters (flat ignores them): same ids,
 * bit-identical distances (both scan with the same kernels). */
static void assert_same(qv_index *a, qv_index *b, const float *qs, size_t nq,
                        const qv_search_params *sp, const qv_filter *f)
{
    qv_hit x[K], y[K];
    for (size_t q = 0; q < nq; q++) {
        size_t nx = search(a, qs + q * DIM, sp, f, x);
        size_t ny = search(b, qs + q * DIM, sp, f, y);
        CHECK(nx == ny, "query %zu: %zu vs %zu hits", q, nx, ny);
        for (size_t i = 0; i < nx; i++)
            CHECK(x[i].id == y[i].id && x[i].distance == y[i].distance,
                  "query %zu rank %zu: id %llu (%.8g) vs %llu (%.8g)", q, i,
                  (unsigned long long)x[i].id, (double)x[i].distance, (unsigned long long)y[i].id,
                  (double)y[i].distance);
    }
}

/* ---- search quality -------------------------------------------------------------------------- */

Test(ivf, recall_at_10_is_at_least_095_at_nprobe_8_of_32)
{
    pair p = make_pair(QV_METRIC_L2);
    double r = recall(p.ivf, p.flat, p.qs, NQ, NULL, NULL);
    cr_assert(r >= 0.95, "recall@10 %.3f at nprobe %d of %d cells", r, NPROBE, NLIST);
    /* Probing fewer cells must not do better than probing more. */
    qv_search_params one = {.nprobe = 1};
    double r1 = recall(p.ivf, p.flat, p.qs, NQ, &one, NULL);
    cr_assert(r1 < r, "recall at nprobe 1 (%.3f) not below nprobe %d (%.3f)", r1, NPROBE, r);
    free_pair(&p);
    assert_no_leaks();
}

Test(ivf, recall_holds_for_cosine)
{
    pair p = make_pair(QV_METRIC_COSINE);
    double r = recall(p.ivf, p.flat, p.qs, NQ, NULL, NULL);
    cr_assert(r >= 0.95, "cosine recall@10 %.3f", r);
    free_pair(&p);
    assert_no_leaks();
}

static void exact_equals_flat(qv_metric m)
{
    pair p = make_pair(m);
    qv_search_params ex = {.exact = true};
    assert_same(p.ivf, p.flat, p.qs, NQ, &ex, NULL);
    /* nprobe = nlist scans every list too. */
    qv_search_params all = {.nprobe = NLIST};
    assert_same(p.ivf, p.flat, p.qs, NQ, &all, NULL);
    free_pair(&p);
}

Test(ivf, exact_mode_equals_flat_for_l2)
{
    exact_equals_flat(QV_METRIC_L2);
    assert_no_leaks();
}

Test(ivf, exact_mode_equals_flat_for_inner_product)
{
    exact_equals_flat(QV_METRIC_IP);
    assert_no_leaks();
}

Test(ivf, exact_mode_equals_flat_for_cosine)
{
    exact_equals_flat(QV_METRIC_COSINE);
    assert_no_leaks();
}

Test(ivf, search_batch_equals_single_search)
{
    pair p = make_pair(QV_METRIC_L2);
    qv_hit *out = malloc(NQ * K * sizeof(qv_hit));
    size_t counts[NQ];
    qv_status err;
    cr_assert_eq(qv_index_search_batch(p.ivf, p.qs, NQ, K, NULL, NULL, 2, out, counts, &err), 0,
                 "%s", err.msg);
    qv_hit one[K];
    for (size_t q = 0; q < NQ; q++) {
        size_t n = search(p.ivf, p.qs + q * DIM, NULL, NULL, one);
        CHECK(counts[q] == n, "query %zu: %zu vs %zu", q, counts[q], n);
        for (size_t i = 0; i < n; i++)
            CHECK(out[q * K + i].id == one[i].id, "query %zu rank %zu differs", q, i);
    }
    free(out);
    free_pair(&p);
    assert_no_leaks();
}

/* ---- filters --------------------------------------------------------------------------------- */

static bool mod4(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 4 == 3;
}

static bool in_bitmap(uint64_t id, void *ctx)
{
    return id <= UINT32_MAX && roaring_bitmap_contains(ctx, (uint32_t)id);
}

static void filter_case(const qv_filter *f, bool (*allowed)(uint64_t, void *), void *ctx,
                        double min_recall)
{
    pair p = make_pair(QV_METRIC_L2);
    qv_hit out[K];
    for (size_t q = 0; q < NQ; q++) {
        size_t n = search(p.ivf, p.qs + q * DIM, NULL, f, out);
        CHECK(n == K, "query %zu: %zu hits with plenty allowed", q, n);
        for (size_t i = 0; i < n; i++)
            CHECK(allowed(out[i].id, ctx), "id %llu is not allowed", (unsigned long long)out[i].id);
    }
    double r = recall(p.ivf, p.flat, p.qs, NQ, NULL, f);
    cr_assert(r >= min_recall, "filtered recall@10 %.3f", r);
    free_pair(&p);
}

Test(ivf, filter_predicate_returns_only_allowed_ids)
{
    /* No estimate given: nprobe is not widened, so recall drops a little (measured 0.94). */
    qv_filter f = {.pred = mod4};
    filter_case(&f, mod4, NULL, 0.9);
    assert_no_leaks();
}

Test(ivf, filter_predicate_with_an_estimate_keeps_recall)
{
    qv_filter f = {.pred = mod4, .expected_allowed = N / 4};
    filter_case(&f, mod4, NULL, 0.95);
    assert_no_leaks();
}

Test(ivf, filter_bitmap_returns_only_allowed_ids)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (uint32_t id = 0; id < N; id += 2)
        roaring_bitmap_add(bm, id);
    qv_filter f = {.allow = bm};
    filter_case(&f, in_bitmap, bm, 0.95);
    roaring_bitmap_free(bm);
    assert_no_leaks();
}

Test(ivf, filter_small_bitmap_is_searched_exactly)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (uint32_t id = 3; id < N; id += 97)
        roaring_bitmap_add(bm, id);
    qv_filter f = {.allow = bm};
    filter_case(&f, in_bitmap, bm, 1.0);
    roaring_bitmap_free(bm);
    assert_no_leaks();
}

static bool one_in_100(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 100 == 7;
}

Test(ivf, filter_rare_predicate_widens_the_probe)
{
    /* 1 in 100 passes, and the caller says so: nprobe 8 of 32 cells would miss most allowed
     * neighbours; IVF probes proportionally more cells (here all) and finds them. */
    pair p = make_pair(QV_METRIC_L2);
    qv_filter rare = {.pred = one_in_100, .expected_allowed = N / 100};
    qv_hit out[K];
    for (size_t q = 0; q < NQ; q++) {
        size_t n = search(p.ivf, p.qs + q * DIM, NULL, &rare, out);
        CHECK(n == K, "query %zu: %zu hits of %d allowed", q, n, N / 100);
    }
    double r = recall(p.ivf, p.flat, p.qs, NQ, NULL, &rare);
    cr_assert(r >= 0.95, "recall %.3f with a 1/100 predicate", r);
    free_pair(&p);
    assert_no_leaks();
}

/* ---- writers and training -------------------------------------------------------------------- */

Test(ivf, remove_never_returns_removed_ids_and_upsert_moves_vectors)
{
    pair p = make_pair(QV_METRIC_L2);
    uint64_t gone[N / 2];
    for (size_t i = 0; i < N / 2; i++)
        gone[i] = 2 * i + 1;
    size_t removed = 0;
    cr_assert_eq(qv_index_remove(p.ivf, gone, N / 2, &removed), 0);
    cr_assert_eq(removed, N / 2);
    cr_assert_eq(qv_index_remove(p.flat, gone, N / 2, NULL), 0);
    qv_search_params ex = {.exact = true};
    assert_same(p.ivf, p.flat, p.qs, NQ, &ex, NULL);
    qv_hit out[K];
    for (size_t q = 0; q < NQ; q++) {
        size_t n = search(p.ivf, p.qs + q * DIM, NULL, NULL, out);
        for (size_t i = 0; i < n; i++)
            CHECK(out[i].id % 2 == 0, "removed id %llu returned", (unsigned long long)out[i].id);
    }
    /* Upsert id 0 to a query's position (likely another cell): found there at distance 0,
     * and its old vector no longer answers for it. */
    add_range(p.ivf, p.qs, 1, 0);
    size_t n = search(p.ivf, p.qs, NULL, NULL, out);
    cr_assert(n > 0);
    cr_assert_eq(out[0].id, 0);
    cr_assert_float_eq(out[0].distance, 0.0f, 1e-6);
    n = search(p.ivf, p.base, &ex, NULL, out);
    for (size_t i = 0; i < n; i++)
        cr_assert(out[i].id != 0 || out[i].distance > 1e-3, "old vector of id 0 still indexed");
    qv_index_stats st;
    qv_index_stats_get(p.ivf, &st);
    cr_assert_eq(st.count, N / 2);
    free_pair(&p);
    assert_no_leaks();
}

Test(ivf, first_add_trains_and_few_vectors_reduce_nlist)
{
    qv_index *idx = make(QV_INDEX_IVF_FLAT, QV_METRIC_L2, 1024);
    qv_index_stats st;
    qv_index_stats_get(idx, &st);
    cr_assert(!st.trained, "trained before any data");
    qv_hit out[K];
    float *base = clustered(500, DIM, 3);
    cr_assert_eq(search(idx, base, NULL, NULL, out), 0, "an untrained index returned hits");
    add_range(idx, base, 500, 0);
    qv_index_stats_get(idx, &st);
    cr_assert(st.trained);
    cr_assert_eq(st.count, 500);
    cr_assert_eq(st.params.ivf.nlist, 500 / 39, "effective nlist %u", st.params.ivf.nlist);
    size_t n = search(idx, base + 7 * DIM, NULL, NULL, out);
    cr_assert_eq(n, K);
    cr_assert_eq(out[0].id, 7);
    qv_index_free(idx);
    free(base);
    assert_no_leaks();
}

Test(ivf, train_after_add_is_refused)
{
    qv_index *idx = make(QV_INDEX_IVF_FLAT, QV_METRIC_L2, 8);
    float *base = clustered(400, DIM, 4);
    qv_status err;
    cr_assert_eq(qv_index_train(idx, base, 400, &err), 0, "%s", err.msg);
    add_range(idx, base, 100, 0);
    int rc = qv_index_train(idx, base, 400, &err);
    cr_assert_eq(rc, QV_EPRECONDITION, "rc %d", rc);
    qv_index_free(idx);
    free(base);
    assert_no_leaks();
}

Test(ivf, training_is_deterministic_for_a_seed)
{
    float *base = clustered(N, DIM, 5);
    float *qs = clustered(NQ, DIM, 6);
    qv_index *a = make(QV_INDEX_IVF_FLAT, QV_METRIC_L2, NLIST);
    qv_index *b = make(QV_INDEX_IVF_FLAT, QV_METRIC_L2, NLIST);
    add_range(a, base, N, 0);
    add_range(b, base, N, 0);
    assert_same(a, b, qs, NQ, NULL, NULL);
    qv_index_free(b);
    qv_index_free(a);
    free(qs);
    free(base);
    assert_no_leaks();
}

/* ---- snapshots ------------------------------------------------------------------------------- */

static uint8_t *save_bytes(qv_index *idx, size_t *len)
{
    char dir[] = "/tmp/qv_test_ivf_XXXXXX";
    cr_assert_not_null(mkdtemp(dir));
    char path[64];
    snprintf(path, sizeof(path), "%s/ivf.qvi", dir);
    qv_status err;
    cr_assert_eq(qv_index_save(idx, path, &err), 0, "save: %s", err.msg);
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    *len = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc(*len);
    cr_assert_eq(fread(buf, 1, *len, f), *len);
    fclose(f);
    unlink(path);
    rmdir(dir);
    return buf;
}

Test(ivf, save_load_round_trip_gives_identical_results)
{
    pair p = make_pair(QV_METRIC_L2);
    uint64_t gone[3] = {5, 6, 1999};
    cr_assert_eq(qv_index_remove(p.ivf, gone, 3, NULL), 0);
    size_t len;
    uint8_t *buf = save_bytes(p.ivf, &len);
    qv_index *back = NULL;
    qv_status err;
    cr_assert_eq(qv_index_load_buffer(buf, len, &back, &err), 0, "load: %s", err.msg);
    assert_same(back, p.ivf, p.qs, NQ, NULL, NULL);
    qv_search_params ex = {.exact = true, .nprobe = 3};
    assert_same(back, p.ivf, p.qs, NQ, &ex, NULL);
    qv_index_stats s1, s2;
    qv_index_stats_get(p.ivf, &s1);
    qv_index_stats_get(back, &s2);
    cr_assert_eq(s2.count, s1.count);
    cr_assert_eq(s2.params.ivf.nlist, s1.params.ivf.nlist);
    cr_assert(s2.trained);
    cr_assert(!qv_index_contains(back, 6));
    /* The loaded index keeps working as a writer. */
    add_range(back, p.qs, 1, 6);
    qv_hit out[K];
    cr_assert_eq(search(back, p.qs, NULL, NULL, out), K);
    cr_assert_eq(out[0].id, 6);
    qv_index_free(back);
    free(buf);
    free_pair(&p);
    assert_no_leaks();
}

Test(ivf, save_load_round_trip_of_an_untrained_index)
{
    qv_index *idx = make(QV_INDEX_IVF_FLAT, QV_METRIC_IP, 16);
    size_t len;
    uint8_t *buf = save_bytes(idx, &len);
    qv_index *back = NULL;
    qv_status err;
    cr_assert_eq(qv_index_load_buffer(buf, len, &back, &err), 0, "load: %s", err.msg);
    qv_index_stats st;
    qv_index_stats_get(back, &st);
    cr_assert(!st.trained);
    cr_assert_eq(st.count, 0);
    float *base = clustered(400, DIM, 7);
    add_range(back, base, 400, 0); /* trains now */
    qv_index_stats_get(back, &st);
    cr_assert(st.trained);
    qv_index_free(back);
    qv_index_free(idx);
    free(base);
    free(buf);
    assert_no_leaks();
}

Test(ivf, load_refuses_truncated_or_flipped_files)
{
    float *base = clustered(120, DIM, 8);
    float *qs = clustered(5, DIM, 9);
    qv_index *idx = make(QV_INDEX_IVF_FLAT, QV_METRIC_L2, 4);
    add_range(idx, base, 120, 0);
    size_t len;
    uint8_t *buf = save_bytes(idx, &len);
    qv_status err;
    for (size_t cut = 0; cut < len; cut += 7) {
        qv_index *back = NULL;
        int rc = qv_index_load_buffer(buf, cut, &back, &err);
        CHECK(rc == QV_ECORRUPT && back == NULL, "truncated to %zu: rc %d", cut, rc);
    }
    size_t accepted = 0;
    for (size_t pos = 0; pos < len; pos += 3) {
        buf[pos] ^= 0x10;
        qv_index *back = NULL;
        int rc = qv_index_load_buffer(buf, len, &back, &err);
        if (rc == 0) {
            accepted++;
            qv_search_params ex = {.exact = true};
            assert_same(back, idx, qs, 5, &ex, NULL);
            qv_index_free(back);
        } else {
            CHECK(rc == QV_ECORRUPT && back == NULL, "byte %zu: rc %d (%s)", pos, rc, err.msg);
        }
        buf[pos] ^= 0x10;
    }
    cr_assert(accepted < len / 3 / 4, "%zu flips accepted", accepted);
    qv_index_free(idx);
    free(buf);
    free(qs);
    free(base);
    assert_no_leaks();
}

/* ---- hand-edited files with valid checksums (layout in index/index_internal.h) --------------- */

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

static uint8_t *find_entry(uint8_t *buf, const char *tag)
{
    uint32_t nsec = get32(buf + 32);
    uint8_t *table = buf + get64(buf + 40);
    for (uint32_t i = 0; i < nsec; i++)
        if (get32(table + i * 32) == get32((const uint8_t *)tag))
            return table + i * 32;
    cr_assert_fail("no section %s", tag);
    return NULL;
}

static void reseal(uint8_t *buf, uint8_t *entry)
{
    put32(entry + 24, qv_crc32c(0, buf + get64(entry + 8), (size_t)get64(entry + 16)));
    uint32_t nsec = get32(buf + 32);
    uint8_t *table = buf + get64(buf + 40);
    put32(table + nsec * 32, qv_crc32c(0, table, nsec * 32));
}

/* Edits one u32/float-sized field of a section of a copy, reseals it, expects ECORRUPT. */
static void expect_refused_edit(const uint8_t *buf, size_t len, const char *tag, size_t at,
                                const void *val, const char *what)
{
    uint8_t *copy = malloc(len);
    memcpy(copy, buf, len);
    uint8_t *e = find_entry(copy, tag);
    cr_assert(at + 4 <= get64(e + 16), "%s: edit outside the section", what);
    memcpy(copy + get64(e + 8) + at, val, 4);
    reseal(copy, e);
    qv_index *back = NULL;
    qv_status err;
    int rc = qv_index_load_buffer(copy, len, &back, &err);
    cr_assert_eq(rc, QV_ECORRUPT, "%s: rc %d (%s)", what, rc, err.msg);
    cr_assert_null(back);
    free(copy);
}

Test(ivf, load_refuses_inconsistent_sections)
{
    float *base = clustered(200, DIM, 10);
    qv_index *idx = make(QV_INDEX_IVF_FLAT, QV_METRIC_L2, 4);
    add_range(idx, base, 200, 0);
    size_t len;
    uint8_t *buf = save_bytes(idx, &len);
    uint32_t big = 1000, bad_trained = 2, nlist_over = 5;
    float nan = NAN;
    expect_refused_edit(buf, len, "IVFL", 0, &big, "list sizes do not add up to the count");
    expect_refused_edit(buf, len, "IVFM", 0, &bad_trained, "trained flag 2");
    expect_refused_edit(buf, len, "IVFM", 8, &nlist_over, "nlist above the configured nlist");
    expect_refused_edit(buf, len, "IVFM", 16, &big, "count disagrees with the sections");
    expect_refused_edit(buf, len, "IVFV", 4 * 10, &nan, "non-finite vector");
    expect_refused_edit(buf, len, "IVFC", 4 * 3, &nan, "non-finite centroid");
    /* The same id in two lists. */
    uint8_t *ids = buf + get64(find_entry(buf, "IVFI") + 8);
    expect_refused_edit(buf, len, "IVFI", 8 * 150, ids + 8 * 3, "duplicate id (low half)");
    qv_index_free(idx);
    free(buf);
    free(base);
    assert_no_leaks();
}
