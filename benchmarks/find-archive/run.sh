#!/usr/bin/env bash
# Find-over-the-archive benchmark (`make bench-find-archive`): the service's latency for
# queries answered from the Parquet archive, against DuckDB's read_parquet(…, hive_partitioning
# = true) with the same filters over the same files, and the service's peak RSS; then
# `/v1/histogram` (the explorer's chart) over the archive, its buckets checked against DuckDB's
# GROUP BY, and over a day of BENCH_HOT_EVENTS (default 100,000) events in MongoDB.
#
#   benchmarks/find-archive/run.sh                     # 10,000,000 events over 30 days
#   BENCH_EVENTS=2000000 benchmarks/find-archive/run.sh
#   BENCH_REPEAT=21 (default 11)                      # timed runs per query and tool
#
# The archive is written by auditlog-bench-find-gen with the archiver's own encoding (schema,
# writer properties, bloom filters, layout) and recorded in archive_windows of a private
# FerretDB as purged windows — what `auditlog-archiver once` then `purge` leave — because
# pushing 10 M events through FerretDB and the archiver takes hours on a 2-core machine. The
# archive and FerretDB's data stay in <target>/bench-find-archive/<events>-<encoding>/ so a
# rerun with the same BENCH_EVENTS and the same encoding (a digest of archiver/src/encode.rs,
# which holds the writer properties) skips the generation; delete the directory to start afresh.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

# shellcheck source=infra/dev/lib/cargo.sh
source "$repo/infra/dev/lib/cargo.sh"
# shellcheck source=infra/dev/lib/server.sh
source "$repo/infra/dev/lib/server.sh"
events="${BENCH_EVENTS:-10000000}"
repeat="${BENCH_REPEAT:-11}"
cargo build --release --quiet -p auditlog-service --bin auditlog-service \
  -p auditlog-benchmarks --bin auditlog-bench-find-gen
service_bin="$(cargo_bin auditlog-service release)"
gen_bin="$(cargo_bin auditlog-bench-find-gen release)"
python="$(bash infra/dev/python-env.sh)"

encoding="$(sha256sum archiver/src/encode.rs | cut -c1-12)"
work="$(cargo_target_dir)/bench-find-archive/$events-$encoding"
mkdir -p "$work/store"

FERRETDB_SCRATCH_DIR=""
cleanup() {
  if [ -n "${service_pid:-}" ]; then kill "$service_pid" 2>/dev/null || true; wait "$service_pid" 2>/dev/null || true; fi
  if [ -n "$FERRETDB_SCRATCH_DIR" ]; then bash infra/dev/ferretdb.sh scratch-stop "$FERRETDB_SCRATCH_DIR" >/dev/null || true; fi
}
trap cleanup EXIT

# On $work/store, which it keeps (it did not create it): sets FERRETDB_SCRATCH_DIR, MONGODB_URI.
ferretdb_vars="$(bash infra/dev/ferretdb.sh scratch "$work/store")"
eval "$ferretdb_vars"
export MONGODB_URI AUDIT_DB_NAME=bench AUDIT_COLLECTION=events

if [ ! -f "$work/summary.json" ]; then
  echo "writing $events events over 30 days into $work/archive (once per BENCH_EVENTS)"
  rm -rf "$work/archive"
  started=$(date +%s)
  "$gen_bin" --out "$work/archive" --events "$events" >"$work/summary.json.tmp"
  mv "$work/summary.json.tmp" "$work/summary.json"
  echo "written in $(( $(date +%s) - started )) s"
fi

sport="$(srv_free_port)"
key="bench-$(date +%s)"
# A minute per query: the hot histogram on FerretDB scans every live event (see docs/api.md).
AUDIT_API_KEY="$key" AUDIT_LISTEN_ADDR="127.0.0.1:$sport" AUDIT_ARCHIVE_URL="$work/archive" \
  AUDIT_FIND_TIMEOUT_MS=60000 \
  AUDIT_LOG_FORMAT=text RUST_LOG=warn "$service_bin" >"$work/service.log" 2>&1 </dev/null &
service_pid=$!
for _ in $(seq 1 300); do
  curl -fsS "http://127.0.0.1:$sport/healthz" >/dev/null 2>&1 && break
  kill -0 "$service_pid" 2>/dev/null || { cat "$work/service.log" >&2; exit 1; }
  sleep 0.2
done

echo "machine: $(nproc) cores, load average $(cut -d' ' -f1-3 /proc/loadavg)"
"$python" "$here/find_archive.py" --url "http://127.0.0.1:$sport" --key "$key" \
  --archive "$work/archive/bench/events" --summary "$work/summary.json" --pid "$service_pid" \
  --repeat "$repeat" ${BENCH_METRICS:+--metrics}
echo "load average after: $(cut -d' ' -f1-3 /proc/loadavg)"
