/* Private to node/: the node struct and the pieces its files share. */
#ifndef QV_NODE_INTERNAL_H
#define QV_NODE_INTERNAL_H

#include "node/engine.h"
#include "node/http.h"
#include "node/metrics.h"
#include "node/node.h"

#include <pthread.h>
#include <stdatomic.h>

/* Node identity: 16 random bytes shown as 32 lower-case hex digits. */
#define QV_NODE_ID_HEX 32

typedef struct qv_datadir {
    char *path;
    int lock_fd;
    char node_id[QV_NODE_ID_HEX + 1];
} qv_datadir;

struct qv_node {
    bool dev;
    qv_datadir dir;
    qv_rpc_server *rpc;
    char *grpc_addr;
    uint64_t started_mono_ms;
    uint64_t started_wall_ms;
    atomic_bool serving;
    /* gossip: NULL when off */
    qv_gossip *gossip;
    char gossip_addr[QV_GOSSIP_ADDR_STRLEN];
    /* the load publisher: refreshes the gossip record every QV_NODE_LOAD_MS */
    pthread_t load_thread;
    bool load_started;
    pthread_mutex_t load_mu;
    pthread_cond_t load_cond;
    bool load_stop;
    /* storage and observability */
    qv_engine *engine;
    qv_metrics *metrics;
    qv_http *http;
};

/* Registers quiver.v1.Collections and quiver.v1.Points (node/query.c). */
int qv__node_register_data_services(qv_engine *e, qv_rpc_server *srv);

#define QV_NODE_LOAD_MS 10000

/* The gRPC address other processes should dial: the bound port replaces a port 0, and the
 * gossip host replaces a wildcard host. */
void qv__node_public_grpc_addr(const qv_node *node, char *buf, size_t len);

/* Creates the directory if needed, takes an exclusive lock on <dir>/LOCK (QV_EUNAVAIL if another
 * process holds it), and reads or creates <dir>/NODE_ID (QV_ECORRUPT when its checksum fails). */
int qv__datadir_open(qv_datadir *dir, const char *path, qv_status *err);
void qv__datadir_close(qv_datadir *dir);

/* Registers the gRPC handlers of the node on srv (before start). */
int qv__node_register_services(qv_node *node, qv_rpc_server *srv);

#endif
