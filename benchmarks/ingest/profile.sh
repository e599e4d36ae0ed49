#!/usr/bin/env bash
# `make profile-ingest`: a flamegraph of auditlog-service under the benchmark's load — 64
# producers sending single events, group commit on — on a private FerretDB. perf (Debian:
# linux-perf) records the service with DWARF call graphs; inferno (installed into
# target/tools on first use) folds the stacks and draws target/profile-ingest.svg. The top
# functions by own CPU time are printed too.
#
#   benchmarks/ingest/profile.sh                 # 10 s of load
#   BENCH_SECONDS=20 benchmarks/ingest/profile.sh
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
cd "$repo"
# shellcheck source=infra/dev/lib/cargo.sh
source "$repo/infra/dev/lib/cargo.sh"

command -v perf >/dev/null || { echo "profile-ingest needs perf: sudo apt-get install linux-perf" >&2; exit 1; }
tools="$repo/target/tools"
if [ ! -x "$tools/bin/inferno-flamegraph" ]; then
  echo "installing inferno (flamegraph drawing) into $tools" >&2
  cargo install --quiet --locked --root "$tools" inferno@0.12.8
fi

target="$(cargo_target_dir)"
data="$target/profile-ingest.perf.data"
svg="$target/profile-ingest.svg"
BENCH_SECONDS="${BENCH_SECONDS:-10}" BENCH_PERF_DATA="$data" bash "$here/run.sh"

perf script -i "$data" 2>/dev/null | "$tools/bin/inferno-collapse-perf" >"$target/profile-ingest.folded"
"$tools/bin/inferno-flamegraph" --title "auditlog-service, 64 producers, single events" \
  <"$target/profile-ingest.folded" >"$svg"
echo
echo "top functions by own CPU time (perf report --no-children):"
perf report -i "$data" --no-children --sort symbol --stdio 2>/dev/null \
  | grep -E '^ +[0-9.]+%' | awk 'NR <= 25' # not head: under pipefail its early exit failed the target
echo
echo "flamegraph: $svg"
