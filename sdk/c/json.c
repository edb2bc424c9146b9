/*
 * sdk/c/json.c - JSON text <-> quiver.v1.Payload (json_internal.h), and the public helpers of
 * quiver.h built on it (qv_payload_json_normalize, qv_point_json_parse).
 *
 * Map: the parser (struct jp) is a recursive descent over a byte range, one function per grammar
 * rule (parse_string, parse_number, parse_value, parse_list, parse_payload_object). It builds the
 * protobuf-c tree directly, keeping it consistent at every step (a count is bumped only after its
 * element is stored, a oneof case set only after its member is), so any failure releases the
 * partial tree with free_unpacked. Recursion is bounded by the list depth limit (8): an object
 * inside a payload is an error as soon as its '{' is seen. The formatter (struct jbuf) appends to
 * one growing buffer and reports running out of memory once, at the end.
 */
#define _POSIX_C_SOURCE 200809L
#include "sdk/c/json_internal.h"
#include "sdk/c/quiver.h"

#include <inttypes.h>
#include <locale.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int set_err(qv_status *err, int code, const char *fmt, ...) QV_PRINTF(3, 4);

static int set_err(qv_status *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- "C" numeric locale ----------------------------------------------------------------------
 * strtod and printf's %g follow LC_NUMERIC; a program that called setlocale(LC_ALL, "") in a
 * locale with a decimal comma must still read and write JSON numbers. uselocale() is per thread. */

static pthread_once_t g_c_locale_once = PTHREAD_ONCE_INIT;
static locale_t g_c_locale = (locale_t)0;

static void make_c_locale(void)
{
    g_c_locale = newlocale(LC_NUMERIC_MASK, "C", (locale_t)0);
}

/* Switches the calling thread to the "C" locale; returns what to give c_locale_leave. */
static locale_t c_locale_enter(void)
{
    pthread_once(&g_c_locale_once, make_c_locale);
    if (g_c_locale == (locale_t)0)
        return (locale_t)0; /* cannot happen for "C"; numbers then use the process locale */
    return uselocale(g_c_locale);
}

static void c_locale_leave(locale_t prev)
{
    if (prev != (locale_t)0)
        uselocale(prev);
}

/* ---- UTF-8 --------------------------------------------------------------------------------- */

/* Length of the well-formed UTF-8 sequence at s (avail bytes readable), or 0 when it is not one
 * (overlong forms, surrogates, above U+10FFFF, truncated). Unicode table 3-7. */
static size_t utf8_len(const unsigned char *s, size_t avail)
{
    unsigned char c = s[0];
    if (c < 0x80)
        return 1;
    size_t n;
    unsigned char lo = 0x80, hi = 0xBF;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        else if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        else if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (avail < n)
        return 0;
    if (s[1] < lo || s[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (s[i] < 0x80 || s[i] > 0xBF)
            return 0;
    return n;
}

/* Writes code point cp (valid, not a surrogate) as UTF-8; returns the bytes written. */
static size_t utf8_put(char *out, uint32_t cp)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

/* ---- parser -------------------------------------------------------------------------------- */

typedef struct jp {
    const char *s;
    size_t len;
    size_t pos;
    const char *what; /* "payload JSON" or "point JSON", for messages */
    qv_status *err;
} jp;

static int jp_fail(jp *p, size_t at, const char *fmt, ...) QV_PRINTF(3, 4);

/* QV_EINVAL with "bad <what> at byte N: <why>". */
static int jp_fail(jp *p, size_t at, const char *fmt, ...)
{
    char why[192];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(why, sizeof(why), fmt, ap);
    va_end(ap);
    return set_err(p->err, QV_EINVAL, "bad %s at byte %zu: %s", p->what, at, why);
}

static int jp_oom(jp *p)
{
    return set_err(p->err, QV_ERESOURCE, "out of memory while parsing %s", p->what);
}

static int peek(const jp *p)
{
    return p->pos < p->len ? (unsigned char)p->s[p->pos] : -1;
}

static void skip_ws(jp *p)
{
    while (p->pos < p->len) {
        char c = p->s[p->pos];
        if (c != ' ' && c != '\t' && c != '\n' && c != '\r')
            break;
        p->pos++;
    }
}

static bool is_digit(int c)
{
    return c >= '0' && c <= '9';
}

/* What sits at byte `at`, for messages: 'x', "byte 0xC3" or "the end of the input". */
static const char *describe_at(const jp *p, size_t at, char buf[24])
{
    if (at >= p->len)
        return "the end of the input";
    unsigned char c = (unsigned char)p->s[at];
    if (c > 0x20 && c < 0x7F)
        snprintf(buf, 24, "'%c'", c);
    else
        snprintf(buf, 24, "byte 0x%02X", c);
    return buf;
}

/* A key for a message: at most 48 bytes, anything but printable ASCII as '?'. */
static const char *describe_key(const char *key, char buf[52])
{
    size_t i = 0;
    for (; key[i] != '\0' && i < 48; i++)
        buf[i] = (key[i] >= 0x20 && key[i] < 0x7F) ? key[i] : '?';
    buf[i] = '\0';
    if (key[i] != '\0' && i >= 3)
        memcpy(buf + i - 3, "...", 3);
    return buf;
}

static int hex4(const char *s, uint32_t *out)
{
    uint32_t v = 0;
    for (int i = 0; i < 4; i++) {
        char c = s[i];
        uint32_t d;
        if (c >= '0' && c <= '9')
            d = (uint32_t)(c - '0');
        else if (c >= 'a' && c <= 'f')
            d = (uint32_t)(c - 'a' + 10);
        else if (c >= 'A' && c <= 'F')
            d = (uint32_t)(c - 'A' + 10);
        else
            return -1;
        v = v * 16 + d;
    }
    *out = v;
    return 0;
}

/* The string starting at the '"' under p->pos, decoded into a malloc'd NUL-terminated *out of
 * *out_len bytes (may be NULL). */
static int parse_string(jp *p, char **out, size_t *out_len)
{
    const char *s = p->s;
    size_t start = p->pos;
    /* Find the closing quote first: the decoded text is never longer than the raw one. */
    size_t end = start + 1;
    for (;;) {
        if (end >= p->len)
            return jp_fail(p, start, "unterminated string");
        if (s[end] == '"')
            break;
        end += s[end] == '\\' ? 2 : 1;
    }
    char *buf = malloc(end - start);
    if (buf == NULL)
        return jp_oom(p);
    size_t n = 0;
    char why[24];
    size_t i = start + 1;
    while (i < end) {
        unsigned char c = (unsigned char)s[i];
        if (c < 0x20) {
            free(buf);
            return jp_fail(p, i, "control character 0x%02X in a string (escape it)", c);
        }
        if (c >= 0x80) {
            size_t k = utf8_len((const unsigned char *)s + i, end - i);
            if (k == 0) {
                free(buf);
                return jp_fail(p, i, "invalid UTF-8 (byte 0x%02X)", c);
            }
            memcpy(buf + n, s + i, k);
            n += k;
            i += k;
            continue;
        }
        if (c != '\\') {
            buf[n++] = (char)c;
            i++;
            continue;
        }
        char e = s[i + 1]; /* i + 1 < end: a backslash never ends the scan above */
        switch (e) {
        case '"':
        case '\\':
        case '/':
            buf[n++] = e;
            break;
        case 'b':
            buf[n++] = '\b';
            break;
        case 'f':
            buf[n++] = '\f';
            break;
        case 'n':
            buf[n++] = '\n';
            break;
        case 'r':
            buf[n++] = '\r';
            break;
        case 't':
            buf[n++] = '\t';
            break;
        case 'u': {
            uint32_t cp;
            if (i + 6 > end || hex4(s + i + 2, &cp) != 0) {
                free(buf);
                return jp_fail(p, i, "\\u needs four hex digits");
            }
            size_t esc_len = 6;
            if (cp >= 0xDC00 && cp <= 0xDFFF) {
                free(buf);
                return jp_fail(p, i, "unpaired surrogate \\u%04X", (unsigned)cp);
            }
            if (cp >= 0xD800 && cp <= 0xDBFF) {
                uint32_t lo;
                if (i + 12 > end || s[i + 6] != '\\' || s[i + 7] != 'u' ||
                    hex4(s + i + 8, &lo) != 0 || lo < 0xDC00 || lo > 0xDFFF) {
                    free(buf);
                    return jp_fail(p, i, "unpaired surrogate \\u%04X", (unsigned)cp);
                }
                cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
                esc_len = 12;
            }
            if (cp == 0) {
                free(buf);
                return jp_fail(p, i, "\\u0000 is not allowed (payload strings cannot hold NUL)");
            }
            n += utf8_put(buf + n, cp);
            i += esc_len;
            continue;
        }
        default:
            free(buf);
            return jp_fail(p, i, "invalid escape '\\' followed by %s", describe_at(p, i + 1, why));
        }
        i += 2;
    }
    buf[n] = '\0';
    p->pos = end + 1;
    *out = buf;
    if (out_len != NULL)
        *out_len = n;
    return 0;
}

/* A number at p->pos (RFC 8259 grammar) into v: integer_value when it has neither fraction nor
 * exponent and fits int64, double_value otherwise. */
static int parse_number(jp *p, Quiver__V1__Value *v)
{
    const char *s = p->s;
    size_t start = p->pos, i = start;
    bool neg = false;
    if (s[i] == '-') {
        neg = true;
        i++;
    }
    if (i >= p->len || !is_digit(s[i])) {
        char why[24];
        return jp_fail(p, i, "expected a digit, found %s", describe_at(p, i, why));
    }
    if (s[i] == '0') {
        i++;
        if (i < p->len && is_digit(s[i]))
            return jp_fail(p, start, "leading zeros are not allowed");
    } else {
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    size_t int_end = i;
    bool integral = true;
    if (i < p->len && s[i] == '.') {
        integral = false;
        i++;
        if (i >= p->len || !is_digit(s[i]))
            return jp_fail(p, i, "expected a digit after '.'");
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    if (i < p->len && (s[i] == 'e' || s[i] == 'E')) {
        integral = false;
        i++;
        if (i < p->len && (s[i] == '+' || s[i] == '-'))
            i++;
        if (i >= p->len || !is_digit(s[i]))
            return jp_fail(p, i, "expected a digit in the exponent");
        while (i < p->len && is_digit(s[i]))
            i++;
    }
    p->pos = i;

    if (integral) {
        uint64_t mag = 0;
        bool fits = true;
        for (size_t j = start + (neg ? 1 : 0); j < int_end; j++) {
            uint64_t d = (uint64_t)(s[j] - '0');
            if (mag > (UINT64_MAX - d) / 10) {
                fits = false;
                break;
            }
            mag = mag * 10 + d;
        }
        uint64_t limit = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
        if (fits && mag <= limit) {
            if (!neg)
                v->integer_value = (int64_t)mag;
            else if (mag == (uint64_t)INT64_MAX + 1)
                v->integer_value = INT64_MIN;
            else
                v->integer_value = -(int64_t)mag;
            v->kind_case = QUIVER__V1__VALUE__KIND_INTEGER_VALUE;
            return 0;
        }
        /* Too large for int64: a double, as JSON's number model says. */
    }

    size_t tlen = i - start;
    char small[64];
    char *tok = tlen < sizeof(small) ? small : malloc(tlen + 1);
    if (tok == NULL)
        return jp_oom(p);
    memcpy(tok, s + start, tlen);
    tok[tlen] = '\0';
    char *endp = NULL;
    double d = strtod(tok, &endp);
    bool whole = endp == tok + tlen;
    if (tok != small)
        free(tok);
    if (!whole)
        return jp_fail(p, start, "malformed number");
    if (!isfinite(d))
        return jp_fail(p, start, "number out of range (payload doubles must be finite)");
    v->double_value = d;
    v->kind_case = QUIVER__V1__VALUE__KIND_DOUBLE_VALUE;
    return 0;
}

/* The literal `word` at p->pos. */
static int parse_literal(jp *p, const char *word)
{
    size_t n = strlen(word);
    if (p->len - p->pos < n || memcmp(p->s + p->pos, word, n) != 0) {
        char why[24];
        return jp_fail(p, p->pos, "expected a value, found %s", describe_at(p, p->pos, why));
    }
    p->pos += n;
    return 0;
}

static int parse_value(jp *p, Quiver__V1__Value **out, int depth);

/* The list at the '[' under p->pos into l; depth is l's own nesting level (1 for a list that is
 * a field's value). */
static int parse_list(jp *p, Quiver__V1__ListValue *l, int depth)
{
    size_t cap = 0;
    p->pos++;
    skip_ws(p);
    if (peek(p) == ']') {
        p->pos++;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        if (l->n_values == QV__SDK_JSON_MAX_LIST)
            return jp_fail(p, p->pos, "a list holds at most %d values", QV__SDK_JSON_MAX_LIST);
        Quiver__V1__Value *v = NULL;
        int rc = parse_value(p, &v, depth);
        if (rc != 0)
            return rc;
        if (l->n_values == cap) {
            size_t ncap = cap == 0 ? 8 : cap * 2;
            Quiver__V1__Value **nv = realloc(l->values, ncap * sizeof(*nv));
            if (nv == NULL) {
                quiver__v1__value__free_unpacked(v, NULL);
                return jp_oom(p);
            }
            l->values = nv;
            cap = ncap;
        }
        l->values[l->n_values++] = v;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == ']') {
            p->pos++;
            return 0;
        }
        char why[24];
        return jp_fail(p, p->pos, "expected ',' or ']' in a list, found %s",
                       describe_at(p, p->pos, why));
    }
}

/* One payload value at p->pos into a new *out; depth counts the lists around it. */
static int parse_value(jp *p, Quiver__V1__Value **out, int depth)
{
    *out = NULL;
    Quiver__V1__Value *v = malloc(sizeof(*v));
    if (v == NULL)
        return jp_oom(p);
    quiver__v1__value__init(v);
    int rc = 0;
    int c = peek(p);
    char why[24];
    switch (c) {
    case '{':
        rc = jp_fail(p, p->pos, "nested objects are not payload values");
        break;
    case '[': {
        if (depth >= QV__SDK_JSON_MAX_DEPTH) {
            rc = jp_fail(p, p->pos, "lists nest at most %d levels deep", QV__SDK_JSON_MAX_DEPTH);
            break;
        }
        Quiver__V1__ListValue *l = malloc(sizeof(*l));
        if (l == NULL) {
            rc = jp_oom(p);
            break;
        }
        quiver__v1__list_value__init(l);
        v->list_value = l;
        v->kind_case = QUIVER__V1__VALUE__KIND_LIST_VALUE;
        rc = parse_list(p, l, depth + 1);
        break;
    }
    case '"': {
        char *str = NULL;
        rc = parse_string(p, &str, NULL);
        if (rc == 0) {
            v->string_value = str;
            v->kind_case = QUIVER__V1__VALUE__KIND_STRING_VALUE;
        }
        break;
    }
    case 't':
    case 'f':
        rc = parse_literal(p, c == 't' ? "true" : "false");
        if (rc == 0) {
            v->bool_value = c == 't';
            v->kind_case = QUIVER__V1__VALUE__KIND_BOOL_VALUE;
        }
        break;
    case 'n': {
        rc = parse_literal(p, "null");
        if (rc != 0)
            break;
        Quiver__V1__Null *nul = malloc(sizeof(*nul));
        if (nul == NULL) {
            rc = jp_oom(p);
            break;
        }
        quiver__v1__null__init(nul);
        v->null_value = nul;
        v->kind_case = QUIVER__V1__VALUE__KIND_NULL_VALUE;
        break;
    }
    default:
        if (c == '-' || is_digit(c))
            rc = parse_number(p, v);
        else
            rc = jp_fail(p, p->pos, "expected a value, found %s", describe_at(p, p->pos, why));
        break;
    }
    if (rc != 0) {
        quiver__v1__value__free_unpacked(v, NULL);
        return rc;
    }
    *out = v;
    return 0;
}

/* The payload object at the '{' under p->pos into a new *out. */
static int parse_payload_object(jp *p, Quiver__V1__Payload **out)
{
    *out = NULL;
    Quiver__V1__Payload *pl = malloc(sizeof(*pl));
    if (pl == NULL)
        return jp_oom(p);
    quiver__v1__payload__init(pl);
    size_t cap = 0;
    int rc = 0;
    char why[24];
    char kbuf[52];
    p->pos++;
    skip_ws(p);
    if (peek(p) == '}') {
        p->pos++;
        *out = pl;
        return 0;
    }
    for (;;) {
        skip_ws(p);
        size_t key_at = p->pos;
        if (peek(p) != '"') {
            rc = jp_fail(p, key_at, "expected a key string, found %s", describe_at(p, key_at, why));
            goto fail;
        }
        if (pl->n_fields == QV__SDK_JSON_MAX_KEYS) {
            rc = jp_fail(p, key_at, "more than %d keys", QV__SDK_JSON_MAX_KEYS);
            goto fail;
        }
        char *key = NULL;
        size_t klen = 0;
        rc = parse_string(p, &key, &klen);
        if (rc != 0)
            goto fail;
        if (klen == 0 || klen > QV__SDK_JSON_MAX_KEY_BYTES) {
            free(key);
            rc = jp_fail(p, key_at, "a key must be 1..%d bytes long (this one has %zu)",
                         QV__SDK_JSON_MAX_KEY_BYTES, klen);
            goto fail;
        }
        for (size_t j = 0; j < pl->n_fields; j++) {
            if (strcmp(pl->fields[j]->key, key) == 0) {
                rc = jp_fail(p, key_at, "duplicate key \"%s\"", describe_key(key, kbuf));
                free(key);
                goto fail;
            }
        }
        skip_ws(p);
        if (peek(p) != ':') {
            free(key);
            rc = jp_fail(p, p->pos, "expected ':' after a key, found %s",
                         describe_at(p, p->pos, why));
            goto fail;
        }
        p->pos++;
        skip_ws(p);
        Quiver__V1__Value *v = NULL;
        rc = parse_value(p, &v, 0);
        if (rc != 0) {
            free(key);
            goto fail;
        }
        Quiver__V1__Payload__FieldsEntry *e = malloc(sizeof(*e));
        if (e == NULL) {
            free(key);
            quiver__v1__value__free_unpacked(v, NULL);
            rc = jp_oom(p);
            goto fail;
        }
        quiver__v1__payload__fields_entry__init(e);
        e->key = key;
        e->value = v;
        if (pl->n_fields == cap) {
            size_t ncap = cap == 0 ? 8 : cap * 2;
            Quiver__V1__Payload__FieldsEntry **nf = realloc(pl->fields, ncap * sizeof(*nf));
            if (nf == NULL) {
                protobuf_c_message_free_unpacked(&e->base, NULL);
                rc = jp_oom(p);
                goto fail;
            }
            pl->fields = nf;
            cap = ncap;
        }
        pl->fields[pl->n_fields++] = e;
        skip_ws(p);
        int c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == '}') {
            p->pos++;
            break;
        }
        rc = jp_fail(p, p->pos, "expected ',' or '}' after a value, found %s",
                     describe_at(p, p->pos, why));
        goto fail;
    }
    *out = pl;
    return 0;

fail:
    quiver__v1__payload__free_unpacked(pl, NULL);
    return rc;
}

/* Nothing but whitespace may follow the document. */
static int expect_end(jp *p)
{
    skip_ws(p);
    if (p->pos < p->len) {
        char why[24];
        return jp_fail(p, p->pos, "unexpected %s after the object", describe_at(p, p->pos, why));
    }
    return 0;
}

int qv__sdk_json_parse_payload(const char *text, size_t len, Quiver__V1__Payload **out,
                               qv_status *err)
{
    if (out == NULL)
        return set_err(err, QV_EINVAL, "qv__sdk_json_parse_payload: out is NULL");
    *out = NULL;
    if (text == NULL && len > 0)
        return set_err(err, QV_EINVAL, "qv__sdk_json_parse_payload: text is NULL");
    jp p = {.s = text, .len = len, .what = "payload JSON", .err = err};
    locale_t prev = c_locale_enter();
    Quiver__V1__Payload *pl = NULL;
    int rc;
    skip_ws(&p);
    if (peek(&p) != '{') {
        char why[24];
        rc = jp_fail(&p, p.pos, "a payload must be a JSON object, found %s",
                     describe_at(&p, p.pos, why));
        goto done;
    }
    rc = parse_payload_object(&p, &pl);
    if (rc != 0)
        goto done;
    rc = expect_end(&p);
    if (rc != 0) {
        quiver__v1__payload__free_unpacked(pl, NULL);
        pl = NULL;
    }
done:
    c_locale_leave(prev);
    *out = pl;
    if (rc == 0 && err != NULL)
        *err = qv_status_ok();
    return rc;
}

/* ---- formatter ----------------------------------------------------------------------------- */

typedef struct jbuf {
    char *s;
    size_t len, cap;
    bool oom;
} jbuf;

static void jb_put(jbuf *b, const char *s, size_t n)
{
    if (b->oom)
        return;
    if (b->len + n + 1 > b->cap) {
        size_t ncap = b->cap == 0 ? 64 : b->cap;
        while (ncap < b->len + n + 1)
            ncap *= 2;
        char *ns = realloc(b->s, ncap);
        if (ns == NULL) {
            b->oom = true;
            return;
        }
        b->s = ns;
        b->cap = ncap;
    }
    memcpy(b->s + b->len, s, n);
    b->len += n;
    b->s[b->len] = '\0';
}

static void jb_puts(jbuf *b, const char *s)
{
    jb_put(b, s, strlen(s));
}

/* A JSON string literal for s; invalid UTF-8 becomes U+FFFD. */
static void jb_str(jbuf *b, const char *s)
{
    static const char hexd[] = "0123456789abcdef";
    size_t n = strlen(s);
    jb_put(b, "\"", 1);
    size_t run = 0; /* start of the pending run of bytes copied as they are */
    size_t i = 0;
    while (i < n) {
        unsigned char c = (unsigned char)s[i];
        const char *esc = NULL;
        char u[6];
        if (c == '"') {
            esc = "\\\"";
        } else if (c == '\\') {
            esc = "\\\\";
        } else if (c == '\n') {
            esc = "\\n";
        } else if (c == '\r') {
            esc = "\\r";
        } else if (c == '\t') {
            esc = "\\t";
        } else if (c == '\b') {
            esc = "\\b";
        } else if (c == '\f') {
            esc = "\\f";
        } else if (c < 0x20) {
            memcpy(u, "\\u00", 4);
            u[4] = hexd[c >> 4];
            u[5] = hexd[c & 15];
        } else if (c >= 0x80) {
            size_t k = utf8_len((const unsigned char *)s + i, n - i);
            if (k > 0) {
                i += k;
                continue;
            }
            esc = "\xEF\xBF\xBD";
        } else {
            i++;
            continue;
        }
        jb_put(b, s + run, i - run);
        if (esc != NULL)
            jb_puts(b, esc);
        else
            jb_put(b, u, sizeof(u));
        i++;
        run = i;
    }
    jb_put(b, s + run, n - run);
    jb_put(b, "\"", 1);
}

/* The shortest %.Ng (N in 1..17) that reads back as d, without an exponent below 1e17, marked as
 * a double. */
static void jb_double(jbuf *b, double d)
{
    if (!isfinite(d)) {
        jb_puts(b, "null");
        return;
    }
    char tmp[320]; /* %.17g needs 25 bytes at most; GCC cannot tell, so room for %f's worst */
    /* If N digits round-trip, so do N + 1 (the correctly rounded N+1-digit decimal is at least as
     * close to d), so the shortest N can be found by bisection; 17 always round-trips. */
    int lo = 1, hi = 17;
    while (lo < hi) {
        int mid = (lo + hi) / 2;
        snprintf(tmp, sizeof(tmp), "%.*g", mid, d);
        if (strtod(tmp, NULL) == d)
            hi = mid;
        else
            lo = mid + 1;
    }
    snprintf(tmp, sizeof(tmp), "%.*g", lo, d);
    /* %g switches to an exponent once it exceeds the precision (2500 -> "2.5e+03"); below 1e17
     * a plain number reads better and, with more digits, still round-trips. */
    const char *e = strchr(tmp, 'e');
    if (e != NULL) {
        int exp10 = atoi(e + 1);
        if (exp10 >= 0 && exp10 < 17 && exp10 + 1 > lo)
            snprintf(tmp, sizeof(tmp), "%.*g", exp10 + 1, d);
    }
    jb_puts(b, tmp);
    if (strpbrk(tmp, ".eE") == NULL)
        jb_puts(b, ".0"); /* 3.0 stays a double when read back */
}

static int fmt_value(jbuf *b, const Quiver__V1__Value *v, int depth)
{
    if (v == NULL) {
        jb_puts(b, "null");
        return 0;
    }
    char tmp[32];
    switch (v->kind_case) {
    case QUIVER__V1__VALUE__KIND_STRING_VALUE:
        jb_str(b, v->string_value != NULL ? v->string_value : "");
        return 0;
    case QUIVER__V1__VALUE__KIND_INTEGER_VALUE:
        snprintf(tmp, sizeof(tmp), "%" PRId64, v->integer_value);
        jb_puts(b, tmp);
        return 0;
    case QUIVER__V1__VALUE__KIND_DOUBLE_VALUE:
        jb_double(b, v->double_value);
        return 0;
    case QUIVER__V1__VALUE__KIND_BOOL_VALUE:
        jb_puts(b, v->bool_value ? "true" : "false");
        return 0;
    case QUIVER__V1__VALUE__KIND_LIST_VALUE: {
        if (depth >= 64)
            return QV_EINTERNAL;
        jb_put(b, "[", 1);
        const Quiver__V1__ListValue *l = v->list_value;
        for (size_t i = 0; l != NULL && i < l->n_values; i++) {
            if (i > 0)
                jb_put(b, ",", 1);
            int rc = fmt_value(b, l->values[i], depth + 1);
            if (rc != 0)
                return rc;
        }
        jb_put(b, "]", 1);
        return 0;
    }
    case QUIVER__V1__VALUE__KIND_NULL_VALUE:
    default: /* nothing set, or a kind newer than this SDK */
        jb_puts(b, "null");
        return 0;
    }
}

int qv__sdk_json_format_payload(const Quiver__V1__Payload *payload, char **out, size_t *out_len,
                                qv_status *err)
{
    if (out == NULL)
        return set_err(err, QV_EINVAL, "qv__sdk_json_format_payload: out is NULL");
    *out = NULL;
    if (out_len != NULL)
        *out_len = 0;
    jbuf b = {0};
    int rc = 0;
    locale_t prev = c_locale_enter();
    jb_put(&b, "{", 1);
    for (size_t i = 0; payload != NULL && i < payload->n_fields; i++) {
        const Quiver__V1__Payload__FieldsEntry *e = payload->fields[i];
        if (i > 0)
            jb_put(&b, ",", 1);
        jb_str(&b, e->key != NULL ? e->key : "");
        jb_put(&b, ":", 1);
        rc = fmt_value(&b, e->value, 0);
        if (rc != 0)
            break;
    }
    jb_put(&b, "}", 1);
    c_locale_leave(prev);
    if (rc != 0) {
        free(b.s);
        return set_err(err, rc, "payload lists nested deeper than 64 levels");
    }
    if (b.oom) {
        free(b.s);
        return set_err(err, QV_ERESOURCE, "out of memory while writing payload JSON");
    }
    *out = b.s;
    if (out_len != NULL)
        *out_len = b.len;
    if (err != NULL)
        *err = qv_status_ok();
    return 0;
}

/* ---- public helpers (quiver.h) --------------------------------------------------------------- */

int qv_payload_json_normalize(const char *json, size_t len, char **out, qv_status *err)
{
    if (out != NULL)
        *out = NULL;
    if (json == NULL)
        return set_err(err, QV_EINVAL, "qv_payload_json_normalize: json is NULL");
    Quiver__V1__Payload *pl = NULL;
    int rc = qv__sdk_json_parse_payload(json, len, &pl, err);
    if (rc != 0)
        return rc;
    if (out != NULL)
        rc = qv__sdk_json_format_payload(pl, out, NULL, err);
    quiver__v1__payload__free_unpacked(pl, NULL);
    return rc;
}

/* The point id at p->pos: an unsigned integer or a UUID string. */
static int parse_point_id(jp *p, qv_point_id *id)
{
    size_t at = p->pos;
    int c = peek(p);
    if (c == '"') {
        char *str = NULL;
        int rc = parse_string(p, &str, NULL);
        if (rc != 0)
            return rc;
        qv_status e = qv_status_ok();
        rc = qv_point_id_parse(str, id, &e);
        free(str);
        if (rc != 0)
            return jp_fail(p, at, "a string id must be a UUID or a decimal number");
        return 0;
    }
    size_t i = at;
    uint64_t v = 0;
    while (i < p->len && is_digit(p->s[i])) {
        uint64_t d = (uint64_t)(p->s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return jp_fail(p, at, "id out of range (0..18446744073709551615)");
        v = v * 10 + d;
        i++;
    }
    bool leading_zero = i - at > 1 && p->s[at] == '0';
    bool more = i < p->len && (p->s[i] == '.' || p->s[i] == 'e' || p->s[i] == 'E');
    if (i == at || leading_zero || more)
        return jp_fail(p, at, "an id is an unsigned 64-bit integer or a UUID string");
    memset(id, 0, sizeof(*id));
    id->num = v;
    p->pos = i;
    return 0;
}

/* The vector at p->pos: a non-empty list of numbers, each finite as a float. */
static int parse_vector(jp *p, float **out, uint32_t *dim)
{
    size_t at = p->pos;
    char why[24];
    if (peek(p) != '[')
        return jp_fail(p, at, "\"vector\" must be a list of numbers, found %s",
                       describe_at(p, at, why));
    p->pos++;
    float *vec = NULL;
    size_t n = 0, cap = 0;
    int rc = 0;
    skip_ws(p);
    if (peek(p) == ']') {
        rc = jp_fail(p, at, "empty vector");
        goto fail;
    }
    for (;;) {
        skip_ws(p);
        size_t num_at = p->pos;
        int c = peek(p);
        if (c != '-' && !is_digit(c)) {
            rc = jp_fail(p, num_at, "expected a number in the vector, found %s",
                         describe_at(p, num_at, why));
            goto fail;
        }
        if (n == UINT32_MAX) {
            rc = jp_fail(p, num_at, "vector too long");
            goto fail;
        }
        Quiver__V1__Value v = QUIVER__V1__VALUE__INIT;
        rc = parse_number(p, &v);
        if (rc != 0)
            goto fail;
        double d = v.kind_case == QUIVER__V1__VALUE__KIND_INTEGER_VALUE ? (double)v.integer_value
                                                                        : v.double_value;
        float f = (float)d;
        if (!isfinite(f)) {
            rc = jp_fail(p, num_at, "vector component out of the float range");
            goto fail;
        }
        if (n == cap) {
            size_t ncap = cap == 0 ? 64 : cap * 2;
            float *nv = realloc(vec, ncap * sizeof(*nv));
            if (nv == NULL) {
                rc = jp_oom(p);
                goto fail;
            }
            vec = nv;
            cap = ncap;
        }
        vec[n++] = f;
        skip_ws(p);
        c = peek(p);
        if (c == ',') {
            p->pos++;
            continue;
        }
        if (c == ']') {
            p->pos++;
            break;
        }
        rc = jp_fail(p, p->pos, "expected ',' or ']' in the vector, found %s",
                     describe_at(p, p->pos, why));
        goto fail;
    }
    *out = vec;
    *dim = (uint32_t)n;
    return 0;

fail:
    free(vec);
    return rc;
}

int qv_point_json_parse(const char *text, size_t len, qv_point *out, qv_status *err)
{
    if (out == NULL)
        return set_err(err, QV_EINVAL, "qv_point_json_parse: out is NULL");
    memset(out, 0, sizeof(*out));
    if (text == NULL)
        return set_err(err, QV_EINVAL, "qv_point_json_parse: text is NULL");
    jp p = {.s = text, .len = len, .what = "point JSON", .err = err};
    locale_t prev = c_locale_enter();
    bool have_id = false, have_payload = false;
    float *vec = NULL;
    char *payload = NULL;
    char why[24];
    char kbuf[52];
    int rc = 0;

    skip_ws(&p);
    size_t obj_start = p.pos;
    if (peek(&p) != '{') {
        rc = jp_fail(&p, p.pos, "a point must be a JSON object, found %s",
                     describe_at(&p, p.pos, why));
        goto fail;
    }
    p.pos++;
    skip_ws(&p);
    if (peek(&p) == '}') {
        p.pos++;
    } else {
        for (;;) {
            skip_ws(&p);
            size_t key_at = p.pos;
            if (peek(&p) != '"') {
                rc = jp_fail(&p, key_at, "expected a key string, found %s",
                             describe_at(&p, key_at, why));
                goto fail;
            }
            char *key = NULL;
            rc = parse_string(&p, &key, NULL);
            if (rc != 0)
                goto fail;
            enum { K_ID, K_VECTOR, K_PAYLOAD, K_OTHER } k = K_OTHER;
            if (strcmp(key, "id") == 0)
                k = K_ID;
            else if (strcmp(key, "vector") == 0)
                k = K_VECTOR;
            else if (strcmp(key, "payload") == 0)
                k = K_PAYLOAD;
            bool dup = (k == K_ID && have_id) || (k == K_VECTOR && vec != NULL) ||
                       (k == K_PAYLOAD && have_payload);
            if (k == K_OTHER || dup) {
                rc = jp_fail(&p, key_at,
                             dup ? "duplicate key \"%s\""
                                 : "unknown key \"%s\" (a point has id, vector and payload)",
                             describe_key(key, kbuf));
                free(key);
                goto fail;
            }
            free(key);
            skip_ws(&p);
            if (peek(&p) != ':') {
                rc = jp_fail(&p, p.pos, "expected ':' after a key, found %s",
                             describe_at(&p, p.pos, why));
                goto fail;
            }
            p.pos++;
            skip_ws(&p);
            if (k == K_ID) {
                rc = parse_point_id(&p, &out->id);
                have_id = rc == 0;
            } else if (k == K_VECTOR) {
                rc = parse_vector(&p, &vec, &out->dim);
            } else {
                have_payload = true;
                size_t obj_at = p.pos;
                if (peek(&p) == 'n') {
                    rc = parse_literal(&p, "null");
                } else if (peek(&p) == '{') {
                    Quiver__V1__Payload *pl = NULL;
                    p.what = "payload JSON";
                    rc = parse_payload_object(&p, &pl);
                    p.what = "point JSON";
                    quiver__v1__payload__free_unpacked(pl, NULL);
                    if (rc == 0) {
                        /* Valid as it stands: keep the caller's text. */
                        payload = strndup(text + obj_at, p.pos - obj_at);
                        if (payload == NULL)
                            rc = jp_oom(&p);
                    }
                } else {
                    rc = jp_fail(&p, obj_at, "\"payload\" must be an object or null, found %s",
                                 describe_at(&p, obj_at, why));
                }
            }
            if (rc != 0)
                goto fail;
            skip_ws(&p);
            int c = peek(&p);
            if (c == ',') {
                p.pos++;
                continue;
            }
            if (c == '}') {
                p.pos++;
                break;
            }
            rc = jp_fail(&p, p.pos, "expected ',' or '}' after a value, found %s",
                         describe_at(&p, p.pos, why));
            goto fail;
        }
    }
    rc = expect_end(&p);
    if (rc != 0)
        goto fail;
    if (!have_id || vec == NULL) {
        rc = jp_fail(&p, obj_start, "a point needs \"id\" and \"vector\"");
        goto fail;
    }
    c_locale_leave(prev);
    out->vector = vec;
    out->payload_json = payload;
    if (err != NULL)
        *err = qv_status_ok();
    return 0;

fail:
    c_locale_leave(prev);
    free(vec);
    free(payload);
    memset(out, 0, sizeof(*out));
    return rc;
}

void qv_point_json_free(qv_point *pt)
{
    if (pt == NULL)
        return;
    /* qv_point_json_parse allocated both; the const in qv_point is for callers' own points. */
    free((void *)pt->vector);
    free((void *)pt->payload_json);
    memset(pt, 0, sizeof(*pt));
}
