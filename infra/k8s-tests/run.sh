#!/usr/bin/env bash
# `make test-k8s`: the Helm chart helm/auditlog on a real Kubernetes API server. pytest
# (test_chart_on_k8s.py) starts its own private control plane once (infra/dev/k8s.sh start in a
# temporary K8S_STATE_DIR; kwok stands in for the nodes), installs every documented profile
# under Pod Security `restricted`, upgrades, rolls back, uninstalls, and checks what the API
# server says; test_rabbitmq_on_k8s.py then checks the chart's own RabbitMQ. It stops the cluster
# at the end. A few minutes; CI (.ci/run) runs it after `make test`.
#
#   bash infra/k8s-tests/run.sh [PYTEST ARGS...]     e.g. -k uninstall, -x, -s
#
# Settings (environment): K8S_TESTS_KEEP=1 leaves the cluster running at the end (the last
# lines say how to reach and stop it); K8S_TESTS_NODES (6) kwok nodes; K8S_BIN_DIR as for
# infra/dev/k8s.sh.
# Uses the chart checks' pinned tools (infra/helm-tests/install-tools.sh: helm, and the Python
# venv with pytest and PyYAML) and the Kubernetes binaries infra/dev/k8s.sh builds (the first
# build takes ~15 min of CPU; afterwards it is a version check).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"

bash "$repo/infra/dev/k8s.sh" build >&2
py="$repo/target/tools/helm-tests-venv/bin/python"

# The cluster's directory is made here, so that the cluster is stopped even when pytest itself
# is killed (its session fixture stops it otherwise).
state="$(mktemp -d "${TMPDIR:-/tmp}/auditlog-k8s-tests.XXXXXX")"
export K8S_TESTS_STATE_DIR="$state"
rc=1
# shellcheck disable=SC2317  # called by the EXIT trap
finish() {
  if [ "${K8S_TESTS_KEEP:-}" != 1 ]; then
    K8S_STATE_DIR="$state" bash "$repo/infra/dev/k8s.sh" stop >/dev/null 2>&1 || true
    if [ "$rc" = 0 ]; then rm -rf "$state"; else echo "k8s-tests: the cluster's logs are in $state" >&2; fi
  fi
}
trap finish EXIT

cd "$here"
rc=0
# test_chart_on_k8s.py first: its uninstall tests free the nodes before the RabbitMQ module
# installs its own release.
"$py" -m pytest -v -rxXsf -p no:cacheprovider --durations=8 test_chart_on_k8s.py test_rabbitmq_on_k8s.py "$@" || rc=$?
exit "$rc"
