#!/usr/bin/env bash
# Archive benchmark (`make bench-archive`): two scenarios in a private FerretDB — one day (24
# hourly windows, BENCH_EVENTS events) and a 7-day backlog (168 hourly windows,
# BENCH_BACKLOG_EVENTS events) — each archived to local Parquet files by the release build of
# `auditlog-archiver once` and by the peer a user would pick instead, pymongoarrow's
# find_arrow_all + pyarrow.parquet.write_table, over the same range. Prints per scenario and
# tool: events/s, client CPU seconds (the tool's own process), peak RSS, the server's CPU
# seconds; the ratios, and the targets met or not (bench.py says how each is measured).
# FerretDB is started and stopped with infra/dev/ferretdb.sh (its own port and data dir); the
# archiver binary is wherever cargo puts it (CARGO_TARGET_DIR is honoured).
#
# Settings (environment):
#   BENCH_EVENTS        events of the one-day scenario (default 1000000)
#   BENCH_BACKLOG_EVENTS  events of the 7-day backlog (default 2000000: 7,000,000 would take
#                       FerretDB most of an hour to load and sort; the output says which ran
#                       and compares costs per event)
#   BENCH_SCENARIOS     day,backlog,integrity (default) or some of them; integrity: an archive
#                       run with signing off and on, and verify --public-key against sha256sum
#   BENCH_INTEGRITY_EVENTS  events of the integrity scenario (default 500000)
#   BENCH_PORT          FerretDB port for the benchmark (default: a free port; own data dir)
#   BENCH_DIR           scratch directory (default <repo>/data/bench-archive; wiped each run)
#   BENCH_KEEP_DATA=1   reuse loaded events when the count matches (faster re-runs)
#   BENCH_COMPRESSION   snappy (default) or zstd, for both tools
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
events="${BENCH_EVENTS:-1000000}"
backlog_events="${BENCH_BACKLOG_EVENTS:-2000000}"
# shellcheck source=infra/dev/lib/server.sh
source "$repo/infra/dev/lib/server.sh"
port="${BENCH_PORT:-$(srv_free_port)}"
dir="${BENCH_DIR:-$repo/data/bench-archive}"
compression="${BENCH_COMPRESSION:-snappy}"

log() { printf 'bench-archive: %s\n' "$*" >&2; }

export FERRETDB_PORT="$port"
export FERRETDB_DATA_DIR="$dir/ferretdb"
if [ "${BENCH_KEEP_DATA:-0}" != 1 ]; then
  bash "$repo/infra/dev/ferretdb.sh" stop >/dev/null 2>&1 || true
  rm -rf "$dir"
fi
mkdir -p "$dir"
if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && [ ! -f "$FERRETDB_DATA_DIR/ferretdb.pid" ]; then
  log "port $port is served by someone else's server; set BENCH_PORT to a free port"
  exit 1
fi
bash "$repo/infra/dev/ferretdb.sh" start >&2
trap 'bash "$repo/infra/dev/ferretdb.sh" stop >/dev/null 2>&1 || true' EXIT

python="$(bash "$repo/infra/dev/python-env.sh")"
log "building auditlog-archiver (release)"
(cd "$repo" && cargo build --release --quiet -p auditlog-archiver)
# shellcheck source=infra/dev/lib/cargo.sh
source "$repo/infra/dev/lib/cargo.sh"
archiver_bin="$(cargo_bin auditlog-archiver release)"

export MONGODB_URI="mongodb://127.0.0.1:$port/"
export AUDIT_COLLECTION="events"
export BENCH_EVENTS="$events" BENCH_BACKLOG_EVENTS="$backlog_events" BENCH_DIR="$dir"
export BENCH_COMPRESSION="$compression"
# The server's own CPU time, to tell where the wall time went.
BENCH_SERVER_PID="$(bash "$repo/infra/dev/ferretdb.sh" pid || true)"
export BENCH_SERVER_PID
export ARCHIVER_BIN="$archiver_bin"
"$python" "$here/bench.py"
