#!/usr/bin/env bash
# Owns the local RabbitMQ for development and tests (queue mode, AUDIT_INGEST_MODE=queue):
# Debian's rabbitmq-server package, run as a plain process with its own data directory, node
# name and ports — never the system service — so any number can run side by side.
#
#   infra/dev/rabbitmq.sh install          install Debian's rabbitmq-server unless it is there
#                                          (apt-get; root, or sudo without a password)
#   infra/dev/rabbitmq.sh serve DIR PORT [DIST_PORT]
#                                          run it in the foreground: AMQP on 127.0.0.1:PORT,
#                                          Erlang distribution on DIST_PORT (default: a free
#                                          port), node name auditlog-PORT@localhost, data, logs,
#                                          config and Erlang cookie under DIR. The process is a
#                                          shell wrapper around the Erlang VM: SIGTERM stops
#                                          RabbitMQ gracefully; to kill it, kill its process
#                                          group (the test harness starts it as a group leader)
#   infra/dev/rabbitmq.sh ctl DIR PORT ARGS...
#                                          rabbitmqctl ARGS against the node `serve DIR PORT`
#                                          runs (e.g. `set_disk_free_limit 1000GB` to raise a
#                                          disk alarm)
#   infra/dev/rabbitmq.sh start            a server for `make run` in queue mode: serve
#                                          $RABBITMQ_DATA_DIR on $RABBITMQ_PORT in the
#                                          background unless ours runs; print its AMQP URL
#   infra/dev/rabbitmq.sh stop             stop the server `start` started (`make stop`)
#   infra/dev/rabbitmq.sh pid | status | url
#
# Erlang nodes find each other through epmd (port 4369, or ERL_EPMD_PORT when set): every node
# registers there under its own name, so nodes started here share one epmd with each other and
# with any other Erlang on the machine without conflict. The distribution port is set
# explicitly (RABBITMQ_DIST_PORT; RabbitMQ's default, AMQP port + 20000, does not fit above
# port 45535), and RabbitMQ reads no file under /etc/rabbitmq.
#
# Settings (environment): RABBITMQ_PORT (5672), RABBITMQ_DATA_DIR (<repo>/data/rabbitmq),
# RABBITMQ_START_TIMEOUT (seconds, 60), RABBITMQ_SCRIPTS_DIR (where Debian puts RabbitMQ's own
# scripts, /usr/lib/rabbitmq/bin).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
# shellcheck source=infra/dev/lib/server.sh
source "$here/lib/server.sh"

port="${RABBITMQ_PORT:-5672}"
data_dir="${RABBITMQ_DATA_DIR:-$repo/data/rabbitmq}"
start_timeout="${RABBITMQ_START_TIMEOUT:-60}"
scripts="${RABBITMQ_SCRIPTS_DIR:-/usr/lib/rabbitmq/bin}"

# MATCH: DIR is on the command line of `rabbitmq.sh serve DIR` and, after its exec, of
# RabbitMQ's wrapper and the Erlang VM (`-auditlog_data_dir DIR`).
srv_define RabbitMQ rabbitmq.sh "$data_dir" "$data_dir/rabbitmq.pid" "$data_dir/rabbitmq.out" "$data_dir"
log() { srv_log "$@"; }

installed() { [ -x "$scripts/rabbitmq-server" ] && [ -x "$scripts/rabbitmqctl" ]; }

install() {
  installed && return 0
  local sudo=""
  if [ "$(id -u)" -ne 0 ]; then
    sudo -n true 2>/dev/null || { log "rabbitmq-server is missing: apt-get install -y rabbitmq-server (as root)"; return 1; }
    sudo="sudo"
  fi
  log "installing Debian's rabbitmq-server (queue mode's tests run it as a local process)"
  $sudo apt-get update -qq
  # policy-rc.d says no to starting services, so the package's system service stays down.
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends rabbitmq-server >/dev/null
  installed || { log "rabbitmq-server installed, but $scripts/rabbitmq-server is missing (set RABBITMQ_SCRIPTS_DIR)"; return 1; }
}

# The environment that makes RabbitMQ's scripts use DIR and PORT and nothing system-wide.
node_env() {
  local dir="$1" port="$2"
  export HOME="$dir"
  export RABBITMQ_NODENAME="auditlog-$port@localhost"
  export RABBITMQ_NODE_IP_ADDRESS=127.0.0.1
  export RABBITMQ_NODE_PORT="$port"
  export RABBITMQ_MNESIA_BASE="$dir/mnesia"
  export RABBITMQ_LOG_BASE="$dir/log"
  export RABBITMQ_CONF_ENV_FILE="$dir/rabbitmq-env.conf"
  export RABBITMQ_CONFIG_FILE="$dir/rabbitmq"
  export RABBITMQ_ADVANCED_CONFIG_FILE="$dir/advanced.config"
  export RABBITMQ_ENABLED_PLUGINS_FILE="$dir/enabled_plugins"
  export RABBITMQ_PID_FILE="$dir/rabbitmq-node.pid"
}

serve() {
  if [ $# -lt 2 ] || [ $# -gt 3 ]; then echo "usage: $0 serve DIR PORT [DIST_PORT]" >&2; exit 2; fi
  install
  local dir port
  mkdir -p "$1"
  dir="$(cd "$1" && pwd)"
  port="$2"
  mkdir -p "$dir/mnesia" "$dir/log"
  : >"$dir/rabbitmq-env.conf"
  [ -f "$dir/enabled_plugins" ] || echo "[]." >"$dir/enabled_plugins"
  [ -f "$dir/rabbitmq.conf" ] || cat >"$dir/rabbitmq.conf" <<'EOF'
# Written by infra/dev/rabbitmq.sh serve: a local broker for development and tests.
log.console = false
log.file.level = info
EOF
  node_env "$dir" "$port"
  export RABBITMQ_DIST_PORT="${3:-$(srv_free_port)}"
  # -auditlog_data_dir: an Erlang user flag RabbitMQ ignores, so that the wrapper's and the
  # VM's command lines name DIR (how `stop` recognises its server).
  exec "$scripts/rabbitmq-server" -auditlog_data_dir "$dir"
}

ctl() {
  [ $# -ge 3 ] || { echo "usage: $0 ctl DIR PORT ARGS..." >&2; exit 2; }
  local dir port
  dir="$(cd "$1" && pwd)"
  port="$2"
  shift 2
  node_env "$dir" "$port"
  exec "$scripts/rabbitmqctl" -n "$RABBITMQ_NODENAME" "$@"
}

url() { echo "amqp://guest:guest@127.0.0.1:$port/%2f"; }

start() {
  install
  srv_lock
  local pid
  if pid="$(srv_pid)"; then
    srv_wait_up "$pid" "$start_timeout" srv_port_answers "$port" || exit 1
    log "already running (pid $pid) on 127.0.0.1:$port"
    url
    return 0
  fi
  if srv_port_answers "$port"; then
    log "port $port is in use by something not started here; set RABBITMQ_PORT to a free port"
    exit 1
  fi
  log "starting on 127.0.0.1:$port, data in $data_dir (log: $SRV_LOG_FILE)"
  srv_launch bash "$here/rabbitmq.sh" serve "$data_dir" "$port"
  srv_wait_up "$SRV_LAUNCHED" "$start_timeout" srv_port_answers "$port" || exit 1
  log "ready (pid $SRV_LAUNCHED)"
  url
}

stop() {
  srv_lock
  srv_stop 30
}

case "${1:-}" in
  install) install ;;
  serve) shift; serve "$@" ;;
  ctl) shift; ctl "$@" ;;
  start) start ;;
  stop) stop ;;
  pid) srv_pid ;;
  status) if srv_pid >/dev/null && srv_port_answers "$port"; then echo "up on 127.0.0.1:$port"; else echo "down"; exit 1; fi ;;
  url) url ;;
  *) echo "usage: $0 {install|serve DIR PORT [DIST_PORT]|ctl DIR PORT ARGS...|start|stop|pid|status|url}" >&2; exit 2 ;;
esac
