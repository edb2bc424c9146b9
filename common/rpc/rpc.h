/*
 * common/rpc/rpc.h - Quiver's one wrapper over the gRPC C core API (grpc/grpc.h).
 *
 * Every other module speaks gRPC only through this header. Messages travel as opaque bytes
 * (callers pack and unpack protobuf-c messages themselves); calls are unary.
 *
 * Server: register handlers `(request bytes -> response bytes or an error status)` for full method
 * names ("/quiver.v1.Cluster/Status"), then start. One poller thread drives the completion queue;
 * handlers run on a worker pool, never on the poller. Calls to methods nobody registered are
 * answered UNIMPLEMENTED. Shutdown stops accepting calls, lets the calls in flight finish within a
 * grace period, then cancels the rest, waits for every handler to return, and frees everything.
 *
 * Client: one client owns a completion queue, a poller thread and one channel per target, created
 * on first use and shared by all calls to that target. qv_rpc_call_async() returns at once; the
 * completion callback runs on the client's poller thread, so one thread can keep thousands of
 * calls in flight. qv_rpc_call_sync() is the blocking form.
 *
 * Status codes are Quiver's QV_E* codes (common/common.h), which mirror gRPC's codes one to one.
 */
#ifndef QV_RPC_H
#define QV_RPC_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Default limit on one message, each direction: 64 MiB. */
#define QV_RPC_DEFAULT_MAX_MESSAGE (64u * 1024u * 1024u)

/* ---------------------------------------------------------------------------------------------
 * TLS
 * ------------------------------------------------------------------------------------------- */

/* PEM contents (not paths). On a server: cert_pem + key_pem are its identity; ca_pem, when set
 * with require_client_cert, verifies client certificates (mutual TLS). On a client: ca_pem verifies
 * the server (NULL: the system roots); cert_pem + key_pem, when set, are the client's identity;
 * server_name overrides the name checked against the server certificate (NULL: the target host). */
typedef struct qv_rpc_tls {
    char *cert_pem;
    char *key_pem;
    char *ca_pem;
    bool require_client_cert;
    char *server_name;
} qv_rpc_tls;

/* Reads the PEM files named by the paths (any may be NULL) into *out, which the caller releases
 * with qv_rpc_tls_free(). A server needs cert and key; both or neither must be given. Errors:
 * QV_ENOTFOUND (unreadable file), QV_EINVAL (a file that holds no PEM block, cert without key),
 * QV_ERESOURCE. */
int qv_rpc_tls_load(qv_rpc_tls *out, const char *cert_path, const char *key_path,
                    const char *ca_path, qv_status *err);
/* Frees the PEM strings and zeroes *tls; safe on a zeroed or already freed struct. */
void qv_rpc_tls_free(qv_rpc_tls *tls);

/* ---------------------------------------------------------------------------------------------
 * Server
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_rpc_server qv_rpc_server;
typedef struct qv_rpc_ctx qv_rpc_ctx;

typedef struct qv_rpc_server_opts {
    const char *addr;         /* "HOST:PORT"; port 0 picks a free one (see qv_rpc_server_port) */
    unsigned workers;         /* handler threads; 0: the number of online CPUs (at least 2) */
    size_t max_message_bytes; /* per message, each direction; 0: QV_RPC_DEFAULT_MAX_MESSAGE */
    size_t max_queued_calls;  /* calls waiting for a worker before new ones get
                                 RESOURCE_EXHAUSTED; 0: 65536 */
    size_t max_queued_bytes;  /* request bytes held by calls waiting or running before new ones
                                 get RESOURCE_EXHAUSTED (a lone call always passes); 0: 1 GiB */
    const qv_rpc_tls *tls;    /* NULL: plaintext. Copied by qv_rpc_server_create. */

    /* Completion hook (NULL: none), for metrics. Called exactly once for every call the server
     * received, when its status is handed to gRPC: handled, failed, refused as overloaded or
     * during shutdown, cancelled, or answered UNIMPLEMENTED. `method` is the registered full
     * method name, or "unknown" for a method nobody registered (so a client cannot grow the set
     * of names); it stays valid until qv_rpc_server_destroy. `code` is the status sent (0 or a
     * QV_E* code). `latency_us` runs from the call's arrival at the poller (request message
     * included) to its status being sent. Runs on whichever thread finishes the call, a worker or
     * the poller, possibly on several at once, so it must be thread-safe, quick and non-blocking,
     * and must not call into this server. on_call_done_user must stay valid until
     * qv_rpc_server_destroy returns. */
    void (*on_call_done)(const char *method, int code, uint64_t latency_us, void *user);
    void *on_call_done_user;
} qv_rpc_server_opts;

/* A handler answers one call. `req` holds the request bytes (valid until the handler returns).
 * To answer, put the response bytes in the buffer returned by qv_rpc_ctx_response() and return 0;
 * returning 0 without a response sends an empty message (a proto with every field at its default).
 * To fail, return a negative QV_E* code, preferably through qv_rpc_ctx_fail() so the client gets a
 * message. Handlers run concurrently on the worker pool; `user` is what was registered. */
typedef int (*qv_rpc_handler)(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user);

/* Creates a server (not yet listening). Returns 0; QV_EINVAL for bad options; QV_ERESOURCE. */
int qv_rpc_server_create(const qv_rpc_server_opts *opts, qv_rpc_server **out, qv_status *err);

/* Registers `fn` for a full method name ("/package.Service/Method"). Only before start; the name
 * is copied. Returns 0; QV_EEXIST for a duplicate; QV_EPRECONDITION after start; QV_EINVAL. */
int qv_rpc_server_register(qv_rpc_server *srv, const char *method, qv_rpc_handler fn, void *user);

/* Binds the address and starts serving. Returns 0; QV_EUNAVAIL when the address cannot be bound
 * (in use, bad host), with a message in *err. */
int qv_rpc_server_start(qv_rpc_server *srv, qv_status *err);

/* The bound TCP port (after start), or 0. */
int qv_rpc_server_port(const qv_rpc_server *srv);

/* Calls currently being handled or queued for a worker (a snapshot). */
size_t qv_rpc_server_inflight(qv_rpc_server *srv);

/* Graceful shutdown: stops accepting calls, waits up to grace_ms for calls in flight to finish,
 * cancels those still running (their clients get CANCELLED or UNAVAILABLE), waits for every
 * handler to return. Idempotent. Must not be called from a handler. */
void qv_rpc_server_shutdown(qv_rpc_server *srv, uint64_t grace_ms);

/* Shuts down (grace 0 if not done yet) and frees the server. NULL is ignored. */
void qv_rpc_server_destroy(qv_rpc_server *srv);

/* --- the per-call context, valid only while the handler runs, and only on the handler's own
 * thread (the functions below are not safe to call from another thread) --- */

/* Full method name of the call. */
const char *qv_rpc_ctx_method(const qv_rpc_ctx *ctx);

/* The client's address ("ipv4:127.0.0.1:5555"); owned by the context. */
const char *qv_rpc_ctx_peer(qv_rpc_ctx *ctx);

/* Milliseconds left until the client's deadline (may be negative once passed); INT64_MAX when the
 * client set none. */
int64_t qv_rpc_ctx_remaining_ms(const qv_rpc_ctx *ctx);

/* True once the client cancelled the call, the connection broke, the deadline passed, or the
 * server is shutting down past its grace period. Long handlers should check it and give up with
 * QV_ECANCELLED; what they return then is discarded. */
bool qv_rpc_ctx_cancelled(const qv_rpc_ctx *ctx);

/* Value of request metadata `key` (lower-case), or NULL. *len gets its length; the value is not
 * NUL-terminated in general (binary "-bin" keys). Valid while the handler runs. */
const char *qv_rpc_ctx_metadata(const qv_rpc_ctx *ctx, const char *key, size_t *len);

/* A response buffer of `len` bytes owned by the context and sent when the handler returns 0.
 * A second call replaces the first buffer. Returns NULL if allocation fails or len exceeds the
 * server's message limit (the call then ends with RESOURCE_EXHAUSTED). */
uint8_t *qv_rpc_ctx_response(qv_rpc_ctx *ctx, size_t len);

/* Sets the status message sent with a failure and returns `code`, for `return
 * qv_rpc_ctx_fail(...)`. */
int qv_rpc_ctx_fail(qv_rpc_ctx *ctx, int code, const char *fmt, ...) QV_PRINTF(3, 4);

/* ---------------------------------------------------------------------------------------------
 * Client
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_rpc_client qv_rpc_client;
typedef struct qv_rpc_call qv_rpc_call;

typedef struct qv_rpc_client_opts {
    size_t max_message_bytes; /* per message, each direction; 0: QV_RPC_DEFAULT_MAX_MESSAGE */
    const qv_rpc_tls *tls;    /* NULL: plaintext. Copied by qv_rpc_client_create. */
} qv_rpc_client_opts;

/* A metadata entry to send with a call; keys lower-case ASCII. */
typedef struct qv_rpc_md {
    const char *key;
    const char *value;
    size_t value_len; /* 0: strlen(value) */
} qv_rpc_md;

/* What a call produced. For code QV_OK, data/len hold the response bytes; otherwise message says
 * why (never NULL, may be empty). Pointers are valid only during the callback. */
typedef struct qv_rpc_result {
    int code;
    const char *message;
    const uint8_t *data;
    size_t len;
} qv_rpc_result;

/* Completion callback: runs exactly once per started call, on the client's poller thread, so it
 * must be quick and must not block on another call of the same client. */
typedef void (*qv_rpc_done_fn)(const qv_rpc_result *res, void *user);

/* opts may be NULL (plaintext, default limits). Returns 0 or QV_ERESOURCE. */
int qv_rpc_client_create(const qv_rpc_client_opts *opts, qv_rpc_client **out);

/* Cancels every call still in flight (their callbacks see QV_ECANCELLED), waits for all callbacks,
 * closes the channels and frees the client. Must not be called from a callback. NULL is ignored. */
void qv_rpc_client_destroy(qv_rpc_client *c);

/* Starts a unary call of `method` on `target` ("HOST:PORT") with `timeout_ms` (0: no deadline).
 * The request bytes are copied before return. If handle_out is not NULL it receives a reference to
 * the call, usable with qv_rpc_call_cancel() until released with qv_rpc_call_release() (which the
 * caller must then do, before or after completion). Returns 0 when the call was started (the
 * callback will run); QV_EINVAL (bad arguments; a metadata key that is not lower-case
 * [0-9a-z_.-], or a value of a non "-bin" key that is not printable ASCII), QV_ERESOURCE or
 * QV_EUNAVAIL (client shutting down) otherwise,
 * in which case the callback never runs. Thread-safe. */
int qv_rpc_call_async(qv_rpc_client *c, const char *target, const char *method, const void *req,
                      size_t req_len, int64_t timeout_ms, const qv_rpc_md *md, size_t nmd,
                      qv_rpc_done_fn done, void *user, qv_rpc_call **handle_out);

/* Asks for the call to be cancelled; its callback then reports QV_ECANCELLED unless it already
 * completed. Thread-safe; harmless after completion. */
void qv_rpc_call_cancel(qv_rpc_call *call);
/* Drops the caller's reference: exactly once per handle, and before qv_rpc_client_destroy. */
void qv_rpc_call_release(qv_rpc_call *call);

/* A reply of a blocking call: `data` is malloc'd and owned by the caller (free with
 * qv_rpc_reply_free). */
typedef struct qv_rpc_reply {
    uint8_t *data;
    size_t len;
} qv_rpc_reply;

/* Blocking unary call. Returns QV_OK with *reply filled, or the call's error code with its
 * message in *err (err may be NULL). */
int qv_rpc_call_sync(qv_rpc_client *c, const char *target, const char *method, const void *req,
                     size_t req_len, int64_t timeout_ms, const qv_rpc_md *md, size_t nmd,
                     qv_rpc_reply *reply, qv_status *err);
/* Frees reply->data and zeroes the reply; NULL and empty replies are fine. */
void qv_rpc_reply_free(qv_rpc_reply *reply);

#ifdef __cplusplus
}
#endif

#endif /* QV_RPC_H */
