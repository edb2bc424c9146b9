#!/usr/bin/env bash
# Formats every tracked C source and header with the root .clang-format.
# Usage: scripts/format.sh [--check]   (--check: change nothing, list misformatted files, exit 1 if any)
set -euo pipefail
cd "$(dirname "$0")/.."
mapfile -t files < <(git ls-files --cached --others --exclude-standard -- '*.c' '*.h' '*.cu' | sort -u)
[ "${#files[@]}" -eq 0 ] && exit 0
if [ "${1:-}" = "--check" ]; then
  bad=0
  for f in "${files[@]}"; do
    [ -f "$f" ] || continue
    if ! clang-format --dry-run -Werror "$f" >/dev/null 2>&1; then
      echo "format: $f is not clang-formatted (run scripts/format.sh)" >&2
      bad=1
    fi
  done
  exit "$bad"
fi
for f in "${files[@]}"; do [ -f "$f" ] && clang-format -i "$f"; done
