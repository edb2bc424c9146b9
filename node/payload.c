/* Payload validation, the payload index (bitmaps per field value) and filter evaluation. */
#define _GNU_SOURCE
#include "node/payload.h"

#include "node/hmap.h"

#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Validation
 * ------------------------------------------------------------------------------------------- */

bool qv__utf8_valid(const char *str, size_t len)
{
    const uint8_t *s = (const uint8_t *)str;
    size_t i = 0;
    while (i < len) {
        uint8_t c = s[i];
        size_t n;
        uint32_t cp;
        if (c < 0x80) {
            i++;
            continue;
        } else if ((c & 0xE0) == 0xC0) {
            n = 1;
            cp = c & 0x1F;
        } else if ((c & 0xF0) == 0xE0) {
            n = 2;
            cp = c & 0x0F;
        } else if ((c & 0xF8) == 0xF0) {
            n = 3;
            cp = c & 0x07;
        } else {
            return false;
        }
        if (i + n >= len)
            return false;
        for (size_t k = 1; k <= n; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
            cp = (cp << 6) | (s[i + k] & 0x3F);
        }
        if ((n == 1 && cp < 0x80) || (n == 2 && cp < 0x800) || (n == 3 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF))
            return false;
        i += n + 1;
    }
    return true;
}

static bool read_varint(const uint8_t *b, size_t len, size_t *o, uint64_t *v)
{
    *v = 0;
    for (int shift = 0; shift < 64 && *o < len; shift += 7) {
        uint8_t byte = b[(*o)++];
        *v |= (uint64_t)(byte & 0x7F) << shift;
        if ((byte & 0x80) == 0)
            return true;
    }
    return false;
}

static int strings_check(const ProtobufCMessageDescriptor *d, const uint8_t *b, size_t len,
                         int depth, qv_status *err)
{
    size_t o = 0;
    while (o < len && depth < 64) {
        uint64_t tag, n;
        if (!read_varint(b, len, &o, &tag))
            return 0;
        switch (tag & 7) {
        case 0:
            if (!read_varint(b, len, &o, &n))
                return 0;
            break;
        case 1:
            o += 8;
            break;
        case 5:
            o += 4;
            break;
        case 2: {
            if (!read_varint(b, len, &o, &n) || n > len - o)
                return 0;
            const ProtobufCFieldDescriptor *f =
                tag >> 3 <= UINT32_MAX
                    ? protobuf_c_message_descriptor_get_field(d, (unsigned)(tag >> 3))
                    : NULL;
            if (f != NULL && f->type == PROTOBUF_C_TYPE_STRING &&
                (memchr(b + o, 0, n) != NULL || !qv__utf8_valid((const char *)b + o, n))) {
                *err = qv_status_make(QV_EINVAL,
                                      "%s.%s: string is not valid UTF-8 or holds a NUL "
                                      "byte",
                                      d->short_name, f->name);
                return QV_EINVAL;
            }
            if (f != NULL && f->type == PROTOBUF_C_TYPE_MESSAGE) {
                int rc = strings_check(f->descriptor, b + o, n, depth + 1, err);
                if (rc != 0)
                    return rc;
            }
            o += n;
            break;
        }
        default:
            return 0;
        }
    }
    return 0;
}

int qv__proto_strings_check(const ProtobufCMessageDescriptor *d, const uint8_t *buf, size_t len,
                            qv_status *err)
{
    return strings_check(d, buf, len, 0, err);
}

static int validate_value(const Quiver__V1__Value *v, const char *key, int depth, qv_status *err)
{
    if (v == NULL)
        return 0;
    switch (v->kind_case) {
    case QUIVER__V1__VALUE__KIND_STRING_VALUE:
        if (!qv__utf8_valid(v->string_value, strlen(v->string_value))) {
            *err = qv_status_make(QV_EINVAL, "payload key '%.64s': string is not valid UTF-8", key);
            return QV_EINVAL;
        }
        return 0;
    case QUIVER__V1__VALUE__KIND_DOUBLE_VALUE:
        if (!isfinite(v->double_value)) {
            *err = qv_status_make(QV_EINVAL, "payload key '%.64s': double is not finite", key);
            return QV_EINVAL;
        }
        return 0;
    case QUIVER__V1__VALUE__KIND_LIST_VALUE:
        if (depth >= QV_PAYLOAD_MAX_DEPTH) {
            *err = qv_status_make(QV_EINVAL, "payload key '%.64s': lists nest deeper than %d", key,
                                  QV_PAYLOAD_MAX_DEPTH);
            return QV_EINVAL;
        }
        if (v->list_value == NULL)
            return 0;
        if (v->list_value->n_values > QV_PAYLOAD_MAX_LIST) {
            *err = qv_status_make(QV_EINVAL, "payload key '%.64s': list of %zu values (at most %d)",
                                  key, v->list_value->n_values, QV_PAYLOAD_MAX_LIST);
            return QV_EINVAL;
        }
        for (size_t i = 0; i < v->list_value->n_values; i++) {
            int rc = validate_value(v->list_value->values[i], key, depth + 1, err);
            if (rc != 0)
                return rc;
        }
        return 0;
    default:
        return 0;
    }
}

int qv__payload_validate(const Quiver__V1__Payload *p, qv_status *err)
{
    if (p == NULL)
        return 0;
    if (p->n_fields > QV_PAYLOAD_MAX_KEYS) {
        *err = qv_status_make(QV_EINVAL, "payload has %zu keys (at most %d)", p->n_fields,
                              QV_PAYLOAD_MAX_KEYS);
        return QV_EINVAL;
    }
    for (size_t i = 0; i < p->n_fields; i++) {
        const char *k = p->fields[i]->key;
        size_t kl = strlen(k);
        if (kl == 0 || kl > QV_PAYLOAD_MAX_KEY) {
            *err = qv_status_make(QV_EINVAL, "payload key of %zu bytes (must be 1..%d)", kl,
                                  QV_PAYLOAD_MAX_KEY);
            return QV_EINVAL;
        }
        if (!qv__utf8_valid(k, kl)) {
            *err = qv_status_make(QV_EINVAL, "payload key is not valid UTF-8");
            return QV_EINVAL;
        }
        for (size_t j = 0; j < i; j++)
            if (strcmp(p->fields[j]->key, k) == 0) {
                *err = qv_status_make(QV_EINVAL, "payload key '%.64s' appears twice", k);
                return QV_EINVAL;
            }
        int rc = validate_value(p->fields[i]->value, k, 0, err);
        if (rc != 0)
            return rc;
    }
    size_t bytes = quiver__v1__payload__get_packed_size(p);
    if (bytes > QV_PAYLOAD_MAX_BYTES) {
        *err = qv_status_make(QV_EINVAL, "payload of %zu bytes serialised (at most %d)", bytes,
                              QV_PAYLOAD_MAX_BYTES);
        return QV_EINVAL;
    }
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * Index
 * ------------------------------------------------------------------------------------------- */

/* Value keys inside a field's map: a tag byte then the value. */
enum { TAG_STR = 's', TAG_INT = 'i', TAG_NUM = 'd', TAG_BOOL = 'b' };

typedef struct num_entry {
    double v;
    roaring_bitmap_t *bm;
} num_entry;

typedef struct field_index {
    qv_hmap values;            /* tagged value -> roaring_bitmap_t* */
    roaring_bitmap_t *present; /* has the key */
    roaring_bitmap_t *null_;   /* top-level value is null */
    roaring_bitmap_t *filled;  /* holds at least one non-null value */
    /* sorted distinct numbers for ranges; rebuilt when dirty, under cache_mu */
    pthread_mutex_t cache_mu;
    bool dirty;
    num_entry *nums;
    size_t nnums;
} field_index;

struct qv_pidx {
    qv_hmap fields; /* name -> field_index* */
};

qv_pidx *qv__pidx_create(void)
{
    return calloc(1, sizeof(qv_pidx));
}

static void free_bitmap_cb(const uint8_t *key, size_t klen, void *val, void *u)
{
    roaring_bitmap_free(val);
}

static void free_field_cb(const uint8_t *key, size_t klen, void *val, void *u)
{
    field_index *f = val;
    qv__hmap_each(&f->values, free_bitmap_cb, NULL);
    qv__hmap_free(&f->values);
    qv__bm_free(f->present);
    qv__bm_free(f->null_);
    qv__bm_free(f->filled);
    pthread_mutex_destroy(&f->cache_mu);
    free(f->nums);
    free(f);
}

void qv__pidx_free(qv_pidx *px)
{
    if (px == NULL)
        return;
    qv__hmap_each(&px->fields, free_field_cb, NULL);
    qv__hmap_free(&px->fields);
    free(px);
}

static field_index *field_get(qv_pidx *px, const char *name, bool create)
{
    size_t nl = strlen(name);
    void **slot = qv__hmap_get(&px->fields, name, nl);
    if (slot != NULL)
        return *slot;
    if (!create)
        return NULL;
    field_index *f = calloc(1, sizeof(*f));
    if (f == NULL)
        return NULL;
    f->present = roaring_bitmap_create();
    f->null_ = roaring_bitmap_create();
    f->filled = roaring_bitmap_create();
    pthread_mutex_init(&f->cache_mu, NULL);
    f->dirty = true;
    if (f->present == NULL || f->null_ == NULL || f->filled == NULL ||
        qv__hmap_put(&px->fields, name, nl, f, NULL) != 0) {
        free_field_cb(NULL, 0, f, NULL);
        return NULL;
    }
    return f;
}

static size_t key_num(uint8_t *k, double d)
{
    if (d == 0.0)
        d = 0.0; /* -0.0 and 0.0 are one key */
    k[0] = TAG_NUM;
    memcpy(k + 1, &d, 8);
    return 9;
}

static size_t key_int(uint8_t *k, int64_t v)
{
    k[0] = TAG_INT;
    memcpy(k + 1, &v, 8);
    return 9;
}

static int bm_add(field_index *f, const void *key, size_t klen, uint32_t iid)
{
    void **slot = qv__hmap_get(&f->values, key, klen);
    roaring_bitmap_t *bm;
    if (slot != NULL) {
        bm = *slot;
    } else {
        bm = roaring_bitmap_create();
        if (bm == NULL || qv__hmap_put(&f->values, key, klen, bm, NULL) != 0) {
            qv__bm_free(bm);
            return QV_ERESOURCE;
        }
        if (((const uint8_t *)key)[0] == TAG_NUM)
            f->dirty = true;
    }
    roaring_bitmap_add(bm, iid);
    return 0;
}

static void bm_remove(field_index *f, const void *key, size_t klen, uint32_t iid)
{
    void **slot = qv__hmap_get(&f->values, key, klen);
    if (slot == NULL)
        return;
    roaring_bitmap_t *bm = *slot;
    roaring_bitmap_remove(bm, iid);
    if (roaring_bitmap_is_empty(bm)) {
        qv__hmap_del(&f->values, key, klen);
        qv__bm_free(bm);
        if (((const uint8_t *)key)[0] == TAG_NUM)
            f->dirty = true;
    }
}

/* Adds (add = true) or removes iid under every key of value v (lists recursively); *filled is
 * set when some non-null value was seen. */
static int index_value(field_index *f, const Quiver__V1__Value *v, uint32_t iid, bool add,
                       bool *filled)
{
    if (v == NULL)
        return 0;
    uint8_t kbuf[9];
    const void *key = kbuf;
    size_t klen = 0;
    uint8_t *skey = NULL;
    int rc = 0;
    switch (v->kind_case) {
    case QUIVER__V1__VALUE__KIND_STRING_VALUE: {
        size_t sl = strlen(v->string_value);
        skey = malloc(sl + 1);
        if (skey == NULL)
            return QV_ERESOURCE;
        skey[0] = TAG_STR;
        memcpy(skey + 1, v->string_value, sl);
        key = skey;
        klen = sl + 1;
        break;
    }
    case QUIVER__V1__VALUE__KIND_INTEGER_VALUE:
        klen = key_int(kbuf, v->integer_value);
        if (add)
            rc = bm_add(f, kbuf, klen, iid);
        else
            bm_remove(f, kbuf, klen, iid);
        if (rc != 0)
            return rc;
        klen = key_num(kbuf, (double)v->integer_value);
        break;
    case QUIVER__V1__VALUE__KIND_DOUBLE_VALUE: {
        double d = v->double_value;
        if (d == floor(d) && d >= -9223372036854775808.0 && d < 9223372036854775808.0) {
            klen = key_int(kbuf, (int64_t)d);
            if (add)
                rc = bm_add(f, kbuf, klen, iid);
            else
                bm_remove(f, kbuf, klen, iid);
            if (rc != 0)
                return rc;
        }
        klen = key_num(kbuf, d);
        break;
    }
    case QUIVER__V1__VALUE__KIND_BOOL_VALUE:
        kbuf[0] = TAG_BOOL;
        kbuf[1] = v->bool_value ? 1 : 0;
        klen = 2;
        break;
    case QUIVER__V1__VALUE__KIND_LIST_VALUE:
        if (v->list_value != NULL)
            for (size_t i = 0; i < v->list_value->n_values && rc == 0; i++)
                rc = index_value(f, v->list_value->values[i], iid, add, filled);
        return rc;
    default: /* null or unset */
        return 0;
    }
    *filled = true;
    if (add)
        rc = bm_add(f, key, klen, iid);
    else
        bm_remove(f, key, klen, iid);
    free(skey);
    return rc;
}

static bool is_null_value(const Quiver__V1__Value *v)
{
    return v == NULL || v->kind_case == QUIVER__V1__VALUE__KIND__NOT_SET ||
           v->kind_case == QUIVER__V1__VALUE__KIND_NULL_VALUE;
}

int qv__pidx_add(qv_pidx *px, uint32_t iid, const Quiver__V1__Payload *p)
{
    if (p == NULL)
        return 0;
    for (size_t i = 0; i < p->n_fields; i++) {
        field_index *f = field_get(px, p->fields[i]->key, true);
        if (f == NULL)
            return QV_ERESOURCE;
        roaring_bitmap_add(f->present, iid);
        if (is_null_value(p->fields[i]->value))
            roaring_bitmap_add(f->null_, iid);
        bool filled = false;
        int rc = index_value(f, p->fields[i]->value, iid, true, &filled);
        if (rc != 0)
            return rc;
        if (filled)
            roaring_bitmap_add(f->filled, iid);
    }
    return 0;
}

void qv__pidx_remove(qv_pidx *px, uint32_t iid, const Quiver__V1__Payload *p)
{
    if (p == NULL)
        return;
    for (size_t i = 0; i < p->n_fields; i++) {
        field_index *f = field_get(px, p->fields[i]->key, false);
        if (f == NULL)
            continue;
        roaring_bitmap_remove(f->present, iid);
        roaring_bitmap_remove(f->null_, iid);
        roaring_bitmap_remove(f->filled, iid);
        bool filled = false;
        (void)index_value(f, p->fields[i]->value, iid, false, &filled);
    }
}

typedef struct stats_acc {
    size_t bytes;
} stats_acc;

static void stats_bm_cb(const uint8_t *key, size_t klen, void *val, void *u)
{
    ((stats_acc *)u)->bytes += roaring_bitmap_size_in_bytes(val) + klen + 32;
}

static void stats_field_cb(const uint8_t *key, size_t klen, void *val, void *u)
{
    field_index *f = val;
    stats_acc *a = u;
    qv__hmap_each(&f->values, stats_bm_cb, u);
    a->bytes += roaring_bitmap_size_in_bytes(f->present) + roaring_bitmap_size_in_bytes(f->null_) +
                roaring_bitmap_size_in_bytes(f->filled) + f->nnums * sizeof(num_entry);
}

void qv__pidx_stats(qv_pidx *px, size_t *fields, size_t *bytes)
{
    stats_acc a = {0};
    qv__hmap_each(&px->fields, stats_field_cb, &a);
    *fields = px->fields.len;
    *bytes = a.bytes;
}

/* ---------------------------------------------------------------------------------------------
 * Filters
 * ------------------------------------------------------------------------------------------- */

static int vfail(qv_status *err, int code, const char *msg, const char *field)
{
    *err = qv_status_make(code, "filter: %s%s%.64s%s", msg, field ? " '" : "", field ? field : "",
                          field ? "'" : "");
    return code;
}

static int check_field(const char *field, qv_status *err)
{
    size_t l = strlen(field);
    if (l == 0)
        return vfail(err, QV_EINVAL, "a condition has an empty field name", NULL);
    if (l > QV_PAYLOAD_MAX_KEY)
        return vfail(err, QV_EINVAL, "field name longer than 256 bytes", NULL);
    return 0;
}

static int validate_filter(const Quiver__V1__Filter *f, int depth, size_t *count, qv_status *err);

static int validate_cond(const Quiver__V1__Condition *c, int depth, size_t *count, qv_status *err)
{
    if (c == NULL)
        return vfail(err, QV_EINVAL, "a condition has nothing set", NULL);
    if (++*count > QV_FILTER_MAX_CONDS) {
        *err = qv_status_make(QV_EINVAL, "filter: more than %d conditions", QV_FILTER_MAX_CONDS);
        return QV_EINVAL;
    }
    switch (c->condition_case) {
    case QUIVER__V1__CONDITION__CONDITION_MATCH: {
        const Quiver__V1__FieldMatch *m = c->match;
        int rc = check_field(m->field, err);
        if (rc != 0)
            return rc;
        size_t n = 0;
        switch (m->match_case) {
        case QUIVER__V1__FIELD_MATCH__MATCH_KEYWORD:
            if (!qv__utf8_valid(m->keyword, strlen(m->keyword)))
                return vfail(err, QV_EINVAL, "keyword is not valid UTF-8 for field", m->field);
            return 0;
        case QUIVER__V1__FIELD_MATCH__MATCH_INTEGER:
        case QUIVER__V1__FIELD_MATCH__MATCH_BOOLEAN:
            return 0;
        case QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS:
            n = m->keywords ? m->keywords->n_values : 0;
            break;
        case QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_KEYWORDS:
            n = m->except_keywords ? m->except_keywords->n_values : 0;
            break;
        case QUIVER__V1__FIELD_MATCH__MATCH_INTEGERS:
            n = m->integers ? m->integers->n_values : 0;
            break;
        case QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_INTEGERS:
            n = m->except_integers ? m->except_integers->n_values : 0;
            break;
        default:
            return vfail(err, QV_EINVAL, "a match sets no value for field", m->field);
        }
        if (n > QV_FILTER_MAX_VALUES)
            return vfail(err, QV_EINVAL, "more than 1,024 values in a match on field", m->field);
        return 0;
    }
    case QUIVER__V1__CONDITION__CONDITION_RANGE: {
        const Quiver__V1__FieldRange *r = c->range;
        int rc = check_field(r->field, err);
        if (rc != 0)
            return rc;
        if ((r->opt_gt_case && !isfinite(r->gt)) || (r->opt_gte_case && !isfinite(r->gte)) ||
            (r->opt_lt_case && !isfinite(r->lt)) || (r->opt_lte_case && !isfinite(r->lte)))
            return vfail(err, QV_EINVAL, "range bound is not finite for field", r->field);
        return 0;
    }
    case QUIVER__V1__CONDITION__CONDITION_HAS_ID:
        if (c->has_id->n_ids > QV_FILTER_MAX_HAS_IDS) {
            *err = qv_status_make(QV_ERESOURCE, "filter: has_id lists %zu ids (at most %d)",
                                  c->has_id->n_ids, QV_FILTER_MAX_HAS_IDS);
            return QV_ERESOURCE;
        }
        return 0;
    case QUIVER__V1__CONDITION__CONDITION_IS_EMPTY:
        return check_field(c->is_empty->field, err);
    case QUIVER__V1__CONDITION__CONDITION_IS_NULL:
        return check_field(c->is_null->field, err);
    case QUIVER__V1__CONDITION__CONDITION_NESTED:
        return validate_filter(c->nested, depth + 1, count, err);
    default:
        return vfail(err, QV_EINVAL, "a condition has nothing set", NULL);
    }
}

static int validate_filter(const Quiver__V1__Filter *f, int depth, size_t *count, qv_status *err)
{
    if (depth > QV_FILTER_MAX_DEPTH) {
        *err = qv_status_make(QV_EINVAL, "filter: nested deeper than %d", QV_FILTER_MAX_DEPTH);
        return QV_EINVAL;
    }
    if (f->opt_min_should_case && f->min_should > f->n_should) {
        *err = qv_status_make(QV_EINVAL, "filter: min_should %u exceeds the %zu should conditions",
                              f->min_should, f->n_should);
        return QV_EINVAL;
    }
    const size_t ns[3] = {f->n_must, f->n_should, f->n_must_not};
    Quiver__V1__Condition **lists[3] = {f->must, f->should, f->must_not};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < ns[l]; i++) {
            int rc = validate_cond(lists[l][i], depth, count, err);
            if (rc != 0)
                return rc;
        }
    return 0;
}

int qv__filter_validate(const Quiver__V1__Filter *f, qv_status *err)
{
    size_t count = 0;
    return f == NULL ? 0 : validate_filter(f, 1, &count, err);
}

typedef struct compile_ctx {
    qv_pidx *px;
    const roaring_bitmap_t *live;
    qv_pidx_id_fn idfn;
    void *user;
    qv_status *err;
} compile_ctx;

static int unknown_field(compile_ctx *cx, const char *field)
{
    *cx->err = qv_status_make(
        QV_EINVAL, "filter: unknown field '%.64s' (no point of the collection has it)", field);
    return QV_EINVAL;
}

/* The payload field a condition tests; NULL for has_id, nested and malformed conditions. */
static const char *cond_field(const Quiver__V1__Condition *c)
{
    switch (c->condition_case) {
    case QUIVER__V1__CONDITION__CONDITION_MATCH:
        return c->match->field;
    case QUIVER__V1__CONDITION__CONDITION_RANGE:
        return c->range->field;
    case QUIVER__V1__CONDITION__CONDITION_IS_EMPTY:
        return c->is_empty->field;
    case QUIVER__V1__CONDITION__CONDITION_IS_NULL:
        return c->is_null->field;
    default:
        return NULL;
    }
}

/* Fails on the first field of f that the index has never seen. Done before evaluating, because
 * evaluation skips the conditions left once the result is empty: whether a filter is valid must
 * not depend on the data (nor on the order of its conditions). */
static int check_fields(compile_ctx *cx, const Quiver__V1__Filter *f)
{
    const size_t ns[3] = {f->n_must, f->n_should, f->n_must_not};
    Quiver__V1__Condition **lists[3] = {f->must, f->should, f->must_not};
    for (int l = 0; l < 3; l++)
        for (size_t i = 0; i < ns[l]; i++) {
            const Quiver__V1__Condition *c = lists[l][i];
            if (c->condition_case == QUIVER__V1__CONDITION__CONDITION_NESTED) {
                int rc = check_fields(cx, c->nested);
                if (rc != 0)
                    return rc;
                continue;
            }
            const char *field = cond_field(c);
            if (field != NULL && field_get(cx->px, field, false) == NULL)
                return unknown_field(cx, field);
        }
    return 0;
}

static roaring_bitmap_t *lookup_copy(field_index *f, const void *key, size_t klen)
{
    void **slot = qv__hmap_get(&f->values, key, klen);
    return slot != NULL ? roaring_bitmap_copy(*slot) : roaring_bitmap_create();
}

static void or_key(roaring_bitmap_t *acc, field_index *f, const void *key, size_t klen)
{
    void **slot = qv__hmap_get(&f->values, key, klen);
    if (slot != NULL)
        roaring_bitmap_or_inplace(acc, *slot);
}

static void or_str(roaring_bitmap_t *acc, field_index *f, const char *s, uint8_t *buf)
{
    size_t sl = strlen(s);
    buf[0] = TAG_STR;
    memcpy(buf + 1, s, sl);
    or_key(acc, f, buf, sl + 1);
}

static int num_cmp(const void *a, const void *b)
{
    double x = ((const num_entry *)a)->v, y = ((const num_entry *)b)->v;
    return x < y ? -1 : x > y;
}

typedef struct nums_acc {
    num_entry *arr;
    size_t n;
} nums_acc;

static void nums_cb(const uint8_t *key, size_t klen, void *val, void *u)
{
    nums_acc *a = u;
    if (key[0] != TAG_NUM)
        return;
    memcpy(&a->arr[a->n].v, key + 1, 8);
    a->arr[a->n].bm = val;
    a->n++;
}

/* Called with the field's cache_mu held. */
static int refresh_nums(field_index *f)
{
    if (!f->dirty)
        return 0;
    nums_acc a = {calloc(f->values.len + 1, sizeof(num_entry)), 0};
    if (a.arr == NULL)
        return QV_ERESOURCE;
    qv__hmap_each(&f->values, nums_cb, &a);
    qsort(a.arr, a.n, sizeof(num_entry), num_cmp);
    free(f->nums);
    f->nums = a.arr;
    f->nnums = a.n;
    f->dirty = false;
    return 0;
}

static roaring_bitmap_t *eval_range(compile_ctx *cx, field_index *f,
                                    const Quiver__V1__FieldRange *r)
{
    double lo = -INFINITY, hi = INFINITY;
    bool lo_incl = true, hi_incl = true;
    if (r->opt_gte_case)
        lo = r->gte;
    if (r->opt_gt_case && (r->gt > lo || (r->gt == lo && lo_incl))) {
        lo = r->gt;
        lo_incl = false;
    }
    if (r->opt_lte_case)
        hi = r->lte;
    if (r->opt_lt_case && (r->lt < hi || (r->lt == hi && hi_incl))) {
        hi = r->lt;
        hi_incl = false;
    }
    roaring_bitmap_t *out = roaring_bitmap_create();
    if (out == NULL)
        return NULL;
    pthread_mutex_lock(&f->cache_mu);
    if (refresh_nums(f) != 0) {
        pthread_mutex_unlock(&f->cache_mu);
        qv__bm_free(out);
        return NULL;
    }
    /* first entry >= lo (or > lo) */
    size_t a = 0, b = f->nnums;
    while (a < b) {
        size_t mid = (a + b) / 2;
        double v = f->nums[mid].v;
        if (v < lo || (!lo_incl && v == lo))
            a = mid + 1;
        else
            b = mid;
    }
    size_t cnt = 0;
    for (size_t i = a; i < f->nnums; i++) {
        double v = f->nums[i].v;
        if (v > hi || (!hi_incl && v == hi))
            break;
        cnt++;
    }
    if (cnt > 0) {
        const roaring_bitmap_t **bms = malloc(cnt * sizeof(*bms));
        if (bms == NULL) {
            pthread_mutex_unlock(&f->cache_mu);
            qv__bm_free(out);
            return NULL;
        }
        for (size_t i = 0; i < cnt; i++)
            bms[i] = f->nums[a + i].bm;
        roaring_bitmap_t *u = roaring_bitmap_or_many(cnt, bms);
        free(bms);
        qv__bm_free(out);
        out = u;
    }
    pthread_mutex_unlock(&f->cache_mu);
    return out;
}

static roaring_bitmap_t *eval_filter(compile_ctx *cx, const Quiver__V1__Filter *f, int *rc);

static roaring_bitmap_t *eval_match(compile_ctx *cx, field_index *f,
                                    const Quiver__V1__FieldMatch *m)
{
    uint8_t kbuf[9];
    roaring_bitmap_t *acc = NULL;
    bool except = false;
    switch (m->match_case) {
    case QUIVER__V1__FIELD_MATCH__MATCH_KEYWORD: {
        size_t sl = strlen(m->keyword);
        uint8_t *k = malloc(sl + 1);
        if (k == NULL)
            return NULL;
        k[0] = TAG_STR;
        memcpy(k + 1, m->keyword, sl);
        acc = lookup_copy(f, k, sl + 1);
        free(k);
        return acc;
    }
    case QUIVER__V1__FIELD_MATCH__MATCH_INTEGER:
        return lookup_copy(f, kbuf, key_int(kbuf, m->integer));
    case QUIVER__V1__FIELD_MATCH__MATCH_BOOLEAN:
        kbuf[0] = TAG_BOOL;
        kbuf[1] = m->boolean ? 1 : 0;
        return lookup_copy(f, kbuf, 2);
    case QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_KEYWORDS:
        except = true;
        /* fallthrough */
    case QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS: {
        const Quiver__V1__KeywordList *kl = except ? m->except_keywords : m->keywords;
        acc = roaring_bitmap_create();
        size_t maxl = 0;
        for (size_t i = 0; kl != NULL && i < kl->n_values; i++)
            if (strlen(kl->values[i]) > maxl)
                maxl = strlen(kl->values[i]);
        uint8_t *buf = malloc(maxl + 1);
        if (acc == NULL || buf == NULL) {
            free(buf);
            qv__bm_free(acc);
            return NULL;
        }
        for (size_t i = 0; kl != NULL && i < kl->n_values; i++)
            or_str(acc, f, kl->values[i], buf);
        free(buf);
        break;
    }
    case QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_INTEGERS:
        except = true;
        /* fallthrough */
    case QUIVER__V1__FIELD_MATCH__MATCH_INTEGERS: {
        const Quiver__V1__IntegerList *il = except ? m->except_integers : m->integers;
        acc = roaring_bitmap_create();
        if (acc == NULL)
            return NULL;
        for (size_t i = 0; il != NULL && i < il->n_values; i++)
            or_key(acc, f, kbuf, key_int(kbuf, il->values[i]));
        break;
    }
    default:
        return NULL;
    }
    if (except) {
        roaring_bitmap_t *all = roaring_bitmap_copy(cx->live);
        if (all == NULL) {
            qv__bm_free(acc);
            return NULL;
        }
        roaring_bitmap_andnot_inplace(all, acc);
        qv__bm_free(acc);
        return all;
    }
    return acc;
}

static roaring_bitmap_t *eval_cond(compile_ctx *cx, const Quiver__V1__Condition *c, int *rc)
{
    const char *field = cond_field(c);
    switch (c->condition_case) {
    case QUIVER__V1__CONDITION__CONDITION_NESTED:
        return eval_filter(cx, c->nested, rc);
    case QUIVER__V1__CONDITION__CONDITION_HAS_ID: {
        roaring_bitmap_t *bm = roaring_bitmap_create();
        if (bm == NULL)
            break;
        for (size_t i = 0; i < c->has_id->n_ids; i++) {
            uint32_t iid;
            if (c->has_id->ids[i] != NULL && cx->idfn(c->has_id->ids[i], &iid, cx->user))
                roaring_bitmap_add(bm, iid);
        }
        return bm;
    }
    default:
        break;
    }
    if (field == NULL) {
        *rc = QV_ERESOURCE;
        *cx->err = qv_status_make(QV_ERESOURCE, "filter: out of memory");
        return NULL;
    }
    field_index *f = field_get(cx->px, field, false);
    if (f == NULL) {
        *rc = unknown_field(cx, field);
        return NULL;
    }
    roaring_bitmap_t *bm = NULL;
    switch (c->condition_case) {
    case QUIVER__V1__CONDITION__CONDITION_MATCH:
        bm = eval_match(cx, f, c->match);
        break;
    case QUIVER__V1__CONDITION__CONDITION_RANGE:
        bm = eval_range(cx, f, c->range);
        break;
    case QUIVER__V1__CONDITION__CONDITION_IS_EMPTY:
        bm = roaring_bitmap_copy(cx->live);
        if (bm != NULL)
            roaring_bitmap_andnot_inplace(bm, f->filled);
        break;
    default:
        bm = roaring_bitmap_copy(f->null_);
        break;
    }
    if (bm == NULL) {
        *rc = QV_ERESOURCE;
        *cx->err = qv_status_make(QV_ERESOURCE, "filter: out of memory");
    }
    return bm;
}

static roaring_bitmap_t *eval_filter(compile_ctx *cx, const Quiver__V1__Filter *f, int *rc)
{
    roaring_bitmap_t *acc = roaring_bitmap_copy(cx->live);
    if (acc == NULL)
        goto oom;
    for (size_t i = 0; i < f->n_must && !roaring_bitmap_is_empty(acc); i++) {
        roaring_bitmap_t *c = eval_cond(cx, f->must[i], rc);
        if (c == NULL)
            goto fail;
        roaring_bitmap_and_inplace(acc, c);
        qv__bm_free(c);
    }
    for (size_t i = 0; i < f->n_must_not && !roaring_bitmap_is_empty(acc); i++) {
        roaring_bitmap_t *c = eval_cond(cx, f->must_not[i], rc);
        if (c == NULL)
            goto fail;
        roaring_bitmap_andnot_inplace(acc, c);
        qv__bm_free(c);
    }
    uint32_t min_should = f->opt_min_should_case ? f->min_should : (f->n_should > 0 ? 1 : 0);
    if (min_should > 0) {
        /* level[j]: points satisfying at least j+1 of the should conditions seen so far */
        roaring_bitmap_t **level = calloc(min_should, sizeof(*level));
        if (level == NULL)
            goto oom;
        bool ok = true;
        for (uint32_t j = 0; j < min_should && ok; j++)
            ok = (level[j] = roaring_bitmap_create()) != NULL;
        for (size_t i = 0; i < f->n_should && ok; i++) {
            roaring_bitmap_t *c = eval_cond(cx, f->should[i], rc);
            if (c == NULL) {
                ok = false;
                break;
            }
            for (uint32_t j = min_should - 1; j >= 1; j--) {
                roaring_bitmap_t *t = roaring_bitmap_and(level[j - 1], c);
                roaring_bitmap_or_inplace(level[j], t);
                qv__bm_free(t);
            }
            roaring_bitmap_or_inplace(level[0], c);
            qv__bm_free(c);
        }
        if (ok)
            roaring_bitmap_and_inplace(acc, level[min_should - 1]);
        for (uint32_t j = 0; j < min_should; j++)
            qv__bm_free(level[j]);
        free(level);
        if (!ok) {
            if (*rc == 0)
                goto oom;
            goto fail;
        }
    }
    return acc;
oom:
    *rc = QV_ERESOURCE;
    *cx->err = qv_status_make(QV_ERESOURCE, "filter: out of memory");
fail:
    qv__bm_free(acc);
    return NULL;
}

int qv__pidx_compile(qv_pidx *px, const Quiver__V1__Filter *f, const roaring_bitmap_t *live,
                     qv_pidx_id_fn idfn, void *user, roaring_bitmap_t **out, qv_status *err)
{
    compile_ctx cx = {px, live, idfn, user, err};
    *out = NULL;
    int rc = check_fields(&cx, f);
    if (rc != 0)
        return rc;
    *out = eval_filter(&cx, f, &rc);
    if (*out == NULL && rc == 0) {
        *err = qv_status_make(QV_ERESOURCE, "filter: out of memory");
        rc = QV_ERESOURCE;
    }
    return rc;
}
