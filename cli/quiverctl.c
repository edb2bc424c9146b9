/*
 * quiverctl - the operator's command line, over the C SDK (sdk/c/quiver.h). The files of the tool
 * and how a command is declared are described in ctl.h.
 *
 * The command line is `quiverctl [global options] COMMAND [SUBCOMMAND] [options] [ARGS]`. main()
 * splits argv at the command (split_argv), parses the part before it with the global option table
 * and the part after it with a table of the same options without defaults followed by the
 * command's own options, so a flag given after the command (`quiverctl members --json`) overrides
 * one given before it and nothing else does. Both parses go through qv_config (common/common.h)
 * for strict validation; --help is answered here, because the tool's help lists the commands and
 * qv_config only knows options. `collections` is a group: its subcommand is the next argument.
 *
 * Each command connects, makes its calls, and prints either an aligned table (ctl_table) or one
 * JSON document (ctl_json_*). Exit codes: 0 success, 1 operation failed (unreachable, an error
 * status, not SERVING, a bad input file), 2 bad usage.
 */
#define _POSIX_C_SOURCE 200809L
#include "cli/ctl.h"

#include <inttypes.h>
#include <math.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DEFAULT_ADDR "127.0.0.1:7070"

/* ---- commands ----------------------------------------------------------------------------------
 */

static int cmd_status(qv_client *c, const globals *g, const cmdopts *opts, int npos, char **pos)
{
    qv_cluster_status st;
    qv_status err = qv_status_ok();
    if (qv_client_cluster_status(c, &st, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        bool first = true;
        FILE *o = stdout;
        fputc('{', o);
        ctl_json_kv_str(o, &first, "node_id", st.node_id);
        ctl_json_kv_str(o, &first, "mode", qv_node_mode_name(st.mode));
        ctl_json_kv_str(o, &first, "version", st.version);
        ctl_json_kv_str(o, &first, "grpc_address", st.grpc_address);
        ctl_json_kv_str(o, &first, "gossip_address", st.gossip_address);
        ctl_json_kv_u64(o, &first, "uptime_ms", st.uptime_ms);
        ctl_json_kv_u64(o, &first, "started_at_unix_ms", st.started_at_unix_ms);
        ctl_json_kv_u64(o, &first, "members_alive", st.members_alive);
        ctl_json_kv_u64(o, &first, "members_total", st.members_total);
        ctl_json_kv_u64(o, &first, "collections", st.collections);
        ctl_json_kv_u64(o, &first, "shards_total", st.shards_total);
        ctl_json_kv_u64(o, &first, "shards_leaderless", st.shards_leaderless);
        ctl_json_kv_str(o, &first, "meta_leader_id", st.meta_leader_id);
        ctl_json_kv_u64(o, &first, "meta_term", st.meta_term);
        ctl_json_kv_str(o, &first, "data_dir", st.data_dir);
        ctl_json_kv_bool(o, &first, "healthy", st.healthy);
        ctl_json_kv_str(o, &first, "status_message", st.status_message);
        fputs("}\n", o);
        qv_cluster_status_free(&st);
        return EXIT_OK;
    }

    char a[64], b[64];
    ctl_table t = {.ncols = 2};
    ctl_table_add(&t, "node id");
    ctl_table_add(&t, "%s", st.node_id);
    ctl_table_add(&t, "mode");
    ctl_table_add(&t, "%s", qv_node_mode_name(st.mode));
    ctl_table_add(&t, "version");
    ctl_table_add(&t, "%s", st.version);
    ctl_table_add(&t, "grpc address");
    ctl_table_add(&t, "%s", st.grpc_address);
    ctl_table_add(&t, "gossip address");
    ctl_table_add(&t, "%s", st.gossip_address);
    ctl_table_add(&t, "uptime");
    ctl_table_add(&t, "%s (since %s)", ctl_fmt_duration(st.uptime_ms, a, sizeof(a)),
                  ctl_fmt_unix_ms(st.started_at_unix_ms, b, sizeof(b)));
    ctl_table_add(&t, "members");
    ctl_table_add(&t, "%" PRIu32 " alive / %" PRIu32 " total", st.members_alive, st.members_total);
    ctl_table_add(&t, "collections");
    ctl_table_add(&t, "%" PRIu32, st.collections);
    ctl_table_add(&t, "shards");
    ctl_table_add(&t, "%" PRIu32 " (%" PRIu32 " without a leader)", st.shards_total,
                  st.shards_leaderless);
    ctl_table_add(&t, "meta leader");
    ctl_table_add(&t, "%s (term %" PRIu64 ")", st.meta_leader_id[0] ? st.meta_leader_id : "unknown",
                  st.meta_term);
    ctl_table_add(&t, "data dir");
    ctl_table_add(&t, "%s", st.data_dir);
    ctl_table_add(&t, "healthy");
    ctl_table_add(&t, "%s", st.healthy ? "yes" : "no");
    if (st.status_message[0] != '\0') {
        ctl_table_add(&t, "status message");
        ctl_table_add(&t, "%s", st.status_message);
    }
    bool ok = ctl_table_print(&t, stdout);
    ctl_table_free(&t);
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
    ctl_json_kv_str(o, &first, "id", m->id);
    ctl_json_kv_str(o, &first, "role", qv_node_mode_name(m->role));
    ctl_json_kv_str(o, &first, "grpc_address", m->grpc_address);
    ctl_json_kv_str(o, &first, "gossip_address", m->gossip_address);
    ctl_json_kv_str(o, &first, "state", qv_member_state_name(m->state));
    ctl_json_kv_u64(o, &first, "incarnation", m->incarnation);
    ctl_json_kv_u64(o, &first, "last_update_age_ms", m->last_update_age_ms);
    ctl_json_kv_str(o, &first, "version", m->version);
    ctl_json_kv_bool(o, &first, "draining", m->draining);
    ctl_json_kv_bool(o, &first, "is_self", m->is_self);
    if (m->has_load) {
        const qv_member_load *l = &m->load;
        bool lf = true;
        fputs(",\"load\":{", o);
        ctl_json_kv_float(o, &lf, "cpu", l->cpu);
        ctl_json_kv_u64(o, &lf, "memory_bytes", l->memory_bytes);
        ctl_json_kv_u64(o, &lf, "disk_used_bytes", l->disk_used_bytes);
        ctl_json_kv_u64(o, &lf, "disk_free_bytes", l->disk_free_bytes);
        ctl_json_kv_u64(o, &lf, "replicas", l->replicas);
        ctl_json_kv_u64(o, &lf, "leaders", l->leaders);
        ctl_json_kv_u64(o, &lf, "inflight_requests", l->inflight_requests);
        ctl_json_kv_float(o, &lf, "search_qps", l->search_qps);
        ctl_json_kv_u64(o, &lf, "search_p95_us", l->search_p95_us);
        fputc('}', o);
    } else {
        fputs(",\"load\":null", o);
    }
    fputc('}', o);
}

static int cmd_members(qv_client *c, const globals *g, const cmdopts *opts, int npos, char **pos)
{
    qv_member *ms = NULL;
    size_t n = 0;
    qv_status err = qv_status_ok();
    if (qv_client_members(c, &ms, &n, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    if (g->json) {
        const char *self_id = "";
        for (size_t i = 0; i < n; i++)
            if (ms[i].is_self)
                self_id = ms[i].id;
        fputs("{\"self_id\":", stdout);
        ctl_json_str(stdout, self_id);
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
    ctl_table t = {.ncols = sizeof(head) / sizeof(head[0])};
    for (size_t i = 0; i < t.ncols; i++)
        ctl_table_add(&t, "%s", head[i]);
    for (size_t i = 0; i < n; i++) {
        const qv_member *m = &ms[i];
        char a[64];
        ctl_table_add(&t, "%s", m->id);
        ctl_table_add(&t, "%s", qv_node_mode_name(m->role));
        ctl_table_add(&t, "%s", m->grpc_address);
        ctl_table_add(&t, "%s", m->gossip_address);
        ctl_table_add(&t, "%s", qv_member_state_name(m->state));
        ctl_table_add(&t, "%" PRIu64, m->incarnation);
        ctl_table_add(&t, "%s", ctl_fmt_duration(m->last_update_age_ms, a, sizeof(a)));
        ctl_table_add(&t, "%s", m->version);
        if (m->has_load) {
            const qv_member_load *l = &m->load;
            ctl_table_add(&t, "%.0f%%", isfinite(l->cpu) ? (double)l->cpu * 100.0 : 0.0);
            ctl_table_add(&t, "%s", ctl_fmt_bytes(l->memory_bytes, a, sizeof(a)));
            ctl_table_add(&t, "%s", ctl_fmt_bytes(l->disk_used_bytes, a, sizeof(a)));
            ctl_table_add(&t, "%" PRIu32, l->replicas);
            ctl_table_add(&t, "%" PRIu32, l->leaders);
            ctl_table_add(&t, "%.1f", isfinite(l->search_qps) ? (double)l->search_qps : 0.0);
            ctl_table_add(&t, "%s", ctl_fmt_micros(l->search_p95_us, a, sizeof(a)));
        } else {
            for (int k = 0; k < 7; k++)
                ctl_table_add(&t, "-");
        }
        ctl_table_add(&t, "%s%s%s", m->is_self ? "self" : "", m->is_self && m->draining ? "," : "",
                      m->draining ? "draining" : "");
    }
    bool ok = ctl_table_print(&t, stdout);
    ctl_table_free(&t);
    qv_members_free(ms, n);
    if (!ok) {
        fprintf(stderr, "quiverctl: out of memory\n");
        return EXIT_FAIL;
    }
    return EXIT_OK;
}

static int cmd_health(qv_client *c, const globals *g, const cmdopts *opts, int npos, char **pos)
{
    const char *service = npos > 0 ? pos[0] : "";
    int serving = 0;
    qv_status err = qv_status_ok();
    if (qv_client_health(c, service, &serving, &err) != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    const char *word = serving ? "SERVING" : "NOT_SERVING";
    if (g->json) {
        bool first = true;
        fputc('{', stdout);
        ctl_json_kv_str(stdout, &first, "service", service);
        ctl_json_kv_str(stdout, &first, "status", word);
        ctl_json_kv_bool(stdout, &first, "serving", serving != 0);
        fputs("}\n", stdout);
    } else if (service[0] != '\0') {
        /* Names come from the command line, but keep the terminal safe all the same. */
        ctl_table t = {.ncols = 2};
        ctl_table_add(&t, "%s", service);
        ctl_table_add(&t, "%s", word);
        if (!ctl_table_print(&t, stdout))
            fprintf(stderr, "quiverctl: out of memory\n");
        ctl_table_free(&t);
    } else {
        printf("%s\n", word);
    }
    return serving ? EXIT_OK : EXIT_FAIL;
}

static const command cmd_status_def = {
    "status",
    "",
    0,
    0,
    "this process's view: id, mode, addresses, uptime, health",
    "Asks the process at --addr for its own view (quiver.v1.Cluster/Status), answered without\n"
    "contacting other members: node id, mode (node, router, dev), version, gRPC and gossip\n"
    "addresses, uptime and start time, members ALIVE / known (itself included), collections,\n"
    "shards, metadata leader, data directory, and whether it is healthy (and why not).\n",
    NULL,
    cmd_status};

static const command cmd_members_def = {
    "members",
    "",
    0,
    0,
    "gossip members: state, addresses, incarnation, age, load",
    "Lists every cluster member the process at --addr knows through gossip\n"
    "(quiver.v1.Cluster/Members), sorted by name, one row each: name, role, gRPC and gossip\n"
    "addresses, state (ALIVE, SUSPECT, DEAD, LEFT), SWIM incarnation, age of the latest update\n"
    "heard about it, version, load (CPU, memory, disk used, replicas, leaders, search QPS and\n"
    "p95), and flags (self: the member that answered; draining). A crashed member shows SUSPECT,\n"
    "then DEAD within the detection bound of docs/gossip.md (about 29 s for up to 9 members).\n",
    NULL,
    cmd_members};

static const command cmd_health_def = {
    "health",
    "[SERVICE]",
    0,
    1,
    "health check; exit 0 when SERVING, 1 otherwise",
    "Calls grpc.health.v1.Health/Check for SERVICE (default \"\": the process as a whole; or a\n"
    "full service name such as quiver.v1.Cluster) and prints SERVING or NOT_SERVING.\n"
    "Exit code 0 when SERVING; 1 when NOT_SERVING, the service is unknown (NOT_FOUND) or the\n"
    "process cannot be reached. Suitable for scripts and container health checks.\n",
    NULL,
    cmd_health};

static const command *const commands[] = {
    &cmd_status_def,           &cmd_members_def,
    &cmd_health_def,           &ctl_cmd_collections_create,
    &ctl_cmd_collections_list, &ctl_cmd_collections_describe,
    &ctl_cmd_collections_drop, &ctl_cmd_import,
    &ctl_cmd_search,
};
#define NCOMMANDS (sizeof(commands) / sizeof(commands[0]))

/* Command groups: the word before a subcommand ("collections create"). */
static const char *const groups[] = {"collections"};
#define NGROUPS (sizeof(groups) / sizeof(groups[0]))

static const command *find_command(const char *name)
{
    for (size_t i = 0; i < NCOMMANDS; i++)
        if (strcmp(commands[i]->name, name) == 0)
            return commands[i];
    return NULL;
}

static const char *find_group(const char *name)
{
    for (size_t i = 0; i < NGROUPS; i++)
        if (strcmp(groups[i], name) == 0)
            return groups[i];
    return NULL;
}

/* Whether `cmd` belongs to `group` ("collections create" to "collections"). */
static bool in_group(const command *cmd, const char *group)
{
    size_t n = strlen(group);
    return strncmp(cmd->name, group, n) == 0 && cmd->name[n] == ' ';
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

/* The option list of qv_config_usage, without its generic "Usage:" line; without the generic
 * --config, --help and --version too unless `generic` (a command's own options: the global list
 * that follows has them). */
static void print_options(const qv_opt *o, const char *title, bool generic, FILE *out)
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
    list = list != NULL ? list + strlen("\nOptions:\n") : buf;
    char *cut = generic ? NULL : strstr(list, "  --config ");
    if (cut != NULL)
        cut[0] = '\0';
    fprintf(out, "%s:\n%s", title, list);
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
        snprintf(left, sizeof(left), "%s %s", commands[i]->name, commands[i]->args);
        fprintf(out, "  %-29s%s\n", left, commands[i]->brief);
    }
    fprintf(out, "  %-29s%s\n", "help [COMMAND]", "this help, or a command's");
}

static const char exit_codes[] =
    "Exit codes: 0 success; 1 the server could not be reached, answered an error, or is not\n"
    "SERVING, or an input file is unreadable or malformed; 2 bad usage (unknown command or\n"
    "option, malformed or missing value, bad --addr).\n";

static void tool_help(const qv_opt *gopts, FILE *out)
{
    print_synopsis(out);
    fputs("\nquiverctl operates a Quiver cluster through the gRPC API of one quiver-node or\n"
          "quiver-router (--addr). Tables are for people; --json prints one JSON document.\n\n",
          out);
    print_command_list(out);
    fputc('\n', out);
    print_options(gopts, "Global options (also accepted after the command)", true, out);
    fputc('\n', out);
    fputs(exit_codes, out);
}

static void group_help(const char *group, FILE *out)
{
    fprintf(out, "Usage: quiverctl [global options] %s SUBCOMMAND [options] [ARGS]\n\n", group);
    fputs("Subcommands:\n", out);
    for (size_t i = 0; i < NCOMMANDS; i++) {
        if (!in_group(commands[i], group))
            continue;
        char left[64];
        snprintf(left, sizeof(left), "%s %s", commands[i]->name + strlen(group) + 1,
                 commands[i]->args);
        fprintf(out, "  %-18s%s\n", left, commands[i]->brief);
    }
    fprintf(out, "\nRun 'quiverctl %s SUBCOMMAND --help' for a subcommand's options.\n", group);
}

/* cmd_opts: the command's own options (may be empty), gopts the global ones. */
static void command_help(const command *cmd, const qv_opt *cmd_opts, const qv_opt *gopts, FILE *out)
{
    fprintf(out, "Usage: quiverctl [global options] %s [options]%s%s\n\n", cmd->name,
            cmd->args[0] ? " " : "", cmd->args);
    fputs(cmd->help, out);
    fputc('\n', out);
    if (cmd_opts != NULL && cmd_opts[0].name != NULL) {
        print_options(cmd_opts, "Options", false, out);
        fputc('\n', out);
    }
    print_options(gopts, "Global options (before or after the command)", true, out);
    fputc('\n', out);
    fputs(exit_codes, out);
}

int ctl_usage_error(const char *cmd_name, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    fprintf(stderr, "quiverctl%s%s: ", cmd_name ? " " : "", cmd_name ? cmd_name : "");
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fputc('\n', stderr);
    const command *cmd = cmd_name != NULL ? find_command(cmd_name) : NULL;
    const char *group = cmd_name != NULL ? find_group(cmd_name) : NULL;
    if (cmd != NULL) {
        fprintf(stderr, "Usage: quiverctl [global options] %s [options]%s%s\n", cmd->name,
                cmd->args[0] ? " " : "", cmd->args);
        fprintf(stderr, "Run 'quiverctl %s --help' for its options.\n", cmd->name);
    } else if (group != NULL) {
        group_help(group, stderr);
    } else {
        print_synopsis(stderr);
        print_command_list(stderr);
        fputs("Run 'quiverctl --help' for the options.\n", stderr);
    }
    return EXIT_USAGE;
}

/* ---- main
 * ---------------------------------------------------------------------------------------- */

static int run_command(const command *cmd, const globals *g, const cmdopts *o, int npos, char **pos)
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
        return ctl_usage_error(cmd->name, "%s", err.msg);
    if (rc != 0) {
        ctl_print_failure(&err);
        return EXIT_FAIL;
    }
    int code = cmd->run(c, g, o, npos, pos);
    qv_client_close(c);
    return code;
}

/* `help [COMMAND [SUBCOMMAND]]`. */
static int help_command(int cargc, char **cargv, const qv_opt *gopts, cmdopts *v)
{
    if (cargc == 1) {
        tool_help(gopts, stdout);
        return EXIT_OK;
    }
    char name[64];
    const char *group = find_group(cargv[1]);
    if (group != NULL && cargc == 3)
        snprintf(name, sizeof(name), "%s %s", group, cargv[2]);
    else
        snprintf(name, sizeof(name), "%s", cargv[1]);
    const command *topic = find_command(name);
    if (group != NULL && cargc == 2) {
        group_help(group, stdout);
        return EXIT_OK;
    }
    if (topic == NULL || cargc > (group != NULL ? 3 : 2))
        return ctl_usage_error("help", "unknown command '%s'", name);
    qv_opt o[CTL_MAX_CMD_OPTS + 1];
    memset(o, 0, sizeof(o));
    if (topic->opts != NULL)
        topic->opts(o, v);
    command_help(topic, o, gopts, stdout);
    return EXIT_OK;
}

int main(int argc, char **argv)
{
    /* A closed stdout (quiverctl ... | head) is an output error to report, not a signal. */
    signal(SIGPIPE, SIG_IGN);

    globals g;
    cmdopts v;
    memset(&g, 0, sizeof(g));
    memset(&v, 0, sizeof(v));
    const char *env_addr = getenv("QUIVER_ADDR");
    const char *addr_def = env_addr != NULL && env_addr[0] != '\0' ? env_addr : DEFAULT_ADDR;
    qv_opt gopts[NGLOBAL_OPTS + 1];
    qv_opt copts[NGLOBAL_OPTS + CTL_MAX_CMD_OPTS + 1];
    qv_opt own[CTL_MAX_CMD_OPTS + 1]; /* the command's own options, for its help */
    memset(copts, 0, sizeof(copts));  /* the command's options go after the global ones */
    memset(own, 0, sizeof(own));
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
            code = ctl_usage_error(NULL, "%s", err.msg);
        } else {
            fprintf(stderr, "quiverctl: %s\n", err.msg); /* an unreadable --config file */
            code = EXIT_FAIL;
        }
        goto out;
    }
    if (cmd_idx < 0) {
        code = ctl_usage_error(NULL, "no command given");
        goto out;
    }
    const char *name = argv[cmd_idx];
    int cargc = argc - cmd_idx;
    char **cargv = argv + cmd_idx;
    if (strcmp(name, "help") == 0) {
        code = help_command(cargc, cargv, gopts, &v);
        goto out;
    }
    char full[64];
    const char *group = find_group(name);
    if (group != NULL) {
        /* The subcommand is the next argument; the parse below starts after it. */
        if (cargc < 2 || strcmp(cargv[1], "-h") == 0 || strcmp(cargv[1], "--help") == 0) {
            if (cargc < 2) {
                code = ctl_usage_error(group, "no subcommand given");
            } else {
                group_help(group, stdout);
                code = EXIT_OK;
            }
            goto out;
        }
        snprintf(full, sizeof(full), "%s %s", group, cargv[1]);
        if (find_command(full) == NULL) {
            code = ctl_usage_error(group, "unknown subcommand '%s'", cargv[1]);
            goto out;
        }
        name = full;
        cargc--;
        cargv++;
    }
    const command *cmd = find_command(name);
    if (cmd == NULL) {
        code = ctl_usage_error(NULL, "unknown command '%s'", name);
        goto out;
    }
    if (cmd->opts != NULL) {
        size_t n = cmd->opts(own, &v);
        memcpy(copts + NGLOBAL_OPTS, own, n * sizeof(*own));
    }
    if (wants_help(cargc, cargv, copts)) {
        command_help(cmd, own, gopts, stdout);
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
            code = ctl_usage_error(cmd->name, "%s", err.msg);
        } else {
            fprintf(stderr, "quiverctl %s: %s\n", cmd->name, err.msg);
            code = EXIT_FAIL;
        }
        goto out;
    }
    if (ccfg.npositional > cmd->max_args) {
        code =
            ctl_usage_error(cmd->name, "unexpected argument '%s'", ccfg.positional[cmd->max_args]);
        goto out;
    }
    if (ccfg.npositional < cmd->min_args) {
        code = ctl_usage_error(cmd->name, "missing %s", cmd->args);
        goto out;
    }
    code = run_command(cmd, &g, &v, ccfg.npositional, ccfg.positional);
    if (fflush(stdout) != 0 || ferror(stdout)) {
        fprintf(stderr, "quiverctl: cannot write the output\n");
        code = EXIT_FAIL;
    }
out:
    qv_config_free(&ccfg);
    qv_config_free(&gcfg);
    return code;
}
