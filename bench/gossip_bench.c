/* quiver-bench gossip: failure detection and cost of SWIM + Lifeguard (common/gossip) in the
 * deterministic simulator, at cluster sizes from 8 to 1,024 members, in virtual time.
 *
 * For each size: n members join through one seed and converge; the steady state is measured for
 * --steady-s (datagrams and bytes sent per member per second, push-pull included); then the
 * network drops --fp-loss of all datagrams for --fp-periods probe periods and every DEAD
 * declaration (all members are alive) counts as a false positive; finally --trials times a random
 * member is killed and the time until the first member and until every live member declares it
 * dead is recorded (and, per observer, the time each one learned it). Latency is uniform in
 * 1..5 ms.
 * One JSON line per size on stdout, a table on stderr. */
#include "bench/bench.h"
#include "common/common.h"
#include "common/gossip/gossip.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct dead_ev {
    uint32_t observer, subject;
    uint64_t at;
} dead_ev;

typedef struct bench_run {
    qv_gossip_sim *sim;
    qv_gossip **g;
    char (*names)[24];
    bool *killed;
    uint32_t *observer_of; /* user pointers for the subscriptions */
    size_t n;
    dead_ev *dead;
    size_t ndead, capdead;
} bench_run;

static bench_run *g_run; /* the subscription callback's context (one run at a time) */

static void on_event(const qv_gossip_event *ev, void *user)
{
    bench_run *r = g_run;
    if (ev->type != QV_GOSSIP_EV_DEAD || r == NULL)
        return;
    if (r->ndead == r->capdead) {
        size_t cap = r->capdead == 0 ? 1024 : r->capdead * 2;
        dead_ev *p = realloc(r->dead, cap * sizeof(*p));
        if (p == NULL)
            return;
        r->dead = p;
        r->capdead = cap;
    }
    r->dead[r->ndead++] = (dead_ev){.observer = *(const uint32_t *)user,
                                    .subject = (uint32_t)atoi(ev->member->name + 1),
                                    .at = ev->at_ms};
}

static double pct(uint64_t *v, size_t n, double q)
{
    if (n == 0)
        return NAN;
    qsort(v, n, sizeof(*v), qv_bench_cmp_u64);
    size_t i = (size_t)ceil(q * (double)n);
    return (double)v[i == 0 ? 0 : i - 1];
}

static bool converged(bench_run *r, size_t live)
{
    for (size_t i = 0; i < r->n; i++) {
        if (r->killed[i])
            continue;
        size_t alive = 0;
        qv_gossip_counts(r->g[i], &alive, NULL);
        if (alive != live)
            return false;
    }
    return true;
}

static void totals(bench_run *r, uint64_t *packets, uint64_t *bytes, uint64_t *suspicions)
{
    *packets = *bytes = *suspicions = 0;
    for (size_t i = 0; i < r->n; i++) {
        qv_gossip_stats st;
        qv_gossip_get_stats(r->g[i], &st);
        *packets += st.packets_sent;
        *bytes += st.bytes_sent;
        *suspicions += st.suspicions_raised;
    }
}

static void run_free(bench_run *r)
{
    qv_gossip_sim_destroy(r->sim);
    free(r->g);
    free(r->names);
    free(r->killed);
    free(r->observer_of);
    free(r->dead);
    memset(r, 0, sizeof(*r));
}

/* One cluster size. Returns 0, or a negative code. */
static int bench_size(size_t n, uint64_t seed, unsigned trials, double loss, double fp_loss,
                      uint64_t fp_periods, uint64_t steady_s)
{
    bench_run r = {.n = n};
    g_run = &r;
    int rc = QV_ERESOURCE;
    qv_gossip_sim_opts so = {.seed = seed, .loss = 0.0};
    if (qv_gossip_sim_create(&so, &r.sim) != 0)
        return QV_ERESOURCE;
    r.g = calloc(n, sizeof(*r.g));
    r.names = calloc(n, sizeof(*r.names));
    r.killed = calloc(n, sizeof(*r.killed));
    r.observer_of = calloc(n, sizeof(*r.observer_of));
    uint64_t *first = calloc(trials + 1, sizeof(uint64_t));
    uint64_t *all = calloc(trials + 1, sizeof(uint64_t));
    uint64_t *per_observer = calloc((size_t)(trials + 1) * n, sizeof(uint64_t));
    if (r.g == NULL || r.names == NULL || r.killed == NULL || r.observer_of == NULL ||
        first == NULL || all == NULL || per_observer == NULL)
        goto out;
    qv_gossip_key key;
    for (int i = 0; i < QV_GOSSIP_KEY_BYTES; i++)
        key.bytes[i] = (uint8_t)(i * 37 + 11);
    for (size_t i = 0; i < n; i++) {
        snprintf(r.names[i], sizeof(r.names[i]), "m%04zu", i);
        qv_gossip_config cfg = {.name = r.names[i], .keys = &key, .nkeys = 1};
        r.observer_of[i] = (uint32_t)i;
        if ((rc = qv_gossip_sim_add(r.sim, &cfg, &r.g[i])) != 0 ||
            (rc = qv_gossip_subscribe(r.g[i], on_event, &r.observer_of[i], NULL)) != 0)
            goto out;
    }
    char seed_addr[QV_GOSSIP_ADDR_STRLEN];
    qv_gossip_addr a0 = qv_gossip_local_addr(r.g[0]);
    const char *seeds[] = {qv_gossip_addr_format(&a0, seed_addr, sizeof(seed_addr))};
    for (size_t i = 1; i < n; i++)
        qv_gossip_join(r.g[i], seeds, 1, NULL);
    uint64_t t0 = qv_gossip_sim_now_ms(r.sim), converge_ms = UINT64_MAX;
    while (qv_gossip_sim_now_ms(r.sim) - t0 < 300000) {
        qv_gossip_sim_run_for(r.sim, 500);
        if (converged(&r, n)) {
            converge_ms = qv_gossip_sim_now_ms(r.sim) - t0;
            break;
        }
    }
    /* Let the join's burst of broadcasts drain before measuring the steady state. */
    qv_gossip_sim_run_for(r.sim, 10000);
    uint64_t p0, b0, s0, p1, b1, s1;
    totals(&r, &p0, &b0, &s0);
    qv_gossip_sim_run_for(r.sim, steady_s * 1000);
    totals(&r, &p1, &b1, &s1);
    double pkts_ms = (double)(p1 - p0) / (double)n / (double)steady_s;
    double bytes_ms = (double)(b1 - b0) / (double)n / (double)steady_s;

    /* False positives under loss, on the whole cluster. */
    qv_gossip_sim_set_loss(r.sim, fp_loss);
    size_t fp_from = r.ndead;
    totals(&r, &p0, &b0, &s0);
    qv_gossip_sim_run_for(r.sim, fp_periods * 1000);
    totals(&r, &p1, &b1, &s1);
    size_t false_deaths = r.ndead - fp_from; /* nobody was killed yet: every death is false */
    double hours = (double)fp_periods / 3600.0;
    double fp_rate = (double)false_deaths / ((double)n * hours);
    double susp_rate = (double)(s1 - s0) / ((double)n * hours);
    double pkts_loss = (double)(p1 - p0) / (double)n / (double)fp_periods;
    qv_gossip_sim_set_loss(r.sim, 0.0);
    qv_gossip_sim_run_for(r.sim, 30000); /* let refutations settle before killing anyone */

    /* Detection. */
    qv_gossip_config defaults = {0};
    uint64_t bound = qv_gossip_detection_bound_ms(&defaults, n);
    qv_gossip_sim_set_loss(r.sim, loss);
    size_t nobs = 0, live = n;
    unsigned done = 0, missed = 0;
    uint64_t rng = seed * 0x9e3779b97f4a7c15ull + n;
    for (unsigned t = 0; t < trials && live > 2; t++) {
        size_t victim;
        do {
            rng = rng * 6364136223846793005ull + 1442695040888963407ull;
            victim = 1 + (size_t)((rng >> 33) % (n - 1)); /* never the seed */
        } while (r.killed[victim]);
        size_t from_ev = r.ndead;
        uint64_t kill_at = qv_gossip_sim_now_ms(r.sim);
        qv_gossip_sim_kill(r.sim, r.g[victim]);
        r.killed[victim] = true;
        live--;
        bool *seen = calloc(n, sizeof(bool));
        if (seen == NULL)
            goto out;
        size_t nseen = 0;
        uint64_t t_first = UINT64_MAX, t_last = 0;
        while (nseen < live && qv_gossip_sim_now_ms(r.sim) - kill_at < bound + 60000) {
            qv_gossip_sim_run_for(r.sim, 100);
            for (size_t i = from_ev; i < r.ndead; i++) {
                dead_ev *e = &r.dead[i];
                if (e->subject != victim || seen[e->observer] || r.killed[e->observer])
                    continue;
                seen[e->observer] = true;
                nseen++;
                uint64_t dt = e->at - kill_at;
                per_observer[nobs++] = dt;
                t_first = dt < t_first ? dt : t_first;
                t_last = dt > t_last ? dt : t_last;
            }
            from_ev = r.ndead;
        }
        free(seen);
        if (nseen < live) {
            missed++;
            continue;
        }
        first[done] = t_first;
        all[done] = t_last;
        done++;
        qv_gossip_sim_run_for(r.sim, 5000); /* settle before the next kill */
    }

    double f50 = pct(first, done, 0.5), f99 = pct(first, done, 0.99);
    double a50 = pct(all, done, 0.5), a99 = pct(all, done, 0.99);
    double o50 = pct(per_observer, nobs, 0.5), o99 = pct(per_observer, nobs, 0.99);
    printf("{\"bench\":\"gossip\",\"members\":%zu,\"seed\":%llu,\"converge_ms\":%llu,"
           "\"steady_packets_per_member_s\":%.2f,\"steady_bytes_per_member_s\":%.0f,"
           "\"trials\":%u,\"missed\":%u,\"detection_loss\":%.3f,"
           "\"detect_first_ms\":{\"p50\":%.0f,\"p99\":%.0f},"
           "\"detect_all_ms\":{\"p50\":%.0f,\"p99\":%.0f},"
           "\"detect_per_member_ms\":{\"p50\":%.0f,\"p99\":%.0f},\"bound_ms\":%llu,"
           "\"fp_loss\":%.3f,\"fp_periods\":%llu,\"false_deaths\":%zu,"
           "\"false_deaths_per_member_hour\":%.4f,\"suspicions_per_member_hour\":%.1f,"
           "\"loss_packets_per_member_s\":%.2f}\n",
           n, (unsigned long long)seed, (unsigned long long)converge_ms, pkts_ms, bytes_ms, done,
           missed, loss, f50, f99, a50, a99, o50, o99, (unsigned long long)bound, fp_loss,
           (unsigned long long)fp_periods, false_deaths, fp_rate, susp_rate, pkts_loss);
    fflush(stdout);
    fprintf(stderr, "%6zu %9llu %8.2f %8.0f %8.0f %8.0f %8.0f %8.0f %8llu %6zu %9.1f\n", n,
            (unsigned long long)converge_ms, pkts_ms, bytes_ms, f50, f99, a50, a99,
            (unsigned long long)bound, false_deaths, susp_rate);
    rc = 0;
out:
    free(first);
    free(all);
    free(per_observer);
    run_free(&r);
    g_run = NULL;
    return rc;
}

int qv_bench_gossip(int argc, char **argv)
{
    char *sizes = NULL;
    uint64_t seed = 0, trials = 0, fp_periods = 0, steady_s = 0;
    double loss = 0, fp_loss = 0;
    qv_opt opts[] = {
        {.name = "sizes",
         .type = QV_OPT_STRING,
         .target = &sizes,
         .def = "8,16,32,64,128,256,512,1024",
         .help = "cluster sizes, comma-separated"},
        {.name = "trials",
         .type = QV_OPT_UINT,
         .target = &trials,
         .def = "10",
         .help = "members killed one after another per size (detection samples)",
         .min = 1,
         .max = 1000},
        {.name = "loss",
         .type = QV_OPT_DOUBLE,
         .target = &loss,
         .def = "0",
         .help = "datagram loss while detecting kills",
         .dmin = 0,
         .dmax = 0.9},
        {.name = "fp-loss",
         .type = QV_OPT_DOUBLE,
         .target = &fp_loss,
         .def = "0.1",
         .help = "datagram loss of the false-positive run",
         .dmin = 0,
         .dmax = 0.9},
        {.name = "fp-periods",
         .type = QV_OPT_UINT,
         .target = &fp_periods,
         .def = "600",
         .help = "probe periods (virtual seconds) of the false-positive run",
         .min = 1,
         .max = 1000000},
        {.name = "steady-s",
         .type = QV_OPT_UINT,
         .target = &steady_s,
         .def = "60",
         .help = "virtual seconds over which the steady-state traffic is measured",
         .min = 1,
         .max = 100000},
        {.name = "seed",
         .type = QV_OPT_UINT,
         .target = &seed,
         .def = "1",
         .help = "simulator seed (a run is a function of it)",
         .min = 1,
         .max = INT64_MAX},
        {0},
    };
    qv_config cfg = {
        .program = "quiver-bench gossip",
        .summary = "SWIM + Lifeguard gossip in the deterministic simulator (virtual time, 1-5 ms "
                   "latency): convergence, steady-state datagrams and bytes per member per "
                   "second, time to detect a killed member (first member, every member), and "
                   "false deaths under datagram loss, per cluster size. One JSON line per size on "
                   "stdout.",
        .env_prefix = NULL,
        .opts = opts,
    };
    qv_status err = {0};
    int exit_code = 2;
    int rc = qv_config_parse(&cfg, argc, argv, &err);
    if (rc == QV_CONFIG_EXITED) {
        exit_code = 0;
        goto out;
    }
    if (rc < 0) {
        fprintf(stderr, "quiver-bench gossip: %s\n", err.msg);
        goto out;
    }
    size_t list[64], nlist = 0;
    for (char *p = sizes; p != NULL && *p != '\0' && nlist < 64;) {
        char *end = NULL;
        unsigned long v = strtoul(p, &end, 10);
        if (end == p || v < 3 || v > 8192 || (*end != ',' && *end != '\0')) {
            fprintf(stderr,
                    "quiver-bench gossip: --sizes '%s' is not a list like 8,64,1024 "
                    "(3..8192)\n",
                    sizes);
            goto out;
        }
        list[nlist++] = (size_t)v;
        p = *end == ',' ? end + 1 : end;
    }
    qv_log_set_level(QV_LOG_ERROR);
    fprintf(stderr, "%6s %9s %8s %8s %8s %8s %8s %8s %8s %6s %9s\n", "n", "conv_ms", "pkt/s", "B/s",
            "first50", "first99", "all50", "all99", "bound", "FP", "susp/m·h");
    exit_code = 0;
    for (size_t i = 0; i < nlist; i++)
        if (bench_size(list[i], seed, (unsigned)trials, loss, fp_loss, fp_periods, steady_s) != 0) {
            fprintf(stderr, "quiver-bench gossip: size %zu failed\n", list[i]);
            exit_code = 1;
        }
out:
    qv_config_free(&cfg);
    return exit_code;
}
