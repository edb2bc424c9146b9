#!/usr/bin/env bash
# Installs every Debian package that Quiver's build, tests and benchmarks need.
# Idempotent: when everything is present it prints nothing and exits 0.
# Usage: scripts/bootstrap.sh [--with-bench]   (run as root, or with sudo available)
set -euo pipefail

# Build and test dependencies.
pkgs=(
  build-essential cmake ninja-build pkg-config clang-format git
  libgrpc-dev libprotobuf-c-dev protobuf-c-compiler
  protobuf-compiler protobuf-compiler-grpc python3-grpcio python3-protobuf
  libsodium-dev librocksdb-dev liburing-dev libcriterion-dev libroaring-dev
  libopenblas-dev liblapacke-dev libmicrohttpd-dev libhdf5-dev
  libssl-dev openssl python3 python3-numpy zlib1g-dev
  iproute2 iptables
  dataset-fashion-mnist
)
# Benchmark anchors (hnswlib headers, FAISS), only when asked.
bench_pkgs=(libhnswlib-dev python3-faiss g++)

want=("${pkgs[@]}")
for arg in "$@"; do
  case "$arg" in
  --with-bench) want+=("${bench_pkgs[@]}") ;;
  -h | --help)
    sed -n '2,5p' "$0"
    exit 0
    ;;
  *)
    echo "bootstrap: unknown option '$arg' (try --help)" >&2
    exit 2
    ;;
  esac
done

missing=()
for p in "${want[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "ok installed"; then
    missing+=("$p")
  fi
done
[ "${#missing[@]}" -eq 0 ] && exit 0

SUDO=""
if [ "$(id -u)" -ne 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    SUDO="sudo"
  else
    echo "bootstrap: missing packages (${missing[*]}) and not root; install them or run as root" >&2
    exit 1
  fi
fi
echo "bootstrap: installing ${missing[*]}"
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
echo "bootstrap: done"
