/* Private to bench/: the subcommands of quiver-bench. */
#ifndef QV_BENCH_H
#define QV_BENCH_H

/* Each returns the process exit code. argv[0] is the subcommand name. */
int qv_bench_rpc(int argc, char **argv);
int qv_bench_ann(int argc, char **argv);
int qv_bench_gossip(int argc, char **argv);
int qv_bench_node(int argc, char **argv);

#endif
