/* Private to bench/: the subcommands of quiver-bench. */
#ifndef QV_BENCH_H
#define QV_BENCH_H

/* Each returns the process exit code. argv[0] is the subcommand name. */
int qv_bench_rpc(int argc, char **argv);
int qv_bench_ann(int argc, char **argv);
int qv_bench_gossip(int argc, char **argv);
int qv_bench_node(int argc, char **argv);

/* Shared helpers (util.c). */
#include <stddef.h>
#include <stdint.h>
double qv_bench_secs(uint64_t ns);                  /* nanoseconds to seconds */
int qv_bench_cmp_u64(const void *a, const void *b); /* qsort comparator for uint64_t */
/* Nearest-rank percentile p (0..1) of n sorted nanosecond values, in microseconds. */
double qv_bench_pct_us(const uint64_t *sorted, size_t n, double p);

#endif
