# Shared by the bench scripts (sourced, not run): a free loopback port, and etcd plus three
# bookies on 127.0.0.1 under $work. Needs $work and $strata; appends the PIDs it starts to
# the array `pids` and sets $meta to the etcd URL.
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

start_etcd_and_bookies() {
  local cp pp i
  cp=$(free_port); pp=$(free_port)
  etcd --name bench --data-dir "$work/etcd" --listen-client-urls "http://127.0.0.1:$cp" \
    --advertise-client-urls "http://127.0.0.1:$cp" --listen-peer-urls "http://127.0.0.1:$pp" \
    --initial-advertise-peer-urls "http://127.0.0.1:$pp" --initial-cluster "bench=http://127.0.0.1:$pp" \
    >"$work/etcd.log" 2>&1 &
  pids+=($!)
  meta="etcd://127.0.0.1:$cp"
  for i in 1 2 3; do
    "$strata" bookie --data-dir "$work/bookie$i" --listen "127.0.0.1:$(free_port)" --metadata-url "$meta" \
      2>"$work/bookie$i.log" &
    pids+=($!)
  done
}
