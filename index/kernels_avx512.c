/*
 * index/kernels_avx512.c - AVX-512 distance kernels (compiled with -mavx512f -mavx512bw
 * -mavx512vl; F for the float math, BW for the int16 arithmetic and byte masks, VL for the
 * 256-bit masked byte loads).
 *
 * Only kernels.c may reach these, through qv__kernels_avx512, after checking the CPU and the OS.
 * Float kernels keep four 16-lane accumulators and finish the last dim % 16 elements with one
 * masked load (masked-off lanes are neither read nor faulted on, so a vector ending at a page
 * boundary is safe) instead of a scalar loop. The integer kernels here avoid VNNI; the VNNI ones
 * are in kernels_avx512_vnni.c, chosen by their own cpuid check.
 */
#include <immintrin.h>

#include "index/kernels_internal.h"

/* Lanes [0, n) of a 16-lane mask, n < 16. */
static inline __mmask16 mask16(size_t n)
{
    return (__mmask16)((1u << n) - 1u);
}

/* ---------------------------------------------------------------------------------------------
 * float
 * ------------------------------------------------------------------------------------------- */

static inline float l2sq_f32_core(const float *a, const float *b, size_t dim)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        __m512 d0 = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        __m512 d1 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16));
        __m512 d2 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32));
        __m512 d3 = _mm512_sub_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48));
        acc0 = _mm512_fmadd_ps(d0, d0, acc0);
        acc1 = _mm512_fmadd_ps(d1, d1, acc1);
        acc2 = _mm512_fmadd_ps(d2, d2, acc2);
        acc3 = _mm512_fmadd_ps(d3, d3, acc3);
    }
    for (; i + 16 <= dim; i += 16) {
        __m512 d = _mm512_sub_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i));
        acc0 = _mm512_fmadd_ps(d, d, acc0);
    }
    if (i < dim) {
        __mmask16 m = mask16(dim - i);
        __m512 d = _mm512_sub_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i));
        acc1 = _mm512_fmadd_ps(d, d, acc1);
    }
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

static float l2sq_f32_avx512(const float *a, const float *b, size_t dim)
{
    return l2sq_f32_core(a, b, dim);
}

static void l2sq_f32_batch_avx512(const float *q, const float *base, size_t n, size_t dim,
                                  size_t stride, float *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = l2sq_f32_core(q, base + i * stride, dim);
    }
}

static float ip_f32_avx512(const float *a, const float *b, size_t dim)
{
    __m512 acc0 = _mm512_setzero_ps(), acc1 = _mm512_setzero_ps();
    __m512 acc2 = _mm512_setzero_ps(), acc3 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 64 <= dim; i += 64) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
        acc1 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 16), _mm512_loadu_ps(b + i + 16), acc1);
        acc2 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 32), _mm512_loadu_ps(b + i + 32), acc2);
        acc3 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i + 48), _mm512_loadu_ps(b + i + 48), acc3);
    }
    for (; i + 16 <= dim; i += 16) {
        acc0 = _mm512_fmadd_ps(_mm512_loadu_ps(a + i), _mm512_loadu_ps(b + i), acc0);
    }
    if (i < dim) {
        __mmask16 m = mask16(dim - i);
        acc1 =
            _mm512_fmadd_ps(_mm512_maskz_loadu_ps(m, a + i), _mm512_maskz_loadu_ps(m, b + i), acc1);
    }
    return _mm512_reduce_add_ps(
        _mm512_add_ps(_mm512_add_ps(acc0, acc1), _mm512_add_ps(acc2, acc3)));
}

static float cosine_f32_avx512(const float *a, const float *b, size_t dim)
{
    __m512 dot0 = _mm512_setzero_ps(), dot1 = _mm512_setzero_ps();
    __m512 na0 = _mm512_setzero_ps(), na1 = _mm512_setzero_ps();
    __m512 nb0 = _mm512_setzero_ps(), nb1 = _mm512_setzero_ps();
    size_t i = 0;
    for (; i + 32 <= dim; i += 32) {
        __m512 x0 = _mm512_loadu_ps(a + i), y0 = _mm512_loadu_ps(b + i);
        __m512 x1 = _mm512_loadu_ps(a + i + 16), y1 = _mm512_loadu_ps(b + i + 16);
        dot0 = _mm512_fmadd_ps(x0, y0, dot0);
        dot1 = _mm512_fmadd_ps(x1, y1, dot1);
        na0 = _mm512_fmadd_ps(x0, x0, na0);
        na1 = _mm512_fmadd_ps(x1, x1, na1);
        nb0 = _mm512_fmadd_ps(y0, y0, nb0);
        nb1 = _mm512_fmadd_ps(y1, y1, nb1);
    }
    for (; i < dim; i += 16) {
        /* Full blocks and then the tail, masked: at most two passes. */
        __mmask16 m = dim - i >= 16 ? (__mmask16)0xffff : mask16(dim - i);
        __m512 x = _mm512_maskz_loadu_ps(m, a + i), y = _mm512_maskz_loadu_ps(m, b + i);
        dot0 = _mm512_fmadd_ps(x, y, dot0);
        na0 = _mm512_fmadd_ps(x, x, na0);
        nb0 = _mm512_fmadd_ps(y, y, nb0);
    }
    return qv__cosine_finish(_mm512_reduce_add_ps(_mm512_add_ps(dot0, dot1)),
                             _mm512_reduce_add_ps(_mm512_add_ps(na0, na1)),
                             _mm512_reduce_add_ps(_mm512_add_ps(nb0, nb1)));
}

/* ---------------------------------------------------------------------------------------------
 * int8 / uint8: 32 elements widened to int16 per step (vpmovsxbw / vpmovzxbw), vpmaddwd into
 * int32 lanes; the tail is one masked 32-byte load. Exact for dim <= QV_KERNELS_INT_MAX_DIM.
 * ------------------------------------------------------------------------------------------- */

static inline __m512i load_i8_as_i16(const int8_t *p, __mmask32 m)
{
    return _mm512_cvtepi8_epi16(_mm256_maskz_loadu_epi8(m, p));
}

static inline __m512i load_u8_as_i16(const uint8_t *p, __mmask32 m)
{
    return _mm512_cvtepu8_epi16(_mm256_maskz_loadu_epi8(m, p));
}

/* Instantiates one integer kernel: LOAD widens up to 32 elements of T to int16 under a mask;
 * L2 (a literal 0 or 1, folded at compile time) squares the difference, else multiplies the
 * operands. */
#define QV__INT_KERNEL(fname, T, LOAD, L2)                                                         \
    static int32_t fname(const T *a, const T *b, size_t dim)                                       \
    {                                                                                              \
        const __mmask32 all = (__mmask32)0xffffffffu;                                              \
        __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();                      \
        size_t i = 0;                                                                              \
        for (; i + 64 <= dim; i += 64) {                                                           \
            __m512i x0 = LOAD(a + i, all), y0 = LOAD(b + i, all);                                  \
            __m512i x1 = LOAD(a + i + 32, all), y1 = LOAD(b + i + 32, all);                        \
            if (L2) {                                                                              \
                x0 = y0 = _mm512_sub_epi16(x0, y0);                                                \
                x1 = y1 = _mm512_sub_epi16(x1, y1);                                                \
            }                                                                                      \
            acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(x0, y0));                              \
            acc1 = _mm512_add_epi32(acc1, _mm512_madd_epi16(x1, y1));                              \
        }                                                                                          \
        for (; i < dim; i += 32) {                                                                 \
            __mmask32 m = dim - i >= 32 ? all : (__mmask32)((1u << (dim - i)) - 1u);               \
            __m512i x = LOAD(a + i, m), y = LOAD(b + i, m);                                        \
            if (L2) {                                                                              \
                x = y = _mm512_sub_epi16(x, y);                                                    \
            }                                                                                      \
            acc0 = _mm512_add_epi32(acc0, _mm512_madd_epi16(x, y));                                \
        }                                                                                          \
        return _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));                              \
    }

QV__INT_KERNEL(l2sq_i8_avx512, int8_t, load_i8_as_i16, 1)
QV__INT_KERNEL(ip_i8_avx512, int8_t, load_i8_as_i16, 0)
QV__INT_KERNEL(l2sq_u8_avx512, uint8_t, load_u8_as_i16, 1)
QV__INT_KERNEL(ip_u8_avx512, uint8_t, load_u8_as_i16, 0)

const qv_kernels qv__kernels_avx512 = {
    .level = QV_SIMD_AVX512,
    .name = "avx512",
    .l2sq_f32 = l2sq_f32_avx512,
    .ip_f32 = ip_f32_avx512,
    .cosine_f32 = cosine_f32_avx512,
    .l2sq_i8 = l2sq_i8_avx512,
    .ip_i8 = ip_i8_avx512,
    .l2sq_u8 = l2sq_u8_avx512,
    .ip_u8 = ip_u8_avx512,
    .l2sq_f32_batch = l2sq_f32_batch_avx512,
};
