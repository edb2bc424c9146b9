/*
 * The real driver (common/gossip/net.c) on 127.0.0.1: members converge over UDP + TCP, records
 * travel, leave is seen as LEFT; hostile datagrams and streams of every kind are dropped, counted
 * by reason, and the member keeps answering. Timers are shortened (probe every 200 ms) so each
 * test takes a few seconds; waits poll with a limit, never sleep blindly.
 */
#define _GNU_SOURCE
#include "gossip_fixture.h"

#include "common/gossip/gossip_internal.h"

#include <arpa/inet.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

static qv_gossip_key g_key;

static void setup(void)
{
    qv_log_set_level(QV_LOG_WARN);
    g_key = fx_key(1);
}

TestSuite(net, .init = setup, .timeout = 60);

static qv_gossip_config fast_cfg(const char *name)
{
    qv_gossip_config cfg = {
        .name = name,
        .bind_addr = "127.0.0.1:0",
        .keys = &g_key,
        .nkeys = 1,
        .probe_interval_ms = 200,
        .probe_timeout_ms = 100,
        .gossip_interval_ms = 50,
        .push_pull_interval_ms = 2000,
        .reconnect_interval_ms = 1000,
        .join_retry_ms = 100,
        .tcp_timeout_ms = 2000,
    };
    return cfg;
}

static qv_gossip *start(const char *name)
{
    qv_gossip_config cfg = fast_cfg(name);
    qv_gossip *g = NULL;
    qv_status err;
    int rc = qv_gossip_start(&cfg, &g, &err);
    cr_assert_eq(rc, 0, "start %s: %s", name, err.msg);
    return g;
}

static void join(qv_gossip *g, qv_gossip *seed)
{
    char text[QV_GOSSIP_ADDR_STRLEN];
    qv_gossip_addr a = qv_gossip_local_addr(seed);
    const char *seeds[] = {qv_gossip_addr_format(&a, text, sizeof(text))};
    cr_assert_eq(qv_gossip_join(g, seeds, 1, NULL), 0);
}

static bool wait_alive(qv_gossip *g, size_t want, int ms)
{
    for (int t = 0; t < ms; t += 20) {
        size_t alive = 0;
        qv_gossip_counts(g, &alive, NULL);
        if (alive == want)
            return true;
        qv_sleep_ms(20);
    }
    return false;
}

static int state_of(qv_gossip *g, const char *name)
{
    qv_gossip_member *m;
    size_t n;
    int st = 0;
    cr_assert_eq(qv_gossip_members(g, true, &m, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, name) == 0)
            st = m[i].state;
    qv_gossip_members_free(m, n);
    return st;
}

static bool has_blob(qv_gossip *g, const char *name, size_t len)
{
    qv_gossip_member *m;
    size_t n;
    bool ok = false;
    cr_assert_eq(qv_gossip_members(g, false, &m, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, name) == 0)
            ok = m[i].blob_len == len && !m[i].blob_stale;
    qv_gossip_members_free(m, n);
    return ok;
}

static int events_seen;

static void count_event(const qv_gossip_event *ev, void *user)
{
    (void)ev;
    (void)user;
    __atomic_add_fetch(&events_seen, 1, __ATOMIC_RELAXED);
}

Test(net, members_converge_share_records_and_leave_over_loopback)
{
    qv_gossip *a = start("net-a"), *b = start("net-b"), *c = start("net-c");
    uint64_t sub;
    cr_assert_eq(qv_gossip_subscribe(a, count_event, NULL, &sub), 0);
    join(b, a);
    join(c, a);
    cr_expect(wait_alive(a, 3, 10000), "a does not see three members");
    cr_expect(wait_alive(b, 3, 10000), "b does not see three members");
    cr_expect(wait_alive(c, 3, 10000), "c does not see three members");
    uint8_t blob[5000];
    memset(blob, 0xab, sizeof(blob));
    qv_gossip_record r = {.role = QV_GOSSIP_ROLE_NODE,
                          .grpc_addr = "127.0.0.1:7070",
                          .blob = blob,
                          .blob_len = sizeof(blob)};
    cr_assert_eq(qv_gossip_set_record(c, &r), 0);
    bool got = false;
    for (int t = 0; t < 10000 && !got; t += 50) {
        got = has_blob(a, "net-c", sizeof(blob)) && has_blob(b, "net-c", sizeof(blob));
        qv_sleep_ms(50);
    }
    cr_expect(got, "the 5000-byte blob did not reach both members by push-pull");
    qv_gossip_stop(c, 3000);
    bool left = false;
    for (int t = 0; t < 5000 && !left; t += 50) {
        left = state_of(a, "net-c") == QV_GOSSIP_LEFT && state_of(b, "net-c") == QV_GOSSIP_LEFT;
        qv_sleep_ms(50);
    }
    cr_expect(left, "a stopped member with a graceful leave is not LEFT everywhere");
    cr_expect_geq(__atomic_load_n(&events_seen, __ATOMIC_RELAXED), 3, "join, state, leave");
    qv_gossip_unsubscribe(a, sub);
    qv_gossip_stats st;
    qv_gossip_get_stats(a, &st);
    cr_expect_gt(st.probes, 0);
    cr_expect_gt(st.streams_received + st.streams_sent, 0);
    qv_gossip_stop(b, 0);
    qv_gossip_stop(a, 0);
    fx_expect_no_leaks();
}

/* ---- hostile input ----------------------------------------------------------------------------
 */

static int udp_socket(void)
{
    int fd = socket(AF_INET, SOCK_DGRAM, 0);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
    cr_assert_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static struct sockaddr_in sockaddr_of(qv_gossip *g)
{
    qv_gossip_addr a = qv_gossip_local_addr(g);
    struct sockaddr_in sa = {.sin_family = AF_INET, .sin_port = htons(a.port)};
    memcpy(&sa.sin_addr, a.ip, 4);
    return sa;
}

static void send_raw(int fd, qv_gossip *g, const uint8_t *buf, size_t len)
{
    struct sockaddr_in sa = sockaddr_of(g);
    cr_assert_eq(sendto(fd, buf, len, 0, (struct sockaddr *)&sa, sizeof(sa)), (ssize_t)len);
}

/* A sealed datagram from `sender` holding one PING for `target`. */
static size_t ping_packet(const qv__keyring *kr, const char *sender, uint64_t seq,
                          const char *target, uint32_t ping_seq, uint8_t *out)
{
    uint8_t pt[512];
    qv__wbuf w;
    qv__w_fixed(&w, pt, sizeof(pt));
    qv__hdr h = {.epoch = 7, .seq = seq};
    snprintf(h.name, sizeof(h.name), "%s", sender);
    qv__hdr_encode(&w, &h);
    qv__w_u8(&w, 1);
    qv__msg m = {.type = QV__MSG_PING, .seq = ping_seq};
    snprintf(m.name, sizeof(m.name), "%s", target);
    qv__msg_encode(&w, &m);
    uint8_t nonce[QV__NONCE_BYTES];
    qv_random_bytes(nonce, sizeof(nonce));
    return qv__seal(kr, QV__PURPOSE_PACKET, nonce, w.p, w.len, out);
}

/* Waits for a datagram on fd and returns the ACK seq it carries, or -1. */
static int64_t recv_ack(int fd, const qv__keyring *kr, int ms)
{
    struct pollfd p = {.fd = fd, .events = POLLIN};
    while (poll(&p, 1, ms) == 1) {
        uint8_t buf[2048], pt[2048];
        ssize_t n = recv(fd, buf, sizeof(buf), 0);
        size_t ptlen;
        qv_gossip_drop why;
        if (n <= 0 || qv__open(kr, QV__PURPOSE_PACKET, buf, (size_t)n, pt, &ptlen, &why) != 0)
            continue;
        qv__rbuf r;
        qv__r_init(&r, pt, ptlen);
        qv__hdr h;
        uint32_t count;
        if (qv__packet_begin(&r, &h, &count) != 0)
            continue;
        for (uint32_t i = 0; i < count; i++) {
            qv__msg m;
            if (qv__msg_decode(&r, &m) != 0)
                break;
            if (m.type == QV__MSG_ACK)
                return m.seq;
        }
    }
    return -1;
}

static int tcp_connect(qv_gossip *g)
{
    int fd = socket(AF_INET, SOCK_STREAM, 0);
    struct sockaddr_in sa = sockaddr_of(g);
    cr_assert_eq(connect(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
    return fd;
}

static void send_frame(int fd, const uint8_t *buf, size_t len)
{
    uint8_t hdr[4] = {(uint8_t)len, (uint8_t)(len >> 8), (uint8_t)(len >> 16),
                      (uint8_t)(len >> 24)};
    cr_assert_eq(write(fd, hdr, 4), 4);
    cr_assert_eq(write(fd, buf, len), (ssize_t)len);
}

static bool wait_drop(qv_gossip *g, qv_gossip_drop why, uint64_t at_least)
{
    for (int t = 0; t < 5000; t += 20) {
        qv_gossip_stats st;
        qv_gossip_get_stats(g, &st);
        if (st.dropped[why] >= at_least)
            return true;
        qv_sleep_ms(20);
    }
    return false;
}

Test(net, hostile_datagrams_and_streams_are_dropped_counted_and_survived)
{
    qv_gossip *v = start("victim");
    qv__keyring good, other;
    qv_gossip_key k2 = fx_key(2);
    cr_assert_eq(qv__keyring_set(&good, &g_key, 1), 0);
    cr_assert_eq(qv__keyring_set(&other, &k2, 1), 0);
    int fd = udp_socket();
    uint8_t buf[4096];

    /* A valid ping is answered. */
    size_t len = ping_packet(&good, "probe-x", 1, "victim", 1234, buf);
    send_raw(fd, v, buf, len);
    cr_assert_eq(recv_ack(fd, &good, 3000), 1234, "no ack to a valid ping");
    /* The very same bytes again: a replay. */
    send_raw(fd, v, buf, len);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_REPLAY, 1), "replay not counted");
    /* Wrong key, tampered, truncated, oversized, bad version, malformed, loopback. */
    len = ping_packet(&other, "probe-x", 2, "victim", 1, buf);
    send_raw(fd, v, buf, len);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_UNKNOWN_KEY, 1), "wrong key not counted");
    len = ping_packet(&good, "probe-x", 3, "victim", 1, buf);
    buf[len - 1] ^= 1;
    send_raw(fd, v, buf, len);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_AUTH, 1), "tampered tag not counted");
    send_raw(fd, v, buf, 0);
    send_raw(fd, v, buf, 20);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_TRUNCATED, 2), "truncated not counted");
    memset(buf, 0x11, 3000);
    send_raw(fd, v, buf, 3000);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_OVERSIZED, 1), "oversized not counted");
    buf[0] = 9;
    send_raw(fd, v, buf, 100);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_VERSION, 1), "bad envelope version not counted");
    uint8_t nonce[QV__NONCE_BYTES] = {1};
    len = qv__seal(&good, QV__PURPOSE_PACKET, nonce, (const uint8_t *)"\x01garbage", 8, buf);
    send_raw(fd, v, buf, len);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_MALFORMED, 1), "malformed plaintext not counted");
    len = ping_packet(&good, "victim", 9, "victim", 1, buf);
    send_raw(fd, v, buf, len);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_LOOPBACK, 1), "own name not counted");

    /* Streams: a huge length, a frame cut short, a datagram replayed as a stream. */
    int t1 = tcp_connect(v);
    uint8_t huge[4] = {0xff, 0xff, 0xff, 0xff};
    cr_assert_eq(write(t1, huge, 4), 4);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_OVERSIZED, 2), "oversized frame not counted");
    close(t1);
    int t2 = tcp_connect(v);
    uint8_t hdr[4] = {200, 0, 0, 0};
    cr_assert_eq(write(t2, hdr, 4), 4);
    cr_assert_eq(write(t2, buf, 10), 10);
    close(t2);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_STREAM, 1), "cut stream not counted");
    int t3 = tcp_connect(v);
    len = ping_packet(&good, "probe-x", 10, "victim", 1, buf);
    send_frame(t3, buf, len);
    cr_expect(wait_drop(v, QV_GOSSIP_DROP_AUTH, 2), "datagram as a stream not counted");
    close(t3);

    /* A genuine push-pull from a stranger gets the full state back. */
    int t4 = tcp_connect(v);
    qv__wbuf w;
    qv__w_growable(&w, 1 << 16);
    qv__hdr h = {.epoch = 8, .seq = 1};
    snprintf(h.name, sizeof(h.name), "joiner");
    qv__pp_begin_encode(&w, &h, QV__STREAM_PP_REQ, QV__PP_FLAG_JOIN, 1);
    qv__pp_entry e = {.state = QV_GOSSIP_ALIVE};
    snprintf(e.name, sizeof(e.name), "joiner");
    qv_gossip_addr_parse("127.0.0.1:9", &e.addr);
    qv__pp_entry_encode(&w, &e);
    uint8_t sealed[1024];
    len = qv__seal(&good, QV__PURPOSE_STREAM_REQ, nonce, w.p, w.len, sealed);
    qv__w_free(&w);
    send_frame(t4, sealed, len);
    uint8_t lenbuf[4];
    cr_assert_eq(recv(t4, lenbuf, 4, MSG_WAITALL), 4);
    size_t rlen = (size_t)lenbuf[0] | (size_t)lenbuf[1] << 8;
    uint8_t *reply = malloc(rlen), *pt = malloc(rlen);
    cr_assert_eq(recv(t4, reply, rlen, MSG_WAITALL), (ssize_t)rlen);
    size_t ptlen;
    qv_gossip_drop why;
    cr_assert_eq(qv__open(&good, QV__PURPOSE_STREAM_REPLY, reply, rlen, pt, &ptlen, &why), 0);
    uint8_t kind;
    cr_assert_eq(qv__pp_validate(pt, ptlen, &h, &kind), 0);
    cr_expect_eq(kind, QV__STREAM_PP_REPLY);
    cr_expect_str_eq(h.name, "victim");
    free(reply);
    free(pt);
    close(t4);
    cr_expect_eq(state_of(v, "joiner"), QV_GOSSIP_ALIVE, "the joiner was merged");

    /* And the victim still answers. */
    len = ping_packet(&good, "probe-x", 11, "victim", 999, buf);
    send_raw(fd, v, buf, len);
    cr_expect_eq(recv_ack(fd, &good, 3000), 999, "no ack after the abuse");
    close(fd);
    qv_gossip_stop(v, 0);
    fx_expect_no_leaks();
}

Test(net, bind_conflicts_and_wildcards)
{
    qv_gossip *a = start("bind-a");
    char addr[QV_GOSSIP_ADDR_STRLEN];
    qv_gossip_addr la = qv_gossip_local_addr(a);
    qv_gossip_addr_format(&la, addr, sizeof(addr));
    qv_gossip_config cfg = fast_cfg("bind-b");
    cfg.bind_addr = addr;
    qv_gossip *b = NULL;
    qv_status err;
    cr_expect_eq(qv_gossip_start(&cfg, &b, &err), QV_EUNAVAIL, "a taken port");
    cr_expect(strstr(err.msg, addr) != NULL, "%s", err.msg);
    cfg.bind_fallback = true;
    cr_assert_eq(qv_gossip_start(&cfg, &b, &err), 0, "%s", err.msg);
    qv_gossip_addr lb = qv_gossip_local_addr(b);
    cr_expect_neq(lb.port, la.port);
    qv_gossip_stop(b, 0);
    cfg = fast_cfg("bind-c");
    cfg.bind_addr = "0.0.0.0:0";
    cr_expect_eq(qv_gossip_start(&cfg, &b, &err), QV_EINVAL, "wildcard without advertise");
    cr_expect(strstr(err.msg, "advertise") != NULL, "%s", err.msg);
    cfg.advertise_addr = "127.0.0.1:0";
    cr_assert_eq(qv_gossip_start(&cfg, &b, &err), 0, "%s", err.msg);
    qv_gossip *c = start("bind-d");
    join(c, b);
    cr_expect(wait_alive(c, 2, 10000), "a member bound to 0.0.0.0 is reachable");
    qv_gossip_stop(c, 0);
    qv_gossip_stop(b, 0);
    qv_gossip_stop(a, 0);
    cfg = fast_cfg("bind-e");
    cfg.nkeys = 0;
    cr_expect_eq(qv_gossip_start(&cfg, &b, &err), QV_EINVAL, "no key");
    fx_expect_no_leaks();
}
