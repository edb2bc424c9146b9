#!/usr/bin/env bash
# Sets up and starts Quiver in dev mode: installs missing Debian packages, builds (Release) into
# build/, starts `quiver-node --dev` in the background, waits until it answers Health, prints its
# status, and leaves it running.
#
# Usage: scripts/run.sh [--grpc HOST:PORT] [--data DIR] [--foreground] [--stop]
#   --grpc HOST:PORT  listen address (default 127.0.0.1:7070)
#   --data DIR        data directory (default ./quiver-data)
#   --foreground      run the node in this terminal instead of the background (Ctrl-C stops it)
#   --stop            stop the node that an earlier run started in the background
set -euo pipefail
cd "$(dirname "$0")/.."

grpc=127.0.0.1:7070
data=./quiver-data
foreground=0
stop=0
while [ $# -gt 0 ]; do
  case "$1" in
  --grpc) grpc=${2:?--grpc needs HOST:PORT}; shift 2 ;;
  --data) data=${2:?--data needs a directory}; shift 2 ;;
  --foreground) foreground=1; shift ;;
  --stop) stop=1; shift ;;
  -h | --help) sed -n '2,11p' "$0" | sed 's/^# \{0,1\}//'; exit 0 ;;
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
  exec build/bin/quiver-node --dev --data "$data" --grpc "$grpc"
fi

if pid=$(node_pid); then
  echo "quiver-node is already running (pid $pid); stop it with: bash scripts/run.sh --stop"
  exit 1
fi
mkdir -p "$data"
log="$data/quiver-node.log"
setsid build/bin/quiver-node --dev --data "$data" --grpc "$grpc" >"$log" 2>&1 </dev/null &
pid=$!
echo "$pid" >"$pidfile"

for _ in $(seq 1 100); do
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
cat <<MSG

quiver-node --dev is running (pid $pid), gRPC on $grpc, data in $data, log in $log.
Stop it with:  bash scripts/run.sh --stop      (or: kill $pid)
MSG
