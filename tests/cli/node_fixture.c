/*
 * tests/cli/node_fixture.c - see node_fixture.h.
 */
#define _GNU_SOURCE
#include "tests/cli/node_fixture.h"

#include <criterion/criterion.h>

#include <errno.h>
#include <ftw.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#ifndef QV_NODE_BIN
#error "QV_NODE_BIN must name the quiver-node binary"
#endif

static pid_t g_node = -1;
static char g_tmp[64];
static char g_target[64];

void expect_no_leaks(void)
{
#if defined(__SANITIZE_ADDRESS__)
    cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (see stderr)");
#endif
}

static int rm_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw)
{
    (void)st;
    (void)flag;
    (void)ftw;
    remove(path);
    return 0;
}

/* Reads one line from fd within timeout_ms; returns false on timeout or end of file. */
static bool read_line(int fd, char *buf, size_t cap, int timeout_ms)
{
    size_t len = 0;
    while (len + 1 < cap) {
        struct pollfd p = {.fd = fd, .events = POLLIN};
        int pr = poll(&p, 1, timeout_ms);
        if (pr <= 0)
            return false;
        ssize_t n = read(fd, buf + len, 1);
        if (n <= 0)
            return false;
        if (buf[len] == '\n')
            break;
        len++;
    }
    buf[len] = '\0';
    return true;
}

void node_fixture_start(void)
{
    snprintf(g_tmp, sizeof(g_tmp), "/tmp/quiver-sdk-XXXXXX");
    cr_assert_not_null(mkdtemp(g_tmp), "mkdtemp: %s", strerror(errno));
    char data[128];
    snprintf(data, sizeof(data), "%s/data", g_tmp);
    int pipefd[2];
    cr_assert_eq(pipe(pipefd), 0);
    pid_t parent = getpid();
    /* The child runs nothing of Criterion's (an assertion there would report from a process
     * the runner does not know): only prctl, dup2 and exec. */
    pid_t pid = fork();
    if (pid == 0) {
        prctl(PR_SET_PDEATHSIG, SIGKILL);
        if (getppid() != parent)
            _exit(127);
        dup2(pipefd[1], STDOUT_FILENO);
        close(pipefd[0]);
        close(pipefd[1]);
        char *argv[] = {QV_NODE_BIN,   "--dev",       "--data", data, "--grpc",
                        "127.0.0.1:0", "--log-level", "warn",   NULL};
        execv(argv[0], argv);
        _exit(127);
    }
    cr_assert(pid > 0, "fork: %s", strerror(errno));
    g_node = pid;
    close(pipefd[1]);
    char line[512];
    bool ok = read_line(pipefd[0], line, sizeof(line), 60000);
    close(pipefd[0]);
    cr_assert(ok, "quiver-node did not print its ready line within 60 s");
    const char *p = strstr(line, "port=");
    cr_assert_not_null(p, "unexpected ready line: %s", line);
    int port = atoi(p + 5);
    cr_assert(port > 0 && port < 65536, "bad port in: %s", line);
    snprintf(g_target, sizeof(g_target), "127.0.0.1:%d", port);
}

void node_fixture_stop(void)
{
    if (g_node > 0) {
        kill(g_node, SIGTERM);
        int status = 0;
        for (int i = 0; i < 300; i++) {
            if (waitpid(g_node, &status, WNOHANG) == g_node) {
                g_node = -1;
                break;
            }
            usleep(100 * 1000);
        }
        if (g_node > 0) {
            kill(g_node, SIGKILL);
            waitpid(g_node, &status, 0);
            g_node = -1;
        }
    }
    if (g_tmp[0] != '\0')
        nftw(g_tmp, rm_entry, 16, FTW_DEPTH | FTW_PHYS);
}

const char *node_fixture_target(void)
{
    return g_target;
}

qv_client *node_fixture_connect(const char *target)
{
    qv_client *c = NULL;
    qv_status err = qv_status_ok();
    int rc = qv_client_connect(target, NULL, &c, &err);
    cr_assert_eq(rc, 0, "connect %s: %d %s", target, rc, err.msg);
    cr_assert_not_null(c);
    return c;
}
