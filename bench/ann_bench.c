/*
 * quiver-bench ann: recall / QPS / latency / memory of Quiver's indexes on one data set.
 *
 * Map: options and list parsing / data (files, Fashion-MNIST, seeded synthetic clusters) /
 * ground truth (flat index, batch search) and export / the search driver (T pthreads pulling
 * single queries from a shared counter, as hnswlib's benchmarks do) / one run per index type /
 * qv_bench_ann tying it together.
 *
 * Measurement rules, shared with bench/hnswlib_bench.cpp and bench/faiss_bench.py so the numbers
 * compare: the build gets every core; each search point runs the whole query set R times and
 * keeps the run with the best wall-clock QPS (nq / elapsed); latency percentiles come from that
 * run; recall@k = |found ∩ true top-k| / k averaged over queries. The flat index is measured in
 * batch mode (qv_index_search_batch over the whole query set), the way FAISS's IndexFlat is.
 */
#define _GNU_SOURCE
#include "bench/bench.h"
#include "bench/datasets.h"
#include "index/index.h"

#include <errno.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_LIST      64
#define SYNTH_QUERIES 10000
#define SYNTH_SIGMA   0.5 /* cluster spread; centres are N(0, 1) per coordinate */
#define PROG          "quiver-bench ann"

/* ---------------------------------------------------------------------------------------------
 * Small helpers
 * ------------------------------------------------------------------------------------------- */

/* Parses "a,b,c" into out[] (each in [min, max]); returns the count or -1. */
static int parse_u32_list(const char *s, uint32_t *out, int cap, uint32_t min, uint32_t max)
{
    int n = 0;
    if (s == NULL || *s == '\0')
        return -1;
    while (*s != '\0') {
        char *end;
        if (*s < '0' || *s > '9')
            return -1;
        errno = 0;
        unsigned long long v = strtoull(s, &end, 10);
        if (errno != 0 || end == s || v < min || v > max || n == cap)
            return -1;
        out[n++] = (uint32_t)v;
        if (*end == ',')
            end++;
        else if (*end != '\0')
            return -1;
        s = end;
    }
    return n;
}

static unsigned online_cpus(void)
{
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (unsigned)n : 1;
}

static int cmp_i32(const void *a, const void *b)
{
    int32_t x = *(const int32_t *)a, y = *(const int32_t *)b;
    return x < y ? -1 : x > y;
}

/* ---------------------------------------------------------------------------------------------
 * Synthetic clustered data: every row comes from its own seeded stream, so the data is the same
 * whatever the number of generating threads.
 * ------------------------------------------------------------------------------------------- */

static uint64_t splitmix64(uint64_t *s)
{
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

/* Uniform in (0, 1]. */
static double unif(uint64_t *s)
{
    return ((double)(splitmix64(s) >> 11) + 1.0) * (1.0 / 9007199254740992.0);
}

static double gauss(uint64_t *s)
{
    double u = unif(s), v = unif(s);
    return sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v);
}

static uint64_t stream_seed(uint64_t seed, uint64_t stream, uint64_t row)
{
    uint64_t s = seed ^ (stream * 0xd1b54a32d192ed03ull);
    uint64_t a = splitmix64(&s);
    s = a ^ (row * 0x9e3779b97f4a7c15ull);
    return splitmix64(&s);
}

typedef struct synth_job {
    const float *centres;
    uint32_t clusters, dim;
    uint64_t seed, stream;
    float *out;
    size_t from, to;
} synth_job;

static void *synth_worker(void *arg)
{
    synth_job *j = arg;
    for (size_t i = j->from; i < j->to; i++) {
        uint64_t s = stream_seed(j->seed, j->stream, i);
        uint32_t c = (uint32_t)((splitmix64(&s) >> 32) * j->clusters >> 32);
        const float *ctr = j->centres + (size_t)c * j->dim;
        float *row = j->out + i * j->dim;
        for (uint32_t d = 0; d < j->dim; d++)
            row[d] = ctr[d] + (float)(SYNTH_SIGMA * gauss(&s));
    }
    return NULL;
}

static void synth_fill(const float *centres, uint32_t clusters, uint32_t dim, uint64_t seed,
                       uint64_t stream, qv_vecs *v)
{
    enum { MAX_GEN = 64 };
    unsigned t = online_cpus() < MAX_GEN ? online_cpus() : MAX_GEN;
    pthread_t th[MAX_GEN];
    synth_job jobs[MAX_GEN];
    bool started[MAX_GEN];
    for (unsigned i = 0; i < t; i++) {
        jobs[i] = (synth_job){.centres = centres,
                              .clusters = clusters,
                              .dim = dim,
                              .seed = seed,
                              .stream = stream,
                              .out = v->data,
                              .from = v->n * i / t,
                              .to = v->n * (i + 1) / t};
        started[i] = pthread_create(&th[i], NULL, synth_worker, &jobs[i]) == 0;
        if (!started[i])
            synth_worker(&jobs[i]); /* rows are independent: run them here instead */
    }
    for (unsigned i = 0; i < t; i++)
        if (started[i])
            pthread_join(th[i], NULL);
}

static int synth_generate(uint64_t n, uint32_t dim, uint32_t clusters, uint64_t seed, size_t nq,
                          qv_vecs *base, qv_vecs *query, qv_status *err)
{
    qv_vecs ctr = {0};
    int rc = qv_vecs_alloc(clusters, dim, &ctr, err);
    if (rc != 0)
        return rc;
    for (uint32_t c = 0; c < clusters; c++) {
        uint64_t s = stream_seed(seed, 2, c);
        for (uint32_t d = 0; d < dim; d++)
            ctr.data[(size_t)c * dim + d] = (float)gauss(&s);
    }
    rc = qv_vecs_alloc((size_t)n, dim, base, err);
    if (rc != 0)
        goto out;
    rc = qv_vecs_alloc(nq, dim, query, err);
    if (rc != 0) {
        qv_vecs_free(base);
        goto out;
    }
    synth_fill(ctr.data, clusters, dim, seed, 0, base);
    synth_fill(ctr.data, clusters, dim, seed, 1, query);
out:
    qv_vecs_free(&ctr);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * The benchmark context
 * ------------------------------------------------------------------------------------------- */

typedef enum kind {
    KIND_HNSW,
    KIND_HNSW_INT8,
    KIND_FLAT,
    KIND_IVF,
} kind;

static const char *const kind_names[] = {"hnsw", "hnsw-int8", "flat", "ivf"};

typedef struct bench {
    /* options */
    qv_metric metric;
    const char *metric_name;
    size_t k;
    uint32_t M, efc, nlist;
    uint32_t efs[MAX_LIST], nprobes[MAX_LIST], threads[MAX_LIST];
    int nef, nnprobe, nthreads;
    uint32_t repeat;
    /* data */
    char dataset[128];
    qv_vecs base, query;
    qv_ids gt; /* nq rows, at least k columns, ids < base.n */
    /* a flat index built for the ground truth, kept for the flat measurement */
    qv_index *flat;
    double flat_build_s;
    unsigned build_threads;
} bench;

static qv_index_type kind_type(kind k)
{
    return k == KIND_FLAT ? QV_INDEX_FLAT : k == KIND_IVF ? QV_INDEX_IVF_FLAT : QV_INDEX_HNSW;
}

/* Builds an index of `kind` over the base vectors (ids 0..n-1) with every core. */
static int build_index(bench *b, kind kd, qv_index **out, double *build_s, qv_status *err)
{
    qv_index_params p;
    qv_index_params_default(&p, kind_type(kd), b->metric, (uint32_t)b->base.dim);
    p.threads = 0;
    if (kd == KIND_HNSW || kd == KIND_HNSW_INT8) {
        p.hnsw.M = b->M;
        p.hnsw.ef_construction = b->efc;
        p.storage = kd == KIND_HNSW_INT8 ? QV_STORAGE_INT8 : QV_STORAGE_F32;
    }
    if (kd == KIND_IVF && b->nlist > 0)
        p.ivf.nlist = b->nlist;
    uint64_t *ids = malloc(b->base.n * sizeof(*ids));
    if (ids == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory for %zu ids", b->base.n);
        return QV_ERESOURCE;
    }
    for (size_t i = 0; i < b->base.n; i++)
        ids[i] = i;
    qv_index *idx = NULL;
    int rc = qv_index_create(&p, &idx, err);
    if (rc == 0) {
        uint64_t t0 = qv_now_ns();
        rc = qv_index_add(idx, ids, b->base.data, b->base.n, err);
        *build_s = qv_bench_secs(qv_now_ns() - t0);
    }
    free(ids);
    if (rc != 0) {
        qv_index_free(idx);
        return rc;
    }
    *out = idx;
    return 0;
}

/* Exact top-k of every query with the flat index (batch search, every core). */
static int compute_gt(bench *b, qv_status *err)
{
    size_t nq = b->query.n, k = b->k;
    qv_hit *hits = NULL;
    size_t *counts = NULL;
    qv_ids g = {0};
    int rc = 0;
    if (b->flat == NULL) {
        rc = build_index(b, KIND_FLAT, &b->flat, &b->flat_build_s, err);
        if (rc != 0)
            return rc;
    }
    hits = malloc(nq * k * sizeof(*hits));
    counts = malloc(nq * sizeof(*counts));
    g.ids = malloc(nq * k * sizeof(*g.ids));
    if (hits == NULL || counts == NULL || g.ids == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory for the ground truth");
        rc = QV_ERESOURCE;
        goto out;
    }
    uint64_t t0 = qv_now_ns();
    rc = qv_index_search_batch(b->flat, b->query.data, nq, k, NULL, NULL, 0, hits, counts, err);
    if (rc != 0)
        goto out;
    fprintf(stderr, "ground truth: exact top-%zu of %zu queries over %zu vectors in %.2f s\n", k,
            nq, b->base.n, qv_bench_secs(qv_now_ns() - t0));
    for (size_t i = 0; i < nq; i++) {
        if (counts[i] != k) {
            *err =
                qv_status_make(QV_EINTERNAL, "flat search returned %zu of %zu hits", counts[i], k);
            rc = QV_EINTERNAL;
            goto out;
        }
        for (size_t j = 0; j < k; j++)
            g.ids[i * k + j] = (int32_t)hits[i * k + j].id;
    }
    g.n = nq;
    g.k = k;
    qv_ids_free(&b->gt);
    b->gt = g;
    g.ids = NULL;
out:
    free(g.ids);
    free(hits);
    free(counts);
    return rc;
}

/* Mean over queries of |found ∩ true top-kk| / kk, using the first kk hits and gt columns. */
static double recall(const bench *b, const qv_hit *hits, const size_t *counts, size_t kk)
{
    size_t nq = b->query.n;
    int32_t *truth = malloc(kk * sizeof(*truth));
    if (truth == NULL)
        return NAN;
    double sum = 0;
    for (size_t i = 0; i < nq; i++) {
        memcpy(truth, b->gt.ids + i * b->gt.k, kk * sizeof(*truth));
        qsort(truth, kk, sizeof(*truth), cmp_i32);
        size_t found = 0, c = counts[i] < kk ? counts[i] : kk;
        for (size_t j = 0; j < c; j++) {
            int32_t id = (int32_t)hits[i * b->k + j].id;
            if (bsearch(&id, truth, kk, sizeof(*truth), cmp_i32) != NULL)
                found++;
        }
        sum += (double)found / (double)kk;
    }
    free(truth);
    return sum / (double)nq;
}

/* ---------------------------------------------------------------------------------------------
 * The search driver
 * ------------------------------------------------------------------------------------------- */

typedef struct search_run {
    qv_index *idx;
    const bench *b;
    qv_search_params sp;
    qv_hit *hits;
    size_t *counts;
    uint64_t *lat_ns;
    atomic_size_t next;
    atomic_int failed;
    pthread_mutex_t mu; /* guards first_err and the start gate */
    pthread_cond_t cv;
    bool go;
    qv_status first_err;
} search_run;

static void *search_worker(void *arg)
{
    search_run *r = arg;
    const bench *b = r->b;
    size_t nq = b->query.n, k = b->k, dim = b->query.dim;
    pthread_mutex_lock(&r->mu);
    while (!r->go)
        pthread_cond_wait(&r->cv, &r->mu);
    pthread_mutex_unlock(&r->mu);
    for (;;) {
        size_t i = atomic_fetch_add_explicit(&r->next, 1, memory_order_relaxed);
        if (i >= nq || atomic_load_explicit(&r->failed, memory_order_relaxed))
            break;
        qv_status st = {0};
        uint64_t t0 = qv_now_ns();
        int rc = qv_index_search(r->idx, b->query.data + i * dim, k, &r->sp, NULL, r->hits + i * k,
                                 &r->counts[i], &st);
        r->lat_ns[i] = qv_now_ns() - t0;
        if (rc != 0) {
            pthread_mutex_lock(&r->mu);
            if (!atomic_exchange(&r->failed, 1))
                r->first_err = st.code != 0 ? st : qv_status_make(rc, "search failed");
            pthread_mutex_unlock(&r->mu);
            break;
        }
    }
    return NULL;
}

typedef struct point {
    double qps, p50_us, p99_us, recall_k, recall_10;
    bool have_latency;
} point;

/* One search point: R runs of the whole query set over T threads, best QPS kept. */
static int measure(bench *b, qv_index *idx, const qv_search_params *sp, unsigned threads,
                   bool batch, point *pt, qv_status *err)
{
    size_t nq = b->query.n, k = b->k;
    qv_hit *hits = malloc(nq * k * sizeof(*hits));
    size_t *counts = malloc(nq * sizeof(*counts));
    uint64_t *lat = malloc(nq * sizeof(*lat)), *best_lat = malloc(nq * sizeof(*lat));
    pthread_t *th = calloc(threads, sizeof(*th));
    int rc = 0;
    memset(pt, 0, sizeof(*pt));
    if (hits == NULL || counts == NULL || lat == NULL || best_lat == NULL || th == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory for %zu queries", nq);
        rc = QV_ERESOURCE;
        goto out;
    }
    for (uint32_t rep = 0; rep < b->repeat && rc == 0; rep++) {
        double elapsed;
        if (batch) {
            uint64_t t0 = qv_now_ns();
            rc = qv_index_search_batch(idx, b->query.data, nq, k, sp, NULL, threads, hits, counts,
                                       err);
            elapsed = qv_bench_secs(qv_now_ns() - t0);
        } else {
            search_run r = {
                .idx = idx, .b = b, .sp = *sp, .hits = hits, .counts = counts, .lat_ns = lat};
            atomic_init(&r.next, 0);
            atomic_init(&r.failed, 0);
            pthread_mutex_init(&r.mu, NULL);
            pthread_cond_init(&r.cv, NULL);
            unsigned started = 0;
            while (started < threads && pthread_create(&th[started], NULL, search_worker, &r) == 0)
                started++;
            if (started < threads) {
                atomic_store(&r.failed, 1); /* the started workers exit at once */
                r.first_err = qv_status_make(QV_ERESOURCE, "cannot start %u threads", threads);
            }
            /* Open the gate for all workers at once, so thread start-up is not measured. */
            pthread_mutex_lock(&r.mu);
            r.go = true;
            uint64_t t0 = qv_now_ns();
            pthread_cond_broadcast(&r.cv);
            pthread_mutex_unlock(&r.mu);
            for (unsigned i = 0; i < started; i++)
                pthread_join(th[i], NULL);
            elapsed = qv_bench_secs(qv_now_ns() - t0);
            if (atomic_load(&r.failed)) {
                *err = r.first_err;
                rc = err->code != 0 ? err->code : QV_EINTERNAL;
            }
            pthread_cond_destroy(&r.cv);
            pthread_mutex_destroy(&r.mu);
        }
        if (rc != 0)
            break;
        double qps = (double)nq / (elapsed > 0 ? elapsed : 1e-9);
        if (qps > pt->qps) {
            pt->qps = qps;
            uint64_t *t = best_lat;
            best_lat = lat;
            lat = t;
        }
    }
    if (rc != 0)
        goto out;
    pt->recall_k = recall(b, hits, counts, k);
    pt->recall_10 = k >= 10 ? recall(b, hits, counts, 10) : NAN;
    if (!batch) {
        qsort(best_lat, nq, sizeof(*best_lat), qv_bench_cmp_u64);
        pt->p50_us = qv_bench_pct_us(best_lat, nq, 0.50);
        pt->p99_us = qv_bench_pct_us(best_lat, nq, 0.99);
        pt->have_latency = true;
    }
out:
    free(hits);
    free(counts);
    free(lat);
    free(best_lat);
    free(th);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Output
 * ------------------------------------------------------------------------------------------- */

static void print_point(const bench *b, kind kd, const qv_index_stats *st, double build_s,
                        unsigned threads, const char *knob, uint32_t knob_value, const point *pt)
{
    double count = st->count > 0 ? (double)st->count : 1;
    char params[160], human[64];
    if (kd == KIND_HNSW || kd == KIND_HNSW_INT8) {
        snprintf(params, sizeof(params), "{\"M\":%u,\"ef_construction\":%u", st->params.hnsw.M,
                 st->params.hnsw.ef_construction);
        if (kd == KIND_HNSW_INT8)
            snprintf(params + strlen(params), sizeof(params) - strlen(params), ",\"rerank\":%u",
                     st->params.hnsw.rerank);
        snprintf(params + strlen(params), sizeof(params) - strlen(params), "}");
        snprintf(human, sizeof(human), "M=%u efc=%u", st->params.hnsw.M,
                 st->params.hnsw.ef_construction);
    } else if (kd == KIND_IVF) {
        snprintf(params, sizeof(params), "{\"nlist\":%u}", st->params.ivf.nlist);
        snprintf(human, sizeof(human), "nlist=%u", st->params.ivf.nlist);
    } else {
        snprintf(params, sizeof(params), "{}");
        snprintf(human, sizeof(human), "batch");
    }
    char knob_json[48] = "", lat_json[96], r10[32];
    if (knob != NULL)
        snprintf(knob_json, sizeof(knob_json), "\"%s\":%u,", knob, knob_value);
    if (pt->have_latency)
        snprintf(lat_json, sizeof(lat_json), "\"latency_p50_us\":%.1f,\"latency_p99_us\":%.1f",
                 pt->p50_us, pt->p99_us);
    else
        snprintf(lat_json, sizeof(lat_json), "\"latency_p50_us\":null,\"latency_p99_us\":null");
    if (isnan(pt->recall_10))
        snprintf(r10, sizeof(r10), "null");
    else
        snprintf(r10, sizeof(r10), "%.5f", pt->recall_10);
    printf("{\"bench\":\"ann\",\"system\":\"quiver\",\"dataset\":\"%s\",\"metric\":\"%s\","
           "\"n\":%zu,\"nq\":%zu,\"dim\":%zu,\"k\":%zu,\"index\":\"%s\",\"mode\":\"%s\","
           "\"params\":%s,\"threads\":%u,%s\"build_s\":%.3f,\"build_threads\":%u,"
           "\"bytes_per_vector\":%.1f,\"bytes_per_vector_f32_rerank\":%.1f,"
           "\"recall_at_10\":%s,\"recall_at_k\":%.5f,\"qps\":%.1f,%s,\"repeat\":%u,"
           "\"simd\":\"%s\"}\n",
           b->dataset, b->metric_name, b->base.n, b->query.n, b->base.dim, b->k, kind_names[kd],
           kd == KIND_FLAT ? "batch" : "single", params, threads, knob_json, build_s,
           b->build_threads, (double)st->bytes_ram / count, (double)st->bytes_vectors / count, r10,
           pt->recall_k, pt->qps, lat_json, b->repeat, qv_kernels_get()->name);
    fflush(stdout);
    char knob_txt[24] = "-";
    if (knob != NULL)
        snprintf(knob_txt, sizeof(knob_txt), "%s=%u", knob, knob_value);
    char p50[16] = "-", p99[16] = "-";
    if (pt->have_latency) {
        snprintf(p50, sizeof(p50), "%.1f", pt->p50_us);
        snprintf(p99, sizeof(p99), "%.1f", pt->p99_us);
    }
    fprintf(stderr, "%-10s %-16s %3u %-11s %8.2f %9.1f %8.4f %11.0f %9s %9s\n", kind_names[kd],
            human, threads, knob_txt, build_s, (double)st->bytes_ram / count, pt->recall_k, pt->qps,
            p50, p99);
}

/* Builds one index type and measures every (threads, ef / nprobe) point. */
static int run_kind(bench *b, kind kd, qv_status *err)
{
    qv_index *idx = NULL;
    double build_s = 0;
    int rc;
    if (kd == KIND_FLAT && b->flat != NULL) {
        idx = b->flat; /* the ground-truth index: same build */
        build_s = b->flat_build_s;
        b->flat = NULL;
    } else {
        rc = build_index(b, kd, &idx, &build_s, err);
        if (rc != 0)
            return rc;
    }
    qv_index_stats st;
    qv_index_stats_get(idx, &st);
    rc = 0;
    for (int t = 0; t < b->nthreads && rc == 0; t++) {
        unsigned threads = b->threads[t];
        int nknob = kd == KIND_FLAT ? 1 : kd == KIND_IVF ? b->nnprobe : b->nef;
        for (int j = 0; j < nknob && rc == 0; j++) {
            qv_search_params sp = {0};
            const char *knob = NULL;
            uint32_t value = 0;
            if (kd == KIND_HNSW || kd == KIND_HNSW_INT8) {
                sp.ef = value = b->efs[j];
                knob = "ef";
            } else if (kd == KIND_IVF) {
                sp.nprobe = value = b->nprobes[j];
                knob = "nprobe";
                if (value > st.params.ivf.nlist)
                    continue; /* more cells than exist: same as nprobe = nlist */
            }
            point pt;
            rc = measure(b, idx, &sp, threads, kd == KIND_FLAT, &pt, err);
            if (rc == 0)
                print_point(b, kd, &st, build_s, threads, knob, value, &pt);
        }
    }
    qv_index_free(idx);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Data set up
 * ------------------------------------------------------------------------------------------- */

static void name_from_path(const char *path, char *out, size_t cap)
{
    /* ".../fashion-mnist/base.fvecs" -> "fashion-mnist"; ".../sift_base.fvecs" -> "sift_base" */
    const char *slash = strrchr(path, '/');
    const char *file = slash != NULL ? slash + 1 : path;
    size_t stem = strcspn(file, ".");
    if (stem == 4 && strncmp(file, "base", 4) == 0 && slash != NULL) {
        const char *p = slash;
        while (p > path && p[-1] != '/')
            p--;
        snprintf(out, cap, "%.*s", (int)(slash - p), p);
        if (out[0] != '\0')
            return;
    }
    snprintf(out, cap, "%.*s", (int)stem, file);
}

/* Checks a loaded ground truth against the data; QV_ENOTFOUND means "recompute it". */
static int check_gt(bench *b, qv_status *err)
{
    if (b->gt.n < b->query.n) {
        *err = qv_status_make(QV_EINVAL, "the ground truth has %zu rows for %zu queries", b->gt.n,
                              b->query.n);
        return QV_EINVAL;
    }
    if (b->gt.k < b->k) {
        *err = qv_status_make(
            QV_EINVAL, "the ground truth has %zu neighbours per query, --k is %zu", b->gt.k, b->k);
        return QV_EINVAL;
    }
    b->gt.n = b->query.n; /* --limit-query: the first rows go with the first queries */
    for (size_t i = 0; i < b->gt.n; i++)
        for (size_t j = 0; j < b->k; j++)
            if ((size_t)b->gt.ids[i * b->gt.k + j] >= b->base.n)
                return QV_ENOTFOUND;
    return 0;
}

/* mkdir -p. */
static int make_dirs(const char *dir, qv_status *err)
{
    char path[4096];
    if (snprintf(path, sizeof(path), "%s", dir) >= (int)sizeof(path)) {
        *err = qv_status_make(QV_EINVAL, "directory name too long");
        return QV_EINVAL;
    }
    for (char *p = path + 1;; p++) {
        bool end = *p == '\0';
        if (*p != '/' && !end)
            continue;
        *p = '\0';
        if (mkdir(path, 0777) != 0 && errno != EEXIST) {
            int e = errno;
            *err = qv_status_make(qv_from_errno(e), "%s: cannot create: %s", path, strerror(e));
            return err->code;
        }
        if (end)
            return 0;
        *p = '/';
    }
}

static int export_data(const bench *b, const char *dir, qv_status *err)
{
    int mrc = make_dirs(dir, err);
    if (mrc != 0)
        return mrc;
    char path[4096];
    snprintf(path, sizeof(path), "%s/base.fvecs", dir);
    int rc = qv_ds_write_fvecs(path, b->base.data, b->base.n, b->base.dim, err);
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/query.fvecs", dir);
        rc = qv_ds_write_fvecs(path, b->query.data, b->query.n, b->query.dim, err);
    }
    if (rc == 0) {
        snprintf(path, sizeof(path), "%s/gt.ivecs", dir);
        rc = qv_ds_write_ivecs(path, b->gt.ids, b->gt.n, b->gt.k, err);
    }
    if (rc == 0)
        fprintf(stderr,
                "exported %zu base, %zu query vectors (dim %zu) and top-%zu ground truth "
                "to %s/\n",
                b->base.n, b->query.n, b->base.dim, b->gt.k, dir);
    return rc;
}

/* ---------------------------------------------------------------------------------------------
 * Entry point
 * ------------------------------------------------------------------------------------------- */

static const char summary[] =
    "Recall@k, QPS, latency and memory of Quiver's indexes. Data: --base/--query[/--gt] files "
    "(.fvecs, .bvecs, .npy; ground truth .ivecs or .npy), --fashion-mnist (Debian's "
    "dataset-fashion-mnist: 60,000 base and 10,000 query vectors of 784 raw pixel values), or "
    "--synthetic N,DIM,CLUSTERS,SEED (Gaussian clusters, sigma 0.5, around N(0,1) centres; "
    "10,000 queries drawn the same way unless --limit-query; deterministic for a seed). Without "
    "--gt the exact top-k comes from the flat index. Each index is built once with every core; "
    "then for each search thread count T and each ef (HNSW) / nprobe (IVF), the query set is run "
    "--repeat times over T threads, each thread taking single queries (qv_index_search) from a "
    "shared counter; the best wall-clock QPS (nq / elapsed) is kept with its latency p50/p99. "
    "The flat index is measured in batch mode (qv_index_search_batch with T threads). One JSON "
    "line per point on stdout (fields: index, mode, params, threads, ef|nprobe, build_s, "
    "bytes_per_vector = bytes_ram / count, bytes_per_vector_f32_rerank = bytes_vectors / count, "
    "recall_at_10, recall_at_k, qps, latency_p50_us, latency_p99_us, ...); a table on stderr.";

int qv_bench_ann(int argc, char **argv)
{
    char *base_path = NULL, *query_path = NULL, *gt_path = NULL, *fm_dir = NULL;
    char *metric = NULL, *index_list = NULL, *ef_list = NULL, *nprobe_list = NULL;
    char *threads_list = NULL, *synthetic = NULL, *save_gt = NULL, *export_dir = NULL;
    bool fashion = false;
    uint64_t M = 0, efc = 0, nlist = 0, k = 0, limit_base = 0, limit_query = 0, repeat = 0;
    qv_opt opts[] = {
        {.name = "base",
         .type = QV_OPT_STRING,
         .target = &base_path,
         .help = "base vectors: .fvecs, .bvecs or .npy (float32/float64/uint8, 2-D)"},
        {.name = "query",
         .type = QV_OPT_STRING,
         .target = &query_path,
         .help = "query vectors, same formats as --base"},
        {.name = "gt",
         .type = QV_OPT_STRING,
         .target = &gt_path,
         .help = "ground-truth neighbour ids (.ivecs, or .npy int32/int64); computed with the "
                 "flat index when absent"},
        {.name = "fashion-mnist",
         .type = QV_OPT_BOOL,
         .target = &fashion,
         .def = "false",
         .help = "use Fashion-MNIST (train = base, t10k = queries) instead of --base/--query"},
        {.name = "fashion-mnist-dir",
         .type = QV_OPT_STRING,
         .target = &fm_dir,
         .def = QV_FASHION_MNIST_DIR,
         .help = "where the Fashion-MNIST .gz files are"},
        {.name = "synthetic",
         .type = QV_OPT_STRING,
         .target = &synthetic,
         .help = "N,DIM,CLUSTERS,SEED: seeded Gaussian clusters instead of files"},
        {.name = "metric",
         .type = QV_OPT_ENUM,
         .target = &metric,
         .def = "l2",
         .choices = "l2|ip|cosine",
         .help = "distance"},
        {.name = "index",
         .type = QV_OPT_STRING,
         .target = &index_list,
         .def = "hnsw",
         .help = "comma-separated list of hnsw, hnsw-int8, flat, ivf"},
        {.name = "M",
         .type = QV_OPT_UINT,
         .target = &M,
         .def = "16",
         .min = 4,
         .max = 128,
         .help = "HNSW links per node (layer 0 has 2*M)"},
        {.name = "ef-construction",
         .type = QV_OPT_UINT,
         .target = &efc,
         .def = "200",
         .min = 1,
         .max = 100000,
         .help = "HNSW candidate list while building"},
        {.name = "ef",
         .type = QV_OPT_STRING,
         .target = &ef_list,
         .def = "16,32,64,128,256",
         .help = "comma-separated HNSW search candidate list sizes"},
        {.name = "nlist",
         .type = QV_OPT_UINT,
         .target = &nlist,
         .def = "0",
         .min = 0,
         .max = 65536,
         .help = "IVF cells (0: the index's default)"},
        {.name = "nprobe",
         .type = QV_OPT_STRING,
         .target = &nprobe_list,
         .def = "1,2,4,8,16,32,64",
         .help = "comma-separated IVF cells searched per query"},
        {.name = "threads",
         .type = QV_OPT_STRING,
         .target = &threads_list,
         .def = "1",
         .help = "comma-separated search thread counts (the build always uses every core)"},
        {.name = "k",
         .type = QV_OPT_UINT,
         .target = &k,
         .def = "10",
         .min = 1,
         .max = QV_INDEX_MAX_K,
         .help = "neighbours per query; recall is recall@k"},
        {.name = "limit-base",
         .type = QV_OPT_UINT,
         .target = &limit_base,
         .def = "0",
         .help = "use only the first N base vectors (0: all)"},
        {.name = "limit-query",
         .type = QV_OPT_UINT,
         .target = &limit_query,
         .def = "0",
         .help = "use only the first N queries (0: all)"},
        {.name = "repeat",
         .type = QV_OPT_UINT,
         .target = &repeat,
         .def = "1",
         .min = 1,
         .max = 1000,
         .help = "runs per search point; the best QPS is kept"},
        {.name = "save-gt",
         .type = QV_OPT_STRING,
         .target = &save_gt,
         .help = "write the ground truth used (ids, .ivecs) to FILE"},
        {.name = "export-dir",
         .type = QV_OPT_STRING,
         .target = &export_dir,
         .help = "write base.fvecs, query.fvecs and gt.ivecs (after --limit-*) to DIR and exit"},
        {0},
    };
    qv_config cfg = {
        .program = PROG,
        .summary = summary,
        .env_prefix = NULL,
        .opts = opts,
    };
    qv_status err = {0};
    int exit_code = 2;
    bench b;
    memset(&b, 0, sizeof(b));
    bool kinds[4] = {false, false, false, false};
    int rc = qv_config_parse(&cfg, argc, argv, &err);
    if (rc == QV_CONFIG_EXITED) {
        exit_code = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto out;
    }
    if (cfg.npositional > 0) {
        fprintf(stderr, PROG ": unexpected argument '%s' (try --help)\n", cfg.positional[0]);
        goto out;
    }

    /* Options. */
    b.metric = strcmp(metric, "ip") == 0       ? QV_METRIC_IP
               : strcmp(metric, "cosine") == 0 ? QV_METRIC_COSINE
                                               : QV_METRIC_L2;
    b.metric_name = strcmp(metric, "ip") == 0       ? "ip"
                    : strcmp(metric, "cosine") == 0 ? "cosine"
                                                    : "l2";
    b.k = (size_t)k;
    b.M = (uint32_t)M;
    b.efc = (uint32_t)efc;
    b.nlist = (uint32_t)nlist;
    b.repeat = (uint32_t)repeat;
    b.build_threads = online_cpus();
    b.nef = parse_u32_list(ef_list, b.efs, MAX_LIST, 1, 1000000);
    b.nnprobe = parse_u32_list(nprobe_list, b.nprobes, MAX_LIST, 1, 65536);
    b.nthreads = parse_u32_list(threads_list, b.threads, MAX_LIST, 1, 4096);
    if (b.nef < 0 || b.nnprobe < 0 || b.nthreads < 0) {
        fprintf(stderr,
                PROG ": --ef, --nprobe and --threads take lists like 16,32,64 "
                     "(positive numbers, at most %d)\n",
                MAX_LIST);
        goto out;
    }
    for (char *s = index_list; *s != '\0';) {
        size_t len = strcspn(s, ",");
        int found = -1;
        for (int i = 0; i < 4; i++)
            if (strlen(kind_names[i]) == len && strncmp(s, kind_names[i], len) == 0)
                found = i;
        if (found < 0) {
            fprintf(stderr, PROG ": unknown index '%.*s' in --index (hnsw, hnsw-int8, flat, ivf)\n",
                    (int)len, s);
            goto out;
        }
        kinds[found] = true;
        s += len;
        if (*s == ',')
            s++;
    }
    int nsources = (base_path != NULL || query_path != NULL) + fashion + (synthetic != NULL);
    if (nsources != 1) {
        fprintf(stderr, PROG ": name the data with exactly one of --base/--query, "
                             "--fashion-mnist, --synthetic (try --help)\n");
        goto out;
    }
    if ((base_path != NULL) != (query_path != NULL)) {
        fprintf(stderr, PROG ": --base and --query go together\n");
        goto out;
    }
    if (gt_path != NULL && base_path == NULL) {
        fprintf(stderr, PROG ": --gt needs --base/--query\n");
        goto out;
    }

    /* Data. */
    exit_code = 1;
    if (synthetic != NULL) {
        uint32_t sv[4];
        if (parse_u32_list(synthetic, sv, 4, 0, UINT32_MAX) != 4 || sv[0] == 0 || sv[1] == 0 ||
            sv[1] > QV_INDEX_MAX_DIM || sv[2] == 0) {
            fprintf(stderr,
                    PROG ": --synthetic takes N,DIM,CLUSTERS,SEED (N, DIM, CLUSTERS >= "
                         "1, DIM <= %u)\n",
                    QV_INDEX_MAX_DIM);
            exit_code = 2;
            goto out;
        }
        uint64_t n = limit_base > 0 && limit_base < sv[0] ? limit_base : sv[0];
        size_t nq = limit_query > 0 ? (size_t)limit_query : SYNTH_QUERIES;
        rc = synth_generate(n, sv[1], sv[2], sv[3], nq, &b.base, &b.query, &err);
        snprintf(b.dataset, sizeof(b.dataset), "synthetic-%u-%u-%u-%u", sv[0], sv[1], sv[2], sv[3]);
    } else if (fashion) {
        qv_fashion_mnist fm;
        rc = qv_ds_load_fashion_mnist(fm_dir, &fm, &err);
        if (rc == 0) {
            b.base = fm.train;
            b.query = fm.test;
            fm.train = fm.test = (qv_vecs){0};
            qv_fashion_mnist_free(&fm);
            if (limit_base > 0 && limit_base < b.base.n)
                b.base.n = (size_t)limit_base;
            if (limit_query > 0 && limit_query < b.query.n)
                b.query.n = (size_t)limit_query;
        }
        snprintf(b.dataset, sizeof(b.dataset), "fashion-mnist");
    } else {
        rc = qv_ds_load_vectors(base_path, (size_t)limit_base, &b.base, &err);
        if (rc == 0)
            rc = qv_ds_load_vectors(query_path, (size_t)limit_query, &b.query, &err);
        if (rc == 0 && gt_path != NULL)
            rc = qv_ds_load_ids(gt_path, (size_t)limit_query, &b.gt, &err);
        name_from_path(base_path, b.dataset, sizeof(b.dataset));
    }
    if (rc != 0) {
        fprintf(stderr, PROG ": %s\n", err.msg);
        goto out;
    }
    if (b.base.dim != b.query.dim || b.base.dim > QV_INDEX_MAX_DIM) {
        fprintf(stderr, PROG ": base vectors have dimension %zu, queries %zu\n", b.base.dim,
                b.query.dim);
        goto out;
    }
    if (b.base.n < b.k) {
        fprintf(stderr, PROG ": --k %zu is more than the %zu base vectors\n", b.k, b.base.n);
        goto out;
    }
    if (b.base.n > INT32_MAX) {
        fprintf(stderr, PROG ": more than 2^31-1 base vectors (ids are int32 in .ivecs)\n");
        goto out;
    }
    fprintf(stderr, "%s: %zu base, %zu queries, dim %zu, metric %s, k %zu, kernels %s\n", b.dataset,
            b.base.n, b.query.n, b.base.dim, b.metric_name, b.k, qv_kernels_get()->name);

    /* Ground truth. */
    if (b.gt.ids != NULL) {
        rc = check_gt(&b, &err);
        if (rc == QV_ENOTFOUND) {
            fprintf(stderr,
                    "warning: the ground truth names ids beyond the %zu base vectors "
                    "(--limit-base?); recomputing it\n",
                    b.base.n);
            qv_ids_free(&b.gt);
        } else if (rc != 0) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            goto out;
        }
    }
    if (b.gt.ids == NULL) {
        rc = compute_gt(&b, &err);
        if (rc != 0) {
            fprintf(stderr, PROG ": ground truth: %s\n", err.msg);
            goto out;
        }
    }
    if (!kinds[KIND_FLAT]) { /* keep the ground-truth index only when it is measured */
        qv_index_free(b.flat);
        b.flat = NULL;
    }
    if (save_gt != NULL) {
        rc = qv_ds_write_ivecs(save_gt, b.gt.ids, b.gt.n, b.gt.k, &err);
        if (rc != 0) {
            fprintf(stderr, PROG ": %s\n", err.msg);
            goto out;
        }
    }
    if (export_dir != NULL) {
        rc = export_data(&b, export_dir, &err);
        if (rc != 0)
            fprintf(stderr, PROG ": %s\n", err.msg);
        exit_code = rc == 0 ? 0 : 1;
        goto out;
    }

    /* Measurements. */
    fprintf(stderr, "%-10s %-16s %3s %-11s %8s %9s %8s %11s %9s %9s\n", "index", "params", "T",
            "search", "build_s", "B/vec", "recall", "qps", "p50_us", "p99_us");
    exit_code = 0;
    for (int kd = 0; kd < 4; kd++) {
        if (!kinds[kd])
            continue;
        rc = run_kind(&b, (kind)kd, &err);
        if (rc != 0) {
            fprintf(stderr, PROG ": %s: %s: %s\n", kind_names[kd], qv_strerror(rc), err.msg);
            exit_code = 1;
        }
    }

out:
    qv_index_free(b.flat);
    qv_vecs_free(&b.base);
    qv_vecs_free(&b.query);
    qv_ids_free(&b.gt);
    qv_config_free(&cfg);
    return exit_code;
}
