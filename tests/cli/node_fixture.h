/*
 * tests/cli/node_fixture.h - one live `quiver-node --dev` for the C SDK suites (Criterion).
 *
 * node_fixture_start (a suite's .init) starts QV_NODE_BIN (set by CMake on the test target) with
 * --grpc 127.0.0.1:0 in a fresh temporary directory "/tmp/quiver-sdk-XXXXXX", reads the port
 * from its "quiver-node ready: ... port=N" line and remembers "127.0.0.1:N". node_fixture_stop
 * (.fini) stops it (SIGTERM, then SIGKILL after 30 s) and removes the directory. The node also
 * dies with the test process (PR_SET_PDEATHSIG), so a crashed test leaves nothing behind.
 * Criterion runs each test in its own process, so each test gets its own node.
 */
#ifndef QV_TESTS_CLI_NODE_FIXTURE_H
#define QV_TESTS_CLI_NODE_FIXTURE_H

#include "sdk/c/quiver.h"

/* Criterion .init / .fini of a suite that needs a node. */
void node_fixture_start(void);
void node_fixture_stop(void);

/* "127.0.0.1:PORT" of the running node; valid until node_fixture_stop. */
const char *node_fixture_target(void);

/* A client of `target` with the default options; asserts on failure. */
qv_client *node_fixture_connect(const char *target);

/* Criterion ignores LeakSanitizer's report at exit: a test that allocates ends with this, which
 * runs a leak check now and fails the test when it finds one. A no-op without ASan. */
void expect_no_leaks(void);

#endif /* QV_TESTS_CLI_NODE_FIXTURE_H */
