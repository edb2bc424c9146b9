/*
 * tests/index/test_kernels.c - distance kernels of every SIMD level against references.
 *
 * Map: helpers (PRNG, vector allocation, double/int64 references), then per-variant checks
 * instantiated for each level by PER_LEVEL / PER_INT_VARIANT (a level the CPU lacks is skipped),
 * then the dispatcher (qv_kernels_get, QUIVER_SIMD). Criterion runs every test in its own
 * process, so each test sees the once-per-process kernel choice fresh.
 */
#define _GNU_SOURCE /* MAP_ANONYMOUS, setenv */
#include <criterion/criterion.h>
#include <float.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "index/index.h"
#include "index/kernels_internal.h"

#define MAX_DIM 1024

/* Checked in loops of millions: only a failure goes through Criterion (passing cr_asserts are
 * each reported to the runner, which would dominate the run time). */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            cr_assert_fail(__VA_ARGS__);                                                           \
        }                                                                                          \
    } while (0)

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

enum variant {
    V_SCALAR,
    V_AVX2,
    V_AVX512,       /* what the dispatcher hands out: VNNI integer kernels where the CPU has them */
    V_AVX512_PLAIN, /* the AVX-512 table with the non-VNNI integer kernels */
};

static const qv_kernels *need(enum variant v)
{
    const qv_kernels *k = NULL;
    switch (v) {
    case V_SCALAR:
        k = qv_kernels_for(QV_SIMD_SCALAR);
        break;
    case V_AVX2:
        k = qv_kernels_for(QV_SIMD_AVX2);
        break;
    case V_AVX512:
        k = qv_kernels_for(QV_SIMD_AVX512);
        break;
    case V_AVX512_PLAIN:
        k = qv__kernels_avx512_plain();
        break;
    }
    if (k == NULL) {
        cr_skip_test("this CPU (or build) lacks the level");
    }
    return k;
}

/* splitmix64: seeded per test, so a failure reproduces exactly. */
static uint64_t rng_state;

static void rng_seed(uint64_t seed)
{
    rng_state = seed;
}

static uint64_t rng_next(void)
{
    uint64_t z = (rng_state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static float rng_float(float lo, float hi)
{
    return lo + (hi - lo) * (float)((double)(rng_next() >> 40) / (double)(1ull << 24));
}

/* A buffer for `count` elements of `size` bytes starting `offset` elements past a 64-byte
 * boundary: offset 0 is how the index stores vectors, offset 1 is misaligned for every SIMD
 * width. Freed with free_vec(). */
static void *alloc_vec(size_t count, size_t size, size_t offset)
{
    size_t bytes = ((count + offset) * size + 63) / 64 * 64;
    char *base = aligned_alloc(64, bytes == 0 ? 64 : bytes);
    cr_assert_not_null(base);
    return base + offset * size;
}

static void free_vec(void *p, size_t size, size_t offset)
{
    free((char *)p - offset * size);
}

static void fill_f32(float *v, size_t dim, float lo, float hi)
{
    for (size_t i = 0; i < dim; i++) {
        v[i] = rng_float(lo, hi);
    }
}

/* Value ranges the float tests run over: unit-scale embeddings and pixel-scale data such as
 * Fashion-MNIST (0..255), where sums reach 10^7 and absolute errors grow with them. */
static const struct {
    float lo, hi;
} ranges[] = {{-1.0f, 1.0f}, {0.0f, 255.0f}};

/*
 * Float tolerance. Summing n terms in float in ANY order (one chain, several accumulators,
 * a tree) errs by at most about (n - 1) * u * sum|term_i|, u = FLT_EPSILON / 2 (Higham,
 * "Accuracy and Stability of Numerical Algorithms", 4.2; blocked and pairwise orders only
 * tighten it). Each term adds its own rounding: the difference a-b (u) and the product (u, or
 * none under FMA). So |got - exact| <= (n + 2) * u * sum|term_i| to first order, and the double
 * reference is exact to far below that. We allow (n + 4) * FLT_EPSILON * sum|term_i|: twice the
 * bound, about 1.2e-4 of the magnitude at n = 1024 and 6e-7 at n = 1, so a kernel that drops,
 * repeats or misreads an element of any noticeable size still fails.
 */
static double f32_tolerance(size_t dim, double sum_abs_terms)
{
    return (double)(dim + 4) * FLT_EPSILON * sum_abs_terms;
}

static double ref_l2(const float *a, const float *b, size_t dim, double *sum_abs)
{
    double s = 0.0;
    for (size_t i = 0; i < dim; i++) {
        double d = (double)a[i] - (double)b[i];
        s += d * d;
    }
    *sum_abs = s;
    return s;
}

static double ref_ip(const float *a, const float *b, size_t dim, double *sum_abs)
{
    double s = 0.0, abs_sum = 0.0;
    for (size_t i = 0; i < dim; i++) {
        double t = (double)a[i] * (double)b[i];
        s += t;
        abs_sum += fabs(t);
    }
    *sum_abs = abs_sum;
    return s;
}

static double ref_cosine(const float *a, const float *b, size_t dim)
{
    double dot = 0.0, na = 0.0, nb = 0.0;
    for (size_t i = 0; i < dim; i++) {
        dot += (double)a[i] * (double)b[i];
        na += (double)a[i] * (double)a[i];
        nb += (double)b[i] * (double)b[i];
    }
    if (na == 0.0 || nb == 0.0) {
        return 1.0;
    }
    return 1.0 - dot / sqrt(na * nb);
}

/*
 * Cosine tolerance (absolute: the distance lies in [0, 2]). With the bound above, the dot product
 * errs by at most g * sum|a_i b_i| <= g |a| |b| (Cauchy-Schwarz) and each squared norm by g times
 * itself, g = (n + 2) * u; so cos errs by at most about g + |cos| * g <= 2g. We allow
 * 2 * (n + 4) * FLT_EPSILON, twice that again.
 */
static double cosine_tolerance(size_t dim)
{
    return 2.0 * (double)(dim + 4) * FLT_EPSILON;
}

static int64_t ref_l2_i8(const int8_t *a, const int8_t *b, size_t dim)
{
    int64_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        int64_t d = (int64_t)a[i] - b[i];
        s += d * d;
    }
    return s;
}

static int64_t ref_ip_i8(const int8_t *a, const int8_t *b, size_t dim)
{
    int64_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        s += (int64_t)a[i] * b[i];
    }
    return s;
}

static int64_t ref_l2_u8(const uint8_t *a, const uint8_t *b, size_t dim)
{
    int64_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        int64_t d = (int64_t)a[i] - b[i];
        s += d * d;
    }
    return s;
}

static int64_t ref_ip_u8(const uint8_t *a, const uint8_t *b, size_t dim)
{
    int64_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        s += (int64_t)a[i] * b[i];
    }
    return s;
}

/* Float and integer tests per level: scalar, avx2, avx512 (skipped where the CPU lacks them).
 * The integer ones also run on the AVX-512 table without VNNI, which the dispatcher hides on
 * CPUs that have VNNI. */
#define PER_LEVEL(behaviour, check)                                                                \
    Test(kernels, scalar_##behaviour)                                                              \
    {                                                                                              \
        check(need(V_SCALAR));                                                                     \
    }                                                                                              \
    Test(kernels, avx2_##behaviour)                                                                \
    {                                                                                              \
        check(need(V_AVX2));                                                                       \
    }                                                                                              \
    Test(kernels, avx512_##behaviour)                                                              \
    {                                                                                              \
        check(need(V_AVX512));                                                                     \
    }

#define PER_INT_VARIANT(behaviour, check)                                                          \
    PER_LEVEL(behaviour, check)                                                                    \
    Test(kernels, avx512_without_vnni_##behaviour)                                                 \
    {                                                                                              \
        check(need(V_AVX512_PLAIN));                                                               \
    }

/* ---------------------------------------------------------------------------------------------
 * Float kernels against double references
 * ------------------------------------------------------------------------------------------- */

typedef double (*ref_f32_fn)(const float *a, const float *b, size_t dim, double *sum_abs);

static void check_f32_against_reference(const qv_kernels *k, qv_dist_f32_fn fn, ref_f32_fn ref,
                                        const char *what)
{
    rng_seed(0x5eed0001);
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        for (size_t offset = 0; offset <= 1; offset++) {
            for (size_t dim = 1; dim <= MAX_DIM; dim++) {
                float *a = alloc_vec(dim, sizeof(float), offset);
                float *b = alloc_vec(dim, sizeof(float), offset);
                fill_f32(a, dim, ranges[r].lo, ranges[r].hi);
                fill_f32(b, dim, ranges[r].lo, ranges[r].hi);
                double sum_abs;
                double want = ref(a, b, dim, &sum_abs);
                double got = fn(a, b, dim);
                CHECK(fabs(got - want) <= f32_tolerance(dim, sum_abs),
                      "%s %s: dim=%zu offset=%zu range=[%g,%g]: got %.9g want %.9g", k->name, what,
                      dim, offset, (double)ranges[r].lo, (double)ranges[r].hi, got, want);
                free_vec(a, sizeof(float), offset);
                free_vec(b, sizeof(float), offset);
            }
        }
    }
}

static void check_l2_f32(const qv_kernels *k)
{
    check_f32_against_reference(k, k->l2sq_f32, ref_l2, "l2sq_f32");
}

static void check_ip_f32(const qv_kernels *k)
{
    check_f32_against_reference(k, k->ip_f32, ref_ip, "ip_f32");
}

static void check_cosine_f32(const qv_kernels *k)
{
    rng_seed(0x5eed0002);
    for (size_t r = 0; r < sizeof ranges / sizeof ranges[0]; r++) {
        for (size_t offset = 0; offset <= 1; offset++) {
            for (size_t dim = 1; dim <= MAX_DIM; dim++) {
                float *a = alloc_vec(dim, sizeof(float), offset);
                float *b = alloc_vec(dim, sizeof(float), offset);
                fill_f32(a, dim, ranges[r].lo, ranges[r].hi);
                fill_f32(b, dim, ranges[r].lo, ranges[r].hi);
                double want = ref_cosine(a, b, dim);
                double got = k->cosine_f32(a, b, dim);
                CHECK(fabs(got - want) <= cosine_tolerance(dim),
                      "%s cosine_f32: dim=%zu offset=%zu range=[%g,%g]: got %.9g want %.9g",
                      k->name, dim, offset, (double)ranges[r].lo, (double)ranges[r].hi, got, want);
                free_vec(a, sizeof(float), offset);
                free_vec(b, sizeof(float), offset);
            }
        }
    }
}

PER_LEVEL(l2_matches_double_reference_for_dims_1_to_1024, check_l2_f32)
PER_LEVEL(ip_matches_double_reference_for_dims_1_to_1024, check_ip_f32)
PER_LEVEL(cosine_matches_double_reference_for_dims_1_to_1024, check_cosine_f32)

static void check_cosine_zero(const qv_kernels *k)
{
    rng_seed(0x5eed0003);
    for (size_t dim = 0; dim <= MAX_DIM; dim++) {
        float *zero = alloc_vec(dim, sizeof(float), 1);
        float *v = alloc_vec(dim, sizeof(float), 1);
        memset(zero, 0, dim * sizeof(float));
        fill_f32(v, dim, -1.0f, 1.0f);
        CHECK(k->cosine_f32(zero, v, dim) == 1.0f, "%s: dim=%zu cos(0, v) = %g", k->name, dim,
              (double)k->cosine_f32(zero, v, dim));
        CHECK(k->cosine_f32(v, zero, dim) == 1.0f, "%s: dim=%zu cos(v, 0) = %g", k->name, dim,
              (double)k->cosine_f32(v, zero, dim));
        CHECK(k->cosine_f32(zero, zero, dim) == 1.0f, "%s: dim=%zu cos(0, 0) = %g", k->name, dim,
              (double)k->cosine_f32(zero, zero, dim));
        free_vec(zero, sizeof(float), 1);
        free_vec(v, sizeof(float), 1);
    }
}

PER_LEVEL(cosine_is_one_when_a_vector_is_zero_or_dim_is_0, check_cosine_zero)

static void check_cosine_range(const qv_kernels *k)
{
    rng_seed(0x5eed0004);
    for (size_t dim = 1; dim <= MAX_DIM; dim++) {
        float *v = alloc_vec(dim, sizeof(float), 0);
        float *neg = alloc_vec(dim, sizeof(float), 0);
        float *scaled = alloc_vec(dim, sizeof(float), 0);
        fill_f32(v, dim, -1.0f, 1.0f);
        for (size_t i = 0; i < dim; i++) {
            neg[i] = -v[i];
            scaled[i] = 3.0f * v[i];
        }
        float same = k->cosine_f32(v, scaled, dim);
        float opposite = k->cosine_f32(v, neg, dim);
        CHECK(same >= 0.0f && same <= cosine_tolerance(dim), "%s: dim=%zu cos(v, 3v) = %g", k->name,
              dim, (double)same);
        CHECK(opposite <= 2.0f && opposite >= 2.0f - cosine_tolerance(dim),
              "%s: dim=%zu cos(v, -v) = %g", k->name, dim, (double)opposite);
        free_vec(v, sizeof(float), 0);
        free_vec(neg, sizeof(float), 0);
        free_vec(scaled, sizeof(float), 0);
    }
}

PER_LEVEL(cosine_stays_within_0_and_2_for_parallel_and_opposite_vectors, check_cosine_range)

/* One nonzero element at every position of every length up to past two full unrolled blocks:
 * exact answers, so a skipped, doubled or misplaced element (a tail or mask bug) shows. */
static void check_f32_one_hot(const qv_kernels *k)
{
    for (size_t dim = 1; dim <= 260; dim++) {
        float *zero = alloc_vec(dim, sizeof(float), 1);
        float *ones = alloc_vec(dim, sizeof(float), 1);
        float *hot = alloc_vec(dim, sizeof(float), 1);
        for (size_t i = 0; i < dim; i++) {
            zero[i] = 0.0f;
            ones[i] = 1.0f;
            hot[i] = 0.0f;
        }
        for (size_t j = 0; j < dim; j++) {
            hot[j] = 1.5f;
            float l2 = k->l2sq_f32(zero, hot, dim), ip = k->ip_f32(ones, hot, dim);
            CHECK(l2 == 2.25f, "%s l2sq_f32: dim=%zu hot=%zu got %g", k->name, dim, j, (double)l2);
            CHECK(ip == 1.5f, "%s ip_f32: dim=%zu hot=%zu got %g", k->name, dim, j, (double)ip);
            hot[j] = 0.0f;
        }
        free_vec(zero, sizeof(float), 1);
        free_vec(ones, sizeof(float), 1);
        free_vec(hot, sizeof(float), 1);
    }
}

PER_LEVEL(f32_kernels_count_every_element_exactly_once, check_f32_one_hot)

static void check_batch(const qv_kernels *k)
{
    static const size_t dims[] = {1,  2,  3,   7,   8,   15,  16,  17,  31,   33,  63,
                                  64, 65, 100, 127, 128, 129, 300, 784, 1000, 1024};
    const size_t n = 37;
    rng_seed(0x5eed0005);
    for (size_t d = 0; d < sizeof dims / sizeof dims[0]; d++) {
        size_t dim = dims[d];
        for (size_t pad = 0; pad <= 3; pad += 3) {
            size_t stride = dim + pad;
            float *q = alloc_vec(dim, sizeof(float), 1);
            float *base = alloc_vec(n * stride, sizeof(float), 1);
            float *out = alloc_vec(n + 1, sizeof(float), 0);
            fill_f32(q, dim, -1.0f, 1.0f);
            fill_f32(base, n * stride, -1.0f, 1.0f);
            out[n] = -7.0f;
            k->l2sq_f32_batch(q, base, n, dim, stride, out);
            for (size_t i = 0; i < n; i++) {
                float single = k->l2sq_f32(q, base + i * stride, dim);
                CHECK(memcmp(&out[i], &single, sizeof single) == 0,
                      "%s: dim=%zu stride=%zu row %zu: batch %.9g single %.9g", k->name, dim,
                      stride, i, (double)out[i], (double)single);
            }
            CHECK(out[n] == -7.0f, "%s: batch wrote past out[n-1]", k->name);
            out[0] = -7.0f;
            k->l2sq_f32_batch(q, base, 0, dim, stride, out);
            CHECK(out[0] == -7.0f, "%s: batch with n = 0 wrote", k->name);
            free_vec(q, sizeof(float), 1);
            free_vec(base, sizeof(float), 1);
            free_vec(out, sizeof(float), 0);
        }
    }
}

PER_LEVEL(batch_l2_equals_single_pair_kernel_bit_for_bit, check_batch)

/* ---------------------------------------------------------------------------------------------
 * Integer kernels: exact against int64 references
 * ------------------------------------------------------------------------------------------- */

static void check_i8_exact(const qv_kernels *k)
{
    rng_seed(0x5eed0006);
    for (size_t offset = 0; offset <= 1; offset++) {
        for (size_t dim = 1; dim <= MAX_DIM; dim++) {
            int8_t *a = alloc_vec(dim, 1, offset), *b = alloc_vec(dim, 1, offset);
            for (size_t i = 0; i < dim; i++) {
                a[i] = (int8_t)(uint8_t)rng_next();
                b[i] = (int8_t)(uint8_t)rng_next();
            }
            int64_t l2 = k->l2sq_i8(a, b, dim), ip = k->ip_i8(a, b, dim);
            CHECK(l2 == ref_l2_i8(a, b, dim), "%s l2sq_i8: dim=%zu offset=%zu got %lld want %lld",
                  k->name, dim, offset, (long long)l2, (long long)ref_l2_i8(a, b, dim));
            CHECK(ip == ref_ip_i8(a, b, dim), "%s ip_i8: dim=%zu offset=%zu got %lld want %lld",
                  k->name, dim, offset, (long long)ip, (long long)ref_ip_i8(a, b, dim));
            free_vec(a, 1, offset);
            free_vec(b, 1, offset);
        }
    }
}

static void check_u8_exact(const qv_kernels *k)
{
    rng_seed(0x5eed0007);
    for (size_t offset = 0; offset <= 1; offset++) {
        for (size_t dim = 1; dim <= MAX_DIM; dim++) {
            uint8_t *a = alloc_vec(dim, 1, offset), *b = alloc_vec(dim, 1, offset);
            for (size_t i = 0; i < dim; i++) {
                a[i] = (uint8_t)rng_next();
                b[i] = (uint8_t)rng_next();
            }
            int64_t l2 = k->l2sq_u8(a, b, dim), ip = k->ip_u8(a, b, dim);
            CHECK(l2 == ref_l2_u8(a, b, dim), "%s l2sq_u8: dim=%zu offset=%zu got %lld want %lld",
                  k->name, dim, offset, (long long)l2, (long long)ref_l2_u8(a, b, dim));
            CHECK(ip == ref_ip_u8(a, b, dim), "%s ip_u8: dim=%zu offset=%zu got %lld want %lld",
                  k->name, dim, offset, (long long)ip, (long long)ref_ip_u8(a, b, dim));
            free_vec(a, 1, offset);
            free_vec(b, 1, offset);
        }
    }
}

PER_INT_VARIANT(i8_kernels_are_exact_for_dims_1_to_1024, check_i8_exact)
PER_INT_VARIANT(u8_kernels_are_exact_for_dims_1_to_1024, check_u8_exact)

/* Constant vectors at the ends of the ranges give the largest |terms|; every dim up to 1024,
 * then the documented limit QV_KERNELS_INT_MAX_DIM, where the results approach 2^31. */
static void check_int_extremes_at(const qv_kernels *k, size_t dim, int8_t *lo, int8_t *hi,
                                  uint8_t *zero, uint8_t *full)
{
    int64_t n = (int64_t)dim;
    struct {
        const char *what;
        int64_t got, want;
    } cases[] = {
        {"l2sq_i8(-128, 127)", k->l2sq_i8(lo, hi, dim), 65025 * n},
        {"l2sq_i8(127, -128)", k->l2sq_i8(hi, lo, dim), 65025 * n},
        {"ip_i8(-128, -128)", k->ip_i8(lo, lo, dim), 16384 * n},
        {"ip_i8(-128, 127)", k->ip_i8(lo, hi, dim), -16256 * n},
        {"ip_i8(127, 127)", k->ip_i8(hi, hi, dim), 16129 * n},
        {"l2sq_u8(0, 255)", k->l2sq_u8(zero, full, dim), 65025 * n},
        {"ip_u8(255, 255)", k->ip_u8(full, full, dim), 65025 * n},
        {"ip_u8(0, 255)", k->ip_u8(zero, full, dim), 0},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        CHECK(cases[c].got == cases[c].want, "%s %s: dim=%zu got %lld want %lld", k->name,
              cases[c].what, dim, (long long)cases[c].got, (long long)cases[c].want);
    }
}

static void check_int_extremes(const qv_kernels *k)
{
    size_t max = QV_KERNELS_INT_MAX_DIM;
    int8_t *lo = alloc_vec(max, 1, 1), *hi = alloc_vec(max, 1, 1);
    uint8_t *zero = alloc_vec(max, 1, 1), *full = alloc_vec(max, 1, 1);
    memset(lo, 0x80, max);
    memset(hi, 0x7f, max);
    memset(zero, 0, max);
    memset(full, 0xff, max);
    for (size_t dim = 1; dim <= MAX_DIM; dim++) {
        check_int_extremes_at(k, dim, lo, hi, zero, full);
    }
    check_int_extremes_at(k, max, lo, hi, zero, full);
    cr_assert_lt(65025ll * QV_KERNELS_INT_MAX_DIM, (long long)INT32_MAX, "limit is wrong");
    free_vec(lo, 1, 1);
    free_vec(hi, 1, 1);
    free_vec(zero, 1, 1);
    free_vec(full, 1, 1);
}

PER_INT_VARIANT(int_kernels_do_not_overflow_at_extreme_values, check_int_extremes)

static void check_int_one_hot(const qv_kernels *k)
{
    for (size_t dim = 1; dim <= 260; dim++) {
        int8_t *zi = alloc_vec(dim, 1, 1), *oi = alloc_vec(dim, 1, 1), *hi = alloc_vec(dim, 1, 1);
        uint8_t *zu = alloc_vec(dim, 1, 1), *ou = alloc_vec(dim, 1, 1), *hu = alloc_vec(dim, 1, 1);
        memset(zi, 0, dim);
        memset(oi, 1, dim);
        memset(hi, 0, dim);
        memset(zu, 0, dim);
        memset(ou, 1, dim);
        memset(hu, 0, dim);
        for (size_t j = 0; j < dim; j++) {
            hi[j] = -3;
            hu[j] = 3;
            CHECK(k->l2sq_i8(zi, hi, dim) == 9, "%s l2sq_i8: dim=%zu hot=%zu", k->name, dim, j);
            CHECK(k->ip_i8(oi, hi, dim) == -3, "%s ip_i8: dim=%zu hot=%zu", k->name, dim, j);
            CHECK(k->l2sq_u8(zu, hu, dim) == 9, "%s l2sq_u8: dim=%zu hot=%zu", k->name, dim, j);
            CHECK(k->ip_u8(ou, hu, dim) == 3, "%s ip_u8: dim=%zu hot=%zu", k->name, dim, j);
            hi[j] = 0;
            hu[j] = 0;
        }
        free_vec(zi, 1, 1);
        free_vec(oi, 1, 1);
        free_vec(hi, 1, 1);
        free_vec(zu, 1, 1);
        free_vec(ou, 1, 1);
        free_vec(hu, 1, 1);
    }
}

PER_INT_VARIANT(int_kernels_count_every_element_exactly_once, check_int_one_hot)

/* ---------------------------------------------------------------------------------------------
 * No reads outside [p, p + dim): vectors placed flush against PROT_NONE pages on both sides, so
 * an over-wide load (or a masked load done wrong) faults instead of passing silently.
 * ------------------------------------------------------------------------------------------- */

struct guarded {
    char *map;  /* guard page, data page, guard page */
    char *data; /* the readable page */
    size_t page;
};

static struct guarded guarded_page(void)
{
    struct guarded g;
    g.page = (size_t)sysconf(_SC_PAGESIZE);
    g.map = mmap(NULL, 3 * g.page, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
    cr_assert_neq(g.map, MAP_FAILED, "mmap failed");
    cr_assert_eq(mprotect(g.map, g.page, PROT_NONE), 0);
    cr_assert_eq(mprotect(g.map + 2 * g.page, g.page, PROT_NONE), 0);
    g.data = g.map + g.page;
    memset(g.data, 0x11, g.page);
    return g;
}

/* Calls every kernel with both vectors flush against the page after them, then flush against
 * the page before them; the integer ones must also still be right (each byte is 0x11). */
static void check_guard_pages(const qv_kernels *k)
{
    struct guarded ga = guarded_page(), gb = guarded_page();
    for (size_t dim = 0; dim * sizeof(float) <= ga.page && dim <= MAX_DIM; dim++) {
        const float *at[2][2] = {
            {(const float *)(const void *)(ga.data + ga.page) - dim,
             (const float *)(const void *)(gb.data + gb.page) - dim},
            {(const float *)(const void *)ga.data, (const float *)(const void *)gb.data},
        };
        for (size_t p = 0; p < 2 && dim > 0; p++) {
            float out;
            (void)k->l2sq_f32(at[p][0], at[p][1], dim);
            (void)k->ip_f32(at[p][0], at[p][1], dim);
            (void)k->cosine_f32(at[p][0], at[p][1], dim);
            k->l2sq_f32_batch(at[p][0], at[p][1], 1, dim, dim, &out);
        }
    }
    for (size_t dim = 0; dim <= ga.page && dim <= MAX_DIM; dim++) {
        const char *at[2][2] = {
            {ga.data + ga.page - dim, gb.data + gb.page - dim},
            {ga.data, gb.data},
        };
        int32_t ip_want = 0x11 * 0x11 * (int32_t)dim;
        for (size_t p = 0; p < 2; p++) {
            const int8_t *ia = (const int8_t *)at[p][0], *ib = (const int8_t *)at[p][1];
            const uint8_t *ua = (const uint8_t *)at[p][0], *ub = (const uint8_t *)at[p][1];
            CHECK(k->l2sq_i8(ia, ib, dim) == 0, "%s l2sq_i8 dim=%zu", k->name, dim);
            CHECK(k->ip_i8(ia, ib, dim) == ip_want, "%s ip_i8 dim=%zu", k->name, dim);
            CHECK(k->l2sq_u8(ua, ub, dim) == 0, "%s l2sq_u8 dim=%zu", k->name, dim);
            CHECK(k->ip_u8(ua, ub, dim) == ip_want, "%s ip_u8 dim=%zu", k->name, dim);
        }
    }
    munmap(ga.map, 3 * ga.page);
    munmap(gb.map, 3 * gb.page);
}

PER_INT_VARIANT(kernels_never_read_outside_the_vectors, check_guard_pages)

/* ---------------------------------------------------------------------------------------------
 * Dispatch and QUIVER_SIMD
 * ------------------------------------------------------------------------------------------- */

static qv_simd_level best_available(void)
{
    if (qv_kernels_for(QV_SIMD_AVX512)) {
        return QV_SIMD_AVX512;
    }
    if (qv_kernels_for(QV_SIMD_AVX2)) {
        return QV_SIMD_AVX2;
    }
    return QV_SIMD_SCALAR;
}

Test(kernels, kernels_get_picks_the_best_level_the_cpu_supports)
{
    unsetenv("QUIVER_SIMD");
    qv_simd_level best = best_available();
    cr_assert_eq(qv_kernels_level(), best, "chose %s, best is %s",
                 qv_simd_level_name(qv_kernels_level()), qv_simd_level_name(best));
    cr_assert_eq(qv_kernels_get(), qv_kernels_for(best));
    cr_assert_eq(qv_kernels_get(), qv_kernels_get(), "the choice is made once");
}

Test(kernels, kernels_for_returns_complete_tables_of_exactly_that_level)
{
    const qv_simd_level levels[] = {QV_SIMD_SCALAR, QV_SIMD_AVX2, QV_SIMD_AVX512};
    cr_assert_not_null(qv_kernels_for(QV_SIMD_SCALAR), "scalar is always available");
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        const qv_kernels *k = qv_kernels_for(levels[i]);
        if (k == NULL) {
            continue;
        }
        cr_assert_eq(k->level, levels[i]);
        cr_assert_not_null(k->name);
        cr_assert(k->l2sq_f32 && k->ip_f32 && k->cosine_f32 && k->l2sq_i8 && k->ip_i8 &&
                      k->l2sq_u8 && k->ip_u8 && k->l2sq_f32_batch,
                  "%s table has a NULL kernel", k->name);
    }
    cr_assert_null(qv_kernels_for((qv_simd_level)7));
}

Test(kernels, quiver_simd_scalar_selects_the_scalar_table)
{
    cr_assert_eq(setenv("QUIVER_SIMD", "scalar", 1), 0);
    cr_assert_eq(qv_kernels_level(), QV_SIMD_SCALAR);
    cr_assert_eq(qv_kernels_get(), qv_kernels_for(QV_SIMD_SCALAR));
}

Test(kernels, quiver_simd_avx2_caps_the_choice_at_avx2)
{
    if (qv_kernels_for(QV_SIMD_AVX2) == NULL) {
        cr_skip_test("this CPU lacks AVX2");
    }
    cr_assert_eq(setenv("QUIVER_SIMD", "avx2", 1), 0);
    cr_assert_eq(qv_kernels_level(), QV_SIMD_AVX2);
    cr_assert_eq(qv_kernels_get(), qv_kernels_for(QV_SIMD_AVX2));
}

/* Runs with fd 2 pointed at a temporary file and returns what was written there (static buffer).
 * Criterion's own redirection reads a pipe, which blocks when the text's length is not known. */
struct capture {
    FILE *file;
    int saved_fd;
};

static struct capture capture_stderr(void)
{
    struct capture c;
    fflush(stderr);
    c.file = tmpfile();
    cr_assert_not_null(c.file);
    c.saved_fd = dup(2);
    cr_assert_geq(c.saved_fd, 0);
    cr_assert_geq(dup2(fileno(c.file), 2), 0);
    return c;
}

static const char *captured_stderr(struct capture c)
{
    static char buf[1024];
    fflush(stderr);
    cr_assert_geq(dup2(c.saved_fd, 2), 0);
    close(c.saved_fd);
    rewind(c.file);
    size_t n = fread(buf, 1, sizeof buf - 1, c.file);
    buf[n] = '\0';
    fclose(c.file);
    return buf;
}

Test(kernels, quiver_simd_unknown_value_falls_back_to_the_best_level_with_a_warning)
{
    cr_assert_eq(setenv("QUIVER_SIMD", "sse9", 1), 0);
    qv_simd_level best = best_available();
    struct capture c = capture_stderr();
    qv_simd_level chosen = qv_kernels_level();
    const char *err = captured_stderr(c);
    cr_assert_eq(chosen, best);
    cr_assert_not_null(strstr(err, "QUIVER_SIMD=sse9"), "stderr was: %s", err);
}

Test(kernels, choose_refuses_a_level_the_cpu_lacks_and_uses_the_best_available)
{
    unsigned scalar = QV__LEVEL_BIT(QV_SIMD_SCALAR);
    unsigned avx2 = scalar | QV__LEVEL_BIT(QV_SIMD_AVX2);
    struct capture c = capture_stderr();
    qv_simd_level from_avx2 = qv__kernels_choose("avx512", avx2);
    qv_simd_level from_scalar = qv__kernels_choose("avx2", scalar);
    const char *err = captured_stderr(c);
    cr_assert_eq(from_avx2, QV_SIMD_AVX2);
    cr_assert_eq(from_scalar, QV_SIMD_SCALAR);
    cr_assert_not_null(strstr(err, "QUIVER_SIMD=avx512 refused"), "stderr was: %s", err);
    cr_assert_not_null(strstr(err, "QUIVER_SIMD=avx2 refused"), "stderr was: %s", err);
}

Test(kernels, choose_honours_an_available_level_and_defaults_to_the_best)
{
    unsigned scalar = QV__LEVEL_BIT(QV_SIMD_SCALAR);
    unsigned avx2 = scalar | QV__LEVEL_BIT(QV_SIMD_AVX2);
    unsigned all = avx2 | QV__LEVEL_BIT(QV_SIMD_AVX512);
    cr_assert_eq(qv__kernels_choose(NULL, all), QV_SIMD_AVX512);
    cr_assert_eq(qv__kernels_choose("", avx2), QV_SIMD_AVX2);
    cr_assert_eq(qv__kernels_choose(NULL, scalar), QV_SIMD_SCALAR);
    cr_assert_eq(qv__kernels_choose("scalar", all), QV_SIMD_SCALAR);
    cr_assert_eq(qv__kernels_choose("avx2", all), QV_SIMD_AVX2);
    cr_assert_eq(qv__kernels_choose("avx512", all), QV_SIMD_AVX512);
}

Test(kernels, simd_level_names_are_the_quiver_simd_spellings)
{
    cr_assert_str_eq(qv_simd_level_name(QV_SIMD_SCALAR), "scalar");
    cr_assert_str_eq(qv_simd_level_name(QV_SIMD_AVX2), "avx2");
    cr_assert_str_eq(qv_simd_level_name(QV_SIMD_AVX512), "avx512");
    cr_assert_str_eq(qv_simd_level_name((qv_simd_level)9), "unknown");
}
