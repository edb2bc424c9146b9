/*
 * Logging: one record is one line and one write(2).
 *
 * A record is built in a stack buffer: the header (timestamp, level, module), the message escaped
 * for the format, the trailer. The message is first formatted into its own buffer of
 * QV__LOG_MSG_MAX bytes; escaping can make it longer, so the escaped text is bounded again while
 * it is copied. Either cut ends the message with the "..." marker, on a UTF-8 character boundary
 * and never inside an escape, so a truncated JSON record is still valid JSON.
 *
 * Text records escape control characters too ("\n", "\x1b"): a message can never forge a second
 * record or move the cursor of the terminal reading it.
 *
 * Settings live in atomics so any thread may change them while others log. The write itself is
 * under a mutex: a single write(2) is atomic for regular files and for pipes up to PIPE_BUF, but a
 * record may be longer than PIPE_BUF, and a terminal or socket may take it in pieces; the lock
 * keeps the pieces of one record together within this process.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#define QV__LOG_MSG_MAX 4096 /* a message, after escaping, before the "..." marker */
#define QV__LOG_MOD_MAX 64   /* a module name, after escaping */
#define QV__LOG_TRUNC   "..."
/* Room for the message, the marker, the module and the fixed parts around them. */
#define QV__LOG_REC_MAX (QV__LOG_MSG_MAX + QV__LOG_MOD_MAX + 128)

static atomic_int g_level = QV_LOG_INFO;
static atomic_int g_format = QV_LOG_TEXT;
static atomic_int g_fd = STDERR_FILENO;
static pthread_mutex_t g_write_lock = PTHREAD_MUTEX_INITIALIZER;

static const char *const level_names[] = {"debug", "info", "warn", "error", "off"};
static const char *const level_tags[] = {"DEBUG", "INFO ", "WARN ", "ERROR"};
static const char *const format_names[] = {"text", "json"};

void qv_log_set_level(qv_log_level level)
{
    int lv = (int)level;
    if (lv < QV_LOG_DEBUG)
        lv = QV_LOG_DEBUG;
    if (lv > QV_LOG_OFF)
        lv = QV_LOG_OFF;
    atomic_store_explicit(&g_level, lv, memory_order_relaxed);
}

qv_log_level qv_log_get_level(void)
{
    return (qv_log_level)atomic_load_explicit(&g_level, memory_order_relaxed);
}

void qv_log_set_format(qv_log_format format)
{
    int f = (int)format == QV_LOG_JSON ? QV_LOG_JSON : QV_LOG_TEXT;
    atomic_store_explicit(&g_format, f, memory_order_relaxed);
}

/* A negative fd goes back to stderr. The descriptor stays the caller's: it is never closed here. */
void qv_log_set_fd(int fd)
{
    atomic_store_explicit(&g_fd, fd < 0 ? STDERR_FILENO : fd, memory_order_relaxed);
}

int qv_log_parse_level(const char *s, qv_log_level *out)
{
    if (s == NULL || out == NULL)
        return QV_EINVAL;
    for (int i = QV_LOG_DEBUG; i <= QV_LOG_OFF; i++) {
        if (strcasecmp(s, level_names[i]) == 0) {
            *out = (qv_log_level)i;
            return QV_OK;
        }
    }
    return QV_EINVAL;
}

int qv_log_parse_format(const char *s, qv_log_format *out)
{
    if (s == NULL || out == NULL)
        return QV_EINVAL;
    for (int i = QV_LOG_TEXT; i <= QV_LOG_JSON; i++) {
        if (strcasecmp(s, format_names[i]) == 0) {
            *out = (qv_log_format)i;
            return QV_OK;
        }
    }
    return QV_EINVAL;
}

/* Length of s[0..len) without a multi-byte UTF-8 sequence cut short at its end. Bytes that are not
 * UTF-8 at all are left alone: the log passes them through, it does not repair them. */
static size_t utf8_whole_prefix(const char *s, size_t len)
{
    size_t i = len;
    size_t cont = 0;
    while (i > 0 && cont < 3 && ((unsigned char)s[i - 1] & 0xC0) == 0x80) {
        i--;
        cont++;
    }
    if (i == 0)
        return len;
    unsigned char lead = (unsigned char)s[i - 1];
    size_t need;
    if ((lead & 0xE0) == 0xC0)
        need = 2;
    else if ((lead & 0xF0) == 0xE0)
        need = 3;
    else if ((lead & 0xF8) == 0xF0)
        need = 4;
    else
        return len;
    return cont + 1 < need ? i - 1 : len;
}

/* The escape for one byte, written to esc; returns its length (1 when the byte stays as is). */
static size_t escape_byte(unsigned char c, bool json, char esc[8])
{
    static const char hex[] = "0123456789abcdef";
    const char *short_form = NULL;
    switch (c) {
    case '\n':
        short_form = "\\n";
        break;
    case '\r':
        short_form = "\\r";
        break;
    case '\t':
        short_form = json ? "\\t" : NULL;
        break;
    case '\b':
        short_form = "\\b";
        break;
    case '\f':
        short_form = "\\f";
        break;
    case '"':
        short_form = json ? "\\\"" : NULL;
        break;
    case '\\':
        short_form = json ? "\\\\" : NULL;
        break;
    default:
        break;
    }
    if (short_form != NULL) {
        memcpy(esc, short_form, 2);
        return 2;
    }
    bool control = c < 0x20 && c != '\t';
    if (!json)
        control = control || c == 0x7f;
    if (!control) {
        esc[0] = (char)c;
        return 1;
    }
    if (json) {
        memcpy(esc, "\\u00", 4);
        esc[4] = hex[c >> 4];
        esc[5] = hex[c & 0xF];
        return 6;
    }
    esc[0] = '\\';
    esc[1] = 'x';
    esc[2] = hex[c >> 4];
    esc[3] = hex[c & 0xF];
    return 4;
}

/* Copies src[0..len) escaped into dst, at most cap bytes, whole escapes only. Returns the bytes
 * written; *all tells whether every source byte made it. */
static size_t escape_into(char *dst, size_t cap, const char *src, size_t len, bool json, bool *all)
{
    size_t w = 0;
    size_t i;
    for (i = 0; i < len; i++) {
        char esc[8];
        size_t n = escape_byte((unsigned char)src[i], json, esc);
        if (w + n > cap)
            break;
        memcpy(dst + w, esc, n);
        w += n;
    }
    *all = i == len;
    return w;
}

/* Appends s (whole, or cut to cap with the marker) escaped at rec[*len]. `cut` says the source was
 * already truncated before it came here. */
static void put_escaped(char *rec, size_t *len, size_t cap, const char *s, size_t n, bool json,
                        bool cut)
{
    bool all;
    size_t w = escape_into(rec + *len, cap, s, n, json, &all);
    if (cut || !all) {
        w = utf8_whole_prefix(rec + *len, w);
        memcpy(rec + *len + w, QV__LOG_TRUNC, sizeof(QV__LOG_TRUNC) - 1);
        w += sizeof(QV__LOG_TRUNC) - 1;
    }
    *len += w;
}

static void put_str(char *rec, size_t *len, const char *s)
{
    size_t n = strlen(s);
    memcpy(rec + *len, s, n);
    *len += n;
}

/* Writes the whole record; a short write continues where it stopped. Failures are dropped: there is
 * nowhere left to report them. */
static void write_record(const char *rec, size_t len)
{
    int fd = atomic_load_explicit(&g_fd, memory_order_relaxed);
    pthread_mutex_lock(&g_write_lock);
    while (len > 0) {
        ssize_t w = write(fd, rec, len);
        if (w < 0) {
            if (errno == EINTR)
                continue;
            break;
        }
        rec += w;
        len -= (size_t)w;
    }
    pthread_mutex_unlock(&g_write_lock);
}

/* "2026-11-22T10:00:00.123Z" into ts (at least 32 bytes). */
static void format_timestamp(char *ts, size_t cap)
{
    uint64_t ms = qv_wall_ms();
    time_t secs = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&secs, &tm) == NULL)
        memset(&tm, 0, sizeof(tm));
    snprintf(ts, cap, "%04d-%02d-%02dT%02d:%02d:%02d.%03uZ", tm.tm_year + 1900, tm.tm_mon + 1,
             tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec, (unsigned)(ms % 1000));
}

void qv_logv(qv_log_level level, const char *mod, const char *fmt, va_list ap)
{
    int lv = (int)level;
    if (lv < QV_LOG_DEBUG || lv >= QV_LOG_OFF ||
        lv < atomic_load_explicit(&g_level, memory_order_relaxed))
        return;
    /* Callers log and then look at errno ("open failed: %m", or a check after the log call). */
    int saved_errno = errno;

    char msg[QV__LOG_MSG_MAX];
    int n = vsnprintf(msg, sizeof(msg), fmt != NULL ? fmt : "", ap);
    size_t msg_len = 0;
    bool msg_cut = false;
    if (n < 0) {
        msg_len = (size_t)snprintf(msg, sizeof(msg), "(unformattable message: %s)", fmt);
        if (msg_len >= sizeof(msg)) {
            msg_len = sizeof(msg) - 1;
            msg_cut = true;
        }
    } else if ((size_t)n >= sizeof(msg)) {
        msg_len = sizeof(msg) - 1;
        msg_cut = true;
    } else {
        msg_len = (size_t)n;
    }
    if (mod == NULL)
        mod = "";
    size_t mod_len = strlen(mod);

    char ts[48];
    format_timestamp(ts, sizeof(ts));
    bool json = atomic_load_explicit(&g_format, memory_order_relaxed) == QV_LOG_JSON;

    char rec[QV__LOG_REC_MAX];
    size_t len = 0;
    if (json) {
        put_str(rec, &len, "{\"ts\":\"");
        put_str(rec, &len, ts);
        put_str(rec, &len, "\",\"level\":\"");
        put_str(rec, &len, level_names[lv]);
        put_str(rec, &len, "\",\"mod\":\"");
        put_escaped(rec, &len, QV__LOG_MOD_MAX, mod, mod_len, true, false);
        put_str(rec, &len, "\",\"msg\":\"");
        put_escaped(rec, &len, QV__LOG_MSG_MAX, msg, msg_len, true, msg_cut);
        put_str(rec, &len, "\"}\n");
    } else {
        put_str(rec, &len, ts);
        put_str(rec, &len, " ");
        put_str(rec, &len, level_tags[lv]);
        put_str(rec, &len, " ");
        if (mod_len > 0) {
            put_escaped(rec, &len, QV__LOG_MOD_MAX, mod, mod_len, false, false);
            put_str(rec, &len, ": ");
        }
        put_escaped(rec, &len, QV__LOG_MSG_MAX, msg, msg_len, false, msg_cut);
        put_str(rec, &len, "\n");
    }
    write_record(rec, len);
    errno = saved_errno;
}

void qv_log(qv_log_level level, const char *mod, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    qv_logv(level, mod, fmt, ap);
    va_end(ap);
}
