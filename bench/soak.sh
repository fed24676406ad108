#!/usr/bin/env bash
# Soak benchmark (not part of CI): three tokenvend release binaries on one throwaway
# PostgreSQL cluster (initdb/pg_ctl on a random port, as bench/outage.sh), 1,000 tenants
# of the local edX-like issuer with 120 s tokens, a webhook receiver subscribed to every
# event, then mixed traffic for DURATION seconds with a fault every few minutes (a replica
# killed with SIGKILL, PostgreSQL restarted in immediate mode, edX slow, edX failing).
# See bench/soak.rs. Prints a markdown report for BENCHMARKS.md; progress goes to stderr.
#
# Usage: bash bench/soak.sh [DURATION]    (seconds, default 1800; 300 for a short run)
# Env:   BIN  the tokenvend binary (default: target/release/tokenvend, built here first)
#        SOAK_TENANTS, SOAK_LIFETIME, SOAK_TOKEN_RATE, SOAK_PROXY_RATE (see bench/soak.rs)
set -euo pipefail
cd "$(dirname "$0")/.."
DURATION=${1:-1800}

BUILD=(--example bench_soak)
[ -n "${BIN:-}" ] || BUILD+=(--bin tokenvend)
cargo build --release "${BUILD[@]}" >/dev/null 2>&1 || cargo build --release "${BUILD[@]}"
TARGET=${CARGO_TARGET_DIR:-target}
DRIVER=$TARGET/release/examples/bench_soak
BIN=${BIN:-$TARGET/release/tokenvend}
ulimit -n 65536 2>/dev/null || true

PGBIN=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -n 1)
PGDIR=$(mktemp -d /tmp/tv-soak-pg-XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
AS_PG=()
if [ "$(id -u)" = 0 ]; then
  chown postgres: "$PGDIR"
  AS_PG=(runuser -u postgres --)
fi
"${AS_PG[@]}" "$PGBIN/initdb" -D "$PGDIR/data" -U postgres --auth=trust -E UTF8 --no-sync >/dev/null
PGCTL=("${AS_PG[@]}" "$PGBIN/pg_ctl" -D "$PGDIR/data" -l "$PGDIR/log" -w)
PGOPTS="-p $PORT -k $PGDIR -c listen_addresses=127.0.0.1"
"${PGCTL[@]}" -o "$PGOPTS" start >/dev/null
trap '"${PGCTL[@]}" -m immediate stop >/dev/null 2>&1 || true; rm -rf "$PGDIR"' EXIT

# The driver's PostgreSQL fault: a crash-like restart of this cluster.
RESTART=$PGDIR/restart.sh
printf '%q ' "${PGCTL[@]}" -m immediate -o "$PGOPTS" restart >"$RESTART"
echo '>/dev/null' >>"$RESTART"

SOAK_DATABASE_URL="postgres://postgres@127.0.0.1:$PORT/postgres" SOAK_PG_RESTART=$RESTART \
  "$DRIVER" "$DURATION" "$BIN"
