/*
 * tests/index/test_kmeans.c - k-means (index/kmeans.h): cluster recovery, determinism,
 * k-means++ against random seeding, assignment against brute force, degenerate inputs.
 */
#define _GNU_SOURCE /* POSIX types (pthread_rwlock_t) in index_internal.h */
#include <criterion/criterion.h>
#include <math.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "index/kmeans.h"

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

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

/* `nc` clusters of `per` points each around centres spread by `spread`, noise sigma 1;
 * truth[i] is the cluster of point i. Points are interleaved (cluster i % nc). */
static float *clustered(size_t nc, size_t per, size_t dim, float spread, uint64_t seed,
                        uint32_t *truth)
{
    rng_state = seed;
    float *centres = malloc(nc * dim * sizeof(float));
    for (size_t i = 0; i < nc * dim; i++)
        centres[i] = spread * (float)(2 * rng_unit() - 1);
    size_t n = nc * per;
    float *x = malloc(n * dim * sizeof(float));
    for (size_t i = 0; i < n; i++) {
        size_t c = i % nc;
        if (truth != NULL)
            truth[i] = (uint32_t)c;
        for (size_t d = 0; d < dim; d++)
            x[i * dim + d] = centres[c * dim + d] + rng_gauss();
    }
    free(centres);
    return x;
}

static double inertia(const float *x, size_t n, size_t dim, const float *c, size_t k)
{
    double total = 0;
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY;
        for (size_t j = 0; j < k; j++) {
            double s = 0;
            for (size_t d = 0; d < dim; d++) {
                double t = (double)x[i * dim + d] - c[j * dim + d];
                s += t * t;
            }
            if (s < best)
                best = s;
        }
        total += best;
    }
    return total;
}

Test(kmeans, recovers_well_separated_clusters)
{
    const size_t nc = 8, per = 100, dim = 16, n = nc * per;
    uint32_t *truth = malloc(n * sizeof(uint32_t));
    float *x = clustered(nc, per, dim, 50.0f, 1, truth);
    float *c = malloc(nc * dim * sizeof(float));
    qv_status err;
    cr_assert_eq(qv__kmeans(x, n, dim, nc, 20, 7, 2, c, &err), 0, "%s", err.msg);
    uint32_t *assign = malloc(n * sizeof(uint32_t));
    cr_assert_eq(qv__kmeans_assign(x, n, dim, c, nc, 2, assign, NULL, &err), 0, "%s", err.msg);
    /* Each true cluster maps to one k-means cluster, and no two share one. */
    uint32_t map[8];
    bool used[8] = {false};
    for (size_t t = 0; t < nc; t++) {
        map[t] = assign[t]; /* point t belongs to true cluster t */
        cr_assert(!used[map[t]], "two true clusters merged into cluster %u", map[t]);
        used[map[t]] = true;
    }
    for (size_t i = 0; i < n; i++)
        CHECK(assign[i] == map[truth[i]], "point %zu (cluster %u) assigned to %u", i, truth[i],
              assign[i]);
    free(assign);
    free(c);
    free(x);
    free(truth);
    assert_no_leaks();
}

Test(kmeans, is_deterministic_for_a_seed)
{
    const size_t n = 1500, dim = 12, k = 20;
    rng_state = 3;
    float *x = malloc(n * dim * sizeof(float));
    for (size_t i = 0; i < n * dim; i++)
        x[i] = (float)rng_unit();
    float *a = malloc(k * dim * sizeof(float));
    float *b = malloc(k * dim * sizeof(float));
    float *c = malloc(k * dim * sizeof(float));
    qv_status err;
    cr_assert_eq(qv__kmeans(x, n, dim, k, 15, 42, 2, a, &err), 0, "%s", err.msg);
    cr_assert_eq(qv__kmeans(x, n, dim, k, 15, 42, 2, b, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(a, b, k * dim * sizeof(float)), 0, "same seed, different centroids");
    cr_assert_eq(qv__kmeans(x, n, dim, k, 15, 42, 1, c, &err), 0, "%s", err.msg);
    cr_assert_eq(memcmp(a, c, k * dim * sizeof(float)), 0, "1 and 2 threads disagree");
    cr_assert_eq(qv__kmeans(x, n, dim, k, 15, 43, 2, b, &err), 0, "%s", err.msg);
    cr_assert_neq(memcmp(a, b, k * dim * sizeof(float)), 0, "the seed is ignored");
    free(c);
    free(b);
    free(a);
    free(x);
    assert_no_leaks();
}

Test(kmeans, plusplus_beats_random_init_on_inertia)
{
    /* 30 tight clusters of unequal reach: random seeding often puts two centroids in one
     * cluster and none in another, which a few Lloyd steps do not repair. */
    const size_t nc = 30, per = 40, dim = 8, n = nc * per;
    float *x = clustered(nc, per, dim, 40.0f, 5, NULL);
    float *c = malloc(nc * dim * sizeof(float));
    qv_status err;
    double pp = 0, rnd = 0;
    for (uint64_t seed = 1; seed <= 8; seed++) {
        cr_assert_eq(qv__kmeans_ex(x, n, dim, nc, 3, seed, 1, QV__KMEANS_PLUSPLUS, c, &err), 0,
                     "%s", err.msg);
        pp += inertia(x, n, dim, c, nc);
        cr_assert_eq(qv__kmeans_ex(x, n, dim, nc, 3, seed, 1, QV__KMEANS_RANDOM, c, &err), 0, "%s",
                     err.msg);
        rnd += inertia(x, n, dim, c, nc);
    }
    cr_assert(pp < 0.8 * rnd, "k-means++ inertia %.1f, random %.1f", pp, rnd);
    free(c);
    free(x);
    assert_no_leaks();
}

Test(kmeans, iterations_lower_the_inertia_of_the_seeding)
{
    const size_t n = 2000, dim = 8, k = 16;
    rng_state = 9;
    float *x = malloc(n * dim * sizeof(float));
    for (size_t i = 0; i < n * dim; i++)
        x[i] = (float)rng_unit();
    float *c0 = malloc(k * dim * sizeof(float));
    float *c1 = malloc(k * dim * sizeof(float));
    qv_status err;
    cr_assert_eq(qv__kmeans(x, n, dim, k, 0, 1, 2, c0, &err), 0, "%s", err.msg);
    cr_assert_eq(qv__kmeans(x, n, dim, k, 10, 1, 2, c1, &err), 0, "%s", err.msg);
    double before = inertia(x, n, dim, c0, k), after = inertia(x, n, dim, c1, k);
    cr_assert(after < 0.9 * before, "Lloyd steps: inertia %.2f -> %.2f", before, after);
    free(c1);
    free(c0);
    free(x);
    assert_no_leaks();
}

Test(kmeans, assign_matches_brute_force)
{
    const size_t n = 700, dim = 24, k = 1100; /* several centroid blocks of 1024 */
    rng_state = 11;
    float *x = malloc(n * dim * sizeof(float));
    float *c = malloc(k * dim * sizeof(float));
    for (size_t i = 0; i < n * dim; i++)
        x[i] = (float)(2 * rng_unit() - 1);
    for (size_t i = 0; i < k * dim; i++)
        c[i] = (float)(2 * rng_unit() - 1);
    uint32_t *a = malloc(n * sizeof(uint32_t));
    float *d = malloc(n * sizeof(float));
    uint32_t *aip = malloc(n * sizeof(uint32_t));
    float *dip = malloc(n * sizeof(float));
    qv_status err;
    cr_assert_eq(qv__kmeans_assign(x, n, dim, c, k, 2, a, d, &err), 0, "%s", err.msg);
    cr_assert_eq(qv__kmeans_assign_ip(x, n, dim, c, k, 2, aip, dip, &err), 0, "%s", err.msg);
    for (size_t i = 0; i < n; i++) {
        double best = INFINITY, second = INFINITY, bip = -INFINITY, sip = -INFINITY;
        size_t bj = 0, bjip = 0;
        for (size_t j = 0; j < k; j++) {
            double s = 0, p = 0;
            for (size_t t = 0; t < dim; t++) {
                double diff = (double)x[i * dim + t] - c[j * dim + t];
                s += diff * diff;
                p += (double)x[i * dim + t] * c[j * dim + t];
            }
            if (s < best) {
                second = best;
                best = s;
                bj = j;
            } else if (s < second) {
                second = s;
            }
            if (p > bip) {
                sip = bip;
                bip = p;
                bjip = j;
            } else if (p > sip) {
                sip = p;
            }
        }
        CHECK(a[i] == bj || second - best < 1e-4, "vector %zu: L2 centroid %u, reference %zu", i,
              a[i], bj);
        CHECK(fabs(d[i] - best) <= 1e-4 * (1 + best), "vector %zu: distance %.6g, reference %.6g",
              i, (double)d[i], best);
        CHECK(aip[i] == bjip || bip - sip < 1e-4, "vector %zu: IP centroid %u, reference %zu", i,
              aip[i], bjip);
        CHECK(fabs(dip[i] + bip) <= 1e-4 * (1 + fabs(bip)), "vector %zu: -ip %.6g, ref %.6g", i,
              (double)dip[i], -bip);
    }
    free(dip);
    free(aip);
    free(d);
    free(a);
    free(c);
    free(x);
    assert_no_leaks();
}

Test(kmeans, duplicate_points_leave_no_empty_or_invalid_centroid)
{
    /* Two distinct points, five copies each, four clusters: two clusters must stay empty of
     * distinct points; every centroid must still be one of the inputs, never NaN. */
    const size_t n = 10, dim = 3, k = 4;
    float x[10 * 3];
    for (size_t i = 0; i < n; i++)
        for (size_t d = 0; d < dim; d++)
            x[i * dim + d] = i % 2 == 0 ? 1.0f : -2.0f;
    float c[4 * 3];
    qv_status err;
    cr_assert_eq(qv__kmeans(x, n, dim, k, 10, 1, 1, c, &err), 0, "%s", err.msg);
    bool seen_a = false, seen_b = false;
    for (size_t j = 0; j < k; j++) {
        for (size_t d = 0; d < dim; d++)
            cr_assert(c[j * dim + d] == 1.0f || c[j * dim + d] == -2.0f,
                      "centroid %zu coordinate %zu is %g", j, d, (double)c[j * dim + d]);
        seen_a |= c[j * dim] == 1.0f;
        seen_b |= c[j * dim] == -2.0f;
    }
    cr_assert(seen_a && seen_b, "a distinct point has no centroid");
    assert_no_leaks();
}

Test(kmeans, empty_clusters_are_repaired_by_splitting_the_largest)
{
    /* 50 copies of A, one B, one C. Random seeding mostly picks three copies of A: two
     * clusters start empty. Re-seeding them from the largest cluster's farthest points ends
     * with A, B and C each a centroid (inertia 0); left empty, B and C would share one. */
    const size_t n = 52, dim = 2, k = 3;
    float x[52 * 2];
    for (size_t i = 0; i < 50; i++) {
        x[2 * i] = 1.0f;
        x[2 * i + 1] = 1.0f;
    }
    x[100] = 5.0f, x[101] = 1.0f;  /* B */
    x[102] = 1.0f, x[103] = -3.0f; /* C */
    float c[3 * 2];
    qv_status err;
    for (uint64_t seed = 1; seed <= 10; seed++) {
        cr_assert_eq(qv__kmeans_ex(x, n, dim, k, 10, seed, 1, QV__KMEANS_RANDOM, c, &err), 0, "%s",
                     err.msg);
        double in = inertia(x, n, dim, c, k);
        cr_assert(in < 1e-9, "seed %llu: inertia %g", (unsigned long long)seed, in);
    }
    assert_no_leaks();
}

Test(kmeans, every_point_its_own_cluster_when_k_equals_n)
{
    const size_t n = 12, dim = 5;
    rng_state = 13;
    float x[12 * 5], c[12 * 5];
    for (size_t i = 0; i < n * dim; i++)
        x[i] = (float)rng_unit();
    qv_status err;
    cr_assert_eq(qv__kmeans(x, n, dim, n, 5, 3, 1, c, &err), 0, "%s", err.msg);
    cr_assert(inertia(x, n, dim, c, n) < 1e-9, "a point is not a centroid");
    assert_no_leaks();
}

Test(kmeans, rejects_more_clusters_than_points)
{
    float x[4 * 2] = {0};
    float c[5 * 2];
    qv_status err;
    cr_assert_eq(qv__kmeans(x, 4, 2, 5, 10, 1, 1, c, &err), QV_EINVAL);
    cr_assert(strlen(err.msg) > 0);
    cr_assert_eq(qv__kmeans(x, 4, 2, 0, 10, 1, 1, c, &err), QV_EINVAL);
    cr_assert_eq(qv__kmeans(x, 4, 0, 2, 10, 1, 1, c, &err), QV_EINVAL);
}
