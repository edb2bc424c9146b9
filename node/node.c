/* Node lifecycle: data directory, RPC server, services, gossip membership. */
#define _GNU_SOURCE
#include "node/node_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

void qv__node_public_grpc_addr(const qv_node *node, char *buf, size_t len)
{
    const char *colon = strrchr(node->grpc_addr, ':');
    size_t hostlen = colon == NULL ? 0 : (size_t)(colon - node->grpc_addr);
    char host[256] = "";
    if (hostlen < sizeof(host)) {
        memcpy(host, node->grpc_addr, hostlen);
        host[hostlen] = '\0';
    }
    bool wildcard = host[0] == '\0' || strcmp(host, "0.0.0.0") == 0 || strcmp(host, "[::]") == 0;
    if (wildcard && node->gossip != NULL) {
        /* Others reach this process at its gossip address's host. */
        snprintf(host, sizeof(host), "%s", node->gossip_addr);
        char *c = strrchr(host, ':');
        if (c != NULL)
            *c = '\0';
    }
    snprintf(buf, len, "%s:%d", host, qv_rpc_server_port(node->rpc));
}

/* Resident set size from /proc/self/statm (0 when unavailable). */
static uint64_t rss_bytes(void)
{
    FILE *f = fopen("/proc/self/statm", "r");
    unsigned long long size = 0, rss = 0;
    if (f == NULL)
        return 0;
    int got = fscanf(f, "%llu %llu", &size, &rss);
    fclose(f);
    long page = sysconf(_SC_PAGESIZE);
    return got == 2 && page > 0 ? (uint64_t)rss * (uint64_t)page : 0;
}

/* Publishes this node's gossip state record: role, gRPC address, version, load. */
static int publish_record(qv_node *node)
{
    char grpc[300];
    qv__node_public_grpc_addr(node, grpc, sizeof(grpc));
    qv_gossip_record rec = {
        .role = node->dev ? QV_GOSSIP_ROLE_DEV : QV_GOSSIP_ROLE_NODE,
        .grpc_addr = grpc,
        .version = QV_VERSION_STRING,
        .load =
            {
                .memory_bytes = rss_bytes(),
                .inflight_requests = (uint32_t)qv_rpc_server_inflight(node->rpc),
            },
    };
    return qv_gossip_set_record(node->gossip, &rec);
}

static void *load_loop(void *arg)
{
    qv_node *node = arg;
    pthread_mutex_lock(&node->load_mu);
    while (!node->load_stop) {
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += QV_NODE_LOAD_MS / 1000;
        while (!node->load_stop &&
               pthread_cond_timedwait(&node->load_cond, &node->load_mu, &until) != ETIMEDOUT)
            ;
        if (node->load_stop)
            break;
        pthread_mutex_unlock(&node->load_mu);
        publish_record(node);
        pthread_mutex_lock(&node->load_mu);
    }
    pthread_mutex_unlock(&node->load_mu);
    return NULL;
}

static int gossip_start(qv_node *node, const qv_node_opts *opts, qv_status *err)
{
    qv_gossip_config cfg = {0};
    if (opts->gossip_tunables != NULL)
        cfg = *opts->gossip_tunables;
    cfg.name = opts->node_name != NULL ? opts->node_name : node->dir.node_id;
    cfg.bind_addr = opts->gossip_addr;
    cfg.advertise_addr = opts->gossip_advertise;
    cfg.bind_fallback = opts->gossip_bind_fallback;
    cfg.keys = opts->keys;
    cfg.nkeys = opts->nkeys;
    int rc = qv_gossip_start(&cfg, &node->gossip, err);
    if (rc != 0)
        return rc;
    qv_gossip_addr a = qv_gossip_local_addr(node->gossip);
    qv_gossip_addr_format(&a, node->gossip_addr, sizeof(node->gossip_addr));
    rc = publish_record(node);
    if (rc == 0 && opts->nseeds > 0)
        rc = qv_gossip_join(node->gossip, opts->seeds, opts->nseeds, err);
    if (rc == 0) {
        pthread_mutex_init(&node->load_mu, NULL);
        pthread_cond_init(&node->load_cond, NULL);
        if (pthread_create(&node->load_thread, NULL, load_loop, node) == 0) {
            node->load_started = true;
        } else {
            pthread_mutex_destroy(&node->load_mu);
            pthread_cond_destroy(&node->load_cond);
        }
    }
    if (rc != 0) {
        if (err->msg[0] == '\0')
            *err = qv_status_make(rc, "cannot publish this node's gossip record");
        qv_gossip_stop(node->gossip, 0);
        node->gossip = NULL;
    }
    return rc;
}

static void gossip_stop(qv_node *node)
{
    if (node->load_started) {
        pthread_mutex_lock(&node->load_mu);
        node->load_stop = true;
        pthread_cond_signal(&node->load_cond);
        pthread_mutex_unlock(&node->load_mu);
        pthread_join(node->load_thread, NULL);
        pthread_mutex_destroy(&node->load_mu);
        pthread_cond_destroy(&node->load_cond);
        node->load_started = false;
    }
    if (node->gossip != NULL) {
        /* A graceful leave: the others mark us LEFT at once instead of suspecting us. */
        qv_gossip_stop(node->gossip, 2000);
        node->gossip = NULL;
    }
}

static void call_done(const char *method, int code, uint64_t latency_us, void *user)
{
    qv_node *node = user;
    qv_metrics_rpc_done(node->metrics, method, code, latency_us);
}

static bool node_ready(void *user, char *why, size_t len)
{
    qv_node *node = user;
    if (!atomic_load(&node->serving)) {
        snprintf(why, len, "%s", node->engine == NULL ? "loading collections" : "not serving");
        return false;
    }
    return true;
}

/* Gauges computed at each scrape: per collection points, bytes, memory. */
static void collect_metrics(qv_metrics_writer *w, void *user)
{
    qv_node *node = user;
    if (node->engine == NULL)
        return;
    char **names = NULL;
    size_t n = 0;
    if (qv__engine_list(node->engine, &names, &n) != 0)
        return;
    qv_metrics_gauge(w, "quiver_collections", "Collections held by this node", "", (double)n);
    for (size_t i = 0; i < n; i++) {
        qv_coll *c = NULL;
        qv_status st;
        qv_arena *a = qv__arena_create();
        Quiver__V1__CollectionInfo info;
        if (a != NULL && qv__engine_get(node->engine, names[i], &c, &st) == 0 &&
            qv__coll_info(c, a, &info) == 0) {
            char esc[160], labels[200];
            qv_metrics_escape_label(esc, sizeof(esc), names[i]);
            snprintf(labels, sizeof(labels), "collection=\"%s\"", esc);
            qv_metrics_gauge(w, "quiver_collection_points", "Live points per collection", labels,
                             (double)info.points_count);
            qv_metrics_gauge(w, "quiver_collection_indexed_points",
                             "Points in the collection's ANN index", labels,
                             (double)info.indexed_points_count);
            qv_metrics_gauge(w, "quiver_collection_memory_bytes",
                             "Memory held by the collection (index, payload index, id maps)",
                             labels, (double)info.memory_bytes);
            qv_metrics_gauge(w, "quiver_collection_disk_bytes",
                             "Disk used by the collection (store and snapshot)", labels,
                             (double)info.disk_bytes);
        }
        qv__coll_put(c);
        qv__arena_free(a);
        free(names[i]);
    }
    free(names);
}

int qv_node_start(const qv_node_opts *opts, qv_node **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (opts == NULL || out == NULL || opts->grpc_addr == NULL || opts->data_dir == NULL) {
        *err = qv_status_make(QV_EINVAL, "node options need a data directory and a gRPC address");
        return QV_EINVAL;
    }
    *out = NULL;
    qv_node *node = calloc(1, sizeof(*node));
    if (node == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    node->dev = opts->dev;
    node->dir.lock_fd = -1;
    atomic_init(&node->serving, false);
    node->started_mono_ms = qv_now_ms();
    node->started_wall_ms = qv_wall_ms();
    int rc = QV_ERESOURCE;
    node->grpc_addr = strdup(opts->grpc_addr);
    if (node->grpc_addr == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        goto fail_addr;
    }
    rc = qv__datadir_open(&node->dir, opts->data_dir, err);
    if (rc != 0)
        goto fail_dir;
    rc = qv_metrics_create(&node->metrics);
    if (rc != 0) {
        *err = qv_status_make(rc, "cannot create the metrics registry");
        goto fail_metrics;
    }
    if (opts->http_addr != NULL) {
        /* first, so that /healthz answers (and /readyz says why not) while collections load */
        qv_http_opts ho = {
            .addr = opts->http_addr,
            .metrics = node->metrics,
            .ready = node_ready,
            .user = node,
        };
        rc = qv_http_start(&ho, &node->http, err);
        if (rc != 0)
            goto fail_http;
    }
    qv_fsync_policy fp = QV_FSYNC_SYNC;
    if (opts->fsync != NULL && qv__fsync_policy_parse(opts->fsync, &fp) != 0) {
        rc = QV_EINVAL;
        *err = qv_status_make(QV_EINVAL, "fsync policy '%s' is not sync, interval or off",
                              opts->fsync);
        goto fail_engine;
    }
    qv_engine_opts eo = {
        .fsync = fp,
        .fsync_interval_ms = opts->fsync_interval_ms,
        .snapshot_interval_ms = opts->snapshot_interval_ms,
        .snapshot_points = opts->snapshot_points,
        .index_threads = opts->index_threads,
        .cache_bytes = opts->cache_bytes,
        .max_replicas = 1,
        .node_id = node->dir.node_id,
        .metrics = node->metrics,
    };
    rc = qv__engine_open(node->dir.path, &eo, &node->engine, err);
    if (rc != 0)
        goto fail_engine;
    qv_metrics_add_collector(node->metrics, collect_metrics, node);

    qv_rpc_server_opts ro = {
        .addr = opts->grpc_addr,
        .workers = opts->rpc_workers,
        .max_message_bytes = opts->max_message_bytes,
        .tls = opts->tls,
        .on_call_done = call_done,
        .on_call_done_user = node,
    };
    rc = qv_rpc_server_create(&ro, &node->rpc, err);
    if (rc != 0)
        goto fail_rpc;
    rc = qv__node_register_services(node, node->rpc);
    if (rc != 0) {
        *err = qv_status_make(rc, "cannot register the node's services");
        goto fail_start;
    }
    rc = qv_rpc_server_start(node->rpc, err);
    if (rc != 0)
        goto fail_start;
    snprintf(node->gossip_addr, sizeof(node->gossip_addr), "off");
    if (opts->gossip_addr != NULL) {
        rc = gossip_start(node, opts, err);
        if (rc != 0)
            goto fail_start;
    }
    atomic_store(&node->serving, true);
    qv_log_info("node", "quiver-node %s%s id %s data %s grpc %s (port %d) gossip %s%s%s",
                QV_VERSION_STRING, node->dev ? " (dev mode)" : "", node->dir.node_id,
                node->dir.path, node->grpc_addr, qv_rpc_server_port(node->rpc), node->gossip_addr,
                node->gossip != NULL ? " as " : "",
                node->gossip != NULL ? qv_gossip_name(node->gossip) : "");
    *out = node;
    return 0;

fail_start:
    qv_rpc_server_destroy(node->rpc);
fail_rpc:
    qv_metrics_remove_collector(node->metrics, collect_metrics, node);
    qv__engine_close(node->engine);
fail_engine:
    qv_http_stop(node->http);
fail_http:
    qv_metrics_free(node->metrics);
fail_metrics:
    qv__datadir_close(&node->dir);
fail_dir:
    free(node->grpc_addr);
fail_addr:
    free(node);
    return rc;
}

const char *qv_node_id(const qv_node *node)
{
    return node->dir.node_id;
}

int qv_node_grpc_port(const qv_node *node)
{
    return qv_rpc_server_port(node->rpc);
}

int qv_node_http_port(const qv_node *node)
{
    return node->http != NULL ? qv_http_port(node->http) : 0;
}

const char *qv_node_gossip_addr(const qv_node *node)
{
    return node->gossip_addr;
}

int qv_node_set_cluster_keys(qv_node *node, const qv_gossip_key *keys, size_t nkeys)
{
    if (node->gossip == NULL)
        return QV_EPRECONDITION;
    return qv_gossip_set_keys(node->gossip, keys, nkeys);
}

void qv_node_stop(qv_node *node, uint64_t grace_ms)
{
    if (node == NULL)
        return;
    atomic_store(&node->serving, false);
    gossip_stop(node);
    qv_rpc_server_shutdown(node->rpc, grace_ms);
    qv_rpc_server_destroy(node->rpc);
    /* drains the write queues, snapshots changed collections, closes the store */
    qv_metrics_remove_collector(node->metrics, collect_metrics, node);
    qv__engine_close(node->engine);
    qv_http_stop(node->http);
    qv_metrics_free(node->metrics);
    qv__datadir_close(&node->dir);
    qv_log_info("node", "stopped");
    free(node->grpc_addr);
    free(node);
}
