#!/usr/bin/env bash
# Fuzzes the index file loader (qv_index_load_buffer) with libFuzzer + ASan + UBSan + LSan.
#
# Usage:
#   scripts/fuzz-index.sh [SECONDS]              build, then fuzz for SECONDS (default 600) on one
#                                                core; stops at the first crash
#   scripts/fuzz-index.sh --keep-going [SECONDS] same, but in libFuzzer's fork mode: a crash, leak,
#                                                OOM or timeout is saved and fuzzing goes on
#   scripts/fuzz-index.sh --seed-corpus          (re)write the seed files of tests/index/corpus
#                                                (saved indexes of every type, storage, metric)
#   scripts/fuzz-index.sh --merge                add to tests/index/corpus the inputs of the work
#                                                corpus that reach new edges (-merge=1, counters off)
#   scripts/fuzz-index.sh --replay FILE|DIR...   run inputs through the fuzz target without
#                                                libFuzzer (reproduce a crash file)
#
# Everything is built with clang straight from the sources (no CMake) into build-fuzz-index/:
# the target is tests/index/fuzz_load.c, new inputs go to build-fuzz-index/work/ and crash files
# to build-fuzz-index/artifacts/. Exits non-zero when the fuzzer found anything (the crash file
# is left there and its path printed). The CMake option QV_FUZZ builds the same target.
set -euo pipefail
cd "$(dirname "$0")/.."

out=build-fuzz-index
corpus=tests/index/corpus
CC=${CC:-clang}
max_files=200
max_bytes=$((2 * 1024 * 1024))

mode=run
secs=600
case "${1:-}" in
--seed-corpus | --merge | --replay)
  mode=${1#--}
  shift
  ;;
--keep-going)
  mode=keep-going
  shift
  secs=${1:-600}
  ;;
"") ;;
*)
  if [[ "$1" =~ ^[0-9]+$ ]]; then
    secs=$1
  else
    sed -n '2,/^set -euo/p' "$0" | sed '$d' >&2
    exit 2
  fi
  ;;
esac

command -v "$CC" >/dev/null || {
  echo "fuzz-index: $CC not found (libFuzzer needs clang)" >&2
  exit 2
}

san=("-fsanitize=address,undefined" -fno-sanitize-recover=undefined -fno-omit-frame-pointer)
cflags=(-std=c17 -g -O1 -I. -DQV_DEBUG_CHECKS=1 -Wall -Wno-unused-parameter)
read -r -a libs <<<"-lroaring $(pkg-config --libs openblas) -lpthread -lm"

# Objects of the library, instrumented for coverage: index/*.c with the per-file SIMD flags and
# definitions of index/CMakeLists.txt, and the qv_common sources listed in common/CMakeLists.txt.
build_objs() {
  mkdir -p "$out/obj"
  local x86=false src base
  local -a common_srcs
  [[ "$(uname -m)" == x86_64 ]] && x86=true
  read -r -a common_srcs <<<"$(sed -n 's/^add_library(qv_common STATIC \([^)]*\)).*/\1/p' \
    common/CMakeLists.txt)"
  for src in index/*.c "${common_srcs[@]/#/common/}"; do
    base=$(basename "$src")
    local -a extra=()
    if [[ "$src" == index/* ]] && $x86; then
      extra=(-DHAVE_AVX2=1 -DHAVE_AVX512=1 -DHAVE_AVX512_VNNI=1)
    fi
    case "$base" in
    kernels_avx2.c) extra+=(-mavx2 -mfma) ;;
    kernels_avx512.c) extra+=(-mavx512f -mavx512bw -mavx512vl) ;;
    kernels_avx512_vnni.c) extra+=(-mavx512f -mavx512bw -mavx512vl -mavx512vnni) ;;
    kernels_*.c) continue ;; # a SIMD level this script does not know
    esac
    if [[ "$base" == kernels_?*.c ]] && ! $x86; then
      continue
    fi
    "$CC" "${cflags[@]}" "${san[@]}" -fsanitize=fuzzer-no-link "${extra[@]}" -c "$src" \
      -o "$out/obj/${src//\//_}.o"
  done
}

build() {
  echo "== building the fuzz target with $CC"
  rm -rf "$out/obj"
  build_objs
  "$CC" "${cflags[@]}" "${san[@]}" -fsanitize=fuzzer tests/index/fuzz_load.c "$out"/obj/*.o \
    "${libs[@]}" -o "$out/fuzz_index_load"
  # The replay driver: same target and objects, plain main(), no libFuzzer.
  "$CC" "${cflags[@]}" "${san[@]}" tests/index/replay_corpus.c tests/index/fuzz_load.c \
    "$out"/obj/*.o "${libs[@]}" -o "$out/replay_corpus"
}

export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:abort_on_error=0}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}

corpus_size() {
  local n bytes
  n=$(find "$corpus" -type f | wc -l)
  bytes=$(find "$corpus" -type f -printf '%s\n' | awk '{s += $1} END {print s + 0}')
  echo "$n files, $bytes bytes"
  if ((n > max_files || bytes > max_bytes)); then
    echo "fuzz-index: the corpus is over its budget ($max_files files, $max_bytes bytes)" >&2
    return 1
  fi
}

case "$mode" in
seed-corpus)
  build
  mkdir -p "$corpus"
  "$out/replay_corpus" --generate "$corpus"
  corpus_size
  exit 0
  ;;
replay)
  build
  exec "$out/replay_corpus" "$@"
  ;;
merge)
  [[ -x "$out/fuzz_index_load" ]] || build
  mkdir -p "$out/work"
  before=$(find "$corpus" -type f | wc -l)
  "$out/fuzz_index_load" -merge=1 -use_counters=0 "$corpus" "$out/work" 2>&1 | grep -E "MERGE-OUTER|ERROR" || true
  after=$(find "$corpus" -type f | wc -l)
  echo "fuzz-index: $((after - before)) new inputs added to $corpus"
  corpus_size
  exit 0
  ;;
esac

build
mkdir -p "$out/work" "$out/artifacts"
if [[ -z "$(ls -A "$corpus" 2>/dev/null)" ]]; then
  mkdir -p "$corpus"
  "$out/replay_corpus" --generate "$corpus"
fi
marker=$(mktemp)
trap 'rm -f "$marker"' EXIT
opts=(-max_total_time="$secs" -artifact_prefix="$out/artifacts/" -print_final_stats=1
  -rss_limit_mb=2048 -timeout=20 -max_len=65536)
if [[ "$mode" == keep-going ]]; then
  opts+=(-fork=1 -ignore_crashes=1 -ignore_ooms=1 -ignore_timeouts=1)
fi
echo "== fuzzing for ${secs}s from $(date -u +%FT%TZ): $out/work + $corpus"
rc=0
"$out/fuzz_index_load" "${opts[@]}" "$out/work" "$corpus" || rc=$?
echo "== done at $(date -u +%FT%TZ), libFuzzer exit status $rc"
found=$(find "$out/artifacts" -type f -newer "$marker" | sort)
if [[ -n "$found" ]]; then
  echo "fuzz-index: the fuzzer found problems; reproduce with $out/replay_corpus FILE:" >&2
  echo "$found" >&2
  exit 1
fi
exit "$rc"
