/*
 * index/kmeans.c - k-means (k-means++ seeding, Lloyd iterations) and nearest-centroid assignment.
 *
 * Assignment is the hot part: blocks of KM_XB vectors x blocks of KM_CB centroids go through
 * sgemm (x . c^T), and |c|^2 - 2 x.c picks the nearest centroid (|x|^2 is constant per row).
 * Blocks are fixed by position, not by thread, so results do not depend on the thread count.
 * The update step groups points by cluster (counting sort) and sums each cluster in double, in
 * point order: deterministic, and no k x dim double table.
 */
#define _GNU_SOURCE /* POSIX types (pthread_rwlock_t) in index_internal.h */
#include "index/kmeans.h"

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#define KM_XB           256  /* vectors per assignment task */
#define KM_CB           1024 /* centroids per sgemm block */
#define KM_PP_CHUNK     4096 /* points per task in a k-means++ distance update */
#define KM_UPDATE_CHUNK 64   /* clusters per task in the update step */

/* ---- random numbers -------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void qv__rng_seed(qv__rng *r, uint64_t seed)
{
    for (int i = 0; i < 4; i++)
        r->s[i] = splitmix64(&seed);
}

static inline uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t qv__rng_next(qv__rng *r)
{
    uint64_t *s = r->s;
    uint64_t result = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return result;
}

uint64_t qv__rng_below(qv__rng *r, uint64_t n)
{
    /* Rejection of the short last stripe keeps every value equally likely. */
    uint64_t limit = UINT64_MAX - UINT64_MAX % n;
    uint64_t v;
    do {
        v = qv__rng_next(r);
    } while (v >= limit);
    return v % n;
}

static double rng_unit(qv__rng *r)
{
    return (double)(qv__rng_next(r) >> 11) * 0x1.0p-53;
}

/* ---- OpenBLAS -------------------------------------------------------------------------------- */

static pthread_once_t blas_once = PTHREAD_ONCE_INIT;

static void blas_set_one(void)
{
    openblas_set_num_threads(1);
}

void qv__blas_single_threaded(void)
{
    pthread_once(&blas_once, blas_set_one);
}

/* ---- assignment ------------------------------------------------------------------------------ */

typedef struct assign_ctx {
    const float *x;
    size_t n, dim;
    const float *c;
    size_t k;
    const float *cnorm; /* L2: |c|^2 per centroid; NULL: inner product */
    const float *xnorm; /* L2 with dist: |x|^2 per vector, or NULL to compute here */
    uint32_t *assign;
    float *dist;
    atomic_bool oom;
} assign_ctx;

static void assign_task(size_t task, void *arg)
{
    assign_ctx *a = arg;
    size_t x0 = task * KM_XB;
    size_t xb = a->n - x0 < KM_XB ? a->n - x0 : KM_XB;
    size_t cbmax = a->k < KM_CB ? a->k : KM_CB;
    const float *xblk = a->x + x0 * a->dim;
    float best[KM_XB];
    uint32_t bi[KM_XB];
    float *prod = malloc(xb * cbmax * sizeof(float));
    if (prod == NULL) {
        atomic_store(&a->oom, true);
        return;
    }
    for (size_t i = 0; i < xb; i++) {
        best[i] = INFINITY;
        bi[i] = 0;
    }
    for (size_t c0 = 0; c0 < a->k; c0 += KM_CB) {
        size_t cb = a->k - c0 < KM_CB ? a->k - c0 : KM_CB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)xb, (int)cb, (int)a->dim, 1.0f,
                    xblk, (int)a->dim, a->c + c0 * a->dim, (int)a->dim, 0.0f, prod, (int)cb);
        for (size_t i = 0; i < xb; i++) {
            const float *row = prod + i * cb;
            float b = best[i];
            uint32_t j_best = bi[i];
            if (a->cnorm != NULL) {
                const float *cn = a->cnorm + c0;
                for (size_t j = 0; j < cb; j++) {
                    float v = cn[j] - 2.0f * row[j];
                    if (v < b) {
                        b = v;
                        j_best = (uint32_t)(c0 + j);
                    }
                }
            } else {
                for (size_t j = 0; j < cb; j++) {
                    if (-row[j] < b) {
                        b = -row[j];
                        j_best = (uint32_t)(c0 + j);
                    }
                }
            }
            best[i] = b;
            bi[i] = j_best;
        }
    }
    free(prod);
    const qv_kernels *kern = qv_kernels_get();
    for (size_t i = 0; i < xb; i++) {
        a->assign[x0 + i] = bi[i];
        if (a->dist == NULL)
            continue;
        if (a->cnorm == NULL) {
            a->dist[x0 + i] = best[i];
            continue;
        }
        const float *v = xblk + i * a->dim;
        float xn = a->xnorm != NULL ? a->xnorm[x0 + i] : kern->ip_f32(v, v, a->dim);
        float d = xn + best[i];
        a->dist[x0 + i] = d < 0.0f ? 0.0f : d;
    }
}

static unsigned resolve_threads(unsigned threads)
{
    if (threads == 0)
        threads = qv__default_threads();
    return threads < QV__BLAS_MAX_CALLERS ? threads : QV__BLAS_MAX_CALLERS;
}

static int check_sizes(size_t dim, size_t k, qv_status *err)
{
    if (dim == 0 || k == 0 || k > UINT32_MAX) {
        *err = qv_status_make(
            QV_EINVAL, "k-means: need dim >= 1 and 1 <= k <= 2^32-1 (dim %zu, k %zu)", dim, k);
        return QV_EINVAL;
    }
    return 0;
}

static int assign_common(const float *x, size_t n, size_t dim, const float *c, size_t k,
                         unsigned threads, bool l2, const float *xnorm, uint32_t *assign,
                         float *dist, qv_status *err)
{
    int rc = check_sizes(dim, k, err);
    if (rc != 0 || n == 0)
        return rc;
    float *cnorm = NULL;
    if (l2) {
        cnorm = malloc(k * sizeof(float));
        if (cnorm == NULL)
            goto fail_oom;
        const qv_kernels *kern = qv_kernels_get();
        for (size_t j = 0; j < k; j++)
            cnorm[j] = kern->ip_f32(c + j * dim, c + j * dim, dim);
    }
    qv__blas_single_threaded();
    assign_ctx a = {x, n, dim, c, k, cnorm, xnorm, assign, dist, false};
    size_t tasks = (n + KM_XB - 1) / KM_XB;
    qv__parallel_for(tasks, resolve_threads(threads), assign_task, &a);
    free(cnorm);
    if (atomic_load(&a.oom))
        goto fail_oom;
    return 0;

fail_oom:
    *err = qv_status_make(QV_ERESOURCE, "k-means: out of memory assigning %zu vectors", n);
    return QV_ERESOURCE;
}

int qv__kmeans_assign(const float *x, size_t n, size_t dim, const float *centroids, size_t k,
                      unsigned threads, uint32_t *assign, float *dist, qv_status *err)
{
    return assign_common(x, n, dim, centroids, k, threads, true, NULL, assign, dist, err);
}

int qv__kmeans_assign_ip(const float *x, size_t n, size_t dim, const float *centroids, size_t k,
                         unsigned threads, uint32_t *assign, float *dist, qv_status *err)
{
    return assign_common(x, n, dim, centroids, k, threads, false, NULL, assign, dist, err);
}

/* ---- initialisation -------------------------------------------------------------------------- */

typedef struct pp_ctx {
    const float *x;
    size_t n, dim;
    const float *c; /* the centroid just chosen */
    float *mind;    /* squared distance of each point to its nearest chosen centroid */
    const qv_kernels *kern;
} pp_ctx;

static void pp_task(size_t task, void *arg)
{
    pp_ctx *p = arg;
    float d[256];
    size_t end = (task + 1) * KM_PP_CHUNK < p->n ? (task + 1) * KM_PP_CHUNK : p->n;
    for (size_t i0 = task * KM_PP_CHUNK; i0 < end; i0 += 256) {
        size_t nb = end - i0 < 256 ? end - i0 : 256;
        p->kern->l2sq_f32_batch(p->c, p->x + i0 * p->dim, nb, p->dim, p->dim, d);
        for (size_t j = 0; j < nb; j++)
            if (d[j] < p->mind[i0 + j])
                p->mind[i0 + j] = d[j];
    }
}

/* k-means++: each next centroid is a point drawn with probability proportional to its squared
 * distance to the nearest centroid chosen so far. Distances use the exact kernel, per point, so
 * the draw does not depend on how the update is split over threads. */
static int init_plusplus(const float *x, size_t n, size_t dim, size_t k, qv__rng *rng,
                         unsigned threads, float *c)
{
    float *mind = malloc(n * sizeof(float));
    if (mind == NULL)
        return QV_ERESOURCE;
    for (size_t i = 0; i < n; i++)
        mind[i] = INFINITY;
    pp_ctx p = {x, n, dim, NULL, mind, qv_kernels_get()};
    size_t tasks = (n + KM_PP_CHUNK - 1) / KM_PP_CHUNK;
    /* Threads are started per update: only worth it when the update is large. */
    unsigned th = (uint64_t)n * dim >= (1u << 20) ? threads : 1;
    size_t pick = qv__rng_below(rng, n);
    for (size_t j = 0;; j++) {
        memcpy(c + j * dim, x + pick * dim, dim * sizeof(float));
        if (j + 1 == k)
            break;
        p.c = c + j * dim;
        qv__parallel_for(tasks, th, pp_task, &p);
        double total = 0;
        for (size_t i = 0; i < n; i++)
            total += mind[i];
        if (!(total > 0)) {
            /* Every point sits on a centroid (duplicates): any point will do; the empty
             * clusters this leaves are handled like any other. */
            pick = qv__rng_below(rng, n);
            continue;
        }
        double u = rng_unit(rng) * total, acc = 0;
        pick = n - 1;
        for (size_t i = 0; i < n; i++) {
            acc += mind[i];
            if (acc > u && mind[i] > 0) {
                pick = i;
                break;
            }
        }
        /* Rounding can leave u just past the sum: take the last point with weight. */
        while (mind[pick] <= 0 && pick > 0)
            pick--;
    }
    free(mind);
    return 0;
}

static int init_random(const float *x, size_t n, size_t dim, size_t k, qv__rng *rng, float *c)
{
    size_t *perm = malloc(n * sizeof(size_t));
    if (perm == NULL)
        return QV_ERESOURCE;
    for (size_t i = 0; i < n; i++)
        perm[i] = i;
    for (size_t j = 0; j < k; j++) {
        size_t r = j + (size_t)qv__rng_below(rng, n - j);
        size_t t = perm[j];
        perm[j] = perm[r];
        perm[r] = t;
        memcpy(c + j * dim, x + perm[j] * dim, dim * sizeof(float));
    }
    free(perm);
    return 0;
}

/* ---- update ---------------------------------------------------------------------------------- */

typedef struct update_ctx {
    const float *x;
    size_t dim, k;
    const size_t *start;     /* k + 1 offsets into members */
    const uint32_t *members; /* point indices grouped by cluster, ascending within a cluster */
    float *c;
    atomic_bool oom;
} update_ctx;

static void update_task(size_t task, void *arg)
{
    update_ctx *u = arg;
    size_t dim = u->dim;
    double *sum = malloc(dim * sizeof(double));
    if (sum == NULL) {
        atomic_store(&u->oom, true);
        return;
    }
    size_t end = (task + 1) * KM_UPDATE_CHUNK < u->k ? (task + 1) * KM_UPDATE_CHUNK : u->k;
    for (size_t j = task * KM_UPDATE_CHUNK; j < end; j++) {
        size_t cnt = u->start[j + 1] - u->start[j];
        if (cnt == 0)
            continue; /* empty: repaired afterwards */
        memset(sum, 0, dim * sizeof(double));
        for (size_t m = u->start[j]; m < u->start[j + 1]; m++) {
            const float *v = u->x + (size_t)u->members[m] * dim;
            for (size_t d = 0; d < dim; d++)
                sum[d] += v[d];
        }
        float *cj = u->c + j * dim;
        for (size_t d = 0; d < dim; d++)
            cj[d] = (float)(sum[d] / (double)cnt);
    }
    free(sum);
}

/* Re-seeds each empty cluster with the point farthest from its centroid in the currently
 * largest cluster (lowest index on ties), moving that point over. Returns whether it did. */
static bool repair_empty(const float *x, size_t dim, size_t k, const size_t *start,
                         const uint32_t *members, size_t *count, uint32_t *assign, float *dist,
                         float *c)
{
    bool repaired = false;
    for (size_t e = 0; e < k; e++) {
        if (count[e] != 0)
            continue;
        size_t m = 0;
        for (size_t j = 1; j < k; j++)
            if (count[j] > count[m])
                m = j;
        if (count[m] < 2)
            break; /* cannot happen with n >= k; keeps the loop finite regardless */
        size_t far = SIZE_MAX;
        float fd = -1.0f;
        for (size_t p = start[m]; p < start[m + 1]; p++) {
            uint32_t i = members[p];
            if (assign[i] == m && dist[i] > fd) {
                fd = dist[i];
                far = i;
            }
        }
        if (far == SIZE_MAX)
            break;
        memcpy(c + e * dim, x + far * dim, dim * sizeof(float));
        assign[far] = (uint32_t)e;
        count[e] = 1;
        count[m]--;
        repaired = true;
    }
    return repaired;
}

/* ---- driver ---------------------------------------------------------------------------------- */

int qv__kmeans(const float *x, size_t n, size_t dim, size_t k, unsigned iters, uint64_t seed,
               unsigned threads, float *centroids_out, qv_status *err)
{
    return qv__kmeans_ex(x, n, dim, k, iters, seed, threads, QV__KMEANS_PLUSPLUS, centroids_out,
                         err);
}

int qv__kmeans_ex(const float *x, size_t n, size_t dim, size_t k, unsigned iters, uint64_t seed,
                  unsigned threads, qv__kmeans_init init, float *centroids_out, qv_status *err)
{
    int rc = check_sizes(dim, k, err);
    if (rc != 0)
        return rc;
    if (n < k || n > UINT32_MAX) {
        *err = qv_status_make(QV_EINVAL,
                              "k-means: %zu vectors for %zu clusters (need k <= n < 2^32)", n, k);
        return QV_EINVAL;
    }
    threads = resolve_threads(threads);
    qv__rng rng;
    qv__rng_seed(&rng, seed);

    uint32_t *assign = malloc(n * sizeof(uint32_t));
    uint32_t *prev = malloc(n * sizeof(uint32_t));
    float *dist = malloc(n * sizeof(float));
    float *xnorm = malloc(n * sizeof(float));
    uint32_t *members = malloc(n * sizeof(uint32_t));
    size_t *start = malloc((k + 1) * sizeof(size_t));
    size_t *count = malloc(k * sizeof(size_t));
    if (assign == NULL || prev == NULL || dist == NULL || xnorm == NULL || members == NULL ||
        start == NULL || count == NULL)
        goto fail_oom;

    rc = init == QV__KMEANS_RANDOM ? init_random(x, n, dim, k, &rng, centroids_out)
                                   : init_plusplus(x, n, dim, k, &rng, threads, centroids_out);
    if (rc != 0)
        goto fail_oom;

    const qv_kernels *kern = qv_kernels_get();
    for (size_t i = 0; i < n; i++)
        xnorm[i] = kern->ip_f32(x + i * dim, x + i * dim, dim);

    for (unsigned it = 0; it < iters; it++) {
        rc = assign_common(x, n, dim, centroids_out, k, threads, true, xnorm, assign, dist, err);
        if (rc != 0)
            goto fail;
        if (it > 0 && memcmp(assign, prev, n * sizeof(uint32_t)) == 0)
            break; /* converged: the centroids are already the means of this assignment */
        /* Counting sort of the points by cluster: members of a cluster stay in index order. */
        memset(count, 0, k * sizeof(size_t));
        for (size_t i = 0; i < n; i++)
            count[assign[i]]++;
        start[0] = 0;
        for (size_t j = 0; j < k; j++)
            start[j + 1] = start[j] + count[j];
        for (size_t j = 0; j < k; j++)
            count[j] = start[j];
        for (size_t i = 0; i < n; i++)
            members[count[assign[i]]++] = (uint32_t)i;
        for (size_t j = 0; j < k; j++)
            count[j] = start[j + 1] - start[j];

        update_ctx u = {x, dim, k, start, members, centroids_out, false};
        size_t tasks = (k + KM_UPDATE_CHUNK - 1) / KM_UPDATE_CHUNK;
        qv__parallel_for(tasks, (uint64_t)n * dim >= (1u << 20) ? threads : 1, update_task, &u);
        if (atomic_load(&u.oom))
            goto fail_oom;
        if (repair_empty(x, dim, k, start, members, count, assign, dist, centroids_out))
            /* The split clusters' means are stale: no convergence test against this round. */
            memset(prev, 0xFF, n * sizeof(uint32_t));
        else
            memcpy(prev, assign, n * sizeof(uint32_t));
    }
    rc = 0;
    goto done;

fail_oom:
    *err = qv_status_make(QV_ERESOURCE, "k-means: out of memory (%zu vectors, %zu clusters)", n, k);
    rc = QV_ERESOURCE;
fail:
done:
    free(count);
    free(start);
    free(members);
    free(xnorm);
    free(dist);
    free(prev);
    free(assign);
    return rc;
}
