#!/usr/bin/env bash
# Runs Strata's whole test suite on a fresh machine: installs what the build and tests need
# (Debian packages), then builds and runs every test of the workspace in release mode (the
# crash and recovery tests drive the real `strata` binary, so it is built as shipped).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install-deps.sh

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
cargo build --release --workspace --all-targets
# The whole run is bounded (CI allows 90 minutes): a hung test fails the run with the
# runner's output so far instead of timing CI out.
timeout --kill-after=30 "${STRATA_TEST_TIMEOUT_SECS:-2700}" \
    cargo test --release --workspace -- --test-threads="${STRATA_TEST_THREADS:-2}" 2>&1 | tee /tmp/strata-test-output.$$
status=${PIPESTATUS[0]}
# One closing line summing every test binary's result.
awk '/^test result:/ { for (i = 1; i <= NF; i++) { if ($(i) ~ /^passed;?$/) p += $(i-1); if ($(i) ~ /^failed;?$/) f += $(i-1); if ($(i) ~ /^ignored;?$/) s += $(i-1) } }
     END { printf "%d passed, %d failed, %d skipped\n", p, f, s }' /tmp/strata-test-output.$$
rm -f /tmp/strata-test-output.$$
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    echo "the test run was stopped after ${STRATA_TEST_TIMEOUT_SECS:-2700} s (a test hung)" >&2
fi
exit "$status"
