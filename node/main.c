/* quiver-node: the shard node process. */
#define _GNU_SOURCE
#include "node/node.h"

#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char summary[] =
    "quiver-node - a Quiver shard node.\n"
    "\n"
    "Serves the Quiver gRPC API (grpc.health.v1.Health, quiver.v1.Cluster) from a data directory.\n"
    "--dev runs the whole database in this one process on 127.0.0.1 with data in ./quiver-data.\n"
    "SIGTERM or SIGINT drains calls in flight (see --shutdown-grace-ms) and exits 0.";

int main(int argc, char **argv)
{
    bool dev = false, tls_require_client = false;
    char *data_dir = NULL, *grpc_addr = NULL, *log_level = NULL, *log_format = NULL;
    char *tls_cert = NULL, *tls_key = NULL, *tls_ca = NULL;
    uint64_t workers = 0, max_message_mb = 0, grace_ms = 0;

    qv_opt opts[] = {
        {.name = "dev",
         .type = QV_OPT_BOOL,
         .target = &dev,
         .def = "false",
         .help = "single-process mode: node and router in one process, on 127.0.0.1"},
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
         .help = "RPC handler threads (0: one per CPU, at least 2)",
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

    /* Signals are taken synchronously by this thread; every thread started later inherits the
     * mask, so none of them is interrupted. */
    sigset_t sigs;
    sigemptyset(&sigs);
    sigaddset(&sigs, SIGINT);
    sigaddset(&sigs, SIGTERM);
    pthread_sigmask(SIG_BLOCK, &sigs, NULL);
    signal(SIGPIPE, SIG_IGN);

    qv_node_opts nopts = {
        .dev = dev,
        .data_dir = data_dir,
        .grpc_addr = grpc_addr,
        .rpc_workers = (unsigned)workers,
        .max_message_bytes = (size_t)max_message_mb * 1024u * 1024u,
        .tls = have_tls ? &tls : NULL,
    };
    if (qv_node_start(&nopts, &node, &err) != 0) {
        fprintf(stderr, "quiver-node: %s\n", err.msg);
        exit_code = 1;
        goto out;
    }
    /* One line on stdout that scripts can wait for. */
    printf("quiver-node ready: grpc=%s port=%d node_id=%s\n", grpc_addr, qv_node_grpc_port(node),
           qv_node_id(node));
    fflush(stdout);

    int sig = 0;
    sigwait(&sigs, &sig);
    qv_log_info("node", "received %s, shutting down", sig == SIGINT ? "SIGINT" : "SIGTERM");
    qv_node_stop(node, grace_ms);
    exit_code = 0;

out:
    qv_rpc_tls_free(&tls);
    qv_config_free(&cfg);
    return exit_code;
}
