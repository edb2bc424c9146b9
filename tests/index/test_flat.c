/*
 * tests/index/test_flat.c - the exact (flat) index through the public qv_index interface.
 *
 * Map: helpers (seeded data, double-precision brute force, index construction), then exactness
 * per metric, writers (upsert, remove), filters, batch search, concurrency, snapshots (round
 * trip, truncation, every-byte corruption, inconsistent sections with valid checksums).
 */
#define _GNU_SOURCE /* mkdtemp */
#include <criterion/criterion.h>
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "index/index.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#define N   2000
#define DIM 32
#define NQ  20
#define K   10

/* Only failures go through Criterion: passing cr_asserts in loops dominate the run time. */
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

/* Uniform in [-1, 1). */
static float rng_float(void)
{
    return (float)((double)(rng_next() >> 11) * 0x1.0p-52 - 1.0);
}

static float *random_vecs(size_t n, size_t dim, uint64_t seed)
{
    rng_state = seed;
    float *v = malloc(n * dim * sizeof(float));
    cr_assert_not_null(v);
    for (size_t i = 0; i < n * dim; i++)
        v[i] = rng_float();
    return v;
}

/* The documented public distance, in double. */
static double ref_dist(qv_metric m, const float *a, const float *b, size_t dim)
{
    double s = 0, na = 0, nb = 0;
    for (size_t i = 0; i < dim; i++) {
        if (m == QV_METRIC_L2) {
            double d = (double)a[i] - b[i];
            s += d * d;
        } else {
            s += (double)a[i] * b[i];
        }
        na += (double)a[i] * a[i];
        nb += (double)b[i] * b[i];
    }
    if (m == QV_METRIC_L2)
        return s;
    if (m == QV_METRIC_IP)
        return -s;
    if (na == 0 || nb == 0)
        return 1.0;
    return 1.0 - s / sqrt(na * nb);
}

typedef struct ref_hit {
    uint64_t id;
    double d;
} ref_hit;

static int cmp_ref(const void *a, const void *b)
{
    const ref_hit *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Brute force over vecs[i] with id ids[i] (ids NULL: id i), keeping those `allowed` admits. */
static size_t brute_force(qv_metric m, const float *vecs, const uint64_t *ids, size_t n, size_t dim,
                          const float *q, bool (*allowed)(uint64_t, void *), void *ctx,
                          ref_hit *out)
{
    size_t cnt = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t id = ids != NULL ? ids[i] : i;
        if (allowed != NULL && !allowed(id, ctx))
            continue;
        out[cnt].id = id;
        out[cnt].d = ref_dist(m, q, vecs + i * dim, dim);
        cnt++;
    }
    qsort(out, cnt, sizeof(ref_hit), cmp_ref);
    return cnt;
}

static double tol_for(qv_metric m)
{
    /* Float accumulation over DIM terms of magnitude <= ~1 (L2: <= 4). */
    return m == QV_METRIC_L2 ? 1e-4 : 1e-5;
}

/*
 * The index's answer must be the brute-force answer: same count, same distances rank by rank,
 * and the same ids wherever the reference has no near-tie at that rank.
 */
static void check_exact(qv_metric m, const qv_hit *got, size_t nout, const ref_hit *ref,
                        size_t nref, size_t k)
{
    size_t want = nref < k ? nref : k;
    double tol = tol_for(m);
    cr_assert_eq(nout, want, "returned %zu hits, expected %zu", nout, want);
    for (size_t r = 0; r < nout; r++) {
        CHECK(fabs(got[r].distance - ref[r].d) <= tol, "rank %zu: distance %.7g, reference %.7g", r,
              (double)got[r].distance, ref[r].d);
        bool tie = (r > 0 && ref[r].d - ref[r - 1].d <= 2 * tol) ||
                   (r + 1 < nref && ref[r + 1].d - ref[r].d <= 2 * tol);
        CHECK(tie || got[r].id == ref[r].id, "rank %zu: id %llu, reference %llu", r,
              (unsigned long long)got[r].id, (unsigned long long)ref[r].id);
        if (r > 0)
            CHECK(got[r - 1].distance <= got[r].distance, "rank %zu out of order", r);
    }
}

static qv_index *make_index(qv_metric m, size_t dim)
{
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_FLAT, m, (uint32_t)dim);
    p.threads = 2;
    qv_index *idx = NULL;
    qv_status err;
    int rc = qv_index_create(&p, &idx, &err);
    cr_assert_eq(rc, 0, "create: %s", err.msg);
    return idx;
}

static void add_all(qv_index *idx, const float *vecs, size_t n, uint64_t first_id)
{
    uint64_t *ids = malloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = first_id + i;
    qv_status err;
    int rc = qv_index_add(idx, ids, vecs, n, &err);
    free(ids);
    cr_assert_eq(rc, 0, "add: %s", err.msg);
}

static size_t search(qv_index *idx, const float *q, size_t k, const qv_filter *f, qv_hit *out)
{
    size_t nout = 0;
    qv_status err;
    int rc = qv_index_search(idx, q, k, NULL, f, out, &nout, &err);
    cr_assert_eq(rc, 0, "search: %s", err.msg);
    return nout;
}

/* ---- exactness ------------------------------------------------------------------------------- */

static void exact_against_brute_force(qv_metric m)
{
    float *base = random_vecs(N, DIM, 1);
    float *qs = random_vecs(NQ, DIM, 2);
    qv_index *idx = make_index(m, DIM);
    add_all(idx, base, N, 0);
    ref_hit *ref = malloc(N * sizeof(ref_hit));
    qv_hit out[K];
    for (size_t q = 0; q < NQ; q++) {
        size_t nref = brute_force(m, base, NULL, N, DIM, qs + q * DIM, NULL, NULL, ref);
        size_t nout = search(idx, qs + q * DIM, K, NULL, out);
        check_exact(m, out, nout, ref, nref, K);
    }
    qv_index_free(idx);
    free(ref);
    free(qs);
    free(base);
    assert_no_leaks();
}

Test(flat, search_is_exact_for_l2)
{
    exact_against_brute_force(QV_METRIC_L2);
}

Test(flat, search_is_exact_for_inner_product)
{
    exact_against_brute_force(QV_METRIC_IP);
}

Test(flat, search_is_exact_for_cosine)
{
    exact_against_brute_force(QV_METRIC_COSINE);
}

Test(flat, search_returns_every_vector_when_k_exceeds_count)
{
    float *base = random_vecs(7, DIM, 3);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    qv_hit out[K];
    cr_assert_eq(search(idx, base, K, NULL, out), 0, "an empty index returned hits");
    add_all(idx, base, 7, 100);
    size_t nout = search(idx, base, K, NULL, out);
    cr_assert_eq(nout, 7);
    cr_assert_eq(out[0].id, 100);
    cr_assert_float_eq(out[0].distance, 0.0f, 1e-6);
    qv_index_free(idx);
    free(base);
    assert_no_leaks();
}

/* ---- writers --------------------------------------------------------------------------------- */

Test(flat, upsert_replaces_the_vector_of_an_existing_id)
{
    float *v = random_vecs(3, DIM, 4);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    add_all(idx, v, 2, 1);           /* ids 1, 2 */
    add_all(idx, v + 2 * DIM, 1, 1); /* id 1 now holds the third vector */
    qv_index_stats st;
    qv_index_stats_get(idx, &st);
    cr_assert_eq(st.count, 2, "upsert changed the count to %llu", (unsigned long long)st.count);
    qv_hit out[K];
    size_t nout = search(idx, v + 2 * DIM, K, NULL, out);
    cr_assert_eq(nout, 2);
    cr_assert_eq(out[0].id, 1);
    cr_assert_float_eq(out[0].distance, 0.0f, 1e-6);
    nout = search(idx, v, K, NULL, out);
    for (size_t i = 0; i < nout; i++)
        cr_assert(out[i].distance > 1e-3, "the replaced vector is still found (id %llu)",
                  (unsigned long long)out[i].id);
    qv_index_free(idx);
    free(v);
    assert_no_leaks();
}

Test(flat, duplicate_ids_in_one_batch_keep_the_last_vector)
{
    float *v = random_vecs(3, DIM, 5);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    uint64_t ids[3] = {9, 9, 9};
    qv_status err;
    cr_assert_eq(qv_index_add(idx, ids, v, 3, &err), 0, "%s", err.msg);
    qv_hit out[K];
    size_t nout = search(idx, v + 2 * DIM, K, NULL, out);
    cr_assert_eq(nout, 1);
    cr_assert_eq(out[0].id, 9);
    cr_assert_float_eq(out[0].distance, 0.0f, 1e-6);
    qv_index_free(idx);
    free(v);
    assert_no_leaks();
}

static bool is_even(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 2 == 0;
}

Test(flat, remove_never_returns_removed_ids)
{
    float *base = random_vecs(N, DIM, 6);
    float *qs = random_vecs(NQ, DIM, 7);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    add_all(idx, base, N, 0);
    uint64_t *odd = malloc((N / 2 + 5) * sizeof(uint64_t));
    size_t n = 0;
    for (uint64_t id = 1; id < N; id += 2)
        odd[n++] = id;
    for (uint64_t id = N; id < N + 5; id++)
        odd[n++] = id; /* unknown: ignored */
    size_t removed = 0;
    cr_assert_eq(qv_index_remove(idx, odd, n, &removed), 0);
    cr_assert_eq(removed, N / 2);
    cr_assert(!qv_index_contains(idx, 1));
    cr_assert(qv_index_contains(idx, 2));

    ref_hit *ref = malloc(N * sizeof(ref_hit));
    qv_hit out[50];
    for (size_t q = 0; q < NQ; q++) {
        size_t nref =
            brute_force(QV_METRIC_L2, base, NULL, N, DIM, qs + q * DIM, is_even, NULL, ref);
        size_t nout = search(idx, qs + q * DIM, 50, NULL, out);
        for (size_t i = 0; i < nout; i++)
            CHECK(out[i].id % 2 == 0, "removed id %llu returned", (unsigned long long)out[i].id);
        check_exact(QV_METRIC_L2, out, nout, ref, nref, 50);
    }
    /* Removed ids can come back. */
    add_all(idx, base + DIM, 1, 1);
    size_t nout = search(idx, base + DIM, 1, NULL, out);
    cr_assert_eq(nout, 1);
    cr_assert_eq(out[0].id, 1);
    qv_index_free(idx);
    free(ref);
    free(odd);
    free(qs);
    free(base);
    assert_no_leaks();
}

Test(flat, removing_everything_leaves_an_empty_index)
{
    float *base = random_vecs(300, DIM, 8);
    qv_index *idx = make_index(QV_METRIC_IP, DIM);
    add_all(idx, base, 300, 0);
    uint64_t ids[300];
    for (size_t i = 0; i < 300; i++)
        ids[i] = 299 - i;
    size_t removed;
    cr_assert_eq(qv_index_remove(idx, ids, 300, &removed), 0);
    cr_assert_eq(removed, 300);
    qv_hit out[K];
    cr_assert_eq(search(idx, base, K, NULL, out), 0);
    qv_index_stats st;
    qv_index_stats_get(idx, &st);
    cr_assert_eq(st.count, 0);
    qv_index_free(idx);
    free(base);
    assert_no_leaks();
}

/* ---- filters --------------------------------------------------------------------------------- */

static bool in_bitmap(uint64_t id, void *ctx)
{
    return id <= UINT32_MAX && roaring_bitmap_contains(ctx, (uint32_t)id);
}

static bool mod3(uint64_t id, void *ctx)
{
    (void)ctx;
    return id % 3 == 1;
}

/* Every allowed-only answer must equal brute force over the allowed set. */
static void filter_case(const qv_filter *f, bool (*allowed)(uint64_t, void *), void *ctx,
                        size_t expect_allowed)
{
    float *base = random_vecs(N, DIM, 9);
    float *qs = random_vecs(NQ, DIM, 10);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    add_all(idx, base, N, 0);
    ref_hit *ref = malloc(N * sizeof(ref_hit));
    qv_hit out[K];
    for (size_t q = 0; q < NQ; q++) {
        size_t nref =
            brute_force(QV_METRIC_L2, base, NULL, N, DIM, qs + q * DIM, allowed, ctx, ref);
        cr_assert_eq(nref, expect_allowed);
        size_t nout = search(idx, qs + q * DIM, K, f, out);
        for (size_t i = 0; i < nout; i++)
            CHECK(allowed(out[i].id, ctx), "id %llu is not allowed", (unsigned long long)out[i].id);
        check_exact(QV_METRIC_L2, out, nout, ref, nref, K);
    }
    qv_index_free(idx);
    free(ref);
    free(qs);
    free(base);
}

Test(flat, filter_bitmap_returns_only_allowed_ids)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (uint32_t id = 0; id < N; id += 3)
        roaring_bitmap_add(bm, id);
    qv_filter f = {.allow = bm};
    filter_case(&f, in_bitmap, bm, (N + 2) / 3);
    roaring_bitmap_free(bm);
    assert_no_leaks();
}

Test(flat, filter_small_bitmap_walks_the_allowed_ids)
{
    /* 40 of 2000 allowed (and ids the index lacks): the bitmap-walking path. */
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (uint32_t id = 5; id < N; id += 50)
        roaring_bitmap_add(bm, id);
    roaring_bitmap_add(bm, N + 7);
    roaring_bitmap_add(bm, UINT32_MAX);
    qv_filter f = {.allow = bm};
    filter_case(&f, in_bitmap, bm, 40);
    roaring_bitmap_free(bm);
    assert_no_leaks();
}

Test(flat, filter_predicate_returns_only_allowed_ids)
{
    qv_filter f = {.pred = mod3};
    filter_case(&f, mod3, NULL, (N + 1) / 3);
    assert_no_leaks();
}

static bool bitmap_and_even(uint64_t id, void *ctx)
{
    return in_bitmap(id, ctx) && id % 2 == 0;
}

Test(flat, filter_bitmap_and_predicate_must_both_pass)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (uint32_t id = 0; id < N; id += 3)
        roaring_bitmap_add(bm, id);
    qv_filter f = {.allow = bm, .pred = is_even};
    filter_case(&f, bitmap_and_even, bm, (N + 5) / 6);
    roaring_bitmap_free(bm);
    assert_no_leaks();
}

Test(flat, filter_with_fewer_allowed_than_k_returns_just_those)
{
    float *base = random_vecs(N, DIM, 11);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    add_all(idx, base, N, 0);
    roaring_bitmap_t *bm = roaring_bitmap_create();
    roaring_bitmap_add(bm, 17);
    roaring_bitmap_add(bm, 1000);
    roaring_bitmap_add(bm, 1999);
    qv_filter f = {.allow = bm};
    qv_hit out[K];
    size_t nout = search(idx, base, K, &f, out);
    cr_assert_eq(nout, 3);
    for (size_t i = 0; i < nout; i++)
        cr_assert(out[i].id == 17 || out[i].id == 1000 || out[i].id == 1999);
    qv_index_free(idx);
    roaring_bitmap_free(bm);
    free(base);
    assert_no_leaks();
}

/* ---- batch search ---------------------------------------------------------------------------- */

static void batch_equals_single(qv_metric m, const qv_filter *f, size_t dim)
{
    const size_t nq = 300; /* several sgemm query blocks and a partial one */
    float *base = random_vecs(N, dim, 12);
    float *qs = random_vecs(nq, dim, 13);
    qv_index *idx = make_index(m, dim);
    add_all(idx, base, N, 0);
    qv_hit *out = malloc(nq * K * sizeof(qv_hit));
    size_t *counts = malloc(nq * sizeof(size_t));
    qv_status err;
    int rc = qv_index_search_batch(idx, qs, nq, K, NULL, f, 2, out, counts, &err);
    cr_assert_eq(rc, 0, "batch: %s", err.msg);
    qv_hit one[K];
    for (size_t q = 0; q < nq; q++) {
        size_t nout = search(idx, qs + q * dim, K, f, one);
        CHECK(counts[q] == nout, "query %zu: batch %zu hits, single %zu", q, counts[q], nout);
        for (size_t i = 0; i < nout; i++) {
            const qv_hit *b = &out[q * K + i];
            CHECK(b->id == one[i].id, "query %zu rank %zu: batch id %llu, single %llu", q, i,
                  (unsigned long long)b->id, (unsigned long long)one[i].id);
            /* The batch path re-scores its winners with the single-search kernel. */
            CHECK(b->distance == one[i].distance, "query %zu rank %zu: batch %.9g, single %.9g", q,
                  i, (double)b->distance, (double)one[i].distance);
        }
    }
    qv_index_free(idx);
    free(counts);
    free(out);
    free(qs);
    free(base);
}

Test(flat, search_batch_equals_single_search_for_l2)
{
    batch_equals_single(QV_METRIC_L2, NULL, DIM);
    assert_no_leaks();
}

Test(flat, search_batch_equals_single_search_for_inner_product)
{
    batch_equals_single(QV_METRIC_IP, NULL, DIM);
    assert_no_leaks();
}

Test(flat, search_batch_equals_single_search_for_cosine)
{
    batch_equals_single(QV_METRIC_COSINE, NULL, DIM);
    assert_no_leaks();
}

Test(flat, search_batch_equals_single_search_with_padded_stride)
{
    batch_equals_single(QV_METRIC_L2, NULL, 130); /* rows padded to 144 floats */
    assert_no_leaks();
}

Test(flat, search_batch_respects_filters)
{
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (uint32_t id = 0; id < N; id += 3)
        roaring_bitmap_add(bm, id);
    qv_filter dense = {.allow = bm, .pred = is_even};
    batch_equals_single(QV_METRIC_L2, &dense, DIM);
    roaring_bitmap_t *few = roaring_bitmap_create();
    for (uint32_t id = 1; id < N; id += 97)
        roaring_bitmap_add(few, id);
    qv_filter sparse = {.allow = few};
    batch_equals_single(QV_METRIC_L2, &sparse, DIM);
    roaring_bitmap_free(few);
    roaring_bitmap_free(bm);
    assert_no_leaks();
}

/* ---- concurrency ----------------------------------------------------------------------------- */

typedef struct writer_arg {
    qv_index *idx;
    const float *vecs;
    size_t n;
    int rc;
} writer_arg;

static void *writer_main(void *p)
{
    writer_arg *w = p;
    uint64_t ids[50];
    for (size_t i0 = 50; i0 < w->n && w->rc == 0; i0 += 50) {
        for (size_t j = 0; j < 50; j++)
            ids[j] = i0 + j;
        qv_status err;
        w->rc = qv_index_add(w->idx, ids, w->vecs + i0 * DIM, 50, &err);
    }
    return NULL;
}

Test(flat, concurrent_search_during_adds_sees_consistent_results)
{
    const size_t n = 4000;
    float *base = random_vecs(n, DIM, 14);
    qv_index *idx = make_index(QV_METRIC_L2, DIM);
    const qv_kernels *kern = qv_kernels_get();
    add_all(idx, base, 50, 0);
    writer_arg w = {idx, base, n, 0};
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, writer_main, &w), 0);
    /* Vector of id 0 as the query: it is always present and always the nearest. */
    qv_hit out[K];
    size_t searches = 0;
    for (;;) {
        qv_index_stats st;
        qv_index_stats_get(idx, &st);
        bool done = st.count == n;
        size_t nout = search(idx, base, K, NULL, out);
        searches++;
        CHECK(nout == K, "search %zu returned %zu hits", searches, nout);
        CHECK(out[0].id == 0 && out[0].distance == 0.0f, "the query's own vector is not first");
        for (size_t i = 0; i < nout; i++) {
            CHECK(out[i].id < n, "unknown id %llu", (unsigned long long)out[i].id);
            float d = kern->l2sq_f32(base, base + out[i].id * DIM, DIM);
            CHECK(d == out[i].distance, "id %llu: distance %.8g, its vector gives %.8g",
                  (unsigned long long)out[i].id, (double)out[i].distance, (double)d);
            CHECK(i == 0 || out[i - 1].distance <= out[i].distance, "out of order");
        }
        if (done)
            break;
    }
    pthread_join(t, NULL);
    cr_assert_eq(w.rc, 0, "adds failed: %d", w.rc);
    /* A final batch search agrees with the final state. */
    qv_hit bout[K];
    size_t cnt;
    qv_status err;
    cr_assert_eq(qv_index_search_batch(idx, base, 1, K, NULL, NULL, 2, bout, &cnt, &err), 0);
    cr_assert_eq(cnt, K);
    for (size_t i = 0; i < K; i++)
        cr_assert_eq(bout[i].id, out[i].id);
    qv_index_free(idx);
    free(base);
    assert_no_leaks();
}

/* ---- snapshots ------------------------------------------------------------------------------- */

static char *temp_path(char *dir_buf, size_t len, const char *name)
{
    snprintf(dir_buf, len, "/tmp/qv_test_flat_XXXXXX");
    cr_assert_not_null(mkdtemp(dir_buf));
    size_t n = strlen(dir_buf) + strlen(name) + 2;
    char *p = malloc(n);
    snprintf(p, n, "%s/%s", dir_buf, name);
    return p;
}

static uint8_t *read_file(const char *path, size_t *len)
{
    FILE *f = fopen(path, "rb");
    cr_assert_not_null(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *buf = malloc((size_t)n);
    cr_assert_eq(fread(buf, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    *len = (size_t)n;
    return buf;
}

/* Saves idx, returns the file's bytes. */
static uint8_t *save_bytes(qv_index *idx, size_t *len)
{
    char dir[64];
    char *path = temp_path(dir, sizeof(dir), "flat.qvi");
    qv_status err;
    cr_assert_eq(qv_index_save(idx, path, &err), 0, "save: %s", err.msg);
    uint8_t *buf = read_file(path, len);
    unlink(path);
    rmdir(dir);
    free(path);
    return buf;
}

/* Same ids and bit-identical distances for every query. */
static void assert_same_results(qv_index *a, qv_index *b, const float *qs, size_t nq, size_t dim)
{
    qv_hit x[K], y[K];
    for (size_t q = 0; q < nq; q++) {
        size_t nx = search(a, qs + q * dim, K, NULL, x);
        size_t ny = search(b, qs + q * dim, K, NULL, y);
        CHECK(nx == ny, "query %zu: %zu vs %zu hits", q, nx, ny);
        for (size_t i = 0; i < nx; i++)
            CHECK(x[i].id == y[i].id && x[i].distance == y[i].distance,
                  "query %zu rank %zu differs after reload", q, i);
    }
}

static void round_trip(qv_metric m, size_t dim, int flags)
{
    float *base = random_vecs(500, dim, 15);
    float *qs = random_vecs(NQ, dim, 16);
    qv_index *idx = make_index(m, dim);
    add_all(idx, base, 500, 1000);
    uint64_t gone[2] = {1003, 1400};
    cr_assert_eq(qv_index_remove(idx, gone, 2, NULL), 0);
    char dir[64];
    char *path = temp_path(dir, sizeof(dir), "flat.qvi");
    qv_status err;
    cr_assert_eq(qv_index_save(idx, path, &err), 0, "save: %s", err.msg);
    qv_index *back = NULL;
    cr_assert_eq(qv_index_load(path, flags, &back, &err), 0, "load: %s", err.msg);
    qv_index_stats s1, s2;
    qv_index_stats_get(idx, &s1);
    qv_index_stats_get(back, &s2);
    cr_assert_eq(s2.count, s1.count);
    cr_assert_eq(s2.metric, m);
    cr_assert_eq(s2.dim, dim);
    cr_assert(!qv_index_contains(back, 1003));
    cr_assert(qv_index_contains(back, 1004));
    assert_same_results(idx, back, qs, NQ, dim);
    qv_index_free(back);
    unlink(path);
    rmdir(dir);
    free(path);
    qv_index_free(idx);
    free(qs);
    free(base);
}

Test(flat, save_load_round_trip_gives_identical_results)
{
    round_trip(QV_METRIC_L2, DIM, 0);
    round_trip(QV_METRIC_COSINE, DIM, 0);
    round_trip(QV_METRIC_IP, 130, 0);
    assert_no_leaks();
}

Test(flat, save_load_round_trip_with_mmap_gives_identical_results)
{
    round_trip(QV_METRIC_L2, DIM, QV_LOAD_MMAP);
    round_trip(QV_METRIC_L2, 130, QV_LOAD_MMAP);
    assert_no_leaks();
}

/* A small index and its saved bytes, for the corruption tests. */
static qv_index *small_index(float **qs_out, uint8_t **buf, size_t *len)
{
    float *base = random_vecs(20, 4, 17);
    qv_index *idx = make_index(QV_METRIC_L2, 4);
    add_all(idx, base, 20, 50);
    free(base);
    *qs_out = random_vecs(5, 4, 18);
    *buf = save_bytes(idx, len);
    return idx;
}

Test(flat, load_refuses_truncated_files)
{
    float *qs;
    uint8_t *buf;
    size_t len;
    qv_index *idx = small_index(&qs, &buf, &len);
    qv_index *back = NULL;
    qv_status err;
    cr_assert_eq(qv_index_load_buffer(buf, len, &back, &err), 0, "intact file: %s", err.msg);
    qv_index_free(back);
    for (size_t cut = 0; cut < len; cut++) {
        back = NULL;
        int rc = qv_index_load_buffer(buf, cut, &back, &err);
        CHECK(rc == QV_ECORRUPT, "truncated to %zu of %zu bytes: rc %d", cut, len, rc);
        CHECK(back == NULL, "a refused load returned an index");
    }
    qv_index_free(idx);
    free(buf);
    free(qs);
    assert_no_leaks();
}

Test(flat, load_never_accepts_a_flipped_byte_with_wrong_data)
{
    float *qs;
    uint8_t *buf;
    size_t len;
    qv_index *idx = small_index(&qs, &buf, &len);
    static const uint8_t flips[] = {0x01, 0x80, 0xFF};
    size_t accepted = 0;
    for (size_t pos = 0; pos < len; pos++) {
        for (size_t f = 0; f < sizeof(flips); f++) {
            buf[pos] ^= flips[f];
            qv_index *back = NULL;
            qv_status err;
            int rc = qv_index_load_buffer(buf, len, &back, &err);
            if (rc == 0) {
                /* Only bytes no section covers (alignment padding) may change harmlessly. */
                accepted++;
                assert_same_results(idx, back, qs, 5, 4);
                qv_index_free(back);
            } else {
                CHECK(rc == QV_ECORRUPT, "byte %zu ^ 0x%02x: rc %d (%s)", pos, flips[f], rc,
                      err.msg);
                CHECK(back == NULL, "a refused load returned an index");
            }
            buf[pos] ^= flips[f];
        }
    }
    cr_assert(accepted < len, "most flips must be refused (%zu of %zu accepted)", accepted, len);
    qv_index_free(idx);
    free(buf);
    free(qs);
    assert_no_leaks();
}

/* ---- inconsistent files with valid checksums (hand-edited sections) -------------------------- */

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
    put32(p, (uint32_t)v);
    put32(p + 4, (uint32_t)(v >> 32));
}

/* The table entry of section `tag` (layout in index/index_internal.h). */
static uint8_t *find_entry(uint8_t *buf, const char *tag)
{
    uint32_t nsec = get32(buf + 32);
    uint8_t *table = buf + get64(buf + 40);
    uint32_t want = get32((const uint8_t *)tag);
    for (uint32_t i = 0; i < nsec; i++)
        if (get32(table + i * 32) == want)
            return table + i * 32;
    cr_assert_fail("no section %s", tag);
    return NULL;
}

/* Recomputes the checksums after an edit: the section's and the table's. */
static void reseal(uint8_t *buf, uint8_t *entry)
{
    put32(entry + 24, qv_crc32c(0, buf + get64(entry + 8), (size_t)get64(entry + 16)));
    uint32_t nsec = get32(buf + 32);
    uint8_t *table = buf + get64(buf + 40);
    put32(table + nsec * 32, qv_crc32c(0, table, nsec * 32));
}

static void expect_corrupt(const uint8_t *buf, size_t len, const char *what)
{
    qv_index *back = NULL;
    qv_status err;
    int rc = qv_index_load_buffer(buf, len, &back, &err);
    cr_assert_eq(rc, QV_ECORRUPT, "%s: rc %d (%s)", what, rc, err.msg);
    cr_assert_null(back);
}

Test(flat, load_refuses_sections_that_disagree)
{
    float *qs;
    uint8_t *buf;
    size_t len;
    qv_index *idx = small_index(&qs, &buf, &len);

    /* One id fewer than there are vectors. */
    uint8_t *copy = malloc(len);
    memcpy(copy, buf, len);
    uint8_t *e = find_entry(copy, "FIDS");
    put64(e + 16, get64(e + 16) - 8);
    reseal(copy, e);
    expect_corrupt(copy, len, "ids shorter than vectors");

    /* An id section that is not a whole number of ids. */
    memcpy(copy, buf, len);
    e = find_entry(copy, "FIDS");
    put64(e + 16, get64(e + 16) - 3);
    reseal(copy, e);
    expect_corrupt(copy, len, "ragged id section");

    /* A vector section one float short. */
    memcpy(copy, buf, len);
    e = find_entry(copy, "FVEC");
    put64(e + 16, get64(e + 16) - 4);
    reseal(copy, e);
    expect_corrupt(copy, len, "vectors shorter than ids");

    /* The same id twice. */
    memcpy(copy, buf, len);
    e = find_entry(copy, "FIDS");
    uint8_t *ids = copy + get64(e + 8);
    memcpy(ids + 8, ids, 8);
    reseal(copy, e);
    expect_corrupt(copy, len, "duplicate id");

    free(copy);
    qv_index_free(idx);
    free(buf);
    free(qs);
    assert_no_leaks();
}

Test(flat, load_refuses_non_finite_vectors)
{
    float *qs;
    uint8_t *buf;
    size_t len;
    qv_index *idx = small_index(&qs, &buf, &len);
    static const float bad[] = {NAN, INFINITY, -INFINITY};
    for (size_t i = 0; i < 3; i++) {
        uint8_t *copy = malloc(len);
        memcpy(copy, buf, len);
        uint8_t *e = find_entry(copy, "FVEC");
        memcpy(copy + get64(e + 8) + 7 * 4 * sizeof(float) + 2 * sizeof(float), &bad[i],
               sizeof(float));
        reseal(copy, e);
        expect_corrupt(copy, len, "non-finite vector");
        free(copy);
    }
    qv_index_free(idx);
    free(buf);
    free(qs);
    assert_no_leaks();
}
