#!/usr/bin/env bash
# Installs the tools the chart checks need, pinned, under <repo>/target/tools (idempotent; a
# second run only checks versions and takes well under a second):
#   - helm, built from its Go module with the machine's Go (`go install`), into target/tools/bin
#   - a Python venv (target/tools/helm-tests-venv) with kubernetes-validate (it ships the
#     Kubernetes JSON schemas, so validation works offline), PyYAML, pytest and
#     check-jsonschema (validates infra/compose/docker-compose.yml against the Compose spec).
# run.sh reads the same fixed paths.
set -euo pipefail

HELM_VERSION="v3.22.0"              # builds with go1.26
KUBERNETES_VALIDATE_VERSION="1.37.0"  # schemas for Kubernetes 1.25 .. 1.37
PYYAML_VERSION="6.0.3"
PYTEST_VERSION="9.2.0"
CHECK_JSONSCHEMA_VERSION="0.39.0"  # ships the Compose Specification schema

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
tools="$repo/target/tools"
bin="$tools/bin"
venv="$tools/helm-tests-venv"
log() { printf 'install-tools.sh: %s\n' "$*" >&2; }

mkdir -p "$bin"

# --- helm ---------------------------------------------------------------------------------
stamp="$bin/.helm-version"
HELM_STAMP="$HELM_VERSION k8s-default-1.37"
if [[ -x "$bin/helm" && -f "$stamp" && "$(cat "$stamp")" == "$HELM_STAMP" ]]; then
  :
else
  command -v go >/dev/null || { log "go is needed to build helm (go install)"; exit 1; }
  log "building helm $HELM_VERSION with $(go version | awk '{print $3}') (first time: a few minutes)"
  # The -X flags are what helm's own Makefile sets: its version, and the default Kubernetes
  # version of `helm template`/`lint` (its client-go is v0.37 -> 1.37; unset it says 1.20).
  GOBIN="$bin" GOFLAGS="${GOFLAGS:-} -buildvcs=false" go install \
    -ldflags "-s -w -X helm.sh/helm/v3/internal/version.version=$HELM_VERSION $(for p in chartutil lint/rules; do
      printf -- '-X helm.sh/helm/v3/pkg/%s.k8sVersionMajor=1 -X helm.sh/helm/v3/pkg/%s.k8sVersionMinor=37 ' "$p" "$p"; done)" \
    "helm.sh/helm/v3/cmd/helm@$HELM_VERSION"
  echo "$HELM_STAMP" > "$stamp"
fi

# --- Python tools ---------------------------------------------------------------------------
want="kubernetes-validate==$KUBERNETES_VALIDATE_VERSION pyyaml==$PYYAML_VERSION pytest==$PYTEST_VERSION check-jsonschema==$CHECK_JSONSCHEMA_VERSION"
have_all() {
  [[ -x "$venv/bin/python" ]] && "$venv/bin/python" - "$@" <<'PY' 2>/dev/null
import sys
from importlib.metadata import version, PackageNotFoundError
for spec in sys.argv[1:]:
    name, _, ver = spec.partition("==")
    try:
        if version(name) != ver:
            sys.exit(1)
    except PackageNotFoundError:
        sys.exit(1)
PY
}
# shellcheck disable=SC2086
if ! have_all $want; then
  log "installing $want into $venv"
  [[ -x "$venv/bin/python" ]] || python3 -m venv "$venv"
  # shellcheck disable=SC2086
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check $want
  # shellcheck disable=SC2086
  have_all $want || { log "pinned Python packages missing after install"; exit 1; }
fi
