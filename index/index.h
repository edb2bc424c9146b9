/*
 * index/index.h - the public interface of Quiver's index module.
 *
 * Two parts: the distance kernels, then the index interface (one handle type, qv_index, over the
 * flat, HNSW and IVF index types). Everything else in index/ is private to the module. Nothing in
 * index/ knows about RPC or storage.
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

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <roaring/roaring.h>

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

/* =============================================================================================
 * Indexes
 *
 * One interface over every index type. Ids are the caller's uint64 labels (in a shard: the
 * point's dense per-shard number). Distances are "smaller is closer" for every metric:
 *   L2: squared Euclidean;  IP: minus the inner product;  COSINE: 1 - cos (vectors are stored
 *   normalised, so cosine runs as inner product internally).
 *
 * Thread-safety: any number of searches (qv_index_search / _batch / _stats) may run concurrently
 * with each other and with one writer at a time (qv_index_add / _remove / _compact). Writers are
 * serialised by the index itself, so concurrent writers are safe too, just not parallel.
 * qv_index_save may run concurrently with searches, not with writers (it takes the writer lock).
 * ============================================================================================= */

typedef enum qv_index_type {
    QV_INDEX_FLAT = 1,     /* exact: every search scans every vector */
    QV_INDEX_HNSW = 2,     /* hierarchical navigable small-world graph */
    QV_INDEX_IVF_FLAT = 3, /* inverted lists over k-means cells, full vectors in the lists */
} qv_index_type;

/* How HNSW keeps vectors in RAM for graph traversal. */
typedef enum qv_storage {
    QV_STORAGE_F32 = 0,  /* float32: exact distances during traversal */
    QV_STORAGE_INT8 = 1, /* 8-bit scalar quantisation trained on the data; the top candidates are
                            re-ranked on float32 vectors (kept in a separate, mmap-able area) */
} qv_storage;

#define QV_INDEX_MAX_DIM 65536u
#define QV_INDEX_MAX_K   10000u

typedef struct qv_hnsw_params {
    uint32_t M;               /* links per node on upper layers (layer 0 has 2*M); 4..128, def 16 */
    uint32_t ef_construction; /* candidate list while inserting; >= M, default 200 */
    uint32_t ef_search; /* default candidate list while searching (>= k is enforced), def 64 */
    uint32_t rerank;    /* INT8: candidates re-ranked on float32 (0: max(ef, 2k)) */
    uint64_t seed;      /* level generator seed; same seed + same inserts = same graph */
} qv_hnsw_params;

typedef struct qv_ivf_params {
    uint32_t nlist;      /* k-means cells; 1..65536, default 1024 (or n/39 when trained on fewer) */
    uint32_t nprobe;     /* default cells searched, 1..nlist, default 16 */
    uint32_t train_size; /* vectors sampled for k-means (0: min(n, 256 * nlist)) */
    uint32_t iters;      /* k-means iterations, default 20 */
    uint64_t seed;
} qv_ivf_params;

typedef struct qv_index_params {
    qv_index_type type;
    qv_metric metric;
    uint32_t dim;       /* 1..QV_INDEX_MAX_DIM */
    qv_storage storage; /* HNSW only; FLAT and IVF_FLAT store float32 */
    unsigned threads;   /* threads for building and batch work; 0: every online CPU */
    qv_hnsw_params hnsw;
    qv_ivf_params ivf;
} qv_index_params;

/* Fills *p with the defaults for a type, metric and dimension (the values documented above). */
void qv_index_params_default(qv_index_params *p, qv_index_type type, qv_metric metric,
                             uint32_t dim);

/* Per-search knobs; zero fields take the index's defaults. */
typedef struct qv_search_params {
    uint32_t ef;     /* HNSW candidate list (raised to k when smaller) */
    uint32_t nprobe; /* IVF cells to search */
    uint32_t rerank; /* HNSW INT8: candidates re-ranked on float32 */
    bool exact;      /* scan every allowed vector instead of the approximate structure */
} qv_search_params;

/* An allow-list handed into a search: only ids that pass are ever returned, and HNSW applies it
 * during traversal (not by post-filtering). Either or both may be set; an id must pass both.
 * `allow` holds ids < 2^32 (ids above never pass a bitmap). `pred` must be thread-safe and cheap.
 * When few ids are allowed (by the bitmap's cardinality, or `expected_allowed` for a predicate),
 * the index switches to an exact scan of the allowed set, where graph search would lose recall. */
typedef struct qv_filter {
    const roaring_bitmap_t *allow;
    bool (*pred)(uint64_t id, void *ctx);
    void *ctx;
    uint64_t expected_allowed; /* 0: unknown (for pred-only filters) */
} qv_filter;

typedef struct qv_hit {
    uint64_t id;
    float distance;
} qv_hit;

typedef struct qv_index_stats {
    qv_index_type type;
    qv_metric metric;
    qv_storage storage;
    uint32_t dim;
    uint64_t count;         /* live vectors */
    uint64_t deleted;       /* tombstones not yet compacted away */
    uint64_t bytes_ram;     /* bytes the index keeps in RAM for search (graph, codes, lists) */
    uint64_t bytes_vectors; /* float32 vectors kept for re-rank / exact search; for INT8 HNSW
                               loaded with mmap these live in the page cache, not the heap */
    uint32_t max_level;     /* HNSW: top layer */
    bool trained;           /* IVF / INT8: quantiser or cells trained */
    qv_index_params params;
} qv_index_stats;

typedef struct qv_index qv_index;

/* Creates an empty index. Errors: QV_EINVAL (with a message) for out-of-range parameters. */
int qv_index_create(const qv_index_params *p, qv_index **out, qv_status *err);

/* Frees the index and everything it owns (unmaps a loaded file). NULL is ignored. No search may
 * be running. */
void qv_index_free(qv_index *idx);

/* Adds n vectors (row-major, n * dim floats) with their ids; an id already present is replaced
 * (upsert). Vectors must be finite (QV_EINVAL otherwise, nothing added). The first add to an
 * untrained IVF or INT8 index trains it on this batch (or call qv_index_train first with a
 * representative sample). Duplicate ids within a batch: the last wins. All or nothing: on error
 * the index is unchanged. Errors: QV_EINVAL, QV_ERESOURCE. */
int qv_index_add(qv_index *idx, const uint64_t *ids, const float *vecs, size_t n, qv_status *err);

/* Trains the quantiser (INT8) or the cells (IVF) on a sample, before any add. QV_EPRECONDITION
 * once vectors were added; a no-op for FLAT and F32 HNSW. */
int qv_index_train(qv_index *idx, const float *vecs, size_t n, qv_status *err);

/* Removes ids (unknown ids are ignored); *removed (may be NULL) gets how many were present.
 * HNSW keeps tombstones that are never returned until qv_index_compact repairs the graph. */
int qv_index_remove(qv_index *idx, const uint64_t *ids, size_t n, size_t *removed);

/* Repairs the graph around tombstones and frees their slots (HNSW); a no-op for other types. */
int qv_index_compact(qv_index *idx, qv_status *err);

/* The k nearest allowed vectors to `query` (dim floats), closest first, into out[0..*nout).
 * `out` holds k entries; *nout < k when fewer vectors are allowed. sp and filter may be NULL.
 * Errors: QV_EINVAL (k == 0 or > QV_INDEX_MAX_K, non-finite query). */
int qv_index_search(qv_index *idx, const float *query, size_t k, const qv_search_params *sp,
                    const qv_filter *filter, qv_hit *out, size_t *nout, qv_status *err);

/* nq queries at once, spread over `threads` threads (0: the index's thread count). Results of
 * query i go to out[i * k ..] with counts[i] entries. FLAT answers with OpenBLAS sgemm blocks. */
int qv_index_search_batch(qv_index *idx, const float *queries, size_t nq, size_t k,
                          const qv_search_params *sp, const qv_filter *filter, unsigned threads,
                          qv_hit *out, size_t *counts, qv_status *err);

/* Whether `id` is present (not deleted). */
bool qv_index_contains(qv_index *idx, uint64_t id);

void qv_index_stats_get(qv_index *idx, qv_index_stats *out);

/* Writes the whole index to one file (versioned header, per-section CRC-32C), atomically:
 * a temporary file, fsync, rename. Errors: QV_EIO-like codes from the file system with a message.
 */
int qv_index_save(qv_index *idx, const char *path, qv_status *err);

enum {
    QV_LOAD_MMAP = 1, /* map the file instead of reading it: large sections (vectors) stay in the
                         page cache; the index is then read-only until the first write copies */
};

/* Loads an index saved by qv_index_save. A file that is truncated, corrupt (checksum), of another
 * format version, or inconsistent is refused with QV_ECORRUPT / QV_EPRECONDITION and a message
 * naming the problem; nothing is returned half-built. */
int qv_index_load(const char *path, int flags, qv_index **out, qv_status *err);

/* Same, from a memory buffer (used by the fuzzer and tests); the buffer is copied. */
int qv_index_load_buffer(const void *buf, size_t len, qv_index **out, qv_status *err);

const char *qv_index_type_name(qv_index_type t);

#ifdef __cplusplus
}
#endif

#endif /* QV_INDEX_H */
