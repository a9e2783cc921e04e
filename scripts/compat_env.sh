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

# pip, quiet, without the local index's "Location ... is ignored" noise.
pip_q() {
  "$py" -m pip --quiet "$@" 2>&1 | { grep -v '^WARNING: Location .* is ignored' || true; } >&2
  return "${PIPESTATUS[0]}"
}

# fwemu's own runtime dependencies (pyproject.toml) that the venv lacks: installed on top. One the
# pinned set has at another version is left as pinned (the cookbook's set wins) and reported.
missing_fwemu_deps() {
  "$py" - "$repo/pyproject.toml" <<'PY'
import sys, tomllib
from importlib.metadata import PackageNotFoundError, version
from packaging.requirements import Requirement

for spec in tomllib.load(open(sys.argv[1], "rb"))["project"]["dependencies"]:
    req = Requirement(spec)
    if req.marker is not None and not req.marker.evaluate():
        continue
    try:
        have = version(req.name)
    except PackageNotFoundError:
        print(spec)
        continue
    if not req.specifier.contains(have, prereleases=True):
        print(f"fwemu compat: keeping pinned {req.name}=={have} (fwemu asks {spec})", file=sys.stderr)
PY
}

if [ ! -f "$venv/.complete" ]; then
  start=$(date +%s)
  echo "fwemu compat: building $venv from $req (cold build, a few minutes)" >&2
  rm -rf "$venv"
  if ! {
    python3 -m venv "$venv" &&
    pip_q install --upgrade pip &&
    { pip_q install torch==2.13.0 ||
      pip_q install --index-url https://download.pytorch.org/whl/cpu torch==2.13.0; } &&
    pip_q install -r "$req"
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

# fwemu's dependencies the pinned set lacks (checked every time: pyproject.toml may have changed).
mapfile -t extra < <(missing_fwemu_deps)
if [ ${#extra[@]} -gt 0 ]; then
  echo "fwemu compat: adding fwemu dependencies the pinned set lacks: ${extra[*]}" >&2
  pip_q install "${extra[@]}" || { echo "fwemu compat: installing ${extra[*]} failed" >&2; exit 3; }
fi

# fwemu itself, editable and without dependencies, re-pointed when the checkout differs (cheap).
if [ "$(cat "$venv/.fwemu-from" 2>/dev/null || true)" != "$repo" ]; then
  # setuptools' editable-install warnings are noise here; shown only when the install fails
  out="$(pip_q install --no-deps --no-build-isolation -e "$repo" 2>&1)" || {
    echo "$out" >&2; echo "fwemu compat: installing fwemu (--no-deps -e $repo) into $venv failed" >&2; exit 3; }
  echo "$repo" >"$venv/.fwemu-from"
fi
echo "$cookbook" >"$venv/.cookbook"
echo "$py"
