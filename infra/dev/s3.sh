#!/usr/bin/env bash
# An S3-compatible server for development and tests, without Docker: moto's server mode
# (`moto_server`, Apache-2.0, pinned in infra/dev/requirements.txt), on 127.0.0.1.
#
#   infra/dev/s3.sh install   install moto into the shared tools venv (infra/dev/python-env.sh)
#   infra/dev/s3.sh start     start it unless ours is already running; wait until it answers;
#                             print the endpoint URL (http://127.0.0.1:PORT)
#   infra/dev/s3.sh stop      stop it (all buckets and objects are gone: moto keeps them in memory)
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

log() { printf 's3.sh: %s\n' "$*" >&2; }
die() { log "$*"; exit 1; }

venv_bin() { bash "$here/python-env.sh" --bin; }

install() { venv_bin >/dev/null; }

# Is $1 the pid of our moto_server?
is_ours() {
  [ -n "${1:-}" ] && [ -r "/proc/$1/cmdline" ] &&
    tr '\0' ' ' <"/proc/$1/cmdline" | grep -q -- "moto_server"
}

# Alive and not a zombie. (Right after launch $1 may still be the forking shell, before it
# execs moto_server, so this deliberately does not check the command line.)
alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

running_pid() {
  [ -f "$pid_file" ] || return 1
  local pid
  pid="$(cat "$pid_file")"
  is_ours "$pid" || return 1
  echo "$pid"
}

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

lock() {
  mkdir -p "$data_dir"
  exec 9>"$data_dir/.lock"
  flock -w "$start_timeout" 9 || die "timed out waiting for another s3.sh start/stop"
}

free_port() {
  "$bin/python" -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

start() {
  bin="$(venv_bin)"
  lock
  local pid url port
  if pid="$(running_pid)"; then
    wait_up "$pid"
    url="$(current_url)"
    if [ -n "${S3_PORT:-}" ] && [ "${url##*:}" != "$S3_PORT" ]; then
      log "WARNING: running server is at $url, not on S3_PORT=$S3_PORT (stop it first to change)"
    fi
    log "already running (pid $pid)"
    echo "$url"
    return 0
  fi
  port="${S3_PORT:-$(free_port)}"
  url="http://127.0.0.1:$port"
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "port $port is already in use by something else"
  fi
  rm -f "$url_file" "$pid_file"
  log "starting moto_server on $url (log: $log_file)"
  # setsid: the server outlives this script and the caller's process group. 9>&-: it must not
  # inherit (and so hold) our lock.
  setsid "$bin/moto_server" -H 127.0.0.1 -p "$port" >"$log_file" 2>&1 </dev/null 9>&- &
  pid=$!
  echo "$pid" >"$pid_file"
  echo "$url" >"$url_file"
  wait_up "$pid"
  log "up at $url (pid $pid)"
  echo "$url"
}

wait_up() {
  local pid="$1" deadline=$((SECONDS + start_timeout))
  while [ $SECONDS -lt $deadline ]; do
    if current_url >/dev/null; then
      return 0
    fi
    if ! alive "$pid"; then
      log "moto_server exited during start; last log lines:"
      tail -n 30 "$log_file" >&2 || true
      rm -f "$pid_file" "$url_file"
      exit 1
    fi
    sleep 0.2
  done
  log "moto_server did not answer within ${start_timeout}s; last log lines:"
  tail -n 30 "$log_file" >&2 || true
  exit 1
}

stop() {
  lock
  local pid
  if pid="$(running_pid)"; then
    log "stopping pid $pid"
    kill -TERM "$pid" 2>/dev/null || true
    for _ in $(seq 1 50); do
      is_ours "$pid" || break
      sleep 0.2
    done
    if is_ours "$pid"; then
      kill -KILL "$pid" 2>/dev/null || true
    fi
  else
    log "not running"
  fi
  rm -f "$pid_file" "$url_file"
}

status() {
  bin="$(venv_bin)"
  running_pid >/dev/null && current_url >/dev/null
}

url() {
  bin="$(venv_bin)"
  running_pid >/dev/null || die "not running (infra/dev/s3.sh start)"
  current_url || die "running but not answering"
}

case "${1:-}" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  status) status ;;
  url) url ;;
  *)
    echo "usage: $0 {install|start|stop|status|url}" >&2
    exit 2
    ;;
esac
