/*
 * sdk/c/client.c - libquiver's client: one qv_rpc client, one target, blocking calls.
 *
 * Each call packs its protobuf-c request, runs qv_rpc_call_sync() with the client's deadline,
 * rewrites transport failures into messages that name the target (qv__client_call), then copies
 * the unpacked response into the SDK's plain structs so that callers never see protobuf-c types.
 */
#define _POSIX_C_SOURCE 200809L
#include "sdk/c/quiver.h"

#include "common/rpc/rpc.h"
#include "grpc/health/v1/health.pb-c.h"
#include "quiver/v1/cluster.pb-c.h"

#include <ctype.h>
#include <stdlib.h>
#include <string.h>

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
