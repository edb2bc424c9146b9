/*
 * gRPC client over the C core API.
 *
 * One client: a completion queue with one poller thread, a table of channels (one per target,
 * each with its registered method handles), and the list of calls in flight (so destroy can
 * cancel them). A unary call is a single batch of six ops; its completion runs the user's
 * callback on the poller thread. A call is referenced by its batch and, optionally, by the
 * caller's handle; the last release frees it.
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

typedef struct reg_method {
    char *name;
    void *handle;
} reg_method;

typedef struct chan {
    char *target;
    grpc_channel *ch;
    reg_method *methods;
    size_t nmethods, cap;
} chan;

struct qv_rpc_call {
    qv_rpc_client *client;
    grpc_call *call;
    atomic_int refs;
    qv_rpc_done_fn done;
    void *user;
    grpc_metadata *send_md;
    size_t nsend_md;
    grpc_metadata_array recv_initial_md;
    grpc_metadata_array trailing_md;
    grpc_byte_buffer *send_buf;
    grpc_byte_buffer *recv_buf;
    grpc_status_code status;
    grpc_slice details;
    struct qv_rpc_call *prev, *next; /* the client's in-flight list */
};

struct qv_rpc_client {
    grpc_completion_queue *cq;
    pthread_t poller;
    grpc_channel_credentials *creds;
    qv_rpc_tls tls;
    bool has_tls;
    size_t max_message;

    pthread_mutex_t mu;
    pthread_cond_t idle; /* signalled when the in-flight list empties */
    chan *chans;
    size_t nchans, cap_chans;
    qv_rpc_call *inflight;
    size_t ninflight;
    bool closing;
};

static void call_release_ref(qv_rpc_call *call)
{
    if (atomic_fetch_sub(&call->refs, 1) != 1)
        return;
    if (call->call != NULL)
        grpc_call_unref(call->call);
    for (size_t i = 0; i < call->nsend_md; i++) {
        grpc_slice_unref(call->send_md[i].key);
        grpc_slice_unref(call->send_md[i].value);
    }
    free(call->send_md);
    grpc_metadata_array_destroy(&call->recv_initial_md);
    grpc_metadata_array_destroy(&call->trailing_md);
    if (call->send_buf != NULL)
        grpc_byte_buffer_destroy(call->send_buf);
    if (call->recv_buf != NULL)
        grpc_byte_buffer_destroy(call->recv_buf);
    grpc_slice_unref(call->details);
    free(call);
}

static void complete(qv_rpc_call *call, bool ok)
{
    qv_rpc_result res;
    memset(&res, 0, sizeof(res));
    grpc_slice flat = grpc_empty_slice();
    char *msg = NULL;

    if (!ok) {
        res.code = QV_EINTERNAL;
        res.message = "call batch failed";
    } else {
        /* A peer may send any integer; codes past UNAUTHENTICATED are UNKNOWN to us. */
        res.code = (call->status < 0 || call->status > GRPC_STATUS_UNAUTHENTICATED)
                       ? QV_EUNKNOWN
                       : -(int)call->status;
        msg = grpc_slice_to_c_string(call->details);
        res.message = msg;
        if (res.code == QV_OK) {
            if (call->recv_buf == NULL) {
                res.code = QV_EINTERNAL;
                res.message = "server answered OK without a message";
            } else {
                grpc_byte_buffer_reader reader;
                if (grpc_byte_buffer_reader_init(&reader, call->recv_buf)) {
                    flat = grpc_byte_buffer_reader_readall(&reader);
                    grpc_byte_buffer_reader_destroy(&reader);
                    res.data = GRPC_SLICE_START_PTR(flat);
                    res.len = GRPC_SLICE_LENGTH(flat);
                } else {
                    res.code = QV_EINTERNAL;
                    res.message = "cannot read the response message";
                }
            }
        }
    }
    if (res.message == NULL)
        res.message = "";
    call->done(&res, call->user);
    grpc_slice_unref(flat);
    if (msg != NULL)
        gpr_free(msg);

    qv_rpc_client *c = call->client;
    pthread_mutex_lock(&c->mu);
    if (call->prev != NULL)
        call->prev->next = call->next;
    else
        c->inflight = call->next;
    if (call->next != NULL)
        call->next->prev = call->prev;
    c->ninflight--;
    if (c->ninflight == 0)
        pthread_cond_broadcast(&c->idle);
    pthread_mutex_unlock(&c->mu);
    call_release_ref(call);
}

static void *poller_main(void *arg)
{
    qv_rpc_client *c = arg;
    for (;;) {
        grpc_event ev =
            grpc_completion_queue_next(c->cq, gpr_inf_future(GPR_CLOCK_MONOTONIC), NULL);
        if (ev.type == GRPC_QUEUE_SHUTDOWN)
            break;
        if (ev.type == GRPC_OP_COMPLETE)
            complete(ev.tag, ev.success != 0);
    }
    return NULL;
}

int qv_rpc_client_create(const qv_rpc_client_opts *opts, qv_rpc_client **out)
{
    if (out == NULL)
        return QV_EINVAL;
    *out = NULL;
    qv_rpc_client *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return QV_ERESOURCE;
    c->max_message =
        opts && opts->max_message_bytes ? opts->max_message_bytes : QV_RPC_DEFAULT_MAX_MESSAGE;
    if (c->max_message > INT32_MAX)
        c->max_message = INT32_MAX;
    if (opts != NULL && opts->tls != NULL) {
        if (qv__rpc_tls_copy(&c->tls, opts->tls) != 0)
            goto fail_tls;
        c->has_tls = true;
    }
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->idle, NULL);
    qv__rpc_route_grpc_logs();
    grpc_init();
    c->creds = c->has_tls ? qv__rpc_channel_creds(&c->tls) : grpc_insecure_credentials_create();
    if (c->creds == NULL)
        goto fail_creds;
    c->cq = grpc_completion_queue_create_for_next(NULL);
    if (pthread_create(&c->poller, NULL, poller_main, c) != 0)
        goto fail_thread;
    pthread_setname_np(c->poller, "rpc-client");
    *out = c;
    return 0;

fail_thread:
    grpc_completion_queue_shutdown(c->cq);
    grpc_completion_queue_destroy(c->cq);
    grpc_channel_credentials_release(c->creds);
fail_creds:
    grpc_shutdown();
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->mu);
    qv_rpc_tls_free(&c->tls);
fail_tls:
    free(c);
    return QV_ERESOURCE;
}

void qv_rpc_client_destroy(qv_rpc_client *c)
{
    if (c == NULL)
        return;
    pthread_mutex_lock(&c->mu);
    c->closing = true;
    for (qv_rpc_call *call = c->inflight; call != NULL; call = call->next)
        grpc_call_cancel(call->call, NULL);
    while (c->ninflight > 0)
        pthread_cond_wait(&c->idle, &c->mu);
    pthread_mutex_unlock(&c->mu);

    for (size_t i = 0; i < c->nchans; i++) {
        grpc_channel_destroy(c->chans[i].ch);
        for (size_t k = 0; k < c->chans[i].nmethods; k++)
            free(c->chans[i].methods[k].name);
        free(c->chans[i].methods);
        free(c->chans[i].target);
    }
    free(c->chans);
    grpc_completion_queue_shutdown(c->cq);
    pthread_join(c->poller, NULL);
    grpc_completion_queue_destroy(c->cq);
    grpc_channel_credentials_release(c->creds);
    qv_rpc_tls_free(&c->tls);
    pthread_cond_destroy(&c->idle);
    pthread_mutex_destroy(&c->mu);
    grpc_shutdown();
    free(c);
}

/* Finds or creates the channel for target and the registered handle for method. Called with
 * c->mu held. */
static int lookup(qv_rpc_client *c, const char *target, const char *method, chan **ch_out,
                  void **handle_out)
{
    chan *ch = NULL;
    for (size_t i = 0; i < c->nchans; i++) {
        if (strcmp(c->chans[i].target, target) == 0) {
            ch = &c->chans[i];
            break;
        }
    }
    if (ch == NULL) {
        if (c->nchans == c->cap_chans) {
            size_t cap = c->cap_chans ? c->cap_chans * 2 : 8;
            chan *n = realloc(c->chans, cap * sizeof(*n));
            if (n == NULL)
                return QV_ERESOURCE;
            c->chans = n;
            c->cap_chans = cap;
        }
        grpc_arg args[3];
        size_t nargs = 0;
        args[nargs].type = GRPC_ARG_INTEGER;
        args[nargs].key = GRPC_ARG_MAX_RECEIVE_MESSAGE_LENGTH;
        args[nargs++].value.integer = (int)c->max_message;
        args[nargs].type = GRPC_ARG_INTEGER;
        args[nargs].key = GRPC_ARG_MAX_SEND_MESSAGE_LENGTH;
        args[nargs++].value.integer = (int)c->max_message;
        if (c->has_tls && c->tls.server_name != NULL) {
            args[nargs].type = GRPC_ARG_STRING;
            args[nargs].key = GRPC_SSL_TARGET_NAME_OVERRIDE_ARG;
            args[nargs++].value.string = c->tls.server_name;
        }
        grpc_channel_args cargs = {.num_args = nargs, .args = args};
        char *t = strdup(target);
        if (t == NULL)
            return QV_ERESOURCE;
        grpc_channel *gch = grpc_channel_create(target, c->creds, &cargs);
        if (gch == NULL) {
            free(t);
            return QV_EINVAL;
        }
        ch = &c->chans[c->nchans++];
        memset(ch, 0, sizeof(*ch));
        ch->target = t;
        ch->ch = gch;
    }
    for (size_t i = 0; i < ch->nmethods; i++) {
        if (strcmp(ch->methods[i].name, method) == 0) {
            *ch_out = ch;
            *handle_out = ch->methods[i].handle;
            return 0;
        }
    }
    if (ch->nmethods == ch->cap) {
        size_t cap = ch->cap ? ch->cap * 2 : 8;
        reg_method *n = realloc(ch->methods, cap * sizeof(*n));
        if (n == NULL)
            return QV_ERESOURCE;
        ch->methods = n;
        ch->cap = cap;
    }
    char *name = strdup(method);
    if (name == NULL)
        return QV_ERESOURCE;
    void *h = grpc_channel_register_call(ch->ch, method, NULL, NULL);
    if (h == NULL) {
        free(name);
        return QV_EINVAL;
    }
    ch->methods[ch->nmethods].name = name;
    ch->methods[ch->nmethods].handle = h;
    ch->nmethods++;
    *ch_out = ch;
    *handle_out = h;
    return 0;
}

int qv_rpc_call_async(qv_rpc_client *c, const char *target, const char *method, const void *req,
                      size_t req_len, int64_t timeout_ms, const qv_rpc_md *md, size_t nmd,
                      qv_rpc_done_fn done, void *user, qv_rpc_call **handle_out)
{
    if (handle_out != NULL)
        *handle_out = NULL;
    if (c == NULL || target == NULL || method == NULL || method[0] != '/' || done == NULL ||
        (req == NULL && req_len > 0) || (md == NULL && nmd > 0) || timeout_ms < 0)
        return QV_EINVAL;
    if (req_len > c->max_message)
        return QV_ERESOURCE;

    qv_rpc_call *call = calloc(1, sizeof(*call));
    if (call == NULL)
        return QV_ERESOURCE;
    call->client = c;
    call->done = done;
    call->user = user;
    call->details = grpc_empty_slice();
    grpc_metadata_array_init(&call->recv_initial_md);
    grpc_metadata_array_init(&call->trailing_md);
    atomic_init(&call->refs, 1);
    if (nmd > 0) {
        call->send_md = calloc(nmd, sizeof(grpc_metadata));
        if (call->send_md == NULL) {
            call_release_ref(call);
            return QV_ERESOURCE;
        }
        for (size_t i = 0; i < nmd; i++) {
            size_t vlen = md[i].value_len ? md[i].value_len : strlen(md[i].value);
            call->send_md[i].key = grpc_slice_from_copied_string(md[i].key);
            call->send_md[i].value = grpc_slice_from_copied_buffer(md[i].value, vlen);
            call->nsend_md++;
        }
    }
    for (size_t i = 0; i < call->nsend_md; i++) {
        const grpc_metadata *m = &call->send_md[i];
        if (!grpc_header_key_is_legal(m->key) ||
            (!grpc_is_binary_header(m->key) && !grpc_header_nonbin_value_is_legal(m->value))) {
            /* Keys are lower-case [0-9a-z_.-]; values of non "-bin" keys printable ASCII. */
            call_release_ref(call);
            return QV_EINVAL;
        }
    }
    grpc_slice s = req_len ? grpc_slice_from_copied_buffer(req, req_len) : grpc_empty_slice();
    call->send_buf = grpc_raw_byte_buffer_create(&s, 1);
    grpc_slice_unref(s);

    gpr_timespec deadline = timeout_ms > 0
                                ? gpr_time_add(gpr_now(GPR_CLOCK_MONOTONIC),
                                               gpr_time_from_millis(timeout_ms, GPR_TIMESPAN))
                                : gpr_inf_future(GPR_CLOCK_MONOTONIC);

    pthread_mutex_lock(&c->mu);
    if (c->closing) {
        pthread_mutex_unlock(&c->mu);
        call_release_ref(call);
        return QV_EUNAVAIL;
    }
    chan *ch;
    void *handle;
    int rc = lookup(c, target, method, &ch, &handle);
    if (rc != 0) {
        pthread_mutex_unlock(&c->mu);
        call_release_ref(call);
        return rc;
    }
    call->call = grpc_channel_create_registered_call(ch->ch, NULL, GRPC_PROPAGATE_DEFAULTS, c->cq,
                                                     handle, deadline, NULL);
    if (call->call == NULL) {
        pthread_mutex_unlock(&c->mu);
        call_release_ref(call);
        return QV_ERESOURCE;
    }

    grpc_op ops[6];
    memset(ops, 0, sizeof(ops));
    ops[0].op = GRPC_OP_SEND_INITIAL_METADATA;
    ops[0].data.send_initial_metadata.count = call->nsend_md;
    ops[0].data.send_initial_metadata.metadata = call->send_md;
    ops[1].op = GRPC_OP_SEND_MESSAGE;
    ops[1].data.send_message.send_message = call->send_buf;
    ops[2].op = GRPC_OP_SEND_CLOSE_FROM_CLIENT;
    ops[3].op = GRPC_OP_RECV_INITIAL_METADATA;
    ops[3].data.recv_initial_metadata.recv_initial_metadata = &call->recv_initial_md;
    ops[4].op = GRPC_OP_RECV_MESSAGE;
    ops[4].data.recv_message.recv_message = &call->recv_buf;
    ops[5].op = GRPC_OP_RECV_STATUS_ON_CLIENT;
    ops[5].data.recv_status_on_client.trailing_metadata = &call->trailing_md;
    ops[5].data.recv_status_on_client.status = &call->status;
    ops[5].data.recv_status_on_client.status_details = &call->details;

    /* Link before starting: the completion may run on the poller before start_batch returns. */
    call->next = c->inflight;
    if (c->inflight != NULL)
        c->inflight->prev = call;
    c->inflight = call;
    c->ninflight++;
    if (handle_out != NULL)
        atomic_fetch_add(&call->refs, 1);
    grpc_call_error e = grpc_call_start_batch(call->call, ops, 6, call, NULL);
    if (e != GRPC_CALL_OK) {
        c->inflight = call->next;
        if (call->next != NULL)
            call->next->prev = NULL;
        c->ninflight--;
        if (c->ninflight == 0)
            pthread_cond_broadcast(&c->idle);
        pthread_mutex_unlock(&c->mu);
        if (handle_out != NULL)
            atomic_fetch_sub(&call->refs, 1);
        call_release_ref(call);
        return QV_EINTERNAL;
    }
    pthread_mutex_unlock(&c->mu);
    if (handle_out != NULL)
        *handle_out = call;
    return 0;
}

void qv_rpc_call_cancel(qv_rpc_call *call)
{
    if (call != NULL && call->call != NULL)
        grpc_call_cancel(call->call, NULL);
}

void qv_rpc_call_release(qv_rpc_call *call)
{
    if (call != NULL)
        call_release_ref(call);
}

/* --- blocking form --- */

typedef struct sync_wait {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    bool done;
    int code;
    char msg[QV_STATUS_MSG_MAX];
    uint8_t *data;
    size_t len;
} sync_wait;

static void sync_done(const qv_rpc_result *res, void *user)
{
    sync_wait *w = user;
    uint8_t *copy = NULL;
    int code = res->code;
    if (code == QV_OK) {
        copy = malloc(res->len ? res->len : 1);
        if (copy != NULL)
            memcpy(copy, res->data, res->len);
        else
            code = QV_ERESOURCE;
    }
    pthread_mutex_lock(&w->mu);
    w->code = code;
    snprintf(w->msg, sizeof(w->msg), "%s",
             copy == NULL && code == QV_ERESOURCE && res->code == QV_OK
                 ? "out of memory copying the response"
                 : res->message);
    w->data = copy;
    w->len = copy ? res->len : 0;
    w->done = true;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
}

int qv_rpc_call_sync(qv_rpc_client *c, const char *target, const char *method, const void *req,
                     size_t req_len, int64_t timeout_ms, const qv_rpc_md *md, size_t nmd,
                     qv_rpc_reply *reply, qv_status *err)
{
    if (reply != NULL) {
        reply->data = NULL;
        reply->len = 0;
    }
    sync_wait w;
    memset(&w, 0, sizeof(w));
    pthread_mutex_init(&w.mu, NULL);
    pthread_cond_init(&w.cv, NULL);
    int rc = qv_rpc_call_async(c, target, method, req, req_len, timeout_ms, md, nmd, sync_done, &w,
                               NULL);
    if (rc != 0) {
        if (err != NULL)
            *err =
                qv_status_make(rc, "cannot start call %s to %s: %s", method ? method : "(null)",
                               target ? target : "(null)",
                               rc == QV_EINVAL ? "invalid arguments or metadata" : qv_strerror(rc));
    } else {
        pthread_mutex_lock(&w.mu);
        while (!w.done)
            pthread_cond_wait(&w.cv, &w.mu);
        pthread_mutex_unlock(&w.mu);
        rc = w.code;
        if (rc == QV_OK && reply != NULL) {
            reply->data = w.data;
            reply->len = w.len;
        } else {
            free(w.data);
        }
        if (err != NULL)
            *err = qv_status_make(rc, "%s", w.msg);
    }
    pthread_cond_destroy(&w.cv);
    pthread_mutex_destroy(&w.mu);
    return rc;
}

void qv_rpc_reply_free(qv_rpc_reply *reply)
{
    if (reply == NULL)
        return;
    free(reply->data);
    reply->data = NULL;
    reply->len = 0;
}
