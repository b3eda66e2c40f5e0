#!/usr/bin/env bash
# Prints the path of a `moto_server` (an S3-compatible server, from PyPI's moto[server]) for
# the offload tests, installing it first into a virtualenv if this machine has none cached.
#
# Cached outside the repository, keyed by the version:
#   ${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/moto-<version>/
# A `.complete` stamp marks a finished install (a half-done one is redone). Progress goes
# to stderr; stdout is only the path.
set -euo pipefail
version="5.2.5"
cache="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}/moto-$version"
bin="$cache/bin/moto_server"
if [ -x "$bin" ] && [ -e "$cache/.complete" ]; then
    echo "$bin"
    exit 0
fi
exec 3>&1 1>&2 # everything below is progress
echo "installing moto[server] $version into $cache"
rm -rf "$cache"
mkdir -p "$(dirname "$cache")"
python3 -m venv "$cache"
"$cache/bin/pip" install --quiet --disable-pip-version-check "moto[server]==$version"
touch "$cache/.complete"
echo "$bin" >&3
