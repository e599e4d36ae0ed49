#!/usr/bin/env bash
# Opens the service's Swagger UI (/docs) in headless Chromium and checks that it renders
# every operation and the Authorize button (the API-key scheme). Installs Debian's
# `chromium` package when no Chromium is found, starts a private FerretDB (infra/dev/ferretdb.sh
# scratch) and the service (wherever cargo puts it), and cleans both up. Exit 0 when the page
# renders everything, 1 otherwise.
#
#   service/tests-browser/check_docs.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
log() { printf 'check_docs: %s\n' "$*" >&2; }

browser="$(command -v chromium || command -v chromium-browser || command -v google-chrome || true)"
if [ -z "$browser" ]; then
  log "installing Debian's chromium package"
  sudo_cmd=""; [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium >/dev/null
  browser="$(command -v chromium)"
fi

# shellcheck source=infra/dev/lib/cargo.sh
source "$repo/infra/dev/lib/cargo.sh"
# shellcheck source=infra/dev/lib/server.sh
source "$repo/infra/dev/lib/server.sh"
cargo build --quiet -p auditlog-service --bin auditlog-service
service_bin="$(cargo_bin auditlog-service)"
work="$(mktemp -d -t auditlog-docs-XXXXXX)"
pids=()
FERRETDB_SCRATCH_DIR=""
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; wait "$p" 2>/dev/null || true; done
  if [ -n "$FERRETDB_SCRATCH_DIR" ]; then bash infra/dev/ferretdb.sh scratch-stop "$FERRETDB_SCRATCH_DIR" >/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

# Sets FERRETDB_SCRATCH_DIR and MONGODB_URI.
ferretdb_vars="$(bash infra/dev/ferretdb.sh scratch)"
eval "$ferretdb_vars"

port="$(srv_free_port)"
MONGODB_URI="$MONGODB_URI" AUDIT_DB_NAME=docs AUDIT_API_KEY=docs-check \
  AUDIT_LISTEN_ADDR="127.0.0.1:$port" AUDIT_LOG_FORMAT=text \
  "$service_bin" run >"$work/service.log" 2>&1 </dev/null &
pids+=($!)
for _ in $(seq 1 200); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null || { log "service did not start:"; cat "$work/service.log" >&2; exit 1; }

log "rendering http://127.0.0.1:$port/docs with $browser"
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$work/profile" --virtual-time-budget=15000 \
  --dump-dom "http://127.0.0.1:$port/docs" >"$work/dom.html" 2>"$work/chromium.log" || true
"$browser" --headless --no-sandbox --disable-gpu --disable-dev-shm-usage \
  --user-data-dir="$work/profile" --virtual-time-budget=15000 --window-size=1280,2400 \
  --screenshot="$work/docs.png" "http://127.0.0.1:$port/docs" >/dev/null 2>&1 || true

failed=0
expect() {
  if grep -q -- "$1" "$work/dom.html"; then
    log "ok: $2"
  else
    log "MISSING: $2 ($1)"; failed=1
  fi
}
expect 'data-path="/v1/event"' "POST /v1/event rendered"
expect 'data-path="/v1/events"' "POST /v1/events rendered"
expect 'data-path="/v1/find"' "GET and POST /v1/find rendered"
expect 'data-path="/healthz"' "GET /healthz rendered"
expect 'data-path="/readyz"' "GET /readyz rendered"
expect 'data-path="/metrics"' "GET /metrics rendered"
expect 'btn authorize' "Authorize button (X-Api-Key scheme)"
expect 'opblock-summary-method' "operation method badges"
ops="$(grep -o 'id="operations-[^"]*"' "$work/dom.html" | grep -v 'operations-tag-' | sort -u | wc -l)"
log "operations rendered: $ops (expected 7: POST event, POST events, GET+POST find, healthz, readyz, metrics)"
[ "$ops" -ge 7 ] || failed=1
if [ -n "${DOCS_SCREENSHOT:-}" ] && [ -f "$work/docs.png" ]; then cp "$work/docs.png" "$DOCS_SCREENSHOT"; log "screenshot: $DOCS_SCREENSHOT"; fi
if [ "$failed" -ne 0 ]; then
  log "Swagger UI did not render every operation; DOM saved next to the logs:"
  head -c 2000 "$work/dom.html" >&2; echo >&2
  tail -n 20 "$work/chromium.log" >&2 || true
  exit 1
fi
log "Swagger UI renders all operations"
