/*
 * The public qv_gossip handle shared by both drivers: configuration and its defaults, address
 * helpers, the lock around the core, subscribers and the event queue, member snapshots.
 *
 * Events are produced by the core while the handle's lock is held (as snapshots, so later changes
 * do not show through) and delivered by qv__gossip_dispatch() after the lock is released, on the
 * driver's thread, under cb_mu so that unsubscribe can wait for a callback in progress.
 */
#define _GNU_SOURCE
#include "common/gossip/gossip_internal.h"

#include <arpa/inet.h>
#include <errno.h>
#include <netdb.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>

/* The handle whose subscribers this thread is calling right now, if any. */
static _Thread_local qv_gossip *tl_dispatching;

/* ---- names ----------------------------------------------------------------------------------- */

const char *qv_gossip_state_name(int state)
{
    switch (state) {
    case QV_GOSSIP_ALIVE:
        return "ALIVE";
    case QV_GOSSIP_SUSPECT:
        return "SUSPECT";
    case QV_GOSSIP_DEAD:
        return "DEAD";
    case QV_GOSSIP_LEFT:
        return "LEFT";
    default:
        return "UNKNOWN";
    }
}

const char *qv_gossip_event_name(int type)
{
    static const char *const names[] = {"?", "join", "suspect", "alive", "dead", "leave", "state"};
    return type >= 1 && type <= 6 ? names[type] : "unknown";
}

const char *qv_gossip_drop_name(int reason)
{
    static const char *const names[QV_GOSSIP_DROP__COUNT] = {
        "truncated", "oversized", "version",  "unknown_key", "auth",
        "replay",    "malformed", "loopback", "send_failed", "stream",
    };
    return reason >= 0 && reason < QV_GOSSIP_DROP__COUNT ? names[reason] : "unknown";
}

/* ---- addresses ------------------------------------------------------------------------------- */

/* Splits "host:port" / "[v6]:port" into host (copied into buf) and port. */
static int split_hostport(const char *text, char *host, size_t hostcap, uint16_t *port)
{
    if (text == NULL)
        return QV_EINVAL;
    const char *colon;
    const char *h = text;
    size_t hlen;
    if (text[0] == '[') {
        const char *close = strchr(text, ']');
        if (close == NULL || close[1] != ':')
            return QV_EINVAL;
        h = text + 1;
        hlen = (size_t)(close - h);
        colon = close + 1;
    } else {
        colon = strrchr(text, ':');
        if (colon == NULL || memchr(text, ':', (size_t)(colon - text)) != NULL)
            return QV_EINVAL;
        hlen = (size_t)(colon - text);
    }
    if (hlen == 0 || hlen >= hostcap)
        return QV_EINVAL;
    memcpy(host, h, hlen);
    host[hlen] = '\0';
    const char *p = colon + 1;
    if (*p == '\0')
        return QV_EINVAL;
    unsigned long v = 0;
    for (; *p != '\0'; p++) {
        if (*p < '0' || *p > '9')
            return QV_EINVAL;
        v = v * 10 + (unsigned long)(*p - '0');
        if (v > 65535)
            return QV_EINVAL;
    }
    *port = (uint16_t)v;
    return 0;
}

int qv_gossip_addr_parse(const char *text, qv_gossip_addr *out)
{
    char host[256];
    uint16_t port;
    if (split_hostport(text, host, sizeof(host), &port) != 0)
        return QV_EINVAL;
    qv_gossip_addr a;
    memset(&a, 0, sizeof(a));
    a.port = port;
    if (inet_pton(AF_INET, host, a.ip) == 1)
        a.family = 4;
    else if (inet_pton(AF_INET6, host, a.ip) == 1)
        a.family = 6;
    else
        return QV_EINVAL;
    *out = a;
    return 0;
}

int qv_gossip_addr_resolve(const char *text, qv_gossip_addr *out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (qv_gossip_addr_parse(text, out) == 0)
        return 0;
    char host[256];
    uint16_t port;
    if (split_hostport(text, host, sizeof(host), &port) != 0) {
        *err = qv_status_make(QV_EINVAL, "'%.200s' is not HOST:PORT", text ? text : "(null)");
        return QV_EINVAL;
    }
    struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_DGRAM};
    struct addrinfo *res = NULL;
    int gai = getaddrinfo(host, NULL, &hints, &res);
    if (gai != 0 || res == NULL) {
        *err = qv_status_make(QV_ENOTFOUND, "cannot resolve '%.200s': %s", host, gai_strerror(gai));
        return QV_ENOTFOUND;
    }
    const struct addrinfo *pick = NULL;
    for (const struct addrinfo *ai = res; ai != NULL && pick == NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET)
            pick = ai;
    for (const struct addrinfo *ai = res; ai != NULL && pick == NULL; ai = ai->ai_next)
        if (ai->ai_family == AF_INET6)
            pick = ai;
    int rc = QV_ENOTFOUND;
    if (pick != NULL) {
        memset(out, 0, sizeof(*out));
        out->port = port;
        if (pick->ai_family == AF_INET) {
            out->family = 4;
            memcpy(out->ip, &((const struct sockaddr_in *)pick->ai_addr)->sin_addr, 4);
        } else {
            out->family = 6;
            memcpy(out->ip, &((const struct sockaddr_in6 *)pick->ai_addr)->sin6_addr, 16);
        }
        rc = 0;
    } else {
        *err = qv_status_make(QV_ENOTFOUND, "'%.200s' has no IPv4 or IPv6 address", host);
    }
    freeaddrinfo(res);
    return rc;
}

char *qv_gossip_addr_format(const qv_gossip_addr *a, char *buf, size_t len)
{
    char ip[INET6_ADDRSTRLEN] = "?";
    if (a->family == 4)
        inet_ntop(AF_INET, a->ip, ip, sizeof(ip));
    else if (a->family == 6)
        inet_ntop(AF_INET6, a->ip, ip, sizeof(ip));
    if (a->family == 6)
        snprintf(buf, len, "[%s]:%u", ip, (unsigned)a->port);
    else
        snprintf(buf, len, "%s:%u", ip, (unsigned)a->port);
    return buf;
}

bool qv_gossip_addr_equal(const qv_gossip_addr *a, const qv_gossip_addr *b)
{
    return a->family == b->family && a->port == b->port &&
           memcmp(a->ip, b->ip, a->family == 6 ? 16 : 4) == 0;
}

/* ---- configuration --------------------------------------------------------------------------- */

#define DEF(field, value)                                                                          \
    do {                                                                                           \
        if (cfg->field == 0)                                                                       \
            cfg->field = (value);                                                                  \
    } while (0)

void qv_gossip_config_default(qv_gossip_config *cfg)
{
    DEF(probe_interval_ms, 1000);
    DEF(probe_timeout_ms, 500);
    DEF(indirect_checks, 3);
    DEF(suspicion_mult, 4);
    DEF(suspicion_max_mult, 6);
    DEF(awareness_max, 8);
    DEF(retransmit_mult, 4);
    DEF(gossip_interval_ms, 200);
    DEF(gossip_nodes, 3);
    DEF(gossip_to_dead_ms, 30000);
    DEF(push_pull_interval_ms, 30000);
    DEF(reconnect_interval_ms, 10000);
    DEF(tcp_timeout_ms, 10000);
    DEF(join_retry_ms, 1000);
    DEF(dead_reclaim_ms, 3600000);
    DEF(max_packet_bytes, 1400);
    DEF(max_stream_bytes, 16u * 1024u * 1024u);
    DEF(max_record_bytes, 16384);
    DEF(piggyback_record_max, 512);
}
#undef DEF

int qv__config_check(qv_gossip_config *cfg, qv_status *err)
{
    qv_gossip_config_default(cfg);
#define BAD(...)                                                                                   \
    do {                                                                                           \
        *err = qv_status_make(QV_EINVAL, __VA_ARGS__);                                             \
        return QV_EINVAL;                                                                          \
    } while (0)
    if (cfg->name == NULL || !qv__name_valid(cfg->name, strlen(cfg->name)))
        BAD("gossip member name must be 1..%d printable ASCII characters without spaces",
            QV_GOSSIP_NAME_MAX);
    if (cfg->keys == NULL || cfg->nkeys == 0 || cfg->nkeys > QV_GOSSIP_KEYRING_MAX)
        BAD("gossip needs 1..%d cluster keys", QV_GOSSIP_KEYRING_MAX);
    if (cfg->probe_timeout_ms >= cfg->probe_interval_ms)
        BAD("gossip probe timeout (%u ms) must be shorter than the probe interval (%u ms)",
            cfg->probe_timeout_ms, cfg->probe_interval_ms);
    if (cfg->indirect_checks > 16 || cfg->gossip_nodes > 16)
        BAD("gossip indirect checks and gossip nodes are at most 16");
    if (cfg->awareness_max > 64 || cfg->suspicion_max_mult > 1000 || cfg->suspicion_mult > 1000 ||
        cfg->retransmit_mult > 32)
        BAD("gossip multiplier out of range");
    if (cfg->max_packet_bytes < QV__MIN_PACKET || cfg->max_packet_bytes > 65000)
        BAD("gossip max packet bytes must be in %d..65000", QV__MIN_PACKET);
    if (cfg->max_stream_bytes < QV__STREAM_MIN || cfg->max_stream_bytes > (1u << 30))
        BAD("gossip max stream bytes must be in %d..%u", QV__STREAM_MIN, 1u << 30);
    if (cfg->max_record_bytes > cfg->max_stream_bytes / 2)
        BAD("gossip max record bytes must be at most half of max stream bytes");
    if (cfg->piggyback_record_max > cfg->max_packet_bytes - QV__ENV_OVERHEAD - 100)
        BAD("gossip piggyback record max must leave room in a datagram");
#undef BAD
    return 0;
}

uint64_t qv_gossip_suspicion_timeout_ms(const qv_gossip_config *in, size_t n,
                                        uint32_t confirmations)
{
    qv_gossip_config cfg = *in;
    qv_gossip_config_default(&cfg);
    uint32_t k = cfg.suspicion_mult >= 2 ? cfg.suspicion_mult - 2 : 0;
    if (n < (size_t)k + 2)
        k = 0;
    uint64_t min = qv__susp_min_ms(&cfg, n);
    uint64_t max = (uint64_t)cfg.suspicion_max_mult * min;
    if (k == 0)
        return min;
    return qv__susp_remaining_ms(confirmations > k ? k : confirmations, k, min, max);
}

uint64_t qv_gossip_detection_bound_ms(const qv_gossip_config *in, size_t n)
{
    qv_gossip_config cfg = *in;
    qv_gossip_config_default(&cfg);
    uint64_t max = (uint64_t)cfg.suspicion_max_mult * qv__susp_min_ms(&cfg, n);
    return 4ull * cfg.probe_interval_ms + max +
           (uint64_t)qv__retransmit_limit(&cfg, n) * cfg.gossip_interval_ms;
}

/* ---- the handle ------------------------------------------------------------------------------ */

int qv__gossip_init(qv_gossip *g, const qv_gossip_config *cfg, const qv_gossip_addr *self_addr,
                    const qv__io *io, uint64_t seed, uint64_t boot_epoch, qv_status *err)
{
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_mutex_init(&g->mu, NULL);
    pthread_cond_init(&g->cond, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&g->cb_mu, NULL);
    g->self_addr = *self_addr;
    g->next_sub_id = 1;
    int rc = qv__swim_init(&g->core, cfg, self_addr, io, seed, boot_epoch);
    if (rc != 0) {
        *err = qv_status_make(rc, "cannot set up gossip: %s", qv_strerror(rc));
        pthread_mutex_destroy(&g->mu);
        pthread_cond_destroy(&g->cond);
        pthread_mutex_destroy(&g->cb_mu);
    }
    return rc;
}

static void event_free(qv__event *e)
{
    free(e->m.blob);
    e->m.blob = NULL;
}

void qv__gossip_fini(qv_gossip *g)
{
    qv__swim_destroy(&g->core);
    for (size_t i = 0; i < g->nev; i++)
        event_free(&g->evq[i]);
    free(g->evq);
    free(g->subs);
    pthread_mutex_destroy(&g->mu);
    pthread_cond_destroy(&g->cond);
    pthread_mutex_destroy(&g->cb_mu);
}

int qv__member_snapshot(const qv__swim *s, const qv__member *m, qv_gossip_member *out)
{
    memset(out, 0, sizeof(*out));
    memcpy(out->name, m->name, sizeof(out->name));
    out->addr = m->addr;
    out->state = (qv_gossip_state)m->state;
    out->incarnation = m->inc;
    out->last_update_age_ms = s->now > m->last_update_ms ? s->now - m->last_update_ms : 0;
    out->is_self = m->is_self;
    out->record_version = m->rec_version;
    out->role = (qv_gossip_role)m->rec.role;
    out->draining = m->rec.draining;
    memcpy(out->grpc_addr, m->rec.grpc, sizeof(out->grpc_addr));
    memcpy(out->version, m->rec.version, sizeof(out->version));
    out->load = m->rec.load;
    out->blob_stale = m->blob_stale;
    if (m->rec.blob_len > 0) {
        out->blob = malloc(m->rec.blob_len);
        if (out->blob == NULL)
            return QV_ERESOURCE;
        memcpy(out->blob, m->rec.blob, m->rec.blob_len);
        out->blob_len = m->rec.blob_len;
    }
    return 0;
}

void qv__gossip_on_event(qv_gossip *g, int type, const qv__member *m)
{
    /* Without subscribers there is nobody to tell; cb_mu may be held by a dispatch in progress
     * on this same thread, so peek at the count without it (a stale answer only costs an event
     * nobody would have seen). */
    if (__atomic_load_n(&g->nsubs, __ATOMIC_RELAXED) == 0)
        return;
    if (g->nev == g->evcap) {
        size_t cap = g->evcap == 0 ? 32 : g->evcap * 2;
        qv__event *p = realloc(g->evq, cap * sizeof(*p));
        if (p == NULL)
            return;
        g->evq = p;
        g->evcap = cap;
    }
    qv__event *e = &g->evq[g->nev];
    e->type = type;
    e->at_ms = g->core.now;
    if (qv__member_snapshot(&g->core, m, &e->m) != 0)
        return;
    e->m.last_update_age_ms = 0;
    g->nev++;
}

void qv__gossip_dispatch(qv_gossip *g)
{
    pthread_mutex_lock(&g->mu);
    qv__event *evs = g->evq;
    size_t n = g->nev;
    g->evq = NULL;
    g->nev = g->evcap = 0;
    pthread_mutex_unlock(&g->mu);
    if (n == 0) {
        free(evs);
        return;
    }
    pthread_mutex_lock(&g->cb_mu);
    qv_gossip *outer = tl_dispatching;
    tl_dispatching = g;
    for (size_t i = 0; i < n; i++) {
        qv_gossip_event ev = {
            .type = (qv_gossip_event_type)evs[i].type, .member = &evs[i].m, .at_ms = evs[i].at_ms};
        for (size_t j = 0; j < g->nsubs; j++)
            if (!g->subs[j].removed)
                g->subs[j].fn(&ev, g->subs[j].user);
    }
    size_t k = 0;
    for (size_t j = 0; j < g->nsubs; j++)
        if (!g->subs[j].removed)
            g->subs[k++] = g->subs[j];
    __atomic_store_n(&g->nsubs, k, __ATOMIC_RELAXED);
    tl_dispatching = outer;
    pthread_mutex_unlock(&g->cb_mu);
    for (size_t i = 0; i < n; i++)
        event_free(&evs[i]);
    free(evs);
}

int qv_gossip_subscribe(qv_gossip *g, qv_gossip_event_fn fn, void *user, uint64_t *id)
{
    if (g == NULL || fn == NULL)
        return QV_EINVAL;
    bool inside = tl_dispatching == g;
    if (!inside)
        pthread_mutex_lock(&g->cb_mu);
    int rc = 0;
    if (g->nsubs == g->subcap) {
        size_t cap = g->subcap == 0 ? 4 : g->subcap * 2;
        qv__sub *p = realloc(g->subs, cap * sizeof(*p));
        if (p == NULL) {
            rc = QV_ERESOURCE;
            goto out;
        }
        g->subs = p;
        g->subcap = cap;
    }
    uint64_t sid = g->next_sub_id++;
    g->subs[g->nsubs] = (qv__sub){.id = sid, .fn = fn, .user = user};
    __atomic_store_n(&g->nsubs, g->nsubs + 1, __ATOMIC_RELAXED);
    if (id != NULL)
        *id = sid;
out:
    if (!inside)
        pthread_mutex_unlock(&g->cb_mu);
    return rc;
}

void qv_gossip_unsubscribe(qv_gossip *g, uint64_t id)
{
    if (g == NULL)
        return;
    bool inside = tl_dispatching == g;
    if (!inside)
        pthread_mutex_lock(&g->cb_mu);
    for (size_t j = 0; j < g->nsubs; j++)
        if (g->subs[j].id == id)
            g->subs[j].removed = true;
    if (!inside) {
        size_t k = 0;
        for (size_t j = 0; j < g->nsubs; j++)
            if (!g->subs[j].removed)
                g->subs[k++] = g->subs[j];
        __atomic_store_n(&g->nsubs, k, __ATOMIC_RELAXED);
        pthread_mutex_unlock(&g->cb_mu);
    }
}

/* ---- operations ------------------------------------------------------------------------------ */

int qv_gossip_start(const qv_gossip_config *cfg_in, qv_gossip **out, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (cfg_in == NULL || out == NULL) {
        *err = qv_status_make(QV_EINVAL, "gossip: no configuration");
        return QV_EINVAL;
    }
    *out = NULL;
    qv_gossip_config cfg = *cfg_in;
    int rc = qv__config_check(&cfg, err);
    if (rc != 0)
        return rc;
    if (qv__crypto_init() != 0) {
        *err = qv_status_make(QV_EUNAVAIL, "gossip: libsodium failed to initialise");
        return QV_EUNAVAIL;
    }
    qv_gossip *g = calloc(1, sizeof(*g));
    if (g == NULL) {
        *err = qv_status_make(QV_ERESOURCE, "out of memory");
        return QV_ERESOURCE;
    }
    rc = qv__net_start(g, &cfg, err);
    if (rc != 0) {
        free(g);
        return rc;
    }
    *out = g;
    return 0;
}

void qv_gossip_stop(qv_gossip *g, uint64_t leave_timeout_ms)
{
    if (g == NULL || g->sim != NULL)
        return;
    if (leave_timeout_ms > 0)
        (void)qv_gossip_leave(g, leave_timeout_ms);
    qv__net_stop(g);
    qv__gossip_fini(g);
    free(g);
}

int qv_gossip_join(qv_gossip *g, const char *const *seeds, size_t n, qv_status *err)
{
    qv_status dummy;
    if (err == NULL)
        err = &dummy;
    if (g == NULL || seeds == NULL || n == 0) {
        *err = qv_status_make(QV_EINVAL, "gossip: no seeds to join through");
        return QV_EINVAL;
    }
    for (size_t i = 0; i < n; i++) {
        char host[256];
        uint16_t port;
        if (seeds[i] == NULL || split_hostport(seeds[i], host, sizeof(host), &port) != 0 ||
            port == 0) {
            *err = qv_status_make(QV_EINVAL, "gossip seed '%.200s' is not HOST:PORT",
                                  seeds[i] ? seeds[i] : "(null)");
            return QV_EINVAL;
        }
    }
    pthread_mutex_lock(&g->mu);
    int rc = qv__swim_join(&g->core, seeds, n);
    pthread_mutex_unlock(&g->mu);
    if (rc != 0)
        *err = qv_status_make(rc, "gossip: cannot join: %s", qv_strerror(rc));
    return rc;
}

int qv_gossip_leave(qv_gossip *g, uint64_t timeout_ms)
{
    if (g == NULL)
        return QV_EINVAL;
    pthread_mutex_lock(&g->mu);
    int rc = qv__swim_leave(&g->core);
    if (rc == 0 && g->net != NULL) {
        struct timespec until;
        clock_gettime(CLOCK_MONOTONIC, &until);
        until.tv_sec += (time_t)(timeout_ms / 1000);
        until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
        if (until.tv_nsec >= 1000000000L) {
            until.tv_sec++;
            until.tv_nsec -= 1000000000L;
        }
        while (!qv__swim_leave_done(&g->core)) {
            if (pthread_cond_timedwait(&g->cond, &g->mu, &until) == ETIMEDOUT) {
                rc = qv__swim_leave_done(&g->core) ? 0 : QV_ETIMEOUT;
                break;
            }
        }
    }
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int qv_gossip_set_record(qv_gossip *g, const qv_gossip_record *rec)
{
    if (g == NULL || rec == NULL)
        return QV_EINVAL;
    pthread_mutex_lock(&g->mu);
    int rc = qv__swim_set_record(&g->core, rec);
    pthread_mutex_unlock(&g->mu);
    return rc;
}

int qv_gossip_set_keys(qv_gossip *g, const qv_gossip_key *keys, size_t n)
{
    if (g == NULL)
        return QV_EINVAL;
    pthread_mutex_lock(&g->mu);
    int rc = qv__keyring_set(&g->core.ring, keys, n);
    pthread_mutex_unlock(&g->mu);
    if (rc == 0)
        qv_log_info("gossip", "%s: keyring replaced (%zu key%s)", g->core.self->name, n,
                    n == 1 ? "" : "s");
    return rc;
}

const char *qv_gossip_name(const qv_gossip *g)
{
    return g->core.self->name;
}

qv_gossip_addr qv_gossip_local_addr(const qv_gossip *g)
{
    return g->self_addr;
}

static int cmp_member(const void *a, const void *b)
{
    return strcmp(((const qv_gossip_member *)a)->name, ((const qv_gossip_member *)b)->name);
}

int qv_gossip_members(qv_gossip *g, bool include_left, qv_gossip_member **out, size_t *n)
{
    *out = NULL;
    *n = 0;
    pthread_mutex_lock(&g->mu);
    g->core.now = g->core.io.now_ms(g->core.io.ctx);
    size_t cap = g->core.nmembers;
    qv_gossip_member *arr = calloc(cap > 0 ? cap : 1, sizeof(*arr));
    size_t k = 0;
    int rc = arr == NULL ? QV_ERESOURCE : 0;
    for (size_t i = 0; i < cap && rc == 0; i++) {
        const qv__member *m = g->core.members[i];
        if (m->state == QV_GOSSIP_LEFT && !include_left)
            continue;
        rc = qv__member_snapshot(&g->core, m, &arr[k]);
        if (rc == 0)
            k++;
    }
    pthread_mutex_unlock(&g->mu);
    if (rc != 0) {
        qv_gossip_members_free(arr, k);
        return rc;
    }
    qsort(arr, k, sizeof(*arr), cmp_member);
    *out = arr;
    *n = k;
    return 0;
}

void qv_gossip_members_free(qv_gossip_member *members, size_t n)
{
    if (members == NULL)
        return;
    for (size_t i = 0; i < n; i++)
        free(members[i].blob);
    free(members);
}

void qv_gossip_counts(qv_gossip *g, size_t *alive, size_t *total)
{
    size_t a = 0, t = 0;
    pthread_mutex_lock(&g->mu);
    for (size_t i = 0; i < g->core.nmembers; i++) {
        uint8_t st = g->core.members[i]->state;
        a += st == QV_GOSSIP_ALIVE;
        t += st != QV_GOSSIP_LEFT;
    }
    pthread_mutex_unlock(&g->mu);
    if (alive != NULL)
        *alive = a;
    if (total != NULL)
        *total = t;
}

void qv_gossip_get_stats(qv_gossip *g, qv_gossip_stats *out)
{
    pthread_mutex_lock(&g->mu);
    *out = g->core.stats;
    out->health_score = g->core.health;
    pthread_mutex_unlock(&g->mu);
}
