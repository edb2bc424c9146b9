/* The storage engine: RocksDB, collections, the write path (group commit, apply), recovery and
 * snapshots. See engine.h and docs/storage.md. */
#define _GNU_SOURCE
#include "node/engine_internal.h"

#include <dirent.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MOD "storage"

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------------- */

static void put_be64(uint8_t *p, uint64_t v)
{
    for (int i = 7; i >= 0; i--, v >>= 8)
        p[i] = (uint8_t)v;
}

static uint64_t get_be64(const uint8_t *p)
{
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v = (v << 8) | p[i];
    return v;
}

static void put_le32(uint8_t *p, uint32_t v)
{
    memcpy(p, &v, 4);
}

static uint32_t get_le32(const uint8_t *p)
{
    uint32_t v;
    memcpy(&v, p, 4);
    return v;
}

static void put_le64(uint8_t *p, uint64_t v)
{
    memcpy(p, &v, 8);
}

static uint64_t get_le64(const uint8_t *p)
{
    uint64_t v;
    memcpy(&v, p, 8);
    return v;
}

int qv__fsync_policy_parse(const char *s, qv_fsync_policy *out)
{
    if (strcmp(s, "sync") == 0)
        *out = QV_FSYNC_SYNC;
    else if (strcmp(s, "interval") == 0)
        *out = QV_FSYNC_INTERVAL;
    else if (strcmp(s, "off") == 0)
        *out = QV_FSYNC_OFF;
    else
        return QV_EINVAL;
    return 0;
}

const char *qv__fsync_policy_name(qv_fsync_policy p)
{
    return p == QV_FSYNC_SYNC ? "sync" : p == QV_FSYNC_INTERVAL ? "interval" : "off";
}

struct qv_arena {
    struct arena_blk *blk;
};

typedef struct arena_blk {
    struct arena_blk *next;
    size_t used, cap;
    max_align_t data[];
} arena_blk;

qv_arena *qv__arena_create(void)
{
    return calloc(1, sizeof(qv_arena));
}

void *qv__arena_alloc(qv_arena *a, size_t size)
{
    size = (size + 15) & ~(size_t)15;
    if (size == 0)
        size = 16;
    arena_blk *b = a->blk;
    if (b == NULL || b->cap - b->used < size) {
        size_t cap = size > 65536 ? size : 65536;
        b = malloc(sizeof(arena_blk) + cap);
        if (b == NULL)
            return NULL;
        b->used = 0;
        b->cap = cap;
        b->next = a->blk;
        a->blk = b;
    }
    void *p = (char *)b->data + b->used;
    b->used += size;
    memset(p, 0, size);
    return p;
}

char *qv__arena_strdup(qv_arena *a, const char *s)
{
    size_t l = strlen(s);
    char *p = qv__arena_alloc(a, l + 1);
    if (p != NULL)
        memcpy(p, s, l + 1);
    return p;
}

void qv__arena_free(qv_arena *a)
{
    if (a == NULL)
        return;
    for (arena_blk *b = a->blk, *n; b != NULL; b = n) {
        n = b->next;
        free(b);
    }
    free(a);
}

static int hexval(char ch)
{
    if (ch >= '0' && ch <= '9')
        return ch - '0';
    if (ch >= 'a' && ch <= 'f')
        return ch - 'a' + 10;
    if (ch >= 'A' && ch <= 'F')
        return ch - 'A' + 10;
    return -1;
}

int qv__key_from_id(const Quiver__V1__PointId *id, uint8_t *key, uint8_t *klen, qv_status *err)
{
    if (id == NULL || id->kind_case == QUIVER__V1__POINT_ID__KIND__NOT_SET) {
        *err = qv_status_make(QV_EINVAL, "point id is missing");
        return QV_EINVAL;
    }
    if (id->kind_case == QUIVER__V1__POINT_ID__KIND_NUM) {
        key[0] = QV_KEY_NUM;
        put_be64(key + 1, id->num);
        *klen = 9;
        return 0;
    }
    const char *s = id->uuid;
    size_t l = strlen(s);
    key[0] = QV_KEY_UUID;
    size_t o = 1;
    bool ok = l == 36;
    for (size_t i = 0; ok && i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            ok = s[i] == '-';
            continue;
        }
        int hi = hexval(s[i]), lo = hexval(s[i + 1]);
        ok = hi >= 0 && lo >= 0 && i + 1 < 36 && s[i + 1] != '-';
        if (ok)
            key[o++] = (uint8_t)(hi << 4 | lo);
        i++;
    }
    if (!ok || o != 17) {
        *err =
            qv_status_make(QV_EINVAL, "point id '%.40s' is not a UUID (8-4-4-4-12 hex digits)", s);
        return QV_EINVAL;
    }
    *klen = 17;
    return 0;
}

void qv__key_to_id(const uint8_t *key, size_t klen, Quiver__V1__PointId *id, char *uuidbuf)
{
    quiver__v1__point_id__init(id);
    if (key[0] == QV_KEY_NUM && klen == 9) {
        id->kind_case = QUIVER__V1__POINT_ID__KIND_NUM;
        id->num = get_be64(key + 1);
        return;
    }
    static const char hx[] = "0123456789abcdef";
    size_t o = 0;
    for (int i = 0; i < 16; i++) {
        if (i == 4 || i == 6 || i == 8 || i == 10)
            uuidbuf[o++] = '-';
        uuidbuf[o++] = hx[key[1 + i] >> 4];
        uuidbuf[o++] = hx[key[1 + i] & 15];
    }
    uuidbuf[o] = '\0';
    id->kind_case = QUIVER__V1__POINT_ID__KIND_UUID;
    id->uuid = uuidbuf;
}

size_t qv__coll_key(const qv_coll *c, const uint8_t *key, size_t klen, uint8_t *out)
{
    memcpy(out, c->uidk, 8);
    memcpy(out + 8, key, klen);
    return 8 + klen;
}

int qv__coll_check_vector(const qv_coll *c, const float *v, size_t n, float *out, const char *what,
                          qv_status *err)
{
    if (n != c->dim) {
        *err = qv_status_make(QV_EINVAL, "%s: vector has %zu dimensions, collection '%s' has %u",
                              what, n, c->name, c->dim);
        return QV_EINVAL;
    }
    double norm = 0;
    for (size_t i = 0; i < n; i++) {
        if (!isfinite(v[i])) {
            *err = qv_status_make(QV_EINVAL, "%s: vector component %zu is not finite", what, i);
            return QV_EINVAL;
        }
        norm += (double)v[i] * v[i];
    }
    if (c->metric == QV_METRIC_COSINE) {
        if (norm == 0) {
            *err = qv_status_make(QV_EINVAL, "%s: zero vector in a COSINE collection", what);
            return QV_EINVAL;
        }
        /* In double: 1/sqrt(norm) overflows a float when every component is subnormal. */
        double len = sqrt(norm);
        for (size_t i = 0; i < n; i++)
            out[i] = (float)((double)v[i] / len);
    } else if (out != v) {
        memcpy(out, v, n * sizeof(float));
    }
    return 0;
}

int qv__vec_value_decode(const qv_coll *c, const char *val, size_t len, uint32_t *iid,
                         uint64_t *version, float *vec)
{
    if (len != 12 + (size_t)c->dim * 4)
        return QV_ECORRUPT;
    *iid = get_le32((const uint8_t *)val);
    if (version != NULL)
        *version = get_le64((const uint8_t *)val + 4);
    if (vec != NULL)
        memcpy(vec, val + 12, (size_t)c->dim * 4);
    return 0;
}

/* A record with a CRC-32C in front: [crc][body]. */
static uint8_t *crc_record(const void *body, size_t len, size_t *outlen)
{
    uint8_t *r = malloc(len + 4);
    if (r == NULL)
        return NULL;
    memcpy(r + 4, body, len);
    put_le32(r, qv_crc32c(0, body, len));
    *outlen = len + 4;
    return r;
}

static bool crc_ok(const char *rec, size_t len)
{
    return len >= 4 && get_le32((const uint8_t *)rec) == qv_crc32c(0, rec + 4, len - 4);
}

static int rdb_fail(qv_status *err, const char *what, char *rerr)
{
    *err = qv_status_make(QV_EINTERNAL, "storage: %s: %s", what, rerr != NULL ? rerr : "?");
    qv_log(QV_LOG_ERROR, MOD, "%s: %s", what, rerr != NULL ? rerr : "?");
    rocksdb_free(rerr);
    return QV_EINTERNAL;
}

/* ---------------------------------------------------------------------------------------------
 * Collection configuration
 * ------------------------------------------------------------------------------------------- */

static bool valid_name(const char *n)
{
    size_t l = strlen(n);
    if (l == 0 || l > QV_NAME_MAX)
        return false;
    for (size_t i = 0; i < l; i++) {
        char ch = n[i];
        bool alnum =
            (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') || (ch >= '0' && ch <= '9');
        if (!alnum && (i == 0 || (ch != '_' && ch != '-')))
            return false;
    }
    return true;
}

#define CFG_FAIL(code, ...)                                                                        \
    do {                                                                                           \
        *err = qv_status_make(code, __VA_ARGS__);                                                  \
        return code;                                                                               \
    } while (0)

/* Checks a create request and fills `eff` (heap copies in cfg_* buffers) with every default
 * resolved. */
typedef struct cfg_buf {
    Quiver__V1__CollectionConfig cfg;
    Quiver__V1__IndexConfig index;
    Quiver__V1__HnswParams hnsw;
    Quiver__V1__IvfParams ivf;
    Quiver__V1__SemanticPartitioning sem;
    char name[QV_NAME_MAX + 1];
} cfg_buf;

static int range_u32(uint32_t v, uint32_t lo, uint32_t hi, const char *what, qv_status *err)
{
    if (v < lo || v > hi)
        CFG_FAIL(QV_EINVAL, "%s %u out of range %u..%u", what, v, lo, hi);
    return 0;
}

static int resolve_config(const qv_engine *e, const Quiver__V1__CreateCollectionRequest *r,
                          cfg_buf *b, qv_status *err)
{
    memset(b, 0, sizeof(*b));
    quiver__v1__collection_config__init(&b->cfg);
    quiver__v1__index_config__init(&b->index);
    quiver__v1__hnsw_params__init(&b->hnsw);
    quiver__v1__ivf_params__init(&b->ivf);
    quiver__v1__semantic_partitioning__init(&b->sem);
    if (!valid_name(r->name))
        CFG_FAIL(QV_EINVAL,
                 "collection name '%.80s' is invalid: 1..64 characters from [A-Za-z0-9_-], "
                 "starting with a letter or digit",
                 r->name);
    snprintf(b->name, sizeof(b->name), "%s", r->name);
    b->cfg.name = b->name;
    if (r->dimension < 1 || r->dimension > QV_INDEX_MAX_DIM)
        CFG_FAIL(QV_EINVAL, "dimension %u out of range 1..%u", r->dimension, QV_INDEX_MAX_DIM);
    b->cfg.dimension = r->dimension;
    if (r->metric != QUIVER__V1__METRIC__METRIC_L2 &&
        r->metric != QUIVER__V1__METRIC__METRIC_COSINE &&
        r->metric != QUIVER__V1__METRIC__METRIC_DOT)
        CFG_FAIL(QV_EINVAL, "metric is required (L2, COSINE or DOT)");
    b->cfg.metric = r->metric;

    const Quiver__V1__IndexConfig *ic = r->index;
    Quiver__V1__IndexType t =
        ic != NULL && ic->type != QUIVER__V1__INDEX_TYPE__INDEX_TYPE_UNSPECIFIED
            ? ic->type
            : QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW;
    bool hnsw = t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW ||
                t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW_INT8;
    bool ivf = t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_FLAT ||
               t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_PQ;
    if (t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_PQ)
        CFG_FAIL(QV_EUNIMPL, "index type IVF_PQ is not available yet; use IVF_FLAT, HNSW, "
                             "HNSW_INT8 or FLAT");
    if (t != QUIVER__V1__INDEX_TYPE__INDEX_TYPE_FLAT && !hnsw && !ivf)
        CFG_FAIL(QV_EINVAL, "unknown index type %d", (int)t);
    if (ic != NULL && ic->hnsw != NULL && !hnsw)
        CFG_FAIL(QV_EINVAL, "hnsw parameters given for a non-HNSW index");
    if (ic != NULL && ic->ivf != NULL && !ivf)
        CFG_FAIL(QV_EINVAL, "ivf parameters given for a non-IVF index");
    if (ic != NULL && ic->pq != NULL)
        CFG_FAIL(QV_EINVAL, "pq parameters given for a non-IVF_PQ index");
    b->index.type = t;
    b->cfg.index = &b->index;
    if (hnsw) {
        const Quiver__V1__HnswParams *h = ic != NULL ? ic->hnsw : NULL;
        b->hnsw.m = h != NULL && h->m ? h->m : 16;
        b->hnsw.ef_construction = h != NULL && h->ef_construction ? h->ef_construction : 200;
        b->hnsw.ef_search = h != NULL && h->ef_search ? h->ef_search : 64;
        int rc = range_u32(b->hnsw.m, 4, 128, "hnsw.m", err);
        if (rc == 0)
            rc = range_u32(b->hnsw.ef_construction, b->hnsw.m, 4096, "hnsw.ef_construction", err);
        if (rc == 0)
            rc = range_u32(b->hnsw.ef_search, 1, 32768, "hnsw.ef_search", err);
        if (rc != 0)
            return rc;
        b->index.hnsw = &b->hnsw;
    }
    if (ivf) {
        const Quiver__V1__IvfParams *v = ic != NULL ? ic->ivf : NULL;
        b->ivf.nlist = v != NULL && v->nlist ? v->nlist : 1024;
        int rc = range_u32(b->ivf.nlist, 1, 65536, "ivf.nlist", err);
        if (rc != 0)
            return rc;
        b->ivf.nprobe =
            v != NULL && v->nprobe ? v->nprobe : (b->ivf.nlist < 16 ? b->ivf.nlist : 16);
        rc = range_u32(b->ivf.nprobe, 1, b->ivf.nlist, "ivf.nprobe", err);
        if (rc != 0)
            return rc;
        uint64_t def = 39ull * b->ivf.nlist;
        if (def < 10000)
            def = 10000;
        if (def > 10000000)
            def = 10000000;
        b->ivf.training_sample =
            v != NULL && v->training_sample ? v->training_sample : (uint32_t)def;
        rc = range_u32(b->ivf.training_sample, b->ivf.nlist, 10000000, "ivf.training_sample", err);
        if (rc != 0)
            return rc;
        b->index.ivf = &b->ivf;
    }
    b->index.opt_exact_filter_threshold_case =
        QUIVER__V1__INDEX_CONFIG__OPT_EXACT_FILTER_THRESHOLD_EXACT_FILTER_THRESHOLD;
    b->index.exact_filter_threshold = 10000;
    if (ic != NULL && ic->opt_exact_filter_threshold_case) {
        if (ic->exact_filter_threshold > 10000000)
            CFG_FAIL(QV_EINVAL, "exact_filter_threshold %u out of range 0..10000000",
                     ic->exact_filter_threshold);
        b->index.exact_filter_threshold = ic->exact_filter_threshold;
    }
    if (ic != NULL && ic->opt_rerank_case) {
        if (ic->rerank > 10000)
            CFG_FAIL(QV_EINVAL, "rerank %u out of range 0..10000", ic->rerank);
        b->index.opt_rerank_case = QUIVER__V1__INDEX_CONFIG__OPT_RERANK_RERANK;
        b->index.rerank = ic->rerank;
    }

    b->cfg.shard_count = r->shard_count ? r->shard_count : 1;
    if (b->cfg.shard_count > 1024)
        CFG_FAIL(QV_EINVAL, "shard_count %u out of range 1..1024", b->cfg.shard_count);
    b->cfg.replication_factor = r->replication_factor ? r->replication_factor : 1;
    if (b->cfg.replication_factor > 7)
        CFG_FAIL(QV_EINVAL, "replication_factor %u out of range 1..7", b->cfg.replication_factor);
    if (b->cfg.replication_factor > e->opts.max_replicas)
        CFG_FAIL(QV_EPRECONDITION,
                 "replication_factor %u needs %u ALIVE nodes; this cluster has %u",
                 b->cfg.replication_factor, b->cfg.replication_factor, e->opts.max_replicas);
    Quiver__V1__Partitioning p =
        r->partitioning ? r->partitioning : QUIVER__V1__PARTITIONING__PARTITIONING_HASH;
    if (p != QUIVER__V1__PARTITIONING__PARTITIONING_HASH &&
        p != QUIVER__V1__PARTITIONING__PARTITIONING_SEMANTIC)
        CFG_FAIL(QV_EINVAL, "unknown partitioning %d", (int)p);
    b->cfg.partitioning = p;
    if (r->semantic != NULL && p != QUIVER__V1__PARTITIONING__PARTITIONING_SEMANTIC)
        CFG_FAIL(QV_EINVAL, "semantic parameters given without PARTITIONING_SEMANTIC");
    if (p == QUIVER__V1__PARTITIONING__PARTITIONING_SEMANTIC) {
        const Quiver__V1__SemanticPartitioning *s = r->semantic;
        uint32_t sc = b->cfg.shard_count;
        uint64_t cells =
            s != NULL && s->cells ? s->cells : (64ull * sc > 65536 ? 65536 : 64ull * sc);
        if (cells < sc || cells > 65536)
            CFG_FAIL(QV_EINVAL, "semantic.cells %llu out of range %u..65536",
                     (unsigned long long)cells, sc);
        uint64_t sample = 50 * cells > 10000 ? 50 * cells : 10000;
        if (sample > 1000000)
            sample = 1000000;
        if (s != NULL && s->sample_size)
            sample = s->sample_size;
        if (sample < cells || sample > 1000000)
            CFG_FAIL(QV_EINVAL, "semantic.sample_size %llu out of range %llu..1000000",
                     (unsigned long long)sample, (unsigned long long)cells);
        uint64_t probe =
            s != NULL && s->probe_cells ? s->probe_cells : (cells / 16 ? cells / 16 : 1);
        if (probe < 1 || probe > cells)
            CFG_FAIL(QV_EINVAL, "semantic.probe_cells %llu out of range 1..%llu",
                     (unsigned long long)probe, (unsigned long long)cells);
        b->sem.cells = (uint32_t)cells;
        b->sem.sample_size = (uint32_t)sample;
        b->sem.probe_cells = (uint32_t)probe;
        b->cfg.semantic = &b->sem;
    }
    b->cfg.on_disk_payload = r->on_disk_payload;
    return 0;
}

/* Same configuration apart from identity (name, uid, creation time)? */
static bool same_config(const Quiver__V1__CollectionConfig *a,
                        const Quiver__V1__CollectionConfig *b)
{
    Quiver__V1__CollectionConfig x = *a, y = *b;
    x.created_at_unix_ms = y.created_at_unix_ms = 0;
    x.uid = y.uid = 0;
    size_t lx = quiver__v1__collection_config__get_packed_size(&x);
    size_t ly = quiver__v1__collection_config__get_packed_size(&y);
    if (lx != ly)
        return false;
    uint8_t *bx = malloc(lx + 1), *by = malloc(ly + 1);
    bool same = bx != NULL && by != NULL;
    if (same) {
        quiver__v1__collection_config__pack(&x, bx);
        quiver__v1__collection_config__pack(&y, by);
        same = memcmp(bx, by, lx) == 0;
    }
    free(bx);
    free(by);
    return same;
}

static qv_metric metric_of(Quiver__V1__Metric m)
{
    return m == QUIVER__V1__METRIC__METRIC_COSINE ? QV_METRIC_COSINE
           : m == QUIVER__V1__METRIC__METRIC_DOT  ? QV_METRIC_IP
                                                  : QV_METRIC_L2;
}

/* Index parameters from a configuration. */
static void index_params(const qv_coll *c, qv_index_params *p)
{
    const Quiver__V1__IndexConfig *ic = c->cfg->index;
    qv_index_type t = QV_INDEX_HNSW;
    if (ic->type == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_FLAT)
        t = QV_INDEX_FLAT;
    else if (ic->type == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_FLAT)
        t = QV_INDEX_IVF_FLAT;
    qv_index_params_default(p, t, c->metric, c->dim);
    p->threads = c->eng->opts.index_threads;
    if (ic->hnsw != NULL) {
        p->hnsw.M = ic->hnsw->m;
        p->hnsw.ef_construction = ic->hnsw->ef_construction;
        p->hnsw.ef_search = ic->hnsw->ef_search;
        if (ic->opt_rerank_case)
            p->hnsw.rerank = ic->rerank;
    }
    if (ic->type == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW_INT8)
        p->storage = QV_STORAGE_INT8;
    if (ic->ivf != NULL) {
        p->ivf.nlist = ic->ivf->nlist;
        p->ivf.nprobe = ic->ivf->nprobe;
        p->ivf.train_size = ic->ivf->training_sample;
    }
}

/* ---------------------------------------------------------------------------------------------
 * Collection objects
 * ------------------------------------------------------------------------------------------- */

static void entry_free(qv_entry *e)
{
    if (e == NULL)
        return;
    if (e->pl != NULL)
        for (size_t i = 0; i < e->n; i++)
            free(e->pl[i]);
    free(e->keys);
    free(e->klens);
    free(e->iids);
    free(e->vecs);
    free(e->pl);
    free(e->pl_lens);
    free(e);
}

static void coll_free(qv_coll *c)
{
    if (c == NULL)
        return;
    qv_index_free(c->index);
    qv_index_free(c->pending);
    qv__pidx_free(c->pidx);
    qv__bm_free(c->live);
    free(c->iid_keys);
    free(c->iid_klen);
    free(c->iid_ver);
    qv__hmap_free(&c->keymap);
    for (qv_entry *e = c->a_head, *n; e != NULL; e = n) {
        n = e->next;
        entry_free(e);
    }
    if (c->cfg != NULL)
        quiver__v1__collection_config__free_unpacked(c->cfg, NULL);
    pthread_rwlock_destroy(&c->rw);
    pthread_mutex_destroy(&c->mu);
    pthread_mutex_destroy(&c->snap_mu);
    pthread_cond_destroy(&c->work_cv);
    pthread_cond_destroy(&c->apply_cv);
    pthread_cond_destroy(&c->done_cv);
    free(c);
}

void qv__coll_put(qv_coll *c)
{
    if (c != NULL && atomic_fetch_sub(&c->refs, 1) == 1)
        coll_free(c);
}

static int new_index(qv_coll *c, qv_index **out, qv_status *err)
{
    qv_index_params p;
    index_params(c, &p);
    return qv_index_create(&p, out, err);
}

static int new_pending(qv_coll *c, qv_status *err)
{
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_FLAT, c->metric, c->dim);
    p.threads = c->eng->opts.index_threads;
    return qv_index_create(&p, &c->pending, err);
}

/* Builds the in-memory object of a collection from its stored configuration bytes. */
static int coll_new(qv_engine *e, const uint8_t *cfg_bytes, size_t len, qv_coll **out,
                    qv_status *err)
{
    qv_coll *c = calloc(1, sizeof(*c));
    if (c == NULL)
        CFG_FAIL(QV_ERESOURCE, "out of memory");
    /* writer-preferring: a steady stream of searches must not starve the applier */
    pthread_rwlockattr_t ra;
    pthread_rwlockattr_init(&ra);
    pthread_rwlockattr_setkind_np(&ra, PTHREAD_RWLOCK_PREFER_WRITER_NONRECURSIVE_NP);
    pthread_rwlock_init(&c->rw, &ra);
    pthread_rwlockattr_destroy(&ra);
    pthread_mutex_init(&c->mu, NULL);
    pthread_mutex_init(&c->snap_mu, NULL);
    pthread_cond_init(&c->work_cv, NULL);
    pthread_cond_init(&c->apply_cv, NULL);
    pthread_cond_init(&c->done_cv, NULL);
    atomic_init(&c->refs, 1);
    c->eng = e;
    c->cfg = quiver__v1__collection_config__unpack(NULL, len, cfg_bytes);
    if (c->cfg == NULL || c->cfg->index == NULL) {
        coll_free(c);
        CFG_FAIL(QV_ECORRUPT, "stored collection configuration cannot be decoded");
    }
    snprintf(c->name, sizeof(c->name), "%s", c->cfg->name);
    c->uid = c->cfg->uid;
    put_be64(c->uidk, c->uid);
    c->dim = c->cfg->dimension;
    c->metric = metric_of(c->cfg->metric);
    Quiver__V1__IndexType t = c->cfg->index->type;
    if (t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW_INT8) {
        c->needs_training = true;
        c->train_size = 10000;
    } else if (t == QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_FLAT) {
        c->needs_training = true;
        c->train_size = c->cfg->index->ivf->training_sample;
    }
    c->pidx = qv__pidx_create();
    c->live = roaring_bitmap_create();
    int rc = c->pidx != NULL && c->live != NULL ? new_index(c, &c->index, err) : QV_ERESOURCE;
    if (rc == 0 && c->needs_training)
        rc = new_pending(c, err);
    if (rc != 0) {
        if (rc == QV_ERESOURCE)
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
        coll_free(c);
        return rc;
    }
    if (e->opts.metrics != NULL) {
        char labels[128];
        snprintf(labels, sizeof(labels), "collection=\"%s\"", c->name);
        c->c_points_written =
            qv_metrics_counter(e->opts.metrics, "quiver_points_written_total",
                               "Points upserted or deleted through the log", labels);
    }
    c->last_snap_ms = qv_now_ms();
    *out = c;
    return 0;
}

/* Makes room for iid in the iid -> key table (called with rw held for writing). */
static int iid_reserve(qv_coll *c, uint32_t iid)
{
    if (iid < c->iid_cap)
        return 0;
    size_t cap = c->iid_cap ? c->iid_cap : 1024;
    while (cap <= iid)
        cap *= 2;
    uint8_t(*k)[QV_KEY_MAX] = realloc(c->iid_keys, cap * QV_KEY_MAX);
    if (k == NULL)
        return QV_ERESOURCE;
    c->iid_keys = k;
    uint8_t *l = realloc(c->iid_klen, cap);
    if (l == NULL)
        return QV_ERESOURCE;
    memset(l + c->iid_cap, 0, cap - c->iid_cap);
    c->iid_klen = l;
    uint64_t *ver = realloc(c->iid_ver, cap * sizeof(uint64_t));
    if (ver == NULL)
        return QV_ERESOURCE;
    memset(ver + c->iid_cap, 0, (cap - c->iid_cap) * sizeof(uint64_t));
    c->iid_ver = ver;
    c->iid_cap = cap;
    return 0;
}

bool qv__coll_lookup_iid(const Quiver__V1__PointId *id, uint32_t *iid, void *coll)
{
    qv_coll *c = coll;
    uint8_t key[QV_KEY_MAX], klen;
    qv_status st;
    if (qv__key_from_id(id, key, &klen, &st) != 0)
        return false;
    pthread_mutex_lock(&c->mu);
    void **v = qv__hmap_get(&c->keymap, key, klen);
    bool found = v != NULL;
    if (found)
        *iid = (uint32_t)((uintptr_t)*v - 1);
    pthread_mutex_unlock(&c->mu);
    return found;
}

/* ---------------------------------------------------------------------------------------------
 * Log entries
 *
 * [crc32c u32][version u8 = 1][kind u8][reserved u16][dim u32][n u32], then per point
 * [klen u8][key][iid u32] and, for upserts, [dim float32][payload length u32][payload bytes].
 * Little-endian; the CRC covers everything after it.
 * ------------------------------------------------------------------------------------------- */

#define ENTRY_HDR 16

static uint8_t *entry_encode(const qv_entry *e, uint32_t dim, size_t *outlen)
{
    size_t len = ENTRY_HDR;
    for (size_t i = 0; i < e->n; i++) {
        len += 1 + e->klens[i] + 4;
        if (e->kind == WK_UPSERT)
            len += (size_t)dim * 4 + 4 + e->pl_lens[i];
    }
    uint8_t *b = malloc(len);
    if (b == NULL)
        return NULL;
    b[4] = 1;
    b[5] = (uint8_t)e->kind;
    b[6] = b[7] = 0;
    put_le32(b + 8, dim);
    put_le32(b + 12, (uint32_t)e->n);
    size_t o = ENTRY_HDR;
    for (size_t i = 0; i < e->n; i++) {
        b[o++] = e->klens[i];
        memcpy(b + o, e->keys[i], e->klens[i]);
        o += e->klens[i];
        put_le32(b + o, e->iids[i]);
        o += 4;
        if (e->kind == WK_UPSERT) {
            memcpy(b + o, e->vecs + i * (size_t)dim, (size_t)dim * 4);
            o += (size_t)dim * 4;
            put_le32(b + o, e->pl_lens[i]);
            o += 4;
            if (e->pl_lens[i] > 0)
                memcpy(b + o, e->pl[i], e->pl_lens[i]);
            o += e->pl_lens[i];
        }
    }
    put_le32(b, qv_crc32c(0, b + 4, len - 4));
    *outlen = len;
    return b;
}

static qv_entry *entry_alloc(int kind, size_t n, uint32_t dim)
{
    qv_entry *e = calloc(1, sizeof(*e));
    if (e == NULL)
        return NULL;
    e->kind = kind;
    e->n = n;
    size_t m = n > 0 ? n : 1;
    e->keys = malloc(m * QV_KEY_MAX);
    e->klens = malloc(m);
    e->iids = malloc(m * sizeof(uint32_t));
    bool ok = e->keys && e->klens && e->iids;
    if (kind == WK_UPSERT) {
        e->vecs = malloc(m * (size_t)dim * sizeof(float));
        e->pl = calloc(m, sizeof(uint8_t *));
        e->pl_lens = calloc(m, sizeof(uint32_t));
        ok = ok && e->vecs && e->pl && e->pl_lens;
    }
    if (!ok) {
        entry_free(e);
        return NULL;
    }
    return e;
}

static int entry_decode(const char *rec, size_t len, uint32_t dim, qv_entry **out, qv_status *err)
{
    const uint8_t *b = (const uint8_t *)rec;
    if (len < ENTRY_HDR || get_le32(b) != qv_crc32c(0, b + 4, len - 4)) {
        *err = qv_status_make(QV_ECORRUPT, "log entry fails its checksum");
        return QV_ECORRUPT;
    }
    if (b[4] != 1 || (b[5] != WK_UPSERT && b[5] != WK_DELETE) || get_le32(b + 8) != dim) {
        *err = qv_status_make(QV_ECORRUPT, "log entry of unknown version, kind or dimension");
        return QV_ECORRUPT;
    }
    size_t n = get_le32(b + 12);
    if (n > (len - ENTRY_HDR) / 14) { /* a point takes at least 14 bytes (filter deletes may hold
                                         more points than an upsert batch) */
        *err = qv_status_make(QV_ECORRUPT, "log entry with %zu points", n);
        return QV_ECORRUPT;
    }
    qv_entry *e = entry_alloc(b[5], n, dim);
    if (e == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    size_t o = ENTRY_HDR;
    for (size_t i = 0; i < n; i++) {
        if (o + 1 > len || (b[o] != 9 && b[o] != 17) || o + 1 + b[o] + 4 > len)
            goto corrupt;
        e->klens[i] = b[o++];
        memcpy(e->keys[i], b + o, e->klens[i]);
        o += e->klens[i];
        e->iids[i] = get_le32(b + o);
        o += 4;
        if (e->kind == WK_UPSERT) {
            if (o + (size_t)dim * 4 + 4 > len)
                goto corrupt;
            memcpy(e->vecs + i * (size_t)dim, b + o, (size_t)dim * 4);
            o += (size_t)dim * 4;
            uint32_t pl = get_le32(b + o);
            o += 4;
            if (pl > len - o)
                goto corrupt;
            if (pl > 0) {
                e->pl[i] = malloc(pl);
                if (e->pl[i] == NULL) {
                    entry_free(e);
                    *err = qv_status_make(QV_ERESOURCE, "out of memory");
                    return QV_ERESOURCE;
                }
                memcpy(e->pl[i], b + o, pl);
            }
            e->pl_lens[i] = pl;
            o += pl;
        }
    }
    if (o != len)
        goto corrupt;
    *out = e;
    return 0;
corrupt:
    entry_free(e);
    *err = qv_status_make(QV_ECORRUPT, "log entry is malformed");
    return QV_ECORRUPT;
}

static void log_key(const qv_coll *c, uint64_t index, uint8_t *k)
{
    memcpy(k, c->uidk, 8);
    put_be64(k + 8, index);
}

static void meta_key(char tag, const qv_coll *c, uint8_t *k)
{
    k[0] = (uint8_t)tag;
    memcpy(k + 1, c->uidk, 8);
}

/* ---------------------------------------------------------------------------------------------
 * Apply: one entry to the state column families and to memory
 * ------------------------------------------------------------------------------------------- */

static Quiver__V1__Payload *get_payload(qv_coll *c, const uint8_t *key, size_t klen)
{
    uint8_t k[8 + QV_KEY_MAX];
    size_t kl = qv__coll_key(c, key, klen, k);
    size_t vl = 0;
    char *rerr = NULL;
    char *v = rocksdb_get_cf(c->eng->db, c->eng->ro, c->eng->cf[CF_PAYLOAD], (const char *)k, kl,
                             &vl, &rerr);
    rocksdb_free(rerr);
    if (v == NULL)
        return NULL;
    Quiver__V1__Payload *p = quiver__v1__payload__unpack(NULL, vl, (const uint8_t *)v);
    rocksdb_free(v);
    return p;
}

/* Whether the vectors CF holds the key (the point exists in the applied state). */
static bool state_has(qv_coll *c, const uint8_t *key, size_t klen)
{
    uint8_t k[8 + QV_KEY_MAX];
    size_t kl = qv__coll_key(c, key, klen, k);
    size_t vl = 0;
    char *rerr = NULL;
    char *v = rocksdb_get_cf(c->eng->db, c->eng->ro, c->eng->cf[CF_VECTORS], (const char *)k, kl,
                             &vl, &rerr);
    rocksdb_free(rerr);
    bool has = v != NULL;
    rocksdb_free(v);
    return has;
}

/* Moves every point of an untrained collection into its trained main index once enough are
 * there. Called by the applier with snap_mu held. */
static int maybe_train(qv_coll *c, qv_status *err)
{
    qv_index_stats st;
    qv_index_stats_get(c->pending, &st);
    if (st.count < c->train_size)
        return 0;
    /* gather every live point from the store */
    size_t cap = st.count + 16, n = 0;
    float *vecs = malloc(cap * (size_t)c->dim * sizeof(float));
    uint64_t *ids = malloc(cap * sizeof(uint64_t));
    if (vecs == NULL || ids == NULL) {
        free(vecs);
        free(ids);
        *err = qv_status_make(QV_ERESOURCE, "out of memory training the index");
        return QV_ERESOURCE;
    }
    rocksdb_iterator_t *it =
        rocksdb_create_iterator_cf(c->eng->db, c->eng->ro, c->eng->cf[CF_VECTORS]);
    for (rocksdb_iter_seek(it, (const char *)c->uidk, 8); rocksdb_iter_valid(it) && n < cap;
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 8 || memcmp(k, c->uidk, 8) != 0)
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        uint32_t iid;
        if (qv__vec_value_decode(c, v, vl, &iid, NULL, vecs + n * (size_t)c->dim) != 0)
            continue;
        if (!qv_index_contains(c->pending, iid))
            continue;
        ids[n++] = iid;
    }
    rocksdb_iter_destroy(it);
    uint64_t t0 = qv_now_ms();
    int rc = qv_index_train(c->index, vecs, n < c->train_size ? n : c->train_size, err);
    if (rc == 0)
        rc = qv_index_add(c->index, ids, vecs, n, err);
    free(vecs);
    free(ids);
    if (rc != 0)
        return rc;
    /* searches use c->pending under rw (read): none is using it once we hold rw for writing */
    pthread_rwlock_wrlock(&c->rw);
    qv_index *old = c->pending;
    c->pending = NULL;
    pthread_rwlock_unlock(&c->rw);
    qv_index_free(old);
    qv_log(QV_LOG_INFO, MOD, "collection %s: index trained on %zu points in %llu ms", c->name, n,
           (unsigned long long)(qv_now_ms() - t0));
    return 0;
}

/* Applies entry e to memory only (index + payload index + maps): the state CFs already hold it
 * (write_state true: write them too, first). */
static int apply_entry(qv_coll *c, qv_entry *e, bool write_state, bool index_only, qv_status *err)
{
    qv_engine *eng = c->eng;
    size_t n = e->n;
    Quiver__V1__Payload **oldp = NULL, **newp = NULL;
    bool *existed = NULL;
    uint64_t *ids64 = malloc((n ? n : 1) * sizeof(uint64_t));
    int rc = 0;
    if (ids64 == NULL)
        goto oom;
    for (size_t i = 0; i < n; i++)
        ids64[i] = e->iids[i];
    if (!index_only) {
        oldp = calloc(n ? n : 1, sizeof(*oldp));
        newp = calloc(n ? n : 1, sizeof(*newp));
        existed = calloc(n ? n : 1, sizeof(*existed));
        if (oldp == NULL || newp == NULL || existed == NULL)
            goto oom;
        for (size_t i = 0; i < n; i++) {
            /* the previous payload, to take the point out of the payload index */
            existed[i] = state_has(c, e->keys[i], e->klens[i]);
            if (existed[i])
                oldp[i] = get_payload(c, e->keys[i], e->klens[i]);
            if (e->kind == WK_UPSERT && e->pl_lens[i] > 0)
                newp[i] = quiver__v1__payload__unpack(NULL, e->pl_lens[i], e->pl[i]);
        }
    }
    if (write_state) {
        rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
        uint8_t k[8 + QV_KEY_MAX];
        uint8_t *val = e->kind == WK_UPSERT ? malloc(12 + (size_t)c->dim * 4) : NULL;
        if (e->kind == WK_UPSERT && val == NULL) {
            rocksdb_writebatch_destroy(wb);
            goto oom;
        }
        for (size_t i = 0; i < n; i++) {
            size_t kl = qv__coll_key(c, e->keys[i], e->klens[i], k);
            if (e->kind == WK_UPSERT) {
                put_le32(val, e->iids[i]);
                put_le64(val + 4, e->index);
                memcpy(val + 12, e->vecs + i * (size_t)c->dim, (size_t)c->dim * 4);
                rocksdb_writebatch_put_cf(wb, eng->cf[CF_VECTORS], (const char *)k, kl,
                                          (const char *)val, 12 + (size_t)c->dim * 4);
                if (e->pl_lens[i] > 0)
                    rocksdb_writebatch_put_cf(wb, eng->cf[CF_PAYLOAD], (const char *)k, kl,
                                              (const char *)e->pl[i], e->pl_lens[i]);
                else
                    rocksdb_writebatch_delete_cf(wb, eng->cf[CF_PAYLOAD], (const char *)k, kl);
            } else {
                rocksdb_writebatch_delete_cf(wb, eng->cf[CF_VECTORS], (const char *)k, kl);
                rocksdb_writebatch_delete_cf(wb, eng->cf[CF_PAYLOAD], (const char *)k, kl);
            }
        }
        free(val);
        uint8_t mk[9], mv[12];
        meta_key('a', c, mk);
        put_le64(mv, e->index);
        for (size_t i = 0; e->kind == WK_UPSERT && i < n; i++)
            if (e->iids[i] + 1 > c->state_next_iid)
                c->state_next_iid = e->iids[i] + 1;
        put_le32(mv + 8, c->state_next_iid);
        size_t rl;
        uint8_t *rec = crc_record(mv, sizeof(mv), &rl);
        if (rec == NULL) {
            rocksdb_writebatch_destroy(wb);
            goto oom;
        }
        rocksdb_writebatch_put_cf(wb, eng->cf[CF_META], (const char *)mk, sizeof(mk),
                                  (const char *)rec, rl);
        free(rec);
        char *rerr = NULL;
        rocksdb_write(eng->db, eng->wo_state, wb, &rerr);
        rocksdb_writebatch_destroy(wb);
        if (rerr != NULL) {
            rc = rdb_fail(err, "applying a log entry", rerr);
            goto out;
        }
    }
    /* memory: the key table first, so that any iid the index returns maps to its key */
    if (!index_only) {
        pthread_rwlock_wrlock(&c->rw);
        for (size_t i = 0; i < n && rc == 0; i++) {
            uint32_t iid = e->iids[i];
            if (existed[i])
                qv__pidx_remove(c->pidx, iid, oldp[i]);
            if (e->kind == WK_UPSERT) {
                rc = iid_reserve(c, iid);
                if (rc == 0) {
                    memcpy(c->iid_keys[iid], e->keys[i], e->klens[i]);
                    c->iid_klen[iid] = e->klens[i];
                    c->iid_ver[iid] = e->index;
                    rc = qv__pidx_add(c->pidx, iid, newp[i]);
                }
            } else {
                roaring_bitmap_remove(c->live, iid);
            }
        }
        pthread_rwlock_unlock(&c->rw);
        if (rc != 0)
            goto oom;
    }
    if (e->kind == WK_UPSERT) {
        if (c->pending != NULL) {
            rc = qv_index_add(c->pending, ids64, e->vecs, n, err);
            if (rc == 0 && !index_only)
                rc = maybe_train(c, err);
        } else {
            rc = qv_index_add(c->index, ids64, e->vecs, n, err);
        }
        if (rc != 0)
            goto out;
    } else {
        qv_index_remove(c->index, ids64, n, NULL);
        if (c->pending != NULL)
            qv_index_remove(c->pending, ids64, n, NULL);
    }
    if (!index_only) {
        pthread_rwlock_wrlock(&c->rw);
        if (e->kind == WK_UPSERT)
            for (size_t i = 0; i < n; i++)
                roaring_bitmap_add(c->live, e->iids[i]);
        else
            for (size_t i = 0; i < n; i++)
                if (e->iids[i] < c->iid_cap)
                    c->iid_klen[e->iids[i]] = 0;
        pthread_rwlock_unlock(&c->rw);
    }
    goto out;
oom:
    rc = QV_ERESOURCE;
    *err = qv_status_make(QV_ERESOURCE, "out of memory applying a log entry");
out:
    if (oldp != NULL)
        for (size_t i = 0; i < n; i++)
            if (oldp[i] != NULL)
                quiver__v1__payload__free_unpacked(oldp[i], NULL);
    if (newp != NULL)
        for (size_t i = 0; i < n; i++)
            if (newp[i] != NULL)
                quiver__v1__payload__free_unpacked(newp[i], NULL);
    free(oldp);
    free(newp);
    free(existed);
    free(ids64);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Committer and applier threads
 * ------------------------------------------------------------------------------------------- */

#define APPLY_QUEUE_MAX_BYTES (512ull << 20) /* committed, not yet applied: back-pressure above */

static void coll_fail(qv_coll *c, const qv_status *st)
{
    /* with mu held */
    if (!c->failed) {
        c->failed = true;
        snprintf(c->failed_msg, sizeof(c->failed_msg), "%s", st->msg);
        qv_log(QV_LOG_ERROR, MOD, "collection %s: writes stopped after a storage error: %s",
               c->name, st->msg);
    }
}

/* Resolves a filter delete to the ids it matches now (every earlier entry applied). */
static int resolve_filter(qv_coll *c, qv_wreq *r, qv_status *err)
{
    roaring_bitmap_t *bm = NULL, *bm2 = NULL;
    pthread_rwlock_rdlock(&c->rw);
    int rc = 0;
    if (r->filter != NULL)
        rc = qv__pidx_compile(c->pidx, r->filter, c->live, qv__coll_lookup_iid, c, &bm, err);
    if (rc == 0 && r->text_filter != NULL)
        rc = qv__pidx_compile(c->pidx, r->text_filter, bm != NULL ? bm : c->live,
                              qv__coll_lookup_iid, c, &bm2, err);
    if (rc == 0) {
        roaring_bitmap_t *res = bm2 != NULL ? bm2 : bm;
        size_t n = res != NULL ? roaring_bitmap_get_cardinality(res) : 0;
        r->keys = malloc((n ? n : 1) * QV_KEY_MAX);
        r->klens = malloc(n ? n : 1);
        if (r->keys == NULL || r->klens == NULL) {
            rc = QV_ERESOURCE;
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
        } else {
            roaring_uint32_iterator_t *it = roaring_create_iterator(res);
            size_t i = 0;
            for (; it->has_value && i < n; roaring_advance_uint32_iterator(it)) {
                uint32_t iid = it->current_value;
                if (iid >= c->iid_cap || c->iid_klen[iid] == 0)
                    continue;
                memcpy(r->keys[i], c->iid_keys[iid], c->iid_klen[iid]);
                r->klens[i] = c->iid_klen[iid];
                i++;
            }
            roaring_free_uint32_iterator(it);
            r->n = i;
        }
    }
    pthread_rwlock_unlock(&c->rw);
    qv__bm_free(bm);
    qv__bm_free(bm2);
    return rc;
}

/* Turns a request into an entry (iids assigned in the committed view); mu held. Takes over the
 * request's vectors and payloads. */
static qv_entry *make_entry(qv_coll *c, qv_wreq *r, qv_status *err)
{
    int kind = r->kind == WK_UPSERT ? WK_UPSERT : WK_DELETE;
    size_t n = r->n;
    qv_entry *e = kind == WK_DELETE ? entry_alloc(kind, n, c->dim) : calloc(1, sizeof(*e));
    if (e == NULL)
        goto oom;
    e->kind = kind;
    e->n = 0;
    if (kind == WK_UPSERT) {
        e->keys = r->keys;
        e->klens = r->klens;
        e->vecs = r->vecs;
        e->pl = r->pl;
        e->pl_lens = r->pl_lens;
        r->keys = NULL;
        r->klens = NULL;
        r->vecs = NULL;
        r->pl = NULL;
        r->pl_lens = NULL;
        e->iids = malloc((n ? n : 1) * sizeof(uint32_t));
        e->n = n;
        if (e->iids == NULL)
            goto oom;
        for (size_t i = 0; i < n; i++) {
            void **v = qv__hmap_get(&c->keymap, e->keys[i], e->klens[i]);
            if (v != NULL) {
                e->iids[i] = (uint32_t)((uintptr_t)*v - 1);
                continue;
            }
            if (c->next_iid == UINT32_MAX) {
                entry_free(e);
                *err = qv_status_make(QV_ERESOURCE,
                                      "collection '%s' has used all 4,294,967,294 internal point "
                                      "ids; re-create it and import the points again",
                                      c->name);
                return NULL;
            }
            uint32_t iid = c->next_iid++;
            if (qv__hmap_put(&c->keymap, e->keys[i], e->klens[i], (void *)(uintptr_t)(iid + 1),
                             NULL) != 0)
                goto oom;
            e->iids[i] = iid;
        }
        for (size_t i = 0; i < n; i++)
            e->bytes += (size_t)c->dim * 4 + e->pl_lens[i] + 64;
    } else {
        /* deletes: only points that exist in the committed view */
        for (size_t i = 0; i < n; i++) {
            void *v = qv__hmap_del(&c->keymap, r->keys[i], r->klens[i]);
            if (v == NULL)
                continue;
            memcpy(e->keys[e->n], r->keys[i], r->klens[i]);
            e->klens[e->n] = r->klens[i];
            e->iids[e->n] = (uint32_t)((uintptr_t)v - 1);
            e->n++;
        }
        e->bytes = e->n * 32 + 64;
    }
    return e;
oom:
    entry_free(e);
    *err = qv_status_make(QV_ERESOURCE, "out of memory");
    return NULL;
}

/* Writes entries [first..] of a group in one batch; then hands them to the applier. */
static void commit_group(qv_coll *c, qv_wreq **reqs, qv_entry **ents, size_t n)
{
    qv_engine *eng = c->eng;
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    qv_status st = qv_status_ok();
    int rc = 0;
    for (size_t i = 0; i < n && rc == 0; i++) {
        if (ents[i] == NULL)
            continue;
        size_t len;
        uint8_t *rec = entry_encode(ents[i], c->dim, &len);
        if (rec == NULL) {
            rc = QV_ERESOURCE;
            st = qv_status_make(QV_ERESOURCE, "out of memory encoding a log entry");
            break;
        }
        uint8_t k[16];
        log_key(c, ents[i]->index, k);
        rocksdb_writebatch_put_cf(wb, eng->cf[CF_LOG], (const char *)k, 16, (const char *)rec, len);
        free(rec);
    }
    if (rc == 0 && rocksdb_writebatch_count(wb) > 0) {
        uint64_t t0 = qv_now_ns();
        char *rerr = NULL;
        rocksdb_write(eng->db, eng->wo_log, wb, &rerr);
        atomic_fetch_add(&eng->log_writes, 1);
        if (rerr != NULL)
            rc = rdb_fail(&st, "writing the log", rerr);
        if (eng->h_log_write != NULL)
            qv_histogram_observe(eng->h_log_write, (double)(qv_now_ns() - t0) / 1e9);
        if (eng->c_fsyncs != NULL && eng->opts.fsync == QV_FSYNC_SYNC)
            qv_counter_add(eng->c_fsyncs, 1);
    }
    rocksdb_writebatch_destroy(wb);

    pthread_mutex_lock(&c->mu);
    if (rc != 0)
        coll_fail(c, &st);
    for (size_t i = 0; i < n; i++) {
        qv_wreq *r = reqs[i];
        if (r->finished)
            continue; /* failed before the write (its own error) */
        if (rc != 0) {
            r->rc = rc;
            r->err = st;
            r->finished = true;
            entry_free(ents[i]);
            continue;
        }
        r->committed = true;
        r->index = ents[i]->index;
        r->points = ents[i]->n;
        if (c->c_points_written != NULL)
            qv_counter_add(c->c_points_written, ents[i]->n);
        ents[i]->next = NULL;
        if (c->a_tail != NULL)
            c->a_tail->next = ents[i];
        else
            c->a_head = ents[i];
        c->a_tail = ents[i];
        c->a_bytes += ents[i]->bytes;
        if (!r->wait)
            r->finished = true;
    }
    pthread_cond_signal(&c->apply_cv);
    pthread_cond_broadcast(&c->done_cv);
    pthread_mutex_unlock(&c->mu);
}

#define GROUP_MAX 256

static void *committer_main(void *arg)
{
    qv_coll *c = arg;
    qv_wreq *reqs[GROUP_MAX];
    qv_entry *ents[GROUP_MAX];
    pthread_mutex_lock(&c->mu);
    for (;;) {
        while (!c->stop && (c->q_head == NULL || c->a_bytes > APPLY_QUEUE_MAX_BYTES))
            pthread_cond_wait(&c->work_cv, &c->mu);
        if (c->q_head == NULL && c->stop) {
            c->committer_done = true;
            pthread_cond_broadcast(&c->apply_cv);
            break;
        }
        size_t n = 0;
        bool barrier = false;
        while (c->q_head != NULL && n < GROUP_MAX) {
            qv_wreq *r = c->q_head;
            if (r->kind == WK_DELETE_FILTER && n > 0)
                break; /* commit what precedes it first */
            c->q_head = r->next;
            if (c->q_head == NULL)
                c->q_tail = NULL;
            reqs[n++] = r;
            if (r->kind == WK_DELETE_FILTER) {
                barrier = true;
                break;
            }
        }
        if (barrier) {
            /* evaluate at the log position: wait for every earlier entry to be applied */
            while (c->applied_index < c->last_index && !c->failed)
                pthread_cond_wait(&c->done_cv, &c->mu);
            pthread_mutex_unlock(&c->mu);
            qv_status st = qv_status_ok();
            int rc = resolve_filter(c, reqs[0], &st);
            pthread_mutex_lock(&c->mu);
            if (rc != 0) {
                reqs[0]->rc = rc;
                reqs[0]->err = st;
                reqs[0]->finished = true;
                pthread_cond_broadcast(&c->done_cv);
                continue;
            }
        }
        for (size_t i = 0; i < n; i++) {
            ents[i] = NULL;
            if (c->failed) {
                reqs[i]->rc = QV_EUNAVAIL;
                reqs[i]->err = qv_status_make(QV_EUNAVAIL,
                                              "collection '%s' stopped taking writes after a "
                                              "storage error (%s); restart the node",
                                              c->name, c->failed_msg);
                reqs[i]->finished = true;
                continue;
            }
            qv_status st = qv_status_ok();
            ents[i] = make_entry(c, reqs[i], &st);
            if (ents[i] == NULL) {
                reqs[i]->rc = st.code;
                reqs[i]->err = st;
                reqs[i]->finished = true;
                continue;
            }
            ents[i]->index = ++c->last_index;
        }
        pthread_mutex_unlock(&c->mu);
        commit_group(c, reqs, ents, n);
        pthread_mutex_lock(&c->mu);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static void *applier_main(void *arg)
{
    qv_coll *c = arg;
    pthread_mutex_lock(&c->mu);
    for (;;) {
        /* runs until the committer has exited and everything it committed is applied */
        while (!c->committer_done && c->a_head == NULL)
            pthread_cond_wait(&c->apply_cv, &c->mu);
        if (c->a_head == NULL && c->committer_done)
            break;
        qv_entry *e = c->a_head;
        c->a_head = e->next;
        if (c->a_head == NULL)
            c->a_tail = NULL;
        if (c->failed) {
            /* applying on top of a failed entry would diverge from the log: leave the rest to
             * the replay at the next start */
            c->a_bytes -= e->bytes;
            entry_free(e);
            pthread_cond_broadcast(&c->done_cv);
            pthread_cond_signal(&c->work_cv); /* back-pressure may have lifted */
            continue;
        }
        pthread_mutex_unlock(&c->mu);

        uint64_t t0 = qv_now_ns();
        pthread_mutex_lock(&c->snap_mu);
        qv_status st = qv_status_ok();
        int rc = apply_entry(c, e, true, false, &st);
        c->changed_since_snap += e->n;
        if (rc == 0)
            c->state_index = e->index;
        pthread_mutex_unlock(&c->snap_mu);
        if (c->eng->h_apply != NULL)
            qv_histogram_observe(c->eng->h_apply, (double)(qv_now_ns() - t0) / 1e9);

        pthread_mutex_lock(&c->mu);
        if (rc != 0)
            coll_fail(c, &st); /* applied_index stays: waiters for this entry see the failure */
        else
            c->applied_index = e->index;
        c->a_bytes -= e->bytes;
        pthread_cond_broadcast(&c->done_cv);
        pthread_cond_signal(&c->work_cv); /* back-pressure may have lifted */
        entry_free(e);
    }
    pthread_mutex_unlock(&c->mu);
    return NULL;
}

static int coll_start_threads(qv_coll *c, qv_status *err)
{
    if (pthread_create(&c->committer, NULL, committer_main, c) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "cannot start the committer thread");
        return QV_ERESOURCE;
    }
    if (pthread_create(&c->applier, NULL, applier_main, c) != 0) {
        pthread_mutex_lock(&c->mu);
        c->stop = true;
        pthread_cond_broadcast(&c->work_cv);
        pthread_mutex_unlock(&c->mu);
        pthread_join(c->committer, NULL);
        *err = qv_status_make(QV_ERESOURCE, "cannot start the applier thread");
        return QV_ERESOURCE;
    }
    c->threads_started = true;
    return 0;
}

/* Drains the queues and stops both threads. */
static void coll_stop_threads(qv_coll *c)
{
    if (!c->threads_started)
        return;
    pthread_mutex_lock(&c->mu);
    c->stop = true;
    pthread_cond_broadcast(&c->work_cv);
    pthread_cond_broadcast(&c->apply_cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->committer, NULL);
    pthread_mutex_lock(&c->mu);
    pthread_cond_broadcast(&c->apply_cv);
    pthread_mutex_unlock(&c->mu);
    pthread_join(c->applier, NULL);
    c->threads_started = false;
}

/* Queues a request and waits for its outcome (committed, or applied when r->wait). */
static int submit(qv_coll *c, qv_wreq *r, int64_t deadline_ms, qv_status *err)
{
    pthread_mutex_lock(&c->mu);
    if (c->stop || atomic_load(&c->dropped)) {
        pthread_mutex_unlock(&c->mu);
        *err = qv_status_make(atomic_load(&c->dropped) ? QV_ENOTFOUND : QV_EUNAVAIL,
                              "collection '%s' is %s", c->name,
                              atomic_load(&c->dropped) ? "dropped" : "shutting down");
        return err->code;
    }
    if (c->failed) {
        *err = qv_status_make(QV_EUNAVAIL,
                              "collection '%s' stopped taking writes after a storage error (%s); "
                              "restart the node",
                              c->name, c->failed_msg);
        pthread_mutex_unlock(&c->mu);
        return QV_EUNAVAIL;
    }
    r->next = NULL;
    if (c->q_tail != NULL)
        c->q_tail->next = r;
    else
        c->q_head = r;
    c->q_tail = r;
    pthread_cond_signal(&c->work_cv);
    int rc = 0;
    for (;;) {
        if (r->finished || (r->committed && (!r->wait || c->applied_index >= r->index)))
            break;
        if (r->committed && c->failed) {
            r->rc = QV_EUNAVAIL;
            r->err =
                qv_status_make(QV_EUNAVAIL, "committed at log index %llu but applying failed: %s",
                               (unsigned long long)r->index, c->failed_msg);
            break;
        }
        if (r->committed && deadline_ms > 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            int64_t left = deadline_ms - (int64_t)qv_now_ms();
            if (left <= 0) {
                /* durable, just not visible yet */
                r->rc = QV_ETIMEOUT;
                r->err = qv_status_make(QV_ETIMEOUT,
                                        "committed at log index %llu (durable) but not yet applied "
                                        "within the deadline",
                                        (unsigned long long)r->index);
                break;
            }
            ts.tv_sec += left / 1000;
            ts.tv_nsec += (left % 1000) * 1000000;
            if (ts.tv_nsec >= 1000000000) {
                ts.tv_sec++;
                ts.tv_nsec -= 1000000000;
            }
            pthread_cond_timedwait(&c->done_cv, &c->mu, &ts);
        } else {
            pthread_cond_wait(&c->done_cv, &c->mu);
        }
    }
    rc = r->rc;
    if (rc != 0)
        *err = r->err;
    pthread_mutex_unlock(&c->mu);
    return rc;
}

static void wreq_clear(qv_wreq *r)
{
    if (r->pl != NULL)
        for (size_t i = 0; i < r->n; i++)
            free(r->pl[i]);
    free(r->keys);
    free(r->klens);
    free(r->vecs);
    free(r->pl);
    free(r->pl_lens);
}

int qv__coll_upsert(qv_coll *c, const Quiver__V1__UpsertPointsRequest *req, int64_t deadline_ms,
                    qv_write_out *out, qv_status *err)
{
    size_t n = req->n_points;
    if (n == 0) {
        *err = qv_status_make(QV_EINVAL, "upsert needs at least one point");
        return QV_EINVAL;
    }
    if (n > QV_MAX_BATCH) {
        *err = qv_status_make(QV_ERESOURCE, "upsert of %zu points (at most %d per request)", n,
                              QV_MAX_BATCH);
        return QV_ERESOURCE;
    }
    qv_wreq r = {.kind = WK_UPSERT, .wait = req->wait};
    r.keys = malloc(n * QV_KEY_MAX);
    r.klens = malloc(n);
    r.vecs = malloc(n * (size_t)c->dim * sizeof(float));
    r.pl = calloc(n, sizeof(uint8_t *));
    r.pl_lens = calloc(n, sizeof(uint32_t));
    size_t *src = malloc(n * sizeof(size_t));
    qv_hmap seen = {0};
    size_t m = 0; /* distinct ids so far; r.pl[0..m) may hold packed payloads */
    int rc = 0;
    if (!r.keys || !r.klens || !r.vecs || !r.pl || !r.pl_lens || !src) {
        rc = QV_ERESOURCE;
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        goto out;
    }
    /* validate everything first; a repeated id keeps its last occurrence */
    for (size_t i = 0; i < n; i++) {
        const Quiver__V1__PointStruct *p = req->points[i];
        uint8_t key[QV_KEY_MAX], klen;
        char what[48];
        snprintf(what, sizeof(what), "point %zu", i);
        if ((rc = qv__key_from_id(p->id, key, &klen, err)) != 0) {
            char msg[QV_STATUS_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            *err = qv_status_make(rc, "%s: %s", what, msg);
            goto out;
        }
        if (p->vector == NULL) {
            rc = QV_EINVAL;
            *err = qv_status_make(QV_EINVAL, "%s: vector is missing", what);
            goto out;
        }
        void **slot = qv__hmap_get(&seen, key, klen);
        size_t at;
        if (slot != NULL) {
            at = (size_t)(uintptr_t)*slot - 1;
        } else {
            at = m++;
            if (qv__hmap_put(&seen, key, klen, (void *)(uintptr_t)(at + 1), NULL) != 0) {
                rc = QV_ERESOURCE;
                *err = qv_status_make(QV_ERESOURCE, "out of memory");
                goto out;
            }
        }
        if ((rc = qv__coll_check_vector(c, p->vector->data, p->vector->n_data,
                                        r.vecs + at * (size_t)c->dim, what, err)) != 0)
            goto out;
        if ((rc = qv__payload_validate(p->payload, err)) != 0) {
            char msg[QV_STATUS_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            *err = qv_status_make(rc, "%s: %s", what, msg);
            goto out;
        }
        memcpy(r.keys[at], key, klen);
        r.klens[at] = klen;
        free(r.pl[at]);
        r.pl[at] = NULL;
        r.pl_lens[at] = 0;
        if (p->payload != NULL && p->payload->n_fields > 0) {
            size_t pl = quiver__v1__payload__get_packed_size(p->payload);
            r.pl[at] = malloc(pl);
            if (r.pl[at] == NULL) {
                rc = QV_ERESOURCE;
                *err = qv_status_make(QV_ERESOURCE, "out of memory");
                goto out;
            }
            quiver__v1__payload__pack(p->payload, r.pl[at]);
            r.pl_lens[at] = (uint32_t)pl;
        }
        src[at] = i;
    }
    r.n = m;
    rc = submit(c, &r, deadline_ms, err);
    if (rc == 0) {
        out->index = r.index;
        out->points = m;
        out->applied = r.wait;
    }
out:
    r.n = m; /* so that a batch rejected midway frees the payloads packed before the bad point */
    qv__hmap_free(&seen);
    free(src);
    wreq_clear(&r);
    return rc;
}

int qv__coll_delete(qv_coll *c, Quiver__V1__PointId **ids, size_t nids,
                    const Quiver__V1__Filter *filter, const Quiver__V1__Filter *text_filter,
                    bool wait, int64_t deadline_ms, qv_write_out *out, qv_status *err)
{
    qv_wreq r = {.wait = wait};
    int rc = 0;
    if (filter != NULL || text_filter != NULL) {
        r.kind = WK_DELETE_FILTER;
        r.filter = filter;
        r.text_filter = text_filter;
    } else {
        if (nids > QV_MAX_BATCH) {
            *err = qv_status_make(QV_ERESOURCE, "delete of %zu ids (at most %d per request)", nids,
                                  QV_MAX_BATCH);
            return QV_ERESOURCE;
        }
        r.kind = WK_DELETE;
        r.keys = malloc((nids ? nids : 1) * QV_KEY_MAX);
        r.klens = malloc(nids ? nids : 1);
        if (r.keys == NULL || r.klens == NULL) {
            wreq_clear(&r);
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
            return QV_ERESOURCE;
        }
        for (size_t i = 0; i < nids; i++) {
            if ((rc = qv__key_from_id(ids[i], r.keys[i], &r.klens[i], err)) != 0) {
                wreq_clear(&r);
                return rc;
            }
        }
        r.n = nids;
    }
    rc = submit(c, &r, deadline_ms, err);
    if (rc == 0) {
        out->index = r.index;
        out->points = r.points;
        out->applied = wait;
    }
    wreq_clear(&r);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Snapshots and recovery
 * ------------------------------------------------------------------------------------------- */

static void snap_path(const qv_coll *c, char *buf, size_t len)
{
    snprintf(buf, len, "%s/%016llx.qvi", c->eng->snap_dir, (unsigned long long)c->uid);
}

static char *meta_get(qv_engine *e, const uint8_t *k, size_t kl, size_t *vl)
{
    char *rerr = NULL;
    char *v = rocksdb_get_cf(e->db, e->ro, e->cf[CF_META], (const char *)k, kl, vl, &rerr);
    rocksdb_free(rerr);
    return v;
}

/* Deletes the collection's log entries up to the state's log position; snap_mu held. Not synced:
 * the state writes it relies on precede it in RocksDB's write-ahead log. */
static int log_truncate(qv_coll *c, qv_status *err)
{
    qv_engine *e = c->eng;
    uint8_t lo[16], hi[16];
    log_key(c, 0, lo);
    log_key(c, c->state_index + 1, hi);
    char *rerr = NULL;
    rocksdb_delete_range_cf(e->db, e->wo_state, e->cf[CF_LOG], (const char *)lo, 16,
                            (const char *)hi, 16, &rerr);
    if (rerr == NULL)
        return 0;
    int rc = rdb_fail(err, "truncating the log", rerr);
    qv_log(QV_LOG_WARN, MOD, "collection %s: %s", c->name, err->msg);
    return rc;
}

/* Saves the index at the state's log position, records it, and drops the log up to it. */
static int coll_snapshot(qv_coll *c, qv_status *err)
{
    qv_engine *e = c->eng;
    pthread_mutex_lock(&c->snap_mu);
    if (atomic_load(&c->dropped) || c->state_index == c->snap_index) {
        pthread_mutex_unlock(&c->snap_mu);
        return 0;
    }
    if (c->pending != NULL) {
        /* Still training: there is no index file to write, and without one a start rebuilds the
         * index from the store (it never reads the applied part of the log), so the applied log
         * can go. */
        int rc = log_truncate(c, err);
        if (rc == 0) {
            c->snap_index = c->state_index;
            c->changed_since_snap = 0;
            c->last_snap_ms = qv_now_ms();
            qv_log(QV_LOG_INFO, MOD,
                   "collection %s: still training; log truncated at index %llu (no snapshot)",
                   c->name, (unsigned long long)c->snap_index);
        }
        pthread_mutex_unlock(&c->snap_mu);
        return rc;
    }
    uint64_t t0 = qv_now_ns();
    qv_index_stats st;
    qv_index_stats_get(c->index, &st);
    int rc = 0;
    if (st.deleted > 0 && st.deleted * 10 > st.count)
        rc = qv_index_compact(c->index, err);
    char path[4200];
    snap_path(c, path, sizeof(path));
    if (rc == 0)
        rc = qv_index_save(c->index, path, err);
    if (rc == 0) {
        uint8_t mk[9], mv[8];
        meta_key('s', c, mk);
        put_le64(mv, c->state_index);
        size_t rl;
        uint8_t *rec = crc_record(mv, sizeof(mv), &rl);
        char *rerr = NULL;
        if (rec == NULL) {
            rc = QV_ERESOURCE;
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
        } else {
            rocksdb_put_cf(e->db, e->wo_sync, e->cf[CF_META], (const char *)mk, sizeof(mk),
                           (const char *)rec, rl, &rerr);
            free(rec);
            if (rerr != NULL)
                rc = rdb_fail(err, "recording a snapshot", rerr);
        }
    }
    if (rc == 0) {
        /* the log up to the snapshot is no longer needed (if this fails, the next one takes it) */
        qv_status terr;
        (void)log_truncate(c, &terr);
        c->snap_index = c->state_index;
        c->changed_since_snap = 0;
        c->last_snap_ms = qv_now_ms();
        qv_log(QV_LOG_INFO, MOD,
               "collection %s: index snapshot at log index %llu (%llu points) in %.1f ms", c->name,
               (unsigned long long)c->snap_index, (unsigned long long)st.count,
               (double)(qv_now_ns() - t0) / 1e6);
        if (e->h_snapshot != NULL)
            qv_histogram_observe(e->h_snapshot, (double)(qv_now_ns() - t0) / 1e9);
    } else {
        qv_log(QV_LOG_WARN, MOD, "collection %s: snapshot failed: %s", c->name, err->msg);
    }
    pthread_mutex_unlock(&c->snap_mu);
    return rc;
}

/* Adds every point of the state to a fresh index (training it first when needed). */
static int rebuild_index(qv_coll *c, size_t npoints, qv_status *err)
{
    qv_index_free(c->index);
    c->index = NULL;
    qv_index_free(c->pending);
    c->pending = NULL;
    int rc = new_index(c, &c->index, err);
    if (rc != 0)
        return rc;
    qv_index *target = c->index;
    bool train = false;
    if (c->needs_training) {
        if (npoints < c->train_size) {
            if ((rc = new_pending(c, err)) != 0)
                return rc;
            target = c->pending;
        } else {
            train = true;
        }
    }
    const size_t chunk = 8192;
    size_t cap = train ? (c->train_size > chunk ? c->train_size : chunk) : chunk;
    float *vecs = malloc(cap * (size_t)c->dim * sizeof(float));
    uint64_t *ids = malloc(cap * sizeof(uint64_t));
    if (vecs == NULL || ids == NULL) {
        free(vecs);
        free(ids);
        *err = qv_status_make(QV_ERESOURCE, "out of memory rebuilding the index");
        return QV_ERESOURCE;
    }
    rocksdb_iterator_t *it =
        rocksdb_create_iterator_cf(c->eng->db, c->eng->ro, c->eng->cf[CF_VECTORS]);
    size_t n = 0, total = 0;
    rocksdb_iter_seek(it, (const char *)c->uidk, 8);
    for (;; rocksdb_iter_next(it)) {
        bool more = rocksdb_iter_valid(it);
        size_t kl = 0, vl;
        const char *k = more ? rocksdb_iter_key(it, &kl) : NULL;
        more = more && kl >= 8 && memcmp(k, c->uidk, 8) == 0;
        if (more) {
            uint32_t iid;
            const char *v = rocksdb_iter_value(it, &vl);
            if (qv__vec_value_decode(c, v, vl, &iid, NULL, vecs + n * (size_t)c->dim) == 0)
                ids[n++] = iid;
        }
        if (n == cap || (!more && n > 0)) {
            if (train) {
                rc = qv_index_train(c->index, vecs, n, err);
                train = false;
                if (rc != 0)
                    break;
            }
            rc = qv_index_add(target, ids, vecs, n, err);
            if (rc != 0)
                break;
            total += n;
            n = 0;
        }
        if (!more)
            break;
    }
    rocksdb_iter_destroy(it);
    free(vecs);
    free(ids);
    if (rc == 0)
        qv_log(QV_LOG_INFO, MOD, "collection %s: index rebuilt from the store (%zu points)",
               c->name, total);
    return rc;
}

/* Loads the state into memory, the index from its snapshot (or the store), and applies the log
 * entries that were committed but not applied. */
static int coll_recover(qv_coll *c, qv_status *err)
{
    qv_engine *e = c->eng;
    uint64_t t0 = qv_now_ms();
    uint8_t mk[9];
    size_t vl = 0;
    uint64_t applied = 0, snap = 0;
    meta_key('a', c, mk);
    char *v = meta_get(e, mk, sizeof(mk), &vl);
    if (v != NULL) {
        if (vl != 16 || !crc_ok(v, vl)) {
            rocksdb_free(v);
            *err = qv_status_make(QV_ECORRUPT,
                                  "collection %s: applied-index record fails its "
                                  "checksum",
                                  c->name);
            return QV_ECORRUPT;
        }
        applied = get_le64((const uint8_t *)v + 4);
        c->next_iid = get_le32((const uint8_t *)v + 12);
        rocksdb_free(v);
    }
    meta_key('s', c, mk);
    v = meta_get(e, mk, sizeof(mk), &vl);
    if (v != NULL) {
        if (vl == 12 && crc_ok(v, vl))
            snap = get_le64((const uint8_t *)v + 4);
        else
            qv_log(QV_LOG_WARN, MOD,
                   "collection %s: snapshot record fails its checksum; "
                   "rebuilding the index from the store",
                   c->name);
        rocksdb_free(v);
    }

    /* state -> keymap, key table, live set, payload index */
    size_t npoints = 0;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_VECTORS]);
    int rc = 0;
    for (rocksdb_iter_seek(it, (const char *)c->uidk, 8); rocksdb_iter_valid(it) && rc == 0;
         rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 8 || memcmp(k, c->uidk, 8) != 0)
            break;
        const char *val = rocksdb_iter_value(it, &vl);
        uint32_t iid;
        uint64_t ver = 0;
        if ((kl != 8 + 9 && kl != 8 + 17) ||
            qv__vec_value_decode(c, val, vl, &iid, &ver, NULL) != 0) {
            rc = QV_ECORRUPT;
            *err = qv_status_make(QV_ECORRUPT, "collection %s: malformed vector record", c->name);
            break;
        }
        if (qv__hmap_put(&c->keymap, k + 8, kl - 8, (void *)(uintptr_t)(iid + 1), NULL) != 0 ||
            iid_reserve(c, iid) != 0) {
            rc = QV_ERESOURCE;
            *err = qv_status_make(QV_ERESOURCE, "out of memory loading collection %s", c->name);
            break;
        }
        memcpy(c->iid_keys[iid], k + 8, kl - 8);
        c->iid_klen[iid] = (uint8_t)(kl - 8);
        c->iid_ver[iid] = ver;
        roaring_bitmap_add(c->live, iid);
        if (iid + 1 > c->next_iid)
            c->next_iid = iid + 1;
        npoints++;
    }
    rocksdb_iter_destroy(it);
    if (rc != 0)
        return rc;
    it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_PAYLOAD]);
    for (rocksdb_iter_seek(it, (const char *)c->uidk, 8); rocksdb_iter_valid(it) && rc == 0;
         rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 8 || memcmp(k, c->uidk, 8) != 0)
            break;
        void **slot = qv__hmap_get(&c->keymap, k + 8, kl - 8);
        if (slot == NULL)
            continue; /* payload without vector: cannot happen (one batch writes both) */
        const char *val = rocksdb_iter_value(it, &vl);
        Quiver__V1__Payload *p = quiver__v1__payload__unpack(NULL, vl, (const uint8_t *)val);
        if (p == NULL) {
            rc = QV_ECORRUPT;
            *err = qv_status_make(QV_ECORRUPT, "collection %s: malformed payload record", c->name);
            break;
        }
        rc = qv__pidx_add(c->pidx, (uint32_t)((uintptr_t)*slot - 1), p);
        quiver__v1__payload__free_unpacked(p, NULL);
        if (rc != 0)
            *err = qv_status_make(QV_ERESOURCE, "out of memory loading collection %s", c->name);
    }
    rocksdb_iter_destroy(it);
    if (rc != 0)
        return rc;

    /* the index: snapshot + log replay, or a rebuild */
    bool have_index = false;
    char path[4200];
    snap_path(c, path, sizeof(path));
    if (snap > 0 && snap <= applied) {
        qv_index *loaded = NULL;
        qv_status lst;
        if (qv_index_load(path, 0, &loaded, &lst) != 0) {
            qv_log(QV_LOG_WARN, MOD,
                   "collection %s: index snapshot %s is unusable (%s); "
                   "rebuilding the index from the store",
                   c->name, path, lst.msg);
        } else {
            qv_index_free(c->index);
            c->index = loaded;
            qv_index_free(c->pending);
            c->pending = NULL;
            have_index = true;
            /* replay (snap, applied] into the index */
            uint8_t lo[16];
            log_key(c, snap + 1, lo);
            it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_LOG]);
            uint64_t expect = snap + 1;
            for (rocksdb_iter_seek(it, (const char *)lo, 16); rocksdb_iter_valid(it);
                 rocksdb_iter_next(it)) {
                size_t kl;
                const char *k = rocksdb_iter_key(it, &kl);
                if (kl != 16 || memcmp(k, c->uidk, 8) != 0)
                    break;
                uint64_t idx = get_be64((const uint8_t *)k + 8);
                if (idx > applied)
                    break;
                qv_entry *en = NULL;
                const char *val = rocksdb_iter_value(it, &vl);
                qv_status est;
                if (idx != expect || entry_decode(val, vl, c->dim, &en, &est) != 0 ||
                    apply_entry(c, en, false, true, &est) != 0) {
                    qv_log(QV_LOG_WARN, MOD,
                           "collection %s: cannot replay log index %llu onto "
                           "the snapshot; rebuilding the index from the store",
                           c->name, (unsigned long long)idx);
                    have_index = false;
                    entry_free(en);
                    break;
                }
                entry_free(en);
                expect++;
            }
            rocksdb_iter_destroy(it);
            if (have_index && expect != applied + 1) {
                qv_log(QV_LOG_WARN, MOD,
                       "collection %s: log entries %llu..%llu are missing; "
                       "rebuilding the index from the store",
                       c->name, (unsigned long long)expect, (unsigned long long)applied);
                have_index = false;
            }
            if (have_index) {
                qv_index_stats st;
                qv_index_stats_get(c->index, &st);
                if (st.count != npoints) {
                    qv_log(QV_LOG_WARN, MOD,
                           "collection %s: snapshot + log hold %llu points, "
                           "the store %zu; rebuilding the index from the store",
                           c->name, (unsigned long long)st.count, npoints);
                    have_index = false;
                }
            }
            if (have_index)
                c->snap_index = snap;
        }
    }
    if (!have_index && (rc = rebuild_index(c, npoints, err)) != 0)
        return rc;
    c->state_index = applied;
    c->state_next_iid = c->next_iid;

    /* entries committed but not applied */
    uint8_t lo[16];
    log_key(c, applied + 1, lo);
    it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_LOG]);
    uint64_t last = applied, replayed = 0;
    for (rocksdb_iter_seek(it, (const char *)lo, 16); rocksdb_iter_valid(it) && rc == 0;
         rocksdb_iter_next(it)) {
        size_t kl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl != 16 || memcmp(k, c->uidk, 8) != 0)
            break;
        uint64_t idx = get_be64((const uint8_t *)k + 8);
        const char *val = rocksdb_iter_value(it, &vl);
        qv_entry *en = NULL;
        if (idx != last + 1) {
            rc = QV_ECORRUPT;
            *err = qv_status_make(QV_ECORRUPT, "collection %s: log jumps from index %llu to %llu",
                                  c->name, (unsigned long long)last, (unsigned long long)idx);
            break;
        }
        if ((rc = entry_decode(val, vl, c->dim, &en, err)) != 0) {
            char msg[QV_STATUS_MSG_MAX];
            snprintf(msg, sizeof(msg), "%s", err->msg);
            *err = qv_status_make(rc, "collection %s: log index %llu: %s", c->name,
                                  (unsigned long long)idx, msg);
            break;
        }
        en->index = idx;
        for (size_t i = 0; i < en->n && rc == 0; i++) {
            if (en->kind == WK_UPSERT) {
                rc = qv__hmap_put(&c->keymap, en->keys[i], en->klens[i],
                                  (void *)(uintptr_t)(en->iids[i] + 1), NULL) == 0
                         ? 0
                         : QV_ERESOURCE;
                if (en->iids[i] + 1 > c->next_iid)
                    c->next_iid = en->iids[i] + 1;
            } else {
                qv__hmap_del(&c->keymap, en->keys[i], en->klens[i]);
            }
        }
        if (rc == 0)
            rc = apply_entry(c, en, true, false, err);
        entry_free(en);
        last = idx;
        replayed++;
        c->state_index = idx;
        c->changed_since_snap += 1;
    }
    rocksdb_iter_destroy(it);
    if (rc != 0)
        return rc;
    c->last_index = c->applied_index = last;
    qv_log(QV_LOG_INFO, MOD,
           "collection %s: %zu points, log index %llu (%llu entries replayed), "
           "ready in %llu ms",
           c->name, (size_t)roaring_bitmap_get_cardinality(c->live), (unsigned long long)last,
           (unsigned long long)replayed, (unsigned long long)(qv_now_ms() - t0));
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Background: snapshots and the interval fsync
 * ------------------------------------------------------------------------------------------- */

static qv_coll **registry_refs(qv_engine *e, size_t *n)
{
    pthread_mutex_lock(&e->mu);
    qv_coll **v = malloc((e->ncolls ? e->ncolls : 1) * sizeof(*v));
    *n = 0;
    if (v != NULL)
        for (size_t i = 0; i < e->ncolls; i++) {
            atomic_fetch_add(&e->colls[i]->refs, 1);
            v[(*n)++] = e->colls[i];
        }
    pthread_mutex_unlock(&e->mu);
    return v;
}

/* Waits on bg_cv until `wait_ms` pass or the engine stops; bg_mu held. Returns false to stop. */
static bool bg_wait(qv_engine *e, uint64_t wait_ms)
{
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    ts.tv_sec += (time_t)(wait_ms / 1000);
    ts.tv_nsec += (long)(wait_ms % 1000) * 1000000;
    if (ts.tv_nsec >= 1000000000) {
        ts.tv_sec++;
        ts.tv_nsec -= 1000000000;
    }
    if (!e->bg_stop)
        pthread_cond_timedwait(&e->bg_cv, &e->bg_mu, &ts);
    return !e->bg_stop;
}

/* --fsync interval: one fsync of RocksDB's write-ahead log (which holds the log family) every
 * --fsync-interval-ms when something was written since the last one. Its own thread, so a long
 * snapshot never stretches the window a power loss can take. */
static void *syncer_main(void *arg)
{
    qv_engine *e = arg;
    uint64_t synced_writes = 0;
    uint32_t every = e->opts.fsync_interval_ms ? e->opts.fsync_interval_ms : 100;
    pthread_mutex_lock(&e->bg_mu);
    while (bg_wait(e, every)) {
        pthread_mutex_unlock(&e->bg_mu);
        uint64_t writes = atomic_load(&e->log_writes);
        if (writes != synced_writes) {
            synced_writes = writes;
            char *rerr = NULL;
            uint64_t t0 = qv_now_ns();
            rocksdb_flush_wal(e->db, 1, &rerr);
            if (rerr != NULL) {
                qv_log(QV_LOG_ERROR, MOD, "background fsync of the log failed: %s", rerr);
                rocksdb_free(rerr);
            } else {
                if (e->c_fsyncs != NULL)
                    qv_counter_add(e->c_fsyncs, 1);
                if (e->h_fsync != NULL)
                    qv_histogram_observe(e->h_fsync, (double)(qv_now_ns() - t0) / 1e9);
            }
        }
        pthread_mutex_lock(&e->bg_mu);
    }
    pthread_mutex_unlock(&e->bg_mu);
    return NULL;
}

/* Snapshots: every second, each collection whose changes since its last snapshot reach
 * --snapshot-points, or that changed and whose last snapshot is --snapshot-interval-s old. */
static void *bg_main(void *arg)
{
    qv_engine *e = arg;
    uint64_t snap_every = e->opts.snapshot_interval_ms ? e->opts.snapshot_interval_ms : 300000;
    uint64_t snap_points = e->opts.snapshot_points ? e->opts.snapshot_points : 100000;
    pthread_mutex_lock(&e->bg_mu);
    while (bg_wait(e, 1000)) {
        pthread_mutex_unlock(&e->bg_mu);
        uint64_t now = qv_now_ms();
        size_t n = 0;
        qv_coll **cs = registry_refs(e, &n);
        for (size_t i = 0; cs != NULL && i < n; i++) {
            qv_coll *c = cs[i];
            pthread_mutex_lock(&c->snap_mu);
            bool due = c->changed_since_snap >= snap_points ||
                       (c->changed_since_snap > 0 && now - c->last_snap_ms >= snap_every);
            pthread_mutex_unlock(&c->snap_mu);
            if (due && !atomic_load(&c->dropped)) {
                qv_status st;
                (void)coll_snapshot(c, &st);
            }
            qv__coll_put(c);
        }
        free(cs);
        pthread_mutex_lock(&e->bg_mu);
    }
    pthread_mutex_unlock(&e->bg_mu);
    return NULL;
}

/* ---------------------------------------------------------------------------------------------
 * Engine
 * ------------------------------------------------------------------------------------------- */

static const char *const cf_names[CF_COUNT] = {"default", "meta", "log", "vectors", "payload"};

static int mkdir_p(const char *path, qv_status *err)
{
    if (mkdir(path, 0755) != 0 && errno != EEXIST) {
        *err = qv_status_make(qv_from_errno(errno), "cannot create %s: %s", path, strerror(errno));
        return err->code;
    }
    return 0;
}

/* Keeps the registry sorted by name; e->mu held. */
static int registry_add(qv_engine *e, qv_coll *c)
{
    if (e->ncolls == e->capcolls) {
        size_t cap = e->capcolls ? e->capcolls * 2 : 8;
        qv_coll **v = realloc(e->colls, cap * sizeof(*v));
        if (v == NULL)
            return QV_ERESOURCE;
        e->colls = v;
        e->capcolls = cap;
    }
    size_t i = e->ncolls;
    while (i > 0 && strcmp(e->colls[i - 1]->name, c->name) > 0) {
        e->colls[i] = e->colls[i - 1];
        i--;
    }
    e->colls[i] = c;
    e->ncolls++;
    return 0;
}

static qv_coll *registry_find(qv_engine *e, const char *name, size_t *pos)
{
    for (size_t i = 0; i < e->ncolls; i++)
        if (strcmp(e->colls[i]->name, name) == 0) {
            if (pos != NULL)
                *pos = i;
            return e->colls[i];
        }
    return NULL;
}

/* Stops and joins the snapshot and fsync threads (whichever started). */
static void bg_threads_stop(qv_engine *e)
{
    pthread_mutex_lock(&e->bg_mu);
    e->bg_stop = true;
    pthread_cond_broadcast(&e->bg_cv);
    pthread_mutex_unlock(&e->bg_mu);
    if (e->bg_started)
        pthread_join(e->bg, NULL);
    if (e->syncer_started)
        pthread_join(e->syncer, NULL);
    e->bg_started = e->syncer_started = false;
}

static void engine_free(qv_engine *e)
{
    if (e->db != NULL) {
        for (int i = 0; i < CF_COUNT; i++)
            if (e->cf[i] != NULL)
                rocksdb_column_family_handle_destroy(e->cf[i]);
        rocksdb_close(e->db);
    }
    if (e->dbopts != NULL)
        rocksdb_options_destroy(e->dbopts);
    if (e->table != NULL)
        rocksdb_block_based_options_destroy(e->table);
    if (e->cache != NULL)
        rocksdb_cache_destroy(e->cache);
    if (e->wo_log != NULL)
        rocksdb_writeoptions_destroy(e->wo_log);
    if (e->wo_state != NULL)
        rocksdb_writeoptions_destroy(e->wo_state);
    if (e->wo_sync != NULL)
        rocksdb_writeoptions_destroy(e->wo_sync);
    if (e->ro != NULL)
        rocksdb_readoptions_destroy(e->ro);
    pthread_mutex_destroy(&e->mu);
    pthread_mutex_destroy(&e->bg_mu);
    pthread_cond_destroy(&e->bg_cv);
    free(e->colls);
    free(e->dir);
    free(e->db_path);
    free(e->snap_dir);
    free(e);
}

static bool uid_known(qv_engine *e, uint64_t uid)
{
    for (size_t i = 0; i < e->ncolls; i++)
        if (e->colls[i]->uid == uid)
            return true;
    return false;
}

/* Removes what a drop interrupted by a crash left behind: records of uids that no collection
 * has any more (its definition is deleted first) and snapshot files of such uids. */
static void gc_orphans(qv_engine *e)
{
    for (const char *tag = "as"; *tag != '\0'; tag++) {
        uint64_t orphans[64];
        size_t n = 0;
        rocksdb_iterator_t *it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_META]);
        for (rocksdb_iter_seek(it, tag, 1); rocksdb_iter_valid(it) && n < 64;
             rocksdb_iter_next(it)) {
            size_t kl;
            const char *k = rocksdb_iter_key(it, &kl);
            if (kl != 9 || k[0] != *tag)
                break;
            uint64_t uid = get_be64((const uint8_t *)k + 1);
            if (!uid_known(e, uid))
                orphans[n++] = uid;
        }
        rocksdb_iter_destroy(it);
        for (size_t i = 0; i < n; i++) {
            rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
            uint8_t mk[9], lo[8], hi[8];
            mk[0] = (uint8_t)*tag;
            put_be64(mk + 1, orphans[i]);
            rocksdb_writebatch_delete_cf(wb, e->cf[CF_META], (const char *)mk, 9);
            put_be64(lo, orphans[i]);
            put_be64(hi, orphans[i] + 1);
            for (int cf = CF_LOG; cf <= CF_PAYLOAD; cf++)
                rocksdb_writebatch_delete_range_cf(wb, e->cf[cf], (const char *)lo, 8,
                                                   (const char *)hi, 8);
            char *rerr = NULL;
            rocksdb_write(e->db, e->wo_sync, wb, &rerr);
            rocksdb_writebatch_destroy(wb);
            rocksdb_free(rerr);
            qv_log(QV_LOG_INFO, MOD, "removed the records of a dropped collection (uid %016llx)",
                   (unsigned long long)orphans[i]);
        }
    }
    DIR *d = opendir(e->snap_dir);
    if (d == NULL)
        return;
    for (struct dirent *de; (de = readdir(d)) != NULL;) {
        unsigned long long uid;
        char tail[8];
        if (sscanf(de->d_name, "%16llx.%7s", &uid, tail) == 2 && strcmp(tail, "qvi") == 0 &&
            !uid_known(e, uid)) {
            char path[4200];
            snprintf(path, sizeof(path), "%s/%s", e->snap_dir, de->d_name);
            if (unlink(path) == 0)
                qv_log(QV_LOG_INFO, MOD, "removed %s (no collection has uid %016llx)", path, uid);
        }
    }
    closedir(d);
}

int qv__engine_open(const char *data_dir, const qv_engine_opts *opts, qv_engine **out,
                    qv_status *err)
{
    qv_engine *e = calloc(1, sizeof(*e));
    if (e == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    pthread_mutex_init(&e->mu, NULL);
    pthread_mutex_init(&e->bg_mu, NULL);
    pthread_cond_init(&e->bg_cv, NULL);
    e->opts = *opts;
    if (e->opts.max_replicas == 0)
        e->opts.max_replicas = 1;
    snprintf(e->node_id, sizeof(e->node_id), "%s", opts->node_id ? opts->node_id : "");
    e->opts.node_id = e->node_id;
    if (asprintf(&e->db_path, "%s/db", data_dir) < 0 ||
        asprintf(&e->snap_dir, "%s/snapshots", data_dir) < 0 ||
        (e->dir = strdup(data_dir)) == NULL) {
        engine_free(e);
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    int rc = mkdir_p(e->snap_dir, err);
    if (rc != 0) {
        engine_free(e);
        return rc;
    }
    e->dbopts = rocksdb_options_create();
    rocksdb_options_set_create_if_missing(e->dbopts, 1);
    rocksdb_options_set_create_missing_column_families(e->dbopts, 1);
    rocksdb_options_set_paranoid_checks(e->dbopts, 1);
    rocksdb_options_set_wal_recovery_mode(e->dbopts, 2); /* point in time: stop at a torn tail */
    rocksdb_options_increase_parallelism(e->dbopts, 2);
    rocksdb_options_set_max_background_jobs(e->dbopts, 2);
    rocksdb_options_set_compression(e->dbopts, rocksdb_lz4_compression);
    rocksdb_options_set_info_log_level(e->dbopts, 3); /* errors only in RocksDB's LOG */
    rocksdb_options_set_keep_log_file_num(e->dbopts, 3);
    e->cache = rocksdb_cache_create_lru(opts->cache_bytes ? opts->cache_bytes : (256u << 20));
    e->table = rocksdb_block_based_options_create();
    rocksdb_block_based_options_set_block_cache(e->table, e->cache);
    rocksdb_options_set_block_based_table_factory(e->dbopts, e->table);

    const rocksdb_options_t *cfopts[CF_COUNT];
    for (int i = 0; i < CF_COUNT; i++)
        cfopts[i] = e->dbopts;
    char *rerr = NULL;
    e->db = rocksdb_open_column_families(e->dbopts, e->db_path, CF_COUNT, cf_names, cfopts, e->cf,
                                         &rerr);
    if (e->db == NULL) {
        *err = qv_status_make(QV_EUNAVAIL, "cannot open the store %s: %s", e->db_path,
                              rerr ? rerr : "?");
        rocksdb_free(rerr);
        engine_free(e);
        return QV_EUNAVAIL;
    }
    e->wo_log = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(e->wo_log, opts->fsync == QV_FSYNC_SYNC);
    e->wo_state = rocksdb_writeoptions_create();
    e->wo_sync = rocksdb_writeoptions_create();
    rocksdb_writeoptions_set_sync(e->wo_sync, 1);
    e->ro = rocksdb_readoptions_create();
    rocksdb_readoptions_set_verify_checksums(e->ro, 1);
    if (opts->metrics != NULL) {
        e->h_log_write = qv_metrics_histogram(opts->metrics, "quiver_log_write_seconds",
                                              "Time to write one group of log entries (with its "
                                              "fsync under --fsync sync)",
                                              "");
        e->h_apply = qv_metrics_histogram(opts->metrics, "quiver_apply_seconds",
                                          "Time to apply one log entry to the store and index", "");
        e->h_snapshot = qv_metrics_histogram(opts->metrics, "quiver_snapshot_seconds",
                                             "Time to write one index snapshot", "");
        e->h_fsync = qv_metrics_histogram(opts->metrics, "quiver_log_fsync_seconds",
                                          "One background fsync of the log (--fsync interval; "
                                          "under sync the fsync is part of "
                                          "quiver_log_write_seconds)",
                                          "");
        e->c_fsyncs = qv_metrics_counter(opts->metrics, "quiver_log_fsyncs_total",
                                         "fsyncs of the write-ahead log", "");
    }

    /* every collection */
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_META]);
    for (rocksdb_iter_seek(it, "c", 1); rocksdb_iter_valid(it) && rc == 0; rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 1 || k[0] != 'c')
            break;
        const char *v = rocksdb_iter_value(it, &vl);
        if (!crc_ok(v, vl)) {
            rc = QV_ECORRUPT;
            *err = qv_status_make(QV_ECORRUPT, "collection record '%.*s' fails its checksum",
                                  (int)(kl - 1 > 64 ? 64 : kl - 1), k + 1);
            break;
        }
        qv_coll *c = NULL;
        rc = coll_new(e, (const uint8_t *)v + 4, vl - 4, &c, err);
        if (rc == 0)
            rc = coll_recover(c, err);
        if (rc == 0)
            rc = coll_start_threads(c, err);
        if (rc == 0) {
            pthread_mutex_lock(&e->mu);
            rc = registry_add(e, c);
            pthread_mutex_unlock(&e->mu);
            if (rc != 0)
                *err = qv_status_make(QV_ERESOURCE, "out of memory");
        }
        if (rc != 0 && c != NULL) {
            coll_stop_threads(c);
            qv__coll_put(c);
        }
    }
    rocksdb_iter_destroy(it);
    if (rc == 0)
        gc_orphans(e);
    if (rc == 0 && pthread_create(&e->bg, NULL, bg_main, e) != 0) {
        rc = QV_ERESOURCE;
        *err = qv_status_make(QV_ERESOURCE, "cannot start the storage background thread");
    }
    if (rc == 0)
        e->bg_started = true;
    if (rc == 0 && e->opts.fsync == QV_FSYNC_INTERVAL) {
        if (pthread_create(&e->syncer, NULL, syncer_main, e) != 0) {
            rc = QV_ERESOURCE;
            *err = qv_status_make(QV_ERESOURCE, "cannot start the log fsync thread");
        } else {
            e->syncer_started = true;
        }
    }
    if (rc != 0) {
        bg_threads_stop(e);
        for (size_t i = 0; i < e->ncolls; i++) {
            coll_stop_threads(e->colls[i]);
            qv__coll_put(e->colls[i]);
        }
        e->ncolls = 0;
        engine_free(e);
        return rc;
    }
    atomic_store(&e->ready, true);
    qv_log(QV_LOG_INFO, MOD, "store %s open: %zu collections, fsync=%s", e->db_path, e->ncolls,
           qv__fsync_policy_name(e->opts.fsync));
    *out = e;
    return 0;
}

void qv__engine_close(qv_engine *e)
{
    if (e == NULL)
        return;
    atomic_store(&e->ready, false);
    bg_threads_stop(e);
    for (size_t i = 0; i < e->ncolls; i++) {
        qv_coll *c = e->colls[i];
        coll_stop_threads(c);
        qv_status st;
        if (!c->failed) /* its index may hold part of a failed entry: rebuilt at the next start */
            (void)coll_snapshot(c, &st);
        qv__coll_put(c);
    }
    e->ncolls = 0;
    char *rerr = NULL;
    rocksdb_flush_wal(e->db, 1, &rerr);
    rocksdb_free(rerr);
    engine_free(e);
}

bool qv__engine_ready(qv_engine *e)
{
    return e != NULL && atomic_load(&e->ready);
}

size_t qv__engine_collections(qv_engine *e)
{
    pthread_mutex_lock(&e->mu);
    size_t n = e->ncolls;
    pthread_mutex_unlock(&e->mu);
    return n;
}

int qv__engine_get(qv_engine *e, const char *name, qv_coll **out, qv_status *err)
{
    pthread_mutex_lock(&e->mu);
    qv_coll *c = registry_find(e, name, NULL);
    if (c != NULL)
        atomic_fetch_add(&c->refs, 1);
    pthread_mutex_unlock(&e->mu);
    if (c == NULL) {
        *err = qv_status_make(QV_ENOTFOUND, "collection '%.80s' does not exist", name);
        return QV_ENOTFOUND;
    }
    *out = c;
    return 0;
}

int qv__engine_create(qv_engine *e, const Quiver__V1__CreateCollectionRequest *req, qv_coll **out,
                      bool *created, qv_status *err)
{
    cfg_buf b;
    int rc = resolve_config(e, req, &b, err);
    if (rc != 0)
        return rc;
    pthread_mutex_lock(&e->mu);
    qv_coll *c = registry_find(e, b.name, NULL);
    if (c != NULL) {
        if (req->if_not_exists && same_config(c->cfg, &b.cfg)) {
            atomic_fetch_add(&c->refs, 1);
            pthread_mutex_unlock(&e->mu);
            *created = false;
            *out = c;
            return 0;
        }
        pthread_mutex_unlock(&e->mu);
        *err = qv_status_make(QV_EEXIST, "collection '%s' already exists%s", b.name,
                              req->if_not_exists ? " with a different configuration" : "");
        return QV_EEXIST;
    }
    uint64_t uid = 0;
    for (;;) {
        if (qv_random_bytes(&uid, sizeof(uid)) != 0)
            uid = qv_now_ns();
        uid &= 0x7fffffffffffffffull; /* uid + 1 stays a valid range end */
        bool clash = uid == 0;
        for (size_t i = 0; i < e->ncolls && !clash; i++)
            clash = e->colls[i]->uid == uid;
        if (!clash)
            break;
    }
    b.cfg.uid = uid;
    b.cfg.created_at_unix_ms = qv_wall_ms();
    size_t len = quiver__v1__collection_config__get_packed_size(&b.cfg);
    uint8_t *buf = malloc(len + 1);
    size_t rl = 0;
    uint8_t *rec = NULL;
    if (buf != NULL) {
        quiver__v1__collection_config__pack(&b.cfg, buf);
        rec = crc_record(buf, len, &rl);
    }
    if (rec == NULL) {
        free(buf);
        pthread_mutex_unlock(&e->mu);
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    rc = coll_new(e, buf, len, &c, err);
    free(buf);
    if (rc == 0 && (rc = coll_start_threads(c, err)) != 0) {
        qv__coll_put(c);
        c = NULL;
    }
    if (rc == 0) {
        size_t kl = 1 + strlen(b.name);
        char key[1 + QV_NAME_MAX];
        key[0] = 'c';
        memcpy(key + 1, b.name, kl - 1);
        char *rerr = NULL;
        rocksdb_put_cf(e->db, e->wo_sync, e->cf[CF_META], key, kl, (const char *)rec, rl, &rerr);
        if (rerr != NULL)
            rc = rdb_fail(err, "storing the collection", rerr);
        else if (registry_add(e, c) != 0) {
            rc = QV_ERESOURCE;
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
        }
        if (rc != 0) {
            coll_stop_threads(c);
            qv__coll_put(c);
        }
    }
    free(rec);
    if (rc == 0) {
        atomic_fetch_add(&c->refs, 1);
        *created = true;
        *out = c;
        qv_log(QV_LOG_INFO, MOD, "collection %s created (dimension %u, uid %016llx)", c->name,
               c->dim, (unsigned long long)c->uid);
    }
    pthread_mutex_unlock(&e->mu);
    return rc;
}

int qv__engine_list(qv_engine *e, char ***names, size_t *n)
{
    pthread_mutex_lock(&e->mu);
    char **v = calloc(e->ncolls ? e->ncolls : 1, sizeof(char *));
    int rc = v != NULL ? 0 : QV_ERESOURCE;
    for (size_t i = 0; rc == 0 && i < e->ncolls; i++)
        if ((v[i] = strdup(e->colls[i]->name)) == NULL)
            rc = QV_ERESOURCE;
    *n = e->ncolls;
    pthread_mutex_unlock(&e->mu);
    if (rc != 0) {
        for (size_t i = 0; v != NULL && i < *n; i++)
            free(v[i]);
        free(v);
        *n = 0;
        return rc;
    }
    *names = v;
    return 0;
}

int qv__engine_drop(qv_engine *e, const char *name, bool *dropped, qv_status *err)
{
    pthread_mutex_lock(&e->mu);
    size_t pos = 0;
    qv_coll *c = registry_find(e, name, &pos);
    if (c == NULL) {
        pthread_mutex_unlock(&e->mu);
        *dropped = false;
        *err = qv_status_make(QV_ENOTFOUND, "collection '%.80s' does not exist", name);
        return QV_ENOTFOUND;
    }
    /* the definition goes now, durably, while the name is still reserved: a Create of the same
     * name after this point writes a record of its own that nothing below touches */
    char key[1 + QV_NAME_MAX];
    key[0] = 'c';
    size_t kl = strlen(c->name);
    memcpy(key + 1, c->name, kl);
    char *rerr = NULL;
    rocksdb_delete_cf(e->db, e->wo_sync, e->cf[CF_META], key, kl + 1, &rerr);
    if (rerr != NULL) {
        pthread_mutex_unlock(&e->mu);
        *dropped = false;
        return rdb_fail(err, "dropping the collection", rerr);
    }
    memmove(&e->colls[pos], &e->colls[pos + 1], (e->ncolls - pos - 1) * sizeof(qv_coll *));
    e->ncolls--;
    atomic_store(&c->dropped, true);
    pthread_mutex_unlock(&e->mu);

    coll_stop_threads(c);
    pthread_mutex_lock(&c->snap_mu); /* no snapshot in progress */
    pthread_mutex_unlock(&c->snap_mu);
    rocksdb_writebatch_t *wb = rocksdb_writebatch_create();
    uint8_t mk[9];
    meta_key('a', c, mk);
    rocksdb_writebatch_delete_cf(wb, e->cf[CF_META], (const char *)mk, 9);
    meta_key('s', c, mk);
    rocksdb_writebatch_delete_cf(wb, e->cf[CF_META], (const char *)mk, 9);
    uint8_t lo[8], hi[8];
    memcpy(lo, c->uidk, 8);
    put_be64(hi, c->uid + 1);
    for (int cf = CF_LOG; cf <= CF_PAYLOAD; cf++)
        rocksdb_writebatch_delete_range_cf(wb, e->cf[cf], (const char *)lo, 8, (const char *)hi, 8);
    rocksdb_write(e->db, e->wo_sync, wb, &rerr);
    rocksdb_writebatch_destroy(wb);
    int rc = 0;
    if (rerr != NULL)
        rc = rdb_fail(err, "dropping the collection", rerr);
    else {
        /* give the disk back now: flush every family (meta too) so that the write-ahead log
         * holding the dropped records can be deleted, then compact the ranges away */
        rocksdb_flushoptions_t *fo = rocksdb_flushoptions_create();
        rocksdb_flushoptions_set_wait(fo, 1);
        for (int cf = CF_META; cf < CF_COUNT; cf++) {
            char *ferr = NULL;
            rocksdb_flush_cf(e->db, fo, e->cf[cf], &ferr);
            rocksdb_free(ferr);
        }
        rocksdb_flushoptions_destroy(fo);
        for (int cf = CF_LOG; cf <= CF_PAYLOAD; cf++)
            rocksdb_compact_range_cf(e->db, e->cf[cf], (const char *)lo, 8, (const char *)hi, 8);
    }
    char path[4200];
    snap_path(c, path, sizeof(path));
    unlink(path);
    qv_log(QV_LOG_INFO, MOD, "collection %s dropped", c->name);
    qv__coll_put(c);
    *dropped = rc == 0;
    return rc;
}

static const char *const status_ready = "";

int qv__coll_info(qv_coll *c, qv_arena *a, Quiver__V1__CollectionInfo *info)
{
    qv_engine *e = c->eng;
    quiver__v1__collection_info__init(info);
    info->config = c->cfg;
    pthread_mutex_lock(&c->mu);
    bool behind = c->applied_index < c->last_index;
    bool failed = c->failed;
    uint64_t keymap_bytes = c->keymap.cap * sizeof(qv_hmap_slot) + c->keymap.len * 24;
    pthread_mutex_unlock(&c->mu);
    pthread_rwlock_rdlock(&c->rw);
    uint64_t points = roaring_bitmap_get_cardinality(c->live);
    size_t pf = 0, pbytes = 0;
    qv__pidx_stats(c->pidx, &pf, &pbytes);
    bool training = c->pending != NULL;
    qv_index_stats st;
    qv_index_stats_get(c->index, &st);
    uint64_t mem =
        st.bytes_ram + st.bytes_vectors + pbytes + c->iid_cap * (QV_KEY_MAX + 9) + keymap_bytes;
    if (c->pending != NULL) {
        qv_index_stats ps;
        qv_index_stats_get(c->pending, &ps);
        mem += ps.bytes_ram + ps.bytes_vectors;
    }
    pthread_rwlock_unlock(&c->rw);
    info->points_count = points;
    /* the index learns of a point just before the live set does: never report more indexed */
    info->indexed_points_count = training ? 0 : (st.count < points ? st.count : points);
    info->memory_bytes = mem;
    /* disk: the collection's key ranges plus its snapshot */
    uint8_t lo[8], hi[8];
    memcpy(lo, c->uidk, 8);
    put_be64(hi, c->uid + 1);
    uint64_t disk = 0;
    for (int cf = CF_LOG; cf <= CF_PAYLOAD; cf++) {
        const char *starts[1] = {(const char *)lo}, *limits[1] = {(const char *)hi};
        size_t sl[1] = {8}, ll[1] = {8};
        uint64_t sz[1] = {0};
        char *rerr = NULL;
        rocksdb_approximate_sizes_cf(e->db, e->cf[cf], 1, starts, sl, limits, ll, sz, &rerr);
        rocksdb_free(rerr);
        disk += sz[0];
    }
    char path[4200];
    snap_path(c, path, sizeof(path));
    struct stat sb;
    if (stat(path, &sb) == 0)
        disk += (uint64_t)sb.st_size;
    info->disk_bytes = disk;
    if (failed) {
        info->status = QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_DEGRADED;
        info->status_message = qv__arena_strdup(a, c->failed_msg);
    } else if (training) {
        info->status = QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_TRAINING;
        char msg[160];
        snprintf(msg, sizeof(msg),
                 "the index trains once %u points are stored; until then "
                 "searches scan exactly",
                 c->train_size);
        info->status_message = qv__arena_strdup(a, msg);
    } else if (behind) {
        info->status = QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_INDEXING;
        info->status_message =
            qv__arena_strdup(a, "committed points are being applied to the index");
    } else {
        info->status = QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_READY;
        info->status_message = (char *)status_ready;
    }
    if (info->status_message == NULL)
        info->status_message = (char *)status_ready;
    Quiver__V1__ShardInfo *sh = qv__arena_alloc(a, sizeof(*sh));
    Quiver__V1__ShardInfo **shp = qv__arena_alloc(a, sizeof(*shp));
    if (sh == NULL || shp == NULL)
        return QV_ERESOURCE;
    quiver__v1__shard_info__init(sh);
    sh->shard_id = 0;
    sh->leader_id = qv__arena_strdup(a, e->node_id);
    sh->points_count = points;
    sh->disk_bytes = disk;
    sh->memory_bytes = mem;
    sh->healthy = !failed;
    sh->status_message = failed ? info->status_message : (char *)status_ready;
    pthread_mutex_lock(&c->mu);
    sh->commit_index = c->last_index;
    pthread_mutex_unlock(&c->mu);
    if (sh->leader_id == NULL)
        return QV_ERESOURCE;
    shp[0] = sh;
    info->n_shards = 1;
    info->shards = shp;
    return 0;
}
