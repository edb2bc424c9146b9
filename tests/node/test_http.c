/*
 * Tests for node/http.c over real TCP on 127.0.0.1 (and ::1 where the machine has it).
 *
 * A small blocking socket client in this file sends raw request bytes and reads the response
 * until the server closes the connection (requests say "Connection: close"), with a receive
 * timeout so a server that never answers fails the test instead of hanging it. Every server
 * listens on port 0. Tests end with an explicit LeakSanitizer check, since Criterion reports a
 * test that leaks as passing.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "node/http.h"
#include "node/metrics.h"

#include <arpa/inet.h>
#include <dirent.h>
#include <errno.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

/* ---- socket client --------------------------------------------------------------------------- */

#define RESP_MAX (1u << 20)

typedef struct http_resp {
    int status; /* 0: no status line came back */
    char *raw;  /* everything received, NUL-terminated */
    size_t len;
    const char *body; /* inside raw, after the blank line; "" when none */
    size_t body_len;
} http_resp;

static void resp_free(http_resp *r)
{
    free(r->raw);
    memset(r, 0, sizeof(*r));
}

static void set_timeout(int fd, int ms)
{
    struct timeval tv = {.tv_sec = ms / 1000, .tv_usec = (ms % 1000) * 1000};
    setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
    setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static int connect_to(int family, int port)
{
    int fd = socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0);
    cr_assert(fd >= 0, "socket: %s", strerror(errno));
    set_timeout(fd, 5000);
    int rc;
    if (family == AF_INET6) {
        struct sockaddr_in6 sa = {.sin6_family = AF_INET6, .sin6_port = htons((uint16_t)port)};
        sa.sin6_addr = in6addr_loopback;
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    } else {
        struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
        sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        rc = connect(fd, (struct sockaddr *)&sa, sizeof(sa));
    }
    cr_assert_eq(rc, 0, "connect to port %d: %s", port, strerror(errno));
    return fd;
}

static void send_all(int fd, const void *data, size_t len)
{
    const char *p = data;
    while (len > 0) {
        ssize_t n = send(fd, p, len, MSG_NOSIGNAL);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return; /* the server may close early on garbage: reading shows what it said */
        p += n;
        len -= (size_t)n;
    }
}

/* Reads until EOF (or a reset); fails the test on a timeout. */
static http_resp read_response(int fd)
{
    http_resp r = {0};
    r.raw = malloc(RESP_MAX + 1);
    cr_assert_not_null(r.raw);
    for (;;) {
        ssize_t n = recv(fd, r.raw + r.len, RESP_MAX - r.len, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK))
            cr_assert_fail("no response within the time limit (got %zu bytes)", r.len);
        if (n <= 0)
            break; /* EOF or ECONNRESET */
        r.len += (size_t)n;
        cr_assert(r.len < RESP_MAX, "response too large");
    }
    r.raw[r.len] = '\0';
    if (strncmp(r.raw, "HTTP/1.", 7) == 0 && r.len >= 12)
        r.status = atoi(r.raw + 9);
    const char *blank = strstr(r.raw, "\r\n\r\n");
    r.body = blank ? blank + 4 : "";
    r.body_len = blank ? r.len - (size_t)(r.body - r.raw) : 0;
    return r;
}

static http_resp exchange_on(int family, int port, const void *req, size_t len)
{
    int fd = connect_to(family, port);
    send_all(fd, req, len);
    http_resp r = read_response(fd);
    close(fd);
    return r;
}

static http_resp request(int port, const char *method, const char *path)
{
    char req[512];
    int n =
        snprintf(req, sizeof(req), "%s %s HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n",
                 method, path);
    return exchange_on(AF_INET, port, req, (size_t)n);
}

/* The value of header `name` (case-insensitive) copied into out; false when absent. */
static bool header(const http_resp *r, const char *name, char *out, size_t cap)
{
    size_t nl = strlen(name);
    const char *end = strstr(r->raw, "\r\n\r\n");
    for (const char *p = strstr(r->raw, "\r\n"); p != NULL && p < end; p = strstr(p + 2, "\r\n")) {
        const char *line = p + 2;
        if (strncasecmp(line, name, nl) == 0 && line[nl] == ':') {
            const char *v = line + nl + 1;
            while (*v == ' ')
                v++;
            const char *eol = strstr(v, "\r\n");
            size_t len = (size_t)(eol - v);
            if (len >= cap)
                len = cap - 1;
            memcpy(out, v, len);
            out[len] = '\0';
            return true;
        }
    }
    return false;
}

static size_t open_fds(void)
{
    DIR *d = opendir("/proc/self/fd");
    cr_assert_not_null(d);
    size_t n = 0;
    const struct dirent *e;
    while ((e = readdir(d)) != NULL)
        if (e->d_name[0] != '.')
            n++;
    closedir(d);
    return n;
}

/* ---- fixture --------------------------------------------------------------------------------- */

typedef struct readiness {
    atomic_bool ready;
    atomic_int calls;
} readiness;

static bool ready_cb(void *user, char *why, size_t why_len)
{
    readiness *r = user;
    atomic_fetch_add(&r->calls, 1);
    if (atomic_load(&r->ready))
        return true;
    snprintf(why, why_len, "loading collections (3 of 7)");
    return false;
}

static qv_http *start(qv_metrics *m, bool (*ready)(void *, char *, size_t), void *user,
                      unsigned idle_timeout_s)
{
    qv_http_opts o = {.addr = "127.0.0.1:0",
                      .metrics = m,
                      .ready = ready,
                      .user = user,
                      .idle_timeout_s = idle_timeout_s};
    qv_http *h = NULL;
    qv_status err = qv_status_ok();
    int rc = qv_http_start(&o, &h, &err);
    cr_assert_eq(rc, 0, "start: %d %s", rc, err.msg);
    cr_assert_not_null(h);
    int port = qv_http_port(h);
    cr_assert(port > 0 && port < 65536, "port %d", port);
    return h;
}

/* ---- endpoints ------------------------------------------------------------------------------- */

Test(http, healthz_readyz_and_metrics_answer_get)
{
    qv_metrics *m = NULL;
    cr_assert_eq(qv_metrics_create(&m), 0);
    qv_metrics_rpc_done(m, "/quiver.v1.Points/Search", QV_OK, 250);
    qv_http *h = start(m, NULL, NULL, 0);
    int port = qv_http_port(h);
    char v[256];

    http_resp r = request(port, "GET", "/healthz");
    cr_expect_eq(r.status, 200, "healthz: %s", r.raw);
    cr_expect_str_eq(r.body, "ok\n");
    cr_expect(header(&r, "Content-Type", v, sizeof(v)) && strncmp(v, "text/plain", 10) == 0,
              "content type '%s'", v);
    resp_free(&r);

    r = request(port, "GET", "/readyz");
    cr_expect_eq(r.status, 200, "readyz: %s", r.raw);
    cr_expect_str_eq(r.body, "ready\n", "a server without a readiness callback is ready");
    resp_free(&r);

    r = request(port, "GET", "/metrics");
    cr_expect_eq(r.status, 200, "metrics: %.200s", r.raw);
    cr_expect(header(&r, "Content-Type", v, sizeof(v)), "no Content-Type");
    cr_expect_str_eq(v, "text/plain; version=0.0.4; charset=utf-8");
    cr_expect(strstr(r.body, "# TYPE quiver_rpc_requests_total counter\n") != NULL);
    cr_expect(strstr(r.body, "quiver_rpc_requests_total{method=\"/quiver.v1.Points/Search\","
                             "code=\"OK\"} 1\n") != NULL,
              "body: %.400s", r.body);
    cr_expect(strstr(r.body, "process_resident_memory_bytes ") != NULL);
    cr_expect(header(&r, "Content-Length", v, sizeof(v)), "no Content-Length");
    cr_expect_eq((size_t)atol(v), r.body_len, "Content-Length %s for %zu bytes", v, r.body_len);
    resp_free(&r);

    r = request(port, "GET", "/metrics?name[]=x&debug=1");
    cr_expect_eq(r.status, 200, "a query string is ignored: %.200s", r.raw);
    resp_free(&r);

    qv_http_stop(h);
    qv_metrics_free(m);
    assert_no_leaks();
}

Test(http, unknown_paths_are_404_and_other_methods_405_with_allow)
{
    qv_http *h = start(NULL, NULL, NULL, 0);
    int port = qv_http_port(h);
    char v[256];

    static const char *const missing[] = {"/",          "/nope",    "/metrics/",
                                          "/healthz/x", "/HEALTHZ", "/metricsx"};
    for (size_t i = 0; i < sizeof(missing) / sizeof(missing[0]); i++) {
        http_resp r = request(port, "GET", missing[i]);
        cr_expect_eq(r.status, 404, "GET %s: %s", missing[i], r.raw);
        resp_free(&r);
    }
    http_resp r = request(port, "GET", "/metrics");
    cr_expect_eq(r.status, 404, "no registry: /metrics is 404: %s", r.raw);
    resp_free(&r);

    static const char *const methods[] = {"POST", "PUT", "DELETE", "PATCH", "OPTIONS", "BREW"};
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        r = request(port, methods[i], "/healthz");
        cr_expect_eq(r.status, 405, "%s /healthz: %s", methods[i], r.raw);
        cr_expect(header(&r, "Allow", v, sizeof(v)), "%s: no Allow header", methods[i]);
        cr_expect_str_eq(v, "GET, HEAD");
        resp_free(&r);
    }

    /* A body the server never reads. */
    static const char post[] = "POST /readyz HTTP/1.1\r\nHost: x\r\nContent-Length: 11\r\n"
                               "Connection: close\r\n\r\nhello world";
    r = exchange_on(AF_INET, port, post, sizeof(post) - 1);
    cr_expect_eq(r.status, 405, "POST with a body: %s", r.raw);
    resp_free(&r);

    r = request(port, "GET", "/healthz");
    cr_expect_eq(r.status, 200, "still serving: %s", r.raw);
    resp_free(&r);
    qv_http_stop(h);
    assert_no_leaks();
}

Test(http, head_sends_headers_without_body)
{
    qv_metrics *m = NULL;
    cr_assert_eq(qv_metrics_create(&m), 0);
    qv_http *h = start(m, NULL, NULL, 0);
    int port = qv_http_port(h);
    char v[256];

    http_resp r = request(port, "HEAD", "/healthz");
    cr_expect_eq(r.status, 200, "%s", r.raw);
    cr_expect_eq(r.body_len, 0, "HEAD returned a body: '%s'", r.body);
    cr_expect(header(&r, "Content-Length", v, sizeof(v)));
    cr_expect_str_eq(v, "3", "the length GET would send");
    resp_free(&r);

    r = request(port, "HEAD", "/metrics");
    cr_expect_eq(r.status, 200, "%s", r.raw);
    cr_expect_eq(r.body_len, 0);
    cr_expect(header(&r, "Content-Type", v, sizeof(v)));
    cr_expect_str_eq(v, "text/plain; version=0.0.4; charset=utf-8");
    resp_free(&r);

    r = request(port, "HEAD", "/nope");
    cr_expect_eq(r.status, 404);
    cr_expect_eq(r.body_len, 0);
    resp_free(&r);

    qv_http_stop(h);
    qv_metrics_free(m);
    assert_no_leaks();
}

Test(http, readiness_flips_from_503_to_200)
{
    static readiness rd;
    atomic_init(&rd.ready, false);
    atomic_init(&rd.calls, 0);
    qv_http *h = start(NULL, ready_cb, &rd, 0);
    int port = qv_http_port(h);

    http_resp r = request(port, "GET", "/readyz");
    cr_expect_eq(r.status, 503, "%s", r.raw);
    cr_expect_str_eq(r.body, "not ready: loading collections (3 of 7)\n");
    resp_free(&r);

    r = request(port, "GET", "/healthz");
    cr_expect_eq(r.status, 200, "liveness does not depend on readiness");
    resp_free(&r);

    atomic_store(&rd.ready, true);
    r = request(port, "GET", "/readyz");
    cr_expect_eq(r.status, 200, "%s", r.raw);
    cr_expect_str_eq(r.body, "ready\n");
    resp_free(&r);
    cr_expect_eq(atomic_load(&rd.calls), 2, "the callback runs once per /readyz request");

    qv_http_stop(h);
    assert_no_leaks();
}

/* ---- robustness ------------------------------------------------------------------------------ */

Test(http, garbage_requests_get_errors_and_the_server_keeps_serving)
{
    qv_metrics *m = NULL;
    cr_assert_eq(qv_metrics_create(&m), 0);
    /* Some garbage leaves MHD waiting for a request line (a NUL ends the line it reads, blank
     * lines before a request are allowed): the idle timeout then closes the connection. */
    qv_http *h = start(m, NULL, NULL, 1);
    int port = qv_http_port(h);

#define G(s)                                                                                       \
    {                                                                                              \
        s, sizeof(s) - 1                                                                           \
    }
    static const struct {
        const char *bytes;
        size_t len;
    } garbage[] = {
        G("\x00\x01\x02\x03garbage\r\n\r\n"),
        G("GET\r\n\r\n"),
        G("GET /healthz\r\n\r\n"),
        G("GET /healthz HTTP/1.1\r\n\r\n"), /* HTTP/1.1 without Host */
        G("GET /healthz HTTP/9.9\r\nHost: x\r\n\r\n"),
        G("GET /healthz HTTP/1.1\r\nHost: x\r\nno colon here\r\n\r\n"),
        G("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: -5\r\n\r\n"),
        G("GET /healthz HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"),
        G("GET /healthz HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999999999999\r\n\r\n"),
        G("\r\n\r\n\r\n\r\n"),
    };
#undef G
    for (size_t i = 0; i < sizeof(garbage) / sizeof(garbage[0]); i++) {
        http_resp r = exchange_on(AF_INET, port, garbage[i].bytes, garbage[i].len);
        /* An error status or a closed connection (MHD accepts HTTP/1.1 without Host, and
         * ignores a chunked body it was not asked to read); never a crash, never a hang. */
        cr_expect(r.status == 0 || r.status >= 400 || r.status == 200, "garbage %zu: status %d", i,
                  r.status);
        resp_free(&r);
    }

    /* Request line and headers beyond the per-connection memory limit. */
    size_t big = 64 * 1024;
    char *huge = malloc(big + 64);
    cr_assert_not_null(huge);
    int n = snprintf(huge, 64, "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: ");
    memset(huge + n, 'a', big);
    memcpy(huge + n + big, "\r\n\r\n", 4);
    http_resp r = exchange_on(AF_INET, port, huge, (size_t)n + big + 4);
    cr_expect(r.status == 0 || r.status == 431 || r.status == 413 || r.status == 400,
              "oversized headers: status %d", r.status);
    resp_free(&r);
    n = snprintf(huge, 8, "GET /");
    memset(huge + n, 'b', big);
    memcpy(huge + n + big, " HTTP/1.1\r\nHost: x\r\n\r\n", 22);
    r = exchange_on(AF_INET, port, huge, (size_t)n + big + 22);
    cr_expect(r.status == 0 || r.status == 414 || r.status == 400, "oversized URL: status %d",
              r.status);
    resp_free(&r);

    /* Random bytes. */
    unsigned x = 12345;
    for (size_t i = 0; i < 4096; i++) {
        x = x * 1103515245u + 12345u;
        huge[i] = (char)(x >> 16);
    }
    r = exchange_on(AF_INET, port, huge, 4096);
    cr_expect(r.status == 0 || r.status >= 400, "random bytes: status %d", r.status);
    resp_free(&r);
    free(huge);

    /* Two requests pipelined on one connection, the first kept alive. */
    static const char two[] = "GET /healthz HTTP/1.1\r\nHost: x\r\n\r\n"
                              "GET /readyz HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n";
    r = exchange_on(AF_INET, port, two, sizeof(two) - 1);
    cr_expect_eq(r.status, 200);
    cr_expect(strstr(r.raw, "ok\n") != NULL && strstr(r.raw, "ready\n") != NULL, "pipelined: %s",
              r.raw);
    resp_free(&r);

    r = request(port, "GET", "/metrics");
    cr_expect_eq(r.status, 200, "still serving after garbage: %.200s", r.raw);
    resp_free(&r);
    qv_http_stop(h);
    qv_metrics_free(m);
    assert_no_leaks();
}

Test(http, silent_clients_do_not_block_others_and_time_out)
{
    /* A 3 s idle timeout: a server that served one connection at a time would make the
     * requests below wait for it. */
    qv_http *h = start(NULL, NULL, NULL, 3);
    int port = qv_http_port(h);

    /* More silent connections than there are server threads, one with half a request line. */
    int idle[6];
    for (int i = 0; i < 6; i++)
        idle[i] = connect_to(AF_INET, port);
    send_all(idle[0], "GET /heal", 9);
    qv_sleep_ms(50);

    uint64_t t0 = qv_now_ms();
    for (int i = 0; i < 5; i++) {
        http_resp r = request(port, "GET", "/healthz");
        cr_expect_eq(r.status, 200, "request %d beside idle clients: %s", i, r.raw);
        resp_free(&r);
    }
    uint64_t took = qv_now_ms() - t0;
    cr_expect(took < 2000, "5 requests beside idle clients took %llu ms", (unsigned long long)took);

    /* After the idle timeout the server drops the silent clients on its own. */
    for (int i = 0; i < 6; i++) {
        struct pollfd p = {.fd = idle[i], .events = POLLIN};
        int rc = poll(&p, 1, 8000);
        cr_expect_eq(rc, 1, "idle connection %d not closed within 8 s", i);
        char c;
        ssize_t got = recv(idle[i], &c, 1, MSG_DONTWAIT);
        cr_expect(got <= 0, "idle connection %d got data", i);
        close(idle[i]);
    }
    qv_http_stop(h);
    assert_no_leaks();
}

typedef struct scraper {
    int port;
    atomic_int ok;
} scraper;

static void *scrape_thread(void *arg)
{
    scraper *s = arg;
    for (int i = 0; i < 20; i++) {
        http_resp r = request(s->port, "GET", "/metrics");
        if (r.status == 200 && strstr(r.body, "quiver_rpc_requests_total") != NULL)
            atomic_fetch_add(&s->ok, 1);
        resp_free(&r);
    }
    return NULL;
}

Test(http, concurrent_scrapes_all_succeed)
{
    qv_metrics *m = NULL;
    cr_assert_eq(qv_metrics_create(&m), 0);
    qv_http *h = start(m, NULL, NULL, 0);
    static scraper s;
    s.port = qv_http_port(h);
    atomic_init(&s.ok, 0);
    pthread_t t[4];
    for (int i = 0; i < 4; i++)
        cr_assert_eq(pthread_create(&t[i], NULL, scrape_thread, &s), 0);
    for (int i = 0; i < 100; i++)
        qv_metrics_rpc_done(m, "/quiver.v1.Points/Search", QV_OK, (uint64_t)i);
    for (int i = 0; i < 4; i++)
        pthread_join(t[i], NULL);
    cr_expect_eq(atomic_load(&s.ok), 80);
    qv_http_stop(h);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

Test(http, stop_with_a_client_connected_is_prompt_and_releases_the_port)
{
    size_t fds_before = open_fds();
    qv_http *h = start(NULL, NULL, NULL, 0);
    int port = qv_http_port(h);
    int fd = connect_to(AF_INET, port);
    send_all(fd, "GET /healthz HTTP/1.1\r\nHost: x\r\n", 32); /* headers not finished */
    qv_sleep_ms(50);

    uint64_t t0 = qv_now_ms();
    qv_http_stop(h);
    uint64_t took = qv_now_ms() - t0;
    cr_expect(took < 2000, "stop took %llu ms", (unsigned long long)took);

    struct pollfd p = {.fd = fd, .events = POLLIN};
    cr_expect_eq(poll(&p, 1, 2000), 1, "the client's connection was not closed");
    char c;
    cr_expect(recv(fd, &c, 1, MSG_DONTWAIT) <= 0, "data after stop");
    close(fd);

    /* Nothing listens any more: both the server's socket and its copy are closed. */
    cr_expect_eq(open_fds(), fds_before, "descriptors leaked by start/stop");
    int probe = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    int rc = connect(probe, (struct sockaddr *)&sa, sizeof(sa));
    cr_expect(rc != 0 && errno == ECONNREFUSED, "port %d still accepts connections", port);
    close(probe);

    /* And the port can be taken again at once. */
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", port);
    qv_http_opts o = {.addr = addr};
    qv_status err = qv_status_ok();
    cr_expect_eq(qv_http_start(&o, &h, &err), 0, "rebinding %s: %s", addr, err.msg);
    cr_expect_eq(qv_http_port(h), port);
    qv_http_stop(h);
    qv_http_stop(NULL);
    cr_expect_eq(qv_http_port(NULL), 0);
    assert_no_leaks();
}

Test(http, bad_addresses_are_einval_and_unbindable_ones_eunavail)
{
    static const char *const bad[] = {
        "",
        "nope",
        "127.0.0.1",
        "127.0.0.1:",
        "127.0.0.1:99999",
        "127.0.0.1:abc",
        "127.0.0.1:-1",
        "::1:80",
        "[::1",
        "[::1]80",
        "[nope]:80",
        "example.com:80",
        "1.2.3:80",
        ":80",
        "127.0.0.1:123456",
    };
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        qv_http_opts o = {.addr = bad[i]};
        qv_http *h = (qv_http *)&o; /* must be reset to NULL */
        qv_status err = qv_status_ok();
        int rc = qv_http_start(&o, &h, &err);
        cr_expect_eq(rc, QV_EINVAL, "'%s': %d %s", bad[i], rc, err.msg);
        cr_expect_eq(err.code, QV_EINVAL);
        cr_expect_null(h, "'%s'", bad[i]);
    }
    qv_http_opts o = {.addr = NULL};
    qv_http *h = NULL;
    qv_status err;
    cr_expect_eq(qv_http_start(&o, &h, &err), QV_EINVAL);
    cr_expect_eq(qv_http_start(NULL, &h, NULL), QV_EINVAL);

    /* A port somebody else listens on. */
    int other = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(other, (struct sockaddr *)&sa, sizeof(sa)), 0);
    cr_assert_eq(listen(other, 1), 0);
    socklen_t sl = sizeof(sa);
    getsockname(other, (struct sockaddr *)&sa, &sl);
    char addr[32];
    snprintf(addr, sizeof(addr), "127.0.0.1:%d", ntohs(sa.sin_port));
    o.addr = addr;
    int rc = qv_http_start(&o, &h, &err);
    cr_expect_eq(rc, QV_EUNAVAIL, "busy port: %d %s", rc, err.msg);
    cr_expect(strstr(err.msg, addr) != NULL, "message names the address: %s", err.msg);
    cr_expect(strstr(err.msg, strerror(EADDRINUSE)) != NULL, "message has the errno text: %s",
              err.msg);
    cr_expect_null(h);
    close(other);

    /* An address that is not local (TEST-NET-1). */
    o.addr = "192.0.2.1:0";
    rc = qv_http_start(&o, &h, &err);
    cr_expect_eq(rc, QV_EUNAVAIL, "non-local address: %d %s", rc, err.msg);
    cr_expect(strstr(err.msg, "192.0.2.1:0") != NULL, "%s", err.msg);

    o.addr = "127.0.0.1:0";
    o.idle_timeout_s = 100000;
    cr_expect_eq(qv_http_start(&o, &h, &err), QV_EINVAL, "an idle timeout over a day");
    assert_no_leaks();
}

Test(http, localhost_and_ipv6_loopback)
{
    qv_http_opts o = {.addr = "localhost:0"};
    qv_http *h = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv_http_start(&o, &h, &err), 0, "%s", err.msg);
    http_resp r = request(qv_http_port(h), "GET", "/healthz");
    cr_expect_eq(r.status, 200);
    resp_free(&r);
    qv_http_stop(h);

    o.addr = "[::1]:0";
    int rc = qv_http_start(&o, &h, &err);
    if (rc == QV_EUNAVAIL) {
        cr_log_warn("no IPv6 loopback here (%s); skipping the IPv6 half", err.msg);
        assert_no_leaks();
        return;
    }
    cr_assert_eq(rc, 0, "%s", err.msg);
    static const char req[] = "GET /healthz HTTP/1.1\r\nHost: [::1]\r\nConnection: close\r\n\r\n";
    r = exchange_on(AF_INET6, qv_http_port(h), req, sizeof(req) - 1);
    cr_expect_eq(r.status, 200, "%s", r.raw);
    cr_expect_str_eq(r.body, "ok\n");
    resp_free(&r);
    qv_http_stop(h);
    assert_no_leaks();
}
