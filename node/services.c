/* The node's gRPC services: grpc.health.v1.Health and quiver.v1.Cluster. */
#define _GNU_SOURCE
#include "node/node_internal.h"

#include "grpc/health/v1/health.pb-c.h"
#include "quiver/v1/cluster.pb-c.h"

#include <stdlib.h>
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
    "quiver.v1.Collections",
    "quiver.v1.Points",
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
    size_t alive = 1, total = 1;
    if (node->gossip != NULL)
        qv_gossip_counts(node->gossip, &alive, &total);

    Quiver__V1__ClusterStatusResponse out = QUIVER__V1__CLUSTER_STATUS_RESPONSE__INIT;
    out.node_id = node->dir.node_id;
    out.version = QV_VERSION_STRING;
    out.mode =
        node->dev ? QUIVER__V1__NODE_MODE__NODE_MODE_DEV : QUIVER__V1__NODE_MODE__NODE_MODE_NODE;
    out.uptime_ms = qv_now_ms() - node->started_mono_ms;
    out.grpc_address = addr;
    /* From gossip; without gossip a node knows only itself. */
    out.members_alive = (uint32_t)alive;
    out.members_total = (uint32_t)total;
    out.gossip_address = node->gossip != NULL ? node->gossip_addr : "";
    out.collections = node->engine != NULL ? (uint32_t)qv__engine_collections(node->engine) : 0;
    out.healthy = atomic_load(&node->serving);
    out.data_dir = node->dir.path;
    out.started_at_unix_ms = node->started_wall_ms;
    PACK_RESPONSE(ctx, quiver__v1__cluster_status_response, &out);
    return 0;
}

/* One gossip member as a quiver.v1.Member; strings point into `g`, load into `load`. */
static void member_to_proto(qv_gossip_member *g, Quiver__V1__Member *m,
                            Quiver__V1__MemberLoad *load, char *gossip_addr, size_t addr_len)
{
    quiver__v1__member__init(m);
    quiver__v1__member_load__init(load);
    m->id = g->name;
    m->role = (Quiver__V1__NodeMode)g->role;
    m->grpc_address = g->grpc_addr;
    m->gossip_address = qv_gossip_addr_format(&g->addr, gossip_addr, addr_len);
    m->state = (Quiver__V1__MemberState)g->state;
    m->incarnation = g->incarnation;
    m->last_update_age_ms = g->last_update_age_ms;
    load->cpu = g->load.cpu;
    load->memory_bytes = g->load.memory_bytes;
    load->disk_used_bytes = g->load.disk_used_bytes;
    load->disk_free_bytes = g->load.disk_free_bytes;
    load->replicas = g->load.replicas;
    load->leaders = g->load.leaders;
    load->inflight_requests = g->load.inflight_requests;
    load->search_qps = g->load.search_qps;
    load->search_p95_us = g->load.search_p95_us;
    m->load = load;
    m->version = g->version;
    m->draining = g->draining;
    m->is_self = g->is_self;
}

static int cluster_members(qv_rpc_ctx *ctx, const uint8_t *req, size_t len, void *user)
{
    qv_node *node = user;
    Quiver__V1__ClusterMembersRequest *in =
        quiver__v1__cluster_members_request__unpack(NULL, len, req);
    if (in == NULL)
        return qv_rpc_ctx_fail(ctx, QV_EINVAL, "malformed ClusterMembersRequest");
    bool include_left = in->include_left;
    quiver__v1__cluster_members_request__free_unpacked(in, NULL);

    qv_gossip_member *gm = NULL;
    size_t n = 0;
    qv_gossip_member self;
    if (node->gossip != NULL) {
        if (qv_gossip_members(node->gossip, include_left, &gm, &n) != 0)
            return qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "cannot list the members");
    } else {
        /* Without gossip the node knows only itself. */
        memset(&self, 0, sizeof(self));
        snprintf(self.name, sizeof(self.name), "%s", node->dir.node_id);
        self.state = QV_GOSSIP_ALIVE;
        self.is_self = true;
        self.role = node->dev ? QV_GOSSIP_ROLE_DEV : QV_GOSSIP_ROLE_NODE;
        qv__node_public_grpc_addr(node, self.grpc_addr, sizeof(self.grpc_addr));
        snprintf(self.version, sizeof(self.version), "%s", QV_VERSION_STRING);
        gm = &self;
        n = 1;
    }
    int rc = QV_ERESOURCE;
    Quiver__V1__Member *members = calloc(n > 0 ? n : 1, sizeof(*members));
    Quiver__V1__MemberLoad *loads = calloc(n > 0 ? n : 1, sizeof(*loads));
    Quiver__V1__Member **ptrs = calloc(n > 0 ? n : 1, sizeof(*ptrs));
    char(*addrs)[QV_GOSSIP_ADDR_STRLEN] = calloc(n > 0 ? n : 1, sizeof(*addrs));
    if (members == NULL || loads == NULL || ptrs == NULL || addrs == NULL) {
        rc = qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "cannot allocate the response");
        goto out;
    }
    const char *self_id = node->dir.node_id;
    for (size_t i = 0; i < n; i++) { /* qv_gossip_members sorts by name */
        member_to_proto(&gm[i], &members[i], &loads[i], addrs[i], sizeof(addrs[i]));
        if (node->gossip == NULL)
            members[i].gossip_address = "";
        ptrs[i] = &members[i];
        if (gm[i].is_self)
            self_id = gm[i].name;
    }
    Quiver__V1__ClusterMembersResponse out = QUIVER__V1__CLUSTER_MEMBERS_RESPONSE__INIT;
    out.n_members = n;
    out.members = ptrs;
    out.self_id = (char *)self_id;
    size_t plen = quiver__v1__cluster_members_response__get_packed_size(&out);
    uint8_t *buf = qv_rpc_ctx_response(ctx, plen);
    if (buf == NULL) {
        rc = qv_rpc_ctx_fail(ctx, QV_ERESOURCE, "cannot allocate the response");
        goto out;
    }
    quiver__v1__cluster_members_response__pack(&out, buf);
    rc = 0;
out:
    free(members);
    free(loads);
    free(ptrs);
    free(addrs);
    if (gm != &self)
        qv_gossip_members_free(gm, n);
    return rc;
}

int qv__node_register_services(qv_node *node, qv_rpc_server *srv)
{
    int rc = qv_rpc_server_register(srv, "/grpc.health.v1.Health/Check", health_check, node);
    if (rc == 0)
        rc = qv_rpc_server_register(srv, "/quiver.v1.Cluster/Status", cluster_status, node);
    if (rc == 0)
        rc = qv_rpc_server_register(srv, "/quiver.v1.Cluster/Members", cluster_members, node);
    if (rc == 0 && node->engine != NULL)
        rc = qv__node_register_data_services(node->engine, srv);
    return rc;
}
