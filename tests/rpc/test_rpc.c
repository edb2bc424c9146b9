/*
 * Tests for common/rpc (server.c, client.c) over plaintext HTTP/2 on 127.0.0.1.
 *
 * Every test starts its own server on port 0 and talks to it through qv_rpc_server_port(), so
 * tests never collide. Criterion runs each test in its own process, so gRPC's global state starts
 * fresh each time. Waits are bounded (fx_batch_wait, fx_wait_at_least) so a lost callback or a
 * stuck shutdown fails the test instead of hanging the suite; sleeps are kept short.
 */
#define _GNU_SOURCE
#include "rpc_fixture.h"

#include <inttypes.h>
#include <stdint.h>

#define M_ECHO "/quiver.test.Echo/Echo"
#define M_SLOW "/quiver.test.Echo/Slow"

static qv_rpc_server_opts defaults(void)
{
    qv_rpc_server_opts o;
    memset(&o, 0, sizeof(o));
    return o;
}

static void fill_pattern(uint8_t *buf, size_t len, uint32_t seed)
{
    uint32_t x = seed * 2654435761u + 1u;
    for (size_t i = 0; i < len; i++) {
        x = x * 1103515245u + 12345u;
        buf[i] = (uint8_t)(x >> 16);
    }
}

/* ---- 1. round trip --------------------------------------------------------------------------- */

static void check_echo_sync(qv_rpc_client *cli, const char *target, size_t len)
{
    uint8_t *req = malloc(len ? len : 1);
    cr_assert_not_null(req);
    fill_pattern(req, len, (uint32_t)len);
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, req, len, 10000, NULL, 0, &reply, &err);
    cr_assert_eq(rc, QV_OK, "echo of %zu bytes: %d %s", len, rc, err.msg);
    cr_assert_eq(reply.len, len, "echo of %zu bytes came back with %zu", len, reply.len);
    if (len > 0)
        cr_assert(memcmp(reply.data, req, len) == 0, "echo of %zu bytes differs", len);
    qv_rpc_reply_free(&reply);
    cr_assert_null(reply.data);
    free(req);
}

Test(rpc, round_trip_returns_identical_bytes)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    check_echo_sync(cli, target, 13);
    check_echo_sync(cli, target, 0);
    check_echo_sync(cli, target, 1024 * 1024);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 2. deadline exceeded -------------------------------------------------------------------- */

Test(rpc, deadline_exceeded_times_out_and_handler_sees_cancellation)
{
    static fx_slow slow;
    fx_slow_init(&slow, 2000, true);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_SLOW, fx_slow_handler, &slow}, {M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 2, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    /* Connect first: on a loaded machine the handshake alone can eat a 100 ms deadline, and then
     * the handler never runs. */
    qv_status err = qv_status_ok();
    qv_rpc_reply reply = {0};
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_assert_eq(rc, QV_OK, "warm-up call: %d %s", rc, err.msg);
    qv_rpc_reply_free(&reply);

    uint64_t t0 = qv_now_ms();
    rc = qv_rpc_call_sync(cli, target, M_SLOW, "x", 1, 100, NULL, 0, &reply, &err);
    uint64_t took = qv_now_ms() - t0;
    cr_expect_eq(rc, QV_ETIMEOUT, "got %d (%s)", rc, err.msg);
    cr_expect_null(reply.data);
    cr_expect(took < 1500, "a 100 ms deadline took %" PRIu64 " ms", took);

    /* The handler polls every 10 ms; it must notice well before its 2 s budget runs out. */
    int saw = fx_wait_at_least(&slow.saw_cancel, 1, 1000);
    cr_expect_eq(saw, 1, "handler did not observe the deadline (entered=%d returned=%d)",
                 atomic_load(&slow.entered), atomic_load(&slow.returned));

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 3. deadline visible to the handler ------------------------------------------------------ */

static int remaining_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    int64_t left = qv_rpc_ctx_remaining_ms(ctx);
    uint8_t *out = qv_rpc_ctx_response(ctx, sizeof(left));
    if (out == NULL)
        return QV_ERESOURCE;
    memcpy(out, &left, sizeof(left));
    return 0;
}

static int64_t remaining_seen(qv_rpc_client *cli, const char *target, int64_t timeout_ms)
{
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "", 0, timeout_ms, NULL, 0, &reply, &err);
    cr_assert_eq(rc, QV_OK, "%d %s", rc, err.msg);
    cr_assert_eq(reply.len, sizeof(int64_t));
    int64_t left;
    memcpy(&left, reply.data, sizeof(left));
    qv_rpc_reply_free(&reply);
    return left;
}

Test(rpc, deadline_is_visible_to_handler)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, remaining_handler, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    int64_t left = remaining_seen(cli, target, 5000);
    cr_expect(left > 0 && left <= 5000, "remaining with a 5000 ms timeout: %" PRId64, left);
    /* The call takes milliseconds; most of the budget must still be there. */
    cr_expect(left > 3000, "remaining with a 5000 ms timeout: %" PRId64, left);

    left = remaining_seen(cli, target, 0);
    cr_expect_eq(left, INT64_MAX, "remaining without a deadline: %" PRId64, left);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 4. cancellation ------------------------------------------------------------------------- */

Test(rpc, client_cancel_reaches_callback_and_handler)
{
    static fx_slow slow;
    fx_slow_init(&slow, 5000, true);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_SLOW, fx_slow_handler, &slow}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    static fx_batch b;
    static fx_call call;
    fx_batch_init(&b);
    fx_call_init(&call, &b);
    qv_rpc_call *h = NULL;
    int rc = qv_rpc_call_async(cli, target, M_SLOW, "x", 1, 0, NULL, 0, fx_call_done, &call, &h);
    cr_assert_eq(rc, QV_OK);
    cr_assert_not_null(h);

    cr_assert_eq(fx_wait_at_least(&slow.entered, 1, 5000), 1, "handler never ran");
    qv_sleep_ms(100);
    cr_expect_eq(atomic_load(&call.ran), 0, "call completed before it was cancelled: %d %s",
                 call.code, call.msg);
    uint64_t t0 = qv_now_ms();
    qv_rpc_call_cancel(h);

    cr_assert_eq(fx_batch_wait(&b, 1, 3000), 1, "callback did not run after cancel");
    cr_expect(qv_now_ms() - t0 < 2000, "cancel took %" PRIu64 " ms", qv_now_ms() - t0);
    cr_expect_eq(call.code, QV_ECANCELLED, "got %d (%s)", call.code, call.msg);
    cr_expect_eq(fx_wait_at_least(&slow.saw_cancel, 1, 2000), 1,
                 "handler did not see the cancellation");
    qv_rpc_call_cancel(h); /* harmless after completion */
    qv_rpc_call_release(h);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    cr_expect_eq(atomic_load(&call.ran), 1);
    fx_batch_destroy(&b);
    fx_expect_no_leaks();
}

/* ---- 5. handler error -> status and message -------------------------------------------------- */

static int fail_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    if (req_len == 1 && req[0] == 'n')
        return QV_ENOTFOUND;
    /* A response set before failing must not be sent. */
    uint8_t *out = qv_rpc_ctx_response(ctx, 4);
    if (out != NULL)
        memcpy(out, "junk", 4);
    return qv_rpc_ctx_fail(ctx, QV_EINVAL, "dimension %d does not match %d", 3, 4);
}

Test(rpc, handler_error_travels_as_status_and_message)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fail_handler, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "e", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_EINVAL, "got %d", rc);
    cr_expect_eq(err.code, QV_EINVAL);
    cr_expect_str_eq(err.msg, "dimension 3 does not match 4");
    cr_expect_null(reply.data);

    rc = qv_rpc_call_sync(cli, target, M_ECHO, "n", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_ENOTFOUND, "got %d", rc);
    cr_expect_eq(err.code, QV_ENOTFOUND);
    cr_expect_str_eq(err.msg, "NOT_FOUND");

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 6. message size limits ------------------------------------------------------------------ */

static int huge_response_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    atomic_int *got_null = user;
    uint8_t *out = qv_rpc_ctx_response(ctx, 2u * 1024u * 1024u);
    if (out == NULL)
        atomic_store(got_null, 1);
    return 0; /* the refused response must still turn the call into RESOURCE_EXHAUSTED */
}

Test(rpc, oversized_request_is_resource_exhausted_and_server_keeps_serving)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server_opts o = defaults();
    o.max_message_bytes = 1024 * 1024;
    qv_rpc_server *srv = fx_server_start(o, m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    size_t big = 2u * 1024u * 1024u;
    uint8_t *req = calloc(1, big);
    cr_assert_not_null(req);
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, req, big, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_ERESOURCE, "2 MiB to a 1 MiB server: %d %s", rc, err.msg);
    free(req);

    rc = qv_rpc_call_sync(cli, target, M_ECHO, "small", 5, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "small call after the oversized one: %d %s", rc, err.msg);
    cr_expect_eq(reply.len, 5);
    qv_rpc_reply_free(&reply);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

Test(rpc, oversized_response_is_refused_and_resource_exhausted)
{
    static atomic_int got_null;
    atomic_init(&got_null, 0);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, huge_response_handler, &got_null}};
    qv_rpc_server_opts o = defaults();
    o.max_message_bytes = 1024 * 1024;
    qv_rpc_server *srv = fx_server_start(o, m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_ERESOURCE, "got %d %s", rc, err.msg);
    cr_expect_eq(atomic_load(&got_null), 1, "qv_rpc_ctx_response(2 MiB) did not return NULL");
    cr_expect_null(reply.data);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 7. concurrency -------------------------------------------------------------------------- */

#define CONC_THREADS 8
#define CONC_CALLS   1000
#define CONC_PAYLOAD 72

typedef struct conc_slot {
    fx_call call;
    uint8_t payload[CONC_PAYLOAD];
} conc_slot;

static conc_slot conc_slots[CONC_THREADS][CONC_CALLS];

typedef struct conc_thread {
    qv_rpc_client *cli;
    const char *target;
    unsigned t;
    pthread_barrier_t *start;
    int start_failures;
} conc_thread;

static void *conc_main(void *arg)
{
    conc_thread *ct = arg;
    pthread_barrier_wait(ct->start);
    for (uint32_t i = 0; i < CONC_CALLS; i++) {
        conc_slot *s = &conc_slots[ct->t][i];
        /* Distinct per (thread, i): the ids up front, a pattern after, lengths 8..71. */
        size_t len = 8 + (i % (CONC_PAYLOAD - 8));
        uint32_t id[2] = {ct->t, i};
        memcpy(s->payload, id, sizeof(id));
        fill_pattern(s->payload + 8, len - 8, ct->t * 100003u + i);
        s->call.expect = s->payload;
        s->call.expect_len = len;
        int rc = qv_rpc_call_async(ct->cli, ct->target, M_ECHO, s->payload, len, 60000, NULL, 0,
                                   fx_call_done, &s->call, NULL);
        if (rc != QV_OK)
            ct->start_failures++;
    }
    return NULL;
}

Test(rpc, concurrent_async_calls_each_get_their_own_reply_once)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    static fx_batch b;
    fx_batch_init(&b);
    for (unsigned t = 0; t < CONC_THREADS; t++)
        for (unsigned i = 0; i < CONC_CALLS; i++)
            fx_call_init(&conc_slots[t][i].call, &b);

    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, CONC_THREADS);
    pthread_t th[CONC_THREADS];
    conc_thread ct[CONC_THREADS];
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        ct[t] = (conc_thread){.cli = cli, .target = target, .t = t, .start = &start};
        cr_assert_eq(pthread_create(&th[t], NULL, conc_main, &ct[t]), 0);
    }
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        pthread_join(th[t], NULL);
        cr_expect_eq(ct[t].start_failures, 0, "thread %u: %d calls did not start", t,
                     ct[t].start_failures);
    }
    pthread_barrier_destroy(&start);

    size_t total = (size_t)CONC_THREADS * CONC_CALLS;
    size_t done = fx_batch_wait(&b, total, 60000);
    cr_assert_eq(done, total, "only %zu of %zu callbacks ran within 60 s", done, total);
    qv_sleep_ms(20); /* give a duplicate callback a chance to show up */

    size_t not_once = 0, not_ok = 0, mismatched = 0;
    int first_bad_code = 0;
    for (unsigned t = 0; t < CONC_THREADS; t++) {
        for (unsigned i = 0; i < CONC_CALLS; i++) {
            fx_call *c = &conc_slots[t][i].call;
            not_once += atomic_load(&c->ran) != 1;
            if (c->code != QV_OK) {
                if (not_ok++ == 0)
                    first_bad_code = c->code;
            } else if (!c->match) {
                mismatched++;
            }
        }
    }
    cr_expect_eq(not_once, 0, "%zu calls did not complete exactly once", not_once);
    cr_expect_eq(not_ok, 0, "%zu calls failed (first code %d)", not_ok, first_bad_code);
    cr_expect_eq(mismatched, 0, "%zu replies did not match their request", mismatched);
    cr_expect_eq(b.done, total, "callbacks ran %zu times for %zu calls", b.done, total);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_batch_destroy(&b);
    fx_expect_no_leaks();
}

/* ---- 8. unknown method ----------------------------------------------------------------------- */

Test(rpc, unknown_method_is_unimplemented)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, "/quiver.test.Echo/Nope", "x", 1, 5000, NULL, 0, &reply,
                              &err);
    cr_expect_eq(rc, QV_EUNIMPL, "got %d %s", rc, err.msg);
    cr_expect_null(reply.data);

    /* The registered method still works on the same channel. */
    rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "got %d %s", rc, err.msg);
    qv_rpc_reply_free(&reply);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 9. metadata ----------------------------------------------------------------------------- */

/* Response: for each key in order, a found flag byte, a 4-byte length and the value bytes. */
static int metadata_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    static const char *const keys[] = {"x-api-key", "x-trace-bin", "x-absent"};
    uint8_t buf[512];
    size_t n = 0;
    for (size_t k = 0; k < 3; k++) {
        size_t len = 12345;
        const char *v = qv_rpc_ctx_metadata(ctx, keys[k], &len);
        buf[n++] = v != NULL;
        uint32_t l = v != NULL ? (uint32_t)len : 0;
        if (l > 100)
            return qv_rpc_ctx_fail(ctx, QV_EINTERNAL, "metadata %s has length %u", keys[k], l);
        memcpy(buf + n, &l, 4);
        n += 4;
        if (v != NULL && l > 0)
            memcpy(buf + n, v, l);
        n += l;
    }
    uint8_t *out = qv_rpc_ctx_response(ctx, n);
    if (out == NULL)
        return QV_ERESOURCE;
    memcpy(out, buf, n);
    return 0;
}

static const uint8_t *md_field(const uint8_t *p, const uint8_t *end, bool *found,
                               const uint8_t **val, uint32_t *len)
{
    cr_assert(end - p >= 5, "truncated metadata reply");
    *found = p[0] != 0;
    memcpy(len, p + 1, 4);
    cr_assert(end - (p + 5) >= (ptrdiff_t)*len, "truncated metadata value");
    *val = p + 5;
    return p + 5 + *len;
}

Test(rpc, metadata_is_readable_by_handler)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, metadata_handler, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    static const uint8_t bin[] = {0x00, 0xff, 0x10, 0x00, 0x7f, 0x80};
    qv_rpc_md md[] = {
        {"x-api-key", "secret", 0},
        {"x-trace-bin", (const char *)bin, sizeof(bin)},
    };
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, md, 2, &reply, &err);
    cr_assert_eq(rc, QV_OK, "got %d %s", rc, err.msg);

    const uint8_t *p = reply.data, *end = reply.data + reply.len;
    bool found;
    const uint8_t *val;
    uint32_t len;
    p = md_field(p, end, &found, &val, &len);
    cr_expect(found, "x-api-key not found");
    cr_expect_eq(len, 6);
    cr_expect(len == 6 && memcmp(val, "secret", 6) == 0, "x-api-key = '%.*s'", (int)len, val);
    p = md_field(p, end, &found, &val, &len);
    cr_expect(found, "x-trace-bin not found");
    cr_expect_eq(len, sizeof(bin));
    cr_expect(len == sizeof(bin) && memcmp(val, bin, sizeof(bin)) == 0,
              "binary metadata changed in transit");
    p = md_field(p, end, &found, &val, &len);
    cr_expect(!found, "an absent key was found");
    cr_expect_eq(p, end);
    qv_rpc_reply_free(&reply);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 10. peer -------------------------------------------------------------------------------- */

/* Answers "<method> <peer>". */
static int peer_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    const char *peer = qv_rpc_ctx_peer(ctx);
    const char *method = qv_rpc_ctx_method(ctx);
    if (peer == NULL || method == NULL)
        return qv_rpc_ctx_fail(ctx, QV_EINTERNAL, "peer or method is NULL");
    char buf[256];
    int n = snprintf(buf, sizeof(buf), "%s %s", method, peer);
    if (n < 0 || (size_t)n >= sizeof(buf))
        return qv_rpc_ctx_fail(ctx, QV_EINTERNAL, "peer too long");
    uint8_t *out = qv_rpc_ctx_response(ctx, (size_t)n);
    if (out == NULL)
        return QV_ERESOURCE;
    memcpy(out, buf, (size_t)n);
    return 0;
}

Test(rpc, peer_and_method_are_visible_to_handler)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, peer_handler, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_assert_eq(rc, QV_OK, "got %d %s", rc, err.msg);
    char got[256];
    snprintf(got, sizeof(got), "%.*s", (int)reply.len, (const char *)reply.data);
    const char *sp = strchr(got, ' ');
    cr_assert_not_null(sp, "reply '%s'", got);
    cr_expect(strncmp(got, M_ECHO " ", strlen(M_ECHO) + 1) == 0, "method in '%s'", got);
    cr_expect(strstr(sp + 1, "127.0.0.1") != NULL, "peer '%s'", sp + 1);
    qv_rpc_reply_free(&reply);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 11./12. shutdown with calls in flight --------------------------------------------------- */

#define SHUT_CALLS 50

typedef struct shutdown_arg {
    qv_rpc_server *srv;
    uint64_t grace_ms;
    uint64_t took_ms;
} shutdown_arg;

static void *shutdown_main(void *arg)
{
    shutdown_arg *a = arg;
    uint64_t t0 = qv_now_ms();
    qv_rpc_server_shutdown(a->srv, a->grace_ms);
    a->took_ms = qv_now_ms() - t0;
    return NULL;
}

static void start_calls(qv_rpc_client *cli, const char *target, fx_call *calls, size_t n,
                        fx_batch *b, int64_t timeout_ms)
{
    for (size_t i = 0; i < n; i++) {
        fx_call_init(&calls[i], b);
        int rc = qv_rpc_call_async(cli, target, M_SLOW, "x", 1, timeout_ms, NULL, 0, fx_call_done,
                                   &calls[i], NULL);
        cr_assert_eq(rc, QV_OK, "call %zu did not start: %d", i, rc);
    }
}

Test(rpc, graceful_shutdown_drains_calls_in_flight)
{
    static fx_slow slow;
    fx_slow_init(&slow, 200, false);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_SLOW, fx_slow_handler, &slow}};
    qv_rpc_server_opts o = defaults();
    o.workers = SHUT_CALLS + 4; /* every call runs at once */
    qv_rpc_server *srv = fx_server_start(o, m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    static fx_batch b;
    static fx_call calls[SHUT_CALLS];
    fx_batch_init(&b);
    start_calls(cli, target, calls, SHUT_CALLS, &b, 0);
    int entered = fx_wait_at_least(&slow.entered, SHUT_CALLS, 5000);
    cr_assert_eq(entered, SHUT_CALLS, "only %d handlers started", entered);
    /* Every call whose handler has not returned is in flight; only 50 calls exist. */
    size_t busy = qv_rpc_server_inflight(srv);
    int returned = atomic_load(&slow.returned);
    cr_expect(busy >= (size_t)(SHUT_CALLS - returned) && busy <= SHUT_CALLS,
              "inflight %zu while %d handlers run", busy, SHUT_CALLS - returned);

    shutdown_arg a = {.srv = srv, .grace_ms = 5000};
    pthread_t th;
    cr_assert_eq(pthread_create(&th, NULL, shutdown_main, &a), 0);
    pthread_join(th, NULL);
    cr_expect(a.took_ms < 4000, "draining 200 ms handlers took %" PRIu64 " ms", a.took_ms);

    size_t done = fx_batch_wait(&b, SHUT_CALLS, 5000);
    cr_assert_eq(done, SHUT_CALLS, "only %zu callbacks ran", done);
    for (size_t i = 0; i < SHUT_CALLS; i++) {
        cr_expect_eq(atomic_load(&calls[i].ran), 1, "call %zu ran %d times", i,
                     atomic_load(&calls[i].ran));
        cr_expect_eq(calls[i].code, QV_OK, "call %zu: %d %s", i, calls[i].code, calls[i].msg);
        cr_expect_eq(calls[i].len, 0, "call %zu: a handler that set no response sent %zu bytes", i,
                     calls[i].len);
    }
    cr_expect_eq(atomic_load(&slow.returned), SHUT_CALLS);
    uint64_t end = qv_now_ms() + 2000;
    while (qv_rpc_server_inflight(srv) > 0 && qv_now_ms() < end)
        qv_sleep_ms(5);
    cr_expect_eq(qv_rpc_server_inflight(srv), 0, "calls still in flight after shutdown");

    qv_rpc_server_destroy(srv);
    qv_rpc_client_destroy(cli);
    fx_batch_destroy(&b);
    fx_expect_no_leaks();
}

Test(rpc, shutdown_past_grace_cancels_calls_in_flight)
{
    static fx_slow slow;
    fx_slow_init(&slow, 3000, true);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_SLOW, fx_slow_handler, &slow}};
    qv_rpc_server_opts o = defaults();
    o.workers = SHUT_CALLS + 4;
    qv_rpc_server *srv = fx_server_start(o, m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    static fx_batch b;
    static fx_call calls[SHUT_CALLS];
    fx_batch_init(&b);
    start_calls(cli, target, calls, SHUT_CALLS, &b, 0);
    int entered = fx_wait_at_least(&slow.entered, SHUT_CALLS, 5000);
    cr_assert_eq(entered, SHUT_CALLS, "only %d handlers started", entered);

    uint64_t t0 = qv_now_ms();
    qv_rpc_server_shutdown(srv, 100);
    uint64_t took = qv_now_ms() - t0;
    cr_expect(took < 1500, "shutdown with grace 100 ms took %" PRIu64 " ms", took);
    /* Shutdown waits for every handler to return. */
    cr_expect_eq(atomic_load(&slow.returned), SHUT_CALLS, "%d handlers still running",
                 SHUT_CALLS - atomic_load(&slow.returned));
    cr_expect_eq(atomic_load(&slow.saw_cancel), SHUT_CALLS);

    size_t done = fx_batch_wait(&b, SHUT_CALLS, 5000);
    cr_assert_eq(done, SHUT_CALLS, "only %zu callbacks ran", done);
    qv_sleep_ms(20);
    for (size_t i = 0; i < SHUT_CALLS; i++) {
        cr_expect_eq(atomic_load(&calls[i].ran), 1, "call %zu ran %d times", i,
                     atomic_load(&calls[i].ran));
        cr_expect(calls[i].code == QV_ECANCELLED || calls[i].code == QV_EUNAVAIL, "call %zu: %d %s",
                  i, calls[i].code, calls[i].msg);
    }
    cr_expect(qv_now_ms() - t0 < 2500, "callbacks took %" PRIu64 " ms", qv_now_ms() - t0);

    qv_rpc_server_destroy(srv);
    qv_rpc_client_destroy(cli);
    fx_batch_destroy(&b);
    fx_expect_no_leaks();
}

/* ---- 13. calls after shutdown ---------------------------------------------------------------- */

static void expect_fails_fast(qv_rpc_client *cli, const char *target, const char *when)
{
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    uint64_t t0 = qv_now_ms();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 2000, NULL, 0, &reply, &err);
    uint64_t took = qv_now_ms() - t0;
    cr_expect_neq(rc, QV_OK, "call %s succeeded", when);
    cr_expect_null(reply.data);
    cr_expect(took < 2500, "call %s took %" PRIu64 " ms", when, took);
    qv_rpc_reply_free(&reply);
}

Test(rpc, calls_after_shutdown_fail_without_hanging)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    qv_rpc_reply reply = {0};
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, NULL);
    cr_assert_eq(rc, QV_OK, "warm-up call: %d", rc);
    qv_rpc_reply_free(&reply);

    qv_rpc_server_shutdown(srv, 1000);
    qv_rpc_server_shutdown(srv, 1000); /* idempotent */
    expect_fails_fast(cli, target, "after shutdown");
    qv_rpc_server_destroy(srv);
    expect_fails_fast(cli, target, "after destroy");

    /* A fresh client, never connected, fails the same way. */
    qv_rpc_client *cli2 = fx_client(NULL);
    expect_fails_fast(cli2, target, "from a new client after destroy");
    qv_rpc_client_destroy(cli2);
    qv_rpc_client_destroy(cli);
    fx_expect_no_leaks();
}

/* ---- 14. address in use ---------------------------------------------------------------------- */

Test(rpc, address_in_use_fails_with_unavailable)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));

    qv_rpc_server_opts o = defaults();
    o.addr = target;
    qv_rpc_server *second = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv_rpc_server_create(&o, &second, &err), QV_OK, "%s", err.msg);
    cr_assert_eq(qv_rpc_server_register(second, M_ECHO, fx_echo, NULL), QV_OK);
    int rc = qv_rpc_server_start(second, &err);
    cr_expect_eq(rc, QV_EUNAVAIL, "second server on %s: start returned %d (port %d)", target, rc,
                 qv_rpc_server_port(second));
    cr_expect_eq(err.code, QV_EUNAVAIL);
    cr_expect(strstr(err.msg, target) != NULL, "message does not name %s: '%s'", target, err.msg);
    cr_expect_eq(qv_rpc_server_port(second), 0);
    qv_rpc_server_destroy(second);

    /* The first server is unaffected. */
    qv_rpc_client *cli = fx_client(NULL);
    qv_rpc_reply reply = {0};
    rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "first server after the failed bind: %d %s", rc, err.msg);
    qv_rpc_reply_free(&reply);
    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 15. registration rules ------------------------------------------------------------------ */

Test(rpc, register_rejects_duplicates_bad_names_and_late_calls)
{
    qv_rpc_server_opts o = defaults();
    o.addr = "127.0.0.1:0";
    qv_rpc_server *srv = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv_rpc_server_create(&o, &srv, &err), QV_OK, "%s", err.msg);

    cr_expect_eq(qv_rpc_server_register(srv, M_ECHO, fx_echo, NULL), QV_OK);
    cr_expect_eq(qv_rpc_server_register(srv, M_ECHO, fx_echo, NULL), QV_EEXIST);
    cr_expect_eq(qv_rpc_server_register(srv, "quiver.test.Echo/NoSlash", fx_echo, NULL), QV_EINVAL);
    cr_expect_eq(qv_rpc_server_register(srv, "", fx_echo, NULL), QV_EINVAL);
    cr_expect_eq(qv_rpc_server_register(srv, "/quiver.test.Echo/NoFn", NULL, NULL), QV_EINVAL);

    cr_assert_eq(qv_rpc_server_start(srv, &err), QV_OK, "%s", err.msg);
    cr_expect_eq(qv_rpc_server_register(srv, "/quiver.test.Echo/Late", fx_echo, NULL),
                 QV_EPRECONDITION);
    cr_expect_eq(qv_rpc_server_start(srv, &err), QV_EPRECONDITION);

    /* The method registered before start serves; the late one does not exist. */
    char target[FX_TARGET_MAX];
    snprintf(target, sizeof(target), "127.0.0.1:%d", qv_rpc_server_port(srv));
    qv_rpc_client *cli = fx_client(NULL);
    qv_rpc_reply reply = {0};
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "%d %s", rc, err.msg);
    qv_rpc_reply_free(&reply);
    rc = qv_rpc_call_sync(cli, target, "/quiver.test.Echo/Late", "x", 1, 5000, NULL, 0, &reply,
                          &err);
    cr_expect_eq(rc, QV_EUNIMPL, "%d %s", rc, err.msg);
    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- 16. client destroy with calls in flight ------------------------------------------------- */

#define DESTROY_CALLS 20

Test(rpc, client_destroy_cancels_calls_in_flight)
{
    static fx_slow slow;
    fx_slow_init(&slow, 5000, true);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_SLOW, fx_slow_handler, &slow}};
    qv_rpc_server_opts o = defaults();
    o.workers = DESTROY_CALLS + 4;
    qv_rpc_server *srv = fx_server_start(o, m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    static fx_batch b;
    static fx_call calls[DESTROY_CALLS];
    fx_batch_init(&b);
    start_calls(cli, target, calls, DESTROY_CALLS, &b, 0);
    int entered = fx_wait_at_least(&slow.entered, DESTROY_CALLS, 5000);
    cr_assert_eq(entered, DESTROY_CALLS, "only %d handlers started", entered);

    uint64_t t0 = qv_now_ms();
    qv_rpc_client_destroy(cli);
    uint64_t took = qv_now_ms() - t0;
    cr_expect(took < 2000, "client destroy took %" PRIu64 " ms", took);
    /* destroy waits for every callback, so they have all run by now. */
    cr_expect_eq(b.done, DESTROY_CALLS, "%zu callbacks ran", b.done);
    for (size_t i = 0; i < DESTROY_CALLS; i++) {
        cr_expect_eq(atomic_load(&calls[i].ran), 1, "call %zu ran %d times", i,
                     atomic_load(&calls[i].ran));
        cr_expect_eq(calls[i].code, QV_ECANCELLED, "call %zu: %d %s", i, calls[i].code,
                     calls[i].msg);
    }

    /* The handlers see the cancellation and give up long before their 5 s. */
    int saw = fx_wait_at_least(&slow.saw_cancel, DESTROY_CALLS, 3000);
    cr_expect_eq(saw, DESTROY_CALLS, "%d handlers saw the cancellation", saw);
    t0 = qv_now_ms();
    qv_rpc_server_shutdown(srv, 1000);
    cr_expect(qv_now_ms() - t0 < 1500, "server shutdown took %" PRIu64 " ms", qv_now_ms() - t0);
    qv_rpc_server_destroy(srv);
    fx_batch_destroy(&b);
    fx_expect_no_leaks();
}

/* ---- 17. pool overload ----------------------------------------------------------------------- */

#define OVERLOAD_CALLS 20

Test(rpc, overloaded_pool_answers_resource_exhausted)
{
    static fx_slow slow;
    fx_slow_init(&slow, 300, false);
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_SLOW, fx_slow_handler, &slow}, {M_ECHO, fx_echo, NULL}};
    qv_rpc_server_opts o = defaults();
    o.workers = 1;
    o.max_queued_calls = 2;
    qv_rpc_server *srv = fx_server_start(o, m, 2, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);

    /* Connect first, so the burst reaches the server together. */
    qv_rpc_reply reply = {0};
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, NULL);
    cr_assert_eq(rc, QV_OK, "warm-up call: %d", rc);
    qv_rpc_reply_free(&reply);

    static fx_batch b;
    static fx_call calls[OVERLOAD_CALLS];
    fx_batch_init(&b);
    uint64_t t0 = qv_now_ms();
    start_calls(cli, target, calls, OVERLOAD_CALLS, &b, 20000);
    size_t done = fx_batch_wait(&b, OVERLOAD_CALLS, 20000);
    cr_assert_eq(done, OVERLOAD_CALLS, "only %zu of %d calls finished (%" PRIu64 " ms)", done,
                 OVERLOAD_CALLS, qv_now_ms() - t0);

    int ok = 0, overloaded = 0;
    for (size_t i = 0; i < OVERLOAD_CALLS; i++) {
        if (calls[i].code == QV_OK) {
            ok++;
        } else if (calls[i].code == QV_ERESOURCE) {
            overloaded++;
            cr_expect(strstr(calls[i].msg, "overloaded") != NULL, "call %zu: message '%s'", i,
                      calls[i].msg);
        } else {
            cr_expect_fail("call %zu: unexpected %d %s", i, calls[i].code, calls[i].msg);
        }
    }
    cr_expect(ok >= 1, "no call was served");
    cr_expect(overloaded >= 1, "no call was refused (%d served)", ok);
    cr_expect_eq(ok + overloaded, OVERLOAD_CALLS);
    cr_expect_eq(atomic_load(&slow.entered), ok, "%d handlers ran for %d served calls",
                 atomic_load(&slow.entered), ok);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_batch_destroy(&b);
    fx_expect_no_leaks();
}

/* ---- client-side limits and argument checks -------------------------------------------------- */

/* Answers with as many bytes as the 4-byte request asks for. */
static int sized_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    uint32_t n;
    if (req_len != sizeof(n))
        return qv_rpc_ctx_fail(ctx, QV_EINVAL, "want 4 bytes, got %zu", req_len);
    memcpy(&n, req, sizeof(n));
    uint8_t *out = qv_rpc_ctx_response(ctx, n);
    if (out == NULL)
        return QV_ERESOURCE;
    memset(out, 0xab, n);
    return 0;
}

static void never_called(const qv_rpc_result *res, void *user)
{
    atomic_fetch_add((atomic_int *)user, 1);
}

Test(rpc, client_message_limit_applies_both_ways)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, sized_handler, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client_opts co = {.max_message_bytes = 64 * 1024};
    qv_rpc_client *cli = NULL;
    cr_assert_eq(qv_rpc_client_create(&co, &cli), QV_OK);

    /* Too large to send: refused up front, the callback never runs. */
    static atomic_int calls;
    atomic_init(&calls, 0);
    size_t big = 128 * 1024;
    uint8_t *req = calloc(1, big);
    cr_assert_not_null(req);
    qv_rpc_call *h = (qv_rpc_call *)req; /* must be reset to NULL */
    int rc =
        qv_rpc_call_async(cli, target, M_ECHO, req, big, 5000, NULL, 0, never_called, &calls, &h);
    cr_expect_eq(rc, QV_ERESOURCE, "sending 128 KiB with a 64 KiB limit: %d", rc);
    cr_expect_null(h);
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    rc = qv_rpc_call_sync(cli, target, M_ECHO, req, big, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_ERESOURCE, "%d %s", rc, err.msg);
    free(req);

    /* Too large to receive. */
    uint32_t want = 128 * 1024;
    rc = qv_rpc_call_sync(cli, target, M_ECHO, &want, sizeof(want), 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_ERESOURCE, "receiving 128 KiB with a 64 KiB limit: %d %s", rc, err.msg);
    cr_expect_null(reply.data);

    want = 1024;
    rc = qv_rpc_call_sync(cli, target, M_ECHO, &want, sizeof(want), 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "%d %s", rc, err.msg);
    cr_expect_eq(reply.len, 1024);
    qv_rpc_reply_free(&reply);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    cr_expect_eq(atomic_load(&calls), 0, "a refused call ran its callback");
    fx_expect_no_leaks();
}

Test(rpc, call_async_rejects_bad_arguments_without_callback)
{
    qv_rpc_client *cli = fx_client(NULL);
    static atomic_int calls;
    atomic_init(&calls, 0);
    const char *t = "127.0.0.1:1";
    cr_expect_eq(
        qv_rpc_call_async(cli, t, "no/slash", "x", 1, 0, NULL, 0, never_called, &calls, NULL),
        QV_EINVAL);
    cr_expect_eq(qv_rpc_call_async(cli, t, M_ECHO, "x", 1, -1, NULL, 0, never_called, &calls, NULL),
                 QV_EINVAL);
    cr_expect_eq(qv_rpc_call_async(cli, t, M_ECHO, NULL, 4, 0, NULL, 0, never_called, &calls, NULL),
                 QV_EINVAL);
    cr_expect_eq(qv_rpc_call_async(cli, t, M_ECHO, "x", 1, 0, NULL, 2, never_called, &calls, NULL),
                 QV_EINVAL);
    cr_expect_eq(qv_rpc_call_async(cli, t, M_ECHO, "x", 1, 0, NULL, 0, NULL, &calls, NULL),
                 QV_EINVAL);
    cr_expect_eq(
        qv_rpc_call_async(cli, NULL, M_ECHO, "x", 1, 0, NULL, 0, never_called, &calls, NULL),
        QV_EINVAL);
    qv_rpc_client_destroy(cli);
    cr_expect_eq(atomic_load(&calls), 0, "a refused call ran its callback");
    fx_expect_no_leaks();
}

/* ---- bad metadata, bad server options, replaced responses ------------------------------------ */

Test(rpc, invalid_metadata_is_rejected_with_einval)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, fx_echo, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);
    static atomic_int calls;
    atomic_init(&calls, 0);

    /* Keys must be lower-case; a non-"-bin" value must be printable. Both are the caller's
     * mistake: QV_EINVAL, and the callback never runs. */
    qv_rpc_md upper[] = {{"X-Api-Key", "secret", 0}};
    qv_rpc_md newline[] = {{"x-api-key", "sec\nret", 0}};
    int rc =
        qv_rpc_call_async(cli, target, M_ECHO, "x", 1, 2000, upper, 1, never_called, &calls, NULL);
    cr_expect_eq(rc, QV_EINVAL, "upper-case metadata key: %d", rc);
    rc = qv_rpc_call_async(cli, target, M_ECHO, "x", 1, 2000, newline, 1, never_called, &calls,
                           NULL);
    cr_expect_eq(rc, QV_EINVAL, "newline in a metadata value: %d", rc);
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 2000, upper, 1, &reply, &err);
    cr_expect_eq(rc, QV_EINVAL, "sync, upper-case metadata key: %d %s", rc, err.msg);

    /* The client is still usable. */
    rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 2000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "%d %s", rc, err.msg);
    qv_rpc_reply_free(&reply);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    cr_expect_eq(atomic_load(&calls), 0, "a refused call ran its callback");
    fx_expect_no_leaks();
}

Test(rpc, server_rejects_bad_options_and_unbindable_addresses)
{
    qv_rpc_server *srv = (qv_rpc_server *)&srv; /* must be reset */
    qv_status err = qv_status_ok();
    qv_rpc_server_opts o = defaults();
    cr_expect_eq(qv_rpc_server_create(&o, &srv, &err), QV_EINVAL, "no address");
    cr_expect_eq(err.code, QV_EINVAL);
    o.addr = "";
    cr_expect_eq(qv_rpc_server_create(&o, &srv, &err), QV_EINVAL, "empty address");
    cr_expect_eq(qv_rpc_server_create(NULL, &srv, &err), QV_EINVAL, "no options");

    qv_rpc_tls half = {.cert_pem = "-----BEGIN CERTIFICATE-----\n"};
    o.addr = "127.0.0.1:0";
    o.tls = &half;
    srv = (qv_rpc_server *)&srv;
    cr_expect_eq(qv_rpc_server_create(&o, &srv, &err), QV_EINVAL, "TLS without a key");
    cr_expect_null(srv);

    /* 192.0.2.1 (TEST-NET-1) is not an address of this machine. */
    o = defaults();
    o.addr = "192.0.2.1:0";
    cr_assert_eq(qv_rpc_server_create(&o, &srv, &err), QV_OK, "%s", err.msg);
    int rc = qv_rpc_server_start(srv, &err);
    cr_expect_eq(rc, QV_EUNAVAIL, "binding 192.0.2.1: %d", rc);
    cr_expect(strstr(err.msg, "192.0.2.1:0") != NULL, "message '%s'", err.msg);
    cr_expect_eq(qv_rpc_server_port(srv), 0);
    qv_rpc_server_destroy(srv);
    qv_rpc_server_destroy(NULL);
    fx_expect_no_leaks();
}

/* Asks for 10 bytes, then for 3: only the second buffer is sent. */
static int replacing_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t req_len, void *user)
{
    uint8_t *first = qv_rpc_ctx_response(ctx, 10);
    if (first == NULL)
        return QV_ERESOURCE;
    memset(first, 'a', 10);
    uint8_t *second = qv_rpc_ctx_response(ctx, 3);
    if (second == NULL)
        return QV_ERESOURCE;
    memcpy(second, "xyz", 3);
    return 0;
}

Test(rpc, second_response_buffer_replaces_the_first)
{
    char target[FX_TARGET_MAX];
    fx_method m[] = {{M_ECHO, replacing_handler, NULL}};
    qv_rpc_server *srv = fx_server_start(defaults(), m, 1, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();
    int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
    cr_expect_eq(rc, QV_OK, "%d %s", rc, err.msg);
    cr_expect_eq(reply.len, 3);
    cr_expect(reply.len == 3 && memcmp(reply.data, "xyz", 3) == 0, "reply '%.*s'", (int)reply.len,
              (const char *)reply.data);
    qv_rpc_reply_free(&reply);
    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    fx_expect_no_leaks();
}

/* ---- completion hook ------------------------------------------------------------------------- */

#define HOOK_MAX 32
#define M_FAIL   "/quiver.test.Echo/Fail"

typedef struct hook_entry {
    char method[64];
    int code;
    uint64_t latency_us;
} hook_entry;

typedef struct hook_log {
    pthread_mutex_t mu;
    atomic_int n; /* hook calls so far, including any past HOOK_MAX */
    hook_entry e[HOOK_MAX];
} hook_log;

static void hook_record(const char *method, int code, uint64_t latency_us, void *user)
{
    hook_log *log = user;
    pthread_mutex_lock(&log->mu);
    int i = atomic_load(&log->n);
    if (i < HOOK_MAX) {
        snprintf(log->e[i].method, sizeof(log->e[i].method), "%s", method ? method : "(null)");
        log->e[i].code = code;
        log->e[i].latency_us = latency_us;
    }
    atomic_fetch_add(&log->n, 1);
    pthread_mutex_unlock(&log->mu);
}

/* How many recorded calls have this method and code; *max_latency gets the largest latency. */
static int hook_count(hook_log *log, const char *method, int code, uint64_t *max_latency)
{
    int found = 0;
    uint64_t max = 0;
    pthread_mutex_lock(&log->mu);
    int n = atomic_load(&log->n);
    for (int i = 0; i < n && i < HOOK_MAX; i++) {
        if (strcmp(log->e[i].method, method) == 0 && log->e[i].code == code) {
            found++;
            if (log->e[i].latency_us > max)
                max = log->e[i].latency_us;
        }
    }
    pthread_mutex_unlock(&log->mu);
    if (max_latency != NULL)
        *max_latency = max;
    return found;
}

Test(rpc, call_done_hook_sees_each_call_once_with_its_code)
{
    static hook_log log;
    pthread_mutex_init(&log.mu, NULL);
    atomic_init(&log.n, 0);
    static fx_slow slow;
    fx_slow_init(&slow, 3000, true);

    qv_rpc_server_opts o = defaults();
    o.on_call_done = hook_record;
    o.on_call_done_user = &log;
    char target[FX_TARGET_MAX];
    fx_method m[] = {
        {M_ECHO, fx_echo, NULL}, {M_FAIL, fail_handler, NULL}, {M_SLOW, fx_slow_handler, &slow}};
    qv_rpc_server *srv = fx_server_start(o, m, 3, target, sizeof(target));
    qv_rpc_client *cli = fx_client(NULL);
    qv_rpc_reply reply = {0};
    qv_status err = qv_status_ok();

    /* Two successes, two handler errors, one unknown method, one call whose deadline passes while
     * its handler runs (the handler then gives up with CANCELLED). */
    for (int i = 0; i < 2; i++) {
        int rc = qv_rpc_call_sync(cli, target, M_ECHO, "x", 1, 5000, NULL, 0, &reply, &err);
        cr_assert_eq(rc, QV_OK, "echo: %d %s", rc, err.msg);
        qv_rpc_reply_free(&reply);
    }
    int rc = qv_rpc_call_sync(cli, target, M_FAIL, "e", 1, 5000, NULL, 0, &reply, &err);
    cr_assert_eq(rc, QV_EINVAL, "fail(e): %d", rc);
    rc = qv_rpc_call_sync(cli, target, M_FAIL, "n", 1, 5000, NULL, 0, &reply, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "fail(n): %d", rc);
    rc = qv_rpc_call_sync(cli, target, "/quiver.test.Echo/Nope", "x", 1, 5000, NULL, 0, &reply,
                          &err);
    cr_assert_eq(rc, QV_EUNIMPL, "unknown method: %d", rc);
    rc = qv_rpc_call_sync(cli, target, M_SLOW, "x", 1, 150, NULL, 0, &reply, &err);
    /* Client and handler race to notice the deadline: either answer may reach the client. */
    cr_assert(rc == QV_ETIMEOUT || rc == QV_ECANCELLED, "slow: %d %s", rc, err.msg);

    /* The hook runs after the status is handed to gRPC, so it may trail the client's result. */
    int got = fx_wait_at_least(&log.n, 6, 5000);
    cr_expect_eq(got, 6, "hook ran %d times for 6 calls", got);
    uint64_t lat = 0;
    cr_expect_eq(hook_count(&log, M_ECHO, QV_OK, &lat), 2);
    cr_expect(lat < 5000000, "echo latency %" PRIu64 " us", lat);
    cr_expect_eq(hook_count(&log, M_FAIL, QV_EINVAL, NULL), 1);
    cr_expect_eq(hook_count(&log, M_FAIL, QV_ENOTFOUND, NULL), 1);
    cr_expect_eq(hook_count(&log, "unknown", QV_EUNIMPL, NULL), 1,
                 "an unregistered method must be reported as \"unknown\"");
    cr_expect_eq(hook_count(&log, "/quiver.test.Echo/Nope", QV_EUNIMPL, NULL), 0);
    cr_expect_eq(hook_count(&log, M_SLOW, QV_ECANCELLED, &lat), 1);
    /* The slow call ran until its 150 ms deadline passed and the handler noticed. */
    cr_expect(lat >= 100000, "slow call latency %" PRIu64 " us", lat);

    qv_rpc_client_destroy(cli);
    qv_rpc_server_destroy(srv);
    /* Shutting down returns the unused request slots: they are not calls and are not reported. */
    cr_expect_eq(atomic_load(&log.n), 6, "hook ran %d times after shutdown", atomic_load(&log.n));
    pthread_mutex_destroy(&log.mu);
    fx_expect_no_leaks();
}
