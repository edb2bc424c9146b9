/*
 * Simulation tests of the SWIM + Lifeguard core (common/gossip/sim.c drives real protocol code in
 * virtual time). Every scenario is seeded, so a failure reproduces exactly. Members log at WARN
 * only: a 64-member cluster at INFO would print thousands of lines.
 */
#include "gossip_fixture.h"

#include <inttypes.h>

static void quiet(void)
{
    qv_log_set_level(QV_LOG_WARN);
}

TestSuite(sim, .init = quiet);

Test(sim, sixty_four_members_converge_after_joining_through_one_seed)
{
    fx_cluster c;
    fx_cluster_init(&c, 64, 11, 0.0, NULL);
    fx_join_all(&c);
    uint64_t t = fx_run_until_converged(&c, 60000, 250);
    cr_assert_neq(t, UINT64_MAX, "64 members did not converge within 60 s of virtual time");
    cr_log_info("64 members converged after %" PRIu64 " ms", t);
    cr_expect_eq(fx_count(&c, QV_GOSSIP_EV_DEAD, -1, 0), 0, "nobody was declared dead");
    /* Everybody knows everybody else's address and incarnation 0. */
    qv_gossip_member *m = NULL;
    size_t n = 0;
    cr_assert_eq(qv_gossip_members(c.g[40], false, &m, &n), 0);
    cr_expect_eq(n, 64);
    for (size_t i = 0; i < n; i++) {
        int s = fx_index(&c, m[i].name);
        cr_assert_geq(s, 0);
        qv_gossip_addr want = qv_gossip_local_addr(c.g[s]);
        cr_expect(qv_gossip_addr_equal(&m[i].addr, &want), "address of %s", m[i].name);
        cr_expect_eq(m[i].is_self, s == 40);
    }
    qv_gossip_members_free(m, n);
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, killed_member_is_declared_dead_by_every_member_within_the_bound)
{
    fx_cluster c;
    fx_cluster_init(&c, 64, 12, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 60000, 250), UINT64_MAX);
    qv_gossip_sim_run_for(c.sim, 5000);
    int victim = 17;
    uint64_t t0 = qv_gossip_sim_now_ms(c.sim);
    qv_gossip_sim_kill(c.sim, c.g[victim]);
    c.killed[victim] = c.gone[victim] = true;
    uint64_t bound = qv_gossip_detection_bound_ms(&c.base, 64);
    uint64_t first = UINT64_MAX, last = 0;
    bool seen[FX_MAX_MEMBERS] = {0};
    int seen_n = 0;
    while (qv_gossip_sim_now_ms(c.sim) - t0 <= bound + 5000 && seen_n < 63) {
        qv_gossip_sim_run_for(c.sim, 100);
        for (size_t i = 0; i < c.nev; i++) {
            const fx_event *e = &c.ev[i];
            if (e->type == QV_GOSSIP_EV_DEAD && e->subject == victim && !seen[e->observer]) {
                seen[e->observer] = true;
                seen_n++;
                first = e->at_ms < first ? e->at_ms : first;
                last = e->at_ms > last ? e->at_ms : last;
            }
        }
    }
    cr_assert_eq(seen_n, 63, "only %d of 63 members declared the killed member dead", seen_n);
    cr_log_info("detected after %" PRIu64 " ms, everyone by %" PRIu64 " ms (bound %" PRIu64 ")",
                first - t0, last - t0, bound);
    cr_expect_leq(last - t0, bound, "everyone knew after %" PRIu64 " ms, bound %" PRIu64, last - t0,
                  bound);
    /* With 62 other probers the timeout shrinks to its minimum: far below the bound. */
    cr_expect_leq(first - t0, 2 * 1000 + qv_gossip_suspicion_timeout_ms(&c.base, 64, 2) + 2000);
    cr_expect(fx_converged(&c), "the survivors agree");
    cr_expect_eq(fx_count(&c, QV_GOSSIP_EV_DEAD, -1, 0), 63, "nobody else died");
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, no_healthy_member_is_declared_dead_at_ten_percent_loss_over_1000_periods)
{
    fx_cluster c;
    fx_cluster_init(&c, 64, 13, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 60000, 250), UINT64_MAX);
    uint64_t t0 = qv_gossip_sim_now_ms(c.sim);
    qv_gossip_sim_set_loss(c.sim, 0.10);
    qv_gossip_sim_run_for(c.sim, 1000 * 1000); /* 1,000 probe periods */
    size_t dead = fx_count(&c, QV_GOSSIP_EV_DEAD, -1, t0);
    size_t suspects = fx_count(&c, QV_GOSSIP_EV_SUSPECT, -1, t0);
    uint64_t probes = 0, refutes = 0;
    for (int i = 0; i < c.n; i++) {
        qv_gossip_stats st;
        qv_gossip_get_stats(c.g[i], &st);
        probes += st.probes;
        refutes += st.refutations;
    }
    cr_log_info("10%% loss, 1000 periods: %" PRIu64 " probes, %zu suspect events, %" PRIu64
                " refutations, %zu deaths",
                probes, suspects, refutes, dead);
    cr_expect_eq(dead, 0, "%zu false deaths", dead);
    cr_expect_gt(suspects, 0, "the loss should have caused some suspicions to refute");
    cr_expect_gt(refutes, 0);
    cr_expect_geq(probes, 60000, "about one probe per member per period");
    qv_gossip_sim_set_loss(c.sim, 0.0);
    cr_expect_neq(fx_run_until_converged(&c, 30000, 500), UINT64_MAX);
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, members_converge_to_one_view_after_a_partition_is_lifted)
{
    fx_cluster c;
    fx_cluster_init(&c, 32, 14, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 60000, 250), UINT64_MAX);
    for (int i = 0; i < c.n; i++)
        qv_gossip_sim_partition(c.sim, c.g[i], i < 12 ? 1 : 2);
    /* Long enough for each side to declare the other dead. */
    qv_gossip_sim_run_for(c.sim, 90000);
    cr_assert_eq(fx_state(&c, 0, 20), QV_GOSSIP_DEAD, "side 1 sees side 2 dead");
    cr_assert_eq(fx_state(&c, 20, 0), QV_GOSSIP_DEAD, "side 2 sees side 1 dead");
    qv_gossip_sim_heal(c.sim);
    uint64_t t = fx_run_until_converged(&c, 240000, 500);
    cr_assert_neq(t, UINT64_MAX, "no single view 240 s after the partition healed");
    cr_log_info("one view again %" PRIu64 " ms after healing", t);
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, paused_member_refutes_its_suspicion_when_it_resumes)
{
    fx_cluster c;
    fx_cluster_init(&c, 32, 15, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 60000, 250), UINT64_MAX);
    int p = 5;
    uint64_t t0 = qv_gossip_sim_now_ms(c.sim);
    qv_gossip_sim_pause(c.sim, c.g[p]);
    qv_gossip_sim_run_for(c.sim, 4000);
    cr_assert_gt(fx_count(&c, QV_GOSSIP_EV_SUSPECT, p, t0), 0, "the pause went unnoticed");
    qv_gossip_sim_resume(c.sim, c.g[p]);
    qv_gossip_sim_run_for(c.sim, 20000);
    cr_expect_eq(fx_count(&c, QV_GOSSIP_EV_DEAD, p, t0), 0, "the paused member was declared dead");
    cr_expect_gt(fx_count(&c, QV_GOSSIP_EV_ALIVE, p, t0), 0, "nobody saw the refutation");
    qv_gossip_stats st;
    qv_gossip_get_stats(c.g[p], &st);
    cr_expect_geq(st.refutations, 1);
    cr_expect(fx_converged(&c));
    qv_gossip_member *m = NULL;
    size_t n = 0;
    cr_assert_eq(qv_gossip_members(c.g[0], false, &m, &n), 0);
    for (size_t i = 0; i < n; i++)
        if (strcmp(m[i].name, c.names[p]) == 0)
            cr_expect_geq(m[i].incarnation, 1, "refuting raised its incarnation");
    qv_gossip_members_free(m, n);
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, member_that_leaves_is_seen_as_left_not_dead)
{
    fx_cluster c;
    fx_cluster_init(&c, 16, 16, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 30000, 250), UINT64_MAX);
    int l = 3;
    uint64_t t0 = qv_gossip_sim_now_ms(c.sim);
    cr_assert_eq(qv_gossip_leave(c.g[l], 0), 0);
    cr_expect_eq(qv_gossip_leave(c.g[l], 0), QV_EPRECONDITION, "leaving twice");
    qv_gossip_sim_run_for(c.sim, 2000);
    qv_gossip_sim_kill(c.sim, c.g[l]); /* the process exits after leaving */
    c.killed[l] = c.gone[l] = true;
    qv_gossip_sim_run_for(c.sim, 60000);
    for (int o = 0; o < c.n; o++)
        if (o != l)
            cr_expect_eq(fx_state(&c, o, l), QV_GOSSIP_LEFT, "member %d sees %s", o,
                         qv_gossip_state_name(fx_state(&c, o, l)));
    cr_expect_eq(fx_count(&c, QV_GOSSIP_EV_LEAVE, l, t0), 15);
    cr_expect_eq(fx_count(&c, QV_GOSSIP_EV_DEAD, l, t0), 0);
    size_t alive, total;
    qv_gossip_counts(c.g[0], &alive, &total);
    cr_expect_eq(alive, 15);
    cr_expect_eq(total, 15, "LEFT members are not counted");
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, state_records_reach_every_member_small_by_piggyback_large_by_push_pull)
{
    fx_cluster c;
    fx_cluster_init(&c, 16, 17, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 30000, 250), UINT64_MAX);
    uint8_t big[6000];
    for (size_t i = 0; i < sizeof(big); i++)
        big[i] = (uint8_t)(i * 13 + 5);
    for (int i = 0; i < c.n; i++) {
        char grpc[32];
        snprintf(grpc, sizeof(grpc), "10.1.0.%d:7070", i);
        uint8_t small[8] = {(uint8_t)i, 1, 2, 3};
        qv_gossip_record r = {.role = i == 0 ? QV_GOSSIP_ROLE_ROUTER : QV_GOSSIP_ROLE_NODE,
                              .grpc_addr = grpc,
                              .version = "0.1.0",
                              .load = {.cpu = 0.25f, .replicas = (uint32_t)i},
                              .blob = i == 9 ? big : small,
                              .blob_len = i == 9 ? sizeof(big) : sizeof(small)};
        cr_assert_eq(qv_gossip_set_record(c.g[i], &r), 0);
    }
    qv_gossip_record bad = {.version = "a version string far too long to fit"};
    cr_expect_eq(qv_gossip_set_record(c.g[1], &bad), QV_EINVAL);
    qv_gossip_sim_run_for(c.sim, 15000);
    uint64_t version[16];
    for (int i = 0; i < c.n; i++) {
        qv_gossip_member *m = NULL;
        size_t n = 0;
        cr_assert_eq(qv_gossip_members(c.g[i], false, &m, &n), 0);
        for (size_t j = 0; j < n; j++)
            if (m[j].is_self)
                version[i] = m[j].record_version;
        qv_gossip_members_free(m, n);
        cr_assert_gt(version[i], 0);
    }
    for (int o = 0; o < c.n; o++) {
        qv_gossip_member *m = NULL;
        size_t n = 0;
        cr_assert_eq(qv_gossip_members(c.g[o], false, &m, &n), 0);
        cr_assert_eq(n, 16);
        for (size_t i = 0; i < n; i++) {
            int s = fx_index(&c, m[i].name);
            char grpc[32];
            snprintf(grpc, sizeof(grpc), "10.1.0.%d:7070", s);
            cr_expect_eq(m[i].record_version, version[s], "%d sees %d at version %" PRIu64, o, s,
                         m[i].record_version);
            cr_expect_str_eq(m[i].grpc_addr, grpc);
            cr_expect_eq(m[i].role, s == 0 ? QV_GOSSIP_ROLE_ROUTER : QV_GOSSIP_ROLE_NODE);
            cr_expect_eq(m[i].load.replicas, (uint32_t)s);
            cr_expect(!m[i].blob_stale, "%d: blob of %d still stale", o, s);
            if (s == 9) {
                cr_expect_eq(m[i].blob_len, sizeof(big));
                cr_expect(m[i].blob && memcmp(m[i].blob, big, sizeof(big)) == 0);
            } else {
                cr_expect_eq(m[i].blob_len, 8);
                cr_expect(m[i].blob && m[i].blob[0] == (uint8_t)s);
            }
        }
        qv_gossip_members_free(m, n);
    }
    cr_expect_geq(fx_count(&c, QV_GOSSIP_EV_STATE, 9, 0), 15);
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

/* A digest of a run: the event log and every member's counters. */
static uint64_t run_digest(uint64_t seed)
{
    fx_cluster c;
    fx_cluster_init(&c, 12, seed, 0.05, NULL);
    fx_join_all(&c);
    qv_gossip_sim_run_for(c.sim, 20000);
    qv_gossip_sim_kill(c.sim, c.g[4]);
    qv_gossip_sim_pause(c.sim, c.g[7]);
    qv_gossip_sim_run_for(c.sim, 3000);
    qv_gossip_sim_resume(c.sim, c.g[7]);
    qv_gossip_sim_run_for(c.sim, 30000);
    uint64_t h = 1469598103934665603ull;
    for (size_t i = 0; i < c.nev; i++) {
        uint64_t v[5] = {(uint64_t)c.ev[i].observer, (uint64_t)c.ev[i].type,
                         (uint64_t)(int64_t)c.ev[i].subject, c.ev[i].inc, c.ev[i].at_ms};
        for (int j = 0; j < 5; j++)
            h = (h ^ v[j]) * 1099511628211ull;
    }
    for (int i = 0; i < c.n; i++) {
        qv_gossip_stats st;
        qv_gossip_get_stats(c.g[i], &st);
        h = (h ^ st.packets_sent) * 1099511628211ull;
        h = (h ^ st.bytes_received) * 1099511628211ull;
    }
    fx_cluster_free(&c);
    return h;
}

Test(sim, same_seed_gives_the_same_run)
{
    uint64_t a = run_digest(99), b = run_digest(99), other = run_digest(100);
    cr_expect_eq(a, b, "two runs with seed 99 differ");
    cr_expect_neq(a, other, "seeds 99 and 100 gave identical runs");
    fx_expect_no_leaks();
}

Test(sim, member_with_another_key_is_never_admitted)
{
    fx_cluster c;
    fx_cluster_init(&c, 8, 18, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 30000, 250), UINT64_MAX);
    qv_gossip_key other = fx_key(2);
    qv_gossip_config cfg = {.name = "intruder", .keys = &other, .nkeys = 1};
    qv_gossip *x = NULL;
    cr_assert_eq(qv_gossip_sim_add(c.sim, &cfg, &x), 0);
    char seed[QV_GOSSIP_ADDR_STRLEN];
    qv_gossip_addr a = qv_gossip_local_addr(c.g[0]);
    const char *seeds[] = {qv_gossip_addr_format(&a, seed, sizeof(seed))};
    cr_assert_eq(qv_gossip_join(x, seeds, 1, NULL), 0);
    qv_gossip_sim_run_for(c.sim, 20000);
    size_t alive, total;
    qv_gossip_counts(c.g[0], &alive, &total);
    cr_expect_eq(total, 8, "the intruder got in");
    qv_gossip_counts(x, &alive, &total);
    cr_expect_eq(total, 1, "the intruder learned the members");
    qv_gossip_stats st;
    qv_gossip_get_stats(c.g[0], &st);
    cr_expect_gt(st.dropped[QV_GOSSIP_DROP_UNKNOWN_KEY], 0, "the seed counted the attempts");
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, key_rotation_keeps_the_cluster_whole)
{
    fx_cluster c;
    fx_cluster_init(&c, 8, 19, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 30000, 250), UINT64_MAX);
    uint64_t t0 = qv_gossip_sim_now_ms(c.sim);
    qv_gossip_key a = fx_key(1), b = fx_key(2);
    qv_gossip_key step1[] = {a, b}, step2[] = {b, a}, step3[] = {b};
    /* One member at a time, with time passing in between, as an operator would. */
    for (int i = 0; i < c.n; i++) {
        cr_assert_eq(qv_gossip_set_keys(c.g[i], step1, 2), 0);
        qv_gossip_sim_run_for(c.sim, 500);
    }
    for (int i = 0; i < c.n; i++) {
        cr_assert_eq(qv_gossip_set_keys(c.g[i], step2, 2), 0);
        qv_gossip_sim_run_for(c.sim, 500);
    }
    for (int i = 0; i < c.n; i++) {
        cr_assert_eq(qv_gossip_set_keys(c.g[i], step3, 1), 0);
        qv_gossip_sim_run_for(c.sim, 500);
    }
    qv_gossip_sim_run_for(c.sim, 10000);
    cr_expect_eq(fx_count(&c, QV_GOSSIP_EV_SUSPECT, -1, t0), 0, "rotation caused suspicions");
    cr_expect(fx_converged(&c));
    cr_expect_eq(qv_gossip_set_keys(c.g[0], step3, 0), QV_EINVAL, "an empty keyring");
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}

Test(sim, local_health_slows_down_a_member_whose_link_drops_packets)
{
    fx_cluster c;
    fx_cluster_init(&c, 12, 20, 0.0, NULL);
    fx_join_all(&c);
    cr_assert_neq(fx_run_until_converged(&c, 30000, 250), UINT64_MAX);
    qv_gossip_stats before_bad, before_good, after_bad, after_good;
    qv_gossip_get_stats(c.g[6], &before_bad);
    qv_gossip_get_stats(c.g[7], &before_good);
    qv_gossip_sim_set_link_loss(c.sim, c.g[6], 0.6);
    uint32_t max_health = 0;
    for (int i = 0; i < 60; i++) {
        qv_gossip_sim_run_for(c.sim, 1000);
        qv_gossip_stats st;
        qv_gossip_get_stats(c.g[6], &st);
        max_health = st.health_score > max_health ? st.health_score : max_health;
    }
    qv_gossip_get_stats(c.g[6], &after_bad);
    qv_gossip_get_stats(c.g[7], &after_good);
    uint64_t probes_bad = after_bad.probes - before_bad.probes;
    uint64_t probes_good = after_good.probes - before_good.probes;
    cr_log_info("60 s at 60%% link loss: health up to %u, %" PRIu64 " probes vs %" PRIu64,
                max_health, probes_bad, probes_good);
    cr_expect_geq(max_health, 2, "the lossy member never noticed its own trouble");
    cr_expect_lt(probes_bad * 3, probes_good * 2, "the lossy member did not slow down");
    cr_expect_eq(after_good.health_score, 0, "a healthy member stays healthy");
    fx_cluster_free(&c);
    fx_expect_no_leaks();
}
