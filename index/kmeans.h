/*
 * index/kmeans.h - private to index/: k-means clustering (IVF cells, semantic partition maps) and
 * nearest-centroid assignment, both on OpenBLAS sgemm.
 *
 * Common contract: x is n row-major vectors of dim floats (finite), borrowed for the call;
 * centroids are k row-major vectors of dim floats. `threads` 0 means every online CPU. Results
 * are deterministic for given inputs, seed and thread count (in practice for any thread count:
 * work is split in fixed blocks whose results do not depend on which thread runs them).
 * Errors: QV_EINVAL (with a message) for bad sizes, QV_ERESOURCE when memory runs out.
 * Thread-safe: no global state.
 */
#ifndef QV_INDEX_KMEANS_H
#define QV_INDEX_KMEANS_H

#include "index/index_internal.h"

typedef enum qv__kmeans_init {
    QV__KMEANS_PLUSPLUS = 0, /* k-means++ (D^2 sampling), the default */
    QV__KMEANS_RANDOM = 1,   /* k distinct input vectors chosen uniformly (for comparisons) */
} qv__kmeans_init;

/*
 * Clusters x into k centroids, written to centroids_out (k * dim floats, caller-owned).
 * k-means++ initialisation seeded by `seed`, then up to `iters` Lloyd iterations (iters == 0:
 * the initial centroids are returned); stops early once no assignment changes. A cluster that
 * ends an iteration empty is re-seeded with the point of the largest cluster farthest from its
 * centroid (splitting it). Requires 1 <= k <= n, 1 <= dim, k <= UINT32_MAX.
 */
int qv__kmeans(const float *x, size_t n, size_t dim, size_t k, unsigned iters, uint64_t seed,
               unsigned threads, float *centroids_out, qv_status *err);

/* Same, choosing the initialisation. */
int qv__kmeans_ex(const float *x, size_t n, size_t dim, size_t k, unsigned iters, uint64_t seed,
                  unsigned threads, qv__kmeans_init init, float *centroids_out, qv_status *err);

/*
 * Nearest centroid of each vector by squared L2 distance: assign[i] in [0, k) (ties: the lower
 * index), and dist[i] (may be NULL) the squared distance, computed as |x|^2 - 2 x.c + |c|^2 and
 * clamped at 0 (so a few ulps of |x|^2 off the exact kernel distance).
 */
int qv__kmeans_assign(const float *x, size_t n, size_t dim, const float *centroids, size_t k,
                      unsigned threads, uint32_t *assign, float *dist, qv_status *err);

/* Largest inner product instead: assign[i] maximises x.c; dist[i] (may be NULL) is -x.c. */
int qv__kmeans_assign_ip(const float *x, size_t n, size_t dim, const float *centroids, size_t k,
                         unsigned threads, uint32_t *assign, float *dist, qv_status *err);

/*
 * Puts OpenBLAS in single-threaded mode, once per process (later calls return at once). Every
 * sgemm in index/ runs inside our own worker threads (qv__parallel_for), each on its own block;
 * OpenBLAS's pthread build would otherwise start its own threads inside each call and the two
 * pools fight over the cores (measured: 943 vs 1800 queries/s for a 2-thread flat batch search on
 * 2 cores). Process-wide: other OpenBLAS users in the process become single-threaded too.
 */
void qv__blas_single_threaded(void);

/* Most threads that call sgemm at once. OpenBLAS keeps a fixed table of per-call buffers sized
 * from its build's MAX_THREADS (Debian: 64 -> 128 buffers) and terminates the process when
 * concurrent callers exhaust it; the sgemm paths cap their thread count here. */
#define QV__BLAS_MAX_CALLERS 32u

/* Seeded xoshiro256** generator shared by k-means and IVF sampling (deterministic everywhere). */
typedef struct qv__rng {
    uint64_t s[4];
} qv__rng;

void qv__rng_seed(qv__rng *r, uint64_t seed);
uint64_t qv__rng_next(qv__rng *r);
/* Uniform in [0, n) without modulo bias; n > 0. */
uint64_t qv__rng_below(qv__rng *r, uint64_t n);

#endif /* QV_INDEX_KMEANS_H */
