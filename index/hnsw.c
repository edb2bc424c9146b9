/*
 * HNSW: hierarchical navigable small-world graph (Malkov & Yashunin), with float32 or 8-bit
 * scalar-quantised storage, tombstone deletes with graph repair, and filters applied during
 * traversal.
 *
 * Map of this file:
 *   - layout: one fixed-size block per slot holding [vector or codes][level-0 link list]; upper
 *     layers' link lists are allocated per slot; labels, levels and flags in parallel arrays.
 *     Link lists are [count][ids...] of uint32 read with relaxed atomics, so searches never lock.
 *   - concurrency: `grow` (rwlock) is held shared by searches and by insertion, exclusively only
 *     to grow the arrays or to recycle compacted slots. Writers are serialised by the index's
 *     write lock; inside one add, insertion runs on several threads that lock link lists through
 *     striped mutexes. The id map has its own rwlock.
 *   - quantiser (INT8): per-dimension offset and one shared scale, so integer L2 between codes is
 *     proportional to float L2 and the exact integer kernels apply; IP/COSINE use a symmetric
 *     signed scale. Searches traverse on codes and re-rank the best candidates on float32.
 *   - search: greedy descent on upper layers, beam search (ef) on layer 0 with filter and
 *     tombstones excluded from results but not from traversal; very selective filters switch to
 *     an exact scan of the allowed set.
 *   - save/load: sections HMET, LABL, LEVL, FLAG, L0LK, UPLK, VECF, CODE, QUAN; load validates
 *     every count, link and level.
 */
#define _GNU_SOURCE
#include "index/index_internal.h"

#include <math.h>
#include <stdlib.h>

#define MAX_LEVEL    16
#define NSTRIPES     4096
#define FLAG_DELETED 1u /* tombstone: never returned, still traversed until compaction */
#define FLAG_FREE    2u /* recycled by compaction (always with FLAG_DELETED), in the free list */

#define TAG_META   QV__TAG('H', 'M', 'E', 'T')
#define TAG_LABELS QV__TAG('L', 'A', 'B', 'L')
#define TAG_LEVELS QV__TAG('L', 'E', 'V', 'L')
#define TAG_FLAGS  QV__TAG('F', 'L', 'A', 'G')
#define TAG_L0     QV__TAG('L', '0', 'L', 'K')
#define TAG_UPPER  QV__TAG('U', 'P', 'L', 'K')
#define TAG_VECF   QV__TAG('V', 'E', 'C', 'F')
#define TAG_CODES  QV__TAG('C', 'O', 'D', 'E')
#define TAG_QUANT  QV__TAG('Q', 'U', 'A', 'N')

typedef struct scratch {
    struct scratch *next;
    uint32_t *visited;
    size_t visited_cap;
    uint32_t epoch;
    /* heaps of (distance, slot) */
    float *cd; /* candidates (min-heap), grows on demand */
    uint32_t *cs;
    size_t cand_cap;
    float *rd; /* results (max-heap), ef + 1 entries */
    uint32_t *rs;
    size_t heap_cap;
    uint8_t *qcode;
    size_t qcode_cap;
} scratch;

typedef struct hnsw {
    uint32_t dim, M, M0, efc;
    bool int8;
    bool l2;
    double mult; /* level generator: floor(-ln(U) * mult) */
    uint64_t rng;

    pthread_rwlock_t grow;
    size_t cap;       /* slots allocated */
    atomic_size_t n;  /* slots in use (live, deleted or free) */
    size_t block;     /* bytes per level-0 block */
    size_t vec_bytes; /* bytes of the vector or codes at the start of a block */
    uint8_t *blocks;  /* cap * block, 64-byte aligned */
    float *vecf;      /* INT8: float32 vectors for re-rank (cap * dim), or mapped */
    bool vecf_mapped;
    uint64_t *labels;
    uint8_t *levels;
    _Atomic uint8_t *flags;
    uint32_t **upper;        /* per slot: levels[s] lists of (1 + M) uint32, or NULL */
    _Atomic uint32_t *indeg; /* layer-0 links pointing at each slot (from any node) */

    /* Slots whose last incoming layer-0 link was pruned away: unreachable until re-linked.
     * Concurrent inserts can prune each other out of full lists; add repairs these after the
     * batch (see repair_orphans). */
    pthread_mutex_t orphan_mu;
    uint32_t *orphans;
    size_t norphans, orphan_cap;

    /* INT8 quantiser */
    bool trained;
    float *qmin; /* per dimension offset (L2); zero for IP */
    float qscale;

    atomic_uint entry; /* entry slot, UINT32_MAX when empty */
    atomic_int max_level;
    pthread_mutex_t entry_mu;
    pthread_mutex_t stripes[NSTRIPES];

    pthread_rwlock_t map_mu;
    qv__idmap map;
    _Atomic uint64_t live, deleted;
    uint32_t *free_slots;
    size_t nfree, free_cap;

    pthread_mutex_t scratch_mu;
    scratch *scratch_free;
} hnsw;

/* --------------------------------------------------------------------------------------------
 * Layout helpers
 * ------------------------------------------------------------------------------------------ */
static inline uint8_t *blk(const hnsw *h, uint32_t s)
{
    return h->blocks + (size_t)s * h->block;
}

static inline _Atomic uint32_t *links0(const hnsw *h, uint32_t s)
{
    return (_Atomic uint32_t *)(blk(h, s) + h->vec_bytes);
}

static inline _Atomic uint32_t *links_at(const hnsw *h, uint32_t s, int level)
{
    if (level == 0)
        return links0(h, s);
    return (_Atomic uint32_t *)(h->upper[s] + (size_t)(level - 1) * (h->M + 1));
}

static inline uint32_t max_links(const hnsw *h, int level)
{
    return level == 0 ? h->M0 : h->M;
}

static inline const float *fvec(const hnsw *h, uint32_t s)
{
    return h->int8 ? h->vecf + (size_t)s * h->dim : (const float *)blk(h, s);
}

static inline bool is_deleted(const hnsw *h, uint32_t s)
{
    return atomic_load_explicit(&h->flags[s], memory_order_relaxed) & FLAG_DELETED;
}

/* Float distance for construction and re-rank: smaller is closer. */
static inline float fdist(const qv_index *idx, const hnsw *h, const float *q, uint32_t s)
{
    return qv__dist(idx, q, fvec(h, s));
}

/* --------------------------------------------------------------------------------------------
 * Quantiser
 * ------------------------------------------------------------------------------------------ */
static void quant_train(hnsw *h, const float *v, size_t n)
{
    size_t dim = h->dim;
    if (h->l2) {
        float range = 0;
        for (size_t d = 0; d < dim; d++) {
            float lo = INFINITY, hi = -INFINITY;
            for (size_t i = 0; i < n; i++) {
                float x = v[i * dim + d];
                lo = x < lo ? x : lo;
                hi = x > hi ? x : hi;
            }
            if (n == 0)
                lo = hi = 0;
            h->qmin[d] = lo;
            if (hi - lo > range)
                range = hi - lo;
        }
        h->qscale = range > 0 ? range / 255.0f : 1.0f;
    } else {
        float amax = 0;
        for (size_t i = 0; i < n * dim; i++) {
            float a = fabsf(v[i]);
            amax = a > amax ? a : amax;
        }
        memset(h->qmin, 0, dim * sizeof(float));
        h->qscale = amax > 0 ? amax / 127.0f : 1.0f;
    }
    h->trained = true;
}

static void quant_encode(const hnsw *h, const float *v, uint8_t *out)
{
    float inv = 1.0f / h->qscale;
    if (h->l2) {
        for (size_t d = 0; d < h->dim; d++) {
            float c = nearbyintf((v[d] - h->qmin[d]) * inv);
            out[d] = (uint8_t)(c < 0 ? 0 : (c > 255 ? 255 : c));
        }
    } else {
        int8_t *o = (int8_t *)out;
        for (size_t d = 0; d < h->dim; d++) {
            float c = nearbyintf(v[d] * inv);
            o[d] = (int8_t)(c < -127 ? -127 : (c > 127 ? 127 : c));
        }
    }
}

/* Distance between an encoded query and slot s's codes, as a float (smaller is closer). */
static inline float cdist(const qv_index *idx, const hnsw *h, const uint8_t *qc, uint32_t s)
{
    if (h->l2)
        return (float)idx->kern->l2sq_u8(qc, blk(h, s), h->dim);
    return -(float)idx->kern->ip_i8((const int8_t *)qc, (const int8_t *)blk(h, s), h->dim);
}

/* --------------------------------------------------------------------------------------------
 * Scratch: visited tags (epoch-cleared) and heaps, pooled per index
 * ------------------------------------------------------------------------------------------ */
static scratch *scratch_get(hnsw *h, size_t heap_need)
{
    pthread_mutex_lock(&h->scratch_mu);
    scratch *s = h->scratch_free;
    if (s != NULL)
        h->scratch_free = s->next;
    pthread_mutex_unlock(&h->scratch_mu);
    if (s == NULL) {
        s = calloc(1, sizeof(*s));
        if (s == NULL)
            return NULL;
    }
    /* Sized by capacity, not count: a search may meet nodes linked while it runs, and the
     * capacity cannot change while the caller holds `grow` shared. */
    size_t n = h->cap;
    if (s->visited_cap < n) {
        size_t cap = n < 1024 ? 1024 : n;
        free(s->visited);
        s->visited = calloc(cap, sizeof(uint32_t));
        s->visited_cap = s->visited ? cap : 0;
        s->epoch = 0;
    }
    if (s->heap_cap < heap_need) {
        size_t cap = heap_need + 64;
        free(s->rd);
        free(s->rs);
        s->rd = malloc(cap * sizeof(float));
        s->rs = malloc(cap * sizeof(uint32_t));
        s->heap_cap = (s->rd && s->rs) ? cap : 0;
    }
    if (s->cand_cap < heap_need) {
        size_t cap = heap_need + 64;
        free(s->cd);
        free(s->cs);
        s->cd = malloc(cap * sizeof(float));
        s->cs = malloc(cap * sizeof(uint32_t));
        s->cand_cap = (s->cd && s->cs) ? cap : 0;
    }
    if (h->int8 && s->qcode_cap < h->dim) {
        free(s->qcode);
        s->qcode = malloc(h->dim + 64);
        s->qcode_cap = s->qcode ? h->dim : 0;
    }
    if (s->visited == NULL || s->heap_cap < heap_need || s->cand_cap < heap_need ||
        (h->int8 && s->qcode == NULL)) {
        free(s->visited);
        free(s->cd);
        free(s->cs);
        free(s->rd);
        free(s->rs);
        free(s->qcode);
        free(s);
        return NULL;
    }
    if (++s->epoch == 0) { /* wrapped: clear the tags once every 2^32 searches */
        memset(s->visited, 0, s->visited_cap * sizeof(uint32_t));
        s->epoch = 1;
    }
    return s;
}

static void scratch_put(hnsw *h, scratch *s)
{
    pthread_mutex_lock(&h->scratch_mu);
    s->next = h->scratch_free;
    h->scratch_free = s;
    pthread_mutex_unlock(&h->scratch_mu);
}

static void scratch_free_all(hnsw *h)
{
    while (h->scratch_free != NULL) {
        scratch *s = h->scratch_free;
        h->scratch_free = s->next;
        free(s->visited);
        free(s->cd);
        free(s->cs);
        free(s->rd);
        free(s->rs);
        free(s->qcode);
        free(s);
    }
}

/* Binary heaps over parallel (distance, slot) arrays. min: candidates; max: results. */
static inline void heap_push(float *d, uint32_t *s, size_t *n, float dv, uint32_t sv, bool max)
{
    size_t i = (*n)++;
    while (i > 0) {
        size_t p = (i - 1) >> 1;
        if (max ? d[p] >= dv : d[p] <= dv)
            break;
        d[i] = d[p];
        s[i] = s[p];
        i = p;
    }
    d[i] = dv;
    s[i] = sv;
}

static inline void heap_pop(float *d, uint32_t *s, size_t *n, bool max)
{
    size_t cnt = --(*n);
    if (cnt == 0)
        return;
    float dv = d[cnt];
    uint32_t sv = s[cnt];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        float md = dv;
        if (l < cnt && (max ? d[l] > md : d[l] < md)) {
            m = l;
            md = d[l];
        }
        if (r < cnt && (max ? d[r] > md : d[r] < md))
            m = r;
        if (m == i)
            break;
        d[i] = d[m];
        s[i] = s[m];
        i = m;
    }
    d[i] = dv;
    s[i] = sv;
}

/* --------------------------------------------------------------------------------------------
 * Search on one layer
 * ------------------------------------------------------------------------------------------ */
typedef struct query {
    const float *f;   /* float query (construction, re-rank) */
    const uint8_t *c; /* encoded query (INT8 search), or NULL to use floats */
} query;

static inline float qdist(const qv_index *idx, const hnsw *h, const query *q, uint32_t s)
{
    return q->c ? cdist(idx, h, q->c, s) : fdist(idx, h, q->f, s);
}

static inline void prefetch_slot(const hnsw *h, uint32_t s, bool codes)
{
    const char *p = codes || !h->int8 ? (const char *)blk(h, s) : (const char *)fvec(h, s);
    __builtin_prefetch(p);
    __builtin_prefetch(p + 64);
    __builtin_prefetch(p + 128);
}

/* Greedy descent: the closest node to q reachable from ep on `level`. */
static uint32_t greedy(const qv_index *idx, const hnsw *h, const query *q, uint32_t ep, float *epd,
                       int level)
{
    bool changed = true;
    while (changed) {
        changed = false;
        _Atomic uint32_t *ll = links_at(h, ep, level);
        uint32_t cnt = atomic_load_explicit(&ll[0], memory_order_acquire);
        uint32_t mx = max_links(h, level);
        if (cnt > mx)
            cnt = mx;
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t c = atomic_load_explicit(&ll[1 + i], memory_order_relaxed);
            float d = qdist(idx, h, q, c);
            if (d < *epd) {
                *epd = d;
                ep = c;
                changed = true;
            }
        }
    }
    return ep;
}

/* Makes room for one more candidate; false when memory runs out (the candidate is dropped,
 * which costs recall, never correctness). */
static bool cand_room(scratch *sc, size_t nc)
{
    if (nc < sc->cand_cap)
        return true;
    size_t cap = sc->cand_cap * 2;
    float *d = realloc(sc->cd, cap * sizeof(float));
    if (d == NULL)
        return false;
    sc->cd = d;
    uint32_t *s = realloc(sc->cs, cap * sizeof(uint32_t));
    if (s == NULL)
        return false;
    sc->cs = s;
    sc->cand_cap = cap;
    return true;
}

/* Beam search on `level` from ep with a result list of size ef. Results that `accept` (not
 * deleted, filter passed) go to the max-heap (rd, rs); traversal goes through every node.
 * Returns the number of results. */
static size_t search_layer(const qv_index *idx, const hnsw *h, scratch *sc, const query *q,
                           uint32_t ep, float epd, size_t ef, int level, const qv_filter *filter,
                           bool skip_deleted)
{
    float *rd = sc->rd;
    uint32_t *rs = sc->rs;
    size_t nc = 0, nr = 0;
    uint32_t *vis = sc->visited, epoch = sc->epoch;
    uint32_t mx = max_links(h, level);
    bool codes = q->c != NULL;

    vis[ep] = epoch;
    heap_push(sc->cd, sc->cs, &nc, epd, ep, false);
    if ((!skip_deleted || !is_deleted(h, ep)) &&
        (filter == NULL || qv__filter_allows(filter, h->labels[ep])))
        heap_push(rd, rs, &nr, epd, ep, true);
    float bound = nr ? rd[0] : INFINITY;

    while (nc > 0) {
        float d = sc->cd[0];
        uint32_t c = sc->cs[0];
        if (d > bound && nr >= ef)
            break;
        heap_pop(sc->cd, sc->cs, &nc, false);
        _Atomic uint32_t *ll = links_at(h, c, level);
        uint32_t cnt = atomic_load_explicit(&ll[0], memory_order_acquire);
        if (cnt > mx)
            cnt = mx;
        if (cnt > 0)
            prefetch_slot(h, atomic_load_explicit(&ll[1], memory_order_relaxed), codes);
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t nb = atomic_load_explicit(&ll[1 + i], memory_order_relaxed);
            if (i + 1 < cnt)
                prefetch_slot(h, atomic_load_explicit(&ll[2 + i], memory_order_relaxed), codes);
            if (vis[nb] == epoch)
                continue;
            vis[nb] = epoch;
            float dn = qdist(idx, h, q, nb);
            if ((nr < ef || dn < bound) && cand_room(sc, nc)) {
                heap_push(sc->cd, sc->cs, &nc, dn, nb, false);
                if ((!skip_deleted || !is_deleted(h, nb)) &&
                    (filter == NULL || qv__filter_allows(filter, h->labels[nb]))) {
                    heap_push(rd, rs, &nr, dn, nb, true);
                    if (nr > ef)
                        heap_pop(rd, rs, &nr, true);
                    bound = rd[0];
                }
            }
        }
    }
    return nr;
}

/* --------------------------------------------------------------------------------------------
 * Neighbour selection (the paper's heuristic): keep a candidate only if it is closer to the
 * base than to every neighbour already kept. `cand` sorted closest first.
 * ------------------------------------------------------------------------------------------ */
typedef struct cand {
    float d;
    uint32_t s;
} cand;

static int cmp_cand(const void *a, const void *b)
{
    const cand *x = a, *y = b;
    if (x->d != y->d)
        return x->d < y->d ? -1 : 1;
    return x->s < y->s ? -1 : x->s > y->s;
}

static size_t select_heuristic(const qv_index *idx, const hnsw *h, cand *c, size_t n, size_t m,
                               uint32_t *out)
{
    qsort(c, n, sizeof(cand), cmp_cand);
    size_t kept = 0;
    for (size_t i = 0; i < n && kept < m; i++) {
        bool good = true;
        const float *v = fvec(h, c[i].s);
        for (size_t j = 0; j < kept; j++) {
            if (qv__dist(idx, v, fvec(h, out[j])) < c[i].d) {
                good = false;
                break;
            }
        }
        if (good)
            out[kept++] = c[i].s;
    }
    return kept;
}

static void note_orphan(hnsw *h, uint32_t s)
{
    pthread_mutex_lock(&h->orphan_mu);
    if (h->norphans == h->orphan_cap) {
        size_t cap = h->orphan_cap ? h->orphan_cap * 2 : 64;
        uint32_t *o = realloc(h->orphans, cap * sizeof(uint32_t));
        if (o == NULL) {
            pthread_mutex_unlock(&h->orphan_mu);
            return; /* it stays reachable only by exact scans until the next compaction */
        }
        h->orphans = o;
        h->orphan_cap = cap;
    }
    h->orphans[h->norphans++] = s;
    pthread_mutex_unlock(&h->orphan_mu);
}

static inline void indeg_inc(hnsw *h, uint32_t t)
{
    atomic_fetch_add_explicit(&h->indeg[t], 1, memory_order_relaxed);
}

static inline void indeg_dec(hnsw *h, uint32_t t)
{
    if (atomic_fetch_sub_explicit(&h->indeg[t], 1, memory_order_relaxed) == 1)
        note_orphan(h, t);
}

/* Replaces s's list on `level` (caller holds s's stripe lock); keeps in-degrees of layer 0. */
static void set_links(hnsw *h, uint32_t s, int level, const uint32_t *ids, uint32_t n)
{
    _Atomic uint32_t *ll = links_at(h, s, level);
    uint32_t old = atomic_load_explicit(&ll[0], memory_order_relaxed);
    uint32_t prev[257];
    if (level == 0) {
        for (uint32_t i = 0; i < old; i++)
            prev[i] = atomic_load_explicit(&ll[1 + i], memory_order_relaxed);
    }
    /* Shrink the visible count first so readers never read a half-written tail. */
    if (n < old)
        atomic_store_explicit(&ll[0], n, memory_order_release);
    for (uint32_t i = 0; i < n; i++)
        atomic_store_explicit(&ll[1 + i], ids[i], memory_order_relaxed);
    atomic_store_explicit(&ll[0], n, memory_order_release);
    if (level != 0)
        return;
    for (uint32_t i = 0; i < n; i++) {
        bool had = false;
        for (uint32_t j = 0; j < old && !had; j++)
            had = prev[j] == ids[i];
        if (!had)
            indeg_inc(h, ids[i]);
    }
    for (uint32_t j = 0; j < old; j++) {
        bool kept = false;
        for (uint32_t i = 0; i < n && !kept; i++)
            kept = prev[j] == ids[i];
        if (!kept)
            indeg_dec(h, prev[j]);
    }
}

/* Adds `s` to neighbour `nb`'s list on `level`, re-selecting when the list is full. */
static void add_reverse(const qv_index *idx, hnsw *h, uint32_t nb, uint32_t s, int level, cand *buf,
                        uint32_t *tmp)
{
    uint32_t mx = max_links(h, level);
    pthread_mutex_t *mu = &h->stripes[nb % NSTRIPES];
    pthread_mutex_lock(mu);
    _Atomic uint32_t *ll = links_at(h, nb, level);
    uint32_t cnt = atomic_load_explicit(&ll[0], memory_order_relaxed);
    for (uint32_t i = 0; i < cnt; i++) {
        if (atomic_load_explicit(&ll[1 + i], memory_order_relaxed) == s) {
            pthread_mutex_unlock(mu);
            return;
        }
    }
    if (cnt < mx) {
        atomic_store_explicit(&ll[1 + cnt], s, memory_order_relaxed);
        atomic_store_explicit(&ll[0], cnt + 1, memory_order_release);
        if (level == 0)
            indeg_inc(h, s);
    } else {
        const float *v = fvec(h, nb);
        size_t n = 0;
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t x = atomic_load_explicit(&ll[1 + i], memory_order_relaxed);
            buf[n].s = x;
            buf[n].d = qv__dist(idx, v, fvec(h, x));
            n++;
        }
        buf[n].s = s;
        buf[n].d = qv__dist(idx, v, fvec(h, s));
        n++;
        size_t kept = select_heuristic(idx, h, buf, n, mx, tmp);
        set_links(h, nb, level, tmp, (uint32_t)kept);
    }
    pthread_mutex_unlock(mu);
}

/* --------------------------------------------------------------------------------------------
 * Insertion
 * ------------------------------------------------------------------------------------------ */
static int random_level(hnsw *h)
{
    /* splitmix64 */
    uint64_t z = (h->rng += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    z ^= z >> 31;
    double u = ((double)(z >> 11) + 0.5) / 9007199254740992.0; /* (0, 1) */
    int l = (int)floor(-log(u) * h->mult);
    return l > MAX_LEVEL ? MAX_LEVEL : l;
}

/* Links slot s (vector, level, label already in place) into the graph. */
static int insert_slot(const qv_index *idx, hnsw *h, scratch *sc, cand *buf, uint32_t *tmp,
                       uint32_t s)
{
    int level = h->levels[s];
    query q = {.f = fvec(h, s), .c = NULL};

    pthread_mutex_lock(&h->entry_mu);
    uint32_t ep = atomic_load(&h->entry);
    int top = atomic_load(&h->max_level);
    if (ep == UINT32_MAX) {
        atomic_store(&h->max_level, level);
        atomic_store(&h->entry, s);
        pthread_mutex_unlock(&h->entry_mu);
        return 0;
    }
    bool raises = level > top;
    if (!raises)
        pthread_mutex_unlock(&h->entry_mu); /* keep it held while a new top layer is built */

    float epd = fdist(idx, h, q.f, ep);
    for (int l = top; l > level; l--)
        ep = greedy(idx, h, &q, ep, &epd, l);
    for (int l = level < top ? level : top; l >= 0; l--) {
        if (++sc->epoch == 0) {
            memset(sc->visited, 0, sc->visited_cap * sizeof(uint32_t));
            sc->epoch = 1;
        }
        size_t nr = search_layer(idx, h, sc, &q, ep, epd, h->efc, l, NULL, false);
        size_t n = 0;
        uint32_t best = ep;
        float bestd = INFINITY;
        for (size_t i = 0; i < nr; i++) {
            if (sc->rs[i] == s)
                continue;
            buf[n].s = sc->rs[i];
            buf[n].d = sc->rd[i];
            if (buf[n].d < bestd) {
                bestd = buf[n].d;
                best = buf[n].s;
            }
            n++;
        }
        size_t kept = select_heuristic(idx, h, buf, n, h->M, tmp);
        pthread_mutex_t *mu = &h->stripes[s % NSTRIPES];
        pthread_mutex_lock(mu);
        set_links(h, s, l, tmp, (uint32_t)kept);
        pthread_mutex_unlock(mu);
        uint32_t nbrs[256];
        memcpy(nbrs, tmp, kept * sizeof(uint32_t));
        for (size_t i = 0; i < kept; i++)
            add_reverse(idx, h, nbrs[i], s, l, buf, tmp);
        ep = best;
        epd = bestd;
    }
    if (raises) {
        atomic_store(&h->max_level, level);
        atomic_store(&h->entry, s);
        pthread_mutex_unlock(&h->entry_mu);
    } else if (atomic_load(&h->indeg[s]) == 0) {
        note_orphan(h, s); /* every neighbour pruned it at once; add repairs it */
    }
    return 0;
}

/* Re-links slots that lost every incoming layer-0 link: each gets a link from its nearest node
 * with room, or replaces the farthest link of a near node whose target keeps another in-link.
 * Runs on one thread after the batch (caller holds `grow` shared and the index write lock). */
static void repair_orphans(const qv_index *idx, hnsw *h, bool force)
{
    pthread_mutex_lock(&h->orphan_mu);
    uint32_t *list = h->orphans;
    size_t n = h->norphans;
    h->orphans = NULL;
    h->norphans = h->orphan_cap = 0;
    pthread_mutex_unlock(&h->orphan_mu);
    if (n == 0) {
        free(list);
        return;
    }
    scratch *sc = scratch_get(h, h->efc + h->M0 + 2);
    cand *buf = malloc((h->efc + 1) * sizeof(cand));
    if (sc == NULL || buf == NULL)
        goto out;
    for (size_t i = 0; i < n; i++) {
        uint32_t o = list[i];
        uint32_t ep = atomic_load(&h->entry);
        if (is_deleted(h, o) || o == ep || ep == UINT32_MAX ||
            (!force && atomic_load(&h->indeg[o]) > 0))
            continue;
        uint32_t had = atomic_load(&h->indeg[o]);
        query q = {.f = fvec(h, o), .c = NULL};
        float epd = fdist(idx, h, q.f, ep);
        for (int l = atomic_load(&h->max_level); l > 0; l--)
            ep = greedy(idx, h, &q, ep, &epd, l);
        if (++sc->epoch == 0) {
            memset(sc->visited, 0, sc->visited_cap * sizeof(uint32_t));
            sc->epoch = 1;
        }
        size_t nr = search_layer(idx, h, sc, &q, ep, epd, h->efc, 0, NULL, true);
        size_t nc = 0;
        for (size_t j = 0; j < nr; j++)
            if (sc->rs[j] != o)
                buf[nc++] = (cand){sc->rd[j], sc->rs[j]};
        qsort(buf, nc, sizeof(cand), cmp_cand);
        for (size_t j = 0; j < nc && atomic_load(&h->indeg[o]) == had; j++) {
            uint32_t x = buf[j].s;
            pthread_mutex_t *mu = &h->stripes[x % NSTRIPES];
            pthread_mutex_lock(mu);
            _Atomic uint32_t *ll = links0(h, x);
            uint32_t cnt = atomic_load(&ll[0]);
            bool linked = false;
            for (uint32_t t = 0; t < cnt && !linked; t++)
                linked = atomic_load(&ll[1 + t]) == o;
            if (linked) {
                /* x already links to o, yet o was unreachable: x is not reachable either */
            } else if (cnt < h->M0) {
                atomic_store(&ll[1 + cnt], o);
                atomic_store(&ll[0], cnt + 1);
                indeg_inc(h, o);
            } else {
                const float *xv = fvec(h, x);
                uint32_t far = UINT32_MAX;
                float fard = -INFINITY;
                for (uint32_t t = 0; t < cnt; t++) {
                    uint32_t y = atomic_load(&ll[1 + t]);
                    float d = qv__dist(idx, xv, fvec(h, y));
                    if (atomic_load(&h->indeg[y]) > 1 && d > fard) {
                        fard = d;
                        far = t;
                    }
                }
                if (far != UINT32_MAX && fard > buf[j].d) {
                    uint32_t y = atomic_load(&ll[1 + far]);
                    atomic_store(&ll[1 + far], o);
                    indeg_dec(h, y); /* stays above zero: y had another in-link */
                    indeg_inc(h, o);
                }
            }
            pthread_mutex_unlock(mu);
        }
    }
out:
    if (sc != NULL)
        scratch_put(h, sc);
    free(buf);
    free(list);
}

/* Concurrent inserts can also strand small groups that link only to each other, which in-degrees
 * do not reveal. After a parallel batch, a breadth-first walk of layer 0 from the entry point
 * finds every live node it cannot reach and queues it for repair. O(n * M0) time, 5 bytes per
 * slot of scratch; returns false when that memory is not available (nothing is queued then). */
static bool queue_unreachable(hnsw *h)
{
    size_t n = atomic_load(&h->n);
    uint32_t ep = atomic_load(&h->entry);
    if (n == 0 || ep == UINT32_MAX)
        return true;
    uint8_t *seen = calloc(n, 1);
    uint32_t *queue = malloc(n * sizeof(uint32_t));
    if (seen == NULL || queue == NULL) {
        free(seen);
        free(queue);
        return false;
    }
    size_t head = 0, tail = 0;
    seen[ep] = 1;
    queue[tail++] = ep;
    while (head < tail) {
        uint32_t c = queue[head++];
        _Atomic uint32_t *ll = links0(h, c);
        uint32_t cnt = atomic_load(&ll[0]);
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t x = atomic_load(&ll[1 + i]);
            if (x < n && !seen[x]) {
                seen[x] = 1;
                queue[tail++] = x;
            }
        }
    }
    for (size_t s = 0; s < n; s++)
        if (!seen[s] && !is_deleted(h, (uint32_t)s))
            note_orphan(h, (uint32_t)s);
    free(seen);
    free(queue);
    return true;
}

/* Recounts every slot's incoming layer-0 links and queues the unreachable ones for repair. */
static void recount_indegrees(hnsw *h)
{
    size_t n = atomic_load(&h->n);
    for (size_t s = 0; s < n; s++)
        atomic_store_explicit(&h->indeg[s], 0, memory_order_relaxed);
    for (size_t s = 0; s < n; s++) {
        if (atomic_load(&h->flags[s]) & FLAG_FREE)
            continue;
        _Atomic uint32_t *ll = links0(h, (uint32_t)s);
        uint32_t cnt = atomic_load(&ll[0]);
        for (uint32_t i = 0; i < cnt; i++)
            atomic_fetch_add_explicit(&h->indeg[atomic_load(&ll[1 + i])], 1, memory_order_relaxed);
    }
    uint32_t ep = atomic_load(&h->entry);
    for (size_t s = 0; s < n; s++)
        if (!is_deleted(h, (uint32_t)s) && s != ep && atomic_load(&h->indeg[s]) == 0)
            note_orphan(h, (uint32_t)s);
}

typedef struct insert_ctx {
    const qv_index *idx;
    hnsw *h;
    const uint32_t *slots;
    atomic_int rc;
} insert_ctx;

/* Each worker handles a contiguous chunk so it keeps one scratch and buffer. */
typedef struct chunk_ctx {
    insert_ctx *ic;
    size_t n, nchunks;
} chunk_ctx;

static void insert_chunk(size_t ci, void *arg)
{
    chunk_ctx *cc = arg;
    insert_ctx *c = cc->ic;
    hnsw *h = c->h;
    size_t lo = cc->n * ci / cc->nchunks, hi = cc->n * (ci + 1) / cc->nchunks;
    if (lo == hi)
        return;
    size_t need = h->efc + h->M0 + 2;
    scratch *sc = scratch_get(h, need);
    cand *buf = malloc((need + 1) * sizeof(cand));
    uint32_t *tmp = malloc((need + 1) * sizeof(uint32_t));
    if (sc == NULL || buf == NULL || tmp == NULL) {
        atomic_store(&c->rc, QV_ERESOURCE);
    } else {
        for (size_t i = lo; i < hi; i++)
            insert_slot(c->idx, h, sc, buf, tmp, c->slots[i]);
    }
    if (sc != NULL)
        scratch_put(h, sc);
    free(buf);
    free(tmp);
}

/* --------------------------------------------------------------------------------------------
 * Growth and slot allocation (write lock of the index held)
 * ------------------------------------------------------------------------------------------ */
static int grow_to(hnsw *h, size_t want)
{
    if (want <= h->cap)
        return 0;
    size_t cap = h->cap ? h->cap : 1024;
    while (cap < want)
        cap *= 2;
    if (cap > UINT32_MAX - 1)
        return QV_ERESOURCE;
    uint8_t *blocks = aligned_alloc(64, cap * h->block);
    float *vecf = h->int8 ? aligned_alloc(64, cap * h->dim * sizeof(float)) : NULL;
    uint64_t *labels = malloc(cap * sizeof(uint64_t));
    uint8_t *levels = malloc(cap);
    _Atomic uint8_t *flags = malloc(cap);
    uint32_t **upper = calloc(cap, sizeof(uint32_t *));
    _Atomic uint32_t *indeg = calloc(cap, sizeof(uint32_t));
    if (blocks == NULL || (h->int8 && vecf == NULL) || labels == NULL || levels == NULL ||
        flags == NULL || upper == NULL || indeg == NULL) {
        free((void *)indeg);
        free(blocks);
        free(vecf);
        free(labels);
        free(levels);
        free((void *)flags);
        free(upper);
        return QV_ERESOURCE;
    }
    pthread_rwlock_wrlock(&h->grow);
    size_t n = atomic_load(&h->n);
    if (n > 0) {
        memcpy(blocks, h->blocks, n * h->block);
        if (h->int8)
            memcpy(vecf, h->vecf, n * h->dim * sizeof(float));
        memcpy(labels, h->labels, n * sizeof(uint64_t));
        memcpy(levels, h->levels, n);
        memcpy((void *)flags, (const void *)h->flags, n);
        memcpy(upper, h->upper, n * sizeof(uint32_t *));
        memcpy((void *)indeg, (const void *)h->indeg, n * sizeof(uint32_t));
    }
    free(h->blocks);
    if (!h->vecf_mapped)
        free(h->vecf);
    free(h->labels);
    free(h->levels);
    free((void *)h->flags);
    free(h->upper);
    free((void *)h->indeg);
    h->indeg = indeg;
    h->blocks = blocks;
    h->vecf = vecf;
    h->vecf_mapped = false;
    h->labels = labels;
    h->levels = levels;
    h->flags = flags;
    h->upper = upper;
    h->cap = cap;
    pthread_rwlock_unlock(&h->grow);
    return 0;
}

/* Writes vector v into slot s with the given level and label; resets its links. */
static int fill_slot(hnsw *h, uint32_t s, uint64_t label, const float *v, int level)
{
    uint32_t *up = NULL;
    if (level > 0) {
        up = calloc((size_t)level * (h->M + 1), sizeof(uint32_t));
        if (up == NULL)
            return QV_ERESOURCE;
    }
    uint8_t *b = blk(h, s);
    if (h->int8) {
        memcpy(h->vecf + (size_t)s * h->dim, v, h->dim * sizeof(float));
        quant_encode(h, v, b);
    } else {
        memcpy(b, v, h->dim * sizeof(float));
    }
    atomic_store_explicit(links0(h, s), 0, memory_order_relaxed);
    atomic_store_explicit(&h->indeg[s], 0, memory_order_relaxed);
    free(h->upper[s]);
    h->upper[s] = up;
    h->labels[s] = label;
    h->levels[s] = (uint8_t)level;
    atomic_store(&h->flags[s], 0);
    return 0;
}

/* --------------------------------------------------------------------------------------------
 * Vtable
 * ------------------------------------------------------------------------------------------ */
static int hnsw_alloc(qv_index *idx, qv_status *err)
{
    const qv_index_params *p = &idx->params;
    hnsw *h = calloc(1, sizeof(*h));
    if (h == NULL)
        goto fail;
    h->dim = p->dim;
    h->M = p->hnsw.M;
    h->M0 = 2 * p->hnsw.M;
    h->efc = p->hnsw.ef_construction;
    h->int8 = p->storage == QV_STORAGE_INT8;
    h->l2 = p->metric == QV_METRIC_L2;
    h->mult = 1.0 / log((double)h->M);
    h->rng = p->hnsw.seed;
    /* F32 blocks start on cache lines. INT8 blocks only on 16 bytes: at small dimensions the
     * links outweigh the codes, and rounding to 64 would spend a fifth of the memory on padding
     * (the kernels take unaligned vectors). */
    size_t align = h->int8 ? 16 : 64;
    h->vec_bytes = h->int8 ? (h->dim + align - 1) / align * align
                           : ((size_t)h->dim * 4 + align - 1) / align * align;
    h->block = (h->vec_bytes + (1 + h->M0) * sizeof(uint32_t) + align - 1) / align * align;
    if (h->int8) {
        h->qmin = calloc(h->dim, sizeof(float));
        if (h->qmin == NULL) {
            free(h);
            goto fail;
        }
        h->qscale = 1.0f;
    }
    qv__rwlock_init(&h->grow);
    qv__rwlock_init(&h->map_mu);
    pthread_mutex_init(&h->entry_mu, NULL);
    pthread_mutex_init(&h->scratch_mu, NULL);
    pthread_mutex_init(&h->orphan_mu, NULL);
    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_init(&h->stripes[i], NULL);
    atomic_init(&h->entry, UINT32_MAX);
    atomic_init(&h->max_level, -1);
    atomic_init(&h->n, 0);
    qv__idmap_init(&h->map);
    idx->impl = h;
    return 0;
fail:
    *err = qv_status_make(QV_ERESOURCE, "out of memory creating an HNSW index");
    return QV_ERESOURCE;
}

static void hnsw_destroy(qv_index *idx)
{
    hnsw *h = idx->impl;
    size_t n = atomic_load(&h->n);
    for (size_t i = 0; i < n; i++)
        free(h->upper[i]);
    free(h->upper);
    free(h->blocks);
    if (!h->vecf_mapped)
        free(h->vecf);
    free(h->labels);
    free(h->levels);
    free((void *)h->flags);
    free(h->qmin);
    free(h->free_slots);
    qv__idmap_free(&h->map);
    scratch_free_all(h);
    for (int i = 0; i < NSTRIPES; i++)
        pthread_mutex_destroy(&h->stripes[i]);
    pthread_mutex_destroy(&h->entry_mu);
    pthread_mutex_destroy(&h->scratch_mu);
    pthread_mutex_destroy(&h->orphan_mu);
    free(h->orphans);
    free((void *)h->indeg);
    pthread_rwlock_destroy(&h->grow);
    pthread_rwlock_destroy(&h->map_mu);
    free(h);
    idx->impl = NULL;
}

static int hnsw_train(qv_index *idx, const float *v, size_t n, qv_status *err)
{
    hnsw *h = idx->impl;
    if (!h->int8)
        return 0;
    if (atomic_load(&h->n) > 0) {
        *err = qv_status_make(QV_EPRECONDITION, "the quantiser is trained before the first add");
        return QV_EPRECONDITION;
    }
    if (n == 0) {
        *err = qv_status_make(QV_EINVAL, "training needs at least one vector");
        return QV_EINVAL;
    }
    quant_train(h, v, n);
    return 0;
}

static void mark_deleted_locked(hnsw *h, uint32_t s)
{
    atomic_fetch_or(&h->flags[s], FLAG_DELETED);
    h->live--;
    h->deleted++;
}

static int hnsw_add(qv_index *idx, const uint64_t *ids, const float *vecs, size_t n, qv_status *err)
{
    hnsw *h = idx->impl;
    if (h->int8 && !h->trained)
        quant_train(h, vecs, n);
    size_t reuse = n < h->nfree ? n : h->nfree;
    size_t fresh = n - reuse;
    size_t base = atomic_load(&h->n);
    if (base + fresh > UINT32_MAX - 2) {
        *err = qv_status_make(QV_ERESOURCE, "HNSW index is full (2^32 slots)");
        return QV_ERESOURCE;
    }
    int rc = grow_to(h, base + fresh);
    uint32_t *slots = malloc((n ? n : 1) * sizeof(uint32_t));
    if (rc != 0 || slots == NULL || qv__idmap_reserve(&h->map, n) != 0) {
        free(slots);
        *err = qv_status_make(QV_ERESOURCE, "out of memory adding %zu vectors", n);
        return QV_ERESOURCE;
    }
    /* Place every vector before any is linked, so the batch is all or nothing up to here. */
    for (size_t i = 0; i < n; i++) {
        uint32_t s = i < reuse ? h->free_slots[h->nfree - 1 - i] : (uint32_t)(base + i - reuse);
        slots[i] = s;
        if (fill_slot(h, s, ids[i], vecs + i * h->dim, random_level(h)) != 0) {
            for (size_t j = 0; j < i; j++) {
                free(h->upper[slots[j]]);
                h->upper[slots[j]] = NULL;
            }
            free(slots);
            *err = qv_status_make(QV_ERESOURCE, "out of memory adding %zu vectors", n);
            return QV_ERESOURCE;
        }
    }
    h->nfree -= reuse;
    atomic_store(&h->n, base + fresh);

    /* Publish the ids: an older vector of the same id becomes a tombstone. */
    pthread_rwlock_wrlock(&h->map_mu);
    for (size_t i = 0; i < n; i++) {
        uint32_t old = qv__idmap_get(&h->map, ids[i]);
        if (old != QV__NO_SLOT && !is_deleted(h, old))
            mark_deleted_locked(h, old);
        qv__idmap_put(&h->map, ids[i], slots[i]); /* reserved: cannot fail */
        h->live++;
    }
    pthread_rwlock_unlock(&h->map_mu);

    pthread_rwlock_rdlock(&h->grow);
    insert_ctx ic = {.idx = idx, .h = h, .slots = slots};
    atomic_init(&ic.rc, 0);
    unsigned threads = idx->params.threads;
    /* Small batches gain nothing from threads; the first vectors seed the graph serially. */
    size_t serial = atomic_load(&h->entry) == UINT32_MAX ? (n < 64 ? n : 64) : 0;
    if (n < 256)
        threads = 1;
    chunk_ctx first = {.ic = &ic, .n = serial, .nchunks = 1};
    if (serial > 0)
        insert_chunk(0, &first);
    insert_ctx rest = ic;
    rest.slots = slots + serial;
    chunk_ctx cc = {.ic = &rest, .n = n - serial, .nchunks = (size_t)threads * 8};
    if (cc.nchunks > cc.n)
        cc.nchunks = cc.n ? cc.n : 1;
    qv__parallel_for(cc.nchunks, threads, insert_chunk, &cc);
    bool walked = threads > 1 && queue_unreachable(h);
    repair_orphans(idx, h, walked);
    pthread_rwlock_unlock(&h->grow);
    free(slots);
    rc = atomic_load(&ic.rc) ? atomic_load(&ic.rc) : atomic_load(&rest.rc);
    if (rc != 0) {
        /* Vectors are placed and published; some may be unlinked (reachable by exact scans
         * only). Report it: the caller can retry or rebuild. */
        *err = qv_status_make(rc, "out of memory while linking vectors into the graph");
    }
    return rc;
}

static int hnsw_remove(qv_index *idx, const uint64_t *ids, size_t n, size_t *removed)
{
    hnsw *h = idx->impl;
    size_t r = 0;
    pthread_rwlock_wrlock(&h->map_mu);
    for (size_t i = 0; i < n; i++) {
        uint32_t s = qv__idmap_get(&h->map, ids[i]);
        if (s == QV__NO_SLOT)
            continue;
        qv__idmap_del(&h->map, ids[i]);
        if (!is_deleted(h, s)) {
            mark_deleted_locked(h, s);
            r++;
        }
    }
    pthread_rwlock_unlock(&h->map_mu);
    *removed = r;
    return 0;
}

static bool hnsw_contains(qv_index *idx, uint64_t id)
{
    hnsw *h = idx->impl;
    /* Lock order everywhere: grow, then map_mu. */
    pthread_rwlock_rdlock(&h->grow);
    pthread_rwlock_rdlock(&h->map_mu);
    uint32_t s = qv__idmap_get(&h->map, id);
    bool live = s != QV__NO_SLOT && !is_deleted(h, s);
    pthread_rwlock_unlock(&h->map_mu);
    pthread_rwlock_unlock(&h->grow);
    return live;
}

/* Exact scan of the ids a bitmap allows (or of every live slot), float distances. */
static int exact_scan(qv_index *idx, hnsw *h, const float *q, size_t k, const qv_filter *f,
                      qv_hit *out, size_t *nout)
{
    qv__topk t = {.h = out, .n = 0, .k = k};
    if (f != NULL && f->allow != NULL) {
        roaring_uint32_iterator_t *it = roaring_create_iterator(f->allow);
        if (it == NULL)
            return QV_ERESOURCE;
        pthread_rwlock_rdlock(&h->map_mu);
        for (; it->has_value; roaring_advance_uint32_iterator(it)) {
            uint32_t s = qv__idmap_get(&h->map, it->current_value);
            if (s == QV__NO_SLOT || is_deleted(h, s))
                continue;
            if (f->pred != NULL && !f->pred(h->labels[s], f->ctx))
                continue;
            qv__topk_push(&t, h->labels[s], fdist(idx, h, q, s));
        }
        pthread_rwlock_unlock(&h->map_mu);
        roaring_free_uint32_iterator(it);
    } else {
        size_t n = atomic_load(&h->n);
        for (size_t s = 0; s < n; s++) {
            if (is_deleted(h, (uint32_t)s) || !qv__filter_allows(f, h->labels[s]))
                continue;
            qv__topk_push(&t, h->labels[s], fdist(idx, h, q, (uint32_t)s));
        }
    }
    qv__topk_sort(&t);
    *nout = t.n;
    return 0;
}

static int hnsw_search(qv_index *idx, const float *q, size_t k, const qv_search_params *sp,
                       const qv_filter *filter, qv_hit *out, size_t *nout)
{
    hnsw *h = idx->impl;
    *nout = 0;
    pthread_rwlock_rdlock(&h->grow);
    uint64_t live = h->live;
    uint64_t est = qv__filter_estimate(filter);
    /* Graph search loses recall when few nodes pass the filter: below ~5% (or a few thousand
     * nodes) an exact scan of the allowed set is both faster and exact. */
    bool exact = sp->exact || atomic_load(&h->entry) == UINT32_MAX ||
                 (est != UINT64_MAX && (est <= 2048 || est * 20 <= live));
    if (exact) {
        int rc = atomic_load(&h->entry) == UINT32_MAX && !sp->exact
                     ? 0
                     : exact_scan(idx, h, q, k, filter, out, nout);
        pthread_rwlock_unlock(&h->grow);
        return rc;
    }
    size_t ef = sp->ef > k ? sp->ef : k;
    size_t rerank = h->int8 ? (sp->rerank ? sp->rerank : (ef > 2 * k ? ef : 2 * k)) : 0;
    if (rerank > ef)
        ef = rerank;
    scratch *sc = scratch_get(h, ef + h->M0 + 2);
    if (sc == NULL) {
        pthread_rwlock_unlock(&h->grow);
        return QV_ERESOURCE;
    }
    query qq = {.f = q, .c = NULL};
    if (h->int8) {
        quant_encode(h, q, sc->qcode);
        qq.c = sc->qcode;
    }
    uint32_t ep = atomic_load(&h->entry);
    int top = atomic_load(&h->max_level);
    float epd = qdist(idx, h, &qq, ep);
    for (int l = top; l > 0; l--)
        ep = greedy(idx, h, &qq, ep, &epd, l);
    size_t nr = search_layer(idx, h, sc, &qq, ep, epd, ef, 0, filter, true);

    qv__topk t = {.h = out, .n = 0, .k = k};
    if (h->int8) {
        /* Re-rank the best `rerank` candidates on float32. */
        while (nr > rerank)
            heap_pop(sc->rd, sc->rs, &nr, true);
        for (size_t i = 0; i < nr; i++)
            qv__topk_push(&t, h->labels[sc->rs[i]], fdist(idx, h, q, sc->rs[i]));
    } else {
        for (size_t i = 0; i < nr; i++)
            qv__topk_push(&t, h->labels[sc->rs[i]], sc->rd[i]);
    }
    scratch_put(h, sc);
    pthread_rwlock_unlock(&h->grow);
    qv__topk_sort(&t);
    *nout = t.n;
    return 0;
}

static void hnsw_stats(qv_index *idx, qv_index_stats *out)
{
    hnsw *h = idx->impl;
    pthread_rwlock_rdlock(&h->grow);
    size_t n = atomic_load(&h->n);
    out->count = h->live;
    out->deleted = h->deleted;
    out->max_level = atomic_load(&h->max_level) < 0 ? 0 : (uint32_t)atomic_load(&h->max_level);
    out->trained = !h->int8 || h->trained;
    uint64_t upper = 0;
    for (size_t i = 0; i < n; i++)
        upper += (uint64_t)h->levels[i] * (h->M + 1) * sizeof(uint32_t);
    out->bytes_ram = (uint64_t)n * (h->block + sizeof(uint64_t) + 2) + upper +
                     (uint64_t)h->map.cap * (sizeof(uint64_t) + sizeof(uint32_t));
    out->bytes_vectors = h->int8 ? (uint64_t)n * h->dim * sizeof(float) : 0;
    pthread_rwlock_unlock(&h->grow);
}

/* --------------------------------------------------------------------------------------------
 * Compaction: re-link around tombstones, then recycle their slots
 * ------------------------------------------------------------------------------------------ */
typedef struct repair_ctx {
    qv_index *idx;
    hnsw *h;
    size_t n;
    atomic_int rc;
} repair_ctx;

static void repair_node(size_t ui, void *arg)
{
    repair_ctx *c = arg;
    hnsw *h = c->h;
    uint32_t u = (uint32_t)ui;
    if (is_deleted(h, u))
        return;
    size_t cap = (size_t)(h->M0 + 1) * (h->M0 + 1);
    cand *buf = NULL;
    uint32_t *tmp = NULL;
    for (int l = 0; l <= h->levels[u]; l++) {
        _Atomic uint32_t *ll = links_at(h, u, l);
        uint32_t cnt = atomic_load(&ll[0]);
        bool any = false;
        for (uint32_t i = 0; i < cnt && !any; i++)
            any = is_deleted(h, atomic_load(&ll[1 + i]));
        if (!any)
            continue;
        if (buf == NULL) {
            buf = malloc(cap * sizeof(cand));
            tmp = malloc(cap * sizeof(uint32_t));
            if (buf == NULL || tmp == NULL) {
                atomic_store(&c->rc, QV_ERESOURCE);
                break;
            }
        }
        const float *v = fvec(h, u);
        size_t n = 0;
        for (uint32_t i = 0; i < cnt; i++) {
            uint32_t x = atomic_load(&ll[1 + i]);
            if (!is_deleted(h, x)) {
                buf[n++] = (cand){qv__dist(c->idx, v, fvec(h, x)), x};
                continue;
            }
            /* Bridge through the tombstone to its live neighbours on this level. */
            if (h->levels[x] < l)
                continue;
            _Atomic uint32_t *xl = links_at(h, x, l);
            uint32_t xc = atomic_load(&xl[0]);
            for (uint32_t j = 0; j < xc && n < cap; j++) {
                uint32_t y = atomic_load(&xl[1 + j]);
                if (y == u || is_deleted(h, y))
                    continue;
                bool dup = false;
                for (size_t t = 0; t < n && !dup; t++)
                    dup = buf[t].s == y;
                if (!dup)
                    buf[n++] = (cand){qv__dist(c->idx, v, fvec(h, y)), y};
            }
        }
        size_t kept = select_heuristic(c->idx, h, buf, n, max_links(h, l), tmp);
        pthread_mutex_lock(&h->stripes[u % NSTRIPES]);
        set_links(h, u, l, tmp, (uint32_t)kept);
        pthread_mutex_unlock(&h->stripes[u % NSTRIPES]);
    }
    free(buf);
    free(tmp);
}

static int hnsw_compact(qv_index *idx, qv_status *err)
{
    hnsw *h = idx->impl;
    if (h->deleted == 0)
        return 0;
    size_t n = atomic_load(&h->n);
    pthread_rwlock_rdlock(&h->grow);
    repair_ctx c = {.idx = idx, .h = h, .n = n};
    atomic_init(&c.rc, 0);
    qv__parallel_for(n, idx->params.threads, repair_node, &c);
    pthread_rwlock_unlock(&h->grow);
    if (atomic_load(&c.rc) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory repairing the graph");
        return QV_ERESOURCE;
    }
    /* No live list points at a tombstone any more. Move the entry point off them, then recycle
     * the slots while no search runs. */
    pthread_rwlock_wrlock(&h->grow);
    uint32_t best = UINT32_MAX;
    int best_level = -1;
    for (size_t s = 0; s < n; s++) {
        if (!is_deleted(h, (uint32_t)s) && (int)h->levels[s] > best_level) {
            best_level = h->levels[s];
            best = (uint32_t)s;
        }
    }
    size_t want = h->nfree + h->deleted;
    if (want > h->free_cap) {
        uint32_t *f = realloc(h->free_slots, want * sizeof(uint32_t));
        if (f == NULL) {
            pthread_rwlock_unlock(&h->grow);
            *err = qv_status_make(QV_ERESOURCE, "out of memory recycling slots");
            return QV_ERESOURCE;
        }
        h->free_slots = f;
        h->free_cap = want;
    }
    for (size_t s = 0; s < n; s++) {
        uint8_t fl = atomic_load(&h->flags[s]);
        if ((fl & FLAG_DELETED) && !(fl & FLAG_FREE)) {
            free(h->upper[s]);
            h->upper[s] = NULL;
            h->levels[s] = 0;
            atomic_store(links0(h, (uint32_t)s), 0);
            atomic_store(&h->flags[s], FLAG_DELETED | FLAG_FREE);
            h->free_slots[h->nfree++] = (uint32_t)s;
        }
    }
    h->deleted = 0;
    atomic_store(&h->entry, best);
    atomic_store(&h->max_level, best_level);
    recount_indegrees(h);
    pthread_rwlock_unlock(&h->grow);
    pthread_rwlock_rdlock(&h->grow);
    repair_orphans(idx, h, queue_unreachable(h));
    pthread_rwlock_unlock(&h->grow);
    return 0;
}

/* --------------------------------------------------------------------------------------------
 * Save and load
 * ------------------------------------------------------------------------------------------ */
static int hnsw_save(qv_index *idx, qv__writer *w)
{
    hnsw *h = idx->impl;
    pthread_rwlock_rdlock(&h->grow);
    size_t n = atomic_load(&h->n);
    uint64_t meta[8] = {n,
                        h->live,
                        h->deleted,
                        atomic_load(&h->entry),
                        (uint64_t)(int64_t)atomic_load(&h->max_level),
                        h->trained,
                        h->nfree,
                        0};
    qv__w_section(w, TAG_META, meta, sizeof(meta));
    qv__w_section(w, TAG_LABELS, h->labels, n * sizeof(uint64_t));
    qv__w_section(w, TAG_LEVELS, h->levels, n);
    qv__w_section(w, TAG_FLAGS, (const void *)h->flags, n);
    qv__w_begin(w, TAG_L0);
    for (size_t s = 0; s < n; s++)
        qv__w_write(w, (const void *)links0(h, (uint32_t)s), (1 + h->M0) * sizeof(uint32_t));
    qv__w_end(w);
    qv__w_begin(w, TAG_UPPER);
    for (size_t s = 0; s < n; s++)
        if (h->levels[s] > 0)
            qv__w_write(w, h->upper[s], (size_t)h->levels[s] * (h->M + 1) * sizeof(uint32_t));
    qv__w_end(w);
    qv__w_begin(w, TAG_VECF);
    for (size_t s = 0; s < n; s++)
        qv__w_write(w, fvec(h, (uint32_t)s), h->dim * sizeof(float));
    qv__w_end(w);
    if (h->int8) {
        qv__w_begin(w, TAG_CODES);
        for (size_t s = 0; s < n; s++)
            qv__w_write(w, blk(h, (uint32_t)s), h->dim);
        qv__w_end(w);
        qv__w_begin(w, TAG_QUANT);
        qv__w_write(w, h->qmin, h->dim * sizeof(float));
        qv__w_write(w, &h->qscale, sizeof(float));
        qv__w_end(w);
    }
    pthread_rwlock_unlock(&h->grow);
    return w->err;
}

#define LOAD_FAIL(...)                                                                             \
    do {                                                                                           \
        *err = qv_status_make(QV_ECORRUPT, __VA_ARGS__);                                           \
        rc = QV_ECORRUPT;                                                                          \
        goto fail;                                                                                 \
    } while (0)

static int hnsw_load(qv_index *idx, const qv__reader *r, qv_status *err)
{
    int rc = hnsw_alloc(idx, err);
    if (rc != 0)
        return rc;
    hnsw *h = idx->impl;
    const void *p;
    const uint64_t *meta;
    if ((rc = qv__r_section_exact(r, TAG_META, 8 * sizeof(uint64_t), &p, err)) != 0)
        goto fail;
    meta = p;
    uint64_t n = meta[0], live = meta[1], deleted = meta[2], entry = meta[3];
    int64_t top = (int64_t)meta[4];
    uint64_t nfree = meta[6];
    if (n > UINT32_MAX - 2 || live + deleted + nfree != n || top < -1 || top > MAX_LEVEL ||
        meta[5] > 1)
        LOAD_FAIL("HNSW metadata is inconsistent");
    if ((n == 0) != (entry == UINT32_MAX && top == -1) && !(live == 0 && entry == UINT32_MAX))
        LOAD_FAIL("HNSW entry point is inconsistent");
    if (entry != UINT32_MAX && entry >= n)
        LOAD_FAIL("HNSW entry point %llu is out of range", (unsigned long long)entry);
    const uint64_t *labels;
    const uint8_t *levels, *flags;
    const uint32_t *l0, *up;
    const float *vf;
    size_t uplen;
    if ((rc = qv__r_section_exact(r, TAG_LABELS, n * 8, &p, err)) != 0)
        goto fail;
    labels = p;
    if ((rc = qv__r_section_exact(r, TAG_LEVELS, n, &p, err)) != 0)
        goto fail;
    levels = p;
    if ((rc = qv__r_section_exact(r, TAG_FLAGS, n, &p, err)) != 0)
        goto fail;
    flags = p;
    if ((rc = qv__r_section_exact(r, TAG_L0, n * (1 + h->M0) * 4, &p, err)) != 0)
        goto fail;
    l0 = p;
    if ((rc = qv__r_section(r, TAG_UPPER, &p, &uplen, err)) != 0)
        goto fail;
    up = p;
    if ((rc = qv__r_section_exact(r, TAG_VECF, n * h->dim * 4, &p, err)) != 0)
        goto fail;
    vf = p;
    /* Every section length matched the count: only now is allocating for it reasonable. */
    if ((rc = grow_to(h, n ? n : 1)) != 0) {
        *err = qv_status_make(rc, "out of memory loading %llu vectors", (unsigned long long)n);
        goto fail;
    }
    for (uint64_t i = 0; i < n * h->dim; i++)
        if (!isfinite(vf[i]))
            LOAD_FAIL("HNSW vector %llu holds a non-finite value",
                      (unsigned long long)(i / h->dim));

    uint64_t need_up = 0, nlive = 0, ndel = 0, nfreed = 0;
    for (uint64_t s = 0; s < n; s++) {
        if ((int64_t)levels[s] > (top < 0 ? 0 : top) ||
            (flags[s] != 0 && flags[s] != FLAG_DELETED && flags[s] != (FLAG_DELETED | FLAG_FREE)))
            LOAD_FAIL("HNSW node %llu has an invalid level or flag", (unsigned long long)s);
        need_up += (uint64_t)levels[s] * (h->M + 1) * 4;
        if (flags[s] == (FLAG_DELETED | FLAG_FREE))
            nfreed++;
        else if (flags[s] == FLAG_DELETED)
            ndel++;
        else
            nlive++;
    }
    if (need_up != uplen || nlive != live || ndel != deleted || nfreed != nfree)
        LOAD_FAIL("HNSW node tables are inconsistent");
    if (entry != UINT32_MAX && (int64_t)levels[entry] != top)
        LOAD_FAIL("HNSW entry point is not on the top layer");

    h->trained = meta[5] != 0;
    if (h->int8) {
        const float *qd;
        if ((rc = qv__r_section_exact(r, TAG_QUANT, (h->dim + 1) * 4, &p, err)) != 0)
            goto fail;
        qd = p;
        for (uint32_t d = 0; d <= h->dim; d++)
            if (!isfinite(qd[d]))
                LOAD_FAIL("HNSW quantiser holds a non-finite value");
        memcpy(h->qmin, qd, h->dim * 4);
        memcpy(&h->qscale, qd + h->dim, 4);
        if (!(h->qscale > 0))
            LOAD_FAIL("HNSW quantiser scale is not positive");
        if ((rc = qv__r_section_exact(r, TAG_CODES, n * h->dim, &p, err)) != 0)
            goto fail;
    }
    const uint8_t *codes = h->int8 ? p : NULL;

    size_t uoff = 0;
    for (uint64_t s = 0; s < n; s++) {
        atomic_store(&h->n, s + 1); /* so a failure below frees what this slot allocated */
        uint8_t *b = blk(h, (uint32_t)s);
        if (h->int8)
            memcpy(b, codes + s * h->dim, h->dim);
        else
            memcpy(b, vf + s * h->dim, h->dim * 4);
        const uint32_t *ls = l0 + s * (1 + h->M0);
        if (ls[0] > h->M0)
            LOAD_FAIL("HNSW node %llu has %u links (at most %u)", (unsigned long long)s, ls[0],
                      h->M0);
        for (uint32_t i = 0; i < ls[0]; i++)
            if (ls[1 + i] >= n)
                LOAD_FAIL("HNSW node %llu links to %u, out of range", (unsigned long long)s,
                          ls[1 + i]);
        memcpy((void *)links0(h, (uint32_t)s), ls, (1 + h->M0) * 4);
        h->labels[s] = labels[s];
        h->levels[s] = levels[s];
        atomic_store(&h->flags[s], flags[s]);
        if (levels[s] > 0) {
            size_t words = (size_t)levels[s] * (h->M + 1);
            h->upper[s] = malloc(words * 4);
            if (h->upper[s] == NULL) {
                *err = qv_status_make(QV_ERESOURCE, "out of memory loading links");
                rc = QV_ERESOURCE;
                goto fail;
            }
            memcpy(h->upper[s], (const uint8_t *)up + uoff, words * 4);
            uoff += words * 4;
            for (int l = 1; l <= levels[s]; l++) {
                const uint32_t *ul = h->upper[s] + (size_t)(l - 1) * (h->M + 1);
                if (ul[0] > h->M)
                    LOAD_FAIL("HNSW node %llu has too many links on layer %d",
                              (unsigned long long)s, l);
                for (uint32_t i = 0; i < ul[0]; i++)
                    if (ul[1 + i] >= n || levels[ul[1 + i]] < l)
                        LOAD_FAIL("HNSW node %llu has an invalid link on layer %d",
                                  (unsigned long long)s, l);
            }
        }
    }
    if (h->int8) {
        if (r->mapped) {
            free(h->vecf);
            h->vecf = (float *)vf;
            h->vecf_mapped = true;
        } else {
            memcpy(h->vecf, vf, n * h->dim * 4);
        }
    }
    if (qv__idmap_reserve(&h->map, live) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory loading ids");
        rc = QV_ERESOURCE;
        goto fail;
    }
    if (nfree > 0) {
        h->free_slots = malloc(nfree * sizeof(uint32_t));
        if (h->free_slots == NULL) {
            *err = qv_status_make(QV_ERESOURCE, "out of memory loading ids");
            rc = QV_ERESOURCE;
            goto fail;
        }
        h->free_cap = nfree;
    }
    for (uint64_t s = 0; s < n; s++) {
        if (flags[s] & FLAG_FREE)
            h->free_slots[h->nfree++] = (uint32_t)s;
        if (flags[s] & FLAG_DELETED)
            continue;
        if (qv__idmap_get(&h->map, labels[s]) != QV__NO_SLOT)
            LOAD_FAIL("HNSW id %llu appears twice", (unsigned long long)labels[s]);
        qv__idmap_put(&h->map, labels[s], (uint32_t)s);
    }
    h->live = live;
    h->deleted = deleted;
    atomic_store(&h->entry, (uint32_t)entry);
    atomic_store(&h->max_level, (int)top);
    recount_indegrees(h);
    pthread_rwlock_rdlock(&h->grow);
    repair_orphans(idx, h, false);
    pthread_rwlock_unlock(&h->grow);
    return 0;
fail:
    hnsw_destroy(idx);
    return rc;
}

static int hnsw_init(qv_index *idx, qv_status *err)
{
    return hnsw_alloc(idx, err);
}

const qv__index_ops qv__hnsw_ops = {
    .name = "hnsw",
    .init = hnsw_init,
    .add = hnsw_add,
    .train = hnsw_train,
    .remove = hnsw_remove,
    .compact = hnsw_compact,
    .search = hnsw_search,
    .search_batch = NULL,
    .contains = hnsw_contains,
    .stats = hnsw_stats,
    .save = hnsw_save,
    .load = hnsw_load,
    .destroy = hnsw_destroy,
};
