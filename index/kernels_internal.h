/*
 * index/kernels_internal.h - private to index/: what the per-level kernel files export to the
 * dispatcher in kernels.c, plus hooks the tests use to reach variants the dispatcher hides.
 *
 * kernels_avx2.c, kernels_avx512.c and kernels_avx512_vnni.c are compiled with -m flags for their
 * instruction sets, so nothing in them may run before kernels.c has checked the CPU: only
 * kernels.c refers to these symbols, and only after that check.
 */
#ifndef QV_INDEX_KERNELS_INTERNAL_H
#define QV_INDEX_KERNELS_INTERNAL_H

#include <math.h>

#include "index/index.h"

/* One table per instruction-set file (defined only when built with HAVE_AVX2 / HAVE_AVX512). */
extern const qv_kernels qv__kernels_avx2;
extern const qv_kernels qv__kernels_avx512;

/* AVX-512 VNNI versions of the integer kernels (HAVE_AVX512_VNNI); they replace the plain
 * AVX-512 ones in the "avx512-vnni" table when the CPU has VNNI. */
int32_t qv__l2sq_i8_avx512vnni(const int8_t *a, const int8_t *b, size_t dim);
int32_t qv__ip_i8_avx512vnni(const int8_t *a, const int8_t *b, size_t dim);
int32_t qv__l2sq_u8_avx512vnni(const uint8_t *a, const uint8_t *b, size_t dim);
int32_t qv__ip_u8_avx512vnni(const uint8_t *a, const uint8_t *b, size_t dim);

/* Bit for a level in an "available levels" mask. */
#define QV__LEVEL_BIT(level) (1u << (unsigned)(level))

/* The level to use given the value of QUIVER_SIMD (NULL or "" when unset) and the mask of levels
 * available here (QV__LEVEL_BIT(QV_SIMD_SCALAR) must be set). Logs a warning (module "index")
 * when the value is refused. Pure otherwise; exposed so tests can exercise refusals on any CPU. */
qv_simd_level qv__kernels_choose(const char *env_value, unsigned available_mask);

/* The AVX-512 table with the plain (non-VNNI) integer kernels, or NULL when the CPU lacks
 * AVX-512; lets tests cover that path on CPUs that have VNNI. */
const qv_kernels *qv__kernels_avx512_plain(void);

/* Cosine distance from the three sums every level computes. The norm product is taken in double:
 * squared norms near FLT_MAX would overflow a float product. */
static inline float qv__cosine_finish(float dot, float norm_a, float norm_b)
{
    if (norm_a <= 0.0f || norm_b <= 0.0f) {
        return 1.0f;
    }
    double cos = (double)dot / sqrt((double)norm_a * (double)norm_b);
    double dist = 1.0 - cos;
    /* Rounding can push |cos| a hair past 1; keep the distance in its mathematical range. */
    if (dist < 0.0) {
        dist = 0.0;
    } else if (dist > 2.0) {
        dist = 2.0;
    }
    return (float)dist;
}

#endif /* QV_INDEX_KERNELS_INTERNAL_H */
