/*
 * index/index_internal.h - private to index/: the vtable behind qv_index, and the pieces every
 * index type shares (id map, top-k heap, filter check, the snapshot file format, threads).
 */
#ifndef QV_INDEX_INTERNAL_H
#define QV_INDEX_INTERNAL_H

#include "index/index.h"

#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

/* ---------------------------------------------------------------------------------------------
 * Snapshot file format
 *
 *   [header: 64 bytes][section 0][section 1]...[section table]
 *
 * Header (little-endian): magic "QVINDEX\0" (8), format version u32, header CRC-32C u32 (of the
 * 64 header bytes with this field zero), index type u32, metric u32, dim u32, storage u32,
 * section count u32, reserved u32, table offset u64, file length u64, 8 reserved bytes.
 * Each section starts 64-byte aligned; the table holds for each: tag u32, reserved u32,
 * offset u64, length u64, CRC-32C u32, reserved u32 (32 bytes), followed by the table's own
 * CRC-32C (u32). Index types define their sections by tag and validate every value they read.
 * ------------------------------------------------------------------------------------------- */
#define QV__FILE_MAGIC   "QVINDEX"
#define QV__FILE_VERSION 1u
#define QV__FILE_HEADER  64u
#define QV__FILE_ALIGN   64u
#define QV__MAX_SECTIONS 64u

/* Section tags: four ASCII characters packed little-endian. */
#define QV__TAG(a, b, c, d)                                                                        \
    ((uint32_t)(a) | (uint32_t)(b) << 8 | (uint32_t)(c) << 16 | (uint32_t)(d) << 24)

typedef struct qv__section {
    uint32_t tag;
    uint64_t offset, len;
    uint32_t crc;
} qv__section;

typedef struct qv__writer {
    FILE *f;
    uint64_t off;
    qv__section sec[QV__MAX_SECTIONS];
    uint32_t nsec;
    bool open_section;
    int err; /* sticky: first error wins */
    char errmsg[QV_STATUS_MSG_MAX];
} qv__writer;

/* A section is written with begin, any number of writes, end. Errors are sticky in w->err. */
void qv__w_begin(qv__writer *w, uint32_t tag);
void qv__w_write(qv__writer *w, const void *data, size_t len);
void qv__w_end(qv__writer *w);
/* Convenience: a whole section in one call. */
void qv__w_section(qv__writer *w, uint32_t tag, const void *data, size_t len);

typedef struct qv__reader {
    const uint8_t *base;
    size_t len;
    bool mapped; /* base stays valid for the index's life (QV_LOAD_MMAP): sections may be used in
                    place, read-only; otherwise types must copy what they keep */
    uint32_t type, metric, dim, storage;
    qv__section sec[QV__MAX_SECTIONS];
    uint32_t nsec;
} qv__reader;

/* The section with `tag`: its bytes (checksum already verified by qv__r_open) and length.
 * Returns 0, or QV_ECORRUPT with a message naming the tag when it is missing. */
int qv__r_section(const qv__reader *r, uint32_t tag, const void **data, size_t *len,
                  qv_status *err);
/* Like qv__r_section, but the length must be exactly `want` bytes. */
int qv__r_section_exact(const qv__reader *r, uint32_t tag, size_t want, const void **data,
                        qv_status *err);

/* Used by index.c to frame a file: the header placeholder, then (after the sections) the table
 * and the real header; and to open a buffer, verifying header, table and every section CRC. */
void qv__w_start(qv__writer *w, FILE *f);
int qv__w_finish(qv__writer *w, const qv_index_params *p, qv_status *err);
int qv__r_open(qv__reader *r, const void *buf, size_t len, qv_status *err);

/* ---------------------------------------------------------------------------------------------
 * The vtable
 * ------------------------------------------------------------------------------------------- */
typedef struct qv__index_ops {
    const char *name;
    /* Creates an empty idx->impl for idx->params (already validated). Required. */
    int (*init)(qv_index *idx, qv_status *err);
    /* Called with the index's write lock held. Vectors are already validated (finite) and, for
     * COSINE, normalised; duplicate ids inside the batch already collapsed (last wins). */
    int (*add)(qv_index *idx, const uint64_t *ids, const float *vecs, size_t n, qv_status *err);
    int (*train)(qv_index *idx, const float *vecs, size_t n, qv_status *err); /* may be NULL */
    int (*remove)(qv_index *idx, const uint64_t *ids, size_t n, size_t *removed);
    int (*compact)(qv_index *idx, qv_status *err); /* may be NULL */
    /* Concurrent with other searches and with one writer. The query is validated and, for
     * COSINE, normalised; k in [1, QV_INDEX_MAX_K]; sp has no zero fields left (defaults filled);
     * filter may be NULL. */
    int (*search)(qv_index *idx, const float *q, size_t k, const qv_search_params *sp,
                  const qv_filter *filter, qv_hit *out, size_t *nout);
    /* Optional faster batch path (FLAT); NULL: the generic path runs `search` on threads. */
    int (*search_batch)(qv_index *idx, const float *qs, size_t nq, size_t k,
                        const qv_search_params *sp, const qv_filter *filter, unsigned threads,
                        qv_hit *out, size_t *counts);
    bool (*contains)(qv_index *idx, uint64_t id);
    void (*stats)(qv_index *idx, qv_index_stats *out); /* fills the type-specific fields */
    /* Writes the type's sections (the header and the parameters section are written by index.c). */
    int (*save)(qv_index *idx, qv__writer *w);
    /* Builds idx->impl from the reader's sections; must validate everything it reads. */
    int (*load)(qv_index *idx, const qv__reader *r, qv_status *err);
    void (*destroy)(qv_index *idx);
} qv__index_ops;

struct qv_index {
    const qv__index_ops *ops;
    qv_index_params params;
    const qv_kernels *kern;
    void *impl;
    pthread_mutex_t write_mu; /* serialises writers (add, remove, compact, train, save) */
    void *map;                /* QV_LOAD_MMAP: the mapped file, unmapped by qv_index_free */
    size_t map_len;
    bool read_only; /* loaded with QV_LOAD_MMAP: writers get QV_EPRECONDITION */
};

extern const qv__index_ops qv__flat_ops;
extern const qv__index_ops qv__hnsw_ops;
extern const qv__index_ops qv__ivf_ops;

/* "Smaller is closer" distance of the index's metric on float32 vectors. For IP and COSINE
 * (stored normalised) it is -<a, b>. */
static inline float qv__dist(const qv_index *idx, const float *a, const float *b)
{
    size_t dim = idx->params.dim;
    if (idx->params.metric == QV_METRIC_L2)
        return idx->kern->l2sq_f32(a, b, dim);
    return -idx->kern->ip_f32(a, b, dim);
}

/* A reader-writer lock that prefers writers (glibc's default lets a steady stream of searches
 * starve a writer forever). Returns 0 or the pthread error. */
int qv__rwlock_init(pthread_rwlock_t *lock);

/* Floats between the starts of consecutive stored rows: dims of 128 and more are padded to a
 * multiple of 16 so every row starts 64-byte aligned; smaller ones are packed. */
size_t qv__row_stride(size_t dim);

/* 64-byte aligned storage for `slots` rows of `stride` floats (never a zero-byte request);
 * free() releases it. */
float *qv__alloc_rows(size_t slots, size_t stride);

/* True when none of the n floats is NaN or infinite (inputs and loaded snapshots both pass it). */
bool qv__all_finite(const float *v, size_t n);

/* Scales v (dim floats) to unit length in place; a zero vector stays zero. */
void qv__normalize(float *v, size_t dim);

/* ---------------------------------------------------------------------------------------------
 * Filters
 * ------------------------------------------------------------------------------------------- */
static inline bool qv__filter_allows(const qv_filter *f, uint64_t id)
{
    if (f == NULL)
        return true;
    if (f->allow != NULL && (id > UINT32_MAX || !roaring_bitmap_contains(f->allow, (uint32_t)id)))
        return false;
    if (f->pred != NULL && !f->pred(id, f->ctx))
        return false;
    return true;
}

/* How many ids the filter lets through, as far as it knows (bitmap cardinality, the caller's
 * estimate, the smaller of both); UINT64_MAX when unknown or no filter. */
uint64_t qv__filter_estimate(const qv_filter *f);

/* ---------------------------------------------------------------------------------------------
 * Id map: uint64 id -> uint32 slot, open addressing with linear probing. Not thread-safe by
 * itself: writers hold the index's write lock; readers (contains / search) go through the
 * index type's own synchronisation.
 * ------------------------------------------------------------------------------------------- */
#define QV__NO_SLOT UINT32_MAX

typedef struct qv__idmap {
    uint64_t *keys;
    uint32_t *vals;
    size_t cap; /* power of two, 0 when empty */
    size_t count;
} qv__idmap;

void qv__idmap_init(qv__idmap *m);
void qv__idmap_free(qv__idmap *m);
uint32_t qv__idmap_get(const qv__idmap *m, uint64_t id);     /* QV__NO_SLOT when absent */
int qv__idmap_put(qv__idmap *m, uint64_t id, uint32_t slot); /* 0 or QV_ERESOURCE */
bool qv__idmap_del(qv__idmap *m, uint64_t id);               /* true when it was present */
/* Makes room for `more` insertions without rehashing (so later puts cannot fail). */
int qv__idmap_reserve(qv__idmap *m, size_t more);

/* ---------------------------------------------------------------------------------------------
 * Top-k: a bounded max-heap of hits by distance (the root is the worst kept).
 * ------------------------------------------------------------------------------------------- */
typedef struct qv__topk {
    qv_hit *h;
    size_t n, k;
} qv__topk;

static inline float qv__topk_worst(const qv__topk *t)
{
    return t->n < t->k ? __builtin_inff() : t->h[0].distance;
}

/* Offers a hit; kept when the heap has room or it beats the worst. */
void qv__topk_push(qv__topk *t, uint64_t id, float d);
/* Sorts the kept hits closest first (ties by id) into t->h[0..n); the heap is consumed. */
void qv__topk_sort(qv__topk *t);

/* ---------------------------------------------------------------------------------------------
 * Threads: runs fn(i, ctx) for i in [0, n) on up to `threads` threads (the caller's included).
 * ------------------------------------------------------------------------------------------- */
typedef void (*qv__range_fn)(size_t i, void *ctx);
void qv__parallel_for(size_t n, unsigned threads, qv__range_fn fn, void *ctx);
unsigned qv__default_threads(void);

#endif /* QV_INDEX_INTERNAL_H */
