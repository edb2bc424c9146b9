/*
 * quiverctl import and search (quiver.v1.Points), see ctl.h. Files are read through the
 * streaming readers of import.h, one batch at a time.
 *
 * Map: import (options, the progress line, the batch loop and its summary) / search (the query
 * vector from --vector, --vector-file or --id, the result table).
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/ctl.h"
#include "cli/import.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define METRICS "l2|cosine|dot"
#define INDEXES "hnsw|hnsw-int8|flat|ivf-flat|ivf-pq"
#define FORMATS "auto|fvecs|bvecs|npy|hdf5|jsonl|csv|idx"

/* Vector bytes one Upsert may carry: the batch size is lowered to fit (messages are limited to
 * 64 MiB, and payloads come on top). */
#define BATCH_VECTOR_BYTES (32u << 20)

/* A non-tty progress line every PROGRESS_PLAIN_MS, a redraw of the bar at most every
 * PROGRESS_TTY_MS. */
#define PROGRESS_PLAIN_MS 5000
#define PROGRESS_TTY_MS   100

/* Options both commands read files with: --format, --dataset. */
static size_t file_opts(qv_opt *o, cmdopts *v)
{
    size_t n = 0;
    o[n++] = (qv_opt){.name = "format",
                      .type = QV_OPT_ENUM,
                      .target = &v->format,
                      .def = "auto",
                      .choices = FORMATS,
                      .help = "file format; auto: from the file name (.fvecs, .bvecs, .npy, "
                              ".h5/.hdf5, .jsonl, .csv, *-ubyte[.gz])"};
    o[n++] = (qv_opt){.name = "dataset",
                      .type = QV_OPT_STRING,
                      .target = &v->dataset,
                      .def = "train",
                      .help = "HDF5: the dataset to read (ann-benchmarks files: train or test)"};
    return n;
}

/* Opens `path` with the file options; failures are printed. A file that is no file or whose
 * format cannot be told (QV_EINVAL) is a usage error; a missing or malformed one is not. */
static int open_file(const char *path, const cmdopts *o, const char *cmd_name, qv_import_reader **r)
{
    qv_import_format format = QV_IMPORT_AUTO;
    qv_import_format_parse(o->format, &format); /* an enum option: already one of FORMATS */
    qv_import_opts io = {
        .dataset = o->dataset,
        .start_id = o->start_id,
        .labels_path = o->labels,
        .no_labels = !o->labels_payload,
    };
    qv_status err = qv_status_ok();
    int rc = qv_import_open(path, format, &io, r, &err);
    if (rc == QV_EINVAL)
        return ctl_usage_error(cmd_name, "%s", err.msg);
    if (rc != 0) {
        fprintf(stderr, "quiverctl: %s\n", err.msg);
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

/* ---- import -----------------------------------------------------------------------------------
 */

static size_t import_opts(qv_opt *o, cmdopts *v)
{
    size_t n = 0;
    o[n++] = (qv_opt){.name = "collection",
                      .type = QV_OPT_STRING,
                      .target = &v->collection,
                      .help = "the collection to write into (required)"};
    n += file_opts(o + n, v);
    o[n++] = (qv_opt){.name = "batch",
                      .type = QV_OPT_UINT,
                      .target = &v->batch,
                      .def = "1000",
                      .help = "points per Upsert call (lowered so that one call carries at most "
                              "32 MiB of vectors)",
                      .min = 1,
                      .max = 10000};
    o[n++] = (qv_opt){.name = "start-id",
                      .type = QV_OPT_UINT,
                      .target = &v->start_id,
                      .def = "0",
                      .help = "id of the file's first row when the file has no ids (row i gets "
                              "start-id + i)"};
    o[n++] = (qv_opt){.name = "limit",
                      .type = QV_OPT_UINT,
                      .target = &v->limit,
                      .def = "0",
                      .help = "import at most this many points (0: all)"};
    o[n++] = (qv_opt){.name = "create",
                      .type = QV_OPT_BOOL,
                      .target = &v->create,
                      .def = "false",
                      .help = "create the collection when it does not exist, with the file's "
                              "dimension, --metric and --index"};
    o[n++] = (qv_opt){.name = "metric",
                      .type = QV_OPT_ENUM,
                      .target = &v->metric,
                      .choices = METRICS,
                      .help = "with --create: the metric (default: the HDF5 file's \"distance\" "
                              "attribute, when it has one)"};
    o[n++] = (qv_opt){.name = "index",
                      .type = QV_OPT_ENUM,
                      .target = &v->index,
                      .choices = INDEXES,
                      .help = "with --create: the index type (default: hnsw)"};
    o[n++] = (qv_opt){.name = "wait",
                      .type = QV_OPT_BOOL,
                      .target = &v->wait,
                      .def = "false",
                      .help = "each Upsert returns only once searches see its points"};
    o[n++] = (qv_opt){.name = "labels-file",
                      .type = QV_OPT_STRING,
                      .target = &v->labels,
                      .help = "IDX: the labels file (default: the images file's sibling, "
                              "train-images-idx3-ubyte.gz -> train-labels-idx1-ubyte.gz)"};
    o[n++] = (qv_opt){.name = "labels",
                      .type = QV_OPT_BOOL,
                      .target = &v->labels_payload,
                      .def = "true",
                      .help = "IDX: give each point its label as payload {\"label\": N}; "
                              "--no-labels for none"};
    o[n++] = (qv_opt){.name = "progress",
                      .type = QV_OPT_BOOL,
                      .target = &v->progress,
                      .def = "true",
                      .help = "show progress on stderr (a bar on a terminal, else a line every "
                              "5 s); --no-progress for none"};
    return n;
}

static volatile sig_atomic_t interrupted;

static void on_sigint(int sig)
{
    (void)sig;
    interrupted = 1;
}

typedef struct progress {
    bool on, tty;
    uint64_t start_ns, last_ns;
    bool drawn;
} progress;

/* Fraction done (0..1), or -1 when unknown. */
static double fraction(const qv_import_reader *r, uint64_t done, uint64_t limit)
{
    uint64_t total = 0;
    bool known = qv_import_total_rows(r, &total);
    if (limit > 0 && (!known || limit < total)) {
        total = limit;
        known = true;
    }
    if (known)
        return total > 0 ? (double)done / (double)total : 1.0;
    uint64_t bdone, btotal;
    qv_import_bytes(r, &bdone, &btotal);
    return btotal > 0 ? (double)bdone / (double)btotal : -1.0;
}

static void progress_show(progress *p, const qv_import_reader *r, uint64_t done, uint64_t limit,
                          bool last)
{
    if (!p->on)
        return;
    uint64_t now = qv_now_ns();
    uint64_t every = (p->tty ? PROGRESS_TTY_MS : PROGRESS_PLAIN_MS) * 1000000ull;
    if (!last && now - p->last_ns < every)
        return;
    p->last_ns = now;
    double secs = (double)(now - p->start_ns) / 1e9;
    double rate = secs > 0 ? (double)done / secs : 0.0;
    double frac = fraction(r, done, limit);
    if (!p->tty) {
        if (last)
            return; /* the summary follows */
        if (frac >= 0)
            fprintf(stderr, "quiverctl import: %" PRIu64 " points (%.0f%%), %.0f points/s\n", done,
                    frac * 100.0, rate);
        else
            fprintf(stderr, "quiverctl import: %" PRIu64 " points, %.0f points/s\n", done, rate);
        return;
    }
    if (last) {
        if (p->drawn)
            fputs("\r\x1b[K", stderr); /* the summary takes the bar's place */
        return;
    }
    char bar[31];
    int width = (int)sizeof(bar) - 1;
    int fill = frac >= 0 ? (int)(fmin(frac, 1.0) * width) : 0;
    for (int i = 0; i < width; i++)
        bar[i] = i < fill ? '#' : '.';
    bar[width] = '\0';
    char eta[32] = "";
    if (frac > 0 && frac < 1 && secs > 1) {
        char d[24];
        snprintf(eta, sizeof(eta), "  ETA %s",
                 ctl_fmt_duration((uint64_t)(secs * (1 - frac) / frac * 1000), d, sizeof(d)));
    }
    if (frac >= 0)
        fprintf(stderr, "\r[%s] %5.1f%%  %" PRIu64 " points  %.0f points/s%s\x1b[K", bar,
                frac * 100, done, rate, eta);
    else
        fprintf(stderr, "\r%" PRIu64 " points  %.0f points/s\x1b[K", done, rate);
    p->drawn = true;
}

/* The summary: a line on stdout, or a JSON document; error is NULL on success. */
static void import_summary(const globals *g, const cmdopts *o, const char *path,
                           const qv_import_reader *r, bool created, uint64_t points,
                           uint64_t batches, size_t batch, uint64_t start_ns,
                           const qv_status *error)
{
    double secs = (double)(qv_now_ns() - start_ns) / 1e9;
    double rate = secs > 0 ? (double)points / secs : 0.0;
    if (!g->json) {
        if (error == NULL)
            printf("imported %" PRIu64 " points in %.1f s (%.0f points/s)\n", points, secs, rate);
        return;
    }
    bool first = true;
    FILE *out = stdout;
    fputc('{', out);
    ctl_json_kv_bool(out, &first, "ok", error == NULL);
    ctl_json_kv_str(out, &first, "collection", o->collection);
    ctl_json_kv_str(out, &first, "file", path);
    ctl_json_kv_str(out, &first, "format",
                    r != NULL ? qv_import_format_name(qv_import_format_of(r)) : o->format);
    ctl_json_kv_u64(out, &first, "dimension", r != NULL ? qv_import_dim(r) : 0);
    ctl_json_kv_bool(out, &first, "created", created);
    ctl_json_kv_u64(out, &first, "points", points);
    ctl_json_kv_u64(out, &first, "batches", batches);
    ctl_json_kv_u64(out, &first, "batch_size", batch);
    ctl_json_kv_float(out, &first, "seconds", secs);
    ctl_json_kv_float(out, &first, "points_per_second", rate);
    if (error != NULL) {
        ctl_json_kv_str(out, &first, "error", error->msg);
        ctl_json_kv_str(out, &first, "code", qv_strerror(error->code));
    }
    fputs("}\n", out);
}

/* Makes sure the collection exists with the file's dimension; creates it with --create. */
static int import_target(qv_client *c, const cmdopts *o, const char *path,
                         const qv_import_reader *r, bool *created, qv_status *err)
{
    size_t dim = qv_import_dim(r);
    qv_collection_info ci;
    int rc = qv_client_collection_describe(c, o->collection, &ci, err);
    if (rc == 0) {
        *err = qv_status_ok();
        if (ci.dimension != dim)
            *err = qv_status_make(QV_EINVAL,
                                  "collection %s has dimension %" PRIu32
                                  ", but %s holds vectors of dimension %zu",
                                  o->collection, ci.dimension, path, dim);
        else if (o->metric != NULL && strcmp(o->metric, ci.metric) != 0)
            *err = qv_status_make(QV_EINVAL, "collection %s exists with metric %s, not %s",
                                  o->collection, ci.metric, o->metric);
        else if (o->index != NULL && strcmp(o->index, ci.index) != 0)
            *err = qv_status_make(QV_EINVAL, "collection %s exists with index %s, not %s",
                                  o->collection, ci.index, o->index);
        qv_collection_info_free(&ci);
        return err->code;
    }
    if (rc != QV_ENOTFOUND || !o->create) {
        if (rc == QV_ENOTFOUND) {
            size_t len = strlen(err->msg);
            snprintf(err->msg + len, sizeof(err->msg) - len,
                     "; create it first, or pass --create --metric %s", METRICS);
        }
        return rc;
    }
    const char *metric = o->metric != NULL ? o->metric : qv_import_metric_hint(r);
    qv_collection_spec spec = {
        .name = o->collection,
        .dimension = (uint32_t)dim,
        .metric = metric,
        .index = o->index,
        .if_not_exists = true, /* another importer may have just created it */
    };
    rc = qv_client_collection_create(c, &spec, NULL, created, err);
    return rc;
}

static int cmd_import(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos)
{
    const char *me = ctl_cmd_import.name;
    const char *path = pos[0];
    if (o->collection == NULL)
        return ctl_usage_error(me, "--collection is required");
    if (!o->create && (o->metric != NULL || o->index != NULL))
        return ctl_usage_error(me, "--metric and --index go with --create");
    qv_import_reader *r = NULL;
    int code = open_file(path, o, me, &r);
    if (code != EXIT_OK)
        return code;
    if (o->create && o->metric == NULL && qv_import_metric_hint(r) == NULL) {
        qv_import_close(r);
        return ctl_usage_error(me, "--create needs --metric (%s)", METRICS);
    }

    uint64_t start_ns = qv_now_ns();
    size_t dim = qv_import_dim(r);
    size_t batch = (size_t)o->batch;
    size_t fit = BATCH_VECTOR_BYTES / (dim * sizeof(float));
    if (batch > fit)
        batch = fit > 0 ? fit : 1;
    bool created = false;
    uint64_t points = 0, batches = 0;
    qv_point *pts = NULL;
    qv_status err = qv_status_ok();
    progress prog = {.on = o->progress, .tty = isatty(STDERR_FILENO) == 1, .start_ns = start_ns};
    prog.last_ns = start_ns;

    int rc = import_target(c, o, path, r, &created, &err);
    if (rc != 0) {
        ctl_print_failure(&err);
        code = EXIT_FAIL;
        goto out;
    }
    if (created && !g->json)
        fprintf(stderr, "quiverctl import: created collection %s (dimension %zu)\n", o->collection,
                dim);
    pts = calloc(batch, sizeof(*pts));
    if (pts == NULL) {
        err = qv_status_make(QV_ERESOURCE, "out of memory");
        ctl_print_failure(&err);
        code = EXIT_FAIL;
        goto out;
    }

    /* Ctrl-C stops after the batch in flight (and says how far it got); a second one kills. */
    struct sigaction sa, old_sa;
    memset(&sa, 0, sizeof(sa));
    sa.sa_handler = on_sigint;
    sa.sa_flags = SA_RESETHAND;
    sigemptyset(&sa.sa_mask);
    interrupted = 0;
    sigaction(SIGINT, &sa, &old_sa);

    for (;;) {
        size_t want = batch;
        if (o->limit > 0 && o->limit - points < want)
            want = (size_t)(o->limit - points);
        if (want == 0 || interrupted)
            break;
        qv_import_batch b;
        if (qv_import_next(r, want, &b, &err) != 0) {
            progress_show(&prog, r, points, o->limit, true);
            fprintf(stderr, "quiverctl: %s; %" PRIu64 " points were imported before it\n", err.msg,
                    points);
            code = EXIT_FAIL;
            break;
        }
        if (b.n == 0)
            break;
        for (size_t i = 0; i < b.n; i++)
            pts[i] = (qv_point){
                .id = b.ids[i],
                .vector = b.vectors + i * b.dim,
                .dim = (uint32_t)b.dim,
                .payload_json = b.payloads != NULL ? b.payloads[i] : NULL,
            };
        if (qv_client_upsert(c, o->collection, pts, b.n, o->wait, NULL, &err) != 0) {
            progress_show(&prog, r, points, o->limit, true);
            fprintf(stderr,
                    "quiverctl: import into %s failed at rows %" PRIu64 "..%" PRIu64
                    " of %s: %s (%s); %" PRIu64 " points were imported before it\n",
                    o->collection, b.first_row, b.first_row + b.n - 1, path, err.msg,
                    qv_strerror(err.code), points);
            code = EXIT_FAIL;
            break;
        }
        points += b.n;
        batches++;
        progress_show(&prog, r, points, o->limit, false);
    }
    sigaction(SIGINT, &old_sa, NULL);
    if (code == EXIT_OK && interrupted) {
        progress_show(&prog, r, points, o->limit, true);
        err = qv_status_make(QV_ECANCELLED, "interrupted");
        fprintf(stderr, "quiverctl: interrupted; %" PRIu64 " points were imported\n", points);
        code = EXIT_FAIL;
    }
    if (code == EXIT_OK)
        progress_show(&prog, r, points, o->limit, true);
    import_summary(g, o, path, r, created, points, batches, batch, start_ns,
                   code == EXIT_OK ? NULL : &err);
out:
    free(pts);
    qv_import_close(r);
    return code;
}

const command ctl_cmd_import = {
    "import",
    "FILE",
    1,
    1,
    "stream a vector file into a collection",
    "Reads FILE in batches (never whole) and writes them with quiver.v1.Points/Upsert into\n"
    "--collection, which must exist with the file's dimension (or pass --create --metric M).\n"
    "Formats, by file name or --format:\n"
    "  fvecs, bvecs    TEXMEX rows ([int32 dim][dim x float32 | uint8]); ids start-id + row\n"
    "  npy             a 2-D C-order array of float32, float64, uint8 or int8\n"
    "  hdf5            ann-benchmarks files: --dataset train (default) or test; --create takes\n"
    "                  the metric from the file's \"distance\" attribute\n"
    "  jsonl           one object per line: {\"id\": 7 or \"<uuid>\", \"vector\": [...],\n"
    "                  \"payload\": {...}}; id optional (then start-id + row)\n"
    "  csv             a header row; column id (optional), the vector as v0..v{d-1} or one column\n"
    "                  vector (\"[1, 2]\" or \"1 2\"); every other column is a payload field\n"
    "                  (integer, double, true/false, else string; empty: left out)\n"
    "  idx             MNIST / Fashion-MNIST images (gzip or not); the sibling labels file gives\n"
    "                  each point the payload {\"label\": N}\n"
    "Progress goes to stderr; at the end \"imported N points in S s (P points/s)\" (with --json a\n"
    "summary document). A bad row or a failed batch stops the import with the file's or the\n"
    "server's message and the number of points imported before it (exit 1); upserts are\n"
    "idempotent, so running the same import again is safe. Ctrl-C stops after the batch in\n"
    "flight.\n"
    "\n"
    "  quiverctl import --collection fashion --create --metric l2 \\\n"
    "      /usr/share/datasets/fashion-mnist/train-images-idx3-ubyte.gz\n"
    "  quiverctl import --collection sift --create sift-128-euclidean.hdf5 --batch 2000\n",
    import_opts,
    cmd_import};

/* ---- search -----------------------------------------------------------------------------------
 */

static size_t search_opts(qv_opt *o, cmdopts *v)
{
    size_t n = 0;
    o[n++] = (qv_opt){.name = "collection",
                      .type = QV_OPT_STRING,
                      .target = &v->collection,
                      .help = "the collection to search (required)"};
    o[n++] = (qv_opt){.name = "vector",
                      .type = QV_OPT_STRING,
                      .target = &v->vector,
                      .help = "the query: \"[0.1, 0.2, ...]\" or \"0.1 0.2 ...\""};
    o[n++] = (qv_opt){.name = "vector-file",
                      .type = QV_OPT_STRING,
                      .target = &v->vector_file,
                      .help = "the query is row --row of this file (any import format)"};
    o[n++] = (qv_opt){.name = "row",
                      .type = QV_OPT_UINT,
                      .target = &v->row,
                      .def = "0",
                      .help = "with --vector-file: the row, counted from 0"};
    n += file_opts(o + n, v);
    o[n++] = (qv_opt){.name = "id",
                      .type = QV_OPT_STRING,
                      .target = &v->id,
                      .help = "the query is the vector of this point (an integer or a UUID)"};
    o[n++] = (qv_opt){.name = "k",
                      .type = QV_OPT_UINT,
                      .target = &v->k,
                      .def = "10",
                      .help = "number of nearest neighbours",
                      .min = 1,
                      .max = 10000};
    o[n++] = (qv_opt){.name = "filter",
                      .type = QV_OPT_STRING,
                      .target = &v->filter,
                      .help = "only points whose payload passes it, e.g. \"label = 3 and price < "
                              "10.5\""};
    o[n++] = (qv_opt){.name = "ef",
                      .type = QV_OPT_UINT,
                      .target = &v->ef,
                      .help = "HNSW candidate list size (default: the collection's ef_search)",
                      .min = 1,
                      .max = 100000};
    o[n++] = (qv_opt){.name = "exact",
                      .type = QV_OPT_BOOL,
                      .target = &v->exact,
                      .def = "false",
                      .help = "scan exactly instead of using the index"};
    o[n++] = (qv_opt){.name = "with-payload",
                      .type = QV_OPT_BOOL,
                      .target = &v->with_payload,
                      .def = "false",
                      .help = "also fetch and print each hit's payload"};
    return n;
}

/* Row o->row of o->vector_file: *vec malloc'ed, *dim its length. Failures are printed. */
static int vector_from_file(const cmdopts *o, float **vec, size_t *dim)
{
    qv_import_reader *r = NULL;
    int code = open_file(o->vector_file, o, ctl_cmd_search.name, &r);
    if (code != EXIT_OK)
        return code;
    qv_status err = qv_status_ok();
    qv_import_batch b;
    if (qv_import_skip(r, o->row, &err) != 0 || qv_import_next(r, 1, &b, &err) != 0) {
        fprintf(stderr, "quiverctl: %s\n", err.msg);
        code = EXIT_FAIL;
        goto out;
    }
    if (b.n == 0) {
        fprintf(stderr,
                "quiverctl: %s: row %" PRIu64 " is past the end (the file has %" PRIu64 " rows)\n",
                o->vector_file, o->row, o->row);
        code = EXIT_FAIL;
        goto out;
    }
    *vec = malloc(b.dim * sizeof(float));
    if (*vec == NULL) {
        fprintf(stderr, "quiverctl: out of memory\n");
        code = EXIT_FAIL;
        goto out;
    }
    memcpy(*vec, b.vectors, b.dim * sizeof(float));
    *dim = b.dim;
out:
    qv_import_close(r);
    return code;
}

/* The stored vector of point o->id. Failures are printed. */
static int vector_of_point(qv_client *c, const cmdopts *o, float **vec, size_t *dim)
{
    qv_point_id id;
    qv_status err = qv_status_ok();
    if (qv_point_id_parse(o->id, &id, &err) != 0)
        return ctl_usage_error(ctl_cmd_search.name, "--id: %s", err.msg);
    qv_search_result res;
    if (qv_client_get(c, o->collection, &id, 1, false, true, &res, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    int code = EXIT_OK;
    char buf[48];
    if (res.n == 0 || res.points[0].vector == NULL || res.points[0].dim == 0) {
        err = qv_status_make(QV_ENOTFOUND, "point %s not found in collection %s",
                             qv_point_id_format(&id, buf, sizeof(buf)), o->collection);
        ctl_print_failure(&err);
        code = EXIT_FAIL;
    } else if ((*vec = malloc(res.points[0].dim * sizeof(float))) == NULL) {
        fprintf(stderr, "quiverctl: out of memory\n");
        code = EXIT_FAIL;
    } else {
        memcpy(*vec, res.points[0].vector, res.points[0].dim * sizeof(float));
        *dim = res.points[0].dim;
    }
    qv_search_result_free(&res);
    return code;
}

/* A payload for the table: at most PAYLOAD_CELL bytes, cut at a character boundary with "...". */
#define PAYLOAD_CELL 160
static const char *payload_cell(const char *json, char *buf, size_t cap)
{
    size_t len = strlen(json);
    if (len <= PAYLOAD_CELL || cap < PAYLOAD_CELL + 4)
        return json;
    size_t cut = PAYLOAD_CELL - 3;
    while (cut > 0 && ((unsigned char)json[cut] & 0xC0) == 0x80)
        cut--; /* not inside a UTF-8 sequence */
    memcpy(buf, json, cut);
    memcpy(buf + cut, "...", 4);
    return buf;
}

static void search_json(const cmdopts *o, const qv_search_result *res)
{
    FILE *out = stdout;
    bool first = true;
    fputc('{', out);
    ctl_json_kv_str(out, &first, "collection", o->collection);
    ctl_json_kv_u64(out, &first, "took_us", res->took_us);
    ctl_json_kv_bool(out, &first, "partial", res->partial);
    fputs(",\"results\":[", out);
    for (size_t i = 0; i < res->n; i++) {
        const qv_scored_point *p = &res->points[i];
        bool f = true;
        fputs(i > 0 ? ",{" : "{", out);
        ctl_json_kv_u64(out, &f, "rank", i + 1);
        fputs(",\"id\":", out);
        ctl_json_point_id(out, &p->id);
        ctl_json_kv_float(out, &f, "distance", p->distance);
        if (o->with_payload) {
            /* The SDK hands payloads over as JSON object text it wrote itself. */
            fputs(",\"payload\":", out);
            fputs(p->payload_json != NULL && p->payload_json[0] != '\0' ? p->payload_json : "null",
                  out);
        }
        fputc('}', out);
    }
    fputs("]}\n", out);
}

static int cmd_search(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos)
{
    const char *me = ctl_cmd_search.name;
    if (o->collection == NULL)
        return ctl_usage_error(me, "--collection is required");
    int sources = (o->vector != NULL) + (o->vector_file != NULL) + (o->id != NULL);
    if (sources != 1)
        return ctl_usage_error(me, "give exactly one of --vector, --vector-file and --id");
    if (o->row != 0 && o->vector_file == NULL)
        return ctl_usage_error(me, "--row goes with --vector-file");
    float *vec = NULL;
    size_t dim = 0;
    int code = EXIT_OK;
    if (o->vector != NULL) {
        qv_status perr = qv_status_ok();
        if (qv_import_parse_vector(o->vector, &vec, &dim, &perr) != 0)
            return ctl_usage_error(me, "--vector: %s", perr.msg);
    } else if (o->vector_file != NULL) {
        code = vector_from_file(o, &vec, &dim);
    } else {
        code = vector_of_point(c, o, &vec, &dim);
    }
    if (code != EXIT_OK)
        return code;

    qv_search_opts so = {
        .k = (uint32_t)o->k,
        .filter_text = o->filter,
        .ef = (uint32_t)o->ef,
        .exact = o->exact,
        .with_payload = o->with_payload,
    };
    qv_search_result res;
    qv_status err = qv_status_ok();
    if (qv_client_search(c, o->collection, vec, (uint32_t)dim, &so, &res, &err) != 0) {
        ctl_print_failure(&err);
        free(vec);
        return EXIT_FAIL;
    }
    free(vec);
    if (g->json) {
        search_json(o, &res);
    } else {
        ctl_table t = {.ncols = o->with_payload ? 4 : 3};
        ctl_table_add(&t, "RANK");
        ctl_table_add(&t, "ID");
        ctl_table_add(&t, "DISTANCE");
        if (o->with_payload)
            ctl_table_add(&t, "PAYLOAD");
        for (size_t i = 0; i < res.n; i++) {
            const qv_scored_point *p = &res.points[i];
            char id[48];
            ctl_table_add(&t, "%zu", i + 1);
            ctl_table_add(&t, "%s", qv_point_id_format(&p->id, id, sizeof(id)));
            ctl_table_add(&t, "%.6g", (double)p->distance);
            char cell[PAYLOAD_CELL + 4];
            if (o->with_payload)
                ctl_table_add(&t, "%s",
                              p->payload_json != NULL
                                  ? payload_cell(p->payload_json, cell, sizeof(cell))
                                  : "");
        }
        code = ctl_table_finish(&t);
        if (res.partial)
            fprintf(stderr, "quiverctl: partial result: some shards did not answer in time\n");
    }
    qv_search_result_free(&res);
    return code;
}

const command ctl_cmd_search = {
    "search",
    "",
    0,
    0,
    "k nearest neighbours of a vector, a file row or a stored point",
    "Searches --collection (quiver.v1.Points/Search) for the --k points nearest the query and\n"
    "prints RANK, ID, DISTANCE (smaller is closer) and, with --with-payload, PAYLOAD. The query\n"
    "is one of:\n"
    "  --vector \"[0.1, 0.2, ...]\"     numbers separated by commas and/or spaces\n"
    "  --vector-file FILE [--row i]   row i (from 0) of a file in any import format\n"
    "  --id ID                        the stored vector of point ID (the point itself is\n"
    "                                 usually the first hit)\n"
    "--filter restricts the hits to points whose payload passes a text filter:\n"
    "  field op literal (op: = != < <= > >=), field [not] in [a, b], field is [not] null,\n"
    "  combined with and, or, not and parentheses; e.g. \"label = 3 and price < 10.5\".\n"
    "--ef trades speed for recall on HNSW indexes; --exact scans every point.\n"
    "With --json: {\"collection\", \"took_us\", \"partial\", \"results\": [{\"rank\", \"id\",\n"
    "\"distance\", \"payload\"}]} (ids are numbers, or strings for UUIDs).\n"
    "\n"
    "  quiverctl search --collection fashion --id 42 --k 5 --filter \"label = 3\" --with-payload\n",
    search_opts,
    cmd_search};
