/* Shared helpers of the index module: top-k heap, normalisation, filter estimates, threads. */
#define _GNU_SOURCE
#include "index/index_internal.h"

#include <math.h>
#include <stdlib.h>
#include <unistd.h>

static inline bool worse(const qv_hit *a, const qv_hit *b)
{
    /* "a is worse than b": farther, or equally far with a larger id (deterministic ties). */
    return a->distance > b->distance || (a->distance == b->distance && a->id > b->id);
}

void qv__topk_push(qv__topk *t, uint64_t id, float d)
{
    qv_hit x = {id, d};
    if (t->n < t->k) {
        size_t i = t->n++;
        while (i > 0) {
            size_t p = (i - 1) / 2;
            if (!worse(&x, &t->h[p]))
                break;
            t->h[i] = t->h[p];
            i = p;
        }
        t->h[i] = x;
        return;
    }
    if (t->k == 0 || !worse(&t->h[0], &x))
        return;
    size_t i = 0, n = t->n;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        const qv_hit *cur = &x;
        if (l < n && worse(&t->h[l], cur)) {
            m = l;
            cur = &t->h[l];
        }
        if (r < n && worse(&t->h[r], cur))
            m = r;
        if (m == i)
            break;
        t->h[i] = t->h[m];
        i = m;
    }
    t->h[i] = x;
}

static int cmp_hit(const void *a, const void *b)
{
    const qv_hit *x = a, *y = b;
    if (x->distance != y->distance)
        return x->distance < y->distance ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

void qv__topk_sort(qv__topk *t)
{
    qsort(t->h, t->n, sizeof(qv_hit), cmp_hit);
}

int qv__rwlock_init(pthread_rwlock_t *lock)
{
    pthread_rwlockattr_t attr;
    pthread_rwlockattr_init(&attr);
    pthread_rwlockattr_setkind_np(&attr, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    int rc = pthread_rwlock_init(lock, &attr);
    pthread_rwlockattr_destroy(&attr);
    return rc;
}

size_t qv__row_stride(size_t dim)
{
    return dim >= 128 ? (dim + 15) & ~(size_t)15 : dim;
}

float *qv__alloc_rows(size_t slots, size_t stride)
{
    size_t bytes = slots * stride * sizeof(float);
    bytes = (bytes + 63) & ~(size_t)63;
    return aligned_alloc(64, bytes == 0 ? 64 : bytes);
}

bool qv__all_finite(const float *v, size_t n)
{
    for (size_t i = 0; i < n; i++)
        if (!isfinite(v[i]))
            return false;
    return true;
}

void qv__normalize(float *v, size_t dim)
{
    double s = 0;
    for (size_t i = 0; i < dim; i++)
        s += (double)v[i] * v[i];
    if (s <= 0)
        return;
    /* In double: 1/sqrt(s) overflows a float when every component is subnormal. */
    double len = sqrt(s);
    for (size_t i = 0; i < dim; i++)
        v[i] = (float)((double)v[i] / len);
}

uint64_t qv__filter_estimate(const qv_filter *f)
{
    if (f == NULL)
        return UINT64_MAX;
    uint64_t est = UINT64_MAX;
    if (f->allow != NULL)
        est = roaring_bitmap_get_cardinality(f->allow);
    if (f->pred != NULL && f->expected_allowed != 0 && f->expected_allowed < est)
        est = f->expected_allowed;
    return est;
}

unsigned qv__default_threads(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

typedef struct pf_ctx {
    size_t n;
    atomic_size_t next;
    qv__range_fn fn;
    void *ctx;
} pf_ctx;

static void *pf_worker(void *arg)
{
    pf_ctx *c = arg;
    for (;;) {
        size_t i = atomic_fetch_add(&c->next, 1);
        if (i >= c->n)
            break;
        c->fn(i, c->ctx);
    }
    return NULL;
}

void qv__parallel_for(size_t n, unsigned threads, qv__range_fn fn, void *ctx)
{
    if (threads == 0)
        threads = qv__default_threads();
    if (threads > n)
        threads = (unsigned)n;
    pf_ctx c = {.n = n, .fn = fn, .ctx = ctx};
    atomic_init(&c.next, 0);
    if (threads <= 1) {
        pf_worker(&c);
        return;
    }
    pthread_t *tids = malloc((threads - 1) * sizeof(*tids));
    unsigned started = 0;
    if (tids != NULL) {
        for (; started < threads - 1; started++)
            if (pthread_create(&tids[started], NULL, pf_worker, &c) != 0)
                break;
    }
    pf_worker(&c); /* the caller works too; if threads failed to start it does everything */
    for (unsigned i = 0; i < started; i++)
        pthread_join(tids[i], NULL);
    free(tids);
}
