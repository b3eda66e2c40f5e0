#!/usr/bin/env bash
# Tiered offload (issue: storage lifecycle) on `strata standalone` against a local
# S3-compatible server (moto, from scripts/install-moto.sh) on 127.0.0.1, after the disk
# ceiling of the same run:
#   offload: 1,000,000 × 1 KiB messages (`strata perf produce`), then
#     `strata admin topics offload` of every closed ledger; MB/s = data-object bytes
#     (10^6) over the command's wall time (upload, read-back check, list updates).
#   W5 from S3: with every closed ledger's bookie copy deleted and the topic unloaded,
#     one consumer drains all 1,000,000 from the earliest message (`strata perf consume`),
#     so all but the open ledger's entries come from ranged GETs.
# 3 runs of each (a new topic per offload run, a new subscription per W5 run).
# Usage: scripts/bench-offload.sh [WORKDIR]   (WORKDIR must be on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-offload" "${1:-}"
moto=$(./scripts/install-moto.sh)
s3_port=$(free_port)
"$moto" -H 127.0.0.1 -p "$s3_port" >"$work/moto.log" 2>&1 &
pids=($!)
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT
deadline=$((SECONDS + 60))
until python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$s3_port/')" 2>/dev/null; do
  [ $SECONDS -lt $deadline ] || { echo "moto did not start" >&2; exit 1; }
  sleep 0.2
done
python3 -c "import urllib.request; urllib.request.urlopen(urllib.request.Request('http://127.0.0.1:$s3_port/bench', method='PUT'))"
port=$(free_port)
url="http://127.0.0.1:$port"
cat >"$work/strata.toml" <<TOML
[broker]
max_entries_per_ledger = 1000   # ~128 MB ledgers of 128 KiB batches: 8 of 1 GB closed
retention_time_secs = -1
retention_bytes = -1

[offload]
url = "s3://bench/strata"
endpoint = "http://127.0.0.1:$s3_port"
access_key_id = "bench"
secret_access_key = "bench"
deletion_lag_secs = 0
TOML
"$strata" standalone --data-dir "$work/data" --listen "127.0.0.1:$port" --config "$work/strata.toml" 2>"$work/standalone.log" &
pids+=($!)
deadline=$((SECONDS + 60))
until grep -q "standalone ready" "$work/standalone.log"; do
  [ $SECONDS -lt $deadline ] || { echo "standalone did not start" >&2; cat "$work/standalone.log" >&2; exit 1; }
  sleep 0.1
done
for i in 1 2 3; do
  topic=public/default/offload-$i
  "$strata" perf produce --url "$url" --topic "$topic" --messages 1000000 --size 1024 --json 2>/dev/null | tail -1 >/dev/null
  start=$(date +%s.%N)
  "$strata" admin topics offload "$topic" --url "$url" >"$work/offload-$i.json"
  end=$(date +%s.%N)
  python3 - "$work/offload-$i.json" "$start" "$end" <<'PY'
import json, sys
s = json.load(open(sys.argv[1]))
secs = float(sys.argv[3]) - float(sys.argv[2])
data = sum(l.get("data_object_bytes", 0) for l in s["ledgers"])
n = sum(1 for l in s["ledgers"] if l["state"] in ("offloaded", "object-storage"))
print(json.dumps({"workload": "offload to S3 (moto)", "ledgers": n, "data_object_bytes": data,
                  "seconds": round(secs, 2), "mb_per_sec": round(data / secs / 1e6, 1),
                  "bookie_bytes_left": s["bookie_bytes"]}))
PY
done
topic=public/default/offload-1
"$strata" admin topics unload "$topic" --url "$url"
for i in 1 2 3; do
  echo "strata perf consume --topic $topic --subscription w5-s3-$i --messages 1000000"
  "$strata" perf consume --url "$url" --topic "$topic" --subscription "w5-s3-$i" --messages 1000000 --json 2>/dev/null | tail -1
  "$strata" admin topics unload "$topic" --url "$url"
done
