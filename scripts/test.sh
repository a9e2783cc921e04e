#!/usr/bin/env bash
# One command for a fresh machine: install (CPU torch first, then fwemu with its dev extra) and
# run the whole test suite, in two stages:
#   1. the suite under fwemu's own install (the newest fireworks-ai 1.2.x), except `compat`;
#   2. `real_sdk or compat` again inside the compat venv (the cookbook's pinned fireworks-ai 1.2.9
#      + tinker 0.23, built once by scripts/compat_env.sh and cached), where the real cookbook runs.
# Exit status: non-zero when either stage fails; "no tests ran" (pytest's 5) is a failure. When
# the compat venv cannot be built (no network, no ../shared/cookbook), stage 2 fails loudly unless
# FWEMU_SKIP_COMPAT=1. Arguments go to stage 1 only (docs/compat.md).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m pip install --quiet torch==2.13.0 || python3 -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch
python3 -m pip install --quiet -e '.[dev]'

status=0
note() { echo "fwemu: $*" >&2; }
run_pytest() {   # run_pytest LABEL PYTHON ARGS...: pytest's status, 5 (no tests) counted as failure
  local label="$1" py="$2" rc
  shift 2
  set +e
  "$py" -m pytest "$@"
  rc=$?
  set -e
  if [ "$rc" -eq 5 ]; then
    note "$label: pytest collected no tests; failing"
    rc=1
  fi
  [ "$rc" -eq 0 ] || { note "$label failed (exit $rc)"; status=1; }
}

run_pytest "stage 1 (fwemu's install)" python3 -q --durations=25 -m "not compat" "$@"

if [ "${FWEMU_SKIP_COMPAT:-0}" = "1" ]; then
  note "stage 2 (compat venv) skipped: FWEMU_SKIP_COMPAT=1"
else
  start=$(date +%s)
  if compat_py="$(bash scripts/compat_env.sh)"; then
    note "stage 2: compat venv ready in $(( $(date +%s) - start )) s: $compat_py"
    run_pytest "stage 2 (compat venv: cookbook's pinned SDK)" "$compat_py" -q --durations=15 -m "real_sdk or compat"
    note "stage 2 took $(( $(date +%s) - start )) s (venv build or reuse + tests)"
  else
    note "stage 2 FAILED: the compat venv could not be built (output above). It needs the cookbook"
    note "(FWEMU_COOKBOOK, default ../shared/cookbook) and PyPI; set FWEMU_SKIP_COMPAT=1 to skip it."
    status=1
  fi
fi
exit "$status"
