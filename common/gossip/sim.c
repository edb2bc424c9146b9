/*
 * The simulated gossip driver: many members in one process, in virtual time.
 *
 * One min-heap of events ordered by (time, sequence number) drives everything: member timers,
 * datagram deliveries, push-pull requests, replies and failures. Each member's timer is one
 * event at the core's next deadline; when that deadline moves, a new event is pushed with a new
 * generation and the old one is skipped when it comes up. Loss, latency and every other choice
 * come from one xoshiro256** PRNG seeded by the caller, and ties are broken by insertion order,
 * so a run depends only on its seed and the calls made.
 *
 * Faults: network-wide and per-link loss (a datagram survives each independently), latency in
 * [min, max], partitions (groups that cannot exchange anything), pause (the member processes
 * nothing; arriving datagrams and streams wait in a bounded inbox, as in socket buffers, and are
 * handled in order on resume, before its timers), kill (silent forever; streams to it are refused).
 */
#include "common/gossip/gossip_internal.h"

#include <stdlib.h>
#include <string.h>

#define NEVER     UINT64_MAX
#define SIM_PORT  7946
#define SIM_EPOCH 1700000000000ull

enum { EV_TIMER, EV_PACKET, EV_STREAM_REQ, EV_STREAM_REPLY, EV_STREAM_FAIL };

typedef struct sim_ev {
    uint64_t at, seq;
    uint8_t kind;
    uint32_t to, from;
    uint64_t arg; /* TIMER: generation; STREAM_*: stream id */
    uint8_t *data;
    size_t len;
} sim_ev;

typedef struct sim_member {
    struct qv_gossip_sim *sim;
    qv_gossip *g;
    uint32_t index;
    qv_gossip_addr addr;
    bool dead, paused;
    int group;
    double link_loss;
    uint64_t timer_at, timer_gen;
    sim_ev *inbox;
    size_t ninbox, inbox_cap;
} sim_member;

struct qv_gossip_sim {
    qv_gossip_sim_opts o;
    uint64_t now, seq;
    uint64_t rng[4];
    sim_member **m;
    size_t n, cap;
    sim_ev *heap;
    size_t nheap, heap_cap;
};

/* ---- event heap ------------------------------------------------------------------------------ */

static bool ev_before(const sim_ev *a, const sim_ev *b)
{
    return a->at < b->at || (a->at == b->at && a->seq < b->seq);
}

static void heap_push(qv_gossip_sim *sim, sim_ev ev)
{
    if (sim->nheap == sim->heap_cap) {
        size_t cap = sim->heap_cap == 0 ? 1024 : sim->heap_cap * 2;
        sim_ev *p = realloc(sim->heap, cap * sizeof(*p));
        if (p == NULL) {
            free(ev.data); /* out of memory: the event is lost, like a dropped datagram */
            return;
        }
        sim->heap = p;
        sim->heap_cap = cap;
    }
    ev.seq = sim->seq++;
    size_t i = sim->nheap++;
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!ev_before(&ev, &sim->heap[parent]))
            break;
        sim->heap[i] = sim->heap[parent];
        i = parent;
    }
    sim->heap[i] = ev;
}

static sim_ev heap_pop(qv_gossip_sim *sim)
{
    sim_ev top = sim->heap[0];
    sim_ev last = sim->heap[--sim->nheap];
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, best = i;
        const sim_ev *b = &last;
        if (l < sim->nheap && ev_before(&sim->heap[l], b)) {
            best = l;
            b = &sim->heap[l];
        }
        if (r < sim->nheap && ev_before(&sim->heap[r], b))
            best = r;
        if (best == i)
            break;
        sim->heap[i] = sim->heap[best];
        i = best;
    }
    if (sim->nheap > 0)
        sim->heap[i] = last;
    return top;
}

/* ---- helpers --------------------------------------------------------------------------------- */

static double rand01(qv_gossip_sim *sim)
{
    return (double)(qv__gossip_rng_next(sim->rng) >> 11) * 0x1.0p-53;
}

static uint64_t latency(qv_gossip_sim *sim)
{
    uint32_t lo = sim->o.latency_min_ms, hi = sim->o.latency_max_ms;
    return lo + qv__gossip_rng_below(sim->rng, (uint64_t)(hi - lo) + 1);
}

static sim_member *lookup(qv_gossip_sim *sim, const qv_gossip_addr *a)
{
    if (a->family != 4 || a->ip[0] != 10 || a->ip[1] != 0 || a->port != SIM_PORT)
        return NULL;
    size_t idx = ((size_t)a->ip[2] << 8 | a->ip[3]);
    if (idx == 0 || idx > sim->n)
        return NULL;
    return sim->m[idx - 1];
}

static void push(qv_gossip_sim *sim, uint64_t at, uint8_t kind, uint32_t to, uint32_t from,
                 uint64_t arg, const uint8_t *data, size_t len)
{
    sim_ev ev = {.at = at, .kind = kind, .to = to, .from = from, .arg = arg, .len = len};
    if (data != NULL && len > 0) {
        ev.data = malloc(len);
        if (ev.data == NULL)
            return;
        memcpy(ev.data, data, len);
    }
    heap_push(sim, ev);
}

static void reschedule(sim_member *t)
{
    if (t->dead || t->paused)
        return;
    qv_gossip_sim *sim = t->sim;
    uint64_t d = qv__swim_next_deadline(&t->g->core);
    if (d < sim->now)
        d = sim->now;
    if (d == t->timer_at)
        return;
    t->timer_at = d;
    t->timer_gen++;
    if (d != NEVER)
        push(sim, d, EV_TIMER, t->index, t->index, t->timer_gen, NULL, 0);
}

/* ---- the core's io --------------------------------------------------------------------------- */

static uint64_t io_now(void *ctx)
{
    return ((sim_member *)ctx)->sim->now;
}

static void io_random(void *ctx, void *buf, size_t len)
{
    qv_gossip_sim *sim = ((sim_member *)ctx)->sim;
    uint8_t *p = buf;
    while (len > 0) {
        uint64_t v = qv__gossip_rng_next(sim->rng);
        size_t n = len < 8 ? len : 8;
        memcpy(p, &v, n);
        p += n;
        len -= n;
    }
}

static int io_send(void *ctx, const qv_gossip_addr *to, const uint8_t *buf, size_t len)
{
    sim_member *src = ctx;
    qv_gossip_sim *sim = src->sim;
    sim_member *dst = lookup(sim, to);
    if (dst == NULL || dst->group != src->group)
        return 0; /* into the void, like UDP */
    if (rand01(sim) < sim->o.loss || rand01(sim) < src->link_loss || rand01(sim) < dst->link_loss)
        return 0;
    push(sim, sim->now + latency(sim), EV_PACKET, dst->index, src->index, 0, buf, len);
    return 0;
}

static int io_stream_start(void *ctx, uint64_t id, const qv_gossip_addr *to, const uint8_t *buf,
                           size_t len)
{
    sim_member *src = ctx;
    qv_gossip_sim *sim = src->sim;
    sim_member *dst = lookup(sim, to);
    if (dst == NULL || dst->dead) /* connection refused */
        push(sim, sim->now + latency(sim), EV_STREAM_FAIL, src->index, src->index, id, NULL, 0);
    else if (dst->group != src->group) /* connect times out */
        push(sim, sim->now + src->g->core.cfg.tcp_timeout_ms, EV_STREAM_FAIL, src->index,
             src->index, id, NULL, 0);
    else
        push(sim, sim->now + latency(sim), EV_STREAM_REQ, dst->index, src->index, id, buf, len);
    return 0;
}

static int io_resolve(void *ctx, const char *text, qv_gossip_addr *out)
{
    (void)ctx;
    return qv_gossip_addr_parse(text, out);
}

static void io_event(void *ctx, int type, const qv__member *m)
{
    qv__gossip_on_event(((sim_member *)ctx)->g, type, m);
}

static void io_wake(void *ctx)
{
    reschedule(ctx);
}

/* ---- delivery -------------------------------------------------------------------------------- */

static void handle_now(qv_gossip_sim *sim, sim_member *t, sim_ev *e)
{
    qv_gossip *g = t->g;
    sim_member *from = sim->m[e->from];
    uint8_t *reply = NULL;
    size_t reply_len = 0;
    int rc = 0;
    pthread_mutex_lock(&g->mu);
    switch (e->kind) {
    case EV_PACKET:
        qv__swim_on_packet(&g->core, &from->addr, e->data, e->len);
        break;
    case EV_STREAM_REQ:
        rc = qv__swim_on_stream_request(&g->core, &from->addr, e->data, e->len, &reply, &reply_len);
        break;
    case EV_STREAM_REPLY:
        qv__swim_on_stream_done(&g->core, e->arg, 0, e->data, e->len);
        break;
    case EV_STREAM_FAIL:
        qv__swim_on_stream_done(&g->core, e->arg, QV_EUNAVAIL, NULL, 0);
        break;
    default:
        break;
    }
    pthread_mutex_unlock(&g->mu);
    if (e->kind == EV_STREAM_REQ) {
        if (rc != 0)
            push(sim, sim->now + latency(sim), EV_STREAM_FAIL, e->from, t->index, e->arg, NULL, 0);
        else if (from->group != t->group)
            push(sim, sim->now + g->core.cfg.tcp_timeout_ms, EV_STREAM_FAIL, e->from, t->index,
                 e->arg, NULL, 0);
        else
            push(sim, sim->now + latency(sim), EV_STREAM_REPLY, e->from, t->index, e->arg, reply,
                 reply_len);
        free(reply);
    }
    free(e->data);
    e->data = NULL;
    reschedule(t);
    qv__gossip_dispatch(g);
}

static void deliver(qv_gossip_sim *sim, sim_ev *e)
{
    sim_member *t = sim->m[e->to];
    if (e->kind == EV_TIMER) {
        if (t->dead || t->paused || e->arg != t->timer_gen)
            return;
        t->timer_at = NEVER; /* consumed: the next reschedule pushes a fresh event */
        pthread_mutex_lock(&t->g->mu);
        qv__swim_tick(&t->g->core);
        pthread_mutex_unlock(&t->g->mu);
        reschedule(t);
        qv__gossip_dispatch(t->g);
        return;
    }
    if (t->dead) {
        if (e->kind == EV_STREAM_REQ) /* the peer's kernel refuses the connection */
            push(sim, sim->now + latency(sim), EV_STREAM_FAIL, e->from, t->index, e->arg, NULL, 0);
        free(e->data);
        return;
    }
    if (t->paused) {
        if (e->kind == EV_STREAM_REQ) /* accepted by the kernel, unanswered: times out */
            push(sim, sim->now + sim->m[e->from]->g->core.cfg.tcp_timeout_ms, EV_STREAM_FAIL,
                 e->from, t->index, e->arg, NULL, 0);
        if (t->ninbox == t->inbox_cap) {
            size_t cap = t->inbox_cap == 0 ? 64 : t->inbox_cap * 2;
            sim_ev *p = t->ninbox < sim->o.inbox_max ? realloc(t->inbox, cap * sizeof(*p)) : NULL;
            if (p == NULL) {
                free(e->data); /* socket buffer full */
                return;
            }
            t->inbox = p;
            t->inbox_cap = cap;
        }
        t->inbox[t->ninbox++] = *e;
        return;
    }
    handle_now(sim, t, e);
}

/* ---- public API ------------------------------------------------------------------------------ */

int qv_gossip_sim_create(const qv_gossip_sim_opts *opts, qv_gossip_sim **out)
{
    if (out == NULL)
        return QV_EINVAL;
    *out = NULL;
    if (qv__crypto_init() != 0)
        return QV_EUNAVAIL;
    qv_gossip_sim *sim = calloc(1, sizeof(*sim));
    if (sim == NULL)
        return QV_ERESOURCE;
    if (opts != NULL)
        sim->o = *opts;
    if (sim->o.seed == 0)
        sim->o.seed = 1;
    if (sim->o.latency_min_ms == 0 && sim->o.latency_max_ms == 0) {
        sim->o.latency_min_ms = 1;
        sim->o.latency_max_ms = 5;
    }
    if (sim->o.inbox_max == 0)
        sim->o.inbox_max = 1024;
    if (sim->o.latency_max_ms < sim->o.latency_min_ms || !(sim->o.loss >= 0.0) ||
        sim->o.loss > 1.0) {
        free(sim);
        return QV_EINVAL;
    }
    qv__gossip_rng_seed(sim->rng, sim->o.seed);
    *out = sim;
    return 0;
}

void qv_gossip_sim_destroy(qv_gossip_sim *sim)
{
    if (sim == NULL)
        return;
    for (size_t i = 0; i < sim->n; i++) {
        sim_member *t = sim->m[i];
        qv__gossip_fini(t->g);
        free(t->g);
        for (size_t j = 0; j < t->ninbox; j++)
            free(t->inbox[j].data);
        free(t->inbox);
        free(t);
    }
    free(sim->m);
    for (size_t i = 0; i < sim->nheap; i++)
        free(sim->heap[i].data);
    free(sim->heap);
    free(sim);
}

int qv_gossip_sim_add(qv_gossip_sim *sim, const qv_gossip_config *cfg_in, qv_gossip **out)
{
    if (sim == NULL || cfg_in == NULL || out == NULL || sim->n >= 65000)
        return QV_EINVAL;
    qv_gossip_config cfg = *cfg_in;
    qv_status err;
    int rc = qv__config_check(&cfg, &err);
    if (rc != 0)
        return rc;
    if (sim->n == sim->cap) {
        size_t cap = sim->cap == 0 ? 16 : sim->cap * 2;
        sim_member **p = realloc(sim->m, cap * sizeof(*p));
        if (p == NULL)
            return QV_ERESOURCE;
        sim->m = p;
        sim->cap = cap;
    }
    sim_member *t = calloc(1, sizeof(*t));
    qv_gossip *g = calloc(1, sizeof(*g));
    if (t == NULL || g == NULL) {
        free(t);
        free(g);
        return QV_ERESOURCE;
    }
    t->sim = sim;
    t->g = g;
    t->index = (uint32_t)sim->n;
    t->timer_at = NEVER;
    size_t host = sim->n + 1;
    t->addr = (qv_gossip_addr){.family = 4, .port = SIM_PORT};
    t->addr.ip[0] = 10;
    t->addr.ip[2] = (uint8_t)(host >> 8);
    t->addr.ip[3] = (uint8_t)host;
    g->sim = sim;
    g->sim_index = t->index;
    qv__io io = {
        .ctx = t,
        .now_ms = io_now,
        .random = io_random,
        .send_packet = io_send,
        .stream_start = io_stream_start,
        .resolve = io_resolve,
        .event = io_event,
        .wake = io_wake,
    };
    uint64_t seed = cfg.seed;
    if (seed == 0) {
        uint64_t x = sim->o.seed * 0x9e3779b97f4a7c15ull + host;
        seed = qv__hash_name(x, cfg.name);
    }
    rc = qv__gossip_init(g, &cfg, &t->addr, &io, seed, SIM_EPOCH + sim->now, &err);
    if (rc != 0) {
        free(t);
        free(g);
        return rc;
    }
    sim->m[sim->n++] = t;
    reschedule(t);
    *out = g;
    return 0;
}

void qv_gossip_sim_run_for(qv_gossip_sim *sim, uint64_t ms)
{
    uint64_t end = sim->now + ms;
    while (sim->nheap > 0 && sim->heap[0].at <= end) {
        sim_ev e = heap_pop(sim);
        sim->now = e.at;
        deliver(sim, &e);
    }
    sim->now = end;
}

uint64_t qv_gossip_sim_now_ms(const qv_gossip_sim *sim)
{
    return sim->now;
}

void qv_gossip_sim_set_loss(qv_gossip_sim *sim, double loss)
{
    sim->o.loss = loss;
}

void qv_gossip_sim_set_latency(qv_gossip_sim *sim, uint32_t min_ms, uint32_t max_ms)
{
    sim->o.latency_min_ms = min_ms;
    sim->o.latency_max_ms = max_ms < min_ms ? min_ms : max_ms;
}

static sim_member *member_of(qv_gossip_sim *sim, qv_gossip *g)
{
    return g != NULL && g->sim == sim && g->sim_index < sim->n ? sim->m[g->sim_index] : NULL;
}

void qv_gossip_sim_set_link_loss(qv_gossip_sim *sim, qv_gossip *g, double loss)
{
    sim_member *t = member_of(sim, g);
    if (t != NULL)
        t->link_loss = loss;
}

void qv_gossip_sim_partition(qv_gossip_sim *sim, qv_gossip *g, int group)
{
    sim_member *t = member_of(sim, g);
    if (t != NULL)
        t->group = group;
}

void qv_gossip_sim_heal(qv_gossip_sim *sim)
{
    for (size_t i = 0; i < sim->n; i++)
        sim->m[i]->group = 0;
}

void qv_gossip_sim_pause(qv_gossip_sim *sim, qv_gossip *g)
{
    sim_member *t = member_of(sim, g);
    if (t != NULL && !t->dead)
        t->paused = true;
}

void qv_gossip_sim_resume(qv_gossip_sim *sim, qv_gossip *g)
{
    sim_member *t = member_of(sim, g);
    if (t == NULL || t->dead || !t->paused)
        return;
    t->paused = false;
    /* What waited in the socket buffers first, then the timers that expired meanwhile. */
    for (size_t i = 0; i < t->ninbox; i++)
        handle_now(sim, t, &t->inbox[i]);
    t->ninbox = 0;
    pthread_mutex_lock(&g->mu);
    qv__swim_tick(&g->core);
    pthread_mutex_unlock(&g->mu);
    t->timer_at = NEVER;
    reschedule(t);
    qv__gossip_dispatch(g);
}

void qv_gossip_sim_kill(qv_gossip_sim *sim, qv_gossip *g)
{
    sim_member *t = member_of(sim, g);
    if (t == NULL)
        return;
    t->dead = true;
    for (size_t i = 0; i < t->ninbox; i++)
        free(t->inbox[i].data);
    t->ninbox = 0;
}
