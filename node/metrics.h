/*
 * node/metrics.h - the node's Prometheus metrics registry.
 *
 * One qv_metrics holds everything a scrape shows:
 *   - RPC metrics fed by qv_metrics_rpc_done() (one call per finished RPC):
 *       quiver_rpc_requests_total{method="...",code="OK"}          counter
 *       quiver_rpc_duration_seconds{method="..."}                   histogram
 *   - named histograms and counters created by modules (qv_metrics_histogram/_counter);
 *   - gauges computed at every scrape by collectors (qv_metrics_add_collector);
 *   - process metrics read from /proc at every scrape: process_resident_memory_bytes,
 *     process_virtual_memory_bytes, process_cpu_seconds_total, process_open_fds,
 *     process_max_fds, process_start_time_seconds.
 *
 * qv_metrics_render() writes all of it in the Prometheus text exposition format 0.0.4: one
 * HELP and one TYPE line per family, a family's samples together, label values escaped,
 * histograms as cumulative _bucket{le="..."} series ending with le="+Inf", then _sum and _count.
 *
 * Names follow Prometheus rules: metric names match [a-zA-Z_:][a-zA-Z0-9_:]*, label names
 * [a-zA-Z_][a-zA-Z0-9_]* and must not start with "__". A label set is written the way it
 * appears between the braces of the exposition format: "" (no labels) or
 * `collection="docs",shard="3"`, values quoted with `\\`, `\"` and `\n` escaped (see
 * qv_metrics_escape_label). Label sets are stored sorted by label name, so the same labels in
 * another order name the same series.
 *
 * Histograms created here and the RPC latency histogram share one bucket layout, from 50 us to
 * 10 s: 0.00005 0.0001 0.00025 0.0005 0.001 0.0025 0.005 0.01 0.025 0.05 0.1 0.25 0.5 1 2.5 5 10.
 *
 * Caveats: series are never deleted (a dropped collection's counters stay until the registry is
 * freed), so label values must come from a bounded set; the RPC table holds at most
 * QV_METRICS_MAX_METHODS methods and counts any further ones under method="other".
 */
#ifndef QV_METRICS_H
#define QV_METRICS_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct qv_metrics qv_metrics;
typedef struct qv_histogram qv_histogram; /* owned by the registry */
typedef struct qv_counter qv_counter;     /* owned by the registry */
typedef struct qv_metrics_writer qv_metrics_writer;

/* Distinct RPC method names tracked before the rest are folded into method="other". */
#define QV_METRICS_MAX_METHODS 128

/* Longest metric name and label set accepted, in bytes. */
#define QV_METRICS_NAME_MAX   200
#define QV_METRICS_LABELS_MAX 1024

/* Creates an empty registry (process metrics need no set-up: they are read at every render).
 * Returns 0, QV_EINVAL (out is NULL) or QV_ERESOURCE (*out is then NULL). */
int qv_metrics_create(qv_metrics **out);

/* Frees the registry and every histogram and counter it handed out. No other call on it may run
 * or follow, and no collector may still be running. NULL is ignored. */
void qv_metrics_free(qv_metrics *m);

/* Records one finished RPC: adds 1 to quiver_rpc_requests_total{method, code} and observes
 * latency_us in quiver_rpc_duration_seconds{method}. `code` is 0 or a negative QV_E* code,
 * rendered as the gRPC code name ("OK", "INVALID_ARGUMENT", ...); anything else counts as
 * "UNKNOWN". `method` is copied on first sight (at most 255 bytes kept; bytes that are not
 * valid UTF-8 become '?'); NULL counts as "unknown".
 * Thread-safe and lock-free once the method is known (an atomic hash-table probe and a few
 * relaxed atomic adds); the first call for a new method takes a mutex, and so does every call
 * for a method folded into "other". Never fails. */
void qv_metrics_rpc_done(qv_metrics *m, const char *method, int code, uint64_t latency_us);

/* Returns the histogram `name` with `labels`, creating it (and its family) on first call; later
 * calls with the same name and labels return the same object, valid until qv_metrics_free. The
 * first call's `help` is the family's HELP text (NULL: ""). Returns NULL for an invalid name or
 * label set, a label named "le", a name that clashes with another family (a family of another
 * type, or one of a histogram's _bucket/_sum/_count series, or a built-in metric), or out of
 * memory. Thread-safe (takes the registry mutex). */
qv_histogram *qv_metrics_histogram(qv_metrics *m, const char *name, const char *help,
                                   const char *labels);

/* Adds one observation in seconds. NaN is ignored. Thread-safe and lock-free. NULL is ignored,
 * so a failed qv_metrics_histogram() needs no special case at the call sites. */
void qv_histogram_observe(qv_histogram *h, double seconds);

/* Like qv_metrics_histogram, for a counter (TYPE counter; by convention its name ends with
 * "_total"). */
qv_counter *qv_metrics_counter(qv_metrics *m, const char *name, const char *help,
                               const char *labels);

/* Adds n to the counter. Thread-safe and lock-free. NULL is ignored. */
void qv_counter_add(qv_counter *c, uint64_t n);

/* Current value of a counter (for tests and for modules that report their own totals). */
uint64_t qv_counter_value(const qv_counter *c);

/* A collector runs during every qv_metrics_render() to emit gauges computed on the fly (points
 * per collection, index memory) through qv_metrics_gauge(). Collectors run one at a time on the
 * rendering thread, in the order they were added, while a registry lock is held: they may create
 * and update histograms and counters, but must not call qv_metrics_render,
 * qv_metrics_add_collector or qv_metrics_remove_collector on the same registry (deadlock). */
typedef void (*qv_metrics_collect_fn)(qv_metrics_writer *w, void *user);

/* Adds a collector. Returns 0, QV_EINVAL (NULL fn), QV_ERESOURCE. The same pair may be added
 * twice; it then runs twice. */
int qv_metrics_add_collector(qv_metrics *m, qv_metrics_collect_fn fn, void *user);

/* Removes one registration of (fn, user), if any. Once it returns the collector is not running
 * and will not run again, so `user` may be freed. Thread-safe; not from a collector. */
void qv_metrics_remove_collector(qv_metrics *m, qv_metrics_collect_fn fn, void *user);

/* Emits one gauge sample from a collector; `w` is valid only during the collector call. Samples
 * of the same name from any collectors are grouped into one family whose HELP is the first
 * sample's. A sample with an invalid name or label set, a name that clashes with a registered
 * family, a second sample with the same name and labels, or one emitted after memory ran out is
 * dropped (and counted in quiver_metrics_dropped_samples_total). */
void qv_metrics_gauge(qv_metrics_writer *w, const char *name, const char *help, const char *labels,
                      double value);

/* Renders the whole registry in the text exposition format 0.0.4 (Content-Type
 * "text/plain; version=0.0.4; charset=utf-8"). On success *out is a malloc'd NUL-terminated
 * string of *len bytes (not counting the NUL) that the caller frees with free(). Returns 0 or
 * QV_ERESOURCE. Thread-safe; concurrent renders run one at a time. */
int qv_metrics_render(qv_metrics *m, char **out, size_t *len);

/* Writes `value` escaped as a label value (`\` -> `\\`, `"` -> `\"`, newline -> `\n`) into dst,
 * without the quotes, NUL-terminated. Returns the length of the full escaped string; when that
 * is >= cap, the output was truncated (never inside an escape) and the label set should not be
 * used. Usage: build `collection="<escaped>"` for qv_metrics_counter() and friends. */
size_t qv_metrics_escape_label(char *dst, size_t cap, const char *value);

#ifdef __cplusplus
}
#endif

#endif /* QV_METRICS_H */
