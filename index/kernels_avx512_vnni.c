/*
 * index/kernels_avx512_vnni.c - AVX-512 VNNI integer kernels (compiled with -mavx512f -mavx512bw
 * -mavx512vl -mavx512vnni). kernels.c installs them over the plain AVX-512 integer kernels only
 * when cpuid reports AVX512_VNNI as well as the AVX-512 level.
 *
 * Inner products use vpdpbusd (64 byte products per instruction), which multiplies an UNSIGNED
 * byte by a SIGNED byte. Shifting one operand by 128 makes it fit, and a second vpdpbusd against
 * a vector of ones yields the sum needed to undo the shift:
 *   int8:  sum (a+128) * b  = ip + 128 * sum b          (a+128 is a ^ 0x80 read as uint8)
 *   uint8: sum a * (b-128)  = ip - 128 * sum a          (b-128 is b ^ 0x80 read as int8)
 * Every product fits vpdpbusd's int32 lanes without saturation (|term| <= 255 * 128), and the
 * corrections are done in int64, so the results are exact for dim <= QV_KERNELS_INT_MAX_DIM.
 * Squared L2 has no such trick (a difference of bytes needs 9 bits), so it widens to int16 and
 * uses vpdpwssd, which fuses vpmaddwd and the add.
 */
#include <immintrin.h>

#include "index/kernels_internal.h"

/* Lanes [0, n) of a 64-lane byte mask, n < 64. */
static inline __mmask64 mask64(size_t n)
{
    return (__mmask64)((1ull << n) - 1u);
}

int32_t qv__ip_i8_avx512vnni(const int8_t *a, const int8_t *b, size_t dim)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    __m512i sum0 = _mm512_setzero_si512(), sum1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 128 <= dim; i += 128) {
        __m512i x0 = _mm512_loadu_si512(a + i), y0 = _mm512_loadu_si512(b + i);
        __m512i x1 = _mm512_loadu_si512(a + i + 64), y1 = _mm512_loadu_si512(b + i + 64);
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_xor_si512(x0, flip), y0);
        acc1 = _mm512_dpbusd_epi32(acc1, _mm512_xor_si512(x1, flip), y1);
        sum0 = _mm512_dpbusd_epi32(sum0, ones, y0);
        sum1 = _mm512_dpbusd_epi32(sum1, ones, y1);
    }
    for (; i < dim; i += 64) {
        /* Masked-off bytes load as 0: y = 0 there, so neither sum moves. */
        __mmask64 m = dim - i >= 64 ? ~(__mmask64)0 : mask64(dim - i);
        __m512i x = _mm512_maskz_loadu_epi8(m, a + i), y = _mm512_maskz_loadu_epi8(m, b + i);
        acc0 = _mm512_dpbusd_epi32(acc0, _mm512_xor_si512(x, flip), y);
        sum0 = _mm512_dpbusd_epi32(sum0, ones, y);
    }
    int64_t shifted = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
    int64_t sum_b = _mm512_reduce_add_epi32(_mm512_add_epi32(sum0, sum1));
    return (int32_t)(shifted - 128 * sum_b);
}

int32_t qv__ip_u8_avx512vnni(const uint8_t *a, const uint8_t *b, size_t dim)
{
    const __m512i flip = _mm512_set1_epi8((char)0x80);
    const __m512i ones = _mm512_set1_epi8(1);
    __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();
    __m512i sum0 = _mm512_setzero_si512(), sum1 = _mm512_setzero_si512();
    size_t i = 0;
    for (; i + 128 <= dim; i += 128) {
        __m512i x0 = _mm512_loadu_si512(a + i), y0 = _mm512_loadu_si512(b + i);
        __m512i x1 = _mm512_loadu_si512(a + i + 64), y1 = _mm512_loadu_si512(b + i + 64);
        acc0 = _mm512_dpbusd_epi32(acc0, x0, _mm512_xor_si512(y0, flip));
        acc1 = _mm512_dpbusd_epi32(acc1, x1, _mm512_xor_si512(y1, flip));
        sum0 = _mm512_dpbusd_epi32(sum0, x0, ones);
        sum1 = _mm512_dpbusd_epi32(sum1, x1, ones);
    }
    for (; i < dim; i += 64) {
        /* Masked-off bytes load as 0: x = 0 there, so neither sum moves. */
        __mmask64 m = dim - i >= 64 ? ~(__mmask64)0 : mask64(dim - i);
        __m512i x = _mm512_maskz_loadu_epi8(m, a + i), y = _mm512_maskz_loadu_epi8(m, b + i);
        acc0 = _mm512_dpbusd_epi32(acc0, x, _mm512_xor_si512(y, flip));
        sum0 = _mm512_dpbusd_epi32(sum0, x, ones);
    }
    int64_t shifted = _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));
    int64_t sum_a = _mm512_reduce_add_epi32(_mm512_add_epi32(sum0, sum1));
    return (int32_t)(shifted + 128 * sum_a);
}

/* Squared L2 over 32 elements at a time widened to int16; CVT picks sign or zero extension. */
#define QV__L2_KERNEL(fname, T, CVT)                                                               \
    int32_t fname(const T *a, const T *b, size_t dim)                                              \
    {                                                                                              \
        const __mmask32 all = (__mmask32)0xffffffffu;                                              \
        __m512i acc0 = _mm512_setzero_si512(), acc1 = _mm512_setzero_si512();                      \
        size_t i = 0;                                                                              \
        for (; i + 64 <= dim; i += 64) {                                                           \
            __m512i d0 = _mm512_sub_epi16(CVT(_mm256_loadu_si256((const void *)(a + i))),          \
                                          CVT(_mm256_loadu_si256((const void *)(b + i))));         \
            __m512i d1 = _mm512_sub_epi16(CVT(_mm256_loadu_si256((const void *)(a + i + 32))),     \
                                          CVT(_mm256_loadu_si256((const void *)(b + i + 32))));    \
            acc0 = _mm512_dpwssd_epi32(acc0, d0, d0);                                              \
            acc1 = _mm512_dpwssd_epi32(acc1, d1, d1);                                              \
        }                                                                                          \
        for (; i < dim; i += 32) {                                                                 \
            __mmask32 m = dim - i >= 32 ? all : (__mmask32)((1u << (dim - i)) - 1u);               \
            __m512i d = _mm512_sub_epi16(CVT(_mm256_maskz_loadu_epi8(m, a + i)),                   \
                                         CVT(_mm256_maskz_loadu_epi8(m, b + i)));                  \
            acc0 = _mm512_dpwssd_epi32(acc0, d, d);                                                \
        }                                                                                          \
        return _mm512_reduce_add_epi32(_mm512_add_epi32(acc0, acc1));                              \
    }

QV__L2_KERNEL(qv__l2sq_i8_avx512vnni, int8_t, _mm512_cvtepi8_epi16)
QV__L2_KERNEL(qv__l2sq_u8_avx512vnni, uint8_t, _mm512_cvtepu8_epi16)
