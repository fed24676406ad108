#!/usr/bin/env bash
# Scale benchmark: the tokenvend binary on PostgreSQL with N tenants holding tokens from
# the local edX-like issuer. For each N: seeds N tenants straight into a fresh database
# (tokenvend_scale, dropped afterwards), fills every tenant's token through the API, and
# reports the RSS holding them, the /tokens/status page, a restart (ready, every stored
# token adopted again, RSS, edX calls during it: must be 0), and (N = 10,000 or SPREAD=1)
# the hit path spread over 10,000 tenants against one tenant and a bare handler (wrk).
# Prints markdown for BENCHMARKS.md and one JSON line per N (see bench/scale.rs).
#
# Usage: bash bench/scale.sh [N...]          (default: 10000 100000)
# Env:   BIN                 tokenvend binary to measure (default: target/release/tokenvend,
#                            built here first; a given BIN is not rebuilt)
#        SCALE_DATABASE_URL  PostgreSQL server (default postgres://postgres@127.0.0.1:5432/postgres)
#        ROUNDS              wrk rounds (default 3)      SECONDS  seconds per wrk run (default 8)
#        SPREAD              1: hit-path part for every N; 0: never (default: N = 10000 only)
#
# Pinning (2 cores or more), for the hit-path part only: tokenvend and this driver (which
# serves the bare baseline) move to core 0, wrk runs alone on core 1; so the bare handler
# and tokenvend each serve from the same single core. Start-up, the fill (the issuer signs
# in this driver) and the restart use every core.
# Exits non-zero when anything failed (a non-200, a child that died, wrk errors); edX calls
# during the restart are reported, not fatal.

# bash's SECONDS counts the script's time: read the value it was started with first.
WRK_SECONDS=$SECONDS
[ "$WRK_SECONDS" -gt 0 ] 2>/dev/null || WRK_SECONDS=8
export WRK_SECONDS
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$#" -eq 0 ]; then
  set -- 10000 100000
fi
if ! command -v wrk >/dev/null; then
  apt-get update -qq && apt-get install -y -qq wrk >/dev/null
fi

# The tokenvend binary is built only when BIN does not name one to measure (so that a
# shared CARGO_TARGET_DIR's binary is not replaced by this tree's).
BUILD=(--example bench_scale)
[ -n "${BIN:-}" ] || BUILD+=(--bin tokenvend)
cargo build --release "${BUILD[@]}" >/dev/null 2>&1 || cargo build --release "${BUILD[@]}"
TARGET=${CARGO_TARGET_DIR:-target}
DRIVER=$TARGET/release/examples/bench_scale
BIN=${BIN:-$TARGET/release/tokenvend}
ulimit -n 65536 2>/dev/null || true

if [ "$(nproc --all)" -ge 2 ] && command -v taskset >/dev/null; then
  export SCALE_PIN=1
else
  export SCALE_PIN=0
fi

OUT=$(mktemp)
trap 'rm -f "$OUT"' EXIT
status=0
for n in "$@"; do
  echo "== N=$n: $BIN" >&2
  if "$DRIVER" "$n" "$BIN" >>"$OUT"; then
    :
  else
    echo "N=$n failed" >&2
    status=1
  fi
done
echo
echo "## tokenvend at scale ($(nproc --all) cores, $(date -u +%Y-%m-%d), BIN=$BIN)"
cat "$OUT"
exit "$status"
