#!/usr/bin/env bash
# Owns `make run`: the service on this machine, with no other set-up.
#
#   infra/dev/run.sh        check the prerequisites (infra/dev/prereqs.sh run), start the local
#                           FerretDB unless MONGODB_URI is set, build auditlog-service, print
#                           where it listens and its API key, and run it in the foreground
#   infra/dev/run.sh stop   stop the service a `make run` started (`make stop` runs this)
#
# - MONGODB_URI unset → starts the local FerretDB (infra/dev/ferretdb.sh start) and uses it.
#   If make run fails (build error, the service exits with an error), a FerretDB it started is
#   stopped again; when the service stops normally (Ctrl-C, SIGTERM, `make stop`) FerretDB keeps
#   running for the next `make run`, and `make stop` stops it.
# - AUDIT_API_KEY unset → generates one and prints it.
# - Listens on AUDIT_LISTEN_ADDR (default 127.0.0.1:8080).
# - The binary is wherever cargo puts it (CARGO_TARGET_DIR is honoured).
# - AUDITLOG_RUN_DIR (<repo>/data/run) holds the service's pid file.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
# shellcheck source=infra/dev/lib/server.sh
source "$here/lib/server.sh"
# shellcheck source=infra/dev/lib/cargo.sh
source "$here/lib/cargo.sh"

run_dir="${AUDITLOG_RUN_DIR:-$repo/data/run}"
srv_define auditlog-service run.sh "$run_dir" "$run_dir/auditlog-service.pid" /dev/null auditlog-service
log() { srv_log "$@"; }

if [ "${1:-}" = stop ]; then
  srv_lock
  # The service drains its queue on SIGTERM (AUDIT_SHUTDOWN_GRACE_SECS, 30 s by default).
  srv_stop 45
  exit 0
fi
[ $# -eq 0 ] || { echo "usage: $0 [stop]" >&2; exit 2; }

bash "$here/prereqs.sh" run

export AUDIT_LISTEN_ADDR="${AUDIT_LISTEN_ADDR:-127.0.0.1:8080}"
host="${AUDIT_LISTEN_ADDR%:*}"
port="${AUDIT_LISTEN_ADDR##*:}"
[ "$host" = "0.0.0.0" ] && host="127.0.0.1"

if pid="$(srv_pid)"; then
  log "make run is already running (auditlog-service pid $pid); \`make stop\` stops it"
  exit 1
fi
if (exec 3<>"/dev/tcp/$host/$port") 2>/dev/null; then
  log "$host:$port is already in use; set AUDIT_LISTEN_ADDR to a free address (e.g. 127.0.0.1:8081)"
  exit 1
fi

started_ferretdb=0
service_stopped_normally=0
# shellcheck disable=SC2317  # called by the EXIT trap
on_exit() {
  if [ "$started_ferretdb" = 1 ] && [ "$service_stopped_normally" = 0 ]; then
    log "make run failed: stopping the FerretDB it started"
    bash "$here/ferretdb.sh" stop >&2 || true
  fi
}
trap on_exit EXIT

if [ -z "${MONGODB_URI:-}" ]; then
  bash "$here/ferretdb.sh" status >/dev/null 2>&1 || started_ferretdb=1
  bash "$here/ferretdb.sh" start
  export MONGODB_URI="mongodb://127.0.0.1:${FERRETDB_PORT:-27017}"
fi
if [ -z "${AUDIT_API_KEY:-}" ]; then
  AUDIT_API_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  export AUDIT_API_KEY
  key_line="$AUDIT_API_KEY  (generated; set AUDIT_API_KEY to choose one)"
else
  key_line="from AUDIT_API_KEY"
fi

# shellcheck disable=SC2086  # CARGO_PROFILE_FLAG is a list of flags, e.g. "--release"
cargo build --bin auditlog-service ${CARGO_PROFILE_FLAG:-}
bin="$(cargo_bin auditlog-service "${CARGO_PROFILE_DIR:-debug}")"

cat <<MSG

  auditlog-service on http://$host:$port  (MongoDB: $MONGODB_URI)
  Explorer:    http://$host:$port/ui     (sign in with the API key below)
  Swagger UI:  http://$host:$port/docs
  Health:      http://$host:$port/healthz
  API key:     $key_line
  Try:         curl -s -H "X-Api-Key: $AUDIT_API_KEY" -H 'Content-Type: application/json' \\
                 -d '{"type":"login","consumer":"c1","payload":{"ok":true}}' http://$host:$port/v1/event
  Stop:        Ctrl-C, or \`make stop\` from another terminal

MSG

# In the foreground (a Ctrl-C reaches the service), with its pid in the pid file for
# `make stop`: the shell writes its own pid, then execs the service in its place.
mkdir -p "$run_dir"
trap ':' INT
status=0
sh -c 'echo $$ >"$1"; exec "$2"' sh "$SRV_PID_FILE" "$bin" || status=$?
rm -f "$SRV_PID_FILE"
case "$status" in
  0 | 130 | 143)
    service_stopped_normally=1
    log "auditlog-service stopped"
    if [ "$started_ferretdb" = 1 ]; then
      log "FerretDB keeps running on 127.0.0.1:${FERRETDB_PORT:-27017} for the next make run; \`make stop\` stops it"
    fi
    exit 0
    ;;
  *)
    log "auditlog-service exited with status $status"
    exit "$status"
    ;;
esac
