#!/usr/bin/env bash
# W1 (BENCHMARK.md: 1 producer, 500,000 × 1 KiB, up to 1,000 in flight) on two
# `strata standalone` processes of the same build, fsync on: one plain, one with TLS on
# its client port and token authentication on (HS256; the producer's role is granted
# produce on its namespace, not a superuser, so every check runs). Runs alternate
# plain / secure, 5 each, after the disk ceiling of the same run.
# Usage: scripts/bench-security.sh [WORKDIR]   (WORKDIR on the disk to measure)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/bench-common.sh
bench_begin "$PWD/target/bench-security" "${1:-}"
pids=()
trap 'kill "${pids[@]}" 2>/dev/null || true' EXIT

# A CA and a server certificate for 127.0.0.1, and an HS256 secret.
tls=$work/tls
mkdir -p "$tls"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj /CN=bench-ca \
  -keyout "$tls/ca.key" -out "$tls/ca.pem" 2>/dev/null
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj /CN=127.0.0.1 \
  -keyout "$tls/server.key" -out "$tls/server.csr" 2>/dev/null
printf 'subjectAltName=IP:127.0.0.1\n' >"$tls/ext"
openssl x509 -req -in "$tls/server.csr" -CA "$tls/ca.pem" -CAkey "$tls/ca.key" -CAcreateserial -days 2 \
  -extfile "$tls/ext" -out "$tls/server.pem" 2>/dev/null
head -c 32 /dev/urandom >"$tls/secret"
admin_token=$("$strata" token create --subject admin --secret-file "$tls/secret")
app_token=$("$strata" token create --subject bench-app --secret-file "$tls/secret")
cat >"$work/secure.toml" <<TOML
[tls]
cert_file = "$tls/server.pem"
key_file = "$tls/server.key"
[auth]
enabled = true
secret_file = "$tls/secret"
superuser_roles = ["admin"]
TOML

# start NAME SCHEME [CONFIG]: a standalone under $work/NAME; sets url_NAME.
start() {
  local port log=$work/$1.log
  port=$(free_port)
  "$strata" standalone --data-dir "$work/$1" --listen "127.0.0.1:$port" --http-listen "127.0.0.1:$(free_port)" \
    ${3:+--config "$3"} 2>"$log" &
  pids+=($!)
  local deadline=$((SECONDS + 60))
  until grep -q "standalone ready" "$log" 2>/dev/null; do
    [ $SECONDS -lt $deadline ] || { echo "$1 did not start" >&2; cat "$log" >&2; exit 1; }
    sleep 0.1
  done
  printf -v "url_$1" '%s://127.0.0.1:%s' "$2" "$port"
}
start plain http
start secure https "$work/secure.toml"
secure_args=(--tls-ca-file "$tls/ca.pem")
STRATA_TOKEN=$admin_token "$strata" admin permissions grant --namespace public/default --role bench-app \
  --actions produce --url "$url_secure" "${secure_args[@]}"

w1() { "$strata" perf produce --topic "public/default/w1-$1" --messages 500000 --size 1024 --inflight 1000 --json "${@:2}" 2>/dev/null | tail -1; }
for i in 1 2 3 4 5; do
  echo "plain  $i: $(w1 "$i" --url "$url_plain")"
  echo "secure $i: $(STRATA_TOKEN=$app_token w1 "$i" --url "$url_secure" "${secure_args[@]}")"
done
