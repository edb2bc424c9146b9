/*
 * The SWIM + Lifeguard protocol core. No I/O, no threads, no clock of its own: a driver (net.c,
 * sim.c) feeds it datagrams, stream exchanges and ticks through the entry points at the end of
 * gossip_internal.h, and it talks back through qv__io. Follows hashicorp/memberlist closely:
 *
 *   members   one heap object per member; `members` is also the randomized round-robin probe
 *             order (reshuffled at the end of each round); `index` finds a member by name.
 *   probe     one per period: PING, then PING_REQ through indirect_checks members after the probe
 *             timeout; at the end of the period without an ack, SUSPECT. Lifeguard local health
 *             (`health`) scales the period and the timeout by health + 1: raised by failed probes
 *             with missing nacks and by refuting a suspicion about ourselves, lowered by success.
 *   suspicion starts at max = suspicion_max_mult * min and shrinks towards min as independent
 *             confirmations (SUSPECT messages from other members) arrive.
 *   broadcasts every state change is queued once per member and class (membership, record) and
 *             piggybacked on every datagram, fewest-transmitted first, until sent
 *             retransmit_mult * ceil(log10(n + 1)) times.
 *   push-pull full state over a stream: joins, periodic anti-entropy, reconnects to dead members
 *             (partition healing) and pulls of blobs too large to piggyback.
 */
#define _POSIX_C_SOURCE 200809L
#include "common/gossip/gossip_internal.h"

#include <assert.h>
#include <stdio.h>
#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MOD     "gossip"
#define NEVER   UINT64_MAX
#define REAP_MS 1000u

/* ---- PRNG and hashing ------------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x)
{
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

void qv__gossip_rng_seed(uint64_t st[4], uint64_t seed)
{
    uint64_t x = seed;
    for (int i = 0; i < 4; i++)
        st[i] = splitmix64(&x);
}

static uint64_t rotl(uint64_t x, int k)
{
    return (x << k) | (x >> (64 - k));
}

uint64_t qv__gossip_rng_next(uint64_t st[4])
{
    uint64_t r = rotl(st[1] * 5, 7) * 9;
    uint64_t t = st[1] << 17;
    st[2] ^= st[0];
    st[3] ^= st[1];
    st[1] ^= st[2];
    st[0] ^= st[3];
    st[2] ^= t;
    st[3] = rotl(st[3], 45);
    return r;
}

uint64_t qv__gossip_rng_below(uint64_t st[4], uint64_t n)
{
    return qv__gossip_rng_next(st) % n;
}

uint64_t qv__hash_name(uint64_t seed, const char *s)
{
    uint64_t h = 14695981039346656037ull ^ seed;
    for (; *s != '\0'; s++) {
        h ^= (unsigned char)*s;
        h *= 1099511628211ull;
    }
    return splitmix64(&h);
}

/* ---- Lifeguard math -------------------------------------------------------------------------- */

uint64_t qv__susp_min_ms(const qv_gossip_config *cfg, size_t n)
{
    double scale = fmax(1.0, log10(fmax(1.0, (double)n)));
    return (uint64_t)cfg->suspicion_mult * (uint64_t)(scale * 1000.0) * cfg->probe_interval_ms /
           1000u;
}

uint64_t qv__susp_remaining_ms(uint32_t n, uint32_t k, uint64_t min_ms, uint64_t max_ms)
{
    if (k == 0)
        return min_ms;
    double frac = log((double)n + 1.0) / log((double)k + 1.0);
    double raw = (double)max_ms - frac * (double)(max_ms - min_ms);
    uint64_t t = raw <= (double)min_ms ? min_ms : (uint64_t)floor(raw);
    return t < min_ms ? min_ms : t;
}

uint32_t qv__retransmit_limit(const qv_gossip_config *cfg, size_t n)
{
    uint32_t scale = (uint32_t)ceil(log10((double)n + 1.0));
    uint32_t limit = cfg->retransmit_mult * (scale == 0 ? 1 : scale);
    return limit >= QV__BC_LEVELS ? QV__BC_LEVELS - 1 : limit;
}

static uint64_t scaled(const qv__swim *s, uint64_t ms)
{
    return ms * (s->health + 1);
}

static void health_delta(qv__swim *s, int d)
{
    int64_t h = (int64_t)s->health + d;
    int64_t max = (int64_t)s->cfg.awareness_max - 1;
    s->health = (uint32_t)(h < 0 ? 0 : h > max ? max : h);
    s->stats.health_score = s->health;
}

static uint64_t push_pull_interval(const qv__swim *s)
{
    uint64_t iv = s->cfg.push_pull_interval_ms;
    if (s->nlive <= 32)
        return iv;
    double mult = ceil(log2((double)s->nlive) - log2(32.0)) + 1.0;
    return (uint64_t)mult * iv;
}

/* ---- member table ---------------------------------------------------------------------------- */

static bool is_live(uint8_t state)
{
    return state == QV_GOSSIP_ALIVE || state == QV_GOSSIP_SUSPECT;
}

static int index_rebuild(qv__swim *s, size_t want)
{
    size_t cap = 16;
    while (cap < want * 2)
        cap *= 2;
    qv__member **idx = calloc(cap, sizeof(*idx));
    if (idx == NULL)
        return QV_ERESOURCE;
    for (size_t i = 0; i < s->nmembers; i++) {
        size_t j = s->members[i]->hash & (cap - 1);
        while (idx[j] != NULL)
            j = (j + 1) & (cap - 1);
        idx[j] = s->members[i];
    }
    free(s->index);
    s->index = idx;
    s->index_cap = cap;
    return 0;
}

qv__member *qv__swim_find(const qv__swim *s, const char *name)
{
    if (s->index_cap == 0)
        return NULL;
    uint64_t h = qv__hash_name(s->hash_seed, name);
    size_t j = h & (s->index_cap - 1);
    while (s->index[j] != NULL) {
        if (s->index[j]->hash == h && strcmp(s->index[j]->name, name) == 0)
            return s->index[j];
        j = (j + 1) & (s->index_cap - 1);
    }
    return NULL;
}

static qv__member *member_new(qv__swim *s, const char *name, const qv_gossip_addr *addr)
{
    if (s->nmembers == s->cap) {
        size_t cap = s->cap == 0 ? 16 : s->cap * 2;
        qv__member **p = realloc(s->members, cap * sizeof(*p));
        if (p == NULL)
            return NULL;
        s->members = p;
        s->cap = cap;
    }
    if ((s->nmembers + 1) * 2 > s->index_cap && index_rebuild(s, s->nmembers + 1) != 0)
        return NULL;
    qv__member *m = calloc(1, sizeof(*m));
    if (m == NULL)
        return NULL;
    snprintf(m->name, sizeof(m->name), "%s", name);
    m->hash = qv__hash_name(s->hash_seed, name);
    m->addr = *addr;
    m->last_update_ms = s->now;
    m->state_change_ms = s->now;
    /* A new member goes to a random place of the probe order (memberlist does the same), so
     * members that join together are not probed in lockstep. */
    size_t at = (size_t)qv__gossip_rng_below(s->rng, s->nmembers + 1);
    s->members[s->nmembers++] = m;
    qv__member *tmp = s->members[at];
    s->members[at] = m;
    s->members[s->nmembers - 1] = tmp;
    size_t j = m->hash & (s->index_cap - 1);
    while (s->index[j] != NULL)
        j = (j + 1) & (s->index_cap - 1);
    s->index[j] = m;
    return m;
}

static void suspects_remove(qv__swim *s, qv__member *m)
{
    for (size_t i = 0; i < s->nsuspects; i++)
        if (s->suspects[i] == m) {
            s->suspects[i] = s->suspects[--s->nsuspects];
            return;
        }
}

static int suspects_add(qv__swim *s, qv__member *m)
{
    if (s->nsuspects == s->suspects_cap) {
        size_t cap = s->suspects_cap == 0 ? 16 : s->suspects_cap * 2;
        qv__member **p = realloc(s->suspects, cap * sizeof(*p));
        if (p == NULL)
            return QV_ERESOURCE;
        s->suspects = p;
        s->suspects_cap = cap;
    }
    s->suspects[s->nsuspects++] = m;
    return 0;
}

static void set_state(qv__swim *s, qv__member *m, uint8_t state)
{
    if (m->state == QV_GOSSIP_SUSPECT && state != QV_GOSSIP_SUSPECT)
        suspects_remove(s, m);
    if (is_live(m->state))
        s->nlive--;
    if (is_live(state))
        s->nlive++;
    m->state = state;
    m->state_change_ms = s->now;
    m->last_update_ms = s->now;
}

static void emit(qv__swim *s, int type, const qv__member *m)
{
    if (s->io.event != NULL && !m->is_self)
        s->io.event(s->io.ctx, type, m);
}

/* ---- broadcast queue ------------------------------------------------------------------------- */

static void bc_unlink(qv__swim *s, qv__bcast *b)
{
    if (b->prev != NULL)
        b->prev->next = b->next;
    else
        s->levels[b->transmits] = b->next;
    if (b->next != NULL)
        b->next->prev = b->prev;
    b->prev = b->next = NULL;
}

static void bc_link_head(qv__swim *s, qv__bcast *b)
{
    b->prev = NULL;
    b->next = s->levels[b->transmits];
    if (b->next != NULL)
        b->next->prev = b;
    s->levels[b->transmits] = b;
}

static void bc_free(qv__swim *s, qv__bcast *b)
{
    if (b->about != NULL && b->about->bc[b->cls] == b)
        b->about->bc[b->cls] = NULL;
    free(b->msg);
    free(b);
    s->nbcast--;
}

static void bc_remove(qv__swim *s, qv__bcast *b)
{
    if (b == NULL)
        return;
    bc_unlink(s, b);
    bc_free(s, b);
}

/* Queues msg (about m, in class cls), replacing the queued one of the same member and class. */
static void bc_push(qv__swim *s, qv__member *m, uint8_t cls, const qv__msg *msg)
{
    bc_remove(s, m->bc[cls]);
    qv__wbuf w;
    qv__w_growable(&w, UINT16_MAX);
    qv__msg_encode(&w, msg);
    qv__bcast *b = w.err ? NULL : calloc(1, sizeof(*b));
    if (b == NULL) {
        qv__w_free(&w);
        qv_log_warn(MOD, "cannot queue a broadcast (out of memory)");
        return;
    }
    b->about = m;
    b->cls = cls;
    b->msg = w.p;
    b->len = (uint16_t)w.len;
    m->bc[cls] = b;
    s->nbcast++;
    bc_link_head(s, b);
    if (s->nbcast > QV__BC_MAX) {
        /* Full: drop the most transmitted, oldest broadcast. */
        for (int lvl = QV__BC_LEVELS - 1; lvl >= 0; lvl--) {
            qv__bcast *t = s->levels[lvl];
            if (t == NULL)
                continue;
            while (t->next != NULL)
                t = t->next;
            bc_remove(s, t);
            break;
        }
    }
}

/* Appends queued broadcasts that fit into w (at most max_msgs), fewest transmits first and newest
 * first within a level; returns how many. */
static size_t bc_fill(qv__swim *s, qv__wbuf *w, size_t max_msgs)
{
    qv__bcast *taken[255];
    size_t nt = 0, skipped = 0;
    if (max_msgs > 255)
        max_msgs = 255;
    for (int lvl = 0; lvl < QV__BC_LEVELS && nt < max_msgs && skipped < 64; lvl++) {
        for (qv__bcast *b = s->levels[lvl]; b != NULL && nt < max_msgs; b = b->next) {
            if (b->len > w->cap - w->len) {
                if (++skipped >= 64 || w->cap - w->len < 16)
                    break;
                continue;
            }
            qv__w_bytes(w, b->msg, b->len);
            taken[nt++] = b;
        }
    }
    uint32_t limit = qv__retransmit_limit(&s->cfg, s->nlive);
    for (size_t i = nt; i-- > 0;) {
        qv__bcast *b = taken[i];
        bc_unlink(s, b);
        b->transmits++;
        if (b->transmits >= limit)
            bc_free(s, b);
        else
            bc_link_head(s, b);
    }
    return nt;
}

static void bc_push_alive(qv__swim *s, qv__member *m)
{
    qv__msg msg = {.type = QV__MSG_ALIVE, .inc = m->inc, .addr = m->addr};
    memcpy(msg.name, m->name, sizeof(msg.name));
    bc_push(s, m, 0, &msg);
}

static size_t record_wire_size(const qv__record *r, bool omit)
{
    return 2 + 1 + strlen(r->grpc) + 1 + strlen(r->version) + QV__LOAD_WIRE_BYTES + 4 +
           (omit ? 0 : r->blob_len);
}

static void bc_push_state(qv__swim *s, qv__member *m)
{
    qv__msg msg = {.type = QV__MSG_STATE, .inc = m->rec_version, .rec = m->rec};
    memcpy(msg.name, m->name, sizeof(msg.name));
    size_t size = 3 + 1 + strlen(m->name) + 8 + 1 + record_wire_size(&m->rec, false);
    if (m->blob_stale || size > s->cfg.piggyback_record_max)
        msg.flags = QV__STATE_BLOB_OMIT;
    bc_push(s, m, 1, &msg);
}

/* ---- sending --------------------------------------------------------------------------------- */

static void send_sealed(qv__swim *s, const qv_gossip_addr *to, const uint8_t *pt, size_t len)
{
    uint8_t nonce[QV__NONCE_BYTES];
    s->io.random(s->io.ctx, nonce, sizeof(nonce));
    size_t n = qv__seal(&s->ring, QV__PURPOSE_PACKET, nonce, pt, len, s->tx_wire);
    if (s->io.send_packet(s->io.ctx, to, s->tx_wire, n) != 0) {
        s->stats.dropped[QV_GOSSIP_DROP_SEND_FAILED]++;
        return;
    }
    s->stats.packets_sent++;
    s->stats.bytes_sent += n;
}

static void hdr_next(qv__swim *s, qv__hdr *h)
{
    memcpy(h->name, s->self->name, sizeof(h->name));
    h->epoch = s->boot_epoch;
    h->seq = ++s->tx_seq;
}

/* Sends msgs[0..n) to `to`, filling the rest of the datagram with queued broadcasts. */
static void send_msgs(qv__swim *s, const qv_gossip_addr *to, const qv__msg *msgs, size_t n)
{
    qv__wbuf w;
    qv__w_fixed(&w, s->tx_pt, s->cfg.max_packet_bytes - QV__ENV_OVERHEAD);
    qv__hdr h;
    hdr_next(s, &h);
    qv__hdr_encode(&w, &h);
    size_t count_at = w.len;
    qv__w_u8(&w, 0);
    for (size_t i = 0; i < n; i++)
        qv__msg_encode(&w, &msgs[i]);
    if (w.err) {
        assert(!"primary messages always fit a datagram");
        return;
    }
    size_t count = n + bc_fill(s, &w, 255 - n);
    if (count == 0)
        return;
    qv__w_put_u8_at(&w, count_at, (uint8_t)count);
    s->stats.msgs_sent += count;
    send_sealed(s, to, w.p, w.len);
}

static void send_one(qv__swim *s, const qv_gossip_addr *to, uint8_t type, uint32_t seq,
                     const char *name)
{
    qv__msg m = {.type = type, .seq = seq};
    if (name != NULL)
        snprintf(m.name, sizeof(m.name), "%s", name);
    send_msgs(s, to, &m, 1);
}

/* ---- state transitions (memberlist's aliveNode / suspectNode / deadNode) ----------------------
 */

static void refute(qv__swim *s, uint64_t accused_inc)
{
    qv__member *me = s->self;
    uint64_t inc = me->inc + 1;
    if (accused_inc >= inc)
        inc = accused_inc + 1;
    me->inc = inc;
    me->last_update_ms = s->now;
    bc_push_alive(s, me);
    health_delta(s, 1);
    s->stats.refutations++;
    qv_log_info(MOD, "%s: refuting a suspicion about itself (incarnation now %" PRIu64 ")",
                me->name, inc);
}

static void log_state(qv__swim *s, const qv__member *m, const char *from)
{
    char addr[QV_GOSSIP_ADDR_STRLEN];
    qv_log_info(MOD, "%s: member %s is now %s (incarnation %" PRIu64 ", %s%s%s)", s->self->name,
                m->name, qv_gossip_state_name(m->state), m->inc,
                qv_gossip_addr_format(&m->addr, addr, sizeof(addr)), from ? ", from " : "",
                from ? from : "");
}

static void alive_node(qv__swim *s, const char *name, uint64_t inc, const qv_gossip_addr *addr)
{
    qv__member *m = qv__swim_find(s, name);
    if (m != NULL && m->is_self) {
        if (s->leaving)
            return;
        bool moved = !qv_gossip_addr_equal(addr, &m->addr);
        if (inc > m->inc || (inc == m->inc && moved)) {
            if (moved) {
                char a[QV_GOSSIP_ADDR_STRLEN];
                s->stats.conflicts++;
                qv_log_warn(MOD, "%s: another member claims this name from %s", m->name,
                            qv_gossip_addr_format(addr, a, sizeof(a)));
            }
            refute(s, inc);
        }
        return;
    }
    if (m == NULL) {
        m = member_new(s, name, addr);
        if (m == NULL) {
            qv_log_warn(MOD, "cannot add member %s (out of memory)", name);
            return;
        }
        m->inc = inc;
        set_state(s, m, QV_GOSSIP_ALIVE);
        bc_push_alive(s, m);
        log_state(s, m, NULL);
        emit(s, QV_GOSSIP_EV_JOIN, m);
        return;
    }
    if (!qv_gossip_addr_equal(addr, &m->addr)) {
        if (is_live(m->state) || inc <= m->inc) {
            char a[QV_GOSSIP_ADDR_STRLEN], b[QV_GOSSIP_ADDR_STRLEN];
            s->stats.conflicts++;
            qv_log_debug(MOD, "%s: member %s at %s also claimed from %s; ignored", s->self->name,
                         name, qv_gossip_addr_format(&m->addr, a, sizeof(a)),
                         qv_gossip_addr_format(addr, b, sizeof(b)));
            return;
        }
    }
    if (inc <= m->inc)
        return;
    uint8_t was = m->state;
    m->inc = inc;
    m->addr = *addr;
    m->last_update_ms = s->now;
    bc_push_alive(s, m);
    if (was != QV_GOSSIP_ALIVE) {
        set_state(s, m, QV_GOSSIP_ALIVE);
        log_state(s, m, NULL);
        emit(s, was == QV_GOSSIP_SUSPECT ? QV_GOSSIP_EV_ALIVE : QV_GOSSIP_EV_JOIN, m);
    }
}

static bool suspicion_confirm(qv__swim *s, qv__member *m, const char *from)
{
    if (m->susp_n >= m->susp_k)
        return false;
    uint64_t h = qv__hash_name(s->hash_seed, from);
    for (uint32_t i = 0; i < m->susp_nfrom; i++)
        if (m->susp_from[i] == h)
            return false;
    if (m->susp_nfrom < QV__SUSP_FROM_MAX)
        m->susp_from[m->susp_nfrom++] = h;
    m->susp_n++;
    m->susp_deadline_ms = m->susp_start_ms + qv__susp_remaining_ms(m->susp_n, m->susp_k,
                                                                   m->susp_min_ms, m->susp_max_ms);
    return true;
}

static void suspect_node(qv__swim *s, const char *name, uint64_t inc, const char *from)
{
    qv__member *m = qv__swim_find(s, name);
    if (m == NULL || inc < m->inc)
        return;
    qv__msg msg = {.type = QV__MSG_SUSPECT, .inc = inc};
    snprintf(msg.name, sizeof(msg.name), "%s", name);
    snprintf(msg.from, sizeof(msg.from), "%s", from);
    if (m->state == QV_GOSSIP_SUSPECT && inc == m->inc) {
        /* Independent confirmations of the same incarnation shorten the timeout and travel on,
         * so that other suspecters hear them too. */
        if (suspicion_confirm(s, m, from))
            bc_push(s, m, 0, &msg);
        return;
    }
    /* A suspicion of a newer incarnation means the member refuted the one we hold: start over
     * (memberlist would count it as a confirmation of the old one; Lifeguard counts only
     * suspicions of the same incarnation). */
    if (m->state != QV_GOSSIP_ALIVE && m->state != QV_GOSSIP_SUSPECT)
        return;
    if (m->is_self) {
        if (!s->leaving)
            refute(s, inc);
        return;
    }
    bool again = m->state == QV_GOSSIP_SUSPECT;
    bc_push(s, m, 0, &msg);
    m->inc = inc;
    uint32_t k = s->cfg.suspicion_mult >= 2 ? s->cfg.suspicion_mult - 2 : 0;
    if (s->nlive < (size_t)k + 2)
        k = 0; /* too few members to ever confirm: go straight to the minimum */
    m->susp_k = k;
    m->susp_n = 0;
    m->susp_min_ms = qv__susp_min_ms(&s->cfg, s->nlive);
    m->susp_max_ms = (uint64_t)s->cfg.suspicion_max_mult * m->susp_min_ms;
    m->susp_start_ms = s->now;
    m->susp_probed_ms = 0;
    m->susp_deadline_ms = s->now + (k == 0 ? m->susp_min_ms : m->susp_max_ms);
    m->susp_from[0] = qv__hash_name(s->hash_seed, from);
    m->susp_nfrom = 1;
    if (again) {
        m->state_change_ms = m->last_update_ms = s->now;
        log_state(s, m, from);
        return; /* still on the suspects list; no new event */
    }
    set_state(s, m, QV_GOSSIP_SUSPECT);
    if (suspects_add(s, m) != 0) {
        set_state(s, m, QV_GOSSIP_ALIVE);
        return;
    }
    log_state(s, m, from);
    emit(s, QV_GOSSIP_EV_SUSPECT, m);
}

static void dead_node(qv__swim *s, const char *name, uint64_t inc, const char *from, bool left)
{
    qv__member *m = qv__swim_find(s, name);
    if (m == NULL || inc < m->inc || !is_live(m->state))
        return;
    if (m->is_self) {
        if (!s->leaving)
            refute(s, inc);
        return;
    }
    qv__msg msg = {.type = left ? QV__MSG_LEAVE : QV__MSG_DEAD, .inc = inc};
    snprintf(msg.name, sizeof(msg.name), "%s", name);
    if (!left)
        snprintf(msg.from, sizeof(msg.from), "%s", from);
    bc_push(s, m, 0, &msg);
    m->inc = inc;
    set_state(s, m, left ? QV_GOSSIP_LEFT : QV_GOSSIP_DEAD);
    log_state(s, m, left ? NULL : from);
    emit(s, left ? QV_GOSSIP_EV_LEAVE : QV_GOSSIP_EV_DEAD, m);
}

/* A record heard about `name` at `version`. */
static void apply_record(qv__swim *s, const char *name, uint64_t version, const qv__record *rec,
                         bool omitted)
{
    qv__member *m = qv__swim_find(s, name);
    if (m == NULL || version == 0 || rec->blob_len > s->cfg.max_record_bytes)
        return;
    if (m->is_self) {
        /* Someone remembers a record of ours newer than ours: a previous life of this member.
         * Jump past it so the current record wins everywhere. (Versions start at the boot epoch
         * shifted left by 20 bits, so a new life normally starts above the last one anyway.) */
        if (version > m->rec_version && !s->leaving) {
            m->rec_version = version + 1;
            bc_push_state(s, m);
        }
        return;
    }
    if (version < m->rec_version)
        return;
    if (version == m->rec_version && (!m->blob_stale || omitted))
        return;
    uint8_t *blob = NULL;
    if (!omitted && rec->blob_len > 0) {
        blob = malloc(rec->blob_len);
        if (blob == NULL)
            return;
        memcpy(blob, rec->blob, rec->blob_len);
    }
    bool newer = version > m->rec_version;
    const uint8_t *old_blob = m->rec.blob;
    uint32_t old_len = m->rec.blob_len;
    m->rec = *rec;
    if (omitted) {
        /* Keep the blob we have, marked stale, and fetch the new one by push-pull. */
        m->rec.blob = old_blob;
        m->rec.blob_len = old_len;
        m->blob_stale = true;
        if (s->pull_target[0] == '\0')
            memcpy(s->pull_target, m->name, sizeof(s->pull_target));
    } else {
        free((void *)old_blob);
        m->rec.blob = blob;
        m->rec.blob_len = rec->blob_len;
        m->blob_stale = false;
    }
    m->rec_version = version;
    m->last_update_ms = s->now;
    if (newer)
        bc_push_state(s, m);
    emit(s, QV_GOSSIP_EV_STATE, m);
}

/* ---- probing --------------------------------------------------------------------------------- */

static bool probe_candidate(const qv__member *m)
{
    return !m->is_self && is_live(m->state);
}

static void shuffle_members(qv__swim *s)
{
    for (size_t i = s->nmembers; i > 1; i--) {
        size_t j = (size_t)qv__gossip_rng_below(s->rng, i);
        qv__member *t = s->members[i - 1];
        s->members[i - 1] = s->members[j];
        s->members[j] = t;
    }
}

static qv__member *next_probe_target(qv__swim *s)
{
    for (size_t tries = 0; tries < 2 * s->nmembers + 1; tries++) {
        if (s->probe_pos >= s->nmembers) {
            shuffle_members(s);
            s->probe_pos = 0;
        }
        qv__member *m = s->members[s->probe_pos++];
        if (probe_candidate(m))
            return m;
    }
    return NULL;
}

typedef bool (*member_filter)(const qv__swim *s, const qv__member *m, const void *arg);

/* Picks up to k distinct members passing filter, uniformly: random draws first (cheap in large
 * clusters), a full reservoir scan when draws keep missing. */
static size_t pick_random(qv__swim *s, size_t k, member_filter ok, const void *arg,
                          qv__member **out)
{
    size_t got = 0;
    for (size_t tries = 0; tries < 8 * k && got < k && s->nmembers > 0; tries++) {
        qv__member *m = s->members[qv__gossip_rng_below(s->rng, s->nmembers)];
        bool dup = false;
        for (size_t i = 0; i < got; i++)
            dup = dup || out[i] == m;
        if (!dup && ok(s, m, arg))
            out[got++] = m;
    }
    if (got == k)
        return got;
    size_t seen = 0;
    got = 0;
    for (size_t i = 0; i < s->nmembers; i++) {
        qv__member *m = s->members[i];
        if (!ok(s, m, arg))
            continue;
        if (got < k) {
            out[got++] = m;
        } else {
            size_t j = (size_t)qv__gossip_rng_below(s->rng, seen + 1);
            if (j < k)
                out[j] = m;
        }
        seen++;
    }
    return got;
}

static bool filter_indirect(const qv__swim *s, const qv__member *m, const void *arg)
{
    return m->state == QV_GOSSIP_ALIVE && !m->is_self && strcmp(m->name, (const char *)arg) != 0;
}

static bool filter_gossip(const qv__swim *s, const qv__member *m, const void *arg)
{
    if (m->is_self)
        return false;
    if (is_live(m->state))
        return true;
    return s->now - m->state_change_ms <= s->cfg.gossip_to_dead_ms;
}

static bool filter_alive(const qv__swim *s, const qv__member *m, const void *arg)
{
    return !m->is_self && m->state == QV_GOSSIP_ALIVE;
}

static bool filter_dead(const qv__swim *s, const qv__member *m, const void *arg)
{
    return !m->is_self && m->state == QV_GOSSIP_DEAD;
}

/* A suspicion held for two periods without a refutation reaching us: either the member is down,
 * or we missed its refutation (with loss, an epidemic misses a member now and then). Probing it
 * ourselves settles which: it answers a stale suspicion with its current ALIVE inside the ack,
 * or our probe fails too and counts as an independent confirmation. Oldest first. */
static qv__member *stale_suspect(qv__swim *s)
{
    qv__member *best = NULL;
    uint64_t best_t = 0, wait = 2ull * s->cfg.probe_interval_ms;
    for (size_t i = 0; i < s->nsuspects; i++) {
        qv__member *m = s->suspects[i];
        uint64_t t = m->susp_probed_ms > m->susp_start_ms ? m->susp_probed_ms : m->susp_start_ms;
        if (s->now - t >= wait && (best == NULL || t < best_t)) {
            best = m;
            best_t = t;
        }
    }
    return best;
}

static void start_probe(qv__swim *s)
{
    s->next_probe_ms = s->now + scaled(s, s->cfg.probe_interval_ms);
    if (s->leaving)
        return;
    qv__member *m = stale_suspect(s);
    if (m != NULL)
        m->susp_probed_ms = s->now;
    else
        m = next_probe_target(s);
    if (m == NULL)
        return;
    s->probe.active = true;
    s->probe.indirect_sent = false;
    s->probe.acked = false;
    memcpy(s->probe.target, m->name, sizeof(s->probe.target));
    s->probe.seq = ++s->probe_seq;
    s->probe.start_ms = s->now;
    s->probe.direct_deadline_ms = s->now + scaled(s, s->cfg.probe_timeout_ms);
    s->probe.end_ms = s->next_probe_ms;
    s->probe.expected_nacks = s->probe.nacks = 0;
    s->stats.probes++;
    qv__msg msgs[2];
    size_t n = 0;
    if (m->state == QV_GOSSIP_SUSPECT) {
        /* Lifeguard's buddy system: tell a suspect first, so it can refute at once. */
        msgs[n] = (qv__msg){.type = QV__MSG_SUSPECT, .inc = m->inc};
        memcpy(msgs[n].name, m->name, sizeof(msgs[n].name));
        memcpy(msgs[n].from, s->self->name, sizeof(msgs[n].from));
        n++;
    }
    msgs[n] = (qv__msg){.type = QV__MSG_PING, .seq = s->probe.seq};
    memcpy(msgs[n].name, m->name, sizeof(msgs[n].name));
    n++;
    send_msgs(s, &m->addr, msgs, n);
}

static void probe_tick(qv__swim *s)
{
    if (s->probe.active && !s->probe.indirect_sent && s->now >= s->probe.direct_deadline_ms) {
        s->probe.indirect_sent = true;
        qv__member *t = qv__swim_find(s, s->probe.target);
        if (t == NULL || !is_live(t->state)) {
            s->probe.active = false;
        } else {
            qv__member *peers[16];
            size_t k = s->cfg.indirect_checks > 16 ? 16 : s->cfg.indirect_checks;
            size_t n = pick_random(s, k, filter_indirect, t->name, peers);
            qv__msg req = {.type = QV__MSG_PING_REQ,
                           .seq = s->probe.seq,
                           .addr = t->addr,
                           .flags = QV__PINGREQ_NACK};
            memcpy(req.name, t->name, sizeof(req.name));
            for (size_t i = 0; i < n; i++)
                send_msgs(s, &peers[i]->addr, &req, 1);
            s->probe.expected_nacks = (uint32_t)n;
            if (n > 0)
                s->stats.indirect_probes++;
        }
    }
    if (s->probe.active && s->now >= s->probe.end_ms) {
        s->probe.active = false;
        /* Lifeguard: missing nacks mean our own messages are not getting through. Without
         * peers to nack, any failed probe counts against our health. */
        int delta = 1;
        if (s->probe.expected_nacks > 0)
            delta = s->probe.nacks < s->probe.expected_nacks
                        ? (int)(s->probe.expected_nacks - s->probe.nacks)
                        : 0;
        health_delta(s, delta);
        qv__member *t = qv__swim_find(s, s->probe.target);
        if (t != NULL && is_live(t->state)) {
            s->stats.probes_failed++;
            if (t->state == QV_GOSSIP_ALIVE)
                s->stats.suspicions_raised++;
            suspect_node(s, t->name, t->inc, s->self->name);
        }
    }
    if (s->now >= s->next_probe_ms)
        start_probe(s);
}

static void probe_acked(qv__swim *s)
{
    s->probe.active = false;
    s->probe.acked = true;
    health_delta(s, -1);
    qv__member *t = qv__swim_find(s, s->probe.target);
    if (t != NULL)
        t->last_update_ms = s->now;
}

/* ---- handling datagrams ---------------------------------------------------------------------- */

static int start_push_pull(qv__swim *s, const qv_gossip_addr *to, bool join);

static void handle_ping_req(qv__swim *s, const qv_gossip_addr *from, const qv__msg *m)
{
    qv__fwd *slot = NULL;
    for (size_t i = 0; i < QV__FWD_MAX && slot == NULL; i++)
        if (!s->fwd[i].used)
            slot = &s->fwd[i];
    if (slot == NULL) {
        /* Busy: replace the oldest forward (it is the likeliest to have failed already). */
        slot = &s->fwd[0];
        for (size_t i = 1; i < QV__FWD_MAX; i++)
            if (s->fwd[i].deadline_ms < slot->deadline_ms)
                slot = &s->fwd[i];
    }
    slot->used = true;
    slot->want_nack = (m->flags & QV__PINGREQ_NACK) != 0;
    slot->our_seq = ++s->probe_seq;
    slot->origin_seq = m->seq;
    slot->origin = *from;
    /* Nack at 80% of the probe timeout: the requester sent us this at its probe timeout and
     * counts nacks until the end of its period, so a nack sent any later would arrive after the
     * requester stopped counting, and it would blame itself for every dead target. */
    slot->deadline_ms = s->now + s->cfg.probe_timeout_ms * 4u / 5u;
    send_one(s, &m->addr, QV__MSG_PING, slot->our_seq, m->name);
}

static void handle_ack(qv__swim *s, const qv__msg *m)
{
    if (s->probe.active && m->seq == s->probe.seq) {
        probe_acked(s);
        return;
    }
    for (size_t i = 0; i < QV__FWD_MAX; i++)
        if (s->fwd[i].used && s->fwd[i].our_seq == m->seq) {
            s->fwd[i].used = false;
            send_one(s, &s->fwd[i].origin, QV__MSG_ACK, s->fwd[i].origin_seq, NULL);
            return;
        }
}

static qv__msg alive_of_self(const qv__swim *s)
{
    qv__msg a = {.type = QV__MSG_ALIVE, .inc = s->self->inc, .addr = s->self->addr};
    memcpy(a.name, s->self->name, sizeof(a.name));
    return a;
}

static void handle_msg(qv__swim *s, const qv_gossip_addr *from, const qv__msg *m)
{
    switch (m->type) {
    case QV__MSG_PING:
        /* A ping meant for a member that used to live at our address: stay silent. */
        if (strcmp(m->name, s->self->name) == 0) {
            qv__msg out[2] = {{.type = QV__MSG_ACK, .seq = m->seq}};
            size_t n = 1;
            if (s->alive_reply) {
                out[n++] = alive_of_self(s);
                s->alive_reply = false;
            }
            send_msgs(s, from, out, n);
        }
        break;
    case QV__MSG_PING_REQ:
        handle_ping_req(s, from, m);
        break;
    case QV__MSG_ACK:
        handle_ack(s, m);
        break;
    case QV__MSG_NACK:
        if (s->probe.active && m->seq == s->probe.seq)
            s->probe.nacks++;
        break;
    case QV__MSG_ALIVE:
        alive_node(s, m->name, m->inc, &m->addr);
        break;
    case QV__MSG_SUSPECT:
    case QV__MSG_DEAD:
        /* News about us older than our incarnation: the sender missed our refutation. Tell it
         * directly (inside the ack when this packet holds a ping, which the buddy system's
         * suspicions always precede). */
        if (strcmp(m->name, s->self->name) == 0 && m->inc < s->self->inc && !s->leaving)
            s->alive_reply = true;
        if (m->type == QV__MSG_SUSPECT)
            suspect_node(s, m->name, m->inc, m->from);
        else
            dead_node(s, m->name, m->inc, m->from, false);
        break;
    case QV__MSG_LEAVE:
        dead_node(s, m->name, m->inc, m->name, true);
        break;
    case QV__MSG_STATE:
        apply_record(s, m->name, m->inc, &m->rec, (m->flags & QV__STATE_BLOB_OMIT) != 0);
        break;
    default:
        break; /* a type from a later version */
    }
}

/* The replay check for a sender: a member we consider dead or gone may come back with an older
 * epoch (a restart with a clock stepped back). */
static bool replay_ok(qv__swim *s, const qv__hdr *h)
{
    uint64_t hash = qv__hash_name(s->hash_seed, h->name);
    if ((s->replay_n + 1) * 2 > s->replay_cap) {
        if (s->replay_n >= 4 * (s->nmembers + 64))
            return false; /* a flood of unknown senders: refuse new ones */
        size_t cap = s->replay_cap == 0 ? 64 : s->replay_cap * 2;
        qv__replay_slot *t = calloc(cap, sizeof(*t));
        if (t == NULL)
            return false;
        for (size_t i = 0; i < s->replay_cap; i++) {
            if (!s->replay[i].w.used)
                continue;
            size_t j = s->replay[i].hash & (cap - 1);
            while (t[j].w.used)
                j = (j + 1) & (cap - 1);
            t[j] = s->replay[i];
        }
        free(s->replay);
        s->replay = t;
        s->replay_cap = cap;
    }
    size_t j = hash & (s->replay_cap - 1);
    while (s->replay[j].w.used && s->replay[j].hash != hash)
        j = (j + 1) & (s->replay_cap - 1);
    qv__replay_slot *slot = &s->replay[j];
    bool fresh = !slot->w.used;
    qv__member *m = qv__swim_find(s, h->name);
    bool allow_old = m != NULL && !is_live(m->state);
    if (!qv__replay_accept(&slot->w, h->epoch, h->seq, allow_old))
        return false;
    slot->hash = hash;
    slot->last_ms = s->now;
    if (fresh)
        s->replay_n++;
    return true;
}

void qv__swim_on_plain(qv__swim *s, const qv_gossip_addr *from, const uint8_t *pt, size_t len)
{
    qv__hdr h;
    int rc = qv__packet_validate(pt, len, &h);
    if (rc != 0) {
        s->stats.dropped[rc == QV_EUNIMPL ? QV_GOSSIP_DROP_VERSION : QV_GOSSIP_DROP_MALFORMED]++;
        return;
    }
    if (strcmp(h.name, s->self->name) == 0) {
        s->stats.dropped[QV_GOSSIP_DROP_LOOPBACK]++;
        return;
    }
    if (!replay_ok(s, &h)) {
        s->stats.dropped[QV_GOSSIP_DROP_REPLAY]++;
        return;
    }
    if (qv__swim_find(s, h.name) == NULL && !s->leaving && s->now >= s->next_stranger_ms) {
        /* An authenticated sender we know nothing about: we missed the news of its joining (an
         * epidemic with few retransmissions misses a member now and then). Exchange state with
         * it now rather than at the next periodic push-pull, at most once per period. */
        s->next_stranger_ms = s->now + s->cfg.probe_interval_ms;
        start_push_pull(s, from, false);
    }
    qv__rbuf r;
    qv__r_init(&r, pt, len);
    uint32_t count = 0;
    qv__packet_begin(&r, &h, &count);
    qv__msg m;
    s->alive_reply = false;
    for (uint32_t i = 0; i < count; i++) {
        if (qv__msg_decode(&r, &m) != 0)
            break; /* cannot happen: validated above */
        s->stats.msgs_received++;
        handle_msg(s, from, &m);
    }
    if (s->alive_reply) {
        qv__msg a = alive_of_self(s);
        s->alive_reply = false;
        send_msgs(s, from, &a, 1);
    }
    qv__swim_check(s);
}

void qv__swim_on_packet(qv__swim *s, const qv_gossip_addr *from, const uint8_t *buf, size_t len)
{
    s->now = s->io.now_ms(s->io.ctx);
    s->stats.packets_received++;
    s->stats.bytes_received += len;
    if (len > s->cfg.max_packet_bytes) {
        s->stats.dropped[QV_GOSSIP_DROP_OVERSIZED]++;
        return;
    }
    size_t ptlen = 0;
    qv_gossip_drop why;
    if (qv__open(&s->ring, QV__PURPOSE_PACKET, buf, len, s->rx_pt, &ptlen, &why) != 0) {
        s->stats.dropped[why]++;
        return;
    }
    qv__swim_on_plain(s, from, s->rx_pt, ptlen);
}

/* ---- push-pull ------------------------------------------------------------------------------- */

static void member_to_entry(const qv__member *m, qv__pp_entry *e, bool omit_blobs)
{
    memcpy(e->name, m->name, sizeof(e->name));
    e->addr = m->addr;
    e->inc = m->inc;
    e->state = m->state;
    e->rec_version = m->rec_version;
    e->blob_omitted = omit_blobs || m->blob_stale;
    e->rec = m->rec;
}

/* Encodes and seals our whole state; returns 0 with *out (malloc'd) or a negative code. */
static int build_state(qv__swim *s, uint8_t kind, uint8_t flags, uint8_t **out, size_t *out_len)
{
    uint8_t purpose = kind == QV__STREAM_PP_REQ ? QV__PURPOSE_STREAM_REQ : QV__PURPOSE_STREAM_REPLY;
    for (int omit = 0; omit < 2; omit++) {
        qv__wbuf w;
        qv__w_growable(&w, s->cfg.max_stream_bytes - QV__ENV_OVERHEAD);
        qv__hdr h;
        hdr_next(s, &h);
        qv__pp_begin_encode(&w, &h, kind, flags, (uint32_t)s->nmembers);
        qv__pp_entry e;
        for (size_t i = 0; i < s->nmembers && !w.err; i++) {
            member_to_entry(s->members[i], &e, omit != 0);
            qv__pp_entry_encode(&w, &e);
        }
        if (w.err) {
            qv__w_free(&w);
            continue; /* too large: try again without blobs */
        }
        uint8_t *sealed = malloc(w.len + QV__ENV_OVERHEAD);
        if (sealed == NULL) {
            qv__w_free(&w);
            return QV_ERESOURCE;
        }
        uint8_t nonce[QV__NONCE_BYTES];
        s->io.random(s->io.ctx, nonce, sizeof(nonce));
        *out_len = qv__seal(&s->ring, purpose, nonce, w.p, w.len, sealed);
        *out = sealed;
        qv__w_free(&w);
        if (omit)
            qv_log_warn(MOD, "%s: full state exceeds max_stream_bytes; sent without blobs",
                        s->self->name);
        return 0;
    }
    qv_log_warn(MOD, "%s: member list exceeds max_stream_bytes even without blobs", s->self->name);
    return QV_ERESOURCE;
}

static void merge_entry(qv__swim *s, const char *from, const qv__pp_entry *e)
{
    switch (e->state) {
    case QV_GOSSIP_ALIVE:
        alive_node(s, e->name, e->inc, &e->addr);
        break;
    case QV_GOSSIP_LEFT:
        dead_node(s, e->name, e->inc, e->name, true);
        break;
    default:
        /* Someone else's DEAD becomes our SUSPECT: the member gets a chance to refute instead of
         * being declared dead on one member's word (memberlist's mergeState does the same). */
        suspect_node(s, e->name, e->inc, from);
        break;
    }
    if (e->rec_version != 0)
        apply_record(s, e->name, e->rec_version, &e->rec, e->blob_omitted);
}

int qv__swim_on_stream_plain(qv__swim *s, const uint8_t *pt, size_t len, bool is_reply,
                             uint8_t **reply, size_t *reply_len)
{
    qv__hdr h;
    uint8_t kind = 0;
    int rc = qv__pp_validate(pt, len, &h, &kind);
    if (rc == 0 && kind != (is_reply ? QV__STREAM_PP_REPLY : QV__STREAM_PP_REQ))
        rc = QV_EINVAL;
    if (rc != 0) {
        s->stats.dropped[rc == QV_EUNIMPL ? QV_GOSSIP_DROP_VERSION : QV_GOSSIP_DROP_MALFORMED]++;
        return QV_EINVAL;
    }
    if (strcmp(h.name, s->self->name) == 0) {
        s->stats.dropped[QV_GOSSIP_DROP_LOOPBACK]++;
        return QV_EINVAL;
    }
    if (!replay_ok(s, &h)) {
        s->stats.dropped[QV_GOSSIP_DROP_REPLAY]++;
        return QV_EPERM;
    }
    qv__rbuf r;
    qv__r_init(&r, pt, len);
    uint8_t flags;
    uint32_t count;
    qv__pp_begin(&r, &h, &kind, &flags, &count);
    qv__pp_entry e;
    for (uint32_t i = 0; i < count; i++) {
        if (qv__pp_entry_decode(&r, &e) != 0)
            break; /* cannot happen: validated above */
        merge_entry(s, h.name, &e);
    }
    rc = 0;
    if (!is_reply) {
        s->stats.streams_received++;
        if (reply != NULL)
            rc = build_state(s, QV__STREAM_PP_REPLY, 0, reply, reply_len);
    }
    qv__swim_check(s);
    return rc;
}

static uint8_t *open_stream(qv__swim *s, uint8_t purpose, const uint8_t *buf, size_t len,
                            size_t *ptlen)
{
    if (len > s->cfg.max_stream_bytes) {
        s->stats.dropped[QV_GOSSIP_DROP_OVERSIZED]++;
        return NULL;
    }
    uint8_t *pt = malloc(len > 0 ? len : 1);
    if (pt == NULL)
        return NULL;
    qv_gossip_drop why;
    if (qv__open(&s->ring, purpose, buf, len, pt, ptlen, &why) != 0) {
        s->stats.dropped[why]++;
        free(pt);
        return NULL;
    }
    return pt;
}

int qv__swim_on_stream_request(qv__swim *s, const qv_gossip_addr *from, const uint8_t *buf,
                               size_t len, uint8_t **reply, size_t *reply_len)
{
    s->now = s->io.now_ms(s->io.ctx);
    s->stats.bytes_received += len;
    size_t ptlen = 0;
    uint8_t *pt = open_stream(s, QV__PURPOSE_STREAM_REQ, buf, len, &ptlen);
    if (pt == NULL)
        return QV_EPERM;
    int rc = qv__swim_on_stream_plain(s, pt, ptlen, false, reply, reply_len);
    free(pt);
    if (rc == 0)
        s->stats.bytes_sent += *reply_len;
    return rc;
}

static int start_push_pull(qv__swim *s, const qv_gossip_addr *to, bool join)
{
    qv__pp *slot = NULL;
    for (size_t i = 0; i < QV__PP_MAX && slot == NULL; i++)
        if (!s->pp[i].used)
            slot = &s->pp[i];
    if (slot == NULL)
        return QV_EUNAVAIL;
    uint8_t *buf = NULL;
    size_t len = 0;
    int rc = build_state(s, QV__STREAM_PP_REQ, join ? QV__PP_FLAG_JOIN : 0, &buf, &len);
    if (rc != 0)
        return rc;
    uint64_t id = ++s->stream_id;
    rc = s->io.stream_start(s->io.ctx, id, to, buf, len);
    free(buf);
    if (rc != 0) {
        s->stats.dropped[QV_GOSSIP_DROP_STREAM]++;
        return rc;
    }
    slot->used = true;
    slot->join = join;
    slot->id = id;
    slot->deadline_ms = s->now + s->cfg.tcp_timeout_ms + 1000u;
    s->stats.streams_sent++;
    s->stats.bytes_sent += len;
    return 0;
}

void qv__swim_on_stream_done(qv__swim *s, uint64_t id, int rc, const uint8_t *buf, size_t len)
{
    s->now = s->io.now_ms(s->io.ctx);
    qv__pp *slot = NULL;
    for (size_t i = 0; i < QV__PP_MAX && slot == NULL; i++)
        if (s->pp[i].used && s->pp[i].id == id)
            slot = &s->pp[i];
    if (slot == NULL)
        return;
    slot->used = false;
    if (rc != 0) {
        s->stats.dropped[QV_GOSSIP_DROP_STREAM]++;
        return;
    }
    s->stats.bytes_received += len;
    size_t ptlen = 0;
    uint8_t *pt = open_stream(s, QV__PURPOSE_STREAM_REPLY, buf, len, &ptlen);
    if (pt == NULL)
        return;
    rc = qv__swim_on_stream_plain(s, pt, ptlen, true, NULL, NULL);
    free(pt);
    if (rc == 0 && slot->join && !s->joined) {
        s->joined = true;
        s->join_active = false;
        qv_log_info(MOD, "%s: joined the cluster (%zu live members known)", s->self->name,
                    s->nlive);
    }
}

static void join_attempt(qv__swim *s)
{
    if (s->joined || s->nlive > 1) {
        s->join_active = false;
        return;
    }
    size_t started = 0;
    for (size_t i = 0; i < s->nseeds; i++) {
        qv_gossip_addr a;
        if (s->io.resolve(s->io.ctx, s->seeds[i], &a) != 0) {
            qv_log_warn(MOD, "%s: seed %s does not resolve", s->self->name, s->seeds[i]);
            continue;
        }
        if (qv_gossip_addr_equal(&a, &s->self->addr))
            continue;
        if (start_push_pull(s, &a, true) == 0)
            started++;
    }
    if (started == 0 && s->nseeds > 0)
        qv_log_debug(MOD, "%s: no seed to contact this round", s->self->name);
    s->next_join_ms = s->now + s->join_backoff_ms;
    s->join_backoff_ms = s->join_backoff_ms * 2 > 30000 ? 30000 : s->join_backoff_ms * 2;
}

/* ---- timers ---------------------------------------------------------------------------------- */

static void member_free(qv__swim *s, qv__member *m)
{
    bc_remove(s, m->bc[0]);
    bc_remove(s, m->bc[1]);
    free((void *)m->rec.blob);
    free(m);
}

static void reap(qv__swim *s)
{
    bool removed = false;
    for (size_t i = 0; i < s->nmembers;) {
        qv__member *m = s->members[i];
        if (!is_live(m->state) && !m->is_self &&
            s->now - m->state_change_ms >= s->cfg.dead_reclaim_ms) {
            qv_log_info(MOD, "%s: forgetting %s member %s", s->self->name,
                        qv_gossip_state_name(m->state), m->name);
            s->members[i] = s->members[--s->nmembers];
            member_free(s, m);
            removed = true;
        } else {
            i++;
        }
    }
    if (removed)
        index_rebuild(s, s->nmembers);
    /* Replay windows of senders not heard from for as long go too. */
    size_t stale = 0;
    for (size_t i = 0; i < s->replay_cap; i++)
        if (s->replay[i].w.used && s->now - s->replay[i].last_ms >= s->cfg.dead_reclaim_ms)
            stale++;
    if (stale > 0) {
        qv__replay_slot *old = s->replay;
        size_t cap = s->replay_cap;
        qv__replay_slot *t = calloc(cap, sizeof(*t));
        if (t != NULL) {
            for (size_t i = 0; i < cap; i++) {
                if (!old[i].w.used || s->now - old[i].last_ms >= s->cfg.dead_reclaim_ms)
                    continue;
                size_t j = old[i].hash & (cap - 1);
                while (t[j].w.used)
                    j = (j + 1) & (cap - 1);
                t[j] = old[i];
            }
            s->replay = t;
            s->replay_n -= stale;
            free(old);
        }
    }
    for (size_t i = 0; i < QV__PP_MAX; i++)
        if (s->pp[i].used && s->now >= s->pp[i].deadline_ms) {
            s->pp[i].used = false; /* the driver never answered: give the slot back */
            s->stats.dropped[QV_GOSSIP_DROP_STREAM]++;
        }
}

static void gossip_round(qv__swim *s)
{
    s->next_gossip_ms = s->now + s->cfg.gossip_interval_ms;
    if (s->nbcast == 0)
        return;
    qv__member *to[16];
    size_t k = s->cfg.gossip_nodes > 16 ? 16 : s->cfg.gossip_nodes;
    size_t n = pick_random(s, k, filter_gossip, NULL, to);
    for (size_t i = 0; i < n && s->nbcast > 0; i++)
        send_msgs(s, &to[i]->addr, NULL, 0);
}

uint64_t qv__swim_next_deadline(const qv__swim *s)
{
    uint64_t t = s->next_probe_ms;
#define MIN_T(x)                                                                                   \
    do {                                                                                           \
        uint64_t x_ = (x);                                                                         \
        if (x_ < t)                                                                                \
            t = x_;                                                                                \
    } while (0)
    if (s->probe.active)
        MIN_T(s->probe.indirect_sent ? s->probe.end_ms : s->probe.direct_deadline_ms);
    MIN_T(s->next_gossip_ms);
    MIN_T(s->next_pp_ms);
    MIN_T(s->next_reconnect_ms);
    MIN_T(s->next_reap_ms);
    if (s->join_active)
        MIN_T(s->next_join_ms);
    if (s->pull_target[0] != '\0')
        MIN_T(s->next_pull_ms);
    for (size_t i = 0; i < QV__FWD_MAX; i++)
        if (s->fwd[i].used)
            MIN_T(s->fwd[i].deadline_ms);
    for (size_t i = 0; i < s->nsuspects; i++)
        MIN_T(s->suspects[i]->susp_deadline_ms);
#undef MIN_T
    return t;
}

uint64_t qv__swim_tick(qv__swim *s)
{
    s->now = s->io.now_ms(s->io.ctx);
    for (size_t i = 0; i < QV__FWD_MAX; i++) {
        qv__fwd *f = &s->fwd[i];
        if (f->used && s->now >= f->deadline_ms) {
            f->used = false;
            if (f->want_nack)
                send_one(s, &f->origin, QV__MSG_NACK, f->origin_seq, NULL);
        }
    }
    probe_tick(s);
    for (size_t i = 0; i < s->nsuspects;) {
        qv__member *m = s->suspects[i];
        if (s->now >= m->susp_deadline_ms) {
            s->stats.deaths_declared++;
            dead_node(s, m->name, m->inc, s->self->name, false); /* removes it from suspects */
        } else {
            i++;
        }
    }
    if (s->now >= s->next_gossip_ms)
        gossip_round(s);
    if (s->now >= s->next_pp_ms) {
        s->next_pp_ms = s->now + push_pull_interval(s);
        qv__member *m;
        if (!s->leaving && pick_random(s, 1, filter_alive, NULL, &m) == 1)
            start_push_pull(s, &m->addr, false);
    }
    if (s->now >= s->next_reconnect_ms) {
        s->next_reconnect_ms = s->now + s->cfg.reconnect_interval_ms;
        qv__member *m;
        if (!s->leaving && pick_random(s, 1, filter_dead, NULL, &m) == 1)
            start_push_pull(s, &m->addr, false);
    }
    if (s->pull_target[0] != '\0' && s->now >= s->next_pull_ms) {
        qv__member *m = qv__swim_find(s, s->pull_target);
        s->pull_target[0] = '\0';
        s->next_pull_ms = s->now + s->cfg.probe_interval_ms;
        if (m != NULL && m->state == QV_GOSSIP_ALIVE && m->blob_stale && !s->leaving)
            start_push_pull(s, &m->addr, false);
    }
    if (s->join_active && s->now >= s->next_join_ms)
        join_attempt(s);
    if (s->now >= s->next_reap_ms) {
        s->next_reap_ms = s->now + REAP_MS;
        reap(s);
    }
    qv__swim_check(s);
    return qv__swim_next_deadline(s);
}

/* ---- API operations -------------------------------------------------------------------------- */

int qv__swim_join(qv__swim *s, const char *const *seeds, size_t n)
{
    s->now = s->io.now_ms(s->io.ctx);
    char **copy = calloc(n, sizeof(*copy));
    if (copy == NULL)
        return QV_ERESOURCE;
    for (size_t i = 0; i < n; i++) {
        copy[i] = strdup(seeds[i]);
        if (copy[i] == NULL) {
            for (size_t j = 0; j < i; j++)
                free(copy[j]);
            free(copy);
            return QV_ERESOURCE;
        }
    }
    for (size_t i = 0; i < s->nseeds; i++)
        free(s->seeds[i]);
    free(s->seeds);
    s->seeds = copy;
    s->nseeds = n;
    s->joined = false;
    s->join_active = true;
    s->join_backoff_ms = s->cfg.join_retry_ms;
    s->next_join_ms = s->now;
    if (s->io.wake != NULL)
        s->io.wake(s->io.ctx);
    return 0;
}

int qv__swim_leave(qv__swim *s)
{
    if (s->leaving)
        return QV_EPRECONDITION;
    s->now = s->io.now_ms(s->io.ctx);
    s->leaving = true;
    s->probe.active = false;
    s->join_active = false;
    qv__msg msg = {.type = QV__MSG_LEAVE, .inc = s->self->inc};
    memcpy(msg.name, s->self->name, sizeof(msg.name));
    bc_push(s, s->self, 0, &msg);
    s->next_gossip_ms = s->now;
    qv_log_info(MOD, "%s: leaving the cluster", s->self->name);
    if (s->io.wake != NULL)
        s->io.wake(s->io.ctx);
    return 0;
}

bool qv__swim_leave_done(const qv__swim *s)
{
    return s->leaving && (s->self->bc[0] == NULL || s->nlive <= 1);
}

int qv__swim_set_record(qv__swim *s, const qv_gossip_record *rec)
{
    size_t glen = rec->grpc_addr == NULL ? 0 : strlen(rec->grpc_addr);
    size_t vlen = rec->version == NULL ? 0 : strlen(rec->version);
    if (glen > QV_GOSSIP_GRPC_ADDR_MAX || vlen > QV_GOSSIP_VERSION_MAX ||
        rec->role > QV_GOSSIP_ROLE_ROUTER || !isfinite(rec->load.cpu) ||
        !isfinite(rec->load.search_qps) || rec->blob_len > s->cfg.max_record_bytes ||
        (rec->blob_len > 0 && rec->blob == NULL))
        return QV_EINVAL;
    for (size_t i = 0; i < glen; i++)
        if (rec->grpc_addr[i] < 0x20 || rec->grpc_addr[i] > 0x7e)
            return QV_EINVAL;
    for (size_t i = 0; i < vlen; i++)
        if (rec->version[i] < 0x20 || rec->version[i] > 0x7e)
            return QV_EINVAL;
    uint8_t *blob = NULL;
    if (rec->blob_len > 0) {
        blob = malloc(rec->blob_len);
        if (blob == NULL)
            return QV_ERESOURCE;
        memcpy(blob, rec->blob, rec->blob_len);
    }
    s->now = s->io.now_ms(s->io.ctx);
    qv__member *me = s->self;
    free((void *)me->rec.blob);
    memset(&me->rec, 0, sizeof(me->rec));
    me->rec.role = (uint8_t)rec->role;
    me->rec.draining = rec->draining;
    memcpy(me->rec.grpc, rec->grpc_addr == NULL ? "" : rec->grpc_addr, glen);
    memcpy(me->rec.version, rec->version == NULL ? "" : rec->version, vlen);
    me->rec.load = rec->load;
    me->rec.blob = blob;
    me->rec.blob_len = (uint32_t)rec->blob_len;
    me->rec_version = me->rec_version < s->rec_base ? s->rec_base + 1 : me->rec_version + 1;
    me->last_update_ms = s->now;
    bc_push_state(s, me);
    if (s->io.wake != NULL)
        s->io.wake(s->io.ctx);
    return 0;
}

/* ---- lifecycle ------------------------------------------------------------------------------- */

int qv__swim_init(qv__swim *s, const qv_gossip_config *cfg, const qv_gossip_addr *self_addr,
                  const qv__io *io, uint64_t seed, uint64_t boot_epoch)
{
    memset(s, 0, sizeof(*s));
    s->cfg = *cfg;
    s->cfg.keys = NULL;
    s->cfg.nkeys = 0;
    s->io = *io;
    if (qv__keyring_set(&s->ring, cfg->keys, cfg->nkeys) != 0)
        return QV_EINVAL;
    qv__gossip_rng_seed(s->rng, seed);
    s->hash_seed = qv__gossip_rng_next(s->rng);
    s->boot_epoch = boot_epoch;
    s->rec_base = boot_epoch << 20;
    s->now = io->now_ms(io->ctx);
    s->tx_pt = malloc(cfg->max_packet_bytes);
    s->tx_wire = malloc(cfg->max_packet_bytes);
    s->rx_pt = malloc(cfg->max_packet_bytes);
    if (s->tx_pt == NULL || s->tx_wire == NULL || s->rx_pt == NULL)
        goto fail;
    s->self = member_new(s, cfg->name, self_addr);
    if (s->self == NULL)
        goto fail;
    s->self->is_self = true;
    set_state(s, s->self, QV_GOSSIP_ALIVE);
    s->cfg.name = s->self->name;
    bc_push_alive(s, s->self);
    /* Random phases, so members started together do not probe and gossip in lockstep. */
    s->next_probe_ms = s->now + qv__gossip_rng_below(s->rng, cfg->probe_interval_ms);
    s->next_gossip_ms = s->now + qv__gossip_rng_below(s->rng, cfg->gossip_interval_ms);
    s->next_pp_ms = s->now + cfg->push_pull_interval_ms +
                    qv__gossip_rng_below(s->rng, cfg->push_pull_interval_ms);
    s->next_reconnect_ms = s->now + cfg->reconnect_interval_ms +
                           qv__gossip_rng_below(s->rng, cfg->reconnect_interval_ms);
    s->next_reap_ms = s->now + REAP_MS;
    s->next_join_ms = NEVER;
    s->next_pull_ms = s->now;
    return 0;
fail:
    qv__swim_destroy(s);
    return QV_ERESOURCE;
}

void qv__swim_destroy(qv__swim *s)
{
    for (size_t i = 0; i < s->nmembers; i++)
        member_free(s, s->members[i]);
    free(s->members);
    free(s->index);
    free(s->suspects);
    for (size_t i = 0; i < s->nseeds; i++)
        free(s->seeds[i]);
    free(s->seeds);
    free(s->replay);
    free(s->tx_pt);
    free(s->tx_wire);
    free(s->rx_pt);
    qv__keyring_wipe(&s->ring);
    memset(s, 0, sizeof(*s));
}

/* ---- debug invariant checker ----------------------------------------------------------------- */

#ifdef QV_DEBUG_CHECKS
void qv__swim_check(const qv__swim *s)
{
    size_t live = 0, suspects = 0, bcasts = 0;
    assert(s->self != NULL && s->self->is_self && "self is a member");
    assert(s->index_cap >= 2 * s->nmembers && "index load factor at most one half");
    for (size_t i = 0; i < s->nmembers; i++) {
        const qv__member *m = s->members[i];
        assert(qv__swim_find(s, m->name) == m && "every member is found by name");
        assert(m->state >= QV_GOSSIP_ALIVE && m->state <= QV_GOSSIP_LEFT && "valid state");
        live += is_live(m->state);
        suspects += m->state == QV_GOSSIP_SUSPECT;
        assert((m->state != QV_GOSSIP_SUSPECT || m->susp_deadline_ms >= m->susp_start_ms) &&
               "suspicion deadline after its start");
        assert((m->state != QV_GOSSIP_SUSPECT || m->susp_n <= m->susp_k) &&
               "no more confirmations than expected");
        for (int c = 0; c < 2; c++)
            assert((m->bc[c] == NULL || (m->bc[c]->about == m && m->bc[c]->cls == c)) &&
                   "broadcast back-pointers agree");
    }
    assert(live == s->nlive && "live count matches the table");
    assert(suspects == s->nsuspects && "every suspect is on the suspects list");
    for (size_t i = 0; i < s->nsuspects; i++)
        assert(s->suspects[i]->state == QV_GOSSIP_SUSPECT && "suspects list holds suspects");
    for (int lvl = 0; lvl < QV__BC_LEVELS; lvl++)
        for (const qv__bcast *b = s->levels[lvl]; b != NULL; b = b->next) {
            assert(b->transmits == (uint32_t)lvl && "broadcast sits on its transmit level");
            assert((b->next == NULL || b->next->prev == b) && "broadcast list links agree");
            assert(b->about->bc[b->cls] == b && "one queued broadcast per member and class");
            bcasts++;
        }
    assert(bcasts == s->nbcast && "broadcast count matches the queue");
}
#endif
