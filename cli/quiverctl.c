/*
 * quiverctl - the operator's command line, over the C SDK (sdk/c/quiver.h).
 *
 * The command line is `quiverctl [global options] COMMAND [options] [ARGS]`. main() splits argv at
 * the command (split_argv), parses the part before it with the global option table and the part
 * after it with a table of the same options without defaults, so a flag given after the command
 * (`quiverctl members --json`) overrides one given before it and nothing else does. Both parses go
 * through qv_config (common/common.h) for strict validation; --help is answered here, because the
 * tool's help lists the commands and qv_config only knows options.
 *
 * Each command connects, makes its calls, and prints either an aligned table (struct table) or
 * one JSON document (json_*). Exit codes: 0 success, 1 operation failed (unreachable, an error
 * status, not SERVING), 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L
#include "sdk/c/quiver.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

#define DEFAULT_ADDR "127.0.0.1:7070"

/* Values of the global options, shared by both parses. */
typedef struct globals {
    char *addr;
    uint64_t timeout_ms;
    bool json;
    bool tls;
    char *tls_ca;
    char *tls_cert;
    char *tls_key;
    char *tls_server_name;
} globals;

typedef int (*command_fn)(qv_client *c, const globals *g, int npos, char **pos);

typedef struct command {
    const char *name;
    const char *args;  /* synopsis of the positional arguments, "" for none */
    int max_args;      /* positional arguments accepted */
    const char *brief; /* one line for the command list */
    const char *help;  /* preformatted paragraphs for `quiverctl COMMAND --help` */
    command_fn run;
} command;

/* ---- output helpers ----------------------------------------------------------------------------
 */

/* Length of the valid UTF-8 sequence at p, or 0 when it is not one (RFC 3629: no overlongs, no
 * surrogates, nothing past U+10FFFF). */
static size_t utf8_len(const unsigned char *p)
{
    unsigned c = p[0];
    size_t n;
    unsigned lo = 0x80, hi = 0xBF; /* allowed range of the second byte */
    if (c >= 0xC2 && c <= 0xDF) {
        n = 2;
    } else if (c >= 0xE0 && c <= 0xEF) {
        n = 3;
        if (c == 0xE0)
            lo = 0xA0;
        if (c == 0xED)
            hi = 0x9F;
    } else if (c >= 0xF0 && c <= 0xF4) {
        n = 4;
        if (c == 0xF0)
            lo = 0x90;
        if (c == 0xF4)
            hi = 0x8F;
    } else {
        return 0;
    }
    if (p[1] < lo || p[1] > hi)
        return 0;
    for (size_t i = 2; i < n; i++)
        if (p[i] < 0x80 || p[i] > 0xBF)
            return 0;
    return n;
}

/* Writes s as a JSON string: quotes, backslashes and control characters escaped, invalid UTF-8
 * replaced by U+FFFD so the document always parses. */
static void json_str(FILE *out, const char *s)
{
    const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");
    fputc('"', out);
    while (*p != '\0') {
        unsigned c = *p;
        if (c == '"' || c == '\\') {
            fputc('\\', out);
            fputc((int)c, out);
            p++;
        } else if (c < 0x20 || c == 0x7f) {
            switch (c) {
            case '\n':
                fputs("\\n", out);
                break;
            case '\r':
                fputs("\\r", out);
                break;
            case '\t':
                fputs("\\t", out);
                break;
            case '\b':
                fputs("\\b", out);
                break;
            case '\f':
                fputs("\\f", out);
                break;
            default:
                fprintf(out, "\\u%04x", c);
            }
            p++;
        } else if (c < 0x80) {
            fputc((int)c, out);
            p++;
        } else {
            size_t n = utf8_len(p);
            if (n == 0) {
                fputs("\\ufffd", out);
                p++;
            } else {
                fwrite(p, 1, n, out);
                p += n;
            }
        }
    }
    fputc('"', out);
}

/* `"key":"value"` with a leading comma unless first. */
static void json_kv_str(FILE *out, bool *first, const char *key, const char *value)
{
    fprintf(out, "%s\"%s\":", *first ? "" : ",", key);
    json_str(out, value);
    *first = false;
}

static void json_kv_u64(FILE *out, bool *first, const char *key, uint64_t value)
{
    fprintf(out, "%s\"%s\":%" PRIu64, *first ? "" : ",", key, value);
    *first = false;
}

static void json_kv_bool(FILE *out, bool *first, const char *key, bool value)
{
    fprintf(out, "%s\"%s\":%s", *first ? "" : ",", key, value ? "true" : "false");
    *first = false;
}

/* JSON has no NaN or infinity: those become null. */
static void json_kv_float(FILE *out, bool *first, const char *key, double value)
{
    if (isfinite(value))
        fprintf(out, "%s\"%s\":%.6g", *first ? "" : ",", key, value);
    else
        fprintf(out, "%s\"%s\":null", *first ? "" : ",", key);
    *first = false;
}

/* An aligned text table: cells added row by row, printed with two spaces between columns. */
typedef struct table {
    size_t ncols;
    size_t ncells;
    size_t cap;
    char **cells;
    bool oom;
} table;

static void table_add(table *t, const char *fmt, ...) QV_PRINTF(2, 3);

/* Adds the next cell (row-major). Non-printable bytes become '?' so a hostile string cannot
 * move the terminal's cursor; an empty cell shows as "-". */
static void table_add(table *t, const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    if (buf[0] == '\0')
        snprintf(buf, sizeof(buf), "-");
    for (char *p = buf; *p != '\0'; p++)
        if ((unsigned char)*p < 0x20 || (unsigned char)*p == 0x7f)
            *p = '?';
    if (t->ncells == t->cap) {
        size_t cap = t->cap ? t->cap * 2 : 64;
        char **n = realloc(t->cells, cap * sizeof(*n));
        if (n == NULL) {
            t->oom = true;
            return;
        }
        t->cells = n;
        t->cap = cap;
    }
    char *copy = strdup(buf);
    if (copy == NULL) {
        t->oom = true;
        return;
    }
    t->cells[t->ncells++] = copy;
}

/* Prints the table; returns false when a cell could not be stored (nothing printed). */
static bool table_print(const table *t, FILE *out)
{
    size_t width[32] = {0};
    size_t ncols = t->ncols;
    if (t->oom || ncols == 0 || ncols > sizeof(width) / sizeof(width[0]) || t->ncells % ncols != 0)
        return false;
    for (size_t i = 0; i < t->ncells; i++) {
        size_t len = strlen(t->cells[i]);
        if (len > width[i % ncols])
            width[i % ncols] = len;
    }
    for (size_t i = 0; i < t->ncells; i++) {
        size_t col = i % ncols;
        if (col + 1 == ncols)
            fprintf(out, "%s\n", t->cells[i]);
        else
            fprintf(out, "%-*s  ", (int)width[col], t->cells[i]);
    }
    return true;
}

static void table_free(table *t)
{
    for (size_t i = 0; i < t->ncells; i++)
        free(t->cells[i]);
    free(t->cells);
    memset(t, 0, sizeof(*t));
}

/* "850ms", "12.3s", "4m05s", "2h03m", "3d04h". */
static const char *fmt_duration(uint64_t ms, char *buf, size_t cap)
{
    uint64_t s = ms / 1000;
    if (ms < 1000)
        snprintf(buf, cap, "%" PRIu64 "ms", ms);
    else if (s < 60)
        snprintf(buf, cap, "%.1fs", (double)ms / 1000.0);
    else if (s < 3600)
        snprintf(buf, cap, "%" PRIu64 "m%02" PRIu64 "s", s / 60, s % 60);
    else if (s < 86400)
        snprintf(buf, cap, "%" PRIu64 "h%02" PRIu64 "m", s / 3600, s % 3600 / 60);
    else
        snprintf(buf, cap, "%" PRIu64 "d%02" PRIu64 "h", s / 86400, s % 86400 / 3600);
    return buf;
}

/* "512B", "1.5KiB", "35.2MiB", "1.2GiB", "3.0TiB". */
static const char *fmt_bytes(uint64_t b, char *buf, size_t cap)
{
    static const char *const units[] = {"KiB", "MiB", "GiB", "TiB", "PiB"};
    if (b < 1024) {
        snprintf(buf, cap, "%" PRIu64 "B", b);
        return buf;
    }
    double v = (double)b / 1024.0;
    size_t u = 0;
    while (v >= 1024.0 && u + 1 < sizeof(units) / sizeof(units[0])) {
        v /= 1024.0;
        u++;
    }
    snprintf(buf, cap, "%.1f%s", v, units[u]);
    return buf;
}

/* "850us", "1.2ms", "1.50s". */
static const char *fmt_micros(uint32_t us, char *buf, size_t cap)
{
    if (us < 1000)
        snprintf(buf, cap, "%" PRIu32 "us", us);
    else if (us < 1000000)
        snprintf(buf, cap, "%.1fms", (double)us / 1000.0);
    else
        snprintf(buf, cap, "%.2fs", (double)us / 1e6);
    return buf;
}

/* UTC ISO 8601, "-" for 0. */
static const char *fmt_unix_ms(uint64_t ms, char *buf, size_t cap)
{
    if (ms == 0) {
        snprintf(buf, cap, "-");
        return buf;
    }
    time_t t = (time_t)(ms / 1000);
    struct tm tm;
    if (gmtime_r(&t, &tm) == NULL || strftime(buf, cap, "%Y-%m-%dT%H:%M:%SZ", &tm) == 0)
        snprintf(buf, cap, "%" PRIu64, ms);
    return buf;
}

static void print_failure(const qv_status *err)
{
    fprintf(stderr, "quiverctl: %s (%s)\n", err->msg[0] != '\0' ? err->msg : "failed",
            qv_strerror(err->code));
}

/* ---- commands ----------------------------------------------------------------------------------
 */

static int cmd_status(qv_client *c, const globals *g, int npos, char **pos)
{
    qv_cluster_status st;
    qv_status err = qv_status_ok();
    if (qv_client_cluster_status(c, &st, &err) != 0) {
        print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        bool first = true;
        FILE *o = stdout;
        fputc('{', o);
        json_kv_str(o, &first, "node_id", st.node_id);
        json_kv_str(o, &first, "mode", qv_node_mode_name(st.mode));
        json_kv_str(o, &first, "version", st.version);
        json_kv_str(o, &first, "grpc_address", st.grpc_address);
        json_kv_str(o, &first, "gossip_address", st.gossip_address);
        json_kv_u64(o, &first, "uptime_ms", st.uptime_ms);
        json_kv_u64(o, &first, "started_at_unix_ms", st.started_at_unix_ms);
        json_kv_u64(o, &first, "members_alive", st.members_alive);
        json_kv_u64(o, &first, "members_total", st.members_total);
        json_kv_u64(o, &first, "collections", st.collections);
        json_kv_u64(o, &first, "shards_total", st.shards_total);
        json_kv_u64(o, &first, "shards_leaderless", st.shards_leaderless);
        json_kv_str(o, &first, "meta_leader_id", st.meta_leader_id);
        json_kv_u64(o, &first, "meta_term", st.meta_term);
        json_kv_str(o, &first, "data_dir", st.data_dir);
        json_kv_bool(o, &first, "healthy", st.healthy);
        json_kv_str(o, &first, "status_message", st.status_message);
        fputs("}\n", o);
        qv_cluster_status_free(&st);
        return EXIT_OK;
    }

    char a[64], b[64];
    table t = {.ncols = 2};
    table_add(&t, "node id");
    table_add(&t, "%s", st.node_id);
    table_add(&t, "mode");
    table_add(&t, "%s", qv_node_mode_name(st.mode));
    table_add(&t, "version");
    table_add(&t, "%s", st.version);
    table_add(&t, "grpc address");
    table_add(&t, "%s", st.grpc_address);
    table_add(&t, "gossip address");
    table_add(&t, "%s", st.gossip_address);
    table_add(&t, "uptime");
    table_add(&t, "%s (since %s)", fmt_duration(st.uptime_ms, a, sizeof(a)),
              fmt_unix_ms(st.started_at_unix_ms, b, sizeof(b)));
    table_add(&t, "members");
    table_add(&t, "%" PRIu32 " alive / %" PRIu32 " total", st.members_alive, st.members_total);
    table_add(&t, "collections");
    table_add(&t, "%" PRIu32, st.collections);
    table_add(&t, "shards");
    table_add(&t, "%" PRIu32 " (%" PRIu32 " without a leader)", st.shards_total,
              st.shards_leaderless);
    table_add(&t, "meta leader");
    table_add(&t, "%s (term %" PRIu64 ")", st.meta_leader_id[0] ? st.meta_leader_id : "unknown",
              st.meta_term);
    table_add(&t, "data dir");
    table_add(&t, "%s", st.data_dir);
    table_add(&t, "healthy");
    table_add(&t, "%s", st.healthy ? "yes" : "no");
    if (st.status_message[0] != '\0') {
        table_add(&t, "status message");
        table_add(&t, "%s", st.status_message);
    }
    bool ok = table_print(&t, stdout);
    table_free(&t);
    qv_cluster_status_free(&st);
    if (!ok) {
        fprintf(stderr, "quiverctl: out of memory\n");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static void member_json(FILE *o, const qv_member *m)
{
    bool first = true;
    fputc('{', o);
    json_kv_str(o, &first, "id", m->id);
    json_kv_str(o, &first, "role", qv_node_mode_name(m->role));
    json_kv_str(o, &first, "grpc_address", m->grpc_address);
    json_kv_str(o, &first, "gossip_address", m->gossip_address);
    json_kv_str(o, &first, "state", qv_member_state_name(m->state));
    json_kv_u64(o, &first, "incarnation", m->incarnation);
    json_kv_u64(o, &first, "last_update_age_ms", m->last_update_age_ms);
    json_kv_str(o, &first, "version", m->version);
    json_kv_bool(o, &first, "draining", m->draining);
    json_kv_bool(o, &first, "is_self", m->is_self);
    if (m->has_load) {
        const qv_member_load *l = &m->load;
        bool lf = true;
        fputs(",\"load\":{", o);
        json_kv_float(o, &lf, "cpu", l->cpu);
        json_kv_u64(o, &lf, "memory_bytes", l->memory_bytes);
        json_kv_u64(o, &lf, "disk_used_bytes", l->disk_used_bytes);
        json_kv_u64(o, &lf, "disk_free_bytes", l->disk_free_bytes);
        json_kv_u64(o, &lf, "replicas", l->replicas);
        json_kv_u64(o, &lf, "leaders", l->leaders);
        json_kv_u64(o, &lf, "inflight_requests", l->inflight_requests);
        json_kv_float(o, &lf, "search_qps", l->search_qps);
        json_kv_u64(o, &lf, "search_p95_us", l->search_p95_us);
        fputc('}', o);
    } else {
        fputs(",\"load\":null", o);
    }
    fputc('}', o);
}

static int cmd_members(qv_client *c, const globals *g, int npos, char **pos)
{
    qv_member *ms = NULL;
    size_t n = 0;
    qv_status err = qv_status_ok();
    if (qv_client_members(c, &ms, &n, &err) != 0) {
        print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        const char *self_id = "";
        for (size_t i = 0; i < n; i++)
            if (ms[i].is_self)
                self_id = ms[i].id;
        fputs("{\"self_id\":", stdout);
        json_str(stdout, self_id);
        fputs(",\"members\":[", stdout);
        for (size_t i = 0; i < n; i++) {
            if (i > 0)
                fputc(',', stdout);
            member_json(stdout, &ms[i]);
        }
        fputs("]}\n", stdout);
        qv_members_free(ms, n);
        return EXIT_OK;
    }

    static const char *const head[] = {
        "NAME",       "ROLE",    "GRPC-ADDRESS", "GOSSIP-ADDRESS", "STATE", "INCARNATION",
        "UPDATE-AGE", "VERSION", "CPU",          "MEMORY",         "DISK",  "REPLICAS",
        "LEADERS",    "QPS",     "P95",          "FLAGS",
    };
    table t = {.ncols = sizeof(head) / sizeof(head[0])};
    for (size_t i = 0; i < t.ncols; i++)
        table_add(&t, "%s", head[i]);
    for (size_t i = 0; i < n; i++) {
        const qv_member *m = &ms[i];
        char a[64];
        table_add(&t, "%s", m->id);
        table_add(&t, "%s", qv_node_mode_name(m->role));
        table_add(&t, "%s", m->grpc_address);
        table_add(&t, "%s", m->gossip_address);
        table_add(&t, "%s", qv_member_state_name(m->state));
        table_add(&t, "%" PRIu64, m->incarnation);
        table_add(&t, "%s", fmt_duration(m->last_update_age_ms, a, sizeof(a)));
        table_add(&t, "%s", m->version);
        if (m->has_load) {
            const qv_member_load *l = &m->load;
            table_add(&t, "%.0f%%", isfinite(l->cpu) ? (double)l->cpu * 100.0 : 0.0);
            table_add(&t, "%s", fmt_bytes(l->memory_bytes, a, sizeof(a)));
            table_add(&t, "%s", fmt_bytes(l->disk_used_bytes, a, sizeof(a)));
            table_add(&t, "%" PRIu32, l->replicas);
            table_add(&t, "%" PRIu32, l->leaders);
            table_add(&t, "%.1f", isfinite(l->search_qps) ? (double)l->search_qps : 0.0);
            table_add(&t, "%s", fmt_micros(l->search_p95_us, a, sizeof(a)));
        } else {
            for (int k = 0; k < 7; k++)
                table_add(&t, "-");
        }
        table_add(&t, "%s%s%s", m->is_self ? "self" : "", m->is_self && m->draining ? "," : "",
                  m->draining ? "draining" : "");
    }
    bool ok = table_print(&t, stdout);
    table_free(&t);
    qv_members_free(ms, n);
    if (!ok) {
        fprintf(stderr, "quiverctl: out of memory\n");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int cmd_health(qv_client *c, const globals *g, int npos, char **pos)
{
    const char *service = npos > 0 ? pos[0] : "";
    int serving = 0;
    qv_status err = qv_status_ok();
    if (qv_client_health(c, service, &serving, &err) != 0) {
        print_failure(&err);
        return EXIT_FAIL;
    }
    const char *word = serving ? "SERVING" : "NOT_SERVING";
    if (g->json) {
        bool first = true;
        fputc('{', stdout);
        json_kv_str(stdout, &first, "service", service);
        json_kv_str(stdout, &first, "status", word);
        json_kv_bool(stdout, &first, "serving", serving != 0);
        fputs("}\n", stdout);
    } else if (service[0] != '\0') {
        /* Names come from the command line, but keep the terminal safe all the same. */
        table t = {.ncols = 2};
        table_add(&t, "%s", service);
        table_add(&t, "%s", word);
        if (!table_print(&t, stdout))
            fprintf(stderr, "quiverctl: out of memory\n");
        table_free(&t);
    } else {
        printf("%s\n", word);
    }
    return serving ? EXIT_OK : EXIT_FAIL;
}

static const command commands[] = {
    {"status", "", 0, "this process's view: id, mode, addresses, uptime, health",
     "Asks the process at --addr for its own view (quiver.v1.Cluster/Status), answered without\n"
     "contacting other members: node id, mode (node, router, dev), version, gRPC and gossip\n"
     "addresses, uptime and start time, members ALIVE / known (itself included), collections,\n"
     "shards, metadata leader, data directory, and whether it is healthy (and why not).\n",
     cmd_status},
    {"members", "", 0, "gossip members: state, addresses, incarnation, age, load",
     "Lists every cluster member the process at --addr knows through gossip\n"
     "(quiver.v1.Cluster/Members), sorted by name, one row each: name, role, gRPC and gossip\n"
     "addresses, state (ALIVE, SUSPECT, DEAD, LEFT), SWIM incarnation, age of the latest update\n"
     "heard about it, version, load (CPU, memory, disk used, replicas, leaders, search QPS and\n"
     "p95), and flags (self: the member that answered; draining). A crashed member shows SUSPECT,\n"
     "then DEAD within the detection bound of docs/gossip.md (about 29 s for up to 9 members).\n",
     cmd_members},
    {"health", "[SERVICE]", 1, "health check; exit 0 when SERVING, 1 otherwise",
     "Calls grpc.health.v1.Health/Check for SERVICE (default \"\": the process as a whole; or a\n"
     "full service name such as quiver.v1.Cluster) and prints SERVING or NOT_SERVING.\n"
     "Exit code 0 when SERVING; 1 when NOT_SERVING, the service is unknown (NOT_FOUND) or the\n"
     "process cannot be reached. Suitable for scripts and container health checks.\n",
     cmd_health},
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i].name, name) == 0)
            return &commands[i];
    return NULL;
}

/* ---- option tables and help ------------------------------------------------------------------ */

#define NGLOBAL_OPTS 8

/* The global options. with_defaults = false gives the table parsed after the command: the same
 * options and bounds, but nothing is set unless given there. */
static void global_opts(qv_opt *o, globals *g, bool with_defaults, const char *addr_def)
{
    memset(o, 0, (NGLOBAL_OPTS + 1) * sizeof(*o));
    o[0] = (qv_opt){.name = "addr",
                    .type = QV_OPT_STRING,
                    .target = &g->addr,
                    .def = with_defaults ? addr_def : NULL,
                    .help = "address of a quiver-node or quiver-router, HOST:PORT or [IPv6]:PORT "
                            "(the default comes from the environment variable QUIVER_ADDR when "
                            "it is set)"};
    o[1] = (qv_opt){.name = "timeout-ms",
                    .type = QV_OPT_UINT,
                    .target = &g->timeout_ms,
                    .def = with_defaults ? "10000" : NULL,
                    .help = "deadline of each call in milliseconds",
                    .min = 1,
                    .max = 3600000};
    o[2] = (qv_opt){.name = "json",
                    .type = QV_OPT_BOOL,
                    .target = &g->json,
                    .def = with_defaults ? "false" : NULL,
                    .help = "print one JSON document instead of a table"};
    o[3] = (qv_opt){.name = "tls",
                    .type = QV_OPT_BOOL,
                    .target = &g->tls,
                    .def = with_defaults ? "false" : NULL,
                    .help = "use TLS (implied by --tls-ca and --tls-cert); without --tls-ca the "
                            "server certificate is checked against the system roots"};
    o[4] = (qv_opt){.name = "tls-ca",
                    .type = QV_OPT_STRING,
                    .target = &g->tls_ca,
                    .help = "PEM CA bundle the server certificate must chain to"};
    o[5] = (qv_opt){.name = "tls-cert",
                    .type = QV_OPT_STRING,
                    .target = &g->tls_cert,
                    .help = "PEM client certificate chain, for mutual TLS (needs --tls-key)"};
    o[6] = (qv_opt){.name = "tls-key",
                    .type = QV_OPT_STRING,
                    .target = &g->tls_key,
                    .help = "PEM private key of --tls-cert"};
    o[7] = (qv_opt){.name = "tls-server-name",
                    .type = QV_OPT_STRING,
                    .target = &g->tls_server_name,
                    .help = "name the server certificate must carry (default: the host of --addr)"};
}

/* Does `--name` (no '=') take the next argument as its value? */
static bool takes_value(const qv_opt *o, const char *name)
{
    if (strcmp(name, "config") == 0)
        return true;
    for (; o->name != NULL; o++)
        if (strcmp(o->name, name) == 0)
            return o->type != QV_OPT_BOOL;
    return false;
}

/* Splits argv at the first argument that is neither an option nor an option's value: the command.
 * *nglobal is how many argv elements (from 0) the global parse gets; *cmd is the command's index
 * or -1. *help tells whether -h/--help came before the command. Values are recognised as
 * qv_config does: `--name value` unless value starts with "--". */
static void split_argv(int argc, char **argv, const qv_opt *o, int *nglobal, int *cmd, bool *help)
{
    *help = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0) {
            *nglobal = i;
            *cmd = i + 1 < argc ? i + 1 : -1;
            return;
        }
        if (a[0] != '-' || a[1] == '\0') {
            *nglobal = i;
            *cmd = i;
            return;
        }
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            *help = true;
            continue;
        }
        if (a[1] == '-' && strchr(a, '=') == NULL && takes_value(o, a + 2) && i + 1 < argc &&
            strncmp(argv[i + 1], "--", 2) != 0)
            i++;
    }
    *nglobal = argc;
    *cmd = -1;
}

/* Whether -h/--help appears among a command's arguments (before "--", not as a value). */
static bool wants_help(int argc, char **argv, const qv_opt *o)
{
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (strcmp(a, "--") == 0)
            return false;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0)
            return true;
        if (a[0] == '-' && a[1] == '-' && strchr(a, '=') == NULL && takes_value(o, a + 2) &&
            i + 1 < argc && strncmp(argv[i + 1], "--", 2) != 0)
            i++;
    }
    return false;
}

/* The option list of qv_config_usage, without its generic "Usage:" line. */
static void print_options(const qv_opt *o, const char *title, FILE *out)
{
    qv_config cfg = {.program = "quiverctl", .opts = (qv_opt *)o};
    char *buf = NULL;
    size_t len = 0;
    FILE *m = open_memstream(&buf, &len);
    if (m == NULL)
        return;
    qv_config_usage(&cfg, m);
    fclose(m);
    const char *list = strstr(buf, "\nOptions:\n");
    fprintf(out, "%s:\n%s", title, list != NULL ? list + strlen("\nOptions:\n") : buf);
    free(buf);
}

static void print_synopsis(FILE *out)
{
    fputs("Usage: quiverctl [global options] COMMAND [options] [ARGS]\n", out);
}

static void print_command_list(FILE *out)
{
    fputs("Commands:\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        char left[64];
        snprintf(left, sizeof(left), "%s %s", commands[i].name, commands[i].args);
        fprintf(out, "  %-18s%s\n", left, commands[i].brief);
    }
    fprintf(out, "  %-18s%s\n", "help [COMMAND]", "this help, or a command's");
}

static const char exit_codes[] =
    "Exit codes: 0 success; 1 the server could not be reached, answered an error, or is not\n"
    "SERVING; 2 bad usage (unknown command or option, malformed value, bad --addr).\n";

static void tool_help(const qv_opt *gopts, FILE *out)
{
    print_synopsis(out);
    fputs("\nquiverctl operates a Quiver cluster through the gRPC API of one quiver-node or\n"
          "quiver-router (--addr). Tables are for people; --json prints one JSON document.\n\n",
          out);
    print_command_list(out);
    fputc('\n', out);
    print_options(gopts, "Global options (also accepted after the command)", out);
    fputc('\n', out);
    fputs(exit_codes, out);
}

static void command_help(const command *cmd, const qv_opt *gopts, FILE *out)
{
    fprintf(out, "Usage: quiverctl [global options] %s [options]%s%s\n\n", cmd->name,
            cmd->args[0] ? " " : "", cmd->args);
    fputs(cmd->help, out);
    fputc('\n', out);
    print_options(gopts, "Options (global options may come before or after the command)", out);
    fputc('\n', out);
    fputs(exit_codes, out);
}

static int usage_error(const char *cmd_name, const char *fmt, ...) QV_PRINTF(2, 3);

/* A usage error: the message and a short usage on stderr; returns EXIT_USAGE. */
static int usage_error(const char *cmd_name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "quiverctl%s%s: ", cmd_name ? " " : "", cmd_name ? cmd_name : "");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    const command *cmd = cmd_name != NULL ? find_command(cmd_name) : NULL;
    if (cmd != NULL) {
        fprintf(stderr, "Usage: quiverctl [global options] %s [options]%s%s\n", cmd->name,
                cmd->args[0] ? " " : "", cmd->args);
        fprintf(stderr, "Run 'quiverctl %s --help' for its options.\n", cmd->name);
    } else {
        print_synopsis(stderr);
        print_command_list(stderr);
        fputs("Run 'quiverctl --help' for the options.\n", stderr);
    }
    return EXIT_USAGE;
}

/* ---- main
 * ---------------------------------------------------------------------------------------- */

static int run_command(const command *cmd, const globals *g, int npos, char **pos)
{
    qv_client_opts copts = {
        .timeout_ms = (int64_t)g->timeout_ms,
        .tls = g->tls,
        .tls_ca_path = g->tls_ca,
        .tls_cert_path = g->tls_cert,
        .tls_key_path = g->tls_key,
        .tls_server_name = g->tls_server_name,
    };
    qv_client *c = NULL;
    qv_status err = qv_status_ok();
    int rc = qv_client_connect(g->addr, &copts, &c, &err);
    if (rc == QV_EINVAL)
        return usage_error(cmd->name, "%s", err.msg);
    if (rc != 0) {
        print_failure(&err);
        return EXIT_FAIL;
    }
    int code = cmd->run(c, g, npos, pos);
    qv_client_close(c);
    return code;
}

int main(int argc, char **argv)
{
    /* A closed stdout (quiverctl ... | head) is an output error to report, not a signal. */
    signal(SIGPIPE, SIG_IGN);

    globals g;
    memset(&g, 0, sizeof(g));
    const char *env_addr = getenv("QUIVER_ADDR");
    const char *addr_def = env_addr != NULL && env_addr[0] != '\0' ? env_addr : DEFAULT_ADDR;
    qv_opt gopts[NGLOBAL_OPTS + 1];
    qv_opt copts[NGLOBAL_OPTS + 1];
    global_opts(gopts, &g, true, addr_def);
    global_opts(copts, &g, false, addr_def);

    /* The environment is read for QUIVER_ADDR only: QUIVER_TLS_CERT, QUIVER_CONFIG and the like
     * are quiver-node's (a server certificate is no client certificate). */
    qv_config gcfg = {.program = "quiverctl", .opts = gopts};
    qv_config ccfg = {.program = "quiverctl", .opts = copts};
    qv_status err = qv_status_ok();
    int code = EXIT_USAGE;
    int nglobal = 0, cmd_idx = -1;
    bool help = false;
    split_argv(argc, argv, gopts, &nglobal, &cmd_idx, &help);
    if (help) {
        tool_help(gopts, stdout);
        code = EXIT_OK;
        goto out;
    }
    int rc = qv_config_parse(&gcfg, nglobal, argv, &err);
    if (rc == QV_CONFIG_EXITED) { /* --version */
        code = EXIT_OK;
        goto out;
    }
    if (rc < 0) {
        if (rc == QV_EINVAL) {
            code = usage_error(NULL, "%s", err.msg);
        } else {
            fprintf(stderr, "quiverctl: %s\n", err.msg); /* an unreadable --config file */
            code = EXIT_FAIL;
        }
        goto out;
    }
    if (cmd_idx < 0) {
        code = usage_error(NULL, "no command given");
        goto out;
    }
    const char *name = argv[cmd_idx];
    int cargc = argc - cmd_idx;
    char **cargv = argv + cmd_idx;
    if (strcmp(name, "help") == 0) {
        const command *topic = cargc > 1 ? find_command(cargv[1]) : NULL;
        if (cargc > 2 || (cargc == 2 && topic == NULL)) {
            code = usage_error("help", "unknown command '%s'", cargv[cargc - 1]);
            goto out;
        }
        if (topic != NULL)
            command_help(topic, gopts, stdout);
        else
            tool_help(gopts, stdout);
        code = EXIT_OK;
        goto out;
    }
    const command *cmd = find_command(name);
    if (cmd == NULL) {
        code = usage_error(NULL, "unknown command '%s'", name);
        goto out;
    }
    if (wants_help(cargc, cargv, copts)) {
        command_help(cmd, gopts, stdout);
        code = EXIT_OK;
        goto out;
    }
    rc = qv_config_parse(&ccfg, cargc, cargv, &err);
    if (rc == QV_CONFIG_EXITED) {
        code = EXIT_OK;
        goto out;
    }
    if (rc < 0) {
        if (rc == QV_EINVAL) {
            code = usage_error(cmd->name, "%s", err.msg);
        } else {
            fprintf(stderr, "quiverctl %s: %s\n", cmd->name, err.msg);
            code = EXIT_FAIL;
        }
        goto out;
    }
    if (ccfg.npositional > cmd->max_args) {
        code = usage_error(cmd->name, "unexpected argument '%s'", ccfg.positional[cmd->max_args]);
        goto out;
    }
    code = run_command(cmd, &g, ccfg.npositional, ccfg.positional);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "quiverctl: cannot write the output\n");
        code = EXIT_FAIL;
    }
out:
    qv_config_free(&ccfg);
    qv_config_free(&gcfg);
    return code;
}
