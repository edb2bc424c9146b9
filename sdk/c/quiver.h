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
 * type named after the message (qv_cluster_status, qv_member) with a matching *_free.
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

/* ---------------------------------------------------------------------------------------------
 * Collections (quiver.v1.Collections)
 *
 * Enumerations travel as lower-case strings so that a caller (and quiverctl) can pass what a
 * user typed: metric "l2" | "cosine" | "dot"; index "hnsw" | "hnsw-int8" | "flat" | "ivf-flat" |
 * "ivf-pq"; partitioning "hash" | "semantic"; status "creating" | "ready" | "training" |
 * "indexing" | "degraded" | "dropping". Strings passed in are matched ignoring case; an unknown
 * one is QV_EINVAL before anything is sent. Strings handed back are always lower case; a value
 * this SDK does not know (a newer server) reads "unknown", an unset metric or status
 * "unspecified", an unset index type "hnsw" and unset partitioning "hash" (their defaults).
 * ------------------------------------------------------------------------------------------- */

/* What to create (CreateCollectionRequest). Zero fields take the server's defaults. */
typedef struct qv_collection_spec {
    const char *name;   /* required */
    uint32_t dimension; /* required, 1..65536 */
    const char *metric; /* required */
    const char *index;  /* NULL: "hnsw" */
    uint32_t hnsw_m, hnsw_ef_construction, hnsw_ef_search;
    uint32_t ivf_nlist, ivf_nprobe;
    uint32_t shards;             /* 0: 1 */
    uint32_t replication_factor; /* 0: server default */
    bool on_disk_payload;
    bool if_not_exists;
    const char *partitioning; /* NULL: "hash" (semantic parameters take the server defaults) */
} qv_collection_spec;

/* A collection as the server describes it (CollectionInfo with its CollectionConfig). Strings are
 * owned by the struct. */
typedef struct qv_collection_info {
    char *name;
    uint32_t dimension;
    char *metric;
    char *index;
    uint32_t hnsw_m, hnsw_ef_construction, hnsw_ef_search;
    uint32_t ivf_nlist, ivf_nprobe;
    uint32_t shards;
    uint32_t replication_factor;
    char *partitioning;
    bool on_disk_payload;
    uint64_t created_at_unix_ms;
    uint64_t uid;
    char *status;
    char *status_message;
    uint64_t points_count;
    uint64_t indexed_points_count;
    uint64_t memory_bytes;
    uint64_t disk_bytes;
} qv_collection_info;

/* Collections.Create. out (may be NULL) receives the collection as created, to be released with
 * qv_collection_info_free(); *created (may be NULL) is false when if_not_exists matched an
 * existing identical collection. Checked here (QV_EINVAL, nothing sent): spec or its name NULL
 * or empty, dimension 0, metric missing, an unknown metric / index / partitioning string. The
 * server judges the rest (name syntax, ranges): QV_EINVAL; QV_EEXIST when the name is taken. */
int qv_client_collection_create(qv_client *c, const qv_collection_spec *spec,
                                qv_collection_info *out, bool *created, qv_status *err);
/* Collections.Describe. On success *out is released with qv_collection_info_free().
 * QV_ENOTFOUND for an unknown collection. */
int qv_client_collection_describe(qv_client *c, const char *name, qv_collection_info *out,
                                  qv_status *err);
/* Collections.List: *names gets an array of *n sorted names (NULL when *n is 0); with infos
 * non-NULL the server is asked for descriptions too (with_info) and *infos gets an array of *n,
 * one per name in the same order (NULL when *n is 0). Release both with
 * qv_collection_list_free(*names, infos ? *infos : NULL, *n). */
int qv_client_collection_list(qv_client *c, char ***names, qv_collection_info **infos, size_t *n,
                              qv_status *err);
/* Collections.Drop. *dropped (may be NULL) is false when if_exists and it did not exist.
 * QV_ENOTFOUND for an unknown collection unless if_exists. */
int qv_client_collection_drop(qv_client *c, const char *name, bool if_exists, bool *dropped,
                              qv_status *err);
/* Frees the strings of *info and zeroes it; safe on a zeroed or already freed struct. */
void qv_collection_info_free(qv_collection_info *info);
/* Frees what qv_client_collection_list returned; either array may be NULL. */
void qv_collection_list_free(char **names, qv_collection_info *infos, size_t n);

/* ---------------------------------------------------------------------------------------------
 * Points (quiver.v1.Points)
 *
 * Payloads travel through this SDK as JSON object text: {"label": 3, "tags": ["a", "b"],
 * "price": 9.5, "sale": true, "note": null}. Numbers without a fraction or exponent that fit in
 * int64 are integers, other numbers doubles; arrays are lists; nested objects are not payload
 * values (QV_EINVAL). The limits of common.proto are checked here too: at most 256 keys, each
 * 1..256 bytes, no key twice, lists nested at most 8 deep with at most 10,000 values each; the
 * text must be strict JSON (RFC 8259, valid UTF-8; "\u0000" is refused). Keys come back in the
 * order the server keeps them, which need not be the order written. Filters are the server's
 * text syntax (filter_text, see points.proto), e.g. "label = 3 and price < 10.5".
 * ------------------------------------------------------------------------------------------- */

/* A point id: an unsigned 64-bit number or a UUID in 8-4-4-4-12 form (lower case). */
typedef struct qv_point_id {
    bool is_uuid;
    uint64_t num;
    char uuid[37];
} qv_point_id;

/* Parses "123" (decimal digits only, 0..2^64-1) or a UUID in 8-4-4-4-12 form (either case;
 * stored in lower case). QV_EINVAL otherwise (*out is then zeroed). err may be NULL. */
int qv_point_id_parse(const char *text, qv_point_id *out, qv_status *err);
/* Buffer size that always fits qv_point_id_format's text. */
#define QV_POINT_ID_TEXT_MAX 40
/* Writes the id as text ("123" or the lower-case UUID) into buf of len bytes (at least
 * QV_POINT_ID_TEXT_MAX to be sure it fits; a shorter buffer gets a truncated, NUL-terminated
 * text); returns buf. */
char *qv_point_id_format(const qv_point_id *id, char *buf, size_t len);

/* A point to write. vector has `dim` floats; payload_json is NULL (empty payload) or a
 * NUL-terminated JSON object. The SDK only reads them during the call. */
typedef struct qv_point {
    qv_point_id id;
    const float *vector;
    uint32_t dim;
    const char *payload_json;
} qv_point;

/* Checks payload JSON text (json[0..len), need not be NUL-terminated) by the rules above, the
 * same way qv_client_upsert does, without a server. With out non-NULL, *out receives the compact
 * canonical form (no insignificant whitespace, keys in the given order, doubles in their shortest
 * round-tripping form), a malloc'd string the caller frees with free(). QV_EINVAL with
 * "bad payload JSON at byte N: ..." (N counts from 0); QV_ERESOURCE. Thread-safe. */
int qv_payload_json_normalize(const char *json, size_t len, char **out, qv_status *err);

/* Reads one point written as a JSON object, e.g. a line of a JSON-lines file for bulk import:
 *   {"id": 42, "vector": [0.5, 1, -2e-3], "payload": {"label": 3}}
 * "id" is an unsigned integer or a string (a UUID, or decimal digits for ids beyond 2^53 that
 * some JSON writers cannot print as numbers); "vector" a non-empty list of numbers that fit a
 * float; "payload" an object (checked as above) or null, and may be left out. Any other key, a
 * repeated key or a missing id or vector is QV_EINVAL with the byte offset. On success *out holds
 * the id, dim, and heap copies of the vector and of the payload text (NULL when none, else the
 * object exactly as written), released by qv_point_json_free(out); on failure *out is zeroed.
 * Thread-safe. */
int qv_point_json_parse(const char *text, size_t len, qv_point *out, qv_status *err);
/* Frees what qv_point_json_parse put in *p and zeroes it. Only for points it filled. */
void qv_point_json_free(qv_point *p);

/* Outcome of a write (UpdateResult, summed over shards). */
typedef struct qv_write_result {
    uint64_t operation_id;
    bool applied;       /* UPDATE_STATUS_APPLIED on every shard (wait = true) */
    uint64_t log_index; /* highest log index written */
    uint64_t points;    /* points written, or deleted for a delete */
    uint64_t took_us;
} qv_write_result;

/* Points.Upsert of n points (1..10,000). wait: return only once searches see them. res may be
 * NULL. Checked here (QV_EINVAL, nothing sent): NULL or empty collection, n out of range, a point
 * without vector or with dim 0, a malformed UUID id, a payload that is not valid JSON or not an
 * object by the rules above ("point 3 (id 42): bad payload JSON at byte 17: ..."). The server
 * judges the rest: QV_EINVAL for a wrong dimension or NaN, QV_ENOTFOUND for an unknown
 * collection. The vectors are sent from the caller's arrays without an intermediate copy. */
int qv_client_upsert(qv_client *c, const char *collection, const qv_point *points, size_t n,
                     bool wait, qv_write_result *res, qv_status *err);
/* Points.Delete by n ids (1..10,000; ids that do not exist are not an error), or of every point
 * passing a non-empty text filter (QV_EINVAL from the server, with its message, when the filter
 * is malformed). res->points counts the points deleted (for a filter: only with wait). */
int qv_client_delete_ids(qv_client *c, const char *collection, const qv_point_id *ids, size_t n,
                         bool wait, qv_write_result *res, qv_status *err);
int qv_client_delete_filter(qv_client *c, const char *collection, const char *filter_text,
                            bool wait, qv_write_result *res, qv_status *err);

/* Knobs of a search; zero-initialise. */
typedef struct qv_search_opts {
    uint32_t k;              /* 0: 10 */
    uint32_t offset;         /* results skipped first */
    const char *filter_text; /* NULL or "": no filter */
    uint32_t ef;             /* 0: collection default */
    uint32_t nprobe;         /* 0: collection default */
    bool exact;              /* exact scan instead of the index */
    bool has_max_distance;
    float max_distance;
    bool with_payload;
    bool with_vectors;
    uint32_t timeout_ms; /* 0: server default */
} qv_search_opts;

/* A point in a result: search hits carry their distance (smaller is closer); points read by id
 * or scroll carry 0. payload_json is NULL unless asked for (then a compact JSON object, "{}" for
 * a point without payload); vector (dim floats) NULL unless asked for. Owned by the result. */
typedef struct qv_scored_point {
    qv_point_id id;
    float distance;
    char *payload_json;
    float *vector;
    uint32_t dim;
    uint64_t version;
} qv_scored_point;

/* A page of points (search, recommend, get, scroll); released with qv_search_result_free(). */
typedef struct qv_search_result {
    qv_scored_point *points; /* n points, NULL when n is 0 */
    size_t n;
    bool partial;
    uint64_t took_us;
    uint8_t *next_cursor; /* scroll only: NULL at the end */
    size_t next_cursor_len;
} qv_search_result;

/* Points.Search. opts may be NULL (k = 10). Results in ascending distance. Checked here: NULL
 * arguments, empty collection, dim 0. The server judges k, the dimension and filter_text
 * (QV_EINVAL with its message, which names the byte offset of a filter syntax error). */
int qv_client_search(qv_client *c, const char *collection, const float *vector, uint32_t dim,
                     const qv_search_opts *opts, qv_search_result *out, qv_status *err);
/* Points.SearchBatch: nq queries (row-major, nq * dim floats, nq >= 1) with the same opts; out
 * is the caller's array of nq results, filled one per query in order (each released with
 * qv_search_result_free; took_us is the whole batch's). On failure all nq are left zeroed. */
int qv_client_search_batch(qv_client *c, const char *collection, const float *vectors, size_t nq,
                           uint32_t dim, const qv_search_opts *opts, qv_search_result *out,
                           qv_status *err);
/* Points.Recommend (average-vector strategy) from example ids: npositive >= 1 (QV_EINVAL
 * otherwise), negative may be NULL when nnegative is 0. The examples are never in the results;
 * an example id that does not exist is QV_ENOTFOUND from the server. */
int qv_client_recommend(qv_client *c, const char *collection, const qv_point_id *positive,
                        size_t npositive, const qv_point_id *negative, size_t nnegative,
                        const qv_search_opts *opts, qv_search_result *out, qv_status *err);
/* Points.Get of n ids (1..10,000), in the order of their first occurrence; missing ids are
 * left out. */
int qv_client_get(qv_client *c, const char *collection, const qv_point_id *ids, size_t n,
                  bool with_payload, bool with_vectors, qv_search_result *out, qv_status *err);
/* Points.Scroll: one page of up to `limit` points (0: 100) after `cursor` (NULL: from the start),
 * optionally filtered. out->next_cursor (next_cursor_len bytes) is the cursor of the next page,
 * NULL after the last page; pass it back unchanged with the same collection and filter. */
int qv_client_scroll(qv_client *c, const char *collection, const char *filter_text, uint32_t limit,
                     const uint8_t *cursor, size_t cursor_len, bool with_payload, bool with_vectors,
                     qv_search_result *out, qv_status *err);
/* Points.Count with an optional text filter (NULL or "": every point), counted exactly. */
int qv_client_count(qv_client *c, const char *collection, const char *filter_text, uint64_t *count,
                    qv_status *err);
/* Frees one result (its points, strings and cursor) and zeroes it. */
void qv_search_result_free(qv_search_result *res);

#ifdef __cplusplus
}
#endif

#endif /* QV_SDK_QUIVER_H */
