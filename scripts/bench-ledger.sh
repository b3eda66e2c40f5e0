#!/usr/bin/env bash
# Benchmark B1 across bookies (issue: replicated ledgers): etcd and three bookies on
# 127.0.0.1, E=3 Qw=3 Qa=2, 1 KiB entries, 256 in flight, 3 runs, with the disk ceiling
# measured first in the same run.
# Usage: scripts/bench-ledger.sh [WORKDIR]   (WORKDIR must be on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-ledger" "${1:-}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
start_etcd_and_bookies
deadline=$((SECONDS + 60))
until "$strata" perf ledger --metadata-url "$meta" --entries 10 --size 10 --inflight 1 >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "cluster did not start" >&2; tail "$work"/*.log >&2; exit 1; }
  sleep 0.2
done
for run in 1 2 3; do
  echo "strata perf ledger --metadata-url $meta --ensemble 3 --write-quorum 3 --ack-quorum 2 --entries 300000 --size 1024 --inflight 256 --json"
  "$strata" perf ledger --metadata-url "$meta" --ensemble 3 --write-quorum 3 --ack-quorum 2 \
    --entries 300000 --size 1024 --inflight 256 --json 2>/dev/null | tail -1
done
