/* The public data API of a node: quiver.v1.Collections and quiver.v1.Points over the storage
 * engine (reads are answered here; writes go through engine.c's log). */
#define _GNU_SOURCE
#include "node/engine_internal.h"
#include "node/filter_text.h"
#include "node/node_internal.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_K               10000u
#define MAX_BATCH_Q         1024u
#define MAX_EXAMPLES        256u
#define MAX_SELECTOR_FIELDS 256
#define MAX_TIMEOUT_MS      600000u

static int fail(qv_rpc_ctx *ctx, const qv_status *st)
{
    return qv_rpc_ctx_fail(ctx, st->code, "%s", st->msg);
}

/* What a handler's status starts as: the paths that fail without setting one are allocation
 * failures. */
static qv_status oom_status(void)
{
    return qv_status_make(QV_ERESOURCE, "out of memory");
}

/* Packs any protobuf-c message into the response. */
static int respond(qv_rpc_ctx *ctx, const ProtobufCMessage *msg)
{
    size_t len = protobuf_c_message_get_packed_size(msg);
    uint8_t *buf = qv_rpc_ctx_response(ctx, len);
    if (buf == NULL)
        return qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "cannot allocate the response");
    protobuf_c_message_pack(msg, buf);
    return 0;
}

static int64_t deadline_of(qv_rpc_ctx *ctx)
{
    int64_t left = qv_rpc_ctx_remaining_ms(ctx);
    if (left > (int64_t)30 * 24 * 3600 * 1000)
        return 0; /* no deadline */
    return (int64_t)qv_now_ms() + (left > 0 ? left : 1);
}

/* ---------------------------------------------------------------------------------------------
 * Filters: the structured one and the text one, ANDed, evaluated to a bitmap
 * ------------------------------------------------------------------------------------------- */

typedef struct filters {
    const Quiver__V1__Filter *structured;
    Quiver__V1__Filter *text; /* owned */
} filters;

static void filters_free(filters *f)
{
    if (f->text != NULL)
        qv_filter_text_free(f->text);
    f->text = NULL;
}

static int check_has_ids(const Quiver__V1__Filter *f, qv_status *err);

/* Every id of every has_id condition must be a valid point id (as Get demands): a malformed one
 * would otherwise match nothing, silently. The depth is bounded by qv__filter_validate. */
static int check_has_ids_in(Quiver__V1__Condition *const *conds, size_t n, qv_status *err)
{
    for (size_t i = 0; i < n; i++) {
        const Quiver__V1__Condition *c = conds[i];
        int rc = 0;
        if (c->condition_case == QUIVER__V1__CONDITION__CONDITION_NESTED) {
            rc = check_has_ids(c->nested, err);
        } else if (c->condition_case == QUIVER__V1__CONDITION__CONDITION_HAS_ID) {
            for (size_t j = 0; j < c->has_id->n_ids && rc == 0; j++) {
                uint8_t key[QV_KEY_MAX], klen;
                rc = qv__key_from_id(c->has_id->ids[j], key, &klen, err);
                if (rc != 0)
                    *err = qv_status_make(rc, "filter: has_id: %s", err->msg);
            }
        }
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int check_has_ids(const Quiver__V1__Filter *f, qv_status *err)
{
    if (f == NULL)
        return 0;
    int rc = check_has_ids_in(f->must, f->n_must, err);
    if (rc == 0)
        rc = check_has_ids_in(f->should, f->n_should, err);
    if (rc == 0)
        rc = check_has_ids_in(f->must_not, f->n_must_not, err);
    return rc;
}

static int filters_parse(filters *f, const Quiver__V1__Filter *structured, const char *text,
                         qv_status *err)
{
    f->structured = structured;
    f->text = NULL;
    int rc = qv__filter_validate(structured, err);
    if (rc == 0)
        rc = check_has_ids(structured, err);
    if (rc != 0)
        return rc;
    if (text != NULL && text[0] != '\0') {
        rc = qv_filter_text_parse(text, strlen(text), &f->text, err);
        if (rc == 0)
            rc = qv__filter_validate(f->text, err);
        if (rc == 0)
            rc = check_has_ids(f->text, err);
    }
    return rc;
}

static bool filters_empty(const filters *f)
{
    return f->structured == NULL && f->text == NULL;
}

/* Evaluates into *out (NULL when there is no filter). Takes c->rw for reading. */
static int filters_eval(qv_coll *c, const filters *f, roaring_bitmap_t **out, qv_status *err)
{
    *out = NULL;
    if (filters_empty(f))
        return 0;
    roaring_bitmap_t *a = NULL, *b = NULL;
    pthread_rwlock_rdlock(&c->rw);
    int rc = 0;
    if (f->structured != NULL)
        rc = qv__pidx_compile(c->pidx, f->structured, c->live, qv__coll_lookup_iid, c, &a, err);
    if (rc == 0 && f->text != NULL)
        rc = qv__pidx_compile(c->pidx, f->text, a != NULL ? a : c->live, qv__coll_lookup_iid, c, &b,
                              err);
    pthread_rwlock_unlock(&c->rw);
    if (rc != 0) {
        qv__bm_free(a);
        qv__bm_free(b);
        return rc;
    }
    if (b != NULL) {
        qv__bm_free(a);
        a = b;
    }
    *out = a;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Search core
 * ------------------------------------------------------------------------------------------- */

typedef struct squery {
    float *vec; /* dim floats, stored form */
    uint32_t k, offset;
    qv_search_params sp;
    roaring_bitmap_t *allow; /* NULL: every point */
    bool has_max;
    float max_distance;
    const Quiver__V1__PayloadSelector *with_payload;
    bool with_vectors;
} squery;

/* A filter with no condition at all (absent counts as empty). */
static bool filter_is_empty(const Quiver__V1__Filter *f)
{
    return f == NULL || (f->n_must == 0 && f->n_should == 0 && f->n_must_not == 0);
}

static int check_params(qv_coll *c, const Quiver__V1__SearchParams *p, qv_search_params *sp,
                        qv_status *err)
{
    memset(sp, 0, sizeof(*sp));
    if (p == NULL)
        return 0;
    if (p->ef > 32768) {
        *err = qv_status_make(QV_EINVAL, "params.ef %u out of range 0..32768", p->ef);
        return QV_EINVAL;
    }
    const Quiver__V1__IndexConfig *ic = c->cfg->index;
    /* nprobe is ignored by the other index types (common.proto) */
    if (p->nprobe > 0 && ic->ivf != NULL && p->nprobe > ic->ivf->nlist) {
        *err = qv_status_make(QV_EINVAL,
                              "params.nprobe %u out of range (the collection has %u "
                              "IVF lists)",
                              p->nprobe, ic->ivf->nlist);
        return QV_EINVAL;
    }
    if (p->opt_rerank_case && p->rerank > 10000) {
        *err = qv_status_make(QV_EINVAL, "params.rerank %u out of range 0..10000", p->rerank);
        return QV_EINVAL;
    }
    sp->ef = p->ef;
    sp->nprobe = p->nprobe;
    sp->exact = p->exact;
    if (p->opt_rerank_case)
        sp->rerank = p->rerank;
    return 0;
}

static int check_k(uint32_t *k, uint32_t offset, qv_status *err)
{
    if (*k == 0)
        *k = 10;
    if (*k > MAX_K || (uint64_t)*k + offset > MAX_K) {
        *err = qv_status_make(QV_EINVAL, "k + offset = %llu exceeds %u",
                              (unsigned long long)*k + offset, MAX_K);
        return QV_EINVAL;
    }
    return 0;
}

static int hit_cmp(const void *a, const void *b)
{
    const qv_hit *x = a, *y = b;
    if (x->distance != y->distance)
        return x->distance < y->distance ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Runs one query; out holds k + offset hits; *n gets the count after offset and max_distance
 * (the hits start at out[0]). */
static int run_search(qv_coll *c, const squery *q, qv_hit *out, size_t *n, qv_status *err)
{
    size_t kk = (size_t)q->k + q->offset;
    qv_search_params sp = q->sp;
    qv_filter flt = {0};
    const qv_filter *fp = NULL;
    if (q->allow != NULL) {
        uint64_t card = roaring_bitmap_get_cardinality(q->allow);
        if (card == 0) {
            *n = 0;
            return 0;
        }
        flt.allow = q->allow;
        flt.expected_allowed = card;
        fp = &flt;
        const Quiver__V1__IndexConfig *ic = c->cfg->index;
        if (card <= ic->exact_filter_threshold)
            sp.exact = true;
    }
    size_t got = 0;
    pthread_rwlock_rdlock(&c->rw);
    int rc = qv_index_search(c->index, q->vec, kk, &sp, fp, out, &got, err);
    if (rc == 0 && c->pending != NULL) {
        qv_hit *tmp = malloc(kk * sizeof(qv_hit) * 2);
        size_t got2 = 0;
        if (tmp == NULL) {
            rc = QV_ERESOURCE;
            *err = qv_status_make(QV_ERESOURCE, "out of memory");
        } else {
            rc = qv_index_search(c->pending, q->vec, kk, &sp, fp, tmp, &got2, err);
            roaring_bitmap_t *seen = rc == 0 ? roaring_bitmap_create() : NULL;
            if (rc == 0 && seen == NULL) {
                rc = QV_ERESOURCE;
                *err = qv_status_make(QV_ERESOURCE, "out of memory");
            }
            if (rc == 0) {
                /* a point moving into the trained index may be in both for a moment */
                memcpy(tmp + got2, out, got * sizeof(qv_hit));
                size_t all = got + got2;
                qsort(tmp, all, sizeof(qv_hit), hit_cmp);
                got = 0;
                for (size_t i = 0; i < all && got < kk; i++)
                    if (roaring_bitmap_add_checked(seen, (uint32_t)tmp[i].id))
                        out[got++] = tmp[i];
            }
            qv__bm_free(seen);
            free(tmp);
        }
    }
    pthread_rwlock_unlock(&c->rw);
    if (rc != 0)
        return rc;
    size_t m = 0;
    for (size_t i = q->offset; i < got; i++) {
        if (q->has_max && out[i].distance > q->max_distance)
            break;
        out[m++] = out[i];
    }
    *n = m;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Building results
 * ------------------------------------------------------------------------------------------- */

/* Owned unpacked payloads, freed after the response is packed. */
typedef struct keep {
    Quiver__V1__Payload **v;
    size_t n, cap;
} keep;

static void keep_free(keep *k)
{
    for (size_t i = 0; i < k->n; i++)
        quiver__v1__payload__free_unpacked(k->v[i], NULL);
    free(k->v);
    memset(k, 0, sizeof(*k));
}

static bool want_payload(const Quiver__V1__PayloadSelector *s)
{
    if (s == NULL)
        return false;
    switch (s->selector_case) {
    case QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_ENABLE:
        return s->enable;
    case QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_INCLUDE:
    case QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_EXCLUDE:
        return true;
    default:
        return false;
    }
}

static bool listed(const Quiver__V1__PayloadFields *f, const char *key)
{
    for (size_t i = 0; f != NULL && i < f->n_fields; i++)
        if (strcmp(f->fields[i], key) == 0)
            return true;
    return false;
}

/* A payload selector lists at most 256 keys (common.proto); each returned point checks its keys
 * against the list. */
static int check_selector(const Quiver__V1__PayloadSelector *s, qv_status *err)
{
    const Quiver__V1__PayloadFields *f = NULL;
    if (s != NULL && s->selector_case == QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_INCLUDE)
        f = s->include;
    else if (s != NULL && s->selector_case == QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_EXCLUDE)
        f = s->exclude;
    if (f != NULL && f->n_fields > MAX_SELECTOR_FIELDS) {
        *err = qv_status_make(QV_EINVAL, "with_payload lists %zu keys (at most %d)", f->n_fields,
                              MAX_SELECTOR_FIELDS);
        return QV_EINVAL;
    }
    return 0;
}

/* The payload of a point, reduced per the selector, allocated in a / kept in kp. */
static Quiver__V1__Payload *select_payload(qv_coll *c, const uint8_t *ckey, size_t cklen,
                                           const Quiver__V1__PayloadSelector *s, qv_arena *a,
                                           keep *kp)
{
    qv_engine *e = c->eng;
    size_t vl = 0;
    char *rerr = NULL;
    char *v =
        rocksdb_get_cf(e->db, e->ro, e->cf[CF_PAYLOAD], (const char *)ckey, cklen, &vl, &rerr);
    rocksdb_free(rerr);
    Quiver__V1__Payload *out = qv__arena_alloc(a, sizeof(*out));
    if (out == NULL) {
        rocksdb_free(v);
        return NULL;
    }
    quiver__v1__payload__init(out);
    if (v == NULL)
        return out;
    Quiver__V1__Payload *p = quiver__v1__payload__unpack(NULL, vl, (const uint8_t *)v);
    rocksdb_free(v);
    if (p == NULL)
        return out;
    if (kp->n == kp->cap) {
        size_t cap = kp->cap ? kp->cap * 2 : 16;
        Quiver__V1__Payload **nv = realloc(kp->v, cap * sizeof(*nv));
        if (nv == NULL) {
            quiver__v1__payload__free_unpacked(p, NULL);
            return out;
        }
        kp->v = nv;
        kp->cap = cap;
    }
    kp->v[kp->n++] = p;
    Quiver__V1__Payload__FieldsEntry **fe =
        qv__arena_alloc(a, (p->n_fields ? p->n_fields : 1) * sizeof(*fe));
    if (fe == NULL)
        return out;
    size_t m = 0;
    for (size_t i = 0; i < p->n_fields; i++) {
        const char *key = p->fields[i]->key;
        bool take = s->selector_case == QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_ENABLE ||
                    (s->selector_case == QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_INCLUDE &&
                     listed(s->include, key)) ||
                    (s->selector_case == QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_EXCLUDE &&
                     !listed(s->exclude, key));
        if (take)
            fe[m++] = p->fields[i];
    }
    out->n_fields = m;
    out->fields = fe;
    return out;
}

/* Reads a point's stored vector and version. */
static bool read_vector(qv_coll *c, const uint8_t *ckey, size_t cklen, float *vec,
                        uint64_t *version, uint32_t *iid)
{
    qv_engine *e = c->eng;
    size_t vl = 0;
    char *rerr = NULL;
    char *v =
        rocksdb_get_cf(e->db, e->ro, e->cf[CF_VECTORS], (const char *)ckey, cklen, &vl, &rerr);
    rocksdb_free(rerr);
    if (v == NULL)
        return false;
    uint32_t tmp;
    bool ok = qv__vec_value_decode(c, v, vl, iid != NULL ? iid : &tmp, version, vec) == 0;
    rocksdb_free(v);
    return ok;
}

/* Fills a ScoredPoint for a hit; false when the point vanished meanwhile. */
static bool fill_scored(qv_coll *c, const qv_hit *h, const squery *q, qv_arena *a, keep *kp,
                        Quiver__V1__ScoredPoint *sp)
{
    uint8_t key[QV_KEY_MAX];
    size_t klen = 0;
    pthread_rwlock_rdlock(&c->rw);
    uint64_t version = 0;
    if (h->id < c->iid_cap && c->iid_klen[h->id] != 0) {
        klen = c->iid_klen[h->id];
        memcpy(key, c->iid_keys[h->id], klen);
        version = c->iid_ver[h->id];
    }
    pthread_rwlock_unlock(&c->rw);
    if (klen == 0)
        return false;
    quiver__v1__scored_point__init(sp);
    sp->version = version;
    Quiver__V1__PointId *id = qv__arena_alloc(a, sizeof(*id));
    char *ub = qv__arena_alloc(a, 40);
    if (id == NULL || ub == NULL)
        return false;
    qv__key_to_id(key, klen, id, ub);
    sp->id = id;
    sp->distance = h->distance;
    sp->shard_id = 0;
    uint8_t ck[8 + QV_KEY_MAX];
    size_t ckl = qv__coll_key(c, key, klen, ck);
    if (q->with_vectors) {
        Quiver__V1__Vector *v = qv__arena_alloc(a, sizeof(*v));
        float *data = qv__arena_alloc(a, (size_t)c->dim * sizeof(float));
        if (v == NULL || data == NULL)
            return false;
        quiver__v1__vector__init(v);
        if (!read_vector(c, ck, ckl, data, &sp->version, NULL))
            return false;
        v->n_data = c->dim;
        v->data = data;
        sp->vector = v;
    }
    if (want_payload(q->with_payload))
        sp->payload = select_payload(c, ck, ckl, q->with_payload, a, kp);
    return true;
}

/* Ascending distance, ties by id (numeric ids first, ascending; then UUIDs). */
static int scored_cmp(const void *a, const void *b)
{
    const Quiver__V1__ScoredPoint *x = *(Quiver__V1__ScoredPoint *const *)a;
    const Quiver__V1__ScoredPoint *y = *(Quiver__V1__ScoredPoint *const *)b;
    if (x->distance != y->distance)
        return x->distance < y->distance ? -1 : 1;
    bool xu = x->id->kind_case == QUIVER__V1__POINT_ID__KIND_UUID;
    bool yu = y->id->kind_case == QUIVER__V1__POINT_ID__KIND_UUID;
    if (xu != yu)
        return xu ? 1 : -1;
    if (xu)
        return strcmp(x->id->uuid, y->id->uuid);
    return x->id->num < y->id->num ? -1 : x->id->num > y->id->num;
}

/* Turns hits into ScoredPoint pointers (allocated in a). */
static Quiver__V1__ScoredPoint **build_points(qv_coll *c, const qv_hit *hits, size_t n,
                                              const squery *q, qv_arena *a, keep *kp, size_t *m)
{
    Quiver__V1__ScoredPoint **v = qv__arena_alloc(a, (n ? n : 1) * sizeof(*v));
    Quiver__V1__ScoredPoint *sp = qv__arena_alloc(a, (n ? n : 1) * sizeof(*sp));
    *m = 0;
    if (v == NULL || sp == NULL)
        return NULL;
    for (size_t i = 0; i < n; i++)
        if (fill_scored(c, &hits[i], q, a, kp, &sp[*m])) {
            v[*m] = &sp[*m];
            (*m)++;
        }
    qsort(v, *m, sizeof(*v), scored_cmp);
    return v;
}

static uint32_t shard0 = 0;

/* ---------------------------------------------------------------------------------------------
 * Collections service
 * ------------------------------------------------------------------------------------------- */

/* Checks the strings on the wire (protobuf-c would cut them at a NUL), then unpacks. */
#define UNPACK(type, fn, ctx, req, len, name)                                                      \
    qv_status wire_st_;                                                                            \
    if (qv__proto_strings_check(&fn##__descriptor, req, len, &wire_st_) != 0)                      \
        return fail(ctx, &wire_st_);                                                               \
    type *in = fn##__unpack(NULL, len, req);                                                       \
    if (in == NULL)                                                                                \
        return qv_rpc_ctx_fail(ctx, QV_EINVAL, "malformed " name);

static int coll_create(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    UNPACK(Quiver__V1__CreateCollectionRequest, quiver__v1__create_collection_request, ctx, req,
           len, "CreateCollectionRequest");
    qv_coll *c = NULL;
    bool created = false;
    qv_status st = oom_status();
    int rc = qv__engine_create(e, in, &c, &created, &st);
    quiver__v1__create_collection_request__free_unpacked(in, NULL);
    if (rc != 0)
        return fail(ctx, &st);
    qv_arena *a = qv__arena_create();
    Quiver__V1__CollectionInfo info;
    Quiver__V1__CreateCollectionResponse out = QUIVER__V1__CREATE_COLLECTION_RESPONSE__INIT;
    rc = a != NULL ? qv__coll_info(c, a, &info) : QV_ERESOURCE;
    if (rc == 0) {
        out.info = &info;
        out.created = created;
        rc = respond(ctx, &out.base);
    } else {
        rc = qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "out of memory");
    }
    qv__arena_free(a);
    qv__coll_put(c);
    return rc;
}

static int coll_describe(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    UNPACK(Quiver__V1__DescribeCollectionRequest, quiver__v1__describe_collection_request, ctx, req,
           len, "DescribeCollectionRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    int rc = qv__engine_get(e, in->name, &c, &st);
    quiver__v1__describe_collection_request__free_unpacked(in, NULL);
    if (rc != 0)
        return fail(ctx, &st);
    qv_arena *a = qv__arena_create();
    Quiver__V1__CollectionInfo info;
    Quiver__V1__DescribeCollectionResponse out = QUIVER__V1__DESCRIBE_COLLECTION_RESPONSE__INIT;
    rc = a != NULL ? qv__coll_info(c, a, &info) : QV_ERESOURCE;
    if (rc == 0) {
        out.info = &info;
        rc = respond(ctx, &out.base);
    } else {
        rc = qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "out of memory");
    }
    qv__arena_free(a);
    qv__coll_put(c);
    return rc;
}

static int coll_list(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    UNPACK(Quiver__V1__ListCollectionsRequest, quiver__v1__list_collections_request, ctx, req, len,
           "ListCollectionsRequest");
    bool with_info = in->with_info;
    quiver__v1__list_collections_request__free_unpacked(in, NULL);
    char **names = NULL;
    size_t n = 0;
    if (qv__engine_list(e, &names, &n) != 0)
        return qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "out of memory");
    Quiver__V1__ListCollectionsResponse out = QUIVER__V1__LIST_COLLECTIONS_RESPONSE__INIT;
    qv_arena *a = qv__arena_create();
    qv_coll **held = calloc(n ? n : 1, sizeof(*held));
    int rc = a != NULL && held != NULL ? 0 : QV_ERESOURCE;
    size_t m = 0;
    Quiver__V1__CollectionInfo **infos = NULL;
    char **kept = NULL;
    if (rc == 0) {
        infos = qv__arena_alloc(a, (n ? n : 1) * sizeof(*infos));
        kept = qv__arena_alloc(a, (n ? n : 1) * sizeof(*kept));
        rc = infos != NULL && kept != NULL ? 0 : QV_ERESOURCE;
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        if (!with_info) {
            kept[m++] = names[i];
            continue;
        }
        qv_status st;
        if (qv__engine_get(e, names[i], &held[m], &st) != 0)
            continue; /* dropped meanwhile */
        infos[m] = qv__arena_alloc(a, sizeof(Quiver__V1__CollectionInfo));
        if (infos[m] == NULL || qv__coll_info(held[m], a, infos[m]) != 0) {
            rc = QV_ERESOURCE;
            qv__coll_put(held[m]);
            break;
        }
        kept[m++] = names[i];
    }
    if (rc == 0) {
        out.n_names = m;
        out.names = kept;
        if (with_info) {
            out.n_infos = m;
            out.infos = infos;
        }
        rc = respond(ctx, &out.base);
    } else {
        rc = qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "out of memory");
    }
    for (size_t i = 0; with_info && held != NULL && i < m; i++)
        qv__coll_put(held[i]);
    for (size_t i = 0; i < n; i++)
        free(names[i]);
    free(names);
    free(held);
    qv__arena_free(a);
    return rc;
}

static int coll_drop(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    UNPACK(Quiver__V1__DropCollectionRequest, quiver__v1__drop_collection_request, ctx, req, len,
           "DropCollectionRequest");
    bool dropped = false;
    qv_status st = oom_status();
    int rc = qv__engine_drop(e, in->name, &dropped, &st);
    bool if_exists = in->if_exists;
    quiver__v1__drop_collection_request__free_unpacked(in, NULL);
    if (rc == QV_ENOTFOUND && if_exists)
        rc = 0;
    if (rc != 0)
        return fail(ctx, &st);
    Quiver__V1__DropCollectionResponse out = QUIVER__V1__DROP_COLLECTION_RESPONSE__INIT;
    out.dropped = dropped;
    return respond(ctx, &out.base);
}

/* ---------------------------------------------------------------------------------------------
 * Points service
 * ------------------------------------------------------------------------------------------- */

static int write_result(qv_rpc_ctx *ctx, const qv_write_out *w, uint64_t t0, bool is_delete)
{
    Quiver__V1__ShardWriteResult sr = QUIVER__V1__SHARD_WRITE_RESULT__INIT;
    Quiver__V1__ShardWriteResult *srp = &sr;
    Quiver__V1__UpdateResult ur = QUIVER__V1__UPDATE_RESULT__INIT;
    sr.shard_id = 0;
    sr.term = 1;
    sr.log_index = w->index;
    sr.status = w->applied ? QUIVER__V1__UPDATE_STATUS__UPDATE_STATUS_APPLIED
                           : QUIVER__V1__UPDATE_STATUS__UPDATE_STATUS_COMMITTED;
    sr.points = w->points;
    ur.operation_id = w->index;
    ur.status = sr.status;
    ur.n_shards = 1;
    ur.shards = &srp;
    uint64_t took = (qv_now_ns() - t0) / 1000;
    if (is_delete) {
        Quiver__V1__DeletePointsResponse out = QUIVER__V1__DELETE_POINTS_RESPONSE__INIT;
        out.result = &ur;
        out.took_us = took;
        return respond(ctx, &out.base);
    }
    Quiver__V1__UpsertPointsResponse out = QUIVER__V1__UPSERT_POINTS_RESPONSE__INIT;
    out.result = &ur;
    out.took_us = took;
    return respond(ctx, &out.base);
}

static int pts_upsert(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__UpsertPointsRequest, quiver__v1__upsert_points_request, ctx, req, len,
           "UpsertPointsRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_write_out w = {0};
    int rc = qv__engine_get(e, in->collection, &c, &st);
    if (rc == 0)
        rc = qv__coll_upsert(c, in, deadline_of(ctx), &w, &st);
    quiver__v1__upsert_points_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc != 0 ? fail(ctx, &st) : write_result(ctx, &w, t0, false);
}

static int pts_delete(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__DeletePointsRequest, quiver__v1__delete_points_request, ctx, req, len,
           "DeletePointsRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_write_out w = {0};
    filters f = {0};
    int rc = qv__engine_get(e, in->collection, &c, &st);
    bool has_ids = in->selector_case == QUIVER__V1__DELETE_POINTS_REQUEST__SELECTOR_IDS;
    bool has_filter = in->selector_case == QUIVER__V1__DELETE_POINTS_REQUEST__SELECTOR_FILTER;
    bool has_text = in->filter_text[0] != '\0';
    if (rc == 0 && !has_ids && !has_filter && !has_text) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "delete needs ids, filter or filter_text");
    }
    if (rc == 0 && has_ids && has_text) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "delete takes ids or a filter, not both");
    }
    if (rc == 0 && !has_ids)
        rc = filters_parse(&f, has_filter ? in->filter : NULL, in->filter_text, &st);
    if (rc == 0 && !has_ids && filter_is_empty(has_filter ? in->filter : NULL) &&
        filter_is_empty(f.text)) {
        /* both parts empty (a whitespace-only filter_text included) would match every point */
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "delete with an empty filter is refused; drop the "
                                       "collection to delete everything");
    }
    if (rc == 0 && !has_ids) {
        /* check fields now: an unknown field is a client error, not an empty delete */
        roaring_bitmap_t *probe = NULL;
        rc = filters_eval(c, &f, &probe, &st);
        qv__bm_free(probe);
    }
    if (rc == 0) {
        if (has_ids)
            rc = qv__coll_delete(c, in->ids->ids, in->ids->n_ids, NULL, NULL, in->wait,
                                 deadline_of(ctx), &w, &st);
        else
            rc = qv__coll_delete(c, NULL, 0, f.structured, f.text, in->wait, deadline_of(ctx), &w,
                                 &st);
    }
    filters_free(&f);
    quiver__v1__delete_points_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc != 0 ? fail(ctx, &st) : write_result(ctx, &w, t0, true);
}

static int pts_get(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__GetPointsRequest, quiver__v1__get_points_request, ctx, req, len,
           "GetPointsRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_arena *a = qv__arena_create();
    keep kp = {0};
    int rc = qv__engine_get(e, in->collection, &c, &st);
    if (rc == 0 && in->n_ids > MAX_K) {
        rc = QV_ERESOURCE;
        st = qv_status_make(QV_ERESOURCE, "get of %zu ids (at most %u)", in->n_ids, MAX_K);
    }
    if (rc == 0 && a == NULL) {
        rc = QV_ERESOURCE;
        st = qv_status_make(QV_ERESOURCE, "out of memory");
    }
    uint8_t(*keys)[QV_KEY_MAX] = NULL;
    uint8_t *klens = NULL;
    if (rc == 0) {
        keys = qv__arena_alloc(a, (in->n_ids ? in->n_ids : 1) * QV_KEY_MAX);
        klens = qv__arena_alloc(a, in->n_ids ? in->n_ids : 1);
        if (keys == NULL || klens == NULL) {
            rc = QV_ERESOURCE;
            st = qv_status_make(QV_ERESOURCE, "out of memory");
        }
    }
    if (rc == 0)
        rc = check_selector(in->with_payload, &st);
    for (size_t i = 0; rc == 0 && i < in->n_ids; i++)
        rc = qv__key_from_id(in->ids[i], keys[i], &klens[i], &st);
    Quiver__V1__GetPointsResponse out = QUIVER__V1__GET_POINTS_RESPONSE__INIT;
    if (rc == 0) {
        Quiver__V1__RetrievedPoint **v =
            qv__arena_alloc(a, (in->n_ids ? in->n_ids : 1) * sizeof(*v));
        size_t m = 0;
        for (size_t i = 0; v != NULL && i < in->n_ids; i++) {
            bool dup = false;
            for (size_t j = 0; j < i && !dup; j++)
                dup = klens[j] == klens[i] && memcmp(keys[j], keys[i], klens[i]) == 0;
            if (dup)
                continue;
            uint8_t ck[8 + QV_KEY_MAX];
            size_t ckl = qv__coll_key(c, keys[i], klens[i], ck);
            float *data = qv__arena_alloc(a, (size_t)c->dim * sizeof(float));
            Quiver__V1__RetrievedPoint *p = qv__arena_alloc(a, sizeof(*p));
            Quiver__V1__PointId *id = qv__arena_alloc(a, sizeof(*id));
            char *ub = qv__arena_alloc(a, 40);
            if (data == NULL || p == NULL || id == NULL || ub == NULL)
                break;
            quiver__v1__retrieved_point__init(p);
            if (!read_vector(c, ck, ckl, data, &p->version, NULL))
                continue;
            qv__key_to_id(keys[i], klens[i], id, ub);
            p->id = id;
            if (in->with_vectors) {
                Quiver__V1__Vector *vec = qv__arena_alloc(a, sizeof(*vec));
                if (vec == NULL)
                    break;
                quiver__v1__vector__init(vec);
                vec->n_data = c->dim;
                vec->data = data;
                p->vector = vec;
            }
            if (want_payload(in->with_payload))
                p->payload = select_payload(c, ck, ckl, in->with_payload, a, &kp);
            v[m++] = p;
        }
        out.n_points = m;
        out.points = v;
        out.took_us = (qv_now_ns() - t0) / 1000;
        rc = respond(ctx, &out.base);
    } else {
        rc = fail(ctx, &st);
    }
    keep_free(&kp);
    qv__arena_free(a);
    quiver__v1__get_points_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc;
}

/* Prepares a query from the fields common to Search and a batch query. */
static int prep_query(qv_coll *c, const Quiver__V1__Vector *vec, uint32_t k, uint32_t offset,
                      const Quiver__V1__Filter *filter, const char *filter_text,
                      const Quiver__V1__SearchParams *params, bool has_max, float max_d,
                      const Quiver__V1__PayloadSelector *wp, bool wv, squery *q, qv_arena *a,
                      const char *what, qv_status *err)
{
    memset(q, 0, sizeof(*q));
    if (vec == NULL) {
        *err = qv_status_make(QV_EINVAL, "%s: vector is required", what);
        return QV_EINVAL;
    }
    q->vec = qv__arena_alloc(a, (size_t)c->dim * sizeof(float));
    if (q->vec == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    int rc = qv__coll_check_vector(c, vec->data, vec->n_data, q->vec, what, err);
    if (rc != 0)
        return rc;
    q->k = k;
    q->offset = offset;
    if ((rc = check_k(&q->k, offset, err)) != 0)
        return rc;
    if ((rc = check_params(c, params, &q->sp, err)) != 0)
        return rc;
    if (has_max && !isfinite(max_d)) {
        *err = qv_status_make(QV_EINVAL, "%s: max_distance must be finite", what);
        return QV_EINVAL;
    }
    q->has_max = has_max;
    q->max_distance = max_d;
    if ((rc = check_selector(wp, err)) != 0)
        return rc;
    q->with_payload = wp;
    q->with_vectors = wv;
    filters f;
    rc = filters_parse(&f, filter, filter_text, err);
    if (rc == 0)
        rc = filters_eval(c, &f, &q->allow, err);
    filters_free(&f);
    return rc;
}

static int check_timeout(uint32_t t, qv_status *err)
{
    if (t > MAX_TIMEOUT_MS) {
        *err = qv_status_make(QV_EINVAL, "timeout_ms %u out of range 0..%u", t, MAX_TIMEOUT_MS);
        return QV_EINVAL;
    }
    return 0;
}

static int pts_search(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__SearchRequest, quiver__v1__search_request, ctx, req, len, "SearchRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_arena *a = qv__arena_create();
    keep kp = {0};
    squery q = {0};
    qv_hit *hits = NULL;
    int rc = a != NULL ? qv__engine_get(e, in->collection, &c, &st) : QV_ERESOURCE;
    if (a == NULL)
        st = qv_status_make(QV_ERESOURCE, "out of memory");
    if (rc == 0)
        rc = check_timeout(in->timeout_ms, &st);
    if (rc == 0)
        rc = prep_query(c, in->vector, in->k, in->offset, in->filter, in->filter_text, in->params,
                        in->opt_max_distance_case != 0, in->max_distance, in->with_payload,
                        in->with_vectors, &q, a, "query", &st);
    size_t n = 0;
    if (rc == 0) {
        hits = malloc(((size_t)q.k + q.offset) * sizeof(qv_hit));
        rc = hits != NULL ? run_search(c, &q, hits, &n, &st) : QV_ERESOURCE;
        if (hits == NULL)
            st = qv_status_make(QV_ERESOURCE, "out of memory");
    }
    if (rc == 0) {
        Quiver__V1__SearchResponse out = QUIVER__V1__SEARCH_RESPONSE__INIT;
        size_t m = 0;
        out.points = build_points(c, hits, n, &q, a, &kp, &m);
        out.n_points = out.points != NULL ? m : 0;
        out.n_searched_shards = 1;
        out.searched_shards = &shard0;
        out.took_us = (qv_now_ns() - t0) / 1000;
        rc = respond(ctx, &out.base);
    } else {
        rc = fail(ctx, &st);
    }
    qv__bm_free(q.allow);
    free(hits);
    keep_free(&kp);
    qv__arena_free(a);
    quiver__v1__search_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc;
}

static int pts_search_batch(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__SearchBatchRequest, quiver__v1__search_batch_request, ctx, req, len,
           "SearchBatchRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_arena *a = qv__arena_create();
    keep kp = {0};
    size_t nq = in->n_queries;
    squery *qs = calloc(nq ? nq : 1, sizeof(*qs));
    int rc = a != NULL && qs != NULL ? qv__engine_get(e, in->collection, &c, &st) : QV_ERESOURCE;
    if (a == NULL || qs == NULL)
        st = qv_status_make(QV_ERESOURCE, "out of memory");
    if (rc == 0 && nq == 0) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "search batch needs at least one query");
    }
    if (rc == 0 && nq > MAX_BATCH_Q) {
        rc = QV_ERESOURCE;
        st = qv_status_make(QV_ERESOURCE, "search batch of %zu queries (at most %u)", nq,
                            MAX_BATCH_Q);
    }
    if (rc == 0)
        rc = check_timeout(in->timeout_ms, &st);
    for (size_t i = 0; rc == 0 && i < nq; i++) {
        const Quiver__V1__BatchSearchQuery *b = in->queries[i];
        char what[32];
        snprintf(what, sizeof(what), "query %zu", i);
        rc = prep_query(c, b->vector, b->k, b->offset, b->filter, b->filter_text, b->params,
                        b->opt_max_distance_case != 0, b->max_distance, b->with_payload,
                        b->with_vectors, &qs[i], a, what, &st);
    }
    Quiver__V1__SearchBatchResponse out = QUIVER__V1__SEARCH_BATCH_RESPONSE__INIT;
    Quiver__V1__BatchSearchResult **res = NULL;
    if (rc == 0) {
        res = qv__arena_alloc(a, nq * sizeof(*res));
        rc = res != NULL ? 0 : QV_ERESOURCE;
    }
    for (size_t i = 0; rc == 0 && i < nq; i++) {
        qv_hit *hits = malloc(((size_t)qs[i].k + qs[i].offset) * sizeof(qv_hit));
        size_t n = 0, m = 0;
        res[i] = qv__arena_alloc(a, sizeof(Quiver__V1__BatchSearchResult));
        if (hits == NULL || res[i] == NULL) {
            free(hits);
            rc = QV_ERESOURCE;
            st = qv_status_make(QV_ERESOURCE, "out of memory");
            break;
        }
        rc = run_search(c, &qs[i], hits, &n, &st);
        if (rc == 0) {
            quiver__v1__batch_search_result__init(res[i]);
            res[i]->points = build_points(c, hits, n, &qs[i], a, &kp, &m);
            res[i]->n_points = res[i]->points != NULL ? m : 0;
            res[i]->n_searched_shards = 1;
            res[i]->searched_shards = &shard0;
        }
        free(hits);
    }
    if (rc == 0) {
        out.n_results = nq;
        out.results = res;
        out.took_us = (qv_now_ns() - t0) / 1000;
        rc = respond(ctx, &out.base);
    } else {
        rc = fail(ctx, &st);
    }
    for (size_t i = 0; qs != NULL && i < nq; i++)
        qv__bm_free(qs[i].allow);
    free(qs);
    keep_free(&kp);
    qv__arena_free(a);
    quiver__v1__search_batch_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc;
}

/* Scroll cursors: [version 1][uid 8][klen 1][key][crc32c 4]. */
static int cursor_decode(qv_coll *c, const ProtobufCBinaryData *cur, uint8_t *key, size_t *klen,
                         qv_status *err)
{
    const uint8_t *b = cur->data;
    size_t n = cur->len;
    uint32_t crc;
    if (n < 14 || b[0] != 1 || (b[9] != 9 && b[9] != 17) || n != 10u + b[9] + 4)
        goto bad;
    memcpy(&crc, b + n - 4, 4);
    if (crc != qv_crc32c(0, b, n - 4))
        goto bad;
    if (memcmp(b + 1, c->uidk, 8) != 0) {
        *err = qv_status_make(QV_EINVAL, "scroll cursor belongs to another collection (or an "
                                         "earlier incarnation of this one)");
        return QV_EINVAL;
    }
    *klen = b[9];
    memcpy(key, b + 10, *klen);
    return 0;
bad:
    *err = qv_status_make(QV_EINVAL, "scroll cursor is corrupt");
    return QV_EINVAL;
}

static uint8_t *cursor_encode(qv_coll *c, const uint8_t *key, size_t klen, qv_arena *a, size_t *len)
{
    uint8_t *b = qv__arena_alloc(a, 10 + klen + 4);
    if (b == NULL)
        return NULL;
    b[0] = 1;
    memcpy(b + 1, c->uidk, 8);
    b[9] = (uint8_t)klen;
    memcpy(b + 10, key, klen);
    uint32_t crc = qv_crc32c(0, b, 10 + klen);
    memcpy(b + 10 + klen, &crc, 4);
    *len = 10 + klen + 4;
    return b;
}

static int pts_scroll(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__ScrollPointsRequest, quiver__v1__scroll_points_request, ctx, req, len,
           "ScrollPointsRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_arena *a = qv__arena_create();
    keep kp = {0};
    roaring_bitmap_t *allow = NULL;
    filters f = {0};
    int rc = a != NULL ? qv__engine_get(e, in->collection, &c, &st) : QV_ERESOURCE;
    if (a == NULL)
        st = qv_status_make(QV_ERESOURCE, "out of memory");
    uint32_t limit = in->limit ? in->limit : 100;
    if (rc == 0 && limit > MAX_K) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "limit %u out of range 0..%u", limit, MAX_K);
    }
    uint8_t start[QV_KEY_MAX];
    size_t slen = 0;
    if (rc == 0)
        rc = check_selector(in->with_payload, &st);
    if (rc == 0 && in->cursor.len > 0)
        rc = cursor_decode(c, &in->cursor, start, &slen, &st);
    if (rc == 0)
        rc = filters_parse(&f, in->filter, in->filter_text, &st);
    if (rc == 0)
        rc = filters_eval(c, &f, &allow, &st);
    if (rc != 0) {
        rc = fail(ctx, &st);
        goto out;
    }
    Quiver__V1__RetrievedPoint **v = qv__arena_alloc(a, limit * sizeof(*v));
    size_t m = 0;
    uint8_t last[QV_KEY_MAX];
    size_t lastlen = 0;
    bool more = false;
    rocksdb_iterator_t *it = rocksdb_create_iterator_cf(e->db, e->ro, e->cf[CF_VECTORS]);
    uint8_t sk[8 + QV_KEY_MAX];
    size_t skl = slen > 0 ? qv__coll_key(c, start, slen, sk) : (memcpy(sk, c->uidk, 8), 8);
    for (rocksdb_iter_seek(it, (const char *)sk, skl); v != NULL && rocksdb_iter_valid(it);
         rocksdb_iter_next(it)) {
        size_t kl, vl;
        const char *k = rocksdb_iter_key(it, &kl);
        if (kl < 9 || memcmp(k, c->uidk, 8) != 0)
            break;
        if (slen > 0 && kl - 8 == slen && memcmp(k + 8, start, slen) == 0)
            continue; /* the cursor's own point was on the previous page */
        const char *val = rocksdb_iter_value(it, &vl);
        uint32_t iid;
        if (qv__vec_value_decode(c, val, vl, &iid, NULL, NULL) != 0)
            continue;
        if (allow != NULL && !roaring_bitmap_contains(allow, iid))
            continue;
        if (m == limit) {
            more = true;
            break;
        }
        Quiver__V1__RetrievedPoint *p = qv__arena_alloc(a, sizeof(*p));
        Quiver__V1__PointId *id = qv__arena_alloc(a, sizeof(*id));
        char *ub = qv__arena_alloc(a, 40);
        if (p == NULL || id == NULL || ub == NULL)
            break;
        quiver__v1__retrieved_point__init(p);
        qv__key_to_id((const uint8_t *)k + 8, kl - 8, id, ub);
        p->id = id;
        qv__vec_value_decode(c, val, vl, &iid, &p->version, NULL);
        if (in->with_vectors) {
            Quiver__V1__Vector *vec = qv__arena_alloc(a, sizeof(*vec));
            float *data = qv__arena_alloc(a, (size_t)c->dim * sizeof(float));
            if (vec == NULL || data == NULL)
                break;
            quiver__v1__vector__init(vec);
            qv__vec_value_decode(c, val, vl, &iid, NULL, data);
            vec->n_data = c->dim;
            vec->data = data;
            p->vector = vec;
        }
        if (want_payload(in->with_payload))
            p->payload = select_payload(c, (const uint8_t *)k, kl, in->with_payload, a, &kp);
        v[m++] = p;
        memcpy(last, k + 8, kl - 8);
        lastlen = kl - 8;
    }
    rocksdb_iter_destroy(it);
    Quiver__V1__ScrollPointsResponse out = QUIVER__V1__SCROLL_POINTS_RESPONSE__INIT;
    out.n_points = m;
    out.points = v;
    if (more && lastlen > 0) {
        size_t cl = 0;
        out.next_cursor.data = cursor_encode(c, last, lastlen, a, &cl);
        out.next_cursor.len = out.next_cursor.data != NULL ? cl : 0;
    }
    out.took_us = (qv_now_ns() - t0) / 1000;
    rc = respond(ctx, &out.base);
out:
    filters_free(&f);
    qv__bm_free(allow);
    keep_free(&kp);
    qv__arena_free(a);
    quiver__v1__scroll_points_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc;
}

static int pts_count(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__CountPointsRequest, quiver__v1__count_points_request, ctx, req, len,
           "CountPointsRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    filters f = {0};
    roaring_bitmap_t *allow = NULL;
    int rc = qv__engine_get(e, in->collection, &c, &st);
    if (rc == 0)
        rc = filters_parse(&f, in->filter, in->filter_text, &st);
    if (rc == 0)
        rc = filters_eval(c, &f, &allow, &st);
    if (rc == 0) {
        Quiver__V1__CountPointsResponse out = QUIVER__V1__COUNT_POINTS_RESPONSE__INIT;
        if (allow != NULL) {
            out.count = roaring_bitmap_get_cardinality(allow);
        } else {
            pthread_rwlock_rdlock(&c->rw);
            out.count = roaring_bitmap_get_cardinality(c->live);
            pthread_rwlock_unlock(&c->rw);
        }
        out.exact = true; /* bitmaps make every count exact */
        out.took_us = (qv_now_ns() - t0) / 1000;
        rc = respond(ctx, &out.base);
    } else {
        rc = fail(ctx, &st);
    }
    filters_free(&f);
    qv__bm_free(allow);
    quiver__v1__count_points_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc;
}

/* Distance between stored vectors, as the index reports it (smaller is closer). */
static float distance(const qv_coll *c, const float *a, const float *b)
{
    const qv_kernels *k = qv_kernels_get();
    switch (c->metric) {
    case QV_METRIC_L2:
        return k->l2sq_f32(a, b, c->dim);
    case QV_METRIC_IP:
        return -k->ip_f32(a, b, c->dim);
    default:
        return 1.0f - k->ip_f32(a, b, c->dim);
    }
}

/* Collects example vectors (ids and raw) into one array; ids' iids go to `exclude`. */
static int gather_examples(qv_coll *c, Quiver__V1__PointId **ids, size_t nids,
                           Quiver__V1__Vector **raw, size_t nraw, float *out,
                           roaring_bitmap_t *exclude, const char *what, qv_status *err)
{
    for (size_t i = 0; i < nids; i++) {
        uint8_t key[QV_KEY_MAX], klen;
        int rc = qv__key_from_id(ids[i], key, &klen, err);
        if (rc != 0)
            return rc;
        uint8_t ck[8 + QV_KEY_MAX];
        size_t ckl = qv__coll_key(c, key, klen, ck);
        uint32_t iid;
        if (!read_vector(c, ck, ckl, out + i * (size_t)c->dim, NULL, &iid)) {
            Quiver__V1__PointId pid;
            char ub[40];
            qv__key_to_id(key, klen, &pid, ub);
            if (pid.kind_case == QUIVER__V1__POINT_ID__KIND_NUM)
                *err = qv_status_make(QV_ENOTFOUND, "%s example point %llu does not exist", what,
                                      (unsigned long long)pid.num);
            else
                *err = qv_status_make(QV_ENOTFOUND, "%s example point %s does not exist", what, ub);
            return QV_ENOTFOUND;
        }
        roaring_bitmap_add(exclude, iid);
    }
    for (size_t i = 0; i < nraw; i++) {
        char w[48];
        snprintf(w, sizeof(w), "%s vector %zu", what, i);
        float *dst = out + (nids + i) * (size_t)c->dim;
        int rc = raw[i] == NULL
                     ? QV_EINVAL
                     : qv__coll_check_vector(c, raw[i]->data, raw[i]->n_data, dst, w, err);
        if (raw[i] == NULL)
            *err = qv_status_make(QV_EINVAL, "%s is empty", w);
        if (rc != 0)
            return rc;
    }
    return 0;
}

static int pts_recommend(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_engine *e = user;
    uint64_t t0 = qv_now_ns();
    UNPACK(Quiver__V1__RecommendRequest, quiver__v1__recommend_request, ctx, req, len,
           "RecommendRequest");
    qv_coll *c = NULL;
    qv_status st = oom_status();
    qv_arena *a = qv__arena_create();
    keep kp = {0};
    squery q = {0};
    filters f = {0};
    float *pos = NULL, *neg = NULL;
    qv_hit *hits = NULL;
    roaring_bitmap_t *exclude = roaring_bitmap_create();
    size_t npos = in->n_positive + in->n_positive_vectors;
    size_t nneg = in->n_negative + in->n_negative_vectors;
    int rc =
        a != NULL && exclude != NULL ? qv__engine_get(e, in->collection, &c, &st) : QV_ERESOURCE;
    if (a == NULL || exclude == NULL)
        st = qv_status_make(QV_ERESOURCE, "out of memory");
    if (rc == 0 && npos == 0) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "recommend needs at least one positive example");
    }
    if (rc == 0 && npos + nneg > MAX_EXAMPLES) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "recommend takes at most %u examples, got %zu", MAX_EXAMPLES,
                            npos + nneg);
    }
    bool best = in->strategy == QUIVER__V1__RECOMMEND_STRATEGY__RECOMMEND_STRATEGY_BEST_SCORE;
    if (rc == 0 && in->strategy != QUIVER__V1__RECOMMEND_STRATEGY__RECOMMEND_STRATEGY_UNSPECIFIED &&
        in->strategy != QUIVER__V1__RECOMMEND_STRATEGY__RECOMMEND_STRATEGY_AVERAGE_VECTOR &&
        !best) {
        rc = QV_EINVAL;
        st = qv_status_make(QV_EINVAL, "unknown recommend strategy %d", (int)in->strategy);
    }
    if (rc == 0)
        rc = check_timeout(in->timeout_ms, &st);
    if (rc == 0) {
        pos = malloc(npos * (size_t)c->dim * sizeof(float));
        neg = malloc((nneg ? nneg : 1) * (size_t)c->dim * sizeof(float));
        if (pos == NULL || neg == NULL) {
            rc = QV_ERESOURCE;
            st = qv_status_make(QV_ERESOURCE, "out of memory");
        }
    }
    if (rc == 0)
        rc = gather_examples(c, in->positive, in->n_positive, in->positive_vectors,
                             in->n_positive_vectors, pos, exclude, "positive", &st);
    if (rc == 0)
        rc = gather_examples(c, in->negative, in->n_negative, in->negative_vectors,
                             in->n_negative_vectors, neg, exclude, "negative", &st);
    /* the query for the average strategy: p + (p - n) */
    Quiver__V1__Vector qv = QUIVER__V1__VECTOR__INIT;
    float *avg = NULL;
    if (rc == 0) {
        avg = qv__arena_alloc(a, (size_t)c->dim * sizeof(float));
        if (avg == NULL) {
            rc = QV_ERESOURCE;
            st = qv_status_make(QV_ERESOURCE, "out of memory");
        }
    }
    if (rc == 0 && !best) {
        for (uint32_t d = 0; d < c->dim && rc == 0; d++) {
            double p = 0, n = 0;
            for (size_t i = 0; i < npos; i++)
                p += pos[i * (size_t)c->dim + d];
            p /= (double)npos;
            for (size_t i = 0; i < nneg; i++)
                n += neg[i * (size_t)c->dim + d];
            avg[d] = nneg > 0 ? (float)(2 * p - n / (double)nneg) : (float)p;
            if (!isfinite(avg[d])) {
                rc = QV_EINVAL;
                st = qv_status_make(QV_EINVAL,
                                    "the examples' combined vector (p + (p - n)) overflows "
                                    "float32 in component %u; use BEST_SCORE or other examples",
                                    d);
            }
        }
    }
    if (rc == 0) {
        /* BEST_SCORE searches from each positive example itself; the first one stands in here
         * for the checks of k, offset, filter and params that every strategy shares. */
        qv.n_data = c->dim;
        qv.data = best ? pos : avg;
        rc = prep_query(c, &qv, in->k, in->offset, in->filter, in->filter_text, in->params,
                        in->opt_max_distance_case != 0, in->max_distance, in->with_payload,
                        in->with_vectors, &q, a, "recommend query", &st);
        if (rc == QV_EINVAL && strstr(st.msg, "zero vector") != NULL)
            st = qv_status_make(QV_EINVAL, "the examples cancel out (their combined vector is "
                                           "zero); use BEST_SCORE or other examples");
    }
    if (rc == 0 && roaring_bitmap_get_cardinality(exclude) > 0) {
        /* never return an example: allow = (filter or every point) minus the examples */
        if (q.allow == NULL) {
            pthread_rwlock_rdlock(&c->rw);
            q.allow = roaring_bitmap_copy(c->live);
            pthread_rwlock_unlock(&c->rw);
        }
        if (q.allow != NULL)
            roaring_bitmap_andnot_inplace(q.allow, exclude);
    }
    size_t n = 0;
    size_t kk = (size_t)q.k + q.offset;
    if (rc == 0 && !best) {
        hits = malloc(kk * sizeof(qv_hit));
        rc = hits != NULL ? run_search(c, &q, hits, &n, &st) : QV_ERESOURCE;
    } else if (rc == 0) {
        /* one search per positive; keep candidates nearer some positive than every negative */
        squery one = q;
        one.offset = 0;
        one.k = (uint32_t)kk;
        one.has_max = false;
        hits = malloc(kk * npos * sizeof(qv_hit));
        qv_hit *tmp = malloc(kk * sizeof(qv_hit));
        float *cv = malloc((size_t)c->dim * sizeof(float));
        rc = hits != NULL && tmp != NULL && cv != NULL ? 0 : QV_ERESOURCE;
        size_t total = 0;
        roaring_bitmap_t *seen = rc == 0 ? roaring_bitmap_create() : NULL;
        if (rc == 0 && seen == NULL)
            rc = QV_ERESOURCE;
        for (size_t i = 0; rc == 0 && i < npos; i++) {
            one.vec = pos + i * (size_t)c->dim;
            size_t got = 0;
            rc = run_search(c, &one, tmp, &got, &st);
            for (size_t j = 0; rc == 0 && j < got; j++)
                if (roaring_bitmap_add_checked(seen, (uint32_t)tmp[j].id))
                    hits[total++] = tmp[j];
        }
        qv__bm_free(seen);
        size_t m = 0;
        for (size_t i = 0; rc == 0 && i < total; i++) {
            uint8_t key[QV_KEY_MAX];
            size_t klen = 0;
            pthread_rwlock_rdlock(&c->rw);
            if (hits[i].id < c->iid_cap && c->iid_klen[hits[i].id] != 0) {
                klen = c->iid_klen[hits[i].id];
                memcpy(key, c->iid_keys[hits[i].id], klen);
            }
            pthread_rwlock_unlock(&c->rw);
            uint8_t ck[8 + QV_KEY_MAX];
            if (klen == 0 || !read_vector(c, ck, qv__coll_key(c, key, klen, ck), cv, NULL, NULL))
                continue;
            float dp = INFINITY, dn = INFINITY;
            for (size_t p = 0; p < npos; p++) {
                float d = distance(c, cv, pos + p * (size_t)c->dim);
                dp = d < dp ? d : dp;
            }
            for (size_t p = 0; p < nneg; p++) {
                float d = distance(c, cv, neg + p * (size_t)c->dim);
                dn = d < dn ? d : dn;
            }
            if (dn < dp)
                continue;
            hits[m].id = hits[i].id;
            hits[m].distance = dp;
            m++;
        }
        if (rc == 0) {
            qsort(hits, m, sizeof(qv_hit), hit_cmp);
            size_t r = 0;
            for (size_t i = q.offset; i < m && r < q.k; i++) {
                if (q.has_max && hits[i].distance > q.max_distance)
                    break;
                hits[r++] = hits[i];
            }
            n = r;
        }
        if (rc == QV_ERESOURCE && st.code != QV_ERESOURCE)
            st = qv_status_make(QV_ERESOURCE, "out of memory");
        free(tmp);
        free(cv);
    }
    if (rc == 0) {
        Quiver__V1__RecommendResponse out = QUIVER__V1__RECOMMEND_RESPONSE__INIT;
        size_t m = 0;
        out.points = build_points(c, hits, n, &q, a, &kp, &m);
        out.n_points = out.points != NULL ? m : 0;
        out.n_searched_shards = 1;
        out.searched_shards = &shard0;
        out.took_us = (qv_now_ns() - t0) / 1000;
        rc = respond(ctx, &out.base);
    } else {
        rc = fail(ctx, &st);
    }
    free(pos);
    free(neg);
    free(hits);
    filters_free(&f);
    qv__bm_free(q.allow);
    qv__bm_free(exclude);
    keep_free(&kp);
    qv__arena_free(a);
    quiver__v1__recommend_request__free_unpacked(in, NULL);
    qv__coll_put(c);
    return rc;
}

int qv__node_register_data_services(qv_engine *e, qv_rpc_server *srv)
{
    static const struct {
        const char *method;
        qv_rpc_handler fn;
    } m[] = {
        {"/quiver.v1.Collections/Create", coll_create},
        {"/quiver.v1.Collections/Describe", coll_describe},
        {"/quiver.v1.Collections/List", coll_list},
        {"/quiver.v1.Collections/Drop", coll_drop},
        {"/quiver.v1.Points/Upsert", pts_upsert},
        {"/quiver.v1.Points/Delete", pts_delete},
        {"/quiver.v1.Points/Get", pts_get},
        {"/quiver.v1.Points/Search", pts_search},
        {"/quiver.v1.Points/SearchBatch", pts_search_batch},
        {"/quiver.v1.Points/Scroll", pts_scroll},
        {"/quiver.v1.Points/Count", pts_count},
        {"/quiver.v1.Points/Recommend", pts_recommend},
    };
    for (size_t i = 0; i < sizeof(m) / sizeof(m[0]); i++) {
        int rc = qv_rpc_server_register(srv, m[i].method, m[i].fn, e);
        if (rc != 0)
            return rc;
    }
    return 0;
}
