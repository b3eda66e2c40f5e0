# Shared by the bench scripts (sourced from the repository root, not run): the start of
# every run, a free loopback port, and etcd plus three bookies on 127.0.0.1 under $work.

# bench_begin DEFAULT_WORKDIR [WORKDIR]: a fresh $work, a release build as $strata, and
# the run's header: commit, date, cores and the disk ceiling measured now under $work.
bench_begin() {
  work=${2:-$1}
  rm -rf "$work" && mkdir -p "$work"
  cargo build --release --quiet
  strata=$PWD/target/release/strata
  echo "commit $(git rev-parse --short HEAD), $(date -u +%FT%TZ), $(nproc) cores"
  echo "disk ceiling: $(../shared/bench/disk-ceiling.sh "$work")"
}

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

# start_etcd DIR: etcd on free loopback ports with its data and log under DIR; appends its
# PID to the array `pids` and sets $meta to its URL and $etcd_pid to its PID.
start_etcd() {
  local cp pp
  cp=$(free_port); pp=$(free_port)
  etcd --name bench --data-dir "$1/etcd" --listen-client-urls "http://127.0.0.1:$cp" \
    --advertise-client-urls "http://127.0.0.1:$cp" --listen-peer-urls "http://127.0.0.1:$pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" --initial-cluster "bench=http://127.0.0.1:$pp" \
    >"$1/etcd.log" 2>&1 &
  etcd_pid=$!
  pids+=($!)
  meta="etcd://127.0.0.1:$cp"
}

# Needs $work and $strata; appends the PIDs it starts to the array `pids` and sets $meta
# to the etcd URL.
start_etcd_and_bookies() {
  local i
  start_etcd "$work"
  for i in 1 2 3; do
    "$strata" bookie --data-dir "$work/bookie$i" --listen "127.0.0.1:$(free_port)" --metadata-url "$meta" \
      2>"$work/bookie$i.log" &
    pids+=($!)
  done
}
