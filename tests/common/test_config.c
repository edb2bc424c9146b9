/*
 * Tests for common/config.c. One option table of every type is shared by the tests; Criterion
 * runs each test in its own process, so the targets and the environment start clean every time.
 * Under AddressSanitizer, tests that move strings around end with a leak check of their own
 * (Criterion would otherwise report a test that leaks as passing).
 */
#define _POSIX_C_SOURCE 200809L
#include <criterion/criterion.h>

#include "common/common.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

/* ---- fixture --------------------------------------------------------------------------------- */

static char *g_addr;
static int64_t g_port;
static int64_t g_threads;
static int64_t g_offset;
static uint64_t g_cache;
static uint64_t g_shards;
static double g_ratio;
static bool g_tls;
static char *g_metric;
static char *g_node_name;

static qv_opt g_opts[] = {
    {.name = "grpc-addr",
     .type = QV_OPT_STRING,
     .target = &g_addr,
     .def = "127.0.0.1:7070",
     .help = "address the gRPC server listens on"},
    {.name = "port",
     .type = QV_OPT_INT,
     .target = &g_port,
     .def = "7070",
     .help = "port",
     .min = 1,
     .max = 65535},
    {.name = "threads",
     .type = QV_OPT_INT,
     .target = &g_threads,
     .def = "4",
     .help = "worker threads",
     .min = 1,
     .max = 256},
    {.name = "offset", .type = QV_OPT_INT, .target = &g_offset, .def = "0", .help = "offset"},
    {.name = "cache-bytes",
     .type = QV_OPT_UINT,
     .target = &g_cache,
     .def = "1048576",
     .help = "cache size in bytes"},
    {.name = "shards",
     .type = QV_OPT_UINT,
     .target = &g_shards,
     .def = "8",
     .help = "shards",
     .min = 2,
     .max = 64},
    {.name = "ratio",
     .type = QV_OPT_DOUBLE,
     .target = &g_ratio,
     .def = "0.5",
     .help = "fraction of the index kept in memory",
     .dmin = 0.0,
     .dmax = 1.0},
    {.name = "tls", .type = QV_OPT_BOOL, .target = &g_tls, .def = "false", .help = "serve TLS"},
    {.name = "metric",
     .type = QV_OPT_ENUM,
     .target = &g_metric,
     .def = "l2",
     .help = "distance metric",
     .choices = "l2|cosine|dot"},
    {.name = "node-name", .type = QV_OPT_STRING, .target = &g_node_name, .help = "node name"},
    {0},
};

static const char *const g_env_names[] = {
    "QUIVER_GRPC_ADDR",   "QUIVER_PORT",      "QUIVER_THREADS", "QUIVER_OFFSET",
    "QUIVER_CACHE_BYTES", "QUIVER_SHARDS",    "QUIVER_RATIO",   "QUIVER_TLS",
    "QUIVER_METRIC",      "QUIVER_NODE_NAME", "QUIVER_CONFIG",
};

static void clean_env(void)
{
    for (size_t i = 0; i < sizeof(g_env_names) / sizeof(g_env_names[0]); i++)
        unsetenv(g_env_names[i]);
}

/* Files and the directory the test made, removed afterwards even when an assertion failed. */
static char g_temp_files[4][64];
static char g_temp_dir[64];

static void remove_temps(void)
{
    for (size_t i = 0; i < sizeof(g_temp_files) / sizeof(g_temp_files[0]); i++) {
        if (g_temp_files[i][0] != '\0')
            unlink(g_temp_files[i]);
    }
    if (g_temp_dir[0] != '\0') {
        unlink("node.conf");
        if (chdir("/") == 0)
            rmdir(g_temp_dir);
    }
}

TestSuite(config, .init = clean_env, .fini = remove_temps);

static qv_config make_cfg(void)
{
    return (qv_config){
        .program = "quiver-test",
        .summary = "Runs the test node.",
        .env_prefix = "QUIVER",
        .opts = g_opts,
    };
}

/* argc, argv for a literal argument list; argv[0] is the program. */
#define ARGS(...)                                                                                  \
    (int)(sizeof((char *[]){"quiver-test", __VA_ARGS__}) / sizeof(char *)), (char *[])             \
    {                                                                                              \
        "quiver-test", __VA_ARGS__, NULL                                                           \
    }
#define NO_ARGS                                                                                    \
    1, (char *[])                                                                                  \
    {                                                                                              \
        "quiver-test", NULL                                                                        \
    }

static void assert_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_assert_eq(__lsan_do_recoverable_leak_check(), 0, "memory leaked (see the report above)");
#endif
}

/* Parses, expects QV_EINVAL with exactly `msg`, frees. */
static void expect_error(const char *msg, int argc, char **argv)
{
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, argc, argv, &err);
    cr_assert_eq(rc, QV_EINVAL, "rc %d for '%s'", rc, msg);
    cr_assert_eq(err.code, QV_EINVAL);
    cr_assert_str_eq(err.msg, msg);
    qv_config_free(&cfg);
}

static void expect_ok(int argc, char **argv)
{
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, argc, argv, &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "rc %d: %s", rc, err.msg);
    qv_config_free(&cfg);
}

/* Writes `text` to `path` (relative paths land in the test's temporary directory). */
static void write_file(const char *path, const char *text)
{
    FILE *f = fopen(path, "w");
    cr_assert_not_null(f, "fopen %s: %s", path, strerror(errno));
    fputs(text, f);
    fclose(f);
}

/* A temporary file holding `text`, removed after the test; its path goes to path (64 bytes). */
static void temp_file(char *path, const char *text)
{
    strcpy(path, "/tmp/qv_test_cfg_XXXXXX");
    int fd = mkstemp(path);
    cr_assert(fd >= 0, "mkstemp: %s", strerror(errno));
    close(fd);
    size_t i = 0;
    while (g_temp_files[i][0] != '\0')
        i++;
    cr_assert(i < sizeof(g_temp_files) / sizeof(g_temp_files[0]), "too many temporary files");
    strcpy(g_temp_files[i], path);
    write_file(path, text);
}

/* Moves into a fresh temporary directory so files can have short names like "node.conf". Only
 * "node.conf" may be created there: that is what is removed afterwards. */
static void enter_temp_dir(void)
{
    strcpy(g_temp_dir, "/tmp/qv_test_cfgdir_XXXXXX");
    cr_assert_not_null(mkdtemp(g_temp_dir));
    cr_assert_eq(chdir(g_temp_dir), 0);
}

/* Everything written to stdout while redirect is in force. */
typedef struct capture {
    int saved;
    int tmp;
} capture;

static capture stdout_begin(void)
{
    char path[] = "/tmp/qv_test_out_XXXXXX";
    capture c;
    c.tmp = mkstemp(path);
    cr_assert(c.tmp >= 0);
    unlink(path);
    fflush(stdout);
    c.saved = dup(STDOUT_FILENO);
    dup2(c.tmp, STDOUT_FILENO);
    return c;
}

static char *stdout_end(capture c)
{
    fflush(stdout);
    dup2(c.saved, STDOUT_FILENO);
    close(c.saved);
    struct stat sb;
    cr_assert_eq(fstat(c.tmp, &sb), 0);
    char *buf = calloc(1, (size_t)sb.st_size + 1);
    cr_assert_eq(pread(c.tmp, buf, (size_t)sb.st_size, 0), sb.st_size);
    close(c.tmp);
    return buf;
}

/* ---- precedence ------------------------------------------------------------------------------ */

Test(config, defaults_fill_every_target)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_addr, "127.0.0.1:7070");
    cr_assert_eq(g_port, 7070);
    cr_assert_eq(g_threads, 4);
    cr_assert_eq(g_cache, 1048576u);
    cr_assert_eq(g_ratio, 0.5);
    cr_assert_eq(g_tls, false);
    cr_assert_str_eq(g_metric, "l2");
    cr_assert_eq(err.code, QV_OK);
    cr_assert_eq(cfg.npositional, 0);
    qv_config_free(&cfg);
}

Test(config, option_without_default_stays_null)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--port", "80"), &err), QV_CONFIG_RUN);
    cr_assert_null(g_node_name);
    qv_config_free(&cfg);
}

Test(config, file_overrides_default)
{
    char path[64];
    temp_file(path, "port = 8000\ngrpc-addr = 0.0.0.0:1\n");
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--config", path), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_port, 8000);
    cr_assert_str_eq(g_addr, "0.0.0.0:1");
    cr_assert_eq(g_threads, 4, "an option the file does not name keeps its default");
    qv_config_free(&cfg);
}

Test(config, env_overrides_file)
{
    char path[64];
    temp_file(path, "port = 8000\nthreads = 9\n");
    setenv("QUIVER_PORT", "8100", 1);
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--config", path), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_port, 8100);
    cr_assert_eq(g_threads, 9);
    qv_config_free(&cfg);
}

Test(config, flag_overrides_env_and_file)
{
    char path[64];
    temp_file(path, "port = 8000\nmetric = dot\n");
    setenv("QUIVER_PORT", "8100", 1);
    setenv("QUIVER_METRIC", "cosine", 1);
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--port", "8200", "--config", path), &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_port, 8200);
    cr_assert_str_eq(g_metric, "cosine");
    qv_config_free(&cfg);
    assert_no_leaks();
}

Test(config, file_named_by_env_variable)
{
    char path[64];
    temp_file(path, "threads = 12\n");
    setenv("QUIVER_CONFIG", path, 1);
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_threads, 12);
    qv_config_free(&cfg);
}

Test(config, config_flag_beats_config_env_variable)
{
    char a[64];
    char b[64];
    temp_file(a, "threads = 12\n");
    temp_file(b, "threads = 13\n");
    setenv("QUIVER_CONFIG", a, 1);
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--config", b), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_threads, 13);
    qv_config_free(&cfg);
}

Test(config, env_name_is_prefix_and_upper_cased_name)
{
    setenv("QUIVER_GRPC_ADDR", "10.0.0.1:99", 1);
    setenv("QUIVER_NODE_NAME", "n1", 1);
    setenv("QUIVER_CACHE_BYTES", "42", 1);
    setenv("quiver_port", "1", 1);
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_addr, "10.0.0.1:99");
    cr_assert_str_eq(g_node_name, "n1");
    cr_assert_eq(g_cache, 42u);
    cr_assert_eq(g_port, 7070, "lower-case variable must not count");
    qv_config_free(&cfg);
}

Test(config, null_env_prefix_ignores_environment)
{
    setenv("QUIVER_PORT", "1", 1);
    qv_config cfg = make_cfg();
    cfg.env_prefix = NULL;
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_port, 7070);
    qv_config_free(&cfg);
}

/* ---- flag forms ------------------------------------------------------------------------------ */

Test(config, flag_accepts_space_and_equals_forms)
{
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--port", "81", "--grpc-addr=h:1=2", "--offset=-5"), &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_port, 81);
    cr_assert_str_eq(g_addr, "h:1=2", "only the first '=' splits");
    cr_assert_eq(g_offset, -5);
    qv_config_free(&cfg);
}

Test(config, negative_number_is_a_value_not_an_option)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--offset", "-7"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_offset, -7);
    qv_config_free(&cfg);
}

Test(config, empty_string_value_is_kept)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--grpc-addr="), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_addr, "");
    qv_config_free(&cfg);
}

Test(config, last_repeated_flag_wins)
{
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(
        &cfg, ARGS("--grpc-addr", "a", "--grpc-addr=b", "--port=1", "--port", "2"), &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_addr, "b");
    cr_assert_eq(g_port, 2);
    qv_config_free(&cfg);
    assert_no_leaks();
}

/* ---- booleans -------------------------------------------------------------------------------- */

Test(config, bool_accepts_every_spelling_in_any_case)
{
    static const struct {
        const char *text;
        bool value;
    } cases[] = {
        {"true", true}, {"TRUE", true}, {"1", true},      {"yes", true},    {"Yes", true},
        {"on", true},   {"ON", true},   {"false", false}, {"False", false}, {"0", false},
        {"no", false},  {"NO", false},  {"off", false},   {"oFF", false},
    };
    for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
        char arg[32];
        snprintf(arg, sizeof(arg), "--tls=%s", cases[i].text);
        g_tls = !cases[i].value;
        qv_config cfg = make_cfg();
        qv_status err;
        cr_assert_eq(qv_config_parse(&cfg, ARGS(arg), &err), QV_CONFIG_RUN, "%s: %s", arg, err.msg);
        cr_assert_eq(g_tls, cases[i].value, "%s", arg);
        qv_config_free(&cfg);
    }
}

Test(config, bool_bare_flag_sets_true_and_no_prefix_sets_false)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--tls"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_tls, true);
    qv_config_free(&cfg);

    setenv("QUIVER_TLS", "on", 1);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--no-tls"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_tls, false, "--no-tls beats the environment");
    qv_config_free(&cfg);
}

Test(config, bool_does_not_take_the_next_argument)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--tls", "false"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_tls, true);
    cr_assert_eq(cfg.npositional, 1);
    cr_assert_str_eq(cfg.positional[0], "false");
    qv_config_free(&cfg);
}

Test(config, bool_rejects_other_words)
{
    expect_error("--tls: 'maybe' is not a boolean (true|false|yes|no|on|off|1|0)",
                 ARGS("--tls=maybe"));
    expect_error("--tls: '' is not a boolean (true|false|yes|no|on|off|1|0)", ARGS("--tls="));
    setenv("QUIVER_TLS", "2", 1);
    expect_error("QUIVER_TLS: '2' is not a boolean (true|false|yes|no|on|off|1|0)", NO_ARGS);
}

Test(config, no_prefix_takes_no_value)
{
    expect_error("--no-tls: takes no value", ARGS("--no-tls=true"));
}

Test(config, no_prefix_only_applies_to_booleans)
{
    expect_error("unknown option '--no-port' (see --help)", ARGS("--no-port"));
}

/* ---- enums ----------------------------------------------------------------------------------- */

Test(config, enum_matches_any_case_and_stores_table_spelling)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--metric", "CoSiNe"), &err), QV_CONFIG_RUN, "%s",
                 err.msg);
    cr_assert_str_eq(g_metric, "cosine");
    qv_config_free(&cfg);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--metric=dot"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_metric, "dot");
    qv_config_free(&cfg);
}

Test(config, enum_rejects_unknown_choice)
{
    expect_error("--metric: 'l3' is not one of l2|cosine|dot", ARGS("--metric", "l3"));
    expect_error("--metric: 'l' is not one of l2|cosine|dot", ARGS("--metric=l"));
    expect_error("--metric: 'l2|cosine' is not one of l2|cosine|dot", ARGS("--metric=l2|cosine"));
    expect_error("--metric: '' is not one of l2|cosine|dot", ARGS("--metric="));
}

/* ---- integers and doubles -------------------------------------------------------------------- */

Test(config, int_rejects_trailing_garbage)
{
    expect_error("--port: '70x' is not an integer", ARGS("--port", "70x"));
}

Test(config, int_rejects_empty_spaces_fractions_and_bare_signs)
{
    static const char *const bad[] = {"", " 5", "5 ", "1.5", "+", "-", "0x", "1e3", "--5", "0x1g"};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arg[32];
        char msg[64];
        snprintf(arg, sizeof(arg), "--offset=%s", bad[i]);
        snprintf(msg, sizeof(msg), "--offset: '%s' is not an integer", bad[i]);
        expect_error(msg, ARGS(arg));
    }
}

Test(config, int_accepts_hex_signs_and_leading_zeros)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--offset=0x1F", "--port=+0100"), &err), QV_CONFIG_RUN,
                 "%s", err.msg);
    cr_assert_eq(g_offset, 31);
    cr_assert_eq(g_port, 100, "decimal, not octal");
    qv_config_free(&cfg);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--offset=-0x10"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_offset, -16);
    qv_config_free(&cfg);
}

Test(config, int_below_minimum_names_env_variable)
{
    setenv("QUIVER_THREADS", "0", 1);
    expect_error("QUIVER_THREADS: 0 is below the minimum 1", NO_ARGS);
}

Test(config, int_above_maximum_names_flag)
{
    expect_error("--port: 70000 is above the maximum 65535", ARGS("--port=70000"));
}

Test(config, int_bounds_are_inclusive)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--port=1", "--threads=256"), &err), QV_CONFIG_RUN,
                 "%s", err.msg);
    cr_assert_eq(g_port, 1);
    cr_assert_eq(g_threads, 256);
    qv_config_free(&cfg);
}

Test(config, int_accepts_full_range_and_rejects_overflow)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--offset=-9223372036854775808"), &err), QV_CONFIG_RUN,
                 "%s", err.msg);
    cr_assert_eq(g_offset, INT64_MIN);
    qv_config_free(&cfg);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--offset=9223372036854775807"), &err), QV_CONFIG_RUN,
                 "%s", err.msg);
    cr_assert_eq(g_offset, INT64_MAX);
    qv_config_free(&cfg);

    expect_error("--offset: '9223372036854775808' is out of the 64-bit integer range",
                 ARGS("--offset=9223372036854775808"));
    expect_error("--offset: '-9223372036854775809' is out of the 64-bit integer range",
                 ARGS("--offset=-9223372036854775809"));
    expect_error("--offset: '99999999999999999999999' is out of the 64-bit integer range",
                 ARGS("--offset=99999999999999999999999"));
}

Test(config, uint_accepts_full_range_and_rejects_negative)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--cache-bytes=18446744073709551615"), &err),
                 QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_cache, UINT64_MAX);
    qv_config_free(&cfg);

    expect_error("--cache-bytes: '18446744073709551616' is out of the 64-bit integer range",
                 ARGS("--cache-bytes=18446744073709551616"));
    expect_error("--cache-bytes: '-1' is not a non-negative integer", ARGS("--cache-bytes=-1"));
    expect_error("--cache-bytes: '1k' is not an integer", ARGS("--cache-bytes=1k"));
    expect_error("--shards: 1 is below the minimum 2", ARGS("--shards=1"));
    expect_error("--shards: 65 is above the maximum 64", ARGS("--shards=65"));
}

Test(config, double_parses_and_checks_bounds)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--ratio=0.25"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_ratio, 0.25);
    qv_config_free(&cfg);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--ratio=1e0"), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_ratio, 1.0);
    qv_config_free(&cfg);
    expect_error("--ratio: 1.5 is above the maximum 1", ARGS("--ratio=1.5"));
    expect_error("--ratio: -0.1 is below the minimum 0", ARGS("--ratio=-0.1"));
}

Test(config, double_rejects_nan_inf_and_garbage)
{
    static const char *const bad[] = {"nan", "NaN", "inf", "-Infinity", "", "0.5x", " 0.5", "."};
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        char arg[32];
        char msg[64];
        snprintf(arg, sizeof(arg), "--ratio=%s", bad[i]);
        snprintf(msg, sizeof(msg), "--ratio: '%s' is not a finite number", bad[i]);
        expect_error(msg, ARGS(arg));
    }
    expect_error("--ratio: '1e999' is out of range", ARGS("--ratio=1e999"));
}

/* ---- command line errors --------------------------------------------------------------------- */

Test(config, unknown_flag_is_named_with_help_hint)
{
    expect_error("unknown option '--foo' (see --help)", ARGS("--foo"));
    expect_error("unknown option '--foo' (see --help)", ARGS("--port=1", "--foo=bar"));
    expect_error("unknown option '-x' (see --help)", ARGS("-x"));
    expect_error("unknown option '--grpc' (see --help)", ARGS("--grpc", "a"));
}

Test(config, missing_value_is_reported)
{
    expect_error("--port: missing value", ARGS("--port"));
    expect_error("--grpc-addr: missing value", ARGS("--grpc-addr", "--port", "1"));
    expect_error("--config: missing value", ARGS("--config"));
}

Test(config, error_does_not_print_or_exit)
{
    capture c = stdout_begin();
    expect_error("--port: '1.5' is not an integer", ARGS("--port", "1.5"));
    char *out = stdout_end(c);
    cr_assert_str_empty(out);
    free(out);
}

/* ---- config file ----------------------------------------------------------------------------- */

Test(config, file_unknown_option_names_file_and_line)
{
    enter_temp_dir();
    write_file("node.conf", "# node config\n\nport = 7071\n\n  # indented comment\nthreads=2\n"
                            "grpcc = 1.2.3.4:5\n");
    expect_error("node.conf:7: unknown option 'grpcc'", ARGS("--config", "node.conf"));
}

Test(config, file_line_without_equals_is_an_error)
{
    enter_temp_dir();
    write_file("node.conf", "port = 1\ntls\n");
    expect_error("node.conf:2: expected 'name = value'", ARGS("--config=node.conf"));
    write_file("node.conf", " = 5\n");
    expect_error("node.conf:1: missing option name before '='", ARGS("--config=node.conf"));
}

Test(config, file_bad_value_names_file_and_line)
{
    enter_temp_dir();
    write_file("node.conf", "port = 70x\n");
    expect_error("node.conf:1: '70x' is not an integer", ARGS("--config", "node.conf"));
    write_file("node.conf", "\n\nthreads = 0\n");
    expect_error("node.conf:3: 0 is below the minimum 1", ARGS("--config", "node.conf"));
}

Test(config, file_values_are_trimmed_unquoted_and_uncommented)
{
    char path[64];
    temp_file(path, "# comment\n"
                    "   \t\n"
                    "grpc-addr\t=   \"  spaced # not a comment \"   # trailing\r\n"
                    "node-name = 'single'\n"
                    "port = 123 # comment after value\n"
                    "tls = yes\n"
                    "ratio = 0.75\n"
                    "metric = dot\n");
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--config", path), &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_addr, "  spaced # not a comment ");
    cr_assert_str_eq(g_node_name, "single");
    cr_assert_eq(g_port, 123);
    cr_assert_eq(g_tls, true);
    cr_assert_eq(g_ratio, 0.75);
    cr_assert_str_eq(g_metric, "dot");
    qv_config_free(&cfg);
}

Test(config, file_hash_inside_a_word_is_part_of_the_value)
{
    char path[64];
    temp_file(path, "node-name = a#b\n");
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--config", path), &err), QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_node_name, "a#b");
    qv_config_free(&cfg);
}

Test(config, file_unterminated_quote_is_an_error)
{
    enter_temp_dir();
    write_file("node.conf", "node-name = \"abc\n");
    expect_error("node.conf:1: unterminated quote", ARGS("--config", "node.conf"));
    write_file("node.conf", "node-name = \"abc\" def\n");
    expect_error("node.conf:1: unexpected text after the closing quote",
                 ARGS("--config", "node.conf"));
}

Test(config, file_line_longer_than_limit_is_rejected)
{
    enter_temp_dir();
    /* "node-name = " + value: exactly 4096 bytes fits, 4097 does not. */
    size_t head = strlen("node-name = ");
    char *text = malloc(8192);
    memcpy(text, "node-name = ", head);
    memset(text + head, 'v', 4096 - head);
    strcpy(text + 4096, "\nport = 5\n");
    write_file("node.conf", text);
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--config", "node.conf"), &err), QV_CONFIG_RUN, "%s",
                 err.msg);
    cr_assert_eq(strlen(g_node_name), 4096 - head);
    cr_assert_eq(g_port, 5, "the line after a full-length line is read on its own");
    qv_config_free(&cfg);

    memset(text + head, 'v', 4097 - head);
    strcpy(text + 4097, "\n");
    write_file("node.conf", text);
    expect_error("node.conf:1: line longer than 4096 bytes", ARGS("--config", "node.conf"));
    free(text);
}

Test(config, missing_config_file_is_not_found)
{
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--config", "/nonexistent/quiver.conf"), &err);
    cr_assert_eq(rc, QV_ENOTFOUND);
    cr_assert_str_eq(err.msg,
                     "--config: cannot open '/nonexistent/quiver.conf': No such file or directory");
    qv_config_free(&cfg);

    setenv("QUIVER_CONFIG", "/nonexistent/env.conf", 1);
    rc = qv_config_parse(&cfg, NO_ARGS, &err);
    cr_assert_eq(rc, QV_ENOTFOUND);
    cr_assert_not_null(strstr(err.msg, "QUIVER_CONFIG: cannot open '/nonexistent/env.conf'"), "%s",
                       err.msg);
    qv_config_free(&cfg);
}

Test(config, directory_as_config_file_is_not_found)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--config", "/tmp"), &err), QV_ENOTFOUND, "%s",
                 err.msg);
    qv_config_free(&cfg);
}

/* ---- positional arguments -------------------------------------------------------------------- */

Test(config, positional_args_are_collected_in_order_and_double_dash_ends_options)
{
    qv_config cfg = make_cfg();
    qv_status err;
    char *argv[] = {"quiver-test", "a",      "--port", "1", "b", "-",
                    "--",          "--port", "--nope", "c", NULL};
    int rc = qv_config_parse(&cfg, 10, argv, &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_eq(g_port, 1);
    cr_assert_eq(cfg.npositional, 6);
    static const char *const want[] = {"a", "b", "-", "--port", "--nope", "c"};
    for (int i = 0; i < 6; i++)
        cr_assert_str_eq(cfg.positional[i], want[i]);
    cr_assert_null(cfg.positional[6], "the array ends with NULL");
    qv_config_free(&cfg);
}

Test(config, positional_args_point_into_argv)
{
    qv_config cfg = make_cfg();
    qv_status err;
    char *argv[] = {"quiver-test", "x", "--", "y", NULL};
    cr_assert_eq(qv_config_parse(&cfg, 4, argv, &err), QV_CONFIG_RUN);
    cr_assert_eq(cfg.npositional, 2);
    cr_assert_eq(cfg.positional[0], argv[1]);
    cr_assert_eq(cfg.positional[1], argv[3]);
    qv_config_free(&cfg);
}

Test(config, double_dash_value_via_equals_is_allowed)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--node-name=--odd"), &err), QV_CONFIG_RUN);
    cr_assert_str_eq(g_node_name, "--odd");
    qv_config_free(&cfg);
}

/* ---- help and version ------------------------------------------------------------------------ */

Test(config, help_prints_usage_and_returns_exited)
{
    capture c = stdout_begin();
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--port", "1", "--help"), &err);
    char *out = stdout_end(c);
    cr_assert_eq(rc, QV_CONFIG_EXITED);
    cr_assert_eq(err.code, QV_OK);
    cr_assert_not_null(strstr(out, "Usage: quiver-test"), "%s", out);
    cr_assert_not_null(strstr(out, "Runs the test node."), "%s", out);
    cr_assert_not_null(strstr(out, "\nOptions:\n"), "%s", out);
    qv_config_free(&cfg);
    free(out);
    assert_no_leaks();
}

Test(config, short_h_prints_usage)
{
    capture c = stdout_begin();
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("-h"), &err);
    char *out = stdout_end(c);
    cr_assert_eq(rc, QV_CONFIG_EXITED);
    cr_assert_not_null(strstr(out, "Options:"), "%s", out);
    qv_config_free(&cfg);
    free(out);
}

Test(config, help_wins_over_a_bad_option_or_value)
{
    capture c = stdout_begin();
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--foo", "--help"), &err), QV_CONFIG_EXITED);
    qv_config_free(&cfg);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--port=x", "-h"), &err), QV_CONFIG_EXITED);
    qv_config_free(&cfg);
    char *out = stdout_end(c);
    cr_assert_not_null(strstr(out, "Options:"));
    free(out);
}

Test(config, help_after_double_dash_is_positional)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--", "--help"), &err), QV_CONFIG_RUN);
    cr_assert_eq(cfg.npositional, 1);
    qv_config_free(&cfg);
}

Test(config, version_prints_program_and_version)
{
    capture c = stdout_begin();
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--version"), &err);
    char *out = stdout_end(c);
    cr_assert_eq(rc, QV_CONFIG_EXITED);
    cr_assert_str_eq(out, "quiver-test " QV_VERSION_STRING "\n");
    qv_config_free(&cfg);
    free(out);
}

/* Usage text into a string. */
static char *usage_text(const qv_config *cfg)
{
    char *buf = NULL;
    size_t len = 0;
    FILE *f = open_memstream(&buf, &len);
    cr_assert_not_null(f);
    qv_config_usage(cfg, f);
    fclose(f);
    return buf;
}

Test(config, usage_lists_types_defaults_env_choices_and_builtins)
{
    qv_config cfg = make_cfg();
    char *u = usage_text(&cfg);
    static const char *const want[] = {
        "  --grpc-addr <string>",
        "address the gRPC server listens on",
        "default: 127.0.0.1:7070",
        "env: QUIVER_GRPC_ADDR",
        "  --port <int>",
        "range: 1..65535",
        "  --cache-bytes <uint>",
        "  --ratio <number>",
        "  --[no-]tls",
        "  --metric <choice>",
        "one of: l2|cosine|dot",
        "  --node-name <string>",
        "  --config <file>",
        "QUIVER_CONFIG",
        "  -h, --help",
        "  --version",
    };
    for (size_t i = 0; i < sizeof(want) / sizeof(want[0]); i++)
        cr_assert_not_null(strstr(u, want[i]), "missing '%s' in:\n%s", want[i], u);
    cr_assert_null(strstr(u, "env: QUIVER_NODE_NAME; default"), "no default for --node-name");
    cr_assert(strstr(u, "--grpc-addr") < strstr(u, "--port <int>"), "table order kept");
    cr_assert(strstr(u, "--node-name") < strstr(u, "--config <file>"), "built-ins come last");
    free(u);
}

Test(config, usage_wraps_to_80_columns_and_aligns_help)
{
    static int64_t n;
    static qv_opt opts[] = {
        {.name = "n",
         .type = QV_OPT_INT,
         .target = &n,
         .def = "1",
         .help = "a deliberately long help text that goes on and on about what this number "
                 "does, so that it has to be wrapped over several lines of the usage output"},
        {.name = "a-very-long-option-name-indeed",
         .type = QV_OPT_INT,
         .target = &n,
         .help = "short"},
        {0},
    };
    qv_config cfg = {.program = "p", .env_prefix = "QUIVER", .opts = opts};
    char *u = usage_text(&cfg);
    size_t col = 0;
    size_t lines = 0;
    for (char *line = u; *line != '\0';) {
        char *nl = strchr(line, '\n');
        cr_assert_not_null(nl, "usage ends with a newline");
        cr_assert(nl - line <= 80, "line of %td columns: %.*s", nl - line, (int)(nl - line), line);
        if (strncmp(line, "  --n <int>", 11) == 0)
            col = strspn(line + 11, " ") + 11;
        lines++;
        line = nl + 1;
    }
    cr_assert(col > 11, "help column not found:\n%s", u);
    char *cont = strstr(u, "\n  --n <int>");
    cr_assert_not_null(cont);
    cont = strchr(cont + 1, '\n') + 1;
    cr_assert_eq(strspn(cont, " "), col, "continuation lines align with the help column:\n%s", u);
    cr_assert_not_null(strstr(u, "  --a-very-long-option-name-indeed <int>\n"),
                       "a left column too wide puts the help on the next line:\n%s", u);
    free(u);
}

/* ---- ownership ------------------------------------------------------------------------------- */

Test(config, free_sets_targets_null_and_clears_positional)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--node-name", "n", "pos"), &err), QV_CONFIG_RUN);
    cr_assert_not_null(g_addr);
    cr_assert_not_null(g_metric);
    cr_assert_not_null(g_node_name);
    qv_config_free(&cfg);
    cr_assert_null(g_addr);
    cr_assert_null(g_metric);
    cr_assert_null(g_node_name);
    cr_assert_null(cfg.positional);
    cr_assert_eq(cfg.npositional, 0);
    cr_assert_null(cfg.priv__);
    qv_config_free(&cfg); /* twice is harmless */
}

Test(config, free_leaves_a_target_the_caller_repointed)
{
    static char mine[] = "mine";
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_CONFIG_RUN);
    char *ours = g_addr;
    g_addr = mine;
    qv_config_free(&cfg);
    cr_assert_eq(g_addr, mine);
    (void)ours;
    assert_no_leaks();
}

Test(config, replaced_strings_are_freed)
{
    char path[64];
    temp_file(path, "grpc-addr = from-file\nmetric = dot\nnode-name = f\n");
    setenv("QUIVER_GRPC_ADDR", "from-env", 1);
    setenv("QUIVER_METRIC", "cosine", 1);
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg,
                             ARGS("--config", path, "--grpc-addr", "flag1", "--grpc-addr=flag2",
                                  "--metric=l2", "--node-name", "x"),
                             &err);
    cr_assert_eq(rc, QV_CONFIG_RUN, "%s", err.msg);
    cr_assert_str_eq(g_addr, "flag2");
    cr_assert_str_eq(g_metric, "l2");
    qv_config_free(&cfg);
    assert_no_leaks();
}

Test(config, reparse_releases_previous_values)
{
    qv_config cfg = make_cfg();
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--grpc-addr", "one", "p"), &err), QV_CONFIG_RUN);
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--grpc-addr", "two"), &err), QV_CONFIG_RUN);
    cr_assert_str_eq(g_addr, "two");
    cr_assert_eq(cfg.npositional, 0);
    qv_config_free(&cfg);
    assert_no_leaks();
}

Test(config, error_part_way_is_still_freed_completely)
{
    char path[64];
    temp_file(path, "grpc-addr = from-file\nnode-name = n\n");
    setenv("QUIVER_THREADS", "999", 1);
    qv_config cfg = make_cfg();
    qv_status err;
    int rc = qv_config_parse(&cfg, ARGS("--config", path, "pos"), &err);
    cr_assert_eq(rc, QV_EINVAL);
    cr_assert_str_eq(err.msg, "QUIVER_THREADS: 999 is above the maximum 256");
    cr_assert_str_eq(g_addr, "from-file", "partial values from the file are in place");
    qv_config_free(&cfg);
    cr_assert_null(g_addr);
    cr_assert_null(g_node_name);
    assert_no_leaks();
}

Test(config, null_err_is_allowed)
{
    qv_config cfg = make_cfg();
    cr_assert_eq(qv_config_parse(&cfg, ARGS("--port=x"), NULL), QV_EINVAL);
    qv_config_free(&cfg);
    expect_ok(ARGS("--port=2"));
}

/* ---- the table itself ------------------------------------------------------------------------ */

Test(config, invalid_default_is_reported)
{
    static char *m;
    static qv_opt opts[] = {
        {.name = "metric", .type = QV_OPT_ENUM, .target = &m, .def = "l3", .choices = "l2|dot"},
        {0},
    };
    qv_config cfg = {.program = "p", .opts = opts};
    qv_status err;
    cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_EINVAL);
    cr_assert_str_eq(err.msg, "default of --metric: 'l3' is not one of l2|dot");
    qv_config_free(&cfg);
}

Test(config, broken_table_entries_are_rejected)
{
    static int64_t v;
    static qv_opt no_target[] = {{.name = "x", .type = QV_OPT_INT}, {0}};
    static qv_opt no_choices[] = {{.name = "x", .type = QV_OPT_ENUM, .target = &v}, {0}};
    static qv_opt twice[] = {
        {.name = "x", .type = QV_OPT_INT, .target = &v},
        {.name = "x", .type = QV_OPT_INT, .target = &v},
        {0},
    };
    static qv_opt builtin[] = {{.name = "help", .type = QV_OPT_BOOL, .target = &v}, {0}};
    qv_opt *tables[] = {no_target, no_choices, twice, builtin};
    for (size_t i = 0; i < sizeof(tables) / sizeof(tables[0]); i++) {
        qv_config cfg = {.program = "p", .opts = tables[i]};
        qv_status err;
        cr_assert_eq(qv_config_parse(&cfg, NO_ARGS, &err), QV_EINVAL, "table %zu", i);
        cr_assert_not_null(strstr(err.msg, "option table: --"), "table %zu: %s", i, err.msg);
        qv_config_free(&cfg);
    }
}
