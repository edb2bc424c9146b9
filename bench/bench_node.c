/*
 * quiver-bench node: ingest and search through a real quiver-node over gRPC, against the same
 * index in this process, on the same data in one run.
 *
 * Map: helpers (lists, percentiles, recall, temp dirs) / data (exported by `quiver-bench ann
 * --export-dir`, so base, queries and ground truth are byte for byte what `ann` measures) / the
 * node child process (start, ready line, stop) and its /metrics / protobuf helpers (pack, sync
 * call, create, describe) / ingest (C clients, one Upsert each in flight, then Describe until
 * indexed) / gRPC search (one async client, N calls in flight, Search or SearchBatch) / in-process
 * search (qv_index_search on T threads) / series (passes taken in turns, CPU accounting) / output
 * / qv_bench_node tying it together.
 *
 * Measurement rules: requests are packed before the clock starts (the client pays only gRPC and
 * response decoding); every search point is the best of --repeat passes over the whole query set
 * (as in `ann`), the three kinds measured in turns so that a drift of the machine's speed hits
 * them alike; latency percentiles come from the best pass; recall@10 compares returned ids with
 * the exact top-10 of the ground truth. The node runs with --workers T and the in-process index is
 * searched by T threads; client and node share the machine's cores, and the CPU that the node,
 * this process and everything else used is reported beside each point.
 */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "bench/datasets.h"
#include "common/rpc/rpc.h"
#include "index/index.h"
#include "quiver/v1/collections.pb-c.h"
#include "quiver/v1/points.pb-c.h"

#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <math.h>
#include <netinet/in.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define PROG       "quiver-bench node"
#define K          10
#define COLLECTION "bench"
#define MAX_FSYNCS 4

#define M_CREATE   "/quiver.v1.Collections/Create"
#define M_DESCRIBE "/quiver.v1.Collections/Describe"
#define M_UPSERT   "/quiver.v1.Points/Upsert"
#define M_SEARCH   "/quiver.v1.Points/Search"
#define M_BATCH    "/quiver.v1.Points/SearchBatch"

#define CALL_TIMEOUT_MS   600000 /* one Upsert or Search; generous, the bench must not time out */
#define READY_TIMEOUT_MS  120000 /* node start-up */
#define INDEX_TIMEOUT_MS  3600000
#define DESCRIBE_EVERY_MS 20

/* ---------------------------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------------------------- */

static double cpu_now_s(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec / 1e9;
}

/* CPU seconds every process on the machine has used (user, nice, system, irq, softirq from
 * /proc/stat; steal is not ours), or NAN. Minus what we and the node used, it tells whether others
 * were busy during a measurement. */
static double machine_busy_s(void)
{
    FILE *f = fopen("/proc/stat", "r");
    unsigned long long v[7] = {0};
    int n = f != NULL ? fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2],
                               &v[3], &v[4], &v[5], &v[6])
                      : 0;
    if (f != NULL)
        fclose(f);
    long hz = sysconf(_SC_CLK_TCK);
    if (n != 7 || hz <= 0)
        return NAN;
    return (double)(v[0] + v[1] + v[2] + v[5] + v[6]) / (double)hz;
}

/* CPU seconds of this process and its reaped children (the nodes, perf). */
static double own_cpu_s(void)
{
    struct rusage a, b;
    getrusage(RUSAGE_SELF, &a);
    getrusage(RUSAGE_CHILDREN, &b);
    return (double)(a.ru_utime.tv_sec + a.ru_stime.tv_sec + b.ru_utime.tv_sec + b.ru_stime.tv_sec) +
           (double)(a.ru_utime.tv_usec + a.ru_stime.tv_usec + b.ru_utime.tv_usec +
                    b.ru_stime.tv_usec) /
               1e6;
}

static void sleep_ms(unsigned ms)
{
    struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

static int cmp_i64(const void *a, const void *b)
{
    int64_t x = *(const int64_t *)a, y = *(const int64_t *)b;
    return x < y ? -1 : x > y;
}

/* Parses "a,b,c,d" (unsigned) into out[]; returns the count or -1. */
static int parse_u32_list(const char *s, uint32_t *out, int cap)
{
    int n = 0;
    while (s != NULL && *s != '\0') {
        char *end;
        if (*s < '0' || *s > '9')
            return -1;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || v > UINT32_MAX || n == cap)
            return -1;
        out[n++] = (uint32_t)v;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return -1;
        s = end;
    }
    return n;
}

/* The run's data: base vectors (ids 0..n-1), queries and their exact top-10. */
typedef struct data {
    char name[128];
    qv_vecs base, query;
    qv_ids gt;
} data;

/* Mean over queries of |ids[i][0..K) ∩ true top-K| / K. ids: nq rows of K, -1 where missing. */
static double recall_at_k(const data *d, const int64_t *ids)
{
    double sum = 0;
    int64_t truth[K];
    for (size_t i = 0; i < d->query.n; i++) {
        for (size_t j = 0; j < K; j++)
            truth[j] = d->gt.ids[i * d->gt.k + j];
        qsort(truth, K, sizeof(truth[0]), cmp_i64);
        size_t found = 0;
        for (size_t j = 0; j < K; j++) {
            int64_t id = ids[i * K + j];
            if (id >= 0 && bsearch(&id, truth, K, sizeof(truth[0]), cmp_i64) != NULL)
                found++;
        }
        sum += (double)found / K;
    }
    return d->query.n > 0 ? sum / (double)d->query.n : 0;
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* rm -rf, best effort. */
static void remove_tree(const char *dir)
{
    nftw(dir, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* ---------------------------------------------------------------------------------------------
 * Data: `quiver-bench ann --export-dir` writes base.fvecs, query.fvecs and gt.ivecs (Fashion-MNIST
 * or the seeded synthetic clusters, cut by --limit-base / --limit-query, ground truth from the
 * flat index); we read them back.
 * ------------------------------------------------------------------------------------------- */

static int load_data(const char *dataset, const char *synthetic, const char *fm_dir, uint64_t limit,
                     uint64_t queries, const char *dir, data *d, qv_status *err)
{
    char lb[32], lq[32], path[4200];
    char *argv[16];
    int argc = 0;
    argv[argc++] = (char *)"ann";
    if (strcmp(dataset, "synthetic") == 0) {
        argv[argc++] = (char *)"--synthetic";
        argv[argc++] = (char *)synthetic;
        snprintf(d->name, sizeof(d->name), "synthetic-%s", synthetic);
        for (char *p = d->name; *p != '\0'; p++)
            if (*p == ',')
                *p = '-';
    } else {
        argv[argc++] = (char *)"--fashion-mnist";
        argv[argc++] = (char *)"--fashion-mnist-dir";
        argv[argc++] = (char *)fm_dir;
        snprintf(d->name, sizeof(d->name), "fashion-mnist");
    }
    if (limit > 0) {
        snprintf(lb, sizeof(lb), "%llu", (unsigned long long)limit);
        argv[argc++] = (char *)"--limit-base";
        argv[argc++] = lb;
    }
    if (queries > 0) {
        snprintf(lq, sizeof(lq), "%llu", (unsigned long long)queries);
        argv[argc++] = (char *)"--limit-query";
        argv[argc++] = lq;
    }
    argv[argc++] = (char *)"--export-dir";
    argv[argc++] = (char *)dir;
    argv[argc] = NULL;
    if (qv_bench_ann(argc, argv) != 0) {
        *err = qv_status_make(QV_EINVAL, "preparing the data with 'quiver-bench ann' failed");
        return QV_EINVAL;
    }
    snprintf(path, sizeof(path), "%s/base.fvecs", dir);
    int rc = qv_ds_load_fvecs(path, 0, &d->base, err);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/query.fvecs", dir);
        rc = qv_ds_load_fvecs(path, 0, &d->query, err);
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/gt.ivecs", dir);
        rc = qv_ds_load_ivecs(path, 0, &d->gt, err);
    }
    if (rc == 0 && (d->gt.k < K || d->gt.n != d->query.n || d->base.n < K)) {
        *err = qv_status_make(QV_EINVAL, "need at least %d base vectors and a top-%d ground truth",
                              K, K);
        rc = QV_EINVAL;
    }
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * The node child process
 * ------------------------------------------------------------------------------------------- */

typedef struct node_proc {
    pid_t pid;
    int grpc_port, http_port;
    char target[64];
    char log[4200];
} node_proc;

/* The last lines of the node's log, to explain a failure. */
static void print_log_tail(const char *path)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return;
    char buf[2048];
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, size > (long)sizeof(buf) - 1 ? size - (long)sizeof(buf) + 1 : 0, SEEK_SET);
    size_t n = fread(buf, 1, sizeof(buf) - 1, f);
    buf[n] = '\0';
    fclose(f);
    fprintf(stderr, "--- end of %s ---\n%s%s---\n", path, buf,
            n > 0 && buf[n - 1] != '\n' ? "\n" : "");
}

static void node_stop(node_proc *np)
{
    if (np->pid <= 0)
        return;
    kill(np->pid, SIGTERM);
    int status = 0;
    for (int i = 0; i < 600; i++) { /* a clean stop snapshots the index: allow a minute */
        pid_t r = waitpid(np->pid, &status, WNOHANG);
        if (r == np->pid || (r < 0 && errno != EINTR)) {
            np->pid = 0;
            return;
        }
        sleep_ms(100);
    }
    fprintf(stderr, PROG ": quiver-node (pid %d) ignored SIGTERM for 60 s; killing it\n",
            (int)np->pid);
    kill(np->pid, SIGKILL);
    waitpid(np->pid, &status, 0);
    np->pid = 0;
}

/* Starts `bin --dev` on dir and waits for its "quiver-node ready:" line (stdout); its stderr goes
 * to dir.log. */
static int node_start(const char *bin, const char *dir, const char *fsync, unsigned workers,
                      node_proc *np, qv_status *err)
{
    memset(np, 0, sizeof(*np));
    snprintf(np->log, sizeof(np->log), "%s.log", dir);
    char wbuf[16];
    snprintf(wbuf, sizeof(wbuf), "%u", workers);
    char *args[] = {(char *)bin,   "--dev",       "--data",      (char *)dir, "--grpc",
                    "127.0.0.1:0", "--http",      "127.0.0.1:0", "--gossip",  "off",
                    "--fsync",     (char *)fsync, "--workers",   wbuf,        "--log-level",
                    "warn",        NULL};
    int pfd[2];
    if (pipe2(pfd, O_CLOEXEC) != 0) {
        *err = qv_status_make(qv_from_errno(errno), "pipe: %s", strerror(errno));
        return err->code;
    }
    int logfd = open(np->log, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (logfd < 0) {
        int e = errno;
        close(pfd[0]);
        close(pfd[1]);
        *err = qv_status_make(qv_from_errno(e), "%s: %s", np->log, strerror(e));
        return err->code;
    }
    pid_t pid = fork();
    if (pid == 0) {
        /* Only async-signal-safe calls between fork and exec (the parent has threads). */
#ifdef PR_SET_PDEATHSIG
        prctl(PR_SET_PDEATHSIG, SIGKILL); /* never outlive the bench */
#endif
        dup2(pfd[1], STDOUT_FILENO);
        dup2(logfd, STDERR_FILENO);
        execv(bin, args);
        _exit(127);
    }
    int fork_errno = errno;
    close(pfd[1]);
    close(logfd);
    if (pid < 0) {
        close(pfd[0]);
        *err = qv_status_make(qv_from_errno(fork_errno), "fork: %s", strerror(fork_errno));
        return err->code;
    }
    np->pid = pid;

    char line[1024];
    size_t len = 0;
    uint64_t deadline = qv_now_ms() + READY_TIMEOUT_MS;
    int rc = QV_EUNAVAIL;
    for (;;) {
        uint64_t now = qv_now_ms();
        if (now >= deadline) {
            *err = qv_status_make(QV_ETIMEOUT, "%s did not print its ready line within %d s", bin,
                                  READY_TIMEOUT_MS / 1000);
            break;
        }
        struct pollfd p = {.fd = pfd[0], .events = POLLIN};
        int pr = poll(&p, 1, (int)(deadline - now));
        if (pr < 0 && errno == EINTR)
            continue;
        ssize_t r = pr > 0 ? read(pfd[0], line + len, sizeof(line) - 1 - len) : 0;
        if (pr > 0 && r <= 0) {
            *err = qv_status_make(QV_EUNAVAIL, "%s exited before it was ready", bin);
            break;
        }
        len += (size_t)(r > 0 ? r : 0);
        line[len] = '\0';
        char *ready = strstr(line, "quiver-node ready:");
        char *nl = ready != NULL ? strchr(ready, '\n') : NULL;
        if (nl != NULL) {
            const char *gp = strstr(ready, " port="), *hp = strstr(ready, " http_port=");
            if (gp != NULL && hp != NULL) {
                np->grpc_port = atoi(gp + 6);
                np->http_port = atoi(hp + 11);
            }
            if (np->grpc_port <= 0 || np->http_port <= 0) {
                *err = qv_status_make(QV_EINTERNAL, "cannot read the ports from '%.*s'",
                                      (int)(nl - ready), ready);
                break;
            }
            snprintf(np->target, sizeof(np->target), "127.0.0.1:%d", np->grpc_port);
            rc = 0;
            break;
        }
        if (len == sizeof(line) - 1) { /* something else filled the buffer: keep the tail */
            memmove(line, line + len / 2, len - len / 2);
            len -= len / 2;
        }
    }
    close(pfd[0]); /* the node ignores SIGPIPE; it prints nothing else on stdout */
    if (rc != 0) {
        print_log_tail(np->log);
        node_stop(np);
    }
    return rc;
}

/* Counters from the node's /metrics (plain HTTP/1.0 GET on loopback). */
typedef struct node_metrics {
    double fsyncs;     /* quiver_log_fsyncs_total */
    double log_writes; /* quiver_log_write_seconds_count: group writes of the log */
    double cpu_s;      /* process_cpu_seconds_total */
} node_metrics;

static double metric_value(const char *text, const char *name)
{
    size_t n = strlen(name);
    for (const char *p = text; p != NULL && *p != '\0';) {
        if (strncmp(p, name, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
        p = strchr(p, '\n');
        p = p != NULL ? p + 1 : NULL;
    }
    return NAN;
}

static int scrape(int port, node_metrics *m, qv_status *err)
{
    enum { CAP = 8 << 20 };
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    char *buf = malloc(CAP);
    int rc = 0;
    if (fd < 0 || buf == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "no socket or memory to read /metrics");
        rc = QV_ERESOURCE;
        goto out;
    }
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons((uint16_t)port)};
    sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    static const char req[] = "GET /metrics HTTP/1.0\r\nHost: 127.0.0.1\r\n\r\n";
    if (connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
        write(fd, req, sizeof(req) - 1) != (ssize_t)sizeof(req) - 1) {
        *err = qv_status_make(QV_EUNAVAIL, "GET /metrics on port %d: %s", port, strerror(errno));
        rc = QV_EUNAVAIL;
        goto out;
    }
    size_t len = 0;
    for (;;) {
        ssize_t r = read(fd, buf + len, CAP - 1 - len);
        if (r < 0 && errno == EINTR)
            continue;
        if (r <= 0)
            break;
        len += (size_t)r;
        if (len == CAP - 1)
            break;
    }
    buf[len] = '\0';
    m->fsyncs = metric_value(buf, "quiver_log_fsyncs_total");
    m->log_writes = metric_value(buf, "quiver_log_write_seconds_count");
    m->cpu_s = metric_value(buf, "process_cpu_seconds_total");
    if (strncmp(buf, "HTTP/1.", 7) != 0 || strstr(buf, " 200 ") == NULL) {
        *err = qv_status_make(QV_EUNAVAIL, "GET /metrics on port %d: no 200 answer", port);
        rc = QV_EUNAVAIL;
    }
out:
    if (fd >= 0)
        close(fd);
    free(buf);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Protobuf over common/rpc
 * ------------------------------------------------------------------------------------------- */

typedef struct packed {
    uint8_t *buf;
    size_t len;
} packed;

static int pack(const ProtobufCMessage *msg, packed *out)
{
    out->len = protobuf_c_message_get_packed_size(msg);
    out->buf = malloc(out->len ? out->len : 1);
    if (out->buf == NULL)
        return QV_ERESOURCE;
    protobuf_c_message_pack(msg, out->buf);
    return 0;
}

static void packed_free(packed *p, size_t n)
{
    for (size_t i = 0; p != NULL && i < n; i++)
        free(p[i].buf);
    free(p);
}

/* A blocking call of a packed message; the reply is the caller's. */
static int call_sync(qv_rpc_client *c, const char *target, const char *method,
                     const ProtobufCMessage *msg, qv_rpc_reply *reply, qv_status *err)
{
    packed p;
    if (pack(msg, &p) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    int rc = qv_rpc_call_sync(c, target, method, p.buf, p.len, 60000, NULL, 0, reply, err);
    free(p.buf);
    return rc;
}

static int create_collection(qv_rpc_client *c, const char *target, uint32_t dim, uint32_t M,
                             uint32_t efc, uint32_t ef, qv_status *err)
{
    Quiver__V1__HnswParams hp = QUIVER__V1__HNSW_PARAMS__INIT;
    hp.m = M;
    hp.ef_construction = efc;
    hp.ef_search = ef;
    Quiver__V1__IndexConfig ic = QUIVER__V1__INDEX_CONFIG__INIT;
    ic.type = QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW;
    ic.hnsw = &hp;
    Quiver__V1__CreateCollectionRequest req = QUIVER__V1__CREATE_COLLECTION_REQUEST__INIT;
    req.name = (char *)COLLECTION;
    req.dimension = dim;
    req.metric = QUIVER__V1__METRIC__METRIC_L2;
    req.index = &ic;
    qv_rpc_reply reply = {0};
    int rc = call_sync(c, target, M_CREATE, &req.base, &reply, err);
    qv_rpc_reply_free(&reply);
    return rc;
}

static int describe(qv_rpc_client *c, const char *target, uint64_t *points, uint64_t *indexed,
                    qv_status *err)
{
    Quiver__V1__DescribeCollectionRequest req = QUIVER__V1__DESCRIBE_COLLECTION_REQUEST__INIT;
    req.name = (char *)COLLECTION;
    qv_rpc_reply reply = {0};
    int rc = call_sync(c, target, M_DESCRIBE, &req.base, &reply, err);
    if (rc != 0)
        return rc;
    Quiver__V1__DescribeCollectionResponse *r =
        quiver__v1__describe_collection_response__unpack(NULL, reply.len, reply.data);
    qv_rpc_reply_free(&reply);
    if (r == NULL || r->info == NULL) {
        if (r != NULL)
            quiver__v1__describe_collection_response__free_unpacked(r, NULL);
        *err = qv_status_make(QV_EINTERNAL, "malformed DescribeCollectionResponse");
        return QV_EINTERNAL;
    }
    *points = r->info->points_count;
    *indexed = r->info->indexed_points_count;
    quiver__v1__describe_collection_response__free_unpacked(r, NULL);
    return 0;
}

/* Packs the base vectors into Upsert requests of `batch` points (ids 0..n-1, wait = false). */
static int pack_upserts(const data *d, size_t batch, packed **out, size_t *nout)
{
    size_t n = d->base.n, nb = (n + batch - 1) / batch;
    packed *p = calloc(nb, sizeof(*p));
    Quiver__V1__PointStruct *ps = calloc(batch, sizeof(*ps));
    Quiver__V1__PointStruct **pp = calloc(batch, sizeof(*pp));
    Quiver__V1__PointId *ids = calloc(batch, sizeof(*ids));
    Quiver__V1__Vector *vs = calloc(batch, sizeof(*vs));
    int rc = p != NULL && ps != NULL && pp != NULL && ids != NULL && vs != NULL ? 0 : QV_ERESOURCE;
    for (size_t b = 0; rc == 0 && b < nb; b++) {
        size_t from = b * batch, m = n - from < batch ? n - from : batch;
        for (size_t i = 0; i < m; i++) {
            quiver__v1__point_id__init(&ids[i]);
            ids[i].kind_case = QUIVER__V1__POINT_ID__KIND_NUM;
            ids[i].num = from + i;
            quiver__v1__vector__init(&vs[i]);
            vs[i].n_data = d->base.dim;
            vs[i].data = d->base.data + (from + i) * d->base.dim;
            quiver__v1__point_struct__init(&ps[i]);
            ps[i].id = &ids[i];
            ps[i].vector = &vs[i];
            pp[i] = &ps[i];
        }
        Quiver__V1__UpsertPointsRequest req = QUIVER__V1__UPSERT_POINTS_REQUEST__INIT;
        req.collection = (char *)COLLECTION;
        req.n_points = m;
        req.points = pp;
        req.wait = false;
        rc = pack(&req.base, &p[b]);
    }
    free(ps);
    free(pp);
    free(ids);
    free(vs);
    if (rc != 0) {
        packed_free(p, nb);
        return rc;
    }
    *out = p;
    *nout = nb;
    return 0;
}

/* Packs one Search request per query, or one SearchBatch request per `per_call` queries. */
static int pack_searches(const data *d, uint32_t ef, size_t per_call, bool batch, packed **out,
                         size_t *nout)
{
    size_t nq = d->query.n, nc = batch ? (nq + per_call - 1) / per_call : nq;
    packed *p = calloc(nc ? nc : 1, sizeof(*p));
    Quiver__V1__BatchSearchQuery *bq = calloc(per_call, sizeof(*bq));
    Quiver__V1__BatchSearchQuery **bqp = calloc(per_call, sizeof(*bqp));
    Quiver__V1__Vector *vs = calloc(per_call, sizeof(*vs));
    int rc = p != NULL && bq != NULL && bqp != NULL && vs != NULL ? 0 : QV_ERESOURCE;
    Quiver__V1__SearchParams sp = QUIVER__V1__SEARCH_PARAMS__INIT;
    sp.ef = ef;
    for (size_t c = 0; rc == 0 && c < nc; c++) {
        size_t from = batch ? c * per_call : c;
        size_t m = batch ? (nq - from < per_call ? nq - from : per_call) : 1;
        for (size_t i = 0; i < m; i++) {
            quiver__v1__vector__init(&vs[i]);
            vs[i].n_data = d->query.dim;
            vs[i].data = d->query.data + (from + i) * d->query.dim;
        }
        if (batch) {
            for (size_t i = 0; i < m; i++) {
                quiver__v1__batch_search_query__init(&bq[i]);
                bq[i].vector = &vs[i];
                bq[i].k = K;
                bq[i].params = &sp;
                bqp[i] = &bq[i];
            }
            Quiver__V1__SearchBatchRequest req = QUIVER__V1__SEARCH_BATCH_REQUEST__INIT;
            req.collection = (char *)COLLECTION;
            req.n_queries = m;
            req.queries = bqp;
            rc = pack(&req.base, &p[c]);
        } else {
            Quiver__V1__SearchRequest req = QUIVER__V1__SEARCH_REQUEST__INIT;
            req.collection = (char *)COLLECTION;
            req.vector = &vs[0];
            req.k = K;
            req.params = &sp;
            rc = pack(&req.base, &p[c]);
        }
    }
    free(bq);
    free(bqp);
    free(vs);
    if (rc != 0) {
        packed_free(p, nc);
        return rc;
    }
    *out = p;
    *nout = nc;
    return 0;
}

/* First error of a phase, shared by callbacks on poller threads. */
typedef struct first_error {
    pthread_mutex_t mu;
    size_t count;
    int code;
    char msg[QV_STATUS_MSG_MAX];
} first_error;

static void error_note(first_error *e, int code, const char *msg)
{
    pthread_mutex_lock(&e->mu);
    if (e->count++ == 0) {
        e->code = code;
        snprintf(e->msg, sizeof(e->msg), "%s", msg);
    }
    pthread_mutex_unlock(&e->mu);
}

/* ---------------------------------------------------------------------------------------------
 * Ingest: C clients, each with one Upsert in flight, taking batches from a shared counter
 * ------------------------------------------------------------------------------------------- */

typedef struct ingest_result {
    const char *fsync;
    size_t calls;
    double ack_s, indexed_s;
    double fsyncs, log_writes; /* deltas over the ingest, up to the last acknowledgement */
    double upsert_p50_ms, upsert_p99_ms;
    double node_cores, other_cores; /* CPU over the whole ingest (until indexed) / its wall time */
    size_t errors;
} ingest_result;

typedef struct ingest_run {
    const char *target;
    const packed *reqs;
    size_t nreqs;
    atomic_size_t next;
    uint64_t *lat_ns; /* per request */
    first_error err;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t running; /* clients still sending */
} ingest_run;

typedef struct ingest_client {
    ingest_run *r;
    qv_rpc_client *client;
    size_t cur;
    uint64_t t0;
} ingest_client;

static void ingest_done(const qv_rpc_result *res, void *user);

/* Sends the next batch, or retires the client when none is left. */
static void ingest_next(ingest_client *ic)
{
    ingest_run *r = ic->r;
    for (;;) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->nreqs)
            break;
        ic->cur = i;
        ic->t0 = qv_now_ns();
        if (qv_rpc_call_async(ic->client, r->target, M_UPSERT, r->reqs[i].buf, r->reqs[i].len,
                              CALL_TIMEOUT_MS, NULL, 0, ingest_done, ic, NULL) == 0)
            return;
        error_note(&r->err, QV_EUNAVAIL, "cannot start an Upsert call");
    }
    pthread_mutex_lock(&r->mu);
    if (--r->running == 0)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void ingest_done(const qv_rpc_result *res, void *user)
{
    ingest_client *ic = user;
    ic->r->lat_ns[ic->cur] = qv_now_ns() - ic->t0;
    if (res->code != QV_OK)
        error_note(&ic->r->err, res->code, res->message);
    ingest_next(ic);
}

/* One ingest on a fresh node: create, upsert everything, wait until indexed. */
static int run_ingest(const data *d, const packed *reqs, size_t nreqs, unsigned clients,
                      const node_proc *np, uint32_t M, uint32_t efc, uint32_t ef,
                      ingest_result *out, qv_status *err)
{
    ingest_run r = {.target = np->target, .reqs = reqs, .nreqs = nreqs, .running = clients};
    ingest_client *ics = calloc(clients, sizeof(*ics));
    r.lat_ns = calloc(nreqs ? nreqs : 1, sizeof(*r.lat_ns));
    qv_rpc_client *ctl = NULL;
    int rc = 0;
    atomic_init(&r.next, 0);
    pthread_mutex_init(&r.mu, NULL);
    pthread_cond_init(&r.cv, NULL);
    pthread_mutex_init(&r.err.mu, NULL);
    if (ics == NULL || r.lat_ns == NULL || qv_rpc_client_create(NULL, &ctl) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory for the ingest");
        rc = QV_ERESOURCE;
        goto out;
    }
    for (unsigned i = 0; i < clients; i++) {
        ics[i].r = &r;
        if (qv_rpc_client_create(NULL, &ics[i].client) != 0) {
            *err = qv_status_make(QV_ERESOURCE, "cannot create gRPC client %u", i);
            rc = QV_ERESOURCE;
            goto out;
        }
    }
    rc = create_collection(ctl, np->target, (uint32_t)d->base.dim, M, efc, ef, err);
    if (rc != 0)
        goto out;
    node_metrics m0, m1;
    rc = scrape(np->http_port, &m0, err);
    if (rc != 0)
        goto out;

    uint64_t t0 = qv_now_ns();
    double busy0 = machine_busy_s(), own0 = own_cpu_s();
    for (unsigned i = 0; i < clients; i++)
        ingest_next(&ics[i]);
    pthread_mutex_lock(&r.mu);
    while (r.running > 0)
        pthread_cond_wait(&r.cv, &r.mu);
    pthread_mutex_unlock(&r.mu);
    uint64_t t_ack = qv_now_ns();
    if (r.err.count > 0) {
        *err = qv_status_make(r.err.code, "%zu of %zu Upsert calls failed, first: %s: %s",
                              r.err.count, nreqs, qv_strerror(r.err.code), r.err.msg);
        rc = r.err.code != 0 ? r.err.code : QV_EINTERNAL;
        goto out;
    }
    rc = scrape(np->http_port, &m1, err);
    if (rc != 0)
        goto out;

    /* Applied to the index: poll Describe every DESCRIBE_EVERY_MS (the resolution of indexed_s)
     * until both the live and the indexed points reach n. */
    uint64_t points = 0, indexed = 0;
    for (;;) {
        rc = describe(ctl, np->target, &points, &indexed, err);
        if (rc != 0 || (indexed >= d->base.n && points >= d->base.n))
            break;
        if (qv_bench_secs(qv_now_ns() - t0) * 1000 > INDEX_TIMEOUT_MS) {
            *err = qv_status_make(QV_ETIMEOUT, "only %llu of %zu points indexed after %d s",
                                  (unsigned long long)indexed, d->base.n, INDEX_TIMEOUT_MS / 1000);
            rc = QV_ETIMEOUT;
            break;
        }
        sleep_ms(DESCRIBE_EVERY_MS);
    }
    if (rc != 0)
        goto out;
    uint64_t t_idx = qv_now_ns();
    double busy1 = machine_busy_s(), own1 = own_cpu_s();
    node_metrics m2;
    rc = scrape(np->http_port, &m2, err);
    if (rc != 0)
        goto out;
    if (points != d->base.n || indexed != d->base.n) {
        *err = qv_status_make(QV_EINTERNAL, "Describe: %llu points, %llu indexed; expected %zu",
                              (unsigned long long)points, (unsigned long long)indexed, d->base.n);
        rc = QV_EINTERNAL;
        goto out;
    }
    qsort(r.lat_ns, nreqs, sizeof(*r.lat_ns), qv_bench_cmp_u64);
    out->calls = nreqs;
    out->ack_s = qv_bench_secs(t_ack - t0);
    out->indexed_s = qv_bench_secs(t_idx - t0);
    out->fsyncs = m1.fsyncs - m0.fsyncs;
    out->log_writes = m1.log_writes - m0.log_writes;
    out->upsert_p50_ms = qv_bench_pct_us(r.lat_ns, nreqs, 0.50) / 1e3;
    out->upsert_p99_ms = qv_bench_pct_us(r.lat_ns, nreqs, 0.99) / 1e3;
    out->errors = r.err.count;
    out->node_cores = (m2.cpu_s - m0.cpu_s) / out->indexed_s;
    out->other_cores = (busy1 - busy0 - (own1 - own0)) / out->indexed_s - out->node_cores;
out:
    for (unsigned i = 0; ics != NULL && i < clients; i++)
        qv_rpc_client_destroy(ics[i].client);
    qv_rpc_client_destroy(ctl);
    free(ics);
    free(r.lat_ns);
    pthread_mutex_destroy(&r.err.mu);
    pthread_cond_destroy(&r.cv);
    pthread_mutex_destroy(&r.mu);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * gRPC search: one async client, `inflight` calls in flight (closed loop: each completion, on the
 * client's poller thread, starts the next call)
 * ------------------------------------------------------------------------------------------- */

typedef struct point {
    double qps, p50_us, p95_us, p99_us, recall;
    double node_cores, client_cores; /* CPU used over the measured passes / their wall time */
    double other_cores;              /* CPU other processes of the machine used meanwhile */
    double build_s;                  /* in-process only */
} point;

typedef struct search_run {
    qv_rpc_client *client;
    const char *target, *method;
    const packed *reqs;
    size_t ncalls, per_call, nq;
    bool batch;
    size_t limit; /* calls in this pass */
    atomic_size_t next;
    uint64_t *t0, *lat_ns; /* per call */
    int64_t *ids;          /* nq x K, -1 where a query returned fewer */
    first_error err;
    pthread_mutex_t mu;
    pthread_cond_t cv;
    size_t running; /* slots still calling */
} search_run;

static void search_done(const qv_rpc_result *res, void *user);

typedef struct search_slot {
    search_run *r;
    size_t cur;
} search_slot;

static void search_next(search_slot *s)
{
    search_run *r = s->r;
    for (;;) {
        size_t i = atomic_fetch_add(&r->next, 1);
        if (i >= r->limit)
            break;
        s->cur = i;
        r->t0[i] = qv_now_ns();
        if (qv_rpc_call_async(r->client, r->target, r->method, r->reqs[i].buf, r->reqs[i].len,
                              CALL_TIMEOUT_MS, NULL, 0, search_done, s, NULL) == 0)
            return;
        error_note(&r->err, QV_EUNAVAIL, "cannot start a search call");
    }
    pthread_mutex_lock(&r->mu);
    if (--r->running == 0)
        pthread_cond_signal(&r->cv);
    pthread_mutex_unlock(&r->mu);
}

static void store_points(int64_t *row, Quiver__V1__ScoredPoint **pts, size_t n)
{
    for (size_t j = 0; j < K; j++)
        row[j] =
            j < n && pts[j]->id != NULL && pts[j]->id->kind_case == QUIVER__V1__POINT_ID__KIND_NUM
                ? (int64_t)pts[j]->id->num
                : -1;
}

static void search_done(const qv_rpc_result *res, void *user)
{
    search_slot *s = user;
    search_run *r = s->r;
    size_t c = s->cur;
    r->lat_ns[c] = qv_now_ns() - r->t0[c];
    if (res->code != QV_OK) {
        error_note(&r->err, res->code, res->message);
    } else if (r->batch) {
        Quiver__V1__SearchBatchResponse *b =
            quiver__v1__search_batch_response__unpack(NULL, res->len, res->data);
        size_t from = c * r->per_call, m = r->nq - from < r->per_call ? r->nq - from : r->per_call;
        if (b == NULL || b->n_results != m) {
            error_note(&r->err, QV_EINTERNAL, "malformed SearchBatchResponse");
        } else {
            for (size_t i = 0; i < m; i++)
                store_points(r->ids + (from + i) * K, b->results[i]->points,
                             b->results[i]->n_points);
        }
        if (b != NULL)
            quiver__v1__search_batch_response__free_unpacked(b, NULL);
    } else {
        Quiver__V1__SearchResponse *sr =
            quiver__v1__search_response__unpack(NULL, res->len, res->data);
        if (sr == NULL)
            error_note(&r->err, QV_EINTERNAL, "malformed SearchResponse");
        else
            store_points(r->ids + c * K, sr->points, sr->n_points);
        if (sr != NULL)
            quiver__v1__search_response__free_unpacked(sr, NULL);
    }
    search_next(s);
}

/* One pass over the first `limit` calls; returns the wall time in ns. */
static uint64_t search_pass(search_run *r, search_slot *slots, unsigned inflight, size_t limit)
{
    r->limit = limit;
    atomic_store(&r->next, 0);
    r->running = inflight;
    uint64_t t0 = qv_now_ns();
    for (unsigned i = 0; i < inflight; i++)
        search_next(&slots[i]);
    pthread_mutex_lock(&r->mu);
    while (r->running > 0)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    return qv_now_ns() - t0;
}

/* Starts `perf record` on pid into file; returns its pid or -1. */
static pid_t perf_start(pid_t pid, const char *file)
{
    char pidbuf[16];
    snprintf(pidbuf, sizeof(pidbuf), "%d", (int)pid);
    char *args[] = {"perf", "record", "-F", "999", "-g", "-p", pidbuf, "-o", (char *)file, NULL};
    pid_t p = fork();
    if (p == 0) {
        int devnull = open("/dev/null", O_WRONLY);
        if (devnull >= 0) {
            dup2(devnull, STDOUT_FILENO);
            dup2(devnull, STDERR_FILENO);
        }
        execvp("perf", args);
        _exit(127);
    }
    if (p > 0)
        sleep_ms(500); /* let it attach before the measured passes */
    return p;
}

static void perf_stop(pid_t p)
{
    if (p <= 0)
        return;
    kill(p, SIGINT);
    int status = 0;
    waitpid(p, &status, 0);
}

typedef struct grpc_search {
    search_run r;
    search_slot *slots;
    unsigned inflight;
    bool inited; /* the locks exist */
} grpc_search;

/* Releases what grpc_search_init made (not the client, which must be destroyed first: that waits
 * for every callback); a zeroed struct is fine. */
static void grpc_search_free(grpc_search *g)
{
    if (!g->inited)
        return;
    free(g->slots);
    free(g->r.t0);
    free(g->r.lat_ns);
    free(g->r.ids);
    pthread_mutex_destroy(&g->r.err.mu);
    pthread_cond_destroy(&g->r.cv);
    pthread_mutex_destroy(&g->r.mu);
    memset(g, 0, sizeof(*g));
}

/* `client` is borrowed: Search and SearchBatch share one client (one connection, one poller). */
static int grpc_search_init(grpc_search *g, const data *d, qv_rpc_client *client,
                            const char *target, const packed *reqs, size_t ncalls, bool batch,
                            size_t per_call, unsigned inflight, qv_status *err)
{
    memset(g, 0, sizeof(*g));
    search_run *r = &g->r;
    r->client = client;
    r->target = target;
    r->method = batch ? M_BATCH : M_SEARCH;
    r->reqs = reqs;
    r->ncalls = ncalls;
    r->per_call = batch ? per_call : 1;
    r->nq = d->query.n;
    r->batch = batch;
    atomic_init(&r->next, 0);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    pthread_mutex_init(&r->err.mu, NULL);
    g->inited = true;
    g->inflight = inflight;
    g->slots = calloc(inflight, sizeof(*g->slots));
    r->t0 = calloc(ncalls ? ncalls : 1, sizeof(*r->t0));
    r->lat_ns = calloc(ncalls ? ncalls : 1, sizeof(*r->lat_ns));
    r->ids = malloc((r->nq ? r->nq : 1) * K * sizeof(*r->ids));
    if (g->slots == NULL || r->t0 == NULL || r->lat_ns == NULL || r->ids == NULL) {
        grpc_search_free(g);
        *err = qv_status_make(QV_ERESOURCE, "out of memory for the search");
        return QV_ERESOURCE;
    }
    for (unsigned i = 0; i < inflight; i++)
        g->slots[i].r = r;
    return 0;
}

/* One pass over the first `limit` calls (all when 0); *ns gets its wall time. */
static int grpc_search_pass(grpc_search *g, size_t limit, uint64_t *ns, qv_status *err)
{
    search_run *r = &g->r;
    *ns = search_pass(r, g->slots, g->inflight, limit > 0 && limit < r->ncalls ? limit : r->ncalls);
    if (r->err.count == 0)
        return 0;
    *err =
        qv_status_make(r->err.code, "%zu %s calls failed, first: %s: %s", r->err.count,
                       r->batch ? "SearchBatch" : "Search", qv_strerror(r->err.code), r->err.msg);
    return r->err.code != 0 ? r->err.code : QV_EINTERNAL;
}

/* ---------------------------------------------------------------------------------------------
 * In-process: the same index type and parameters, T threads of single qv_index_search calls
 * ------------------------------------------------------------------------------------------- */

typedef struct local_run {
    qv_index *idx;
    const data *d;
    qv_search_params sp;
    qv_hit *hits;
    uint64_t *lat_ns;
    int64_t *ids;
    atomic_size_t next;
    atomic_int failed;
    qv_status first_err;
    pthread_mutex_t mu; /* the start gate and first_err */
    pthread_cond_t cv;
    bool go;
} local_run;

static void *local_worker(void *arg)
{
    local_run *r = arg;
    size_t nq = r->d->query.n, dim = r->d->query.dim;
    pthread_mutex_lock(&r->mu);
    while (!r->go)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
        if (i >= nq || atomic_load_explicit(&r->failed, memory_order_relaxed))
            break;
        qv_status st = {0};
        size_t got = 0;
        uint64_t t0 = qv_now_ns();
        int rc = qv_index_search(r->idx, r->d->query.data + i * dim, K, &r->sp, NULL,
                                 r->hits + i * K, &got, &st);
        r->lat_ns[i] = qv_now_ns() - t0;
        for (size_t j = 0; j < K; j++)
            r->ids[i * K + j] = j < got ? (int64_t)r->hits[i * K + j].id : -1;
        if (rc != 0) {
            pthread_mutex_lock(&r->mu);
            if (!atomic_exchange(&r->failed, 1))
                r->first_err = st.code != 0 ? st : qv_status_make(rc, "search failed");
            pthread_mutex_unlock(&r->mu);
            break;
        }
    }
    return NULL;
}

typedef struct local_search {
    local_run r;
    pthread_t *th;
    unsigned threads;
    qv_index *idx;
    double build_s;
} local_search;

static void local_search_free(local_search *ls)
{
    qv_index_free(ls->idx);
    free(ls->th);
    free(ls->r.hits);
    free(ls->r.lat_ns);
    free(ls->r.ids);
    memset(ls, 0, sizeof(*ls));
}

/* Builds the index (every core, ids 0..n-1 in one qv_index_add, as `ann` does). */
static int local_search_init(local_search *ls, const data *d, uint32_t M, uint32_t efc, uint32_t ef,
                             unsigned threads, qv_status *err)
{
    size_t n = d->base.n, nq = d->query.n;
    memset(ls, 0, sizeof(*ls));
    ls->threads = threads;
    ls->r.d = d;
    ls->r.sp.ef = ef;
    ls->th = calloc(threads, sizeof(*ls->th));
    ls->r.hits = malloc((nq ? nq : 1) * K * sizeof(*ls->r.hits));
    ls->r.lat_ns = malloc((nq ? nq : 1) * sizeof(*ls->r.lat_ns));
    ls->r.ids = malloc((nq ? nq : 1) * K * sizeof(*ls->r.ids));
    uint64_t *ids64 = malloc(n * sizeof(*ids64));
    int rc = 0;
    if (ls->th == NULL || ls->r.hits == NULL || ls->r.lat_ns == NULL || ls->r.ids == NULL ||
        ids64 == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory for the in-process index");
        rc = QV_ERESOURCE;
        goto out;
    }
    qv_index_params p;
    qv_index_params_default(&p, QV_INDEX_HNSW, QV_METRIC_L2, (uint32_t)d->base.dim);
    p.threads = 0; /* every core, like the node's --index-threads default */
    p.hnsw.M = M;
    p.hnsw.ef_construction = efc;
    p.hnsw.ef_search = ef;
    for (size_t i = 0; i < n; i++)
        ids64[i] = i;
    rc = qv_index_create(&p, &ls->idx, err);
    if (rc != 0)
        goto out;
    uint64_t b0 = qv_now_ns();
    rc = qv_index_add(ls->idx, ids64, d->base.data, n, err);
    ls->build_s = qv_bench_secs(qv_now_ns() - b0);
    ls->r.idx = ls->idx;
out:
    free(ids64);
    if (rc != 0)
        local_search_free(ls);
    return rc;
}

/* One pass over every query by `threads` threads; *ns gets its wall time. */
static int local_search_pass(local_search *ls, uint64_t *ns, qv_status *err)
{
    local_run *r = &ls->r;
    atomic_init(&r->next, 0);
    atomic_init(&r->failed, 0);
    pthread_mutex_init(&r->mu, NULL);
    pthread_cond_init(&r->cv, NULL);
    r->go = false;
    unsigned started = 0;
    while (started < ls->threads && pthread_create(&ls->th[started], NULL, local_worker, r) == 0)
        started++;
    if (started < ls->threads) {
        atomic_store(&r->failed, 1); /* the started workers exit at once */
        r->first_err = qv_status_make(QV_ERESOURCE, "cannot start %u threads", ls->threads);
    }
    /* Open the gate for every worker at once: thread start-up is not measured. */
    pthread_mutex_lock(&r->mu);
    r->go = true;
    uint64_t t0 = qv_now_ns();
    pthread_cond_broadcast(&r->cv);
    pthread_mutex_unlock(&r->mu);
    for (unsigned i = 0; i < started; i++)
        pthread_join(ls->th[i], NULL);
    *ns = qv_now_ns() - t0;
    int rc = 0;
    if (atomic_load(&r->failed)) {
        *err = r->first_err;
        rc = err->code != 0 ? err->code : QV_EINTERNAL;
    }
    pthread_cond_destroy(&r->cv);
    pthread_mutex_destroy(&r->mu);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Series: one search point over several passes (the best pass's QPS and latencies; CPU summed)
 * ------------------------------------------------------------------------------------------- */

typedef struct series {
    size_t nq, nlat;    /* queries and latency samples (calls) per pass */
    uint64_t *best_lat; /* latencies of the best pass */
    double qps;
    double wall_s, node_cpu_s, bench_cpu_s, busy_s; /* summed over the measured passes */
} series;

static int series_init(series *s, size_t nq, size_t nlat)
{
    memset(s, 0, sizeof(*s));
    s->nq = nq;
    s->nlat = nlat;
    s->best_lat = calloc(nlat ? nlat : 1, sizeof(*s->best_lat));
    return s->best_lat != NULL ? 0 : QV_ERESOURCE;
}

typedef int (*pass_fn)(void *obj, uint64_t *ns, qv_status *err);

static int grpc_full_pass(void *obj, uint64_t *ns, qv_status *err)
{
    return grpc_search_pass(obj, 0, ns, err);
}

static int local_full_pass(void *obj, uint64_t *ns, qv_status *err)
{
    return local_search_pass(obj, ns, err);
}

/* Runs one measured pass and adds it to the series: node CPU from its /metrics, ours from the
 * process clock, the machine's from /proc/stat; with perf_file, the node is profiled meanwhile
 * (the file holds the last pass). */
static int measure_pass(pass_fn fn, void *obj, const uint64_t *lat, const node_proc *np,
                        const char *perf_file, series *s, qv_status *err)
{
    node_metrics m0, m1;
    int rc = scrape(np->http_port, &m0, err);
    if (rc != 0)
        return rc;
    pid_t perf = perf_file != NULL ? perf_start(np->pid, perf_file) : -1;
    double c0 = cpu_now_s(), b0 = machine_busy_s();
    uint64_t ns = 0;
    rc = fn(obj, &ns, err);
    double c1 = cpu_now_s(), b1 = machine_busy_s();
    perf_stop(perf);
    if (rc != 0)
        return rc;
    rc = scrape(np->http_port, &m1, err);
    if (rc != 0)
        return rc;
    double qps = (double)s->nq / (ns > 0 ? qv_bench_secs(ns) : 1e-9);
    if (qps > s->qps) {
        s->qps = qps;
        memcpy(s->best_lat, lat, s->nlat * sizeof(*lat));
    }
    s->wall_s += qv_bench_secs(ns);
    s->node_cpu_s += m1.cpu_s - m0.cpu_s;
    s->bench_cpu_s += c1 - c0;
    s->busy_s += b1 - b0;
    return 0;
}

/* The point of a series; recall from the ids of its last pass. */
static void series_point(series *s, const data *d, const int64_t *ids, point *pt)
{
    memset(pt, 0, sizeof(*pt));
    qsort(s->best_lat, s->nlat, sizeof(*s->best_lat), qv_bench_cmp_u64);
    pt->qps = s->qps;
    pt->p50_us = qv_bench_pct_us(s->best_lat, s->nlat, 0.50);
    pt->p95_us = qv_bench_pct_us(s->best_lat, s->nlat, 0.95);
    pt->p99_us = qv_bench_pct_us(s->best_lat, s->nlat, 0.99);
    pt->recall = recall_at_k(d, ids);
    double w = s->wall_s > 0 ? s->wall_s : 1e-9;
    pt->node_cores = s->node_cpu_s / w;
    pt->client_cores = s->bench_cpu_s / w;
    pt->other_cores = s->busy_s / w - pt->node_cores - pt->client_cores; /* perf counts here */
    pt->build_s = NAN;
}

/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

typedef struct ctx {
    const data *d;
    bool json;
    FILE *human; /* stdout, or stderr with --json */
    unsigned clients, workers, inflight;
    uint32_t M, efc, ef, repeat;
    size_t batch, batch_queries;
} ctx;

static void json_num(char *buf, size_t cap, double v, int prec)
{
    if (isnan(v))
        snprintf(buf, cap, "null");
    else
        snprintf(buf, cap, "%.*f", prec, v);
}

static void print_ingest(const ctx *c, const ingest_result *ir)
{
    double n = (double)c->d->base.n;
    double per_fsync = ir->fsyncs > 0 ? (double)ir->calls / ir->fsyncs : NAN;
    double per_write = ir->log_writes > 0 ? (double)ir->calls / ir->log_writes : NAN;
    if (c->json) {
        char pf[32], pw[32], fs[32], lw[32], nc[32], oc[32];
        json_num(nc, sizeof(nc), ir->node_cores, 2);
        json_num(oc, sizeof(oc), ir->other_cores, 2);
        json_num(pf, sizeof(pf), per_fsync, 2);
        json_num(pw, sizeof(pw), per_write, 2);
        json_num(fs, sizeof(fs), ir->fsyncs, 0);
        json_num(lw, sizeof(lw), ir->log_writes, 0);
        printf("{\"bench\":\"node\",\"phase\":\"ingest\",\"dataset\":\"%s\",\"n\":%zu,\"dim\":%zu,"
               "\"fsync\":\"%s\",\"batch\":%zu,\"clients\":%u,\"calls\":%zu,\"ack_s\":%.3f,"
               "\"ack_points_per_s\":%.0f,\"indexed_s\":%.3f,\"indexed_points_per_s\":%.0f,"
               "\"log_fsyncs\":%s,\"acks_per_fsync\":%s,\"log_writes\":%s,"
               "\"acks_per_log_write\":%s,\"upsert_p50_ms\":%.2f,\"upsert_p99_ms\":%.2f,"
               "\"node_cpu_cores\":%s,\"other_cpu_cores\":%s,\"M\":%u,\"ef_construction\":%u,"
               "\"node_workers\":%u,\"errors\":%zu}\n",
               c->d->name, c->d->base.n, c->d->base.dim, ir->fsync, c->batch, c->clients, ir->calls,
               ir->ack_s, n / ir->ack_s, ir->indexed_s, n / ir->indexed_s, fs, pf, lw, pw,
               ir->upsert_p50_ms, ir->upsert_p99_ms, nc, oc, c->M, c->efc, c->workers, ir->errors);
        fflush(stdout);
    }
    char pf_txt[16] = "-", pw_txt[16] = "-";
    if (!isnan(per_fsync))
        snprintf(pf_txt, sizeof(pf_txt), "%.2f", per_fsync);
    if (!isnan(per_write))
        snprintf(pw_txt, sizeof(pw_txt), "%.2f", per_write);
    fprintf(c->human,
            "%-6s %8zu %6zu %8.2f %12.0f %10.2f %14.0f %7.0f %11s %7.0f %10s %9.1f %9.1f %6.2f "
            "%6.2f\n",
            ir->fsync, c->d->base.n, ir->calls, ir->ack_s, n / ir->ack_s, ir->indexed_s,
            n / ir->indexed_s, ir->fsyncs, pf_txt, ir->log_writes, pw_txt, ir->upsert_p50_ms,
            ir->upsert_p99_ms, ir->node_cores, ir->other_cores);
    fflush(c->human);
}

static void print_search(const ctx *c, const char *mode, const char *method, unsigned par,
                         size_t per_call, const point *pt, double local_qps)
{
    double ratio = local_qps > 0 ? pt->qps / local_qps : NAN;
    bool local = strcmp(mode, "in-process") == 0;
    if (c->json) {
        char r[32], nc[32], cc[32], oc[32], bs[32];
        json_num(r, sizeof(r), ratio, 3);
        json_num(nc, sizeof(nc), pt->node_cores, 2);
        json_num(cc, sizeof(cc), pt->client_cores, 2);
        json_num(oc, sizeof(oc), pt->other_cores, 2);
        json_num(bs, sizeof(bs), local ? pt->build_s : NAN, 3);
        printf("{\"bench\":\"node\",\"phase\":\"search\",\"mode\":\"%s\",\"method\":\"%s\","
               "\"dataset\":\"%s\",\"n\":%zu,\"nq\":%zu,\"dim\":%zu,\"k\":%d,\"ef\":%u,"
               "\"M\":%u,\"ef_construction\":%u,\"%s\":%u,\"queries_per_call\":%zu,"
               "\"qps\":%.1f,\"p50_us\":%.1f,\"p95_us\":%.1f,\"p99_us\":%.1f,"
               "\"recall_at_10\":%.5f,\"qps_vs_in_process\":%s,\"node_cpu_cores\":%s,"
               "\"client_cpu_cores\":%s,\"other_cpu_cores\":%s,\"build_s\":%s,\"repeat\":%u,"
               "\"simd\":\"%s\"}\n",
               mode, method, c->d->name, c->d->base.n, c->d->query.n, c->d->base.dim, K, c->ef,
               c->M, c->efc, local ? "threads" : "inflight", par, per_call, pt->qps, pt->p50_us,
               pt->p95_us, pt->p99_us, pt->recall, r, nc, cc, oc, bs, c->repeat,
               qv_kernels_get()->name);
        fflush(stdout);
    }
    char what[48], ratio_txt[16] = "-", nc_txt[16] = "-", cc_txt[16] = "-", oc_txt[16] = "-";
    if (per_call > 1)
        snprintf(what, sizeof(what), "%u in flight, %zu/call", par, per_call);
    else
        snprintf(what, sizeof(what), "%u %s", par, local ? "threads" : "in flight");
    if (!isnan(ratio))
        snprintf(ratio_txt, sizeof(ratio_txt), "%.2fx", ratio);
    if (!isnan(pt->node_cores))
        snprintf(nc_txt, sizeof(nc_txt), "%.2f", pt->node_cores);
    if (!isnan(pt->client_cores))
        snprintf(cc_txt, sizeof(cc_txt), "%.2f", pt->client_cores);
    if (!isnan(pt->other_cores))
        snprintf(oc_txt, sizeof(oc_txt), "%.2f", pt->other_cores);
    fprintf(c->human, "%-24s %-22s %10.0f %9.1f %9.1f %9.1f %8.4f %9s %6s %6s %6s\n", method, what,
            pt->qps, pt->p50_us, pt->p95_us, pt->p99_us, pt->recall, ratio_txt, nc_txt, cc_txt,
            oc_txt);
    fflush(c->human);
}

/* ---------------------------------------------------------------------------------------------
 * Entry point
 * ------------------------------------------------------------------------------------------- */

static const char summary[] =
    "Ingest and search through a real quiver-node over gRPC, against the same HNSW index in this "
    "process, on the same data. The data comes from 'quiver-bench ann --export-dir' (same "
    "vectors, queries and exact top-10). Ingest: for each --fsync policy, a quiver-node child on "
    "a fresh data dir (--dev --gossip off --workers W), Collections.Create (HNSW, --M, "
    "--ef-construction), the base vectors upserted in --batch points per call by --clients "
    "clients (one call each in flight, wait=false), then Describe until indexed_points_count == "
    "n: points/s acknowledged (durable per the policy) and indexed, and from /metrics the log "
    "fsyncs and group writes (acks per fsync = group commit). Search, on the last node, in turns: "
    "Points.Search with --inflight calls in flight from one async client, Points.SearchBatch with "
    "--batch-queries per call (k=10 at --ef), and the same index built here (qv_index HNSW, every "
    "core) searched by W threads of qv_index_search; per point QPS (best of --repeat passes), "
    "latency p50/p95/p99 per call, recall@10, CPU of the node, this process and the rest of the "
    "machine, and the ratio gRPC / in-process. A table on stdout, or JSON lines with --json "
    "(table on stderr).";

int qv_bench_node(int argc, char **argv)
{
    char *dataset = NULL, *synthetic = NULL, *fm_dir = NULL, *node_bin = NULL, *work = NULL;
    char *fsyncs_list = NULL, *perf = NULL;
    uint64_t limit = 0, queries = 0, batch = 0, clients = 0, M = 0, efc = 0, ef = 0;
    uint64_t inflight = 0, batch_queries = 0, workers = 0, repeat = 0;
    double min_recall = 0;
    bool json = false, keep = false;
    qv_opt opts[] = {
        {.name = "dataset",
         .type = QV_OPT_ENUM,
         .target = &dataset,
         .def = "fashion-mnist",
         .choices = "fashion-mnist|synthetic",
         .help = "Fashion-MNIST (60,000 x 784, 10,000 queries) or --synthetic clusters"},
        {.name = "synthetic",
         .type = QV_OPT_STRING,
         .target = &synthetic,
         .def = "100000,128,100,42",
         .help = "N,DIM,CLUSTERS,SEED of --dataset synthetic (as 'quiver-bench ann')"},
        {.name = "fashion-mnist-dir",
         .type = QV_OPT_STRING,
         .target = &fm_dir,
         .def = QV_FASHION_MNIST_DIR,
         .help = "where the Fashion-MNIST .gz files are"},
        {.name = "limit",
         .type = QV_OPT_UINT,
         .target = &limit,
         .def = "0",
         .help = "use only the first N base vectors (0: all)"},
        {.name = "queries",
         .type = QV_OPT_UINT,
         .target = &queries,
         .def = "0",
         .help = "use only the first N queries (0: all, 10,000)"},
        {.name = "node",
         .type = QV_OPT_STRING,
         .target = &node_bin,
         .help = "quiver-node binary (default: quiver-node next to quiver-bench)"},
        {.name = "work-dir",
         .type = QV_OPT_STRING,
         .target = &work,
         .help = "where the temporary data and node directories go (default: $TMPDIR or /tmp; "
                 "must be a real disk for --fsync sync to mean anything)"},
        {.name = "keep",
         .type = QV_OPT_BOOL,
         .target = &keep,
         .def = "false",
         .help = "keep the temporary directory (node logs and data) instead of removing it"},
        {.name = "fsync",
         .type = QV_OPT_STRING,
         .target = &fsyncs_list,
         .def = "sync,off",
         .help = "comma-separated node --fsync policies to ingest with, each on a fresh node; "
                 "the searches run on the last one"},
        {.name = "batch",
         .type = QV_OPT_UINT,
         .target = &batch,
         .def = "1000",
         .min = 1,
         .max = 10000,
         .help = "points per Upsert call"},
        {.name = "clients",
         .type = QV_OPT_UINT,
         .target = &clients,
         .def = "4",
         .min = 1,
         .max = 256,
         .help = "concurrent ingest clients, one Upsert in flight each"},
        {.name = "M",
         .type = QV_OPT_UINT,
         .target = &M,
         .def = "16",
         .min = 4,
         .max = 128,
         .help = "HNSW links per node, node and in-process"},
        {.name = "ef-construction",
         .type = QV_OPT_UINT,
         .target = &efc,
         .def = "200",
         .min = 4,
         .max = 4096,
         .help = "HNSW candidate list while building, node and in-process"},
        {.name = "ef",
         .type = QV_OPT_UINT,
         .target = &ef,
         .def = "64",
         .min = 1,
         .max = 32768,
         .help = "HNSW search candidate list (k is 10)"},
        {.name = "inflight",
         .type = QV_OPT_UINT,
         .target = &inflight,
         .def = "8",
         .min = 1,
         .max = 4096,
         .help = "gRPC search calls kept in flight by the one client"},
        {.name = "batch-queries",
         .type = QV_OPT_UINT,
         .target = &batch_queries,
         .def = "16",
         .min = 1,
         .max = 1024,
         .help = "queries per SearchBatch call"},
        {.name = "workers",
         .type = QV_OPT_UINT,
         .target = &workers,
         .def = "2",
         .min = 1,
         .max = 1024,
         .help = "the node's --workers (RPC handler threads) and the in-process search threads"},
        {.name = "repeat",
         .type = QV_OPT_UINT,
         .target = &repeat,
         .def = "3",
         .min = 1,
         .max = 1000,
         .help = "passes over the query set per search point; the best QPS is kept"},
        {.name = "perf",
         .type = QV_OPT_STRING,
         .target = &perf,
         .help = "PREFIX: 'perf record -g' the node during the measured search passes into "
                 "PREFIX-search.data and PREFIX-batch.data"},
        {.name = "min-recall",
         .type = QV_OPT_DOUBLE,
         .target = &min_recall,
         .def = "0",
         .dmin = 0,
         .dmax = 1,
         .help = "exit 1 when any search point's recall@10 is below this (for tests)"},
        {.name = "json",
         .type = QV_OPT_BOOL,
         .target = &json,
         .def = "false",
         .help = "JSON lines on stdout (one per measured point), the table on stderr"},
        {0},
    };
    qv_config cfg = {.program = PROG, .summary = summary, .env_prefix = NULL, .opts = opts};
    qv_status err = {0};
    int exit_code = 2;
    data d;
    memset(&d, 0, sizeof(d));
    char root[2048] = "", path[2100], exe_dir_node[4200];
    packed *ups = NULL, *single = NULL, *batched = NULL;
    size_t nups = 0, nsingle = 0, nbatched = 0;
    node_proc np = {0};
    qv_rpc_client *sclient = NULL;
    grpc_search gs = {0}, gb = {0};
    local_search ls = {0};
    series ss = {0}, sb = {0}, sl = {0};
    char fsync_names[MAX_FSYNCS][16];
    int nfsync = 0;

    int rc = qv_config_parse(&cfg, argc, argv, &err);
    if (rc == QV_CONFIG_EXITED) {
        exit_code = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto out;
    }
    if (cfg.npositional > 0) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", cfg.positional[0]);
        goto out;
    }
    uint32_t sv[4];
    if (strcmp(dataset, "synthetic") == 0 &&
        (parse_u32_list(synthetic, sv, 4) != 4 || sv[0] == 0 || sv[1] == 0 || sv[2] == 0)) {
        fprintf(stderr, PROG ": --synthetic takes N,DIM,CLUSTERS,SEED\n");
        goto out;
    }
    for (const char *s = fsyncs_list; *s != '\0';) {
        size_t len = strcspn(s, ",");
        if (nfsync == MAX_FSYNCS || len == 0 || len >= sizeof(fsync_names[0]) ||
            !((len == 4 && strncmp(s, "sync", 4) == 0) || (len == 3 && strncmp(s, "off", 3) == 0) ||
              (len == 8 && strncmp(s, "interval", 8) == 0))) {
            fprintf(stderr, PROG ": --fsync takes a list of sync, interval, off (at most %d)\n",
                    MAX_FSYNCS);
            goto out;
        }
        snprintf(fsync_names[nfsync++], sizeof(fsync_names[0]), "%.*s", (int)len, s);
        s += len;
        if (*s == ',')
            s++;
    }
    if (nfsync == 0) {
        fprintf(stderr, PROG ": --fsync is empty\n");
        goto out;
    }
    if (node_bin == NULL) {
        ssize_t n = readlink("/proc/self/exe", exe_dir_node, sizeof(exe_dir_node) - 32);
        char *slash = n > 0 ? memrchr(exe_dir_node, '/', (size_t)n) : NULL;
        if (slash == NULL) {
            fprintf(stderr, PROG ": cannot find my own directory; name the node with --node\n");
            goto out;
        }
        snprintf(slash + 1, 32, "quiver-node");
    } else {
        snprintf(exe_dir_node, sizeof(exe_dir_node), "%s", node_bin);
    }
    if (access(exe_dir_node, X_OK) != 0) {
        fprintf(stderr, PROG ": %s: not an executable (--node)\n", exe_dir_node);
        goto out;
    }
    exit_code = 1;
    qv_log_set_level(QV_LOG_WARN);
    uint64_t run_t0 = qv_now_ns();
    double run_busy0 = machine_busy_s(), run_own0 = own_cpu_s();

    const char *tmp = work != NULL ? work : getenv("TMPDIR") != NULL ? getenv("TMPDIR") : "/tmp";
    snprintf(root, sizeof(root), "%s/quiver-bench-node-XXXXXX", tmp);
    if (mkdtemp(root) == NULL) {
        fprintf(stderr, PROG ": cannot create a directory under %s: %s\n", tmp, strerror(errno));
        root[0] = '\0';
        goto out;
    }

    /* Data. */
    snprintf(path, sizeof(path), "%s/data", root);
    rc = load_data(dataset, synthetic, fm_dir, limit, queries, path, &d, &err);
    if (rc != 0) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto out;
    }
    if (!keep)
        remove_tree(path);
    if (pack_upserts(&d, (size_t)batch, &ups, &nups) != 0 ||
        pack_searches(&d, (uint32_t)ef, 1, false, &single, &nsingle) != 0 ||
        pack_searches(&d, (uint32_t)ef, (size_t)batch_queries, true, &batched, &nbatched) != 0) {
        fprintf(stderr, PROG ": out of memory packing the requests\n");
        goto out;
    }
    ctx c = {.d = &d,
             .json = json,
             .human = json ? stderr : stdout,
             .clients = (unsigned)clients,
             .workers = (unsigned)workers,
             .inflight = (unsigned)inflight,
             .M = (uint32_t)M,
             .efc = (uint32_t)efc,
             .ef = (uint32_t)ef,
             .repeat = (uint32_t)repeat,
             .batch = (size_t)batch,
             .batch_queries = (size_t)batch_queries};
    fprintf(c.human,
            "%s: %zu base, %zu queries, dim %zu, L2, k %d; HNSW M=%u ef_construction=%u; node %s "
            "--workers %u; work dir %s\n",
            d.name, d.base.n, d.query.n, d.base.dim, K, c.M, c.efc, exe_dir_node, c.workers, root);

    /* Ingest, once per fsync policy, each on a fresh node; the last one keeps running. */
    fprintf(c.human,
            "\ningest: Points.Upsert, %zu points/call, %u clients x 1 call in flight, wait=false; "
            "then Describe until indexed; node, other: CPU cores used until indexed\n",
            c.batch, c.clients);
    fprintf(c.human, "%-6s %8s %6s %8s %12s %10s %14s %7s %11s %7s %10s %9s %9s %6s %6s\n", "fsync",
            "points", "calls", "ack_s", "acked pts/s", "indexed_s", "indexed pts/s", "fsyncs",
            "acks/fsync", "writes", "acks/write", "p50_ms", "p99_ms", "node", "other");
    for (int f = 0; f < nfsync; f++) {
        snprintf(path, sizeof(path), "%s/node-%s", root, fsync_names[f]);
        rc = node_start(exe_dir_node, path, fsync_names[f], c.workers, &np, &err);
        if (rc != 0) {
            fprintf(stderr, PROG ": starting %s: %s\n", exe_dir_node, err.msg);
            goto out;
        }
        ingest_result ir = {.fsync = fsync_names[f]};
        rc = run_ingest(&d, ups, nups, c.clients, &np, c.M, c.efc, c.ef, &ir, &err);
        if (rc != 0) {
            fprintf(stderr, PROG ": ingest with --fsync %s: %s\n", fsync_names[f], err.msg);
            print_log_tail(np.log);
            goto out;
        }
        print_ingest(&c, &ir);
        if (f + 1 < nfsync) {
            node_stop(&np);
            if (!keep)
                remove_tree(path);
        }
    }
    packed_free(ups, nups);
    ups = NULL;

    /* Search on the node that has the data, and the same index built here while the node idles;
     * the three are measured in turns (Search, SearchBatch, in-process, Search, ...), so a
     * change in the machine's speed during the run touches all three alike. */
    fprintf(stderr, "building the in-process index...\n");
    rc = local_search_init(&ls, &d, c.M, c.efc, c.ef, c.workers, &err);
    if (rc == 0 && qv_rpc_client_create(NULL, &sclient) != 0) {
        err = qv_status_make(QV_ERESOURCE, "cannot create the gRPC client");
        rc = QV_ERESOURCE;
    }
    if (rc == 0)
        rc = grpc_search_init(&gs, &d, sclient, np.target, single, nsingle, false, 1, c.inflight,
                              &err);
    if (rc == 0)
        rc = grpc_search_init(&gb, &d, sclient, np.target, batched, nbatched, true, c.batch_queries,
                              c.inflight, &err);
    if (rc == 0 &&
        (series_init(&ss, d.query.n, nsingle) != 0 || series_init(&sb, d.query.n, nbatched) != 0 ||
         series_init(&sl, d.query.n, d.query.n) != 0)) {
        err = qv_status_make(QV_ERESOURCE, "out of memory");
        rc = QV_ERESOURCE;
    }
    /* Warm-up (connections, the node's caches): a tenth of the calls of each gRPC kind. */
    uint64_t warm_ns;
    if (rc == 0)
        rc = grpc_search_pass(&gs, nsingle / 10 > c.inflight ? nsingle / 10 : c.inflight, &warm_ns,
                              &err);
    if (rc == 0)
        rc = grpc_search_pass(&gb, nbatched / 10 > c.inflight ? nbatched / 10 : c.inflight,
                              &warm_ns, &err);
    char perf_s[4200], perf_b[4200];
    snprintf(perf_s, sizeof(perf_s), "%s-search.data", perf != NULL ? perf : "");
    snprintf(perf_b, sizeof(perf_b), "%s-batch.data", perf != NULL ? perf : "");
    for (uint32_t rep = 0; rc == 0 && rep < c.repeat; rep++) {
        fprintf(stderr, "search pass %u of %u\n", rep + 1, c.repeat);
        rc = measure_pass(grpc_full_pass, &gs, gs.r.lat_ns, &np, perf != NULL ? perf_s : NULL, &ss,
                          &err);
        if (rc == 0)
            rc = measure_pass(grpc_full_pass, &gb, gb.r.lat_ns, &np, perf != NULL ? perf_b : NULL,
                              &sb, &err);
        if (rc == 0)
            rc = measure_pass(local_full_pass, &ls, ls.r.lat_ns, &np, NULL, &sl, &err);
    }
    if (rc != 0) {
        fprintf(stderr, PROG ": search: %s\n", err.msg);
        print_log_tail(np.log);
        goto out;
    }
    point ps, pb, pl;
    series_point(&ss, &d, gs.r.ids, &ps);
    series_point(&sb, &d, gb.r.ids, &pb);
    series_point(&sl, &d, ls.r.ids, &pl);
    pl.build_s = ls.build_s;
    fprintf(c.human,
            "\nsearch: k=%d ef=%u over %zu queries, best of %u passes taken in turns; latency per "
            "call; node, bench (this process), other (the rest of the machine): CPU seconds / "
            "wall seconds\n",
            K, c.ef, d.query.n, c.repeat);
    fprintf(c.human, "%-24s %-22s %10s %9s %9s %9s %8s %9s %6s %6s %6s\n", "method", "concurrency",
            "qps", "p50_us", "p95_us", "p99_us", "recall", "vs local", "node", "bench", "other");
    print_search(&c, "grpc", "Points.Search", c.inflight, 1, &ps, pl.qps);
    print_search(&c, "grpc", "Points.SearchBatch", c.inflight, c.batch_queries, &pb, pl.qps);
    print_search(&c, "in-process", "qv_index_search", c.workers, 1, &pl, pl.qps);
    fprintf(c.human,
            "in-process build: %.2f s (every core)\n"
            "goal gRPC Search QPS >= 0.8x in-process at the same ef on %u worker threads: %s "
            "(%.2fx; SearchBatch %.2fx)\n",
            pl.build_s, c.workers, ps.qps >= 0.8 * pl.qps ? "met" : "NOT met", ps.qps / pl.qps,
            pb.qps / pl.qps);
    if (perf != NULL)
        fprintf(stderr,
                "perf profiles of the node (last pass): %s, %s (perf report -i FILE "
                "--sort dso,sym)\n",
                perf_s, perf_b);
    node_stop(&np);
    double run_s = qv_bench_secs(qv_now_ns() - run_t0);
    double other = (machine_busy_s() - run_busy0 - (own_cpu_s() - run_own0)) / run_s;
    fprintf(c.human, "other processes used %.2f cores on average over the %.0f s run\n", other,
            run_s);
    exit_code = 0;
    if (ps.recall < min_recall || pb.recall < min_recall || pl.recall < min_recall) {
        fprintf(stderr,
                PROG ": recall@10 below --min-recall %.3f (Search %.4f, SearchBatch %.4f, "
                     "in-process %.4f)\n",
                min_recall, ps.recall, pb.recall, pl.recall);
        exit_code = 1;
    }

out:
    qv_rpc_client_destroy(sclient); /* first: it waits for the callbacks that use gs and gb */
    grpc_search_free(&gs);
    grpc_search_free(&gb);
    local_search_free(&ls);
    free(ss.best_lat);
    free(sb.best_lat);
    free(sl.best_lat);
    node_stop(&np);
    if (root[0] != '\0' && !keep)
        remove_tree(root);
    else if (root[0] != '\0')
        fprintf(stderr, "kept %s\n", root);
    packed_free(ups, nups);
    packed_free(single, nsingle);
    packed_free(batched, nbatched);
    qv_vecs_free(&d.base);
    qv_vecs_free(&d.query);
    qv_ids_free(&d.gt);
    qv_config_free(&cfg);
    return exit_code;
}
