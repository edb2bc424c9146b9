/*
 * Text formats of the point reader (import.h): JSON lines and CSV.
 *
 * Map: JSON lines (a small validating scanner that finds the spans of the members "id", "vector"
 * and "payload" of each line's object; the payload text is passed on as is, for the SDK to parse)
 * / CSV (an RFC 4180 record reader over stdio, the header's column roles, typed payload fields).
 *
 * Both read one line (or record) at a time; the first one is read at open to learn the
 * dimension and kept for the first batch. Lines count from 1; a quoted CSV field may span lines,
 * and errors name the line its record starts on.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/import.h"
#include "cli/import_internal.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define fail qv__import_fail

#define JSON_MAX_DEPTH 64

/* A growable float array (a vector being parsed, before the dimension is known). */
typedef struct fvec {
    float *v;
    size_t n, cap;
} fvec;

static int fvec_push(fvec *f, float x)
{
    if (f->n == f->cap) {
        size_t cap = f->cap ? f->cap * 2 : 64;
        float *p = realloc(f->v, cap * sizeof(*p));
        if (p == NULL)
            return QV_ERESOURCE;
        f->v = p;
        f->cap = cap;
    }
    f->v[f->n++] = x;
    return 0;
}

static int read_error(const char *path, qv_status *err)
{
    return fail(err, QV_EUNAVAIL, "%s: read error: %s", path, strerror(errno));
}

/* ---------------------------------------------------------------------------------------------
 * JSON lines
 * ------------------------------------------------------------------------------------------- */

typedef struct jsonl_impl {
    FILE *f;
    char *line; /* getline's buffer */
    size_t line_cap;
    size_t line_len;
    uint64_t lineno;   /* of the line in `line` */
    uint64_t consumed; /* bytes read so far */
    bool pending;      /* `line` holds a line not handed out yet (the one read at open) */
    bool eof;
    fvec vec;
    /* Spans of the current line's members (NULL when absent). */
    const char *id, *payload;
    size_t id_len, payload_len;
    bool id_is_string;
} jsonl_impl;

/* Scanner state for one line; `why` is the first problem found. */
typedef struct jscan {
    const char *start, *p, *end;
    const char *why;
} jscan;

static void jws(jscan *s)
{
    while (s->p < s->end && (*s->p == ' ' || *s->p == '\t' || *s->p == '\r' || *s->p == '\n'))
        s->p++;
}

static bool jerr(jscan *s, const char *why)
{
    if (s->why == NULL)
        s->why = why;
    return false;
}

/* A string: on success *body and *len are its raw contents (escapes left in) and *escaped tells
 * whether it had any. */
static bool jstring(jscan *s, const char **body, size_t *len, bool *escaped)
{
    if (s->p >= s->end || *s->p != '"')
        return jerr(s, "expected a string");
    const char *b = ++s->p;
    bool esc = false;
    while (s->p < s->end && *s->p != '"') {
        unsigned char c = (unsigned char)*s->p;
        if (c < 0x20)
            return jerr(s, "control character in a string");
        if (c == '\\') {
            esc = true;
            s->p++;
            if (s->p >= s->end)
                break;
            if (*s->p == 'u') {
                for (int i = 1; i <= 4; i++)
                    if (s->p + i >= s->end || !isxdigit((unsigned char)s->p[i]))
                        return jerr(s, "bad \\u escape in a string");
                s->p += 4;
            } else if (strchr("\"\\/bfnrt", *s->p) == NULL) {
                return jerr(s, "bad escape in a string");
            }
        }
        s->p++;
    }
    if (s->p >= s->end)
        return jerr(s, "unterminated string");
    if (body != NULL) {
        *body = b;
        *len = (size_t)(s->p - b);
    }
    if (escaped != NULL)
        *escaped = esc;
    s->p++;
    return true;
}

/* A number per JSON's grammar; *body and *len its text. */
static bool jnumber(jscan *s, const char **body, size_t *len)
{
    const char *b = s->p;
    if (s->p < s->end && *s->p == '-')
        s->p++;
    if (s->p >= s->end || !isdigit((unsigned char)*s->p))
        return jerr(s, "expected a value");
    if (*s->p == '0')
        s->p++;
    else
        while (s->p < s->end && isdigit((unsigned char)*s->p))
            s->p++;
    if (s->p < s->end && *s->p == '.') {
        s->p++;
        if (s->p >= s->end || !isdigit((unsigned char)*s->p))
            return jerr(s, "malformed number");
        while (s->p < s->end && isdigit((unsigned char)*s->p))
            s->p++;
    }
    if (s->p < s->end && (*s->p == 'e' || *s->p == 'E')) {
        s->p++;
        if (s->p < s->end && (*s->p == '+' || *s->p == '-'))
            s->p++;
        if (s->p >= s->end || !isdigit((unsigned char)*s->p))
            return jerr(s, "malformed number");
        while (s->p < s->end && isdigit((unsigned char)*s->p))
            s->p++;
    }
    *body = b;
    *len = (size_t)(s->p - b);
    return true;
}

static bool jliteral(jscan *s, const char *word)
{
    size_t n = strlen(word);
    if ((size_t)(s->end - s->p) < n || memcmp(s->p, word, n) != 0)
        return jerr(s, "expected a value");
    s->p += n;
    return true;
}

/* Skips any value, checking its syntax. */
static bool jvalue(jscan *s, int depth)
{
    if (depth > JSON_MAX_DEPTH)
        return jerr(s, "nested too deeply");
    jws(s);
    if (s->p >= s->end)
        return jerr(s, "expected a value");
    const char *b;
    size_t n;
    switch (*s->p) {
    case '"':
        return jstring(s, NULL, NULL, NULL);
    case 't':
        return jliteral(s, "true");
    case 'f':
        return jliteral(s, "false");
    case 'n':
        return jliteral(s, "null");
    case '[':
        s->p++;
        jws(s);
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return true;
        }
        for (;;) {
            if (!jvalue(s, depth + 1))
                return false;
            jws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == ']') {
                s->p++;
                return true;
            }
            return jerr(s, "expected ',' or ']'");
        }
    case '{':
        s->p++;
        jws(s);
        if (s->p < s->end && *s->p == '}') {
            s->p++;
            return true;
        }
        for (;;) {
            jws(s);
            if (!jstring(s, NULL, NULL, NULL))
                return jerr(s, "expected a member name");
            jws(s);
            if (s->p >= s->end || *s->p != ':')
                return jerr(s, "expected ':'");
            s->p++;
            if (!jvalue(s, depth + 1))
                return false;
            jws(s);
            if (s->p < s->end && *s->p == ',') {
                s->p++;
                continue;
            }
            if (s->p < s->end && *s->p == '}') {
                s->p++;
                return true;
            }
            return jerr(s, "expected ',' or '}'");
        }
    default:
        return jnumber(s, &b, &n);
    }
}

static int jsonl_fail(qv_import_reader *r, const jscan *s, qv_status *err)
{
    jsonl_impl *j = r->impl;
    return fail(err, QV_ECORRUPT, "%s: line %llu, column %zu: %s", r->path,
                (unsigned long long)j->lineno, (size_t)(s->p - s->start) + 1, s->why);
}

/* Parses the vector array at s->p into j->vec. */
static bool jvector(jscan *s, fvec *vec)
{
    vec->n = 0;
    if (s->p >= s->end || *s->p != '[')
        return jerr(s, "\"vector\" must be an array of numbers");
    s->p++;
    jws(s);
    if (s->p < s->end && *s->p == ']')
        return jerr(s, "\"vector\" is empty");
    for (;;) {
        jws(s);
        const char *b;
        size_t n;
        if (s->p < s->end && (*s->p == '"' || *s->p == 'n' || *s->p == 't' || *s->p == 'f' ||
                              *s->p == '[' || *s->p == '{'))
            return jerr(s, "\"vector\" must hold numbers only");
        if (!jnumber(s, &b, &n))
            return false;
        float x;
        if (!qv__parse_f32(b, n, &x)) {
            s->p = b;
            return jerr(s, "a vector element is out of float32 range");
        }
        if (fvec_push(vec, x) != 0)
            return jerr(s, "out of memory");
        if (vec->n > QV_IMPORT_MAX_DIM)
            return jerr(s, "\"vector\" has more than 65536 elements");
        jws(s);
        if (s->p < s->end && *s->p == ',') {
            s->p++;
            continue;
        }
        if (s->p < s->end && *s->p == ']') {
            s->p++;
            return true;
        }
        return jerr(s, "expected ',' or ']' in \"vector\"");
    }
}

/* Parses j->line: fills j->vec and the id and payload spans. */
static int jsonl_parse(qv_import_reader *r, qv_status *err)
{
    jsonl_impl *j = r->impl;
    jscan s = {.start = j->line, .p = j->line, .end = j->line + j->line_len};
    bool have_vector = false;
    j->id = j->payload = NULL;
    j->id_len = j->payload_len = 0;
    jws(&s);
    if (s.p >= s.end || *s.p != '{') {
        jerr(&s, "expected a JSON object {\"id\": ..., \"vector\": [...], \"payload\": {...}}");
        return jsonl_fail(r, &s, err);
    }
    s.p++;
    jws(&s);
    if (s.p < s.end && *s.p == '}')
        s.p++;
    else
        for (;;) {
            jws(&s);
            const char *key;
            size_t klen;
            const char *kpos = s.p;
            if (!jstring(&s, &key, &klen, NULL)) {
                jerr(&s, "expected a member name");
                return jsonl_fail(r, &s, err);
            }
            jws(&s);
            if (s.p >= s.end || *s.p != ':') {
                jerr(&s, "expected ':'");
                return jsonl_fail(r, &s, err);
            }
            s.p++;
            jws(&s);
            const char *vpos = s.p;
            if (klen == 2 && memcmp(key, "id", 2) == 0) {
                if (j->id != NULL) {
                    s.p = kpos;
                    jerr(&s, "\"id\" given twice");
                    return jsonl_fail(r, &s, err);
                }
                if (s.p < s.end && *s.p == '"') {
                    bool esc;
                    if (!jstring(&s, &j->id, &j->id_len, &esc))
                        return jsonl_fail(r, &s, err);
                    j->id_is_string = true;
                } else if (s.p < s.end && *s.p == 'n') {
                    if (!jliteral(&s, "null"))
                        return jsonl_fail(r, &s, err);
                    j->id = NULL; /* null: an id is assigned */
                } else {
                    if (!jnumber(&s, &j->id, &j->id_len))
                        return jsonl_fail(r, &s, err);
                    j->id_is_string = false;
                }
                qv_point_id tmp;
                if (j->id != NULL && !qv__parse_point_id(j->id, j->id_len, &tmp)) {
                    s.p = vpos;
                    jerr(&s, "\"id\" must be an integer 0..2^64-1 or a UUID string");
                    return jsonl_fail(r, &s, err);
                }
            } else if (klen == 6 && memcmp(key, "vector", 6) == 0) {
                if (have_vector) {
                    s.p = kpos;
                    jerr(&s, "\"vector\" given twice");
                    return jsonl_fail(r, &s, err);
                }
                if (!jvector(&s, &j->vec))
                    return jsonl_fail(r, &s, err);
                have_vector = true;
            } else if (klen == 7 && memcmp(key, "payload", 7) == 0) {
                if (j->payload != NULL) {
                    s.p = kpos;
                    jerr(&s, "\"payload\" given twice");
                    return jsonl_fail(r, &s, err);
                }
                if (s.p < s.end && *s.p == 'n') {
                    if (!jliteral(&s, "null"))
                        return jsonl_fail(r, &s, err);
                } else if (s.p >= s.end || *s.p != '{') {
                    jerr(&s, "\"payload\" must be an object");
                    return jsonl_fail(r, &s, err);
                } else {
                    if (!jvalue(&s, 1))
                        return jsonl_fail(r, &s, err);
                    j->payload = vpos;
                    j->payload_len = (size_t)(s.p - vpos);
                }
            } else {
                s.p = kpos;
                jerr(&s, "unknown member (expected \"id\", \"vector\" and \"payload\")");
                return jsonl_fail(r, &s, err);
            }
            jws(&s);
            if (s.p < s.end && *s.p == ',') {
                s.p++;
                continue;
            }
            if (s.p < s.end && *s.p == '}') {
                s.p++;
                break;
            }
            jerr(&s, "expected ',' or '}'");
            return jsonl_fail(r, &s, err);
        }
    jws(&s);
    if (s.p != s.end) {
        jerr(&s, "trailing characters after the object");
        return jsonl_fail(r, &s, err);
    }
    if (!have_vector) {
        s.p = s.start;
        jerr(&s, "no \"vector\" member");
        return jsonl_fail(r, &s, err);
    }
    return 0;
}

/* Reads the next non-blank line into j->line; j->eof at the end. */
static int jsonl_read_line(qv_import_reader *r, qv_status *err)
{
    jsonl_impl *j = r->impl;
    for (;;) {
        errno = 0;
        ssize_t n = getline(&j->line, &j->line_cap, j->f);
        if (n < 0) {
            if (ferror(j->f))
                return read_error(r->path, err);
            j->eof = true;
            return 0;
        }
        j->consumed += (uint64_t)n;
        j->lineno++;
        size_t len = (size_t)n;
        if (j->lineno == 1 && len >= 3 && memcmp(j->line, "\xEF\xBB\xBF", 3) == 0) {
            memmove(j->line, j->line + 3, len - 2); /* a UTF-8 byte order mark */
            len -= 3;
        }
        while (len > 0 && (j->line[len - 1] == '\n' || j->line[len - 1] == '\r'))
            len--;
        j->line_len = len;
        for (size_t i = 0; i < len; i++)
            if (!isspace((unsigned char)j->line[i]))
                return 0;
    }
}

static int jsonl_next(qv_import_reader *r, size_t max, size_t *n_out, qv_status *err)
{
    jsonl_impl *j = r->impl;
    size_t n = 0;
    *n_out = 0;
    while (n < max) {
        int rc;
        if (!j->pending) {
            rc = jsonl_read_line(r, err);
            if (rc != 0)
                return rc;
            if (j->eof)
                break;
            rc = jsonl_parse(r, err);
            if (rc != 0)
                return rc;
        }
        j->pending = false;
        if (j->vec.n != r->dim)
            return fail(err, QV_ECORRUPT,
                        "%s: line %llu: \"vector\" has %zu numbers, the file's dimension is %zu "
                        "(from its first line)",
                        r->path, (unsigned long long)j->lineno, j->vec.n, r->dim);
        memcpy(r->vectors + n * r->dim, j->vec.v, r->dim * sizeof(float));
        if (j->id != NULL)
            qv__parse_point_id(j->id, j->id_len, &r->ids[n]); /* checked by jsonl_parse */
        else if ((rc = qv__import_seq_id(r, r->row + n, &r->ids[n], err)) != 0)
            return rc;
        if (j->payload != NULL) {
            r->payload_off[n] = r->arena.len;
            if (qv__buf_put(&r->arena, j->payload, j->payload_len) != 0 ||
                qv__buf_put(&r->arena, "", 1) != 0)
                return fail(err, QV_ERESOURCE, "out of memory");
        }
        n++;
    }
    *n_out = n;
    return 0;
}

static uint64_t jsonl_bytes(const qv_import_reader *r)
{
    const jsonl_impl *j = r->impl;
    return j->consumed;
}

static void jsonl_close(qv_import_reader *r)
{
    jsonl_impl *j = r->impl;
    if (j == NULL)
        return;
    if (j->f != NULL)
        fclose(j->f);
    free(j->line);
    free(j->vec.v);
    free(j);
}

static const qv__import_ops jsonl_ops = {
    .next = jsonl_next,
    .bytes_done = jsonl_bytes,
    .close = jsonl_close,
};

int qv__open_jsonl(qv_import_reader *r, const qv_import_opts *o, qv_status *err)
{
    jsonl_impl *j = calloc(1, sizeof(*j));
    if (j == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    r->impl = j;
    r->ops = &jsonl_ops;
    r->has_payloads = true;
    uint64_t size;
    int rc = qv__open_regular(r->path, &j->f, &size, err);
    if (rc != 0)
        return rc;
    rc = jsonl_read_line(r, err);
    if (rc != 0)
        return rc;
    if (j->eof)
        return fail(err, QV_ECORRUPT, "%s: no JSON lines in the file", r->path);
    rc = jsonl_parse(r, err);
    if (rc != 0)
        return rc;
    r->dim = j->vec.n;
    j->pending = true;
    return 0;
}

/* ---------------------------------------------------------------------------------------------
 * CSV
 * ------------------------------------------------------------------------------------------- */

typedef enum col_role {
    COL_PAYLOAD,
    COL_ID,
    COL_VEC,    /* v<k>: element k */
    COL_VECTOR, /* "vector": the whole vector as "[1, 2]" or "1 2" */
} col_role;

typedef struct csv_col {
    col_role role;
    size_t index; /* COL_VEC: k */
    char *name;   /* as in the header */
    char *key;    /* COL_PAYLOAD: the name as a JSON string literal */
} csv_col;

typedef struct csv_impl {
    FILE *f;
    uint64_t line;        /* physical line the reader is on (1-based) */
    uint64_t record_line; /* line the current record starts on */
    uint64_t consumed;
    qv__buf text; /* the fields of the current record, each NUL-terminated */
    size_t *off;  /* field offsets into text */
    size_t nfields, off_cap;
    bool eof;
    bool pending; /* the record read at open (first data row) has not been handed out */
    size_t ncols;
    csv_col *cols;
    fvec vec;
} csv_impl;

static int csv_add_field(csv_impl *c)
{
    if (c->nfields == c->off_cap) {
        size_t cap = c->off_cap ? c->off_cap * 2 : 64;
        size_t *p = realloc(c->off, cap * sizeof(*p));
        if (p == NULL)
            return QV_ERESOURCE;
        c->off = p;
        c->off_cap = cap;
    }
    c->off[c->nfields++] = c->text.len;
    return 0;
}

/* Reads one record (RFC 4180: fields separated by commas, records by CRLF or LF, a field in
 * double quotes may hold commas, line breaks and "" for a quote). Skips empty lines. c->eof and
 * nfields = 0 at the end. */
static int csv_read_record(qv_import_reader *r, qv_status *err)
{
    csv_impl *c = r->impl;
    for (;;) {
        c->text.len = 0;
        c->nfields = 0;
        c->record_line = c->line;
        if (csv_add_field(c) != 0)
            return fail(err, QV_ERESOURCE, "out of memory");
        bool quoted = false, closed = false, any = false;
        uint64_t quote_line = 0;
        for (;;) {
            int ch = getc_unlocked(c->f);
            if (ch == EOF) {
                if (ferror(c->f))
                    return read_error(r->path, err);
                if (quoted)
                    return fail(err, QV_ECORRUPT,
                                "%s: line %llu: unterminated quoted field (the quote opened on "
                                "line %llu)",
                                r->path, (unsigned long long)c->line,
                                (unsigned long long)quote_line);
                if (!any) {
                    c->eof = true;
                    c->nfields = 0;
                    return 0;
                }
                break;
            }
            c->consumed++;
            any = true;
            if (quoted) {
                if (ch == '"') {
                    int next = getc_unlocked(c->f);
                    if (next == '"') {
                        c->consumed++;
                        if (qv__buf_put(&c->text, "\"", 1) != 0)
                            return fail(err, QV_ERESOURCE, "out of memory");
                        continue;
                    }
                    if (next != EOF)
                        ungetc(next, c->f);
                    quoted = false;
                    closed = true;
                    continue;
                }
                if (ch == '\n')
                    c->line++;
                char b = (char)ch;
                if (qv__buf_put(&c->text, &b, 1) != 0)
                    return fail(err, QV_ERESOURCE, "out of memory");
                continue;
            }
            if (ch == ',') {
                if (qv__buf_put(&c->text, "", 1) != 0 || csv_add_field(c) != 0)
                    return fail(err, QV_ERESOURCE, "out of memory");
                closed = false;
                continue;
            }
            if (ch == '\r' || ch == '\n') {
                if (ch == '\r') {
                    int next = getc_unlocked(c->f);
                    if (next == '\n')
                        c->consumed++;
                    else if (next != EOF)
                        ungetc(next, c->f);
                }
                c->line++;
                break;
            }
            if (closed)
                return fail(err, QV_ECORRUPT,
                            "%s: line %llu: field %zu: unexpected '%c' after a closing quote",
                            r->path, (unsigned long long)c->line, c->nfields, ch);
            if (ch == '"' && c->text.len == c->off[c->nfields - 1]) {
                quoted = true;
                quote_line = c->line;
                continue;
            }
            char b = (char)ch; /* a quote inside an unquoted field is taken literally */
            if (qv__buf_put(&c->text, &b, 1) != 0)
                return fail(err, QV_ERESOURCE, "out of memory");
        }
        if (qv__buf_put(&c->text, "", 1) != 0)
            return fail(err, QV_ERESOURCE, "out of memory");
        if (c->nfields == 1 && c->text.p[0] == '\0' && !closed)
            continue; /* an empty line */
        return 0;
    }
}

static const char *csv_field(const csv_impl *c, size_t i)
{
    return c->text.p + c->off[i];
}

/* Trims ASCII spaces and tabs: returns the start, *len the trimmed length. */
static const char *trim(const char *s, size_t *len)
{
    size_t n = strlen(s);
    while (n > 0 && (*s == ' ' || *s == '\t'))
        s++, n--;
    while (n > 0 && (s[n - 1] == ' ' || s[n - 1] == '\t'))
        n--;
    *len = n;
    return s;
}

/* "[1.0, 2.0]", "1.0 2.0", "1,2": numbers separated by commas and/or white space. */
static bool parse_vector_text(const char *s, fvec *vec, const char **why)
{
    size_t len;
    s = trim(s, &len);
    const char *end = s + len;
    vec->n = 0;
    if (len >= 1 && s[0] == '[') {
        if (end[-1] != ']') {
            *why = "'[' without a closing ']'";
            return false;
        }
        s++;
        end--;
    }
    const char *p = s;
    for (;;) {
        while (p < end && (*p == ' ' || *p == '\t' || *p == '\n' || *p == '\r'))
            p++;
        if (p >= end)
            break;
        const char *b = p;
        while (p < end && *p != ',' && *p != ' ' && *p != '\t' && *p != '\n' && *p != '\r')
            p++;
        float x;
        if (!qv__parse_f32(b, (size_t)(p - b), &x)) {
            *why = "an element is not a finite number";
            return false;
        }
        if (fvec_push(vec, x) != 0) {
            *why = "out of memory";
            return false;
        }
        if (vec->n > QV_IMPORT_MAX_DIM) {
            *why = "more than 65536 elements";
            return false;
        }
        while (p < end && (*p == ' ' || *p == '\t'))
            p++;
        if (p < end && *p == ',') {
            p++;
            while (p < end && (*p == ' ' || *p == '\t'))
                p++;
            if (p >= end || *p == ',') {
                *why = "an empty element";
                return false;
            }
        }
    }
    if (vec->n == 0) {
        *why = "no numbers";
        return false;
    }
    return true;
}

int qv_import_parse_vector(const char *text, float **out, size_t *dim, qv_status *err)
{
    fvec vec = {0};
    const char *why = NULL;
    *out = NULL;
    *dim = 0;
    if (!parse_vector_text(text, &vec, &why)) {
        free(vec.v);
        return fail(err, QV_EINVAL, "bad vector: %s", why);
    }
    *out = vec.v;
    *dim = vec.n;
    return 0;
}

/* Appends a payload value typed from its text: an integer (fits int64), a double, true/false
 * (any case), else a string. Spaces around a number or a boolean are ignored; a string keeps
 * them. */
static int put_typed(qv__buf *b, const char *field)
{
    size_t len;
    const char *s = trim(field, &len); /* strtoll and strtod stop at the trailing spaces */
    size_t i = 0, digits = 0;
    bool frac = false, exp = false;
    if (i < len && (s[i] == '+' || s[i] == '-'))
        i++;
    while (i < len && isdigit((unsigned char)s[i]))
        i++, digits++;
    if (i < len && s[i] == '.') {
        frac = true;
        i++;
        while (i < len && isdigit((unsigned char)s[i]))
            i++, digits++;
    }
    if (digits > 0 && i < len && (s[i] == 'e' || s[i] == 'E')) {
        size_t j = i + 1, ed = 0;
        if (j < len && (s[j] == '+' || s[j] == '-'))
            j++;
        while (j < len && isdigit((unsigned char)s[j]))
            j++, ed++;
        if (ed > 0) {
            exp = true;
            i = j;
        }
    }
    if (digits > 0 && i == len) {
        if (!frac && !exp) {
            errno = 0;
            long long v = strtoll(s, NULL, 10);
            if (errno == 0)
                return qv__buf_printf(b, "%lld", v);
        }
        double d = strtod(s, NULL);
        if (isfinite(d)) {
            char tmp[40];
            for (int prec = 15; prec <= 17; prec++) { /* the shortest text that reads back */
                snprintf(tmp, sizeof(tmp), "%.*g", prec, d);
                if (strtod(tmp, NULL) == d)
                    break;
            }
            /* keep it a double for the SDK: "3" would read back as an integer */
            if (strpbrk(tmp, ".eE") == NULL)
                strcat(tmp, ".0");
            return qv__buf_put(b, tmp, strlen(tmp));
        }
    }
    if (len == 4 && strncasecmp(s, "true", 4) == 0)
        return qv__buf_put(b, "true", 4);
    if (len == 5 && strncasecmp(s, "false", 5) == 0)
        return qv__buf_put(b, "false", 5);
    return qv__buf_json_str(b, field, strlen(field));
}

static int csv_header(qv_import_reader *r, qv_status *err)
{
    csv_impl *c = r->impl;
    int rc = csv_read_record(r, err);
    if (rc != 0)
        return rc;
    if (c->eof)
        return fail(err, QV_ECORRUPT, "%s: empty file (a header row is required)", r->path);
    c->ncols = c->nfields;
    c->cols = calloc(c->ncols, sizeof(*c->cols));
    if (c->cols == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    size_t nvec = 0, max_vec = 0;
    bool have_id = false, have_vector = false;
    for (size_t i = 0; i < c->ncols; i++) {
        size_t len;
        const char *name = csv_field(c, i);
        if (i == 0 && strncmp(name, "\xEF\xBB\xBF", 3) == 0)
            name += 3; /* a UTF-8 byte order mark */
        name = trim(name, &len);
        csv_col *col = &c->cols[i];
        col->name = strndup(name, len);
        if (col->name == NULL)
            return fail(err, QV_ERESOURCE, "out of memory");
        if (len == 0)
            return fail(err, QV_ECORRUPT, "%s: line %llu: column %zu has no name", r->path,
                        (unsigned long long)c->record_line, i + 1);
        for (size_t k = 0; k < i; k++)
            if (strcmp(c->cols[k].name, col->name) == 0)
                return fail(err, QV_ECORRUPT, "%s: line %llu: column '%s' appears twice", r->path,
                            (unsigned long long)c->record_line, col->name);
        bool vk = len >= 2 && name[0] == 'v' && strspn(name + 1, "0123456789") == len - 1 &&
                  (len == 2 || name[1] != '0');
        if (strcasecmp(col->name, "id") == 0) {
            col->role = COL_ID;
            have_id = true;
        } else if (strcasecmp(col->name, "vector") == 0) {
            col->role = COL_VECTOR;
            have_vector = true;
        } else if (vk && len <= 6) {
            col->role = COL_VEC;
            col->index = (size_t)strtoul(name + 1, NULL, 10);
            nvec++;
            if (col->index + 1 > max_vec)
                max_vec = col->index + 1;
        } else {
            qv__buf key = {0};
            if (qv__buf_json_str(&key, col->name, len) != 0) {
                free(key.p);
                return fail(err, QV_ERESOURCE, "out of memory");
            }
            col->role = COL_PAYLOAD;
            col->key = key.p;
            r->has_payloads = true;
        }
    }
    (void)have_id;
    if (nvec > 0 && have_vector)
        return fail(err, QV_ECORRUPT,
                    "%s: line %llu: both a 'vector' column and v0, v1, ... columns; keep one",
                    r->path, (unsigned long long)c->record_line);
    if (nvec == 0 && !have_vector)
        return fail(err, QV_ECORRUPT,
                    "%s: line %llu: no vector columns (name them v0..v{d-1}, or give one "
                    "column 'vector' holding \"[1.0, 2.0]\" or \"1.0 2.0\")",
                    r->path, (unsigned long long)c->record_line);
    if (nvec > 0) {
        if (max_vec != nvec) {
            for (size_t k = 0; k < max_vec; k++) {
                bool seen = false;
                for (size_t i = 0; i < c->ncols && !seen; i++)
                    seen = c->cols[i].role == COL_VEC && c->cols[i].index == k;
                if (!seen)
                    return fail(err, QV_ECORRUPT,
                                "%s: line %llu: column v%zu is missing (vector columns must be "
                                "v0..v%zu)",
                                r->path, (unsigned long long)c->record_line, k, max_vec - 1);
            }
        }
        r->dim = nvec;
    }
    return 0;
}

/* Turns the current record into point n of the batch. */
static int csv_row(qv_import_reader *r, size_t n, qv_status *err)
{
    csv_impl *c = r->impl;
    unsigned long long line = (unsigned long long)c->record_line;
    if (c->nfields != c->ncols)
        return fail(err, QV_ECORRUPT, "%s: line %llu: %zu fields, the header has %zu", r->path,
                    line, c->nfields, c->ncols);
    bool have_id = false;
    bool keep = n < r->cap; /* false for the row read at open: only its dimension is wanted */
    size_t payload_fields = 0;
    float *v = keep ? r->vectors + n * r->dim : NULL;
    qv_point_id id;
    for (size_t i = 0; i < c->ncols; i++) {
        const csv_col *col = &c->cols[i];
        const char *field = csv_field(c, i);
        size_t len;
        const char *t;
        switch (col->role) {
        case COL_ID:
            t = trim(field, &len);
            if (len == 0)
                break;
            if (!qv__parse_point_id(t, len, &id))
                return fail(err, QV_ECORRUPT,
                            "%s: line %llu: id '%.40s' is neither an integer 0..2^64-1 nor a UUID",
                            r->path, line, t);
            if (keep)
                r->ids[n] = id;
            have_id = true;
            break;
        case COL_VEC:
            t = trim(field, &len);
            float x;
            if (!qv__parse_f32(t, len, &x))
                return fail(err, QV_ECORRUPT,
                            "%s: line %llu, column '%s': '%.40s' is not a finite "
                            "float32",
                            r->path, line, col->name, t);
            if (keep)
                v[col->index] = x;
            break;
        case COL_VECTOR: {
            const char *why = NULL;
            if (!parse_vector_text(field, &c->vec, &why))
                return fail(err, QV_ECORRUPT, "%s: line %llu, column 'vector': %s", r->path, line,
                            why);
            if (r->dim == 0)
                r->dim = c->vec.n; /* the first row, read at open, sets the dimension */
            else if (c->vec.n != r->dim)
                return fail(err, QV_ECORRUPT,
                            "%s: line %llu, column 'vector': %zu numbers, the file's dimension is "
                            "%zu (from its first row)",
                            r->path, line, c->vec.n, r->dim);
            if (keep)
                memcpy(v, c->vec.v, r->dim * sizeof(float));
            break;
        }
        case COL_PAYLOAD:
            if (field[0] == '\0')
                break; /* an empty field: no such payload field for this point */
            if (!keep)
                break;
            if (payload_fields == 0)
                r->payload_off[n] = r->arena.len;
            if (qv__buf_put(&r->arena, payload_fields == 0 ? "{" : ",", 1) != 0 ||
                qv__buf_put(&r->arena, col->key, strlen(col->key)) != 0 ||
                qv__buf_put(&r->arena, ":", 1) != 0 || put_typed(&r->arena, field) != 0)
                return fail(err, QV_ERESOURCE, "out of memory");
            payload_fields++;
            break;
        }
    }
    if (payload_fields > 0 &&
        (qv__buf_put(&r->arena, "}", 1) != 0 || qv__buf_put(&r->arena, "", 1) != 0))
        return fail(err, QV_ERESOURCE, "out of memory");
    if (!have_id && keep)
        return qv__import_seq_id(r, r->row + n, &r->ids[n], err);
    return 0;
}

static int csv_next(qv_import_reader *r, size_t max, size_t *n_out, qv_status *err)
{
    csv_impl *c = r->impl;
    size_t n = 0;
    *n_out = 0;
    while (n < max) {
        if (!c->pending) {
            int rc = csv_read_record(r, err);
            if (rc != 0)
                return rc;
            if (c->eof)
                break;
        }
        c->pending = false;
        int rc = csv_row(r, n, err);
        if (rc != 0)
            return rc;
        n++;
    }
    *n_out = n;
    return 0;
}

static uint64_t csv_bytes(const qv_import_reader *r)
{
    const csv_impl *c = r->impl;
    return c->consumed;
}

static void csv_close(qv_import_reader *r)
{
    csv_impl *c = r->impl;
    if (c == NULL)
        return;
    if (c->f != NULL)
        fclose(c->f);
    for (size_t i = 0; c->cols != NULL && i < c->ncols; i++) {
        free(c->cols[i].name);
        free(c->cols[i].key);
    }
    free(c->cols);
    free(c->text.p);
    free(c->off);
    free(c->vec.v);
    free(c);
}

static const qv__import_ops csv_ops = {
    .next = csv_next,
    .bytes_done = csv_bytes,
    .close = csv_close,
};

int qv__open_csv(qv_import_reader *r, const qv_import_opts *o, qv_status *err)
{
    csv_impl *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    r->impl = c;
    r->ops = &csv_ops;
    c->line = 1;
    uint64_t size;
    int rc = qv__open_regular(r->path, &c->f, &size, err);
    if (rc != 0)
        return rc;
    rc = csv_header(r, err);
    if (rc != 0)
        return rc;
    if (r->dim > 0)
        return 0;
    /* A 'vector' column: the first data row tells the dimension. With r->cap == 0, csv_row only
     * checks the row; it is parsed again, into the batch, by the first csv_next. */
    rc = csv_read_record(r, err);
    if (rc != 0)
        return rc;
    if (c->eof)
        return fail(err, QV_ECORRUPT,
                    "%s: no data rows, so the dimension of the 'vector' column is unknown",
                    r->path);
    rc = csv_row(r, 0, err);
    if (rc != 0)
        return rc;
    c->pending = true;
    return 0;
}
