#!/usr/bin/env bash
# Benchmark B1 (BENCHMARK.md): one bookie, fsync on, 64 KiB and 1 KiB entries, 256 in
# flight, 3 runs each, with the disk ceiling measured first in the same run.
# Usage: scripts/bench-b1.sh [WORKDIR]   (WORKDIR must be on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$PWD/target/bench-b1}
rm -rf "$work" && mkdir -p "$work"
cargo build --release --quiet
strata=$PWD/target/release/strata
echo "commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $(nproc) cores"
echo "disk ceiling: $(../shared/bench/disk-ceiling.sh "$work")"
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
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
