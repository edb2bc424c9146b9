/* Private to node/: the node's storage engine - one RocksDB with column families for metadata,
 * the write log, vectors and payload - and the collections it holds.
 *
 * Write path (one collection): a request is validated whole, queued, and taken by the
 * collection's committer thread together with every other request waiting (group commit): it
 * assigns the points' internal ids (iids), encodes one checksummed log entry per request and
 * writes the whole group to the log column family in one RocksDB write (one fsync under the
 * default policy). A request is acknowledged once its entry is in that write. The applier thread
 * then applies entries in log order to the state column families (vectors, payload, the applied
 * index) and to memory (the vector index, the payload index). Filter deletes are resolved to ids
 * at their log position. On start each collection loads its index snapshot, replays the log
 * suffix into it, then applies whatever was logged but not applied. See docs/storage.md. */
#ifndef QV_NODE_ENGINE_H
#define QV_NODE_ENGINE_H

#include "common/common.h"
#include "index/index.h"
#include "node/metrics.h"
#include "node/payload.h"
#include "quiver/v1/collections.pb-c.h"
#include "quiver/v1/points.pb-c.h"

#include <roaring/roaring.h>

typedef enum qv_fsync_policy {
    QV_FSYNC_SYNC = 0,     /* every log write is fsynced before it is acknowledged */
    QV_FSYNC_INTERVAL = 1, /* fsync in the background every fsync_interval_ms */
    QV_FSYNC_OFF = 2,      /* leave it to the OS (survives a process crash, not power loss) */
} qv_fsync_policy;

int qv__fsync_policy_parse(const char *s, qv_fsync_policy *out);
const char *qv__fsync_policy_name(qv_fsync_policy p);

typedef struct qv_engine_opts {
    qv_fsync_policy fsync;
    uint32_t fsync_interval_ms;    /* INTERVAL: 0 means 100 */
    uint64_t snapshot_interval_ms; /* 0: 300,000 */
    uint64_t snapshot_points;      /* snapshot once this many points changed; 0: 100,000 */
    unsigned index_threads;        /* 0: every CPU */
    uint64_t cache_bytes;          /* RocksDB block cache; 0: 256 MiB */
    uint32_t max_replicas;         /* ALIVE nodes a collection may be replicated on (1 in dev) */
    const char *node_id;
    qv_metrics *metrics; /* may be NULL */
} qv_engine_opts;

typedef struct qv_engine qv_engine;
typedef struct qv_coll qv_coll;

/* Opens (creating if needed) <data_dir>/db and recovers every collection. */
int qv__engine_open(const char *data_dir, const qv_engine_opts *opts, qv_engine **out,
                    qv_status *err);
/* Stops accepting writes, drains the queues, snapshots every changed collection, closes. */
void qv__engine_close(qv_engine *e);
/* Whether recovery finished (readiness). */
bool qv__engine_ready(qv_engine *e);
size_t qv__engine_collections(qv_engine *e);

/* ---- collections ---- */
int qv__engine_create(qv_engine *e, const Quiver__V1__CreateCollectionRequest *req, qv_coll **out,
                      bool *created, qv_status *err);
/* Takes a reference to a collection (QV_ENOTFOUND with a message when absent). */
int qv__engine_get(qv_engine *e, const char *name, qv_coll **out, qv_status *err);
void qv__coll_put(qv_coll *c);
/* Sorted names (caller frees each and the array). */
int qv__engine_list(qv_engine *e, char ***names, size_t *n);
int qv__engine_drop(qv_engine *e, const char *name, bool *dropped, qv_status *err);

/* Fills info (whose sub-messages are allocated in the arena). */
typedef struct qv_arena qv_arena;
qv_arena *qv__arena_create(void);
void *qv__arena_alloc(qv_arena *a, size_t size); /* zeroed; NULL when out of memory */
char *qv__arena_strdup(qv_arena *a, const char *s);
void qv__arena_free(qv_arena *a);
int qv__coll_info(qv_coll *c, qv_arena *a, Quiver__V1__CollectionInfo *info);

/* ---- points ---- */
typedef struct qv_write_out {
    uint64_t index;  /* log index of the entry */
    uint64_t points; /* points written / deleted */
    bool applied;
} qv_write_out;

int qv__coll_upsert(qv_coll *c, const Quiver__V1__UpsertPointsRequest *req, int64_t deadline_ms,
                    qv_write_out *out, qv_status *err);
/* ids, or a filter (structured and/or text, ANDed; already validated/parsed). */
int qv__coll_delete(qv_coll *c, Quiver__V1__PointId **ids, size_t nids,
                    const Quiver__V1__Filter *filter, const Quiver__V1__Filter *text_filter,
                    bool wait, int64_t deadline_ms, qv_write_out *out, qv_status *err);

#endif
