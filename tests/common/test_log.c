/*
 * Tests for common/log.c. Each test sends the log to a fresh unlinked temporary file through
 * qv_log_set_fd() and reads back what was written. Criterion runs every test in its own process,
 * so the process-wide log settings start from their defaults each time.
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include "common/common.h"

#include <errno.h>
#include <pthread.h>
#include <regex.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* ---- helpers --------------------------------------------------------------------------------- */

/* An unlinked temporary file; the log is pointed at it. */
static int capture(void)
{
    char path[] = "/tmp/qv_test_log_XXXXXX";
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    unlink(path);
    qv_log_set_fd(fd);
    return fd;
}

/* Everything in fd from offset 0, NUL-terminated; *len_out gets its length. Caller frees. */
static char *read_all(int fd, size_t *len_out)
{
    struct stat sb;
    cr_assert(fstat(fd, &sb) == 0);
    size_t len = (size_t)sb.st_size;
    char *buf = malloc(len + 1);
    cr_assert(buf != NULL);
    size_t got = 0;
    while (got < len) {
        ssize_t n = pread(fd, buf + got, len - got, (off_t)got);
        cr_assert(n > 0, "pread: %s", strerror(errno));
        got += (size_t)n;
    }
    buf[len] = '\0';
    if (len_out != NULL)
        *len_out = len;
    return buf;
}

static size_t count_lines(const char *s)
{
    size_t n = 0;
    for (; *s != '\0'; s++)
        n += *s == '\n';
    return n;
}

static bool matches(const char *s, const char *pattern)
{
    regex_t re;
    cr_assert(regcomp(&re, pattern, REG_EXTENDED | REG_NOSUB) == 0, "bad regex %s", pattern);
    bool ok = regexec(&re, s, 0, NULL, 0) == 0;
    regfree(&re);
    return ok;
}

/* A strict reader for one JSON string starting at *p (the opening quote): no raw control
 * characters, only JSON's escapes, \u limited to one byte (all the logger emits). */
static bool json_string(const char **p, char *out, size_t cap, size_t *out_len)
{
    const char *s = *p;
    if (*s++ != '"')
        return false;
    size_t n = 0;
    for (;;) {
        unsigned char c = (unsigned char)*s++;
        if (c == '\0' || c < 0x20)
            return false;
        if (c == '"')
            break;
        if (c == '\\') {
            char e = *s++;
            switch (e) {
            case '"':
            case '\\':
            case '/':
                c = (unsigned char)e;
                break;
            case 'b':
                c = '\b';
                break;
            case 'f':
                c = '\f';
                break;
            case 'n':
                c = '\n';
                break;
            case 'r':
                c = '\r';
                break;
            case 't':
                c = '\t';
                break;
            case 'u': {
                char hex[5] = {0};
                for (int i = 0; i < 4; i++) {
                    if (s[i] == '\0' || strchr("0123456789abcdefABCDEF", s[i]) == NULL)
                        return false;
                    hex[i] = s[i];
                }
                s += 4;
                unsigned long v = strtoul(hex, NULL, 16);
                if (v > 0xff)
                    return false;
                c = (unsigned char)v;
                break;
            }
            default:
                return false;
            }
        }
        if (n + 1 >= cap)
            return false;
        out[n++] = (char)c;
    }
    out[n] = '\0';
    *out_len = n;
    *p = s;
    return true;
}

typedef struct json_rec {
    char ts[64];
    char level[16];
    char mod[256];
    char msg[16384];
    size_t msg_len;
} json_rec;

/* Parses a whole line `{"ts":..,"level":..,"mod":..,"msg":..}\n` and nothing else. */
static bool parse_json_record(const char *line, json_rec *r)
{
    static const char *const keys[] = {"ts", "level", "mod", "msg"};
    const char *p = line;
    if (*p++ != '{')
        return false;
    for (int i = 0; i < 4; i++) {
        char key[16];
        size_t len;
        if (!json_string(&p, key, sizeof(key), &len) || strcmp(key, keys[i]) != 0)
            return false;
        if (*p++ != ':')
            return false;
        char *dst = i == 0 ? r->ts : i == 1 ? r->level : i == 2 ? r->mod : r->msg;
        size_t cap = i == 0   ? sizeof(r->ts)
                     : i == 1 ? sizeof(r->level)
                     : i == 2 ? sizeof(r->mod)
                              : sizeof(r->msg);
        if (!json_string(&p, dst, cap, &len))
            return false;
        if (i == 3)
            r->msg_len = len;
        if (*p++ != (i < 3 ? ',' : '}'))
            return false;
    }
    return strcmp(p, "\n") == 0;
}

static bool valid_utf8(const unsigned char *s, size_t len)
{
    size_t i = 0;
    while (i < len) {
        unsigned char c = s[i];
        size_t need = c < 0x80 ? 1 : (c & 0xE0) == 0xC0 ? 2 : (c & 0xF0) == 0xE0 ? 3 : 4;
        if (i + need > len)
            return false;
        for (size_t k = 1; k < need; k++) {
            if ((s[i + k] & 0xC0) != 0x80)
                return false;
        }
        i += need;
    }
    return true;
}

/* Seconds since the epoch of a UTC calendar date (days_from_civil, Howard Hinnant). */
static long long utc_seconds(int y, int m, int d, int hh, int mm, int ss)
{
    y -= m <= 2;
    long long era = (y >= 0 ? y : y - 399) / 400;
    long long yoe = y - era * 400;
    long long doy = (153 * (m + (m > 2 ? -3 : 9)) + 2) / 5 + d - 1;
    long long doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    long long days = era * 146097 + doe - 719468;
    return days * 86400 + hh * 3600 + mm * 60 + ss;
}

#define TS_RE "[0-9]{4}-[0-9]{2}-[0-9]{2}T[0-9]{2}:[0-9]{2}:[0-9]{2}\\.[0-9]{3}Z"

/* ---- levels and parsing ---------------------------------------------------------------------- */

Test(log, default_level_is_info_and_drops_debug)
{
    int fd = capture();
    cr_assert_eq(qv_log_get_level(), QV_LOG_INFO);
    qv_log_debug("t", "hidden");
    qv_log_info("t", "shown");
    char *out = read_all(fd, NULL);
    cr_assert_null(strstr(out, "hidden"));
    cr_assert_not_null(strstr(out, "shown"));
    cr_assert_eq(count_lines(out), 1);
    free(out);
    close(fd);
}

Test(log, level_filters_records_below_threshold)
{
    int fd = capture();
    qv_log_set_level(QV_LOG_WARN);
    cr_assert_eq(qv_log_get_level(), QV_LOG_WARN);
    qv_log_debug("t", "msg-debug");
    qv_log_info("t", "msg-info");
    qv_log_warn("t", "msg-warn");
    qv_log_error("t", "msg-error");
    char *out = read_all(fd, NULL);
    cr_assert_eq(count_lines(out), 2, "got:\n%s", out);
    cr_assert_null(strstr(out, "msg-debug"));
    cr_assert_null(strstr(out, "msg-info"));
    cr_assert(matches(out, "WARN  t: msg-warn\n"), "got:\n%s", out);
    cr_assert(matches(out, "ERROR t: msg-error\n"), "got:\n%s", out);
    free(out);
    close(fd);
}

Test(log, debug_level_lets_everything_through)
{
    int fd = capture();
    qv_log_set_level(QV_LOG_DEBUG);
    qv_log_debug("t", "a");
    qv_log_info("t", "b");
    qv_log_warn("t", "c");
    qv_log_error("t", "d");
    char *out = read_all(fd, NULL);
    cr_assert_eq(count_lines(out), 4, "got:\n%s", out);
    cr_assert(matches(out, "DEBUG t: a\n"));
    free(out);
    close(fd);
}

Test(log, off_level_suppresses_every_record)
{
    int fd = capture();
    qv_log_set_level(QV_LOG_OFF);
    qv_log_error("t", "nope");
    qv_log(QV_LOG_OFF, "t", "not a level to log at");
    size_t len;
    char *out = read_all(fd, &len);
    cr_assert_eq(len, 0, "got:\n%s", out);
    free(out);
    close(fd);
}

Test(log, off_is_not_a_record_level_even_at_debug)
{
    int fd = capture();
    qv_log_set_level(QV_LOG_DEBUG);
    qv_log(QV_LOG_OFF, "t", "x");
    qv_log((qv_log_level)42, "t", "x");
    size_t len;
    char *out = read_all(fd, &len);
    cr_assert_eq(len, 0, "got:\n%s", out);
    free(out);
    close(fd);
}

Test(log, parse_level_is_case_insensitive)
{
    static const struct {
        const char *text;
        qv_log_level level;
    } cases[] = {
        {"debug", QV_LOG_DEBUG}, {"INFO", QV_LOG_INFO}, {"Warn", QV_LOG_WARN},
        {"eRRoR", QV_LOG_ERROR}, {"OFF", QV_LOG_OFF},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        qv_log_level out = (qv_log_level)99;
        cr_assert_eq(qv_log_parse_level(cases[i].text, &out), 0, "%s", cases[i].text);
        cr_assert_eq(out, cases[i].level, "%s", cases[i].text);
    }
}

Test(log, parse_level_rejects_unknown_names_and_leaves_output)
{
    static const char *const bad[] = {"", "verbose", "info ", " info", "inf", "infos", "4"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        qv_log_level out = QV_LOG_ERROR;
        cr_assert_eq(qv_log_parse_level(bad[i], &out), QV_EINVAL, "'%s'", bad[i]);
        cr_assert_eq(out, QV_LOG_ERROR, "'%s' changed the output", bad[i]);
    }
    qv_log_level out;
    cr_assert_eq(qv_log_parse_level(NULL, &out), QV_EINVAL);
}

Test(log, parse_format_is_case_insensitive_and_strict)
{
    qv_log_format f = QV_LOG_TEXT;
    cr_assert_eq(qv_log_parse_format("JSON", &f), 0);
    cr_assert_eq(f, QV_LOG_JSON);
    cr_assert_eq(qv_log_parse_format("Text", &f), 0);
    cr_assert_eq(f, QV_LOG_TEXT);
    cr_assert_eq(qv_log_parse_format("jsonl", &f), QV_EINVAL);
    cr_assert_eq(qv_log_parse_format("", &f), QV_EINVAL);
    cr_assert_eq(f, QV_LOG_TEXT);
}

/* ---- text format ----------------------------------------------------------------------------- */

Test(log, text_record_has_timestamp_level_module_message)
{
    int fd = capture();
    qv_log_info("rpc", "server listening addr=%s:%d", "127.0.0.1", 7070);
    char *out = read_all(fd, NULL);
    cr_assert(matches(out, "^" TS_RE " INFO  rpc: server listening addr=127\\.0\\.0\\.1:7070\n$"),
              "got: %s", out);
    free(out);
    close(fd);
}

Test(log, text_record_without_module_omits_the_colon)
{
    int fd = capture();
    qv_log_warn(NULL, "bare");
    char *out = read_all(fd, NULL);
    cr_assert(matches(out, "^" TS_RE " WARN  bare\n$"), "got: %s", out);
    free(out);
    close(fd);
}

Test(log, text_record_escapes_control_chars_to_stay_one_line)
{
    int fd = capture();
    qv_log_info("t", "a\nFAKE 2020-01-01T00:00:00.000Z ERROR x: forged\r\x1b[2Jb\tc");
    char *out = read_all(fd, NULL);
    cr_assert_eq(count_lines(out), 1, "got: %s", out);
    cr_assert_not_null(strstr(out, "t: a\\nFAKE 2020"), "got: %s", out);
    cr_assert_not_null(strstr(out, "forged\\r\\x1b[2Jb\tc\n"), "got: %s", out);
    free(out);
    close(fd);
}

Test(log, timestamp_is_utc_now_with_milliseconds)
{
    /* A zone far from UTC: a timestamp in local time would be off by hours. */
    setenv("TZ", "QQQ-05:30", 1);
    tzset();
    int fd = capture();
    long long before = (long long)(qv_wall_ms() / 1000);
    qv_log_info("t", "tick");
    long long after = (long long)(qv_wall_ms() / 1000);
    char *out = read_all(fd, NULL);
    int y, mo, d, h, mi, s, ms;
    cr_assert_eq(sscanf(out, "%4d-%2d-%2dT%2d:%2d:%2d.%3dZ", &y, &mo, &d, &h, &mi, &s, &ms), 7,
                 "got: %s", out);
    long long t = utc_seconds(y, mo, d, h, mi, s);
    cr_assert(t >= before && t <= after, "timestamp %lld not in [%lld, %lld]: %s", t, before, after,
              out);
    cr_assert(ms >= 0 && ms <= 999);
    free(out);
    close(fd);
}

/* ---- JSON format ----------------------------------------------------------------------------- */

Test(log, json_record_round_trips_escaped_message)
{
    int fd = capture();
    qv_log_set_format(QV_LOG_JSON);
    const char *msg = "quote\" backslash\\ newline\n tab\t cr\r bell\a nul-ish\x01 us\x1f slash/ "
                      "utf8 \xc3\xa9 del\x7f";
    qv_log_warn("rp\"c", "%s", msg);
    char *out = read_all(fd, NULL);
    cr_assert_eq(count_lines(out), 1, "got: %s", out);
    json_rec r;
    cr_assert(parse_json_record(out, &r), "not valid JSON: %s", out);
    cr_assert_str_eq(r.msg, msg);
    cr_assert_str_eq(r.mod, "rp\"c");
    cr_assert_str_eq(r.level, "warn");
    cr_assert(matches(r.ts, "^" TS_RE "$"), "ts %s", r.ts);
    free(out);
    close(fd);
}

Test(log, json_escapes_other_control_chars_as_u00xx)
{
    int fd = capture();
    qv_log_set_format(QV_LOG_JSON);
    qv_log_info("t", "a\x01z\x1f");
    char *out = read_all(fd, NULL);
    cr_assert_not_null(strstr(out, "\"msg\":\"a\\u0001z\\u001f\"}"), "got: %s", out);
    free(out);
    close(fd);
}

Test(log, json_level_names_are_lowercase)
{
    int fd = capture();
    qv_log_set_format(QV_LOG_JSON);
    qv_log_set_level(QV_LOG_DEBUG);
    qv_log_debug("m", "1");
    qv_log_info("m", "2");
    qv_log_warn("m", "3");
    qv_log_error("m", "4");
    char *out = read_all(fd, NULL);
    static const char *const want[] = {"debug", "info", "warn", "error"};
    char *line = out;
    for (int i = 0; i < 4; i++) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "only %d records: %s", i, out);
        char saved = nl[1];
        nl[1] = '\0';
        json_rec r;
        cr_assert(parse_json_record(line, &r), "not valid JSON: %s", line);
        cr_assert_str_eq(r.level, want[i]);
        nl[1] = saved;
        line = nl + 1;
    }
    free(out);
    close(fd);
}

/* ---- truncation ------------------------------------------------------------------------------ */

Test(log, huge_text_message_is_truncated_with_marker)
{
    int fd = capture();
    size_t n = 10000;
    char *big = malloc(n + 1);
    memset(big, 'x', n);
    big[n] = '\0';
    qv_log_info("t", "%s", big);
    size_t len;
    char *out = read_all(fd, &len);
    cr_assert_eq(count_lines(out), 1);
    cr_assert(len <= 4096 + 256, "record is %zu bytes", len);
    cr_assert(len >= 4000, "record is only %zu bytes", len);
    cr_assert(matches(out, "xxxx\\.\\.\\.\n$"), "no marker at the end");
    free(out);
    free(big);
    close(fd);
}

Test(log, message_that_fits_has_no_marker)
{
    int fd = capture();
    char msg[3001];
    memset(msg, 'y', 3000);
    msg[3000] = '\0';
    qv_log_info("t", "%s", msg);
    char *out = read_all(fd, NULL);
    cr_assert(matches(out, "t: y{3000}\n$"), "message was changed");
    free(out);
    close(fd);
}

Test(log, truncated_json_stays_valid_when_escapes_fill_the_buffer)
{
    int fd = capture();
    qv_log_set_format(QV_LOG_JSON);
    /* 3000 quotes fit the message buffer but not once escaped (6000 bytes). */
    char msg[3001];
    memset(msg, '"', 3000);
    msg[3000] = '\0';
    qv_log_error("t", "%s", msg);
    qv_log_error("t", "%s", "\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01\x01");
    size_t len;
    char *out = read_all(fd, &len);
    char *nl = strchr(out, '\n');
    cr_assert_not_null(nl);
    nl[1] = '\0';
    json_rec r;
    cr_assert(parse_json_record(out, &r), "not valid JSON: %.200s...", out);
    cr_assert(r.msg_len > 1000, "kept only %zu bytes", r.msg_len);
    cr_assert(strlen(out) <= 4096 + 256, "record is %zu bytes", strlen(out));
    cr_assert_eq(strspn(r.msg, "\""), r.msg_len - 3);
    cr_assert_str_eq(r.msg + r.msg_len - 3, "...");
    free(out);
    close(fd);
}

Test(log, truncation_never_splits_a_utf8_character)
{
    for (int shift = 0; shift < 3; shift++) {
        int fd = capture();
        qv_log_set_format(shift == 1 ? QV_LOG_JSON : QV_LOG_TEXT);
        /* "é" is 2 bytes, "€" 3: the cut lands inside a character for some shift. */
        size_t n = 0;
        char *big = malloc(12000);
        for (int i = 0; i < shift; i++)
            big[n++] = 'a';
        while (n < 11000) {
            memcpy(big + n, "\xe2\x82\xac\xc3\xa9", 5);
            n += 5;
        }
        big[n] = '\0';
        qv_log_info("t", "%s", big);
        size_t len;
        char *out = read_all(fd, &len);
        cr_assert(valid_utf8((const unsigned char *)out, len), "shift %d: broken UTF-8", shift);
        cr_assert(matches(out, "\\.\\.\\.(\"})?\n$"), "shift %d: no marker", shift);
        free(out);
        free(big);
        close(fd);
    }
}

/* ---- destinations, threads, errno ------------------------------------------------------------ */

Test(log, defaults_to_stderr)
{
    char path[] = "/tmp/qv_test_log_XXXXXX";
    int tmp = mkstemp(path);
    cr_assert(tmp >= 0);
    unlink(path);
    int saved = dup(STDERR_FILENO);
    dup2(tmp, STDERR_FILENO);
    qv_log_info("t", "to stderr");
    qv_log_set_fd(-1); /* "back to stderr" is the same place */
    qv_log_info("t", "again");
    dup2(saved, STDERR_FILENO);
    close(saved);
    char *out = read_all(tmp, NULL);
    cr_assert(matches(out, "t: to stderr\n.*t: again\n$"), "got: %s", out);
    free(out);
    close(tmp);
}

Test(log, preserves_errno_even_when_write_fails)
{
    int fd = capture();
    errno = ENOENT;
    qv_log_info("t", "ok");
    cr_assert_eq(errno, ENOENT);
    close(fd);
    qv_log_set_fd(fd); /* now closed: write fails with EBADF */
    errno = ENOENT;
    qv_log_info("t", "lost");
    cr_assert_eq(errno, ENOENT);
}

#define THREADS    4
#define PER_THREAD 400
#define PAD_FOR(n) (((n)*37) % 3000)
#define MOD_CONCUR "conc"

static char g_pad[3001];

static void *log_worker(void *arg)
{
    int t = (int)(intptr_t)arg;
    for (int n = 0; n < PER_THREAD; n++)
        qv_log_info(MOD_CONCUR, "t=%d n=%d pad=%.*s end", t, n, PAD_FOR(n), g_pad);
    return NULL;
}

static void start_workers(pthread_t *th)
{
    memset(g_pad, 'p', sizeof(g_pad) - 1);
    for (int t = 0; t < THREADS; t++)
        cr_assert_eq(pthread_create(&th[t], NULL, log_worker, (void *)(intptr_t)t), 0);
}

Test(log, concurrent_threads_never_interleave_lines)
{
    int fd = capture();
    pthread_t th[THREADS];
    start_workers(th);
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);

    char *out = read_all(fd, NULL);
    static bool seen[THREADS][PER_THREAD];
    size_t lines = 0;
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        lines++;
        const char *body = strstr(line, " INFO  " MOD_CONCUR ": t=");
        cr_assert_not_null(body, "torn line: %.120s", line);
        cr_assert_eq(body - line, 24, "torn line: %.120s", line);
        int t, n, off = 0;
        cr_assert_eq(sscanf(body, " INFO  " MOD_CONCUR ": t=%d n=%d pad=%n", &t, &n, &off), 2);
        cr_assert(t >= 0 && t < THREADS && n >= 0 && n < PER_THREAD, "bad ids t=%d n=%d", t, n);
        const char *pad = body + off;
        size_t plen = strspn(pad, "p");
        cr_assert_eq(plen, (size_t)PAD_FOR(n), "t=%d n=%d: pad %zu", t, n, plen);
        cr_assert_str_eq(pad + plen, " end", "t=%d n=%d: tail", t, n);
        cr_assert(!seen[t][n], "t=%d n=%d twice", t, n);
        seen[t][n] = true;
    }
    cr_assert_eq(lines, (size_t)THREADS * PER_THREAD);
    free(out);
    close(fd);
}

Test(log, settings_change_safely_while_threads_log)
{
    int fd = capture();
    pthread_t th[THREADS];
    start_workers(th);
    for (int i = 0; i < 200; i++) {
        qv_log_set_format(i % 2 ? QV_LOG_JSON : QV_LOG_TEXT);
        qv_log_set_level(i % 3 ? QV_LOG_INFO : QV_LOG_WARN);
    }
    for (int t = 0; t < THREADS; t++)
        pthread_join(th[t], NULL);
    qv_log_set_format(QV_LOG_TEXT);
    char *out = read_all(fd, NULL);
    char *save = NULL;
    for (char *line = strtok_r(out, "\n", &save); line != NULL;
         line = strtok_r(NULL, "\n", &save)) {
        bool text = matches(line, "^" TS_RE " INFO  conc: t=[0-3] n=[0-9]+ pad=p* end$");
        bool json = matches(line, "^\\{\"ts\":\"" TS_RE "\",\"level\":\"info\",\"mod\":\"conc\","
                                  "\"msg\":\"t=[0-3] n=[0-9]+ pad=p* end\"\\}$");
        cr_assert(text || json, "malformed: %.120s", line);
    }
    free(out);
    close(fd);
}
