/* The public qv_index functions: parameters, validation, dispatch through the type's vtable,
 * cosine normalisation, batch de-duplication, the generic batch search, and snapshot framing. */
#define _GNU_SOURCE
#include "index/index_internal.h"

#include <errno.h>
#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#define TAG_PARAMS QV__TAG('P', 'A', 'R', 'M')
#define NPARAMS    15

const char *qv_index_type_name(qv_index_type t)
{
    switch (t) {
    case QV_INDEX_FLAT:
        return "flat";
    case QV_INDEX_HNSW:
        return "hnsw";
    case QV_INDEX_IVF_FLAT:
        return "ivf";
    }
    return "unknown";
}

void qv_index_params_default(qv_index_params *p, qv_index_type type, qv_metric metric, uint32_t dim)
{
    memset(p, 0, sizeof(*p));
    p->type = type;
    p->metric = metric;
    p->dim = dim;
    p->storage = QV_STORAGE_F32;
    p->hnsw.M = 16;
    p->hnsw.ef_construction = 200;
    p->hnsw.ef_search = 64;
    p->hnsw.rerank = 0;
    p->hnsw.seed = 42;
    p->ivf.nlist = 1024;
    p->ivf.nprobe = 16;
    p->ivf.iters = 20;
    p->ivf.seed = 42;
}

static const qv__index_ops *ops_for(qv_index_type t)
{
    switch (t) {
    case QV_INDEX_FLAT:
        return &qv__flat_ops;
    case QV_INDEX_HNSW:
        return &qv__hnsw_ops;
    case QV_INDEX_IVF_FLAT:
        return &qv__ivf_ops;
    }
    return NULL;
}

static int check_params(const qv_index_params *p, qv_status *err)
{
#define BAD(...)                                                                                   \
    do {                                                                                           \
        *err = qv_status_make(QV_EINVAL, __VA_ARGS__);                                             \
        return QV_EINVAL;                                                                          \
    } while (0)
    if (ops_for(p->type) == NULL)
        BAD("unknown index type %d", (int)p->type);
    if (p->metric != QV_METRIC_L2 && p->metric != QV_METRIC_IP && p->metric != QV_METRIC_COSINE)
        BAD("unknown metric %d", (int)p->metric);
    if (p->dim < 1 || p->dim > QV_INDEX_MAX_DIM)
        BAD("dimension %u is outside 1..%u", p->dim, QV_INDEX_MAX_DIM);
    if (p->storage != QV_STORAGE_F32 && p->storage != QV_STORAGE_INT8)
        BAD("unknown storage %d", (int)p->storage);
    if (p->storage == QV_STORAGE_INT8 && p->type != QV_INDEX_HNSW)
        BAD("int8 storage is available for HNSW only");
    if (p->storage == QV_STORAGE_INT8 && p->dim > QV_KERNELS_INT_MAX_DIM)
        BAD("int8 storage supports dimensions up to %u", QV_KERNELS_INT_MAX_DIM);
    if (p->threads > 1024)
        BAD("threads %u is more than 1024", p->threads);
    if (p->type == QV_INDEX_HNSW) {
        if (p->hnsw.M < 4 || p->hnsw.M > 128)
            BAD("HNSW M %u is outside 4..128", p->hnsw.M);
        if (p->hnsw.ef_construction < p->hnsw.M || p->hnsw.ef_construction > 100000)
            BAD("HNSW ef_construction %u must be in M..100000", p->hnsw.ef_construction);
        if (p->hnsw.ef_search < 1 || p->hnsw.ef_search > 100000)
            BAD("HNSW ef_search %u is outside 1..100000", p->hnsw.ef_search);
        if (p->hnsw.rerank > 100000)
            BAD("HNSW rerank %u is more than 100000", p->hnsw.rerank);
    }
    if (p->type == QV_INDEX_IVF_FLAT) {
        if (p->ivf.nlist < 1 || p->ivf.nlist > 65536)
            BAD("IVF nlist %u is outside 1..65536", p->ivf.nlist);
        if (p->ivf.nprobe < 1 || p->ivf.nprobe > p->ivf.nlist)
            BAD("IVF nprobe %u is outside 1..nlist (%u)", p->ivf.nprobe, p->ivf.nlist);
        if (p->ivf.iters < 1 || p->ivf.iters > 1000)
            BAD("IVF iters %u is outside 1..1000", p->ivf.iters);
    }
    return 0;
#undef BAD
}

static int alloc_index(const qv_index_params *p, qv_index **out, qv_status *err)
{
    qv_index *idx = calloc(1, sizeof(*idx));
    if (idx == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    idx->params = *p;
    if (idx->params.threads == 0)
        idx->params.threads = qv__default_threads();
    idx->ops = ops_for(p->type);
    idx->kern = qv_kernels_get();
    pthread_mutex_init(&idx->write_mu, NULL);
    *out = idx;
    return 0;
}

int qv_index_create(const qv_index_params *p, qv_index **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (p == NULL || out == NULL) {
        *err = qv_status_make(QV_EINVAL, "index parameters are required");
        return QV_EINVAL;
    }
    *out = NULL;
    int rc = check_params(p, err);
    if (rc != 0)
        return rc;
    qv_index *idx;
    rc = alloc_index(p, &idx, err);
    if (rc != 0)
        return rc;
    rc = idx->ops->init(idx, err);
    if (rc != 0) {
        pthread_mutex_destroy(&idx->write_mu);
        free(idx);
        return rc;
    }
    *out = idx;
    return 0;
}

void qv_index_free(qv_index *idx)
{
    if (idx == NULL)
        return;
    if (idx->impl != NULL)
        idx->ops->destroy(idx);
    if (idx->map != NULL)
        munmap(idx->map, idx->map_len);
    pthread_mutex_destroy(&idx->write_mu);
    free(idx);
}

/* A copy of the batch in which each id appears once (its last vector), normalised for COSINE.
 * Returns 0 and *ids_out, *vecs_out pointing either at the inputs (nothing to change) or at
 * malloc'd copies the caller frees when *owned is set. */
static int prepare_batch(const qv_index *idx, const uint64_t *ids, const float *vecs, size_t n,
                         const uint64_t **ids_out, const float **vecs_out, size_t *n_out,
                         bool *owned)
{
    size_t dim = idx->params.dim;
    *owned = false;
    *ids_out = ids;
    *vecs_out = vecs;
    *n_out = n;
    qv__idmap seen;
    qv__idmap_init(&seen);
    bool dups = false;
    if (qv__idmap_reserve(&seen, n) != 0)
        return QV_ERESOURCE;
    for (size_t i = 0; i < n; i++) {
        if (qv__idmap_get(&seen, ids[i]) != QV__NO_SLOT)
            dups = true;
        qv__idmap_put(&seen, ids[i], (uint32_t)i); /* cannot fail: reserved */
    }
    if (!dups && idx->params.metric != QV_METRIC_COSINE) {
        qv__idmap_free(&seen);
        return 0;
    }
    uint64_t *nid = malloc((n ? n : 1) * sizeof(*nid));
    float *nv = malloc((n ? n : 1) * dim * sizeof(*nv));
    if (nid == NULL || nv == NULL) {
        free(nid);
        free(nv);
        qv__idmap_free(&seen);
        return QV_ERESOURCE;
    }
    size_t m = 0;
    for (size_t i = 0; i < n; i++) {
        if (qv__idmap_get(&seen, ids[i]) != (uint32_t)i)
            continue; /* a later entry with this id wins */
        nid[m] = ids[i];
        memcpy(nv + m * dim, vecs + i * dim, dim * sizeof(float));
        if (idx->params.metric == QV_METRIC_COSINE)
            qv__normalize(nv + m * dim, dim);
        m++;
    }
    qv__idmap_free(&seen);
    *ids_out = nid;
    *vecs_out = nv;
    *n_out = m;
    *owned = true;
    return 0;
}

static int writable(qv_index *idx, qv_status *err)
{
    if (idx->read_only) {
        *err = qv_status_make(QV_EPRECONDITION,
                              "index was loaded read-only (memory-mapped); load it without "
                              "QV_LOAD_MMAP to modify it");
        return QV_EPRECONDITION;
    }
    return 0;
}

int qv_index_add(qv_index *idx, const uint64_t *ids, const float *vecs, size_t n, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (idx == NULL || (n > 0 && (ids == NULL || vecs == NULL))) {
        *err = qv_status_make(QV_EINVAL, "add needs ids and vectors");
        return QV_EINVAL;
    }
    if (n == 0)
        return 0;
    if (n > UINT32_MAX / 2) {
        *err = qv_status_make(QV_EINVAL, "batch of %zu vectors is too large", n);
        return QV_EINVAL;
    }
    size_t dim = idx->params.dim;
    for (size_t i = 0; i < n; i++) {
        if (!qv__all_finite(vecs + i * dim, dim)) {
            *err = qv_status_make(QV_EINVAL, "vector %zu (id %llu) has a NaN or infinite value", i,
                                  (unsigned long long)ids[i]);
            return QV_EINVAL;
        }
    }
    int rc = writable(idx, err);
    if (rc != 0)
        return rc;
    const uint64_t *bid;
    const float *bvec;
    size_t bn;
    bool owned;
    rc = prepare_batch(idx, ids, vecs, n, &bid, &bvec, &bn, &owned);
    if (rc != 0) {
        *err = qv_status_make(rc, "out of memory preparing a batch of %zu vectors", n);
        return rc;
    }
    pthread_mutex_lock(&idx->write_mu);
    rc = idx->ops->add(idx, bid, bvec, bn, err);
    pthread_mutex_unlock(&idx->write_mu);
    if (owned) {
        free((void *)bid);
        free((void *)bvec);
    }
    return rc;
}

int qv_index_train(qv_index *idx, const float *vecs, size_t n, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (idx == NULL || (n > 0 && vecs == NULL)) {
        *err = qv_status_make(QV_EINVAL, "train needs vectors");
        return QV_EINVAL;
    }
    if (idx->ops->train == NULL)
        return 0;
    size_t dim = idx->params.dim;
    if (!qv__all_finite(vecs, n * dim)) {
        *err = qv_status_make(QV_EINVAL, "training vectors contain NaN or infinite values");
        return QV_EINVAL;
    }
    int rc = writable(idx, err);
    if (rc != 0)
        return rc;
    const float *tv = vecs;
    float *copy = NULL;
    if (idx->params.metric == QV_METRIC_COSINE && n > 0) {
        copy = malloc(n * dim * sizeof(float));
        if (copy == NULL) {
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
            return QV_ERESOURCE;
        }
        memcpy(copy, vecs, n * dim * sizeof(float));
        for (size_t i = 0; i < n; i++)
            qv__normalize(copy + i * dim, dim);
        tv = copy;
    }
    pthread_mutex_lock(&idx->write_mu);
    rc = idx->ops->train(idx, tv, n, err);
    pthread_mutex_unlock(&idx->write_mu);
    free(copy);
    return rc;
}

int qv_index_remove(qv_index *idx, const uint64_t *ids, size_t n, size_t *removed)
{
    if (removed != NULL)
        *removed = 0;
    if (idx == NULL || (n > 0 && ids == NULL))
        return QV_EINVAL;
    if (idx->read_only)
        return QV_EPRECONDITION;
    size_t dummy;
    pthread_mutex_lock(&idx->write_mu);
    int rc = idx->ops->remove(idx, ids, n, removed ? removed : &dummy);
    pthread_mutex_unlock(&idx->write_mu);
    return rc;
}

int qv_index_compact(qv_index *idx, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (idx == NULL)
        return QV_EINVAL;
    int rc = writable(idx, err);
    if (rc != 0 || idx->ops->compact == NULL)
        return rc;
    pthread_mutex_lock(&idx->write_mu);
    rc = idx->ops->compact(idx, err);
    pthread_mutex_unlock(&idx->write_mu);
    return rc;
}

static void fill_search_params(const qv_index *idx, const qv_search_params *in, size_t k,
                               qv_search_params *out)
{
    memset(out, 0, sizeof(*out));
    if (in != NULL)
        *out = *in;
    if (out->ef == 0)
        out->ef = idx->params.hnsw.ef_search;
    if (out->ef < k)
        out->ef = (uint32_t)k;
    if (out->nprobe == 0)
        out->nprobe = idx->params.ivf.nprobe;
    if (out->rerank == 0)
        out->rerank = idx->params.hnsw.rerank;
}

/* Maps internal "smaller is closer" distances to the public ones (COSINE: 1 - cos). */
static void finish_hits(const qv_index *idx, qv_hit *out, size_t n)
{
    if (idx->params.metric != QV_METRIC_COSINE)
        return;
    for (size_t i = 0; i < n; i++) {
        float d = 1.0f + out[i].distance;
        out[i].distance = d < 0 ? 0 : (d > 2 ? 2 : d);
    }
}

static int check_query(const qv_index *idx, const float *q, size_t k, qv_status *err)
{
    if (q == NULL) {
        *err = qv_status_make(QV_EINVAL, "query vector is required");
        return QV_EINVAL;
    }
    if (k == 0 || k > QV_INDEX_MAX_K) {
        *err = qv_status_make(QV_EINVAL, "k = %zu is outside 1..%u", k, QV_INDEX_MAX_K);
        return QV_EINVAL;
    }
    if (!qv__all_finite(q, idx->params.dim)) {
        *err = qv_status_make(QV_EINVAL, "query vector has a NaN or infinite value");
        return QV_EINVAL;
    }
    return 0;
}

int qv_index_search(qv_index *idx, const float *query, size_t k, const qv_search_params *sp,
                    const qv_filter *filter, qv_hit *out, size_t *nout, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    *nout = 0;
    int rc = check_query(idx, query, k, err);
    if (rc != 0)
        return rc;
    qv_search_params p;
    fill_search_params(idx, sp, k, &p);
    size_t dim = idx->params.dim;
    float stackq[512];
    const float *q = query;
    float *heapq = NULL;
    if (idx->params.metric == QV_METRIC_COSINE) {
        float *buf = stackq;
        if (dim > 512) {
            heapq = malloc(dim * sizeof(float));
            if (heapq == NULL) {
                *err = qv_status_make(QV_ERESOURCE, "out of memory");
                return QV_ERESOURCE;
            }
            buf = heapq;
        }
        memcpy(buf, query, dim * sizeof(float));
        qv__normalize(buf, dim);
        q = buf;
    }
    rc = idx->ops->search(idx, q, k, &p, filter, out, nout);
    free(heapq);
    if (rc != 0) {
        *err = qv_status_make(rc, "search failed: %s", qv_strerror(rc));
        return rc;
    }
    finish_hits(idx, out, *nout);
    return 0;
}

typedef struct batch_ctx {
    qv_index *idx;
    const float *qs;
    size_t k;
    const qv_search_params *sp;
    const qv_filter *filter;
    qv_hit *out;
    size_t *counts;
    atomic_int rc;
} batch_ctx;

static void batch_one(size_t i, void *arg)
{
    batch_ctx *c = arg;
    qv_status st;
    int rc = qv_index_search(c->idx, c->qs + i * c->idx->params.dim, c->k, c->sp, c->filter,
                             c->out + i * c->k, &c->counts[i], &st);
    if (rc != 0)
        atomic_store(&c->rc, rc);
}

int qv_index_search_batch(qv_index *idx, const float *queries, size_t nq, size_t k,
                          const qv_search_params *sp, const qv_filter *filter, unsigned threads,
                          qv_hit *out, size_t *counts, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (nq == 0)
        return 0;
    if (queries == NULL || out == NULL || counts == NULL) {
        *err = qv_status_make(QV_EINVAL, "batch search needs queries and output arrays");
        return QV_EINVAL;
    }
    for (size_t i = 0; i < nq; i++) {
        int rc = check_query(idx, queries + i * idx->params.dim, k, err);
        if (rc != 0)
            return rc;
    }
    if (threads == 0)
        threads = idx->params.threads;
    if (idx->ops->search_batch != NULL) {
        qv_search_params p;
        fill_search_params(idx, sp, k, &p);
        const float *qs = queries;
        float *copy = NULL;
        size_t dim = idx->params.dim;
        if (idx->params.metric == QV_METRIC_COSINE) {
            copy = malloc(nq * dim * sizeof(float));
            if (copy == NULL) {
                *err = qv_status_make(QV_ERESOURCE, "out of memory");
                return QV_ERESOURCE;
            }
            memcpy(copy, queries, nq * dim * sizeof(float));
            for (size_t i = 0; i < nq; i++)
                qv__normalize(copy + i * dim, dim);
            qs = copy;
        }
        int rc = idx->ops->search_batch(idx, qs, nq, k, &p, filter, threads, out, counts);
        free(copy);
        if (rc != 0) {
            *err = qv_status_make(rc, "batch search failed: %s", qv_strerror(rc));
            return rc;
        }
        for (size_t i = 0; i < nq; i++)
            finish_hits(idx, out + i * k, counts[i]);
        return 0;
    }
    batch_ctx c = {.idx = idx,
                   .qs = queries,
                   .k = k,
                   .sp = sp,
                   .filter = filter,
                   .out = out,
                   .counts = counts};
    atomic_init(&c.rc, 0);
    qv__parallel_for(nq, threads, batch_one, &c);
    int rc = atomic_load(&c.rc);
    if (rc != 0)
        *err = qv_status_make(rc, "batch search failed: %s", qv_strerror(rc));
    return rc;
}

bool qv_index_contains(qv_index *idx, uint64_t id)
{
    return idx != NULL && idx->ops->contains(idx, id);
}

void qv_index_stats_get(qv_index *idx, qv_index_stats *out)
{
    memset(out, 0, sizeof(*out));
    out->type = idx->params.type;
    out->metric = idx->params.metric;
    out->storage = idx->params.storage;
    out->dim = idx->params.dim;
    out->params = idx->params;
    out->trained = true;
    idx->ops->stats(idx, out);
}

/* --- snapshot files --- */

static void put_params(qv__writer *w, const qv_index_params *p)
{
    uint64_t v[NPARAMS] = {
        p->type,
        p->metric,
        p->dim,
        p->storage,
        p->threads,
        p->hnsw.M,
        p->hnsw.ef_construction,
        p->hnsw.ef_search,
        p->hnsw.rerank,
        p->hnsw.seed,
        p->ivf.nlist,
        p->ivf.nprobe,
        p->ivf.train_size,
        p->ivf.iters,
        p->ivf.seed,
    };
    uint8_t buf[NPARAMS * 8];
    for (int i = 0; i < NPARAMS; i++)
        for (int b = 0; b < 8; b++)
            buf[i * 8 + b] = (uint8_t)(v[i] >> (8 * b));
    qv__w_section(w, TAG_PARAMS, buf, sizeof(buf));
}

static int get_params(const qv__reader *r, qv_index_params *p, qv_status *err)
{
    const void *data;
    int rc = qv__r_section_exact(r, TAG_PARAMS, NPARAMS * 8, &data, err);
    if (rc != 0)
        return rc;
    const uint8_t *b = data;
    uint64_t v[NPARAMS];
    for (int i = 0; i < NPARAMS; i++) {
        v[i] = 0;
        for (int k = 0; k < 8; k++)
            v[i] |= (uint64_t)b[i * 8 + k] << (8 * k);
    }
    for (int i = 0; i < NPARAMS; i++) {
        if (i != 9 && i != 14 && v[i] > UINT32_MAX) {
            *err = qv_status_make(QV_ECORRUPT, "index file parameter %d is out of range", i);
            return QV_ECORRUPT;
        }
    }
    memset(p, 0, sizeof(*p));
    p->type = (qv_index_type)v[0];
    p->metric = (qv_metric)v[1];
    p->dim = (uint32_t)v[2];
    p->storage = (qv_storage)v[3];
    p->threads = (unsigned)v[4];
    p->hnsw.M = (uint32_t)v[5];
    p->hnsw.ef_construction = (uint32_t)v[6];
    p->hnsw.ef_search = (uint32_t)v[7];
    p->hnsw.rerank = (uint32_t)v[8];
    p->hnsw.seed = v[9];
    p->ivf.nlist = (uint32_t)v[10];
    p->ivf.nprobe = (uint32_t)v[11];
    p->ivf.train_size = (uint32_t)v[12];
    p->ivf.iters = (uint32_t)v[13];
    p->ivf.seed = v[14];
    if (p->type != r->type || p->metric != r->metric || p->dim != r->dim ||
        p->storage != r->storage) {
        *err = qv_status_make(QV_ECORRUPT, "index file header and parameters disagree");
        return QV_ECORRUPT;
    }
    qv_status perr;
    if (check_params(p, &perr) != 0) {
        *err = qv_status_make(QV_ECORRUPT, "index file parameters are invalid: %s", perr.msg);
        return QV_ECORRUPT;
    }
    return 0;
}

static int fsync_parent(const char *path)
{
    char *dir = strdup(path);
    if (dir == NULL)
        return -1;
    char *slash = strrchr(dir, '/');
    const char *d = ".";
    if (slash == dir)
        d = "/";
    else if (slash != NULL) {
        *slash = '\0';
        d = dir;
    }
    int fd = open(d, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    int rc = -1;
    if (fd >= 0) {
        rc = fsync(fd);
        close(fd);
    }
    free(dir);
    return rc;
}

int qv_index_save(qv_index *idx, const char *path, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (idx == NULL || path == NULL) {
        *err = qv_status_make(QV_EINVAL, "save needs an index and a path");
        return QV_EINVAL;
    }
    size_t plen = strlen(path);
    char *tmp = malloc(plen + 16);
    if (tmp == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    snprintf(tmp, plen + 16, "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    if (f == NULL) {
        int e = errno;
        *err = qv_status_make(qv_from_errno(e), "cannot create '%s': %s", tmp, strerror(e));
        free(tmp);
        return qv_from_errno(e);
    }
    qv__writer w;
    qv__w_start(&w, f);
    pthread_mutex_lock(&idx->write_mu);
    put_params(&w, &idx->params);
    int rc = idx->ops->save(idx, &w);
    pthread_mutex_unlock(&idx->write_mu);
    if (rc == 0)
        rc = qv__w_finish(&w, &idx->params, err);
    else if (w.err != 0)
        *err = qv_status_make(rc, "saving index: %s", w.errmsg);
    else
        *err = qv_status_make(rc, "saving index failed: %s", qv_strerror(rc));
    if (rc == 0 && (fflush(f) != 0 || fsync(fileno(f)) != 0)) {
        int e = errno;
        rc = qv_from_errno(e) ? qv_from_errno(e) : QV_EUNAVAIL;
        *err = qv_status_make(rc, "cannot sync '%s': %s", tmp, strerror(e));
    }
    if (fclose(f) != 0 && rc == 0) {
        int e = errno;
        rc = QV_EUNAVAIL;
        *err = qv_status_make(rc, "cannot close '%s': %s", tmp, strerror(e));
    }
    if (rc == 0 && rename(tmp, path) != 0) {
        int e = errno;
        rc = qv_from_errno(e) ? qv_from_errno(e) : QV_EUNAVAIL;
        *err = qv_status_make(rc, "cannot rename '%s' to '%s': %s", tmp, path, strerror(e));
    }
    if (rc != 0)
        unlink(tmp);
    else
        fsync_parent(path);
    free(tmp);
    return rc;
}

static int load_from(const void *buf, size_t len, bool mapped, qv_index **out, qv_status *err)
{
    qv__reader r;
    int rc = qv__r_open(&r, buf, len, err);
    if (rc != 0)
        return rc;
    r.mapped = mapped;
    qv_index_params p;
    rc = get_params(&r, &p, err);
    if (rc != 0)
        return rc;
    qv_index *idx;
    rc = alloc_index(&p, &idx, err);
    if (rc != 0)
        return rc;
    rc = idx->ops->load(idx, &r, err);
    if (rc != 0) {
        if (idx->impl != NULL)
            idx->ops->destroy(idx);
        pthread_mutex_destroy(&idx->write_mu);
        free(idx);
        return rc;
    }
    *out = idx;
    return 0;
}

int qv_index_load_buffer(const void *buf, size_t len, qv_index **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (out == NULL || (buf == NULL && len > 0)) {
        *err = qv_status_make(QV_EINVAL, "load needs a buffer");
        return QV_EINVAL;
    }
    *out = NULL;
    /* Sections are 64-byte aligned relative to the start: give them an aligned base. */
    void *copy = aligned_alloc(64, (len + 63) / 64 * 64 + 64);
    if (copy == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory for a %zu-byte index", len);
        return QV_ERESOURCE;
    }
    if (len > 0)
        memcpy(copy, buf, len);
    int rc = load_from(copy, len, false, out, err);
    free(copy);
    return rc;
}

int qv_index_load(const char *path, int flags, qv_index **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (path == NULL || out == NULL) {
        *err = qv_status_make(QV_EINVAL, "load needs a path");
        return QV_EINVAL;
    }
    *out = NULL;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        int e = errno;
        *err =
            qv_status_make(qv_from_errno(e), "cannot open index file '%s': %s", path, strerror(e));
        return qv_from_errno(e);
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        *err = qv_status_make(QV_EINVAL, "'%s' is not a regular file", path);
        return QV_EINVAL;
    }
    size_t len = (size_t)st.st_size;
    int rc;
    if (flags & QV_LOAD_MMAP) {
        void *map = len ? mmap(NULL, len, PROT_READ, MAP_PRIVATE, fd, 0) : NULL;
        close(fd);
        if (len == 0 || map == MAP_FAILED) {
            *err = qv_status_make(len == 0 ? QV_ECORRUPT : QV_ERESOURCE,
                                  "cannot map index file '%s'%s", path,
                                  len == 0 ? ": it is empty" : "");
            return len == 0 ? QV_ECORRUPT : QV_ERESOURCE;
        }
        rc = load_from(map, len, true, out, err);
        if (rc != 0) {
            munmap(map, len);
            return rc;
        }
        (*out)->map = map;
        (*out)->map_len = len;
        (*out)->read_only = true;
        return 0;
    }
    void *buf = aligned_alloc(64, (len + 63) / 64 * 64 + 64);
    if (buf == NULL) {
        close(fd);
        *err = qv_status_make(QV_ERESOURCE, "out of memory reading '%s'", path);
        return QV_ERESOURCE;
    }
    size_t got = 0;
    while (got < len) {
        ssize_t n = read(fd, (char *)buf + got, len - got);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            break;
        got += (size_t)n;
    }
    close(fd);
    if (got != len) {
        free(buf);
        *err = qv_status_make(QV_EUNAVAIL, "short read of '%s'", path);
        return QV_EUNAVAIL;
    }
    rc = load_from(buf, len, false, out, err);
    free(buf);
    if (rc != 0 && err->msg[0] != '\0') {
        qv_status wrapped = qv_status_make(rc, "%s: %s", path, err->msg);
        *err = wrapped;
    }
    return rc;
}
