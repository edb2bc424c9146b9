#!/usr/bin/env bash
# Sets up and runs Quiver's whole test suite: installs missing Debian packages, checks formatting,
# builds with AddressSanitizer + UndefinedBehaviorSanitizer and warnings as errors, and runs every
# suite through ctest. Exits non-zero when anything fails.
# Usage: scripts/test.sh [ctest arguments...]   e.g. scripts/test.sh -R rpc
set -euo pipefail
cd "$(dirname "$0")/.."

bash scripts/bootstrap.sh

echo "== format check"
bash scripts/format.sh --check

build=build-test
jobs=$(nproc)
echo "== configure ($build: sanitizers on, -Werror)"
cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=Debug -DQV_SANITIZE=ON -DQV_WERROR=ON \
  -DCMAKE_C_FLAGS_DEBUG="-g -O1" >/dev/null
echo "== build"
cmake --build "$build" -j "$jobs"

export ASAN_OPTIONS="detect_leaks=1:abort_on_error=0:strict_string_checks=1:detect_stack_use_after_return=1"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export LSAN_OPTIONS="suppressions=$PWD/tests/lsan.supp:print_suppressions=0"
echo "== test"
ctest --test-dir "$build" --output-on-failure --no-tests=error -j "$jobs" "$@"
