/*
 * Tests for node/payload.c (payload validation, the payload index and the filter compiler) and
 * node/hmap.c (the hash map under the index), in-process.
 *
 * Payloads and filters are built with malloc'ed protobuf-c structs, so that
 * quiver__v1__*__free_unpacked(.., NULL) frees them. The index tests share one fixture of ten
 * points whose payloads cover every value type; expectations are written out by hand. Under
 * AddressSanitizer every test ends with a leak check of its own (Criterion would otherwise report a
 * test that leaks as passing).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "node/hmap.h"
#include "node/payload.h"

#include <float.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

/* Criterion sends every passing assertion to its runner (ctest runs it with --full-stats), which
 * makes asserting in hot loops slow: there, CHECK reports failures only. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

static void *xcalloc(size_t n, size_t size)
{
    void *p = calloc(n ? n : 1, size);
    CHECK(p != NULL, "out of memory in the test");
    return p;
}

/* ---- values and payloads --------------------------------------------------------------------- */

typedef Quiver__V1__Value Value;
typedef Quiver__V1__Payload Payload;
typedef Quiver__V1__Filter Filter;
typedef Quiver__V1__Condition Cond;

static Value *v_new(Quiver__V1__Value__KindCase kind)
{
    Value *v = xcalloc(1, sizeof(*v));
    quiver__v1__value__init(v);
    v->kind_case = kind;
    return v;
}

static Value *v_str(const char *s)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_STRING_VALUE);
    v->string_value = strdup(s);
    return v;
}

/* A string of exactly len bytes (may hold anything but NUL). */
static Value *v_bytes(const char *s, size_t len)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_STRING_VALUE);
    v->string_value = xcalloc(len + 1, 1);
    memcpy(v->string_value, s, len);
    return v;
}

static Value *v_int(int64_t x)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_INTEGER_VALUE);
    v->integer_value = x;
    return v;
}

static Value *v_dbl(double x)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    v->double_value = x;
    return v;
}

static Value *v_bool(bool b)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_BOOL_VALUE);
    v->bool_value = b;
    return v;
}

static Value *v_null(void)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_NULL_VALUE);
    v->null_value = xcalloc(1, sizeof(Quiver__V1__Null));
    quiver__v1__null__init(v->null_value);
    return v;
}

/* A Value with no member set (reads as null). */
static Value *v_unset(void)
{
    return v_new(QUIVER__V1__VALUE__KIND__NOT_SET);
}

/* A list of n values (taken over), given as arguments. */
static Value *v_list(size_t n, ...)
{
    Value *v = v_new(QUIVER__V1__VALUE__KIND_LIST_VALUE);
    v->list_value = xcalloc(1, sizeof(Quiver__V1__ListValue));
    quiver__v1__list_value__init(v->list_value);
    v->list_value->n_values = n;
    v->list_value->values = xcalloc(n, sizeof(Value *));
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        v->list_value->values[i] = va_arg(ap, Value *);
    va_end(ap);
    return v;
}

static Payload *pl_new(void)
{
    Payload *p = xcalloc(1, sizeof(*p));
    quiver__v1__payload__init(p);
    return p;
}

/* Appends key -> v (taken over). */
static void pl_set(Payload *p, const char *key, Value *v)
{
    p->fields = realloc(p->fields, (p->n_fields + 1) * sizeof(*p->fields));
    CHECK(p->fields != NULL, "out of memory in the test");
    Quiver__V1__Payload__FieldsEntry *e = xcalloc(1, sizeof(*e));
    quiver__v1__payload__fields_entry__init(e);
    e->key = strdup(key);
    e->value = v;
    p->fields[p->n_fields++] = e;
}

/* pl("k1", v1, "k2", v2, ..., NULL) */
static Payload *pl(const char *key, ...)
{
    Payload *p = pl_new();
    va_list ap;
    va_start(ap, key);
    for (const char *k = key; k != NULL; k = va_arg(ap, const char *))
        pl_set(p, k, va_arg(ap, Value *));
    va_end(ap);
    return p;
}

static void pl_free(Payload *p)
{
    if (p != NULL)
        quiver__v1__payload__free_unpacked(p, NULL);
}

/* ---- filters --------------------------------------------------------------------------------- */

static Filter *f_new(void)
{
    Filter *f = xcalloc(1, sizeof(*f));
    quiver__v1__filter__init(f);
    return f;
}

static void push(Cond ***arr, size_t *n, Cond *c)
{
    *arr = realloc(*arr, (*n + 1) * sizeof(**arr));
    CHECK(*arr != NULL, "out of memory in the test");
    (*arr)[(*n)++] = c;
}

static Filter *must(Filter *f, Cond *c)
{
    push(&f->must, &f->n_must, c);
    return f;
}

static Filter *should(Filter *f, Cond *c)
{
    push(&f->should, &f->n_should, c);
    return f;
}

static Filter *must_not(Filter *f, Cond *c)
{
    push(&f->must_not, &f->n_must_not, c);
    return f;
}

static Filter *min_should(Filter *f, uint32_t n)
{
    f->opt_min_should_case = QUIVER__V1__FILTER__OPT_MIN_SHOULD_MIN_SHOULD;
    f->min_should = n;
    return f;
}

static Cond *c_new(Quiver__V1__Condition__ConditionCase kind)
{
    Cond *c = xcalloc(1, sizeof(*c));
    quiver__v1__condition__init(c);
    c->condition_case = kind;
    return c;
}

static Quiver__V1__FieldMatch *m_new(Cond **c, const char *field,
                                     Quiver__V1__FieldMatch__MatchCase kind)
{
    *c = c_new(QUIVER__V1__CONDITION__CONDITION_MATCH);
    Quiver__V1__FieldMatch *m = xcalloc(1, sizeof(*m));
    quiver__v1__field_match__init(m);
    m->field = strdup(field);
    m->match_case = kind;
    (*c)->match = m;
    return m;
}

static Cond *c_kw(const char *field, const char *kw)
{
    Cond *c;
    m_new(&c, field, QUIVER__V1__FIELD_MATCH__MATCH_KEYWORD)->keyword = strdup(kw);
    return c;
}

static Cond *c_int(const char *field, int64_t x)
{
    Cond *c;
    m_new(&c, field, QUIVER__V1__FIELD_MATCH__MATCH_INTEGER)->integer = x;
    return c;
}

static Cond *c_bool(const char *field, bool b)
{
    Cond *c;
    m_new(&c, field, QUIVER__V1__FIELD_MATCH__MATCH_BOOLEAN)->boolean = b;
    return c;
}

/* Keyword lists: n strings; except selects except_keywords. */
static Cond *c_kws_v(const char *field, bool except, size_t n, va_list ap)
{
    Cond *c;
    Quiver__V1__FieldMatch *m = m_new(&c, field,
                                      except ? QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_KEYWORDS
                                             : QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS);
    Quiver__V1__KeywordList *l = xcalloc(1, sizeof(*l));
    quiver__v1__keyword_list__init(l);
    l->n_values = n;
    l->values = xcalloc(n, sizeof(char *));
    for (size_t i = 0; i < n; i++)
        l->values[i] = strdup(va_arg(ap, const char *));
    if (except)
        m->except_keywords = l;
    else
        m->keywords = l;
    return c;
}

static Cond *c_kws(const char *field, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    Cond *c = c_kws_v(field, false, n, ap);
    va_end(ap);
    return c;
}

static Cond *c_except_kws(const char *field, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    Cond *c = c_kws_v(field, true, n, ap);
    va_end(ap);
    return c;
}

static Cond *c_ints_v(const char *field, bool except, size_t n, va_list ap)
{
    Cond *c;
    Quiver__V1__FieldMatch *m = m_new(&c, field,
                                      except ? QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_INTEGERS
                                             : QUIVER__V1__FIELD_MATCH__MATCH_INTEGERS);
    Quiver__V1__IntegerList *l = xcalloc(1, sizeof(*l));
    quiver__v1__integer_list__init(l);
    l->n_values = n;
    l->values = xcalloc(n, sizeof(int64_t));
    for (size_t i = 0; i < n; i++)
        l->values[i] = va_arg(ap, int64_t);
    if (except)
        m->except_integers = l;
    else
        m->integers = l;
    return c;
}

static Cond *c_ints(const char *field, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    Cond *c = c_ints_v(field, false, n, ap);
    va_end(ap);
    return c;
}

static Cond *c_except_ints(const char *field, size_t n, ...)
{
    va_list ap;
    va_start(ap, n);
    Cond *c = c_ints_v(field, true, n, ap);
    va_end(ap);
    return c;
}

enum { GT = 1, GTE = 2, LT = 4, LTE = 8 };

/* A range; `set` says which of the four bounds are present. */
static Cond *c_range(const char *field, int set, double gt, double gte, double lt, double lte)
{
    Cond *c = c_new(QUIVER__V1__CONDITION__CONDITION_RANGE);
    Quiver__V1__FieldRange *r = xcalloc(1, sizeof(*r));
    quiver__v1__field_range__init(r);
    r->field = strdup(field);
    if (set & GT) {
        r->opt_gt_case = QUIVER__V1__FIELD_RANGE__OPT_GT_GT;
        r->gt = gt;
    }
    if (set & GTE) {
        r->opt_gte_case = QUIVER__V1__FIELD_RANGE__OPT_GTE_GTE;
        r->gte = gte;
    }
    if (set & LT) {
        r->opt_lt_case = QUIVER__V1__FIELD_RANGE__OPT_LT_LT;
        r->lt = lt;
    }
    if (set & LTE) {
        r->opt_lte_case = QUIVER__V1__FIELD_RANGE__OPT_LTE_LTE;
        r->lte = lte;
    }
    c->range = r;
    return c;
}

static Cond *c_is_null(const char *field)
{
    Cond *c = c_new(QUIVER__V1__CONDITION__CONDITION_IS_NULL);
    c->is_null = xcalloc(1, sizeof(Quiver__V1__IsNull));
    quiver__v1__is_null__init(c->is_null);
    c->is_null->field = strdup(field);
    return c;
}

static Cond *c_is_empty(const char *field)
{
    Cond *c = c_new(QUIVER__V1__CONDITION__CONDITION_IS_EMPTY);
    c->is_empty = xcalloc(1, sizeof(Quiver__V1__IsEmpty));
    quiver__v1__is_empty__init(c->is_empty);
    c->is_empty->field = strdup(field);
    return c;
}

/* has_id over numeric ids. */
static Cond *c_has_id(size_t n, ...)
{
    Cond *c = c_new(QUIVER__V1__CONDITION__CONDITION_HAS_ID);
    c->has_id = xcalloc(1, sizeof(Quiver__V1__HasId));
    quiver__v1__has_id__init(c->has_id);
    c->has_id->n_ids = n;
    c->has_id->ids = xcalloc(n, sizeof(Quiver__V1__PointId *));
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++) {
        Quiver__V1__PointId *id = xcalloc(1, sizeof(*id));
        quiver__v1__point_id__init(id);
        id->kind_case = QUIVER__V1__POINT_ID__KIND_NUM;
        id->num = va_arg(ap, uint64_t);
        c->has_id->ids[i] = id;
    }
    va_end(ap);
    return c;
}

static Cond *c_nested(Filter *f)
{
    Cond *c = c_new(QUIVER__V1__CONDITION__CONDITION_NESTED);
    c->nested = f;
    return c;
}

/* A filter with the single condition c in must. */
static Filter *one(Cond *c)
{
    return must(f_new(), c);
}

static void f_free(Filter *f)
{
    quiver__v1__filter__free_unpacked(f, NULL);
}

/* ---- the index fixture ----------------------------------------------------------------------- */

/* Point ids are their iids; ids 0..NPTS-1 exist. */
#define NPTS 10

static bool id_lookup(const Quiver__V1__PointId *id, uint32_t *iid, void *user)
{
    (void)user;
    if (id->kind_case != QUIVER__V1__POINT_ID__KIND_NUM || id->num >= NPTS)
        return false;
    *iid = (uint32_t)id->num;
    return true;
}

static qv_pidx *g_px;
static roaring_bitmap_t *g_live;
static Payload *g_pl[NPTS];

/*
 *  0  color red, label 3, price 9.5, flag true, tags [a, b]
 *  1  color blue, label 3.0 (a double), price 10, flag false, tags []
 *  2  color red, label 2.5, price -1, tags [b, [c, 7]]
 *  3  label null, maybe null, tags null
 *  4  (no payload)
 *  5  color Red, label -4, price 1e300, nums [1, 2.0, 3.5]
 *  6  label 2^53 + 1, price -0.0, flag [true, false]
 *  7  color "", maybe (a Value with nothing set), nums [[[0]]]
 *  8  tags "a" (a string, not a list), price 0
 *  9  flag null, nums [-2, 7]
 */
static void fixture_setup(void)
{
    g_pl[0] = pl("color", v_str("red"), "label", v_int(3), "price", v_dbl(9.5), "flag",
                 v_bool(true), "tags", v_list(2, v_str("a"), v_str("b")), NULL);
    g_pl[1] = pl("color", v_str("blue"), "label", v_dbl(3.0), "price", v_int(10), "flag",
                 v_bool(false), "tags", v_list(0), NULL);
    g_pl[2] = pl("color", v_str("red"), "label", v_dbl(2.5), "price", v_int(-1), "tags",
                 v_list(2, v_str("b"), v_list(2, v_str("c"), v_int(7))), NULL);
    g_pl[3] = pl("label", v_null(), "maybe", v_null(), "tags", v_null(), NULL);
    g_pl[4] = NULL;
    g_pl[5] = pl("color", v_str("Red"), "label", v_int(-4), "price", v_dbl(1e300), "nums",
                 v_list(3, v_int(1), v_dbl(2.0), v_dbl(3.5)), NULL);
    g_pl[6] = pl("label", v_int(9007199254740993LL), "price", v_dbl(-0.0), "flag",
                 v_list(2, v_bool(true), v_bool(false)), NULL);
    g_pl[7] = pl("color", v_str(""), "maybe", v_unset(), "nums",
                 v_list(1, v_list(1, v_list(1, v_int(0)))), NULL);
    g_pl[8] = pl("tags", v_str("a"), "price", v_int(0), NULL);
    g_pl[9] = pl("flag", v_null(), "nums", v_list(2, v_int(-2), v_int(7)), NULL);
    g_px = qv__pidx_create();
    g_live = roaring_bitmap_create();
    cr_assert_not_null(g_px);
    for (uint32_t i = 0; i < NPTS; i++) {
        qv_status err;
        cr_assert_eq(qv__payload_validate(g_pl[i], &err), 0, "point %u: %s", i, err.msg);
        cr_assert_eq(qv__pidx_add(g_px, i, g_pl[i]), 0);
        roaring_bitmap_add(g_live, i);
    }
}

static void fixture_teardown(void)
{
    qv__pidx_free(g_px);
    qv__bm_free(g_live);
    for (int i = 0; i < NPTS; i++)
        pl_free(g_pl[i]);
    memset(g_pl, 0, sizeof(g_pl));
    g_px = NULL;
    g_live = NULL;
}

/* Compiles f over live (g_live when NULL) and frees it; returns the bitmap (caller frees). */
static roaring_bitmap_t *compile_with(qv_pidx *px, Filter *f, const roaring_bitmap_t *live)
{
    qv_status err = {0};
    cr_assert_eq(qv__filter_validate(f, &err), 0, "validate: %s", err.msg);
    roaring_bitmap_t *out = NULL;
    int rc = qv__pidx_compile(px, f, live, id_lookup, NULL, &out, &err);
    cr_assert_eq(rc, 0, "compile: %s", err.msg);
    cr_assert_not_null(out);
    cr_assert(roaring_bitmap_is_subset(out, live), "result is not a subset of the live points");
    f_free(f);
    return out;
}

/* Formats a bitmap as "{1,2,3}". */
static void fmt_bm(const roaring_bitmap_t *b, char *buf, size_t len)
{
    size_t o = (size_t)snprintf(buf, len, "{");
    roaring_uint32_iterator_t *it = roaring_create_iterator(b);
    for (bool first = true; it->has_value && o < len; roaring_advance_uint32_iterator(it)) {
        o += (size_t)snprintf(buf + o, len - o, "%s%u", first ? "" : ",", it->current_value);
        first = false;
    }
    roaring_free_uint32_iterator(it);
    if (o < len)
        snprintf(buf + o, len - o, "}");
}

/* Asserts that f selects exactly the n iids given (and frees f). */
static void expect_in(qv_pidx *px, const roaring_bitmap_t *live, const char *what, Filter *f,
                      size_t n, ...)
{
    roaring_bitmap_t *want = roaring_bitmap_create();
    va_list ap;
    va_start(ap, n);
    for (size_t i = 0; i < n; i++)
        roaring_bitmap_add(want, (uint32_t)va_arg(ap, int));
    va_end(ap);
    roaring_bitmap_t *got = compile_with(px, f, live);
    char g[256], w[256];
    fmt_bm(got, g, sizeof(g));
    fmt_bm(want, w, sizeof(w));
    cr_expect(roaring_bitmap_equals(got, want), "%s: got %s, want %s", what, g, w);
    qv__bm_free(got);
    qv__bm_free(want);
}

#define EXPECT(what, f, ...) expect_in(g_px, g_live, what, f, __VA_ARGS__)

/* Expects compile to fail with QV_EINVAL and a message containing needle (frees f). */
static void expect_compile_error(qv_pidx *px, Filter *f, const char *needle)
{
    qv_status err = {0};
    cr_assert_eq(qv__filter_validate(f, &err), 0, "validate: %s", err.msg);
    roaring_bitmap_t *out = (roaring_bitmap_t *)1;
    int rc = qv__pidx_compile(px, f, g_live, id_lookup, NULL, &out, &err);
    cr_expect_eq(rc, QV_EINVAL, "rc %d (%s)", rc, err.msg);
    cr_expect_eq(err.code, QV_EINVAL);
    cr_expect_null(out, "no bitmap on error");
    if (rc == 0)
        qv__bm_free(out);
    cr_expect(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    f_free(f);
}

/* Expects validation to fail with code and a message containing needle (frees f). */
static void expect_invalid(Filter *f, int code, const char *needle)
{
    qv_status err = {0};
    int rc = qv__filter_validate(f, &err);
    cr_expect_eq(rc, code, "rc %d (%s), want %d for '%s'", rc, err.msg, code, needle);
    cr_expect(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    f_free(f);
}

/* Expects payload validation to fail with QV_EINVAL and a message containing needle (frees p). */
static void expect_bad_payload(Payload *p, const char *needle)
{
    qv_status err = {0};
    int rc = qv__payload_validate(p, &err);
    cr_expect_eq(rc, QV_EINVAL, "rc %d for '%s'", rc, needle);
    cr_expect_eq(err.code, QV_EINVAL);
    cr_expect(strstr(err.msg, needle) != NULL, "message '%s' lacks '%s'", err.msg, needle);
    pl_free(p);
}

static void expect_good_payload(Payload *p)
{
    qv_status err = {0};
    cr_expect_eq(qv__payload_validate(p, &err), 0, "%s", err.msg);
    pl_free(p);
}

/* ================================================================================================
 * Validation
 * ============================================================================================== */

Test(payload_validate, accepts_every_value_type_and_empty_payloads)
{
    expect_good_payload(pl("s", v_str("h\xc3\xa9llo \xe2\x9c\x93 \xf0\x9f\x98\x80"), "i",
                           v_int(INT64_MIN), "d", v_dbl(-1e308), "b", v_bool(false), "n", v_null(),
                           "u", v_unset(), "l",
                           v_list(4, v_int(1), v_str("x"), v_null(), v_list(0)), NULL));
    expect_good_payload(pl_new());
    qv_status err;
    cr_expect_eq(qv__payload_validate(NULL, &err), 0);
    assert_no_leaks();
}

Test(payload_validate, at_most_256_keys)
{
    char key[16];
    Payload *p = pl_new();
    for (int i = 0; i < 256; i++) {
        snprintf(key, sizeof(key), "k%d", i);
        pl_set(p, key, v_int(i));
    }
    qv_status err;
    cr_expect_eq(qv__payload_validate(p, &err), 0, "%s", err.msg);
    pl_set(p, "one-more", v_int(0));
    expect_bad_payload(p, "257 keys (at most 256)");
    assert_no_leaks();
}

Test(payload_validate, keys_are_1_to_256_bytes_of_utf8)
{
    char key[300];
    memset(key, 'k', sizeof(key));
    key[256] = '\0';
    expect_good_payload(pl(key, v_int(1), NULL));
    key[256] = 'k';
    key[257] = '\0';
    expect_bad_payload(pl(key, v_int(1), NULL), "key of 257 bytes (must be 1..256)");
    expect_bad_payload(pl("", v_int(1), NULL), "key of 0 bytes");
    expect_bad_payload(pl("ok", v_int(1), "bad\xff", v_int(2), NULL), "key is not valid UTF-8");
    expect_bad_payload(pl("twice", v_int(1), "twice", v_int(2), NULL), "key 'twice' appears twice");
    assert_no_leaks();
}

Test(payload_validate, strings_must_be_utf8_at_any_depth)
{
    static const char *const bad[] = {
        "\x80",             /* lone continuation byte */
        "ab\xc3",           /* truncated two-byte sequence */
        "\xc3\x28",         /* bad continuation */
        "\xc0\x80",         /* overlong NUL */
        "\xe0\x80\xaf",     /* overlong '/' */
        "\xed\xa0\x80",     /* UTF-16 surrogate */
        "\xf4\x90\x80\x80", /* above U+10FFFF */
        "\xf8\x88\x80\x80\x80",
        "\xff",
        "x\xe2\x82", /* truncated at the end */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_expect_not(qv__utf8_valid(bad[i], strlen(bad[i])), "case %zu accepted", i);
        expect_bad_payload(pl("name", v_str(bad[i]), NULL), "'name': string is not valid UTF-8");
        expect_bad_payload(pl("deep", v_list(2, v_str("fine"), v_list(1, v_str(bad[i]))), NULL),
                           "'deep': string is not valid UTF-8");
    }
    static const char *const good[] = {
        "",
        "plain",
        "\xc2\x80",
        "\xdf\xbf",
        "\xe0\xa0\x80",
        "\xef\xbf\xbf",
        "\xed\x9f\xbf",
        "\xee\x80\x80",
        "\xf0\x90\x80\x80",
        "\xf4\x8f\xbf\xbf",
        "a\xe2\x82\xac"
        "b",
    };
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        cr_expect(qv__utf8_valid(good[i], strlen(good[i])), "case %zu refused", i);
        expect_good_payload(pl("name", v_str(good[i]), NULL));
    }
    /* the length is honoured: bytes past it are not looked at */
    cr_expect(qv__utf8_valid("ok\xff", 2));
    cr_expect_not(qv__utf8_valid("\xe2\x82\xac", 2));
    assert_no_leaks();
}

Test(payload_validate, doubles_must_be_finite_at_any_depth)
{
    expect_bad_payload(pl("x", v_dbl(NAN), NULL), "'x': double is not finite");
    expect_bad_payload(pl("x", v_dbl(INFINITY), NULL), "'x': double is not finite");
    expect_bad_payload(pl("y", v_list(2, v_dbl(1.0), v_list(1, v_dbl(-INFINITY))), NULL),
                       "'y': double is not finite");
    expect_good_payload(pl("x", v_dbl(DBL_MAX), "z", v_dbl(-0.0), "t", v_dbl(4.9e-324), NULL));
    assert_no_leaks();
}

static Value *nest(int lists)
{
    Value *v = v_int(1);
    for (int i = 0; i < lists; i++)
        v = v_list(1, v);
    return v;
}

Test(payload_validate, lists_nest_at_most_8_deep)
{
    expect_good_payload(pl("deep", nest(8), NULL));
    expect_bad_payload(pl("deep", nest(9), NULL), "'deep': lists nest deeper than 8");
    /* an empty list at depth 9 counts too */
    Value *v = v_list(0);
    for (int i = 0; i < 8; i++)
        v = v_list(1, v);
    expect_bad_payload(pl("deep", v, NULL), "nest deeper than 8");
    assert_no_leaks();
}

Test(payload_validate, lists_hold_at_most_10000_values)
{
    Value *l = v_list(0);
    free(l->list_value->values);
    l->list_value->values = xcalloc(10001, sizeof(Value *));
    for (int i = 0; i < 10000; i++)
        l->list_value->values[l->list_value->n_values++] = v_bool(i % 2);
    Payload *p = pl("l", l, NULL);
    qv_status err;
    cr_expect_eq(qv__payload_validate(p, &err), 0, "%s", err.msg);
    l->list_value->values[l->list_value->n_values++] = v_bool(true);
    expect_bad_payload(p, "list of 10001 values (at most 10000)");
    assert_no_leaks();
}

Test(payload_validate, serialised_payload_is_at_most_64_kib)
{
    /* grow one string until the packed payload is exactly 65,536 bytes */
    static char blob[70000];
    memset(blob, 'x', sizeof(blob));
    size_t len = 65000;
    Payload *p = NULL;
    for (;; len++) {
        p = pl("blob", v_bytes(blob, len), NULL);
        size_t sz = quiver__v1__payload__get_packed_size(p);
        if (sz >= 65536) {
            cr_assert_eq(sz, 65536, "packed size jumped to %zu", sz);
            break;
        }
        pl_free(p);
    }
    qv_status err;
    cr_expect_eq(qv__payload_validate(p, &err), 0, "%s", err.msg);
    pl_free(p);
    expect_bad_payload(pl("blob", v_bytes(blob, len + 1), NULL),
                       "payload of 65537 bytes serialised (at most 65536)");
    assert_no_leaks();
}

/* ================================================================================================
 * Filter validation
 * ============================================================================================== */

Test(filter_validate, accepts_every_condition_type)
{
    Filter *f = f_new();
    must(f, c_kw("a", "x"));
    must(f, c_int("a", -1));
    must(f, c_bool("a", true));
    should(f, c_kws("a", 2, "x", "y"));
    should(f, c_ints("a", 2, (int64_t)1, (int64_t)2));
    should(f, c_except_kws("a", 1, "x"));
    must_not(f, c_except_ints("a", 1, (int64_t)1));
    must_not(f, c_range("a", GT | LTE, 1, 0, 0, 2));
    must_not(f, c_range("a", 0, 0, 0, 0, 0));
    must(f, c_is_null("a"));
    must(f, c_is_empty("a"));
    must(f, c_has_id(2, (uint64_t)1, (uint64_t)2));
    must(f, c_nested(one(c_kw("b", "y"))));
    min_should(f, 3);
    qv_status err;
    cr_expect_eq(qv__filter_validate(f, &err), 0, "%s", err.msg);
    f_free(f);
    cr_expect_eq(qv__filter_validate(NULL, &err), 0);
    Filter *empty = f_new();
    cr_expect_eq(qv__filter_validate(empty, &err), 0);
    f_free(empty);
    assert_no_leaks();
}

Test(filter_validate, rejects_malformed_conditions)
{
    expect_invalid(must(f_new(), c_new(QUIVER__V1__CONDITION__CONDITION__NOT_SET)), QV_EINVAL,
                   "a condition has nothing set");
    Cond *c;
    m_new(&c, "label", QUIVER__V1__FIELD_MATCH__MATCH__NOT_SET);
    expect_invalid(one(c), QV_EINVAL, "a match sets no value for field 'label'");
    expect_invalid(one(c_kw("", "x")), QV_EINVAL, "empty field name");
    expect_invalid(one(c_is_null("")), QV_EINVAL, "empty field name");
    expect_invalid(one(c_is_empty("")), QV_EINVAL, "empty field name");
    expect_invalid(one(c_range("", GT, 1, 0, 0, 0)), QV_EINVAL, "empty field name");
    char longname[300];
    memset(longname, 'f', 257);
    longname[257] = '\0';
    expect_invalid(one(c_kw(longname, "x")), QV_EINVAL, "field name longer than 256 bytes");
    longname[256] = '\0';
    Filter *ok = one(c_kw(longname, "x"));
    qv_status err;
    cr_expect_eq(qv__filter_validate(ok, &err), 0, "%s", err.msg);
    f_free(ok);
    expect_invalid(one(c_kw("k", "\xc0\x80")), QV_EINVAL, "keyword is not valid UTF-8");
    /* the bad condition deep inside should / must_not / nested is found too */
    expect_invalid(
        should(should(f_new(), c_kw("a", "x")), c_new(QUIVER__V1__CONDITION__CONDITION__NOT_SET)),
        QV_EINVAL, "nothing set");
    expect_invalid(must_not(f_new(), c_nested(one(c_is_null("")))), QV_EINVAL, "empty field name");
    assert_no_leaks();
}

Test(filter_validate, range_bounds_must_be_finite)
{
    expect_invalid(one(c_range("p", GT, NAN, 0, 0, 0)), QV_EINVAL,
                   "range bound is not finite for field 'p'");
    expect_invalid(one(c_range("p", GTE, 0, INFINITY, 0, 0)), QV_EINVAL, "not finite");
    expect_invalid(one(c_range("p", LT, 0, 0, -INFINITY, 0)), QV_EINVAL, "not finite");
    expect_invalid(one(c_range("p", LTE | GT, 1, 0, 0, NAN)), QV_EINVAL, "not finite");
    /* an unset bound's value is not looked at */
    Filter *f = one(c_range("p", GT, 1, NAN, NAN, NAN));
    qv_status err;
    cr_expect_eq(qv__filter_validate(f, &err), 0, "%s", err.msg);
    f_free(f);
    assert_no_leaks();
}

Test(filter_validate, min_should_at_most_the_should_count)
{
    expect_invalid(min_should(should(should(f_new(), c_kw("a", "x")), c_kw("a", "y")), 3),
                   QV_EINVAL, "min_should 3 exceeds the 2 should conditions");
    expect_invalid(min_should(f_new(), 1), QV_EINVAL, "min_should 1 exceeds the 0");
    Filter *f = min_should(should(should(f_new(), c_kw("a", "x")), c_kw("a", "y")), 2);
    qv_status err;
    cr_expect_eq(qv__filter_validate(f, &err), 0, "%s", err.msg);
    f_free(f);
    assert_no_leaks();
}

static Filter *depth(int levels)
{
    Filter *f = one(c_kw("a", "x"));
    for (int i = 1; i < levels; i++)
        f = one(c_nested(f));
    return f;
}

Test(filter_validate, limits_on_depth_conditions_and_values)
{
    Filter *f = depth(16);
    qv_status err;
    cr_expect_eq(qv__filter_validate(f, &err), 0, "%s", err.msg);
    f_free(f);
    expect_invalid(depth(17), QV_EINVAL, "nested deeper than 16");

    f = f_new();
    for (int i = 0; i < 1024; i++)
        should(f, c_int("a", i));
    cr_expect_eq(qv__filter_validate(f, &err), 0, "%s", err.msg);
    should(f, c_int("a", 1024));
    expect_invalid(f, QV_EINVAL, "more than 1024 conditions");
    /* nested conditions count (each nested Condition and each one inside it) */
    f = f_new();
    for (int i = 0; i < 513; i++) /* 1,026 conditions */
        must(f, c_nested(one(c_int("a", i))));
    expect_invalid(f, QV_EINVAL, "more than 1024 conditions");

    Cond *c = c_kws("a", 0);
    Quiver__V1__KeywordList *kl = c->match->keywords;
    free(kl->values);
    kl->values = xcalloc(1025, sizeof(char *));
    for (size_t i = 0; i < 1025; i++)
        kl->values[kl->n_values++] = strdup("k");
    expect_invalid(one(c), QV_EINVAL, "more than 1,024 values in a match on field 'a'");
    c = c_except_ints("a", 0);
    Quiver__V1__IntegerList *il = c->match->except_integers;
    free(il->values);
    il->values = xcalloc(1025, sizeof(int64_t));
    il->n_values = 1025;
    expect_invalid(one(c), QV_EINVAL, "more than 1,024 values");

    c = c_has_id(0);
    free(c->has_id->ids);
    c->has_id->ids = xcalloc(10001, sizeof(Quiver__V1__PointId *));
    for (size_t i = 0; i < 10001; i++) {
        Quiver__V1__PointId *id = xcalloc(1, sizeof(*id));
        quiver__v1__point_id__init(id);
        id->kind_case = QUIVER__V1__POINT_ID__KIND_NUM;
        id->num = i;
        c->has_id->ids[c->has_id->n_ids++] = id;
    }
    expect_invalid(one(c), QV_ERESOURCE, "has_id lists 10001 ids (at most 10000)");
    assert_no_leaks();
}

/* ================================================================================================
 * The index and the compiler: every condition type
 * ============================================================================================== */

TestSuite(payload_filter, .init = fixture_setup, .fini = fixture_teardown);

Test(payload_filter, keyword_matches_exactly_and_in_lists)
{
    EXPECT("red", one(c_kw("color", "red")), 2, 0, 2);
    EXPECT("Red (case-sensitive)", one(c_kw("color", "Red")), 1, 5);
    EXPECT("empty string", one(c_kw("color", "")), 1, 7);
    EXPECT("absent value", one(c_kw("color", "green")), 0);
    EXPECT("list element", one(c_kw("tags", "b")), 2, 0, 2);
    EXPECT("nested list element", one(c_kw("tags", "c")), 1, 2);
    EXPECT("scalar or list", one(c_kw("tags", "a")), 2, 0, 8);
    EXPECT("string is not an integer", one(c_int("color", 0)), 0);
    EXPECT("keywords", one(c_kws("color", 3, "red", "Red", "nope")), 3, 0, 2, 5);
    EXPECT("keywords over lists", one(c_kws("tags", 2, "c", "a")), 3, 0, 2, 8);
    EXPECT("empty keyword list", one(c_kws("color", 0)), 0);
    assert_no_leaks();
}

Test(payload_filter, integer_matches_integral_doubles)
{
    EXPECT("integer 3 and double 3.0", one(c_int("label", 3)), 2, 0, 1);
    EXPECT("negative", one(c_int("label", -4)), 1, 5);
    EXPECT("2.5 is not an integer", one(c_int("label", 2)), 0);
    EXPECT("beyond 2^53 exactly", one(c_int("label", 9007199254740993LL)), 1, 6);
    EXPECT("its neighbour", one(c_int("label", 9007199254740992LL)), 0);
    EXPECT("list elements, nested", one(c_int("tags", 7)), 1, 2);
    EXPECT("double 2.0 in a list", one(c_int("nums", 2)), 1, 5);
    EXPECT("three lists deep", one(c_int("nums", 0)), 1, 7);
    EXPECT("-0.0 is integer 0", one(c_int("price", 0)), 2, 6, 8);
    EXPECT("double 1e300 has no integer key", one(c_int("price", INT64_MAX)), 0);
    EXPECT("integers", one(c_ints("label", 3, (int64_t)3, (int64_t)-4, (int64_t)99)), 3, 0, 1, 5);
    EXPECT("integers over lists", one(c_ints("nums", 2, (int64_t)7, (int64_t)1)), 2, 5, 9);
    assert_no_leaks();
}

Test(payload_filter, boolean_matches_values_and_list_elements)
{
    EXPECT("true", one(c_bool("flag", true)), 2, 0, 6);
    EXPECT("false", one(c_bool("flag", false)), 2, 1, 6);
    EXPECT("a bool is not an integer", one(c_int("flag", 1)), 0);
    assert_no_leaks();
}

Test(payload_filter, except_forms_pass_points_without_the_field)
{
    EXPECT("except red", one(c_except_kws("color", 1, "red")), 8, 1, 3, 4, 5, 6, 7, 8, 9);
    EXPECT("except tags b", one(c_except_kws("tags", 1, "b")), 8, 1, 3, 4, 5, 6, 7, 8, 9);
    EXPECT("except 3 (and 3.0)", one(c_except_ints("label", 1, (int64_t)3)), 8, 2, 3, 4, 5, 6, 7, 8,
           9);
    EXPECT("except nothing", one(c_except_ints("label", 0)), 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    /* only live points come back */
    roaring_bitmap_t *live = roaring_bitmap_copy(g_live);
    roaring_bitmap_remove(live, 4);
    roaring_bitmap_remove(live, 1);
    expect_in(g_px, live, "except, restricted", one(c_except_kws("color", 1, "red")), 6, 3, 5, 6, 7,
              8, 9);
    qv__bm_free(live);
    assert_no_leaks();
}

Test(payload_filter, ranges_compare_integers_and_doubles_as_numbers)
{
    EXPECT("gt 9.5", one(c_range("price", GT, 9.5, 0, 0, 0)), 2, 1, 5);
    EXPECT("gte 9.5", one(c_range("price", GTE, 0, 9.5, 0, 0)), 3, 0, 1, 5);
    EXPECT("lt 0 (-0.0 is not below 0)", one(c_range("price", LT, 0, 0, 0, 0)), 1, 2);
    EXPECT("lte 0 (-0.0 and 0)", one(c_range("price", LTE, 0, 0, 0, 0)), 3, 2, 6, 8);
    EXPECT("gte -0.0 lte 0", one(c_range("price", GTE | LTE, 0, -0.0, 0, 0)), 2, 6, 8);
    EXPECT("lte 10", one(c_range("price", LTE, 0, 0, 0, 10)), 5, 0, 1, 2, 6, 8);
    EXPECT("lt 10", one(c_range("price", LT, 0, 0, 10, 0)), 4, 0, 2, 6, 8);
    EXPECT("no bound: any number", one(c_range("price", 0, 0, 0, 0, 0)), 6, 0, 1, 2, 5, 6, 8);
    EXPECT("gt and gte on one bound is strict", one(c_range("price", GT | GTE, 9.5, 9.5, 0, 0)), 2,
           1, 5);
    EXPECT("lt and lte on one bound is strict", one(c_range("price", LT | LTE, 0, 0, 10, 10)), 4, 0,
           2, 6, 8);
    EXPECT("the tighter of gt / gte", one(c_range("price", GT | GTE, -5, 9.5, 0, 0)), 3, 0, 1, 5);
    EXPECT("empty interval", one(c_range("price", GT | LT, 10, 0, 9.5, 0)), 0);
    EXPECT("integer label 3 in (2.9, 3.1)", one(c_range("label", GT | LT, 2.9, 0, 3.1, 0)), 2, 0,
           1);
    EXPECT("label in [2.5, 3]", one(c_range("label", GTE | LTE, 0, 2.5, 0, 3)), 3, 0, 1, 2);
    EXPECT("list elements", one(c_range("nums", GT | LT, 1, 0, 3.6, 0)), 1, 5);
    EXPECT("nested list elements", one(c_range("nums", GTE | LTE, 0, -2, 0, 0)), 2, 7, 9);
    EXPECT("ranges over mixed list", one(c_range("tags", GTE, 0, 7, 0, 0)), 1, 2);
    EXPECT("no numbers in the field", one(c_range("color", 0, 0, 0, 0, 0)), 0);
    EXPECT("huge", one(c_range("price", GT, 1e299, 0, 0, 0)), 1, 5);
    assert_no_leaks();
}

Test(payload_filter, null_and_empty)
{
    EXPECT("label is null", one(c_is_null("label")), 1, 3);
    EXPECT("maybe is null (explicit and unset Value)", one(c_is_null("maybe")), 2, 3, 7);
    EXPECT("flag is null", one(c_is_null("flag")), 1, 9);
    /* empty: missing, null or an empty list */
    EXPECT("tags is empty", one(c_is_empty("tags")), 7, 1, 3, 4, 5, 6, 7, 9);
    EXPECT("color is empty ('' is a value)", one(c_is_empty("color")), 5, 3, 4, 6, 8, 9);
    EXPECT("maybe is empty", one(c_is_empty("maybe")), 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    EXPECT("not empty", must_not(f_new(), c_is_empty("tags")), 3, 0, 2, 8);
    assert_no_leaks();
}

Test(payload_filter, has_id_and_live_restriction)
{
    EXPECT("has_id", one(c_has_id(4, (uint64_t)0, (uint64_t)5, (uint64_t)999, (uint64_t)5)), 2, 0,
           5);
    EXPECT("empty has_id", one(c_has_id(0)), 0);
    roaring_bitmap_t *live = roaring_bitmap_copy(g_live);
    roaring_bitmap_remove(live, 0);
    expect_in(g_px, live, "has_id of a dead point", one(c_has_id(2, (uint64_t)0, (uint64_t)5)), 1,
              5);
    expect_in(g_px, live, "keyword of a dead point", one(c_kw("color", "red")), 1, 2);
    expect_in(g_px, live, "is_null restricted", one(c_is_null("label")), 1, 3);
    qv__bm_free(live);
    /* an empty filter passes every live point */
    EXPECT("empty filter", f_new(), 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    assert_no_leaks();
}

Test(payload_filter, must_must_not_and_nested)
{
    Filter *f = f_new();
    must(f, c_kw("color", "red"));
    must(f, c_range("price", GT, 0, 0, 0, 0));
    EXPECT("must and must", f, 1, 0);
    f = must_not(must(f_new(), c_kw("color", "red")), c_int("label", 3));
    EXPECT("must, must_not", f, 1, 2);
    f = must_not(must_not(f_new(), c_kw("color", "red")), c_is_empty("tags"));
    EXPECT("two must_not", f, 1, 8);
    /* (color = red or label = -4) and not (tags = a) */
    f = f_new();
    must(f, c_nested(should(should(f_new(), c_kw("color", "red")), c_int("label", -4))));
    must_not(f, c_nested(one(c_kw("tags", "a"))));
    EXPECT("nested", f, 2, 2, 5);
    /* a must_not of a nested should: none of them */
    f = must_not(f_new(),
                 c_nested(should(should(f_new(), c_kw("color", "red")), c_bool("flag", true))));
    EXPECT("not (a or b)", f, 7, 1, 3, 4, 5, 7, 8, 9);
    assert_no_leaks();
}

Test(payload_filter, min_should_levels)
{
    /* red: 0, 2 | label 3: 0, 1 | tags b: 0, 2 | price < 0: 2 */
    for (int ms = -1; ms <= 4; ms++) {
        Filter *f = f_new();
        should(f, c_kw("color", "red"));
        should(f, c_int("label", 3));
        should(f, c_kw("tags", "b"));
        should(f, c_range("price", LT, 0, 0, 0, 0));
        if (ms >= 0)
            min_should(f, (uint32_t)ms);
        switch (ms) {
        case -1: /* unset: 1 */
        case 1:
            EXPECT("at least 1", f, 3, 0, 1, 2);
            break;
        case 0:
            EXPECT("explicit 0: should does not constrain", f, 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
            break;
        case 2:
            EXPECT("at least 2", f, 2, 0, 2);
            break;
        case 3:
            EXPECT("at least 3", f, 2, 0, 2);
            break;
        case 4:
            EXPECT("all 4", f, 0);
            break;
        }
    }
    /* min_should with must: the levels count only points that pass must */
    Filter *f = must(f_new(), c_kw("color", "red"));
    should(f, c_int("label", 3));
    should(f, c_kw("tags", "b"));
    should(f, c_kw("tags", "c"));
    min_should(f, 2);
    EXPECT("must + 2 of 3", f, 2, 0, 2);
    /* nested min_should */
    Filter *inner = min_should(
        should(should(should(f_new(), c_kw("tags", "a")), c_bool("flag", true)), c_int("price", 0)),
        2);
    EXPECT("nested 2 of 3", one(c_nested(inner)), 3, 0, 6, 8);
    assert_no_leaks();
}

Test(payload_filter, unknown_field_is_an_error_wherever_it_is)
{
    expect_compile_error(g_px, one(c_kw("colour", "red")), "unknown field 'colour'");
    expect_compile_error(g_px, should(should(f_new(), c_kw("color", "red")), c_is_null("nope")),
                         "unknown field 'nope'");
    expect_compile_error(g_px, must_not(f_new(), c_range("nope", GT, 1, 0, 0, 0)),
                         "unknown field 'nope'");
    expect_compile_error(g_px, one(c_nested(one(c_is_empty("nope")))), "unknown field 'nope'");
    expect_compile_error(g_px, one(c_except_kws("nope", 1, "x")), "unknown field 'nope'");
    /* after a condition that already matched nothing, and over an empty live set: the answer
     * must not depend on the data */
    Filter *f = must(must(f_new(), c_kw("color", "green")), c_kw("nope", "x"));
    expect_compile_error(g_px, f, "unknown field 'nope'");
    f = must_not(must(f_new(), c_kw("color", "green")), c_kw("nope", "x"));
    expect_compile_error(g_px, f, "unknown field 'nope'");
    f = must(must(f_new(), c_kw("color", "green")), c_nested(one(c_kw("nope", "x"))));
    expect_compile_error(g_px, f, "unknown field 'nope'");
    roaring_bitmap_t *none = roaring_bitmap_create();
    Filter *g = one(c_kw("nope", "x"));
    qv_status err = {0};
    roaring_bitmap_t *out = NULL;
    int rc = qv__pidx_compile(g_px, g, none, id_lookup, NULL, &out, &err);
    cr_expect_eq(rc, QV_EINVAL, "empty live set: rc %d", rc);
    qv__bm_free(out);
    f_free(g);
    qv__bm_free(none);
    /* a field is known once some point had it, even after that point is gone */
    Payload *p = pl("once", v_int(1), NULL);
    cr_assert_eq(qv__pidx_add(g_px, 3, p), 0);
    qv__pidx_remove(g_px, 3, p);
    pl_free(p);
    EXPECT("known, no longer held", one(c_int("once", 1)), 0);
    assert_no_leaks();
}

/* ================================================================================================
 * Adding and removing
 * ============================================================================================== */

/* Refreshes the range caches of the given numeric fields (they count in the stats). */
static void touch_ranges(qv_pidx *px, const roaring_bitmap_t *live)
{
    static const char *const numeric[] = {"label", "price", "nums", "tags"};
    for (size_t i = 0; i < sizeof(numeric) / sizeof(numeric[0]); i++) {
        roaring_bitmap_t *b = compile_with(px, one(c_range(numeric[i], 0, 0, 0, 0, 0)), live);
        qv__bm_free(b);
    }
}

Test(payload_index, remove_after_add_leaves_no_trace, .init = fixture_setup,
     .fini = fixture_teardown)
{
    roaring_bitmap_t *live = roaring_bitmap_copy(g_live);
    touch_ranges(g_px, live);
    size_t f0, b0;
    qv__pidx_stats(g_px, &f0, &b0);
    cr_expect_eq(f0, 7, "fields: %zu", f0); /* color label price flag tags maybe nums */
    /* a payload over the same keys, with values of its own and values others share */
    Payload *p = pl("color", v_str("purple"), "label", v_dbl(77.25), "price", v_int(-123), "tags",
                    v_list(4, v_str("b"), v_str("zz"), v_list(1, v_int(31)), v_str("zz")), "nums",
                    v_list(3, v_int(5), v_dbl(5.0), v_null()), "flag", v_bool(true), "maybe",
                    v_null(), NULL);
    cr_assert_eq(qv__pidx_add(g_px, 10, p), 0);
    roaring_bitmap_add(live, 10);
    touch_ranges(g_px, live);
    size_t f1, b1;
    qv__pidx_stats(g_px, &f1, &b1);
    cr_expect_eq(f1, f0);
    cr_expect_gt(b1, b0);
    expect_in(g_px, live, "purple", one(c_kw("color", "purple")), 1, 10);
    expect_in(g_px, live, "zz", one(c_kw("tags", "zz")), 1, 10);
    expect_in(g_px, live, "b", one(c_kw("tags", "b")), 3, 0, 2, 10);
    expect_in(g_px, live, "-123", one(c_range("price", LT, 0, 0, -100, 0)), 1, 10);
    expect_in(g_px, live, "maybe null", one(c_is_null("maybe")), 3, 3, 7, 10);

    qv__pidx_remove(g_px, 10, p);
    /* the point is still live (an upsert removes before it adds), but nothing indexes it */
    expect_in(g_px, live, "purple gone", one(c_kw("color", "purple")), 0);
    expect_in(g_px, live, "zz gone", one(c_kw("tags", "zz")), 0);
    expect_in(g_px, live, "b shared", one(c_kw("tags", "b")), 2, 0, 2);
    expect_in(g_px, live, "-123 gone", one(c_range("price", LT, 0, 0, -100, 0)), 0);
    expect_in(g_px, live, "77.25 gone", one(c_range("label", GTE | LTE, 0, 77, 0, 78)), 0);
    expect_in(g_px, live, "31 gone", one(c_int("tags", 31)), 0);
    expect_in(g_px, live, "5 gone", one(c_int("nums", 5)), 0);
    expect_in(g_px, live, "flag", one(c_bool("flag", true)), 2, 0, 6);
    expect_in(g_px, live, "maybe null", one(c_is_null("maybe")), 2, 3, 7);
    expect_in(g_px, live, "tags empty now", one(c_is_empty("tags")), 8, 1, 3, 4, 5, 6, 7, 9, 10);
    touch_ranges(g_px, live);
    size_t f2, b2;
    qv__pidx_stats(g_px, &f2, &b2);
    cr_expect_eq(f2, f0);
    cr_expect_eq(b2, b0, "bytes %zu after remove, %zu before add", b2, b0);

    /* removing twice, or a payload never added, changes nothing */
    qv__pidx_remove(g_px, 10, p);
    qv__pidx_remove(g_px, 10, NULL);
    touch_ranges(g_px, live);
    qv__pidx_stats(g_px, &f2, &b2);
    cr_expect_eq(b2, b0);
    pl_free(p);
    qv__bm_free(live);
    assert_no_leaks();
}

Test(payload_index, removing_every_point_empties_every_value, .init = fixture_setup,
     .fini = fixture_teardown)
{
    for (uint32_t i = 0; i < NPTS; i++)
        qv__pidx_remove(g_px, i, g_pl[i]);
    /* every value-level condition is now empty; null/empty conditions see nothing either */
    EXPECT("red", one(c_kw("color", "red")), 0);
    EXPECT("3", one(c_int("label", 3)), 0);
    EXPECT("any number", one(c_range("price", 0, 0, 0, 0, 0)), 0);
    EXPECT("true", one(c_bool("flag", true)), 0);
    EXPECT("null", one(c_is_null("label")), 0);
    EXPECT("every point empty", one(c_is_empty("tags")), 10, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9);
    /* an index that only ever held empty bitmaps for these fields costs the same */
    qv_pidx *fresh = qv__pidx_create();
    static const char *const names[] = {"color", "label", "price", "flag", "tags", "maybe", "nums"};
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        Payload *p = pl(names[i], v_null(), NULL);
        cr_assert_eq(qv__pidx_add(fresh, 0, p), 0);
        qv__pidx_remove(fresh, 0, p);
        pl_free(p);
    }
    touch_ranges(g_px, g_live);
    touch_ranges(fresh, g_live);
    size_t fa, ba, fb, bb;
    qv__pidx_stats(g_px, &fa, &ba);
    qv__pidx_stats(fresh, &fb, &bb);
    cr_expect_eq(fa, fb);
    cr_expect_eq(ba, bb, "emptied index holds %zu bytes, a fresh one %zu", ba, bb);
    qv__pidx_free(fresh);
    assert_no_leaks();
}

Test(payload_index, replacing_a_payload_indexes_only_the_new_one, .init = fixture_setup,
     .fini = fixture_teardown)
{
    /* what an upsert of an existing point does: remove the old payload, add the new one */
    Payload *np = pl("color", v_str("blue"), "price", v_dbl(3.0), NULL);
    qv__pidx_remove(g_px, 0, g_pl[0]);
    cr_assert_eq(qv__pidx_add(g_px, 0, np), 0);
    pl_free(g_pl[0]);
    g_pl[0] = np;
    EXPECT("red", one(c_kw("color", "red")), 1, 2);
    EXPECT("blue", one(c_kw("color", "blue")), 2, 0, 1);
    EXPECT("label 3", one(c_int("label", 3)), 1, 1);
    EXPECT("price 3 (a double)", one(c_int("price", 3)), 1, 0);
    EXPECT("price 9.5 gone", one(c_range("price", GTE | LTE, 0, 9.5, 0, 9.5)), 0);
    EXPECT("tags a", one(c_kw("tags", "a")), 1, 8);
    EXPECT("label is empty now", one(c_is_empty("label")), 6, 0, 3, 4, 7, 8, 9);
    assert_no_leaks();
}

Test(payload_index, many_points_and_values)
{
    qv_pidx *px = qv__pidx_create();
    roaring_bitmap_t *live = roaring_bitmap_create();
    enum { N = 3000 };
    Payload **pls = xcalloc(N, sizeof(Payload *));
    char buf[32];
    for (uint32_t i = 0; i < N; i++) {
        snprintf(buf, sizeof(buf), "s%u", i % 97);
        pls[i] =
            pl("k", v_str(buf), "n", v_int((int64_t)(i % 101)), "d", v_dbl((double)i / 4.0), NULL);
        CHECK(qv__pidx_add(px, i, pls[i]) == 0, "add %u", i);
        roaring_bitmap_add(live, i);
    }
    for (uint32_t i = 0; i < N; i += 3) { /* remove a third */
        qv__pidx_remove(px, i, pls[i]);
        roaring_bitmap_remove(live, i);
    }
    for (uint32_t probe = 0; probe < 97; probe += 7) {
        snprintf(buf, sizeof(buf), "s%u", probe);
        roaring_bitmap_t *b = compile_with(px, one(c_kw("k", buf)), live);
        uint64_t want = 0;
        for (uint32_t i = 0; i < N; i++)
            want += i % 3 != 0 && i % 97 == probe;
        cr_expect_eq(roaring_bitmap_get_cardinality(b), want, "s%u", probe);
        qv__bm_free(b);
    }
    roaring_bitmap_t *b = compile_with(px, one(c_range("d", GTE | LT, 0, 100, 200, 0)), live);
    uint64_t want = 0;
    for (uint32_t i = 0; i < N; i++)
        want += i % 3 != 0 && i / 4.0 >= 100 && i / 4.0 < 200;
    cr_expect_eq(roaring_bitmap_get_cardinality(b), want);
    qv__bm_free(b);
    b = compile_with(px,
                     min_should(should(should(should(f_new(), c_int("n", 5)), c_kw("k", "s5")),
                                       c_range("d", LT, 0, 0, 50, 0)),
                                2),
                     live);
    want = 0;
    for (uint32_t i = 0; i < N; i++)
        want += i % 3 != 0 && (i % 101 == 5) + (i % 97 == 5) + (i / 4.0 < 50) >= 2;
    cr_expect_eq(roaring_bitmap_get_cardinality(b), want);
    qv__bm_free(b);
    for (uint32_t i = 0; i < N; i++)
        pl_free(pls[i]);
    free(pls);
    qv__bm_free(live);
    qv__pidx_free(px);
    assert_no_leaks();
}

/* ================================================================================================
 * hmap
 * ============================================================================================== */

/* Linear probing's invariant: from an entry's home slot to where it sits, no slot is empty. */
static void hmap_check(const qv_hmap *m)
{
    size_t n = 0;
    for (size_t i = 0; i < m->cap; i++) {
        if (m->slots[i].key == NULL)
            continue;
        n++;
        size_t mask = m->cap - 1;
        for (size_t j = m->slots[i].hash & mask; j != i; j = (j + 1) & mask)
            CHECK(m->slots[j].key != NULL, "hole at %zu between home and slot %zu", j, i);
    }
    CHECK(n == m->len, "len %zu but %zu entries", m->len, n);
    if (m->cap > 0) {
        CHECK((m->cap & (m->cap - 1)) == 0, "capacity %zu is not a power of two", m->cap);
        CHECK(m->len * 4 <= m->cap * 3, "load above 3/4: %zu in %zu", m->len, m->cap);
    }
}

static size_t key_of(uint32_t i, char *buf)
{
    return (size_t)sprintf(buf, "key-%u", i * 2654435761u);
}

Test(hmap, put_get_replace_many_keys)
{
    qv_hmap m = {0};
    char k[32];
    cr_expect_null(qv__hmap_get(&m, "x", 1));
    cr_expect_null(qv__hmap_del(&m, "x", 1));
    enum { N = 20000 };
    for (uintptr_t i = 0; i < N; i++) {
        size_t kl = key_of((uint32_t)i, k);
        void *old = (void *)1;
        CHECK(qv__hmap_put(&m, k, kl, (void *)(i + 1), &old) == 0, "put %lu", (unsigned long)i);
        CHECK(old == NULL, "put %lu: old value of a new key", (unsigned long)i);
    }
    cr_expect_eq(m.len, N);
    hmap_check(&m);
    for (uintptr_t i = 0; i < N; i++) {
        size_t kl = key_of((uint32_t)i, k);
        void **v = qv__hmap_get(&m, k, kl);
        CHECK(v != NULL && (uintptr_t)*v == i + 1, "key %lu lost", (unsigned long)i);
    }
    /* replacing returns the old value and keeps the count */
    size_t kl = key_of(77, k);
    void *old = NULL;
    cr_assert_eq(qv__hmap_put(&m, k, kl, (void *)12345, &old), 0);
    cr_expect_eq((uintptr_t)old, 78);
    cr_expect_eq((uintptr_t)*qv__hmap_get(&m, k, kl), 12345);
    cr_expect_eq(m.len, N);
    /* prefixes and near misses are different keys */
    cr_expect_null(qv__hmap_get(&m, k, kl - 1));
    cr_expect_null(qv__hmap_get(&m, "key-", 4));
    qv__hmap_free(&m);
    cr_expect_eq(m.cap, 0);
    assert_no_leaks();
}

Test(hmap, binary_and_empty_keys)
{
    qv_hmap m = {0};
    const char a[] = {'a', '\0', 'b'}, b[] = {'a', '\0', 'c'};
    cr_assert_eq(qv__hmap_put(&m, a, 3, (void *)1, NULL), 0);
    cr_assert_eq(qv__hmap_put(&m, b, 3, (void *)2, NULL), 0);
    cr_assert_eq(qv__hmap_put(&m, "", 0, (void *)3, NULL), 0);
    cr_expect_eq((uintptr_t)*qv__hmap_get(&m, a, 3), 1);
    cr_expect_eq((uintptr_t)*qv__hmap_get(&m, b, 3), 2);
    cr_expect_eq((uintptr_t)*qv__hmap_get(&m, "", 0), 3);
    cr_expect_null(qv__hmap_get(&m, "a", 1));
    cr_expect_eq((uintptr_t)qv__hmap_del(&m, "", 0), 3);
    cr_expect_null(qv__hmap_get(&m, "", 0));
    cr_expect_eq(m.len, 2);
    hmap_check(&m);
    qv__hmap_free(&m);
    assert_no_leaks();
}

static void count_cb(const uint8_t *key, size_t klen, void *val, void *u)
{
    (void)key;
    (void)klen;
    size_t *seen = u;
    seen[(uintptr_t)val]++;
}

Test(hmap, delete_keeps_every_other_key_reachable)
{
    qv_hmap m = {0};
    char k[32];
    enum { N = 5000 };
    for (uintptr_t i = 0; i < N; i++) {
        size_t kl = key_of((uint32_t)i, k);
        CHECK(qv__hmap_put(&m, k, kl, (void *)i, NULL) == 0, "put %lu", (unsigned long)i);
    }
    /* delete in a scrambled order, checking everything as we go */
    bool *gone = xcalloc(N, sizeof(bool));
    for (uint32_t step = 0; step < N; step++) {
        uint32_t i = (uint32_t)(((uint64_t)step * 2971) % N); /* 2971 is coprime with N */
        size_t kl = key_of(i, k);
        CHECK((uintptr_t)qv__hmap_del(&m, k, kl) == i, "deleting %u", i);
        gone[i] = true;
        CHECK(qv__hmap_get(&m, k, kl) == NULL, "%u found after its deletion", i);
        CHECK(qv__hmap_del(&m, k, kl) == NULL, "%u deleted twice", i);
        if (step % 250 == 0 || step > N - 50) {
            hmap_check(&m);
            for (uint32_t j = 0; j < N; j++) {
                size_t jl = key_of(j, k);
                void **v = qv__hmap_get(&m, k, jl);
                if (gone[j])
                    CHECK(v == NULL, "deleted key %u found", j);
                else
                    CHECK(v != NULL && (uintptr_t)*v == j, "key %u lost after %u deletes", j,
                          step + 1);
            }
        }
    }
    cr_expect_eq(m.len, 0);
    /* the emptied table takes keys again */
    size_t kl = key_of(1, k);
    cr_assert_eq(qv__hmap_put(&m, k, kl, (void *)9, NULL), 0);
    cr_expect_eq((uintptr_t)*qv__hmap_get(&m, k, kl), 9);
    free(gone);
    qv__hmap_free(&m);
    assert_no_leaks();
}

/* Small tables full of collisions and wrap-around runs: every deletion order of a 12-key table
 * (cap 16, the fullest it gets) is tried at random, with the invariant and every lookup checked
 * after each deletion. */
Test(hmap, backward_shift_in_full_small_tables)
{
    char k[32];
    uint64_t rnd = 88172645463325252ull;
    for (int round = 0; round < 3000; round++) {
        qv_hmap m = {0};
        uint32_t base = (uint32_t)round * 100;
        for (uint32_t i = 0; i < 12; i++) {
            size_t kl = key_of(base + i, k);
            CHECK(qv__hmap_put(&m, k, kl, (void *)(uintptr_t)(i + 1), NULL) == 0, "put");
        }
        CHECK(m.cap == 16, "capacity %zu", m.cap);
        hmap_check(&m);
        uint32_t order[12];
        for (uint32_t i = 0; i < 12; i++)
            order[i] = i;
        for (int i = 11; i > 0; i--) {
            rnd ^= rnd << 13, rnd ^= rnd >> 7, rnd ^= rnd << 17;
            int j = (int)(rnd % (uint64_t)(i + 1));
            uint32_t t = order[i];
            order[i] = order[j];
            order[j] = t;
        }
        bool gone[12] = {false};
        for (int d = 0; d < 12; d++) {
            size_t kl = key_of(base + order[d], k);
            CHECK((uintptr_t)qv__hmap_del(&m, k, kl) == order[d] + 1, "round %d: delete", round);
            gone[order[d]] = true;
            hmap_check(&m);
            for (uint32_t i = 0; i < 12; i++) {
                size_t il = key_of(base + i, k);
                void **v = qv__hmap_get(&m, k, il);
                if (gone[i])
                    CHECK(v == NULL, "round %d: deleted key %u found", round, i);
                else
                    CHECK(v != NULL && (uintptr_t)*v == i + 1,
                          "round %d: key %u lost after deleting %d keys", round, i, d + 1);
            }
        }
        qv__hmap_free(&m);
    }
    assert_no_leaks();
}

Test(hmap, each_visits_every_entry_once)
{
    qv_hmap m = {0};
    char k[32];
    enum { N = 1000 };
    for (uintptr_t i = 0; i < N; i++) {
        size_t kl = key_of((uint32_t)i, k);
        CHECK(qv__hmap_put(&m, k, kl, (void *)i, NULL) == 0, "put %lu", (unsigned long)i);
    }
    for (uintptr_t i = 0; i < N; i += 2) {
        size_t kl = key_of((uint32_t)i, k);
        qv__hmap_del(&m, k, kl);
    }
    size_t *seen = xcalloc(N, sizeof(size_t));
    qv__hmap_each(&m, count_cb, seen);
    size_t wrong = 0;
    for (size_t i = 0; i < N; i++)
        wrong += seen[i] != i % 2;
    cr_expect_eq(wrong, 0, "%zu entries visited a wrong number of times", wrong);
    free(seen);
    qv__hmap_free(&m);
    assert_no_leaks();
}
