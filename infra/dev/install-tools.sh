#!/usr/bin/env bash
# Installs every tool the test suite needs, pinned, mostly under target/tools/. Idempotent and
# quick when everything is there; `make test` runs it first.
#   FerretDB v1.24.2          infra/dev/ferretdb.sh install   (go build from the module source)
#   Python venv               infra/dev/python-env.sh         (pyarrow, duckdb, pymongo, moto, pytest)
#   Hadoop MiniDFSCluster     infra/dev/hdfs.sh install       (Maven Central)
#   helm + chart validators   infra/helm-tests/install-tools.sh (Go module proxy, PyPI)
#   RabbitMQ                  Debian's rabbitmq-server, for queue mode's tests
#                             (infra/dev/rabbitmq.sh install; run as local processes, never
#                             as the system service)
#   Chromium                  Debian package, for the Swagger UI check
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"

bash infra/dev/ferretdb.sh install
bash infra/dev/python-env.sh >/dev/null
bash infra/dev/hdfs.sh install
bash infra/helm-tests/install-tools.sh
bash infra/dev/rabbitmq.sh install

# Chromium renders the Swagger UI check; chromium-driver (the same build's WebDriver) lets
# Selenium drive it for the explorer's tests (testcontainers-tests/tests/ui_explorer.rs).
if ! command -v chromium >/dev/null 2>&1 || ! command -v chromedriver >/dev/null 2>&1; then
  sudo=""
  [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "install-tools.sh: installing Debian's chromium and chromium-driver for the browser tests" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends chromium chromium-driver >/dev/null
fi
