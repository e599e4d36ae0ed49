#!/usr/bin/env bash
# Owns `make test` and its parts: checks the prerequisites first, runs the stages, and leaves
# nothing running when it ends, pass or fail (an EXIT trap stops the HDFS and S3 servers the
# tests started, and any other process started under this run).
#
#   infra/dev/test.sh              `make test`: install the pinned tools, then rust, helm, browser
#   infra/dev/test.sh rust         `make test-rust`: cargo test --workspace
#   infra/dev/test.sh helm         `make test-helm`: the Helm chart checks
#   infra/dev/test.sh browser      `make test-browser`: Swagger UI in headless Chromium
#   infra/dev/test.sh mongodb      `make test-mongodb`: cargo test --workspace --include-ignored
#                                  against MONGODB_URI (a real mongod or mongos; required)
#
# Every stage runs even when an earlier one failed; the exit status is non-zero if any failed.
# The Rust output is also written to target/test-rust.log (target/test-mongodb.log), and the
# last line printed says how many tests were ignored and why (from cargo's
# `test NAME ... ignored, REASON` lines).
# shellcheck disable=SC2317  # functions below are called indirectly (traps, stage "$@")
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
# shellcheck source=infra/dev/lib/server.sh
source "$here/lib/server.sh"

stages=("$@")
[ "${#stages[@]}" -gt 0 ] || stages=(all)
modes=()
for s in "${stages[@]}"; do
  case "$s" in
    all) modes+=(test) ;;
    rust) modes+=(test-rust) ;;
    helm) modes+=(test-helm) ;;
    browser) modes+=(test-browser) ;;
    mongodb)
      if [ -z "${MONGODB_URI:-}" ]; then
        echo "make test-mongodb runs every Rust test, ignored ones included, against a real MongoDB:" >&2
        echo "set MONGODB_URI to a mongod or mongos, e.g. MONGODB_URI=mongodb://127.0.0.1:27017 make test-mongodb" >&2
        exit 2
      fi
      modes+=(test-rust)
      ;;
    *) echo "usage: $0 [rust|helm|browser|mongodb]..." >&2; exit 2 ;;
  esac
done
bash "$here/prereqs.sh" "${modes[@]}"

# Everything the tests start inherits this variable; the cleanup finds leftovers by it.
run_id="$$.$(date +%s%N)"
export AUDITLOG_TEST_RUN="$run_id"

started_by_this_run() {
  local kv
  [ -r "/proc/$1/environ" ] || return 1
  while IFS= read -r -d '' kv; do
    [ "$kv" = "AUDITLOG_TEST_RUN=$run_id" ] && return 0
  done 2>/dev/null <"/proc/$1/environ"
  return 1
}

cleaned=0
cleanup() {
  [ "$cleaned" = 0 ] || return 0
  cleaned=1
  local script pid p left=()
  # The shared servers the tests start (infra/dev/hdfs.sh start, s3.sh start): stopped when
  # this run started them, left alone when they were running before.
  for script in hdfs.sh s3.sh; do
    pid="$(bash "$here/$script" pid 2>/dev/null)" || continue
    started_by_this_run "$pid" && bash "$here/$script" stop
  done
  # Anything else still running from this run (a FerretDB or a binary a test could not stop).
  for p in /proc/[0-9]*; do
    pid="${p#/proc/}"
    if [ "$pid" = "$$" ] || [ "$pid" = "${BASHPID:-$$}" ]; then continue; fi
    started_by_this_run "$pid" && left+=("$pid")
  done
  if [ "${#left[@]}" -gt 0 ]; then
    for pid in "${left[@]}"; do
      echo "stopping a leftover process of this test run: $pid $(tr '\0' ' ' <"/proc/$pid/cmdline" 2>/dev/null | cut -c1-120)"
      kill -TERM "$pid" 2>/dev/null || true
    done
    sleep 2
    for pid in "${left[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  fi
  return 0
}
trap cleanup EXIT

results=()
failed=0
ignored_line=""
stage() {
  local name="$1"
  shift
  printf '\n==== %s\n' "$name"
  if "$@"; then
    results+=("$name: ok")
  else
    results+=("$name: FAILED")
    failed=1
  fi
}

# Two lines: the totals over every `test result:` line, then how many tests cargo reported
# ignored, grouped by reason.
summarize_ignored() {
  python3 - "$1" <<'EOF'
import collections, re, sys
pat = re.compile(r"^test (.+?) \.\.\. ignored(?:, (.*))?$")
result = re.compile(r"^test result: \w+\. (\d+) passed; (\d+) failed; (\d+) ignored")
reasons = collections.Counter()
totals = [0, 0, 0]
with open(sys.argv[1], errors="replace") as f:
    for line in f:
        r = result.match(line)
        if r:
            totals = [t + int(x) for t, x in zip(totals, r.groups())]
        m = pat.match(line.rstrip("\r\n"))
        if m:
            reasons[(m.group(2) or "").strip() or "no reason given"] += 1
print("rust: %d passed, %d failed, %d skipped" % tuple(totals))
n = sum(reasons.values())
parts = [r if k == 1 else "%s \u00d7%d" % (r, k) for r, k in reasons.most_common()]
print("ignored: %d test%s%s" % (n, "" if n == 1 else "s", " (%s)" % ", ".join(parts) if parts else ""))
EOF
}

rust_tests() {
  local log="$1"
  shift
  mkdir -p "$repo/target"
  # The binaries first: tests start them, and building them inside a test would be slower.
  cargo build --workspace --bins || return 1
  local rc=0
  cargo test --workspace --no-fail-fast "$@" 2>&1 | tee "$log" || rc=$?
  ignored_line="$(summarize_ignored "$log")"
  return "$rc"
}

for s in "${stages[@]}"; do
  case "$s" in
    all)
      stage "tools" bash "$here/install-tools.sh"
      [ "$failed" = 0 ] || break
      stage "rust" rust_tests "$repo/target/test-rust.log"
      stage "helm" bash infra/helm-tests/run.sh
      stage "browser" bash service/tests-browser/check_docs.sh
      ;;
    rust) stage "rust" rust_tests "$repo/target/test-rust.log" ;;
    helm) stage "helm" bash infra/helm-tests/run.sh ;;
    browser) stage "browser" bash service/tests-browser/check_docs.sh ;;
    mongodb) stage "rust (MongoDB, ignored tests included)" rust_tests "$repo/target/test-mongodb.log" -- --include-ignored ;;
  esac
done

printf '\n'
cleanup
printf '%s\n' "${results[@]}"
[ -z "$ignored_line" ] || echo "$ignored_line"
exit "$failed"
