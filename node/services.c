/* The node's gRPC services: grpc.health.v1.Health and quiver.v1.Cluster. */
#define _GNU_SOURCE
#include "node/node_internal.h"

#include "grpc/health/v1/health.pb-c.h"
#include "quiver/v1/cluster.pb-c.h"

#include <string.h>

/* Packs a protobuf-c message into the call's response buffer. */
#define PACK_RESPONSE(ctx, type, msg)                                                              \
    do {                                                                                           \
        size_t len_ = type##__get_packed_size(msg);                                                \
        uint8_t *buf_ = qv_rpc_ctx_response((ctx), len_);                                          \
        if (buf_ == NULL)                                                                          \
            return qv_rpc_ctx_fail((ctx), QV_ERESOURCE, "cannot allocate the response");           \
        type##__pack((msg), buf_);                                                                 \
    } while (0)

/* Services this node reports on through Health/Check; "" is the server as a whole. */
static const char *const known_services[] = {
    "",
    "quiver.v1.Cluster",
};

static int health_check(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_node *node = user;
    Grpc__Health__V1__HealthCheckRequest *in =
        grpc__health__v1__health_check_request__unpack(NULL, len, req);
    if (in == NULL)
        return qv_rpc_ctx_fail(ctx, QV_EINVAL, "malformed HealthCheckRequest");
    bool known = false;
    for (size_t i = 0; i < sizeof(known_services) / sizeof(known_services[0]); i++)
        known = known || strcmp(in->service, known_services[i]) == 0;
    if (!known) {
        int rc = qv_rpc_ctx_fail(ctx, QV_ENOTFOUND, "unknown service '%.100s'", in->service);
        grpc__health__v1__health_check_request__free_unpacked(in, NULL);
        return rc;
    }
    grpc__health__v1__health_check_request__free_unpacked(in, NULL);

    Grpc__Health__V1__HealthCheckResponse out = GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__INIT;
    out.status = atomic_load(&node->serving)
                     ? GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING
                     : GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__NOT_SERVING;
    PACK_RESPONSE(ctx, grpc__health__v1__health_check_response, &out);
    return 0;
}

static int cluster_status(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_node *node = user;
    Quiver__V1__ClusterStatusRequest *in =
        quiver__v1__cluster_status_request__unpack(NULL, len, req);
    if (in == NULL)
        return qv_rpc_ctx_fail(ctx, QV_EINVAL, "malformed ClusterStatusRequest");
    quiver__v1__cluster_status_request__free_unpacked(in, NULL);

    char addr[300];
    snprintf(addr, sizeof(addr), "%s", node->grpc_addr);
    /* A wildcard port 0 was resolved at bind time: report the real one. */
    char *colon = strrchr(addr, ':');
    if (colon != NULL && strcmp(colon, ":0") == 0)
        snprintf(colon, sizeof(addr) - (size_t)(colon - addr), ":%d",
                 qv_rpc_server_port(node->rpc));

    Quiver__V1__ClusterStatusResponse out = QUIVER__V1__CLUSTER_STATUS_RESPONSE__INIT;
    out.node_id = node->dir.node_id;
    out.version = QV_VERSION_STRING;
    out.mode =
        node->dev ? QUIVER__V1__NODE_MODE__NODE_MODE_DEV : QUIVER__V1__NODE_MODE__NODE_MODE_NODE;
    out.uptime_ms = qv_now_ms() - node->started_mono_ms;
    out.grpc_address = addr;
    /* Until gossip joins nodes into a cluster, a node knows only itself. */
    out.members_alive = 1;
    out.members_total = 1;
    out.collections = 0;
    out.healthy = atomic_load(&node->serving);
    out.data_dir = node->dir.path;
    out.started_at_unix_ms = node->started_wall_ms;
    PACK_RESPONSE(ctx, quiver__v1__cluster_status_response, &out);
    return 0;
}

int qv__node_register_services(qv_node *node, qv_rpc_server *srv)
{
    int rc = qv_rpc_server_register(srv, "/grpc.health.v1.Health/Check", health_check, node);
    if (rc == 0)
        rc = qv_rpc_server_register(srv, "/quiver.v1.Cluster/Status", cluster_status, node);
    return rc;
}
