/*
 * Tests for sdk/c/json.c: the JSON <-> quiver.v1.Payload codec (json_internal.h) and the public
 * helpers built on it (qv_payload_json_normalize, qv_point_json_parse). Pure unit tests: no node.
 *
 * Criterion ignores LeakSanitizer's report at exit, so every test ends with an explicit leak
 * check.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include "sdk/c/json_internal.h"
#include "sdk/c/quiver.h"

#include <locale.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static void expect_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (see stderr)");
#endif
}

/* ---- helpers ----------------------------------------------------------------------------------
 */

/* An assertion that reports only when it fails: ctest runs suites with --full-stats, which sends
 * every passing assertion to the runner, and the loops below make hundreds of thousands. */
#define CHECK(cond, ...)                                                                           \
    do {                                                                                           \
        if (!(cond))                                                                               \
            cr_assert_fail(__VA_ARGS__);                                                           \
    } while (0)

static Quiver__V1__Payload *parse_ok(const char *text)
{
    Quiver__V1__Payload *p = NULL;
    qv_status err = qv_status_ok();
    int rc = qv__sdk_json_parse_payload(text, strlen(text), &p, &err);
    CHECK(rc == 0 && p != NULL, "parsing %s: %d %s", text, rc, err.msg);
    return p;
}

/* Parses text that must fail at byte `at` with a message containing `why`. */
static void parse_fails(const char *text, size_t len, size_t at, const char *why)
{
    Quiver__V1__Payload *p = (Quiver__V1__Payload *)&p; /* must be reset to NULL */
    qv_status err = qv_status_ok();
    int rc = qv__sdk_json_parse_payload(text, len, &p, &err);
    cr_assert_eq(rc, QV_EINVAL, "'%.*s' gave %d (%s)", (int)len, text, rc, err.msg);
    cr_assert_eq(err.code, QV_EINVAL);
    cr_assert_null(p, "'%.*s' left a payload", (int)len, text);
    char want[48];
    snprintf(want, sizeof(want), "at byte %zu:", at);
    cr_assert_not_null(strstr(err.msg, want), "'%.*s': want '%s' in: %s", (int)len, text, want,
                       err.msg);
    cr_assert_not_null(strstr(err.msg, why), "'%.*s': want '%s' in: %s", (int)len, text, why,
                       err.msg);
}

static char *format_ok(const Quiver__V1__Payload *p)
{
    char *out = NULL;
    size_t len = 0;
    qv_status err = qv_status_ok();
    int rc = qv__sdk_json_format_payload(p, &out, &len, &err);
    CHECK(rc == 0 && out != NULL, "format: %d %s", rc, err.msg);
    CHECK(len == strlen(out), "length %zu for %s", len, out);
    return out;
}

/* parse(text), then format: the canonical text. */
static char *canonical(const char *text)
{
    Quiver__V1__Payload *p = parse_ok(text);
    char *out = format_ok(p);
    quiver__v1__payload__free_unpacked(p, NULL);
    return out;
}

static const Quiver__V1__Value *field(const Quiver__V1__Payload *p, const char *key)
{
    for (size_t i = 0; i < p->n_fields; i++)
        if (strcmp(p->fields[i]->key, key) == 0)
            return p->fields[i]->value;
    cr_assert_fail("no key '%s'", key);
    return NULL;
}

/* ---- parsing ------------------------------------------------------------------------------- */

Test(sdk_json, parses_every_value_type_in_key_order)
{
    Quiver__V1__Payload *p =
        parse_ok(" {\"n\": null, \"s\": \"x y\", \"i\": 42, \"neg\": -7, \"d\": 9.5,\n"
                 "\t\"t\": true, \"f\": false, \"l\": [1, \"a\", [2.5, null]], \"e\": [], "
                 "\"empty\": \"\"}\r\n");
    cr_assert_eq(p->n_fields, 10);
    static const char *const order[] = {"n", "s", "i", "neg", "d", "t", "f", "l", "e", "empty"};
    for (size_t i = 0; i < 10; i++)
        cr_assert_str_eq(p->fields[i]->key, order[i]);

    cr_assert_eq(field(p, "n")->kind_case, QUIVER__V1__VALUE__KIND_NULL_VALUE);
    cr_assert_not_null(field(p, "n")->null_value);
    cr_assert_eq(field(p, "s")->kind_case, QUIVER__V1__VALUE__KIND_STRING_VALUE);
    cr_assert_str_eq(field(p, "s")->string_value, "x y");
    cr_assert_eq(field(p, "i")->kind_case, QUIVER__V1__VALUE__KIND_INTEGER_VALUE);
    cr_assert_eq(field(p, "i")->integer_value, 42);
    cr_assert_eq(field(p, "neg")->integer_value, -7);
    cr_assert_eq(field(p, "d")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "d")->double_value, 9.5);
    cr_assert_eq(field(p, "t")->kind_case, QUIVER__V1__VALUE__KIND_BOOL_VALUE);
    cr_assert(field(p, "t")->bool_value);
    cr_assert_not(field(p, "f")->bool_value);
    cr_assert_eq(field(p, "empty")->kind_case, QUIVER__V1__VALUE__KIND_STRING_VALUE);
    cr_assert_str_eq(field(p, "empty")->string_value, "");

    const Quiver__V1__Value *l = field(p, "l");
    cr_assert_eq(l->kind_case, QUIVER__V1__VALUE__KIND_LIST_VALUE);
    cr_assert_eq(l->list_value->n_values, 3);
    cr_assert_eq(l->list_value->values[0]->integer_value, 1);
    cr_assert_str_eq(l->list_value->values[1]->string_value, "a");
    const Quiver__V1__ListValue *inner = l->list_value->values[2]->list_value;
    cr_assert_eq(inner->n_values, 2);
    cr_assert_eq(inner->values[0]->double_value, 2.5);
    cr_assert_eq(inner->values[1]->kind_case, QUIVER__V1__VALUE__KIND_NULL_VALUE);
    cr_assert_eq(field(p, "e")->list_value->n_values, 0);

    /* The tree is shaped like an unpacked message: it packs, and unpacks to the same thing. */
    size_t len = quiver__v1__payload__get_packed_size(p);
    uint8_t *buf = malloc(len);
    quiver__v1__payload__pack(p, buf);
    Quiver__V1__Payload *q = quiver__v1__payload__unpack(NULL, len, buf);
    cr_assert_not_null(q);
    char *a = format_ok(p), *b = format_ok(q);
    cr_assert_str_eq(a, b);
    free(a);
    free(b);
    free(buf);
    quiver__v1__payload__free_unpacked(q, NULL);
    quiver__v1__payload__free_unpacked(p, NULL);

    Quiver__V1__Payload *empty = parse_ok("{}");
    cr_assert_eq(empty->n_fields, 0);
    quiver__v1__payload__free_unpacked(empty, NULL);
    expect_no_leaks();
}

Test(sdk_json, integers_fit_int64_and_everything_else_is_a_double)
{
    Quiver__V1__Payload *p =
        parse_ok("{\"max\": 9223372036854775807, \"min\": -9223372036854775808,"
                 " \"over\": 9223372036854775808, \"under\": "
                 "-9223372036854775809, \"huge\": 123456789012345678901234,"
                 " \"one\": 1.0, \"exp\": 1e2, \"negzero\": -0, \"zero\": 0,"
                 " \"tiny\": 1e-400, \"E\": 2E+3}");
    cr_assert_eq(field(p, "max")->kind_case, QUIVER__V1__VALUE__KIND_INTEGER_VALUE);
    cr_assert_eq(field(p, "max")->integer_value, INT64_MAX);
    cr_assert_eq(field(p, "min")->kind_case, QUIVER__V1__VALUE__KIND_INTEGER_VALUE);
    cr_assert_eq(field(p, "min")->integer_value, INT64_MIN);
    cr_assert_eq(field(p, "over")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "over")->double_value, 9223372036854775808.0);
    cr_assert_eq(field(p, "under")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "huge")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "huge")->double_value, 123456789012345678901234.0);
    cr_assert_eq(field(p, "one")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "one")->double_value, 1.0);
    cr_assert_eq(field(p, "exp")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "exp")->double_value, 100.0);
    cr_assert_eq(field(p, "negzero")->kind_case, QUIVER__V1__VALUE__KIND_INTEGER_VALUE);
    cr_assert_eq(field(p, "negzero")->integer_value, 0);
    cr_assert_eq(field(p, "zero")->integer_value, 0);
    cr_assert_eq(field(p, "tiny")->kind_case, QUIVER__V1__VALUE__KIND_DOUBLE_VALUE);
    cr_assert_eq(field(p, "tiny")->double_value, 0.0); /* underflow is finite */
    cr_assert_eq(field(p, "E")->double_value, 2000.0);
    quiver__v1__payload__free_unpacked(p, NULL);
    expect_no_leaks();
}

Test(sdk_json, escapes_and_unicode_are_decoded)
{
    Quiver__V1__Payload *p =
        parse_ok("{\"esc\": \"\\\"\\\\\\/\\b\\f\\n\\r\\t\", \"bmp\": \"\\u00e9\\u20AC\\u0041\","
                 " \"pair\": \"\\ud83d\\ude00\", \"raw\": \"\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80\","
                 " \"\\u006b\\u0065\\u0079\": 1, \"caf\xc3\xa9\": 2, \"del\": \"\x7f\"}");
    cr_assert_str_eq(field(p, "esc")->string_value, "\"\\/\b\f\n\r\t");
    cr_assert_str_eq(field(p, "bmp")->string_value, "\xc3\xa9\xe2\x82\xac"
                                                    "A");
    cr_assert_str_eq(field(p, "pair")->string_value, "\xf0\x9f\x98\x80");
    cr_assert_str_eq(field(p, "raw")->string_value, "\xc3\xa9\xe2\x82\xac\xf0\x9f\x98\x80");
    cr_assert_eq(field(p, "key")->integer_value, 1); /* escapes in keys too */
    cr_assert_eq(field(p, "caf\xc3\xa9")->integer_value, 2);
    cr_assert_str_eq(field(p, "del")->string_value, "\x7f");
    quiver__v1__payload__free_unpacked(p, NULL);

    /* Highest code point, as a pair and raw. */
    p = parse_ok("{\"a\": \"\\uDBFF\\uDFFF\", \"b\": \"\xf4\x8f\xbf\xbf\"}");
    cr_assert_str_eq(field(p, "a")->string_value, "\xf4\x8f\xbf\xbf");
    cr_assert_str_eq(field(p, "b")->string_value, "\xf4\x8f\xbf\xbf");
    quiver__v1__payload__free_unpacked(p, NULL);
    expect_no_leaks();
}

Test(sdk_json, invalid_utf8_is_refused_at_its_offset)
{
    /* {"a":"x then the bad sequence at byte 7. */
    static const struct {
        const char *text;
        const char *what;
    } bad[] = {
        {"{\"a\":\"x\xc0\x80\"}", "overlong 2-byte NUL"},
        {"{\"a\":\"x\xc1\xbf\"}", "overlong 2-byte"},
        {"{\"a\":\"x\xe0\x80\xaf\"}", "overlong 3-byte"},
        {"{\"a\":\"x\xf0\x80\x80\xaf\"}", "overlong 4-byte"},
        {"{\"a\":\"x\xed\xa0\x80\"}", "UTF-16 surrogate"},
        {"{\"a\":\"x\xf4\x90\x80\x80\"}", "above U+10FFFF"},
        {"{\"a\":\"x\xf5\x80\x80\x80\"}", "lead byte F5"},
        {"{\"a\":\"x\xff\"}", "byte FF"},
        {"{\"a\":\"x\x80\"}", "lone continuation"},
        {"{\"a\":\"x\xe2\x82\"}", "truncated 3-byte"},
        {"{\"a\":\"x\xe2\x28\xa1\"}", "bad continuation"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        cr_log_info("case %s", bad[i].what);
        parse_fails(bad[i].text, strlen(bad[i].text), 7, "invalid UTF-8");
    }
    /* In a key as well, and outside strings. */
    parse_fails("{\"k\xff\":1}", 8, 3, "invalid UTF-8");
    parse_fails("{\"a\":\xc3\xa9}", 8, 5, "expected a value, found byte 0xC3");
    expect_no_leaks();
}

Test(sdk_json, malformed_inputs_name_their_byte_offset)
{
    static const struct {
        const char *text;
        size_t at;
        const char *why;
    } bad[] = {
        {"", 0, "must be a JSON object, found the end of the input"},
        {"   ", 3, "must be a JSON object"},
        {"[1]", 0, "must be a JSON object, found '['"},
        {"null", 0, "must be a JSON object"},
        {"{", 1, "expected a key string, found the end of the input"},
        {"{\"a\"}", 4, "expected ':' after a key, found '}'"},
        {"{\"a\":}", 5, "expected a value, found '}'"},
        {"{\"a\":1,}", 7, "expected a key string, found '}'"},
        {"{\"a\":1 \"b\":2}", 7, "expected ',' or '}'"},
        {"{\"a\":1", 6, "expected ',' or '}' after a value, found the end of the input"},
        {"{\"a\":01}", 5, "leading zeros"},
        {"{\"a\":-01}", 5, "leading zeros"},
        {"{\"a\":1.}", 7, "after '.'"},
        {"{\"a\":1.e5}", 7, "after '.'"},
        {"{\"a\":1e}", 7, "exponent"},
        {"{\"a\":1e+}", 8, "exponent"},
        {"{\"a\":-}", 6, "expected a digit"},
        {"{\"a\":+1}", 5, "expected a value, found '+'"},
        {"{\"a\":.5}", 5, "expected a value, found '.'"},
        {"{\"a\":NaN}", 5, "expected a value"},
        {"{\"a\":Infinity}", 5, "expected a value"},
        {"{\"a\":tru}", 5, "expected a value"},
        {"{\"a\":nul}", 5, "expected a value"},
        {"{\"a\":True}", 5, "expected a value"},
        {"{\"a\":\"x}", 5, "unterminated string"},
        {"{\"a\":\"x\\\"}", 5, "unterminated string"},
        {"{\"a\":\"\\x\"}", 6, "invalid escape"},
        {"{\"a\":\"\\u12\"}", 6, "four hex digits"},
        {"{\"a\":\"\\u12G4\"}", 6, "four hex digits"},
        {"{\"a\":\"\\ud800\"}", 6, "unpaired surrogate \\uD800"},
        {"{\"a\":\"\\ud800\\u0041\"}", 6, "unpaired surrogate"},
        {"{\"a\":\"\\udc00\"}", 6, "unpaired surrogate \\uDC00"},
        {"{\"a\":\"\\u0000\"}", 6, "cannot hold NUL"},
        {"{\"a\":\"tab\there\"}", 9, "control character 0x09"},
        {"{\"a\":\"nl\nx\"}", 8, "control character 0x0A"},
        {"{\"a\":1} x", 8, "unexpected 'x' after the object"},
        {"{\"a\":1}}", 7, "unexpected '}' after the object"},
        {"{\"a\":1}{}", 7, "after the object"},
        {"{\"a\":{}}", 5, "nested objects are not payload values"},
        {"{\"a\":[1,{\"b\":2}]}", 8, "nested objects are not payload values"},
        {"{\"a\":1,\"a\":2}", 7, "duplicate key \"a\""},
        {"{\"\":1}", 1, "a key must be 1..256 bytes long (this one has 0)"},
        {"{\"a\":1e999}", 5, "must be finite"},
        {"{\"a\":-1e999}", 5, "must be finite"},
        {"{\"a\":[1 2]}", 8, "expected ',' or ']' in a list, found '2'"},
        {"{\"a\":[1,]}", 8, "expected a value, found ']'"},
        {"{\"a\":[1", 7, "expected ',' or ']' in a list, found the end of the input"},
        {"{'a':1}", 1, "expected a key string, found '''"},
        {"{a:1}", 1, "expected a key string, found 'a'"},
        {"{\"a\" 1}", 5, "expected ':'"},
        {"{\"a\":1,,}", 7, "expected a key string, found ','"},
        {"\xef\xbb\xbf{}", 0, "must be a JSON object, found byte 0xEF"}, /* BOM */
        {"{\"a\":1}\x0c", 7, "unexpected byte 0x0C"},                    /* form feed: not ws */
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
        parse_fails(bad[i].text, strlen(bad[i].text), bad[i].at, bad[i].why);

    /* An embedded NUL byte is data, not the end: it is a control character in a string and an
     * unexpected byte elsewhere. */
    parse_fails("{\"a\":\"x\0\"}", 10, 7, "control character 0x00");
    parse_fails("{\"a\":1}\0", 8, 7, "unexpected byte 0x00");
    /* The text need not be NUL-terminated: only len bytes are read. */
    Quiver__V1__Payload *p = NULL;
    qv_status err;
    cr_assert_eq(qv__sdk_json_parse_payload("{\"a\":12}garbage", 8, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(field(p, "a")->integer_value, 12);
    quiver__v1__payload__free_unpacked(p, NULL);
    /* NULL arguments. */
    cr_assert_eq(qv__sdk_json_parse_payload("{}", 2, NULL, &err), QV_EINVAL);
    cr_assert_eq(qv__sdk_json_parse_payload(NULL, 2, &p, &err), QV_EINVAL);
    cr_assert_eq(qv__sdk_json_parse_payload(NULL, 0, &p, NULL), QV_EINVAL); /* empty: no object */
    expect_no_leaks();
}

/* {"k0":0,"k1":1,...} with n keys; free() it. */
static char *make_keys(int n)
{
    size_t cap = 16 * (size_t)n + 2, len = 0;
    char *buf = malloc(cap);
    buf[len++] = '{';
    for (int i = 0; i < n; i++)
        len += (size_t)snprintf(buf + len, cap - len, "%s\"k%d\":%d", i > 0 ? "," : "", i, i);
    memcpy(buf + len, "}", 2);
    return buf;
}

Test(sdk_json, key_count_key_length_list_depth_and_list_length_limits)
{
    /* 256 keys pass; with 257 the last key fails where it starts, right after the 256-key
     * text's '}' became ','. */
    char *keys256 = make_keys(256), *keys257 = make_keys(257);
    Quiver__V1__Payload *p = parse_ok(keys256);
    cr_assert_eq(p->n_fields, 256);
    quiver__v1__payload__free_unpacked(p, NULL);
    parse_fails(keys257, strlen(keys257), strlen(keys256), "more than 256 keys");
    free(keys256);
    free(keys257);

    /* A 256-byte key passes, 257 bytes fail (bytes, not characters: "é" is 2). */
    char key[300];
    memset(key, 'k', 256);
    key[256] = '\0';
    char text[400];
    snprintf(text, sizeof(text), "{\"%s\":1}", key);
    p = parse_ok(text);
    cr_assert_eq(strlen(p->fields[0]->key), 256);
    quiver__v1__payload__free_unpacked(p, NULL);
    memcpy(key + 255, "\xc3\xa9", 3);
    snprintf(text, sizeof(text), "{\"a\":1, \"%s\":1}", key);
    parse_fails(text, strlen(text), 8, "1..256 bytes long (this one has 257)");

    /* Lists nest 8 deep; the 9th '[' is refused where it stands. */
    p = parse_ok("{\"a\":[[[[[[[[1]]]]]]]]}");
    quiver__v1__payload__free_unpacked(p, NULL);
    parse_fails("{\"a\":[[[[[[[[[1]]]]]]]]]}", 25, 13, "lists nest at most 8 levels deep");
    /* Far deeper input stops at the same place without recursing further. */
    char deep[20000];
    memcpy(deep, "{\"a\":", 5);
    memset(deep + 5, '[', sizeof(deep) - 5);
    parse_fails(deep, sizeof(deep), 13, "lists nest at most 8 levels deep");

    /* 10,000 values in a list pass; the 10,001st fails at its offset. */
    size_t cap = 5 + 2 * 10001 + 8;
    char *buf = malloc(cap);
    size_t len = 0;
    len += (size_t)snprintf(buf, cap, "{\"a\":[");
    for (int i = 0; i < 10000; i++)
        buf[len++] = '1', buf[len++] = ',';
    size_t at10001 = len;
    memcpy(buf + len, "1]}", 3);
    len += 3;
    parse_fails(buf, len, at10001, "a list holds at most 10000 values");
    memcpy(buf + at10001 - 1, "]}", 2);
    p = NULL;
    qv_status err;
    cr_assert_eq(qv__sdk_json_parse_payload(buf, at10001 + 1, &p, &err), 0, "%s", err.msg);
    cr_assert_eq(p->fields[0]->value->list_value->n_values, 10000);
    quiver__v1__payload__free_unpacked(p, NULL);
    free(buf);
    expect_no_leaks();
}

/* ---- formatting ---------------------------------------------------------------------------- */

Test(sdk_json, format_writes_compact_json_in_key_order)
{
    char *out =
        canonical("{ \"z\" : 1 , \"a\":[true, null, \"x\\\"y\\\\\"], \"d\": 0.1, \"e\":1e21,"
                  " \"f\": 3.0, \"g\": -0.0, \"h\": 5e-324, \"i\": -9223372036854775808,"
                  " \"j\": 1.5e-7, \"k\": 0.30000000000000004, \"m\": 123456789.0,"
                  " \"n\": [2500.0, 1e2, 1e16, 1e17, 12345678901234567890, 0.0001, 1e-5],"
                  " \"u\": \"\xc3\xa9\\u0001\\u001f\\n\\t/\x7f\", \"l\": [[],[[]]] }");
    cr_assert_str_eq(out, "{\"z\":1,\"a\":[true,null,\"x\\\"y\\\\\"],\"d\":0.1,\"e\":1e+21,"
                          "\"f\":3.0,\"g\":-0.0,\"h\":5e-324,\"i\":-9223372036854775808,"
                          "\"j\":1.5e-07,\"k\":0.30000000000000004,\"m\":123456789.0,"
                          "\"n\":[2500.0,100.0,10000000000000000.0,1e+17,1.2345678901234567e+19,"
                          "0.0001,1e-05],"
                          "\"u\":\"\xc3\xa9\\u0001\\u001f\\n\\t/\x7f\",\"l\":[[],[[]]]}");
    free(out);
    out = canonical("{}");
    cr_assert_str_eq(out, "{}");
    free(out);

    char *s = NULL;
    cr_assert_eq(qv__sdk_json_format_payload(NULL, &s, NULL, NULL), 0);
    cr_assert_str_eq(s, "{}");
    free(s);
    cr_assert_eq(qv__sdk_json_format_payload(NULL, NULL, NULL, NULL), QV_EINVAL);
    expect_no_leaks();
}

Test(sdk_json, format_survives_what_a_misbehaving_server_could_send)
{
    /* Built by hand: an unset Value, a NaN and an infinity, invalid UTF-8, a NULL value. */
    Quiver__V1__Value unset = QUIVER__V1__VALUE__INIT;
    Quiver__V1__Value nan_v = QUIVER__V1__VALUE__INIT;
    nan_v.kind_case = QUIVER__V1__VALUE__KIND_DOUBLE_VALUE;
    nan_v.double_value = NAN;
    Quiver__V1__Value inf_v = nan_v;
    inf_v.double_value = -INFINITY;
    Quiver__V1__Value bad = QUIVER__V1__VALUE__INIT;
    bad.kind_case = QUIVER__V1__VALUE__KIND_STRING_VALUE;
    bad.string_value = "a\xff"
                       "b\xe2\x82"
                       "c\xed\xa0\x80";
    Quiver__V1__Value *vals[] = {&unset, &nan_v, &inf_v, &bad, NULL};
    const char *keys[] = {"unset", "nan", "inf", "bad", "k\x80"};
    Quiver__V1__Payload__FieldsEntry e[5];
    Quiver__V1__Payload__FieldsEntry *ep[5];
    for (int i = 0; i < 5; i++) {
        quiver__v1__payload__fields_entry__init(&e[i]);
        e[i].key = (char *)keys[i];
        e[i].value = vals[i];
        ep[i] = &e[i];
    }
    Quiver__V1__Payload p = QUIVER__V1__PAYLOAD__INIT;
    p.n_fields = 5;
    p.fields = ep;
    char *out = format_ok(&p);
    cr_assert_str_eq(out, "{\"unset\":null,\"nan\":null,\"inf\":null,"
                          "\"bad\":\"a\xef\xbf\xbd"
                          "b\xef\xbf\xbd\xef\xbf\xbd"
                          "c\xef\xbf\xbd\xef\xbf\xbd\xef\xbf\xbd\","
                          "\"k\xef\xbf\xbd\":null}");
    /* ... and the text always parses back (U+FFFD is valid UTF-8). */
    Quiver__V1__Payload *q = parse_ok(out);
    cr_assert_eq(q->n_fields, 5);
    quiver__v1__payload__free_unpacked(q, NULL);
    free(out);
    expect_no_leaks();
}

/* ---- round trips and fuzzing --------------------------------------------------------------- */

static uint64_t g_rng = 0x9E3779B97F4A7C15ull;

static uint64_t rnd(void)
{
    g_rng ^= g_rng << 13;
    g_rng ^= g_rng >> 7;
    g_rng ^= g_rng << 17;
    return g_rng;
}

Test(sdk_json, doubles_read_back_bit_for_bit)
{
    for (int i = 0; i < 20000; i++) {
        uint64_t bits = rnd();
        double d;
        if (i % 4 == 0) /* also ordinary magnitudes, not only random exponents */
            d = (double)(int64_t)(rnd() % 2000001) / 1000.0 - 1000.0;
        else
            memcpy(&d, &bits, sizeof(d));
        if (!isfinite(d))
            continue;
        Quiver__V1__Value v = QUIVER__V1__VALUE__INIT;
        v.kind_case = QUIVER__V1__VALUE__KIND_DOUBLE_VALUE;
        v.double_value = d;
        Quiver__V1__Payload__FieldsEntry e = QUIVER__V1__PAYLOAD__FIELDS_ENTRY__INIT;
        e.key = "d";
        e.value = &v;
        Quiver__V1__Payload__FieldsEntry *ep = &e;
        Quiver__V1__Payload p = QUIVER__V1__PAYLOAD__INIT;
        p.n_fields = 1;
        p.fields = &ep;
        char *text = format_ok(&p);
        CHECK(strlen(text) <= 6 + 24, "too long: %s", text);
        Quiver__V1__Payload *q = parse_ok(text);
        const Quiver__V1__Value *back = q->fields[0]->value;
        CHECK(back->kind_case == QUIVER__V1__VALUE__KIND_DOUBLE_VALUE, "%s", text);
        CHECK(memcmp(&back->double_value, &d, sizeof(d)) == 0, "%.17g -> %s", d, text);
        quiver__v1__payload__free_unpacked(q, NULL);
        free(text);
    }
    expect_no_leaks();
}

Test(sdk_json, round_trip_is_stable)
{
    static const char *const docs[] = {
        "{\"label\": 3, \"tags\": [\"a\", \"b\"], \"price\": 9.5, \"sale\": true, \"note\": null}",
        "{\"nested\": [[1, [2, [3, [4.25, [\"\\ud83d\\ude00\", [false, [null]]]]]]]]}",
        "{\"big\": 18446744073709551615, \"neg\": -1e-300, \"s\": \"\\u2028\\\"\\\\\"}",
        "{\"\xe4\xb8\xad\xe6\x96\x87\": \"\xe4\xb8\xad\", \"e\": [], \"z\": 0}",
    };
    for (size_t i = 0; i < sizeof(docs) / sizeof(docs[0]); i++) {
        char *once = canonical(docs[i]);
        char *twice = canonical(once);
        cr_assert_str_eq(once, twice, "doc %zu", i);
        free(once);
        free(twice);
    }
    expect_no_leaks();
}

/* Mutates seeds at random (flip, insert, delete, truncate, splice a token) and parses the result:
 * the parser must never crash, must leave nothing behind on failure, must name a byte within the
 * input, and whatever it accepts must format and parse back to the same text. */
Test(sdk_json, random_mutations_never_crash, .timeout = 100)
{
    static const char *const seeds[] = {
        "{\"label\": 3, \"tags\": [\"a\", \"b\"], \"price\": 9.5, \"sale\": true, \"note\": null}",
        "{\"s\": \"\\ud83d\\ude00\\n\\u00e9\xc3\xa9\", \"l\": [[[1e5, -0.5, "
        "12345678901234567890]]]}",
        "{\"a\":[],\"b\":\"\",\"c\":false,\"d\":-0}",
    };
    static const char *const tokens[] = {
        "{",    "}",         "[",        "]", "\"", "\\",   "\\u",  "\\ud800",      ":",
        ",",    "-",         "1e",       ".", "0",  "null", "\xc3", "\xed\xa0\x80", " ",
        "\x01", "{\"x\":1}", "[[[[[[[[["};
    char buf[512];
    int accepted = 0;
    for (int iter = 0; iter < 30000; iter++) {
        const char *seed = seeds[rnd() % 3];
        size_t len = strlen(seed);
        memcpy(buf, seed, len);
        int edits = 1 + (int)(rnd() % 4);
        for (int k = 0; k < edits; k++) {
            size_t pos = len > 0 ? rnd() % len : 0;
            switch (rnd() % 5) {
            case 0: /* flip a byte */
                if (len > 0)
                    buf[pos] = (char)(rnd() & 0xff);
                break;
            case 1: /* delete a byte */
                if (len > 0) {
                    memmove(buf + pos, buf + pos + 1, len - pos - 1);
                    len--;
                }
                break;
            case 2: /* truncate */
                len = pos;
                break;
            case 3: { /* splice a token */
                const char *t = tokens[rnd() % (sizeof(tokens) / sizeof(tokens[0]))];
                size_t tl = strlen(t);
                if (len + tl < sizeof(buf)) {
                    memmove(buf + pos + tl, buf + pos, len - pos);
                    memcpy(buf + pos, t, tl);
                    len += tl;
                }
                break;
            }
            default: /* duplicate a byte */
                if (len > 0 && len + 1 < sizeof(buf)) {
                    memmove(buf + pos + 1, buf + pos, len - pos);
                    len++;
                }
                break;
            }
        }
        Quiver__V1__Payload *p = NULL;
        qv_status err = qv_status_ok();
        int rc = qv__sdk_json_parse_payload(buf, len, &p, &err);
        if (rc != 0) {
            CHECK(rc == QV_EINVAL && p == NULL, "%d %s", rc, err.msg);
            const char *at = strstr(err.msg, "at byte ");
            CHECK(at != NULL, "%s", err.msg);
            CHECK(strtoull(at + 8, NULL, 10) <= len, "%s (len %zu)", err.msg, len);
            continue;
        }
        accepted++;
        char *once = format_ok(p);
        quiver__v1__payload__free_unpacked(p, NULL);
        char *twice = canonical(once);
        CHECK(strcmp(once, twice) == 0, "%s then %s", once, twice);
        free(once);
        free(twice);
    }
    cr_assert_gt(accepted, 100, "the mutations should leave some documents valid");
    expect_no_leaks();
}

/* Switches LC_NUMERIC to a locale with a decimal comma: an installed one, else one compiled with
 * localedef into a temporary directory (named in *dir, to be removed) and found through LOCPATH.
 * NULL when neither works. */
static const char *decimal_comma_locale(char *dir, size_t len)
{
    static const char *const names[] = {"de_DE.UTF-8", "de_DE.utf8", "fr_FR.UTF-8", "de_DE"};
    dir[0] = '\0';
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        const char *got = setlocale(LC_NUMERIC, names[i]);
        if (got != NULL)
            return got;
    }
    snprintf(dir, len, "/tmp/quiver-locale-XXXXXX");
    if (mkdtemp(dir) == NULL) {
        dir[0] = '\0';
        return NULL;
    }
    char cmd[256];
    /* localedef exits 1 for mere warnings; whether setlocale then works is what counts. */
    snprintf(cmd, sizeof(cmd), "localedef -i de_DE -f UTF-8 %s/de_DE.UTF-8 >/dev/null 2>&1", dir);
    if (system(cmd) == -1)
        return NULL;
    setenv("LOCPATH", dir, 1);
    return setlocale(LC_NUMERIC, "de_DE.UTF-8");
}

Test(sdk_json, numbers_ignore_a_decimal_comma_locale)
{
    char dir[64];
    bool switched = decimal_comma_locale(dir, sizeof(dir)) != NULL;
    char probe[16], *out = NULL;
    snprintf(probe, sizeof(probe), "%.1f", 1.5);
    if (switched)
        out = canonical("{\"d\": 1.5, \"e\": 2.5e3, \"f\": -0.125}");
    setlocale(LC_NUMERIC, "C");
    if (dir[0] != '\0') {
        char cmd[128];
        snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
        cr_assert_eq(system(cmd), 0);
    }
    if (!switched)
        cr_skip_test("no locale with a decimal comma, and localedef could not make one");
    cr_assert_str_eq(probe, "1,5", "the locale should use a decimal comma");
    cr_assert_str_eq(out, "{\"d\":1.5,\"e\":2500.0,\"f\":-0.125}");
    free(out);
    expect_no_leaks();
}

/* ---- public helpers ------------------------------------------------------------------------ */

Test(sdk_json, normalize_checks_and_canonicalises_payload_text)
{
    char *out = NULL;
    qv_status err = qv_status_ok();
    const char *in = " {\"a\" : [1, 2.50], \"b\":\"\\u0041\"} ";
    cr_assert_eq(qv_payload_json_normalize(in, strlen(in), &out, &err), 0, "%s", err.msg);
    cr_assert_str_eq(out, "{\"a\":[1,2.5],\"b\":\"A\"}");
    free(out);
    cr_assert_eq(qv_payload_json_normalize(in, strlen(in), NULL, &err), 0, "check only");
    out = (char *)&err;
    cr_assert_eq(qv_payload_json_normalize("{\"a\":{}}", 8, &out, &err), QV_EINVAL);
    cr_assert_null(out);
    cr_assert_str_eq(err.msg, "bad payload JSON at byte 5: nested objects are not payload values");
    cr_assert_eq(qv_payload_json_normalize(NULL, 0, &out, &err), QV_EINVAL);
    expect_no_leaks();
}

Test(sdk_json, point_lines_parse_into_points)
{
    qv_point pt;
    qv_status err = qv_status_ok();
    const char *line = "{\"id\": 42, \"vector\": [0.5, 1, -2e-3], \"payload\": {\"label\": 3}}";
    cr_assert_eq(qv_point_json_parse(line, strlen(line), &pt, &err), 0, "%s", err.msg);
    cr_assert_not(pt.id.is_uuid);
    cr_assert_eq(pt.id.num, 42);
    cr_assert_eq(pt.dim, 3);
    cr_assert_eq(pt.vector[0], 0.5f);
    cr_assert_eq(pt.vector[1], 1.0f);
    cr_assert_eq(pt.vector[2], -2e-3f);
    cr_assert_str_eq(pt.payload_json, "{\"label\": 3}");
    qv_point_json_free(&pt);
    cr_assert_null(pt.vector);
    qv_point_json_free(&pt); /* twice is fine */

    line = "{\"payload\":null,\"vector\":[1],\"id\":\"123E4567-E89B-12D3-A456-426614174000\"}";
    cr_assert_eq(qv_point_json_parse(line, strlen(line), &pt, &err), 0, "%s", err.msg);
    cr_assert(pt.id.is_uuid);
    cr_assert_str_eq(pt.id.uuid, "123e4567-e89b-12d3-a456-426614174000");
    cr_assert_null(pt.payload_json);
    qv_point_json_free(&pt);

    line = "{\"id\":\"18446744073709551615\",\"vector\":[1,2]}";
    cr_assert_eq(qv_point_json_parse(line, strlen(line), &pt, &err), 0, "%s", err.msg);
    cr_assert_eq(pt.id.num, UINT64_MAX);
    cr_assert_null(pt.payload_json);
    qv_point_json_free(&pt);

    static const struct {
        const char *text;
        const char *want;
    } bad[] = {
        {"{\"id\":1}", "bad point JSON at byte 0: a point needs \"id\" and \"vector\""},
        {"{\"vector\":[1]}", "at byte 0: a point needs"},
        {"{\"id\":1,\"vector\":[]}", "at byte 17: empty vector"},
        {"{\"id\":1,\"vector\":[1,\"a\"]}", "at byte 20: expected a number in the vector"},
        {"{\"id\":1,\"vector\":[1e39]}", "at byte 18: vector component out of the float range"},
        {"{\"id\":-1,\"vector\":[1]}", "at byte 6: an id is an unsigned 64-bit integer"},
        {"{\"id\":1.5,\"vector\":[1]}", "at byte 6: an id is an unsigned"},
        {"{\"id\":18446744073709551616,\"vector\":[1]}", "at byte 6: id out of range"},
        {"{\"id\":\"nope\",\"vector\":[1]}", "at byte 6: a string id must be a UUID"},
        {"{\"id\":1,\"id\":2,\"vector\":[1]}", "at byte 8: duplicate key \"id\""},
        {"{\"id\":1,\"vector\":[1],\"extra\":0}", "at byte 21: unknown key \"extra\""},
        {"{\"id\":1,\"vector\":[1],\"payload\":{\"a\":{}}}",
         "bad payload JSON at byte 36: nested objects are not payload values"},
        {"{\"id\":1,\"vector\":[1],\"payload\":[1]}", "at byte 31: \"payload\" must be an object"},
        {"{\"id\":1,\"vector\":[1]} x", "at byte 22: unexpected 'x' after the object"},
        {"[1]", "at byte 0: a point must be a JSON object"},
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        memset(&pt, 0xab, sizeof(pt));
        int rc = qv_point_json_parse(bad[i].text, strlen(bad[i].text), &pt, &err);
        cr_assert_eq(rc, QV_EINVAL, "'%s' gave %d", bad[i].text, rc);
        cr_assert_not_null(strstr(err.msg, bad[i].want), "'%s': want '%s' in: %s", bad[i].text,
                           bad[i].want, err.msg);
        cr_assert_null(pt.vector, "'%s' left a vector", bad[i].text);
        cr_assert_null(pt.payload_json);
    }
    expect_no_leaks();
}
