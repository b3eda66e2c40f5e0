#!/usr/bin/env bash
# Benchmark B1 (BENCHMARK.md): one bookie, fsync on, 64 KiB and 1 KiB entries, 256 in
# flight, 3 runs each, with the disk ceiling measured first in the same run.
# Usage: scripts/bench-b1.sh [WORKDIR]   (WORKDIR must be on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-b1" "${1:-}"
port=$(free_port)
"$strata" bookie --data-dir "$work/data" --listen "127.0.0.1:$port" 2>"$work/bookie.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))
until "$strata" perf bookie --target "127.0.0.1:$port" --entries 1 --size 1 --inflight 1 >/dev/null 2>&1; do
  [ $SECONDS -lt $deadline ] || { echo "bookie did not start" >&2; cat "$work/bookie.log" >&2; exit 1; }
  sleep 0.1
done
for spec in "20000 65536" "300000 1024"; do
  set -- $spec
  for run in 1 2 3; do
    echo "strata perf bookie --target 127.0.0.1:$port --entries $1 --size $2 --inflight 256 --json"
    "$strata" perf bookie --target "127.0.0.1:$port" --entries "$1" --size "$2" --inflight 256 --json 2>/dev/null | tail -1
  done
done
kill -TERM $pid && wait $pid
