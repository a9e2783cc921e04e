#!/usr/bin/env bash
# Builds (once) and prints the compat venv: the real cookbook's pinned dependency set
# (fireworks-ai 1.2.9 + tinker 0.23 + tinker-cookbook 0.4.3 ...) with fwemu installed beside it.
#
# Why a cached venv: the pinned set is an older SDK generation than fwemu's own dev install, so it
# cannot share the main interpreter; building it costs minutes, so it is keyed by a hash of
# requirements-pinned.txt and reused until that file changes.
#
#   FWEMU_COOKBOOK     the cookbook checkout (default: ../shared/cookbook beside the repo)
#   FWEMU_COMPAT_DIR   cache root (default: $HOME/.cache/fwemu-compat); the venv is <root>/<hash>
#
# Prints the venv's python on stdout (last line); progress and pip output go to stderr.
# Exit 2: no cookbook / no requirements-pinned.txt; exit 3: the build failed (see stderr).
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
cookbook="${FWEMU_COOKBOOK:-$repo/../shared/cookbook}"
req="$cookbook/requirements-pinned.txt"
if [ ! -f "$req" ]; then
  echo "fwemu compat: no $req (set FWEMU_COOKBOOK to the cookbook checkout)" >&2
  exit 2
fi
cookbook="$(cd "$cookbook" && pwd)"
hash="$(sha256sum "$req" | cut -c1-16)"
root="${FWEMU_COMPAT_DIR:-$HOME/.cache/fwemu-compat}"
venv="$root/$hash"
py="$venv/bin/python"
mkdir -p "$root"

# One builder at a time per cache root (two CI jobs, or pytest and test.sh, may race).
exec 9>"$root/.lock"
flock 9

# fwemu's runtime dependencies missing from the pinned set (the pinned set wins where it pins one).
FWEMU_EXTRA_DEPS=()

if [ ! -f "$venv/.complete" ]; then
  start=$(date +%s)
  echo "fwemu compat: building $venv from $req (cold build, a few minutes)" >&2
  rm -rf "$venv"
  if ! {
    python3 -m venv "$venv" &&
    "$py" -m pip install --quiet --upgrade pip >&2 &&
    { "$py" -m pip install --quiet torch==2.13.0 >&2 ||
      "$py" -m pip install --quiet --index-url https://download.pytorch.org/whl/cpu torch==2.13.0 >&2; } &&
    "$py" -m pip install --quiet -r "$req" >&2 &&
    { [ ${#FWEMU_EXTRA_DEPS[@]} -eq 0 ] || "$py" -m pip install --quiet "${FWEMU_EXTRA_DEPS[@]}" >&2; }
  }; then
    echo "fwemu compat: building the venv failed (network? see pip's output above); removed $venv" >&2
    rm -rf "$venv"
    exit 3
  fi
  echo "$req" >"$venv/.requirements-from"
  echo "$(( $(date +%s) - start ))" >"$venv/.build-seconds"
  touch "$venv/.complete"
  echo "fwemu compat: built in $(cat "$venv/.build-seconds") s" >&2
fi

# fwemu itself, editable and without dependencies, re-pointed when the checkout differs (cheap).
if [ "$(cat "$venv/.fwemu-from" 2>/dev/null || true)" != "$repo" ]; then
  "$py" -m pip install --quiet --no-deps --no-build-isolation -e "$repo" >&2 ||
    "$py" -m pip install --quiet --no-deps -e "$repo" >&2 || {
      echo "fwemu compat: installing fwemu (--no-deps -e $repo) into $venv failed" >&2; exit 3; }
  echo "$repo" >"$venv/.fwemu-from"
fi
echo "$cookbook" >"$venv/.cookbook"
echo "$py"
