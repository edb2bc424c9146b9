#!/usr/bin/env bash
# Sets up and starts Quiver in dev mode: installs missing Debian packages, builds (Release) into
# build/, starts `quiver-node --dev` in the background, waits until it answers Health, creates the
# collection `fashion-mnist` and imports Debian's Fashion-MNIST (60,000 images, 784 dimensions,
# the class label as payload) with quiverctl, runs 200 test queries with and without a filter
# (recall@10 against the node's exact search, latency percentiles), and leaves the node running.
#
# Usage: scripts/run.sh [--grpc HOST:PORT] [--http HOST:PORT] [--data DIR] [--no-demo]
#                       [--foreground] [--stop]
#   --grpc HOST:PORT  gRPC listen address (default 127.0.0.1:7070)
#   --http HOST:PORT  /metrics, /healthz, /readyz (default 127.0.0.1:9090)
#   --data DIR        data directory (default ./quiver-data)
#   --no-demo         start the node only: no import, no queries
#   --foreground      run the node in this terminal instead of the background (Ctrl-C stops it)
#   --stop            stop the node that an earlier run started in the background
set -euo pipefail
cd "$(dirname "$0")/.."

grpc=127.0.0.1:7070
http=127.0.0.1:9090
data=./quiver-data
demo=1
foreground=0
stop=0
while [ $# -gt 0 ]; do
  case "$1" in
  --grpc) grpc=${2:?--grpc needs HOST:PORT}; shift 2 ;;
  --http) http=${2:?--http needs HOST:PORT}; shift 2 ;;
  --data) data=${2:?--data needs a directory}; shift 2 ;;
  --no-demo) demo=0; shift ;;
  --foreground) foreground=1; shift ;;
  --stop) stop=1; shift ;;
  -h | --help) sed -n '2,16p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
  *) echo "run.sh: unknown option '$1' (try --help)" >&2; exit 2 ;;
  esac
done
pidfile="$data/quiver-node.pid"

# The pid in the file is ours only if that process is a quiver-node (pids are reused).
node_pid() {
  local pid
  [ -f "$pidfile" ] || return 1
  pid=$(cat "$pidfile")
  [[ "$pid" =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | grep -q 'quiver-node' || return 1
  echo "$pid"
}

if [ "$stop" = 1 ]; then
  if pid=$(node_pid); then
    kill -TERM "$pid"
    for _ in $(seq 1 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    if kill -0 "$pid" 2>/dev/null; then
      echo "quiver-node (pid $pid) is still draining after 30 s; kill -KILL $pid forces it" >&2
      exit 1
    fi
    rm -f "$pidfile"
    echo "quiver-node stopped"
  else
    rm -f "$pidfile"
    echo "no running quiver-node found for $data"
  fi
  exit 0
fi

bash scripts/bootstrap.sh
cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DQV_BUILD_TESTS=OFF >/dev/null
cmake --build build -j "$(nproc)"

if [ "$foreground" = 1 ]; then
  exec build/bin/quiver-node --dev --data "$data" --grpc "$grpc" --http "$http"
fi

if pid=$(node_pid); then
  echo "quiver-node is already running (pid $pid); stop it with: bash scripts/run.sh --stop"
  exit 1
fi
mkdir -p "$data"
log="$data/quiver-node.log"
setsid build/bin/quiver-node --dev --data "$data" --grpc "$grpc" --http "$http" >"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

for _ in $(seq 1 3000); do  # recovery of a large data directory may take a while
  if grep -q "quiver-node ready" "$log" 2>/dev/null; then break; fi
  if ! kill -0 "$pid" 2>/dev/null; then
    echo "quiver-node failed to start:" >&2
    cat "$log" >&2
    rm -f "$pidfile"
    exit 1
  fi
  sleep 0.1
done
/usr/bin/python3 scripts/probe.py --stubs build/python "$grpc"

if [ "$demo" = 1 ]; then
  fm=/usr/share/datasets/fashion-mnist
  ctl=(build/bin/quiverctl --addr "$grpc")
  echo
  "${ctl[@]}" collections create fashion-mnist --dim 784 --metric l2 --index hnsw --if-not-exists
  have=$("${ctl[@]}" collections describe fashion-mnist --json |
    /usr/bin/python3 -c 'import json,sys; print(json.load(sys.stdin).get("points_count", 0))')
  if [ "$have" -lt 60000 ]; then
    echo "importing Fashion-MNIST ($fm) with its class labels as payload ..."
    "${ctl[@]}" import --collection fashion-mnist "$fm/train-images-idx3-ubyte.gz" --wait
  else
    echo "fashion-mnist already holds $have points; not importing again"
  fi
  echo
  /usr/bin/python3 scripts/demo.py --stubs build/python --addr "$grpc" --collection fashion-mnist \
    --queries "$fm/t10k-images-idx3-ubyte.gz" --labels "$fm/t10k-labels-idx1-ubyte.gz" --n 200
  echo
  echo "try:  build/bin/quiverctl --addr $grpc search --collection fashion-mnist --id 42 --k 5 --filter 'label = 3' --with-payload"
fi
cat <<MSG

quiver-node --dev is running (pid $pid): gRPC on $grpc, metrics on http://$http/metrics,
data in $data, log in $log.
Stop it with:  bash scripts/run.sh --stop      (or: kill $pid)
MSG
