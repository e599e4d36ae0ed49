#!/usr/bin/env bash
# Ingest benchmark on the local store: builds auditlog-service and auditlog-bench-ingest in
# release mode, starts a private FerretDB (free port, temporary data directory), runs the
# benchmark, and removes the FerretDB again. Figures go to stdout.
#
#   service/bench/run.sh                      # defaults: 5 s per figure, 1,16,64,256 producers
#   BENCH_SECONDS=10 service/bench/run.sh
#   MONGODB_URI=mongodb://host:27017 service/bench/run.sh   # measure another store instead
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

cargo build --release --quiet -p auditlog-service --bin auditlog-service --bin auditlog-bench-ingest

if [ -z "${MONGODB_URI:-}" ]; then
  ferretdb="$(bash infra/dev/ferretdb.sh path)"
  port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  data="$(mktemp -d -t auditlog-bench-XXXXXX)"
  "$ferretdb" --handler=sqlite --sqlite-url="file:$data/" --state-dir="$data" \
    --listen-addr="127.0.0.1:$port" --debug-addr=- --telemetry=disable --log-level=warn \
    >"$data/ferretdb.log" 2>&1 </dev/null &
  ferret_pid=$!
  trap 'kill "$ferret_pid" 2>/dev/null || true; wait "$ferret_pid" 2>/dev/null || true; rm -rf "$data"' EXIT
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.1
  done
  export MONGODB_URI="mongodb://127.0.0.1:$port/"
  echo "FerretDB $("$ferretdb" --version 2>/dev/null | sed -n 's/^version:[[:space:]]*//p' | head -n1) on 127.0.0.1:$port (SQLite in $data)"
fi

target/release/auditlog-bench-ingest "$@"
