/*
 * node/http.h - the node's small HTTP server for operators: metrics and probes.
 *
 * Serves, on its own address (separate from gRPC):
 *   GET /healthz  200 "ok\n" as long as the process answers (liveness)
 *   GET /readyz   200 "ready\n", or 503 "not ready: <reason>\n" (readiness)
 *   GET /metrics  200, the registry rendered by qv_metrics_render(), with Content-Type
 *                 "text/plain; version=0.0.4; charset=utf-8" (404 when no registry was given)
 * HEAD works on the same paths (headers only). Other paths answer 404; other methods on these
 * paths answer 405 with "Allow: GET, HEAD". A query string is ignored.
 *
 * Built on libmicrohttpd with its own threads (QV_HTTP_THREADS polling threads, epoll on Linux):
 * a connection that sends nothing or sends slowly holds no thread, and is closed after
 * idle_timeout_s without progress. At most QV_HTTP_MAX_CONNECTIONS connections are open at once
 * (QV_HTTP_MAX_PER_IP from one address); further ones are refused. A request's headers must fit
 * in 32 KiB.
 *
 * Caveats: plain HTTP without authentication. Bind it to a private or loopback address; the
 * metrics reveal method names, collection names and error rates.
 */
#ifndef QV_HTTP_H
#define QV_HTTP_H

#include "common/common.h"
#include "node/metrics.h"

#include <stdbool.h>
#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QV_HTTP_THREADS           2
#define QV_HTTP_MAX_CONNECTIONS   64
#define QV_HTTP_MAX_PER_IP        32
#define QV_HTTP_DEFAULT_TIMEOUT_S 10

typedef struct qv_http qv_http;

typedef struct qv_http_opts {
    const char *addr;    /* "HOST:PORT": numeric IPv4, [numeric IPv6] or localhost; port 0 picks a
                            free one (see qv_http_port). Only this address is bound. */
    qv_metrics *metrics; /* rendered at GET /metrics; NULL: /metrics answers 404. Not owned; must
                            outlive the server. */
    /* Readiness: returns true when ready; otherwise writes a reason (NUL-terminated, truncated to
     * why_len) into why. Called on a server thread, possibly on two at once, for every /readyz
     * request; it must be quick and thread-safe. NULL: always ready. */
    bool (*ready)(void *user, char *why, size_t why_len);
    void *user;
    unsigned idle_timeout_s; /* close a connection idle this long; 0: QV_HTTP_DEFAULT_TIMEOUT_S */
} qv_http_opts;

/* Binds opts->addr and starts serving on background threads. Returns 0 with *out set; QV_EINVAL
 * for a bad address or options; QV_EUNAVAIL when the address cannot be bound (the message names
 * the address and the errno text); QV_ERESOURCE when the server cannot start. On error nothing is
 * left running and *out is NULL. err may be NULL. */
int qv_http_start(const qv_http_opts *opts, qv_http **out, qv_status *err);

/* The bound TCP port; 0 for NULL. */
int qv_http_port(const qv_http *h);

/* Closes every connection (a request in progress is cut off), joins the server threads, closes
 * the listening socket and frees the server. After it returns neither metrics nor ready is
 * called again. NULL is ignored. */
void qv_http_stop(qv_http *h);

#ifdef __cplusplus
}
#endif

#endif /* QV_HTTP_H */
