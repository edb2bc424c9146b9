/*
 * The real gossip driver: one UDP and one TCP socket on the same port, one thread running an
 * epoll loop over them, an eventfd (wake-ups from API calls) and the push-pull connections.
 *
 * Each loop turn reads every datagram and stream byte that is ready first, then runs the core's
 * timers, then delivers events to subscribers without the lock. Reading before timers matters
 * after a pause (SIGSTOP, a long GC-like stall): acks that arrived meanwhile are seen before the
 * probe they answer times out.
 *
 * A push-pull exchange is one frame each way on a fresh connection: u32 length (LE) then the
 * sealed bytes; the initiator writes its request, reads the reply, closes. Lengths above
 * max_stream_bytes are refused before anything is allocated, and a body buffer grows only as
 * bytes actually arrive. At most MAX_INBOUND connections are served at once; each has
 * tcp_timeout_ms to finish. All socket work happens on the loop thread: the core only calls
 * send_packet / stream_start from its tick and handlers, which run there.
 */
#define _GNU_SOURCE
#include "common/gossip/gossip_internal.h"

#include <sodium.h>

#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#define MOD         "gossip"
#define MAX_INBOUND 16
#define RX_BUF      65536
#define UDP_BATCH   256

enum { PH_CONNECTING, PH_WRITING, PH_READ_LEN, PH_READ_BODY };

typedef struct conn {
    struct conn *prev, *next;
    int fd;
    bool outbound;
    uint64_t id;
    int phase;
    qv_gossip_addr peer;
    uint8_t *out;
    size_t out_len, out_off;
    uint8_t lenbuf[4];
    size_t len_got;
    uint8_t *in;
    size_t in_len, in_got, in_cap;
    uint64_t deadline_ms;
} conn;

struct qv__net {
    qv_gossip *g;
    int udp, tcp, ep, evfd;
    int family; /* of the sockets: AF_INET or AF_INET6 */
    pthread_t thread;
    bool thread_started;
    atomic_bool stop;
    conn *conns;
    size_t ninbound;
    uint8_t *rx;
    uint32_t max_stream, tcp_timeout;
};

/* epoll markers for the three fixed descriptors */
static char tag_udp, tag_tcp, tag_ev;

/* ---- addresses ------------------------------------------------------------------------------- */

static socklen_t to_sockaddr(int family, const qv_gossip_addr *a, struct sockaddr_storage *ss)
{
    memset(ss, 0, sizeof(*ss));
    if (family == AF_INET6) {
        struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)ss;
        s6->sin6_family = AF_INET6;
        s6->sin6_port = htons(a->port);
        if (a->family == 6) {
            memcpy(&s6->sin6_addr, a->ip, 16);
        } else {
            s6->sin6_addr.s6_addr[10] = 0xff; /* IPv4-mapped */
            s6->sin6_addr.s6_addr[11] = 0xff;
            memcpy(&s6->sin6_addr.s6_addr[12], a->ip, 4);
        }
        return sizeof(*s6);
    }
    struct sockaddr_in *s4 = (struct sockaddr_in *)ss;
    s4->sin_family = AF_INET;
    s4->sin_port = htons(a->port);
    memcpy(&s4->sin_addr, a->ip, 4);
    return sizeof(*s4);
}

static void from_sockaddr(const struct sockaddr_storage *ss, qv_gossip_addr *a)
{
    memset(a, 0, sizeof(*a));
    if (ss->ss_family == AF_INET6) {
        const struct sockaddr_in6 *s6 = (const struct sockaddr_in6 *)ss;
        a->port = ntohs(s6->sin6_port);
        if (IN6_IS_ADDR_V4MAPPED(&s6->sin6_addr)) {
            a->family = 4;
            memcpy(a->ip, &s6->sin6_addr.s6_addr[12], 4);
        } else {
            a->family = 6;
            memcpy(a->ip, &s6->sin6_addr, 16);
        }
    } else {
        const struct sockaddr_in *s4 = (const struct sockaddr_in *)ss;
        a->family = 4;
        a->port = ntohs(s4->sin_port);
        memcpy(a->ip, &s4->sin_addr, 4);
    }
}

static bool addr_is_wildcard(const qv_gossip_addr *a)
{
    static const uint8_t zero[16] = {0};
    return memcmp(a->ip, zero, a->family == 6 ? 16 : 4) == 0;
}

/* ---- connections ----------------------------------------------------------------------------- */

static void conn_close(struct qv__net *net, conn *c)
{
    epoll_ctl(net->ep, EPOLL_CTL_DEL, c->fd, NULL);
    close(c->fd);
    if (c->prev != NULL)
        c->prev->next = c->next;
    else
        net->conns = c->next;
    if (c->next != NULL)
        c->next->prev = c->prev;
    if (!c->outbound)
        net->ninbound--;
    free(c->out);
    free(c->in);
    free(c);
}

static void conn_fail(struct qv__net *net, conn *c, int rc)
{
    qv_gossip *g = net->g;
    pthread_mutex_lock(&g->mu);
    if (c->outbound)
        qv__swim_on_stream_done(&g->core, c->id, rc, NULL, 0);
    else
        g->core.stats.dropped[QV_GOSSIP_DROP_STREAM]++;
    pthread_mutex_unlock(&g->mu);
    conn_close(net, c);
}

static conn *conn_new(struct qv__net *net, int fd, bool outbound)
{
    conn *c = calloc(1, sizeof(*c));
    if (c == NULL)
        return NULL;
    c->fd = fd;
    c->outbound = outbound;
    c->deadline_ms = qv_now_ms() + net->tcp_timeout;
    struct epoll_event ev = {.events = outbound ? EPOLLOUT : EPOLLIN, .data.ptr = c};
    if (epoll_ctl(net->ep, EPOLL_CTL_ADD, fd, &ev) != 0) {
        free(c);
        return NULL;
    }
    c->next = net->conns;
    if (net->conns != NULL)
        net->conns->prev = c;
    net->conns = c;
    if (!outbound)
        net->ninbound++;
    return c;
}

static int frame(const uint8_t *buf, size_t len, uint8_t **out, size_t *out_len)
{
    uint8_t *p = malloc(len + 4);
    if (p == NULL)
        return QV_ERESOURCE;
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(len >> (8 * i));
    memcpy(p + 4, buf, len);
    *out = p;
    *out_len = len + 4;
    return 0;
}

static void conn_watch(struct qv__net *net, conn *c, uint32_t events)
{
    struct epoll_event ev = {.events = events, .data.ptr = c};
    epoll_ctl(net->ep, EPOLL_CTL_MOD, c->fd, &ev);
}

/* A whole frame arrived on c. Returns false when c was closed. */
static bool conn_complete(struct qv__net *net, conn *c)
{
    qv_gossip *g = net->g;
    if (c->outbound) {
        pthread_mutex_lock(&g->mu);
        qv__swim_on_stream_done(&g->core, c->id, 0, c->in, c->in_len);
        pthread_mutex_unlock(&g->mu);
        conn_close(net, c);
        return false;
    }
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    pthread_mutex_lock(&g->mu);
    int rc = qv__swim_on_stream_request(&g->core, &c->peer, c->in, c->in_len, &reply, &reply_len);
    pthread_mutex_unlock(&g->mu);
    if (rc == 0)
        rc = frame(reply, reply_len, &c->out, &c->out_len);
    free(reply);
    if (rc != 0) {
        conn_close(net, c);
        return false;
    }
    c->out_off = 0;
    c->phase = PH_WRITING;
    conn_watch(net, c, EPOLLOUT);
    return true;
}

static void conn_event(struct qv__net *net, conn *c, uint32_t events)
{
    if (c->phase == PH_CONNECTING) {
        int soerr = 0;
        socklen_t sl = sizeof(soerr);
        if (getsockopt(c->fd, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0 || soerr != 0) {
            conn_fail(net, c, QV_EUNAVAIL);
            return;
        }
        c->phase = PH_WRITING;
    }
    if (c->phase == PH_WRITING) {
        while (c->out_off < c->out_len) {
            ssize_t n = send(c->fd, c->out + c->out_off, c->out_len - c->out_off, MSG_NOSIGNAL);
            if (n < 0) {
                if (errno == EAGAIN || errno == EWOULDBLOCK)
                    return;
                if (errno == EINTR)
                    continue;
                conn_fail(net, c, QV_EUNAVAIL);
                return;
            }
            c->out_off += (size_t)n;
        }
        if (!c->outbound) {
            conn_close(net, c); /* reply written: done */
            return;
        }
        free(c->out);
        c->out = NULL;
        c->phase = PH_READ_LEN;
        conn_watch(net, c, EPOLLIN);
        return;
    }
    if (!(events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        return;
    for (;;) {
        uint8_t *dst;
        size_t want;
        if (c->phase == PH_READ_LEN) {
            dst = c->lenbuf + c->len_got;
            want = 4 - c->len_got;
        } else {
            if (c->in_got == c->in_cap) {
                size_t cap = c->in_cap == 0 ? 16384 : c->in_cap * 2;
                if (cap > c->in_len)
                    cap = c->in_len;
                uint8_t *p = realloc(c->in, cap);
                if (p == NULL) {
                    conn_fail(net, c, QV_ERESOURCE);
                    return;
                }
                c->in = p;
                c->in_cap = cap;
            }
            dst = c->in + c->in_got;
            want = c->in_cap - c->in_got;
        }
        ssize_t n = recv(c->fd, dst, want, 0);
        if (n < 0) {
            if (errno == EAGAIN || errno == EWOULDBLOCK)
                return;
            if (errno == EINTR)
                continue;
            conn_fail(net, c, QV_EUNAVAIL);
            return;
        }
        if (n == 0) {
            conn_fail(net, c, QV_EUNAVAIL); /* closed before a whole frame */
            return;
        }
        if (c->phase == PH_READ_LEN) {
            c->len_got += (size_t)n;
            if (c->len_got < 4)
                continue;
            c->in_len = (size_t)c->lenbuf[0] | (size_t)c->lenbuf[1] << 8 |
                        (size_t)c->lenbuf[2] << 16 | (size_t)c->lenbuf[3] << 24;
            if (c->in_len > net->max_stream || c->in_len < QV__ENV_OVERHEAD) {
                qv_gossip *g = net->g;
                pthread_mutex_lock(&g->mu);
                g->core.stats.dropped[c->in_len > net->max_stream ? QV_GOSSIP_DROP_OVERSIZED
                                                                  : QV_GOSSIP_DROP_TRUNCATED]++;
                pthread_mutex_unlock(&g->mu);
                conn_fail(net, c, QV_ERESOURCE);
                return;
            }
            c->phase = PH_READ_BODY;
            continue;
        }
        c->in_got += (size_t)n;
        if (c->in_got == c->in_len) {
            conn_complete(net, c);
            return;
        }
    }
}

static void accept_all(struct qv__net *net)
{
    for (;;) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        int fd = accept4(net->tcp, (struct sockaddr *)&ss, &sl, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0)
            return;
        conn *c = net->ninbound < MAX_INBOUND ? conn_new(net, fd, false) : NULL;
        if (c == NULL) {
            close(fd);
            qv_gossip *g = net->g;
            pthread_mutex_lock(&g->mu);
            g->core.stats.dropped[QV_GOSSIP_DROP_STREAM]++;
            pthread_mutex_unlock(&g->mu);
            continue;
        }
        from_sockaddr(&ss, &c->peer);
        c->phase = PH_READ_LEN;
    }
}

/* ---- the core's io --------------------------------------------------------------------------- */

static uint64_t io_now(void *ctx)
{
    (void)ctx;
    return qv_now_ms();
}

static void io_random(void *ctx, void *buf, size_t len)
{
    (void)ctx;
    randombytes_buf(buf, len);
}

static int io_send(void *ctx, const qv_gossip_addr *to, const uint8_t *buf, size_t len)
{
    struct qv__net *net = ctx;
    struct sockaddr_storage ss;
    socklen_t sl = to_sockaddr(net->family, to, &ss);
    if (net->family == AF_INET && to->family != 4)
        return QV_EINVAL;
    ssize_t n = sendto(net->udp, buf, len, MSG_DONTWAIT | MSG_NOSIGNAL, (struct sockaddr *)&ss, sl);
    return n == (ssize_t)len ? 0 : QV_EUNAVAIL;
}

static int io_stream_start(void *ctx, uint64_t id, const qv_gossip_addr *to, const uint8_t *buf,
                           size_t len)
{
    struct qv__net *net = ctx; /* called on the gossip thread only (see the top comment) */
    if (net->family == AF_INET && to->family != 4)
        return QV_EINVAL;
    int fd = socket(net->family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0)
        return QV_EUNAVAIL;
    struct sockaddr_storage ss;
    socklen_t sl = to_sockaddr(net->family, to, &ss);
    if (connect(fd, (struct sockaddr *)&ss, sl) != 0 && errno != EINPROGRESS) {
        close(fd);
        return QV_EUNAVAIL;
    }
    conn *c = conn_new(net, fd, true);
    if (c == NULL) {
        close(fd);
        return QV_ERESOURCE;
    }
    c->id = id;
    c->peer = *to;
    c->phase = PH_CONNECTING;
    if (frame(buf, len, &c->out, &c->out_len) != 0) {
        conn_close(net, c);
        return QV_ERESOURCE;
    }
    return 0;
}

static int io_resolve(void *ctx, const char *text, qv_gossip_addr *out)
{
    (void)ctx;
    return qv_gossip_addr_resolve(text, out, NULL);
}

static void io_event(void *ctx, int type, const qv__member *m)
{
    struct qv__net *net = ctx;
    qv__gossip_on_event(net->g, type, m);
}

static void io_wake(void *ctx)
{
    struct qv__net *net = ctx;
    uint64_t one = 1;
    ssize_t n = write(net->evfd, &one, sizeof(one));
    (void)n; /* a full counter already means "wake up" */
}

/* ---- the loop -------------------------------------------------------------------------------- */

static void read_datagrams(struct qv__net *net)
{
    qv_gossip *g = net->g;
    for (int i = 0; i < UDP_BATCH; i++) {
        struct sockaddr_storage ss;
        socklen_t sl = sizeof(ss);
        ssize_t n = recvfrom(net->udp, net->rx, RX_BUF, MSG_TRUNC | MSG_DONTWAIT,
                             (struct sockaddr *)&ss, &sl);
        if (n < 0)
            return;
        qv_gossip_addr from;
        from_sockaddr(&ss, &from);
        pthread_mutex_lock(&g->mu);
        if ((size_t)n > RX_BUF) {
            g->core.stats.packets_received++;
            g->core.stats.bytes_received += (uint64_t)n;
            g->core.stats.dropped[QV_GOSSIP_DROP_OVERSIZED]++;
        } else {
            qv__swim_on_packet(&g->core, &from, net->rx, (size_t)n);
        }
        pthread_mutex_unlock(&g->mu);
    }
}

static void *loop(void *arg)
{
    struct qv__net *net = arg;
    qv_gossip *g = net->g;
    sigset_t all;
    sigfillset(&all);
    pthread_sigmask(SIG_BLOCK, &all, NULL);
    struct epoll_event evs[64];
    while (!atomic_load(&net->stop)) {
        pthread_mutex_lock(&g->mu);
        uint64_t deadline = qv__swim_next_deadline(&g->core);
        pthread_mutex_unlock(&g->mu);
        for (conn *c = net->conns; c != NULL; c = c->next)
            if (c->deadline_ms < deadline)
                deadline = c->deadline_ms;
        uint64_t now = qv_now_ms();
        int timeout = deadline <= now ? 0 : deadline - now > 1000 ? 1000 : (int)(deadline - now);
        int n = epoll_wait(net->ep, evs, 64, timeout);
        for (int i = 0; i < n; i++) {
            void *p = evs[i].data.ptr;
            if (p == &tag_udp) {
                read_datagrams(net);
            } else if (p == &tag_tcp) {
                accept_all(net);
            } else if (p == &tag_ev) {
                uint64_t v;
                ssize_t r = read(net->evfd, &v, sizeof(v));
                (void)r;
            } else {
                conn_event(net, p, evs[i].events);
            }
        }
        now = qv_now_ms();
        for (conn *c = net->conns, *next; c != NULL; c = next) {
            next = c->next;
            if (now >= c->deadline_ms)
                conn_fail(net, c, QV_ETIMEOUT);
        }
        pthread_mutex_lock(&g->mu);
        qv__swim_tick(&g->core);
        pthread_cond_broadcast(&g->cond);
        pthread_mutex_unlock(&g->mu);
        qv__gossip_dispatch(g);
    }
    return NULL;
}

/* ---- start and stop -------------------------------------------------------------------------- */

/* Binds TCP then UDP on the same port (port 0: one free for both). Returns 0 or -errno. */
static int bind_pair(const qv_gossip_addr *want, int *udp_out, int *tcp_out, uint16_t *port_out)
{
    int family = want->family == 6 ? AF_INET6 : AF_INET;
    for (int attempt = 0; attempt < 64; attempt++) {
        struct sockaddr_storage ss;
        socklen_t sl = to_sockaddr(family, want, &ss);
        int tcp = socket(family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (tcp < 0)
            return -errno;
        int one = 1;
        setsockopt(tcp, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one));
        if (bind(tcp, (struct sockaddr *)&ss, sl) != 0) {
            int e = errno;
            close(tcp);
            return -e;
        }
        struct sockaddr_storage got;
        socklen_t gl = sizeof(got);
        getsockname(tcp, (struct sockaddr *)&got, &gl);
        qv_gossip_addr bound;
        from_sockaddr(&got, &bound);
        qv_gossip_addr u = *want;
        u.port = bound.port;
        sl = to_sockaddr(family, &u, &ss);
        int udp = socket(family, SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
        if (udp < 0) {
            int e = errno;
            close(tcp);
            return -e;
        }
        if (bind(udp, (struct sockaddr *)&ss, sl) != 0) {
            int e = errno;
            close(udp);
            close(tcp);
            if (e == EADDRINUSE && want->port == 0)
                continue; /* the TCP port is free but not the UDP one: try another */
            return -e;
        }
        if (listen(tcp, 128) != 0) {
            int e = errno;
            close(udp);
            close(tcp);
            return -e;
        }
        int rcvbuf = 4 << 20;
        setsockopt(udp, SOL_SOCKET, SO_RCVBUF, &rcvbuf, sizeof(rcvbuf));
        *udp_out = udp;
        *tcp_out = tcp;
        *port_out = u.port;
        return 0;
    }
    return -EADDRINUSE;
}

int qv__net_start(qv_gossip *g, const qv_gossip_config *cfg, qv_status *err)
{
    if (cfg->bind_addr == NULL) {
        *err = qv_status_make(QV_EINVAL, "gossip needs a bind address");
        return QV_EINVAL;
    }
    qv_gossip_addr want;
    int rc = qv_gossip_addr_resolve(cfg->bind_addr, &want, err);
    if (rc != 0)
        return rc;
    int udp = -1, tcp = -1;
    uint16_t port = 0;
    int e = bind_pair(&want, &udp, &tcp, &port);
    if (e == -EADDRINUSE && cfg->bind_fallback && want.port != 0) {
        qv_log_warn(MOD, "gossip port %u is in use; binding a free port instead",
                    (unsigned)want.port);
        want.port = 0;
        e = bind_pair(&want, &udp, &tcp, &port);
    }
    if (e != 0) {
        *err = qv_status_make(QV_EUNAVAIL, "cannot bind gossip to %s: %s", cfg->bind_addr,
                              strerror(-e));
        return QV_EUNAVAIL;
    }
    qv_gossip_addr self = want;
    self.port = port;
    if (cfg->advertise_addr != NULL && cfg->advertise_addr[0] != '\0') {
        rc = qv_gossip_addr_resolve(cfg->advertise_addr, &self, err);
        if (rc != 0)
            goto fail_socks;
        if (self.port == 0)
            self.port = port;
    }
    if (addr_is_wildcard(&self)) {
        *err = qv_status_make(QV_EINVAL,
                              "gossip bound to a wildcard address (%s) needs an advertise "
                              "address that other members can reach",
                              cfg->bind_addr);
        rc = QV_EINVAL;
        goto fail_socks;
    }
    rc = QV_ERESOURCE;
    struct qv__net *net = calloc(1, sizeof(*net));
    if (net == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        goto fail_socks;
    }
    net->g = g;
    net->udp = udp;
    net->tcp = tcp;
    net->family = want.family == 6 ? AF_INET6 : AF_INET;
    net->max_stream = cfg->max_stream_bytes;
    net->tcp_timeout = cfg->tcp_timeout_ms;
    atomic_init(&net->stop, false);
    net->ep = epoll_create1(EPOLL_CLOEXEC);
    net->evfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    net->rx = malloc(RX_BUF);
    if (net->ep < 0 || net->evfd < 0 || net->rx == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "cannot set up the gossip event loop");
        goto fail_net;
    }
    struct epoll_event ev = {.events = EPOLLIN};
    ev.data.ptr = &tag_udp;
    epoll_ctl(net->ep, EPOLL_CTL_ADD, udp, &ev);
    ev.data.ptr = &tag_tcp;
    epoll_ctl(net->ep, EPOLL_CTL_ADD, tcp, &ev);
    ev.data.ptr = &tag_ev;
    epoll_ctl(net->ep, EPOLL_CTL_ADD, net->evfd, &ev);

    uint64_t seed = cfg->seed;
    if (seed == 0)
        randombytes_buf(&seed, sizeof(seed));
    qv__io io = {
        .ctx = net,
        .now_ms = io_now,
        .random = io_random,
        .send_packet = io_send,
        .stream_start = io_stream_start,
        .resolve = io_resolve,
        .event = io_event,
        .wake = io_wake,
    };
    rc = qv__gossip_init(g, cfg, &self, &io, seed, qv_wall_ms(), err);
    if (rc != 0)
        goto fail_net;
    g->net = net;
    if (pthread_create(&net->thread, NULL, loop, net) != 0) {
        *err = qv_status_make(QV_ERESOURCE, "cannot start the gossip thread");
        rc = QV_ERESOURCE;
        goto fail_init;
    }
    net->thread_started = true;
    pthread_setname_np(net->thread, "qv-gossip");
    char a[QV_GOSSIP_ADDR_STRLEN], b[QV_GOSSIP_ADDR_STRLEN];
    qv_gossip_addr bound = want;
    bound.port = port;
    qv_log_info(MOD, "%s: gossip on %s (udp+tcp), advertised as %s", cfg->name,
                qv_gossip_addr_format(&bound, a, sizeof(a)),
                qv_gossip_addr_format(&self, b, sizeof(b)));
    return 0;

fail_init:
    g->net = NULL;
    qv__gossip_fini(g);
fail_net:
    if (net->ep >= 0)
        close(net->ep);
    if (net->evfd >= 0)
        close(net->evfd);
    free(net->rx);
    free(net);
fail_socks:
    close(udp);
    close(tcp);
    return rc;
}

void qv__net_stop(qv_gossip *g)
{
    struct qv__net *net = g->net;
    if (net == NULL)
        return;
    atomic_store(&net->stop, true);
    io_wake(net);
    if (net->thread_started)
        pthread_join(net->thread, NULL);
    while (net->conns != NULL)
        conn_close(net, net->conns);
    close(net->udp);
    close(net->tcp);
    close(net->ep);
    close(net->evfd);
    free(net->rx);
    free(net);
    g->net = NULL;
}
