/*
 * index/ivf.c - IVF-Flat: k-means cells, each with an inverted list of full float32 vectors.
 *
 * Structure:
 *   centroids   nlist x dim floats (contiguous: sgemm input when assigning batches)
 *   lists[c]    ids and vectors of cell c, contiguous per list (vectors 64-byte aligned, stride
 *               as in flat.c), grown by doubling
 *   map         id -> slot; slot_list / slot_pos / slot_id say where slot's vector lives. Slots
 *               are dense (removal moves the last slot into the hole), as are list positions.
 *
 * Training: k-means (index/kmeans.c) on a seeded sample of params.ivf.train_size vectors
 * (0: min(n, 256 * nlist)). With fewer sample vectors than nlist, nlist is reduced to
 * max(1, n / 39) (FAISS's rule of thumb of >= 39 points per cell) and the choice is logged;
 * stats and snapshots report the effective nlist. The first add to an untrained index trains on
 * that batch. For COSINE (vectors stored normalised) the centroids are normalised after
 * training and cells are chosen by largest inner product, as for IP; L2 uses L2.
 *
 * Search: the query's nprobe nearest cells (sp->nprobe, capped at nlist) are scanned closest
 * first with the kernel table; exact mode scans every list. Filters are checked for hits that
 * would enter the top-k. A filter that lets through a fraction f of the vectors widens nprobe to
 * nprobe / f (up to every cell), so filtered searches keep their recall; an allow-bitmap much
 * smaller than the index is walked directly (exact over the allowed set).
 *
 * Locking as in flat.c: writers (serialised by index.c) compute assignments and build grown
 * arrays outside the rwlock and hold its write side only to swap pointers and move rows.
 *
 * Snapshot sections (little-endian): 'IVFM' = u64 trained, u64 nlist, u64 count; 'IVFC' =
 * nlist x dim float32 centroids; 'IVFL' = nlist u32 list sizes; 'IVFI' = count u64 ids and
 * 'IVFV' = count x dim float32 vectors, both list by list.
 */
#define _GNU_SOURCE
#include "index/kmeans.h"

#include <math.h>
#include <stdlib.h>

#define IVF_TAG_META      QV__TAG('I', 'V', 'F', 'M')
#define IVF_TAG_CENTROIDS QV__TAG('I', 'V', 'F', 'C')
#define IVF_TAG_SIZES     QV__TAG('I', 'V', 'F', 'L')
#define IVF_TAG_IDS       QV__TAG('I', 'V', 'F', 'I')
#define IVF_TAG_VECS      QV__TAG('I', 'V', 'F', 'V')

#define IVF_SCAN_BLOCK   256
#define IVF_SPARSE_RATIO 8 /* as in flat.c */
#define IVF_MIN_PER_CELL 39

_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "snapshot sections are written in host order, which must be little-endian");

typedef struct ivf_list {
    uint64_t *ids;
    float *vecs; /* cap * stride floats, 64-byte aligned */
    uint32_t n, cap;
} ivf_list;

typedef struct ivf {
    pthread_rwlock_t lock;
    bool trained;
    uint32_t nlist; /* effective number of cells; 0 until trained */
    size_t stride;
    float *centroids;
    ivf_list *lists;
    qv__idmap map;
    uint32_t *slot_list, *slot_pos;
    uint64_t *slot_id;
    size_t count, slot_cap;
} ivf;

/* ---- storage --------------------------------------------------------------------------------- */

static ivf *ivf_new(const qv_index *idx)
{
    ivf *f = calloc(1, sizeof(*f));
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

static void free_cells(float *centroids, ivf_list *lists, uint32_t nlist)
{
    if (lists != NULL)
        for (uint32_t c = 0; c < nlist; c++) {
            free(lists[c].ids);
            free(lists[c].vecs);
        }
    free(lists);
    free(centroids);
}

static void ivf_destroy(qv_index *idx)
{
    ivf *f = idx->impl;
    if (f == NULL)
        return;
    free_cells(f->centroids, f->lists, f->nlist);
    free(f->slot_list);
    free(f->slot_pos);
    free(f->slot_id);
    qv__idmap_free(&f->map);
    pthread_rwlock_destroy(&f->lock);
    free(f);
    idx->impl = NULL;
}

static int ivf_init(qv_index *idx, qv_status *err)
{
    ivf *f = ivf_new(idx);
    if (f == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "IVF index: out of memory");
        return QV_ERESOURCE;
    }
    idx->impl = f;
    return 0;
}

/* ---- training -------------------------------------------------------------------------------- */

/* Runs k-means on a sample of vecs and installs the cells. Caller is a writer; count is 0. */
static int train_cells(qv_index *idx, const float *vecs, size_t n, qv_status *err)
{
    ivf *f = idx->impl;
    size_t dim = idx->params.dim;
    const qv_ivf_params *ip = &idx->params.ivf;
    size_t nlist = ip->nlist;
    size_t m = ip->train_size != 0 ? ip->train_size : (nlist * 256 < n ? nlist * 256 : n);
    if (m > n)
        m = n;
    if (m == 0) {
        *err = qv_status_make(QV_EINVAL, "IVF training needs at least one vector");
        return QV_EINVAL;
    }
    if (m < nlist) {
        size_t reduced = m / IVF_MIN_PER_CELL > 1 ? m / IVF_MIN_PER_CELL : 1;
        qv_log_info("index", "IVF: %zu training vectors for nlist %zu; training %zu cells instead",
                    m, nlist, reduced);
        nlist = reduced;
    } else if (m < nlist * IVF_MIN_PER_CELL) {
        qv_log_info("index", "IVF: %zu training vectors for %zu cells (fewer than %d per cell)", m,
                    nlist, IVF_MIN_PER_CELL);
    }

    int rc = QV_ERESOURCE;
    float *sample = NULL;
    size_t *perm = NULL;
    float *centroids = malloc(nlist * dim * sizeof(float));
    ivf_list *lists = calloc(nlist, sizeof(ivf_list));
    if (centroids == NULL || lists == NULL)
        goto fail_oom;
    const float *train = vecs;
    if (m < n) {
        /* Seeded partial Fisher-Yates: the same data and seed give the same sample. */
        perm = malloc(n * sizeof(size_t));
        sample = malloc(m * dim * sizeof(float));
        if (perm == NULL || sample == NULL)
            goto fail_oom;
        qv__rng rng;
        qv__rng_seed(&rng, ip->seed ^ 0x5eed5a3917e5ull);
        for (size_t i = 0; i < n; i++)
            perm[i] = i;
        for (size_t i = 0; i < m; i++) {
            size_t r = i + (size_t)qv__rng_below(&rng, n - i);
            size_t t = perm[i];
            perm[i] = perm[r];
            perm[r] = t;
            memcpy(sample + i * dim, vecs + perm[i] * dim, dim * sizeof(float));
        }
        train = sample;
    }
    rc = qv__kmeans(train, m, dim, nlist, ip->iters, ip->seed, idx->params.threads, centroids, err);
    if (rc != 0)
        goto fail;
    if (idx->params.metric == QV_METRIC_COSINE)
        for (size_t c = 0; c < nlist; c++)
            qv__normalize(centroids + c * dim, dim);
    free(sample);
    free(perm);

    pthread_rwlock_wrlock(&f->lock);
    float *old_c = f->centroids;
    ivf_list *old_l = f->lists;
    uint32_t old_n = f->nlist;
    f->centroids = centroids;
    f->lists = lists;
    f->nlist = (uint32_t)nlist;
    f->trained = true;
    pthread_rwlock_unlock(&f->lock);
    free_cells(old_c, old_l, old_n);
    return 0;

fail_oom:
    *err = qv_status_make(QV_ERESOURCE, "IVF training: out of memory");
    rc = QV_ERESOURCE;
fail:
    free(sample);
    free(perm);
    free(lists);
    free(centroids);
    return rc;
}

static int ivf_train(qv_index *idx, const float *vecs, size_t n, qv_status *err)
{
    ivf *f = idx->impl;
    if (f->count > 0) {
        *err = qv_status_make(QV_EPRECONDITION,
                              "IVF index already holds vectors: train before the first add");
        return QV_EPRECONDITION;
    }
    return train_cells(idx, vecs, n, err);
}

/* Forgets the cells again (an add that trained and then failed leaves the index unchanged). */
static void untrain(ivf *f)
{
    pthread_rwlock_wrlock(&f->lock);
    float *c = f->centroids;
    ivf_list *l = f->lists;
    uint32_t nl = f->nlist;
    f->centroids = NULL;
    f->lists = NULL;
    f->nlist = 0;
    f->trained = false;
    pthread_rwlock_unlock(&f->lock);
    free_cells(c, l, nl);
}

/* ---- writers --------------------------------------------------------------------------------- */

/* Moves the last entry of list L into position p (the caller forgets what was at p). */
static void list_take(qv_index *idx, ivf *f, uint32_t L, uint32_t p)
{
    ivf_list *l = &f->lists[L];
    uint32_t last = --l->n;
    if (p == last)
        return;
    l->ids[p] = l->ids[last];
    memcpy(l->vecs + (size_t)p * f->stride, l->vecs + (size_t)last * f->stride,
           idx->params.dim * sizeof(float));
    f->slot_pos[qv__idmap_get(&f->map, l->ids[p])] = p;
}

static void list_append(qv_index *idx, ivf *f, uint32_t L, uint32_t slot, uint64_t id,
                        const float *v)
{
    ivf_list *l = &f->lists[L];
    size_t dim = idx->params.dim;
    uint32_t p = l->n++;
    l->ids[p] = id;
    float *dst = l->vecs + (size_t)p * f->stride;
    memcpy(dst, v, dim * sizeof(float));
    if (f->stride > dim)
        memset(dst + dim, 0, (f->stride - dim) * sizeof(float));
    f->slot_list[slot] = L;
    f->slot_pos[slot] = p;
}

/* Grown copy of one list, built outside the rwlock. */
typedef struct list_growth {
    uint32_t list, cap;
    uint64_t *ids;
    float *vecs;
} list_growth;

static int ivf_add(qv_index *idx, const uint64_t *ids, const float *vecs, size_t n, qv_status *err)
{
    ivf *f = idx->impl;
    size_t dim = idx->params.dim;
    if (n == 0)
        return 0;
    bool trained_here = false;
    if (!f->trained) {
        int rc = train_cells(idx, vecs, n, err);
        if (rc != 0)
            return rc;
        trained_here = true;
    }

    int rc = QV_ERESOURCE;
    uint32_t *assign = malloc(n * sizeof(uint32_t));
    uint32_t *extra = calloc(f->nlist, sizeof(uint32_t));
    list_growth *grow = NULL;
    size_t ngrow = 0;
    uint32_t *s_list = NULL, *s_pos = NULL;
    uint64_t *s_id = NULL;
    if (assign == NULL || extra == NULL)
        goto fail_oom;
    /* Centroids do not change while we are the writer: no lock needed to read them. */
    if (idx->params.metric == QV_METRIC_L2)
        rc = qv__kmeans_assign(vecs, n, dim, f->centroids, f->nlist, idx->params.threads, assign,
                               NULL, err);
    else
        rc = qv__kmeans_assign_ip(vecs, n, dim, f->centroids, f->nlist, idx->params.threads, assign,
                                  NULL, err);
    if (rc != 0)
        goto fail;

    size_t fresh = 0;
    for (size_t i = 0; i < n; i++) {
        extra[assign[i]]++;
        if (qv__idmap_get(&f->map, ids[i]) == QV__NO_SLOT)
            fresh++;
    }
    if (fresh > (size_t)UINT32_MAX - 1 - f->count) {
        *err = qv_status_make(QV_ERESOURCE, "IVF index: more than %u vectors",
                              (unsigned)(UINT32_MAX - 1));
        rc = QV_ERESOURCE;
        goto fail;
    }
    for (uint32_t c = 0; c < f->nlist; c++)
        if (extra[c] > 0 && (uint64_t)f->lists[c].n + extra[c] > f->lists[c].cap)
            ngrow++;
    grow = calloc(ngrow + 1, sizeof(list_growth));
    if (grow == NULL)
        goto fail_oom;
    ngrow = 0;
    for (uint32_t c = 0; c < f->nlist; c++) {
        const ivf_list *l = &f->lists[c];
        uint64_t need = (uint64_t)l->n + extra[c];
        if (extra[c] == 0 || need <= l->cap)
            continue;
        uint64_t cap = l->cap < 8 ? 8 : l->cap;
        while (cap < need)
            cap *= 2;
        if (cap > UINT32_MAX)
            cap = UINT32_MAX;
        list_growth *g = &grow[ngrow++];
        g->list = c;
        g->cap = (uint32_t)cap;
        g->ids = malloc(cap * sizeof(uint64_t));
        g->vecs = qv__alloc_rows(cap, f->stride);
        if (g->ids == NULL || g->vecs == NULL)
            goto fail_oom;
        if (l->n > 0) {
            memcpy(g->ids, l->ids, l->n * sizeof(uint64_t));
            memcpy(g->vecs, l->vecs, (size_t)l->n * f->stride * sizeof(float));
        }
    }
    size_t slot_cap = f->slot_cap;
    if (f->count + fresh > slot_cap) {
        slot_cap = slot_cap < 16 ? 16 : slot_cap;
        while (slot_cap < f->count + fresh)
            slot_cap *= 2;
        s_list = malloc(slot_cap * sizeof(uint32_t));
        s_pos = malloc(slot_cap * sizeof(uint32_t));
        s_id = malloc(slot_cap * sizeof(uint64_t));
        if (s_list == NULL || s_pos == NULL || s_id == NULL)
            goto fail_oom;
        if (f->count > 0) {
            memcpy(s_list, f->slot_list, f->count * sizeof(uint32_t));
            memcpy(s_pos, f->slot_pos, f->count * sizeof(uint32_t));
            memcpy(s_id, f->slot_id, f->count * sizeof(uint64_t));
        }
    }

    pthread_rwlock_wrlock(&f->lock);
    if (qv__idmap_reserve(&f->map, fresh) != 0) {
        pthread_rwlock_unlock(&f->lock);
        goto fail_oom;
    }
    for (size_t g = 0; g < ngrow; g++) {
        ivf_list *l = &f->lists[grow[g].list];
        uint64_t *oi = l->ids;
        float *ov = l->vecs;
        l->ids = grow[g].ids;
        l->vecs = grow[g].vecs;
        l->cap = grow[g].cap;
        grow[g].ids = oi; /* freed below, after the unlock */
        grow[g].vecs = ov;
    }
    if (s_list != NULL) {
        uint32_t *ol = f->slot_list, *op = f->slot_pos;
        uint64_t *oid = f->slot_id;
        f->slot_list = s_list;
        f->slot_pos = s_pos;
        f->slot_id = s_id;
        f->slot_cap = slot_cap;
        s_list = ol;
        s_pos = op;
        s_id = oid;
    }
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = qv__idmap_get(&f->map, ids[i]);
        if (slot == QV__NO_SLOT) {
            slot = (uint32_t)f->count++;
            (void)qv__idmap_put(&f->map, ids[i], slot); /* reserved above */
            f->slot_id[slot] = ids[i];
        } else {
            /* Upsert: leave the old cell (the list has room: extra[] counted every vector). */
            list_take(idx, f, f->slot_list[slot], f->slot_pos[slot]);
        }
        list_append(idx, f, assign[i], slot, ids[i], vecs + i * dim);
    }
    pthread_rwlock_unlock(&f->lock);
    rc = 0;
    goto done;

fail_oom:
    *err = qv_status_make(QV_ERESOURCE, "IVF index: out of memory adding %zu vectors", n);
    rc = QV_ERESOURCE;
fail:
    if (trained_here)
        untrain(f);
done:
    if (grow != NULL)
        for (size_t g = 0; g < ngrow; g++) {
            free(grow[g].ids);
            free(grow[g].vecs);
        }
    free(grow);
    free(s_list);
    free(s_pos);
    free(s_id);
    free(extra);
    free(assign);
    return rc;
}

static int ivf_remove(qv_index *idx, const uint64_t *ids, size_t n, size_t *removed)
{
    ivf *f = idx->impl;
    size_t gone = 0;
    pthread_rwlock_wrlock(&f->lock);
    for (size_t i = 0; i < n; i++) {
        uint32_t slot = qv__idmap_get(&f->map, ids[i]);
        if (slot == QV__NO_SLOT)
            continue;
        list_take(idx, f, f->slot_list[slot], f->slot_pos[slot]);
        qv__idmap_del(&f->map, ids[i]);
        size_t last = --f->count;
        if (slot != last) {
            f->slot_list[slot] = f->slot_list[last];
            f->slot_pos[slot] = f->slot_pos[last];
            f->slot_id[slot] = f->slot_id[last];
            /* The moved id is present: overwriting its entry cannot fail. */
            (void)qv__idmap_put(&f->map, f->slot_id[slot], slot);
        }
        gone++;
    }
    pthread_rwlock_unlock(&f->lock);
    if (removed != NULL)
        *removed = gone;
    return 0;
}

/* ---- search ---------------------------------------------------------------------------------- */

static inline void offer(qv__topk *t, const qv_filter *filter, uint64_t id, float d, float *worst)
{
    if (d <= *worst && (filter == NULL || qv__filter_allows(filter, id))) {
        qv__topk_push(t, id, d);
        *worst = qv__topk_worst(t);
    }
}

static void scan_list_l2(const qv_index *idx, const ivf *f, const ivf_list *l, const float *q,
                         const qv_filter *filter, qv__topk *t)
{
    float d[IVF_SCAN_BLOCK];
    float worst = qv__topk_worst(t);
    for (size_t s0 = 0; s0 < l->n; s0 += IVF_SCAN_BLOCK) {
        size_t nb = l->n - s0 < IVF_SCAN_BLOCK ? l->n - s0 : IVF_SCAN_BLOCK;
        idx->kern->l2sq_f32_batch(q, l->vecs + s0 * f->stride, nb, idx->params.dim, f->stride, d);
        for (size_t j = 0; j < nb; j++)
            if (d[j] <= worst)
                offer(t, filter, l->ids[s0 + j], d[j], &worst);
    }
}

static void scan_list_ip(const qv_index *idx, const ivf *f, const ivf_list *l, const float *q,
                         const qv_filter *filter, qv__topk *t)
{
    float worst = qv__topk_worst(t);
    float (*ip)(const float *, const float *, size_t) = idx->kern->ip_f32;
    size_t dim = idx->params.dim;
    const float *v = l->vecs;
    for (size_t s = 0; s < l->n; s++, v += f->stride) {
        float d = -ip(q, v, dim);
        if (d <= worst)
            offer(t, filter, l->ids[s], d, &worst);
    }
}

static void scan_list(const qv_index *idx, const ivf *f, uint32_t c, const float *q,
                      const qv_filter *filter, qv__topk *t)
{
    if (idx->params.metric == QV_METRIC_L2)
        scan_list_l2(idx, f, &f->lists[c], q, filter, t);
    else
        scan_list_ip(idx, f, &f->lists[c], q, filter, t);
}

static void scan_sparse(const qv_index *idx, const ivf *f, const float *q, const qv_filter *filter,
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
            const ivf_list *l = &f->lists[f->slot_list[slot]];
            float d = qv__dist(idx, q, l->vecs + (size_t)f->slot_pos[slot] * f->stride);
            if (d <= worst) {
                qv__topk_push(t, buf[i], d);
                worst = qv__topk_worst(t);
            }
        }
        if (got < 256)
            break;
    }
}

/* Caller holds the read lock; f is trained. Returns 0 or QV_ERESOURCE. */
static int probe(const qv_index *idx, const ivf *f, const float *q, size_t nprobe,
                 const qv_filter *filter, qv__topk *t)
{
    size_t dim = idx->params.dim;
    /* Distances first, then the hits, starting on an even float so they are 8-byte aligned. */
    size_t nfl = ((size_t)f->nlist + 1) & ~(size_t)1;
    float *cd = malloc(nfl * sizeof(float) + nprobe * sizeof(qv_hit));
    if (cd == NULL)
        return QV_ERESOURCE;
    qv_hit *cells = (qv_hit *)(void *)(cd + nfl);
    if (idx->params.metric == QV_METRIC_L2) {
        idx->kern->l2sq_f32_batch(q, f->centroids, f->nlist, dim, dim, cd);
    } else {
        for (uint32_t c = 0; c < f->nlist; c++)
            cd[c] = -idx->kern->ip_f32(q, f->centroids + (size_t)c * dim, dim);
    }
    qv__topk ct = {cells, 0, nprobe};
    float worst = qv__topk_worst(&ct);
    for (uint32_t c = 0; c < f->nlist; c++)
        if (cd[c] <= worst) {
            qv__topk_push(&ct, c, cd[c]);
            worst = qv__topk_worst(&ct);
        }
    qv__topk_sort(&ct); /* nearest cell first: the heap tightens sooner */
    for (size_t i = 0; i < ct.n; i++)
        scan_list(idx, f, (uint32_t)cells[i].id, q, filter, t);
    free(cd);
    return 0;
}

static int ivf_search(qv_index *idx, const float *q, size_t k, const qv_search_params *sp,
                      const qv_filter *filter, qv_hit *out, size_t *nout)
{
    ivf *f = idx->impl;
    qv__topk t = {out, 0, k};
    int rc = 0;
    pthread_rwlock_rdlock(&f->lock);
    if (!f->trained || f->count == 0)
        goto done;
    uint64_t est = qv__filter_estimate(filter);
    if (filter != NULL && filter->allow != NULL &&
        roaring_bitmap_get_cardinality(filter->allow) < f->count / IVF_SPARSE_RATIO) {
        scan_sparse(idx, f, q, filter, &t);
        goto done;
    }
    size_t nprobe = sp->nprobe < f->nlist ? sp->nprobe : f->nlist;
    if (nprobe == 0)
        nprobe = 1;
    if (est < f->count) {
        /* Only a fraction est / count passes: probe proportionally more cells. */
        uint64_t allowed = est > 0 ? est : 1;
        uint64_t widen = (f->count + allowed - 1) / allowed;
        nprobe = widen >= f->nlist || nprobe * widen >= f->nlist ? f->nlist : nprobe * widen;
    }
    if (sp->exact || nprobe >= f->nlist) {
        for (uint32_t c = 0; c < f->nlist; c++)
            scan_list(idx, f, c, q, filter, &t);
    } else {
        rc = probe(idx, f, q, nprobe, filter, &t);
    }
done:
    pthread_rwlock_unlock(&f->lock);
    qv__topk_sort(&t);
    *nout = rc == 0 ? t.n : 0;
    return rc;
}

/* ---- readers --------------------------------------------------------------------------------- */

static bool ivf_contains(qv_index *idx, uint64_t id)
{
    ivf *f = idx->impl;
    pthread_rwlock_rdlock(&f->lock);
    bool found = qv__idmap_get(&f->map, id) != QV__NO_SLOT;
    pthread_rwlock_unlock(&f->lock);
    return found;
}

static void ivf_stats(qv_index *idx, qv_index_stats *out)
{
    ivf *f = idx->impl;
    size_t dim = idx->params.dim;
    pthread_rwlock_rdlock(&f->lock);
    uint64_t list_bytes = 0, vec_bytes = 0;
    for (uint32_t c = 0; c < f->nlist; c++) {
        list_bytes += (uint64_t)f->lists[c].cap * sizeof(uint64_t);
        vec_bytes += (uint64_t)f->lists[c].cap * f->stride * sizeof(float);
    }
    out->count = f->count;
    out->deleted = 0;
    out->trained = f->trained;
    out->bytes_vectors = (uint64_t)f->count * dim * sizeof(float);
    out->bytes_ram = list_bytes + vec_bytes + (uint64_t)f->nlist * dim * sizeof(float) +
                     (uint64_t)f->slot_cap * (2 * sizeof(uint32_t) + sizeof(uint64_t)) +
                     (uint64_t)f->map.cap * (sizeof(uint64_t) + sizeof(uint32_t));
    if (f->trained)
        out->params.ivf.nlist = f->nlist;
    pthread_rwlock_unlock(&f->lock);
}

/* ---- snapshot -------------------------------------------------------------------------------- */

static int ivf_save(qv_index *idx, qv__writer *w)
{
    ivf *f = idx->impl;
    size_t dim = idx->params.dim;
    uint64_t meta[3] = {f->trained ? 1u : 0u, f->nlist, f->count};
    qv__w_section(w, IVF_TAG_META, meta, sizeof(meta));
    qv__w_section(w, IVF_TAG_CENTROIDS, f->centroids, (size_t)f->nlist * dim * sizeof(float));
    qv__w_begin(w, IVF_TAG_SIZES);
    for (uint32_t c = 0; c < f->nlist; c++)
        qv__w_write(w, &f->lists[c].n, sizeof(uint32_t));
    qv__w_end(w);
    qv__w_begin(w, IVF_TAG_IDS);
    for (uint32_t c = 0; c < f->nlist; c++)
        qv__w_write(w, f->lists[c].ids, f->lists[c].n * sizeof(uint64_t));
    qv__w_end(w);
    qv__w_begin(w, IVF_TAG_VECS);
    for (uint32_t c = 0; c < f->nlist; c++) {
        const ivf_list *l = &f->lists[c];
        if (f->stride == dim)
            qv__w_write(w, l->vecs, (size_t)l->n * dim * sizeof(float));
        else
            for (uint32_t p = 0; p < l->n; p++)
                qv__w_write(w, l->vecs + (size_t)p * f->stride, dim * sizeof(float));
    }
    qv__w_end(w);
    return w->err;
}

#define LOAD_FAIL(code, ...)                                                                       \
    do {                                                                                           \
        *err = qv_status_make(code, __VA_ARGS__);                                                  \
        rc = code;                                                                                 \
        goto fail;                                                                                 \
    } while (0)

static int ivf_load(qv_index *idx, const qv__reader *r, qv_status *err)
{
    size_t dim = idx->params.dim;
    const void *p;
    uint64_t meta[3];
    int rc = qv__r_section_exact(r, IVF_TAG_META, sizeof(meta), &p, err);
    if (rc != 0)
        return rc;
    memcpy(meta, p, sizeof(meta));
    uint64_t trained = meta[0], nlist = meta[1], count = meta[2];
    if (dim == 0 || dim > QV_INDEX_MAX_DIM || trained > 1 ||
        (trained && (nlist < 1 || nlist > idx->params.ivf.nlist || nlist > 65536)) ||
        (!trained && (nlist != 0 || count != 0)) || count > (uint64_t)UINT32_MAX - 1) {
        *err = qv_status_make(
            QV_ECORRUPT, "IVF index file: bad header (trained %llu, nlist %llu, count %llu)",
            (unsigned long long)trained, (unsigned long long)nlist, (unsigned long long)count);
        return QV_ECORRUPT;
    }
    const void *cp, *sp, *ip, *vp;
    if ((rc = qv__r_section_exact(r, IVF_TAG_CENTROIDS, nlist * dim * sizeof(float), &cp, err)) !=
            0 ||
        (rc = qv__r_section_exact(r, IVF_TAG_SIZES, nlist * sizeof(uint32_t), &sp, err)) != 0)
        return rc;
    if (count > SIZE_MAX / sizeof(float) / dim) {
        *err = qv_status_make(QV_ECORRUPT, "IVF index file: %llu vectors is too many",
                              (unsigned long long)count);
        return QV_ECORRUPT;
    }
    if ((rc = qv__r_section_exact(r, IVF_TAG_IDS, count * sizeof(uint64_t), &ip, err)) != 0 ||
        (rc = qv__r_section_exact(r, IVF_TAG_VECS, count * dim * sizeof(float), &vp, err)) != 0)
        return rc;
    uint64_t total = 0;
    for (uint64_t c = 0; c < nlist; c++) {
        uint32_t n;
        memcpy(&n, (const uint8_t *)sp + c * sizeof(uint32_t), sizeof(n));
        total += n;
    }
    if (total != count) {
        *err =
            qv_status_make(QV_ECORRUPT, "IVF index file: lists hold %llu vectors, header says %llu",
                           (unsigned long long)total, (unsigned long long)count);
        return QV_ECORRUPT;
    }

    ivf *f = ivf_new(idx);
    if (f == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "IVF index: out of memory");
        return QV_ERESOURCE;
    }
    idx->impl = f;
    f->trained = trained != 0;
    if (f->trained) {
        f->centroids = malloc(nlist * dim * sizeof(float));
        f->lists = calloc(nlist, sizeof(ivf_list));
        if (f->centroids == NULL || f->lists == NULL) {
            free(f->centroids);
            free(f->lists);
            f->centroids = NULL;
            f->lists = NULL;
            LOAD_FAIL(QV_ERESOURCE, "IVF index: out of memory loading %llu cells",
                      (unsigned long long)nlist);
        }
        f->nlist = (uint32_t)nlist;
        memcpy(f->centroids, cp, nlist * dim * sizeof(float));
        if (!qv__all_finite(f->centroids, nlist * dim))
            LOAD_FAIL(QV_ECORRUPT, "IVF index file: centroids have non-finite values");
    }
    f->slot_cap = count < 16 ? 16 : count;
    f->slot_list = malloc(f->slot_cap * sizeof(uint32_t));
    f->slot_pos = malloc(f->slot_cap * sizeof(uint32_t));
    f->slot_id = malloc(f->slot_cap * sizeof(uint64_t));
    if (f->slot_list == NULL || f->slot_pos == NULL || f->slot_id == NULL ||
        qv__idmap_reserve(&f->map, count) != 0)
        LOAD_FAIL(QV_ERESOURCE, "IVF index: out of memory loading %llu vectors",
                  (unsigned long long)count);
    const uint8_t *ids = ip, *vecs = vp;
    size_t off = 0;
    for (uint32_t c = 0; c < f->nlist; c++) {
        ivf_list *l = &f->lists[c];
        uint32_t n;
        memcpy(&n, (const uint8_t *)sp + (size_t)c * sizeof(uint32_t), sizeof(n));
        if (n == 0)
            continue;
        l->ids = malloc(n * sizeof(uint64_t));
        l->vecs = qv__alloc_rows(n, f->stride);
        if (l->ids == NULL || l->vecs == NULL)
            LOAD_FAIL(QV_ERESOURCE, "IVF index: out of memory loading list %u", c);
        l->cap = n;
        memcpy(l->ids, ids + off * sizeof(uint64_t), n * sizeof(uint64_t));
        for (uint32_t q = 0; q < n; q++) {
            float *dst = l->vecs + (size_t)q * f->stride;
            memcpy(dst, vecs + (off + q) * dim * sizeof(float), dim * sizeof(float));
            if (f->stride > dim)
                memset(dst + dim, 0, (f->stride - dim) * sizeof(float));
            if (!qv__all_finite(dst, dim))
                LOAD_FAIL(QV_ECORRUPT, "IVF index file: a vector of list %u has non-finite values",
                          c);
            uint64_t id = l->ids[q];
            if (qv__idmap_get(&f->map, id) != QV__NO_SLOT)
                LOAD_FAIL(QV_ECORRUPT, "IVF index file: id %llu appears twice",
                          (unsigned long long)id);
            uint32_t slot = (uint32_t)f->count++;
            (void)qv__idmap_put(&f->map, id, slot);
            f->slot_id[slot] = id;
            f->slot_list[slot] = c;
            f->slot_pos[slot] = q;
            l->n = q + 1;
        }
        off += n;
    }
    return 0;

fail:
    ivf_destroy(idx);
    return rc;
}

const qv__index_ops qv__ivf_ops = {
    .name = "ivf",
    .init = ivf_init,
    .add = ivf_add,
    .train = ivf_train,
    .remove = ivf_remove,
    .compact = NULL,
    .search = ivf_search,
    .search_batch = NULL,
    .contains = ivf_contains,
    .stats = ivf_stats,
    .save = ivf_save,
    .load = ivf_load,
    .destroy = ivf_destroy,
};
