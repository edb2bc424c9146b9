/*
 * Tests for node/metrics.c: the Prometheus registry and its text exposition.
 *
 * Every render is checked line by line by check_exposition(): HELP then TYPE exactly once per
 * family, every sample inside its own family's block (families never interleave), label sets
 * well formed, values parseable, and each histogram series with strictly rising le bounds,
 * non-decreasing cumulative counts, a final le="+Inf" bucket equal to its _count. The other tests
 * then look at exact sample values. Tests end with an explicit LeakSanitizer check, since
 * Criterion reports a test that leaks as passing.
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "node/metrics.h"

#include <fcntl.h>
#include <math.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

/* ---- exposition parsing ---------------------------------------------------------------------- */

#define MAX_LINES    4096
#define MAX_FAMILIES 256

typedef struct expo {
    char *text;
    char *lines[MAX_LINES];
    size_t n;
} expo;

static void expo_free(expo *e)
{
    free(e->text);
    e->text = NULL;
    e->n = 0;
}

static bool is_name_char(char c, bool first)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_' || c == ':' ||
           (!first && c >= '0' && c <= '9');
}

/* Parses a value as Prometheus writes it. */
static bool parse_value(const char *s, double *out)
{
    if (strcmp(s, "+Inf") == 0) {
        *out = INFINITY;
        return true;
    }
    if (strcmp(s, "-Inf") == 0) {
        *out = -INFINITY;
        return true;
    }
    if (strcmp(s, "NaN") == 0) {
        *out = NAN;
        return true;
    }
    char *end;
    *out = strtod(s, &end);
    return end != s && *end == '\0';
}

/* A parsed sample line: name, the label set text without braces, the `le` value if any (copied,
 * unescaped) and the label set without `le` (to tell histogram series apart). */
typedef struct sample {
    char name[256];
    char labels[1024];
    char labels_no_le[1024];
    char le[512];
    bool has_le;
    double value;
} sample;

static bool parse_sample(const char *line, sample *s)
{
    memset(s, 0, sizeof(*s));
    const char *p = line;
    size_t n = 0;
    if (!is_name_char(*p, true))
        return false;
    while (is_name_char(*p, false) && n + 1 < sizeof(s->name))
        s->name[n++] = *p++;
    if (*p == '{') {
        const char *start = ++p;
        size_t nl = 0;
        while (*p != '}') {
            const char *pair = p;
            if (!is_name_char(*p, true) || *p == ':')
                return false;
            while (is_name_char(*p, false) && *p != ':')
                p++;
            size_t name_len = (size_t)(p - pair);
            if (*p++ != '=' || *p++ != '"')
                return false;
            char val[512];
            size_t vl = 0;
            while (*p != '"') {
                if (*p == '\0' || *p == '\n')
                    return false;
                char c = *p++;
                if (c == '\\') {
                    c = *p++;
                    if (c == 'n')
                        c = '\n';
                    else if (c != '\\' && c != '"')
                        return false;
                }
                if (vl + 1 < sizeof(val))
                    val[vl++] = c;
            }
            val[vl] = '\0';
            p++;
            bool is_le = name_len == 2 && memcmp(pair, "le", 2) == 0;
            if (is_le) {
                if (s->has_le)
                    return false;
                s->has_le = true;
                snprintf(s->le, sizeof(s->le), "%s", val);
            } else {
                size_t len = (size_t)(p - pair);
                if (nl + len + 2 >= sizeof(s->labels_no_le))
                    return false;
                if (nl > 0)
                    s->labels_no_le[nl++] = ',';
                memcpy(s->labels_no_le + nl, pair, len);
                nl += len;
                s->labels_no_le[nl] = '\0';
            }
            if (*p == ',')
                p++;
            else if (*p != '}')
                return false;
        }
        size_t ll = (size_t)(p - start);
        if (ll >= sizeof(s->labels))
            return false;
        memcpy(s->labels, start, ll);
        p++;
    }
    if (*p++ != ' ')
        return false;
    return parse_value(p, &s->value);
}

typedef struct family_seen {
    char name[256];
    char type[32];
} family_seen;

/* The checks every render must pass; see the comment at the top. */
static void check_exposition(const expo *e)
{
    static family_seen fams[MAX_FAMILIES];
    size_t nf = 0;
    const family_seen *cur = NULL;
    /* histogram series state */
    char hist_key[1300] = "";
    double prev_le = -INFINITY, prev_count = -1, inf_count = -1;
    bool saw_inf = true;

    for (size_t i = 0; i < e->n; i++) {
        const char *l = e->lines[i];
        cr_assert(l[0] != '\0', "empty line %zu", i);
        if (strncmp(l, "# HELP ", 7) == 0) {
            cr_assert(saw_inf, "histogram series before line %zu lacks le=\"+Inf\"", i);
            char name[256];
            cr_assert_eq(sscanf(l + 7, "%255s", name), 1, "line %zu: %s", i, l);
            for (size_t f = 0; f < nf; f++)
                cr_assert(strcmp(fams[f].name, name) != 0, "second HELP for %s at line %zu", name,
                          i);
            cr_assert(i + 1 < e->n, "HELP without TYPE at the end");
            char tname[256], type[32];
            cr_assert_eq(sscanf(e->lines[i + 1], "# TYPE %255s %31s", tname, type), 2,
                         "line after HELP %s is not TYPE: %s", name, e->lines[i + 1]);
            cr_assert_str_eq(tname, name, "TYPE after HELP %s names %s", name, tname);
            cr_assert(strcmp(type, "counter") == 0 || strcmp(type, "gauge") == 0 ||
                          strcmp(type, "histogram") == 0,
                      "type %s of %s", type, name);
            cr_assert(nf < MAX_FAMILIES);
            snprintf(fams[nf].name, sizeof(fams[nf].name), "%s", name);
            snprintf(fams[nf].type, sizeof(fams[nf].type), "%s", type);
            cur = &fams[nf++];
            i++; /* the TYPE line */
            hist_key[0] = '\0';
            continue;
        }
        cr_assert(l[0] != '#', "unexpected comment line %zu: %s", i, l);
        sample s;
        cr_assert(parse_sample(l, &s), "line %zu is not a valid sample: %s", i, l);
        cr_assert_not_null(cur, "sample before any TYPE: %s", l);
        bool hist = strcmp(cur->type, "histogram") == 0;
        if (!hist) {
            cr_assert_str_eq(s.name, cur->name, "sample %s inside family %s (line %zu)", s.name,
                             cur->name, i);
            continue;
        }
        char base[300];
        snprintf(base, sizeof(base), "%s_bucket", cur->name);
        if (strcmp(s.name, base) == 0) {
            cr_assert(s.has_le, "bucket without le: %s", l);
            double le;
            cr_assert(parse_value(s.le, &le), "bad le in %s", l);
            char key[1300];
            snprintf(key, sizeof(key), "%s{%s}", cur->name, s.labels_no_le);
            if (strcmp(key, hist_key) != 0) {
                cr_assert(saw_inf, "series %s ended without le=\"+Inf\"", hist_key);
                snprintf(hist_key, sizeof(hist_key), "%s", key);
                prev_le = -INFINITY;
                prev_count = -1;
                saw_inf = false;
            }
            cr_assert(!saw_inf, "bucket after +Inf: %s", l);
            cr_assert(le > prev_le, "le not rising at %s", l);
            cr_assert(s.value >= prev_count, "cumulative count falls at %s", l);
            prev_le = le;
            prev_count = s.value;
            if (isinf(le)) {
                saw_inf = true;
                inf_count = s.value;
            }
            continue;
        }
        cr_assert(!s.has_le, "le label on %s", l);
        char key[1300];
        snprintf(key, sizeof(key), "%s{%s}", cur->name, s.labels_no_le);
        snprintf(base, sizeof(base), "%s_sum", cur->name);
        if (strcmp(s.name, base) == 0) {
            cr_assert(saw_inf && strcmp(key, hist_key) == 0, "_sum out of place: %s", l);
            continue;
        }
        snprintf(base, sizeof(base), "%s_count", cur->name);
        cr_assert_str_eq(s.name, base, "sample %s inside histogram %s", s.name, cur->name);
        cr_assert(saw_inf && strcmp(key, hist_key) == 0, "_count out of place: %s", l);
        cr_assert_eq(s.value, inf_count, "_count %g differs from the +Inf bucket %g: %s", s.value,
                     inf_count, l);
    }
    cr_assert(saw_inf, "last histogram series lacks le=\"+Inf\"");
}

/* Renders, splits into lines and checks the format. */
static expo render(qv_metrics *m)
{
    expo e = {0};
    size_t len = 0;
    int rc = qv_metrics_render(m, &e.text, &len);
    cr_assert_eq(rc, 0, "render: %d", rc);
    cr_assert_not_null(e.text);
    cr_assert_eq(strlen(e.text), len, "length %zu for a %zu-byte string", len, strlen(e.text));
    cr_assert(len > 0 && e.text[len - 1] == '\n', "output must end with a newline");
    char *save = NULL;
    for (char *l = strtok_r(e.text, "\n", &save); l != NULL; l = strtok_r(NULL, "\n", &save)) {
        cr_assert(e.n < MAX_LINES, "more than %d lines", MAX_LINES);
        e.lines[e.n++] = l;
    }
    check_exposition(&e);
    return e;
}

/* The value of the sample whose text before the value is exactly `series`; fails if absent. */
static double value_of(const expo *e, const char *series)
{
    size_t n = strlen(series);
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->lines[i], series, n) == 0 && e->lines[i][n] == ' ') {
            double v;
            cr_assert(parse_value(e->lines[i] + n + 1, &v), "value of %s", series);
            return v;
        }
    cr_assert_fail("no sample %s", series);
    return NAN;
}

static bool has_line_prefix(const expo *e, const char *prefix)
{
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->lines[i], prefix, strlen(prefix)) == 0)
            return true;
    return false;
}

static size_t count_line_prefix(const expo *e, const char *prefix)
{
    size_t n = 0;
    for (size_t i = 0; i < e->n; i++)
        if (strncmp(e->lines[i], prefix, strlen(prefix)) == 0)
            n++;
    return n;
}

static qv_metrics *new_metrics(void)
{
    qv_metrics *m = NULL;
    cr_assert_eq(qv_metrics_create(&m), 0);
    cr_assert_not_null(m);
    return m;
}

/* ---- families and format --------------------------------------------------------------------- */

static void interleaving_collector(qv_metrics_writer *w, void *user)
{
    /* Two families emitted interleaved: the render must still group them. */
    qv_metrics_gauge(w, "quiver_collection_points", "Points stored per collection.",
                     "collection=\"a\"", 10);
    qv_metrics_gauge(w, "quiver_index_memory_bytes", "Index memory.", "collection=\"a\"", 4096);
    qv_metrics_gauge(w, "quiver_collection_points", "ignored: not the first HELP",
                     "collection=\"b\"", 20);
    qv_metrics_gauge(w, "quiver_index_memory_bytes", "", "collection=\"b\"", 8192);
}

Test(metrics, render_groups_families_with_help_and_type_once)
{
    qv_metrics *m = new_metrics();
    qv_counter *ca = qv_metrics_counter(m, "quiver_points_upserted_total", "Points written.",
                                        "collection=\"a\"");
    qv_histogram *ha =
        qv_metrics_histogram(m, "quiver_search_seconds", "Search latency.", "collection=\"a\"");
    qv_counter *cb =
        qv_metrics_counter(m, "quiver_points_upserted_total", "other help", "collection=\"b\"");
    qv_histogram *hb = qv_metrics_histogram(m, "quiver_search_seconds", NULL, "collection=\"b\"");
    cr_assert(ca && cb && ha && hb);
    qv_counter_add(ca, 3);
    qv_counter_add(cb, 5);
    qv_histogram_observe(ha, 0.002);
    qv_histogram_observe(hb, 0.2);
    qv_metrics_rpc_done(m, "/quiver.v1.Points/Search", QV_OK, 120);
    qv_metrics_rpc_done(m, "/quiver.v1.Points/Upsert", QV_EINVAL, 80);
    qv_metrics_rpc_done(m, "/quiver.v1.Points/Search", QV_OK, 300);
    cr_assert_eq(qv_metrics_add_collector(m, interleaving_collector, NULL), 0);

    expo e = render(m);
    cr_expect_eq(count_line_prefix(&e, "# HELP quiver_points_upserted_total "), 1);
    cr_expect(has_line_prefix(&e, "# HELP quiver_points_upserted_total Points written."),
              "the first help wins");
    cr_expect(has_line_prefix(&e, "# TYPE quiver_points_upserted_total counter"));
    cr_expect(has_line_prefix(&e, "# TYPE quiver_search_seconds histogram"));
    cr_expect(has_line_prefix(&e, "# TYPE quiver_collection_points gauge"));
    cr_expect(has_line_prefix(&e, "# HELP quiver_collection_points Points stored per collection."));
    cr_expect(has_line_prefix(&e, "# TYPE quiver_rpc_requests_total counter"));
    cr_expect(has_line_prefix(&e, "# TYPE quiver_rpc_duration_seconds histogram"));
    cr_expect_eq(value_of(&e, "quiver_points_upserted_total{collection=\"a\"}"), 3);
    cr_expect_eq(value_of(&e, "quiver_points_upserted_total{collection=\"b\"}"), 5);
    cr_expect_eq(value_of(&e, "quiver_collection_points{collection=\"b\"}"), 20);
    cr_expect_eq(value_of(&e, "quiver_index_memory_bytes{collection=\"a\"}"), 4096);
    cr_expect_eq(value_of(&e, "quiver_search_seconds_count{collection=\"b\"}"), 1);
    cr_expect_eq(
        value_of(&e, "quiver_rpc_requests_total{method=\"/quiver.v1.Points/Search\",code=\"OK\"}"),
        2);
    cr_expect_eq(value_of(&e, "quiver_rpc_requests_total{method=\"/quiver.v1.Points/Upsert\","
                              "code=\"INVALID_ARGUMENT\"}"),
                 1);
    cr_expect(!has_line_prefix(
                  &e, "quiver_rpc_requests_total{method=\"/quiver.v1.Points/Upsert\",code=\"OK\"}"),
              "codes never seen are not rendered");
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

Test(metrics, empty_registry_renders_valid_text)
{
    qv_metrics *m = new_metrics();
    expo e = render(m);
    cr_expect(has_line_prefix(&e, "# TYPE quiver_rpc_requests_total counter"));
    cr_expect_eq(value_of(&e, "quiver_metrics_dropped_samples_total"), 0);
    expo_free(&e);
    qv_metrics_free(m);
    qv_metrics_free(NULL);
    assert_no_leaks();
}

/* ---- histograms ------------------------------------------------------------------------------ */

Test(metrics, histogram_buckets_are_cumulative_and_le_inclusive)
{
    qv_metrics *m = new_metrics();
    qv_histogram *h = qv_metrics_histogram(m, "op_seconds", "Op latency.", "");
    cr_assert_not_null(h);
    qv_histogram_observe(h, 0.00004); /* le 0.00005 */
    qv_histogram_observe(h, 0.001);   /* exactly a bound: le 0.001 */
    qv_histogram_observe(h, 0.0011);  /* le 0.0025 */
    qv_histogram_observe(h, 3.0);     /* le 5 */
    qv_histogram_observe(h, 11.0);    /* only +Inf */
    qv_histogram_observe(h, NAN);     /* ignored */
    qv_histogram_observe(NULL, 1.0);  /* ignored */

    expo e = render(m);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"0.00005\"}"), 1);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"0.0005\"}"), 1);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"0.001\"}"), 2);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"0.0025\"}"), 3);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"2.5\"}"), 3);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"5\"}"), 4);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"10\"}"), 4);
    cr_expect_eq(value_of(&e, "op_seconds_bucket{le=\"+Inf\"}"), 5);
    cr_expect_eq(value_of(&e, "op_seconds_count"), 5);
    double sum = value_of(&e, "op_seconds_sum");
    cr_expect(fabs(sum - 14.00214) < 1e-9, "sum %.10f", sum);
    /* 17 bounds from 50 us to 10 s, then +Inf. */
    cr_expect_eq(count_line_prefix(&e, "op_seconds_bucket{"), 18);
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

#define THREADS 8

typedef struct hammer {
    qv_metrics *m;
    qv_histogram *h;
    pthread_barrier_t *start;
    int id;
} hammer;

static void *observe_thread(void *arg)
{
    hammer *hm = arg;
    pthread_barrier_wait(hm->start);
    for (int i = 0; i < 20000; i++)
        qv_histogram_observe(hm->h, 0.5); /* exact in binary: the sum must be exact too */
    return NULL;
}

Test(metrics, histogram_observed_from_8_threads_sums_exactly)
{
    qv_metrics *m = new_metrics();
    qv_histogram *h = qv_metrics_histogram(m, "work_seconds", "", "pool=\"x\"");
    cr_assert_not_null(h);
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t t[THREADS];
    hammer hm[THREADS];
    for (int i = 0; i < THREADS; i++) {
        hm[i] = (hammer){.m = m, .h = h, .start = &start, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, observe_thread, &hm[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);
    expo e = render(m);
    cr_expect_eq(value_of(&e, "work_seconds_count{pool=\"x\"}"), THREADS * 20000);
    cr_expect_eq(value_of(&e, "work_seconds_sum{pool=\"x\"}"), THREADS * 20000 * 0.5);
    cr_expect_eq(value_of(&e, "work_seconds_bucket{pool=\"x\",le=\"0.25\"}"), 0);
    cr_expect_eq(value_of(&e, "work_seconds_bucket{pool=\"x\",le=\"0.5\"}"), THREADS * 20000);
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* ---- RPC ------------------------------------------------------------------------------------- */

Test(metrics, rpc_done_counts_codes_and_latency)
{
    qv_metrics *m = new_metrics();
    const char *search = "/quiver.v1.Points/Search";
    qv_metrics_rpc_done(m, search, QV_OK, 40);              /* le 0.00005 */
    qv_metrics_rpc_done(m, search, QV_OK, 1000);            /* le 0.001 */
    qv_metrics_rpc_done(m, search, QV_ENOTFOUND, 20000000); /* only +Inf */
    qv_metrics_rpc_done(m, search, QV_ETIMEOUT, 50);
    qv_metrics_rpc_done(m, search, 7, 50);   /* not a QV code: UNKNOWN */
    qv_metrics_rpc_done(m, search, -99, 50); /* not a QV code: UNKNOWN */
    qv_metrics_rpc_done(m, search, QV_EAUTH, 50);
    qv_metrics_rpc_done(m, NULL, QV_EUNIMPL, 10);
    qv_metrics_rpc_done(NULL, search, QV_OK, 10); /* ignored */

    expo e = render(m);
#define REQ(code) "quiver_rpc_requests_total{method=\"/quiver.v1.Points/Search\",code=\"" code "\"}"
    cr_expect_eq(value_of(&e, REQ("OK")), 2);
    cr_expect_eq(value_of(&e, REQ("NOT_FOUND")), 1);
    cr_expect_eq(value_of(&e, REQ("DEADLINE_EXCEEDED")), 1);
    cr_expect_eq(value_of(&e, REQ("UNKNOWN")), 2);
    cr_expect_eq(value_of(&e, REQ("UNAUTHENTICATED")), 1);
#undef REQ
    cr_expect_eq(
        value_of(&e, "quiver_rpc_requests_total{method=\"unknown\",code=\"UNIMPLEMENTED\"}"), 1);
#define DUR(s) "quiver_rpc_duration_seconds" s
    cr_expect_eq(value_of(&e, DUR("_bucket{method=\"/quiver.v1.Points/Search\",le=\"0.00005\"}")),
                 5);
    cr_expect_eq(value_of(&e, DUR("_bucket{method=\"/quiver.v1.Points/Search\",le=\"0.001\"}")), 6);
    cr_expect_eq(value_of(&e, DUR("_bucket{method=\"/quiver.v1.Points/Search\",le=\"10\"}")), 6);
    cr_expect_eq(value_of(&e, DUR("_bucket{method=\"/quiver.v1.Points/Search\",le=\"+Inf\"}")), 7);
    cr_expect_eq(value_of(&e, DUR("_count{method=\"/quiver.v1.Points/Search\"}")), 7);
    double sum = value_of(&e, DUR("_sum{method=\"/quiver.v1.Points/Search\"}"));
    cr_expect(fabs(sum - 20.001240) < 1e-9, "sum %.9f", sum);
#undef DUR
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

static const char *const hammer_methods[] = {
    "/quiver.v1.Points/Search",
    "/quiver.v1.Points/Upsert",
    "/quiver.v1.Collections/Create",
    "/quiver.v1.Cluster/Status",
};
static const int hammer_codes[] = {QV_OK, QV_EINVAL, QV_ENOTFOUND};
#define RPC_CALLS_PER_THREAD 60000

/* Method and code of call i: every thread walks the same sequence, so threads running at the
 * same time hit the same counters (and race to insert each new method). */
static int hammer_method(int i)
{
    return i % 4;
}

static int hammer_code(int i)
{
    return (i / 4) % 3;
}

static void *rpc_thread(void *arg)
{
    hammer *hm = arg;
    pthread_barrier_wait(hm->start);
    for (int i = 0; i < RPC_CALLS_PER_THREAD; i++)
        qv_metrics_rpc_done(hm->m, hammer_methods[hammer_method(i)], hammer_codes[hammer_code(i)],
                            (uint64_t)(i % 2000));
    return NULL;
}

Test(metrics, rpc_done_from_8_threads_sums_exactly)
{
    qv_metrics *m = new_metrics();
    pthread_barrier_t start;
    pthread_barrier_init(&start, NULL, THREADS);
    pthread_t t[THREADS];
    hammer hm[THREADS];
    for (int i = 0; i < THREADS; i++) {
        hm[i] = (hammer){.m = m, .start = &start, .id = i};
        cr_assert_eq(pthread_create(&t[i], NULL, rpc_thread, &hm[i]), 0);
    }
    for (int i = 0; i < THREADS; i++)
        pthread_join(t[i], NULL);
    pthread_barrier_destroy(&start);

    /* Recount what the threads did, per method and code. */
    double want[4][3] = {{0}};
    double want_sum[4] = {0};
    for (int id = 0; id < THREADS; id++)
        for (int i = 0; i < RPC_CALLS_PER_THREAD; i++) {
            want[hammer_method(i)][hammer_code(i)] += 1;
            want_sum[hammer_method(i)] += (double)(i % 2000);
        }
    expo e = render(m);
    static const char *const names[] = {"OK", "INVALID_ARGUMENT", "NOT_FOUND"};
    double total = 0;
    for (int k = 0; k < 4; k++) {
        char series[256];
        double per_method = 0;
        for (int c = 0; c < 3; c++) {
            snprintf(series, sizeof(series), "quiver_rpc_requests_total{method=\"%s\",code=\"%s\"}",
                     hammer_methods[k], names[c]);
            double v = value_of(&e, series);
            cr_expect_eq(v, want[k][c], "%s = %.0f, want %.0f", series, v, want[k][c]);
            per_method += v;
        }
        snprintf(series, sizeof(series), "quiver_rpc_duration_seconds_count{method=\"%s\"}",
                 hammer_methods[k]);
        cr_expect_eq(value_of(&e, series), per_method, "%s", series);
        snprintf(series, sizeof(series), "quiver_rpc_duration_seconds_sum{method=\"%s\"}",
                 hammer_methods[k]);
        double sum = value_of(&e, series);
        cr_expect(fabs(sum - want_sum[k] / 1e6) < 1e-6, "%s = %.9f, want %.9f", series, sum,
                  want_sum[k] / 1e6);
        total += per_method;
    }
    cr_expect_eq(total, (double)THREADS * RPC_CALLS_PER_THREAD);
    cr_expect_eq(count_line_prefix(&e, "quiver_rpc_duration_seconds_count{"), 4,
                 "each method once, however many threads raced to add it");
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

Test(metrics, methods_past_the_limit_fold_into_other)
{
    qv_metrics *m = new_metrics();
    char name[64];
    for (int i = 0; i < QV_METRICS_MAX_METHODS + 10; i++) {
        snprintf(name, sizeof(name), "/svc.S/M%03d", i);
        qv_metrics_rpc_done(m, name, QV_OK, 10);
        qv_metrics_rpc_done(m, name, QV_OK, 10); /* a second call finds the same entry */
    }
    expo e = render(m);
    cr_expect_eq(count_line_prefix(&e, "quiver_rpc_duration_seconds_count{"),
                 QV_METRICS_MAX_METHODS + 1);
    snprintf(name, sizeof(name), "quiver_rpc_requests_total{method=\"/svc.S/M%03d\",code=\"OK\"}",
             QV_METRICS_MAX_METHODS - 1);
    cr_expect_eq(value_of(&e, name), 2);
    cr_expect_eq(value_of(&e, "quiver_rpc_requests_total{method=\"other\",code=\"OK\"}"), 20);
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* ---- escaping -------------------------------------------------------------------------------- */

Test(metrics, label_values_and_help_are_escaped)
{
    qv_metrics *m = new_metrics();
    qv_metrics_rpc_done(m, "/odd\"name\\with\nnewline", QV_OK, 10);
    qv_metrics_rpc_done(m, "/bad\xff utf8", QV_OK, 10);

    char esc[64];
    size_t n = qv_metrics_escape_label(esc, sizeof(esc), "a\"b\\c\nd");
    cr_expect_str_eq(esc, "a\\\"b\\\\c\\nd");
    cr_expect_eq(n, strlen("a\\\"b\\\\c\\nd"));
    /* Truncation never splits an escape and reports the full length. */
    char small[4];
    n = qv_metrics_escape_label(small, sizeof(small), "ab\"c");
    cr_expect_str_eq(small, "ab");
    cr_expect_eq(n, 5);

    char labels[128];
    snprintf(labels, sizeof(labels), "collection=\"%s\"", esc);
    qv_counter *c = qv_metrics_counter(m, "quiver_docs_total", "Line one\nline two \\ end", labels);
    cr_assert_not_null(c);
    qv_counter_add(c, 1);

    expo e = render(m);
    cr_expect_eq(
        value_of(&e,
                 "quiver_rpc_requests_total{method=\"/odd\\\"name\\\\with?newline\",code=\"OK\"}"),
        1, "a raw newline in a method name becomes '?'; quotes and backslashes are escaped");
    cr_expect_eq(value_of(&e, "quiver_rpc_requests_total{method=\"/bad? utf8\",code=\"OK\"}"), 1);
    cr_expect_eq(value_of(&e, "quiver_docs_total{collection=\"a\\\"b\\\\c\\nd\"}"), 1);
    cr_expect(has_line_prefix(&e, "# HELP quiver_docs_total Line one\\nline two \\\\ end"));
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* ---- validation ------------------------------------------------------------------------------ */

Test(metrics, bad_names_labels_and_clashes_are_rejected)
{
    qv_metrics *m = new_metrics();
    static const char *const bad_names[] = {"", "1abc", "a-b", "a b", "é", "a\n"};
    for (size_t i = 0; i < sizeof(bad_names) / sizeof(bad_names[0]); i++) {
        cr_expect_null(qv_metrics_counter(m, bad_names[i], "", ""), "name '%s'", bad_names[i]);
        cr_expect_null(qv_metrics_histogram(m, bad_names[i], "", ""), "name '%s'", bad_names[i]);
    }
    cr_expect_null(qv_metrics_counter(m, NULL, "", ""));
    cr_expect_null(qv_metrics_counter(NULL, "x_total", "", ""));
    char long_name[QV_METRICS_NAME_MAX + 2];
    memset(long_name, 'a', sizeof(long_name) - 1);
    long_name[sizeof(long_name) - 1] = '\0';
    cr_expect_null(qv_metrics_counter(m, long_name, "", ""));
    long_name[QV_METRICS_NAME_MAX] = '\0';
    cr_expect_not_null(qv_metrics_counter(m, long_name, "", ""), "a name of the maximum length");

    static const char *const bad_labels[] = {
        "x",
        "x=1",
        "x=\"open",
        "__x=\"1\"",
        "a=\"1\",a=\"2\"",
        "a=\"\\q\"",
        "a=\"1\" b=\"2\"",
        "a=\"1\",,b=\"2\"",
        "1a=\"1\"",
        "a=\"x\ny\"",
        "a=\"\xff\"",
        "a:b=\"1\"",
        "=\"1\"",
        "a=\"1\"}",
    };
    for (size_t i = 0; i < sizeof(bad_labels) / sizeof(bad_labels[0]); i++)
        cr_expect_null(qv_metrics_counter(m, "good_total", "", bad_labels[i]), "labels '%s'",
                       bad_labels[i]);
    cr_expect_null(qv_metrics_histogram(m, "h_seconds", "", "le=\"1\""), "le is reserved");
    cr_expect_not_null(qv_metrics_counter(m, "c_total", "", "le=\"1\""), "le is fine on a counter");
    cr_expect_not_null(qv_metrics_counter(m, "good_total", "", "a=\"\xc3\xa9\""),
                       "UTF-8 values are fine");

    /* Clashes between families and with built-in ones. */
    cr_expect_not_null(qv_metrics_counter(m, "foo", "", ""));
    cr_expect_null(qv_metrics_histogram(m, "foo", "", ""), "counter foo exists");
    cr_expect_not_null(qv_metrics_histogram(m, "bar", "", ""));
    cr_expect_null(qv_metrics_counter(m, "bar_count", "", ""), "histogram bar owns bar_count");
    cr_expect_null(qv_metrics_counter(m, "bar_bucket", "", ""));
    cr_expect_null(qv_metrics_counter(m, "bar", "", ""));
    cr_expect_not_null(qv_metrics_counter(m, "baz_sum", "", ""));
    cr_expect_null(qv_metrics_histogram(m, "baz", "", ""), "counter baz_sum exists");
    cr_expect_null(qv_metrics_counter(m, "quiver_rpc_requests_total", "", ""));
    cr_expect_null(qv_metrics_counter(m, "quiver_rpc_duration_seconds_count", "", ""));
    cr_expect_null(qv_metrics_histogram(m, "process_open_fds", "", ""));
    cr_expect_null(qv_metrics_counter(m, "process_cpu_seconds_total", "", ""));

    /* Same name and labels: the same object, whatever the label order or spacing. */
    qv_counter *a = qv_metrics_counter(m, "req_total", "", "x=\"1\",y=\"2\"");
    qv_counter *b = qv_metrics_counter(m, "req_total", "", " y=\"2\", x=\"1\",");
    qv_counter *c = qv_metrics_counter(m, "req_total", "", "x=\"1\",y=\"3\"");
    cr_assert(a != NULL && b != NULL && c != NULL);
    cr_expect_eq(a, b);
    cr_expect_neq(a, c);
    qv_counter_add(a, 2);
    qv_counter_add(b, 3);
    qv_counter_add(NULL, 3);
    cr_expect_eq(qv_counter_value(a), 5);
    qv_histogram *h1 = qv_metrics_histogram(m, "bar", "", "");
    cr_expect_not_null(h1);
    cr_expect_eq(h1, qv_metrics_histogram(m, "bar", "", NULL), "NULL labels mean none");

    expo e = render(m);
    cr_expect_eq(value_of(&e, "req_total{x=\"1\",y=\"2\"}"), 5, "labels rendered sorted");
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* ---- collectors ------------------------------------------------------------------------------ */

typedef struct gauge_src {
    atomic_int calls;
    double points;
} gauge_src;

static void points_collector(qv_metrics_writer *w, void *user)
{
    gauge_src *src = user;
    atomic_fetch_add(&src->calls, 1);
    qv_metrics_gauge(w, "quiver_collection_points", "Points per collection.", "collection=\"docs\"",
                     src->points);
}

static void messy_collector(qv_metrics_writer *w, void *user)
{
    gauge_src *src = user;
    atomic_fetch_add(&src->calls, 1);
    qv_metrics_gauge(w, "quiver_collection_points", "", "collection=\"img\"", 7);
    qv_metrics_gauge(w, "quiver_collection_points", "", "collection=\"docs\"", 999); /* dup */
    qv_metrics_gauge(w, "bad name", "", "", 1);                                      /* invalid */
    qv_metrics_gauge(w, "g", "", "x=", 1);                                           /* invalid */
    qv_metrics_gauge(w, "registered_total", "", "", 1); /* clashes with a counter */
    qv_metrics_gauge(w, "process_open_fds", "", "", 1); /* clashes with a built-in */
    qv_metrics_gauge(w, "quiver_ratio", "", "", NAN);   /* specials are fine */
    qv_metrics_gauge(w, "quiver_limit", "", "", INFINITY);
    qv_metrics_gauge(w, "quiver_small", "", "", 0.1);
}

Test(metrics, collectors_run_at_every_render_and_stop_after_removal)
{
    qv_metrics *m = new_metrics();
    cr_assert_not_null(qv_metrics_counter(m, "registered_total", "", ""));
    static gauge_src a, b;
    atomic_init(&a.calls, 0);
    atomic_init(&b.calls, 0);
    a.points = 1234;
    cr_assert_eq(qv_metrics_add_collector(m, points_collector, &a), 0);
    cr_assert_eq(qv_metrics_add_collector(m, messy_collector, &b), 0);
    cr_expect_eq(qv_metrics_add_collector(m, NULL, &b), QV_EINVAL);

    expo e = render(m);
    cr_expect_eq(atomic_load(&a.calls), 1);
    cr_expect_eq(atomic_load(&b.calls), 1);
    cr_expect_eq(value_of(&e, "quiver_collection_points{collection=\"docs\"}"), 1234,
                 "the first sample of a series wins");
    cr_expect_eq(value_of(&e, "quiver_collection_points{collection=\"img\"}"), 7);
    cr_expect(has_line_prefix(&e, "# HELP quiver_collection_points Points per collection."));
    cr_expect_eq(count_line_prefix(&e, "quiver_collection_points{"), 2);
    cr_expect_eq(count_line_prefix(&e, "registered_total "), 1, "only the counter's own sample");
    cr_expect(has_line_prefix(&e, "quiver_ratio NaN"));
    cr_expect(has_line_prefix(&e, "quiver_limit +Inf"));
    cr_expect(has_line_prefix(&e, "quiver_small 0.1"));
    cr_expect_eq(value_of(&e, "quiver_metrics_dropped_samples_total"), 5);
    expo_free(&e);

    a.points = 99;
    e = render(m);
    cr_expect_eq(atomic_load(&a.calls), 2, "collectors run at every render");
    cr_expect_eq(value_of(&e, "quiver_collection_points{collection=\"docs\"}"), 99);
    cr_expect_eq(value_of(&e, "quiver_metrics_dropped_samples_total"), 10, "a running total");
    expo_free(&e);

    qv_metrics_remove_collector(m, points_collector, &a);
    qv_metrics_remove_collector(m, messy_collector, &a); /* not registered with &a: no-op */
    e = render(m);
    cr_expect_eq(atomic_load(&a.calls), 2, "a removed collector does not run");
    cr_expect_eq(atomic_load(&b.calls), 3);
    cr_expect_eq(value_of(&e, "quiver_collection_points{collection=\"docs\"}"), 999,
                 "with the first collector gone, the other's sample is the only one");
    expo_free(&e);
    qv_metrics_remove_collector(m, messy_collector, &b);
    e = render(m);
    cr_expect(!has_line_prefix(&e, "# HELP quiver_collection_points"));
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* A collector may create and update registered metrics while it runs. */
static void self_counting_collector(qv_metrics_writer *w, void *user)
{
    qv_metrics *m = user;
    qv_counter_add(qv_metrics_counter(m, "quiver_scrapes_total", "Scrapes.", ""), 1);
    qv_metrics_gauge(w, "quiver_up", "Always 1.", "", 1);
}

Test(metrics, collector_may_register_metrics)
{
    qv_metrics *m = new_metrics();
    cr_assert_eq(qv_metrics_add_collector(m, self_counting_collector, m), 0);
    expo e = render(m);
    cr_expect_eq(value_of(&e, "quiver_scrapes_total"), 1);
    cr_expect_eq(value_of(&e, "quiver_up"), 1);
    expo_free(&e);
    e = render(m);
    cr_expect_eq(value_of(&e, "quiver_scrapes_total"), 2);
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}

/* ---- process metrics ------------------------------------------------------------------------- */

Test(metrics, process_metrics_come_from_proc)
{
    qv_metrics *m = new_metrics();
    expo e = render(m);
    double rss = value_of(&e, "process_resident_memory_bytes");
    cr_expect(rss > 1024 * 1024, "rss %.0f", rss);
    cr_expect(value_of(&e, "process_virtual_memory_bytes") >= rss);
    cr_expect(value_of(&e, "process_cpu_seconds_total") >= 0);
    double start = value_of(&e, "process_start_time_seconds");
    double now = (double)time(NULL);
    cr_expect(start <= now + 2 && start > now - 3600, "start %.0f, now %.0f", start, now);
    cr_expect(value_of(&e, "process_max_fds") > 0);
    double fds = value_of(&e, "process_open_fds");
    expo_free(&e);

    int extra[5];
    for (int i = 0; i < 5; i++) {
        extra[i] = open("/dev/null", O_RDONLY | O_CLOEXEC);
        cr_assert(extra[i] >= 0);
    }
    e = render(m);
    cr_expect_eq(value_of(&e, "process_open_fds"), fds + 5, "five more descriptors");
    expo_free(&e);
    for (int i = 0; i < 5; i++)
        close(extra[i]);

    /* Burn some CPU: the counter must move. */
    e = render(m);
    double cpu0 = value_of(&e, "process_cpu_seconds_total");
    expo_free(&e);
    struct timespec t0, t1, c1;
    clock_gettime(CLOCK_MONOTONIC, &t0);
    volatile uint64_t x = 1;
    do {
        for (int i = 0; i < 100000; i++)
            x = x * 6364136223846793005ull + 1;
        clock_gettime(CLOCK_MONOTONIC, &t1);
        clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &c1);
    } while ((double)c1.tv_sec + c1.tv_nsec / 1e9 < cpu0 + 0.1 && t1.tv_sec - t0.tv_sec < 10);
    e = render(m);
    double cpu1 = value_of(&e, "process_cpu_seconds_total");
    cr_expect(cpu1 > cpu0, "cpu %.2f -> %.2f", cpu0, cpu1);
    expo_free(&e);
    qv_metrics_free(m);
    assert_no_leaks();
}
