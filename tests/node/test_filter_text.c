/*
 * Tests for node/filter_text.c: every operator and literal kind, precedence and the shape of the
 * compact tree, the limits, error messages with their byte offsets, and random input. Every
 * filter that parses is checked against the invariants of common.proto and packed, unpacked and
 * compared (protobuf-c must be able to serialise what we built by hand). Under AddressSanitizer
 * each test ends with a leak check of its own (Criterion would otherwise report a test that leaks
 * as passing).
 */
#include "node/filter_text.h"

#include <criterion/criterion.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* ---- helpers --------------------------------------------------------------------------------- */

/* An assertion that reports only when it fails: the suite runs with --full-stats, under which
 * every cr_assert is a message to the runner, and the random tests check millions of things. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail("check failed: " #cond " " __VA_ARGS__);                                \
    } while (0)

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

static bool filter_eq(const Quiver__V1__Filter *a, const Quiver__V1__Filter *b);

static bool keywords_eq(const Quiver__V1__KeywordList *a, const Quiver__V1__KeywordList *b)
{
    if (a->n_values != b->n_values)
        return false;
    for (size_t i = 0; i < a->n_values; i++) {
        if (strcmp(a->values[i], b->values[i]) != 0)
            return false;
    }
    return true;
}

static bool integers_eq(const Quiver__V1__IntegerList *a, const Quiver__V1__IntegerList *b)
{
    return a->n_values == b->n_values &&
           memcmp(a->values, b->values, a->n_values * sizeof(a->values[0])) == 0;
}

static bool match_eq(const Quiver__V1__FieldMatch *a, const Quiver__V1__FieldMatch *b)
{
    if (strcmp(a->field, b->field) != 0 || a->match_case != b->match_case)
        return false;
    switch (a->match_case) {
    case QUIVER__V1__FIELD_MATCH__MATCH_KEYWORD:
        return strcmp(a->keyword, b->keyword) == 0;
    case QUIVER__V1__FIELD_MATCH__MATCH_INTEGER:
        return a->integer == b->integer;
    case QUIVER__V1__FIELD_MATCH__MATCH_BOOLEAN:
        return a->boolean == b->boolean;
    case QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS:
        return keywords_eq(a->keywords, b->keywords);
    case QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_KEYWORDS:
        return keywords_eq(a->except_keywords, b->except_keywords);
    case QUIVER__V1__FIELD_MATCH__MATCH_INTEGERS:
        return integers_eq(a->integers, b->integers);
    case QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_INTEGERS:
        return integers_eq(a->except_integers, b->except_integers);
    default:
        return false;
    }
}

static bool range_eq(const Quiver__V1__FieldRange *a, const Quiver__V1__FieldRange *b)
{
    return strcmp(a->field, b->field) == 0 && a->opt_gt_case == b->opt_gt_case &&
           (!a->opt_gt_case || a->gt == b->gt) && a->opt_gte_case == b->opt_gte_case &&
           (!a->opt_gte_case || a->gte == b->gte) && a->opt_lt_case == b->opt_lt_case &&
           (!a->opt_lt_case || a->lt == b->lt) && a->opt_lte_case == b->opt_lte_case &&
           (!a->opt_lte_case || a->lte == b->lte);
}

static bool has_id_eq(const Quiver__V1__HasId *a, const Quiver__V1__HasId *b)
{
    if (a->n_ids != b->n_ids)
        return false;
    for (size_t i = 0; i < a->n_ids; i++) {
        const Quiver__V1__PointId *x = a->ids[i], *y = b->ids[i];
        if (x->kind_case != y->kind_case)
            return false;
        if (x->kind_case == QUIVER__V1__POINT_ID__KIND_NUM && x->num != y->num)
            return false;
        if (x->kind_case == QUIVER__V1__POINT_ID__KIND_UUID && strcmp(x->uuid, y->uuid) != 0)
            return false;
    }
    return true;
}

static bool cond_eq(const Quiver__V1__Condition *a, const Quiver__V1__Condition *b)
{
    if (a->condition_case != b->condition_case)
        return false;
    switch (a->condition_case) {
    case QUIVER__V1__CONDITION__CONDITION_MATCH:
        return match_eq(a->match, b->match);
    case QUIVER__V1__CONDITION__CONDITION_RANGE:
        return range_eq(a->range, b->range);
    case QUIVER__V1__CONDITION__CONDITION_HAS_ID:
        return has_id_eq(a->has_id, b->has_id);
    case QUIVER__V1__CONDITION__CONDITION_IS_EMPTY:
        return strcmp(a->is_empty->field, b->is_empty->field) == 0;
    case QUIVER__V1__CONDITION__CONDITION_IS_NULL:
        return strcmp(a->is_null->field, b->is_null->field) == 0;
    case QUIVER__V1__CONDITION__CONDITION_NESTED:
        return filter_eq(a->nested, b->nested);
    default:
        return false;
    }
}

static bool conds_eq(size_t n, Quiver__V1__Condition **a, size_t m, Quiver__V1__Condition **b)
{
    if (n != m)
        return false;
    for (size_t i = 0; i < n; i++) {
        if (!cond_eq(a[i], b[i]))
            return false;
    }
    return true;
}

static bool filter_eq(const Quiver__V1__Filter *a, const Quiver__V1__Filter *b)
{
    return conds_eq(a->n_must, a->must, b->n_must, b->must) &&
           conds_eq(a->n_should, a->should, b->n_should, b->should) &&
           conds_eq(a->n_must_not, a->must_not, b->n_must_not, b->must_not) &&
           a->opt_min_should_case == b->opt_min_should_case;
}

/* Checks what common.proto demands of a filter; returns its depth and adds its conditions to *n. */
static int check_filter(const Quiver__V1__Filter *f, size_t *n)
{
    int depth = 1;
    CHECK(f->opt_min_should_case == QUIVER__V1__FILTER__OPT_MIN_SHOULD__NOT_SET);
    size_t counts[3] = {f->n_must, f->n_should, f->n_must_not};
    Quiver__V1__Condition **lists[3] = {f->must, f->should, f->must_not};
    for (int l = 0; l < 3; l++) {
        for (size_t i = 0; i < counts[l]; i++) {
            const Quiver__V1__Condition *c = lists[l][i];
            (*n)++;
            switch (c->condition_case) {
            case QUIVER__V1__CONDITION__CONDITION_MATCH:
                CHECK(strlen(c->match->field) > 0);
                CHECK(c->match->match_case != QUIVER__V1__FIELD_MATCH__MATCH__NOT_SET);
                break;
            case QUIVER__V1__CONDITION__CONDITION_RANGE:
                CHECK(strlen(c->range->field) > 0);
                CHECK(c->range->opt_gt_case || c->range->opt_gte_case || c->range->opt_lt_case ||
                      c->range->opt_lte_case);
                break;
            case QUIVER__V1__CONDITION__CONDITION_HAS_ID:
                CHECK(c->has_id->n_ids > 0);
                for (size_t k = 0; k < c->has_id->n_ids; k++)
                    CHECK(c->has_id->ids[k]->kind_case != QUIVER__V1__POINT_ID__KIND__NOT_SET);
                break;
            case QUIVER__V1__CONDITION__CONDITION_IS_EMPTY:
                CHECK(strlen(c->is_empty->field) > 0);
                break;
            case QUIVER__V1__CONDITION__CONDITION_IS_NULL:
                CHECK(strlen(c->is_null->field) > 0);
                break;
            case QUIVER__V1__CONDITION__CONDITION_NESTED: {
                const Quiver__V1__Filter *g = c->nested;
                CHECK(g->n_must + g->n_should + g->n_must_not > 0, "empty nested filter");
                int d = 1 + check_filter(g, n);
                if (d > depth)
                    depth = d;
                break;
            }
            default:
                cr_assert_fail("a condition with nothing set");
            }
        }
    }
    return depth;
}

/* Packs, unpacks and compares: the hand-built tree must serialise like any other message. */
static void round_trip(const Quiver__V1__Filter *f)
{
    size_t n = quiver__v1__filter__get_packed_size(f);
    uint8_t *buf = malloc(n > 0 ? n : 1);
    CHECK(buf != NULL);
    CHECK(quiver__v1__filter__pack(f, buf) == n);
    Quiver__V1__Filter *g = quiver__v1__filter__unpack(NULL, n, buf);
    CHECK(g != NULL);
    CHECK(filter_eq(f, g), "the filter changed in a pack/unpack round trip");
    quiver__v1__filter__free_unpacked(g, NULL);
    free(buf);
}

/* Checks a successfully parsed filter: invariants, limits, round trip. */
static void check_parsed(const Quiver__V1__Filter *f)
{
    size_t n = 0;
    int depth = check_filter(f, &n);
    CHECK(depth <= 16, "depth %d", depth);
    CHECK(n <= 1024, "%zu conditions", n);
    round_trip(f);
}

static Quiver__V1__Filter *parse_len(const char *text, size_t len)
{
    Quiver__V1__Filter *f = NULL;
    qv_status err = {0};
    int rc = qv_filter_text_parse(text, len, &f, &err);
    CHECK(rc == 0, "parsing \"%.*s\": %s", (int)(len > 200 ? 200 : len), text, err.msg);
    CHECK(f != NULL);
    check_parsed(f);
    return f;
}

static Quiver__V1__Filter *parse(const char *text)
{
    return parse_len(text, strlen(text));
}

/* Expects QV_EINVAL with a message "filter_text: at byte <offset>: ..." containing `what`. */
static void expect_error_len(const char *text, size_t len, size_t offset, const char *what)
{
    Quiver__V1__Filter *f = (Quiver__V1__Filter *)&f; /* must be reset to NULL */
    qv_status err = {0};
    int rc = qv_filter_text_parse(text, len, &f, &err);
    cr_assert_eq(rc, QV_EINVAL, "\"%.*s\" should fail, got %d", (int)(len > 200 ? 200 : len), text,
                 rc);
    cr_assert_null(f);
    cr_assert_eq(err.code, QV_EINVAL);
    char prefix[64];
    snprintf(prefix, sizeof(prefix), "filter_text: at byte %zu: ", offset);
    cr_assert(strncmp(err.msg, prefix, strlen(prefix)) == 0,
              "message \"%s\" should start with \"%s\"", err.msg, prefix);
    cr_assert(strstr(err.msg, what) != NULL, "message \"%s\" should contain \"%s\"", err.msg, what);
}

static void expect_error(const char *text, size_t offset, const char *what)
{
    expect_error_len(text, strlen(text), offset, what);
}

static void expect_sizes(const Quiver__V1__Filter *f, size_t must, size_t should, size_t must_not)
{
    cr_assert_eq(f->n_must, must, "must: %zu, want %zu", f->n_must, must);
    cr_assert_eq(f->n_should, should, "should: %zu, want %zu", f->n_should, should);
    cr_assert_eq(f->n_must_not, must_not, "must_not: %zu, want %zu", f->n_must_not, must_not);
    cr_assert_eq(f->opt_min_should_case, QUIVER__V1__FILTER__OPT_MIN_SHOULD__NOT_SET);
}

static const Quiver__V1__FieldMatch *as_match(const Quiver__V1__Condition *c, const char *field)
{
    cr_assert_eq(c->condition_case, QUIVER__V1__CONDITION__CONDITION_MATCH);
    cr_assert_str_eq(c->match->field, field);
    return c->match;
}

static void expect_int(const Quiver__V1__Condition *c, const char *field, int64_t v)
{
    const Quiver__V1__FieldMatch *m = as_match(c, field);
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_INTEGER);
    cr_assert_eq(m->integer, v, "integer %" PRId64 ", want %" PRId64, m->integer, v);
}

static void expect_keyword(const Quiver__V1__Condition *c, const char *field, const char *v)
{
    const Quiver__V1__FieldMatch *m = as_match(c, field);
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_KEYWORD);
    cr_assert_str_eq(m->keyword, v);
}

static void expect_bool(const Quiver__V1__Condition *c, const char *field, bool v)
{
    const Quiver__V1__FieldMatch *m = as_match(c, field);
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_BOOLEAN);
    cr_assert_eq(!!m->boolean, v);
}

enum { NO = 0, GT = 1, GTE = 2, LT = 4, LTE = 8 };

/* A FieldRange on `field` with exactly the bounds in `which`, each equal to v. */
static void expect_range(const Quiver__V1__Condition *c, const char *field, int which, double v)
{
    cr_assert_eq(c->condition_case, QUIVER__V1__CONDITION__CONDITION_RANGE);
    const Quiver__V1__FieldRange *r = c->range;
    cr_assert_str_eq(r->field, field);
    cr_assert_eq(r->opt_gt_case != 0, (which & GT) != 0);
    cr_assert_eq(r->opt_gte_case != 0, (which & GTE) != 0);
    cr_assert_eq(r->opt_lt_case != 0, (which & LT) != 0);
    cr_assert_eq(r->opt_lte_case != 0, (which & LTE) != 0);
    if (which & GT)
        cr_assert_eq(r->gt, v);
    if (which & GTE)
        cr_assert_eq(r->gte, v);
    if (which & LT)
        cr_assert_eq(r->lt, v);
    if (which & LTE)
        cr_assert_eq(r->lte, v);
}

static const Quiver__V1__Filter *as_nested(const Quiver__V1__Condition *c)
{
    cr_assert_eq(c->condition_case, QUIVER__V1__CONDITION__CONDITION_NESTED);
    return c->nested;
}

/* The single `must` condition of a filter such as "a = 3". */
static const Quiver__V1__Condition *only_must(const Quiver__V1__Filter *f)
{
    expect_sizes(f, 1, 0, 0);
    return f->must[0];
}

/* ---- literals and operators ------------------------------------------------------------------ */

Test(filter_text, example_from_the_contract_is_one_flat_and)
{
    Quiver__V1__Filter *f = parse("label = 3 and price < 10.5 and color in ['red', 'blue']");
    expect_sizes(f, 3, 0, 0);
    expect_int(f->must[0], "label", 3);
    expect_range(f->must[1], "price", LT, 10.5);
    const Quiver__V1__FieldMatch *m = as_match(f->must[2], "color");
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS);
    cr_assert_eq(m->keywords->n_values, 2);
    cr_assert_str_eq(m->keywords->values[0], "red");
    cr_assert_str_eq(m->keywords->values[1], "blue");
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, equality_maps_each_literal_kind)
{
    static const struct {
        const char *text;
        int64_t v;
    } ints[] = {
        {"a = 3", 3},
        {"a=-42", -42},
        {"a = +7", 7},
        {"a = 0", 0},
        {"a = 9223372036854775807", INT64_MAX},
        {"a = -9223372036854775808", INT64_MIN},
    };
    for (size_t i = 0; i < sizeof(ints) / sizeof(ints[0]); i++) {
        Quiver__V1__Filter *f = parse(ints[i].text);
        expect_int(only_must(f), "a", ints[i].v);
        qv_filter_text_free(f);
    }

    Quiver__V1__Filter *f = parse("a = 'x'");
    expect_keyword(only_must(f), "a", "x");
    qv_filter_text_free(f);
    f = parse("a = \"double quoted\"");
    expect_keyword(only_must(f), "a", "double quoted");
    qv_filter_text_free(f);
    f = parse("a = ''");
    expect_keyword(only_must(f), "a", "");
    qv_filter_text_free(f);
    f = parse("a = 'h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80'");
    expect_keyword(only_must(f), "a", "h\xc3\xa9llo \xe2\x82\xac \xf0\x9f\x98\x80");
    qv_filter_text_free(f);

    f = parse("a = true");
    expect_bool(only_must(f), "a", true);
    qv_filter_text_free(f);
    f = parse("a = FALSE");
    expect_bool(only_must(f), "a", false);
    qv_filter_text_free(f);

    static const struct {
        const char *text;
        double v;
    } decs[] = {
        {"a = 2.5", 2.5}, {"a = 1e3", 1000.0},     {"a = .5", 0.5},
        {"a = 3.", 3.0},  {"a = -1.5E-2", -0.015}, {"a = 2.0", 2.0},
    };
    for (size_t i = 0; i < sizeof(decs) / sizeof(decs[0]); i++) {
        f = parse(decs[i].text);
        expect_range(only_must(f), "a", GTE | LTE, decs[i].v);
        qv_filter_text_free(f);
    }
    assert_no_leaks();
}

Test(filter_text, string_escapes_cover_quotes_and_backslash)
{
    Quiver__V1__Filter *f = parse("a = 'it\\'s'");
    expect_keyword(only_must(f), "a", "it's");
    qv_filter_text_free(f);
    f = parse("a = \"say \\\"hi\\\" \\\\ o/\"");
    expect_keyword(only_must(f), "a", "say \"hi\" \\ o/");
    qv_filter_text_free(f);
    f = parse("a = 'mixed \" inside'");
    expect_keyword(only_must(f), "a", "mixed \" inside");
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, not_equal_is_must_not_of_the_match)
{
    Quiver__V1__Filter *f = parse("a != 3");
    expect_sizes(f, 0, 0, 1);
    expect_int(f->must_not[0], "a", 3);
    qv_filter_text_free(f);
    f = parse("a != 'x'");
    expect_sizes(f, 0, 0, 1);
    expect_keyword(f->must_not[0], "a", "x");
    qv_filter_text_free(f);
    f = parse("a != 2.5");
    expect_sizes(f, 0, 0, 1);
    expect_range(f->must_not[0], "a", GTE | LTE, 2.5);
    qv_filter_text_free(f);
    f = parse("a!=false");
    expect_sizes(f, 0, 0, 1);
    expect_bool(f->must_not[0], "a", false);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, ordering_operators_set_one_bound)
{
    static const struct {
        const char *text;
        int which;
        double v;
    } cases[] = {
        {"a < 1", LT, 1.0},     {"a <= 2", LTE, 2.0}, {"a > -3.5", GT, -3.5},
        {"a >= 4e2", GTE, 400}, {"a<0", LT, 0.0},     {"a >= -9223372036854775808", GTE, -0x1p63},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        Quiver__V1__Filter *f = parse(cases[i].text);
        expect_range(only_must(f), "a", cases[i].which, cases[i].v);
        qv_filter_text_free(f);
    }
    assert_no_leaks();
}

/* ---- structure ------------------------------------------------------------------------------- */

Test(filter_text, and_binds_tighter_than_or)
{
    Quiver__V1__Filter *f = parse("a = 1 or b = 2 and c = 3");
    expect_sizes(f, 0, 2, 0);
    expect_int(f->should[0], "a", 1);
    const Quiver__V1__Filter *g = as_nested(f->should[1]);
    expect_sizes(g, 2, 0, 0);
    expect_int(g->must[0], "b", 2);
    expect_int(g->must[1], "c", 3);
    qv_filter_text_free(f);

    f = parse("a = 1 and b = 2 or c = 3");
    expect_sizes(f, 0, 2, 0);
    g = as_nested(f->should[0]);
    expect_sizes(g, 2, 0, 0);
    expect_int(g->must[0], "a", 1);
    expect_int(g->must[1], "b", 2);
    expect_int(f->should[1], "c", 3);
    qv_filter_text_free(f);

    f = parse("a = 1 or b = 2 or c = 3 or d = 4");
    expect_sizes(f, 0, 4, 0);
    expect_int(f->should[3], "d", 4);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, parentheses_group_and_add_no_level_of_their_own)
{
    Quiver__V1__Filter *f = parse("(a = 1 or b = 2) and c = 3");
    expect_sizes(f, 2, 0, 0);
    const Quiver__V1__Filter *g = as_nested(f->must[0]);
    expect_sizes(g, 0, 2, 0);
    expect_int(g->should[0], "a", 1);
    expect_int(g->should[1], "b", 2);
    expect_int(f->must[1], "c", 3);
    qv_filter_text_free(f);

    f = parse("((( a = 1 )))");
    expect_int(only_must(f), "a", 1);
    qv_filter_text_free(f);

    /* A parenthesised chain of the same operator is spliced, not nested. */
    f = parse("a = 1 and (b = 2 and c = 3)");
    expect_sizes(f, 3, 0, 0);
    expect_int(f->must[2], "c", 3);
    qv_filter_text_free(f);
    f = parse("(a = 1 or b = 2) or (c = 3 or d = 4)");
    expect_sizes(f, 0, 4, 0);
    qv_filter_text_free(f);

    f = parse("(a=1)and(b=2)");
    expect_sizes(f, 2, 0, 0);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, not_binds_tightest_and_becomes_must_not)
{
    Quiver__V1__Filter *f = parse("not a = 1");
    expect_sizes(f, 0, 0, 1);
    expect_int(f->must_not[0], "a", 1);
    qv_filter_text_free(f);

    f = parse("a = 1 and not b = 2 and c != 3");
    expect_sizes(f, 1, 0, 2);
    expect_int(f->must[0], "a", 1);
    expect_int(f->must_not[0], "b", 2);
    expect_int(f->must_not[1], "c", 3);
    qv_filter_text_free(f);

    /* not (a or b): none of them holds. */
    f = parse("not (a = 1 or b = 2)");
    expect_sizes(f, 0, 0, 2);
    expect_int(f->must_not[0], "a", 1);
    expect_int(f->must_not[1], "b", 2);
    qv_filter_text_free(f);

    f = parse("not (a = 1 and b = 2)");
    expect_sizes(f, 0, 0, 1);
    expect_sizes(as_nested(f->must_not[0]), 2, 0, 0);
    qv_filter_text_free(f);

    f = parse("not a = 1 or b = 2");
    expect_sizes(f, 0, 2, 0);
    const Quiver__V1__Filter *g = as_nested(f->should[0]);
    expect_sizes(g, 0, 0, 1);
    expect_int(g->must_not[0], "a", 1);
    expect_int(f->should[1], "b", 2);
    qv_filter_text_free(f);

    f = parse("not not a = 1");
    expect_sizes(f, 0, 0, 1);
    g = as_nested(f->must_not[0]);
    expect_sizes(g, 0, 0, 1);
    expect_int(g->must_not[0], "a", 1);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, in_lists_by_literal_kind)
{
    Quiver__V1__Filter *f = parse("a in ['x', \"y\", '']");
    const Quiver__V1__FieldMatch *m = as_match(only_must(f), "a");
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS);
    cr_assert_eq(m->keywords->n_values, 3);
    cr_assert_str_eq(m->keywords->values[1], "y");
    cr_assert_str_eq(m->keywords->values[2], "");
    qv_filter_text_free(f);

    f = parse("a in [1, -2, 3]");
    m = as_match(only_must(f), "a");
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_INTEGERS);
    cr_assert_eq(m->integers->n_values, 3);
    cr_assert_eq(m->integers->values[1], -2);
    qv_filter_text_free(f);

    /* Mixed or non-integer numbers: one condition per literal, any of which may hold. */
    f = parse("a in [1, 'x', 2.5, true]");
    expect_sizes(f, 0, 4, 0);
    expect_int(f->should[0], "a", 1);
    expect_keyword(f->should[1], "a", "x");
    expect_range(f->should[2], "a", GTE | LTE, 2.5);
    expect_bool(f->should[3], "a", true);
    qv_filter_text_free(f);

    f = parse("b = 1 and a in [1.5]");
    expect_sizes(f, 2, 0, 0);
    expect_int(f->must[0], "b", 1);
    const Quiver__V1__Filter *g = as_nested(f->must[1]);
    expect_sizes(g, 0, 1, 0);
    expect_range(g->should[0], "a", GTE | LTE, 1.5);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, not_in_lists_use_except_or_must_not)
{
    Quiver__V1__Filter *f = parse("a not in ['x']");
    const Quiver__V1__FieldMatch *m = as_match(only_must(f), "a");
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_KEYWORDS);
    cr_assert_eq(m->except_keywords->n_values, 1);
    cr_assert_str_eq(m->except_keywords->values[0], "x");
    qv_filter_text_free(f);

    f = parse("a NOT IN [1, 2]");
    m = as_match(only_must(f), "a");
    cr_assert_eq(m->match_case, QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_INTEGERS);
    cr_assert_eq(m->except_integers->n_values, 2);
    cr_assert_eq(m->except_integers->values[1], 2);
    qv_filter_text_free(f);

    f = parse("a not in [1, 'x']");
    expect_sizes(f, 0, 0, 2);
    expect_int(f->must_not[0], "a", 1);
    expect_keyword(f->must_not[1], "a", "x");
    qv_filter_text_free(f);

    f = parse("c = 1 or a not in [0.5, false]");
    expect_sizes(f, 0, 2, 0);
    const Quiver__V1__Filter *g = as_nested(f->should[1]);
    expect_sizes(g, 0, 0, 2);
    expect_range(g->must_not[0], "a", GTE | LTE, 0.5);
    expect_bool(g->must_not[1], "a", false);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, is_null_and_is_empty)
{
    Quiver__V1__Filter *f = parse("a is null");
    const Quiver__V1__Condition *c = only_must(f);
    cr_assert_eq(c->condition_case, QUIVER__V1__CONDITION__CONDITION_IS_NULL);
    cr_assert_str_eq(c->is_null->field, "a");
    qv_filter_text_free(f);

    f = parse("a is not null");
    expect_sizes(f, 0, 0, 1);
    cr_assert_eq(f->must_not[0]->condition_case, QUIVER__V1__CONDITION__CONDITION_IS_NULL);
    qv_filter_text_free(f);

    f = parse("a is empty");
    c = only_must(f);
    cr_assert_eq(c->condition_case, QUIVER__V1__CONDITION__CONDITION_IS_EMPTY);
    cr_assert_str_eq(c->is_empty->field, "a");
    qv_filter_text_free(f);

    f = parse("a IS NOT EMPTY");
    expect_sizes(f, 0, 0, 1);
    cr_assert_eq(f->must_not[0]->condition_case, QUIVER__V1__CONDITION__CONDITION_IS_EMPTY);
    cr_assert_str_eq(f->must_not[0]->is_empty->field, "a");
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, id_in_takes_numbers_and_uuids)
{
    Quiver__V1__Filter *f =
        parse("id in [1, 18446744073709551615, 0, '123E4567-e89b-12d3-A456-426614174000', +5]");
    const Quiver__V1__Condition *c = only_must(f);
    cr_assert_eq(c->condition_case, QUIVER__V1__CONDITION__CONDITION_HAS_ID);
    const Quiver__V1__HasId *h = c->has_id;
    cr_assert_eq(h->n_ids, 5);
    cr_assert_eq(h->ids[0]->kind_case, QUIVER__V1__POINT_ID__KIND_NUM);
    cr_assert_eq(h->ids[0]->num, 1);
    cr_assert_eq(h->ids[1]->num, UINT64_MAX);
    cr_assert_eq(h->ids[2]->num, 0);
    cr_assert_eq(h->ids[3]->kind_case, QUIVER__V1__POINT_ID__KIND_UUID);
    cr_assert_str_eq(h->ids[3]->uuid, "123e4567-e89b-12d3-a456-426614174000");
    cr_assert_eq(h->ids[4]->num, 5);
    qv_filter_text_free(f);

    f = parse("ID IN [7] and not id in [8]");
    expect_sizes(f, 1, 0, 1);
    cr_assert_eq(f->must[0]->has_id->ids[0]->num, 7);
    cr_assert_eq(f->must_not[0]->has_id->ids[0]->num, 8);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, backquoted_fields_name_anything)
{
    Quiver__V1__Filter *f = parse("`id` = 3");
    expect_int(only_must(f), "id", 3);
    qv_filter_text_free(f);
    f = parse("`my field` = 'x' and `and` > 2 and `caf\xc3\xa9` is null and `a.b` in [1]");
    expect_sizes(f, 4, 0, 0);
    expect_keyword(f->must[0], "my field", "x");
    expect_range(f->must[1], "and", GT, 2.0);
    cr_assert_str_eq(f->must[2]->is_null->field, "caf\xc3\xa9");
    cr_assert_str_eq(f->must[3]->match->field, "a.b");
    qv_filter_text_free(f);

    /* Field names are case-sensitive, keywords are not. */
    f = parse("Color = 1 AND color = 2 oR _x9 = 3");
    expect_sizes(f, 0, 2, 0);
    const Quiver__V1__Filter *g = as_nested(f->should[0]);
    expect_int(g->must[0], "Color", 1);
    expect_int(g->must[1], "color", 2);
    expect_int(f->should[1], "_x9", 3);
    qv_filter_text_free(f);

    char longest[300];
    memset(longest, 'f', 256);
    strcpy(longest + 256, " = 1");
    f = parse(longest);
    cr_assert_eq(strlen(only_must(f)->match->field), 256);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, keywords_are_case_insensitive)
{
    Quiver__V1__Filter *f = parse("a = 1 AND b In [2] Or NOT c Is NuLL aNd d = TRUE");
    expect_sizes(f, 0, 2, 0);
    const Quiver__V1__Filter *g = as_nested(f->should[0]);
    expect_sizes(g, 2, 0, 0);
    const Quiver__V1__Filter *h = as_nested(f->should[1]);
    expect_sizes(h, 1, 0, 1);
    cr_assert_eq(h->must_not[0]->condition_case, QUIVER__V1__CONDITION__CONDITION_IS_NULL);
    expect_bool(h->must[0], "d", true);
    qv_filter_text_free(f);
    assert_no_leaks();
}

Test(filter_text, blank_text_is_the_empty_filter)
{
    const char *blanks[] = {"", " ", " \t\r\n\v\f "};
    for (size_t i = 0; i < sizeof(blanks) / sizeof(blanks[0]); i++) {
        Quiver__V1__Filter *f = parse(blanks[i]);
        expect_sizes(f, 0, 0, 0);
        qv_filter_text_free(f);
    }
    Quiver__V1__Filter *f = parse_len(NULL, 0);
    expect_sizes(f, 0, 0, 0);
    qv_filter_text_free(f);
    /* The length bounds the text: what follows is not read. */
    f = parse_len("a = 1 garbage", 5);
    expect_int(only_must(f), "a", 1);
    qv_filter_text_free(f);
    qv_filter_text_free(NULL);
    assert_no_leaks();
}

/* ---- limits ---------------------------------------------------------------------------------- */

/* "a=1 or (a=1 and (a=1 or (...)))": each level alternates the operator, so each adds a Filter
 * level; `levels` levels in all. */
static void alternating(char *buf, size_t cap, int levels)
{
    size_t n = 0;
    for (int k = levels; k >= 1; k--)
        n += (size_t)snprintf(buf + n, cap - n, "a=1 %s (", k % 2 ? "or" : "and");
    n += (size_t)snprintf(buf + n, cap - n, "a=1");
    for (int k = 0; k < levels; k++)
        n += (size_t)snprintf(buf + n, cap - n, ")");
    cr_assert_lt(n, cap);
}

Test(filter_text, depth_sixteen_passes_seventeen_fails)
{
    char buf[512];
    alternating(buf, sizeof(buf), 16);
    Quiver__V1__Filter *f = parse(buf);
    size_t n = 0;
    cr_assert_eq(check_filter(f, &n), 16);
    qv_filter_text_free(f);

    alternating(buf, sizeof(buf), 17);
    expect_error(buf, 7, "nests deeper than 16 levels, found '('");

    /* Each `not` over a `not` adds a level: 16 pass, 17 fail at the outermost. */
    char nots[256] = "a = 1 and ";
    for (int i = 0; i < 16; i++)
        strcat(nots, "not ");
    strcat(nots, "b = 1");
    f = parse(nots);
    n = 0;
    cr_assert_eq(check_filter(f, &n), 16);
    qv_filter_text_free(f);
    char more[256] = "a = 1 and not ";
    strcat(more, nots + strlen("a = 1 and "));
    expect_error(more, 10, "nests deeper than 16 levels, found 'not'");
    assert_no_leaks();
}

Test(filter_text, nesting_in_the_text_is_bounded)
{
    char buf[300];
    size_t n = 0;
    for (int i = 0; i < 65; i++)
        buf[n++] = '(';
    memcpy(buf + n, "a=1", 3);
    n += 3;
    for (int i = 0; i < 65; i++)
        buf[n++] = ')';
    expect_error_len(buf, n, 64, "nests deeper than 64 levels");

    char deep[4096];
    memset(deep, '(', sizeof(deep));
    expect_error_len(deep, sizeof(deep), 64, "nests deeper than 64 levels");
    memset(deep, 'n', sizeof(deep));
    for (size_t i = 0; i + 4 <= sizeof(deep); i += 4)
        memcpy(deep + i, "not ", 4);
    expect_error_len(deep, sizeof(deep), 64 * 4, "nests deeper than 64 levels");
    assert_no_leaks();
}

/* "<field> in ['x',1,1,...]" with `count` literals; returns the offset of literal k (0-based)
 * through *offk. */
static size_t mixed_list(char *buf, size_t cap, const char *field, int count, int k, size_t *offk)
{
    size_t n = (size_t)snprintf(buf, cap, "%s in [", field);
    for (int i = 0; i < count; i++) {
        if (i > 0)
            buf[n++] = ',';
        if (i == k)
            *offk = n;
        n += (size_t)snprintf(buf + n, cap - n, "%s", i == 0 ? "'x'" : "1");
    }
    buf[n++] = ']';
    buf[n] = '\0';
    cr_assert_lt(n, cap);
    return n;
}

Test(filter_text, condition_and_list_limits)
{
    static char buf[4200];
    size_t off = 0;
    /* 1,024 literals of mixed kinds: 1,024 conditions, the most allowed. */
    mixed_list(buf, sizeof(buf), "a", 1024, 0, &off);
    Quiver__V1__Filter *f = parse(buf);
    expect_sizes(f, 0, 1024, 0);
    qv_filter_text_free(f);

    mixed_list(buf, sizeof(buf), "a", 1025, 1024, &off);
    expect_error(buf, off, "list holds more than 1024 values, found '1'");

    /* Two lists of 600: the 425th literal of the second is condition 1,025. */
    size_t n = mixed_list(buf, sizeof(buf), "a", 600, 0, &off);
    n += (size_t)snprintf(buf + n, sizeof(buf) - n, " or ");
    size_t second = n;
    mixed_list(buf + n, sizeof(buf) - n, "b", 600, 424, &off);
    expect_error(buf, second + off, "more than 1024 conditions, found '1'");

    /* An `id in` list is one condition but holds at most 1,024 ids too. */
    n = (size_t)snprintf(buf, sizeof(buf), "id in [");
    for (int i = 0; i < 1025; i++) {
        if (i > 0)
            buf[n++] = ',';
        if (i == 1024)
            off = n;
        n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%d", i % 10);
    }
    snprintf(buf + n, sizeof(buf) - n, "]");
    expect_error(buf, off, "list holds more than 1024 values");
    assert_no_leaks();
}

Test(filter_text, text_longer_than_4096_bytes_fails)
{
    static char buf[4200];
    memset(buf, ' ', sizeof(buf));
    memcpy(buf, "a = 1", 5);
    Quiver__V1__Filter *f = parse_len(buf, 4096);
    expect_int(only_must(f), "a", 1);
    qv_filter_text_free(f);
    expect_error_len(buf, 4097, 4096, "filter text is 4097 bytes, at most 4096");
    assert_no_leaks();
}

/* ---- errors ---------------------------------------------------------------------------------- */

Test(filter_text, error_message_names_offset_and_token)
{
    qv_status err = {0};
    Quiver__V1__Filter *f = NULL;
    const char *text = "price < and b = 1";
    cr_assert_eq(qv_filter_text_parse(text, strlen(text), &f, &err), QV_EINVAL);
    cr_assert_str_eq(err.msg, "filter_text: at byte 8: expected a value after '<', found 'and'");
    cr_assert_null(f);
    /* err may be NULL. */
    cr_assert_eq(qv_filter_text_parse(text, strlen(text), &f, NULL), QV_EINVAL);
    cr_assert_null(f);
    assert_no_leaks();
}

Test(filter_text, error_unterminated_string)
{
    expect_error("a = 'abc", 4, "unterminated string, found 'abc");
    expect_error("a = \"abc\\\"", 4, "unterminated string");
    expect_error("a = 'abc\\", 4, "unterminated string");
    expect_error("a = 1 and `abc = 2", 10, "unterminated backquoted field name");
    expect_error("a = 'x\\n'", 6, "unknown escape");
    expect_error_len("a = 'x\0y'", 9, 6, "NUL byte in a string");
    assert_no_leaks();
}

Test(filter_text, error_missing_value)
{
    expect_error("a =", 3, "expected a value after '=', found end of input");
    expect_error("a = and", 4, "expected a value after '=', found 'and'");
    expect_error("a >= )", 5, "expected a value after '>=', found ')'");
    expect_error("a = null", 4, "is null");
    expect_error("a = b", 4, "expected a value after '=', found 'b'");
    expect_error("a = 1 and", 9, "expected a field, 'not' or '(', found end of input");
    expect_error("a = 1 or or b = 1", 9, "expected a field, 'not' or '('");
    expect_error("()", 1, "expected a field, 'not' or '(', found ')'");
    assert_no_leaks();
}

Test(filter_text, error_bad_operator)
{
    expect_error("a == 1", 3, "expected a value after '=', found '='");
    expect_error("a ~ 1", 2, "unexpected character, found '~'");
    expect_error("a ! 1", 2, "unexpected character");
    expect_error("a like 'x'", 2, "expected an operator after the field");
    expect_error("a", 1, "expected an operator after the field");
    expect_error("a < 'x'", 4, "'<' compares numbers only, found 'x'");
    expect_error("a >= true", 5, "'>=' compares numbers only, found 'true'");
    expect_error("a = 1 and b \xc3\xa9 2", 12, "unexpected character, found '\\xc3'");
    assert_no_leaks();
}

Test(filter_text, error_trailing_garbage)
{
    expect_error("a = 1 b = 2", 6, "expected 'and', 'or' or the end of the filter, found 'b'");
    expect_error("a = 1)", 5, "found ')'");
    expect_error("a = 1 and b = 2 ,", 16, "found ','");
    expect_error("(a = 1", 6, "expected ')' to close the '(' at byte 0, found end of input");
    expect_error("(a = 1 b", 7, "expected ')' to close the '(' at byte 0, found 'b'");
    assert_no_leaks();
}

Test(filter_text, error_unknown_keyword)
{
    expect_error("a is nul", 5, "expected 'null', 'empty' or 'not' after 'is', found 'nul'");
    expect_error("a is not nothing", 9, "expected 'null' or 'empty' after 'is not'");
    expect_error("a not like [1]", 6, "expected 'in' after 'not', found 'like'");
    expect_error("a = 1 xor b = 2", 6, "expected 'and', 'or' or the end of the filter");
    expect_error("id = 3", 3, "expected 'in' after 'id'");
    expect_error("id not in [3]", 3, "expected 'in' after 'id'");
    expect_error("and = 1", 0, "write `and` for a payload field named and), found 'and'");
    expect_error("a = 1 or Null = 2", 9, "write `null`");
    assert_no_leaks();
}

Test(filter_text, error_numbers_out_of_range_or_malformed)
{
    expect_error("a = 9223372036854775808", 4, "integer out of the int64 range");
    expect_error("a = -9223372036854775809", 4, "integer out of the int64 range");
    expect_error("a > 99999999999999999999999", 4, "integer out of the int64 range");
    expect_error("a in [1, 9223372036854775808]", 9, "integer out of the int64 range");
    expect_error("a = 1e999", 4, "must be finite");
    expect_error("a < -1e400", 4, "must be finite");
    expect_error("a = 3abc", 4, "malformed number, found '3abc'");
    expect_error("a = 1.2.3", 4, "malformed number, found '1.2.3'");
    expect_error("a = 0x10", 4, "malformed number");
    expect_error("a = 1e", 4, "malformed number");
    expect_error("a = - 1", 4, "unexpected character, found '-'");
    assert_no_leaks();
}

Test(filter_text, error_bad_point_ids)
{
    expect_error("id in [1, 'not-a-uuid']", 10, "expected a UUID");
    expect_error("id in ['123e4567e89b12d3a456426614174000']", 7, "expected a UUID");
    expect_error("id in ['123e4567-e89b-12d3-a456-42661417400g']", 7, "expected a UUID");
    expect_error("id in ['123e4567-e89b-12d3-a456-4266141740001']", 7, "expected a UUID");
    expect_error("id in [18446744073709551616]", 7, "point id out of range");
    expect_error("id in [-1]", 7, "point id out of range");
    expect_error("id in [1.5]", 7, "expected a point id");
    expect_error("id in [true]", 7, "expected a point id");
    expect_error("id in 3", 6, "expected '[' after 'id in'");
    assert_no_leaks();
}

Test(filter_text, error_invalid_utf8)
{
    expect_error("a = 'x\xff'", 6, "invalid UTF-8 in a string, found '\\xff'");
    expect_error("a = '\xc0\xaf'", 5, "invalid UTF-8");         /* overlong '/' */
    expect_error("a = 'ok \xed\xa0\x80'", 8, "invalid UTF-8");  /* surrogate */
    expect_error("a = '\xe2\x82'", 5, "invalid UTF-8");         /* truncated */
    expect_error("a = '\xf4\x90\x80\x80'", 5, "invalid UTF-8"); /* above U+10FFFF */
    expect_error("a in ['ok', '\x80']", 13, "invalid UTF-8");
    expect_error("`\xff` = 1", 1, "invalid UTF-8 in a field name");
    assert_no_leaks();
}

Test(filter_text, error_lists)
{
    expect_error("a in []", 6, "empty list");
    expect_error("id in [ ]", 8, "empty list");
    expect_error("a not in [1,]", 12, "expected a value in the list, found ']'");
    expect_error("a in [1 2]", 8, "expected ',' or ']' in the list, found '2'");
    expect_error("a in [1", 7, "expected ',' or ']' in the list, found end of input");
    expect_error("a in 1", 5, "expected '[' after 'in'");
    expect_error("a in [(1)]", 6, "expected a value in the list");
    assert_no_leaks();
}

Test(filter_text, error_field_names)
{
    expect_error("`` = 1", 0, "empty field name");
    char buf[300];
    memset(buf, 'f', 257);
    strcpy(buf + 257, " = 1");
    expect_error(buf, 0, "field name longer than 256 bytes");
    buf[0] = '`';
    memset(buf + 1, 'f', 257);
    strcpy(buf + 258, "` = 1");
    expect_error(buf, 0, "field name longer than 256 bytes");
    expect_error("= 1", 0, "expected a field, 'not' or '('");
    expect_error("'a' = 1", 0, "expected a field, 'not' or '(', found 'a'");
    assert_no_leaks();
}

/* ---- allocation failures ------------------------------------------------------------------- */

#if defined(QV_TEST_WRAP_MALLOC)
/* The test links with --wrap for malloc, calloc and realloc: g_fail_at arms a failure of the
 * g_fail_at-th allocation (0-based) made by this executable's own objects, the parser included. */
static long g_fail_at = -1;
static long g_allocs;

void *__real_malloc(size_t n);
void *__real_calloc(size_t n, size_t size);
void *__real_realloc(void *p, size_t n);
void *__wrap_malloc(size_t n);
void *__wrap_calloc(size_t n, size_t size);
void *__wrap_realloc(void *p, size_t n);

static bool should_fail(void)
{
    return g_fail_at >= 0 && g_allocs++ == g_fail_at;
}

void *__wrap_malloc(size_t n)
{
    return should_fail() ? NULL : __real_malloc(n);
}

void *__wrap_calloc(size_t n, size_t size)
{
    return should_fail() ? NULL : __real_calloc(n, size);
}

void *__wrap_realloc(void *p, size_t n)
{
    return should_fail() ? NULL : __real_realloc(p, n);
}

Test(filter_text, out_of_memory_at_any_allocation_fails_cleanly)
{
    static const char *const texts[] = {
        "label = 3 and price < 10.5 and color in ['red', 'blue']",
        "a in [1, 'x', 2.5] or not (b != 'y' and id in [1, '123e4567-e89b-12d3-a456-426614174000'])"
        " and c is not empty and `d` not in ['p', 'q'] and e not in [1, 2]",
        "(a = 1 or b = 2) and not (c = 3 or d in [1, true]) or not not e is null",
    };
    for (size_t i = 0; i < sizeof(texts) / sizeof(texts[0]); i++) {
        for (long k = 0;; k++) {
            Quiver__V1__Filter *f = (Quiver__V1__Filter *)&f;
            qv_status err = {0};
            g_allocs = 0;
            g_fail_at = k;
            int rc = qv_filter_text_parse(texts[i], strlen(texts[i]), &f, &err);
            g_fail_at = -1;
            if (rc == 0) {
                cr_assert_gt(k, 10, "only %ld allocations for \"%s\"?", k, texts[i]);
                check_parsed(f);
                qv_filter_text_free(f);
                break;
            }
            cr_assert_eq(rc, QV_ERESOURCE, "allocation %ld failed: rc %d (%s)", k, rc, err.msg);
            cr_assert_null(f);
            cr_assert_str_eq(err.msg, "filter_text: out of memory");
        }
    }
    assert_no_leaks();
}
#endif

/* ---- random input ---------------------------------------------------------------------------- */

static uint64_t rnd(uint64_t *s)
{
    /* xorshift64*: deterministic, so a failure replays. */
    *s ^= *s >> 12;
    *s ^= *s << 25;
    *s ^= *s >> 27;
    return *s * 0x2545F4914F6CDD1DULL;
}

/* Parses; success or QV_EINVAL with a well-formed message are the only acceptable outcomes. */
static bool parse_any(const char *text, size_t len)
{
    Quiver__V1__Filter *f = (Quiver__V1__Filter *)&f;
    qv_status err = {0};
    int rc = qv_filter_text_parse(text, len, &f, &err);
    if (rc == 0) {
        CHECK(f != NULL);
        check_parsed(f);
        qv_filter_text_free(f);
        return true;
    }
    CHECK(rc == QV_EINVAL, "rc %d on \"%.*s\"", rc, (int)len, text);
    CHECK(f == NULL);
    CHECK(strncmp(err.msg, "filter_text: at byte ", 21) == 0, "message: %s", err.msg);
    return false;
}

static const char *const soup[] = {
    "a",
    "b_2",
    "`x y`",
    "`id`",
    "id",
    "ID",
    "=",
    "!=",
    "<",
    "<=",
    ">",
    ">=",
    "and",
    "OR",
    "not",
    "in",
    "is",
    "null",
    "empty",
    "true",
    "False",
    "(",
    ")",
    "[",
    "]",
    ",",
    "1",
    "-2",
    "2.5",
    "1e3",
    "'s'",
    "\"t\"",
    "'",
    "`",
    "\\",
    "!",
    "9223372036854775808",
    "'123e4567-e89b-12d3-a456-426614174000'",
    "18446744073709551616",
    "'\xff'",
    "\xc3\xa9",
    ".",
    "+",
    "1.",
    "\"",
    "nOt",
    "iS",
    "`and`",
};

Test(filter_text, random_bytes_and_token_soup_never_crash)
{
    static const char alphabet[] = "ab =<>!()[],'\"`01.-e in or and not";
    uint64_t s = 0x9e3779b97f4a7c15ULL;
    char buf[512];
    int ok = 0;
    for (int iter = 0; iter < 20000; iter++) {
        size_t len = rnd(&s) % 64;
        for (size_t i = 0; i < len; i++) {
            /* Mostly grammar bytes, so inputs get past the first token now and then. */
            uint64_t r = rnd(&s);
            buf[i] = r % 3 == 0 ? (char)(r >> 8) : alphabet[(r >> 8) % (sizeof(alphabet) - 1)];
        }
        ok += parse_any(buf, len);
    }
    for (int iter = 0; iter < 30000; iter++) {
        size_t n = 0, ntok = rnd(&s) % 24;
        for (size_t t = 0; t < ntok; t++) {
            const char *w = soup[rnd(&s) % (sizeof(soup) / sizeof(soup[0]))];
            size_t wl = strlen(w);
            if (n + wl + 1 >= sizeof(buf))
                break;
            memcpy(buf + n, w, wl);
            n += wl;
            if (rnd(&s) % 4 != 0)
                buf[n++] = ' ';
        }
        ok += parse_any(buf, n);
    }
    cr_assert_gt(ok, 100, "only %d random inputs parsed: the generator is too weak", ok);
    assert_no_leaks();
}

static void put(char *buf, size_t *n, size_t cap, const char *fmt, ...) QV_PRINTF(4, 5);

static void put(char *buf, size_t *n, size_t cap, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    CHECK(k >= 0 && (size_t)k < cap - *n, "generated text too long");
    *n += (size_t)k;
}

static void gen_literal(uint64_t *s, char *buf, size_t *n, size_t cap, bool numeric)
{
    static const char *const strs[] = {"'x'",      "\"y\"",         "''",
                                       "'it\\'s'", "\"q\\\"\\\\\"", "'h\xc3\xa9'"};
    switch (rnd(s) % (numeric ? 2 : 4)) {
    case 0:
        put(buf, n, cap, "%" PRId64, (int64_t)rnd(s) >> (rnd(s) % 64));
        break;
    case 1:
        put(buf, n, cap, "%.17g", (double)(int64_t)rnd(s) / (double)(1 + rnd(s) % 100000));
        break;
    case 2:
        put(buf, n, cap, "%s", strs[rnd(s) % (sizeof(strs) / sizeof(strs[0]))]);
        break;
    default:
        put(buf, n, cap, "%s", rnd(s) % 2 ? "true" : "FALSE");
        break;
    }
}

/* A random valid expression `levels` deep at most. */
static void gen_expr(uint64_t *s, char *buf, size_t *n, size_t cap, int levels)
{
    static const char *const fields[] = {"a", "b_2", "`x y`", "`id`", "Price", "`NOT`"};
    static const char *const ops[] = {"=", "!=", "<", "<=", ">", ">="};
    switch (levels <= 0 ? 0 : rnd(s) % 5) {
    case 1:
        put(buf, n, cap, "(");
        gen_expr(s, buf, n, cap, levels - 1);
        put(buf, n, cap, " AND ");
        gen_expr(s, buf, n, cap, levels - 1);
        put(buf, n, cap, ")");
        return;
    case 2:
        gen_expr(s, buf, n, cap, levels - 1);
        put(buf, n, cap, " or ");
        gen_expr(s, buf, n, cap, levels - 1);
        return;
    case 3:
        put(buf, n, cap, "not ");
        gen_expr(s, buf, n, cap, levels - 1);
        return;
    case 4:
        put(buf, n, cap, "(");
        gen_expr(s, buf, n, cap, levels - 1);
        put(buf, n, cap, ")");
        return;
    default:
        break;
    }
    const char *field = fields[rnd(s) % (sizeof(fields) / sizeof(fields[0]))];
    switch (rnd(s) % 4) {
    case 0: {
        unsigned op = (unsigned)(rnd(s) % 6);
        put(buf, n, cap, "%s %s ", field, ops[op]);
        gen_literal(s, buf, n, cap, op >= 2);
        break;
    }
    case 1: {
        put(buf, n, cap, "%s %sin [", field, rnd(s) % 2 ? "not " : "");
        int k = 1 + (int)(rnd(s) % 3);
        for (int i = 0; i < k; i++) {
            if (i > 0)
                put(buf, n, cap, ", ");
            gen_literal(s, buf, n, cap, rnd(s) % 2);
        }
        put(buf, n, cap, "]");
        break;
    }
    case 2:
        put(buf, n, cap, "%s is %s%s", field, rnd(s) % 2 ? "not " : "",
            rnd(s) % 2 ? "null" : "empty");
        break;
    default:
        put(buf, n, cap, "id in [%" PRIu64 ", '123e4567-E89B-12d3-a456-426614174000']", rnd(s));
        break;
    }
}

Test(filter_text, random_valid_expressions_always_parse)
{
    uint64_t s = 42;
    static char buf[4097];
    for (int iter = 0; iter < 5000; iter++) {
        size_t n = 0;
        gen_expr(&s, buf, &n, sizeof(buf), 4);
        Quiver__V1__Filter *f = parse_len(buf, n);
        qv_filter_text_free(f);
    }
    assert_no_leaks();
}
