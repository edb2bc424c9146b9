/*
 * tests/gossip/gossip_fixture.h - helpers shared by the gossip suites.
 *
 * - fx_key(): a deterministic cluster key per small integer.
 * - fx_cfg(): a config with one key and the defaults.
 * - fx_cluster: n simulated members "m00".."mNN" (member 0 is the seed everybody joins through),
 *   plus an event log per observer filled by a subscriber (who saw what about whom, when).
 * - fx_converged(): every member that is not killed sees exactly the expected live members ALIVE.
 * - fx_expect_no_leaks(): Criterion ignores LeakSanitizer at exit, so allocating tests end with
 *   an explicit leak check, as tests/rpc/rpc_fixture.h does.
 *
 * Everything is static inline so each suite uses what it needs without unused-function warnings.
 */
#ifndef QV_TESTS_GOSSIP_FIXTURE_H
#define QV_TESTS_GOSSIP_FIXTURE_H

#include <criterion/criterion.h>

#include "common/gossip/gossip.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#define FX_HAVE_LSAN 1
#endif

static inline void fx_expect_no_leaks(void)
{
#ifdef FX_HAVE_LSAN
    cr_expect_eq(__lsan_do_recoverable_leak_check(), 0, "LeakSanitizer found leaks (see stderr)");
#endif
}

static inline qv_gossip_key fx_key(int which)
{
    qv_gossip_key k;
    for (int i = 0; i < QV_GOSSIP_KEY_BYTES; i++)
        k.bytes[i] = (uint8_t)(which * 31 + i * 7 + 1);
    return k;
}

#define FX_MAX_MEMBERS 128
#define FX_MAX_EVENTS  200000

typedef struct fx_event {
    int observer;
    int type;
    int subject; /* member index, -1 if not one of ours */
    uint64_t inc;
    uint64_t at_ms;
} fx_event;

typedef struct fx_cluster {
    qv_gossip_sim *sim;
    int n;
    qv_gossip *g[FX_MAX_MEMBERS];
    char names[FX_MAX_MEMBERS][16];
    bool killed[FX_MAX_MEMBERS];
    bool gone[FX_MAX_MEMBERS]; /* killed or left: expected not ALIVE */
    qv_gossip_key keys[QV_GOSSIP_KEYRING_MAX];
    size_t nkeys;
    qv_gossip_config base;
    fx_event *ev;
    size_t nev;
    struct fx_sub {
        struct fx_cluster *c;
        int observer;
    } subs[FX_MAX_MEMBERS];
} fx_cluster;

static inline int fx_index(const fx_cluster *c, const char *name)
{
    if (name[0] != 'm')
        return -1;
    int i = atoi(name + 1);
    return i >= 0 && i < c->n && strcmp(c->names[i], name) == 0 ? i : -1;
}

static inline void fx_on_event(const qv_gossip_event *ev, void *user)
{
    struct fx_sub *s = user;
    fx_cluster *c = s->c;
    if (c->nev >= FX_MAX_EVENTS)
        return;
    c->ev[c->nev++] = (fx_event){.observer = s->observer,
                                 .type = ev->type,
                                 .subject = fx_index(c, ev->member->name),
                                 .inc = ev->member->incarnation,
                                 .at_ms = ev->at_ms};
}

/* Creates n members (not joined yet). base may be NULL for defaults. */
static inline void fx_cluster_init(fx_cluster *c, int n, uint64_t seed, double loss,
                                   const qv_gossip_config *base)
{
    cr_assert(n <= FX_MAX_MEMBERS, "at most %d members", FX_MAX_MEMBERS);
    memset(c, 0, sizeof(*c));
    qv_gossip_sim_opts so = {.seed = seed, .loss = loss};
    cr_assert_eq(qv_gossip_sim_create(&so, &c->sim), 0);
    c->ev = calloc(FX_MAX_EVENTS, sizeof(*c->ev));
    cr_assert_not_null(c->ev);
    c->keys[0] = fx_key(1);
    c->nkeys = 1;
    if (base != NULL)
        c->base = *base;
    c->n = n;
    for (int i = 0; i < n; i++) {
        snprintf(c->names[i], sizeof(c->names[i]), "m%02d", i);
        qv_gossip_config cfg = c->base;
        cfg.name = c->names[i];
        cfg.keys = c->keys;
        cfg.nkeys = c->nkeys;
        int rc = qv_gossip_sim_add(c->sim, &cfg, &c->g[i]);
        cr_assert_eq(rc, 0, "sim_add %d: %d", i, rc);
        c->subs[i] = (struct fx_sub){.c = c, .observer = i};
        cr_assert_eq(qv_gossip_subscribe(c->g[i], fx_on_event, &c->subs[i], NULL), 0);
    }
}

/* Every member (but the seed) joins through member 0. */
static inline void fx_join_all(fx_cluster *c)
{
    char seed[QV_GOSSIP_ADDR_STRLEN];
    qv_gossip_addr a = qv_gossip_local_addr(c->g[0]);
    qv_gossip_addr_format(&a, seed, sizeof(seed));
    const char *seeds[] = {seed};
    for (int i = 1; i < c->n; i++)
        cr_assert_eq(qv_gossip_join(c->g[i], seeds, 1, NULL), 0);
}

static inline void fx_cluster_free(fx_cluster *c)
{
    qv_gossip_sim_destroy(c->sim);
    free(c->ev);
    c->ev = NULL;
}

/* The state member `observer` holds about member `subject` (0 if unknown). */
static inline int fx_state(fx_cluster *c, int observer, int subject)
{
    qv_gossip_member *m = NULL;
    size_t n = 0;
    int st = 0;
    cr_assert_eq(qv_gossip_members(c->g[observer], true, &m, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, c->names[subject]) == 0)
            st = m[i].state;
    qv_gossip_members_free(m, n);
    return st;
}

/* True when every member not killed sees every member not gone ALIVE, and knows nobody else
 * as ALIVE. */
static inline bool fx_converged(fx_cluster *c)
{
    int want = 0;
    for (int i = 0; i < c->n; i++)
        want += !c->gone[i];
    for (int o = 0; o < c->n; o++) {
        if (c->killed[o] || c->gone[o])
            continue;
        qv_gossip_member *m = NULL;
        size_t n = 0;
        cr_assert_eq(qv_gossip_members(c->g[o], false, &m, &n), 0);
        int alive = 0;
        bool ok = true;
        for (size_t i = 0; i < n; i++) {
            int s = fx_index(c, m[i].name);
            if (m[i].state == QV_GOSSIP_ALIVE) {
                alive++;
                ok = ok && s >= 0 && !c->gone[s];
            }
        }
        qv_gossip_members_free(m, n);
        if (!ok || alive != want)
            return false;
    }
    return true;
}

/* Runs the simulator in steps of step_ms until fx_converged or limit_ms passed; returns the
 * virtual time it took, or UINT64_MAX. */
static inline uint64_t fx_run_until_converged(fx_cluster *c, uint64_t limit_ms, uint64_t step_ms)
{
    uint64_t start = qv_gossip_sim_now_ms(c->sim);
    while (qv_gossip_sim_now_ms(c->sim) - start < limit_ms) {
        qv_gossip_sim_run_for(c->sim, step_ms);
        if (fx_converged(c))
            return qv_gossip_sim_now_ms(c->sim) - start;
    }
    return UINT64_MAX;
}

/* Counts logged events of a type about a subject (-1: any) after a time. */
static inline size_t fx_count(const fx_cluster *c, int type, int subject, uint64_t since)
{
    size_t k = 0;
    for (size_t i = 0; i < c->nev; i++)
        if (c->ev[i].type == type && (subject < 0 || c->ev[i].subject == subject) &&
            c->ev[i].at_ms >= since)
            k++;
    return k;
}

#endif
