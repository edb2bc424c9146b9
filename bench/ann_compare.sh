#!/usr/bin/env bash
# Quiver vs hnswlib vs FAISS on the same data, same machine, same run.
#
# usage: bench/ann_compare.sh [--dataset fashion-mnist|synthetic] [--quick]
#                             [--synthetic N,DIM,CLUSTERS,SEED] [--threads LIST] [--repeat R]
#
#   1. builds quiver-bench (Release, in $BUILD_DIR, default build/) and compiles the hnswlib driver
#      (bench/hnswlib_bench.cpp, g++ -O3 -march=native) into $BUILD_DIR/bench/
#   2. exports the data once (quiver-bench ann --export-dir): base.fvecs, query.fvecs and the exact
#      ground truth gt.ivecs (Quiver's flat index), under $BUILD_DIR/bench/data/<name>/
#   3. runs on those files: quiver-bench ann (hnsw, hnsw-int8, flat, ivf), hnswlib_bench and
#      faiss_bench.py at each search thread count (default 1,2), collecting every JSON line in
#      $BUILD_DIR/bench/ann-<name>.jsonl
#   4. prints bench/ann_report.py's tables: QPS at recall@10 0.90/0.95/0.99 with ratios, build
#      time, bytes per vector, flat batch QPS
#
# --quick: a smoke run of seconds (a 5,000-vector subset, 200 queries, few ef / nprobe points).
# Environment: BUILD_DIR, THREADS, REPEAT override the defaults; CMAKE_GENERATOR is honoured.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
BUILD_DIR=${BUILD_DIR:-$root/build}
PY=/usr/bin/python3
dataset=fashion-mnist
quick=0
synthetic=1000000,128,1000,42
threads=${THREADS:-1,2}
repeat=${REPEAT:-3}

while [ $# -gt 0 ]; do
  case "$1" in
  --dataset)
    dataset=${2:?--dataset needs a value}
    shift 2
    ;;
  --quick)
    quick=1
    shift
    ;;
  --synthetic)
    synthetic=${2:?--synthetic needs N,DIM,CLUSTERS,SEED}
    shift 2
    ;;
  --threads)
    threads=${2:?--threads needs a list}
    shift 2
    ;;
  --repeat)
    repeat=${2:?--repeat needs a number}
    shift 2
    ;;
  -h | --help)
    sed -n '2,20p' "$0" | sed 's/^# \{0,1\}//'
    exit 0
    ;;
  *)
    echo "ann_compare: unknown option '$1' (try --help)" >&2
    exit 2
    ;;
  esac
done

case "$dataset" in
fashion-mnist) source_opts=(--fashion-mnist) ;;
synthetic) source_opts=(--synthetic "$synthetic") ;;
*)
  echo "ann_compare: --dataset is fashion-mnist or synthetic" >&2
  exit 2
  ;;
esac

# Search points: dense enough around recall 0.90-0.99 to interpolate.
ef=10,12,16,20,24,32,40,48,64,96,128,192,256
nprobe=1,2,3,4,6,8,12,16,24,32,48,64,96,128
limits=()
name=$dataset
if [ "$dataset" = fashion-mnist ]; then
  nlist=256
else
  n=${synthetic%%,*}
  nlist=$("$PY" -c "import math; print(max(1, round(4 * math.sqrt($n))))")
fi
if [ "$quick" = 1 ]; then
  ef=10,16,32,64,128
  nprobe=1,2,4,8,16
  nlist=32
  repeat=1
  limits=(--limit-base 5000 --limit-query 200)
  if [ "$dataset" = synthetic ]; then
    source_opts=(--synthetic "5000,32,16,1")
  fi
  name=$dataset-quick
fi

datadir=$BUILD_DIR/bench/data/$name
out=$BUILD_DIR/bench/ann-$name.jsonl
qb=$BUILD_DIR/bin/quiver-bench

echo "== build ($BUILD_DIR, Release)" >&2
gen=()
[ -f "$BUILD_DIR/CMakeCache.txt" ] || gen=(-G "${CMAKE_GENERATOR:-Ninja}")
cmake -S "$root" -B "$BUILD_DIR" "${gen[@]}" -DCMAKE_BUILD_TYPE=Release >/dev/null
cmake --build "$BUILD_DIR" --target quiver-bench >/dev/null
mkdir -p "$BUILD_DIR/bench"
g++ -O3 -march=native -std=c++17 -pthread -Wall -o "$BUILD_DIR/bench/hnswlib_bench" \
  "$root/bench/hnswlib_bench.cpp"

echo "== export $name to $datadir" >&2
"$qb" ann "${source_opts[@]}" "${limits[@]}" --export-dir "$datadir"

files=(--base "$datadir/base.fvecs" --query "$datadir/query.fvecs" --gt "$datadir/gt.ivecs")
: >"$out"
echo "== quiver (threads $threads)" >&2
"$qb" ann "${files[@]}" --index hnsw,hnsw-int8,flat,ivf --M 16 --ef-construction 200 \
  --ef "$ef" --nlist "$nlist" --nprobe "$nprobe" --threads "$threads" --repeat "$repeat" >>"$out"
echo "== hnswlib (threads $threads)" >&2
"$BUILD_DIR/bench/hnswlib_bench" "${files[@]}" --dataset "$name" --M 16 --ef-construction 200 \
  --ef "$ef" --threads "$threads" --repeat "$repeat" >>"$out"
echo "== faiss (threads $threads)" >&2
"$PY" "$root/bench/faiss_bench.py" "${files[@]}" --dataset "$name" --M 16 --ef-construction 200 \
  --ef "$ef" --nlist "$nlist" --nprobe "$nprobe" --threads "$threads" --repeat "$repeat" >>"$out"

echo "== results: $out" >&2
"$PY" "$root/bench/ann_report.py" "$out"
