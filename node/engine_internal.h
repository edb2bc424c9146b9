/* Private to node/engine*.c and node/query.c: the structures behind engine.h. */
#ifndef QV_NODE_ENGINE_INTERNAL_H
#define QV_NODE_ENGINE_INTERNAL_H

#include "node/engine.h"
#include "node/hmap.h"

#include <pthread.h>
#include <rocksdb/c.h>
#include <stdatomic.h>

/* External point id as a key: tag 0 + 8-byte big-endian number, or tag 1 + 16 UUID bytes. */
#define QV_KEY_MAX   17
#define QV_KEY_NUM   0
#define QV_KEY_UUID  1
#define QV_NAME_MAX  64
#define QV_MAX_BATCH 10000

enum { CF_DEFAULT, CF_META, CF_LOG, CF_VECTORS, CF_PAYLOAD, CF_COUNT };

struct qv_engine {
    char *dir;
    char *db_path;
    char *snap_dir;
    qv_engine_opts opts;
    char node_id[40];
    rocksdb_t *db;
    rocksdb_options_t *dbopts;
    rocksdb_cache_t *cache;
    rocksdb_block_based_table_options_t *table;
    rocksdb_column_family_handle_t *cf[CF_COUNT];
    rocksdb_writeoptions_t *wo_log;   /* per the fsync policy */
    rocksdb_writeoptions_t *wo_state; /* never synced: the log is the durable record */
    rocksdb_writeoptions_t *wo_sync;  /* metadata changes */
    rocksdb_readoptions_t *ro;

    pthread_mutex_t mu; /* the collection registry */
    qv_coll **colls;
    size_t ncolls, capcolls;
    atomic_bool ready;
    atomic_uint_fast64_t log_writes; /* group writes of the log, for the interval fsync */

    pthread_t bg; /* snapshots */
    bool bg_started;
    pthread_t syncer; /* the log fsync of --fsync interval, never delayed by a snapshot */
    bool syncer_started;
    pthread_mutex_t bg_mu;
    pthread_cond_t bg_cv;
    bool bg_stop;

    qv_histogram *h_log_write; /* one group write */
    qv_histogram *h_apply;     /* one entry applied */
    qv_histogram *h_snapshot;
    qv_histogram *h_fsync; /* background fsyncs of the log (--fsync interval) */
    qv_counter *c_fsyncs;
};

/* A queued write. */
typedef struct qv_wreq {
    int kind; /* WK_UPSERT, WK_DELETE, WK_DELETE_FILTER */
    size_t n;
    uint8_t (*keys)[QV_KEY_MAX];
    uint8_t *klens;
    float *vecs;                                    /* upsert: n * dim */
    uint8_t **pl;                                   /* upsert: packed payloads (NULL: empty) */
    uint32_t *pl_lens;                              /* upsert */
    const Quiver__V1__Filter *filter, *text_filter; /* delete by filter */
    bool wait;
    /* outcome */
    bool committed, finished;
    int rc;
    qv_status err;
    uint64_t index;
    uint64_t points;
    struct qv_wreq *next;
} qv_wreq;

enum { WK_UPSERT = 1, WK_DELETE = 2, WK_DELETE_FILTER = 3 };

/* A committed log entry on its way to the applier (decoded). */
typedef struct qv_entry {
    uint64_t index;
    int kind; /* WK_UPSERT or WK_DELETE */
    size_t n;
    uint8_t (*keys)[QV_KEY_MAX];
    uint8_t *klens;
    uint32_t *iids;
    float *vecs;
    uint8_t **pl;
    uint32_t *pl_lens;
    size_t bytes;
    struct qv_entry *next;
} qv_entry;

struct qv_coll {
    qv_engine *eng;
    char name[QV_NAME_MAX + 1];
    uint64_t uid;
    uint8_t uidk[8]; /* uid, big-endian: the key prefix of every record of the collection */
    Quiver__V1__CollectionConfig *cfg;
    uint32_t dim;
    qv_metric metric;
    atomic_int refs;
    atomic_bool dropped;

    /* derived index state */
    qv_index *index;   /* main index */
    qv_index *pending; /* FLAT holding points until the main index can be trained; or NULL */
    bool needs_training;
    uint32_t train_size;

    /* applied view: guarded by rw */
    pthread_rwlock_t rw;
    qv_pidx *pidx;
    roaring_bitmap_t *live;
    uint8_t (*iid_keys)[QV_KEY_MAX]; /* iid -> key; a zero length in iid_klen: none */
    uint8_t *iid_klen;
    uint64_t *iid_ver; /* iid -> version (log index of the point's last write) */
    size_t iid_cap;

    /* committed view and queues: guarded by mu */
    pthread_mutex_t mu;
    pthread_cond_t work_cv;  /* committer: requests queued / stop */
    pthread_cond_t apply_cv; /* applier: entries queued / stop */
    pthread_cond_t done_cv;  /* waiters: something committed or applied */
    qv_hmap keymap;          /* key -> (iid + 1) */
    uint32_t next_iid;
    uint64_t last_index;
    uint64_t applied_index;
    qv_wreq *q_head, *q_tail;
    qv_entry *a_head, *a_tail;
    size_t a_bytes;
    bool stop;
    bool committer_done; /* the committer has exited: nothing more reaches the apply queue */
    bool failed;         /* a storage error: writes refused until restart */
    char failed_msg[QV_STATUS_MSG_MAX];
    pthread_t committer, applier;
    bool threads_started;

    /* snapshots: snap_mu is held while one entry is applied and while a snapshot is taken */
    pthread_mutex_t snap_mu;
    uint64_t snap_index;
    uint64_t state_index;    /* last entry applied to the state and memory (under snap_mu) */
    uint32_t state_next_iid; /* next iid as of state_index (applier only) */
    uint64_t changed_since_snap;
    uint64_t last_snap_ms;

    qv_counter *c_points_written;
};

/* Key helpers */
int qv__key_from_id(const Quiver__V1__PointId *id, uint8_t *key, uint8_t *klen, qv_status *err);
/* Fills a PointId from a key; the UUID string goes into uuidbuf (37 bytes). */
void qv__key_to_id(const uint8_t *key, size_t klen, Quiver__V1__PointId *id, char *uuidbuf);
/* <uid><key> */
size_t qv__coll_key(const qv_coll *c, const uint8_t *key, size_t klen, uint8_t *out);

/* Looks a point up in the committed view (for has_id). */
bool qv__coll_lookup_iid(const Quiver__V1__PointId *id, uint32_t *iid, void *coll);

/* Checks a vector (dimension, finite, non-zero for cosine) and writes the stored form (normalised
 * for cosine) to out. what names it in messages ("point 3", "query"). */
int qv__coll_check_vector(const qv_coll *c, const float *v, size_t n, float *out, const char *what,
                          qv_status *err);

/* Decodes a vectors-CF value: iid, version, vector (dim floats, may be unaligned: copied). */
int qv__vec_value_decode(const qv_coll *c, const char *val, size_t len, uint32_t *iid,
                         uint64_t *version, float *vec);

#endif
