/*
 * Tests for sdk/c (libquiver) against a live `quiver-node --dev`.
 *
 * Suite sdk_live: each test gets its own node from tests/cli/node_fixture.h (QV_NODE_BIN, set by
 * CMake, with --grpc 127.0.0.1:0 in a fresh temporary data directory).
 * Suite sdk_offline: argument checking and an unreachable address, without a node.
 *
 * Criterion ignores LeakSanitizer's report at exit, so each test that allocates ends with an
 * explicit leak check (expect_no_leaks).
 */
#define _GNU_SOURCE
#include <criterion/criterion.h>

#include "tests/cli/node_fixture.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

TestSuite(sdk_live, .init = node_fixture_start, .fini = node_fixture_stop, .timeout = 100);

Test(sdk_live, health_reports_serving_for_the_process_and_the_cluster_service)
{
    qv_client *c = node_fixture_connect(node_fixture_target());
    qv_status err = qv_status_ok();
    int serving = -1;
    cr_assert_eq(qv_client_health(c, "", &serving, &err), 0, "%s", err.msg);
    cr_assert_eq(serving, 1);
    serving = -1;
    cr_assert_eq(qv_client_health(c, NULL, &serving, &err), 0, "%s", err.msg);
    cr_assert_eq(serving, 1);
    serving = -1;
    cr_assert_eq(qv_client_health(c, "quiver.v1.Cluster", &serving, &err), 0, "%s", err.msg);
    cr_assert_eq(serving, 1);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_live, health_of_an_unknown_service_is_the_servers_not_found)
{
    qv_client *c = node_fixture_connect(node_fixture_target());
    qv_status err = qv_status_ok();
    int serving = -1;
    int rc = qv_client_health(c, "no.such.Service", &serving, &err);
    cr_assert_eq(rc, QV_ENOTFOUND, "rc %d: %s", rc, err.msg);
    cr_assert_eq(err.code, QV_ENOTFOUND);
    cr_assert_not_null(strstr(err.msg, "no.such.Service"), "message: %s", err.msg);
    cr_assert_eq(serving, 0);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_live, cluster_status_describes_the_dev_node)
{
    qv_client *c = node_fixture_connect(node_fixture_target());
    qv_status err = qv_status_ok();
    qv_cluster_status st;
    cr_assert_eq(qv_client_cluster_status(c, &st, &err), 0, "%s", err.msg);
    cr_assert_eq(st.mode, QV_NODE_MODE_DEV);
    cr_assert_str_eq(qv_node_mode_name(st.mode), "dev");
    cr_assert_str_eq(st.grpc_address, node_fixture_target());
    cr_assert_str_eq(st.version, QV_VERSION_STRING);
    cr_assert_eq(strlen(st.node_id), 32, "node id '%s'", st.node_id);
    cr_assert_eq(st.members_alive, 1);
    cr_assert_eq(st.members_total, 1);
    cr_assert(st.healthy);
    cr_assert_str_eq(st.status_message, "");
    cr_assert_not_null(strstr(st.data_dir, "quiver-sdk-"), "data dir '%s'", st.data_dir);
    cr_assert(st.started_at_unix_ms > 0);
    cr_assert(st.uptime_ms < 600000, "uptime %llu ms", (unsigned long long)st.uptime_ms);
    cr_assert_not_null(st.meta_leader_id); /* "" when unknown, never NULL */
    qv_cluster_status_free(&st);
    cr_assert_null(st.node_id);
    qv_cluster_status_free(&st); /* a freed struct may be freed again */
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_live, members_lists_the_dev_node_itself_alive)
{
    qv_client *c = node_fixture_connect(node_fixture_target());
    qv_status err = qv_status_ok();
    qv_member *ms = NULL;
    size_t n = 0;
    cr_assert_eq(qv_client_members(c, &ms, &n, &err), 0, "%s", err.msg);
    cr_assert_eq(n, 1);
    cr_assert(ms[0].is_self);
    cr_assert_eq(ms[0].state, QV_MEMBER_STATE_ALIVE);
    cr_assert_str_eq(qv_member_state_name(ms[0].state), "ALIVE");
    cr_assert_eq(ms[0].role, QV_NODE_MODE_DEV);
    cr_assert_str_eq(ms[0].grpc_address, node_fixture_target());
    cr_assert_str_eq(ms[0].version, QV_VERSION_STRING);
    cr_assert(ms[0].id[0] != '\0');
    cr_assert(ms[0].has_load);
    cr_assert(ms[0].last_update_age_ms < 60000, "age %llu ms",
              (unsigned long long)ms[0].last_update_age_ms);

    /* The status and the member list agree on who answered. */
    qv_cluster_status st;
    cr_assert_eq(qv_client_cluster_status(c, &st, &err), 0, "%s", err.msg);
    cr_assert_str_eq(ms[0].id, st.node_id);
    qv_cluster_status_free(&st);
    qv_members_free(ms, n);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_live, a_client_is_shared_by_many_calls)
{
    qv_client_opts opts = {.timeout_ms = 5000};
    qv_client *c = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv_client_connect(node_fixture_target(), &opts, &c, &err), 0, "%s", err.msg);
    cr_assert_str_eq(qv_client_target(c), node_fixture_target());
    for (int i = 0; i < 50; i++) {
        int serving = 0;
        cr_assert_eq(qv_client_health(c, "", &serving, &err), 0, "call %d: %s", i, err.msg);
        cr_assert_eq(serving, 1);
    }
    qv_client_close(c);
    expect_no_leaks();
}

/* ---- without a node ----------------------------------------------------------------------------
 */

/* A loopback port nobody listens on (bound, then released). */
static int free_port(void)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    cr_assert(fd >= 0);
    struct sockaddr_in a = {.sin_family = AF_INET, .sin_port = 0};
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    cr_assert_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
    socklen_t len = sizeof(a);
    cr_assert_eq(getsockname(fd, (struct sockaddr *)&a, &len), 0);
    close(fd);
    return ntohs(a.sin_port);
}

TestSuite(sdk_offline, .timeout = 60);

Test(sdk_offline, unreachable_server_is_unavailable_naming_the_address)
{
    char target[64];
    snprintf(target, sizeof(target), "127.0.0.1:%d", free_port());
    qv_client_opts opts = {.timeout_ms = 5000};
    qv_client *c = NULL;
    qv_status err = qv_status_ok();
    cr_assert_eq(qv_client_connect(target, &opts, &c, &err), 0, "%s", err.msg);

    qv_cluster_status st;
    int rc = qv_client_cluster_status(c, &st, &err);
    cr_assert_eq(rc, QV_EUNAVAIL, "rc %d: %s", rc, err.msg);
    char want[96];
    snprintf(want, sizeof(want), "cannot reach %s", target);
    cr_assert_eq(strncmp(err.msg, want, strlen(want)), 0, "message: %s", err.msg);
    cr_assert_null(st.node_id, "out-parameters stay zeroed on failure");

    qv_member *ms = (qv_member *)&st; /* anything non-NULL: the call must reset it */
    size_t n = 99;
    rc = qv_client_members(c, &ms, &n, &err);
    cr_assert_eq(rc, QV_EUNAVAIL, "rc %d: %s", rc, err.msg);
    cr_assert_null(ms);
    cr_assert_eq(n, 0);

    int serving = 1;
    rc = qv_client_health(c, "", &serving, &err);
    cr_assert_eq(rc, QV_EUNAVAIL, "rc %d: %s", rc, err.msg);
    cr_assert_eq(serving, 0);
    qv_client_close(c);
    expect_no_leaks();
}

Test(sdk_offline, connect_rejects_malformed_addresses_and_options)
{
    static const char *const bad[] = {
        "",
        "localhost",
        "localhost:",
        ":7070",
        "localhost:0",
        "localhost:65536",
        "localhost:70x",
        "local host:7070",
        "::1:7070",
        "[::1:7070",
        "localhost:123456",
    };
    qv_status err = qv_status_ok();
    for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
        qv_client *c = (qv_client *)&err; /* must be reset to NULL */
        int rc = qv_client_connect(bad[i], NULL, &c, &err);
        cr_assert_eq(rc, QV_EINVAL, "'%s' gave %d", bad[i], rc);
        cr_assert_eq(err.code, QV_EINVAL);
        cr_assert_null(c, "'%s' left a client", bad[i]);
    }
    cr_assert_eq(qv_client_connect(NULL, NULL, &(qv_client *){NULL}, &err), QV_EINVAL);

    qv_client *c = NULL;
    qv_client_opts neg = {.timeout_ms = -1};
    cr_assert_eq(qv_client_connect("127.0.0.1:7070", &neg, &c, &err), QV_EINVAL);
    qv_client_opts half = {.tls_cert_path = "/nonexistent/cert.pem"};
    cr_assert_eq(qv_client_connect("127.0.0.1:7070", &half, &c, &err), QV_EINVAL);
    cr_assert_not_null(strstr(err.msg, "key"), "message: %s", err.msg);
    qv_client_opts noca = {.tls_ca_path = "/nonexistent/ca.pem"};
    cr_assert_eq(qv_client_connect("127.0.0.1:7070", &noca, &c, &err), QV_ENOTFOUND, "%s", err.msg);
    cr_assert_null(c);

    /* Accepted forms: no call is made, so nothing needs to listen. */
    static const char *const good[] = {"127.0.0.1:7070", "localhost:1", "[::1]:65535",
                                       "dns:///localhost:7070"};
    for (size_t i = 0; i < sizeof(good) / sizeof(good[0]); i++) {
        int rc = qv_client_connect(good[i], NULL, &c, &err);
        cr_assert_eq(rc, 0, "'%s' gave %d: %s", good[i], rc, err.msg);
        qv_client_close(c);
        c = NULL;
    }
    qv_client_close(NULL);
    expect_no_leaks();
}

Test(sdk_offline, names_of_modes_and_states)
{
    cr_assert_str_eq(qv_node_mode_name(QV_NODE_MODE_NODE), "node");
    cr_assert_str_eq(qv_node_mode_name(QV_NODE_MODE_ROUTER), "router");
    cr_assert_str_eq(qv_node_mode_name((qv_node_mode)42), "unspecified");
    cr_assert_str_eq(qv_member_state_name(QV_MEMBER_STATE_SUSPECT), "SUSPECT");
    cr_assert_str_eq(qv_member_state_name(QV_MEMBER_STATE_DEAD), "DEAD");
    cr_assert_str_eq(qv_member_state_name(QV_MEMBER_STATE_LEFT), "LEFT");
    cr_assert_str_eq(qv_member_state_name((qv_member_state)42), "UNSPECIFIED");
}
