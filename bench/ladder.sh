#!/usr/bin/env bash
# The hit-path cost ladder (issue 25): builds bench/ladder.rs in release mode, starts it
# (every rung in one process, pinned to core 0), then loads each rung with
# `wrk -t1 -c$CONNECTIONS` pinned to core 1, in ROUNDS interleaved rounds (every rung once
# per round, in order), and prints a markdown table of the medians: requests/s, µs per
# request on the one server core (1e6 / requests/s), the step from the rung above, the
# ratio to the bare handler, p99 against the bare p99, and the server's CPU time per
# request (all its threads, from /proc/PID/task/*/schedstat) and its ratio to the bare
# handler's. The spread rungs name one of TENANTS tenants (default 10,000, created and
# fetched at start-up) at random per request (bench/spread.lua; TENANTS=0 skips them).
# Usage: bash bench/ladder.sh [seconds] [connections]  (ROUNDS=5 by default; BIN=path
# measures another build of bench_ladder without building; BEFORE=path also runs an
# earlier build's ladder, both servers on core 0, every rung of both in the same
# interleaved rounds, and prints its table first; PIN=0 leaves both unpinned).
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-5}
CONNECTIONS=${2:-32}
ROUNDS=${ROUNDS:-5}

if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi
if [ -z "${BIN:-}" ]; then
  cargo build --release --example bench_ladder >/dev/null 2>&1 || cargo build --release --example bench_ladder
  BIN=${CARGO_TARGET_DIR:-target}/release/examples/bench_ladder
fi
SERVER_CPU=() WRK_CPU=()
if [ "${PIN:-1}" != 0 ] && [ "$(nproc)" -ge 2 ] && command -v taskset >/dev/null; then
  SERVER_CPU=(taskset -c 0) WRK_CPU=(taskset -c 1)
fi
ulimit -n 65536 2>/dev/null || true

OUT=$(mktemp -d)
PIDS=()
trap 'kill "${PIDS[@]}" 2>/dev/null || true; rm -rf "$OUT"' EXIT
BUILDS=()
[ -n "${BEFORE:-}" ] && BUILDS+=("$BEFORE")
BUILDS+=("$BIN")
LABELS=() URLS=() CALLERS=() BUILD_OF=() KEYS=() LIMITED_KEYS=() JWTS=() SPREAD_KEYS=() TENANT_COUNTS=()
for b in "${!BUILDS[@]}"; do
  "${SERVER_CPU[@]}" "${BUILDS[$b]}" >"$OUT/server.$b" 2>/dev/null &
  PIDS+=($!)
  # Up to 20 minutes: the spread rungs' tenants are created and fetched first.
  for _ in $(seq 1 12000); do grep -q '^READY=1' "$OUT/server.$b" && break; sleep 0.1; done
  grep -q '^READY=1' "$OUT/server.$b" || { echo "${BUILDS[$b]} did not start" >&2; exit 1; }
  KEYS[$b]=$(sed -n 's/^KEY=//p' "$OUT/server.$b")
  LIMITED_KEYS[$b]=$(sed -n 's/^LIMITED_KEY=//p' "$OUT/server.$b")
  JWTS[$b]=$(sed -n 's/^JWT=//p' "$OUT/server.$b")
  SPREAD_KEYS[$b]=$(sed -n 's/^SPREAD_KEY=//p' "$OUT/server.$b")
  TENANT_COUNTS[$b]=$(sed -n 's/^TENANTS=//p' "$OUT/server.$b")
  while IFS=$'\t' read -r tag label url caller; do
    [ "$tag" = RUNG ] || continue
    LABELS+=("$label") URLS+=("$url") CALLERS+=("$caller") BUILD_OF+=("$b")
  done <"$OUT/server.$b"
done

# Nanoseconds on a CPU so far, summed over the threads of process $1.
cpu_ns() { cat /proc/"$1"/task/*/schedstat 2>/dev/null | awk '{ t += $1 } END { printf "%.0f", t }'; }

# p99 in microseconds, whatever unit wrk chose.
us() { awk '{ v = $1; u = v; gsub(/[0-9.]/, "", u); sub(/[a-z]+$/, "", v);
  f = (u == "us") ? 1 : (u == "ms") ? 1000 : (u == "s") ? 1e6 : 1; print v * f }'; }

for round in $(seq 1 "$ROUNDS"); do
  for i in "${!URLS[@]}"; do
    b=${BUILD_OF[$i]}
    script=() tenants=1
    case ${CALLERS[$i]} in
      key) auth=(-H "Authorization: Bearer ${KEYS[$b]}") ;;
      limited) auth=(-H "Authorization: Bearer ${LIMITED_KEYS[$b]}") ;;
      jwt) auth=(-H "Authorization: Bearer ${JWTS[$b]}") ;;
      spread-one) auth=(-H "Authorization: Bearer ${SPREAD_KEYS[$b]}") script=(-s bench/spread.lua) ;;
      spread) auth=(-H "Authorization: Bearer ${SPREAD_KEYS[$b]}") script=(-s bench/spread.lua)
        tenants=${TENANT_COUNTS[$b]} ;;
      *) auth=() ;;
    esac
    # The server's CPU time (every thread's, from the scheduler) over the run: its cost
    # per request holds better than requests/s on a machine that others load too.
    cpu_before=$(cpu_ns "${PIDS[$b]}")
    TENANTS=$tenants "${WRK_CPU[@]}" wrk -t1 -c"$CONNECTIONS" -d"${DURATION}s" --latency "${auth[@]}" "${script[@]}" \
      "${URLS[$i]}" >"$OUT/wrk"
    cpu_after=$(cpu_ns "${PIDS[$b]}")
    requests=$(awk '/requests in/ {print $1}' "$OUT/wrk")
    awk -v a="$cpu_before" -v b="$cpu_after" -v n="$requests" 'BEGIN { printf "%.3f\n", (b - a) / 1000 / n }' >>"$OUT/cpu.$i"
    refused=$(awk '/Non-2xx/ {print $5}' "$OUT/wrk")
    if [ -n "$refused" ] && [ "${CALLERS[$i]}" != limited ]; then
      echo "rung $i (${LABELS[$i]}) answered errors:" >&2; cat "$OUT/wrk" >&2; exit 1
    fi
    # The limited key is at the highest rate a key may have (100,000/s): a rung that
    # outruns it gets 429s for the excess, the right answer. Its requests/s then counts
    # the 200s only.
    [ -n "$refused" ] && echo "rung $i (${LABELS[$i]}): $refused of $requests answers 429 (the limited key's ceiling)" >&2
    awk -v refused="${refused:-0}" '/requests in/ { s = $4; sub(/s,?$/, "", s); print ($1 - refused) / s }' "$OUT/wrk" >>"$OUT/rps.$i"
    awk '$1=="99%" {print $2}' "$OUT/wrk" | us >>"$OUT/p99.$i"
  done
  echo "round $round of $ROUNDS done" >&2
done

median() { sort -g "$1" | awk '{ v[NR] = $1 } END { print (NR % 2) ? v[(NR + 1) / 2] : (v[NR / 2] + v[NR / 2 + 1]) / 2 }'; }
echo "wrk -t1 -c$CONNECTIONS -d${DURATION}s per rung, $ROUNDS interleaved rounds, medians; $(nproc) cores," \
  "${SERVER_CPU[*]:-unpinned} server, ${WRK_CPU[*]:-unpinned} wrk; $(git rev-parse --short HEAD 2>/dev/null || echo '?'), $(date -u +%Y-%m-%d)"
echo
for b in "${!BUILDS[@]}"; do
echo
echo "${BUILDS[$b]}:"
echo
echo "| # | rung | requests/s | µs/request | step µs | / bare | p99 µs | p99 / bare p99 | CPU µs/request | CPU / bare |"
echo "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"
first="" prev_us=""
for i in "${!URLS[@]}"; do
  [ "${BUILD_OF[$i]}" = "$b" ] || continue
  if [ -z "$first" ]; then
    first=$i bare_rps=$(median "$OUT/rps.$i") bare_p99=$(median "$OUT/p99.$i") bare_cpu=$(median "$OUT/cpu.$i")
  fi
  rps=$(median "$OUT/rps.$i") p99=$(median "$OUT/p99.$i") cpu=$(median "$OUT/cpu.$i")
  us_req=$(awk -v r="$rps" 'BEGIN { printf "%.2f", 1e6 / r }')
  case ${LABELS[$i]} in
    # The JWT rungs step from the tv_ key's middleware rung (the last before a caller).
    "JWT: + caller"*) prev_us=$JWT_BASE ;;
  esac
  step=$([ -n "$prev_us" ] && awk -v a="$us_req" -v b="$prev_us" 'BEGIN { printf "%+.2f", a - b }' || echo "")
  case ${LABELS[$i]} in
    "+ trace span"*) JWT_BASE=$us_req ;;
  esac
  printf "| %d | %s | %.0f | %s | %s | %.2f | %.0f | %.2f | %.2f | %.2f |\n" "$((i - first))" "${LABELS[$i]}" "$rps" "$us_req" \
    "$step" "$(awk -v a="$rps" -v b="$bare_rps" 'BEGIN { print a / b }')" "$p99" \
    "$(awk -v a="$p99" -v b="$bare_p99" 'BEGIN { print a / b }')" "$cpu" \
    "$(awk -v a="$cpu" -v b="$bare_cpu" 'BEGIN { print a / b }')"
  case ${LABELS[$i]} in
    # The product rows are the real router's again, not a step from each other.
    "the product"*|"JWT: the product") ;;
    *) prev_us=$us_req ;;
  esac
done
done
