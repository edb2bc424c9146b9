/*
 * gRPC server over the C core API.
 *
 * Map of this file:
 *   - tags: every completion-queue event carries a pointer to a `tag` whose kind says what
 *     finished (a new registered call, a new unregistered call, a call's close, a call's reply,
 *     the server's shutdown).
 *   - srv_call: one incoming call. It is referenced by its pending RECV_CLOSE_ON_SERVER op and by
 *     its handler/reply path; the last of the two to finish frees it.
 *   - the poller thread runs the completion queue; handlers run on the worker pool.
 *   - shutdown: grpc_server_shutdown_and_notify, wait for the grace period, cancel the rest, wait
 *     for the shutdown tag, drain the pool, destroy the server, then shut the queue down.
 */
#define _GNU_SOURCE
#include "common/rpc/rpc.h"
#include "common/rpc/rpc_internal.h"

#include <grpc/byte_buffer.h>
#include <grpc/byte_buffer_reader.h>
#include <grpc/grpc.h>
#include <grpc/grpc_security.h>
#include <grpc/support/alloc.h>
#include <grpc/support/time.h>

#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* Calls requested in advance per method, so a burst of calls need not wait for the poller. */
#define PREPOSTED_PER_METHOD 16

typedef enum tag_kind {
    TAG_NEW_REGISTERED,
    TAG_NEW_GENERIC,
    TAG_CLOSE,
    TAG_REPLY,
    TAG_GENERIC_DONE,
    TAG_SHUTDOWN,
} tag_kind;

typedef struct tag {
    tag_kind kind;
    void *owner;
} tag;

typedef struct method {
    char *name;
    qv_rpc_handler fn;
    void *user;
    void *registered; /* grpc_server_register_method handle */
} method;

typedef struct srv_call srv_call;

struct qv_rpc_ctx {
    srv_call *call;
};

struct srv_call {
    tag t_new, t_close, t_reply;
    qv_rpc_server *srv;
    method *m; /* NULL for an unregistered (generic) call */
    grpc_call *call;
    gpr_timespec deadline;
    grpc_call_details details; /* generic calls only */
    grpc_metadata_array md;
    grpc_byte_buffer *payload;
    int close_cancelled; /* written by RECV_CLOSE_ON_SERVER */
    bool active;         /* counted in srv->active (a real call, not a request slot) */
    uint64_t arrived_ns; /* qv_now_ns() when the poller received the call */
    atomic_bool closed_cancelled;
    atomic_int refs;
    /* reply */
    qv_rpc_ctx ctx;
    char *peer;
    uint8_t *resp;
    size_t resp_len;
    bool resp_refused;    /* qv_rpc_ctx_response was asked for more than the message limit */
    size_t payload_bytes; /* counted in srv->queued_bytes until the handler is done */
    int code;
    char msg[QV_STATUS_MSG_MAX];
    grpc_byte_buffer *send_buf;
    grpc_slice status_slice;
};

struct qv_rpc_server {
    grpc_server *server;
    grpc_completion_queue *cq;
    grpc_server_credentials *creds;
    qv_pool *pool;
    pthread_t poller;
    bool poller_started;
    char *addr;
    int port;
    unsigned workers;
    size_t max_message;
    size_t max_queued;
    size_t max_queued_bytes;
    atomic_size_t queued_bytes; /* request bytes of calls queued or being handled */
    qv_rpc_tls tls;
    bool has_tls;
    void (*on_call_done)(const char *method, int code, uint64_t latency_us, void *user);
    void *on_call_done_user;

    method *methods;
    size_t nmethods, cap_methods;

    atomic_bool started;
    atomic_bool stopping;
    atomic_bool hard_cancel; /* grace period over */
    atomic_size_t active;    /* calls received and not yet freed */

    tag t_shutdown;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool shutdown_notified; /* the TAG_SHUTDOWN event arrived */
    bool shut_down;         /* qv_rpc_server_shutdown completed */
    bool grpc_inited;
};

static void post_registered(qv_rpc_server *srv, method *m);
static void post_generic(qv_rpc_server *srv);

/* --------------------------------------------------------------------------------------------- */

static srv_call *call_new(qv_rpc_server *srv, method *m)
{
    srv_call *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->srv = srv;
    c->m = m;
    c->t_new.kind = m ? TAG_NEW_REGISTERED : TAG_NEW_GENERIC;
    c->t_new.owner = c;
    c->t_close.kind = TAG_CLOSE;
    c->t_close.owner = c;
    c->t_reply.kind = m ? TAG_REPLY : TAG_GENERIC_DONE;
    c->t_reply.owner = c;
    c->ctx.call = c;
    c->status_slice = grpc_empty_slice();
    grpc_metadata_array_init(&c->md);
    grpc_call_details_init(&c->details);
    atomic_init(&c->refs, 0);
    atomic_init(&c->closed_cancelled, false);
    return c;
}

static void call_free(srv_call *c)
{
    if (c->call != NULL)
        grpc_call_unref(c->call);
    if (c->payload != NULL)
        grpc_byte_buffer_destroy(c->payload);
    if (c->send_buf != NULL)
        grpc_byte_buffer_destroy(c->send_buf);
    grpc_slice_unref(c->status_slice);
    grpc_metadata_array_destroy(&c->md);
    grpc_call_details_destroy(&c->details);
    if (c->peer != NULL)
        gpr_free(c->peer);
    free(c->resp);
    free(c);
}

static void call_unref(srv_call *c)
{
    if (atomic_fetch_sub(&c->refs, 1) == 1) {
        qv_rpc_server *srv = c->srv;
        bool counted = c->active;
        call_free(c);
        if (counted)
            atomic_fetch_sub(&srv->active, 1);
    }
}

/* Runs the completion hook for a call whose status was just handed to gRPC. */
static void report_done(qv_rpc_server *srv, const char *name, int code, uint64_t arrived_ns)
{
    if (srv->on_call_done == NULL)
        return;
    uint64_t now = qv_now_ns();
    uint64_t latency_us = now > arrived_ns ? (now - arrived_ns) / 1000 : 0;
    srv->on_call_done(name, code, latency_us, srv->on_call_done_user);
}

/* Sends the reply (message on success) and the status in one batch. Called once per call. */
static void send_reply(srv_call *c)
{
    grpc_op ops[3];
    size_t n = 0;
    memset(ops, 0, sizeof(ops));

    ops[n].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[n].data.send_initial_metadata.count = 0;
    n++;
    if (c->code == QV_OK) {
        grpc_slice s = c->resp_len
                           ? grpc_slice_from_copied_buffer((const char *)c->resp, c->resp_len)
                           : grpc_empty_slice();
        c->send_buf = grpc_raw_byte_buffer_create(&s, 1);
        grpc_slice_unref(s);
        ops[n].op = GRPC_OP_SEND_MESSAGE;
        ops[n].data.send_message.send_message = c->send_buf;
        n++;
    }
    grpc_slice_unref(c->status_slice);
    c->status_slice = c->msg[0] ? grpc_slice_from_copied_string(c->msg) : grpc_empty_slice();
    ops[n].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[n].data.send_status_from_server.trailing_metadata_count = 0;
    ops[n].data.send_status_from_server.status = (grpc_status_code)(-c->code);
    ops[n].data.send_status_from_server.status_details = &c->status_slice;
    n++;

    /* Once the batch starts, the poller may free the call: keep what the hook needs. */
    qv_rpc_server *srv = c->srv;
    const char *name = c->m->name;
    int code = c->code;
    uint64_t arrived = c->arrived_ns;
    grpc_call_error e = grpc_call_start_batch(c->call, ops, n, &c->t_reply, NULL);
    if (e != GRPC_CALL_OK) {
        qv_log_error("rpc", "start_batch(reply) failed for %s: %d", c->m->name, (int)e);
        call_unref(c); /* the reply tag will never come */
        code = QV_EINTERNAL;
    }
    report_done(srv, name, code, arrived);
}

static void run_handler(void *arg)
{
    srv_call *c = arg;
    const uint8_t *req = NULL;
    size_t req_len = 0;
    grpc_slice flat = grpc_empty_slice();

    bool unreadable = false;
    if (c->payload != NULL) {
        grpc_byte_buffer_reader reader;
        if (grpc_byte_buffer_reader_init(&reader, c->payload)) {
            flat = grpc_byte_buffer_reader_readall(&reader);
            grpc_byte_buffer_reader_destroy(&reader);
            req = GRPC_SLICE_START_PTR(flat);
            req_len = GRPC_SLICE_LENGTH(flat);
        } else {
            unreadable = true; /* e.g. a compression gRPC could not undo */
        }
    }

    if (unreadable) {
        c->code = QV_EINTERNAL;
        snprintf(c->msg, sizeof(c->msg), "cannot read the request message");
    } else if (qv_rpc_ctx_cancelled(&c->ctx)) {
        c->code = QV_ECANCELLED;
        snprintf(c->msg, sizeof(c->msg), "call cancelled before a worker took it");
    } else if (c->payload == NULL) {
        /* The client closed without sending a message: a unary protocol violation. */
        c->code = QV_EINTERNAL;
        snprintf(c->msg, sizeof(c->msg), "unary call without a request message");
    } else {
        int rc = c->m->fn(&c->ctx, req ? req : (const uint8_t *)"", req_len, c->m->user);
        if (rc > 0 || rc < QV_EAUTH) {
            qv_log_error("rpc", "handler for %s returned invalid code %d", c->m->name, rc);
            rc = QV_EINTERNAL;
        }
        if (rc == QV_OK && c->resp_refused)
            rc = QV_ERESOURCE; /* the message was set by qv_rpc_ctx_response */
        c->code = rc;
        if (rc == QV_OK) {
            c->msg[0] = '\0';
        } else {
            free(c->resp);
            c->resp = NULL;
            c->resp_len = 0;
            if (c->msg[0] == '\0')
                snprintf(c->msg, sizeof(c->msg), "%s", qv_strerror(rc));
        }
    }
    grpc_slice_unref(flat);
    atomic_fetch_sub(&c->srv->queued_bytes, c->payload_bytes);
    c->payload_bytes = 0;
    send_reply(c);
}

/* A registered call arrived: keep the method's queue of requested calls full, watch for the
 * client going away, and hand the call to a worker. */
static void on_new_registered(srv_call *c, bool ok)
{
    qv_rpc_server *srv = c->srv;
    if (!ok) { /* the server is shutting down; this request slot is done */
        call_free(c);
        return;
    }
    c->arrived_ns = qv_now_ns();
    c->active = true;
    atomic_fetch_add(&srv->active, 1);
    if (!atomic_load(&srv->stopping))
        post_registered(srv, c->m);

    c->deadline = gpr_convert_clock_type(c->deadline, GPR_CLOCK_MONOTONIC);
    atomic_store(&c->refs, 2);

    grpc_op op;
    memset(&op, 0, sizeof(op));
    op.op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    op.data.recv_close_on_server.cancelled = &c->close_cancelled;
    if (grpc_call_start_batch(c->call, &op, 1, &c->t_close, NULL) != GRPC_CALL_OK)
        call_unref(c);

    /* Bound what waiting calls hold in memory, by count and by request bytes. */
    size_t bytes = c->payload ? grpc_byte_buffer_length(c->payload) : 0;
    size_t held = atomic_fetch_add(&srv->queued_bytes, bytes) + bytes;
    c->payload_bytes = bytes;
    size_t queued = qv_pool_queued(srv->pool);
    int rc = queued >= srv->max_queued || (held > srv->max_queued_bytes && held != bytes)
                 ? QV_ERESOURCE
                 : qv_pool_submit(srv->pool, run_handler, c);
    if (rc != 0) {
        atomic_fetch_sub(&srv->queued_bytes, bytes);
        c->payload_bytes = 0;
        c->code = rc == QV_ERESOURCE ? QV_ERESOURCE : QV_EUNAVAIL;
        snprintf(c->msg, sizeof(c->msg), "%s",
                 rc == QV_ERESOURCE ? "server overloaded: too many queued calls or bytes"
                                    : "server shutting down");
        send_reply(c);
    }
}

static void on_new_generic(srv_call *c, bool ok)
{
    qv_rpc_server *srv = c->srv;
    if (!ok) {
        call_free(c);
        return;
    }
    uint64_t arrived = qv_now_ns();
    if (!atomic_load(&srv->stopping))
        post_generic(srv);

    char *mname = grpc_slice_to_c_string(c->details.method);
    snprintf(c->msg, sizeof(c->msg), "unknown method %s", mname);
    gpr_free(mname);
    c->status_slice = grpc_slice_from_copied_string(c->msg);

    grpc_op ops[3];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[1].op = GRPC_OP_SEND_STATUS_FROM_SERVER;
    ops[1].data.send_status_from_server.status = GRPC_STATUS_UNIMPLEMENTED;
    ops[1].data.send_status_from_server.status_details = &c->status_slice;
    ops[2].op = GRPC_OP_RECV_CLOSE_ON_SERVER;
    ops[2].data.recv_close_on_server.cancelled = &c->close_cancelled;
    int code = QV_EUNIMPL;
    if (grpc_call_start_batch(c->call, ops, 3, &c->t_reply, NULL) != GRPC_CALL_OK) {
        call_free(c);
        code = QV_EINTERNAL;
    }
    /* Unregistered names come from clients: one label for all of them bounds the cardinality. */
    report_done(srv, "unknown", code, arrived);
}

static void post_registered(qv_rpc_server *srv, method *m)
{
    srv_call *c = call_new(srv, m);
    if (c == NULL) {
        qv_log_error("rpc", "out of memory requesting a call for %s", m->name);
        return;
    }
    grpc_call_error e =
        grpc_server_request_registered_call(srv->server, m->registered, &c->call, &c->deadline,
                                            &c->md, &c->payload, srv->cq, srv->cq, &c->t_new);
    if (e != GRPC_CALL_OK) {
        qv_log_error("rpc", "request_registered_call(%s) failed: %d", m->name, (int)e);
        call_free(c);
    }
}

static void post_generic(qv_rpc_server *srv)
{
    srv_call *c = call_new(srv, NULL);
    if (c == NULL)
        return;
    grpc_call_error e = grpc_server_request_call(srv->server, &c->call, &c->details, &c->md,
                                                 srv->cq, srv->cq, &c->t_new);
    if (e != GRPC_CALL_OK)
        call_free(c);
}

static void *poller_main(void *arg)
{
    qv_rpc_server *srv = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type != GRPC_OP_COMPLETE)
            continue;
        tag *t = ev.tag;
        switch (t->kind) {
        case TAG_NEW_REGISTERED:
            on_new_registered(t->owner, ev.success);
            break;
        case TAG_NEW_GENERIC:
            on_new_generic(t->owner, ev.success);
            break;
        case TAG_CLOSE: {
            srv_call *c = t->owner;
            if (c->close_cancelled)
                atomic_store(&c->closed_cancelled, true);
            call_unref(c);
            break;
        }
        case TAG_REPLY:
            call_unref(t->owner);
            break;
        case TAG_GENERIC_DONE:
            call_free(t->owner);
            break;
        case TAG_SHUTDOWN:
            pthread_mutex_lock(&srv->mu);
            srv->shutdown_notified = true;
            pthread_cond_broadcast(&srv->cv);
            pthread_mutex_unlock(&srv->mu);
            break;
        }
    }
    return NULL;
}

/* --------------------------------------------------------------------------------------------- */

int qv_rpc_server_create(const qv_rpc_server_opts *opts, qv_rpc_server **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (out == NULL || opts == NULL || opts->addr == NULL || opts->addr[0] == '\0') {
        *err = qv_status_make(QV_EINVAL, "server address is required");
        return QV_EINVAL;
    }
    *out = NULL;
    if (opts->tls != NULL && (opts->tls->cert_pem == NULL || opts->tls->key_pem == NULL)) {
        *err = qv_status_make(QV_EINVAL, "TLS server needs a certificate and a private key");
        return QV_EINVAL;
    }
    if (opts->tls != NULL && opts->tls->require_client_cert && opts->tls->ca_pem == NULL) {
        *err = qv_status_make(QV_EINVAL, "requiring client certificates needs a CA to verify "
                                         "them against");
        return QV_EINVAL;
    }
    if (opts->workers > 4096) {
        *err = qv_status_make(QV_EINVAL, "%u workers is more than 4096", opts->workers);
        return QV_EINVAL;
    }
    qv_rpc_server *srv = calloc(1, sizeof(*srv));
    if (srv == NULL)
        goto fail_alloc;
    srv->addr = strdup(opts->addr);
    if (srv->addr == NULL)
        goto fail_addr;
    if (opts->tls != NULL) {
        if (qv__rpc_tls_copy(&srv->tls, opts->tls) != 0)
            goto fail_tls;
        srv->has_tls = true;
    }
    long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
    srv->workers = opts->workers ? opts->workers : (unsigned)(ncpu > 2 ? ncpu : 2);
    srv->max_message =
        opts->max_message_bytes ? opts->max_message_bytes : QV_RPC_DEFAULT_MAX_MESSAGE;
    if (srv->max_message > INT32_MAX)
        srv->max_message = INT32_MAX;
    srv->max_queued = opts->max_queued_calls ? opts->max_queued_calls : 65536;
    srv->max_queued_bytes = opts->max_queued_bytes ? opts->max_queued_bytes : (size_t)1 << 30;
    srv->on_call_done = opts->on_call_done;
    srv->on_call_done_user = opts->on_call_done_user;
    atomic_init(&srv->queued_bytes, 0);
    pthread_mutex_init(&srv->mu, NULL);
    pthread_condattr_t cattr;
    pthread_condattr_init(&cattr);
    pthread_condattr_setclock(&cattr, CLOCK_MONOTONIC);
    pthread_cond_init(&srv->cv, &cattr);
    pthread_condattr_destroy(&cattr);
    atomic_init(&srv->active, 0);
    atomic_init(&srv->started, false);
    atomic_init(&srv->stopping, false);
    atomic_init(&srv->hard_cancel, false);
    srv->t_shutdown.kind = TAG_SHUTDOWN;
    srv->t_shutdown.owner = srv;

    qv__rpc_route_grpc_logs();
    grpc_init();
    srv->grpc_inited = true;
    grpc_arg args[3];
    args[0].type = GRPC_ARG_INTEGER;
    args[0].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
    args[0].value.integer = (int)srv->max_message;
    args[1].type = GRPC_ARG_INTEGER;
    args[1].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
    args[1].value.integer = (int)srv->max_message;
    /* gRPC turns SO_REUSEPORT on by default: a second process would then silently share the
     * port instead of failing to bind. */
    args[2].type = GRPC_ARG_INTEGER;
    args[2].key = GRPC_ARG_ALLOW_REUSEPORT;
    args[2].value.integer = 0;
    grpc_channel_args cargs = {.num_args = 3, .args = args};
    srv->server = grpc_server_create(&cargs, NULL);
    if (srv->server == NULL)
        goto fail_server;
    srv->cq = grpc_completion_queue_create_for_next(NULL);
    grpc_server_register_completion_queue(srv->server, srv->cq, NULL);
    *out = srv;
    return 0;

fail_server:
    grpc_shutdown();
    qv_rpc_tls_free(&srv->tls);
fail_tls:
    free(srv->addr);
fail_addr:
    free(srv);
fail_alloc:
    *err = qv_status_make(QV_ERESOURCE, "out of memory creating the RPC server");
    return QV_ERESOURCE;
}

int qv_rpc_server_register(qv_rpc_server *srv, const char *name, qv_rpc_handler fn, void *user)
{
    if (srv == NULL || name == NULL || name[0] != '/' || fn == NULL)
        return QV_EINVAL;
    if (atomic_load(&srv->started))
        return QV_EPRECONDITION;
    for (size_t i = 0; i < srv->nmethods; i++)
        if (strcmp(srv->methods[i].name, name) == 0)
            return QV_EEXIST;
    if (srv->nmethods == srv->cap_methods) {
        size_t cap = srv->cap_methods ? srv->cap_methods * 2 : 16;
        method *m = realloc(srv->methods, cap * sizeof(*m));
        if (m == NULL)
            return QV_ERESOURCE;
        srv->methods = m;
        srv->cap_methods = cap;
    }
    method *m = &srv->methods[srv->nmethods];
    m->name = strdup(name);
    if (m->name == NULL)
        return QV_ERESOURCE;
    m->registered = grpc_server_register_method(srv->server, name, NULL,
                                                GRPC_SRM_PAYLOAD_READ_INITIAL_BYTE_BUFFER, 0);
    if (m->registered == NULL) {
        free(m->name);
        return QV_EINVAL;
    }
    m->fn = fn;
    m->user = user;
    srv->nmethods++;
    return 0;
}

int qv_rpc_server_start(qv_rpc_server *srv, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (srv == NULL)
        return QV_EINVAL;
    if (atomic_load(&srv->started)) {
        *err = qv_status_make(QV_EPRECONDITION, "server already started");
        return QV_EPRECONDITION;
    }
    srv->creds =
        srv->has_tls ? qv__rpc_server_creds(&srv->tls) : grpc_insecure_server_credentials_create();
    if (srv->creds == NULL) {
        *err = qv_status_make(QV_EINVAL, "could not build server credentials");
        return QV_EINVAL;
    }
    srv->port = grpc_server_add_http2_port(srv->server, srv->addr, srv->creds);
    if (srv->port <= 0) {
        srv->port = 0;
        *err =
            qv_status_make(QV_EUNAVAIL,
                           "cannot listen on %s (address in use, not a local "
                           "address%s?)",
                           srv->addr, srv->has_tls ? ", or an unusable TLS certificate/key" : "");
        return QV_EUNAVAIL;
    }
    if (qv_pool_create("rpc-worker", srv->workers, 0, &srv->pool) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "cannot start %u RPC worker threads", srv->workers);
        return QV_ERESOURCE;
    }
    grpc_server_start(srv->server);
    atomic_store(&srv->started, true);
    for (size_t i = 0; i < srv->nmethods; i++)
        for (int k = 0; k < PREPOSTED_PER_METHOD; k++)
            post_registered(srv, &srv->methods[i]);
    for (int k = 0; k < 4; k++)
        post_generic(srv);
    if (pthread_create(&srv->poller, NULL, poller_main, srv) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "cannot start the RPC poller thread");
        /* Nothing can drive the queue; shutdown below copes without a poller. */
        return QV_ERESOURCE;
    }
    pthread_setname_np(srv->poller, "rpc-poller");
    srv->poller_started = true;
    qv_log_info("rpc", "serving %zu methods on %s (port %d, %u workers%s)", srv->nmethods,
                srv->addr, srv->port, srv->workers, srv->has_tls ? ", TLS" : "");
    return 0;
}

int qv_rpc_server_port(const qv_rpc_server *srv)
{
    return srv ? srv->port : 0;
}

size_t qv_rpc_server_inflight(qv_rpc_server *srv)
{
    return srv ? atomic_load(&srv->active) : 0;
}

static bool wait_shutdown_tag(qv_rpc_server *srv, uint64_t timeout_ms)
{
    if (timeout_ms > 365ull * 24 * 3600 * 1000)
        timeout_ms = UINT64_MAX; /* a year or more: wait as long as it takes */
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000);
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&srv->mu);
    while (!srv->shutdown_notified) {
        if (timeout_ms == UINT64_MAX) {
            pthread_cond_wait(&srv->cv, &srv->mu);
        } else if (pthread_cond_timedwait(&srv->cv, &srv->mu, &until) != 0) {
            break;
        }
    }
    bool done = srv->shutdown_notified;
    pthread_mutex_unlock(&srv->mu);
    return done;
}

void qv_rpc_server_shutdown(qv_rpc_server *srv, uint64_t grace_ms)
{
    if (srv == NULL || srv->shut_down)
        return;
    srv->shut_down = true;
    atomic_store(&srv->stopping, true);
    if (!atomic_load(&srv->started) || !srv->poller_started) {
        /* Never served: shut the core server down synchronously on a private queue. */
        grpc_completion_queue *cq = grpc_completion_queue_create_for_pluck(NULL);
        grpc_server_shutdown_and_notify(srv->server, cq, &srv->t_shutdown);
        grpc_completion_queue_pluck(cq, &srv->t_shutdown, gpr_inf_future(GPR_CLOCK_REALTIME), NULL);
        grpc_completion_queue_shutdown(cq);
        grpc_completion_queue_destroy(cq);
        if (srv->pool != NULL) {
            qv_pool_destroy(srv->pool);
            srv->pool = NULL;
        }
        return;
    }
    size_t busy = qv_rpc_server_inflight(srv);
    qv_log_info("rpc", "shutting down port %d: %zu calls in flight, grace %llu ms", srv->port, busy,
                (unsigned long long)grace_ms);
    grpc_server_shutdown_and_notify(srv->server, srv->cq, &srv->t_shutdown);
    if (!wait_shutdown_tag(srv, grace_ms)) {
        if (qv_rpc_server_inflight(srv) > 0)
            qv_log_warn("rpc", "grace period over: cancelling %zu calls still in flight",
                        qv_rpc_server_inflight(srv));
        atomic_store(&srv->hard_cancel, true);
        grpc_server_cancel_all_calls(srv->server);
        wait_shutdown_tag(srv, UINT64_MAX);
    }
    /* Every call is closed; handlers that still run finish against dead calls harmlessly. */
    qv_pool_destroy(srv->pool);
    srv->pool = NULL;
}

void qv_rpc_server_destroy(qv_rpc_server *srv)
{
    if (srv == NULL)
        return;
    qv_rpc_server_shutdown(srv, 0);
    grpc_server_destroy(srv->server);
    grpc_completion_queue_shutdown(srv->cq);
    if (srv->poller_started) {
        pthread_join(srv->poller, NULL);
    } else {
        while (grpc_completion_queue_next(srv->cq, gpr_inf_future(GPR_CLOCK_REALTIME), NULL).type !=
               GRPC_QUEUE_SHUTDOWN) {
        }
    }
    grpc_completion_queue_destroy(srv->cq);
    if (srv->creds != NULL)
        grpc_server_credentials_release(srv->creds);
    for (size_t i = 0; i < srv->nmethods; i++)
        free(srv->methods[i].name);
    free(srv->methods);
    qv_rpc_tls_free(&srv->tls);
    free(srv->addr);
    pthread_cond_destroy(&srv->cv);
    pthread_mutex_destroy(&srv->mu);
    if (srv->grpc_inited)
        grpc_shutdown();
    free(srv);
}

/* --------------------------------------------------------------------------------------------- */

const char *qv_rpc_ctx_method(const qv_rpc_ctx *ctx)
{
    return ctx->call->m ? ctx->call->m->name : "";
}

const char *qv_rpc_ctx_peer(qv_rpc_ctx *ctx)
{
    srv_call *c = ctx->call;
    if (c->peer == NULL)
        c->peer = grpc_call_get_peer(c->call);
    return c->peer ? c->peer : "";
}

int64_t qv_rpc_ctx_remaining_ms(const qv_rpc_ctx *ctx)
{
    gpr_timespec d = ctx->call->deadline;
    if (gpr_time_cmp(d, gpr_inf_future(GPR_CLOCK_MONOTONIC)) == 0 || d.tv_sec >= INT64_MAX / 2000)
        return INT64_MAX;
    gpr_timespec now = gpr_now(GPR_CLOCK_MONOTONIC);
    gpr_timespec left = gpr_time_sub(d, now);
    return gpr_time_to_millis(left);
}

bool qv_rpc_ctx_cancelled(const qv_rpc_ctx *ctx)
{
    srv_call *c = ctx->call;
    if (atomic_load(&c->closed_cancelled) || atomic_load(&c->srv->hard_cancel))
        return true;
    return qv_rpc_ctx_remaining_ms(ctx) <= 0;
}

const char *qv_rpc_ctx_metadata(const qv_rpc_ctx *ctx, const char *key, size_t *len)
{
    const grpc_metadata_array *md = &ctx->call->md;
    size_t klen = strlen(key);
    for (size_t i = 0; i < md->count; i++) {
        const grpc_slice *k = &md->metadata[i].key;
        if (GRPC_SLICE_LENGTH(*k) == klen && memcmp(GRPC_SLICE_START_PTR(*k), key, klen) == 0) {
            if (len != NULL)
                *len = GRPC_SLICE_LENGTH(md->metadata[i].value);
            return (const char *)GRPC_SLICE_START_PTR(md->metadata[i].value);
        }
    }
    return NULL;
}

uint8_t *qv_rpc_ctx_response(qv_rpc_ctx *ctx, size_t len)
{
    srv_call *c = ctx->call;
    free(c->resp);
    c->resp = NULL;
    c->resp_len = 0;
    if (len > c->srv->max_message) {
        c->resp_refused = true;
        snprintf(c->msg, sizeof(c->msg), "response of %zu bytes exceeds the %zu-byte limit", len,
                 c->srv->max_message);
        return NULL;
    }
    c->resp_refused = false;
    c->resp = malloc(len ? len : 1);
    if (c->resp != NULL) {
        c->resp_len = len;
    } else {
        c->resp_refused = true;
        snprintf(c->msg, sizeof(c->msg), "out of memory for a %zu-byte response", len);
    }
    return c->resp;
}

int qv_rpc_ctx_fail(qv_rpc_ctx *ctx, int code, const char *fmt, ...)
{
    srv_call *c = ctx->call;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(c->msg, sizeof(c->msg), fmt, ap);
    va_end(ap);
    return code;
}
