/*
 * quiverctl's output (ctl.h): JSON strings and fields, the aligned table, human-readable numbers.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/ctl.h"

#include <inttypes.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* Length of the valid UTF-8 sequence at p, or 0 when it is not one (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* Writes s as a JSON string: quotes, backslashes and control characters escaped, invalid UTF-8
 * replaced by U+FFFD so the document always parses. */
void ctl_json_str(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    fputc('"', out);
    while (*p != '\0') {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc((int)c, out);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            switch (c) {
            case '\n':
                fputs("\\n", out);
                break;
            case '\r':
                fputs("\\r", out);
                break;
            case '\t':
                fputs("\\t", out);
                break;
            case '\b':
                fputs("\\b", out);
                break;
            case '\f':
                fputs("\\f", out);
                break;
            default:
                fprintf(out, "\\u%04x", c);
            }
            p++;
        } else if (c < 0x80) {
            fputc((int)c, out);
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", out);
                p++;
            } else {
                fwrite(p, 1, n, out);
                p += n;
            }
        }
    }
    fputc('"', out);
}

/* `"key":"value"` with a leading comma unless first. */
void ctl_json_kv_str(FILE *out, bool *first, const char *key, const char *value)
{
    fprintf(out, "%s\"%s\":", *first ? "" : ",", key);
    ctl_json_str(out, value);
    *first = false;
}

void ctl_json_kv_u64(FILE *out, bool *first, const char *key, uint64_t value)
{
    fprintf(out, "%s\"%s\":%" PRIu64, *first ? "" : ",", key, value);
    *first = false;
}

void ctl_json_kv_bool(FILE *out, bool *first, const char *key, bool value)
{
    fprintf(out, "%s\"%s\":%s", *first ? "" : ",", key, value ? "true" : "false");
    *first = false;
}

/* JSON has no NaN or infinity: those become null. */
void ctl_json_kv_float(FILE *out, bool *first, const char *key, double value)
{
    if (isfinite(value))
        fprintf(out, "%s\"%s\":%.6g", *first ? "" : ",", key, value);
    else
        fprintf(out, "%s\"%s\":null", *first ? "" : ",", key);
    *first = false;
}

/* Adds the next cell (row-major). Non-printable bytes become '?' so a hostile string cannot
 * move the terminal's cursor; an empty cell shows as "-". */
void ctl_table_add(ctl_table *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (buf[0] == '\0')
        snprintf(buf, sizeof(buf), "-");
    for (char *p = buf; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = '?';
    if (t->ncells == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **n = realloc(t->cells, cap * sizeof(*n));
        if (n == NULL) {
            t->oom = true;
            return;
        }
        t->cells = n;
        t->cap = cap;
    }
    char *copy = strdup(buf);
    if (copy == NULL) {
        t->oom = true;
        return;
    }
    t->cells[t->ncells++] = copy;
}

/* Prints the table; returns false when a cell could not be stored (nothing printed). */
bool ctl_table_print(const ctl_table *t, FILE *out)
{
    size_t width[32] = {0};
    size_t ncols = t->ncols;
    if (t->oom || ncols == 0 || ncols > sizeof(width) / sizeof(width[0]) || t->ncells % ncols != 0)
        return false;
    for (size_t i = 0; i < t->ncells; i++) {
        size_t len = strlen(t->cells[i]);
        if (len > width[i % ncols])
            width[i % ncols] = len;
    }
    for (size_t i = 0; i < t->ncells; i++) {
        size_t col = i % ncols;
        if (col + 1 == ncols)
            fprintf(out, "%s\n", t->cells[i]);
        else
            fprintf(out, "%-*s  ", (int)width[col], t->cells[i]);
    }
    return true;
}

void ctl_table_free(ctl_table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* "850ms", "12.3s", "4m05s", "2h03m", "3d04h". */
const char *ctl_fmt_duration(uint64_t ms, char *buf, size_t cap)
{
    uint64_t s = ms / 1000;
    if (ms < 1000)
        snprintf(buf, cap, "%" PRIu64 "ms", ms);
    else if (s < 60)
        snprintf(buf, cap, "%.1fs", (double)ms / 1000.0);
    else if (s < 3600)
        snprintf(buf, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, cap, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s % 86400 / 3600);
    return buf;
}

/* "512B", "1.5KiB", "35.2MiB", "1.2GiB", "3.0TiB". */
const char *ctl_fmt_bytes(uint64_t b, char *buf, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (b < 1024) {
        snprintf(buf, cap, "%" PRIu64 "B", b);
        return buf;
    }
    double v = (double)b / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, cap, "%.1f%s", v, units[u]);
    return buf;
}

/* "850us", "1.2ms", "1.50s". */
const char *ctl_fmt_micros(uint32_t us, char *buf, size_t cap)
{
    if (us < 1000)
        snprintf(buf, cap, "%" PRIu32 "us", us);
    else if (us < 1000000)
        snprintf(buf, cap, "%.1fms", (double)us / 1000.0);
    else
        snprintf(buf, cap, "%.2fs", (double)us / 1e6);
    return buf;
}

/* UTC ISO 8601, "-" for 0. */
const char *ctl_fmt_unix_ms(uint64_t ms, char *buf, size_t cap)
{
    if (ms == 0) {
        snprintf(buf, cap, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "%" PRIu64, ms);
    return buf;
}

void ctl_print_failure(const qv_status *err)
{
    fprintf(stderr, "quiverctl: %s (%s)\n", err->msg[0] != '\0' ? err->msg : "failed",
            qv_strerror(err->code));
}

void ctl_json_point_id(FILE *out, const qv_point_id *id)
{
    if (id->is_uuid)
        ctl_json_str(out, id->uuid);
    else
        fprintf(out, "%" PRIu64, id->num);
}

int ctl_table_finish(ctl_table *t)
{
    bool ok = ctl_table_print(t, stdout);
    ctl_table_free(t);
    if (!ok) {
        fprintf(stderr, "quiverctl: out of memory\n");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}
