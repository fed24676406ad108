#!/usr/bin/env bash
# Measures GET /tenants/{id}/token on a cache hit with tokenvend on PostgreSQL, while the
# database is up and while it is stopped (a throwaway cluster of this script's own, made
# with initdb/pg_ctl on a random port), in interleaved rounds. Prints markdown for
# BENCHMARKS.md. Usage: bash bench/outage.sh [seconds] [connections]
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-8}
CONNECTIONS=${2:-32}
ROUNDS=${ROUNDS:-3}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
cargo build --release --example bench_server >/dev/null 2>&1 || cargo build --release --example bench_server
BIN=target/release/examples/bench_server
ulimit -n 65536 2>/dev/null || true

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/tv-bench-pg-XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
[ "$(id -u)" = 0 ] && chown postgres: "$PGDIR"
as_pg "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
pg() { as_pg "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w "$@" >/dev/null; }
pg -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start

OUT=$(mktemp)
BENCH_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres" "$BIN" serve >"$OUT" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; pg -m immediate stop 2>/dev/null || true; rm -rf "$PGDIR" "$OUT"*' EXIT
for _ in $(seq 1 100); do grep -q '^ADMIN_KEY=' "$OUT" && break; sleep 0.1; done
# shellcheck disable=SC1090
source "$OUT"
READY_URL=${METRICS_URL%/metrics}/readyz

run() { # name round: one wrk run on the token URL; prints a table row
  local name=$1 round=$2
  wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency -H "Authorization: Bearer $KEY" \
    "$TOKENVEND_URL" >"$OUT.$name"
  local rps p50 p99 non2xx
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT.$name")
  p50=$(awk '$1=="50%" {print $2}' "$OUT.$name")
  p99=$(awk '$1=="99%" {print $2}' "$OUT.$name")
  non2xx=$(awk '/Non-2xx/ {print $NF}' "$OUT.$name")
  echo "| $round | $name | $(curl -s -o /dev/null -w '%{http_code}' "$READY_URL") | $rps | $p50 | $p99 | ${non2xx:-0} |"
  echo "$rps" >>"$OUT.rps.$name"
}

echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS interleaved rounds, $(nproc) cores, $(date -u +%Y-%m-%d)"
echo
echo "| round | database | /readyz | requests/s | p50 | p99 | non-2xx |"
echo "| --- | --- | --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  run up "$round"
  pg -m fast stop
  run down "$round"
  pg -o "-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1" start
  sleep 2 # reconnect and resynchronise
done
paste "$OUT.rps.down" "$OUT.rps.up" | awk '{ d += $1; u += $2 } END {
  printf "\nmean requests/s: database down %.0f, up %.0f; down / up: %.0f%%\n", d / NR, u / NR, 100 * d / u }'
curl -s -H "Authorization: Bearer $ADMIN_KEY" "$METRICS_URL" | grep -E '^tokenvend_(token_requests|upstream_requests)_total' || true
