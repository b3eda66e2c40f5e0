#!/usr/bin/env bash
# Benchmarks W1–W5 (BENCHMARK.md) on `strata standalone`, fsync on, after the disk ceiling
# of the same run, every client through the Rust SDK (`strata perf`). 3 runs each.
#   W1: 1 producer, 500,000 × 1 KiB, up to 1,000 messages in flight (the perf default).
#   W2: 20,000 msg/s for 30 s, 1 consumer tailing: end-to-end latency.
#   W3: 1 producer at full speed, 4 subscriptions × 1 consumer: delivered msgs/s.
#   W4: a 200,000-message backlog, Shared subscription, 8 consumers, individual acks.
#   W5: a 1,000,000-message backlog drained by one consumer from the earliest message.
#   W6: 1,000 topics, one producer each at 10 msg/s for 60 s: p99 publish latency and the
#       standalone process's memory and CPU seconds (from its /metrics).
# Usage: [WORKLOADS="W1 … W6"] scripts/bench-standalone.sh [WORKDIR]
#   (WORKDIR must be on the disk to measure; WORKLOADS defaults to all six)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-standalone" "${1:-}"
port=$(free_port)
url="http://127.0.0.1:$port"
http_port=$(free_port)
workloads=${WORKLOADS:-W1 W2 W3 W4 W5 W6}
want() { [[ " $workloads " == *" $1 "* ]]; }
"$strata" standalone --data-dir "$work/data" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$http_port" 2>"$work/standalone.log" &
pid=$!
trap 'kill $pid 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))
until grep -q "standalone ready" "$work/standalone.log"; do
  [ $SECONDS -lt $deadline ] || { echo "standalone did not start" >&2; cat "$work/standalone.log" >&2; exit 1; }
  sleep 0.1
done
run() { echo "strata $*"; "$strata" "$@" --url "$url" --json 2>/dev/null | tail -1; }
if want W1; then for i in 1 2 3; do run perf produce --topic "public/default/w1-$i" --messages 500000 --size 1024 --inflight 1000; done; fi
if want W2; then for i in 1 2 3; do run perf e2e --topic "public/default/w2-$i" --rate 20000 --messages 600000 --size 1024; done; fi
if want W3; then for i in 1 2 3; do run perf e2e --topic "public/default/w3-$i" --rate 0 --subscriptions 4 --messages 200000 --size 1024; done; fi
if want W4; then
  run perf produce --topic public/default/w4 --messages 200000 --size 1024 >/dev/null
  for i in 1 2 3; do run perf consume --topic public/default/w4 --subscription "w4-$i" --type shared --consumers 8 --messages 200000; done
fi
if want W5; then
  run perf produce --topic public/default/w5 --messages 1000000 --size 1024 >/dev/null
  for i in 1 2 3; do run perf consume --topic public/default/w5 --subscription "w5-$i" --messages 1000000; done
fi
if want W6; then
  for i in 1 2 3; do
    run perf topics --prefix public/default/w6 --topics 1000 --rate 10 --seconds 60 --size 1024 \
      --metrics-url "http://127.0.0.1:$http_port/metrics"
  done
fi
kill -TERM $pid && wait $pid
