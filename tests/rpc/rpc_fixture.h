/*
 * tests/rpc/rpc_fixture.h - helpers shared by the rpc and rpc_tls suites.
 *
 * - fx_server_start(): a server on 127.0.0.1 with port 0 and a list of methods; the target
 *   "127.0.0.1:<port>" is written for the client.
 * - fx_batch / fx_call: completion bookkeeping for async calls. Every started call owns one
 *   fx_call; its callback counts how often it ran (it must run exactly once), keeps the code and
 *   message, and optionally compares the reply with the bytes it expects. fx_batch_wait() waits on
 *   a condition variable for n callbacks with a time limit, so a lost callback fails instead of
 *   hanging the suite.
 * - common handlers: echo and a slow handler that sleeps in short steps and can give up when
 *   the call is cancelled.
 *
 * Everything is static inline so each suite uses what it needs without unused-function warnings.
 */
#ifndef QV_TESTS_RPC_FIXTURE_H
#define QV_TESTS_RPC_FIXTURE_H

#include <criterion/criterion.h>

#include "common/common.h"
#include "common/rpc/rpc.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define FX_HAVE_LSAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#include <sanitizer/lsan_interface.h>
#define FX_HAVE_LSAN 1
#endif
#endif

#define FX_TARGET_MAX 64

/* Under ASan, runs LeakSanitizer now and fails the test if it finds leaks (the report goes to
 * stderr). Criterion 2.4 ignores a worker's exit status after a test passed, and an assertion in a
 * suite's .fini does not fail the test either, so every test calls this as its last statement,
 * once it has destroyed everything it created. */
static inline void fx_expect_no_leaks(void)
{
#ifdef FX_HAVE_LSAN
    cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (see stderr)");
#endif
}

typedef struct fx_method {
    const char *name;
    qv_rpc_handler fn;
    void *user;
} fx_method;

/* Creates, registers and starts a server on 127.0.0.1:0 with `opts` (addr is overridden).
 * Writes "127.0.0.1:<port>" into target. */
static inline qv_rpc_server *fx_server_start(qv_rpc_server_opts opts, const fx_method *methods,
                                             size_t nmethods, char *target, size_t target_len)
{
    qv_rpc_server *srv = NULL;
    qv_status err = qv_status_ok();
    opts.addr = "127.0.0.1:0";
    int rc = qv_rpc_server_create(&opts, &srv, &err);
    cr_assert_eq(rc, QV_OK, "server_create: %d %s", rc, err.msg);
    for (size_t i = 0; i < nmethods; i++) {
        rc = qv_rpc_server_register(srv, methods[i].name, methods[i].fn, methods[i].user);
        cr_assert_eq(rc, QV_OK, "register %s: %d", methods[i].name, rc);
    }
    rc = qv_rpc_server_start(srv, &err);
    cr_assert_eq(rc, QV_OK, "server_start: %d %s", rc, err.msg);
    int port = qv_rpc_server_port(srv);
    cr_assert(port > 0 && port < 65536, "bound port %d", port);
    snprintf(target, target_len, "127.0.0.1:%d", port);
    return srv;
}

static inline qv_rpc_client *fx_client(const qv_rpc_tls *tls)
{
    qv_rpc_client_opts opts;
    memset(&opts, 0, sizeof(opts));
    opts.tls = tls;
    qv_rpc_client *cli = NULL;
    int rc = qv_rpc_client_create(&opts, &cli);
    cr_assert_eq(rc, QV_OK, "client_create: %d", rc);
    cr_assert_not_null(cli);
    return cli;
}

/* ---- async completion bookkeeping ------------------------------------------------------------ */

typedef struct fx_batch {
    pthread_mutex_t mu;
    pthread_cond_t cv; /* CLOCK_MONOTONIC */
    size_t done;       /* callbacks run, all calls together */
} fx_batch;

typedef struct fx_call {
    fx_batch *batch;
    atomic_int ran; /* how many times the callback ran for this call */
    int code;
    char msg[QV_STATUS_MSG_MAX];
    size_t len;
    /* When expect is set, `match` says whether the reply equals it. */
    const uint8_t *expect;
    size_t expect_len;
    bool match;
} fx_call;

static inline void fx_batch_init(fx_batch *b)
{
    pthread_condattr_t attr;
    pthread_condattr_init(&attr);
    pthread_condattr_setclock(&attr, CLOCK_MONOTONIC);
    pthread_mutex_init(&b->mu, NULL);
    pthread_cond_init(&b->cv, &attr);
    pthread_condattr_destroy(&attr);
    b->done = 0;
}

static inline void fx_batch_destroy(fx_batch *b)
{
    pthread_cond_destroy(&b->cv);
    pthread_mutex_destroy(&b->mu);
}

static inline void fx_call_init(fx_call *c, fx_batch *b)
{
    memset(c, 0, sizeof(*c));
    c->batch = b;
    atomic_init(&c->ran, 0);
    c->code = 1; /* not a QV code: "no callback yet" */
}

/* The qv_rpc_done_fn for an fx_call. Only the first run records the result; later runs are
 * counted in `ran` so the test can see them. */
static inline void fx_call_done(const qv_rpc_result *res, void *user)
{
    fx_call *c = user;
    if (atomic_fetch_add(&c->ran, 1) == 0) {
        c->code = res->code;
        snprintf(c->msg, sizeof(c->msg), "%s", res->message ? res->message : "(null message)");
        c->len = res->len;
        if (c->expect != NULL)
            c->match = res->code == QV_OK && res->len == c->expect_len &&
                       (res->len == 0 || memcmp(res->data, c->expect, res->len) == 0);
    }
    pthread_mutex_lock(&c->batch->mu);
    c->batch->done++;
    pthread_cond_broadcast(&c->batch->cv);
    pthread_mutex_unlock(&c->batch->mu);
}

/* Waits until at least n callbacks ran or timeout_ms passed; returns the number that ran. */
static inline size_t fx_batch_wait(fx_batch *b, size_t n, uint64_t timeout_ms)
{
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += (time_t)(timeout_ms / 1000);
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_mutex_lock(&b->mu);
    while (b->done < n) {
        if (pthread_cond_timedwait(&b->cv, &b->mu, &until) != 0)
            break;
    }
    size_t done = b->done;
    pthread_mutex_unlock(&b->mu);
    return done;
}

/* Polls an atomic counter until it reaches want or timeout_ms passes; returns the last value. */
static inline int fx_wait_at_least(atomic_int *v, int want, uint64_t timeout_ms)
{
    uint64_t end = qv_now_ms() + timeout_ms;
    int got = atomic_load(v);
    while (got < want && qv_now_ms() < end) {
        qv_sleep_ms(2);
        got = atomic_load(v);
    }
    return got;
}

/* ---- handlers -------------------------------------------------------------------------------- */

/* Answers with the request bytes. */
static inline int fx_echo(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    uint8_t *out = qv_rpc_ctx_response(ctx, req_len);
    if (out == NULL)
        return QV_ERESOURCE; /* keep the message qv_rpc_ctx_response set */
    if (req_len > 0)
        memcpy(out, req, req_len);
    return 0;
}

/* Sleeps up to max_ms in 10 ms steps; with stop_on_cancel it gives up as soon as the call is
 * cancelled. The counters let a test see what handlers did. */
typedef struct fx_slow {
    int max_ms;
    bool stop_on_cancel;
    atomic_int entered;
    atomic_int returned;
    atomic_int saw_cancel;
} fx_slow;

static inline void fx_slow_init(fx_slow *s, int max_ms, bool stop_on_cancel)
{
    s->max_ms = max_ms;
    s->stop_on_cancel = stop_on_cancel;
    atomic_init(&s->entered, 0);
    atomic_init(&s->returned, 0);
    atomic_init(&s->saw_cancel, 0);
}

static inline int fx_slow_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    fx_slow *s = user;
    atomic_fetch_add(&s->entered, 1);
    uint64_t end = qv_now_ms() + (uint64_t)s->max_ms;
    bool cancelled = false;
    while (qv_now_ms() < end) {
        if (s->stop_on_cancel && qv_rpc_ctx_cancelled(ctx)) {
            cancelled = true;
            break;
        }
        qv_sleep_ms(10);
    }
    if (cancelled)
        atomic_fetch_add(&s->saw_cancel, 1);
    atomic_fetch_add(&s->returned, 1);
    if (cancelled)
        return qv_rpc_ctx_fail(ctx, QV_ECANCELLED, "handler gave up");
    return 0; /* empty response */
}

#endif /* QV_TESTS_RPC_FIXTURE_H */
