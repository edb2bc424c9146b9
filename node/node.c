/* Node lifecycle: data directory, RPC server, services. */
#define _GNU_SOURCE
#include "node/node_internal.h"

#include <stdlib.h>
#include <string.h>

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

    qv_rpc_server_opts ro = {
        .addr = opts->grpc_addr,
        .workers = opts->rpc_workers,
        .max_message_bytes = opts->max_message_bytes,
        .tls = opts->tls,
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
    atomic_store(&node->serving, true);
    qv_log_info("node", "quiver-node %s%s id %s data %s grpc %s (port %d)", QV_VERSION_STRING,
                node->dev ? " (dev mode)" : "", node->dir.node_id, node->dir.path, node->grpc_addr,
                qv_rpc_server_port(node->rpc));
    *out = node;
    return 0;

fail_start:
    qv_rpc_server_destroy(node->rpc);
fail_rpc:
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

void qv_node_stop(qv_node *node, uint64_t grace_ms)
{
    if (node == NULL)
        return;
    atomic_store(&node->serving, false);
    qv_rpc_server_shutdown(node->rpc, grace_ms);
    qv_rpc_server_destroy(node->rpc);
    qv__datadir_close(&node->dir);
    qv_log_info("node", "stopped");
    free(node->grpc_addr);
    free(node);
}
