#!/usr/bin/env bash
# The consume path side by side with NATS JetStream (issue: consume path), one run:
#   W5 — 1,000,000 × 1 KiB backlog, one consumer from the earliest message, acks on.
#        Strata: `strata perf consume` after the topic is unloaded (nothing in the
#        broker's cache). NATS 2.15: one durable pull consumer (batches of 1,000, every
#        message acknowledged) after nats-server restarted (nothing in its cache).
#   W3 — 1 producer at full speed, 200,000 × 1 KiB, 4 subscriptions / 4 pull consumers;
#        total delivered msgs/s.
# Both on `strata standalone` / one nats-server with file storage, data under WORKDIR,
# runs alternating, 3 of each, after the disk ceiling of the same run. NATS keeps its
# default sync (fsync every 2 minutes); Strata's journal fsyncs every write.
# As root, W5 also runs with the page cache dropped before each consume ("cold"): Strata
# writes entry logs with O_DIRECT, so its backlog is never in the page cache, while NATS
# writes through it; cold runs read both from the disk.
# Usage: scripts/bench-nats.sh [WORKDIR]   (WORKDIR on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-nats" "${1:-}"
nats_server=$(./scripts/install-nats.sh)
tools="${STRATA_TOOLS_CACHE:-$HOME/.cache/strata-tools}"
CARGO_TARGET_DIR="$tools/nats-bench-target" cargo build --release --quiet \
  --manifest-path scripts/nats-bench/Cargo.toml
nats_bench="$tools/nats-bench-target/release/nats-bench"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# Strata standalone.
port=$(free_port)
"$strata" standalone --data-dir "$work/strata" --listen "127.0.0.1:$port" \
  --http-listen "127.0.0.1:$(free_port)" 2>"$work/strata.log" &
pids+=($!)
deadline=$((SECONDS + 60))
until grep -q "standalone ready" "$work/strata.log" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "standalone did not start" >&2; cat "$work/strata.log" >&2; exit 1; }
  sleep 0.1
done
url="http://127.0.0.1:$port"

# nats-server with JetStream; (re)started by nats_start, stopped by nats_stop.
nats_port=$(free_port)
nats_start() {
  "$nats_server" -js -sd "$work/nats" -a 127.0.0.1 -p "$nats_port" >>"$work/nats.log" 2>&1 &
  nats_pid=$!
  pids+=($nats_pid)
  local deadline=$((SECONDS + 30))
  until "$nats_bench" "nats://127.0.0.1:$nats_port" ping 0 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "nats-server did not start" >&2; tail "$work/nats.log" >&2; exit 1; }
    sleep 0.1
  done
}
nats_stop() { kill "$nats_pid"; wait "$nats_pid" 2>/dev/null || true; }
nats_start
nats="nats://127.0.0.1:$nats_port"

# Before each consume: `sync` (the other system's buffered writes are not flushed in
# the middle of the run), and for cold runs the page cache dropped.
drop_caches() { sync && echo 1 >/proc/sys/vm/drop_caches; }
modes=(warm)
if [ -w /proc/sys/vm/drop_caches ]; then modes+=(cold); fi
for mode in "${modes[@]}"; do
  for i in 1 2 3; do
    topic="public/default/w5-$mode-$i"
    "$strata" perf produce --url "$url" --topic "$topic" --messages 1000000 --size 1024 \
      --inflight 1000 --json 2>/dev/null | tail -1 >/dev/null
    "$strata" admin topics unload "$topic" --url "$url"
    sync; [ "$mode" = warm ] || drop_caches
    echo "strata W5 $mode $i: $("$strata" perf consume --url "$url" --topic "$topic" \
      --messages 1000000 --json 2>/dev/null | tail -1)"
    "$strata" admin topics delete "$topic" --force --url "$url" # keep the disk from filling
    "$nats_bench" "$nats" produce 1000000 1024 >/dev/null
    nats_stop
    sync; [ "$mode" = warm ] || drop_caches
    nats_start
    echo "nats   W5 $mode $i: $("$nats_bench" "$nats" consume 1000000)"
  done
done
for i in 1 2 3; do
  sync
  echo "strata W3 $i: $("$strata" perf e2e --url "$url" --topic "public/default/w3-$i" --rate 0 \
    --subscriptions 4 --messages 200000 --size 1024 --json 2>/dev/null | tail -1)"
  "$strata" admin topics delete "public/default/w3-$i" --force --url "$url"
  echo "nats   W3 $i: $("$nats_bench" "$nats" fanout 200000 1024 4)"
done
