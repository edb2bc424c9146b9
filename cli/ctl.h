/*
 * cli/ctl.h - what the source files of quiverctl share (not a library: one program's parts).
 *
 *   quiverctl.c        main: argument splitting, option tables, help, dispatch; status, members,
 *                      health
 *   ctl_output.c       JSON and aligned-table output, human-readable numbers
 *   ctl_collections.c  collections create | list | describe | drop
 *   ctl_points.c       import and search
 *
 * A command is a `command` value: its name ("collections create" for a subcommand), synopsis,
 * help text, its own options (added to the global ones after the command) and its function.
 * Commands print their result on stdout, failures on stderr, and return an exit code.
 */
#ifndef QV_CLI_CTL_H
#define QV_CLI_CTL_H

#include "sdk/c/quiver.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

enum { EXIT_OK = 0, EXIT_FAIL = 1, EXIT_USAGE = 2 };

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

/* Values of every command's own options; a command reads the ones it declared. Strings are owned
 * by the option parser (qv_config) and live until main returns. */
typedef struct cmdopts {
    /* collections create (and import --create) */
    uint64_t dim, m, ef_construction, ef_search, nlist, nprobe, shards, replication;
    char *metric, *index;
    bool if_not_exists, if_exists, on_disk_payload;
    /* import, search */
    char *collection, *format, *dataset, *labels;
    uint64_t batch, start_id, limit;
    bool create, wait, progress, labels_payload;
    char *vector, *vector_file, *id, *filter;
    uint64_t row, k, ef;
    bool exact, with_payload;
} cmdopts;

/* Most options one command adds to the global ones. */
#define CTL_MAX_CMD_OPTS 24

typedef int (*command_fn)(qv_client *c, const globals *g, const cmdopts *o, int npos, char **pos);

typedef struct command {
    const char *name;
    const char *args;  /* synopsis of the positional arguments, "" for none */
    int min_args;      /* positional arguments required */
    int max_args;      /* positional arguments accepted */
    const char *brief; /* one line for the command list */
    const char *help;  /* preformatted paragraphs for `quiverctl COMMAND --help` */
    /* Appends the command's options to o (room for CTL_MAX_CMD_OPTS) and returns how many; NULL
     * for none. */
    size_t (*opts)(qv_opt *o, cmdopts *v);
    command_fn run;
} command;

extern const command ctl_cmd_collections_create, ctl_cmd_collections_list,
    ctl_cmd_collections_describe, ctl_cmd_collections_drop, ctl_cmd_import, ctl_cmd_search;

/* ---- output (ctl_output.c) --------------------------------------------------------------------
 */

/* Writes s as a JSON string: quotes, backslashes and control characters escaped, invalid UTF-8
 * replaced by U+FFFD so the document always parses. NULL is written as "". */
void ctl_json_str(FILE *out, const char *s);
/* `"key":value` with a leading comma unless *first (which is then cleared). */
void ctl_json_kv_str(FILE *out, bool *first, const char *key, const char *value);
void ctl_json_kv_u64(FILE *out, bool *first, const char *key, uint64_t value);
void ctl_json_kv_bool(FILE *out, bool *first, const char *key, bool value);
/* JSON has no NaN or infinity: those become null. */
void ctl_json_kv_float(FILE *out, bool *first, const char *key, double value);
/* A point id as JSON: a number, or a string for a UUID. */
void ctl_json_point_id(FILE *out, const qv_point_id *id);

/* An aligned text table: cells added row by row, printed with two spaces between columns. */
typedef struct ctl_table {
    size_t ncols;
    size_t ncells;
    size_t cap;
    char **cells;
    bool oom;
} ctl_table;

/* Adds the next cell (row-major), at most 511 bytes. Non-printable bytes become '?' so a hostile
 * string cannot move the terminal's cursor; an empty cell shows as "-". */
void ctl_table_add(ctl_table *t, const char *fmt, ...) QV_PRINTF(2, 3);
/* Prints the table; returns false when a cell could not be stored (nothing printed). */
bool ctl_table_print(const ctl_table *t, FILE *out);
/* Prints, frees, and turns an out-of-memory table into EXIT_FAIL with a message. */
int ctl_table_finish(ctl_table *t);
void ctl_table_free(ctl_table *t);

/* "850ms", "12.3s", "4m05s", "2h03m", "3d04h". */
const char *ctl_fmt_duration(uint64_t ms, char *buf, size_t cap);
/* "512B", "1.5KiB", "35.2MiB", "1.2GiB", "3.0TiB". */
const char *ctl_fmt_bytes(uint64_t b, char *buf, size_t cap);
/* "850us", "1.2ms", "1.50s". */
const char *ctl_fmt_micros(uint32_t us, char *buf, size_t cap);
/* UTC ISO 8601, "-" for 0. */
const char *ctl_fmt_unix_ms(uint64_t ms, char *buf, size_t cap);

/* "quiverctl: MESSAGE (CODE)" on stderr. */
void ctl_print_failure(const qv_status *err);

/* A usage error: the message and a short usage of the command (or the tool, cmd_name NULL) on
 * stderr; returns EXIT_USAGE. */
int ctl_usage_error(const char *cmd_name, const char *fmt, ...) QV_PRINTF(2, 3);

#endif /* QV_CLI_CTL_H */
