#!/usr/bin/env bash
# Builds and runs Strata with its defaults on a fresh machine: installs the Debian packages
# it builds against, then `cargo run --release -- ARGS` (default: a bookie on
# 127.0.0.1:3181 with data in ./data/bookie).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [ $# -eq 0 ]; then set -- bookie; fi
exec cargo run --release --quiet -- "$@"
