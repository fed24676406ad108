#!/usr/bin/env bash
# Measures GET /tenants/{id}/token on a cache hit against a bare axum handler returning
# the same bytes (same machine, same run), with wrk from a second process, with a caller
# key without a rate limit and with one (a per-key limit it never reaches: the limiter's
# cost on the hit path) and with a workload identity JWT (cached after its first verify),
# then the cost of a first, uncached JWT verify, and counts the
# upstream calls made by concurrent requests on a cold tenant; then the proxy's overhead
# (an edX-like API call through /tenants/{id}/proxy/... against the same call made
# directly with the token, same run) and the memory held while 100 MB stream back
# through the proxy (and 10 MB, the request limit, up). Prints markdown for BENCHMARKS.md.
# Usage: bash bench/run.sh [seconds] [connections] (STREAM_MB=100 by default; BIN=path
# measures another build of bench_server, e.g. an earlier commit's, without building).
# With two cores or more, the server runs on core 0 and wrk on core 1 (taskset), so that
# the two do not take turns on one core; PIN=0 leaves both free to use every core.
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-10}
CONNECTIONS=${2:-32}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --example bench_server >/dev/null 2>&1 || cargo build --release --example bench_server
  BIN=target/release/examples/bench_server
fi
SERVER_CPU=() WRK_CPU=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0) WRK_CPU=(taskset -c 1)
fi
ulimit -n 65536 2>/dev/null || true

OUT=$(mktemp)
"${SERVER_CPU[@]}" "$BIN" serve >"$OUT" 2>/dev/null &
PID=$!
trap 'kill $PID 2>/dev/null || true; rm -f "$OUT"' EXIT
for _ in $(seq 1 100); do grep -q '^ADMIN_KEY=' "$OUT" && break; sleep 0.1; done
# shellcheck disable=SC1090
source "$OUT"

ROUNDS=${ROUNDS:-3}
run() { # name round url [header...]: one wrk run; prints a table row
  local name=$1 round=$2 url=$3
  shift 3
  "${WRK_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "$@" "$url" >"$OUT.$name"
  local rps p50 p99
  rps=$(awk '/Requests\/sec/ {print $2}' "$OUT.$name")
  p50=$(awk '$1=="50%" {print $2}' "$OUT.$name")
  p99=$(awk '$1=="99%" {print $2}' "$OUT.$name")
  echo "| $round | $name | $rps | $p50 | $p99 |"
  echo "$rps" >>"$OUT.rps.$name"
}

echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s, $ROUNDS interleaved rounds, $(nproc) cores, ${SERVER_CPU[*]:-unpinned} server, ${WRK_CPU[*]:-unpinned} wrk, $(date -u +%Y-%m-%d)"
echo
echo "| round | target | requests/s | p50 | p99 |"
echo "| --- | --- | --- | --- | --- |"
# Interleaved, so that the machine's noise falls on both targets alike.
for round in $(seq 1 "$ROUNDS"); do
  run bare "$round" "$BARE_URL"
  run tokenvend "$round" "$TOKENVEND_URL" -H "Authorization: Bearer $KEY"
  run tokenvend-ratelimited "$round" "$TOKENVEND_URL" -H "Authorization: Bearer $LIMITED_KEY"
  run tokenvend-jwt "$round" "$TOKENVEND_URL" -H "Authorization: Bearer $JWT"
done
paste "$OUT.rps.tokenvend" "$OUT.rps.tokenvend-ratelimited" "$OUT.rps.bare" "$OUT.rps.tokenvend-jwt" | awk '{ t += $1; l += $2; b += $3; j += $4 } END {
  printf "\nmean requests/s: tokenvend %.0f, with a per-key rate limit %.0f, with a workload identity JWT %.0f, bare %.0f\n", t / NR, l / NR, j / NR, b / NR
  printf "tokenvend / bare throughput: %.0f%%; with the rate limit: %.0f%%\n", 100 * t / b, 100 * l / b
  printf "JWT caller / tv_ key caller throughput: %.0f%%\n", 100 * j / t }'
echo
echo "proxy overhead: the local issuer's API through the proxy against the same API called directly"
echo
echo "| round | target | requests/s | p50 | p99 |"
echo "| --- | --- | --- | --- | --- |"
for round in $(seq 1 "$ROUNDS"); do
  run direct "$round" "$API_URL" -H "Authorization: $API_AUTHORIZATION"
  run proxy "$round" "$PROXY_URL" -H "Authorization: Bearer $KEY"
done
# p99 in milliseconds, whatever unit wrk chose.
ms() { awk '{ v = $1; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
  f = (u == "us") ? 0.001 : (u == "ms") ? 1 : (u == "s") ? 1000 : (u == "m") ? 60000 : 1;
  print v * f }'; }
for name in direct proxy; do
  awk '$1=="99%" {print $2}' "$OUT.$name" | ms >"$OUT.p99.$name"
done
paste "$OUT.rps.proxy" "$OUT.rps.direct" | awk '{ p += $1; d += $2 } END {
  printf "\nmean requests/s: proxy %.0f, direct %.0f; proxy / direct throughput: %.0f%%\n", p / NR, d / NR, 100 * p / d }'
paste "$OUT.p99.proxy" "$OUT.p99.direct" | awk '{ printf "last round p99: proxy %.2f ms, direct %.2f ms; proxy / direct p99: %.2f\n", $1, $2, $1 / $2 }'
curl -s -H "Authorization: Bearer $ADMIN_KEY" "$METRICS_URL" | grep -E '^tokenvend_(token_requests|upstream_requests|proxy_requests|proxy_401_retries|identity_authentications)_total' || true
kill $PID 2>/dev/null || true
rm -f "$OUT".*

echo
echo "cold tenant, 1000 concurrent requests:"
"$BIN" cold 1000 2>/dev/null

echo
echo "workload identity: mean latency of sequential requests, each with a fresh JWT (a first, uncached RS256 verify), with one cached JWT, and with the tv_ key:"
"$BIN" verify "${VERIFY_N:-2000}" 2>/dev/null

echo
echo "memory while ${STREAM_MB:-100} MB stream back through the proxy, after 10 MB (the request limit) went up (one process: tokenvend, the issuer and the client):"
"$BIN" stream "${STREAM_MB:-100}" 2>/dev/null
