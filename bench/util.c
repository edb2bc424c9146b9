/* Small helpers shared by the quiver-bench subcommands (bench.h). */
#include "bench/bench.h"

#include <math.h>

double qv_bench_secs(uint64_t ns)
{
    return (double)ns / 1e9;
}

int qv_bench_cmp_u64(const void *a, const void *b)
{
    uint64_t x = *(const uint64_t *)a, y = *(const uint64_t *)b;
    return x < y ? -1 : x > y;
}

double qv_bench_pct_us(const uint64_t *sorted, size_t n, double p)
{
    if (n == 0)
        return 0;
    size_t i = (size_t)ceil(p * (double)n);
    i = i == 0 ? 0 : i - 1;
    return (double)sorted[i < n ? i : n - 1] / 1e3;
}
