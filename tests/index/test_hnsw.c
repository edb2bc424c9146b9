/*
 * tests/index/test_hnsw.c - the HNSW index through the public qv_index_* interface.
 *
 * Map: helpers (seeded PRNG, clustered Gaussian data, double-precision brute force, tie-aware
 * recall, result checks), then the tests: recall on synthetic data for every metric and storage,
 * Fashion-MNIST (recall, filters, INT8), deletes and compaction, concurrency, bad input, exact
 * mode. Ids are never the insertion position (ID_OF maps position -> id) so a slot/label mix-up
 * shows.
 *
 * Criterion runs each Test in its own process: the Fashion-MNIST checks share a build inside as
 * few Tests as possible. Allocating tests end with an explicit leak check under AddressSanitizer
 * (Criterion would otherwise report a leaking test as passing).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "bench/datasets.h"
#include "index/index.h"

#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

#define K          10
#define ID_OF(i)   ((uint64_t)(i)*3u + 1000u)
#define POS_OF(id) (((id)-1000u) / 3u)
#define IS_ID(id)  ((id) >= 1000u && ((id)-1000u) % 3u == 0)

/* Checked in loops: only a failure goes through Criterion (every passing cr_assert is reported to
 * the runner, which would dominate the run time). */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

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

static double rng_unif(uint64_t *s)
{
    return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static double rng_gauss(uint64_t *s)
{
    return sqrt(-2.0 * log(rng_unif(s))) * cos(6.283185307179586 * rng_unif(s));
}

static void *xmalloc(size_t n)
{
    void *p = malloc(n ? n : 1);
    cr_assert_not_null(p, "out of memory in the test");
    return p;
}

/* n points around `nc` Gaussian centres (N(0, 1) per coordinate) with spread `sigma`. */
static float *make_clustered(size_t n, size_t dim, size_t nc, double sigma, uint64_t seed)
{
    uint64_t s = seed;
    float *centres = xmalloc(nc * dim * sizeof(float));
    for (size_t i = 0; i < nc * dim; i++)
        centres[i] = (float)rng_gauss(&s);
    float *v = xmalloc(n * dim * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        const float *c = centres + (rng_next(&s) % nc) * dim;
        for (size_t d = 0; d < dim; d++)
            v[i * dim + d] = c[d] + (float)(sigma * rng_gauss(&s));
    }
    free(centres);
    return v;
}

static uint64_t *make_ids(size_t n)
{
    uint64_t *ids = xmalloc(n * sizeof(uint64_t));
    for (size_t i = 0; i < n; i++)
        ids[i] = ID_OF(i);
    return ids;
}

/* The public distance of the metric, in double: L2 squared, minus the dot product, 1 - cos. */
static double ref_dist(qv_metric m, const float *a, const float *b, size_t dim)
{
    double s = 0, na = 0, nb = 0;
    for (size_t d = 0; d < dim; d++) {
        if (m == QV_METRIC_L2) {
            double x = (double)a[d] - b[d];
            s += x * x;
        } else {
            s += (double)a[d] * b[d];
            na += (double)a[d] * a[d];
            nb += (double)b[d] * b[d];
        }
    }
    if (m == QV_METRIC_L2)
        return s;
    if (m == QV_METRIC_IP)
        return -s;
    if (na == 0 || nb == 0)
        return 1.0;
    return 1.0 - s / (sqrt(na) * sqrt(nb));
}

/* How far a float result may be from the double reference: float sums of `dim` terms. */
static double dist_tol(qv_metric m, const float *a, const float *b, size_t dim, double d)
{
    double scale = fabs(d);
    if (m != QV_METRIC_L2) {
        double na = 0, nb = 0;
        for (size_t i = 0; i < dim; i++) {
            na += (double)a[i] * a[i];
            nb += (double)b[i] * b[i];
        }
        scale = m == QV_METRIC_IP ? sqrt(na) * sqrt(nb) : 1.0;
    }
    return 1e-5 * (double)dim * (1.0 + scale);
}

typedef bool (*allow_fn)(size_t pos, void *ctx);

/* Exact k nearest among positions [0, n) that `allow` accepts (NULL: all), closest first, ties by
 * position. Returns how many were found; pos/dist get them. */
static size_t brute_knn(qv_metric m, const float *base, size_t n, size_t dim, const float *q,
                        size_t k, allow_fn allow, void *ctx, size_t *pos, double *dist)
{
    size_t found = 0;
    for (size_t i = 0; i < n; i++) {
        if (allow != NULL && !allow(i, ctx))
            continue;
        double d = ref_dist(m, q, base + i * dim, dim);
        if (found == k && (d > dist[k - 1] || (d == dist[k - 1] && i > pos[k - 1])))
            continue;
        size_t j = found < k ? found++ : k - 1;
        while (j > 0 && (dist[j - 1] > d || (dist[j - 1] == d && pos[j - 1] > i))) {
            dist[j] = dist[j - 1];
            pos[j] = pos[j - 1];
            j--;
        }
        dist[j] = d;
        pos[j] = i;
    }
    return found;
}

/*
 * Checks one result list against the data and returns its tie-aware hit count: a returned id
 * counts when its true distance is within the true k-th distance (so equal-distance neighbours
 * are interchangeable). Fails the test when an id is unknown, disallowed, removed or repeated,
 * when a distance differs from the true distance of its id, or when the list is not sorted.
 * `kth` is the true k-th distance among allowed points (INFINITY when fewer than k exist).
 */
static size_t check_hits(qv_metric m, const float *base, size_t n, size_t dim, const float *q,
                         const qv_hit *out, size_t nout, allow_fn allow, void *ctx, double kth)
{
    size_t hits = 0;
    for (size_t i = 0; i < nout; i++) {
        uint64_t id = out[i].id;
        CHECK(IS_ID(id) && POS_OF(id) < n, "result %zu: unknown id %llu", i,
              (unsigned long long)id);
        size_t p = (size_t)POS_OF(id);
        CHECK(allow == NULL || allow(p, ctx), "result %zu: id %llu is not allowed", i,
              (unsigned long long)id);
        for (size_t j = 0; j < i; j++)
            CHECK(out[j].id != id, "id %llu returned twice", (unsigned long long)id);
        if (i > 0)
            CHECK(out[i - 1].distance <= out[i].distance, "results not sorted at %zu: %g > %g", i,
                  out[i - 1].distance, out[i].distance);
        double d = ref_dist(m, q, base + p * dim, dim);
        double tol = dist_tol(m, q, base + p * dim, dim, d);
        CHECK(fabs((double)out[i].distance - d) <= tol,
              "result %zu (id %llu): distance %.9g, true distance %.9g (tolerance %g)", i,
              (unsigned long long)id, out[i].distance, d, tol);
        if (d <= kth + 1e-9 * fabs(kth))
            hits++;
    }
    return hits;
}

/* Recall@k of the index over nq queries, with `sp` and `filter`; `allow` mirrors the filter for
 * the ground truth. Every result list is checked by check_hits. */
static double measure_recall(qv_index *idx, qv_metric m, const float *base, size_t n, size_t dim,
                             const float *qs, size_t nq, size_t k, const qv_search_params *sp,
                             const qv_filter *filter, allow_fn allow, void *ctx)
{
    size_t *pos = xmalloc(k * sizeof(size_t));
    double *dist = xmalloc(k * sizeof(double));
    qv_hit *out = xmalloc(k * sizeof(qv_hit));
    size_t hits = 0, want = 0;
    for (size_t i = 0; i < nq; i++) {
        const float *q = qs + i * dim;
        size_t g = brute_knn(m, base, n, dim, q, k, allow, ctx, pos, dist);
        size_t nout = 0;
        qv_status err = {0};
        int rc = qv_index_search(idx, q, k, sp, filter, out, &nout, &err);
        CHECK(rc == 0, "search %zu failed: %d %s", i, rc, err.msg);
        CHECK(nout <= k, "search %zu returned %zu > k results", i, nout);
        CHECK(nout >= g || g < k, "search %zu returned %zu results, %zu exist", i, nout, g);
        hits +=
            check_hits(m, base, n, dim, q, out, nout, allow, ctx, g == k ? dist[k - 1] : INFINITY);
        want += g;
    }
    free(pos);
    free(dist);
    free(out);
    return want ? (double)hits / (double)want : 1.0;
}

static qv_index *make_hnsw(qv_metric m, qv_storage st, uint32_t dim, uint32_t M, uint32_t efc)
{
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_HNSW, m, dim);
    p.storage = st;
    p.threads = 2;
    p.hnsw.M = M;
    p.hnsw.ef_construction = efc;
    p.hnsw.seed = 7;
    qv_index *idx = NULL;
    qv_status err = {0};
    int rc = qv_index_create(&p, &idx, &err);
    cr_assert_eq(rc, 0, "create: %d %s", rc, err.msg);
    return idx;
}

static void add_all(qv_index *idx, const uint64_t *ids, const float *v, size_t n)
{
    qv_status err = {0};
    int rc = qv_index_add(idx, ids, v, n, &err);
    cr_assert_eq(rc, 0, "add: %d %s", rc, err.msg);
}

static const char *metric_name(qv_metric m)
{
    return m == QV_METRIC_L2 ? "L2" : m == QV_METRIC_IP ? "IP" : "COSINE";
}

/* ---------------------------------------------------------------------------------------------
 * Recall on synthetic data
 * ------------------------------------------------------------------------------------------- */

#define SYN_N   3000
#define SYN_Q   100
#define SYN_DIM 32

/* Base and queries drawn from the same clusters (queries are not in the base). */
static float *syn_data(uint64_t seed)
{
    return make_clustered(SYN_N + SYN_Q, SYN_DIM, 30, 0.6, seed);
}

static void check_synthetic_recall(qv_metric m, qv_storage st)
{
    float *v = syn_data(11);
    uint64_t *ids = make_ids(SYN_N);
    qv_index *idx = make_hnsw(m, st, SYN_DIM, 16, 200);
    add_all(idx, ids, v, SYN_N);
    qv_search_params sp = {.ef = 64};
    double r = measure_recall(idx, m, v, SYN_N, SYN_DIM, v + SYN_N * SYN_DIM, SYN_Q, K, &sp, NULL,
                              NULL, NULL);
    cr_log_info("synthetic %s %s: recall@10 at ef=64 = %.4f", metric_name(m),
                st == QV_STORAGE_INT8 ? "INT8" : "F32", r);
    cr_expect_geq(r, 0.95, "%s %s recall@10 at ef=64 is %.4f", metric_name(m),
                  st == QV_STORAGE_INT8 ? "INT8" : "F32", r);
    qv_index_free(idx);
    free(ids);
    free(v);
    assert_no_leaks();
}

Test(hnsw, recall_at_10_l2_f32)
{
    check_synthetic_recall(QV_METRIC_L2, QV_STORAGE_F32);
}

Test(hnsw, recall_at_10_ip_f32)
{
    check_synthetic_recall(QV_METRIC_IP, QV_STORAGE_F32);
}

Test(hnsw, recall_at_10_cosine_f32)
{
    check_synthetic_recall(QV_METRIC_COSINE, QV_STORAGE_F32);
}

Test(hnsw, recall_at_10_l2_int8)
{
    check_synthetic_recall(QV_METRIC_L2, QV_STORAGE_INT8);
}

Test(hnsw, recall_at_10_ip_int8)
{
    check_synthetic_recall(QV_METRIC_IP, QV_STORAGE_INT8);
}

Test(hnsw, recall_at_10_cosine_int8)
{
    check_synthetic_recall(QV_METRIC_COSINE, QV_STORAGE_INT8);
}

/* ---------------------------------------------------------------------------------------------
 * Fashion-MNIST (Debian's dataset-fashion-mnist): 10,000 training images as the base, 200 test
 * images as queries, L2 on the raw 0..255 pixel values.
 * ------------------------------------------------------------------------------------------- */

#define FM_N 10000
#define FM_Q 200

typedef struct fm {
    qv_fashion_mnist ds;
    size_t dim;
    const float *base, *qs;
    const uint8_t *blab, *qlab;
    double *dist; /* FM_Q x FM_N exact L2 distances (pixels are integers: computed exactly) */
    uint64_t *ids;
} fm;

static double now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void fm_load(fm *f)
{
    memset(f, 0, sizeof(*f));
    qv_status err = {0};
    int rc = qv_ds_load_fashion_mnist(NULL, &f->ds, &err);
    cr_assert_eq(rc, 0, "Fashion-MNIST (%s): %s", QV_FASHION_MNIST_DIR, err.msg);
    cr_assert_geq(f->ds.train.n, FM_N);
    cr_assert_geq(f->ds.test.n, FM_Q);
    f->dim = f->ds.train.dim;
    f->base = f->ds.train.data;
    f->qs = f->ds.test.data;
    f->blab = f->ds.train_labels;
    f->qlab = f->ds.test_labels;
    f->ids = make_ids(FM_N);
    f->dist = xmalloc((size_t)FM_Q * FM_N * sizeof(double));
    uint8_t *bq = xmalloc(FM_N * f->dim), *qq = xmalloc(FM_Q * f->dim);
    for (size_t i = 0; i < FM_N * f->dim; i++)
        bq[i] = (uint8_t)f->base[i];
    for (size_t i = 0; i < FM_Q * f->dim; i++)
        qq[i] = (uint8_t)f->qs[i];
    for (size_t q = 0; q < FM_Q; q++) {
        for (size_t i = 0; i < FM_N; i++) {
            const uint8_t *a = qq + q * f->dim, *b = bq + i * f->dim;
            int64_t s = 0;
            for (size_t d = 0; d < f->dim; d++) {
                int x = (int)a[d] - (int)b[d];
                s += x * x;
            }
            f->dist[q * FM_N + i] = (double)s;
        }
    }
    free(bq);
    free(qq);
}

static void fm_free(fm *f)
{
    qv_fashion_mnist_free(&f->ds);
    free(f->dist);
    free(f->ids);
}

static qv_index *fm_build(const fm *f, qv_storage st)
{
    double t0 = now_s();
    qv_index *idx = make_hnsw(QV_METRIC_L2, st, (uint32_t)f->dim, 16, 200);
    add_all(idx, f->ids, f->base, FM_N);
    cr_log_info("Fashion-MNIST %s build of %d x %zu: %.2f s",
                st == QV_STORAGE_INT8 ? "INT8" : "F32", FM_N, f->dim, now_s() - t0);
    return idx;
}

enum fm_filter { FM_NONE, FM_LABEL_BITMAP, FM_SPARSE_BITMAP, FM_LABEL_PRED };

typedef struct fm_pred_ctx {
    const fm *f;
    uint8_t label;
    atomic_size_t calls;
} fm_pred_ctx;

static bool fm_label_pred(uint64_t id, void *ctx)
{
    fm_pred_ctx *c = ctx;
    atomic_fetch_add_explicit(&c->calls, 1, memory_order_relaxed);
    return IS_ID(id) && POS_OF(id) < FM_N && c->f->blab[POS_OF(id)] == c->label;
}

/*
 * Recall@10 of `idx` on the 200 queries under one kind of filter, checking every result list:
 * only allowed ids, sorted, distances equal to the exact ones of the returned ids.
 *   FM_LABEL_BITMAP  a bitmap of the ids whose label equals the query's (~10% of the base)
 *   FM_SPARSE_BITMAP a bitmap of 1% of the ids, drawn per query from a seeded generator
 *   FM_LABEL_PRED    the label test as a predicate only (no bitmap, no estimate)
 */
static double fm_recall(const fm *f, qv_index *idx, uint32_t ef, enum fm_filter mode)
{
    qv_search_params sp = {.ef = ef};
    bool *allowed = xmalloc(FM_N * sizeof(bool));
    uint64_t seed = 99;
    size_t hits = 0, want = 0;
    for (size_t q = 0; q < FM_Q; q++) {
        const double *dq = f->dist + q * FM_N;
        roaring_bitmap_t *bm = NULL;
        fm_pred_ctx pc = {.f = f, .label = f->qlab[q]};
        atomic_init(&pc.calls, 0);
        qv_filter filter = {0};
        for (size_t i = 0; i < FM_N; i++) {
            if (mode == FM_NONE)
                allowed[i] = true;
            else if (mode == FM_SPARSE_BITMAP)
                allowed[i] = rng_next(&seed) % 100 == 0;
            else
                allowed[i] = f->blab[i] == f->qlab[q];
        }
        if (mode == FM_LABEL_BITMAP || mode == FM_SPARSE_BITMAP) {
            bm = roaring_bitmap_create();
            for (size_t i = 0; i < FM_N; i++)
                if (allowed[i])
                    roaring_bitmap_add(bm, (uint32_t)ID_OF(i));
            filter.allow = bm;
        } else if (mode == FM_LABEL_PRED) {
            filter.pred = fm_label_pred;
            filter.ctx = &pc;
        }
        /* Exact filtered ground truth. */
        size_t pos[K];
        double kd[K];
        size_t g = 0;
        for (size_t i = 0; i < FM_N; i++) {
            if (!allowed[i])
                continue;
            double d = dq[i];
            if (g == K && d >= kd[K - 1])
                continue;
            size_t j = g < K ? g++ : K - 1;
            while (j > 0 && kd[j - 1] > d) {
                kd[j] = kd[j - 1];
                pos[j] = pos[j - 1];
                j--;
            }
            kd[j] = d;
            pos[j] = i;
        }
        qv_hit out[K];
        size_t nout = 0;
        qv_status err = {0};
        int rc = qv_index_search(idx, f->qs + q * f->dim, K, &sp, mode == FM_NONE ? NULL : &filter,
                                 out, &nout, &err);
        CHECK(rc == 0, "query %zu: search failed: %d %s", q, rc, err.msg);
        CHECK(nout == (g < K ? g : K), "query %zu: %zu results, %zu allowed neighbours exist", q,
              nout, g);
        if (mode == FM_LABEL_PRED)
            CHECK(atomic_load(&pc.calls) > 0, "query %zu: the predicate was never called", q);
        for (size_t i = 0; i < nout; i++) {
            uint64_t id = out[i].id;
            CHECK(IS_ID(id) && POS_OF(id) < FM_N, "query %zu: unknown id %llu", q,
                  (unsigned long long)id);
            size_t p = (size_t)POS_OF(id);
            CHECK(allowed[p], "query %zu (mode %d): id %llu (label %u) is not allowed", q,
                  (int)mode, (unsigned long long)id, f->blab[p]);
            if (mode == FM_LABEL_BITMAP || mode == FM_LABEL_PRED)
                CHECK(f->blab[p] == f->qlab[q], "query %zu: label %u returned for label %u", q,
                      f->blab[p], f->qlab[q]);
            for (size_t j = 0; j < i; j++)
                CHECK(out[j].id != id, "query %zu: id %llu twice", q, (unsigned long long)id);
            if (i > 0)
                CHECK(out[i - 1].distance <= out[i].distance, "query %zu: not sorted at %zu", q, i);
            CHECK(fabs(out[i].distance - dq[p]) <= 1e-4 * dq[p] + 1e-3,
                  "query %zu: id %llu distance %.1f, exact %.1f", q, (unsigned long long)id,
                  out[i].distance, dq[p]);
            if (g == K ? dq[p] <= kd[K - 1] : true)
                hits++;
        }
        want += g < K ? g : K;
        if (bm != NULL) /* CRoaring 0.2 does not accept NULL */
            roaring_bitmap_free(bm);
    }
    free(allowed);
    return (double)hits / (double)want;
}

/*
 * One F32 build (M=16, ef_construction=200) serves the unfiltered and the filtered checks.
 * FM_EF is the smallest of ef = 16/32/64 reaching recall@10 >= 0.95 on this subset: 16
 * (measured: ef=16 0.985, ef=32 0.998, ef=64 0.9995; the log line prints them). The label and
 * 1% bitmaps allow <= 2048 ids, so the index answers them with its exact scan of the allowed set;
 * the predicate-only filter has no estimate and runs through the graph with the filter applied
 * during traversal (measured 0.99 at ef=16).
 */
#define FM_EF 16

Test(hnsw, fashion_mnist_recall_and_filtered_search, .timeout = 240)
{
    double t0 = now_s();
    fm f;
    fm_load(&f);
    cr_log_info("Fashion-MNIST load + exact distances: %.2f s", now_s() - t0);
    qv_index *idx = fm_build(&f, QV_STORAGE_F32);

    double r16 = fm_recall(&f, idx, 16, FM_NONE);
    double r32 = fm_recall(&f, idx, 32, FM_NONE);
    double r64 = fm_recall(&f, idx, 64, FM_NONE);
    cr_log_info("Fashion-MNIST F32 recall@10: ef=16 %.4f, ef=32 %.4f, ef=64 %.4f", r16, r32, r64);
    double r = FM_EF == 16 ? r16 : FM_EF == 32 ? r32 : r64;
    cr_expect_geq(r, 0.95, "recall@10 at ef=%d is %.4f", FM_EF, r);
    cr_expect_leq(r16, r64 + 1e-9, "recall fell from %.4f (ef=16) to %.4f (ef=64)", r16, r64);

    double rl = fm_recall(&f, idx, FM_EF, FM_LABEL_BITMAP);
    double rs = fm_recall(&f, idx, FM_EF, FM_SPARSE_BITMAP);
    double rp = fm_recall(&f, idx, FM_EF, FM_LABEL_PRED);
    cr_log_info("Fashion-MNIST filtered recall@10 at ef=%d: label bitmap %.4f, 1%% bitmap %.4f, "
                "label predicate %.4f",
                FM_EF, rl, rs, rp);
    cr_expect_geq(rl, 0.95, "label-bitmap filtered recall %.4f", rl);
    cr_expect_geq(rs, 0.95, "1%% bitmap filtered recall %.4f", rs);
    cr_expect_geq(rp, 0.95, "predicate filtered recall %.4f", rp);
    qv_index_free(idx);
    fm_free(&f);
    cr_log_info("total %.2f s", now_s() - t0);
    assert_no_leaks();
}

Test(hnsw, fashion_mnist_int8_recall_and_memory, .timeout = 240)
{
    fm f;
    fm_load(&f);
    qv_index *i8 = fm_build(&f, QV_STORAGE_INT8);
    double r = fm_recall(&f, i8, FM_EF, FM_NONE);
    double rl = fm_recall(&f, i8, FM_EF, FM_LABEL_PRED);
    cr_log_info("Fashion-MNIST INT8 recall@10 at ef=%d: %.4f (label predicate %.4f)", FM_EF, r, rl);
    cr_expect_geq(r, 0.95, "INT8 recall@10 at ef=%d is %.4f", FM_EF, r);

    /* Memory: bytes_ram does not depend on ef_construction (blocks, levels from the seed, the
     * id map), so the F32 reference is built cheaply with ef_construction = M. */
    qv_index *f32 = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, (uint32_t)f.dim, 16, 16);
    add_all(f32, f.ids, f.base, FM_N);
    qv_index_stats s8, s32;
    qv_index_stats_get(i8, &s8);
    qv_index_stats_get(f32, &s32);
    cr_assert_eq(s8.count, FM_N);
    cr_assert_eq(s32.count, FM_N);
    cr_assert(s8.trained, "INT8 index reports an untrained quantiser after adds");
    double b8 = (double)s8.bytes_ram / FM_N, b32 = (double)s32.bytes_ram / FM_N;
    cr_log_info("bytes_ram per vector: INT8 %.0f, F32 %.0f (ratio %.3f); INT8 bytes_vectors %llu",
                b8, b32, b8 / b32, (unsigned long long)s8.bytes_vectors);
    cr_expect_leq(b8, 0.5 * b32, "INT8 keeps %.0f bytes per vector in RAM, F32 %.0f", b8, b32);
    cr_expect_geq(s8.bytes_vectors, (uint64_t)FM_N * f.dim * sizeof(float),
                  "INT8 must keep the float32 vectors for re-ranking");
    qv_index_free(f32);
    qv_index_free(i8);
    fm_free(&f);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Deletes, upserts and compaction (synthetic data, L2, F32)
 * ------------------------------------------------------------------------------------------- */

#define DEL_N       3000
#define DEL_REMOVED 900 /* 30% */

typedef struct del_fixture {
    float *v;      /* DEL_N base vectors, then SYN_Q queries, then DEL_REMOVED spare vectors */
    uint64_t *ids; /* ID_OF(0 .. DEL_N + SYN_Q + DEL_REMOVED) */
    bool *removed; /* DEL_N flags */
    uint64_t *rm_ids;
    qv_index *idx;
} del_fixture;

#define DEL_TOTAL       (DEL_N + SYN_Q + DEL_REMOVED)
#define DEL_QUERIES(fx) ((fx)->v + (size_t)DEL_N * SYN_DIM)
#define DEL_SPARE(fx)   ((fx)->v + (size_t)(DEL_N + SYN_Q) * SYN_DIM)

static void del_setup(del_fixture *fx)
{
    fx->v = make_clustered(DEL_TOTAL, SYN_DIM, 30, 0.6, 23);
    fx->ids = make_ids(DEL_TOTAL);
    fx->removed = calloc(DEL_N, sizeof(bool));
    fx->rm_ids = xmalloc(DEL_REMOVED * sizeof(uint64_t));
    cr_assert_not_null(fx->removed);
    /* Exactly DEL_REMOVED positions, by a seeded partial shuffle. */
    size_t *perm = xmalloc(DEL_N * sizeof(size_t));
    for (size_t i = 0; i < DEL_N; i++)
        perm[i] = i;
    uint64_t s = 5;
    for (size_t i = 0; i < DEL_REMOVED; i++) {
        size_t j = i + (size_t)(rng_next(&s) % (DEL_N - i));
        size_t t = perm[i];
        perm[i] = perm[j];
        perm[j] = t;
        fx->removed[perm[i]] = true;
        fx->rm_ids[i] = ID_OF(perm[i]);
    }
    free(perm);
    fx->idx = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, SYN_DIM, 16, 200);
    add_all(fx->idx, fx->ids, fx->v, DEL_N);
}

static void del_remove(del_fixture *fx)
{
    size_t removed = 0;
    int rc = qv_index_remove(fx->idx, fx->rm_ids, DEL_REMOVED, &removed);
    cr_assert_eq(rc, 0, "remove: %d", rc);
    cr_assert_eq(removed, DEL_REMOVED, "remove reported %zu of %d", removed, DEL_REMOVED);
}

static void del_teardown(del_fixture *fx)
{
    qv_index_free(fx->idx);
    free(fx->v);
    free(fx->ids);
    free(fx->removed);
    free(fx->rm_ids);
}

static bool allow_not_removed(size_t pos, void *ctx)
{
    const bool *removed = ctx;
    return pos >= DEL_N || !removed[pos];
}

static bool allow_flag(size_t pos, void *ctx)
{
    return ((const bool *)ctx)[pos];
}

/* Kept base vectors and (once added) the spare vectors may be returned, nothing else. */
static bool is_live_pos(const del_fixture *fx, size_t pos)
{
    return pos < DEL_N ? !fx->removed[pos] : pos >= DEL_N + SYN_Q && pos < DEL_TOTAL;
}

/* Searches every removed vector's own position and the queries; no removed id may come back. */
static void expect_no_removed(del_fixture *fx, size_t k, uint32_t ef, bool exact)
{
    qv_hit *out = xmalloc(k * sizeof(qv_hit));
    qv_search_params sp = {.ef = ef, .exact = exact};
    for (size_t i = 0; i < DEL_REMOVED + SYN_Q; i++) {
        const float *q = i < DEL_REMOVED ? fx->v + POS_OF(fx->rm_ids[i]) * SYN_DIM
                                         : DEL_QUERIES(fx) + (i - DEL_REMOVED) * SYN_DIM;
        size_t nout = 0;
        qv_status err = {0};
        int rc = qv_index_search(fx->idx, q, k, &sp, NULL, out, &nout, &err);
        CHECK(rc == 0, "search: %d %s", rc, err.msg);
        CHECK(nout == k, "search %zu: %zu of %zu results", i, nout, k);
        for (size_t j = 0; j < nout; j++)
            CHECK(IS_ID(out[j].id) && is_live_pos(fx, (size_t)POS_OF(out[j].id)),
                  "search %zu (k=%zu ef=%u exact=%d): removed or unknown id %llu returned", i, k,
                  ef, (int)exact, (unsigned long long)out[j].id);
    }
    free(out);
}

Test(hnsw, removed_ids_are_never_returned)
{
    del_fixture fx;
    del_setup(&fx);
    del_remove(&fx);
    expect_no_removed(&fx, K, 64, false);
    expect_no_removed(&fx, 100, 400, false);
    expect_no_removed(&fx, K, 0, true);

    /* Asking for more than exist, through the graph and exactly: no removed id, and the exact
     * scan returns every live one. */
    size_t big = DEL_N;
    qv_hit *out = xmalloc(big * sizeof(qv_hit));
    size_t nout = 0;
    qv_status err = {0};
    for (int exact = 0; exact < 2; exact++) {
        qv_search_params sp = {.ef = DEL_N, .exact = exact};
        cr_assert_eq(qv_index_search(fx.idx, DEL_QUERIES(&fx), big, &sp, NULL, out, &nout, &err),
                     0);
        cr_expect_leq(nout, DEL_N - DEL_REMOVED, "k=%zu over %d live vectors returned %zu", big,
                      DEL_N - DEL_REMOVED, nout);
        if (exact)
            cr_expect_eq(nout, DEL_N - DEL_REMOVED, "exact k=%zu returned %zu", big, nout);
        for (size_t j = 0; j < nout; j++)
            CHECK(!fx.removed[POS_OF(out[j].id)], "removed id %llu returned",
                  (unsigned long long)out[j].id);
    }

    /* A bitmap allowing only removed ids finds nothing. */
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (size_t i = 0; i < DEL_REMOVED; i++)
        roaring_bitmap_add(bm, (uint32_t)fx.rm_ids[i]);
    qv_filter f = {.allow = bm};
    cr_assert_eq(qv_index_search(fx.idx, DEL_QUERIES(&fx), K, NULL, &f, out, &nout, &err), 0);
    cr_expect_eq(nout, 0, "a filter of removed ids returned %zu results", nout);
    roaring_bitmap_free(bm);
    free(out);
    del_teardown(&fx);
    assert_no_leaks();
}

Test(hnsw, remove_updates_contains_and_stats)
{
    del_fixture fx;
    del_setup(&fx);
    del_remove(&fx);
    for (size_t i = 0; i < DEL_N; i++)
        CHECK(qv_index_contains(fx.idx, ID_OF(i)) == !fx.removed[i],
              "contains(%llu) = %d after removing %d", (unsigned long long)ID_OF(i),
              (int)qv_index_contains(fx.idx, ID_OF(i)), (int)fx.removed[i]);
    qv_index_stats st;
    qv_index_stats_get(fx.idx, &st);
    cr_expect_eq(st.count, DEL_N - DEL_REMOVED, "count %llu", (unsigned long long)st.count);
    cr_expect_eq(st.deleted, DEL_REMOVED, "deleted %llu", (unsigned long long)st.deleted);

    /* Removing again, or removing unknown ids, removes nothing and changes nothing. */
    size_t removed = 99;
    cr_assert_eq(qv_index_remove(fx.idx, fx.rm_ids, DEL_REMOVED, &removed), 0);
    cr_expect_eq(removed, 0, "second remove reported %zu", removed);
    uint64_t unknown[3] = {1, 999999, UINT64_MAX};
    cr_assert_eq(qv_index_remove(fx.idx, unknown, 3, &removed), 0);
    cr_expect_eq(removed, 0, "removing unknown ids reported %zu", removed);
    qv_index_stats_get(fx.idx, &st);
    cr_expect_eq(st.count, DEL_N - DEL_REMOVED);
    cr_expect_eq(st.deleted, DEL_REMOVED);
    del_teardown(&fx);
    assert_no_leaks();
}

/* The vector of position `pos` moved by +40 in every coordinate: far from all the data. */
static void far_copy(const float *v, size_t pos, float *out)
{
    for (size_t d = 0; d < SYN_DIM; d++)
        out[d] = v[pos * SYN_DIM + d] + 40.0f;
}

Test(hnsw, upsert_replaces_the_vector_of_an_existing_id)
{
    del_fixture fx;
    del_setup(&fx);
    const size_t pos = 17;
    uint64_t id = ID_OF(pos);
    float nv[SYN_DIM];
    far_copy(fx.v, pos, nv);
    add_all(fx.idx, &id, nv, 1);
    cr_expect(qv_index_contains(fx.idx, id));
    qv_index_stats st;
    qv_index_stats_get(fx.idx, &st);
    cr_expect_eq(st.count, DEL_N, "count %llu after an upsert", (unsigned long long)st.count);
    cr_expect_eq(st.deleted, 1, "deleted %llu after an upsert", (unsigned long long)st.deleted);

    qv_hit out[K];
    size_t nout = 0;
    qv_search_params sp = {.ef = 200};
    for (int exact = 0; exact < 2; exact++) {
        sp.exact = exact;
        /* The old position no longer finds the id ... */
        cr_assert_eq(qv_index_search(fx.idx, fx.v + pos * SYN_DIM, K, &sp, NULL, out, &nout, NULL),
                     0);
        cr_assert_eq(nout, K);
        for (size_t j = 0; j < nout; j++)
            cr_expect_neq(out[j].id, id, "exact=%d: id found at its old position (distance %g)",
                          exact, out[j].distance);
        /* ... the new one does, at distance 0. */
        cr_assert_eq(qv_index_search(fx.idx, nv, 1, &sp, NULL, out, &nout, NULL), 0);
        cr_assert_eq(nout, 1);
        cr_expect_eq(out[0].id, id, "exact=%d: top hit at the new vector is %llu", exact,
                     (unsigned long long)out[0].id);
        cr_expect_float_eq(out[0].distance, 0.0f, 1e-3f);
    }

    /* The same id twice in one batch: the last vector wins. */
    uint64_t dup[2] = {ID_OF(DEL_N + SYN_Q), ID_OF(DEL_N + SYN_Q)};
    const float *two = DEL_SPARE(&fx);
    add_all(fx.idx, dup, two, 2);
    qv_index_stats_get(fx.idx, &st);
    cr_expect_eq(st.count, DEL_N + 1, "count %llu after a batch with a duplicate id",
                 (unsigned long long)st.count);
    cr_assert_eq(qv_index_search(fx.idx, two + SYN_DIM, 1, &sp, NULL, out, &nout, NULL), 0);
    cr_expect_eq(out[0].id, dup[0]);
    cr_expect_float_eq(out[0].distance, 0.0f, 1e-3f);
    sp.exact = true;
    cr_assert_eq(qv_index_search(fx.idx, two, K, &sp, NULL, out, &nout, NULL), 0);
    for (size_t j = 0; j < nout; j++)
        cr_expect(out[j].id != dup[0] || out[j].distance > 1e-3f,
                  "the first vector of a duplicated id was kept");
    del_teardown(&fx);
    assert_no_leaks();
}

Test(hnsw, compact_drops_tombstones_and_keeps_recall)
{
    del_fixture fx;
    del_setup(&fx);
    del_remove(&fx);
    qv_status err = {0};
    int rc = qv_index_compact(fx.idx, &err);
    cr_assert_eq(rc, 0, "compact: %d %s", rc, err.msg);
    qv_index_stats st;
    qv_index_stats_get(fx.idx, &st);
    cr_expect_eq(st.deleted, 0, "deleted %llu after compaction", (unsigned long long)st.deleted);
    cr_expect_eq(st.count, DEL_N - DEL_REMOVED, "count %llu", (unsigned long long)st.count);
    for (size_t i = 0; i < DEL_N; i++)
        CHECK(qv_index_contains(fx.idx, ID_OF(i)) == !fx.removed[i], "contains(%llu) wrong",
              (unsigned long long)ID_OF(i));

    qv_search_params sp = {.ef = 64};
    double r = measure_recall(fx.idx, QV_METRIC_L2, fx.v, DEL_N, SYN_DIM, DEL_QUERIES(&fx), SYN_Q,
                              K, &sp, NULL, allow_not_removed, fx.removed);
    cr_log_info("recall@10 on the remaining 70%% after compaction: %.4f", r);
    cr_expect_geq(r, 0.95, "recall after compaction %.4f", r);
    expect_no_removed(&fx, K, 64, false);
    expect_no_removed(&fx, 100, 400, false);
    del_teardown(&fx);
    assert_no_leaks();
}

Test(hnsw, add_after_compact_reuses_slots)
{
    del_fixture fx;
    del_setup(&fx);
    qv_index_stats before, st;
    qv_index_stats_get(fx.idx, &before);
    del_remove(&fx);
    cr_assert_eq(qv_index_compact(fx.idx, NULL), 0);

    /* New ids for the spare vectors, as many as were removed. */
    add_all(fx.idx, fx.ids + DEL_N + SYN_Q, DEL_SPARE(&fx), DEL_REMOVED);
    qv_index_stats_get(fx.idx, &st);
    cr_expect_eq(st.count, DEL_N, "count %llu after re-adding", (unsigned long long)st.count);
    cr_expect_eq(st.deleted, 0);
    /* Recycled slots: the index did not grow by DEL_REMOVED blocks (upper-layer lists and the id
     * map may differ a little). */
    cr_log_info("bytes_ram: %llu before removing, %llu after re-adding into freed slots",
                (unsigned long long)before.bytes_ram, (unsigned long long)st.bytes_ram);
    cr_expect_leq(st.bytes_ram, before.bytes_ram + before.bytes_ram / 20,
                  "bytes_ram grew from %llu to %llu: freed slots were not reused",
                  (unsigned long long)before.bytes_ram, (unsigned long long)st.bytes_ram);

    /* Every new vector is found at its own position. */
    qv_search_params sp = {.ef = 64};
    for (size_t i = 0; i < DEL_REMOVED; i++) {
        qv_hit out[1];
        size_t nout = 0;
        const float *q = DEL_SPARE(&fx) + i * SYN_DIM;
        cr_assert_eq(qv_index_search(fx.idx, q, 1, &sp, NULL, out, &nout, NULL), 0);
        CHECK(nout == 1 && out[0].id == fx.ids[DEL_N + SYN_Q + i] && out[0].distance < 1e-3f,
              "new vector %zu: top hit %llu at %g", i, nout ? (unsigned long long)out[0].id : 0,
              nout ? out[0].distance : -1.0f);
    }
    for (size_t i = 0; i < DEL_REMOVED; i++)
        CHECK(!qv_index_contains(fx.idx, fx.rm_ids[i]), "removed id came back");
    expect_no_removed(&fx, 100, 400, false);

    /* Recall over the new live set: the kept 70% and the re-added vectors. */
    bool *live = xmalloc(DEL_TOTAL * sizeof(bool));
    for (size_t i = 0; i < DEL_TOTAL; i++)
        live[i] = i < DEL_N ? !fx.removed[i] : i >= DEL_N + SYN_Q;
    double r = measure_recall(fx.idx, QV_METRIC_L2, fx.v, DEL_TOTAL, SYN_DIM, DEL_QUERIES(&fx),
                              SYN_Q, K, &sp, NULL, allow_flag, live);
    cr_log_info("recall@10 after re-adding into freed slots: %.4f", r);
    cr_expect_geq(r, 0.95, "recall after re-adding into freed slots %.4f", r);
    free(live);
    del_teardown(&fx);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Concurrency: one thread adds batches while another searches
 * ------------------------------------------------------------------------------------------- */

/* Batches below the index's parallel-insert threshold (256) are linked serially, so the graph
 * depends only on the insert order: a concurrent and a sequential build must end identical. */
#define CONC_BATCH 250

typedef struct conc_ctx {
    qv_index *idx;
    const float *v;
    const uint64_t *ids;
    atomic_size_t limit; /* positions below this may be visible to searches */
    atomic_bool done;
    int rc;
    qv_status err;
} conc_ctx;

static void *conc_adder(void *arg)
{
    conc_ctx *c = arg;
    for (size_t lo = 0; lo < SYN_N && c->rc == 0; lo += CONC_BATCH) {
        size_t n = SYN_N - lo < CONC_BATCH ? SYN_N - lo : CONC_BATCH;
        atomic_store(&c->limit, lo + n);
        c->rc = qv_index_add(c->idx, c->ids + lo, c->v + lo * SYN_DIM, n, &c->err);
    }
    atomic_store(&c->done, true);
    return NULL;
}

static bool pred_even_pos(uint64_t id, void *ctx)
{
    (void)ctx;
    return IS_ID(id) && POS_OF(id) % 2 == 0;
}

Test(hnsw, concurrent_add_and_search)
{
    float *v = syn_data(31);
    uint64_t *ids = make_ids(SYN_N);
    const float *qs = v + SYN_N * SYN_DIM;
    conc_ctx c = {
        .idx = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, SYN_DIM, 16, 200), .v = v, .ids = ids};
    atomic_init(&c.limit, 0);
    atomic_init(&c.done, false);
    pthread_t t;
    cr_assert_eq(pthread_create(&t, NULL, conc_adder, &c), 0);
    size_t searches = 0;
    while (!atomic_load(&c.done)) {
        const float *q = qs + (searches % SYN_Q) * SYN_DIM;
        qv_hit out[K];
        size_t nout = 0;
        qv_status err = {0};
        qv_search_params sp = {.ef = 64, .exact = searches % 7 == 3};
        qv_filter f = {.pred = pred_even_pos};
        int rc = qv_index_search(c.idx, q, K, &sp, searches % 3 == 1 ? &f : NULL, out, &nout, &err);
        size_t limit = atomic_load(&c.limit);
        CHECK(rc == 0, "search during adds: %d %s", rc, err.msg);
        for (size_t j = 0; j < nout; j++) {
            CHECK(IS_ID(out[j].id) && POS_OF(out[j].id) < limit,
                  "id %llu returned before it was added (limit %zu)", (unsigned long long)out[j].id,
                  limit);
            CHECK(j == 0 || out[j - 1].distance <= out[j].distance, "results not sorted");
            CHECK(searches % 3 != 1 || POS_OF(out[j].id) % 2 == 0, "filter ignored");
        }
        if (searches % 5 == 0) {
            qv_index_stats st;
            qv_index_stats_get(c.idx, &st);
            CHECK(st.count <= SYN_N, "count %llu", (unsigned long long)st.count);
            (void)qv_index_contains(c.idx, ids[searches % SYN_N]);
        }
        searches++;
    }
    pthread_join(t, NULL);
    cr_assert_eq(c.rc, 0, "add failed: %d %s", c.rc, c.err.msg);
    cr_log_info("%zu searches ran during the adds", searches);
    cr_expect_gt(searches, 0);

    qv_index *seq = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, SYN_DIM, 16, 200);
    for (size_t lo = 0; lo < SYN_N; lo += CONC_BATCH)
        add_all(seq, ids + lo, v + lo * SYN_DIM, SYN_N - lo < CONC_BATCH ? SYN_N - lo : CONC_BATCH);
    qv_search_params sp = {.ef = 64};
    double rc_ =
        measure_recall(c.idx, QV_METRIC_L2, v, SYN_N, SYN_DIM, qs, SYN_Q, K, &sp, NULL, NULL, NULL);
    double rs =
        measure_recall(seq, QV_METRIC_L2, v, SYN_N, SYN_DIM, qs, SYN_Q, K, &sp, NULL, NULL, NULL);
    cr_log_info("recall@10 at ef=64: concurrent build %.4f, sequential build %.4f", rc_, rs);
    cr_expect(fabs(rc_ - rs) <= 0.01, "concurrent build recall %.4f, sequential %.4f", rc_, rs);
    cr_expect_geq(rc_, 0.95);
    qv_index_free(seq);
    qv_index_free(c.idx);
    free(ids);
    free(v);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Bad input
 * ------------------------------------------------------------------------------------------- */

Test(hnsw, add_rejects_non_finite_vectors)
{
    const size_t n = 20, dim = 8;
    float *v = make_clustered(n, dim, 2, 1.0, 3);
    uint64_t *ids = make_ids(n);
    qv_index *idx = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, (uint32_t)dim, 16, 200);
    const float bad[3] = {NAN, INFINITY, -INFINITY};
    for (int b = 0; b < 3; b++) {
        float keep = v[7 * dim + 3];
        v[7 * dim + 3] = bad[b];
        qv_status err = {0};
        int rc = qv_index_add(idx, ids, v, n, &err);
        v[7 * dim + 3] = keep;
        cr_expect_eq(rc, QV_EINVAL, "add with %g returned %d", (double)bad[b], rc);
        cr_expect(strstr(err.msg, "NaN or infinite") != NULL, "message: '%s'", err.msg);
        qv_index_stats st;
        qv_index_stats_get(idx, &st);
        cr_expect_eq(st.count, 0, "count %llu after a rejected batch",
                     (unsigned long long)st.count);
        for (size_t i = 0; i < n; i++)
            cr_expect(!qv_index_contains(idx, ids[i]), "id %llu present after a rejected batch",
                      (unsigned long long)ids[i]);
    }
    /* The same batch, finite, goes in; the INT8 quantiser must not have been trained on NaN. */
    qv_index *i8 = make_hnsw(QV_METRIC_L2, QV_STORAGE_INT8, (uint32_t)dim, 16, 200);
    v[0] = NAN;
    cr_expect_eq(qv_index_add(i8, ids, v, n, NULL), QV_EINVAL);
    cr_expect_eq(qv_index_train(i8, v, n, NULL), QV_EINVAL, "train accepted a NaN");
    v[0] = 0.5f;
    add_all(idx, ids, v, n);
    add_all(i8, ids, v, n);
    qv_hit out[1];
    size_t nout = 0;
    cr_assert_eq(qv_index_search(i8, v + 5 * dim, 1, NULL, NULL, out, &nout, NULL), 0);
    cr_expect(nout == 1 && out[0].id == ids[5] && out[0].distance < 1e-4f,
              "INT8 index after a rejected NaN batch: top hit %llu at %g",
              (unsigned long long)out[0].id, out[0].distance);
    qv_index_free(i8);
    qv_index_free(idx);
    free(ids);
    free(v);
    assert_no_leaks();
}

Test(hnsw, search_rejects_bad_k_and_non_finite_queries)
{
    const size_t n = 500, dim = 8;
    float *v = make_clustered(n, dim, 4, 1.0, 4);
    uint64_t *ids = make_ids(n);
    qv_index *idx = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, (uint32_t)dim, 16, 200);
    add_all(idx, ids, v, n);
    qv_hit *out = xmalloc((QV_INDEX_MAX_K + 1) * sizeof(qv_hit));
    size_t nout = 99;
    qv_status err = {0};
    cr_expect_eq(qv_index_search(idx, v, 0, NULL, NULL, out, &nout, &err), QV_EINVAL);
    cr_expect(strstr(err.msg, "k = 0") != NULL, "message: '%s'", err.msg);
    cr_expect_eq(nout, 0);
    cr_expect_eq(qv_index_search(idx, v, QV_INDEX_MAX_K + 1, NULL, NULL, out, &nout, &err),
                 QV_EINVAL);
    cr_expect(strstr(err.msg, "outside") != NULL, "message: '%s'", err.msg);
    size_t counts[2];
    cr_expect_eq(qv_index_search_batch(idx, v, 2, 0, NULL, NULL, 1, out, counts, &err), QV_EINVAL);
    /* k = QV_INDEX_MAX_K is allowed and (exactly) returns every vector. */
    qv_search_params exact = {.exact = true};
    cr_expect_eq(qv_index_search(idx, v, QV_INDEX_MAX_K, &exact, NULL, out, &nout, &err), 0,
                 "k = max: %s", err.msg);
    cr_expect_eq(nout, n, "k = QV_INDEX_MAX_K over %zu vectors returned %zu", n, nout);

    float q[8];
    memcpy(q, v, sizeof(q));
    q[2] = NAN;
    cr_expect_eq(qv_index_search(idx, q, K, NULL, NULL, out, &nout, &err), QV_EINVAL);
    cr_expect(strstr(err.msg, "NaN") != NULL, "message: '%s'", err.msg);
    q[2] = -INFINITY;
    cr_expect_eq(qv_index_search(idx, q, K, NULL, NULL, out, &nout, &err), QV_EINVAL);
    free(out);
    qv_index_free(idx);
    free(ids);
    free(v);
    assert_no_leaks();
}

static void expect_create_fails(const qv_index_params *p, const char *needle)
{
    qv_index *idx = (qv_index *)(uintptr_t)1;
    qv_status err = {0};
    int rc = qv_index_create(p, &idx, &err);
    cr_expect_eq(rc, QV_EINVAL, "create returned %d for a case that should say '%s'", rc, needle);
    cr_expect_null(idx, "create left *out set on failure");
    cr_expect(strstr(err.msg, needle) != NULL, "message '%s' does not mention '%s'", err.msg,
              needle);
    if (rc == 0)
        qv_index_free(idx);
}

Test(hnsw, create_rejects_invalid_params)
{
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_HNSW, QV_METRIC_L2, 16);
    p.hnsw.M = 2;
    expect_create_fails(&p, "HNSW M 2");
    p.hnsw.M = 129;
    expect_create_fails(&p, "HNSW M 129");
    p.hnsw.M = 16;
    p.hnsw.ef_construction = 8;
    expect_create_fails(&p, "ef_construction");
    qv_index_params_default(&p, QV_INDEX_HNSW, QV_METRIC_L2, 0);
    expect_create_fails(&p, "dimension 0");
    qv_index_params_default(&p, QV_INDEX_HNSW, QV_METRIC_L2, QV_INDEX_MAX_DIM + 1);
    expect_create_fails(&p, "dimension");
    qv_index_params_default(&p, QV_INDEX_FLAT, QV_METRIC_L2, 16);
    p.storage = QV_STORAGE_INT8;
    expect_create_fails(&p, "int8");
    qv_index_params_default(&p, QV_INDEX_HNSW, (qv_metric)9, 16);
    expect_create_fails(&p, "metric");
    assert_no_leaks();
}

Test(hnsw, search_on_an_empty_index_returns_nothing)
{
    qv_index *idx = make_hnsw(QV_METRIC_COSINE, QV_STORAGE_INT8, 4, 16, 200);
    float q[4] = {1, 2, 3, 4};
    qv_hit out[K];
    size_t nout = 99;
    for (int exact = 0; exact < 2; exact++) {
        qv_search_params sp = {.exact = exact};
        cr_expect_eq(qv_index_search(idx, q, K, &sp, NULL, out, &nout, NULL), 0);
        cr_expect_eq(nout, 0, "exact=%d: %zu results from an empty index", exact, nout);
    }
    /* Every vector removed and compacted away: empty again, and usable. */
    uint64_t ids[3] = {5, 6, 7};
    float v[12] = {1, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0};
    add_all(idx, ids, v, 3);
    cr_assert_eq(qv_index_remove(idx, ids, 3, NULL), 0);
    cr_assert_eq(qv_index_compact(idx, NULL), 0);
    cr_expect_eq(qv_index_search(idx, q, K, NULL, NULL, out, &nout, NULL), 0);
    cr_expect_eq(nout, 0, "%zu results after removing everything", nout);
    add_all(idx, ids + 1, v + 4, 1);
    cr_expect_eq(qv_index_search(idx, q, K, NULL, NULL, out, &nout, NULL), 0);
    cr_expect(nout == 1 && out[0].id == 6, "after re-adding one vector: %zu results", nout);
    qv_index_free(idx);
    assert_no_leaks();
}

/* ---------------------------------------------------------------------------------------------
 * Exact mode: integer-valued data keeps every float distance exact, so the index's exact scan
 * must equal the brute force id for id (ties broken by id, as the index documents).
 * ------------------------------------------------------------------------------------------- */

#define EX_N   2000
#define EX_DIM 16
#define EX_Q   50

static float *make_integer_data(size_t n, uint64_t seed)
{
    uint64_t s = seed;
    float *v = xmalloc(n * EX_DIM * sizeof(float));
    for (size_t i = 0; i < n * EX_DIM; i++)
        v[i] = (float)((int)(rng_next(&s) % 9) - 4);
    return v;
}

typedef struct ex_filter {
    const bool *removed;
    bool bitmap, pred; /* which parts of the filter are active */
} ex_filter;

static bool ex_in_bitmap(size_t pos)
{
    return pos % 7 != 0;
}

static bool ex_pred_pos(size_t pos)
{
    return pos % 5 != 1;
}

static bool ex_allow(size_t pos, void *ctx)
{
    const ex_filter *f = ctx;
    if (f->removed[pos])
        return false;
    if (f->bitmap && !ex_in_bitmap(pos))
        return false;
    return !f->pred || ex_pred_pos(pos);
}

static bool ex_pred(uint64_t id, void *ctx)
{
    (void)ctx;
    return IS_ID(id) && ex_pred_pos((size_t)POS_OF(id));
}

static void check_exact(qv_metric m, qv_storage st, bool bitmap, bool pred)
{
    float *v = make_integer_data(EX_N + EX_Q, 8);
    uint64_t *ids = make_ids(EX_N);
    qv_index *idx = make_hnsw(m, st, EX_DIM, 16, 100);
    add_all(idx, ids, v, EX_N);
    /* Tombstones too: every 10th id. */
    bool *removed = calloc(EX_N, sizeof(bool));
    cr_assert_not_null(removed);
    for (size_t i = 0; i < EX_N; i += 10) {
        removed[i] = true;
        cr_assert_eq(qv_index_remove(idx, &ids[i], 1, NULL), 0);
    }
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (size_t i = 0; i < EX_N; i++)
        if (ex_in_bitmap(i))
            roaring_bitmap_add(bm, (uint32_t)ids[i]);
    qv_filter f = {.allow = bitmap ? bm : NULL, .pred = pred ? ex_pred : NULL};
    ex_filter ef = {.removed = removed, .bitmap = bitmap, .pred = pred};
    qv_search_params sp = {.exact = true};
    const size_t k = 25;
    for (size_t qi = 0; qi < EX_Q; qi++) {
        const float *q = v + (EX_N + qi) * EX_DIM;
        size_t pos[25];
        double dist[25];
        size_t g = brute_knn(m, v, EX_N, EX_DIM, q, k, ex_allow, &ef, pos, dist);
        qv_hit out[25];
        size_t nout = 0;
        qv_status err = {0};
        int rc = qv_index_search(idx, q, k, &sp, bitmap || pred ? &f : NULL, out, &nout, &err);
        CHECK(rc == 0, "exact search: %d %s", rc, err.msg);
        CHECK(nout == g, "query %zu: %zu results, brute force %zu", qi, nout, g);
        for (size_t j = 0; j < nout; j++) {
            CHECK(out[j].id == ID_OF(pos[j]),
                  "%s %s bitmap=%d pred=%d query %zu rank %zu: id %llu (distance %g), brute "
                  "force %llu (distance %g)",
                  metric_name(m), st == QV_STORAGE_INT8 ? "INT8" : "F32", (int)bitmap, (int)pred,
                  qi, j, (unsigned long long)out[j].id, out[j].distance,
                  (unsigned long long)ID_OF(pos[j]), dist[j]);
            CHECK((double)out[j].distance == dist[j], "rank %zu: distance %.9g, brute force %.9g",
                  j, out[j].distance, dist[j]);
        }
    }
    roaring_bitmap_free(bm);
    free(removed);
    qv_index_free(idx);
    free(ids);
    free(v);
}

Test(hnsw, exact_search_equals_brute_force)
{
    check_exact(QV_METRIC_L2, QV_STORAGE_F32, false, false);
    check_exact(QV_METRIC_IP, QV_STORAGE_F32, false, false);
    check_exact(QV_METRIC_L2, QV_STORAGE_INT8, false, false);
    check_exact(QV_METRIC_IP, QV_STORAGE_INT8, false, false);
    assert_no_leaks();
}

Test(hnsw, exact_search_with_filter_equals_brute_force)
{
    check_exact(QV_METRIC_L2, QV_STORAGE_F32, true, false);
    check_exact(QV_METRIC_L2, QV_STORAGE_F32, false, true);
    check_exact(QV_METRIC_L2, QV_STORAGE_F32, true, true);
    check_exact(QV_METRIC_IP, QV_STORAGE_INT8, true, true);
    assert_no_leaks();
}

/* A bitmap large enough for graph search (not the exact fallback) and a predicate: a result must
 * pass both, and recall against the exact filtered neighbours stays high. */
Test(hnsw, filter_requires_bitmap_and_predicate)
{
    float *v = syn_data(41);
    uint64_t *ids = make_ids(SYN_N);
    qv_index *idx = make_hnsw(QV_METRIC_L2, QV_STORAGE_F32, SYN_DIM, 16, 200);
    add_all(idx, ids, v, SYN_N);
    bool *removed = calloc(SYN_N, sizeof(bool));
    cr_assert_not_null(removed);
    roaring_bitmap_t *bm = roaring_bitmap_create();
    for (size_t i = 0; i < SYN_N; i++)
        if (ex_in_bitmap(i))
            roaring_bitmap_add(bm, (uint32_t)ids[i]);
    cr_assert_gt(roaring_bitmap_get_cardinality(bm), 2048, "bitmap small enough for exact scan");
    qv_filter f = {.allow = bm, .pred = ex_pred};
    ex_filter ef = {.removed = removed, .bitmap = true, .pred = true};
    qv_search_params sp = {.ef = 64};
    double r = measure_recall(idx, QV_METRIC_L2, v, SYN_N, SYN_DIM, v + SYN_N * SYN_DIM, SYN_Q, K,
                              &sp, &f, ex_allow, &ef);
    cr_log_info("bitmap + predicate filtered recall@10 at ef=64: %.4f", r);
    cr_expect_geq(r, 0.95, "bitmap + predicate filtered recall %.4f", r);
    roaring_bitmap_free(bm);
    free(removed);
    qv_index_free(idx);
    free(ids);
    free(v);
    assert_no_leaks();
}

/* The generic batch path answers each query as qv_index_search does. */
Test(hnsw, search_batch_matches_single_searches)
{
    float *v = syn_data(51);
    uint64_t *ids = make_ids(SYN_N);
    qv_index *idx = make_hnsw(QV_METRIC_COSINE, QV_STORAGE_F32, SYN_DIM, 16, 200);
    add_all(idx, ids, v, SYN_N);
    const float *qs = v + SYN_N * SYN_DIM;
    qv_hit *bout = xmalloc(SYN_Q * K * sizeof(qv_hit));
    size_t counts[SYN_Q];
    qv_search_params sp = {.ef = 48};
    qv_status err = {0};
    cr_assert_eq(qv_index_search_batch(idx, qs, SYN_Q, K, &sp, NULL, 2, bout, counts, &err), 0,
                 "%s", err.msg);
    for (size_t i = 0; i < SYN_Q; i++) {
        qv_hit out[K];
        size_t nout = 0;
        cr_assert_eq(qv_index_search(idx, qs + i * SYN_DIM, K, &sp, NULL, out, &nout, NULL), 0);
        CHECK(counts[i] == nout, "query %zu: batch %zu results, single %zu", i, counts[i], nout);
        for (size_t j = 0; j < nout; j++)
            CHECK(bout[i * K + j].id == out[j].id && bout[i * K + j].distance == out[j].distance,
                  "query %zu rank %zu differs between batch and single search", i, j);
    }
    free(bout);
    qv_index_free(idx);
    free(ids);
    free(v);
    assert_no_leaks();
}

/* With ef >= n, the layer-0 beam visits every node reachable from the entry point: a search
 * asking for all n vectors must return all n. A node no list points at can never be found by
 * graph search, not even with its own vector as the query. */
static size_t reachable_count(size_t n, unsigned threads, uint64_t seed)
{
    float *v = make_clustered(n + 1, SYN_DIM, 30, 0.6, seed);
    uint64_t *ids = make_ids(n);
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_HNSW, QV_METRIC_L2, SYN_DIM);
    p.threads = threads;
    p.hnsw.seed = seed;
    qv_index *idx = NULL;
    cr_assert_eq(qv_index_create(&p, &idx, NULL), 0);
    add_all(idx, ids, v, n);
    qv_hit *out = xmalloc(n * sizeof(qv_hit));
    qv_search_params sp = {.ef = (uint32_t)n};
    size_t nout = 0;
    cr_assert_eq(qv_index_search(idx, v + n * SYN_DIM, n, &sp, NULL, out, &nout, NULL), 0);
    free(out);
    qv_index_free(idx);
    free(ids);
    free(v);
    return nout;
}

/* Several builds, because which nodes a parallel build strands depends on thread timing (a
 * serial build is deterministic). */
Test(hnsw, every_vector_is_reachable_after_a_build)
{
    for (uint64_t seed = 61; seed < 65; seed++) {
        size_t serial = reachable_count(SYN_N, 1, seed);
        size_t parallel = reachable_count(SYN_N, 2, seed);
        cr_log_info("seed %llu: reachable from the entry point: %zu of %d (1 thread), %zu of %d "
                    "(2 threads)",
                    (unsigned long long)seed, serial, SYN_N, parallel, SYN_N);
        cr_expect_eq(serial, SYN_N, "seed %llu, 1-thread build: %zu of %d vectors reachable",
                     (unsigned long long)seed, serial, SYN_N);
        cr_expect_eq(parallel, SYN_N, "seed %llu, 2-thread build: %zu of %d vectors reachable",
                     (unsigned long long)seed, parallel, SYN_N);
    }
    assert_no_leaks();
}
