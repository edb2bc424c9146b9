/* quiver-node: the shard node process. */
#define _GNU_SOURCE
#include "node/node.h"

#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static pthread_t g_main_thread;

/* Threads that libraries start before main() runs (OpenBLAS starts its pool in a constructor) do
 * not block the signals main() waits for. A SIGTERM that arrives while main() is not inside
 * sigwait() would be delivered to such a thread and, with the default action, end the process
 * without a shutdown. This handler hands it to the main thread, where it stays pending until
 * sigwait() takes it. pthread_kill is async-signal-safe. */
static void forward_to_main(int sig)
{
    pthread_kill(g_main_thread, sig);
}

static const char summary[] =
    "quiver-node - a Quiver shard node.\n"
    "\n"
    "Serves the Quiver gRPC API (grpc.health.v1.Health, quiver.v1.Cluster, quiver.v1.Collections,\n"
    "quiver.v1.Points) from a data directory: collections and points live in a RocksDB store "
    "there\n"
    "(write log, vectors, payload), indexes are rebuilt from snapshots plus the log on start.\n"
    "--dev runs a single-node database in this one process (defaults: 127.0.0.1, ./quiver-data).\n"
    "Nodes find each other by gossip (SWIM over UDP + TCP on --gossip, joined through --seeds),\n"
    "sealed with a cluster key: --cluster-key-file FILE or QUIVER_CLUSTER_KEY (64 hex digits or\n"
    "base64 of 32 bytes; several keys separated by commas or lines, the first one primary; see\n"
    "docs/gossip.md). A --dev node without a key and without --seeds makes up an ephemeral key.\n"
    "SIGTERM or SIGINT leaves the cluster, drains calls in flight (see --shutdown-grace-ms) and\n"
    "exits 0. SIGHUP re-reads --cluster-key-file (key rotation).";

#define MAX_SEEDS 64

/* Splits "a:1, b:2" into seeds[] (pointers into text, which is modified). Returns the count, or
 * -1 for an empty entry or too many. */
static int split_seeds(char *text, const char **seeds, int max)
{
    int n = 0;
    for (char *save = NULL, *tok = strtok_r(text, ",", &save); tok != NULL;
         tok = strtok_r(NULL, ",", &save)) {
        while (*tok == ' ')
            tok++;
        size_t len = strlen(tok);
        while (len > 0 && tok[len - 1] == ' ')
            tok[--len] = '\0';
        if (len == 0 || n == max)
            return -1;
        seeds[n++] = tok;
    }
    return n;
}

/* Fills keys from --cluster-key-file or QUIVER_CLUSTER_KEY / --cluster-key, or makes up an
 * ephemeral key for a lone dev node. Returns 0, or 2 (usage) with a message printed. */
static int load_keys(const char *key_file, const char *key_text, bool dev, int nseeds,
                     qv_gossip_key *keys, size_t *nkeys)
{
    qv_status err = qv_status_ok();
    if (key_file != NULL && key_text != NULL) {
        fprintf(stderr, "quiver-node: give the cluster key either by --cluster-key-file or by "
                        "QUIVER_CLUSTER_KEY (--cluster-key), not both\n");
        return 2;
    }
    if (key_file != NULL) {
        if (qv_gossip_keys_load_file(key_file, keys, QV_GOSSIP_KEYRING_MAX, nkeys, &err) != 0) {
            fprintf(stderr, "quiver-node: %s\n", err.msg);
            return 2;
        }
        return 0;
    }
    if (key_text != NULL) {
        if (qv_gossip_keys_parse(key_text, keys, QV_GOSSIP_KEYRING_MAX, nkeys, &err) != 0) {
            fprintf(stderr, "quiver-node: QUIVER_CLUSTER_KEY / --cluster-key: %s\n", err.msg);
            return 2;
        }
        return 0;
    }
    if (dev && nseeds == 0) {
        if (qv_gossip_key_generate(&keys[0]) != 0) {
            fprintf(stderr, "quiver-node: cannot generate an ephemeral cluster key\n");
            return 2;
        }
        *nkeys = 1;
        qv_log_info("node", "gossip: single-node dev cluster with an ephemeral cluster key; no "
                            "other member can join it (set --cluster-key-file or "
                            "QUIVER_CLUSTER_KEY to build a cluster)");
        return 0;
    }
    fprintf(stderr,
            "quiver-node: gossip needs a cluster key%s: --cluster-key-file FILE or the "
            "environment variable QUIVER_CLUSTER_KEY (64 hex digits or base64 of 32 bytes; "
            "make one with: head -c 32 /dev/urandom | base64), or --gossip off\n",
            nseeds > 0 ? " to join through --seeds" : "");
    return 2;
}

int main(int argc, char **argv)
{
    bool dev = false, tls_require_client = false;
    char *data_dir = NULL, *grpc_addr = NULL, *log_level = NULL, *log_format = NULL;
    char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
    uint64_t workers = 0, max_message_mb = 0, grace_ms = 0;
    char *gossip = NULL, *gossip_advertise = NULL, *seeds_text = NULL, *key_file = NULL;
    char *key_text = NULL, *node_name = NULL;
    uint64_t g_probe_interval = 0, g_probe_timeout = 0, g_indirect = 0, g_susp_mult = 0;
    uint64_t g_susp_max = 0, g_awareness = 0, g_retransmit = 0, g_interval = 0, g_nodes = 0;
    uint64_t g_push_pull = 0, g_reconnect = 0, g_to_dead = 0, g_reclaim = 0, g_tcp_timeout = 0;
    char *http_addr = NULL, *fsync_policy = NULL;
    uint64_t fsync_interval = 0, snapshot_interval_s = 0, snapshot_points = 0, index_threads = 0;
    uint64_t cache_mb = 0;

    qv_opt opts[] = {
        {.name = "dev",
         .type = QV_OPT_BOOL,
         .target = &dev,
         .def = "false",
         .help = "dev mode: a single-node database for one machine, no gossip flags needed "
                 "(reported as NODE_MODE_DEV; the router joins this process in later versions)"},
        {.name = "data",
         .type = QV_OPT_STRING,
         .target = &data_dir,
         .def = "./quiver-data",
         .help = "data directory (created if missing; one node per directory)"},
        {.name = "grpc",
         .type = QV_OPT_STRING,
         .target = &grpc_addr,
         .def = "127.0.0.1:7070",
         .help = "gRPC listen address HOST:PORT (port 0 picks a free port)"},
        {.name = "workers",
         .type = QV_OPT_UINT,
         .target = &workers,
         .def = "0",
         .help = "RPC handler threads (0: four per CPU, at least 8: writes wait for their log "
                 "fsync on a handler thread, and more of them waiting at once share one fsync)",
         .min = 0,
         .max = 1024},
        {.name = "max-message-mb",
         .type = QV_OPT_UINT,
         .target = &max_message_mb,
         .def = "64",
         .help = "largest gRPC message accepted or sent, in MiB",
         .min = 1,
         .max = 2047},
        {.name = "shutdown-grace-ms",
         .type = QV_OPT_UINT,
         .target = &grace_ms,
         .def = "10000",
         .help = "on SIGTERM, how long calls in flight may run before they are cancelled",
         .min = 0,
         .max = 3600000},
        {.name = "tls-cert",
         .type = QV_OPT_STRING,
         .target = &tls_cert,
         .help = "PEM certificate chain: serve gRPC over TLS (needs --tls-key)"},
        {.name = "tls-key",
         .type = QV_OPT_STRING,
         .target = &tls_key,
         .help = "PEM private key of --tls-cert"},
        {.name = "tls-ca",
         .type = QV_OPT_STRING,
         .target = &tls_ca,
         .help = "PEM CA bundle that client certificates must chain to (mutual TLS)"},
        {.name = "tls-require-client-cert",
         .type = QV_OPT_BOOL,
         .target = &tls_require_client,
         .def = "false",
         .help = "require and verify client certificates against --tls-ca"},
        {.name = "gossip",
         .type = QV_OPT_STRING,
         .target = &gossip,
         .help = "gossip (SWIM) address HOST:PORT, UDP and TCP on the same port (port 0 picks "
                 "one), or 'off'; default 127.0.0.1:7946, and with --dev and no --seeds a free "
                 "port when 7946 is taken"},
        {.name = "gossip-advertise",
         .type = QV_OPT_STRING,
         .target = &gossip_advertise,
         .help = "gossip address other members reach this node at (needed when --gossip binds "
                 "0.0.0.0); default: the bound address"},
        {.name = "seeds",
         .type = QV_OPT_STRING,
         .target = &seeds_text,
         .help = "members to join through: HOST:PORT,HOST:PORT (retried with backoff until one "
                 "answers)"},
        {.name = "cluster-key-file",
         .type = QV_OPT_STRING,
         .target = &key_file,
         .help = "file holding the cluster key(s), one per line, first primary (SIGHUP "
                 "re-reads it)"},
        {.name = "cluster-key",
         .type = QV_OPT_STRING,
         .target = &key_text,
         .help = "cluster key(s), comma-separated, first primary; set QUIVER_CLUSTER_KEY "
                 "rather than this flag, which other users can see in ps"},
        {.name = "node-name",
         .type = QV_OPT_STRING,
         .target = &node_name,
         .help = "this member's name in the cluster (default: the node id)"},
        {.name = "gossip-probe-interval-ms",
         .type = QV_OPT_UINT,
         .target = &g_probe_interval,
         .def = "1000",
         .help = "one failure-detector probe per interval",
         .min = 10,
         .max = 600000},
        {.name = "gossip-probe-timeout-ms",
         .type = QV_OPT_UINT,
         .target = &g_probe_timeout,
         .def = "500",
         .help = "wait for a direct ack before asking others to probe (< the interval)",
         .min = 5,
         .max = 600000},
        {.name = "gossip-indirect-checks",
         .type = QV_OPT_UINT,
         .target = &g_indirect,
         .def = "3",
         .help = "members asked to probe a member that missed its direct ack",
         .min = 1,
         .max = 16},
        {.name = "gossip-suspicion-mult",
         .type = QV_OPT_UINT,
         .target = &g_susp_mult,
         .def = "4",
         .help = "minimum suspicion = mult * max(1, log10 members) * probe interval",
         .min = 1,
         .max = 1000},
        {.name = "gossip-suspicion-max-mult",
         .type = QV_OPT_UINT,
         .target = &g_susp_max,
         .def = "6",
         .help = "maximum suspicion (no confirmations) = this * minimum suspicion",
         .min = 1,
         .max = 1000},
        {.name = "gossip-awareness-max",
         .type = QV_OPT_UINT,
         .target = &g_awareness,
         .def = "8",
         .help = "local health may stretch probe interval and timeout up to this factor",
         .min = 1,
         .max = 64},
        {.name = "gossip-retransmit-mult",
         .type = QV_OPT_UINT,
         .target = &g_retransmit,
         .def = "4",
         .help = "each update is piggybacked mult * ceil(log10(members + 1)) times",
         .min = 1,
         .max = 32},
        {.name = "gossip-interval-ms",
         .type = QV_OPT_UINT,
         .target = &g_interval,
         .def = "200",
         .help = "pending updates go to --gossip-nodes random members this often",
         .min = 1,
         .max = 600000},
        {.name = "gossip-nodes",
         .type = QV_OPT_UINT,
         .target = &g_nodes,
         .def = "3",
         .help = "members each gossip round sends to",
         .min = 1,
         .max = 16},
        {.name = "gossip-push-pull-interval-ms",
         .type = QV_OPT_UINT,
         .target = &g_push_pull,
         .def = "30000",
         .help = "full-state exchange (TCP) with one random member this often (longer beyond "
                 "32 members)",
         .min = 100,
         .max = 86400000},
        {.name = "gossip-reconnect-interval-ms",
         .type = QV_OPT_UINT,
         .target = &g_reconnect,
         .def = "10000",
         .help = "full-state exchange with one random DEAD member this often (heals partitions)",
         .min = 100,
         .max = 86400000},
        {.name = "gossip-to-dead-ms",
         .type = QV_OPT_UINT,
         .target = &g_to_dead,
         .def = "30000",
         .help = "dead and departed members still receive gossip this long",
         .min = 1,
         .max = 86400000},
        {.name = "gossip-dead-reclaim-ms",
         .type = QV_OPT_UINT,
         .target = &g_reclaim,
         .def = "3600000",
         .help = "dead and departed members are forgotten after this",
         .min = 1000,
         .max = 604800000},
        {.name = "gossip-tcp-timeout-ms",
         .type = QV_OPT_UINT,
         .target = &g_tcp_timeout,
         .def = "10000",
         .help = "limit on one push-pull exchange",
         .min = 10,
         .max = 600000},
        {.name = "http",
         .type = QV_OPT_STRING,
         .target = &http_addr,
         .help = "HTTP listen address HOST:PORT for /metrics (Prometheus), /healthz and /readyz "
                 "(unset: no HTTP; run.sh uses 127.0.0.1:9090)"},
        {.name = "fsync",
         .type = QV_OPT_ENUM,
         .target = &fsync_policy,
         .def = "sync",
         .choices = "sync|interval|off",
         .help = "when a write is durable before it is acknowledged: sync (fsync of the log, "
                 "shared by concurrent writers), interval (fsync every --fsync-interval-ms; a "
                 "power loss may lose that much), off (the OS decides; survives a process crash)"},
        {.name = "fsync-interval-ms",
         .type = QV_OPT_UINT,
         .target = &fsync_interval,
         .def = "100",
         .help = "log fsync period with --fsync interval",
         .min = 1,
         .max = 60000},
        {.name = "snapshot-interval-s",
         .type = QV_OPT_UINT,
         .target = &snapshot_interval_s,
         .def = "300",
         .help = "snapshot a changed collection's index at least this often (also at shutdown)",
         .min = 1,
         .max = 86400},
        {.name = "snapshot-points",
         .type = QV_OPT_UINT,
         .target = &snapshot_points,
         .def = "100000",
         .help = "snapshot a collection's index once this many points changed",
         .min = 1,
         .max = 1000000000},
        {.name = "index-threads",
         .type = QV_OPT_UINT,
         .target = &index_threads,
         .def = "0",
         .help = "threads that build an index batch (0: one per CPU)",
         .min = 0,
         .max = 1024},
        {.name = "cache-mb",
         .type = QV_OPT_UINT,
         .target = &cache_mb,
         .def = "256",
         .help = "RocksDB block cache (vectors and payload read by searches), in MiB",
         .min = 8,
         .max = 1048576},
        {.name = "log-level",
         .type = QV_OPT_ENUM,
         .target = &log_level,
         .def = "info",
         .choices = "debug|info|warn|error|off",
         .help = "least severe log level written"},
        {.name = "log-format",
         .type = QV_OPT_ENUM,
         .target = &log_format,
         .def = "text",
         .choices = "text|json",
         .help = "log records as text lines or JSON lines"},
        {0},
    };
    qv_config cfg = {
        .program = "quiver-node",
        .summary = summary,
        .env_prefix = "QUIVER",
        .opts = opts,
    };
    int exit_code = 2;
    const char *seeds[MAX_SEEDS];
    int nseeds = 0;
    qv_gossip_key keys[QV_GOSSIP_KEYRING_MAX];
    size_t nkeys = 0;
    qv_rpc_tls tls = {0};
    bool have_tls = false;
    qv_node *node = NULL;
    qv_status err = {0};

    int rc = qv_config_parse(&cfg, argc, argv, &err);
    if (rc == QV_CONFIG_EXITED) {
        exit_code = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "quiver-node: %s\n", err.msg);
        goto out;
    }
    if (cfg.npositional > 0) {
        fprintf(stderr, "quiver-node: unexpected argument '%s' (see --help)\n", cfg.positional[0]);
        goto out;
    }
    qv_log_level level;
    qv_log_format format;
    qv_log_parse_level(log_level, &level);
    qv_log_parse_format(log_format, &format);
    qv_log_set_level(level);
    qv_log_set_format(format);

    if (tls_cert != NULL || tls_key != NULL || tls_ca != NULL) {
        if (qv_rpc_tls_load(&tls, tls_cert, tls_key, tls_ca, &err) != 0) {
            fprintf(stderr, "quiver-node: %s\n", err.msg);
            goto out;
        }
        if (tls_cert == NULL) {
            fprintf(stderr, "quiver-node: --tls-ca needs --tls-cert and --tls-key\n");
            goto out;
        }
        if (tls_require_client && tls_ca == NULL) {
            fprintf(stderr, "quiver-node: --tls-require-client-cert needs --tls-ca\n");
            goto out;
        }
        tls.require_client_cert = tls_require_client;
        have_tls = true;
    } else if (tls_require_client) {
        fprintf(stderr, "quiver-node: --tls-require-client-cert needs --tls-cert, --tls-key "
                        "and --tls-ca\n");
        goto out;
    }

    /* Gossip: address, seeds, keys. */
    const char *gossip_bind = gossip;
    bool gossip_fallback = false;
    if (seeds_text != NULL) {
        nseeds = split_seeds(seeds_text, seeds, MAX_SEEDS);
        if (nseeds < 0) {
            fprintf(stderr, "quiver-node: --seeds must be HOST:PORT,HOST:PORT (at most %d)\n",
                    MAX_SEEDS);
            goto out;
        }
    }
    if (gossip != NULL && strcmp(gossip, "off") == 0) {
        gossip_bind = NULL;
        if (nseeds > 0) {
            fprintf(stderr, "quiver-node: --seeds needs gossip (not --gossip off)\n");
            goto out;
        }
    } else {
        if (gossip == NULL) {
            gossip_bind = "127.0.0.1:7946";
            gossip_fallback = dev && nseeds == 0; /* a lone dev node needs no fixed port */
        }
        int krc = load_keys(key_file, key_text, dev, nseeds, keys, &nkeys);
        if (krc != 0)
            goto out;
    }
    if (g_probe_timeout >= g_probe_interval) {
        fprintf(stderr, "quiver-node: --gossip-probe-timeout-ms must be below "
                        "--gossip-probe-interval-ms\n");
        goto out;
    }
    qv_gossip_config tunables = {
        .probe_interval_ms = (uint32_t)g_probe_interval,
        .probe_timeout_ms = (uint32_t)g_probe_timeout,
        .indirect_checks = (uint32_t)g_indirect,
        .suspicion_mult = (uint32_t)g_susp_mult,
        .suspicion_max_mult = (uint32_t)g_susp_max,
        .awareness_max = (uint32_t)g_awareness,
        .retransmit_mult = (uint32_t)g_retransmit,
        .gossip_interval_ms = (uint32_t)g_interval,
        .gossip_nodes = (uint32_t)g_nodes,
        .push_pull_interval_ms = (uint32_t)g_push_pull,
        .reconnect_interval_ms = (uint32_t)g_reconnect,
        .gossip_to_dead_ms = (uint32_t)g_to_dead,
        .dead_reclaim_ms = g_reclaim,
        .tcp_timeout_ms = (uint32_t)g_tcp_timeout,
    };

    /* Signals are taken synchronously by this thread; every thread started later inherits the
     * mask, so none of them is interrupted. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    sigaddset(&sigs, SIGHUP);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    g_main_thread = pthread_self();
    struct sigaction fwd = {.sa_handler = forward_to_main, .sa_flags = SA_RESTART};
    sigfillset(&fwd.sa_mask);
    sigaction(SIGINT, &fwd, NULL);
    sigaction(SIGTERM, &fwd, NULL);
    sigaction(SIGHUP, &fwd, NULL);
    signal(SIGPIPE, SIG_IGN);

    if (workers == 0) {
        long ncpu = sysconf(_SC_NPROCESSORS_ONLN);
        workers = ncpu > 2 ? (uint64_t)ncpu * 4 : 8;
    }
    qv_node_opts nopts = {
        .dev = dev,
        .data_dir = data_dir,
        .grpc_addr = grpc_addr,
        .rpc_workers = (unsigned)workers,
        .max_message_bytes = (size_t)max_message_mb * 1024u * 1024u,
        .tls = have_tls ? &tls : NULL,
        .gossip_addr = gossip_bind,
        .gossip_advertise = gossip_advertise,
        .gossip_bind_fallback = gossip_fallback,
        .seeds = seeds,
        .nseeds = (size_t)nseeds,
        .node_name = node_name,
        .keys = keys,
        .nkeys = nkeys,
        .gossip_tunables = &tunables,
        .fsync = fsync_policy,
        .fsync_interval_ms = (uint32_t)fsync_interval,
        .snapshot_interval_ms = snapshot_interval_s * 1000,
        .snapshot_points = snapshot_points,
        .index_threads = (unsigned)index_threads,
        .cache_bytes = cache_mb << 20,
        .http_addr = http_addr,
    };
    int src = qv_node_start(&nopts, &node, &err);
    explicit_bzero(keys, sizeof(keys));
    if (src != 0) {
        fprintf(stderr, "quiver-node: %s\n", err.msg);
        exit_code = 1;
        goto out;
    }
    /* One line on stdout that scripts can wait for. */
    printf("quiver-node ready: grpc=%s port=%d node_id=%s gossip=%s http_port=%d\n", grpc_addr,
           qv_node_grpc_port(node), qv_node_id(node), qv_node_gossip_addr(node),
           qv_node_http_port(node));
    fflush(stdout);

    int sig = 0;
    for (;;) {
        sigwait(&sigs, &sig);
        if (sig != SIGHUP)
            break;
        if (key_file == NULL) {
            qv_log_warn("node", "SIGHUP: no --cluster-key-file to re-read");
            continue;
        }
        size_t n = 0;
        int rc2 = qv_gossip_keys_load_file(key_file, keys, QV_GOSSIP_KEYRING_MAX, &n, &err);
        if (rc2 == 0)
            rc2 = qv_node_set_cluster_keys(node, keys, n);
        explicit_bzero(keys, sizeof(keys));
        if (rc2 != 0)
            qv_log_error("node", "SIGHUP: keyring unchanged: %s",
                         err.msg[0] ? err.msg : qv_strerror(rc2));
        else
            qv_log_info("node", "SIGHUP: keyring reloaded from %s (%zu keys)", key_file, n);
        err = qv_status_ok();
    }
    qv_log_info("node", "received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    qv_node_stop(node, grace_ms);
    exit_code = 0;

out:
    qv_rpc_tls_free(&tls);
    qv_config_free(&cfg);
    return exit_code;
}
