/*
 * The Lifeguard arithmetic: suspicion timeouts (memberlist's formulas, with the numbers checked by
 * hand), retransmit limits, push-pull scaling and the documented detection bound; config
 * validation.
 */
#include "gossip_fixture.h"

#include "common/gossip/gossip_internal.h"

Test(lifeguard, suspicion_timeouts_follow_memberlist)
{
    qv_gossip_config cfg = {0};
    /* n = 64: min = 4 * log10(64) * 1 s = 7.224 s, max = 6 * min = 43.344 s, k = 2. */
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 64, 0), 43344);
    /* One confirmation: max - log(2)/log(3) * (max - min) = 20554.8 ms, floored. */
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 64, 1), 20554);
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 64, 2), 7224);
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 64, 9), 7224, "never below the minimum");
    /* Up to 10 members log10 n <= 1: min is 4 s, max 24 s. */
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 8, 0), 24000);
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 8, 2), 4000);
    /* Too few members to ever get k = 2 confirmations: straight to the minimum. */
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 3, 0), 4000);
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 4, 0), 24000);
    /* 1,024 members: min = 4 * 3.010 s (memberlist keeps three decimals of log10 n). */
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&cfg, 1024, 2), 12040);
    /* The timeout never grows with confirmations. */
    for (uint32_t n = 5; n <= 1000; n = n * 3 / 2)
        for (uint32_t c = 0; c < 3; c++)
            cr_expect_geq(qv_gossip_suspicion_timeout_ms(&cfg, n, c),
                          qv_gossip_suspicion_timeout_ms(&cfg, n, c + 1));
    qv_gossip_config fast = {.probe_interval_ms = 200, .suspicion_mult = 6};
    cr_expect_eq(qv_gossip_suspicion_timeout_ms(&fast, 100, 4), 6 * 2 * 200);
}

Test(lifeguard, remaining_time_formula)
{
    cr_expect_eq(qv__susp_remaining_ms(0, 3, 1000, 6000), 6000);
    cr_expect_eq(qv__susp_remaining_ms(3, 3, 1000, 6000), 1000);
    /* log(2)/log(4) = 0.5: halfway. */
    cr_expect_eq(qv__susp_remaining_ms(1, 3, 1000, 6000), 3500);
    cr_expect_eq(qv__susp_remaining_ms(5, 0, 1000, 6000), 1000, "k = 0 is the minimum");
}

Test(lifeguard, retransmit_limit_scales_with_log_n)
{
    qv_gossip_config cfg = {0};
    qv_gossip_config_default(&cfg);
    cr_expect_eq(qv__retransmit_limit(&cfg, 1), 4);
    cr_expect_eq(qv__retransmit_limit(&cfg, 9), 4);
    cr_expect_eq(qv__retransmit_limit(&cfg, 10), 8);
    cr_expect_eq(qv__retransmit_limit(&cfg, 64), 8);
    cr_expect_eq(qv__retransmit_limit(&cfg, 1024), 16);
}

Test(lifeguard, detection_bound_is_documented_formula)
{
    qv_gossip_config cfg = {0};
    /* 4 * 1 s + 24 s + 4 * 200 ms */
    cr_expect_eq(qv_gossip_detection_bound_ms(&cfg, 8), 4000 + 24000 + 800);
    /* 4 * 1 s + 43.344 s + 8 * 200 ms */
    cr_expect_eq(qv_gossip_detection_bound_ms(&cfg, 64), 4000 + 43344 + 1600);
}

Test(lifeguard, config_defaults_and_validation)
{
    qv_gossip_key k = fx_key(1);
    qv_gossip_config cfg = {.name = "ok", .keys = &k, .nkeys = 1};
    qv_status err;
    cr_assert_eq(qv__config_check(&cfg, &err), 0, "%s", err.msg);
    cr_expect_eq(cfg.probe_interval_ms, 1000);
    cr_expect_eq(cfg.probe_timeout_ms, 500);
    cr_expect_eq(cfg.indirect_checks, 3);
    cr_expect_eq(cfg.suspicion_mult, 4);
    cr_expect_eq(cfg.max_packet_bytes, 1400);
    qv_gossip_config bad;
    bad = (qv_gossip_config){.name = "has space", .keys = &k, .nkeys = 1};
    cr_expect_eq(qv__config_check(&bad, &err), QV_EINVAL);
    bad = (qv_gossip_config){.name = "ok"};
    cr_expect_eq(qv__config_check(&bad, &err), QV_EINVAL, "no key");
    cr_expect(strstr(err.msg, "key") != NULL, "%s", err.msg);
    bad = (qv_gossip_config){
        .name = "ok", .keys = &k, .nkeys = 1, .probe_interval_ms = 500, .probe_timeout_ms = 500};
    cr_expect_eq(qv__config_check(&bad, &err), QV_EINVAL, "timeout not below interval");
    bad = (qv_gossip_config){.name = "ok", .keys = &k, .nkeys = 1, .max_packet_bytes = 100};
    cr_expect_eq(qv__config_check(&bad, &err), QV_EINVAL, "tiny datagrams");
    char longname[80];
    memset(longname, 'a', sizeof(longname) - 1);
    longname[79] = '\0';
    bad = (qv_gossip_config){.name = longname, .keys = &k, .nkeys = 1};
    cr_expect_eq(qv__config_check(&bad, &err), QV_EINVAL, "name too long");
    cr_expect_str_eq(qv_gossip_state_name(QV_GOSSIP_SUSPECT), "SUSPECT");
    cr_expect_str_eq(qv_gossip_drop_name(QV_GOSSIP_DROP_REPLAY), "replay");
    cr_expect_str_eq(qv_gossip_event_name(QV_GOSSIP_EV_LEAVE), "leave");
}
