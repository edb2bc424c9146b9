/* quiver-bench: Quiver's benchmarks, one subcommand each. */
#include "bench/bench.h"
#include "common/common.h"

#include <stdio.h>
#include <string.h>

static void usage(FILE *out)
{
    fprintf(out, "usage: quiver-bench <benchmark> [options]\n"
                 "\n"
                 "benchmarks:\n"
                 "  ann    ANN indexes: recall@k, QPS, latency, build time and memory per vector\n"
                 "  gossip SWIM gossip in the simulator: detection time, false positives, traffic\n"
                 "  node   a quiver-node over gRPC: ingest points/s, search QPS, latency and\n"
                 "         recall, against the same index in process\n"
                 "  rpc    unary gRPC echo over loopback: QPS and latency at several in-flight "
                 "depths\n"
                 "\n"
                 "'quiver-bench <benchmark> --help' lists a benchmark's options. Results are JSON "
                 "lines on stdout;\n"
                 "a human summary goes to stderr.\n");
}

int main(int argc, char **argv)
{
    if (argc < 2 || strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? 2 : 0;
    }
    if (strcmp(argv[1], "--version") == 0) {
        printf("quiver-bench %s\n", QV_VERSION_STRING);
        return 0;
    }
    if (strcmp(argv[1], "ann") == 0)
        return qv_bench_ann(argc - 1, argv + 1);
    if (strcmp(argv[1], "gossip") == 0)
        return qv_bench_gossip(argc - 1, argv + 1);
    if (strcmp(argv[1], "node") == 0)
        return qv_bench_node(argc - 1, argv + 1);
    if (strcmp(argv[1], "rpc") == 0)
        return qv_bench_rpc(argc - 1, argv + 1);
    fprintf(stderr, "quiver-bench: unknown benchmark '%s'\n\n", argv[1]);
    usage(stderr);
    return 2;
}
