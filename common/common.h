/*
 * common/common.h - the floor every Quiver module stands on.
 *
 * Sections, in order: error codes and qv_status; logging; monotonic and wall time; the thread pool;
 * configuration (flags + environment + optional file). Nothing here knows about vectors or RPC.
 * The gRPC wrapper lives in common/rpc/rpc.h and gossip in common/gossip/gossip.h.
 */
#ifndef QV_COMMON_H
#define QV_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

#define QV_VERSION_STRING "0.1.0"

#if defined(__GNUC__)
#define QV_PRINTF(fmt_idx, args_idx) __attribute__((format(printf, fmt_idx, args_idx)))
#define QV_NODISCARD                 __attribute__((warn_unused_result))
#else
#define QV_PRINTF(fmt_idx, args_idx)
#define QV_NODISCARD
#endif

/* ---------------------------------------------------------------------------------------------
 * Errors
 *
 * Functions return 0 on success or a negative QV_E* code. The codes mirror gRPC's status codes
 * one to one (QV_E* == -grpc_status_code), so a handler's error travels to the client unchanged.
 * ------------------------------------------------------------------------------------------- */
enum {
    QV_OK = 0,
    QV_ECANCELLED = -1,    /* the caller gave up (gRPC CANCELLED) */
    QV_EUNKNOWN = -2,      /* UNKNOWN */
    QV_EINVAL = -3,        /* bad input from outside (INVALID_ARGUMENT) */
    QV_ETIMEOUT = -4,      /* a deadline passed (DEADLINE_EXCEEDED) */
    QV_ENOTFOUND = -5,     /* NOT_FOUND */
    QV_EEXIST = -6,        /* ALREADY_EXISTS */
    QV_EPERM = -7,         /* PERMISSION_DENIED */
    QV_ERESOURCE = -8,     /* out of memory, too large, quota (RESOURCE_EXHAUSTED) */
    QV_EPRECONDITION = -9, /* FAILED_PRECONDITION */
    QV_EABORTED = -10,     /* ABORTED */
    QV_ERANGE = -11,       /* OUT_OF_RANGE */
    QV_EUNIMPL = -12,      /* UNIMPLEMENTED */
    QV_EINTERNAL = -13,    /* a bug of ours (INTERNAL) */
    QV_EUNAVAIL = -14,     /* try again later (UNAVAILABLE) */
    QV_ECORRUPT = -15,     /* data loss / checksum mismatch (DATA_LOSS) */
    QV_EAUTH = -16,        /* UNAUTHENTICATED */
};

/* Short constant name of an error code ("INVALID_ARGUMENT"); never NULL, "UNKNOWN" for others. */
const char *qv_strerror(int code);

/* Maps an errno value to the nearest QV_E* code (ENOMEM -> QV_ERESOURCE, ENOENT ->
 * QV_ENOTFOUND...). */
int qv_from_errno(int err);

/* A code plus a human message, returned by value: no allocation, nothing to free. The message is
 * truncated to fit. A zero-initialised qv_status is success. */
#define QV_STATUS_MSG_MAX 256
typedef struct qv_status {
    int code;
    char msg[QV_STATUS_MSG_MAX];
} qv_status;

/* Builds a status from a code and printf-style message. qv_status_ok() is {0, ""}. */
qv_status qv_status_make(int code, const char *fmt, ...) QV_PRINTF(2, 3);
qv_status qv_status_ok(void);
static inline bool qv_status_is_ok(const qv_status *s)
{
    return s->code == QV_OK;
}

/* ---------------------------------------------------------------------------------------------
 * Logging
 *
 * Thread-safe; each record is written with one write(2) so lines never interleave. Records go to
 * stderr unless qv_log_set_fd() names another descriptor. Text format:
 *   2026-11-22T10:00:00.123Z INFO  rpc: server listening addr=127.0.0.1:7070
 * JSON-lines format: {"ts":"...","level":"info","mod":"rpc","msg":"..."} with the message escaped.
 * ------------------------------------------------------------------------------------------- */
typedef enum qv_log_level {
    QV_LOG_DEBUG = 0,
    QV_LOG_INFO = 1,
    QV_LOG_WARN = 2,
    QV_LOG_ERROR = 3,
    QV_LOG_OFF = 4,
} qv_log_level;

typedef enum qv_log_format {
    QV_LOG_TEXT = 0,
    QV_LOG_JSON = 1,
} qv_log_format;

/* Process-wide settings; safe to call at any time from any thread. qv_log_set_fd(-1) goes back
 * to stderr; the log never closes a descriptor it was given. */
void qv_log_set_level(qv_log_level level);
qv_log_level qv_log_get_level(void);
void qv_log_set_format(qv_log_format format);
void qv_log_set_fd(int fd);

/* Parses "debug|info|warn|error|off" / "text|json". Returns 0 or QV_EINVAL. */
int qv_log_parse_level(const char *s, qv_log_level *out);
int qv_log_parse_format(const char *s, qv_log_format *out);

/* Writes one record if level is enabled. `mod` is a short module name ("rpc", "node"). A record
 * longer than 4 KiB is truncated. */
void qv_log(qv_log_level level, const char *mod, const char *fmt, ...) QV_PRINTF(3, 4);
void qv_logv(qv_log_level level, const char *mod, const char *fmt, va_list ap);

#define qv_log_debug(mod, ...) qv_log(QV_LOG_DEBUG, mod, __VA_ARGS__)
#define qv_log_info(mod, ...)  qv_log(QV_LOG_INFO, mod, __VA_ARGS__)
#define qv_log_warn(mod, ...)  qv_log(QV_LOG_WARN, mod, __VA_ARGS__)
#define qv_log_error(mod, ...) qv_log(QV_LOG_ERROR, mod, __VA_ARGS__)

/* ---------------------------------------------------------------------------------------------
 * Time
 * ------------------------------------------------------------------------------------------- */

/* Monotonic clock (CLOCK_MONOTONIC) in nanoseconds / milliseconds since an arbitrary origin. */
uint64_t qv_now_ns(void);
uint64_t qv_now_ms(void);
/* Wall clock (CLOCK_REALTIME) in milliseconds since the Unix epoch. */
uint64_t qv_wall_ms(void);
/* Sleeps at least `ms` milliseconds, resuming after signals. */
void qv_sleep_ms(uint64_t ms);

/* ---------------------------------------------------------------------------------------------
 * Hashing and randomness
 * ------------------------------------------------------------------------------------------- */

/* CRC-32C (Castagnoli), the checksum of every on-disk record. Start with crc = 0; feed chunks by
 * passing the previous result: qv_crc32c(qv_crc32c(0, a, n), b, m) == qv_crc32c(0, a||b, n+m). */
uint32_t qv_crc32c(uint32_t crc, const void *data, size_t len);

/* Fills buf with len bytes from the kernel's CSPRNG (getrandom). Returns 0 or QV_EUNAVAIL. */
int qv_random_bytes(void *buf, size_t len);

/* ---------------------------------------------------------------------------------------------
 * Thread pool
 *
 * A fixed set of worker threads taking tasks from one FIFO queue. Tasks must not block forever:
 * shutdown waits for every queued and running task to finish.
 * ------------------------------------------------------------------------------------------- */
typedef struct qv_pool qv_pool;
typedef void (*qv_task_fn)(void *arg);

/* Starts `threads` workers (>= 1) whose names are "<name>-<i>" (truncated to 15 bytes).
 * `max_queue` bounds queued tasks (0: unbounded). Returns 0, QV_EINVAL or QV_ERESOURCE. */
int qv_pool_create(const char *name, unsigned threads, size_t max_queue, qv_pool **out);

/* Queues fn(arg). Returns 0; QV_ERESOURCE when the queue is full (the task is not queued);
 * QV_EUNAVAIL after shutdown began. Thread-safe; may be called from a task. */
int qv_pool_submit(qv_pool *pool, qv_task_fn fn, void *arg);

/* Number of tasks queued but not yet started (a snapshot). */
size_t qv_pool_queued(qv_pool *pool);
unsigned qv_pool_threads(const qv_pool *pool);

/* Stops accepting tasks, runs every queued task, joins the workers and frees the pool.
 * Must not be called from one of the pool's own tasks. NULL is ignored. */
void qv_pool_destroy(qv_pool *pool);

/* ---------------------------------------------------------------------------------------------
 * Configuration
 *
 * A program declares its options once in a table; qv_config_parse() fills them from, in rising
 * priority: the defaults in the table, an optional config file, the environment, the command line.
 *
 *   - Command line: `--name value`, `--name=value`; booleans only as bare `--name` / `--no-name`
 *     or `--name=false` (a boolean never takes the next argument, so `--dev false` is an error).
 *   - Environment: <PREFIX>_<NAME> with the name upper-cased and '-' turned into '_'
 *     (prefix "QUIVER": --grpc-addr -> QUIVER_GRPC_ADDR).
 *   - File: named by the option `--config FILE` (or <PREFIX>_CONFIG); lines `name = value`,
 *     '#' starts a comment, blank lines ignored, names as on the command line without dashes.
 *   - `--help` / `-h` prints qv_config_usage() to stdout; `--version` prints the version.
 *
 * Every value from outside is validated: unknown options, a missing value, a malformed number,
 * a number out of [min, max], an unknown enum choice each fail with a message that names the
 * source (flag, env variable, or file:line).
 * ------------------------------------------------------------------------------------------- */
typedef enum qv_opt_type {
    QV_OPT_STRING, /* target: char **, heap copy owned by the config (freed by qv_config_free) */
    QV_OPT_INT,    /* target: int64_t *, bounds min..max */
    QV_OPT_UINT,   /* target: uint64_t *, bounds min..max (as unsigned) */
    QV_OPT_DOUBLE, /* target: double *, bounds dmin..dmax */
    QV_OPT_BOOL,   /* target: bool *, accepts true/false/1/0/yes/no/on/off */
    QV_OPT_ENUM,   /* target: char **, must be one of `choices` ("a|b|c") */
} qv_opt_type;

typedef struct qv_opt {
    const char *name;    /* long flag without dashes, e.g. "grpc" */
    qv_opt_type type;    /* how the value is parsed */
    void *target;        /* where the value goes (type above) */
    const char *def;     /* default as text; NULL means "no default" (string stays NULL) */
    const char *help;    /* one line for --help */
    const char *choices; /* QV_OPT_ENUM only: "l2|cosine|dot" */
    int64_t min, max;    /* QV_OPT_INT / QV_OPT_UINT bounds; both 0 means unbounded (a one-
                            sided bound spells out the other side, e.g. INT64_MAX) */
    double dmin, dmax;   /* QV_OPT_DOUBLE bounds; both 0 means unbounded */
} qv_opt;

typedef struct qv_config {
    const char *program;    /* name shown in usage and errors, e.g. "quiver-node" */
    const char *summary;    /* one paragraph shown at the top of --help */
    const char *env_prefix; /* e.g. "QUIVER"; NULL disables environment lookup */
    qv_opt *opts;           /* the table; terminated by an entry whose name is NULL */
    /* Filled by qv_config_parse: positional arguments (argv elements, not copied), in an array
     * that ends with NULL and is freed by qv_config_free. */
    int npositional;
    char **positional;
    /* private bookkeeping for qv_config_free */
    void *priv__;
} qv_config;

/* Outcome of qv_config_parse besides errors. */
enum {
    QV_CONFIG_RUN = 0,    /* go on */
    QV_CONFIG_EXITED = 1, /* --help or --version was printed; the caller should exit(0) */
};

/* Parses configuration into the targets. `cfg` must start zero-initialised apart from the
 * program/summary/env_prefix/opts fields (designated initialisers do this). Returns QV_CONFIG_RUN,
 * QV_CONFIG_EXITED, or a negative code with a message in *err (QV_EINVAL for bad input,
 * QV_ENOTFOUND for an unreadable config file, QV_ERESOURCE for allocation failure). On error the
 * targets may hold partial values; qv_config_free() still releases everything. Not thread-safe
 * (call it once, from main). */
int qv_config_parse(qv_config *cfg, int argc, char **argv, qv_status *err);

/* Writes the usage text (summary, then every option with type, default, env variable and help). */
void qv_config_usage(const qv_config *cfg, FILE *out);

/* Frees the strings qv_config_parse allocated and sets those targets to NULL. */
void qv_config_free(qv_config *cfg);

#ifdef __cplusplus
}
#endif

#endif /* QV_COMMON_H */
