#!/usr/bin/env bash
# Owns the local S3 server for development and tests (its pid file, url and log under
# $S3_DATA_DIR; started and stopped through infra/dev/lib/server.sh).
# An S3-compatible server for development and tests, without Docker: moto's server mode
# (`moto_server`, Apache-2.0, pinned in infra/dev/requirements.txt), on 127.0.0.1.
#
#   infra/dev/s3.sh install   install moto into the shared tools venv (infra/dev/python-env.sh)
#   infra/dev/s3.sh start     start it unless ours is already running; wait until it answers;
#                             print the endpoint URL (http://127.0.0.1:PORT)
#   infra/dev/s3.sh stop      stop it (all buckets and objects are gone: moto keeps them in memory;
#                             `make stop` and the end of `make test` run this)
#   infra/dev/s3.sh pid       print the pid of the server `start` started (exit 1: none)
#   infra/dev/s3.sh status    exit 0 when it is running and answers
#   infra/dev/s3.sh url       print the running server's endpoint URL (exit 1 when not running)
#
# It creates no bucket: tests create their own (any access key / secret is accepted; use region
# us-east-1 and path-style requests). `POST $URL/moto-api/reset` wipes all state.
#
# Settings (environment): S3_PORT (default: a free port chosen at start), S3_DATA_DIR (pid, url
# and log; default <repo>/data/s3), S3_START_TIMEOUT (seconds, default 60).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
data_dir="${S3_DATA_DIR:-$repo/data/s3}"
start_timeout="${S3_START_TIMEOUT:-60}"
pid_file="$data_dir/moto.pid"
url_file="$data_dir/url"
log_file="$data_dir/moto.log"

# shellcheck source=infra/dev/lib/server.sh
source "$here/lib/server.sh"
srv_define "S3 moto server" s3.sh "$data_dir" "$pid_file" "$log_file" moto_server
SRV_LOCK_TIMEOUT="$start_timeout"
log() { srv_log "$@"; }
die() { log "$*"; exit 1; }

venv_bin() { bash "$here/python-env.sh" --bin; }

install() { venv_bin >/dev/null; }

# HTTP check: moto answers GET / (ListBuckets) with 200.
answers() {
  "$bin/python" - "$1" <<'EOF' 2>/dev/null
import sys, urllib.request
with urllib.request.urlopen(sys.argv[1] + "/", timeout=2) as r:
    sys.exit(0 if r.status == 200 else 1)
EOF
}

current_url() {
  [ -s "$url_file" ] || return 1
  local url
  url="$(head -n1 "$url_file")"
  answers "$url" || return 1
  echo "$url"
}

start() {
  bin="$(venv_bin)"
  srv_lock || exit 1
  local pid url port
  if pid="$(srv_pid)"; then
    srv_wait_up "$pid" "$start_timeout" current_url || exit 1
    url="$(current_url)"
    if [ -n "${S3_PORT:-}" ] && [ "${url##*:}" != "$S3_PORT" ]; then
      log "WARNING: running server is at $url, not on S3_PORT=$S3_PORT (stop it first to change)"
    fi
    log "already running (pid $pid)"
    echo "$url"
    return 0
  fi
  port="${S3_PORT:-$(srv_free_port)}"
  url="http://127.0.0.1:$port"
  if srv_port_answers "$port"; then
    die "port $port is already in use by something else"
  fi
  rm -f "$url_file" "$pid_file"
  log "starting moto_server on $url (log: $log_file)"
  srv_launch "$bin/moto_server" -H 127.0.0.1 -p "$port"
  echo "$url" >"$url_file"
  if ! srv_wait_up "$SRV_LAUNCHED" "$start_timeout" current_url; then
    rm -f "$url_file"
    exit 1
  fi
  log "up at $url (pid $SRV_LAUNCHED)"
  echo "$url"
}

stop() {
  srv_lock || exit 1
  srv_stop 10
  rm -f "$url_file"
}

status() {
  bin="$(venv_bin)"
  srv_pid >/dev/null && current_url >/dev/null
}

url() {
  bin="$(venv_bin)"
  srv_pid >/dev/null || die "not running (infra/dev/s3.sh start)"
  current_url || die "running but not answering"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  pid) srv_pid ;;
  status) status ;;
  url) url ;;
  *)
    echo "usage: $0 {install|start|stop|pid|status|url}" >&2
    exit 2
    ;;
esac
