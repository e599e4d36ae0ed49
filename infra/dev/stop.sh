#!/usr/bin/env bash
# Owns `make stop`: stops every local server that `make run` or `make test` started — the
# service of `make run`, the local FerretDB, the HDFS MiniDFSCluster, the S3 moto server and
# the local RabbitMQ (infra/dev/rabbitmq.sh start, for queue mode) —
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
exit "$rc"
