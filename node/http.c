/*
 * Operator HTTP endpoints (node/http.h) on libmicrohttpd.
 *
 * We bind and listen ourselves, so a bind failure comes back with its errno and port 0 can be
 * read with getsockname, then hand MHD a dup of the socket (MHD_OPTION_LISTEN_SOCKET). Whether
 * MHD closes a socket it was given differs between its versions and between its success and
 * failure paths, so the original stays open with us: after MHD is done we close the dup only if
 * it still names the same socket (same inode), then the original.
 *
 * A 404 or 405 is answered on the first call of the access handler, before any request body is
 * read, and MHD then closes the connection. A GET or HEAD of one of our paths is answered on the
 * second call, when MHD has the whole request, so that keep-alive works; a body sent with one
 * drops the connection. Responses are small static strings except /metrics, whose rendered
 * buffer MHD frees with free() after sending.
 */
#define _GNU_SOURCE
#include "node/http.h"

#include <microhttpd.h>

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#define HTTP_LISTEN_BACKLOG   64
#define HTTP_MEMORY_PER_CONN  (32u * 1024u) /* request line and headers must fit */
#define HTTP_READY_REASON_MAX 256
#define CT_TEXT               "text/plain; charset=utf-8"
#define CT_METRICS            "text/plain; version=0.0.4; charset=utf-8"
#define ALLOWED_METHODS       "GET, HEAD"

struct qv_http {
    struct MHD_Daemon *daemon;
    atomic_bool serving; /* start-up is over: MHD's messages are then about clients */
    int fd;              /* our listening socket */
    int mhd_fd;          /* the dup handed to MHD */
    int port;
    qv_metrics *metrics;
    bool (*ready)(void *user, char *why, size_t why_len);
    void *user;
};

typedef enum route {
    ROUTE_NONE,
    ROUTE_HEALTHZ,
    ROUTE_READYZ,
    ROUTE_METRICS,
} route;

/* ---- address -------------------------------------------------------------------------------- */

/* Parses "HOST:PORT" (numeric IPv4, "[numeric IPv6]" or "localhost") into ss. */
static bool parse_addr(const char *addr, struct sockaddr_storage *ss, socklen_t *ss_len)
{
    char host[64];
    const char *port_text;
    bool v6 = false;
    if (addr == NULL)
        return false;
    if (addr[0] == '[') {
        const char *close = strchr(addr, ']');
        if (close == NULL || close[1] != ':' || (size_t)(close - addr - 1) >= sizeof(host))
            return false;
        memcpy(host, addr + 1, (size_t)(close - addr - 1));
        host[close - addr - 1] = '\0';
        port_text = close + 2;
        v6 = true;
    } else {
        const char *colon = strrchr(addr, ':');
        if (colon == NULL || (size_t)(colon - addr) >= sizeof(host))
            return false;
        memcpy(host, addr, (size_t)(colon - addr));
        host[colon - addr] = '\0';
        port_text = colon + 1;
    }
    size_t nd = strlen(port_text);
    if (nd == 0 || nd > 5 || strspn(port_text, "0123456789") != nd)
        return false;
    unsigned long port = strtoul(port_text, NULL, 10);
    if (port > 65535)
        return false;

    memset(ss, 0, sizeof(*ss));
    if (v6) {
        struct sockaddr_in6 *sa = (struct sockaddr_in6 *)ss;
        sa->sin6_family = AF_INET6;
        sa->sin6_port = htons((uint16_t)port);
        if (inet_pton(AF_INET6, host, &sa->sin6_addr) != 1)
            return false;
        *ss_len = sizeof(*sa);
        return true;
    }
    struct sockaddr_in *sa = (struct sockaddr_in *)ss;
    sa->sin_family = AF_INET;
    sa->sin_port = htons((uint16_t)port);
    if (strcmp(host, "localhost") == 0)
        snprintf(host, sizeof(host), "127.0.0.1");
    /* inet_pton accepts only dotted quads, so "1", "" and hostnames are refused here. */
    if (inet_pton(AF_INET, host, &sa->sin_addr) != 1)
        return false;
    *ss_len = sizeof(*sa);
    return true;
}

/* Creates, binds and listens; returns the socket or -1 with errno set. */
static int listen_on(const struct sockaddr_storage *ss, socklen_t len)
{
    int fd = socket(ss->ss_family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
    if (fd < 0)
        return -1;
    int one = 1;
    /* Restarts must not wait for TIME_WAIT; on Linux this never lets two listeners share. */
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0)
        goto fail;
    if (ss->ss_family == AF_INET6 &&
        setsockopt(fd, IPPROTO_IPV6, IPV6_V6ONLY, &one, sizeof(one)) != 0)
        goto fail;
    if (bind(fd, (const struct sockaddr *)ss, len) != 0)
        goto fail;
    if (listen(fd, HTTP_LISTEN_BACKLOG) != 0)
        goto fail;
    return fd;

fail:;
    int saved = errno;
    close(fd);
    errno = saved;
    return -1;
}

static int bound_port(int fd)
{
    struct sockaddr_storage ss;
    socklen_t len = sizeof(ss);
    if (getsockname(fd, (struct sockaddr *)&ss, &len) != 0)
        return 0;
    if (ss.ss_family == AF_INET6)
        return ntohs(((struct sockaddr_in6 *)&ss)->sin6_port);
    return ntohs(((struct sockaddr_in *)&ss)->sin_port);
}

/* Closes MHD's copy of the socket unless MHD already did (the number may then name another file
 * opened meanwhile, which the inode check leaves alone), then our own. */
static void close_sockets(int fd, int mhd_fd)
{
    struct stat a, b;
    if (mhd_fd >= 0 && fstat(fd, &a) == 0 && fstat(mhd_fd, &b) == 0 && a.st_dev == b.st_dev &&
        a.st_ino == b.st_ino)
        close(mhd_fd);
    close(fd);
}

/* ---- requests ------------------------------------------------------------------------------- */

/* MHD reports start-up failures and, once serving, every malformed request: the latter come
 * from clients and go out at debug level so that a flood of garbage cannot flood the log. */
static void mhd_log(void *cls, const char *fmt, va_list ap)
{
    const qv_http *h = cls;
    qv_log_level level = atomic_load(&h->serving) ? QV_LOG_DEBUG : QV_LOG_WARN;
    if (level < qv_log_get_level())
        return;
    char msg[512];
    vsnprintf(msg, sizeof(msg), fmt, ap);
    size_t n = strlen(msg);
    while (n > 0 && (msg[n - 1] == '\n' || msg[n - 1] == '\r'))
        msg[--n] = '\0';
    qv_log(level, "http", "%s", msg);
}

static route route_of(const char *url)
{
    if (url == NULL)
        return ROUTE_NONE;
    if (strcmp(url, "/healthz") == 0)
        return ROUTE_HEALTHZ;
    if (strcmp(url, "/readyz") == 0)
        return ROUTE_READYZ;
    if (strcmp(url, "/metrics") == 0)
        return ROUTE_METRICS;
    return ROUTE_NONE;
}

/* Queues `resp` (which may be NULL when it could not be built: the connection is then closed)
 * with its headers, and drops our reference. */
static enum MHD_Result send_response(struct MHD_Connection *conn, unsigned status,
                                     struct MHD_Response *resp, const char *content_type)
{
    if (resp == NULL)
        return MHD_NO;
    enum MHD_Result r = MHD_YES;
    if (MHD_add_response_header(resp, MHD_HTTP_HEADER_CONTENT_TYPE, content_type) != MHD_YES ||
        MHD_add_response_header(resp, MHD_HTTP_HEADER_CACHE_CONTROL, "no-store") != MHD_YES ||
        (status == MHD_HTTP_METHOD_NOT_ALLOWED &&
         MHD_add_response_header(resp, MHD_HTTP_HEADER_ALLOW, ALLOWED_METHODS) != MHD_YES))
        r = MHD_NO;
    if (r == MHD_YES)
        r = MHD_queue_response(conn, status, resp);
    MHD_destroy_response(resp);
    return r;
}

static enum MHD_Result send_static(struct MHD_Connection *conn, unsigned status, const char *text)
{
    struct MHD_Response *resp =
        MHD_create_response_from_buffer(strlen(text), (void *)text, MHD_RESPMEM_PERSISTENT);
    return send_response(conn, status, resp, CT_TEXT);
}

static enum MHD_Result serve_readyz(qv_http *h, struct MHD_Connection *conn)
{
    if (h->ready == NULL)
        return send_static(conn, MHD_HTTP_OK, "ready\n");
    char why[HTTP_READY_REASON_MAX];
    why[0] = '\0';
    if (h->ready(h->user, why, sizeof(why)))
        return send_static(conn, MHD_HTTP_OK, "ready\n");
    why[sizeof(why) - 1] = '\0';
    char body[HTTP_READY_REASON_MAX + 16];
    int n = snprintf(body, sizeof(body), "not ready: %s\n", why[0] ? why : "(no reason given)");
    size_t len = n < 0 ? 0 : (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1;
    struct MHD_Response *resp = MHD_create_response_from_buffer(len, body, MHD_RESPMEM_MUST_COPY);
    return send_response(conn, MHD_HTTP_SERVICE_UNAVAILABLE, resp, CT_TEXT);
}

static enum MHD_Result serve_metrics(qv_http *h, struct MHD_Connection *conn)
{
    if (h->metrics == NULL)
        return send_static(conn, MHD_HTTP_NOT_FOUND, "metrics are not enabled\n");
    char *text = NULL;
    size_t len = 0;
    if (qv_metrics_render(h->metrics, &text, &len) != 0)
        return send_static(conn, MHD_HTTP_INTERNAL_SERVER_ERROR, "cannot render metrics\n");
    struct MHD_Response *resp = MHD_create_response_from_buffer_with_free_callback(len, text, free);
    if (resp == NULL)
        free(text);
    return send_response(conn, MHD_HTTP_OK, resp, CT_METRICS);
}

static enum MHD_Result on_request(void *cls, struct MHD_Connection *conn, const char *url,
                                  const char *method, const char *version, const char *upload_data,
                                  size_t *upload_data_size, void **con_cls)
{
    static int headers_seen; /* its address marks a request past its first call */
    qv_http *h = cls;
    route r = route_of(url);
    /* Errors are answered at once; MHD then closes the connection rather than read a body. */
    if (r == ROUTE_NONE)
        return send_static(conn, MHD_HTTP_NOT_FOUND, "not found\n");
    if (method == NULL ||
        (strcmp(method, MHD_HTTP_METHOD_GET) != 0 && strcmp(method, MHD_HTTP_METHOD_HEAD) != 0))
        return send_static(conn, MHD_HTTP_METHOD_NOT_ALLOWED, "method not allowed\n");
    /* Good requests are answered on the second call, once MHD knows the request is complete, so
     * the connection can stay open for the next one (a scraper's keep-alive). */
    if (*con_cls == NULL) {
        *con_cls = &headers_seen;
        return MHD_YES;
    }
    if (*upload_data_size != 0)
        return MHD_NO; /* a GET or HEAD with a body: not ours to read, drop the connection */
    switch (r) {
    case ROUTE_HEALTHZ:
        return send_static(conn, MHD_HTTP_OK, "ok\n");
    case ROUTE_READYZ:
        return serve_readyz(h, conn);
    case ROUTE_METRICS:
        return serve_metrics(h, conn);
    case ROUTE_NONE:
        break;
    }
    return MHD_NO;
}

/* ---- lifecycle ------------------------------------------------------------------------------ */

int qv_http_start(const qv_http_opts *opts, qv_http **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (out == NULL || opts == NULL) {
        *err = qv_status_make(QV_EINVAL, "HTTP server options are required");
        return QV_EINVAL;
    }
    *out = NULL;
    struct sockaddr_storage ss;
    socklen_t ss_len = 0;
    if (!parse_addr(opts->addr, &ss, &ss_len)) {
        *err = qv_status_make(QV_EINVAL,
                              "bad HTTP address '%s' (want IPv4:PORT, [IPv6]:PORT or "
                              "localhost:PORT)",
                              opts->addr ? opts->addr : "(null)");
        return QV_EINVAL;
    }
    if (opts->idle_timeout_s > 24u * 3600u) {
        *err = qv_status_make(QV_EINVAL, "HTTP idle timeout of %u s is more than a day",
                              opts->idle_timeout_s);
        return QV_EINVAL;
    }
    qv_http *h = calloc(1, sizeof(*h));
    if (h == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory starting the HTTP server");
        return QV_ERESOURCE;
    }
    h->metrics = opts->metrics;
    h->ready = opts->ready;
    h->user = opts->user;
    h->mhd_fd = -1;
    atomic_init(&h->serving, false);
    h->fd = listen_on(&ss, ss_len);
    if (h->fd < 0) {
        int e = errno;
        *err = qv_status_make(QV_EUNAVAIL, "cannot listen on %s: %s", opts->addr, strerror(e));
        goto fail_listen;
    }
    h->port = bound_port(h->fd);
    h->mhd_fd = fcntl(h->fd, F_DUPFD_CLOEXEC, 0);
    if (h->mhd_fd < 0) {
        *err =
            qv_status_make(QV_ERESOURCE, "cannot duplicate the HTTP socket: %s", strerror(errno));
        goto fail_dup;
    }
    unsigned timeout = opts->idle_timeout_s ? opts->idle_timeout_s : QV_HTTP_DEFAULT_TIMEOUT_S;
    unsigned flags = MHD_USE_AUTO_INTERNAL_THREAD | MHD_USE_ITC | MHD_USE_ERROR_LOG;
    if (ss.ss_family == AF_INET6)
        flags |= MHD_USE_IPv6;
    /* The logger goes first so that MHD's own start-up messages reach our log. */
    h->daemon = MHD_start_daemon(
        flags, 0, NULL, NULL, on_request, h, MHD_OPTION_EXTERNAL_LOGGER, mhd_log, (void *)h,
        MHD_OPTION_LISTEN_SOCKET, (MHD_socket)h->mhd_fd, MHD_OPTION_THREAD_POOL_SIZE,
        (unsigned)QV_HTTP_THREADS, MHD_OPTION_CONNECTION_LIMIT, (unsigned)QV_HTTP_MAX_CONNECTIONS,
        MHD_OPTION_PER_IP_CONNECTION_LIMIT, (unsigned)QV_HTTP_MAX_PER_IP,
        MHD_OPTION_CONNECTION_TIMEOUT, timeout, MHD_OPTION_CONNECTION_MEMORY_LIMIT,
        (size_t)HTTP_MEMORY_PER_CONN, MHD_OPTION_END);
    if (h->daemon == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "cannot start the HTTP server on %s", opts->addr);
        goto fail_daemon;
    }
    atomic_store(&h->serving, true);
    qv_log_info("http", "serving /metrics, /healthz and /readyz on %s (port %d)", opts->addr,
                h->port);
    *out = h;
    return 0;

fail_daemon:
fail_dup:
    close_sockets(h->fd, h->mhd_fd);
fail_listen:
    free(h);
    return err->code;
}

int qv_http_port(const qv_http *h)
{
    return h ? h->port : 0;
}

void qv_http_stop(qv_http *h)
{
    if (h == NULL)
        return;
    MHD_stop_daemon(h->daemon);
    close_sockets(h->fd, h->mhd_fd);
    free(h);
}
