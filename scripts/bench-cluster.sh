#!/usr/bin/env bash
# Benchmarks cluster mode (BENCHMARK.md's "cluster": etcd, three bookies with ensemble 3,
# write quorum 3, ack quorum 2, and one broker, all on 127.0.0.1), after the disk ceiling
# of the same run:
#   W1: 1 producer, 500,000 × 1 KiB, up to 1,000 messages in flight (3 runs), at full
#       speed and then paced at 40,000 msgs/s (the latency a user sees below saturation).
#   Failover: SIGKILL of a topic's owner → first receipt of a publish after it, over 10
#   trials with three brokers and the default 10 s session TTL (tests/cluster.rs,
#   failover_time_distribution).
# Usage: scripts/bench-cluster.sh [WORKDIR]   (WORKDIR must be on the disk to measure;
#        SKIP_FAILOVER=1 skips the failover trials)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-cluster" "${1:-}"
pids=()
trap 'for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done' EXIT
start_etcd_and_bookies
bp=$(free_port); hp=$(free_port)
printf '[broker]\nensemble_size = 3\nwrite_quorum = 3\nack_quorum = 2\n' >"$work/broker.toml"
ready() { python3 -c "import urllib.request,sys; sys.exit(0 if urllib.request.urlopen('http://127.0.0.1:$hp/readyz', timeout=1).status == 200 else 1)" 2>/dev/null; }
"$strata" broker --metadata-url "$meta" --listen "127.0.0.1:$bp" --http-listen "127.0.0.1:$hp" \
  --config "$work/broker.toml" 2>"$work/broker.log" &
broker_pid=$!; pids+=($broker_pid)
deadline=$((SECONDS + 60))
# Ready once the broker answers and all three bookies are registered.
until "$strata" admin cluster --url "http://127.0.0.1:$bp" 2>/dev/null | grep -q "BOOKIES (3)"; do
  [ $SECONDS -lt $deadline ] || { echo "cluster did not start" >&2; tail -5 "$work"/*.log >&2; exit 1; }
  sleep 0.2
done
ready || { echo "broker not ready" >&2; exit 1; }
url="http://127.0.0.1:$bp"
run() { echo "strata $*"; "$strata" "$@" --url "$url" --json 2>/dev/null | tail -1; }
for i in 1 2 3; do run perf produce --topic "public/default/w1-$i" --messages 500000 --size 1024 --inflight 1000; done
for i in 1 2 3; do run perf produce --topic "public/default/w1r-$i" --messages 500000 --size 1024 --inflight 1000 --rate 40000; done
kill -TERM "$broker_pid" && wait "$broker_pid" || true
for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
wait 2>/dev/null || true
[ -z "${SKIP_FAILOVER:-}" ] || exit 0
echo "failover (cargo test --release --test cluster -- --ignored failover_time_distribution)"
cargo test --release --quiet --test cluster -- --ignored failover_time_distribution --nocapture 2>/dev/null | grep '"workload"'
