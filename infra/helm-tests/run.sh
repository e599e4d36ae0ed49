#!/usr/bin/env bash
# Offline checks of the Helm chart helm/auditlog (no cluster needed):
#   1. helm lint --strict with the default values, every value set in values/ and every example
#      of the chart (helm/auditlog/examples/);
#   2. helm template with the same value sets, every rendered object validated strictly
#      (unknown or misspelled fields fail) against the pinned Kubernetes versions;
#   3. infra/compose/docker-compose.yml validated against the Compose Specification schema;
#   4. pytest over the rendered YAML (test_chart.py), including schema rejection of bad values,
#      and over the Compose file and Dockerfile (test_compose_and_image.py).
# Self-contained: installs its pinned tools first (install-tools.sh). Exits non-zero on any
# failure. Output of step 2 goes to target/helm-tests/rendered/ for inspection.
#
#   bash infra/helm-tests/run.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
chart="$repo/helm/auditlog"
out="$repo/target/helm-tests/rendered"
# The oldest Kubernetes the chart supports (Chart.yaml kubeVersion) and a current one.
read -r -a KUBE_VERSIONS <<<"${KUBE_VERSIONS:-1.27.0 1.33.0}"

bash "$here/install-tools.sh"
export HELM="$repo/target/tools/bin/helm"
py="$repo/target/tools/helm-tests-venv/bin/python"
# Keep helm away from any user config/cache and from any cluster.
export HELM_CACHE_HOME="$repo/target/helm-tests/helm-home/cache"
export HELM_CONFIG_HOME="$repo/target/helm-tests/helm-home/config"
export HELM_DATA_HOME="$repo/target/helm-tests/helm-home/data"
export KUBECONFIG=/dev/null

value_sets=("default")
for f in "$here"/values/*.yaml; do value_sets+=("$(basename "$f" .yaml)"); done
# The chart's documented examples are value sets too (named example-<file>).
for f in "$chart"/examples/*.yaml; do value_sets+=("example-$(basename "$f" .yaml)"); done
values_args() {
  case "$1" in
    default) ;;
    example-*) printf -- '--values\n%s\n' "$chart/examples/${1#example-}.yaml" ;;
    *) printf -- '--values\n%s\n' "$here/values/$1.yaml" ;;
  esac
}

echo "== helm lint --strict (${#value_sets[@]} value sets)"
for vs in "${value_sets[@]}"; do
  mapfile -t va < <(values_args "$vs")
  if ! lint_out=$("$HELM" lint --strict --kube-version "${KUBE_VERSIONS[-1]}" "$chart" "${va[@]}" 2>&1); then
    echo "$lint_out"; echo "helm lint failed for value set '$vs'"; exit 1
  fi
  echo "  $vs: ok"
done

echo "== helm template + strict validation against Kubernetes ${KUBE_VERSIONS[*]}"
rm -rf "$out"; mkdir -p "$out"
for kv in "${KUBE_VERSIONS[@]}"; do
  files=()
  for vs in "${value_sets[@]}"; do
    mapfile -t va < <(values_args "$vs")
    f="$out/$vs.k8s-$kv.yaml"
    "$HELM" template auditlog "$chart" --namespace audit --kube-version "$kv" "${va[@]}" > "$f"
    files+=("$f")
  done
  "$py" "$here/validate.py" --kubernetes-version "$kv" "${files[@]}"
done

echo "== docker-compose.yml against the Compose Specification"
"$repo/target/tools/helm-tests-venv/bin/check-jsonschema" --builtin-schema vendor.compose-spec \
  "$repo/infra/compose/docker-compose.yml"

echo "== pytest"
cd "$here"
"$py" -m pytest -q -p no:cacheprovider test_chart.py test_compose_and_image.py
