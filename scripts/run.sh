#!/usr/bin/env bash
# Builds and runs Strata with its defaults on a fresh machine: installs the Debian packages
# it builds against, then `cargo run --release -- ARGS` (default: `strata standalone`,
# clients on 127.0.0.1:6650, data in ./data).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh
if [ $# -eq 0 ]; then set -- standalone; fi
exec cargo run --release --quiet -- "$@"
