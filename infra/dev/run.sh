#!/usr/bin/env bash
# `make run`: the service on this machine, with no other set-up.
# - MONGODB_URI unset → starts the local FerretDB (infra/dev/ferretdb.sh) and uses it.
# - AUDIT_API_KEY unset → generates one and prints it.
# - Listens on AUDIT_LISTEN_ADDR (default 127.0.0.1:8080).
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

if [ -z "${MONGODB_URI:-}" ]; then
  bash "$here/ferretdb.sh" start
  export MONGODB_URI="mongodb://127.0.0.1:${FERRETDB_PORT:-27017}"
fi
if [ -z "${AUDIT_API_KEY:-}" ]; then
  AUDIT_API_KEY="$(python3 -c 'import secrets; print(secrets.token_urlsafe(24))')"
  export AUDIT_API_KEY
  generated=1
fi
export AUDIT_LISTEN_ADDR="${AUDIT_LISTEN_ADDR:-127.0.0.1:8080}"

cargo build --bin auditlog-service ${CARGO_PROFILE_FLAG:-}
bin="$repo/target/${CARGO_PROFILE_DIR:-debug}/auditlog-service"

host="${AUDIT_LISTEN_ADDR%:*}"
port="${AUDIT_LISTEN_ADDR##*:}"
[ "$host" = "0.0.0.0" ] && host="127.0.0.1"
cat <<MSG

  auditlog-service on http://$host:$port  (MongoDB: $MONGODB_URI)
  Swagger UI:  http://$host:$port/docs
  Health:      http://$host:$port/healthz
  API key:     ${generated:+$AUDIT_API_KEY  (generated; set AUDIT_API_KEY to choose one)}${generated:-from AUDIT_API_KEY}
  Try:         curl -s -H "X-Api-Key: $AUDIT_API_KEY" -H 'Content-Type: application/json' \\
                 -d '{"type":"login","consumer":"c1","payload":{"ok":true}}' http://$host:$port/v1/event

MSG
exec "$bin"
