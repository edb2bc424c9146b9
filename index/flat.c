/*
 * index/flat.c - the exact index: every search scans every stored vector.
 *
 * Layout: slot i (0 <= i < count) holds one vector at vecs + i * stride (one 64-byte aligned
 * array; stride is dim, rounded up to 16 floats when dim >= 128 so every vector starts on a
 * cache line at a cost of under 1/8 padding), its id in ids[i] and, for L2, its squared norm in
 * norms[i] (the sgemm batch path expands |q - x|^2 = |q|^2 - 2 q.x + |x|^2). `map` takes an id
 * to its slot. Removal moves the last slot into the hole, so slots stay dense.
 *
 * Locking: index.c serialises writers with idx->write_mu; `lock` (a rwlock, writer-preferring
 * where glibc allows) keeps searches off the arrays while a writer changes them. A writer builds
 * grown arrays before taking the write lock and only swaps pointers under it, so searches wait
 * for a pointer swap and a copy of the new rows, not for the whole reallocation.
 *
 * Search paths:
 *   - one query: a blocked scan through the kernel table (l2sq batch kernel for L2, ip for
 *     IP/COSINE), filter checked only for hits that would enter the top-k;
 *   - a filter with an allow-bitmap much smaller than the index: walk the bitmap's ids, look up
 *     their slots, compute only those distances;
 *   - many queries (search_batch): blocks of queries x blocks of vectors through OpenBLAS sgemm,
 *     each thread owning a block of queries and their heaps; the k winners are re-scored with the
 *     exact kernel so batch distances equal single-search distances.
 *
 * Snapshot sections: 'FIDS' (count u64 ids, little-endian) and 'FVEC' (count * dim float32,
 * no padding). Loaded files are checked for lengths and duplicate ids. With QV_LOAD_MMAP and no
 * stride padding the vectors are used in place (the index is read-only then).
 */
#define _GNU_SOURCE
#include "index/index_internal.h"
#include "index/kmeans.h" /* qv__blas_single_threaded */

#include <cblas.h>
#include <math.h>
#include <stdlib.h>

#define FLAT_TAG_IDS  QV__TAG('F', 'I', 'D', 'S')
#define FLAT_TAG_VECS QV__TAG('F', 'V', 'E', 'C')

/* Single-query scan block: distances for this many slots go to a stack buffer at once. */
#define FLAT_SCAN_BLOCK 256
/* The bitmap path runs when the bitmap allows fewer than count / FLAT_SPARSE_RATIO ids: a hash
 * lookup and a random read per allowed id cost several sequential distance evaluations. */
#define FLAT_SPARSE_RATIO 8
/* sgemm blocking: queries per task x vectors per block; the 1 MiB product block stays in L2.
 * Measured on Fashion-MNIST (784 dims), one thread: 128 x 1024 856 q/s, 256 x 1024 967 q/s. */
#define FLAT_BATCH_QB 256
#define FLAT_BATCH_XB 1024

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "snapshot sections are written in host order, which must be little-endian");

typedef struct flat {
    pthread_rwlock_t lock;
    float *vecs;      /* cap * stride floats, 64-byte aligned (or in the mapped file) */
    float *norms;     /* L2: squared norm per slot; NULL for IP / COSINE */
    uint64_t *ids;    /* id of each slot */
    size_t count;     /* live slots */
    size_t cap;       /* allocated slots */
    size_t stride;    /* floats between consecutive vectors */
    bool vecs_mapped; /* vecs point into the mapped snapshot: not ours to free */
    qv__idmap map;    /* id -> slot */
} flat;

/* ---- storage --------------------------------------------------------------------------------- */

typedef struct flat_arrays {
    float *vecs, *norms;
    uint64_t *ids;
    size_t cap;
} flat_arrays;

/* Allocates arrays for `cap` slots and copies the first `count` slots of f into them. Runs
 * without the rwlock: only writers change the arrays, and writers are serialised. */
static int arrays_build(const flat *f, bool l2, size_t cap, flat_arrays *a)
{
    if (cap > (size_t)UINT32_MAX || cap > SIZE_MAX / sizeof(float) / f->stride)
        return QV_ERESOURCE;
    a->cap = cap;
    a->vecs = qv__alloc_rows(cap, f->stride);
    a->ids = malloc(cap * sizeof(uint64_t) + 1);
    a->norms = l2 ? malloc(cap * sizeof(float) + 1) : NULL;
    if (a->vecs == NULL || a->ids == NULL || (l2 && a->norms == NULL)) {
        free(a->vecs);
        free(a->ids);
        free(a->norms);
        return QV_ERESOURCE;
    }
    if (f->count > 0) {
        memcpy(a->vecs, f->vecs, f->count * f->stride * sizeof(float));
        memcpy(a->ids, f->ids, f->count * sizeof(uint64_t));
        if (l2)
            memcpy(a->norms, f->norms, f->count * sizeof(float));
    }
    return 0;
}

/* Swaps the arrays of f and a (caller holds the write lock); a then holds the old ones. */
static void arrays_swap(flat *f, flat_arrays *a)
{
    flat_arrays old = {f->vecs, f->norms, f->ids, f->cap};
    f->vecs = a->vecs;
    f->norms = a->norms;
    f->ids = a->ids;
    f->cap = a->cap;
    f->vecs_mapped = false;
    *a = old;
}

static void arrays_free(flat_arrays *a, bool vecs_mapped)
{
    if (!vecs_mapped)
        free(a->vecs);
    free(a->norms);
    free(a->ids);
}

static void set_slot(qv_index *idx, flat *f, size_t slot, uint64_t id, const float *v)
{
    size_t dim = idx->params.dim;
    float *dst = f->vecs + slot * f->stride;
    memcpy(dst, v, dim * sizeof(float));
    if (f->stride > dim)
        memset(dst + dim, 0, (f->stride - dim) * sizeof(float));
    f->ids[slot] = id;
    if (f->norms != NULL)
        f->norms[slot] = idx->kern->ip_f32(dst, dst, dim);
}

static flat *flat_new(qv_index *idx)
{
    flat *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    int rc = qv__rwlock_init(&f->lock);
    if (rc != 0) {
        free(f);
        return NULL;
    }
    f->stride = qv__row_stride(idx->params.dim);
    qv__idmap_init(&f->map);
    return f;
}

static int flat_init(qv_index *idx, qv_status *err)
{
    flat *f = flat_new(idx);
    if (f == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "flat index: out of memory");
        return QV_ERESOURCE;
    }
    idx->impl = f;
    return 0;
}

static void flat_destroy(qv_index *idx)
{
    flat *f = idx->impl;
    if (f == NULL)
        return;
    if (!f->vecs_mapped)
        free(f->vecs);
    free(f->norms);
    free(f->ids);
    qv__idmap_free(&f->map);
    pthread_rwlock_destroy(&f->lock);
    free(f);
    idx->impl = NULL;
}

/* ---- writers --------------------------------------------------------------------------------- */

static int flat_add(qv_index *idx, const uint64_t *ids, const float *vecs, size_t n, qv_status *err)
{
    flat *f = idx->impl;
    size_t dim = idx->params.dim;
    bool l2 = idx->params.metric == QV_METRIC_L2;

    /* Writers are serialised, so the map can be read without the rwlock here. */
    size_t fresh = 0;
    for (size_t i = 0; i < n; i++)
        if (qv__idmap_get(&f->map, ids[i]) == QV__NO_SLOT)
            fresh++;
    if (fresh > (size_t)UINT32_MAX - 1 - f->count) {
        *err = qv_status_make(QV_ERESOURCE, "flat index: more than %u vectors",
                              (unsigned)(UINT32_MAX - 1));
        return QV_ERESOURCE;
    }

    flat_arrays grown = {0};
    bool grow = f->count + fresh > f->cap || f->vecs_mapped;
    if (grow) {
        size_t cap = f->cap < 16 ? 16 : f->cap;
        while (cap < f->count + fresh)
            cap = cap > (size_t)UINT32_MAX / 2 ? (size_t)UINT32_MAX : cap * 2;
        if (arrays_build(f, l2, cap, &grown) != 0) {
            *err = qv_status_make(QV_ERESOURCE, "flat index: out of memory growing to %zu vectors",
                                  cap);
            return QV_ERESOURCE;
        }
    }

    pthread_rwlock_wrlock(&f->lock);
    /* Reserve before changing anything, so every put below succeeds (all or nothing). */
    if (qv__idmap_reserve(&f->map, fresh) != 0) {
        pthread_rwlock_unlock(&f->lock);
        if (grow)
            arrays_free(&grown, false);
        *err = qv_status_make(QV_ERESOURCE, "flat index: out of memory (id map)");
        return QV_ERESOURCE;
    }
    bool old_mapped = f->vecs_mapped;
    if (grow)
        arrays_swap(f, &grown);
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = qv__idmap_get(&f->map, ids[i]);
        if (slot == QV__NO_SLOT) {
            slot = (uint32_t)f->count++;
            /* Reserved above: cannot fail. */
            (void)qv__idmap_put(&f->map, ids[i], slot);
        }
        set_slot(idx, f, slot, ids[i], vecs + i * dim);
    }
    pthread_rwlock_unlock(&f->lock);
    if (grow)
        arrays_free(&grown, old_mapped);
    return 0;
}

static int flat_remove(qv_index *idx, const uint64_t *ids, size_t n, size_t *removed)
{
    flat *f = idx->impl;
    size_t dim = idx->params.dim;
    size_t gone = 0;
    bool l2 = idx->params.metric == QV_METRIC_L2;
    if (f->vecs_mapped) {
        /* Vectors still live in the read-only mapped snapshot: copy before moving any. */
        flat_arrays own;
        if (arrays_build(f, l2, f->count < 16 ? 16 : f->count, &own) != 0)
            return QV_ERESOURCE;
        pthread_rwlock_wrlock(&f->lock);
        arrays_swap(f, &own);
        pthread_rwlock_unlock(&f->lock);
        arrays_free(&own, true);
    }
    pthread_rwlock_wrlock(&f->lock);
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = qv__idmap_get(&f->map, ids[i]);
        if (slot == QV__NO_SLOT)
            continue;
        qv__idmap_del(&f->map, ids[i]);
        size_t last = --f->count;
        if (slot != last) {
            memcpy(f->vecs + (size_t)slot * f->stride, f->vecs + last * f->stride,
                   dim * sizeof(float));
            f->ids[slot] = f->ids[last];
            if (f->norms != NULL)
                f->norms[slot] = f->norms[last];
            /* Overwrites the moved id's entry in place: cannot fail. */
            (void)qv__idmap_put(&f->map, f->ids[slot], slot);
        }
        gone++;
    }
    /* Give memory back once the index shrank to a quarter; failure just keeps the big arrays. */
    if (f->cap > 64 && f->count < f->cap / 4) {
        flat_arrays small;
        size_t cap = f->count * 2 < 16 ? 16 : f->count * 2;
        bool was_mapped = f->vecs_mapped;
        if (arrays_build(f, l2, cap, &small) == 0) {
            arrays_swap(f, &small);
            arrays_free(&small, was_mapped);
        }
    }
    pthread_rwlock_unlock(&f->lock);
    if (removed != NULL)
        *removed = gone;
    return 0;
}

/* ---- single-query search --------------------------------------------------------------------- */

static bool flat_use_sparse(const flat *f, const qv_filter *filter)
{
    return filter != NULL && filter->allow != NULL &&
           roaring_bitmap_get_cardinality(filter->allow) < f->count / FLAT_SPARSE_RATIO;
}

/* Offers d when it can enter the heap; the filter is consulted only then (most slots lose on
 * distance first, and a bitmap probe or predicate call costs more than the comparison). */
static inline void offer(qv__topk *t, const qv_filter *filter, uint64_t id, float d, float *worst)
{
    if (d <= *worst && (filter == NULL || qv__filter_allows(filter, id))) {
        qv__topk_push(t, id, d);
        *worst = qv__topk_worst(t);
    }
}

static void scan_l2(const qv_index *idx, const flat *f, const float *q, const qv_filter *filter,
                    qv__topk *t)
{
    float d[FLAT_SCAN_BLOCK];
    float worst = qv__topk_worst(t);
    size_t dim = idx->params.dim;
    for (size_t s0 = 0; s0 < f->count; s0 += FLAT_SCAN_BLOCK) {
        size_t nb = f->count - s0 < FLAT_SCAN_BLOCK ? f->count - s0 : FLAT_SCAN_BLOCK;
        idx->kern->l2sq_f32_batch(q, f->vecs + s0 * f->stride, nb, dim, f->stride, d);
        for (size_t j = 0; j < nb; j++)
            if (d[j] <= worst)
                offer(t, filter, f->ids[s0 + j], d[j], &worst);
    }
}

static void scan_ip(const qv_index *idx, const flat *f, const float *q, const qv_filter *filter,
                    qv__topk *t)
{
    float worst = qv__topk_worst(t);
    size_t dim = idx->params.dim;
    float (*ip)(const float *, const float *, size_t) = idx->kern->ip_f32;
    const float *v = f->vecs;
    for (size_t s = 0; s < f->count; s++, v += f->stride) {
        float d = -ip(q, v, dim);
        if (d <= worst)
            offer(t, filter, f->ids[s], d, &worst);
    }
}

/* Walks the allow-bitmap instead of the slots; ids the index lacks are skipped. */
static void scan_sparse(const qv_index *idx, const flat *f, const float *q, const qv_filter *filter,
                        qv__topk *t)
{
    roaring_uint32_iterator_t it;
    uint32_t buf[256];
    float worst = qv__topk_worst(t);
    roaring_init_iterator(filter->allow, &it);
    for (;;) {
        uint32_t got = roaring_read_uint32_iterator(&it, buf, 256);
        for (uint32_t i = 0; i < got; i++) {
            uint32_t slot = qv__idmap_get(&f->map, buf[i]);
            if (slot == QV__NO_SLOT)
                continue;
            if (filter->pred != NULL && !filter->pred(buf[i], filter->ctx))
                continue;
            float d = qv__dist(idx, q, f->vecs + (size_t)slot * f->stride);
            if (d <= worst) {
                qv__topk_push(t, buf[i], d);
                worst = qv__topk_worst(t);
            }
        }
        if (got < 256)
            break;
    }
}

/* Caller holds the read lock. */
static void search_one(const qv_index *idx, const flat *f, const float *q, const qv_filter *filter,
                       qv__topk *t)
{
    if (flat_use_sparse(f, filter))
        scan_sparse(idx, f, q, filter, t);
    else if (idx->params.metric == QV_METRIC_L2)
        scan_l2(idx, f, q, filter, t);
    else
        scan_ip(idx, f, q, filter, t);
}

static int flat_search(qv_index *idx, const float *q, size_t k, const qv_search_params *sp,
                       const qv_filter *filter, qv_hit *out, size_t *nout)
{
    flat *f = idx->impl;
    qv__topk t = {out, 0, k};
    pthread_rwlock_rdlock(&f->lock);
    search_one(idx, f, q, filter, &t);
    pthread_rwlock_unlock(&f->lock);
    qv__topk_sort(&t);
    *nout = t.n;
    return 0;
}

/* ---- batch search ---------------------------------------------------------------------------- */

typedef struct batch_ctx {
    const qv_index *idx;
    const flat *f;
    const float *qs;
    size_t nq, k;
    size_t qb; /* queries per task */
    const qv_filter *filter;
    qv_hit *out;
    size_t *counts;
} batch_ctx;

/* One row of q.x products -> L2 distances -> heap. The common case (d above the worst kept) is
 * one fused multiply-add and a compare per vector. */
static void collect_l2(const float *row, const float *xn, const uint64_t *ids, size_t xb, float qn,
                       const qv_filter *filter, qv__topk *t)
{
    float worst = qv__topk_worst(t);
    for (size_t j = 0; j < xb; j++) {
        float d = qn + xn[j] - 2.0f * row[j];
        if (d <= worst)
            offer(t, filter, ids[j], d < 0.0f ? 0.0f : d, &worst);
    }
}

static void collect_ip(const float *row, const uint64_t *ids, size_t xb, const qv_filter *filter,
                       qv__topk *t)
{
    float worst = qv__topk_worst(t);
    for (size_t j = 0; j < xb; j++) {
        float d = -row[j];
        if (d <= worst)
            offer(t, filter, ids[j], d, &worst);
    }
}

/* Recomputes the kept hits' distances with the exact kernel (the norm expansion loses digits
 * for near neighbours) and sorts them: batch results then match single searches. */
static size_t rerank_sort(const qv_index *idx, const flat *f, const float *q, qv__topk *t)
{
    for (size_t i = 0; i < t->n; i++) {
        uint32_t slot = qv__idmap_get(&f->map, t->h[i].id);
        t->h[i].distance = qv__dist(idx, q, f->vecs + (size_t)slot * f->stride);
    }
    qv__topk_sort(t);
    return t->n;
}

static void batch_task(size_t task, void *arg)
{
    const batch_ctx *c = arg;
    const qv_index *idx = c->idx;
    const flat *f = c->f;
    size_t dim = idx->params.dim;
    size_t q0 = task * c->qb;
    size_t qb = c->nq - q0 < c->qb ? c->nq - q0 : c->qb;
    bool l2 = idx->params.metric == QV_METRIC_L2;
    qv__topk heaps[FLAT_BATCH_QB];
    float qn[FLAT_BATCH_QB];

    for (size_t i = 0; i < qb; i++)
        heaps[i] = (qv__topk){c->out + (q0 + i) * c->k, 0, c->k};

    float *prod = f->count > 0 ? malloc(qb * FLAT_BATCH_XB * sizeof(float)) : NULL;
    if (prod == NULL) {
        /* Out of memory for the product block (or nothing stored): the scan needs none. */
        for (size_t i = 0; i < qb; i++) {
            search_one(idx, f, c->qs + (q0 + i) * dim, c->filter, &heaps[i]);
            qv__topk_sort(&heaps[i]);
            c->counts[q0 + i] = heaps[i].n;
        }
        return;
    }
    const float *qblock = c->qs + q0 * dim;
    if (l2)
        for (size_t i = 0; i < qb; i++)
            qn[i] = idx->kern->ip_f32(qblock + i * dim, qblock + i * dim, dim);

    for (size_t x0 = 0; x0 < f->count; x0 += FLAT_BATCH_XB) {
        size_t xb = f->count - x0 < FLAT_BATCH_XB ? f->count - x0 : FLAT_BATCH_XB;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, (int)qb, (int)xb, (int)dim, 1.0f,
                    qblock, (int)dim, f->vecs + x0 * f->stride, (int)f->stride, 0.0f, prod,
                    (int)xb);
        for (size_t i = 0; i < qb; i++) {
            if (l2)
                collect_l2(prod + i * xb, f->norms + x0, f->ids + x0, xb, qn[i], c->filter,
                           &heaps[i]);
            else
                collect_ip(prod + i * xb, f->ids + x0, xb, c->filter, &heaps[i]);
        }
    }
    free(prod);
    for (size_t i = 0; i < qb; i++)
        c->counts[q0 + i] = rerank_sort(idx, f, qblock + i * dim, &heaps[i]);
}

static void sparse_task(size_t i, void *arg)
{
    const batch_ctx *c = arg;
    qv__topk t = {c->out + i * c->k, 0, c->k};
    search_one(c->idx, c->f, c->qs + i * c->idx->params.dim, c->filter, &t);
    qv__topk_sort(&t);
    c->counts[i] = t.n;
}

static int flat_search_batch(qv_index *idx, const float *qs, size_t nq, size_t k,
                             const qv_search_params *sp, const qv_filter *filter, unsigned threads,
                             qv_hit *out, size_t *counts)
{
    flat *f = idx->impl;
    if (threads == 0)
        threads = qv__default_threads();
    if (threads > QV__BLAS_MAX_CALLERS)
        threads = QV__BLAS_MAX_CALLERS;
    qv__blas_single_threaded();
    /* Up to FLAT_BATCH_QB queries per task, fewer when that leaves threads idle (but at least
     * 16: thinner sgemm blocks waste more than the extra thread brings). */
    size_t qb = (nq + threads - 1) / threads;
    qb = qb < 16 ? 16 : qb > FLAT_BATCH_QB ? FLAT_BATCH_QB : qb;
    batch_ctx c = {idx, f, qs, nq, k, qb, filter, out, counts};
    /* Workers read under this thread's read lock: it is held until every one has joined. */
    pthread_rwlock_rdlock(&f->lock);
    if (flat_use_sparse(f, filter))
        qv__parallel_for(nq, threads, sparse_task, &c);
    else
        qv__parallel_for((nq + qb - 1) / qb, threads, batch_task, &c);
    pthread_rwlock_unlock(&f->lock);
    return 0;
}

/* ---- readers --------------------------------------------------------------------------------- */

static bool flat_contains(qv_index *idx, uint64_t id)
{
    flat *f = idx->impl;
    pthread_rwlock_rdlock(&f->lock);
    bool found = qv__idmap_get(&f->map, id) != QV__NO_SLOT;
    pthread_rwlock_unlock(&f->lock);
    return found;
}

static void flat_stats(qv_index *idx, qv_index_stats *out)
{
    flat *f = idx->impl;
    pthread_rwlock_rdlock(&f->lock);
    out->count = f->count;
    out->deleted = 0;
    out->bytes_vectors = (uint64_t)f->count * idx->params.dim * sizeof(float);
    out->bytes_ram =
        (uint64_t)f->cap * (sizeof(uint64_t) + (f->norms != NULL ? sizeof(float) : 0)) +
        (uint64_t)f->map.cap * (sizeof(uint64_t) + sizeof(uint32_t)) +
        (f->vecs_mapped ? 0 : (uint64_t)f->cap * f->stride * sizeof(float));
    out->trained = true; /* nothing to train: always ready */
    pthread_rwlock_unlock(&f->lock);
}

/* ---- snapshot -------------------------------------------------------------------------------- */

/* Runs under the writer lock: nothing changes the arrays meanwhile. */
static int flat_save(qv_index *idx, qv__writer *w)
{
    flat *f = idx->impl;
    size_t dim = idx->params.dim;
    qv__w_section(w, FLAT_TAG_IDS, f->ids, f->count * sizeof(uint64_t));
    qv__w_begin(w, FLAT_TAG_VECS);
    if (f->stride == dim)
        qv__w_write(w, f->vecs, f->count * dim * sizeof(float));
    else
        for (size_t s = 0; s < f->count; s++)
            qv__w_write(w, f->vecs + s * f->stride, dim * sizeof(float));
    qv__w_end(w);
    return w->err;
}

#define LOAD_FAIL(code, ...)                                                                       \
    do {                                                                                           \
        *err = qv_status_make(code, __VA_ARGS__);                                                  \
        rc = code;                                                                                 \
        goto fail;                                                                                 \
    } while (0)

static int flat_load(qv_index *idx, const qv__reader *r, qv_status *err)
{
    size_t dim = idx->params.dim;
    bool l2 = idx->params.metric == QV_METRIC_L2;
    const void *idp, *vp;
    size_t ilen;
    int rc = qv__r_section(r, FLAT_TAG_IDS, &idp, &ilen, err);
    if (rc != 0)
        return rc;
    if (dim == 0 || dim > QV_INDEX_MAX_DIM) {
        *err = qv_status_make(QV_ECORRUPT, "flat index file: dimension %zu out of range", dim);
        return QV_ECORRUPT;
    }
    if (ilen % sizeof(uint64_t) != 0 || ilen / sizeof(uint64_t) > (size_t)UINT32_MAX - 1) {
        *err = qv_status_make(QV_ECORRUPT, "flat index file: id section of %zu bytes", ilen);
        return QV_ECORRUPT;
    }
    size_t count = ilen / sizeof(uint64_t);
    if (count > SIZE_MAX / sizeof(float) / dim) {
        *err = qv_status_make(QV_ECORRUPT, "flat index file: %zu vectors is too many", count);
        return QV_ECORRUPT;
    }
    rc = qv__r_section_exact(r, FLAT_TAG_VECS, count * dim * sizeof(float), &vp, err);
    if (rc != 0)
        return rc;

    flat *f = flat_new(idx);
    if (f == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "flat index: out of memory");
        return QV_ERESOURCE;
    }
    f->cap = count < 16 ? 16 : count;
    f->ids = malloc(f->cap * sizeof(uint64_t));
    if (f->ids == NULL)
        LOAD_FAIL(QV_ERESOURCE, "flat index: out of memory loading %zu ids", count);
    if (l2) {
        f->norms = malloc(f->cap * sizeof(float));
        if (f->norms == NULL)
            LOAD_FAIL(QV_ERESOURCE, "flat index: out of memory loading %zu vectors", count);
    }
    if (r->mapped && f->stride == dim && (uintptr_t)vp % 64 == 0) {
        /* In place: the mapping outlives the index. Writers copy first (vecs_mapped). */
        f->vecs = (float *)(uintptr_t)vp;
        f->vecs_mapped = true;
        f->cap = count;
    } else {
        f->vecs = qv__alloc_rows(f->cap, f->stride);
        if (f->vecs == NULL)
            LOAD_FAIL(QV_ERESOURCE, "flat index: out of memory loading %zu vectors", count);
        const uint8_t *src = vp;
        for (size_t s = 0; s < count; s++) {
            float *dst = f->vecs + s * f->stride;
            memcpy(dst, src + s * dim * sizeof(float), dim * sizeof(float));
            if (f->stride > dim)
                memset(dst + dim, 0, (f->stride - dim) * sizeof(float));
        }
    }
    memcpy(f->ids, idp, count * sizeof(uint64_t));
    if (qv__idmap_reserve(&f->map, count) != 0)
        LOAD_FAIL(QV_ERESOURCE, "flat index: out of memory loading %zu ids", count);
    for (size_t s = 0; s < count; s++) {
        if (qv__idmap_get(&f->map, f->ids[s]) != QV__NO_SLOT)
            LOAD_FAIL(QV_ECORRUPT, "flat index file: id %llu appears twice",
                      (unsigned long long)f->ids[s]);
        (void)qv__idmap_put(&f->map, f->ids[s], (uint32_t)s);
        const float *v = f->vecs + s * f->stride;
        if (!qv__all_finite(v, dim))
            LOAD_FAIL(QV_ECORRUPT, "flat index file: vector %zu has non-finite values", s);
        if (l2)
            f->norms[s] = idx->kern->ip_f32(v, v, dim);
    }
    f->count = count;
    idx->impl = f;
    return 0;

fail:
    idx->impl = f;
    flat_destroy(idx);
    return rc;
}

const qv__index_ops qv__flat_ops = {
    .name = "flat",
    .init = flat_init,
    .add = flat_add,
    .train = NULL,
    .remove = flat_remove,
    .compact = NULL,
    .search = flat_search,
    .search_batch = flat_search_batch,
    .contains = flat_contains,
    .stats = flat_stats,
    .save = flat_save,
    .load = flat_load,
    .destroy = flat_destroy,
};
