/*
 * sdk/c/client.c - libquiver's client: one qv_rpc client, one target, blocking calls.
 *
 * Each call packs its protobuf-c request, runs qv_rpc_call_sync() with the client's deadline,
 * rewrites transport failures into messages that name the target (qv__client_call), then copies
 * the unpacked response into the SDK's plain structs so that callers never see protobuf-c types.
 * Map: connection; health and cluster calls; then collections, point ids, writes and reads
 * (qv__client_rpc packs, calls and unpacks for them). Requests borrow the caller's memory
 * (names, vectors, UUID text) instead of copying it: they live only for the call. Payload JSON
 * is converted by json.c.
 */
#define _POSIX_C_SOURCE 200809L
#include "sdk/c/quiver.h"

#include "common/rpc/rpc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "quiver/v1/cluster.pb-c.h"
#include "quiver/v1/collections.pb-c.h"
#include "quiver/v1/points.pb-c.h"
#include "sdk/c/json_internal.h"

#include <ctype.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct qv_client {
    qv_rpc_client *rpc;
    char *target;
    int64_t timeout_ms;
};

static int set_err(qv_status *err, int code, const char *fmt, ...) QV_PRINTF(3, 4);

/* Fills *err (when given) and returns code. */
static int set_err(qv_status *err, int code, const char *fmt, ...)
{
    if (err != NULL) {
        va_list ap;
        va_start(ap, fmt);
        err->code = code;
        vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
        va_end(ap);
    }
    return code;
}

/* ---- target validation ----------------------------------------------------------------------- */

/* gRPC target URIs we pass through untouched: the resolver checks them. */
static bool has_scheme(const char *t)
{
    static const char *const schemes[] = {"dns:", "unix:", "unix-abstract:", "ipv4:", "ipv6:"};
    for (size_t i = 0; i < sizeof(schemes) / sizeof(schemes[0]); i++)
        if (strncmp(t, schemes[i], strlen(schemes[i])) == 0)
            return true;
    return false;
}

/* "HOST:PORT" or "[V6]:PORT" with a non-empty host without spaces and a port in 1..65535. */
static bool valid_host_port(const char *t, const char **why)
{
    for (const char *p = t; *p != '\0'; p++) {
        if (!isgraph((unsigned char)*p)) {
            *why = "contains a space or control character";
            return false;
        }
    }
    const char *colon = strrchr(t, ':');
    if (colon == NULL) {
        *why = "expected HOST:PORT";
        return false;
    }
    size_t hlen = (size_t)(colon - t);
    if (hlen == 0) {
        *why = "missing host before ':'";
        return false;
    }
    if (t[0] == '[') {
        if (hlen < 3 || t[hlen - 1] != ']') {
            *why = "an IPv6 host must be in brackets: [::1]:7070";
            return false;
        }
    } else if (memchr(t, ':', hlen) != NULL) {
        *why = "an IPv6 host must be in brackets: [::1]:7070";
        return false;
    }
    const char *port = colon + 1;
    if (*port == '\0') {
        *why = "missing port after ':'";
        return false;
    }
    unsigned long v = 0;
    for (const char *p = port; *p != '\0'; p++) {
        if (!isdigit((unsigned char)*p) || p - port >= 5) {
            *why = "the port is not a number in 1..65535";
            return false;
        }
        v = v * 10 + (unsigned long)(*p - '0');
    }
    if (v < 1 || v > 65535) {
        *why = "the port is not a number in 1..65535";
        return false;
    }
    return true;
}

/* ---- connection --------------------------------------------------------------------------------
 */

int qv_client_connect(const char *target, const qv_client_opts *opts, qv_client **out,
                      qv_status *err)
{
    static const qv_client_opts defaults = {0};
    qv_rpc_tls tls;
    memset(&tls, 0, sizeof(tls));
    qv_client *c = NULL;
    int rc;

    if (out == NULL)
        return set_err(err, QV_EINVAL, "qv_client_connect: out is NULL");
    *out = NULL;
    if (opts == NULL)
        opts = &defaults;
    if (target == NULL || target[0] == '\0')
        return set_err(err, QV_EINVAL, "empty server address (expected HOST:PORT)");
    const char *why = NULL;
    if (!has_scheme(target) && !valid_host_port(target, &why))
        return set_err(err, QV_EINVAL, "bad server address '%.100s': %s", target, why);
    if (opts->timeout_ms < 0)
        return set_err(err, QV_EINVAL, "negative timeout %lld ms", (long long)opts->timeout_ms);
    if ((opts->tls_cert_path != NULL) != (opts->tls_key_path != NULL))
        return set_err(err, QV_EINVAL, "a TLS client certificate needs its key and vice versa");

    bool use_tls = opts->tls || opts->tls_ca_path != NULL || opts->tls_cert_path != NULL;
    if (use_tls) {
        qv_status terr = qv_status_ok();
        rc = qv_rpc_tls_load(&tls, opts->tls_cert_path, opts->tls_key_path, opts->tls_ca_path,
                             &terr);
        if (rc != 0) {
            set_err(err, rc, "%s", terr.msg);
            goto fail_tls;
        }
        if (opts->tls_server_name != NULL) {
            tls.server_name = strdup(opts->tls_server_name);
            if (tls.server_name == NULL) {
                rc = set_err(err, QV_ERESOURCE, "out of memory");
                goto fail_tls;
            }
        }
    }

    c = calloc(1, sizeof(*c));
    if (c == NULL) {
        rc = set_err(err, QV_ERESOURCE, "out of memory");
        goto fail_tls;
    }
    c->target = strdup(target);
    if (c->target == NULL) {
        rc = set_err(err, QV_ERESOURCE, "out of memory");
        goto fail_client;
    }
    c->timeout_ms = opts->timeout_ms > 0 ? opts->timeout_ms : QV_CLIENT_DEFAULT_TIMEOUT_MS;
    qv_rpc_client_opts ropts = {
        .max_message_bytes = opts->max_message_bytes,
        .tls = use_tls ? &tls : NULL,
    };
    rc = qv_rpc_client_create(&ropts, &c->rpc);
    if (rc != 0) {
        set_err(err, rc, "cannot create the gRPC client: %s", qv_strerror(rc));
        goto fail_target;
    }
    qv_rpc_tls_free(&tls); /* qv_rpc_client_create copied it */
    *out = c;
    if (err != NULL)
        *err = qv_status_ok();
    return 0;

fail_target:
    free(c->target);
fail_client:
    free(c);
fail_tls:
    qv_rpc_tls_free(&tls);
    return rc;
}

void qv_client_close(qv_client *c)
{
    if (c == NULL)
        return;
    qv_rpc_client_destroy(c->rpc);
    free(c->target);
    free(c);
}

const char *qv_client_target(const qv_client *c)
{
    return c->target;
}

/* ---- calls -------------------------------------------------------------------------------------
 */

/* Does a message of gRPC's say that the transport never reached the server? These are the core
 * library's own words (connect failures, resolution failures, a connection lost mid-call); a
 * server that answers UNAVAILABLE itself sends its own message, which is passed on unchanged. */
static bool transport_failure(const char *msg)
{
    static const char *const needles[] = {
        "failed to connect",  "Failed to connect",      "Connection refused",
        "connection refused", "DNS resolution",         "Name resolution",
        "Socket closed",      "Connection reset",       "connections to all backends failing",
        "No address",         "Network is unreachable", "handshake",
        "Broken pipe",        "Endpoint closing",
    };
    if (msg[0] == '\0')
        return true;
    for (size_t i = 0; i < sizeof(needles) / sizeof(needles[0]); i++)
        if (strstr(msg, needles[i]) != NULL)
            return true;
    return false;
}

/* One blocking call of `method`. On success *reply holds the response bytes (free with
 * qv_rpc_reply_free); otherwise *err says why, naming the target for transport problems. */
static int qv__client_call(qv_client *c, const char *method, const void *req, size_t req_len,
                           qv_rpc_reply *reply, qv_status *err)
{
    qv_status st = qv_status_ok();
    int rc = qv_rpc_call_sync(c->rpc, c->target, method, req, req_len, c->timeout_ms, NULL, 0,
                              reply, &st);
    if (rc == 0)
        return 0;
    if (rc == QV_EUNAVAIL && transport_failure(st.msg))
        return set_err(err, rc, "cannot reach %s: %s", c->target,
                       st.msg[0] != '\0' ? st.msg : "no connection");
    if (rc == QV_ETIMEOUT)
        return set_err(err, rc, "no answer from %s within %lld ms%s%s", c->target,
                       (long long)c->timeout_ms, st.msg[0] != '\0' ? ": " : "", st.msg);
    return set_err(err, rc, "%s", st.msg[0] != '\0' ? st.msg : qv_strerror(rc));
}

/* Packs a protobuf-c message into a malloc'd buffer (at least one byte, so an empty message is
 * not confused with an allocation failure). */
#define PACK_REQUEST(type, msg, buf_out, len_out)                                                  \
    do {                                                                                           \
        *(len_out) = type##__get_packed_size(msg);                                                 \
        *(buf_out) = malloc(*(len_out) > 0 ? *(len_out) : 1);                                      \
        if (*(buf_out) != NULL)                                                                    \
            type##__pack((msg), *(buf_out));                                                       \
    } while (0)

/* A heap copy of a protobuf-c string; protobuf-c never leaves strings NULL, but be safe. */
static char *dup_str(const char *s)
{
    return strdup(s != NULL ? s : "");
}

int qv_client_health(qv_client *c, const char *service, int *serving, qv_status *err)
{
    if (c == NULL || serving == NULL)
        return set_err(err, QV_EINVAL, "qv_client_health: NULL argument");
    *serving = 0;
    Grpc__Health__V1__HealthCheckRequest req = GRPC__HEALTH__V1__HEALTH_CHECK_REQUEST__INIT;
    req.service = (char *)(service != NULL ? service : "");
    uint8_t *buf;
    size_t len;
    PACK_REQUEST(grpc__health__v1__health_check_request, &req, &buf, &len);
    if (buf == NULL)
        return set_err(err, QV_ERESOURCE, "out of memory");
    qv_rpc_reply reply = {0};
    int rc = qv__client_call(c, "/grpc.health.v1.Health/Check", buf, len, &reply, err);
    free(buf);
    if (rc != 0)
        return rc;
    Grpc__Health__V1__HealthCheckResponse *resp =
        grpc__health__v1__health_check_response__unpack(NULL, reply.len, reply.data);
    qv_rpc_reply_free(&reply);
    if (resp == NULL)
        return set_err(err, QV_EINTERNAL, "malformed HealthCheckResponse from %s", c->target);
    *serving = resp->status == GRPC__HEALTH__V1__HEALTH_CHECK_RESPONSE__SERVING_STATUS__SERVING;
    grpc__health__v1__health_check_response__free_unpacked(resp, NULL);
    if (err != NULL)
        *err = qv_status_ok();
    return 0;
}

const char *qv_node_mode_name(qv_node_mode mode)
{
    switch (mode) {
    case QV_NODE_MODE_DEV:
        return "dev";
    case QV_NODE_MODE_NODE:
        return "node";
    case QV_NODE_MODE_ROUTER:
        return "router";
    case QV_NODE_MODE_UNSPECIFIED:
        break;
    }
    return "unspecified";
}

const char *qv_member_state_name(qv_member_state state)
{
    switch (state) {
    case QV_MEMBER_STATE_ALIVE:
        return "ALIVE";
    case QV_MEMBER_STATE_SUSPECT:
        return "SUSPECT";
    case QV_MEMBER_STATE_DEAD:
        return "DEAD";
    case QV_MEMBER_STATE_LEFT:
        return "LEFT";
    case QV_MEMBER_STATE_UNSPECIFIED:
        break;
    }
    return "UNSPECIFIED";
}

int qv_client_cluster_status(qv_client *c, qv_cluster_status *out, qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL)
        return set_err(err, QV_EINVAL, "qv_client_cluster_status: NULL argument");
    /* An empty request: the message has no fields. */
    qv_rpc_reply reply = {0};
    int rc = qv__client_call(c, "/quiver.v1.Cluster/Status", "", 0, &reply, err);
    if (rc != 0)
        return rc;
    Quiver__V1__ClusterStatusResponse *r =
        quiver__v1__cluster_status_response__unpack(NULL, reply.len, reply.data);
    qv_rpc_reply_free(&reply);
    if (r == NULL)
        return set_err(err, QV_EINTERNAL, "malformed ClusterStatusResponse from %s", c->target);

    out->node_id = dup_str(r->node_id);
    out->version = dup_str(r->version);
    out->mode = (qv_node_mode)r->mode;
    out->uptime_ms = r->uptime_ms;
    out->grpc_address = dup_str(r->grpc_address);
    out->members_alive = r->members_alive;
    out->members_total = r->members_total;
    out->collections = r->collections;
    out->healthy = r->healthy;
    out->data_dir = dup_str(r->data_dir);
    out->started_at_unix_ms = r->started_at_unix_ms;
    out->gossip_address = dup_str(r->gossip_address);
    out->meta_leader_id = dup_str(r->meta_leader_id);
    out->meta_term = r->meta_term;
    out->shards_total = r->shards_total;
    out->shards_leaderless = r->shards_leaderless;
    out->status_message = dup_str(r->status_message);
    quiver__v1__cluster_status_response__free_unpacked(r, NULL);

    if (out->node_id == NULL || out->version == NULL || out->grpc_address == NULL ||
        out->data_dir == NULL || out->gossip_address == NULL || out->meta_leader_id == NULL ||
        out->status_message == NULL) {
        qv_cluster_status_free(out);
        return set_err(err, QV_ERESOURCE, "out of memory");
    }
    if (err != NULL)
        *err = qv_status_ok();
    return 0;
}

void qv_cluster_status_free(qv_cluster_status *st)
{
    if (st == NULL)
        return;
    free(st->node_id);
    free(st->version);
    free(st->grpc_address);
    free(st->data_dir);
    free(st->gossip_address);
    free(st->meta_leader_id);
    free(st->status_message);
    memset(st, 0, sizeof(*st));
}

/* Copies one member; returns false when a string could not be allocated (the caller frees what
 * was copied, as qv_members_free does). */
static bool copy_member(const Quiver__V1__Member *in, qv_member *m)
{
    m->id = dup_str(in->id);
    m->role = (qv_node_mode)in->role;
    m->grpc_address = dup_str(in->grpc_address);
    m->gossip_address = dup_str(in->gossip_address);
    m->state = (qv_member_state)in->state;
    m->incarnation = in->incarnation;
    m->last_update_age_ms = in->last_update_age_ms;
    m->has_load = in->load != NULL;
    if (in->load != NULL) {
        m->load.cpu = in->load->cpu;
        m->load.memory_bytes = in->load->memory_bytes;
        m->load.disk_used_bytes = in->load->disk_used_bytes;
        m->load.disk_free_bytes = in->load->disk_free_bytes;
        m->load.replicas = in->load->replicas;
        m->load.leaders = in->load->leaders;
        m->load.inflight_requests = in->load->inflight_requests;
        m->load.search_qps = in->load->search_qps;
        m->load.search_p95_us = in->load->search_p95_us;
    }
    m->version = dup_str(in->version);
    m->draining = in->draining;
    m->is_self = in->is_self;
    return m->id != NULL && m->grpc_address != NULL && m->gossip_address != NULL &&
           m->version != NULL;
}

int qv_client_members(qv_client *c, qv_member **out, size_t *n, qv_status *err)
{
    if (out != NULL)
        *out = NULL;
    if (n != NULL)
        *n = 0;
    if (c == NULL || out == NULL || n == NULL)
        return set_err(err, QV_EINVAL, "qv_client_members: NULL argument");

    Quiver__V1__ClusterMembersRequest req = QUIVER__V1__CLUSTER_MEMBERS_REQUEST__INIT;
    uint8_t *buf;
    size_t len;
    PACK_REQUEST(quiver__v1__cluster_members_request, &req, &buf, &len);
    if (buf == NULL)
        return set_err(err, QV_ERESOURCE, "out of memory");
    qv_rpc_reply reply = {0};
    int rc = qv__client_call(c, "/quiver.v1.Cluster/Members", buf, len, &reply, err);
    free(buf);
    if (rc != 0)
        return rc;
    Quiver__V1__ClusterMembersResponse *r =
        quiver__v1__cluster_members_response__unpack(NULL, reply.len, reply.data);
    qv_rpc_reply_free(&reply);
    if (r == NULL)
        return set_err(err, QV_EINTERNAL, "malformed ClusterMembersResponse from %s", c->target);

    qv_member *members = NULL;
    size_t count = r->n_members;
    if (count > 0) {
        members = calloc(count, sizeof(*members));
        if (members == NULL) {
            rc = set_err(err, QV_ERESOURCE, "out of memory");
            goto done;
        }
        for (size_t i = 0; i < count; i++) {
            if (!copy_member(r->members[i], &members[i])) {
                qv_members_free(members, count);
                members = NULL;
                rc = set_err(err, QV_ERESOURCE, "out of memory");
                goto done;
            }
        }
    }
    *out = members;
    *n = count;
    if (err != NULL)
        *err = qv_status_ok();
done:
    quiver__v1__cluster_members_response__free_unpacked(r, NULL);
    return rc;
}

void qv_members_free(qv_member *members, size_t n)
{
    if (members == NULL)
        return;
    for (size_t i = 0; i < n; i++) {
        free(members[i].id);
        free(members[i].grpc_address);
        free(members[i].gossip_address);
        free(members[i].version);
    }
    free(members);
}

/* ---- shared by the collection and point calls ------------------------------------------------
 */

static void set_ok(qv_status *err)
{
    if (err != NULL)
        *err = qv_status_ok();
}

/* Packs req, calls `method` and unpacks the answer as resp_desc. On success *resp is released
 * with protobuf_c_message_free_unpacked(*resp, NULL). */
static int qv__client_rpc(qv_client *c, const char *method, const ProtobufCMessage *req,
                          const ProtobufCMessageDescriptor *resp_desc, ProtobufCMessage **resp,
                          qv_status *err)
{
    *resp = NULL;
    size_t len = protobuf_c_message_get_packed_size(req);
    uint8_t *buf = malloc(len > 0 ? len : 1);
    if (buf == NULL)
        return set_err(err, QV_ERESOURCE, "out of memory (request of %zu bytes)", len);
    protobuf_c_message_pack(req, buf);
    qv_rpc_reply reply = {0};
    int rc = qv__client_call(c, method, buf, len, &reply, err);
    free(buf);
    if (rc != 0)
        return rc;
    *resp = protobuf_c_message_unpack(resp_desc, NULL, reply.len, reply.data);
    qv_rpc_reply_free(&reply);
    if (*resp == NULL)
        return set_err(err, QV_EINTERNAL, "malformed %s from %s", resp_desc->short_name, c->target);
    return 0;
}

/* An enum value and the lower-case name callers use for it. */
typedef struct enum_name {
    int value;
    const char *name;
} enum_name;

static const enum_name k_metrics[] = {
    {QUIVER__V1__METRIC__METRIC_L2, "l2"},
    {QUIVER__V1__METRIC__METRIC_COSINE, "cosine"},
    {QUIVER__V1__METRIC__METRIC_DOT, "dot"},
};
static const enum_name k_indexes[] = {
    {QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW, "hnsw"},
    {QUIVER__V1__INDEX_TYPE__INDEX_TYPE_HNSW_INT8, "hnsw-int8"},
    {QUIVER__V1__INDEX_TYPE__INDEX_TYPE_FLAT, "flat"},
    {QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_FLAT, "ivf-flat"},
    {QUIVER__V1__INDEX_TYPE__INDEX_TYPE_IVF_PQ, "ivf-pq"},
};
static const enum_name k_partitionings[] = {
    {QUIVER__V1__PARTITIONING__PARTITIONING_HASH, "hash"},
    {QUIVER__V1__PARTITIONING__PARTITIONING_SEMANTIC, "semantic"},
};
static const enum_name k_statuses[] = {
    {QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_CREATING, "creating"},
    {QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_READY, "ready"},
    {QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_TRAINING, "training"},
    {QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_INDEXING, "indexing"},
    {QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_DEGRADED, "degraded"},
    {QUIVER__V1__COLLECTION_STATUS__COLLECTION_STATUS_DROPPING, "dropping"},
};
#define ENUM_TABLE(t) (t), (sizeof(t) / sizeof((t)[0]))

/* What the user typed, in any case, to the enum value; QV_EINVAL listing the choices. */
static int enum_parse(const enum_name *t, size_t n, const char *what, const char *s, int *out,
                      qv_status *err)
{
    for (size_t i = 0; i < n; i++) {
        if (strcasecmp(s, t[i].name) == 0) {
            *out = t[i].value;
            return 0;
        }
    }
    char choices[128] = "";
    for (size_t i = 0; i < n; i++) {
        size_t used = strlen(choices);
        snprintf(choices + used, sizeof(choices) - used, "%s%s", i == 0 ? "" : ", ", t[i].name);
    }
    return set_err(err, QV_EINVAL, "unknown %s '%.64s' (expected one of: %s)", what, s, choices);
}

/* The name of an enum value the server sent; `unset` for 0, "unknown" for values newer than this
 * SDK. Static strings. */
static const char *enum_str(const enum_name *t, size_t n, int v, const char *unset)
{
    for (size_t i = 0; i < n; i++)
        if (t[i].value == v)
            return t[i].name;
    return v == 0 ? unset : "unknown";
}

/* 8-4-4-4-12 hex digits, either case, NUL right after. */
static bool uuid_valid(const char *s, size_t cap)
{
    const char *nul = memchr(s, '\0', cap);
    if (nul == NULL || nul - s != 36)
        return false;
    for (int i = 0; i < 36; i++) {
        if (i == 8 || i == 13 || i == 18 || i == 23) {
            if (s[i] != '-')
                return false;
        } else if (!isxdigit((unsigned char)s[i])) {
            return false;
        }
    }
    return true;
}

/* ---- collections -----------------------------------------------------------------------------
 */

/* Copies a CollectionInfo (NULL reads as an empty one); false when memory ran out (the caller
 * frees what was copied with qv_collection_info_free). */
static bool copy_collection_info(const Quiver__V1__CollectionInfo *in, qv_collection_info *out)
{
    memset(out, 0, sizeof(*out));
    const Quiver__V1__CollectionConfig *cfg = in != NULL ? in->config : NULL;
    const Quiver__V1__IndexConfig *ix = cfg != NULL ? cfg->index : NULL;
    out->name = dup_str(cfg != NULL ? cfg->name : "");
    out->dimension = cfg != NULL ? cfg->dimension : 0;
    out->metric =
        dup_str(enum_str(ENUM_TABLE(k_metrics), cfg != NULL ? (int)cfg->metric : 0, "unspecified"));
    /* Unset index type and partitioning mean HNSW and HASH (common.proto). */
    out->index = dup_str(enum_str(ENUM_TABLE(k_indexes), ix != NULL ? (int)ix->type : 0, "hnsw"));
    if (ix != NULL && ix->hnsw != NULL) {
        out->hnsw_m = ix->hnsw->m;
        out->hnsw_ef_construction = ix->hnsw->ef_construction;
        out->hnsw_ef_search = ix->hnsw->ef_search;
    }
    if (ix != NULL && ix->ivf != NULL) {
        out->ivf_nlist = ix->ivf->nlist;
        out->ivf_nprobe = ix->ivf->nprobe;
    }
    out->partitioning = dup_str(
        enum_str(ENUM_TABLE(k_partitionings), cfg != NULL ? (int)cfg->partitioning : 0, "hash"));
    if (cfg != NULL) {
        out->shards = cfg->shard_count;
        out->replication_factor = cfg->replication_factor;
        out->on_disk_payload = cfg->on_disk_payload;
        out->created_at_unix_ms = cfg->created_at_unix_ms;
        out->uid = cfg->uid;
    }
    out->status =
        dup_str(enum_str(ENUM_TABLE(k_statuses), in != NULL ? (int)in->status : 0, "unspecified"));
    out->status_message = dup_str(in != NULL ? in->status_message : "");
    if (in != NULL) {
        out->points_count = in->points_count;
        out->indexed_points_count = in->indexed_points_count;
        out->memory_bytes = in->memory_bytes;
        out->disk_bytes = in->disk_bytes;
    }
    return out->name != NULL && out->metric != NULL && out->index != NULL &&
           out->partitioning != NULL && out->status != NULL && out->status_message != NULL;
}

/* A collection name argument: non-NULL and non-empty (the server checks its syntax). */
static int check_name(const char *name, const char *call, qv_status *err)
{
    if (name == NULL || name[0] == '\0')
        return set_err(err, QV_EINVAL, "%s: empty collection name", call);
    return 0;
}

int qv_client_collection_create(qv_client *c, const qv_collection_spec *spec,
                                qv_collection_info *out, bool *created, qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (created != NULL)
        *created = false;
    if (c == NULL || spec == NULL)
        return set_err(err, QV_EINVAL, "qv_client_collection_create: NULL argument");
    int rc = check_name(spec->name, "create collection", err);
    if (rc != 0)
        return rc;
    if (spec->dimension == 0)
        return set_err(err, QV_EINVAL, "create collection '%.64s': dimension must be 1..65536",
                       spec->name);
    if (spec->metric == NULL || spec->metric[0] == '\0')
        return set_err(err, QV_EINVAL,
                       "create collection '%.64s': a metric is required (l2, cosine or dot)",
                       spec->name);

    Quiver__V1__CreateCollectionRequest req = QUIVER__V1__CREATE_COLLECTION_REQUEST__INIT;
    Quiver__V1__IndexConfig index = QUIVER__V1__INDEX_CONFIG__INIT;
    Quiver__V1__HnswParams hnsw = QUIVER__V1__HNSW_PARAMS__INIT;
    Quiver__V1__IvfParams ivf = QUIVER__V1__IVF_PARAMS__INIT;
    int metric = 0, type = 0, part = 0;
    rc = enum_parse(ENUM_TABLE(k_metrics), "metric", spec->metric, &metric, err);
    if (rc == 0 && spec->index != NULL)
        rc = enum_parse(ENUM_TABLE(k_indexes), "index type", spec->index, &type, err);
    if (rc == 0 && spec->partitioning != NULL)
        rc =
            enum_parse(ENUM_TABLE(k_partitionings), "partitioning", spec->partitioning, &part, err);
    if (rc != 0)
        return rc;
    req.name = (char *)spec->name;
    req.dimension = spec->dimension;
    req.metric = (Quiver__V1__Metric)metric;
    req.partitioning = (Quiver__V1__Partitioning)part;
    index.type = (Quiver__V1__IndexType)type;
    /* Parameters travel only when given, so the server can reject those of another index type. */
    if (spec->hnsw_m != 0 || spec->hnsw_ef_construction != 0 || spec->hnsw_ef_search != 0) {
        hnsw.m = spec->hnsw_m;
        hnsw.ef_construction = spec->hnsw_ef_construction;
        hnsw.ef_search = spec->hnsw_ef_search;
        index.hnsw = &hnsw;
    }
    if (spec->ivf_nlist != 0 || spec->ivf_nprobe != 0) {
        ivf.nlist = spec->ivf_nlist;
        ivf.nprobe = spec->ivf_nprobe;
        index.ivf = &ivf;
    }
    if (type != 0 || index.hnsw != NULL || index.ivf != NULL)
        req.index = &index;
    req.shard_count = spec->shards;
    req.replication_factor = spec->replication_factor;
    req.on_disk_payload = spec->on_disk_payload;
    req.if_not_exists = spec->if_not_exists;

    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Collections/Create", &req.base,
                        &quiver__v1__create_collection_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    Quiver__V1__CreateCollectionResponse *r = (Quiver__V1__CreateCollectionResponse *)m;
    if (out != NULL && !copy_collection_info(r->info, out)) {
        qv_collection_info_free(out);
        rc = set_err(err, QV_ERESOURCE, "out of memory");
    }
    if (rc == 0) {
        if (created != NULL)
            *created = r->created;
        set_ok(err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int qv_client_collection_describe(qv_client *c, const char *name, qv_collection_info *out,
                                  qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL)
        return set_err(err, QV_EINVAL, "qv_client_collection_describe: NULL argument");
    int rc = check_name(name, "describe collection", err);
    if (rc != 0)
        return rc;
    Quiver__V1__DescribeCollectionRequest req = QUIVER__V1__DESCRIBE_COLLECTION_REQUEST__INIT;
    req.name = (char *)name;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Collections/Describe", &req.base,
                        &quiver__v1__describe_collection_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    Quiver__V1__DescribeCollectionResponse *r = (Quiver__V1__DescribeCollectionResponse *)m;
    if (!copy_collection_info(r->info, out)) {
        qv_collection_info_free(out);
        rc = set_err(err, QV_ERESOURCE, "out of memory");
    } else {
        set_ok(err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int qv_client_collection_list(qv_client *c, char ***names, qv_collection_info **infos, size_t *n,
                              qv_status *err)
{
    if (names != NULL)
        *names = NULL;
    if (infos != NULL)
        *infos = NULL;
    if (n != NULL)
        *n = 0;
    if (c == NULL || names == NULL || n == NULL)
        return set_err(err, QV_EINVAL, "qv_client_collection_list: NULL argument");
    Quiver__V1__ListCollectionsRequest req = QUIVER__V1__LIST_COLLECTIONS_REQUEST__INIT;
    req.with_info = infos != NULL;
    ProtobufCMessage *m = NULL;
    int rc = qv__client_rpc(c, "/quiver.v1.Collections/List", &req.base,
                            &quiver__v1__list_collections_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    Quiver__V1__ListCollectionsResponse *r = (Quiver__V1__ListCollectionsResponse *)m;
    size_t count = r->n_names;
    char **nv = NULL;
    qv_collection_info *iv = NULL;
    if (infos != NULL && count > 0 && r->n_infos != count) {
        rc = set_err(err, QV_EINTERNAL, "%s answered %zu names but %zu descriptions", c->target,
                     count, r->n_infos);
        goto done;
    }
    if (count > 0) {
        nv = calloc(count, sizeof(*nv));
        if (infos != NULL)
            iv = calloc(count, sizeof(*iv));
        if (nv == NULL || (infos != NULL && iv == NULL))
            goto oom;
        for (size_t i = 0; i < count; i++) {
            nv[i] = dup_str(r->names[i]);
            if (nv[i] == NULL)
                goto oom;
            if (iv != NULL && !copy_collection_info(r->infos[i], &iv[i]))
                goto oom;
        }
    }
    *names = nv;
    if (infos != NULL)
        *infos = iv;
    *n = count;
    set_ok(err);
    goto done;
oom:
    qv_collection_list_free(nv, iv, count);
    rc = set_err(err, QV_ERESOURCE, "out of memory");
done:
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int qv_client_collection_drop(qv_client *c, const char *name, bool if_exists, bool *dropped,
                              qv_status *err)
{
    if (dropped != NULL)
        *dropped = false;
    if (c == NULL)
        return set_err(err, QV_EINVAL, "qv_client_collection_drop: NULL argument");
    int rc = check_name(name, "drop collection", err);
    if (rc != 0)
        return rc;
    Quiver__V1__DropCollectionRequest req = QUIVER__V1__DROP_COLLECTION_REQUEST__INIT;
    req.name = (char *)name;
    req.if_exists = if_exists;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Collections/Drop", &req.base,
                        &quiver__v1__drop_collection_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    if (dropped != NULL)
        *dropped = ((Quiver__V1__DropCollectionResponse *)m)->dropped;
    protobuf_c_message_free_unpacked(m, NULL);
    set_ok(err);
    return 0;
}

void qv_collection_info_free(qv_collection_info *info)
{
    if (info == NULL)
        return;
    free(info->name);
    free(info->metric);
    free(info->index);
    free(info->partitioning);
    free(info->status);
    free(info->status_message);
    memset(info, 0, sizeof(*info));
}

void qv_collection_list_free(char **names, qv_collection_info *infos, size_t n)
{
    for (size_t i = 0; i < n; i++) {
        if (names != NULL)
            free(names[i]);
        if (infos != NULL)
            qv_collection_info_free(&infos[i]);
    }
    free(names);
    free(infos);
}

/* ---- point ids ---------------------------------------------------------------------------------
 */

int qv_point_id_parse(const char *text, qv_point_id *out, qv_status *err)
{
    if (out == NULL)
        return set_err(err, QV_EINVAL, "qv_point_id_parse: out is NULL");
    memset(out, 0, sizeof(*out));
    if (text == NULL || text[0] == '\0')
        return set_err(err, QV_EINVAL, "empty point id");
    bool digits = true;
    for (const char *p = text; *p != '\0'; p++)
        digits = digits && isdigit((unsigned char)*p);
    if (digits) {
        uint64_t v = 0;
        for (const char *p = text; *p != '\0'; p++) {
            uint64_t d = (uint64_t)(*p - '0');
            if (v > (UINT64_MAX - d) / 10)
                return set_err(err, QV_EINVAL,
                               "point id '%.64s' out of range (0..18446744073709551615)", text);
            v = v * 10 + d;
        }
        out->num = v;
    } else if (uuid_valid(text, 37)) {
        out->is_uuid = true;
        for (int i = 0; i < 36; i++)
            out->uuid[i] = (char)tolower((unsigned char)text[i]);
        out->uuid[36] = '\0';
    } else {
        return set_err(err, QV_EINVAL,
                       "bad point id '%.64s': expected an unsigned 64-bit number or a UUID "
                       "(8-4-4-4-12 hex digits)",
                       text);
    }
    set_ok(err);
    return 0;
}

char *qv_point_id_format(const qv_point_id *id, char *buf, size_t len)
{
    if (buf == NULL || len == 0)
        return buf;
    if (id == NULL) {
        buf[0] = '\0';
        return buf;
    }
    if (!id->is_uuid) {
        snprintf(buf, len, "%" PRIu64, id->num);
        return buf;
    }
    size_t i = 0;
    for (; i + 1 < len && i < sizeof(id->uuid) && id->uuid[i] != '\0'; i++)
        buf[i] = (char)tolower((unsigned char)id->uuid[i]);
    buf[i] = '\0';
    return buf;
}

/* Borrowing protobuf views of caller ids: the structs point at the caller's UUID text. */
typedef struct id_views {
    Quiver__V1__PointId *ids;
    Quiver__V1__PointId **ptrs;
} id_views;

static void id_views_free(id_views *v)
{
    free(v->ids);
    free(v->ptrs);
    memset(v, 0, sizeof(*v));
}

static void point_id_view(const qv_point_id *in, Quiver__V1__PointId *out)
{
    quiver__v1__point_id__init(out);
    if (in->is_uuid) {
        out->kind_case = QUIVER__V1__POINT_ID__KIND_UUID;
        out->uuid = (char *)in->uuid;
    } else {
        out->kind_case = QUIVER__V1__POINT_ID__KIND_NUM;
        out->num = in->num;
    }
}

/* Views of n ids; `what` names them in messages ("id", "positive example"). */
static int id_views_make(id_views *v, const qv_point_id *ids, size_t n, const char *what,
                         qv_status *err)
{
    memset(v, 0, sizeof(*v));
    if (n == 0)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (ids[i].is_uuid && !uuid_valid(ids[i].uuid, sizeof(ids[i].uuid)))
            return set_err(err, QV_EINVAL, "%s %zu: malformed UUID (expected 8-4-4-4-12 hex)", what,
                           i);
    v->ids = calloc(n, sizeof(*v->ids));
    v->ptrs = calloc(n, sizeof(*v->ptrs));
    if (v->ids == NULL || v->ptrs == NULL) {
        id_views_free(v);
        return set_err(err, QV_ERESOURCE, "out of memory");
    }
    for (size_t i = 0; i < n; i++) {
        point_id_view(&ids[i], &v->ids[i]);
        v->ptrs[i] = &v->ids[i];
    }
    return 0;
}

/* Copies a PointId from the server (NULL reads as number 0). */
static void copy_point_id(const Quiver__V1__PointId *in, qv_point_id *out)
{
    memset(out, 0, sizeof(*out));
    if (in == NULL)
        return;
    if (in->kind_case == QUIVER__V1__POINT_ID__KIND_UUID && in->uuid != NULL) {
        out->is_uuid = true;
        for (size_t i = 0; i < sizeof(out->uuid) - 1 && in->uuid[i] != '\0'; i++)
            out->uuid[i] = (char)tolower((unsigned char)in->uuid[i]);
    } else if (in->kind_case == QUIVER__V1__POINT_ID__KIND_NUM) {
        out->num = in->num;
    }
}

/* ---- points: writes ----------------------------------------------------------------------------
 */

static void copy_write_result(const Quiver__V1__UpdateResult *r, uint64_t took_us,
                              qv_write_result *res)
{
    if (res == NULL)
        return;
    memset(res, 0, sizeof(*res));
    res->took_us = took_us;
    if (r == NULL)
        return;
    res->operation_id = r->operation_id;
    res->applied = r->status == QUIVER__V1__UPDATE_STATUS__UPDATE_STATUS_APPLIED;
    for (size_t i = 0; i < r->n_shards; i++) {
        if (r->shards[i]->log_index > res->log_index)
            res->log_index = r->shards[i]->log_index;
        res->points += r->shards[i]->points;
    }
}

/* Most points (or ids) one write or read carries (common.proto). */
#define QV__MAX_POINTS_PER_CALL 10000

int qv_client_upsert(qv_client *c, const char *collection, const qv_point *points, size_t n,
                     bool wait, qv_write_result *res, qv_status *err)
{
    if (res != NULL)
        memset(res, 0, sizeof(*res));
    if (c == NULL || (points == NULL && n > 0))
        return set_err(err, QV_EINVAL, "qv_client_upsert: NULL argument");
    int rc = check_name(collection, "upsert", err);
    if (rc != 0)
        return rc;
    if (n == 0 || n > QV__MAX_POINTS_PER_CALL)
        return set_err(err, QV_EINVAL, "upsert: %zu points (1..%d per call)", n,
                       QV__MAX_POINTS_PER_CALL);

    /* The request borrows the caller's vectors and UUIDs; only payloads are built here. */
    Quiver__V1__PointStruct *ps = calloc(n, sizeof(*ps));
    Quiver__V1__PointStruct **pp = calloc(n, sizeof(*pp));
    Quiver__V1__PointId *ids = calloc(n, sizeof(*ids));
    Quiver__V1__Vector *vecs = calloc(n, sizeof(*vecs));
    if (ps == NULL || pp == NULL || ids == NULL || vecs == NULL) {
        rc = set_err(err, QV_ERESOURCE, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < n; i++) {
        const qv_point *pt = &points[i];
        char idtext[QV_POINT_ID_TEXT_MAX];
        if (pt->id.is_uuid && !uuid_valid(pt->id.uuid, sizeof(pt->id.uuid))) {
            rc = set_err(err, QV_EINVAL, "point %zu: malformed UUID (expected 8-4-4-4-12 hex)", i);
            goto done;
        }
        qv_point_id_format(&pt->id, idtext, sizeof(idtext));
        if (pt->vector == NULL || pt->dim == 0) {
            rc = set_err(err, QV_EINVAL, "point %zu (id %s): no vector", i, idtext);
            goto done;
        }
        quiver__v1__point_struct__init(&ps[i]);
        point_id_view(&pt->id, &ids[i]);
        quiver__v1__vector__init(&vecs[i]);
        vecs[i].n_data = pt->dim;
        vecs[i].data = (float *)pt->vector;
        ps[i].id = &ids[i];
        ps[i].vector = &vecs[i];
        pp[i] = &ps[i];
        if (pt->payload_json != NULL) {
            qv_status jerr = qv_status_ok();
            rc = qv__sdk_json_parse_payload(pt->payload_json, strlen(pt->payload_json),
                                            &ps[i].payload, &jerr);
            if (rc != 0) {
                set_err(err, rc, "point %zu (id %s): %s", i, idtext, jerr.msg);
                goto done;
            }
        }
    }

    Quiver__V1__UpsertPointsRequest req = QUIVER__V1__UPSERT_POINTS_REQUEST__INIT;
    req.collection = (char *)collection;
    req.n_points = n;
    req.points = pp;
    req.wait = wait;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/Upsert", &req.base,
                        &quiver__v1__upsert_points_response__descriptor, &m, err);
    if (rc == 0) {
        Quiver__V1__UpsertPointsResponse *r = (Quiver__V1__UpsertPointsResponse *)m;
        copy_write_result(r->result, r->took_us, res);
        protobuf_c_message_free_unpacked(m, NULL);
        set_ok(err);
    }

done:
    if (ps != NULL)
        for (size_t i = 0; i < n; i++)
            if (ps[i].payload != NULL)
                quiver__v1__payload__free_unpacked(ps[i].payload, NULL);
    free(vecs);
    free(ids);
    free(pp);
    free(ps);
    return rc;
}

/* Sends a DeletePointsRequest that the caller filled but for collection and wait. */
static int qv__client_delete(qv_client *c, Quiver__V1__DeletePointsRequest *req,
                             qv_write_result *res, qv_status *err)
{
    ProtobufCMessage *m = NULL;
    int rc = qv__client_rpc(c, "/quiver.v1.Points/Delete", &req->base,
                            &quiver__v1__delete_points_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    Quiver__V1__DeletePointsResponse *r = (Quiver__V1__DeletePointsResponse *)m;
    copy_write_result(r->result, r->took_us, res);
    protobuf_c_message_free_unpacked(m, NULL);
    set_ok(err);
    return 0;
}

int qv_client_delete_ids(qv_client *c, const char *collection, const qv_point_id *ids, size_t n,
                         bool wait, qv_write_result *res, qv_status *err)
{
    if (res != NULL)
        memset(res, 0, sizeof(*res));
    if (c == NULL || (ids == NULL && n > 0))
        return set_err(err, QV_EINVAL, "qv_client_delete_ids: NULL argument");
    int rc = check_name(collection, "delete", err);
    if (rc != 0)
        return rc;
    if (n == 0 || n > QV__MAX_POINTS_PER_CALL)
        return set_err(err, QV_EINVAL, "delete: %zu ids (1..%d per call)", n,
                       QV__MAX_POINTS_PER_CALL);
    id_views v;
    rc = id_views_make(&v, ids, n, "id", err);
    if (rc != 0)
        return rc;
    Quiver__V1__PointIdList list = QUIVER__V1__POINT_ID_LIST__INIT;
    list.n_ids = n;
    list.ids = v.ptrs;
    Quiver__V1__DeletePointsRequest req = QUIVER__V1__DELETE_POINTS_REQUEST__INIT;
    req.collection = (char *)collection;
    req.wait = wait;
    req.selector_case = QUIVER__V1__DELETE_POINTS_REQUEST__SELECTOR_IDS;
    req.ids = &list;
    rc = qv__client_delete(c, &req, res, err);
    id_views_free(&v);
    return rc;
}

int qv_client_delete_filter(qv_client *c, const char *collection, const char *filter_text,
                            bool wait, qv_write_result *res, qv_status *err)
{
    if (res != NULL)
        memset(res, 0, sizeof(*res));
    if (c == NULL)
        return set_err(err, QV_EINVAL, "qv_client_delete_filter: NULL argument");
    int rc = check_name(collection, "delete", err);
    if (rc != 0)
        return rc;
    if (filter_text == NULL || filter_text[0] == '\0')
        return set_err(err, QV_EINVAL,
                       "delete: an empty filter would match every point (drop the collection "
                       "to delete everything)");
    Quiver__V1__DeletePointsRequest req = QUIVER__V1__DELETE_POINTS_REQUEST__INIT;
    req.collection = (char *)collection;
    req.wait = wait;
    req.filter_text = (char *)filter_text;
    return qv__client_delete(c, &req, res, err);
}

/* ---- points: reads -----------------------------------------------------------------------------
 */

/* Fills one result point. want_payload: the caller asked for payloads, so an absent one reads as
 * "{}". */
static int copy_result_point(const Quiver__V1__PointId *id, float distance,
                             const Quiver__V1__Payload *payload, const Quiver__V1__Vector *vec,
                             uint64_t version, bool want_payload, qv_scored_point *out,
                             qv_status *err)
{
    copy_point_id(id, &out->id);
    out->distance = distance;
    out->version = version;
    if (payload != NULL || want_payload) {
        int rc = qv__sdk_json_format_payload(payload, &out->payload_json, NULL, err);
        if (rc != 0)
            return rc;
    }
    if (vec != NULL && vec->n_data > 0) {
        if (vec->n_data > UINT32_MAX)
            return set_err(err, QV_EINTERNAL, "vector of %zu floats in an answer", vec->n_data);
        out->vector = malloc(vec->n_data * sizeof(float));
        if (out->vector == NULL)
            return set_err(err, QV_ERESOURCE, "out of memory");
        memcpy(out->vector, vec->data, vec->n_data * sizeof(float));
        out->dim = (uint32_t)vec->n_data;
    }
    return 0;
}

static int fill_scored(qv_search_result *out, Quiver__V1__ScoredPoint **pts, size_t n,
                       bool want_payload, qv_status *err)
{
    if (n == 0)
        return 0;
    out->points = calloc(n, sizeof(*out->points));
    if (out->points == NULL)
        return set_err(err, QV_ERESOURCE, "out of memory");
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        const Quiver__V1__ScoredPoint *p = pts[i];
        int rc = copy_result_point(p->id, p->distance, p->payload, p->vector, p->version,
                                   want_payload, &out->points[i], err);
        if (rc != 0) {
            qv_search_result_free(out);
            return rc;
        }
    }
    return 0;
}

static int fill_retrieved(qv_search_result *out, Quiver__V1__RetrievedPoint **pts, size_t n,
                          bool want_payload, qv_status *err)
{
    if (n == 0)
        return 0;
    out->points = calloc(n, sizeof(*out->points));
    if (out->points == NULL)
        return set_err(err, QV_ERESOURCE, "out of memory");
    out->n = n;
    for (size_t i = 0; i < n; i++) {
        const Quiver__V1__RetrievedPoint *p = pts[i];
        int rc = copy_result_point(p->id, 0.0f, p->payload, p->vector, p->version, want_payload,
                                   &out->points[i], err);
        if (rc != 0) {
            qv_search_result_free(out);
            return rc;
        }
    }
    return 0;
}

void qv_search_result_free(qv_search_result *res)
{
    if (res == NULL)
        return;
    for (size_t i = 0; res->points != NULL && i < res->n; i++) {
        free(res->points[i].payload_json);
        free(res->points[i].vector);
    }
    free(res->points);
    free(res->next_cursor);
    memset(res, 0, sizeof(*res));
}

/* The protobuf parts of a qv_search_opts shared by Search, SearchBatch and Recommend; they live
 * in this struct, which must outlive the packing of the request. */
typedef struct search_knobs {
    qv_search_opts o;
    Quiver__V1__SearchParams params;
    Quiver__V1__PayloadSelector sel;
    Quiver__V1__SearchParams *params_p; /* NULL: collection defaults */
    Quiver__V1__PayloadSelector *sel_p; /* NULL: no payload */
    char *filter_text;                  /* never NULL */
} search_knobs;

static void knobs_init(search_knobs *k, const qv_search_opts *opts)
{
    static const qv_search_opts defaults = {0};
    memset(k, 0, sizeof(*k));
    k->o = opts != NULL ? *opts : defaults;
    quiver__v1__search_params__init(&k->params);
    quiver__v1__payload_selector__init(&k->sel);
    if (k->o.ef != 0 || k->o.nprobe != 0 || k->o.exact) {
        k->params.ef = k->o.ef;
        k->params.nprobe = k->o.nprobe;
        k->params.exact = k->o.exact;
        k->params_p = &k->params;
    }
    if (k->o.with_payload) {
        k->sel.selector_case = QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_ENABLE;
        k->sel.enable = true;
        k->sel_p = &k->sel;
    }
    k->filter_text = (char *)(k->o.filter_text != NULL ? k->o.filter_text : "");
}

/* Checks shared by the search calls. */
static int check_query(qv_client *c, const char *collection, const void *vectors, uint32_t dim,
                       qv_search_result *out, const char *call, qv_status *err)
{
    if (c == NULL || out == NULL || vectors == NULL)
        return set_err(err, QV_EINVAL, "%s: NULL argument", call);
    int rc = check_name(collection, call, err);
    if (rc != 0)
        return rc;
    if (dim == 0)
        return set_err(err, QV_EINVAL, "%s: empty query vector (dim 0)", call);
    return 0;
}

int qv_client_search(qv_client *c, const char *collection, const float *vector, uint32_t dim,
                     const qv_search_opts *opts, qv_search_result *out, qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    int rc = check_query(c, collection, vector, dim, out, "search", err);
    if (rc != 0)
        return rc;
    search_knobs k;
    knobs_init(&k, opts);
    Quiver__V1__Vector vec = QUIVER__V1__VECTOR__INIT;
    vec.n_data = dim;
    vec.data = (float *)vector;
    Quiver__V1__SearchRequest req = QUIVER__V1__SEARCH_REQUEST__INIT;
    req.collection = (char *)collection;
    req.vector = &vec;
    req.k = k.o.k;
    req.offset = k.o.offset;
    req.params = k.params_p;
    if (k.o.has_max_distance) {
        req.opt_max_distance_case = QUIVER__V1__SEARCH_REQUEST__OPT_MAX_DISTANCE_MAX_DISTANCE;
        req.max_distance = k.o.max_distance;
    }
    req.with_payload = k.sel_p;
    req.with_vectors = k.o.with_vectors;
    req.filter_text = k.filter_text;
    req.timeout_ms = k.o.timeout_ms;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/Search", &req.base,
                        &quiver__v1__search_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    Quiver__V1__SearchResponse *r = (Quiver__V1__SearchResponse *)m;
    rc = fill_scored(out, r->points, r->n_points, k.o.with_payload, err);
    if (rc == 0) {
        out->partial = r->partial;
        out->took_us = r->took_us;
        set_ok(err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int qv_client_search_batch(qv_client *c, const char *collection, const float *vectors, size_t nq,
                           uint32_t dim, const qv_search_opts *opts, qv_search_result *out,
                           qv_status *err)
{
    if (out != NULL)
        memset(out, 0, nq * sizeof(*out));
    int rc = check_query(c, collection, vectors, dim, out, "search batch", err);
    if (rc != 0)
        return rc;
    if (nq == 0)
        return set_err(err, QV_EINVAL, "search batch: no queries");
    search_knobs k;
    knobs_init(&k, opts);
    Quiver__V1__BatchSearchQuery *qs = calloc(nq, sizeof(*qs));
    Quiver__V1__BatchSearchQuery **qp = calloc(nq, sizeof(*qp));
    Quiver__V1__Vector *vecs = calloc(nq, sizeof(*vecs));
    if (qs == NULL || qp == NULL || vecs == NULL) {
        rc = set_err(err, QV_ERESOURCE, "out of memory");
        goto done;
    }
    for (size_t i = 0; i < nq; i++) {
        quiver__v1__vector__init(&vecs[i]);
        vecs[i].n_data = dim;
        vecs[i].data = (float *)vectors + i * dim;
        Quiver__V1__BatchSearchQuery *q = &qs[i];
        quiver__v1__batch_search_query__init(q);
        q->vector = &vecs[i];
        q->k = k.o.k;
        q->offset = k.o.offset;
        q->params = k.params_p;
        if (k.o.has_max_distance) {
            q->opt_max_distance_case =
                QUIVER__V1__BATCH_SEARCH_QUERY__OPT_MAX_DISTANCE_MAX_DISTANCE;
            q->max_distance = k.o.max_distance;
        }
        q->with_payload = k.sel_p;
        q->with_vectors = k.o.with_vectors;
        q->filter_text = k.filter_text;
        qp[i] = q;
    }
    Quiver__V1__SearchBatchRequest req = QUIVER__V1__SEARCH_BATCH_REQUEST__INIT;
    req.collection = (char *)collection;
    req.n_queries = nq;
    req.queries = qp;
    req.timeout_ms = k.o.timeout_ms;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/SearchBatch", &req.base,
                        &quiver__v1__search_batch_response__descriptor, &m, err);
    if (rc != 0)
        goto done;
    Quiver__V1__SearchBatchResponse *r = (Quiver__V1__SearchBatchResponse *)m;
    if (r->n_results != nq) {
        rc = set_err(err, QV_EINTERNAL, "%s answered %zu results for %zu queries", c->target,
                     r->n_results, nq);
    } else {
        for (size_t i = 0; i < nq && rc == 0; i++) {
            const Quiver__V1__BatchSearchResult *br = r->results[i];
            rc = fill_scored(&out[i], br->points, br->n_points, k.o.with_payload, err);
            out[i].partial = br->partial;
            out[i].took_us = r->took_us;
        }
        if (rc != 0) {
            for (size_t i = 0; i < nq; i++)
                qv_search_result_free(&out[i]);
        } else {
            set_ok(err);
        }
    }
    protobuf_c_message_free_unpacked(m, NULL);
done:
    free(vecs);
    free(qp);
    free(qs);
    return rc;
}

int qv_client_recommend(qv_client *c, const char *collection, const qv_point_id *positive,
                        size_t npositive, const qv_point_id *negative, size_t nnegative,
                        const qv_search_opts *opts, qv_search_result *out, qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || (positive == NULL && npositive > 0) ||
        (negative == NULL && nnegative > 0))
        return set_err(err, QV_EINVAL, "qv_client_recommend: NULL argument");
    int rc = check_name(collection, "recommend", err);
    if (rc != 0)
        return rc;
    if (npositive == 0)
        return set_err(err, QV_EINVAL, "recommend: at least one positive example is needed");
    id_views pos, neg = {0};
    rc = id_views_make(&pos, positive, npositive, "positive example", err);
    if (rc != 0)
        return rc;
    rc = id_views_make(&neg, negative, nnegative, "negative example", err);
    if (rc != 0)
        goto done;
    search_knobs k;
    knobs_init(&k, opts);
    Quiver__V1__RecommendRequest req = QUIVER__V1__RECOMMEND_REQUEST__INIT;
    req.collection = (char *)collection;
    req.n_positive = npositive;
    req.positive = pos.ptrs;
    req.n_negative = nnegative;
    req.negative = neg.ptrs;
    req.strategy = QUIVER__V1__RECOMMEND_STRATEGY__RECOMMEND_STRATEGY_AVERAGE_VECTOR;
    req.k = k.o.k;
    req.offset = k.o.offset;
    req.filter_text = k.filter_text;
    req.params = k.params_p;
    if (k.o.has_max_distance) {
        req.opt_max_distance_case = QUIVER__V1__RECOMMEND_REQUEST__OPT_MAX_DISTANCE_MAX_DISTANCE;
        req.max_distance = k.o.max_distance;
    }
    req.with_payload = k.sel_p;
    req.with_vectors = k.o.with_vectors;
    req.timeout_ms = k.o.timeout_ms;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/Recommend", &req.base,
                        &quiver__v1__recommend_response__descriptor, &m, err);
    if (rc != 0)
        goto done;
    Quiver__V1__RecommendResponse *r = (Quiver__V1__RecommendResponse *)m;
    rc = fill_scored(out, r->points, r->n_points, k.o.with_payload, err);
    if (rc == 0) {
        out->partial = r->partial;
        out->took_us = r->took_us;
        set_ok(err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
done:
    id_views_free(&neg);
    id_views_free(&pos);
    return rc;
}

int qv_client_get(qv_client *c, const char *collection, const qv_point_id *ids, size_t n,
                  bool with_payload, bool with_vectors, qv_search_result *out, qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || (ids == NULL && n > 0))
        return set_err(err, QV_EINVAL, "qv_client_get: NULL argument");
    int rc = check_name(collection, "get", err);
    if (rc != 0)
        return rc;
    if (n == 0 || n > QV__MAX_POINTS_PER_CALL)
        return set_err(err, QV_EINVAL, "get: %zu ids (1..%d per call)", n, QV__MAX_POINTS_PER_CALL);
    id_views v;
    rc = id_views_make(&v, ids, n, "id", err);
    if (rc != 0)
        return rc;
    Quiver__V1__PayloadSelector sel = QUIVER__V1__PAYLOAD_SELECTOR__INIT;
    sel.selector_case = QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_ENABLE;
    sel.enable = true;
    Quiver__V1__GetPointsRequest req = QUIVER__V1__GET_POINTS_REQUEST__INIT;
    req.collection = (char *)collection;
    req.n_ids = n;
    req.ids = v.ptrs;
    req.with_payload = with_payload ? &sel : NULL;
    req.with_vectors = with_vectors;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/Get", &req.base,
                        &quiver__v1__get_points_response__descriptor, &m, err);
    id_views_free(&v);
    if (rc != 0)
        return rc;
    Quiver__V1__GetPointsResponse *r = (Quiver__V1__GetPointsResponse *)m;
    rc = fill_retrieved(out, r->points, r->n_points, with_payload, err);
    if (rc == 0) {
        out->took_us = r->took_us;
        set_ok(err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int qv_client_scroll(qv_client *c, const char *collection, const char *filter_text, uint32_t limit,
                     const uint8_t *cursor, size_t cursor_len, bool with_payload, bool with_vectors,
                     qv_search_result *out, qv_status *err)
{
    if (out != NULL)
        memset(out, 0, sizeof(*out));
    if (c == NULL || out == NULL || (cursor == NULL && cursor_len > 0))
        return set_err(err, QV_EINVAL, "qv_client_scroll: NULL argument");
    int rc = check_name(collection, "scroll", err);
    if (rc != 0)
        return rc;
    Quiver__V1__PayloadSelector sel = QUIVER__V1__PAYLOAD_SELECTOR__INIT;
    sel.selector_case = QUIVER__V1__PAYLOAD_SELECTOR__SELECTOR_ENABLE;
    sel.enable = true;
    Quiver__V1__ScrollPointsRequest req = QUIVER__V1__SCROLL_POINTS_REQUEST__INIT;
    req.collection = (char *)collection;
    req.filter_text = (char *)(filter_text != NULL ? filter_text : "");
    req.limit = limit;
    req.cursor.data = (uint8_t *)cursor;
    req.cursor.len = cursor != NULL ? cursor_len : 0;
    req.with_payload = with_payload ? &sel : NULL;
    req.with_vectors = with_vectors;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/Scroll", &req.base,
                        &quiver__v1__scroll_points_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    Quiver__V1__ScrollPointsResponse *r = (Quiver__V1__ScrollPointsResponse *)m;
    rc = fill_retrieved(out, r->points, r->n_points, with_payload, err);
    if (rc == 0 && r->next_cursor.len > 0) {
        out->next_cursor = malloc(r->next_cursor.len);
        if (out->next_cursor == NULL) {
            qv_search_result_free(out);
            rc = set_err(err, QV_ERESOURCE, "out of memory");
        } else {
            memcpy(out->next_cursor, r->next_cursor.data, r->next_cursor.len);
            out->next_cursor_len = r->next_cursor.len;
        }
    }
    if (rc == 0) {
        out->took_us = r->took_us;
        set_ok(err);
    }
    protobuf_c_message_free_unpacked(m, NULL);
    return rc;
}

int qv_client_count(qv_client *c, const char *collection, const char *filter_text, uint64_t *count,
                    qv_status *err)
{
    if (count != NULL)
        *count = 0;
    if (c == NULL || count == NULL)
        return set_err(err, QV_EINVAL, "qv_client_count: NULL argument");
    int rc = check_name(collection, "count", err);
    if (rc != 0)
        return rc;
    Quiver__V1__CountPointsRequest req = QUIVER__V1__COUNT_POINTS_REQUEST__INIT;
    req.collection = (char *)collection;
    req.filter_text = (char *)(filter_text != NULL ? filter_text : "");
    req.exact = true;
    ProtobufCMessage *m = NULL;
    rc = qv__client_rpc(c, "/quiver.v1.Points/Count", &req.base,
                        &quiver__v1__count_points_response__descriptor, &m, err);
    if (rc != 0)
        return rc;
    *count = ((Quiver__V1__CountPointsResponse *)m)->count;
    protobuf_c_message_free_unpacked(m, NULL);
    set_ok(err);
    return 0;
}
