#!/usr/bin/env bash
# Owns the local HDFS for development and tests (its pid file, data and log under
# $HDFS_DATA_DIR; started and stopped through infra/dev/lib/server.sh).
# A real HDFS for development and tests: Hadoop's MiniDFSCluster (one NameNode, one DataNode,
# simple auth, everything on 127.0.0.1), built from Maven Central artifacts by the small Maven
# project in infra/dev/hdfs/. Also Hadoop's own Parquet reader, to prove Hadoop reads our files.
#
#   infra/dev/hdfs.sh install     build the tools into $HDFS_TOOLS_DIR (idempotent; no-op when
#                                 pom.xml and sources are unchanged)
#   infra/dev/hdfs.sh start       start the cluster unless ours is already running; wait until
#                                 the NameNode answers; print its URL (hdfs://127.0.0.1:PORT)
#   infra/dev/hdfs.sh stop        stop it and delete its data (`make stop` and the end of
#                                 `make test` run this)
#   infra/dev/hdfs.sh pid         print the pid of the cluster `start` started (exit 1: none)
#   infra/dev/hdfs.sh status      exit 0 when it is running and answers
#   infra/dev/hdfs.sh url         print the running cluster's URL (exit 1 when not running)
#   infra/dev/hdfs.sh dump PATH.. print every row of every Parquet file under PATH (hdfs://...,
#                                 file://... or a local path; recursive; names starting with "."
#                                 or "_" skipped) as JSON lines on stdout, read with parquet-hadoop;
#                                 per-file info and a final {"files": N, "rows": M} on stderr
#
# Every start is a fresh, empty file system (the cluster formats its name dir at start).
#
# Settings (environment):
#   HDFS_PORT        NameNode RPC port (default 0: a free port, chosen at start; see `url`)
#   HDFS_DATA_DIR    pid, url, log and cluster dirs (default <repo>/data/hdfs)
#   HDFS_TOOLS_DIR   build output: classes + dependency jars (default <repo>/target/tools/hdfs)
#   HDFS_BLOCK_SIZE  dfs.blocksize in bytes (default 16 MiB)
#   HDFS_JAVA_OPTS   JVM options for the cluster (default: small heap, serial GC)
#   HDFS_START_TIMEOUT  seconds to wait for the cluster (default 180)
#
# Requires Java 17+ and Maven 3.6+ (the first install downloads ~100 MB from Maven Central).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
project="$here/hdfs"
tools_dir="${HDFS_TOOLS_DIR:-$repo/target/tools/hdfs}"
data_dir="${HDFS_DATA_DIR:-$repo/data/hdfs}"
port="${HDFS_PORT:-0}"
block_size="${HDFS_BLOCK_SIZE:-16777216}"
java_opts="${HDFS_JAVA_OPTS:--Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1}"
start_timeout="${HDFS_START_TIMEOUT:-180}"
pid_file="$data_dir/minidfs.pid"
url_file="$data_dir/url"
log_file="$data_dir/minidfs.log"
cluster_dir="$data_dir/cluster"
stamp_file="$tools_dir/.stamp"
main_class="dev.auditlog.hdfs.MiniDfs"

# shellcheck source=infra/dev/lib/server.sh
source "$here/lib/server.sh"
srv_define "HDFS MiniDFSCluster" hdfs.sh "$data_dir" "$pid_file" "$log_file" "$main_class"
SRV_LOCK_TIMEOUT="$start_timeout"
log() { srv_log "$@"; }
die() { log "$*"; exit 1; }

classpath() { printf '%s' "$tools_dir/build/classes:$tools_dir/lib/*"; }

source_hash() {
  # Everything that affects the build output, plus the Java major version.
  {
    java -version 2>&1 | head -n1
    (cd "$project" && find pom.xml src -type f | LC_ALL=C sort | xargs sha256sum)
  } | sha256sum | cut -d' ' -f1
}

install() {
  command -v java >/dev/null || die "Java 17+ is required"
  local want
  want="$(source_hash)"
  if [ -f "$stamp_file" ] && [ "$(cat "$stamp_file")" = "$want" ] &&
    [ -d "$tools_dir/build/classes/dev" ] && [ -d "$tools_dir/lib" ]; then
    return 0
  fi
  command -v mvn >/dev/null || die "Maven is required (apt-get install maven)"
  log "building HDFS dev tools into $tools_dir (the first build downloads ~100 MB from Maven Central)"
  rm -rf "${tools_dir:?}/lib" "${tools_dir:?}/build"
  mkdir -p "$tools_dir"
  if ! mvn -B -Dstyle.color=never -f "$project/pom.xml" -Dtools.dir="$tools_dir" \
    compile dependency:copy-dependencies >"$tools_dir/mvn.log" 2>&1; then
    tail -n 60 "$tools_dir/mvn.log" >&2
    die "maven build failed (full log: $tools_dir/mvn.log)"
  fi
  echo "$want" >"$stamp_file"
  log "built ($(find "$tools_dir/lib" -name '*.jar' | wc -l) jars)"
}

port_answers() { srv_port_answers "$1"; }

current_url() {
  [ -s "$url_file" ] || return 1
  local url p
  url="$(head -n1 "$url_file")"
  p="${url##*:}"
  port_answers "$p" || return 1
  echo "$url"
}

status() { srv_pid >/dev/null && current_url >/dev/null; }

start() {
  install
  srv_lock || exit 1
  local pid url
  if pid="$(srv_pid)"; then
    # Ours is running (maybe still starting, if an earlier start gave up waiting).
    srv_wait_up "$pid" "$start_timeout" current_url || exit 1
    url="$(current_url)"
    if [ "$port" != 0 ] && [ "${url##*:}" != "$port" ]; then
      log "WARNING: running cluster is at $url, not on HDFS_PORT=$port (stop it first to change)"
    fi
    log "already running (pid $pid)"
    echo "$url"
    return 0
  fi
  if [ "$port" != 0 ] && port_answers "$port"; then
    die "port $port is already in use by something else"
  fi
  rm -rf "$cluster_dir" "$data_dir/tmp" "$url_file" "$pid_file"
  mkdir -p "$cluster_dir" "$data_dir/tmp"
  log "starting MiniDFSCluster (data in $cluster_dir, log: $log_file)"
  # shellcheck disable=SC2086  # java_opts is a list of options
  srv_launch java $java_opts -Djava.net.preferIPv4Stack=true \
    -Dtest.build.data="$data_dir/tmp/test-data" -Dtest.build.dir="$data_dir/tmp/test-dir" \
    -Djava.io.tmpdir="$data_dir/tmp" \
    -cp "$(classpath)" "$main_class" \
    --port "$port" --base-dir "$cluster_dir" --url-file "$url_file" --block-size "$block_size"
  srv_wait_up "$SRV_LAUNCHED" "$start_timeout" current_url || exit 1
  url="$(current_url)"
  log "up at $url (pid $SRV_LAUNCHED)"
  echo "$url"
}

stop() {
  srv_lock || exit 1
  srv_stop 30
  rm -rf "$url_file" "$cluster_dir" "$data_dir/tmp"
}

url() {
  srv_pid >/dev/null || die "not running (infra/dev/hdfs.sh start)"
  current_url || die "running but not answering yet"
}

dump() {
  [ $# -gt 0 ] || die "usage: hdfs.sh dump PATH..."
  install
  java -Xmx1g -XX:+UseSerialGC -XX:TieredStopAtLevel=1 -Djava.net.preferIPv4Stack=true \
    -cp "$(classpath)" dev.auditlog.hdfs.ParquetDump "$@"
}

cmd="${1:-}"
shift || true
case "$cmd" in
  install) install ;;
  start) start ;;
  stop) stop ;;
  pid) srv_pid ;;
  status) status ;;
  url) url ;;
  dump) dump "$@" ;;
  classpath) install && classpath && echo ;;
  *)
    echo "usage: $0 {install|start|stop|pid|status|url|dump PATH...|classpath}" >&2
    exit 2
    ;;
esac
