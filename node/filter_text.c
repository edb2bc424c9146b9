/*
 * node/filter_text.c - the filter_text parser (syntax and mapping: filter_text.h).
 *
 * A lexer (next_token) keeps one token of lookahead over a NUL-terminated copy of the text (the
 * terminator is for strtod). A recursive-descent parser, one function per precedence level
 * (parse_or > parse_and > parse_unary > parse_primary), builds the protobuf-c messages directly.
 * Each level returns a qv__fnode: a single Condition, or a Filter not yet wrapped in a Condition.
 * Keeping Filters unwrapped lets a chain splice a child's lists into its own, and means a
 * Condition is only ever created when it stays in the result: the running count of Conditions is
 * exact, so the 1,024-condition and 16-level limits fail at the offset where they are crossed.
 *
 * Ownership: a function that takes a node (chain_add, node_to_cond, make_not) frees it on every
 * error path; a function that fails leaves nothing allocated behind it. Everything is malloc'd
 * and every string set is a fresh copy, so protobuf-c's free_unpacked releases the whole tree.
 */
#include "node/filter_text.h"

#include <assert.h>
#include <math.h>
#include <stdarg.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_DEPTH 16   /* Filter levels, the returned one included (common.proto) */
#define MAX_CONDS 1024 /* Condition messages in the whole tree (common.proto) */
#define MAX_LIST  1024 /* literals in one `in` list */
#define MAX_FIELD 256  /* bytes of a field name */
#define MAX_NEST  64   /* parentheses and `not` nested in the text (bounds the recursion) */
#define SHOW_MAX  24   /* bytes of the offending token quoted in an error message */

typedef enum qv__ftk {
    TK_EOF,
    TK_LPAREN,
    TK_RPAREN,
    TK_LBRACK,
    TK_RBRACK,
    TK_COMMA,
    TK_OP,
    TK_WORD,   /* [A-Za-z_][A-Za-z0-9_]*: a keyword or a field name */
    TK_QFIELD, /* `backquoted field` */
    TK_STRING, /* '...' or "...", validated, still escaped */
    TK_INT,
    TK_DEC,
} qv__ftk;

typedef enum qv__fop { OP_EQ, OP_NE, OP_LT, OP_LE, OP_GT, OP_GE } qv__fop;
static const char *const op_names[] = {"=", "!=", "<", "<=", ">", ">="};

typedef enum qv__fkw {
    KW_NONE,
    KW_AND,
    KW_OR,
    KW_NOT,
    KW_IN,
    KW_IS,
    KW_NULL,
    KW_EMPTY,
    KW_TRUE,
    KW_FALSE,
    KW_ID,
} qv__fkw;
static const char *const kw_names[] = {"",     "and",   "or",   "not",   "in", "is",
                                       "null", "empty", "true", "false", "id"};

typedef struct qv__ftok {
    qv__ftk kind;
    size_t off, end; /* the token is text[off, end) */
    qv__fop op;      /* TK_OP */
    qv__fkw kw;      /* TK_WORD: KW_NONE for a field name */
} qv__ftok;

typedef struct qv__fp {
    const char *s; /* the text, NUL-terminated copy */
    size_t len;
    size_t pos;    /* where the lexer resumes */
    qv__ftok tok;  /* lookahead */
    size_t nconds; /* Condition messages created */
    int nest;      /* parentheses and `not` open around the current position */
    qv_status st;  /* the error, once one happened */
} qv__fp;

typedef struct qv__fnode {
    Quiver__V1__Condition *cond; /* exactly one of cond and filt is set */
    Quiver__V1__Filter *filt;
    int depth;               /* levels of filt (1: no nested condition); 0 with cond */
    size_t start, start_end; /* first token of the sub-expression, for error messages */
} qv__fnode;

typedef struct qv__ffield {
    qv__ftok tok; /* the field's token (a word or a backquoted name) */
    const char *name;
    size_t len;
} qv__ffield;

typedef enum qv__flk { LIT_INT, LIT_DEC, LIT_STR, LIT_BOOL } qv__flk;

typedef struct qv__flit {
    qv__flk kind;
    size_t off, end;
    int64_t i;
    double d;
    bool b;
    char *s; /* LIT_STR: the decoded string, malloc'd; NULL once moved into a message */
} qv__flit;

/* ---- errors ---------------------------------------------------------------------------------- */

/* Quotes text[start, end) for a message: printable ASCII as is, other bytes as \xNN, at most
 * SHOW_MAX bytes. A string token already starts with its quote and is shown as written. */
static void show_token(const qv__fp *p, size_t start, size_t end, char *buf, size_t cap)
{
    assert(cap >= 4 * SHOW_MAX + 8 && "show_token: buffer too small");
    if (start >= end) {
        snprintf(buf, cap, "end of input");
        return;
    }
    bool quoted = p->s[start] == '\'' || p->s[start] == '"';
    size_t shown = end - start > SHOW_MAX ? SHOW_MAX : end - start;
    size_t n = 0;
    if (!quoted)
        buf[n++] = '\'';
    for (size_t i = start; i < start + shown; i++) {
        unsigned char c = (unsigned char)p->s[i];
        if (c >= 0x20 && c < 0x7f) {
            buf[n++] = (char)c;
        } else {
            snprintf(buf + n, cap - n, "\\x%02x", c);
            n += 4;
        }
    }
    if (shown < end - start) {
        memcpy(buf + n, "...", 3);
        n += 3;
    }
    if (!quoted)
        buf[n++] = '\'';
    buf[n] = '\0';
}

static int fail(qv__fp *p, size_t at, size_t start, size_t end, const char *fmt, ...)
    QV_PRINTF(5, 6);

/* Records "filter_text: at byte <at>: <what>, found <text[start, end)>" and returns QV_EINVAL. */
static int fail(qv__fp *p, size_t at, size_t start, size_t end, const char *fmt, ...)
{
    char what[160];
    char found[4 * SHOW_MAX + 8];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(what, sizeof(what), fmt, ap);
    va_end(ap);
    show_token(p, start, end, found, sizeof(found));
    p->st = qv_status_make(QV_EINVAL, "filter_text: at byte %zu: %s, found %s", at, what, found);
    return QV_EINVAL;
}

#define fail_tok(p, t, ...) fail((p), (t)->off, (t)->off, (t)->end, __VA_ARGS__)

static int oom(qv__fp *p)
{
    p->st = qv_status_make(QV_ERESOURCE, "filter_text: out of memory");
    return QV_ERESOURCE;
}

/* ---- lexer ----------------------------------------------------------------------------------- */

static bool is_blank(char c)
{
    return c == ' ' || c == '\t' || c == '\n' || c == '\r' || c == '\v' || c == '\f';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool is_alpha(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_word(char c)
{
    return is_alpha(c) || is_digit(c);
}

/* The byte at i, or NUL past the end (the copy is NUL-terminated, so i == len reads the NUL). */
static char byte_at(const qv__fp *p, size_t i)
{
    return i < p->len ? p->s[i] : '\0';
}

/* Offset of the first byte of s[0, n) that does not start a valid UTF-8 sequence (no overlong
 * forms, no surrogates, nothing above U+10FFFF), or n when all is valid. */
static size_t utf8_bad(const unsigned char *s, size_t n)
{
    size_t i = 0;
    while (i < n) {
        unsigned char c = s[i];
        unsigned char lo = 0x80, hi = 0xbf;
        size_t need;
        if (c < 0x80) {
            i++;
            continue;
        }
        if (c >= 0xc2 && c <= 0xdf) {
            need = 1;
        } else if (c == 0xe0) {
            need = 2;
            lo = 0xa0;
        } else if (c == 0xed) {
            need = 2;
            hi = 0x9f;
        } else if (c >= 0xe1 && c <= 0xef) {
            need = 2;
        } else if (c == 0xf0) {
            need = 3;
            lo = 0x90;
        } else if (c >= 0xf1 && c <= 0xf3) {
            need = 3;
        } else if (c == 0xf4) {
            need = 3;
            hi = 0x8f;
        } else {
            return i;
        }
        if (n - i <= need || s[i + 1] < lo || s[i + 1] > hi)
            return i;
        for (size_t k = 2; k <= need; k++) {
            if ((s[i + k] & 0xc0) != 0x80)
                return i;
        }
        i += need + 1;
    }
    return n;
}

static qv__fkw keyword(const char *w, size_t n)
{
    for (int k = KW_AND; k <= KW_ID; k++) {
        const char *name = kw_names[k];
        if (strlen(name) != n)
            continue;
        size_t i = 0;
        while (i < n && (w[i] | 0x20) == name[i])
            i++;
        if (i == n)
            return (qv__fkw)k;
    }
    return KW_NONE;
}

static int lex_string(qv__fp *p, qv__ftok *t)
{
    char quote = p->s[t->off];
    size_t i = t->off + 1;
    for (;;) {
        if (i >= p->len)
            return fail(p, t->off, t->off, p->len, "unterminated string");
        char c = p->s[i];
        if (c == quote)
            break;
        if (c == '\0')
            return fail(p, i, i, i + 1, "NUL byte in a string");
        if (c == '\\') {
            if (i + 1 >= p->len)
                return fail(p, t->off, t->off, p->len, "unterminated string");
            char e = p->s[i + 1];
            if (e != '\\' && e != '\'' && e != '"')
                return fail(p, i, i, i + 2,
                            "unknown escape in a string (only \\\\, \\' and \\\" are allowed)");
            i += 2;
            continue;
        }
        i++;
    }
    size_t body = t->off + 1;
    size_t bad = utf8_bad((const unsigned char *)p->s + body, i - body);
    if (bad < i - body)
        return fail(p, body + bad, body + bad, body + bad + 1, "invalid UTF-8 in a string");
    t->kind = TK_STRING;
    t->end = i + 1;
    return 0;
}

static int lex_qfield(qv__fp *p, qv__ftok *t)
{
    size_t i = t->off + 1;
    while (i < p->len && p->s[i] != '`') {
        if (p->s[i] == '\0')
            return fail(p, i, i, i + 1, "NUL byte in a field name");
        i++;
    }
    if (i >= p->len)
        return fail(p, t->off, t->off, p->len, "unterminated backquoted field name");
    size_t body = t->off + 1, n = i - body;
    if (n == 0)
        return fail(p, t->off, t->off, i + 1, "empty field name");
    if (n > MAX_FIELD)
        return fail(p, t->off, t->off, i + 1, "field name longer than %d bytes", MAX_FIELD);
    size_t bad = utf8_bad((const unsigned char *)p->s + body, n);
    if (bad < n)
        return fail(p, body + bad, body + bad, body + bad + 1, "invalid UTF-8 in a field name");
    t->kind = TK_QFIELD;
    t->end = i + 1;
    return 0;
}

/* [+-]? (digits ["." digits*] | "." digits) [(e|E) [+-] digits]. The caller saw at least one
 * mantissa digit. A letter, digit or dot right after it makes the whole run malformed ("3abc",
 * "1.2.3", "0x10", "1e"). */
static int lex_number(qv__fp *p, qv__ftok *t)
{
    size_t i = t->off;
    bool dec = false;
    if (p->s[i] == '+' || p->s[i] == '-')
        i++;
    while (is_digit(byte_at(p, i)))
        i++;
    if (byte_at(p, i) == '.') {
        dec = true;
        i++;
        while (is_digit(byte_at(p, i)))
            i++;
    }
    if (byte_at(p, i) == 'e' || byte_at(p, i) == 'E') {
        size_t j = i + 1;
        if (byte_at(p, j) == '+' || byte_at(p, j) == '-')
            j++;
        if (is_digit(byte_at(p, j))) {
            dec = true;
            i = j;
            while (is_digit(byte_at(p, i)))
                i++;
        }
    }
    if (is_word(byte_at(p, i)) || byte_at(p, i) == '.') {
        size_t e = i;
        while (is_word(byte_at(p, e)) || byte_at(p, e) == '.')
            e++;
        return fail(p, t->off, t->off, e, "malformed number");
    }
    t->kind = dec ? TK_DEC : TK_INT;
    t->end = i;
    return 0;
}

/* Reads the next token into p->tok. */
static int next_token(qv__fp *p)
{
    while (p->pos < p->len && is_blank(p->s[p->pos]))
        p->pos++;
    qv__ftok t = {.kind = TK_EOF, .off = p->pos, .end = p->pos};
    int rc = 0;
    if (p->pos < p->len) {
        char c = p->s[p->pos], c1 = byte_at(p, p->pos + 1);
        t.end = t.off + 1;
        switch (c) {
        case '(':
            t.kind = TK_LPAREN;
            break;
        case ')':
            t.kind = TK_RPAREN;
            break;
        case '[':
            t.kind = TK_LBRACK;
            break;
        case ']':
            t.kind = TK_RBRACK;
            break;
        case ',':
            t.kind = TK_COMMA;
            break;
        case '=':
            t.kind = TK_OP;
            t.op = OP_EQ;
            break;
        case '!':
            if (c1 != '=') {
                rc = fail(p, t.off, t.off, t.end, "unexpected character ('!' must be '!=')");
                break;
            }
            t.kind = TK_OP;
            t.op = OP_NE;
            t.end++;
            break;
        case '<':
        case '>':
            t.kind = TK_OP;
            t.op = c == '<' ? OP_LT : OP_GT;
            if (c1 == '=') {
                t.op = c == '<' ? OP_LE : OP_GE;
                t.end++;
            }
            break;
        case '\'':
        case '"':
            rc = lex_string(p, &t);
            break;
        case '`':
            rc = lex_qfield(p, &t);
            break;
        default:
            if (is_alpha(c)) {
                while (is_word(byte_at(p, t.end)))
                    t.end++;
                t.kind = TK_WORD;
                t.kw = keyword(p->s + t.off, t.end - t.off);
            } else if (is_digit(c) || (c == '.' && is_digit(c1)) ||
                       ((c == '+' || c == '-') &&
                        (is_digit(c1) || (c1 == '.' && is_digit(byte_at(p, t.off + 2)))))) {
                rc = lex_number(p, &t);
            } else {
                rc = fail(p, t.off, t.off, t.end, "unexpected character");
            }
            break;
        }
    }
    if (rc != 0)
        return rc;
    p->tok = t;
    p->pos = t.end;
    return 0;
}

static bool is_kw(const qv__fp *p, qv__fkw kw)
{
    return p->tok.kind == TK_WORD && p->tok.kw == kw;
}

/* ---- literals -------------------------------------------------------------------------------- */

/* Value of the digits s[0, n); false when over UINT64_MAX. */
static bool digits_u64(const char *s, size_t n, uint64_t *out)
{
    uint64_t v = 0;
    for (size_t i = 0; i < n; i++) {
        uint64_t d = (uint64_t)(s[i] - '0');
        if (v > (UINT64_MAX - d) / 10)
            return false;
        v = v * 10 + d;
    }
    *out = v;
    return true;
}

static int int_value(qv__fp *p, const qv__ftok *t, int64_t *out)
{
    const char *s = p->s + t->off;
    size_t n = t->end - t->off;
    bool neg = s[0] == '-';
    if (s[0] == '-' || s[0] == '+') {
        s++;
        n--;
    }
    uint64_t lim = neg ? (uint64_t)INT64_MAX + 1 : (uint64_t)INT64_MAX;
    uint64_t m;
    if (!digits_u64(s, n, &m) || m > lim)
        return fail_tok(p, t, "integer out of the int64 range");
    if (neg)
        *out = m == lim ? INT64_MIN : -(int64_t)m;
    else
        *out = (int64_t)m;
    return 0;
}

static int dec_value(qv__fp *p, const qv__ftok *t, double *out)
{
    char *end;
    double d = strtod(p->s + t->off, &end);
    if (end != p->s + t->end)
        return fail_tok(p, t, "malformed number");
    if (!isfinite(d))
        return fail_tok(p, t, "number out of range (it must be finite)");
    *out = d;
    return 0;
}

/* The decoded body of a validated string token, malloc'd; NULL when out of memory. */
static char *string_value(const qv__fp *p, const qv__ftok *t)
{
    char *out = malloc(t->end - t->off - 1);
    if (out == NULL)
        return NULL;
    size_t k = 0;
    for (size_t i = t->off + 1; i + 1 < t->end; i++) {
        if (p->s[i] == '\\')
            i++;
        out[k++] = p->s[i];
    }
    out[k] = '\0';
    return out;
}

/* Parses the literal at p->tok into *l and moves past it. `ctx` finishes "expected a value ...".
 * On error l->s is NULL. */
static int parse_literal(qv__fp *p, qv__flit *l, const char *ctx)
{
    const qv__ftok *t = &p->tok;
    int rc = 0;
    *l = (qv__flit){.off = t->off, .end = t->end};
    switch (t->kind) {
    case TK_INT:
        l->kind = LIT_INT;
        rc = int_value(p, t, &l->i);
        break;
    case TK_DEC:
        l->kind = LIT_DEC;
        rc = dec_value(p, t, &l->d);
        break;
    case TK_STRING:
        l->kind = LIT_STR;
        l->s = string_value(p, t);
        if (l->s == NULL)
            rc = oom(p);
        break;
    case TK_WORD:
        if (t->kw == KW_TRUE || t->kw == KW_FALSE) {
            l->kind = LIT_BOOL;
            l->b = t->kw == KW_TRUE;
        } else if (t->kw == KW_NULL) {
            rc = fail_tok(p, t, "expected a value %s (test for null with 'is null')", ctx);
        } else {
            rc = fail_tok(p, t, "expected a value %s", ctx);
        }
        break;
    default:
        rc = fail_tok(p, t, "expected a value %s", ctx);
        break;
    }
    if (rc == 0)
        rc = next_token(p);
    if (rc != 0) {
        free(l->s);
        l->s = NULL;
    }
    return rc;
}

/* ---- messages -------------------------------------------------------------------------------- */

static char *dup_name(const qv__ffield *fld)
{
    char *s = malloc(fld->len + 1);
    if (s != NULL) {
        memcpy(s, fld->name, fld->len);
        s[fld->len] = '\0';
    }
    return s;
}

static Quiver__V1__Filter *filter_new(void)
{
    Quiver__V1__Filter *f = malloc(sizeof(*f));
    if (f != NULL)
        quiver__v1__filter__init(f);
    return f;
}

static Quiver__V1__FieldMatch *match_new(const qv__ffield *fld)
{
    char *name = dup_name(fld);
    Quiver__V1__FieldMatch *m = name != NULL ? malloc(sizeof(*m)) : NULL;
    if (m == NULL) {
        free(name);
        return NULL;
    }
    quiver__v1__field_match__init(m);
    m->field = name;
    return m;
}

static Quiver__V1__FieldRange *range_new(const qv__ffield *fld)
{
    char *name = dup_name(fld);
    Quiver__V1__FieldRange *r = name != NULL ? malloc(sizeof(*r)) : NULL;
    if (r == NULL) {
        free(name);
        return NULL;
    }
    quiver__v1__field_range__init(r);
    r->field = name;
    return r;
}

/* A new empty Condition, counted against MAX_CONDS; a limit error names text[start, end). */
static int cond_new(qv__fp *p, size_t start, size_t end, Quiver__V1__Condition **out)
{
    *out = NULL;
    if (p->nconds >= MAX_CONDS)
        return fail(p, start, start, end, "more than %d conditions", MAX_CONDS);
    Quiver__V1__Condition *c = malloc(sizeof(*c));
    if (c == NULL)
        return oom(p);
    quiver__v1__condition__init(c);
    p->nconds++;
    *out = c;
    return 0;
}

/* Appends c to a repeated Condition field, taking ownership (freed on failure). */
static int push_cond(qv__fp *p, Quiver__V1__Condition ***arr, size_t *n, Quiver__V1__Condition *c)
{
    Quiver__V1__Condition **a = realloc(*arr, (*n + 1) * sizeof(*a));
    if (a == NULL) {
        quiver__v1__condition__free_unpacked(c, NULL);
        return oom(p);
    }
    a[(*n)++] = c;
    *arr = a;
    return 0;
}

/* Moves every Condition of src to the end of dst. On failure both keep theirs. */
static int move_conds(qv__fp *p, Quiver__V1__Condition ***dst, size_t *ndst,
                      Quiver__V1__Condition ***src, size_t *nsrc)
{
    if (*nsrc == 0)
        return 0;
    Quiver__V1__Condition **a = realloc(*dst, (*ndst + *nsrc) * sizeof(*a));
    if (a == NULL)
        return oom(p);
    memcpy(a + *ndst, *src, *nsrc * sizeof(*a));
    *dst = a;
    *ndst += *nsrc;
    free(*src);
    *src = NULL;
    *nsrc = 0;
    return 0;
}

static void node_free(qv__fnode *x)
{
    quiver__v1__condition__free_unpacked(x->cond, NULL);
    quiver__v1__filter__free_unpacked(x->filt, NULL);
    x->cond = NULL;
    x->filt = NULL;
}

/* Turns x into one Condition, wrapping a Filter as Condition.nested; takes ownership of x. A
 * limit error names text[start, end). */
static int node_to_cond(qv__fp *p, qv__fnode *x, size_t start, size_t end,
                        Quiver__V1__Condition **out)
{
    if (x->cond != NULL) {
        *out = x->cond;
        x->cond = NULL;
        return 0;
    }
    int rc;
    if (x->depth + 1 > MAX_DEPTH)
        rc = fail(p, start, start, end, "filter nests deeper than %d levels", MAX_DEPTH);
    else
        rc = cond_new(p, start, end, out);
    if (rc != 0) {
        node_free(x);
        return rc;
    }
    (*out)->condition_case = QUIVER__V1__CONDITION__CONDITION_NESTED;
    (*out)->nested = x->filt;
    x->filt = NULL;
    return 0;
}

/* Replaces the Condition of x by a Filter whose must_not holds it. */
static int make_must_not(qv__fp *p, qv__fnode *x)
{
    Quiver__V1__Filter *f = filter_new();
    if (f == NULL) {
        node_free(x);
        return oom(p);
    }
    int rc = push_cond(p, &f->must_not, &f->n_must_not, x->cond);
    x->cond = NULL;
    if (rc != 0) {
        quiver__v1__filter__free_unpacked(f, NULL);
        return rc;
    }
    x->filt = f;
    x->depth = 1;
    return 0;
}

/* The condition `field = literal` (also one element of a mixed `in` list); moves l->s. */
static int eq_cond(qv__fp *p, const qv__ffield *fld, qv__flit *l, size_t start, size_t end,
                   Quiver__V1__Condition **out)
{
    Quiver__V1__Condition *c;
    int rc = cond_new(p, start, end, &c);
    if (rc != 0)
        return rc;
    if (l->kind == LIT_DEC) {
        Quiver__V1__FieldRange *r = range_new(fld);
        if (r == NULL)
            goto fail_oom;
        r->opt_gte_case = QUIVER__V1__FIELD_RANGE__OPT_GTE_GTE;
        r->gte = l->d;
        r->opt_lte_case = QUIVER__V1__FIELD_RANGE__OPT_LTE_LTE;
        r->lte = l->d;
        c->condition_case = QUIVER__V1__CONDITION__CONDITION_RANGE;
        c->range = r;
    } else {
        Quiver__V1__FieldMatch *m = match_new(fld);
        if (m == NULL)
            goto fail_oom;
        if (l->kind == LIT_INT) {
            m->match_case = QUIVER__V1__FIELD_MATCH__MATCH_INTEGER;
            m->integer = l->i;
        } else if (l->kind == LIT_BOOL) {
            m->match_case = QUIVER__V1__FIELD_MATCH__MATCH_BOOLEAN;
            m->boolean = l->b;
        } else {
            m->match_case = QUIVER__V1__FIELD_MATCH__MATCH_KEYWORD;
            m->keyword = l->s;
            l->s = NULL;
        }
        c->condition_case = QUIVER__V1__CONDITION__CONDITION_MATCH;
        c->match = m;
    }
    *out = c;
    return 0;

fail_oom:
    quiver__v1__condition__free_unpacked(c, NULL);
    return oom(p);
}

static int range_cond(qv__fp *p, const qv__ffield *fld, qv__fop op, double v,
                      Quiver__V1__Condition **out)
{
    Quiver__V1__Condition *c;
    int rc = cond_new(p, fld->tok.off, fld->tok.end, &c);
    if (rc != 0)
        return rc;
    Quiver__V1__FieldRange *r = range_new(fld);
    if (r == NULL) {
        quiver__v1__condition__free_unpacked(c, NULL);
        return oom(p);
    }
    switch (op) {
    case OP_LT:
        r->opt_lt_case = QUIVER__V1__FIELD_RANGE__OPT_LT_LT;
        r->lt = v;
        break;
    case OP_LE:
        r->opt_lte_case = QUIVER__V1__FIELD_RANGE__OPT_LTE_LTE;
        r->lte = v;
        break;
    case OP_GT:
        r->opt_gt_case = QUIVER__V1__FIELD_RANGE__OPT_GT_GT;
        r->gt = v;
        break;
    default:
        assert(op == OP_GE && "range_cond: not an ordering operator");
        r->opt_gte_case = QUIVER__V1__FIELD_RANGE__OPT_GTE_GTE;
        r->gte = v;
        break;
    }
    c->condition_case = QUIVER__V1__CONDITION__CONDITION_RANGE;
    c->range = r;
    *out = c;
    return 0;
}

/* ---- grammar --------------------------------------------------------------------------------- */

static int parse_or(qv__fp *p, qv__fnode *out);

/* field op literal; p->tok is the operator. */
static int parse_compare(qv__fp *p, const qv__ffield *fld, qv__fnode *out)
{
    qv__fop op = p->tok.op;
    char ctx[16];
    snprintf(ctx, sizeof(ctx), "after '%s'", op_names[op]);
    int rc = next_token(p);
    if (rc != 0)
        return rc;
    bool ordering = op != OP_EQ && op != OP_NE;
    if (ordering && (p->tok.kind == TK_STRING || is_kw(p, KW_TRUE) || is_kw(p, KW_FALSE)))
        return fail_tok(p, &p->tok, "'%s' compares numbers only", op_names[op]);
    qv__flit l;
    rc = parse_literal(p, &l, ctx);
    if (rc != 0)
        return rc;
    Quiver__V1__Condition *c = NULL;
    if (ordering)
        rc = range_cond(p, fld, op, l.kind == LIT_INT ? (double)l.i : l.d, &c);
    else
        rc = eq_cond(p, fld, &l, fld->tok.off, fld->tok.end, &c);
    free(l.s);
    if (rc != 0)
        return rc;
    *out = (qv__fnode){.cond = c, .start = fld->tok.off, .start_end = fld->tok.end};
    return op == OP_NE ? make_must_not(p, out) : 0;
}

/* Checks '[' and moves past it; an empty list is an error. */
static int list_open(qv__fp *p, const char *after)
{
    if (p->tok.kind != TK_LBRACK)
        return fail_tok(p, &p->tok, "expected '[' after '%s'", after);
    int rc = next_token(p);
    if (rc == 0 && p->tok.kind == TK_RBRACK)
        rc = fail_tok(p, &p->tok, "empty list (a list holds 1 to %d values)", MAX_LIST);
    return rc;
}

/* After an element: moves past ',' (returns 0, *done false) or ']' (*done true). */
static int list_next(qv__fp *p, bool *done)
{
    if (p->tok.kind != TK_COMMA && p->tok.kind != TK_RBRACK)
        return fail_tok(p, &p->tok, "expected ',' or ']' in the list");
    *done = p->tok.kind == TK_RBRACK;
    return next_token(p);
}

static void lits_free(qv__flit *lits, size_t n)
{
    for (size_t i = 0; i < n; i++)
        free(lits[i].s);
    free(lits);
}

/* A KeywordList or IntegerList match from a homogeneous list; moves the strings. */
static int list_match(qv__fp *p, const qv__ffield *fld, bool neg, bool strings, qv__flit *lits,
                      size_t n, Quiver__V1__Condition **out)
{
    Quiver__V1__Condition *c;
    int rc = cond_new(p, fld->tok.off, fld->tok.end, &c);
    if (rc != 0)
        return rc;
    Quiver__V1__FieldMatch *m = match_new(fld);
    if (m == NULL)
        goto fail_oom;
    c->condition_case = QUIVER__V1__CONDITION__CONDITION_MATCH;
    c->match = m;
    if (strings) {
        Quiver__V1__KeywordList *kl = malloc(sizeof(*kl));
        char **vals = malloc(n * sizeof(*vals));
        if (kl == NULL || vals == NULL) {
            free(kl);
            free(vals);
            goto fail_oom;
        }
        quiver__v1__keyword_list__init(kl);
        for (size_t i = 0; i < n; i++) {
            vals[i] = lits[i].s;
            lits[i].s = NULL;
        }
        kl->values = vals;
        kl->n_values = n;
        m->match_case = neg ? QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_KEYWORDS
                            : QUIVER__V1__FIELD_MATCH__MATCH_KEYWORDS;
        m->keywords = kl; /* same union slot as except_keywords */
    } else {
        Quiver__V1__IntegerList *il = malloc(sizeof(*il));
        int64_t *vals = malloc(n * sizeof(*vals));
        if (il == NULL || vals == NULL) {
            free(il);
            free(vals);
            goto fail_oom;
        }
        quiver__v1__integer_list__init(il);
        for (size_t i = 0; i < n; i++)
            vals[i] = lits[i].i;
        il->values = vals;
        il->n_values = n;
        m->match_case = neg ? QUIVER__V1__FIELD_MATCH__MATCH_EXCEPT_INTEGERS
                            : QUIVER__V1__FIELD_MATCH__MATCH_INTEGERS;
        m->integers = il; /* same union slot as except_integers */
    }
    *out = c;
    return 0;

fail_oom:
    quiver__v1__condition__free_unpacked(c, NULL);
    return oom(p);
}

/* field ["not"] "in" [..]; p->tok is "in". */
static int parse_in(qv__fp *p, const qv__ffield *fld, bool neg, qv__fnode *out)
{
    qv__flit *lits = NULL;
    size_t n = 0;
    Quiver__V1__Filter *f = NULL;
    int rc = next_token(p);
    if (rc == 0)
        rc = list_open(p, "in");
    for (bool done = false; rc == 0 && !done;) {
        if (n == MAX_LIST) {
            rc = fail_tok(p, &p->tok, "list holds more than %d values", MAX_LIST);
            break;
        }
        qv__flit *grown = realloc(lits, (n + 1) * sizeof(*lits));
        if (grown == NULL) {
            rc = oom(p);
            break;
        }
        lits = grown;
        rc = parse_literal(p, &lits[n], "in the list");
        if (rc != 0)
            break;
        n++;
        rc = list_next(p, &done);
    }
    if (rc != 0)
        goto done;

    bool all_str = true, all_int = true;
    for (size_t i = 0; i < n; i++) {
        all_str = all_str && lits[i].kind == LIT_STR;
        all_int = all_int && lits[i].kind == LIT_INT;
    }
    *out = (qv__fnode){.start = fld->tok.off, .start_end = fld->tok.end};
    if (all_str || all_int) {
        rc = list_match(p, fld, neg, all_str, lits, n, &out->cond);
        goto done;
    }
    /* Mixed: one condition per literal; `in` is any of them, `not in` none of them. */
    f = filter_new();
    if (f == NULL) {
        rc = oom(p);
        goto done;
    }
    for (size_t i = 0; i < n && rc == 0; i++) {
        Quiver__V1__Condition *c;
        rc = eq_cond(p, fld, &lits[i], lits[i].off, lits[i].end, &c);
        if (rc == 0 && neg)
            rc = push_cond(p, &f->must_not, &f->n_must_not, c);
        else if (rc == 0)
            rc = push_cond(p, &f->should, &f->n_should, c);
    }
    if (rc != 0) {
        quiver__v1__filter__free_unpacked(f, NULL);
        goto done;
    }
    out->filt = f;
    out->depth = 1;

done:
    lits_free(lits, n);
    return rc;
}

/* field "is" ["not"] ("null" | "empty"); p->tok is "is". */
static int parse_is(qv__fp *p, const qv__ffield *fld, qv__fnode *out)
{
    bool neg = false;
    int rc = next_token(p);
    if (rc == 0 && is_kw(p, KW_NOT)) {
        neg = true;
        rc = next_token(p);
    }
    if (rc != 0)
        return rc;
    if (!is_kw(p, KW_NULL) && !is_kw(p, KW_EMPTY))
        return fail_tok(p, &p->tok,
                        neg ? "expected 'null' or 'empty' after 'is not'"
                            : "expected 'null', 'empty' or 'not' after 'is'");
    bool null = is_kw(p, KW_NULL);
    rc = next_token(p);
    Quiver__V1__Condition *c = NULL;
    if (rc == 0)
        rc = cond_new(p, fld->tok.off, fld->tok.end, &c);
    if (rc != 0)
        return rc;
    char *name = dup_name(fld);
    if (name == NULL)
        goto fail_oom;
    if (null) {
        Quiver__V1__IsNull *m = malloc(sizeof(*m));
        if (m == NULL) {
            free(name);
            goto fail_oom;
        }
        quiver__v1__is_null__init(m);
        m->field = name;
        c->condition_case = QUIVER__V1__CONDITION__CONDITION_IS_NULL;
        c->is_null = m;
    } else {
        Quiver__V1__IsEmpty *m = malloc(sizeof(*m));
        if (m == NULL) {
            free(name);
            goto fail_oom;
        }
        quiver__v1__is_empty__init(m);
        m->field = name;
        c->condition_case = QUIVER__V1__CONDITION__CONDITION_IS_EMPTY;
        c->is_empty = m;
    }
    *out = (qv__fnode){.cond = c, .start = fld->tok.off, .start_end = fld->tok.end};
    return neg ? make_must_not(p, out) : 0;

fail_oom:
    quiver__v1__condition__free_unpacked(c, NULL);
    return oom(p);
}

static int hexval(char c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    c = (char)(c | 0x20);
    return c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
}

/* True when s is a UUID in the 8-4-4-4-12 form; lower-cases its hex digits in place. */
static bool uuid_normalise(char *s)
{
    if (strlen(s) != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (hexval(s[i]) < 0) {
            return false;
        } else if (s[i] >= 'A' && s[i] <= 'F') {
            s[i] = (char)(s[i] | 0x20);
        }
    }
    return true;
}

/* One element of an `id in` list into a new PointId. */
static int parse_point_id(qv__fp *p, Quiver__V1__PointId **out)
{
    const qv__ftok *t = &p->tok;
    *out = NULL;
    Quiver__V1__PointId *pid = malloc(sizeof(*pid));
    if (pid == NULL)
        return oom(p);
    quiver__v1__point_id__init(pid);
    int rc = 0;
    if (t->kind == TK_INT) {
        const char *s = p->s + t->off;
        size_t n = t->end - t->off;
        if (s[0] == '+') {
            s++;
            n--;
        }
        if (s[0] == '-' || !digits_u64(s, n, &pid->num))
            rc = fail_tok(p, t, "point id out of range (0 to 18446744073709551615)");
        else
            pid->kind_case = QUIVER__V1__POINT_ID__KIND_NUM;
    } else if (t->kind == TK_STRING) {
        char *u = string_value(p, t);
        if (u == NULL) {
            rc = oom(p);
        } else if (!uuid_normalise(u)) {
            free(u);
            rc = fail_tok(p, t, "expected a UUID (8-4-4-4-12 hex digits)");
        } else {
            pid->kind_case = QUIVER__V1__POINT_ID__KIND_UUID;
            pid->uuid = u;
        }
    } else {
        rc = fail_tok(p, t, "expected a point id (an integer or a UUID string)");
    }
    if (rc == 0)
        rc = next_token(p);
    if (rc != 0) {
        quiver__v1__point_id__free_unpacked(pid, NULL);
        return rc;
    }
    *out = pid;
    return 0;
}

/* "id" "in" [..]; p->tok is "id". */
static int parse_id_in(qv__fp *p, qv__fnode *out)
{
    qv__ftok idt = p->tok;
    int rc = next_token(p);
    if (rc != 0)
        return rc;
    if (!is_kw(p, KW_IN))
        return fail_tok(p, &p->tok,
                        "expected 'in' after 'id' (write `id` for a payload field named id)");
    rc = next_token(p);
    if (rc == 0)
        rc = list_open(p, "id in");
    if (rc != 0)
        return rc;
    Quiver__V1__HasId *h = malloc(sizeof(*h));
    if (h == NULL)
        return oom(p);
    quiver__v1__has_id__init(h);
    for (bool done = false; rc == 0 && !done;) {
        if (h->n_ids == MAX_LIST) {
            rc = fail_tok(p, &p->tok, "list holds more than %d values", MAX_LIST);
            break;
        }
        Quiver__V1__PointId **grown = realloc(h->ids, (h->n_ids + 1) * sizeof(*grown));
        if (grown == NULL) {
            rc = oom(p);
            break;
        }
        h->ids = grown;
        rc = parse_point_id(p, &h->ids[h->n_ids]);
        if (rc != 0)
            break;
        h->n_ids++;
        rc = list_next(p, &done);
    }
    Quiver__V1__Condition *c = NULL;
    if (rc == 0)
        rc = cond_new(p, idt.off, idt.end, &c);
    if (rc != 0) {
        quiver__v1__has_id__free_unpacked(h, NULL);
        return rc;
    }
    c->condition_case = QUIVER__V1__CONDITION__CONDITION_HAS_ID;
    c->has_id = h;
    *out = (qv__fnode){.cond = c, .start = idt.off, .start_end = idt.end};
    return 0;
}

static int parse_primary(qv__fp *p, qv__fnode *out)
{
    qv__ftok t = p->tok;
    int rc;
    if (t.kind == TK_LPAREN) {
        if (p->nest >= MAX_NEST)
            return fail_tok(p, &t, "expression nests deeper than %d levels", MAX_NEST);
        p->nest++;
        rc = next_token(p);
        if (rc == 0)
            rc = parse_or(p, out);
        p->nest--;
        if (rc != 0)
            return rc;
        if (p->tok.kind != TK_RPAREN)
            rc = fail_tok(p, &p->tok, "expected ')' to close the '(' at byte %zu", t.off);
        else
            rc = next_token(p);
        if (rc != 0) {
            node_free(out);
            return rc;
        }
        out->start = t.off;
        out->start_end = t.end;
        return 0;
    }
    if (t.kind == TK_WORD && t.kw == KW_ID)
        return parse_id_in(p, out);

    qv__ffield fld = {.tok = t};
    if (t.kind == TK_QFIELD) {
        fld.name = p->s + t.off + 1;
        fld.len = t.end - t.off - 2;
    } else if (t.kind == TK_WORD && t.kw == KW_NONE) {
        if (t.end - t.off > MAX_FIELD)
            return fail_tok(p, &t, "field name longer than %d bytes", MAX_FIELD);
        fld.name = p->s + t.off;
        fld.len = t.end - t.off;
    } else if (t.kind == TK_WORD) {
        return fail_tok(p, &t,
                        "expected a field, 'not' or '(' (write `%s` for a payload field named "
                        "%s)",
                        kw_names[t.kw], kw_names[t.kw]);
    } else {
        return fail_tok(p, &t, "expected a field, 'not' or '('");
    }
    rc = next_token(p);
    if (rc != 0)
        return rc;
    if (p->tok.kind == TK_OP)
        return parse_compare(p, &fld, out);
    if (is_kw(p, KW_IN))
        return parse_in(p, &fld, false, out);
    if (is_kw(p, KW_IS))
        return parse_is(p, &fld, out);
    if (!is_kw(p, KW_NOT))
        return fail_tok(p, &p->tok,
                        "expected an operator after the field (=, !=, <, <=, >, >=, in, not in, "
                        "is)");
    rc = next_token(p);
    if (rc != 0)
        return rc;
    if (!is_kw(p, KW_IN))
        return fail_tok(p, &p->tok, "expected 'in' after 'not'");
    return parse_in(p, &fld, true, out);
}

/* `not x`: a Filter whose must_not holds x; `not (a or b)` becomes must_not [a, b]. Takes x. */
static int make_not(qv__fp *p, const qv__ftok *nt, qv__fnode *x, qv__fnode *out)
{
    Quiver__V1__Filter *f = filter_new();
    if (f == NULL) {
        node_free(x);
        return oom(p);
    }
    *out = (qv__fnode){.filt = f, .depth = 1, .start = nt->off, .start_end = nt->end};
    Quiver__V1__Filter *g = x->filt;
    int rc;
    if (g != NULL && g->opt_min_should_case == QUIVER__V1__FILTER__OPT_MIN_SHOULD__NOT_SET &&
        g->n_must == 0 && g->n_must_not == 0) {
        rc = move_conds(p, &f->must_not, &f->n_must_not, &g->should, &g->n_should);
        out->depth = x->depth;
        node_free(x);
    } else {
        Quiver__V1__Condition *c;
        out->depth = g != NULL ? x->depth + 1 : 1;
        rc = node_to_cond(p, x, nt->off, nt->end, &c);
        if (rc == 0)
            rc = push_cond(p, &f->must_not, &f->n_must_not, c);
    }
    if (rc != 0) {
        quiver__v1__filter__free_unpacked(f, NULL);
        out->filt = NULL;
    }
    return rc;
}

static int parse_unary(qv__fp *p, qv__fnode *out)
{
    if (!is_kw(p, KW_NOT))
        return parse_primary(p, out);
    qv__ftok nt = p->tok;
    if (p->nest >= MAX_NEST)
        return fail_tok(p, &nt, "expression nests deeper than %d levels", MAX_NEST);
    p->nest++;
    qv__fnode x;
    int rc = next_token(p);
    if (rc == 0)
        rc = parse_unary(p, &x);
    p->nest--;
    if (rc != 0)
        return rc;
    return make_not(p, &nt, &x, out);
}

/* Adds operand x to the chain f (`must` for "and", `should` for "or"), taking ownership of x.
 * An operand Filter that says the same thing spliced in is spliced; others are nested. */
static int chain_add(qv__fp *p, Quiver__V1__Filter *f, int *depth, bool and_chain, qv__fnode *x)
{
    Quiver__V1__Filter *g = x->filt;
    int rc;
    bool plain = g != NULL && g->opt_min_should_case == QUIVER__V1__FILTER__OPT_MIN_SHOULD__NOT_SET;
    if (plain && and_chain && g->n_should == 0) {
        rc = move_conds(p, &f->must, &f->n_must, &g->must, &g->n_must);
        if (rc == 0)
            rc = move_conds(p, &f->must_not, &f->n_must_not, &g->must_not, &g->n_must_not);
    } else if (plain && !and_chain && g->n_must == 0 && g->n_must_not == 0) {
        rc = move_conds(p, &f->should, &f->n_should, &g->should, &g->n_should);
    } else {
        int d = g != NULL ? x->depth + 1 : 1;
        Quiver__V1__Condition *c;
        rc = node_to_cond(p, x, x->start, x->start_end, &c);
        if (rc != 0)
            return rc;
        if (and_chain)
            rc = push_cond(p, &f->must, &f->n_must, c);
        else
            rc = push_cond(p, &f->should, &f->n_should, c);
        if (rc == 0 && d > *depth)
            *depth = d;
        return rc;
    }
    if (rc == 0 && x->depth > *depth)
        *depth = x->depth;
    node_free(x);
    return rc;
}

typedef int (*qv__fparse_fn)(qv__fp *p, qv__fnode *out);

/* sub {op sub}: one operand as is, more as one Filter. */
static int parse_chain(qv__fp *p, qv__fkw op, qv__fparse_fn sub, qv__fnode *out)
{
    qv__fnode x;
    int rc = sub(p, &x);
    if (rc != 0)
        return rc;
    if (!is_kw(p, op)) {
        *out = x;
        return 0;
    }
    Quiver__V1__Filter *f = filter_new();
    if (f == NULL) {
        node_free(&x);
        return oom(p);
    }
    qv__fnode res = {.filt = f, .depth = 1, .start = x.start, .start_end = x.start_end};
    rc = chain_add(p, f, &res.depth, op == KW_AND, &x);
    while (rc == 0 && is_kw(p, op)) {
        rc = next_token(p);
        if (rc == 0)
            rc = sub(p, &x);
        if (rc == 0)
            rc = chain_add(p, f, &res.depth, op == KW_AND, &x);
    }
    if (rc != 0) {
        quiver__v1__filter__free_unpacked(f, NULL);
        return rc;
    }
    *out = res;
    return 0;
}

static int parse_and(qv__fp *p, qv__fnode *out)
{
    return parse_chain(p, KW_AND, parse_unary, out);
}

static int parse_or(qv__fp *p, qv__fnode *out)
{
    return parse_chain(p, KW_OR, parse_and, out);
}

/* ---- public ---------------------------------------------------------------------------------- */

int qv_filter_text_parse(const char *text, size_t len, Quiver__V1__Filter **out, qv_status *err)
{
    assert(out != NULL && "qv_filter_text_parse: out must not be NULL");
    *out = NULL;
    qv__fp p = {.s = text, .len = len};
    Quiver__V1__Filter *f = NULL;
    char *buf = NULL;
    int rc;
    if (text == NULL && len > 0) {
        p.st = qv_status_make(QV_EINVAL, "filter_text: text is NULL");
        rc = QV_EINVAL;
        goto fail;
    }
    if (len > QV_FILTER_TEXT_MAX_BYTES) {
        rc = fail(&p, QV_FILTER_TEXT_MAX_BYTES, QV_FILTER_TEXT_MAX_BYTES, len,
                  "filter text is %zu bytes, at most %d", len, QV_FILTER_TEXT_MAX_BYTES);
        goto fail;
    }
    buf = malloc(len + 1);
    if (buf == NULL) {
        rc = oom(&p);
        goto fail;
    }
    if (len > 0)
        memcpy(buf, text, len);
    buf[len] = '\0';
    p.s = buf;

    rc = next_token(&p);
    if (rc != 0)
        goto fail_buf;
    if (p.tok.kind == TK_EOF) {
        f = filter_new();
        if (f == NULL) {
            rc = oom(&p);
            goto fail_buf;
        }
    } else {
        qv__fnode x;
        rc = parse_or(&p, &x);
        if (rc != 0)
            goto fail_buf;
        if (p.tok.kind != TK_EOF) {
            rc = fail_tok(&p, &p.tok, "expected 'and', 'or' or the end of the filter");
            node_free(&x);
            goto fail_buf;
        }
        if (x.filt != NULL) {
            f = x.filt;
        } else {
            f = filter_new();
            if (f == NULL) {
                node_free(&x);
                rc = oom(&p);
                goto fail_buf;
            }
            rc = push_cond(&p, &f->must, &f->n_must, x.cond);
            if (rc != 0)
                goto fail_filter;
        }
    }
    free(buf);
    *out = f;
    return 0;

fail_filter:
    quiver__v1__filter__free_unpacked(f, NULL);
fail_buf:
    free(buf);
fail:
    if (err != NULL)
        *err = p.st;
    return rc;
}

void qv_filter_text_free(Quiver__V1__Filter *f)
{
    quiver__v1__filter__free_unpacked(f, NULL);
}
