# shellcheck shell=bash
# Sourced, not run. The ONE way the dev scripts (ferretdb.sh, hdfs.sh, s3.sh, run.sh) run a
# local server in the background: its pid file, its lock, waiting until it is up, stopping it.
#
# A script describes its server once, then calls the functions:
#   srv_define NAME TAG DATA_DIR PID_FILE LOG_FILE MATCH
#     NAME      what messages call it ("FerretDB")
#     TAG       prefix of log lines ("ferretdb.sh")
#     DATA_DIR  holds the pid file, the log and the lock file (.lock)
#     MATCH     a fixed string in /proc/PID/cmdline of our process (and of the command that
#               execs it), so a stale pid file never makes us signal someone else's process
#   srv_lock                 serialize start/stop of this server (flock on DATA_DIR/.lock, fd 9)
#   srv_pid                  print the pid of our running server; exit 1 when none
#   srv_launch CMD...        start CMD in its own session (setsid), cwd DATA_DIR, output to
#                            LOG_FILE, stdin /dev/null; writes the pid file; sets SRV_LAUNCHED
#   srv_wait_up PID SECS CHECK...  wait until CHECK (stdout discarded) succeeds; if the
#                            process dies or SECS pass, print the log's tail, stop it, return 1
#   srv_stop [SECS]          TERM (then KILL after SECS, default 30); prints one line on stdout:
#                            "stopped NAME (pid N)" or "NAME: not running"
#   srv_port_answers PORT    a TCP connect to 127.0.0.1:PORT succeeds
#   srv_free_port            print a TCP port on 127.0.0.1 that was free a moment ago

srv_define() {
  SRV_NAME="$1" SRV_TAG="$2" SRV_DIR="$3" SRV_PID_FILE="$4" SRV_LOG_FILE="$5" SRV_MATCH="$6"
}

srv_log() { printf '%s: %s\n' "$SRV_TAG" "$*" >&2; }

# Alive and not a zombie.
srv_alive() {
  local state
  state="$(awk '{print $3}' "/proc/$1/stat" 2>/dev/null)" || return 1
  [ -n "$state" ] && [ "$state" != Z ]
}

# Is $1 the pid of our server (or of the command about to exec it)?
# The command line is read whole before it is matched: `tr | grep -q` under pipefail fails at
# random when grep quits before tr has written a long command line (SIGPIPE).
srv_is_ours() {
  [ -n "${1:-}" ] && srv_alive "$1" && [ -r "/proc/$1/cmdline" ] || return 1
  local cmdline
  cmdline="$(tr '\0' ' ' <"/proc/$1/cmdline" 2>/dev/null)" || return 1
  [[ "$cmdline" == *"$SRV_MATCH"* ]]
}

srv_pid() {
  [ -f "$SRV_PID_FILE" ] || return 1
  local pid
  pid="$(cat "$SRV_PID_FILE" 2>/dev/null)" || return 1
  srv_is_ours "$pid" || return 1
  echo "$pid"
}

srv_lock() {
  mkdir -p "$SRV_DIR"
  exec 9>"$SRV_DIR/.lock"
  flock -w "${SRV_LOCK_TIMEOUT:-300}" 9 || { srv_log "timed out waiting for another start/stop of $SRV_NAME"; return 1; }
}

srv_launch() {
  mkdir -p "$SRV_DIR"
  # setsid: the server outlives the calling script and its process group (a Ctrl-C in the
  # terminal does not reach it). 9>&-: it must not inherit, and so hold, our lock.
  (cd "$SRV_DIR" && exec setsid "$@" >"$SRV_LOG_FILE" 2>&1 </dev/null 9>&-) &
  SRV_LAUNCHED=$!
  echo "$SRV_LAUNCHED" >"$SRV_PID_FILE"
}

srv_wait_up() {
  local pid="$1" secs="$2"
  shift 2
  local deadline=$((SECONDS + secs))
  while [ "$SECONDS" -lt "$deadline" ]; do
    if "$@" >/dev/null; then
      return 0
    fi
    if ! srv_alive "$pid"; then
      srv_log "$SRV_NAME exited during start; last lines of $SRV_LOG_FILE:"
      tail -n 40 "$SRV_LOG_FILE" >&2 || true
      rm -f "$SRV_PID_FILE"
      return 1
    fi
    sleep 0.2
  done
  srv_log "$SRV_NAME did not come up within ${secs}s; last lines of $SRV_LOG_FILE:"
  tail -n 40 "$SRV_LOG_FILE" >&2 || true
  srv_stop 10 >/dev/null
  return 1
}

srv_stop() {
  local secs="${1:-30}" pid i
  if ! pid="$(srv_pid)"; then
    rm -f "$SRV_PID_FILE"
    echo "$SRV_NAME: not running"
    return 0
  fi
  kill -TERM "$pid" 2>/dev/null || true
  for ((i = 0; i < secs * 5; i++)); do
    srv_is_ours "$pid" || break
    sleep 0.2
  done
  if srv_is_ours "$pid"; then
    srv_log "$SRV_NAME (pid $pid) still running after ${secs}s; killing it"
    kill -KILL "$pid" 2>/dev/null || true
    for ((i = 0; i < 25; i++)); do srv_alive "$pid" || break; sleep 0.2; done
  fi
  rm -f "$SRV_PID_FILE"
  echo "stopped $SRV_NAME (pid $pid)"
}

srv_port_answers() { (exec 3<>"/dev/tcp/127.0.0.1/$1") 2>/dev/null; }

srv_free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}
