/*
 * Configuration: an option table filled from defaults, a file, the environment and argv.
 *
 * qv_config_parse() works in two steps. scan_argv() reads the command line once: each option is
 * resolved against the table and recorded as an assignment, positional arguments are collected,
 * and --help, --version and --config are noted. Nothing is applied yet, so --help works next to a
 * malformed option and the file named by --config is read before the environment is. Then values
 * are applied in rising priority: the table's defaults, the file, the environment, and the
 * recorded assignments in argv order, so the last of repeated flags wins. Every value goes through
 * set_value(), which parses and checks it and names its source in any error.
 *
 * String and enum targets receive heap copies. The private state (qv__cfg_state, in priv__)
 * remembers the copy last stored in each target: a value from a higher-priority source frees the
 * one it replaces, and qv_config_free() frees the last.
 *
 * Booleans never take the next argument as their value: `--tls false` is the flag --tls followed
 * by the positional "false". They take `--tls=false` or `--no-tls`.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/common.h"

#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define QV__CFG_LINE_MAX  4096 /* bytes in one config file line, without its newline */
#define QV__CFG_SRC_MAX   320  /* "file:line", "--name" or "ENV_NAME" for error messages */
#define QV__USAGE_WIDTH   80
#define QV__USAGE_COL_MAX 32 /* the help column starts at most here */

typedef struct qv__cfg_state {
    size_t nopts;
    char **owned; /* owned[i]: the heap copy now in opts[i].target, or NULL */
} qv__cfg_state;

/* One option found on the command line, applied after the file and the environment. */
typedef struct qv__assign {
    size_t opt;
    const char *value;
} qv__assign;

typedef struct qv__scan {
    qv__assign *assigns;
    size_t nassigns;
    bool help;
    bool version;
    const char *config_path; /* from --config, or NULL */
} qv__scan;

static const char *program_name(const qv_config *cfg)
{
    return cfg->program != NULL ? cfg->program : "quiver";
}

static int fail(qv_status *err, int code, const char *fmt, ...) QV_PRINTF(3, 4);

/* Fills *err and returns code, so error paths read `rc = fail(err, QV_EINVAL, ...)`. */
static int fail(qv_status *err, int code, const char *fmt, ...)
{
    va_list ap;
    va_start(ap, fmt);
    err->code = code;
    vsnprintf(err->msg, sizeof(err->msg), fmt, ap);
    va_end(ap);
    return code;
}

static long find_opt(const qv_config *cfg, const char *name, size_t len)
{
    for (long i = 0; cfg->opts != NULL && cfg->opts[i].name != NULL; i++) {
        const char *n = cfg->opts[i].name;
        if (strlen(n) == len && strncmp(n, name, len) == 0)
            return i;
    }
    return -1;
}

/* "QUIVER" + "grpc-addr" -> "QUIVER_GRPC_ADDR". Returns false when it does not fit. */
static bool env_name(const char *prefix, const char *name, char *buf, size_t cap)
{
    int n = snprintf(buf, cap, "%s_%s", prefix, name);
    if (n < 0 || (size_t)n >= cap)
        return false;
    for (char *p = buf + strlen(prefix) + 1; *p != '\0'; p++) {
        unsigned char c = (unsigned char)*p;
        *p = isalnum(c) ? (char)toupper(c) : '_';
    }
    return true;
}

/* ---- value parsing ------------------------------------------------------------------------- */

enum { NUM_OK = 0, NUM_SYNTAX = 1, NUM_RANGE = 2, NUM_NEGATIVE = 3 };

/* Digits of a decimal or 0x-hex number after an optional sign; nothing else, not even spaces. */
static int parse_magnitude(const char *s, bool *neg, uint64_t *out)
{
    const char *p = s;
    *neg = false;
    if (*p == '+' || *p == '-') {
        *neg = *p == '-';
        p++;
    }
    int base = 10;
    if (p[0] == '0' && (p[1] == 'x' || p[1] == 'X')) {
        base = 16;
        p += 2;
    }
    if (base == 10 ? !isdigit((unsigned char)*p) : !isxdigit((unsigned char)*p))
        return NUM_SYNTAX;
    char *end;
    errno = 0;
    unsigned long long v = strtoull(p, &end, base);
    if (*end != '\0')
        return NUM_SYNTAX;
    if (errno == ERANGE)
        return NUM_RANGE;
    *out = (uint64_t)v;
    return NUM_OK;
}

static int parse_i64(const char *s, int64_t *out)
{
    bool neg;
    uint64_t mag;
    int rc = parse_magnitude(s, &neg, &mag);
    if (rc != NUM_OK)
        return rc;
    if (neg) {
        if (mag > (uint64_t)INT64_MAX + 1)
            return NUM_RANGE;
        *out = mag == (uint64_t)INT64_MAX + 1 ? INT64_MIN : -(int64_t)mag;
    } else {
        if (mag > (uint64_t)INT64_MAX)
            return NUM_RANGE;
        *out = (int64_t)mag;
    }
    return NUM_OK;
}

static int parse_u64(const char *s, uint64_t *out)
{
    bool neg;
    uint64_t mag;
    int rc = parse_magnitude(s, &neg, &mag);
    if (rc != NUM_OK)
        return rc;
    if (neg && mag != 0)
        return NUM_NEGATIVE;
    *out = mag;
    return NUM_OK;
}

static int parse_double(const char *s, double *out)
{
    /* strtod skips leading space and reads "nan", "inf" and hex floats; only plain numbers pass. */
    if (*s == '\0' || isspace((unsigned char)*s))
        return NUM_SYNTAX;
    char *end;
    errno = 0;
    double v = strtod(s, &end);
    if (*end != '\0')
        return NUM_SYNTAX;
    if (isnan(v))
        return NUM_SYNTAX;
    if (isinf(v))
        return errno == ERANGE ? NUM_RANGE : NUM_SYNTAX;
    *out = v;
    return NUM_OK;
}

static bool parse_bool(const char *s, bool *out)
{
    static const char *const yes[] = {"true", "1", "yes", "on"};
    static const char *const no[] = {"false", "0", "no", "off"};
    for (size_t i = 0; i < sizeof(yes) / sizeof(yes[0]); i++) {
        if (strcasecmp(s, yes[i]) == 0) {
            *out = true;
            return true;
        }
        if (strcasecmp(s, no[i]) == 0) {
            *out = false;
            return true;
        }
    }
    return false;
}

/* Finds s among "a|b|c" ignoring case; choice and len give the spelling in the table. */
static bool find_choice(const char *choices, const char *s, const char **choice, size_t *len)
{
    size_t slen = strlen(s);
    const char *p = choices;
    for (;;) {
        const char *bar = strchr(p, '|');
        size_t n = bar != NULL ? (size_t)(bar - p) : strlen(p);
        if (n == slen && strncasecmp(p, s, n) == 0) {
            *choice = p;
            *len = n;
            return true;
        }
        if (bar == NULL)
            return false;
        p = bar + 1;
    }
}

static int store_string(qv_config *cfg, size_t idx, const char *s, size_t len, qv_status *err)
{
    qv__cfg_state *st = cfg->priv__;
    char *copy = malloc(len + 1);
    if (copy == NULL)
        return fail(err, QV_ERESOURCE, "--%s: out of memory", cfg->opts[idx].name);
    memcpy(copy, s, len);
    copy[len] = '\0';
    free(st->owned[idx]);
    st->owned[idx] = copy;
    *(char **)cfg->opts[idx].target = copy;
    return QV_OK;
}

static bool int_bounded(const qv_opt *o)
{
    return o->min != 0 || o->max != 0;
}

static bool double_bounded(const qv_opt *o)
{
    return o->dmin != 0 || o->dmax != 0;
}

/* Parses `value` for option idx and stores it; `src` names where it came from for messages. */
static int set_value(qv_config *cfg, size_t idx, const char *value, const char *src, qv_status *err)
{
    const qv_opt *o = &cfg->opts[idx];
    switch (o->type) {
    case QV_OPT_STRING:
        return store_string(cfg, idx, value, strlen(value), err);
    case QV_OPT_ENUM: {
        const char *choice;
        size_t len;
        if (!find_choice(o->choices, value, &choice, &len))
            return fail(err, QV_EINVAL, "%s: '%s' is not one of %s", src, value, o->choices);
        return store_string(cfg, idx, choice, len, err);
    }
    case QV_OPT_INT: {
        int64_t v = 0;
        int rc = parse_i64(value, &v);
        if (rc == NUM_SYNTAX)
            return fail(err, QV_EINVAL, "%s: '%s' is not an integer", src, value);
        if (rc != NUM_OK)
            return fail(err, QV_EINVAL, "%s: '%s' is out of the 64-bit integer range", src, value);
        if (int_bounded(o) && v < o->min)
            return fail(err, QV_EINVAL, "%s: %s is below the minimum %" PRId64, src, value, o->min);
        if (int_bounded(o) && v > o->max)
            return fail(err, QV_EINVAL, "%s: %s is above the maximum %" PRId64, src, value, o->max);
        *(int64_t *)o->target = v;
        return QV_OK;
    }
    case QV_OPT_UINT: {
        uint64_t v = 0;
        int rc = parse_u64(value, &v);
        if (rc == NUM_SYNTAX)
            return fail(err, QV_EINVAL, "%s: '%s' is not an integer", src, value);
        if (rc == NUM_NEGATIVE)
            return fail(err, QV_EINVAL, "%s: '%s' is not a non-negative integer", src, value);
        if (rc != NUM_OK)
            return fail(err, QV_EINVAL, "%s: '%s' is out of the 64-bit integer range", src, value);
        if (int_bounded(o) && v < (uint64_t)o->min)
            return fail(err, QV_EINVAL, "%s: %s is below the minimum %" PRIu64, src, value,
                        (uint64_t)o->min);
        if (int_bounded(o) && v > (uint64_t)o->max)
            return fail(err, QV_EINVAL, "%s: %s is above the maximum %" PRIu64, src, value,
                        (uint64_t)o->max);
        *(uint64_t *)o->target = v;
        return QV_OK;
    }
    case QV_OPT_DOUBLE: {
        double v = 0;
        int rc = parse_double(value, &v);
        if (rc == NUM_SYNTAX)
            return fail(err, QV_EINVAL, "%s: '%s' is not a finite number", src, value);
        if (rc != NUM_OK)
            return fail(err, QV_EINVAL, "%s: '%s' is out of range", src, value);
        if (double_bounded(o) && v < o->dmin)
            return fail(err, QV_EINVAL, "%s: %s is below the minimum %g", src, value, o->dmin);
        if (double_bounded(o) && v > o->dmax)
            return fail(err, QV_EINVAL, "%s: %s is above the maximum %g", src, value, o->dmax);
        *(double *)o->target = v;
        return QV_OK;
    }
    case QV_OPT_BOOL: {
        bool v;
        if (!parse_bool(value, &v))
            return fail(err, QV_EINVAL, "%s: '%s' is not a boolean (true|false|yes|no|on|off|1|0)",
                        src, value);
        *(bool *)o->target = v;
        return QV_OK;
    }
    }
    return fail(err, QV_EINVAL, "option table: --%s has an unknown type %d", o->name, (int)o->type);
}

/* ---- sources --------------------------------------------------------------------------------- */

/* Mistakes in the table are ours, but they are reported like bad input rather than asserted: a
 * program with a broken table then says which entry, instead of dying. */
static int check_table(const qv_config *cfg, size_t *nopts, qv_status *err)
{
    size_t n = 0;
    for (; cfg->opts != NULL && cfg->opts[n].name != NULL; n++) {
        const qv_opt *o = &cfg->opts[n];
        if (o->name[0] == '\0' || o->name[0] == '-')
            return fail(err, QV_EINVAL, "option table: bad name '%s'", o->name);
        if (strcmp(o->name, "config") == 0 || strcmp(o->name, "help") == 0 ||
            strcmp(o->name, "version") == 0)
            return fail(err, QV_EINVAL, "option table: --%s is built in", o->name);
        if (o->target == NULL)
            return fail(err, QV_EINVAL, "option table: --%s has no target", o->name);
        if (o->type == QV_OPT_ENUM && (o->choices == NULL || o->choices[0] == '\0'))
            return fail(err, QV_EINVAL, "option table: --%s has no choices", o->name);
        if (o->type == QV_OPT_INT && o->min > o->max)
            return fail(err, QV_EINVAL, "option table: --%s has min > max", o->name);
        if (o->type == QV_OPT_UINT && (uint64_t)o->min > (uint64_t)o->max)
            return fail(err, QV_EINVAL, "option table: --%s has min > max", o->name);
        if (o->type == QV_OPT_DOUBLE && !(o->dmin <= o->dmax))
            return fail(err, QV_EINVAL, "option table: --%s has dmin > dmax", o->name);
        if (find_opt(cfg, o->name, strlen(o->name)) != (long)n)
            return fail(err, QV_EINVAL, "option table: --%s appears twice", o->name);
    }
    *nopts = n;
    return QV_OK;
}

static int apply_defaults(qv_config *cfg, qv_status *err)
{
    qv__cfg_state *st = cfg->priv__;
    for (size_t i = 0; i < st->nopts; i++) {
        if (cfg->opts[i].def == NULL)
            continue;
        char src[QV__CFG_SRC_MAX];
        snprintf(src, sizeof(src), "default of --%s", cfg->opts[i].name);
        int rc = set_value(cfg, i, cfg->opts[i].def, src, err);
        if (rc < 0)
            return rc;
    }
    return QV_OK;
}

static int apply_env(qv_config *cfg, qv_status *err)
{
    qv__cfg_state *st = cfg->priv__;
    if (cfg->env_prefix == NULL)
        return QV_OK;
    for (size_t i = 0; i < st->nopts; i++) {
        char name[QV__CFG_SRC_MAX];
        if (!env_name(cfg->env_prefix, cfg->opts[i].name, name, sizeof(name)))
            return fail(err, QV_EINVAL, "option table: --%s makes too long an environment name",
                        cfg->opts[i].name);
        const char *value = getenv(name);
        if (value == NULL)
            continue;
        int rc = set_value(cfg, i, value, name, err);
        if (rc < 0)
            return rc;
    }
    return QV_OK;
}

static char *skip_space(char *p)
{
    while (isspace((unsigned char)*p))
        p++;
    return p;
}

static void trim_end(char *s)
{
    size_t n = strlen(s);
    while (n > 0 && isspace((unsigned char)s[n - 1]))
        s[--n] = '\0';
}

/* One `name = value` line, changed in place. Returns 0, 1 for a line with nothing on it, or -1
 * with *why set. */
static int split_line(char *line, char **name, char **value, const char **why)
{
    char *p = skip_space(line);
    if (*p == '\0' || *p == '#')
        return 1;
    char *eq = strchr(p, '=');
    if (eq == NULL) {
        *why = "expected 'name = value'";
        return -1;
    }
    *eq = '\0';
    trim_end(p);
    if (*p == '\0') {
        *why = "missing option name before '='";
        return -1;
    }
    char *v = skip_space(eq + 1);
    if (*v == '"' || *v == '\'') {
        char *close = strchr(v + 1, *v);
        if (close == NULL) {
            *why = "unterminated quote";
            return -1;
        }
        *close = '\0';
        char *rest = skip_space(close + 1);
        if (*rest != '\0' && *rest != '#') {
            *why = "unexpected text after the closing quote";
            return -1;
        }
        v++;
    } else {
        /* A '#' starts a comment at the start of the value or after a space; "a#b" keeps it. */
        for (char *c = v; *c != '\0'; c++) {
            if (*c == '#' && (c == v || isspace((unsigned char)c[-1]))) {
                *c = '\0';
                break;
            }
        }
        trim_end(v);
    }
    *name = p;
    *value = v;
    return 0;
}

static int apply_file(qv_config *cfg, const char *path, const char *named_by, qv_status *err)
{
    FILE *f = fopen(path, "r");
    if (f == NULL)
        return fail(err, QV_ENOTFOUND, "%s: cannot open '%s': %s", named_by, path, strerror(errno));
    int rc = QV_OK;
    char line[QV__CFG_LINE_MAX + 2]; /* the line, its '\n', the terminator */
    for (long lineno = 1; fgets(line, sizeof(line), f) != NULL; lineno++) {
        size_t len = strlen(line);
        if (len == sizeof(line) - 1 && line[len - 1] != '\n') {
            rc = fail(err, QV_EINVAL, "%s:%ld: line longer than %d bytes", path, lineno,
                      QV__CFG_LINE_MAX);
            goto done;
        }
        char *name;
        char *value;
        const char *why = NULL;
        int kind = split_line(line, &name, &value, &why);
        if (kind == 1)
            continue;
        if (kind < 0) {
            rc = fail(err, QV_EINVAL, "%s:%ld: %s", path, lineno, why);
            goto done;
        }
        long idx = find_opt(cfg, name, strlen(name));
        if (idx < 0) {
            rc = fail(err, QV_EINVAL, "%s:%ld: unknown option '%s'", path, lineno, name);
            goto done;
        }
        char src[QV__CFG_SRC_MAX];
        snprintf(src, sizeof(src), "%s:%ld", path, lineno);
        rc = set_value(cfg, (size_t)idx, value, src, err);
        if (rc < 0)
            goto done;
    }
    if (ferror(f))
        rc = fail(err, QV_ENOTFOUND, "%s: cannot read '%s': %s", named_by, path, strerror(errno));
done:
    fclose(f);
    return rc;
}

/* The argument after argv[*i] as the value of an option, or NULL when there is none: a next
 * argument starting with "--" is taken as a forgotten value, not as the value. */
static const char *take_value(int argc, char **argv, int *i)
{
    if (*i + 1 >= argc || strncmp(argv[*i + 1], "--", 2) == 0)
        return NULL;
    *i += 1;
    return argv[*i];
}

static int scan_argv(qv_config *cfg, int argc, char **argv, qv__scan *sc, qv_status *err)
{
    int i;
    int rc = QV_OK;
    for (i = 1; i < argc; i++) {
        char *arg = argv[i];
        if (arg[0] != '-' || arg[1] == '\0') {
            cfg->positional[cfg->npositional++] = arg;
            continue;
        }
        if (strcmp(arg, "--") == 0) {
            while (++i < argc)
                cfg->positional[cfg->npositional++] = argv[i];
            break;
        }
        if (strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0) {
            sc->help = true;
            continue;
        }
        if (strcmp(arg, "--version") == 0) {
            sc->version = true;
            continue;
        }
        if (arg[1] != '-') {
            rc = fail(err, QV_EINVAL, "unknown option '%s' (see --help)", arg);
            break;
        }
        const char *name = arg + 2;
        const char *eq = strchr(name, '=');
        size_t name_len = eq != NULL ? (size_t)(eq - name) : strlen(name);
        const char *value = eq != NULL ? eq + 1 : NULL;

        if (name_len == 6 && strncmp(name, "config", 6) == 0) {
            if (value == NULL)
                value = take_value(argc, argv, &i);
            if (value == NULL) {
                rc = fail(err, QV_EINVAL, "--config: missing value");
                break;
            }
            sc->config_path = value;
            continue;
        }
        long idx = find_opt(cfg, name, name_len);
        if (idx < 0 && name_len > 3 && strncmp(name, "no-", 3) == 0) {
            long b = find_opt(cfg, name + 3, name_len - 3);
            if (b >= 0 && cfg->opts[b].type == QV_OPT_BOOL) {
                if (value != NULL) {
                    rc = fail(err, QV_EINVAL, "--%.*s: takes no value", (int)name_len, name);
                    break;
                }
                sc->assigns[sc->nassigns++] = (qv__assign){(size_t)b, "false"};
                continue;
            }
        }
        if (idx < 0) {
            rc = fail(err, QV_EINVAL, "unknown option '--%.*s' (see --help)", (int)name_len, name);
            break;
        }
        if (value == NULL && cfg->opts[idx].type == QV_OPT_BOOL)
            value = "true";
        if (value == NULL)
            value = take_value(argc, argv, &i);
        if (value == NULL) {
            rc = fail(err, QV_EINVAL, "--%s: missing value", cfg->opts[idx].name);
            break;
        }
        sc->assigns[sc->nassigns++] = (qv__assign){(size_t)idx, value};
    }
    if (rc < 0) {
        /* Past a bad option the rest cannot be split into options and values reliably, but an
         * explicit --help or --version still deserves an answer rather than the error. */
        for (i++; i < argc && strcmp(argv[i], "--") != 0; i++) {
            if (strcmp(argv[i], "-h") == 0 || strcmp(argv[i], "--help") == 0)
                sc->help = true;
            if (strcmp(argv[i], "--version") == 0)
                sc->version = true;
        }
    }
    return rc;
}

int qv_config_parse(qv_config *cfg, int argc, char **argv, qv_status *err)
{
    qv_status local;
    if (err == NULL)
        err = &local;
    *err = qv_status_ok();
    /* A second parse starts over; the zero-initialised priv__ of a fresh config means "none". */
    if (cfg->priv__ != NULL)
        qv_config_free(cfg);
    cfg->npositional = 0;
    cfg->positional = NULL;

    size_t nopts = 0;
    int rc = check_table(cfg, &nopts, err);
    if (rc < 0)
        return rc;

    qv__cfg_state *st = calloc(1, sizeof(*st));
    if (st == NULL)
        return fail(err, QV_ERESOURCE, "out of memory");
    cfg->priv__ = st;
    st->nopts = nopts;
    st->owned = calloc(nopts > 0 ? nopts : 1, sizeof(*st->owned));
    /* At most argc - 1 positionals, plus a NULL after the last. */
    cfg->positional = calloc(argc > 0 ? (size_t)argc : 1, sizeof(*cfg->positional));
    qv__scan sc = {0};
    sc.assigns = calloc(argc > 0 ? (size_t)argc : 1, sizeof(*sc.assigns));
    if (st->owned == NULL || cfg->positional == NULL || sc.assigns == NULL) {
        rc = fail(err, QV_ERESOURCE, "out of memory");
        goto done;
    }

    rc = scan_argv(cfg, argc, argv, &sc, err);
    if (sc.help) {
        *err = qv_status_ok();
        qv_config_usage(cfg, stdout);
        fflush(stdout);
        rc = QV_CONFIG_EXITED;
        goto done;
    }
    if (sc.version) {
        *err = qv_status_ok();
        printf("%s %s\n", program_name(cfg), QV_VERSION_STRING);
        fflush(stdout);
        rc = QV_CONFIG_EXITED;
        goto done;
    }
    if (rc < 0)
        goto done;

    rc = apply_defaults(cfg, err);
    if (rc < 0)
        goto done;

    const char *path = sc.config_path;
    char named_by[QV__CFG_SRC_MAX] = "--config";
    if (path == NULL && cfg->env_prefix != NULL &&
        env_name(cfg->env_prefix, "config", named_by, sizeof(named_by)))
        path = getenv(named_by);
    if (path != NULL) {
        rc = apply_file(cfg, path, named_by, err);
        if (rc < 0)
            goto done;
    }

    rc = apply_env(cfg, err);
    if (rc < 0)
        goto done;

    for (size_t i = 0; i < sc.nassigns; i++) {
        char src[QV__CFG_SRC_MAX];
        snprintf(src, sizeof(src), "--%s", cfg->opts[sc.assigns[i].opt].name);
        rc = set_value(cfg, sc.assigns[i].opt, sc.assigns[i].value, src, err);
        if (rc < 0)
            goto done;
    }
    rc = QV_CONFIG_RUN;
done:
    free(sc.assigns);
    return rc;
}

void qv_config_free(qv_config *cfg)
{
    if (cfg == NULL || cfg->priv__ == NULL)
        return;
    qv__cfg_state *st = cfg->priv__;
    for (size_t i = 0; st->owned != NULL && i < st->nopts; i++) {
        if (st->owned[i] == NULL)
            continue;
        char **target = cfg->opts[i].target;
        /* A target the caller pointed elsewhere since is theirs: leave it. */
        if (*target == st->owned[i])
            *target = NULL;
        free(st->owned[i]);
    }
    free(st->owned);
    free(st);
    cfg->priv__ = NULL;
    free(cfg->positional);
    cfg->positional = NULL;
    cfg->npositional = 0;
}

/* ---- usage ----------------------------------------------------------------------------------- */

/* Word wrapping for the help column: text arrives in pieces, words are laid out as they end.
 * QV__NBSP joins a label to its value ("default: 5") so a line break never separates them. */
#define QV__NBSP "\x1f"

typedef struct qv__wrap {
    FILE *out;
    size_t indent;
    size_t col;
    bool fresh; /* no word yet on this line */
    bool glue;  /* the next piece continues the word just written (it was too long to hold) */
    char word[256];
    size_t wlen;
} qv__wrap;

static void wrap_start(qv__wrap *w, FILE *out, size_t indent, size_t col)
{
    *w = (qv__wrap){.out = out, .indent = indent, .col = col, .fresh = true};
}

static void wrap_flush(qv__wrap *w)
{
    if (w->wlen == 0)
        return;
    if (!w->glue && !w->fresh && w->col + 1 + w->wlen > QV__USAGE_WIDTH) {
        fprintf(w->out, "\n%*s", (int)w->indent, "");
        w->col = w->indent;
        w->fresh = true;
    }
    if (!w->glue && !w->fresh) {
        fputc(' ', w->out);
        w->col++;
    }
    for (size_t i = 0; i < w->wlen; i++)
        fputc(w->word[i] == QV__NBSP[0] ? ' ' : w->word[i], w->out);
    w->col += w->wlen;
    w->fresh = false;
    w->wlen = 0;
}

static void wrap_puts(qv__wrap *w, const char *s)
{
    for (; *s != '\0'; s++) {
        if (isspace((unsigned char)*s)) {
            wrap_flush(w);
            w->glue = false;
            continue;
        }
        if (w->wlen == sizeof(w->word)) {
            wrap_flush(w);
            w->glue = true;
        }
        w->word[w->wlen++] = *s;
    }
}

static void wrap_printf(qv__wrap *w, const char *fmt, ...) QV_PRINTF(2, 3);

static void wrap_printf(qv__wrap *w, const char *fmt, ...)
{
    char buf[128];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof(buf), fmt, ap);
    va_end(ap);
    wrap_puts(w, buf);
}

static void wrap_end(qv__wrap *w)
{
    wrap_flush(w);
    fputc('\n', w->out);
}

static const char *type_label(qv_opt_type t)
{
    switch (t) {
    case QV_OPT_STRING:
        return " <string>";
    case QV_OPT_INT:
        return " <int>";
    case QV_OPT_UINT:
        return " <uint>";
    case QV_OPT_DOUBLE:
        return " <number>";
    case QV_OPT_ENUM:
        return " <choice>";
    case QV_OPT_BOOL:
        return "";
    }
    return "";
}

static size_t left_column(const qv_opt *o, char *buf, size_t cap)
{
    int n;
    if (o->type == QV_OPT_BOOL)
        n = snprintf(buf, cap, "  --[no-]%s", o->name);
    else
        n = snprintf(buf, cap, "  --%s%s", o->name, type_label(o->type));
    return n < 0 ? 0 : (size_t)n;
}

/* Prints the left column padded to `col`, or on a line of its own when it does not fit. */
static void start_entry(qv__wrap *w, FILE *out, const char *left, size_t col)
{
    size_t len = strlen(left);
    fputs(left, out);
    if (len + 2 > col)
        fprintf(out, "\n%*s", (int)col, "");
    else
        fprintf(out, "%*s", (int)(col - len), "");
    wrap_start(w, out, col, col);
}

/* Adds "; " between the parts of the parenthesis after the help text, "(" before the first. */
static void paren_part(qv__wrap *w, bool *opened)
{
    wrap_puts(w, *opened ? "; " : " (");
    *opened = true;
}

static void describe_opt(qv__wrap *w, const qv_opt *o, const char *env_prefix)
{
    bool opened = false;
    if (o->help != NULL)
        wrap_puts(w, o->help);
    if (o->type == QV_OPT_ENUM) {
        paren_part(w, &opened);
        wrap_puts(w, "one of:" QV__NBSP);
        wrap_puts(w, o->choices);
    }
    if (o->type == QV_OPT_INT && int_bounded(o)) {
        paren_part(w, &opened);
        wrap_printf(w, "range:" QV__NBSP "%" PRId64 "..%" PRId64, o->min, o->max);
    }
    if (o->type == QV_OPT_UINT && int_bounded(o)) {
        paren_part(w, &opened);
        wrap_printf(w, "range:" QV__NBSP "%" PRIu64 "..%" PRIu64, (uint64_t)o->min,
                    (uint64_t)o->max);
    }
    if (o->type == QV_OPT_DOUBLE && double_bounded(o)) {
        paren_part(w, &opened);
        wrap_printf(w, "range:" QV__NBSP "%g..%g", o->dmin, o->dmax);
    }
    if (o->def != NULL) {
        paren_part(w, &opened);
        wrap_puts(w, "default:" QV__NBSP);
        bool quote = o->def[0] == '\0' || strpbrk(o->def, " \t") != NULL;
        if (quote)
            wrap_puts(w, "\"");
        wrap_puts(w, o->def);
        if (quote)
            wrap_puts(w, "\"");
    }
    char env[QV__CFG_SRC_MAX];
    if (env_prefix != NULL && env_name(env_prefix, o->name, env, sizeof(env))) {
        paren_part(w, &opened);
        wrap_puts(w, "env:" QV__NBSP);
        wrap_puts(w, env);
    }
    if (opened)
        wrap_puts(w, ")");
    wrap_end(w);
}

void qv_config_usage(const qv_config *cfg, FILE *out)
{
    char left[QV__CFG_SRC_MAX];
    size_t col = strlen("  --config <file>") + 2;
    for (size_t i = 0; cfg->opts != NULL && cfg->opts[i].name != NULL; i++) {
        size_t len = left_column(&cfg->opts[i], left, sizeof(left)) + 2;
        if (len > col && len <= QV__USAGE_COL_MAX)
            col = len;
    }

    qv__wrap w;
    fprintf(out, "Usage: %s [options] [--] [arguments]\n", program_name(cfg));
    if (cfg->summary != NULL && cfg->summary[0] != '\0') {
        fputc('\n', out);
        wrap_start(&w, out, 0, 0);
        wrap_puts(&w, cfg->summary);
        wrap_end(&w);
    }
    fputs("\nOptions:\n", out);
    for (size_t i = 0; cfg->opts != NULL && cfg->opts[i].name != NULL; i++) {
        left_column(&cfg->opts[i], left, sizeof(left));
        start_entry(&w, out, left, col);
        describe_opt(&w, &cfg->opts[i], cfg->env_prefix);
    }

    start_entry(&w, out, "  --config <file>", col);
    wrap_puts(&w, "read options from a file of 'name = value' lines; the environment and flags "
                  "override it");
    char env[QV__CFG_SRC_MAX];
    if (cfg->env_prefix != NULL && env_name(cfg->env_prefix, "config", env, sizeof(env))) {
        wrap_puts(&w, " (env:" QV__NBSP);
        wrap_puts(&w, env);
        wrap_puts(&w, ")");
    }
    wrap_end(&w);
    start_entry(&w, out, "  -h, --help", col);
    wrap_puts(&w, "print this help and exit");
    wrap_end(&w);
    start_entry(&w, out, "  --version", col);
    wrap_puts(&w, "print the version and exit");
    wrap_end(&w);
}
