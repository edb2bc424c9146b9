#!/usr/bin/env bash
# Formats every tracked C source and header with the root .clang-format.
# Usage: scripts/format.sh [--check]   (--check: change nothing, list misformatted files, exit 1 if any)
set -euo pipefail
cd "$(dirname "$0")/.."
# A failing git (not a checkout, "dubious ownership") must not pass as "no files to check".
if ! list=$(git ls-files --cached --others --exclude-standard -- '*.c' '*.h' '*.cu'); then
  echo "format: git ls-files failed; run from a git checkout" >&2
  exit 2
fi
mapfile -t files < <(printf '%s\n' "$list" | sed '/^$/d' | sort -u)
if [ "${#files[@]}" -eq 0 ]; then
  echo "format: no C files found to check" >&2
  exit 2
fi
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
