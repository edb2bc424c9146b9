/*
 * Prometheus metrics registry (node/metrics.h).
 *
 * Map of this file:
 *   - names and label sets: validation against the Prometheus rules, canonical (sorted) label
 *     sets, escaping, and the clash rules between families (a histogram `x` also owns x_bucket,
 *     x_sum and x_count);
 *   - the RPC table: an open-addressed hash of method entries probed without a lock; inserting
 *     a new method takes rpc_mu. Every entry holds per-code counters and a latency histogram in
 *     microseconds, all relaxed atomics;
 *   - registered families (counters, histograms) in a list under reg_mu, each with its series;
 *   - collectors and the writer that buffers their gauge samples, grouped by name at render;
 *   - rendering into a growable buffer: RPC families, registered families, gauges, process
 *     metrics from /proc.
 *
 * Lock order: collect_mu (held while collectors run) before reg_mu; rpc_mu is never held with
 * another. Hot paths (rpc_done, observe, add) take no lock once their series exists.
 */
#define _GNU_SOURCE
#include "node/metrics.h"

#include <dirent.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* ---- bucket layout shared by every histogram ------------------------------------------------ */

#define NBUCKETS 17

static const uint64_t bucket_le_us[NBUCKETS] = {
    50,    100,    250,    500,    1000,    2500,    5000,    10000,    25000,
    50000, 100000, 250000, 500000, 1000000, 2500000, 5000000, 10000000,
};
static const double bucket_le_s[NBUCKETS] = {
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025,
    0.05,    0.1,    0.25,    0.5,    1.0,   2.5,    5.0,   10.0,
};
static const char *const bucket_le_text[NBUCKETS] = {
    "0.00005", "0.0001", "0.00025", "0.0005", "0.001", "0.0025", "0.005", "0.01", "0.025",
    "0.05",    "0.1",    "0.25",    "0.5",    "1",     "2.5",    "5",     "10",
};

/* Codes 0..-16 map to slots 0..16; anything else is UNKNOWN (slot 2). */
#define NCODES            17
#define CODE_SLOT_UNKNOWN 2

#define RPC_SLOTS       (2 * QV_METRICS_MAX_METHODS) /* power of two, load factor <= 1/2 */
#define METHOD_KEY_MAX  255
#define MAX_LABEL_PAIRS 32

_Static_assert((RPC_SLOTS & (RPC_SLOTS - 1)) == 0, "RPC_SLOTS must be a power of two");

#define M_RPC_REQUESTS "quiver_rpc_requests_total"
#define M_RPC_DURATION "quiver_rpc_duration_seconds"
#define M_DROPPED      "quiver_metrics_dropped_samples_total"

typedef enum mtype {
    T_COUNTER,
    T_GAUGE,
    T_HIST,
} mtype;

/* Families every render emits on its own; registered and collected names must not clash. */
static const struct {
    const char *name;
    mtype type;
} builtin_families[] = {
    {M_RPC_REQUESTS, T_COUNTER},
    {M_RPC_DURATION, T_HIST},
    {M_DROPPED, T_COUNTER},
    {"process_resident_memory_bytes", T_GAUGE},
    {"process_virtual_memory_bytes", T_GAUGE},
    {"process_cpu_seconds_total", T_COUNTER},
    {"process_open_fds", T_GAUGE},
    {"process_max_fds", T_GAUGE},
    {"process_start_time_seconds", T_GAUGE},
};

/* ---- objects -------------------------------------------------------------------------------- */

struct qv_counter {
    atomic_uint_least64_t value;
};

struct qv_histogram {
    atomic_uint_least64_t buckets[NBUCKETS + 1]; /* non-cumulative; the last is above 10 s */
    atomic_uint_least64_t sum_bits;              /* a double, updated by compare-and-swap */
};

typedef struct series {
    struct series *next;
    char *labels; /* canonical */
    union {
        qv_counter counter;
        qv_histogram hist;
    } u;
} series;

typedef struct family {
    struct family *next;
    char *name;
    char *help;
    mtype type;
    series *head;
    series **tail;
} family;

typedef struct rpc_method {
    uint64_t hash;
    size_t key_len;
    char key[METHOD_KEY_MAX + 1];     /* the bytes the caller passed, truncated */
    char display[METHOD_KEY_MAX + 1]; /* key with invalid UTF-8 replaced by '?' */
    atomic_uint_least64_t codes[NCODES];
    atomic_uint_least64_t buckets[NBUCKETS + 1];
    atomic_uint_least64_t sum_us;
} rpc_method;

typedef struct collector {
    qv_metrics_collect_fn fn;
    void *user;
} collector;

struct qv_metrics {
    /* RPC table: slots are written once (NULL -> entry) under rpc_mu and read without it. */
    _Atomic(rpc_method *) slots[RPC_SLOTS];
    rpc_method *order[QV_METRICS_MAX_METHODS]; /* insertion order, for rendering */
    atomic_size_t nmethods;
    rpc_method *other; /* methods past QV_METRICS_MAX_METHODS */
    atomic_bool other_used;
    pthread_mutex_t rpc_mu;

    pthread_mutex_t reg_mu;
    family *families;
    family **families_tail;

    pthread_mutex_t collect_mu;
    collector *collectors;
    size_t ncollectors, cap_collectors;

    atomic_uint_least64_t dropped; /* gauge samples dropped, all scrapes together */
};

typedef struct gauge_sample {
    const char *name; /* name, labels and help share one allocation starting at name */
    const char *labels;
    const char *help;
    double value;
    size_t seq;
} gauge_sample;

struct qv_metrics_writer {
    gauge_sample *v;
    size_t n, cap;
    uint64_t dropped;
};

/* ---- names and labels ----------------------------------------------------------------------- */

static bool is_alpha_(char c)
{
    return (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || c == '_';
}

static bool is_digit(char c)
{
    return c >= '0' && c <= '9';
}

static bool valid_metric_name(const char *s)
{
    if (s == NULL || !(is_alpha_(s[0]) || s[0] == ':'))
        return false;
    size_t n = 1;
    for (; s[n] != '\0'; n++)
        if (!(is_alpha_(s[n]) || is_digit(s[n]) || s[n] == ':'))
            return false;
    return n <= QV_METRICS_NAME_MAX;
}

/* Length of the valid UTF-8 sequence at p (at most `left` bytes), or 0 when it is not one. */
static size_t utf8_seq_len(const unsigned char *p, size_t left)
{
    unsigned char c = p[0];
    if (c < 0x80)
        return 1;
    size_t n;
    uint32_t cp;
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
        cp = c & 0x1F;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        cp = c & 0x0F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        cp = c & 0x07;
    } else {
        return 0;
    }
    if (left < n)
        return 0;
    for (size_t i = 1; i < n; i++) {
        if ((p[i] & 0xC0) != 0x80)
            return 0;
        cp = (cp << 6) | (p[i] & 0x3F);
    }
    if ((n == 3 && cp < 0x800) || (n == 4 && (cp < 0x10000 || cp > 0x10FFFF)) ||
        (cp >= 0xD800 && cp <= 0xDFFF))
        return 0; /* overlong, out of range, or a surrogate */
    return n;
}

typedef struct label_pair {
    const char *name;
    size_t name_len;
    const char *text; /* name="value" as written */
    size_t text_len;
} label_pair;

/* Validates a label set written as in the exposition format and writes its canonical form
 * (pairs sorted by name, joined by ',' without spaces) into out. Optional spaces around pairs and
 * one trailing comma are accepted. `reserve_le` rejects a label named "le" (histograms). */
static bool labels_canon(const char *in, char *out, size_t cap, bool reserve_le)
{
    label_pair pairs[MAX_LABEL_PAIRS];
    size_t np = 0;
    const char *p = in ? in : "";
    if (strlen(p) > QV_METRICS_LABELS_MAX)
        return false;
    for (;;) {
        while (*p == ' ')
            p++;
        if (*p == '\0')
            break;
        if (np == MAX_LABEL_PAIRS || !is_alpha_(*p))
            return false;
        label_pair *lp = &pairs[np];
        lp->name = p;
        lp->text = p;
        while (is_alpha_(*p) || is_digit(*p))
            p++;
        lp->name_len = (size_t)(p - lp->name);
        if (lp->name_len >= 2 && lp->name[0] == '_' && lp->name[1] == '_')
            return false; /* reserved for Prometheus itself */
        if (reserve_le && lp->name_len == 2 && memcmp(lp->name, "le", 2) == 0)
            return false;
        if (*p++ != '=' || *p++ != '"')
            return false;
        for (;;) {
            unsigned char c = (unsigned char)*p;
            if (c == '"')
                break;
            if (c < 0x20 || c == 0x7F)
                return false; /* raw control characters, including the end of the string */
            if (c == '\\') {
                if (p[1] != '\\' && p[1] != '"' && p[1] != 'n')
                    return false;
                p += 2;
                continue;
            }
            size_t n = utf8_seq_len((const unsigned char *)p, strlen(p));
            if (n == 0)
                return false;
            p += n;
        }
        p++; /* the closing quote */
        lp->text_len = (size_t)(p - lp->text);
        for (size_t i = 0; i < np; i++)
            if (pairs[i].name_len == lp->name_len &&
                memcmp(pairs[i].name, lp->name, lp->name_len) == 0)
                return false; /* the same label twice */
        np++;
        while (*p == ' ')
            p++;
        if (*p == ',') {
            p++;
            continue;
        }
        if (*p != '\0')
            return false;
        break;
    }
    /* Insertion sort by name: label sets are short. */
    for (size_t i = 1; i < np; i++) {
        label_pair x = pairs[i];
        size_t j = i;
        while (j > 0) {
            const label_pair *y = &pairs[j - 1];
            size_t n = x.name_len < y->name_len ? x.name_len : y->name_len;
            int c = memcmp(y->name, x.name, n);
            if (c < 0 || (c == 0 && y->name_len < x.name_len))
                break;
            pairs[j] = pairs[j - 1];
            j--;
        }
        pairs[j] = x;
    }
    size_t len = 0;
    for (size_t i = 0; i < np; i++) {
        size_t need = pairs[i].text_len + (i > 0);
        if (len + need >= cap)
            return false;
        if (i > 0)
            out[len++] = ',';
        memcpy(out + len, pairs[i].text, pairs[i].text_len);
        len += pairs[i].text_len;
    }
    out[len] = '\0';
    return true;
}

size_t qv_metrics_escape_label(char *dst, size_t cap, const char *value)
{
    size_t full = 0, w = 0;
    bool fits = cap > 0;
    for (const char *p = value ? value : ""; *p != '\0'; p++) {
        const char *rep = NULL;
        char one[2] = {*p, '\0'};
        if (*p == '\\')
            rep = "\\\\";
        else if (*p == '"')
            rep = "\\\"";
        else if (*p == '\n')
            rep = "\\n";
        else
            rep = one;
        size_t n = strlen(rep);
        full += n;
        if (fits && w + n < cap) {
            memcpy(dst + w, rep, n);
            w += n;
        } else {
            fits = false;
        }
    }
    if (cap > 0)
        dst[w] = '\0';
    return full;
}

/* The sample names a family writes: its name, plus _bucket, _sum and _count for a histogram. */
static size_t sample_names(const char *name, mtype t, char out[4][QV_METRICS_NAME_MAX + 8])
{
    snprintf(out[0], sizeof(out[0]), "%s", name);
    if (t != T_HIST)
        return 1;
    snprintf(out[1], sizeof(out[1]), "%s_bucket", name);
    snprintf(out[2], sizeof(out[2]), "%s_sum", name);
    snprintf(out[3], sizeof(out[3]), "%s_count", name);
    return 4;
}

/* Whether two different families would write a sample of the same name (or share a name). */
static bool families_clash(const char *a, mtype ta, const char *b, mtype tb)
{
    char na[4][QV_METRICS_NAME_MAX + 8], nb[4][QV_METRICS_NAME_MAX + 8];
    size_t ca = sample_names(a, ta, na), cb = sample_names(b, tb, nb);
    for (size_t i = 0; i < ca; i++)
        for (size_t j = 0; j < cb; j++)
            if (strcmp(na[i], nb[j]) == 0)
                return true;
    return false;
}

static bool clashes_builtin(const char *name, mtype t)
{
    for (size_t i = 0; i < sizeof(builtin_families) / sizeof(builtin_families[0]); i++)
        if (families_clash(builtin_families[i].name, builtin_families[i].type, name, t))
            return true;
    return false;
}

/* Whether a family (name, t) clashes with a registered one: one of the same name but another
 * type, or one whose sample names overlap. A registered family of the same name and type is not
 * a clash (it is the same family). Called with reg_mu held. */
static bool clashes_registered(const qv_metrics *m, const char *name, mtype t)
{
    for (const family *f = m->families; f != NULL; f = f->next) {
        if (strcmp(f->name, name) == 0)
            return f->type != t;
        if (families_clash(f->name, f->type, name, t))
            return true;
    }
    return false;
}

/* ---- output buffer -------------------------------------------------------------------------- */

typedef struct buf {
    char *p;
    size_t len, cap;
    bool oom;
} buf;

static bool buf_reserve(buf *b, size_t more)
{
    if (b->oom)
        return false;
    if (b->len + more + 1 <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 4096;
    while (cap < b->len + more + 1)
        cap *= 2;
    char *p = realloc(b->p, cap);
    if (p == NULL) {
        b->oom = true;
        return false;
    }
    b->p = p;
    b->cap = cap;
    return true;
}

static void buf_put(buf *b, const char *s, size_t n)
{
    if (!buf_reserve(b, n))
        return;
    memcpy(b->p + b->len, s, n);
    b->len += n;
    b->p[b->len] = '\0';
}

static void buf_puts(buf *b, const char *s)
{
    buf_put(b, s, strlen(s));
}

static void buf_printf(buf *b, const char *fmt, ...) QV_PRINTF(2, 3);
static void buf_printf(buf *b, const char *fmt, ...)
{
    char small[256];
    va_list ap;
    va_start(ap, fmt);
    int n = vsnprintf(small, sizeof(small), fmt, ap);
    va_end(ap);
    if (n < 0)
        return;
    if ((size_t)n < sizeof(small)) {
        buf_put(b, small, (size_t)n);
        return;
    }
    if (!buf_reserve(b, (size_t)n))
        return;
    va_start(ap, fmt);
    vsnprintf(b->p + b->len, (size_t)n + 1, fmt, ap);
    va_end(ap);
    b->len += (size_t)n;
}

/* Writes a HELP text: backslash and newline escaped. */
static void buf_help(buf *b, const char *name, const char *help)
{
    buf_printf(b, "# HELP %s ", name);
    for (const char *p = help ? help : ""; *p != '\0'; p++) {
        if (*p == '\\')
            buf_puts(b, "\\\\");
        else if (*p == '\n')
            buf_puts(b, "\\n");
        else
            buf_put(b, p, 1);
    }
    buf_puts(b, "\n");
}

static void buf_family(buf *b, const char *name, const char *help, const char *type)
{
    buf_help(b, name, help);
    buf_printf(b, "# TYPE %s %s\n", name, type);
}

/* Writes a label value escaped (without quotes). */
static void buf_label_value(buf *b, const char *v)
{
    for (const char *p = v; *p != '\0'; p++) {
        if (*p == '\\')
            buf_puts(b, "\\\\");
        else if (*p == '"')
            buf_puts(b, "\\\"");
        else if (*p == '\n')
            buf_puts(b, "\\n");
        else
            buf_put(b, p, 1);
    }
}

/* Shortest text that reads back as the same double; Prometheus spellings for the specials. */
static void fmt_double(char *out, size_t cap, double v)
{
    if (isnan(v)) {
        snprintf(out, cap, "NaN");
    } else if (isinf(v)) {
        snprintf(out, cap, "%s", v > 0 ? "+Inf" : "-Inf");
    } else {
        snprintf(out, cap, "%.15g", v);
        if (strtod(out, NULL) != v)
            snprintf(out, cap, "%.17g", v);
    }
}

/* `name{labels}` or `name{labels,extra}` or just `name`, then a space. */
static void buf_series(buf *b, const char *name, const char *suffix, const char *labels,
                       const char *extra)
{
    buf_puts(b, name);
    buf_puts(b, suffix);
    bool has_labels = labels != NULL && labels[0] != '\0';
    bool has_extra = extra != NULL && extra[0] != '\0';
    if (has_labels || has_extra) {
        buf_puts(b, "{");
        if (has_labels)
            buf_puts(b, labels);
        if (has_labels && has_extra)
            buf_puts(b, ",");
        if (has_extra)
            buf_puts(b, extra);
        buf_puts(b, "}");
    }
    buf_puts(b, " ");
}

/* The _bucket, _sum and _count lines of one histogram series. counts[] are non-cumulative. */
static void buf_histogram(buf *b, const char *name, const char *labels,
                          const uint64_t counts[NBUCKETS + 1], const char *sum)
{
    uint64_t cum = 0;
    char le[32];
    for (size_t i = 0; i <= NBUCKETS; i++) {
        cum += counts[i];
        snprintf(le, sizeof(le), "le=\"%s\"", i < NBUCKETS ? bucket_le_text[i] : "+Inf");
        buf_series(b, name, "_bucket", labels, le);
        buf_printf(b, "%" PRIu64 "\n", cum);
    }
    buf_series(b, name, "_sum", labels, NULL);
    buf_printf(b, "%s\n", sum);
    buf_series(b, name, "_count", labels, NULL);
    buf_printf(b, "%" PRIu64 "\n", cum);
}

/* ---- registry ------------------------------------------------------------------------------- */

static void method_init(rpc_method *e, const char *key, size_t len, uint64_t hash)
{
    memset(e, 0, sizeof(*e));
    e->hash = hash;
    e->key_len = len;
    memcpy(e->key, key, len);
    e->key[len] = '\0';
    size_t i = 0;
    while (i < len) {
        size_t n = utf8_seq_len((const unsigned char *)key + i, len - i);
        if (n == 0 || (unsigned char)key[i] < 0x20) {
            e->display[i++] = '?';
        } else {
            memcpy(e->display + i, key + i, n);
            i += n;
        }
    }
    e->display[len] = '\0';
    for (size_t c = 0; c < NCODES; c++)
        atomic_init(&e->codes[c], 0);
    for (size_t k = 0; k <= NBUCKETS; k++)
        atomic_init(&e->buckets[k], 0);
    atomic_init(&e->sum_us, 0);
}

int qv_metrics_create(qv_metrics **out)
{
    if (out == NULL)
        return QV_EINVAL;
    *out = NULL;
    qv_metrics *m = calloc(1, sizeof(*m));
    if (m == NULL)
        goto fail_alloc;
    m->other = malloc(sizeof(*m->other));
    if (m->other == NULL)
        goto fail_other;
    method_init(m->other, "other", 5, 0);
    for (size_t i = 0; i < RPC_SLOTS; i++)
        atomic_init(&m->slots[i], NULL);
    atomic_init(&m->nmethods, 0);
    atomic_init(&m->other_used, false);
    atomic_init(&m->dropped, 0);
    m->families_tail = &m->families;
    pthread_mutex_init(&m->rpc_mu, NULL);
    pthread_mutex_init(&m->reg_mu, NULL);
    pthread_mutex_init(&m->collect_mu, NULL);
    *out = m;
    return 0;

fail_other:
    free(m);
fail_alloc:
    return QV_ERESOURCE;
}

void qv_metrics_free(qv_metrics *m)
{
    if (m == NULL)
        return;
    size_t n = atomic_load(&m->nmethods);
    for (size_t i = 0; i < n; i++)
        free(m->order[i]);
    free(m->other);
    family *f = m->families;
    while (f != NULL) {
        family *fn = f->next;
        series *s = f->head;
        while (s != NULL) {
            series *sn = s->next;
            free(s->labels);
            free(s);
            s = sn;
        }
        free(f->name);
        free(f->help);
        free(f);
        f = fn;
    }
    free(m->collectors);
    pthread_mutex_destroy(&m->collect_mu);
    pthread_mutex_destroy(&m->reg_mu);
    pthread_mutex_destroy(&m->rpc_mu);
    free(m);
}

/* ---- RPC ------------------------------------------------------------------------------------ */

static uint64_t fnv1a(const char *s, size_t len)
{
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < len; i++) {
        h ^= (unsigned char)s[i];
        h *= 1099511628211ull;
    }
    return h;
}

static rpc_method *rpc_find(qv_metrics *m, const char *key, size_t len, uint64_t hash)
{
    for (size_t i = 0; i < RPC_SLOTS; i++) {
        rpc_method *e =
            atomic_load_explicit(&m->slots[(hash + i) & (RPC_SLOTS - 1)], memory_order_acquire);
        if (e == NULL)
            return NULL;
        if (e->hash == hash && e->key_len == len && memcmp(e->key, key, len) == 0)
            return e;
    }
    return NULL;
}

static rpc_method *rpc_insert(qv_metrics *m, const char *key, size_t len, uint64_t hash)
{
    pthread_mutex_lock(&m->rpc_mu);
    rpc_method *e = rpc_find(m, key, len, hash); /* another thread may have won */
    size_t n = atomic_load_explicit(&m->nmethods, memory_order_relaxed);
    if (e == NULL && n < QV_METRICS_MAX_METHODS) {
        e = malloc(sizeof(*e));
        if (e != NULL) {
            method_init(e, key, len, hash);
            size_t i = 0;
            while (atomic_load_explicit(&m->slots[(hash + i) & (RPC_SLOTS - 1)],
                                        memory_order_relaxed) != NULL)
                i++; /* terminates: at most half the slots are taken */
            m->order[n] = e;
            atomic_store_explicit(&m->nmethods, n + 1, memory_order_release);
            atomic_store_explicit(&m->slots[(hash + i) & (RPC_SLOTS - 1)], e, memory_order_release);
        }
    }
    pthread_mutex_unlock(&m->rpc_mu);
    if (e == NULL) {
        atomic_store_explicit(&m->other_used, true, memory_order_relaxed);
        e = m->other;
    }
    return e;
}

void qv_metrics_rpc_done(qv_metrics *m, const char *method, int code, uint64_t latency_us)
{
    if (m == NULL)
        return;
    const char *key = method ? method : "unknown";
    size_t len = strnlen(key, METHOD_KEY_MAX);
    uint64_t hash = fnv1a(key, len);
    rpc_method *e = rpc_find(m, key, len, hash);
    if (e == NULL)
        e = rpc_insert(m, key, len, hash);
    size_t slot = code <= 0 && code > -NCODES ? (size_t)-code : CODE_SLOT_UNKNOWN;
    size_t b = 0;
    while (b < NBUCKETS && latency_us > bucket_le_us[b])
        b++;
    atomic_fetch_add_explicit(&e->codes[slot], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->buckets[b], 1, memory_order_relaxed);
    atomic_fetch_add_explicit(&e->sum_us, latency_us, memory_order_relaxed);
}

/* ---- counters and histograms ---------------------------------------------------------------- */

static series *get_series(qv_metrics *m, const char *name, const char *help, const char *labels,
                          mtype t)
{
    char canon[QV_METRICS_LABELS_MAX + 1];
    if (m == NULL || !valid_metric_name(name) ||
        !labels_canon(labels, canon, sizeof(canon), t == T_HIST))
        return NULL;
    series *s = NULL;
    pthread_mutex_lock(&m->reg_mu);
    family *f = m->families;
    while (f != NULL && strcmp(f->name, name) != 0)
        f = f->next;
    if (f == NULL) {
        if (clashes_builtin(name, t) || clashes_registered(m, name, t))
            goto out;
        f = calloc(1, sizeof(*f));
        if (f == NULL)
            goto out;
        f->name = strdup(name);
        f->help = strdup(help ? help : "");
        if (f->name == NULL || f->help == NULL) {
            free(f->name);
            free(f->help);
            free(f);
            goto out;
        }
        f->type = t;
        f->tail = &f->head;
        *m->families_tail = f;
        m->families_tail = &f->next;
    } else if (f->type != t) {
        goto out;
    }
    for (s = f->head; s != NULL; s = s->next)
        if (strcmp(s->labels, canon) == 0)
            goto out;
    s = calloc(1, sizeof(*s));
    if (s == NULL)
        goto out;
    s->labels = strdup(canon);
    if (s->labels == NULL) {
        free(s);
        s = NULL;
        goto out;
    }
    if (t == T_HIST) {
        for (size_t k = 0; k <= NBUCKETS; k++)
            atomic_init(&s->u.hist.buckets[k], 0);
        atomic_init(&s->u.hist.sum_bits, 0); /* the bits of +0.0 */
    } else {
        atomic_init(&s->u.counter.value, 0);
    }
    *f->tail = s;
    f->tail = &s->next;
out:
    pthread_mutex_unlock(&m->reg_mu);
    return s;
}

qv_histogram *qv_metrics_histogram(qv_metrics *m, const char *name, const char *help,
                                   const char *labels)
{
    series *s = get_series(m, name, help, labels, T_HIST);
    return s ? &s->u.hist : NULL;
}

qv_counter *qv_metrics_counter(qv_metrics *m, const char *name, const char *help,
                               const char *labels)
{
    series *s = get_series(m, name, help, labels, T_COUNTER);
    return s ? &s->u.counter : NULL;
}

void qv_histogram_observe(qv_histogram *h, double seconds)
{
    if (h == NULL || isnan(seconds))
        return;
    size_t b = 0;
    while (b < NBUCKETS && seconds > bucket_le_s[b])
        b++;
    atomic_fetch_add_explicit(&h->buckets[b], 1, memory_order_relaxed);
    uint64_t old = atomic_load_explicit(&h->sum_bits, memory_order_relaxed);
    uint64_t next;
    do {
        double d;
        memcpy(&d, &old, sizeof(d));
        d += seconds;
        memcpy(&next, &d, sizeof(next));
    } while (!atomic_compare_exchange_weak_explicit(&h->sum_bits, &old, next, memory_order_relaxed,
                                                    memory_order_relaxed));
}

void qv_counter_add(qv_counter *c, uint64_t n)
{
    if (c != NULL)
        atomic_fetch_add_explicit(&c->value, n, memory_order_relaxed);
}

uint64_t qv_counter_value(const qv_counter *c)
{
    return c ? atomic_load_explicit(&c->value, memory_order_relaxed) : 0;
}

/* ---- collectors ----------------------------------------------------------------------------- */

int qv_metrics_add_collector(qv_metrics *m, qv_metrics_collect_fn fn, void *user)
{
    if (m == NULL || fn == NULL)
        return QV_EINVAL;
    int rc = 0;
    pthread_mutex_lock(&m->collect_mu);
    if (m->ncollectors == m->cap_collectors) {
        size_t cap = m->cap_collectors ? m->cap_collectors * 2 : 8;
        collector *c = realloc(m->collectors, cap * sizeof(*c));
        if (c == NULL) {
            rc = QV_ERESOURCE;
            goto out;
        }
        m->collectors = c;
        m->cap_collectors = cap;
    }
    m->collectors[m->ncollectors].fn = fn;
    m->collectors[m->ncollectors].user = user;
    m->ncollectors++;
out:
    pthread_mutex_unlock(&m->collect_mu);
    return rc;
}

void qv_metrics_remove_collector(qv_metrics *m, qv_metrics_collect_fn fn, void *user)
{
    if (m == NULL)
        return;
    pthread_mutex_lock(&m->collect_mu);
    for (size_t i = 0; i < m->ncollectors; i++) {
        if (m->collectors[i].fn == fn && m->collectors[i].user == user) {
            memmove(&m->collectors[i], &m->collectors[i + 1],
                    (m->ncollectors - i - 1) * sizeof(m->collectors[0]));
            m->ncollectors--;
            break;
        }
    }
    pthread_mutex_unlock(&m->collect_mu);
}

void qv_metrics_gauge(qv_metrics_writer *w, const char *name, const char *help, const char *labels,
                      double value)
{
    if (w == NULL)
        return;
    char canon[QV_METRICS_LABELS_MAX + 1];
    if (!valid_metric_name(name) || !labels_canon(labels, canon, sizeof(canon), false)) {
        w->dropped++;
        return;
    }
    if (w->n == w->cap) {
        size_t cap = w->cap ? w->cap * 2 : 64;
        gauge_sample *v = realloc(w->v, cap * sizeof(*v));
        if (v == NULL) {
            w->dropped++;
            return;
        }
        w->v = v;
        w->cap = cap;
    }
    if (help == NULL)
        help = "";
    size_t nl = strlen(name) + 1, ll = strlen(canon) + 1, hl = strlen(help) + 1;
    char *mem = malloc(nl + ll + hl);
    if (mem == NULL) {
        w->dropped++;
        return;
    }
    memcpy(mem, name, nl);
    memcpy(mem + nl, canon, ll);
    memcpy(mem + nl + ll, help, hl);
    gauge_sample *g = &w->v[w->n];
    g->name = mem;
    g->labels = mem + nl;
    g->help = mem + nl + ll;
    g->value = value;
    g->seq = w->n;
    w->n++;
}

static int gauge_cmp(const void *a, const void *b)
{
    const gauge_sample *x = a, *y = b;
    int c = strcmp(x->name, y->name);
    if (c == 0)
        c = strcmp(x->labels, y->labels);
    if (c == 0)
        c = x->seq < y->seq ? -1 : x->seq > y->seq;
    return c;
}

/* Writes the collected gauges grouped by family; called with reg_mu held. */
static void render_gauges(qv_metrics *m, qv_metrics_writer *w, buf *b)
{
    if (w->n > 1)
        qsort(w->v, w->n, sizeof(w->v[0]), gauge_cmp);
    size_t i = 0;
    while (i < w->n) {
        size_t j = i + 1;
        while (j < w->n && strcmp(w->v[j].name, w->v[i].name) == 0)
            j++;
        /* Samples [i, j) share a name. */
        if (clashes_builtin(w->v[i].name, T_GAUGE) ||
            clashes_registered(m, w->v[i].name, T_GAUGE)) {
            w->dropped += j - i;
            i = j;
            continue;
        }
        size_t first = i;
        for (size_t k = i + 1; k < j; k++)
            if (w->v[k].seq < w->v[first].seq)
                first = k;
        buf_family(b, w->v[i].name, w->v[first].help, "gauge");
        for (size_t k = i; k < j; k++) {
            if (k > i && strcmp(w->v[k].labels, w->v[k - 1].labels) == 0) {
                w->dropped++; /* the same series twice: the first emitted wins */
                continue;
            }
            char val[40];
            fmt_double(val, sizeof(val), w->v[k].value);
            buf_series(b, w->v[k].name, "", w->v[k].labels, NULL);
            buf_printf(b, "%s\n", val);
        }
        i = j;
    }
}

/* ---- process metrics ------------------------------------------------------------------------ */

/* Reads a small /proc file whole; returns its length or -1. */
static ssize_t read_small(const char *path, char *out, size_t cap)
{
    FILE *f = fopen(path, "re");
    if (f == NULL)
        return -1;
    size_t n = fread(out, 1, cap - 1, f);
    fclose(f);
    out[n] = '\0';
    return (ssize_t)n;
}

static void render_process(buf *b)
{
    long tck = sysconf(_SC_CLK_TCK);
    long page = sysconf(_SC_PAGESIZE);
    char text[4096];

    /* /proc/self/stat: the command name sits in parentheses and may hold spaces, so fields are
     * counted from the last ')'; the state is field 3. */
    if (read_small("/proc/self/stat", text, sizeof(text)) > 0 && tck > 0 && page > 0) {
        char *p = strrchr(text, ')');
        unsigned long long f[53] = {0};
        int field = 2;
        if (p != NULL) {
            p++;
            while (*p != '\0' && field < 52) {
                while (*p == ' ')
                    p++;
                if (*p == '\0' || *p == '\n')
                    break;
                field++;
                char *end;
                f[field] = strtoull(p, &end, 10);
                p = end;
                while (*p != '\0' && *p != ' ')
                    p++;
            }
        }
        if (field >= 24) {
            char val[40];
            buf_family(b, "process_cpu_seconds_total",
                       "Total user and system CPU time spent in seconds.", "counter");
            fmt_double(val, sizeof(val), (double)(f[14] + f[15]) / (double)tck);
            buf_printf(b, "process_cpu_seconds_total %s\n", val);
            buf_family(b, "process_virtual_memory_bytes", "Virtual memory size in bytes.", "gauge");
            buf_printf(b, "process_virtual_memory_bytes %llu\n", f[23]);
            buf_family(b, "process_resident_memory_bytes", "Resident memory size in bytes.",
                       "gauge");
            buf_printf(b, "process_resident_memory_bytes %llu\n", f[24] * (unsigned long long)page);

            char stat[8192];
            if (read_small("/proc/stat", stat, sizeof(stat)) > 0) {
                const char *bt = strstr(stat, "\nbtime ");
                if (bt != NULL) {
                    double start = (double)strtoull(bt + 7, NULL, 10) + (double)f[22] / (double)tck;
                    buf_family(b, "process_start_time_seconds",
                               "Start time of the process since unix epoch in seconds.", "gauge");
                    fmt_double(val, sizeof(val), start);
                    buf_printf(b, "process_start_time_seconds %s\n", val);
                }
            }
        }
    }

    DIR *d = opendir("/proc/self/fd");
    if (d != NULL) {
        long n = 0;
        const struct dirent *e;
        while ((e = readdir(d)) != NULL)
            if (e->d_name[0] != '.')
                n++;
        closedir(d);
        buf_family(b, "process_open_fds", "Number of open file descriptors.", "gauge");
        buf_printf(b, "process_open_fds %ld\n", n > 0 ? n - 1 : 0); /* not the one readdir used */
    }
    struct rlimit rl;
    if (getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        buf_family(b, "process_max_fds", "Maximum number of open file descriptors.", "gauge");
        if (rl.rlim_cur == RLIM_INFINITY)
            buf_puts(b, "process_max_fds +Inf\n");
        else
            buf_printf(b, "process_max_fds %llu\n", (unsigned long long)rl.rlim_cur);
    }
}

/* ---- render --------------------------------------------------------------------------------- */

static void render_rpc(qv_metrics *m, buf *b)
{
    size_t n = atomic_load_explicit(&m->nmethods, memory_order_acquire);
    bool other = atomic_load_explicit(&m->other_used, memory_order_relaxed);
    size_t total = n + (other ? 1 : 0);
    buf lab = {0};

    buf_family(b, M_RPC_REQUESTS, "RPCs finished, by full method name and gRPC status code.",
               "counter");
    for (size_t i = 0; i < total; i++) {
        const rpc_method *e = i < n ? m->order[i] : m->other;
        for (size_t c = 0; c < NCODES; c++) {
            uint64_t v = atomic_load_explicit(&e->codes[c], memory_order_relaxed);
            if (v == 0)
                continue;
            buf_puts(b, M_RPC_REQUESTS "{method=\"");
            buf_label_value(b, e->display);
            buf_printf(b, "\",code=\"%s\"} %" PRIu64 "\n", qv_strerror(-(int)c), v);
        }
    }

    buf_family(b, M_RPC_DURATION,
               "Time from a call's arrival to its status being sent, by full method name.",
               "histogram");
    for (size_t i = 0; i < total; i++) {
        const rpc_method *e = i < n ? m->order[i] : m->other;
        uint64_t counts[NBUCKETS + 1];
        for (size_t k = 0; k <= NBUCKETS; k++)
            counts[k] = atomic_load_explicit(&e->buckets[k], memory_order_relaxed);
        lab.len = 0;
        buf_puts(&lab, "method=\"");
        buf_label_value(&lab, e->display);
        buf_puts(&lab, "\"");
        if (lab.oom) {
            b->oom = true;
            break;
        }
        char sum[40];
        fmt_double(sum, sizeof(sum),
                   (double)atomic_load_explicit(&e->sum_us, memory_order_relaxed) / 1e6);
        buf_histogram(b, M_RPC_DURATION, lab.p, counts, sum);
    }
    free(lab.p);
}

static void render_families(qv_metrics *m, buf *b)
{
    for (const family *f = m->families; f != NULL; f = f->next) {
        buf_family(b, f->name, f->help, f->type == T_HIST ? "histogram" : "counter");
        for (const series *s = f->head; s != NULL; s = s->next) {
            if (f->type == T_COUNTER) {
                buf_series(b, f->name, "", s->labels, NULL);
                buf_printf(
                    b, "%" PRIu64 "\n",
                    (uint64_t)atomic_load_explicit(&s->u.counter.value, memory_order_relaxed));
                continue;
            }
            uint64_t counts[NBUCKETS + 1];
            for (size_t k = 0; k <= NBUCKETS; k++)
                counts[k] = atomic_load_explicit(&s->u.hist.buckets[k], memory_order_relaxed);
            uint64_t bits = atomic_load_explicit(&s->u.hist.sum_bits, memory_order_relaxed);
            double d;
            memcpy(&d, &bits, sizeof(d));
            char sum[40];
            fmt_double(sum, sizeof(sum), d);
            buf_histogram(b, f->name, s->labels, counts, sum);
        }
    }
}

int qv_metrics_render(qv_metrics *m, char **out, size_t *len)
{
    if (m == NULL || out == NULL)
        return QV_EINVAL;
    *out = NULL;
    if (len != NULL)
        *len = 0;
    buf b = {0};
    qv_metrics_writer w = {0};

    pthread_mutex_lock(&m->collect_mu);
    for (size_t i = 0; i < m->ncollectors; i++)
        m->collectors[i].fn(&w, m->collectors[i].user);
    pthread_mutex_lock(&m->reg_mu);
    pthread_mutex_unlock(&m->collect_mu);

    render_rpc(m, &b);
    render_families(m, &b);
    render_gauges(m, &w, &b);
    pthread_mutex_unlock(&m->reg_mu);

    uint64_t dropped = atomic_fetch_add(&m->dropped, w.dropped) + w.dropped;
    buf_family(&b, M_DROPPED,
               "Gauge samples from collectors dropped (bad name or labels, clash, duplicate).",
               "counter");
    buf_printf(&b, M_DROPPED " %" PRIu64 "\n", dropped);
    render_process(&b);

    for (size_t i = 0; i < w.n; i++)
        free((char *)w.v[i].name);
    free(w.v);
    if (b.oom || b.p == NULL) {
        free(b.p);
        return QV_ERESOURCE;
    }
    *out = b.p;
    if (len != NULL)
        *len = b.len;
    return 0;
}
