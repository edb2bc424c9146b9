/*
 * index/index.h - the public interface of Quiver's index module.
 *
 * For now this header holds only the distance kernels. It will also carry the index vtable
 * (add / remove / search / snapshot over flat, HNSW and IVF-PQ) described in DESIGN.md; everything
 * else in index/ stays private to the module.
 *
 * Distance kernels
 * ----------------
 * Every kernel exists in up to three builds: portable C ("scalar"), AVX2+FMA and AVX-512
 * (F+BW+VL, with a VNNI path for the integer kernels where the CPU has it). The best build this CPU
 * and OS support is chosen once per process, on the first call to qv_kernels_get() or
 * qv_kernels_level(), and handed out as a table of function pointers: hot loops fetch the table
 * once and call through it, so no kernel tests CPU features per call.
 *
 * Environment: QUIVER_SIMD=scalar|avx2|avx512 caps the choice (read once, at that first call).
 * A level the CPU or OS lacks, or an unknown value, is refused with a warning in the log (stderr
 * unless qv_log_set_fd() moved it) and the best available level is used instead. Useful to compare
 * levels in production or to rule out a SIMD bug; it changes speed, and float results in their last
 * bits (summation order differs between levels), never integer results.
 *
 * Caveats for operators:
 *   - Float kernels sum in float with several accumulators; results differ between levels by a
 *     few ulps times the dimension. Do not expect bit-identical float distances across machines
 *     with different SIMD levels (integer kernels are exact everywhere).
 *   - On some older Xeons (Skylake-SP) sustained 512-bit FMA work lowers the core clock; if a
 *     node shares its cores with latency-sensitive work, QUIVER_SIMD=avx2 may be the better trade.
 *   - The integer kernels return int32_t and are exact for dim <= QV_KERNELS_INT_MAX_DIM.
 */
#ifndef QV_INDEX_H
#define QV_INDEX_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* How two vectors are compared. The numeric values are stored in snapshots and sent on the wire:
 * never renumber them. */
typedef enum qv_metric {
    QV_METRIC_L2 = 1,     /* squared Euclidean distance, smaller is closer */
    QV_METRIC_IP = 2,     /* inner product, larger is closer */
    QV_METRIC_COSINE = 3, /* cosine distance 1 - cos(a, b), in [0, 2], smaller is closer */
} qv_metric;

/* Instruction-set levels a kernel table can be built for, in rising order of preference. */
typedef enum qv_simd_level {
    QV_SIMD_SCALAR = 0, /* portable C, always available */
    QV_SIMD_AVX2 = 1,   /* x86-64 AVX2 + FMA, OS saves YMM state */
    QV_SIMD_AVX512 = 2, /* x86-64 AVX-512 F+BW+VL, OS saves ZMM and opmask state */
} qv_simd_level;

/* Largest dimension for which the integer kernels cannot overflow their int32_t result:
 * 32768 * 255^2 = 2 130 739 200 < 2^31 - 1 (255 = widest int8 difference, largest uint8 value). */
#define QV_KERNELS_INT_MAX_DIM 32768

/* Signatures shared by the kernels, for callers that pick one per metric up front. */
typedef float (*qv_dist_f32_fn)(const float *a, const float *b, size_t dim);
typedef int32_t (*qv_dist_i8_fn)(const int8_t *a, const int8_t *b, size_t dim);
typedef int32_t (*qv_dist_u8_fn)(const uint8_t *a, const uint8_t *b, size_t dim);

/*
 * A table of distance kernels, all built for one SIMD level.
 *
 * Common contract of every kernel below:
 *   - `a`, `b` (and `q`, `base`) are read-only and borrowed for the duration of the call; they
 *     must each point to at least `dim` readable elements. No alignment is required: any pointer
 *     valid for the element type works (64-byte aligned vectors, as the index stores them, are
 *     merely faster). Kernels never read outside [p, p + dim).
 *   - dim == 0 is allowed (sums are 0; cosine distance is 1).
 *   - Float inputs must be finite; NaN or infinity propagates into the result unspecified.
 *   - Kernels keep no state: any number of threads may call any kernel at once.
 */
typedef struct qv_kernels {
    qv_simd_level level; /* the level these kernels were built for */
    const char *name;    /* static string: "scalar", "avx2", "avx512" or "avx512-vnni" */

    /* sum_i (a[i] - b[i])^2, accumulated in float. */
    float (*l2sq_f32)(const float *a, const float *b, size_t dim);
    /* sum_i a[i] * b[i], accumulated in float. */
    float (*ip_f32)(const float *a, const float *b, size_t dim);
    /* 1 - <a,b> / (|a| |b|), clamped to [0, 2]; exactly 1 when |a| or |b| is 0 (also when the
     * squared norm underflows to 0 in float). */
    float (*cosine_f32)(const float *a, const float *b, size_t dim);

    /* Exact integer versions for scalar-quantized vectors; require dim <= QV_KERNELS_INT_MAX_DIM.
     * l2sq: sum_i (a[i] - b[i])^2. ip: sum_i a[i] * b[i]. */
    int32_t (*l2sq_i8)(const int8_t *a, const int8_t *b, size_t dim);
    int32_t (*ip_i8)(const int8_t *a, const int8_t *b, size_t dim);
    int32_t (*l2sq_u8)(const uint8_t *a, const uint8_t *b, size_t dim);
    int32_t (*ip_u8)(const uint8_t *a, const uint8_t *b, size_t dim);

    /* One query against n vectors: out[i] = l2sq_f32(q, base + i * stride, dim) for i < n, each
     * bit-identical to the single-pair kernel of the same table. `stride` counts floats between
     * the starts of consecutive vectors (stride >= dim). `out` is caller-owned, holds n floats and
     * must not overlap the inputs. n == 0 writes nothing. */
    void (*l2sq_f32_batch)(const float *q, const float *base, size_t n, size_t dim, size_t stride,
                           float *out);
} qv_kernels;

/* The kernel table for the best level this CPU and OS support, capped by QUIVER_SIMD if set.
 * The choice is made once, on the first call (thread-safe: concurrent first calls agree), and
 * the returned table is static: never NULL, valid for the life of the process, not to be freed.
 * Callers should fetch it once and keep the pointer rather than call this in a hot loop. */
const qv_kernels *qv_kernels_get(void);

/* The kernel table for exactly `level`, or NULL when the CPU/OS lacks it or this build was
 * compiled without it (or `level` is not a qv_simd_level). Ignores QUIVER_SIMD: meant for tests
 * and benchmarks that compare levels. Static result, as for qv_kernels_get(); thread-safe. */
const qv_kernels *qv_kernels_for(qv_simd_level level);

/* The level of the table qv_kernels_get() returns (makes the same one-time choice). */
qv_simd_level qv_kernels_level(void);

/* "scalar", "avx2" or "avx512" (the spelling QUIVER_SIMD accepts); "unknown" for other values.
 * Static string, never NULL. */
const char *qv_simd_level_name(qv_simd_level level);

#ifdef __cplusplus
}
#endif

#endif /* QV_INDEX_H */
