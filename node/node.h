/*
 * node/node.h - the shard node: one quiver-node process.
 *
 * A node owns its data directory (locked against a second process, holding the node's
 * checksummed identity and its RocksDB store), joins the cluster through gossip (common/gossip)
 * and serves, over gRPC, grpc.health.v1.Health/Check, quiver.v1.Cluster/Status and /Members,
 * and the data API quiver.v1.Collections and quiver.v1.Points over its local store (node/engine.h).
 * Optionally /metrics, /healthz and /readyz over HTTP. Replication arrives in a later module.
 */
#ifndef QV_NODE_H
#define QV_NODE_H

#include "common/common.h"
#include "common/gossip/gossip.h"
#include "common/rpc/rpc.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qv_node qv_node;

typedef struct qv_node_opts {
    bool dev;                 /* single-process mode: node and router in one process */
    const char *data_dir;     /* created if missing; must not be used by another live node */
    const char *grpc_addr;    /* "HOST:PORT"; port 0 picks a free one */
    unsigned rpc_workers;     /* 0: number of CPUs */
    size_t max_message_bytes; /* 0: QV_RPC_DEFAULT_MAX_MESSAGE */
    const qv_rpc_tls *tls;    /* NULL: plaintext */

    /* Gossip (SWIM, UDP + TCP on one port). gossip_addr NULL: no gossip, the node knows only
     * itself. gossip_advertise NULL: gossip_addr. gossip_bind_fallback: take a free port when
     * gossip_addr's is in use (dev mode). seeds: "HOST:PORT" of members to join through.
     * node_name NULL: the node id. keys[0..nkeys): the cluster keyring, keys[0] primary.
     * gossip_tunables: its timing and size fields are used (zero fields take the defaults);
     * NULL: all defaults. Everything is copied. */
    const char *gossip_addr;
    const char *gossip_advertise;
    bool gossip_bind_fallback;
    const char *const *seeds;
    size_t nseeds;
    const char *node_name;
    const qv_gossip_key *keys;
    size_t nkeys;
    const qv_gossip_config *gossip_tunables;

    /* Storage (docs/storage.md). fsync: "sync" (default when NULL), "interval" or "off". */
    const char *fsync;
    uint32_t fsync_interval_ms;    /* "interval": 0 means 100 */
    uint64_t snapshot_interval_ms; /* 0: 300,000 */
    uint64_t snapshot_points;      /* 0: 100,000 */
    unsigned index_threads;        /* 0: every CPU */
    uint64_t cache_bytes;          /* RocksDB block cache; 0: 256 MiB */

    /* Operator HTTP endpoints (/metrics, /healthz, /readyz); NULL: off. */
    const char *http_addr;
} qv_node_opts;

/* Opens the data directory and starts serving. Errors (with a message in *err): QV_EINVAL for bad
 * options, QV_EUNAVAIL when the directory is locked by another process or the address cannot be
 * bound, QV_ECORRUPT when the identity file fails its checksum, QV_EPERM / QV_ERESOURCE from the
 * file system. On error nothing is left running. */
int qv_node_start(const qv_node_opts *opts, qv_node **out, qv_status *err);

/* The node's identity (32 hex digits), stable across restarts on the same data directory. Valid
 * until qv_node_stop. */
const char *qv_node_id(const qv_node *node);

/* The bound gRPC port. */
int qv_node_grpc_port(const qv_node *node);

/* The bound HTTP port, or 0 when --http is off. */
int qv_node_http_port(const qv_node *node);

/* The advertised gossip address ("127.0.0.1:7946"), or "off". Valid until qv_node_stop. */
const char *qv_node_gossip_addr(const qv_node *node);

/* Replaces the gossip keyring (key rotation; see docs/gossip.md). Returns 0, QV_EINVAL, or
 * QV_EPRECONDITION when gossip is off. Thread-safe. */
int qv_node_set_cluster_keys(qv_node *node, const qv_gossip_key *keys, size_t nkeys);

/* Leaves the gossip cluster gracefully (others see LEFT, not DEAD), marks the node NOT_SERVING,
 * drains calls in flight for up to grace_ms, releases the data directory and frees the node.
 * NULL is ignored. */
void qv_node_stop(qv_node *node, uint64_t grace_ms);

#ifdef __cplusplus
}
#endif

#endif /* QV_NODE_H */
