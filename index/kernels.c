/*
 * index/kernels.c - portable distance kernels and the run-time choice of kernel table.
 *
 * Map: scalar kernels (the fallback and the table every other level is tested against), then CPU
 * feature detection (cpuid + xgetbv, once), then the QUIVER_SIMD override and the public getters.
 * The AVX2 / AVX-512 kernels live in their own files, compiled with their -m flags; this file is
 * compiled for the baseline target and is the only one that calls into them, after the checks.
 */
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "common/common.h"
#include "index/kernels_internal.h"

#if defined(__x86_64__) || defined(__i386__)
#include <cpuid.h>
#define QV__X86 1
#endif

/* ---------------------------------------------------------------------------------------------
 * Scalar kernels
 *
 * Four independent accumulators: shorter dependency chains let the CPU overlap the adds (and
 * halve the worst-case rounding growth), without asking the compiler for -ffast-math.
 * ------------------------------------------------------------------------------------------- */

static inline float l2sq_f32_core(const float *a, const float *b, size_t dim)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    size_t i = 0;
    for (; i + 4 <= dim; i += 4) {
        float d0 = a[i] - b[i], d1 = a[i + 1] - b[i + 1];
        float d2 = a[i + 2] - b[i + 2], d3 = a[i + 3] - b[i + 3];
        s0 += d0 * d0;
        s1 += d1 * d1;
        s2 += d2 * d2;
        s3 += d3 * d3;
    }
    for (; i < dim; i++) {
        float d = a[i] - b[i];
        s0 += d * d;
    }
    return (s0 + s1) + (s2 + s3);
}

static float l2sq_f32_scalar(const float *a, const float *b, size_t dim)
{
    return l2sq_f32_core(a, b, dim);
}

static float ip_f32_scalar(const float *a, const float *b, size_t dim)
{
    float s0 = 0.0f, s1 = 0.0f, s2 = 0.0f, s3 = 0.0f;
    size_t i = 0;
    for (; i + 4 <= dim; i += 4) {
        s0 += a[i] * b[i];
        s1 += a[i + 1] * b[i + 1];
        s2 += a[i + 2] * b[i + 2];
        s3 += a[i + 3] * b[i + 3];
    }
    for (; i < dim; i++) {
        s0 += a[i] * b[i];
    }
    return (s0 + s1) + (s2 + s3);
}

static float cosine_f32_scalar(const float *a, const float *b, size_t dim)
{
    float dot[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float na[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    float nb[4] = {0.0f, 0.0f, 0.0f, 0.0f};
    size_t i = 0;
    for (; i + 4 <= dim; i += 4) {
        for (size_t j = 0; j < 4; j++) {
            dot[j] += a[i + j] * b[i + j];
            na[j] += a[i + j] * a[i + j];
            nb[j] += b[i + j] * b[i + j];
        }
    }
    for (; i < dim; i++) {
        dot[0] += a[i] * b[i];
        na[0] += a[i] * a[i];
        nb[0] += b[i] * b[i];
    }
    return qv__cosine_finish((dot[0] + dot[1]) + (dot[2] + dot[3]),
                             (na[0] + na[1]) + (na[2] + na[3]), (nb[0] + nb[1]) + (nb[2] + nb[3]));
}

/* Integer sums are exact in any order, so plain loops: the compiler may vectorise them. */
static int32_t l2sq_i8_scalar(const int8_t *a, const int8_t *b, size_t dim)
{
    int32_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        int32_t d = (int32_t)a[i] - (int32_t)b[i];
        s += d * d;
    }
    return s;
}

static int32_t ip_i8_scalar(const int8_t *a, const int8_t *b, size_t dim)
{
    int32_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        s += (int32_t)a[i] * (int32_t)b[i];
    }
    return s;
}

static int32_t l2sq_u8_scalar(const uint8_t *a, const uint8_t *b, size_t dim)
{
    int32_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        int32_t d = (int32_t)a[i] - (int32_t)b[i];
        s += d * d;
    }
    return s;
}

static int32_t ip_u8_scalar(const uint8_t *a, const uint8_t *b, size_t dim)
{
    int32_t s = 0;
    for (size_t i = 0; i < dim; i++) {
        s += (int32_t)a[i] * (int32_t)b[i];
    }
    return s;
}

static void l2sq_f32_batch_scalar(const float *q, const float *base, size_t n, size_t dim,
                                  size_t stride, float *out)
{
    for (size_t i = 0; i < n; i++) {
        out[i] = l2sq_f32_core(q, base + i * stride, dim);
    }
}

static const qv_kernels kernels_scalar = {
    .level = QV_SIMD_SCALAR,
    .name = "scalar",
    .l2sq_f32 = l2sq_f32_scalar,
    .ip_f32 = ip_f32_scalar,
    .cosine_f32 = cosine_f32_scalar,
    .l2sq_i8 = l2sq_i8_scalar,
    .ip_i8 = ip_i8_scalar,
    .l2sq_u8 = l2sq_u8_scalar,
    .ip_u8 = ip_u8_scalar,
    .l2sq_f32_batch = l2sq_f32_batch_scalar,
};

/* ---------------------------------------------------------------------------------------------
 * CPU detection
 *
 * A feature is usable only if the CPU has it (cpuid) AND the OS saves its register state across
 * context switches (XCR0 via xgetbv): a kernel booted with AVX-512 state disabled, or a VM that
 * hides it, reports the cpuid bits but faults on the instructions.
 * ------------------------------------------------------------------------------------------- */

static pthread_once_t detect_once = PTHREAD_ONCE_INIT;
static unsigned available_mask; /* QV__LEVEL_BIT of each usable level */
#if defined(HAVE_AVX512) && defined(HAVE_AVX512_VNNI)
static bool avx512_vnni;               /* AVX512_VNNI usable on top of the AVX-512 level */
static qv_kernels kernels_avx512_vnni; /* filled once by detect(), read-only afterwards */
#endif

#ifdef QV__X86
static uint64_t read_xcr0(void)
{
    uint32_t lo, hi;
    /* The xgetbv mnemonic rather than _xgetbv(): the intrinsic needs -mxsave on this file. */
    __asm__ volatile("xgetbv" : "=a"(lo), "=d"(hi) : "c"(0));
    return ((uint64_t)hi << 32) | lo;
}
#endif

static void detect(void)
{
    available_mask = QV__LEVEL_BIT(QV_SIMD_SCALAR);
#ifdef QV__X86
    unsigned eax, ebx, ecx, edx;
    if (!__get_cpuid(1, &eax, &ebx, &ecx, &edx)) {
        return;
    }
    bool fma = (ecx & bit_FMA) != 0;
    if (!(ecx & bit_OSXSAVE) || !(ecx & bit_AVX)) {
        return;
    }
    uint64_t xcr0 = read_xcr0();
    bool os_ymm = (xcr0 & 0x06) == 0x06; /* SSE + AVX state */
    bool os_zmm = (xcr0 & 0xe6) == 0xe6; /* + opmask, ZMM0-15 upper halves, ZMM16-31 */
    if (__get_cpuid_max(0, NULL) < 7) {
        return;
    }
    __cpuid_count(7, 0, eax, ebx, ecx, edx);
    bool avx2 = (ebx & bit_AVX2) != 0;
    bool avx512 = (ebx & bit_AVX512F) && (ebx & bit_AVX512BW) && (ebx & bit_AVX512VL);
    bool vnni = (ecx & bit_AVX512VNNI) != 0;

#ifdef HAVE_AVX2
    if (os_ymm && avx2 && fma) {
        available_mask |= QV__LEVEL_BIT(QV_SIMD_AVX2);
    }
#endif
#ifdef HAVE_AVX512
    if (os_zmm && avx512) {
        available_mask |= QV__LEVEL_BIT(QV_SIMD_AVX512);
#ifdef HAVE_AVX512_VNNI
        if (vnni) {
            avx512_vnni = true;
            kernels_avx512_vnni = qv__kernels_avx512;
            kernels_avx512_vnni.name = "avx512-vnni";
            kernels_avx512_vnni.l2sq_i8 = qv__l2sq_i8_avx512vnni;
            kernels_avx512_vnni.ip_i8 = qv__ip_i8_avx512vnni;
            kernels_avx512_vnni.l2sq_u8 = qv__l2sq_u8_avx512vnni;
            kernels_avx512_vnni.ip_u8 = qv__ip_u8_avx512vnni;
        }
#endif
    }
#endif
    /* Some of these go unused when a level is not compiled in. */
    (void)os_ymm;
    (void)os_zmm;
    (void)avx2;
    (void)avx512;
    (void)vnni;
    (void)fma;
#endif /* QV__X86 */
}

/* Table for a level known to be available. */
static const qv_kernels *table_of(qv_simd_level level)
{
    switch (level) {
#ifdef HAVE_AVX2
    case QV_SIMD_AVX2:
        return &qv__kernels_avx2;
#endif
#ifdef HAVE_AVX512
    case QV_SIMD_AVX512:
#ifdef HAVE_AVX512_VNNI
        if (avx512_vnni) {
            return &kernels_avx512_vnni;
        }
#endif
        return &qv__kernels_avx512;
#endif
    default:
        return &kernels_scalar;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Choice and public getters
 * ------------------------------------------------------------------------------------------- */

static qv_simd_level best_of(unsigned mask)
{
    if (mask & QV__LEVEL_BIT(QV_SIMD_AVX512)) {
        return QV_SIMD_AVX512;
    }
    if (mask & QV__LEVEL_BIT(QV_SIMD_AVX2)) {
        return QV_SIMD_AVX2;
    }
    return QV_SIMD_SCALAR;
}

qv_simd_level qv__kernels_choose(const char *env_value, unsigned mask)
{
    qv_simd_level best = best_of(mask);
    if (env_value == NULL || env_value[0] == '\0') {
        return best;
    }
    static const qv_simd_level levels[] = {QV_SIMD_SCALAR, QV_SIMD_AVX2, QV_SIMD_AVX512};
    for (size_t i = 0; i < sizeof levels / sizeof levels[0]; i++) {
        if (strcmp(env_value, qv_simd_level_name(levels[i])) != 0) {
            continue;
        }
        if (mask & QV__LEVEL_BIT(levels[i])) {
            return levels[i];
        }
        qv_log_warn("index", "QUIVER_SIMD=%s refused: this CPU/OS or build lacks it; using %s",
                    env_value, qv_simd_level_name(best));
        return best;
    }
    qv_log_warn("index", "QUIVER_SIMD=%s not understood (expected scalar|avx2|avx512); using %s",
                env_value, qv_simd_level_name(best));
    return best;
}

static pthread_once_t select_once = PTHREAD_ONCE_INIT;
static const qv_kernels *selected;

static void select_kernels(void)
{
    pthread_once(&detect_once, detect);
    selected = table_of(qv__kernels_choose(getenv("QUIVER_SIMD"), available_mask));
}

const qv_kernels *qv_kernels_get(void)
{
    pthread_once(&select_once, select_kernels);
    return selected;
}

qv_simd_level qv_kernels_level(void)
{
    return qv_kernels_get()->level;
}

const qv_kernels *qv_kernels_for(qv_simd_level level)
{
    pthread_once(&detect_once, detect);
    if ((unsigned)level >= 32 || !(available_mask & QV__LEVEL_BIT(level))) {
        return NULL;
    }
    return table_of(level);
}

const qv_kernels *qv__kernels_avx512_plain(void)
{
#ifdef HAVE_AVX512
    pthread_once(&detect_once, detect);
    if (available_mask & QV__LEVEL_BIT(QV_SIMD_AVX512)) {
        return &qv__kernels_avx512;
    }
#endif
    return NULL;
}

const char *qv_simd_level_name(qv_simd_level level)
{
    switch (level) {
    case QV_SIMD_SCALAR:
        return "scalar";
    case QV_SIMD_AVX2:
        return "avx2";
    case QV_SIMD_AVX512:
        return "avx512";
    }
    return "unknown";
}
