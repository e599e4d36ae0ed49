#!/usr/bin/env bash
# Owns `make stop`: stops every local server that `make run` or `make test` started — the
# service of `make run`, the local FerretDB, the HDFS MiniDFSCluster, the S3 moto server,
# the local RabbitMQ (infra/dev/rabbitmq.sh start, for queue mode) and the local Kubernetes
# control plane (infra/dev/k8s.sh start: etcd, kube-apiserver, kube-controller-manager,
# kube-scheduler, kwok; one line for each component, or one for all when none runs) —
# and prints one line for each: "stopped NAME (pid N)" or "NAME: not running".
# Exits non-zero if one of them could not be stopped.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"

rc=0
bash "$here/run.sh" stop || rc=1
bash "$here/ferretdb.sh" stop || rc=1
bash "$here/hdfs.sh" stop || rc=1
bash "$here/s3.sh" stop || rc=1
bash "$here/rabbitmq.sh" stop || rc=1
bash "$here/k8s.sh" stop || rc=1
exit "$rc"
