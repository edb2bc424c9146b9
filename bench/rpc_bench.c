/* quiver-bench rpc: unary echo over loopback through common/rpc, closed loop at fixed depths.
 *
 * The server (in this process unless --target names another) answers /quiver.bench.Echo/Echo by
 * returning the request. For each depth N the client keeps exactly N calls in flight: every
 * completion immediately starts the next call from the client's poller thread. Calls completing
 * inside the measurement window (after a warm-up) count toward QPS and latency percentiles. */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "common/rpc/rpc.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define ECHO_METHOD "/quiver.bench.Echo/Echo"

static int echo_handler(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    uint8_t *out = qv_rpc_ctx_response(ctx, len);
    if (out == NULL)
        return qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "no memory for the echo");
    memcpy(out, req, len);
    return 0;
}

typedef struct run {
    qv_rpc_client *client;
    const char *target;
    const uint8_t *payload;
    size_t payload_len;
    uint64_t measure_from_ns, end_ns;
    /* Touched only by the client's poller thread once calls are running. */
    uint64_t *lat;
    size_t nlat, cap;
    size_t ok_in_window, errors;
    int first_error;
    char first_error_msg[QV_STATUS_MSG_MAX];
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t outstanding;
} run;

typedef struct slot {
    run *r;
    uint64_t t0;
} slot;

static void on_done(const qv_rpc_result *res, void *user);

static void start_call(slot *s)
{
    run *r = s->r;
    s->t0 = qv_now_ns();
    if (qv_rpc_call_async(r->client, r->target, ECHO_METHOD, r->payload, r->payload_len, 10000,
                          NULL, 0, on_done, s, NULL) != 0) {
        r->errors++;
        pthread_mutex_lock(&r->mu);
        if (--r->outstanding == 0)
            pthread_cond_signal(&r->cv);
        pthread_mutex_unlock(&r->mu);
    }
}

static void on_done(const qv_rpc_result *res, void *user)
{
    slot *s = user;
    run *r = s->r;
    uint64_t now = qv_now_ns();
    if (res->code != QV_OK || res->len != r->payload_len) {
        if (r->errors++ == 0) {
            r->first_error = res->code;
            snprintf(r->first_error_msg, sizeof(r->first_error_msg), "%s", res->message);
        }
    } else if (now >= r->measure_from_ns && now < r->end_ns) {
        r->ok_in_window++;
        if (r->nlat == r->cap) {
            size_t cap = r->cap ? r->cap * 2 : 1 << 16;
            uint64_t *n = realloc(r->lat, cap * sizeof(*n));
            if (n != NULL) {
                r->lat = n;
                r->cap = cap;
            }
        }
        if (r->nlat < r->cap)
            r->lat[r->nlat++] = now - s->t0;
    }
    if (now < r->end_ns) {
        start_call(s);
        return;
    }
    pthread_mutex_lock(&r->mu);
    if (--r->outstanding == 0)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

/* Parses "1,16,64" into depths; returns the count or -1. */
static int parse_depths(const char *s, unsigned *out, int max)
{
    int n = 0;
    while (*s) {
        char *end;
        unsigned long v = strtoul(s, &end, 10);
        if (end == s || v == 0 || v > 100000 || n == max)
            return -1;
        out[n++] = (unsigned)v;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return -1;
        s = end;
    }
    return n;
}

int qv_bench_rpc(int argc, char **argv)
{
    char *inflight = NULL, *target = NULL;
    uint64_t payload = 0, workers = 0, duration_s = 0, warmup_s = 0;
    qv_opt opts[] = {
        {.name = "inflight",
         .type = QV_OPT_STRING,
         .target = &inflight,
         .def = "1,16,64",
         .help = "comma-separated numbers of calls kept in flight"},
        {.name = "duration-s",
         .type = QV_OPT_UINT,
         .target = &duration_s,
         .def = "5",
         .help = "measured seconds per depth",
         .min = 1,
         .max = 3600},
        {.name = "warmup-s",
         .type = QV_OPT_UINT,
         .target = &warmup_s,
         .def = "1",
         .help = "seconds run before measuring, per depth",
         .min = 0,
         .max = 600},
        {.name = "payload-bytes",
         .type = QV_OPT_UINT,
         .target = &payload,
         .def = "64",
         .help = "request (and echoed response) size",
         .min = 0,
         .max = 16 << 20},
        {.name = "server-workers",
         .type = QV_OPT_UINT,
         .target = &workers,
         .def = "0",
         .help = "handler threads of the in-process server (0: one per CPU)",
         .min = 0,
         .max = 1024},
        {.name = "target",
         .type = QV_OPT_STRING,
         .target = &target,
         .help = "benchmark a server at HOST:PORT serving " ECHO_METHOD
                 " instead of an in-process one"},
        {0},
    };
    qv_config cfg = {
        .program = "quiver-bench rpc",
        .summary = "Unary gRPC echo over loopback through Quiver's RPC layer: QPS and p50/p99 "
                   "latency with 1, 16 and 64 calls in flight (closed loop). One JSON line per "
                   "depth on stdout.",
        .env_prefix = NULL,
        .opts = opts,
    };
    qv_status err = {0};
    int exit_code = 2;
    qv_rpc_server *srv = NULL;
    qv_rpc_client *client = NULL;
    uint8_t *buf = NULL;
    int rc = qv_config_parse(&cfg, argc, argv, &err);
    if (rc == QV_CONFIG_EXITED) {
        exit_code = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "quiver-bench rpc: %s\n", err.msg);
        goto out;
    }
    unsigned depths[32];
    int ndepths = parse_depths(inflight, depths, 32);
    if (ndepths <= 0) {
        fprintf(stderr, "quiver-bench rpc: --inflight '%s' is not a list like 1,16,64\n", inflight);
        goto out;
    }
    qv_log_set_level(QV_LOG_WARN);

    char target_buf[64];
    if (target == NULL) {
        qv_rpc_server_opts so = {.addr = "127.0.0.1:0", .workers = (unsigned)workers};
        if (qv_rpc_server_create(&so, &srv, &err) != 0 ||
            qv_rpc_server_register(srv, ECHO_METHOD, echo_handler, NULL) != 0 ||
            qv_rpc_server_start(srv, &err) != 0) {
            fprintf(stderr, "quiver-bench rpc: cannot start the echo server: %s\n", err.msg);
            exit_code = 1;
            goto out;
        }
        snprintf(target_buf, sizeof(target_buf), "127.0.0.1:%d", qv_rpc_server_port(srv));
        target = target_buf;
    }
    if (qv_rpc_client_create(NULL, &client) != 0) {
        fprintf(stderr, "quiver-bench rpc: cannot create the client\n");
        exit_code = 1;
        goto out;
    }
    buf = malloc(payload ? payload : 1);
    if (buf == NULL)
        goto out;
    for (size_t i = 0; i < payload; i++)
        buf[i] = (uint8_t)(i * 31 + 7);

    fprintf(stderr, "%-9s %12s %10s %10s %10s %8s\n", "inflight", "calls/s", "p50_us", "p99_us",
            "p999_us", "errors");
    exit_code = 0;
    for (int d = 0; d < ndepths; d++) {
        unsigned n = depths[d];
        run r;
        memset(&r, 0, sizeof(r));
        r.client = client;
        r.target = target;
        r.payload = buf;
        r.payload_len = payload;
        pthread_mutex_init(&r.mu, NULL);
        pthread_cond_init(&r.cv, NULL);
        slot *slots = calloc(n, sizeof(*slots));
        if (slots == NULL) {
            exit_code = 1;
            break;
        }
        uint64_t t0 = qv_now_ns();
        r.measure_from_ns = t0 + warmup_s * 1000000000ull;
        r.end_ns = r.measure_from_ns + duration_s * 1000000000ull;
        r.outstanding = n;
        for (unsigned i = 0; i < n; i++) {
            slots[i].r = &r;
            start_call(&slots[i]);
        }
        pthread_mutex_lock(&r.mu);
        while (r.outstanding > 0)
            pthread_cond_wait(&r.cv, &r.mu);
        pthread_mutex_unlock(&r.mu);

        qsort(r.lat, r.nlat, sizeof(uint64_t), qv_bench_cmp_u64);
        double qps = (double)r.ok_in_window / (double)duration_s;
        double p50 = qv_bench_pct_us(r.lat, r.nlat, 0.50),
               p99 = qv_bench_pct_us(r.lat, r.nlat, 0.99),
               p999 = qv_bench_pct_us(r.lat, r.nlat, 0.999);
        printf("{\"bench\":\"rpc\",\"inflight\":%u,\"payload_bytes\":%llu,\"duration_s\":%llu,"
               "\"calls\":%zu,\"qps\":%.0f,\"p50_us\":%.1f,\"p99_us\":%.1f,\"p999_us\":%.1f,"
               "\"errors\":%zu}\n",
               n, (unsigned long long)payload, (unsigned long long)duration_s, r.ok_in_window, qps,
               p50, p99, p999, r.errors);
        fflush(stdout);
        fprintf(stderr, "%-9u %12.0f %10.1f %10.1f %10.1f %8zu\n", n, qps, p50, p99, p999,
                r.errors);
        if (r.errors > 0) {
            fprintf(stderr, "  first error: %s: %s\n", qv_strerror(r.first_error),
                    r.first_error_msg);
            exit_code = 1;
        }
        free(r.lat);
        free(slots);
        pthread_cond_destroy(&r.cv);
        pthread_mutex_destroy(&r.mu);
    }

out:
    free(buf);
    qv_rpc_client_destroy(client);
    qv_rpc_server_destroy(srv);
    qv_config_free(&cfg);
    return exit_code;
}
