/*
 * index/kernels_avx2.c - AVX2 + FMA distance kernels (this file is compiled with -mavx2 -mfma).
 *
 * Only kernels.c may reach these, through qv__kernels_avx2, after checking the CPU: running them
 * elsewhere is an illegal instruction. Float kernels keep four 8-lane accumulators (FMA latency
 * is 4-5 cycles with two ports: four chains keep them busy), sum them horizontally once at the
 * end, and finish the last dim % 8 elements with a scalar tail. Integer kernels widen int8/uint8
 * to int16 and multiply-add pairs into int32 (vpmaddwd), which is exact for every input.
 */
#include <immintrin.h>

#include "index/kernels_internal.h"

static inline float hsum_ps(__m256 v)
{
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

static inline int32_t hsum_epi32(__m256i v)
{
    __m128i s = _mm_add_epi32(_mm256_castsi256_si128(v), _mm256_extracti128_si256(v, 1));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(1, 0, 3, 2)));
    s = _mm_add_epi32(s, _mm_shuffle_epi32(s, _MM_SHUFFLE(2, 3, 0, 1)));
    return _mm_cvtsi128_si32(s);
}

/* ---------------------------------------------------------------------------------------------
 * float
 * ------------------------------------------------------------------------------------------- */

static inline float l2sq_f32_core(const float *a, const float *b, size_t dim)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        __m256 d0 = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        __m256 d1 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8));
        __m256 d2 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16));
        __m256 d3 = _mm256_sub_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24));
        acc0 = _mm256_fmadd_ps(d0, d0, acc0);
        acc1 = _mm256_fmadd_ps(d1, d1, acc1);
        acc2 = _mm256_fmadd_ps(d2, d2, acc2);
        acc3 = _mm256_fmadd_ps(d3, d3, acc3);
    }
    for (; i + 8 <= dim; i += 8) {
        __m256 d = _mm256_sub_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i));
        acc0 = _mm256_fmadd_ps(d, d, acc0);
    }
    float s = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < dim; i++) {
        float d = a[i] - b[i];
        s += d * d;
    }
    return s;
}

static float l2sq_f32_avx2(const float *a, const float *b, size_t dim)
{
    return l2sq_f32_core(a, b, dim);
}

static void l2sq_f32_batch_avx2(const float *q, const float *base, size_t n, size_t dim,
                                size_t stride, float *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = l2sq_f32_core(q, base + i * stride, dim);
    }
}

static float ip_f32_avx2(const float *a, const float *b, size_t dim)
{
    __m256 acc0 = _mm256_setzero_ps(), acc1 = _mm256_setzero_ps();
    __m256 acc2 = _mm256_setzero_ps(), acc3 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
        acc1 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 8), _mm256_loadu_ps(b + i + 8), acc1);
        acc2 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 16), _mm256_loadu_ps(b + i + 16), acc2);
        acc3 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i + 24), _mm256_loadu_ps(b + i + 24), acc3);
    }
    for (; i + 8 <= dim; i += 8) {
        acc0 = _mm256_fmadd_ps(_mm256_loadu_ps(a + i), _mm256_loadu_ps(b + i), acc0);
    }
    float s = hsum_ps(_mm256_add_ps(_mm256_add_ps(acc0, acc1), _mm256_add_ps(acc2, acc3)));
    for (; i < dim; i++) {
        s += a[i] * b[i];
    }
    return s;
}

static float cosine_f32_avx2(const float *a, const float *b, size_t dim)
{
    __m256 dot0 = _mm256_setzero_ps(), dot1 = _mm256_setzero_ps();
    __m256 na0 = _mm256_setzero_ps(), na1 = _mm256_setzero_ps();
    __m256 nb0 = _mm256_setzero_ps(), nb1 = _mm256_setzero_ps();
    size_t i = 0;
    for (; i + 16 <= dim; i += 16) {
        __m256 x0 = _mm256_loadu_ps(a + i), y0 = _mm256_loadu_ps(b + i);
        __m256 x1 = _mm256_loadu_ps(a + i + 8), y1 = _mm256_loadu_ps(b + i + 8);
        dot0 = _mm256_fmadd_ps(x0, y0, dot0);
        dot1 = _mm256_fmadd_ps(x1, y1, dot1);
        na0 = _mm256_fmadd_ps(x0, x0, na0);
        na1 = _mm256_fmadd_ps(x1, x1, na1);
        nb0 = _mm256_fmadd_ps(y0, y0, nb0);
        nb1 = _mm256_fmadd_ps(y1, y1, nb1);
    }
    for (; i + 8 <= dim; i += 8) {
        __m256 x = _mm256_loadu_ps(a + i), y = _mm256_loadu_ps(b + i);
        dot0 = _mm256_fmadd_ps(x, y, dot0);
        na0 = _mm256_fmadd_ps(x, x, na0);
        nb0 = _mm256_fmadd_ps(y, y, nb0);
    }
    float dot = hsum_ps(_mm256_add_ps(dot0, dot1));
    float na = hsum_ps(_mm256_add_ps(na0, na1));
    float nb = hsum_ps(_mm256_add_ps(nb0, nb1));
    for (; i < dim; i++) {
        dot += a[i] * b[i];
        na += a[i] * a[i];
        nb += b[i] * b[i];
    }
    return qv__cosine_finish(dot, na, nb);
}

/* ---------------------------------------------------------------------------------------------
 * int8 / uint8: 16 elements widened to int16 per step; vpmaddwd of two products of at most
 * 255^2 stays below 2^31, and the int32 lanes cannot overflow for dim <= QV_KERNELS_INT_MAX_DIM.
 * ------------------------------------------------------------------------------------------- */

static inline __m256i load_i8_as_i16(const int8_t *p)
{
    return _mm256_cvtepi8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
}

static inline __m256i load_u8_as_i16(const uint8_t *p)
{
    return _mm256_cvtepu8_epi16(_mm_loadu_si128((const __m128i *)(const void *)p));
}

/* Instantiates one integer kernel: LOAD widens 16 elements of T to int16; L2 (a literal 0 or 1,
 * folded at compile time) multiplies the difference by itself, else the operands together. */
#define QV__INT_KERNEL(fname, T, LOAD, L2)                                                         \
    static int32_t fname(const T *a, const T *b, size_t dim)                                       \
    {                                                                                              \
        __m256i acc0 = _mm256_setzero_si256(), acc1 = _mm256_setzero_si256();                      \
        size_t i = 0;                                                                              \
        for (; i + 32 <= dim; i += 32) {                                                           \
            __m256i x0 = LOAD(a + i), y0 = LOAD(b + i);                                            \
            __m256i x1 = LOAD(a + i + 16), y1 = LOAD(b + i + 16);                                  \
            if (L2) {                                                                              \
                x0 = y0 = _mm256_sub_epi16(x0, y0);                                                \
                x1 = y1 = _mm256_sub_epi16(x1, y1);                                                \
            }                                                                                      \
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x0, y0));                              \
            acc1 = _mm256_add_epi32(acc1, _mm256_madd_epi16(x1, y1));                              \
        }                                                                                          \
        for (; i + 16 <= dim; i += 16) {                                                           \
            __m256i x = LOAD(a + i), y = LOAD(b + i);                                              \
            if (L2) {                                                                              \
                x = y = _mm256_sub_epi16(x, y);                                                    \
            }                                                                                      \
            acc0 = _mm256_add_epi32(acc0, _mm256_madd_epi16(x, y));                                \
        }                                                                                          \
        int32_t s = hsum_epi32(_mm256_add_epi32(acc0, acc1));                                      \
        for (; i < dim; i++) {                                                                     \
            int32_t x = a[i], y = b[i];                                                            \
            if (L2) {                                                                              \
                x = y = x - y;                                                                     \
            }                                                                                      \
            s += x * y;                                                                            \
        }                                                                                          \
        return s;                                                                                  \
    }

QV__INT_KERNEL(l2sq_i8_avx2, int8_t, load_i8_as_i16, 1)
QV__INT_KERNEL(ip_i8_avx2, int8_t, load_i8_as_i16, 0)
QV__INT_KERNEL(l2sq_u8_avx2, uint8_t, load_u8_as_i16, 1)
QV__INT_KERNEL(ip_u8_avx2, uint8_t, load_u8_as_i16, 0)

const qv_kernels qv__kernels_avx2 = {
    .level = QV_SIMD_AVX2,
    .name = "avx2",
    .l2sq_f32 = l2sq_f32_avx2,
    .ip_f32 = ip_f32_avx2,
    .cosine_f32 = cosine_f32_avx2,
    .l2sq_i8 = l2sq_i8_avx2,
    .ip_i8 = ip_i8_avx2,
    .l2sq_u8 = l2sq_u8_avx2,
    .ip_u8 = ip_u8_avx2,
    .l2sq_f32_batch = l2sq_f32_batch_avx2,
};
