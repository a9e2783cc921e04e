#!/usr/bin/env bash
# One command for a fresh machine: install (CPU torch first, then fwemu with its dev extra) and
# run the whole test suite. Exit status is pytest's, except that "no tests ran" (5) is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0 || python3 -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch
python3 -m pip install --quiet -e '.[dev]'
set +e
python3 -m pytest -q --durations=25 "$@"
rc=$?
set -e
if [ "$rc" -eq 5 ]; then
  echo "fwemu: pytest collected no tests; failing" >&2
  exit 1
fi
exit "$rc"
