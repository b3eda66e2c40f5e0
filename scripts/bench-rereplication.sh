#!/usr/bin/env bash
# Re-replication rate for one lost bookie (issue: storage lifecycle): etcd and four bookies
# on 127.0.0.1, E=3 Qw=3 Qa=2. Four ledgers of 100,000 × 1 KiB entries are written with
# `strata perf ledger`, one bookie is SIGKILLed, and the surviving bookies' auto-recovery
# workers copy its fragments. Reported: bytes copied, and the time from the first copied
# byte to the last (polled every 0.1 s from the bookies' /metrics), as MB/s (10^6 bytes).
# Three runs with the copy throttle off, one with the default (64 MiB/s per worker), with
# the disk ceiling measured first in the same run.
# Usage: scripts/bench-rereplication.sh [WORKDIR]   (WORKDIR must be on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-rereplication" "${1:-}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

one_run() { # $1: autorecovery_max_bytes_per_sec
  local run_dir=$work/run-$RANDOM i http=() addrs=() bpids=()
  mkdir -p "$run_dir"
  start_etcd "$run_dir"
  printf 'session_ttl_ms = 2000\nautorecovery_lost_grace_secs = 1\nautorecovery_audit_interval_secs = 1\nautorecovery_max_bytes_per_sec = %s\n' "$1" \
    >"$run_dir/bookie.toml"
  for i in 1 2 3 4; do
    http+=("127.0.0.1:$(free_port)")
    addrs+=("127.0.0.1:$(free_port)")
    "$strata" bookie --data-dir "$run_dir/bookie$i" --listen "${addrs[-1]}" --metadata-url "$meta" \
      --config "$run_dir/bookie.toml" --http-listen "${http[-1]}" 2>"$run_dir/bookie$i.log" &
    pids+=($!); bpids+=($!)
  done
  local deadline=$((SECONDS + 60))
  until "$strata" perf ledger --metadata-url "$meta" --entries 10 --size 10 --inflight 1 >/dev/null 2>&1; do
    [ $SECONDS -lt $deadline ] || { echo "cluster did not start" >&2; tail "$run_dir"/*.log >&2; exit 1; }
    sleep 0.2
  done
  for i in 1 2 3 4; do
    "$strata" perf ledger --metadata-url "$meta" --ensemble 3 --write-quorum 3 --ack-quorum 2 \
      --entries 100000 --size 1024 --inflight 256 --json 2>/dev/null | tail -1 >/dev/null
  done
  # The victim: bookie 1. Poll the others' copy counters until they stop moving with no
  # ledger left under-replicated.
  kill -9 "${bpids[0]}"
  python3 - "${bpids[1]},${bpids[2]},${bpids[3]}" "${http[1]}" "${http[2]}" "${http[3]}" <<'EOF'
import json, os, sys, time, urllib.request
pids = sys.argv[1].split(",")
def cpu():
    t = 0
    for p in pids:
        f = open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()
        t += int(f[11]) + int(f[12])
    return t / os.sysconf("SC_CLK_TCK")
def scrape():
    total, ur = 0.0, 0.0
    for h in sys.argv[2:]:
        body = urllib.request.urlopen(f"http://{h}/metrics", timeout=5).read().decode()
        for line in body.splitlines():
            if line.startswith("strata_autorecovery_rereplicated_bytes_total "):
                total += float(line.split()[1])
            if line.startswith("strata_autorecovery_under_replicated_ledgers "):
                ur += float(line.split()[1])
    return total, ur
start = first = last = None
cpu_first = cpu_last = 0.0
prev = 0.0
deadline = time.time() + 600
while time.time() < deadline:
    total, ur = scrape()
    now = time.time()
    if total > 0 and first is None:
        first, cpu_first = now - 0.1, cpu()
    if total != prev:
        last, prev, cpu_last = now, total, cpu()
    if first is not None and ur == 0 and now - last > 3:
        break
    time.sleep(0.1)
secs = last - first
print(json.dumps({"workload": "re-replication of one lost bookie", "bytes": int(prev),
                  "seconds": round(secs, 2), "mb_per_sec": round(prev / secs / 1e6, 1),
                  "surviving_bookies_cpu_seconds": round(cpu_last - cpu_first, 2)}))
EOF
  kill "${bpids[@]}" "$etcd_pid" 2>/dev/null || true
  wait "${bpids[@]}" "$etcd_pid" 2>/dev/null || true
  rm -rf "$run_dir"
}

for run in 1 2 3; do
  echo "throttle off (autorecovery_max_bytes_per_sec = 0), run $run"
  one_run 0
done
echo "default throttle (autorecovery_max_bytes_per_sec = 67108864)"
one_run 67108864
