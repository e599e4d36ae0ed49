#!/usr/bin/env bash
# Archive benchmark (`make bench-archive`): loads N events (default 1,000,000) into a private
# FerretDB, archives them to local Parquet files with the release build of
# `auditlog-archiver once`, and runs the peer a user would pick instead — pymongoarrow's
# find_arrow_all + pyarrow.parquet.write_table — on the same data. Prints events/s and peak
# RSS of both, side by side, with the ratios. FerretDB is started and stopped with
# infra/dev/ferretdb.sh (its own port and data dir); the archiver binary is wherever cargo puts
# it (CARGO_TARGET_DIR is honoured).
#
# Settings (environment):
#   BENCH_EVENTS        events to load (default 1000000)
#   BENCH_PORT          FerretDB port for the benchmark (default: a free port; own data dir)
#   BENCH_DIR           scratch directory (default <repo>/data/bench-archive; wiped each run)
#   BENCH_KEEP_DATA=1   reuse loaded events when the count matches (faster re-runs)
#   BENCH_COMPRESSION   snappy (default) or zstd, for both tools
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
events="${BENCH_EVENTS:-1000000}"
port="${BENCH_PORT:-$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')}"
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
export AUDIT_DB_NAME="bench"
export AUDIT_COLLECTION="events"
export BENCH_EVENTS="$events" BENCH_DIR="$dir" BENCH_COMPRESSION="$compression"
export ARCHIVER_BIN="$archiver_bin"
"$python" "$here/bench.py"
