#!/usr/bin/env bash
# Benchmarks W1 and W5 (BENCHMARK.md) on `strata standalone`, fsync on, after the disk
# ceiling of the same run. W1: 1 producer, 500,000 × 1 KiB, up to 1,000 in flight, 128 KiB
# batches, 3 runs. W5: a 1,000,000-message backlog drained by one consumer from the
# earliest message, 3 runs (each a new subscription).
# Usage: scripts/bench-w1.sh [WORKDIR]   (WORKDIR must be on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
work=${1:-$PWD/target/bench-w1}
rm -rf "$work" && mkdir -p "$work"
cargo build --release --quiet
strata=$PWD/target/release/strata
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
echo "commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $(nproc) cores"
echo "disk ceiling: $(../shared/bench/disk-ceiling.sh "$work")"
"$strata" standalone --data-dir "$work/data" --listen "127.0.0.1:$port" 2>"$work/standalone.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))
until grep -q "standalone ready" "$work/standalone.log"; do
  [ $SECONDS -lt $deadline ] || { echo "standalone did not start" >&2; cat "$work/standalone.log" >&2; exit 1; }
  sleep 0.1
done
for run in 1 2 3; do
  echo "strata perf produce --url http://127.0.0.1:$port --topic public/default/w1-$run --messages 500000 --size 1024 --inflight 1000 --json"
  "$strata" perf produce --url "http://127.0.0.1:$port" --topic "public/default/w1-$run" \
    --messages 500000 --size 1024 --inflight 1000 --json 2>/dev/null | tail -1
done
echo "backlog: $("$strata" perf produce --url "http://127.0.0.1:$port" --topic public/default/w5 --messages 1000000 --json 2>/dev/null | tail -1 | cut -c1-80)"
for run in 1 2 3; do
  echo "strata perf consume --url http://127.0.0.1:$port --topic public/default/w5 --subscription w5-$run --messages 1000000 --json"
  "$strata" perf consume --url "http://127.0.0.1:$port" --topic public/default/w5 --subscription "w5-$run" \
    --messages 1000000 --json 2>/dev/null | tail -1
done
kill -TERM $pid && wait $pid
