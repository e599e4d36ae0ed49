#!/usr/bin/env bash
# Ingest benchmark on the local store: builds auditlog-service and auditlog-bench-ingest in
# release mode, starts a private FerretDB and a private RabbitMQ (free ports, temporary data
# directories), runs the benchmark — direct mode, then queue mode next to it — and removes both
# again. Figures go to stdout. FerretDB runs through infra/dev/ferretdb.sh scratch, RabbitMQ
# through infra/dev/rabbitmq.sh serve; the binaries are wherever cargo puts them
# (CARGO_TARGET_DIR).
#
#   benchmarks/ingest/run.sh                      # defaults: 5 s per figure, 1,16,64,256 producers
# Besides events/s and latency it prints CPU seconds per 1000 events of FerretDB, the service
# and the load generator (from /proc), and each target with whether this run met it — among
# them a scoped API key in a 1,000-entry key file against a single key (under 5 % apart).
#   BENCH_SECONDS=10 benchmarks/ingest/run.sh
#   MONGODB_URI=mongodb://host:27017 benchmarks/ingest/run.sh   # measure another store instead
#   BENCH_AMQP_URL=amqp://... benchmarks/ingest/run.sh          # another RabbitMQ for queue mode
#   BENCH_OUTAGE_SECONDS=60 (default)                       # the queue-mode store outage
#   BENCH_ONLY=keys benchmarks/ingest/run.sh                    # only the scoped-key comparison
#   BENCH_ONLY=queue benchmarks/ingest/run.sh                   # only queue mode and its outage
#   BENCH_ONLY=open benchmarks/ingest/run.sh                    # only the open loop at half of peak
#   BENCH_ONLY=pairs BENCH_PAIRS=6 benchmarks/ingest/run.sh     # direct and queue mode at 64
#                                                           # producers, pair after pair
#   BENCH_ONLY=producer benchmarks/ingest/run.sh                # auditlog-client's batching
#                                                           # producer against single-event
#                                                           # producers and the batch POST
#                                                           # (no RabbitMQ started)
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

# shellcheck source=infra/dev/lib/cargo.sh
source "$repo/infra/dev/lib/cargo.sh"
# shellcheck source=infra/dev/lib/server.sh
source "$repo/infra/dev/lib/server.sh"
cargo build --release --quiet -p auditlog-service --bin auditlog-service \
  -p auditlog-benchmarks --bin auditlog-bench-ingest
bench_bin="$(cargo_bin auditlog-bench-ingest release)"

# Stops what this script started: RabbitMQ (SIGTERM to its process group, then SIGKILL) and
# FerretDB (whose temporary directory scratch-stop removes).
FERRETDB_SCRATCH_DIR=""
cleanup() {
  if [ -n "${rabbit_pid:-}" ]; then
    kill -TERM -- "-$rabbit_pid" 2>/dev/null || true
    for _ in $(seq 1 100); do kill -0 "$rabbit_pid" 2>/dev/null || break; sleep 0.2; done
    kill -KILL -- "-$rabbit_pid" 2>/dev/null || true
    rm -rf "$rdata"
  fi
  if [ -n "$FERRETDB_SCRATCH_DIR" ]; then
    bash infra/dev/ferretdb.sh scratch-stop "$FERRETDB_SCRATCH_DIR" >/dev/null || true
  fi
}

if [ -z "${MONGODB_URI:-}" ]; then
  # Sets FERRETDB_SCRATCH_DIR, _PID (FerretDB itself, which the outage run SIGSTOPs), _PORT
  # and MONGODB_URI.
  ferretdb_vars="$(bash infra/dev/ferretdb.sh scratch)"
  eval "$ferretdb_vars"
  trap cleanup EXIT
  # shellcheck disable=SC2153  # FERRETDB_SCRATCH_PID: set by the eval
  export MONGODB_URI BENCH_STORE_PID="$FERRETDB_SCRATCH_PID"
  ferretdb="$(bash infra/dev/ferretdb.sh path)"
  echo "FerretDB $("$ferretdb" --version 2>/dev/null | sed -n 's/^version:[[:space:]]*//p' | sed -n 1p) on 127.0.0.1:$FERRETDB_SCRATCH_PORT (SQLite in $FERRETDB_SCRATCH_DIR)"
fi

# The producer figures are direct mode only: no RabbitMQ beside them, taking its share of CPU.
if [ -z "${BENCH_AMQP_URL:-}" ] && [ "${BENCH_ONLY:-}" != producer ]; then
  bash infra/dev/rabbitmq.sh install
  rport="$(srv_free_port)"
  rdist="$(srv_free_port)"
  rdata="$(mktemp -d -t auditlog-bench-rabbitmq-XXXXXX)"
  # setsid: RabbitMQ's wrapper and its Erlang VM form one process group, stopped together.
  setsid bash infra/dev/rabbitmq.sh serve "$rdata" "$rport" "$rdist" >"$rdata/serve.out" 2>&1 </dev/null &
  rabbit_pid=$!
  trap cleanup EXIT
  for _ in $(seq 1 450); do
    (exec 3<>"/dev/tcp/127.0.0.1/$rport") 2>/dev/null && break
    kill -0 "$rabbit_pid" 2>/dev/null || { cat "$rdata/serve.out" >&2; exit 1; }
    sleep 0.2
  done
  export BENCH_AMQP_URL="amqp://guest:guest@127.0.0.1:$rport/%2f"
  # Its Erlang VM, whose command line names the data directory: for its CPU time.
  BENCH_BROKER_PID="$(pgrep -f -- "beam.smp.*-auditlog_data_dir $rdata" | head -n 1 || true)"
  export BENCH_BROKER_PID
  echo "RabbitMQ $(dpkg-query -W -f='${Version}' rabbitmq-server 2>/dev/null) on 127.0.0.1:$rport (data in $rdata)"
fi

"$bench_bin" "$@"
