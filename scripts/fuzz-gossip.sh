#!/usr/bin/env bash
# Fuzzes everything gossip reads from the network (tests/gossip/fuzz_decode.c: the decoders and the
# protocol core behind them) with libFuzzer. Builds the target with clang, ASan and UBSan in
# build-fuzz/, runs it for SECONDS (default 600) on the in-tree corpus tests/gossip/corpus. New
# inputs go to build-fuzz/gossip-corpus; with --merge, a minimal set of them that adds coverage is
# folded back into tests/gossip/corpus (which the normal suite replays: ctest -R gossip_corpus).
# A crash is saved under build-fuzz/gossip-artifacts/ and makes the script exit non-zero.
# Usage: scripts/fuzz-gossip.sh [SECONDS] [--merge]      (uses one core)
set -euo pipefail
cd "$(dirname "$0")/.."

secs=600
merge=0
for arg in "$@"; do
  case "$arg" in
  --merge) merge=1 ;;
  -h | --help)
    sed -n '2,8p' "$0"
    exit 0
    ;;
  *[!0-9]* | "")
    echo "fuzz-gossip: unknown argument '$arg' (try --help)" >&2
    exit 2
    ;;
  *) secs=$arg ;;
  esac
done
if ! command -v clang >/dev/null 2>&1; then
  echo "fuzz-gossip: clang is not installed (apt-get install clang)" >&2
  exit 1
fi

build=build-fuzz
echo "== configure ($build: clang, libFuzzer, ASan + UBSan)"
CC=clang CXX=clang++ cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DQV_SANITIZE=ON \
  -DQV_FUZZ=ON -DCMAKE_C_FLAGS="-fsanitize=fuzzer-no-link" -DCMAKE_C_FLAGS_DEBUG="-g -O1" >/dev/null
echo "== build"
cmake --build "$build" --target fuzz_gossip_decode

work="$build/gossip-corpus"
artifacts="$build/gossip-artifacts"
mkdir -p "$work" "$artifacts"
export ASAN_OPTIONS="detect_leaks=1:abort_on_error=1:allocator_may_return_null=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
echo "== fuzz for ${secs} s"
"$build/tests/fuzz_gossip_decode" -max_total_time="$secs" -max_len=4096 -timeout=10 \
  -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" "$work" tests/gossip/corpus
if [ "$merge" -eq 1 ]; then
  echo "== merge new coverage into tests/gossip/corpus"
  "$build/tests/fuzz_gossip_decode" -merge=1 -max_len=4096 tests/gossip/corpus "$work"
fi
