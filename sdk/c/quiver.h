/*
 * sdk/c/quiver.h - libquiver, the C client of a Quiver cluster.
 *
 * A qv_client talks gRPC to one address: a quiver-router, or a quiver-node (which answers the
 * operations API too). Every call is blocking, has the client's deadline, and reports failure as
 * a negative QV_E* code (common/common.h; the codes mirror gRPC's one to one) plus a message in
 * a qv_status: the server's own status message when the server answered, or one written here when
 * it could not be reached ("cannot reach HOST:PORT: ...").
 *
 * Results are plain C structs mirroring the .proto messages (the .proto files under
 * proto/quiver/v1). Strings in them are heap copies owned by the struct and released by its *_free
 * function; they are never NULL after a successful call (a field the server left unset is "").
 *
 * Naming: qv_client_<service>_<method> style for calls (qv_client_cluster_status), the result
 * type named after the message (qv_cluster_status, qv_member) with a matching *_free. Collections,
 * points and search will follow the same pattern.
 */
#ifndef QV_SDK_QUIVER_H
#define QV_SDK_QUIVER_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Per-call deadline when the options leave it at 0. */
#define QV_CLIENT_DEFAULT_TIMEOUT_MS 10000

/* ---------------------------------------------------------------------------------------------
 * Connection
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_client qv_client;

/* Options of qv_client_connect. Zero-initialise and set what you need; every field has a usable
 * zero. The strings are only read during qv_client_connect (files are read then, not later). */
typedef struct qv_client_opts {
    int64_t timeout_ms;          /* deadline of each call; 0: QV_CLIENT_DEFAULT_TIMEOUT_MS */
    bool tls;                    /* TLS even without the paths below (server checked against the
                                    system roots); any path below implies TLS */
    const char *tls_ca_path;     /* PEM bundle the server certificate must chain to */
    const char *tls_cert_path;   /* PEM client certificate chain (mutual TLS; needs the key) */
    const char *tls_key_path;    /* PEM private key of tls_cert_path */
    const char *tls_server_name; /* name checked against the server certificate; NULL: the host
                                    part of the target */
    size_t max_message_bytes;    /* per message, each direction; 0: 64 MiB */
} qv_client_opts;

/* Creates a client for `target`, "HOST:PORT" (an IPv6 host in brackets: "[::1]:7070") or a gRPC
 * target URI with a scheme ("dns:///db.example:7070", "unix:/run/quiver.sock"). opts may be NULL
 * (plaintext, 10 s deadline). The target and options are copied; the connection itself is made
 * lazily by the first call, so an unreachable server is reported by that call, not here.
 * On success *out is a client the caller releases with qv_client_close().
 * Errors: QV_EINVAL (empty or malformed target, port not in 1..65535, negative timeout, a client
 * certificate without its key), QV_ENOTFOUND (a TLS file cannot be read), QV_ERESOURCE.
 * err may be NULL. */
int qv_client_connect(const char *target, const qv_client_opts *opts, qv_client **out,
                      qv_status *err);

/* Cancels calls still in flight, closes the connection and frees the client. NULL is ignored.
 * Must not race with calls on the same client. */
void qv_client_close(qv_client *c);

/* The target given to qv_client_connect; valid until qv_client_close. */
const char *qv_client_target(const qv_client *c);

/*
 * Thread-safety of the calls below: a client may be shared by threads; each call blocks its own
 * thread only. Every call returns 0 or a negative code with a message in *err (err may be NULL):
 *   QV_EUNAVAIL   the server cannot be reached ("cannot reach HOST:PORT: <gRPC's reason>"), or it
 *                 answered UNAVAILABLE itself (shutting down, metadata leader unreachable)
 *   QV_ETIMEOUT   no answer within the client's deadline ("no answer from HOST:PORT within N ms")
 *   QV_EINTERNAL  the server's answer could not be decoded
 *   any other     the server's gRPC status code with its message
 * On failure the out-parameters are left zeroed (nothing to free).
 */

/* ---------------------------------------------------------------------------------------------
 * Health (grpc.health.v1.Health/Check)
 * ------------------------------------------------------------------------------------------- */

/* Asks whether `service` is serving: "" (or NULL) for the process as a whole, or a full service
 * name such as "quiver.v1.Cluster". On success *serving is 1 for SERVING and 0 for any other
 * answer (NOT_SERVING: starting, draining, cut off from the metadata leader). Errors as above;
 * an unknown service is QV_ENOTFOUND from the server. */
int qv_client_health(qv_client *c, const char *service, int *serving, qv_status *err);

/* ---------------------------------------------------------------------------------------------
 * Cluster (quiver.v1.Cluster)
 * ------------------------------------------------------------------------------------------- */

/* What a Quiver process runs as (NodeMode). */
typedef enum qv_node_mode {
    QV_NODE_MODE_UNSPECIFIED = 0,
    QV_NODE_MODE_DEV = 1,    /* quiver-node --dev: node and router in one process */
    QV_NODE_MODE_NODE = 2,   /* quiver-node */
    QV_NODE_MODE_ROUTER = 3, /* quiver-router */
} qv_node_mode;

/* Gossip state of a member (MemberState). */
typedef enum qv_member_state {
    QV_MEMBER_STATE_UNSPECIFIED = 0,
    QV_MEMBER_STATE_ALIVE = 1,
    QV_MEMBER_STATE_SUSPECT = 2,
    QV_MEMBER_STATE_DEAD = 3,
    QV_MEMBER_STATE_LEFT = 4,
} qv_member_state;

/* Lower-case names: "dev", "node", "router", "unspecified" (also for values this SDK does not
 * know, which a newer server may send). Static strings; never NULL. */
const char *qv_node_mode_name(qv_node_mode mode);
/* Upper-case names: "ALIVE", "SUSPECT", "DEAD", "LEFT", "UNSPECIFIED" (also for unknown values).
 * Static strings; never NULL. */
const char *qv_member_state_name(qv_member_state state);

/* The answering process's own view (ClusterStatusResponse); see proto/quiver/v1/cluster.proto for
 * the meaning of each field. The strings are owned by the struct. */
typedef struct qv_cluster_status {
    char *node_id;
    char *version;
    qv_node_mode mode;
    uint64_t uptime_ms;
    char *grpc_address;
    uint32_t members_alive; /* itself included */
    uint32_t members_total; /* every state but LEFT, itself included */
    uint32_t collections;
    bool healthy;
    char *data_dir; /* "" for routers */
    uint64_t started_at_unix_ms;
    char *gossip_address; /* "" without gossip */
    char *meta_leader_id; /* "" when unknown */
    uint64_t meta_term;
    uint32_t shards_total;
    uint32_t shards_leaderless;
    char *status_message; /* why healthy is false; "" when healthy */
} qv_cluster_status;

/* Cluster.Status. On success fills *out, which the caller releases with
 * qv_cluster_status_free(). Answered by the process itself, without contacting other members. */
int qv_client_cluster_status(qv_client *c, qv_cluster_status *out, qv_status *err);

/* Frees the strings of *st and zeroes it; safe on a zeroed or already freed struct. */
void qv_cluster_status_free(qv_cluster_status *st);

/* Load figures a member gossips about itself (MemberLoad). */
typedef struct qv_member_load {
    float cpu; /* 0.0..1.0 of all cores, over the last minute */
    uint64_t memory_bytes;
    uint64_t disk_used_bytes;
    uint64_t disk_free_bytes;
    uint32_t replicas;
    uint32_t leaders;
    uint32_t inflight_requests;
    float search_qps;
    uint32_t search_p95_us;
} qv_member_load;

/* A cluster member as seen through gossip by the answering process (Member). */
typedef struct qv_member {
    char *id;
    qv_node_mode role;
    char *grpc_address;
    char *gossip_address;
    qv_member_state state;
    uint64_t incarnation;
    uint64_t last_update_age_ms; /* since the latest update heard about it */
    bool has_load;               /* false: the server sent no load figures (load is zeroed) */
    qv_member_load load;
    char *version;
    bool draining;
    bool is_self; /* the member that answered */
} qv_member;

/* Cluster.Members: every member known to gossip except those that LEFT, sorted by id. On
 * success *out is an array of *n members (NULL when *n is 0) that the caller releases with
 * qv_members_free(*out, *n). */
int qv_client_members(qv_client *c, qv_member **out, size_t *n, qv_status *err);

/* Frees an array returned by qv_client_members, with its strings. NULL is ignored. */
void qv_members_free(qv_member *members, size_t n);

#ifdef __cplusplus
}
#endif

#endif /* QV_SDK_QUIVER_H */
