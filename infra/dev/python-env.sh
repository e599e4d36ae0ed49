#!/usr/bin/env bash
# Python venv with the cross-check tools that tests use (pyarrow, duckdb, pymongo, pymongoarrow,
# pytest, moto[server]; see infra/dev/requirements.txt).
#
#   infra/dev/python-env.sh          create or update the venv if needed; print its python path
#   infra/dev/python-env.sh --bin    same, but print the venv's bin directory
#
# Idempotent and quick when up to date: the venv records a hash of requirements.txt and of the
# Python version; only when those change does it run pip (and only a Python change recreates it).
#
# Settings (environment): PYTHON_ENV_DIR (<repo>/target/tools/venv), PYTHON (python3).
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
repo="$(cd "$here/../.." && pwd)"
venv="${PYTHON_ENV_DIR:-$repo/target/tools/venv}"
python="${PYTHON:-python3}"
req="$here/requirements.txt"
stamp="$venv/.requirements.sha256"

log() { printf 'python-env.sh: %s\n' "$*" >&2; }

py_version="$("$python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])')"
want="$( (echo "python $py_version"; cat "$req") | sha256sum | cut -d' ' -f1)"

if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$venv/bin/python" ]; then
  # Serialize concurrent callers (e.g. parallel test jobs).
  mkdir -p "$(dirname "$venv")"
  exec 9>"$venv.lock"
  flock 9
  if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ] || [ ! -x "$venv/bin/python" ]; then
    if [ -x "$venv/bin/python" ] &&
      [ "$("$venv/bin/python" -c 'import sys; print("%d.%d.%d" % sys.version_info[:3])' 2>/dev/null)" != "$py_version" ]; then
      log "Python changed to $py_version: recreating $venv"
      rm -rf "$venv"
    fi
    if [ ! -x "$venv/bin/python" ]; then
      log "creating venv $venv (Python $py_version)"
      rm -rf "$venv"
      "$python" -m venv "$venv" ||
        { log "python3 -m venv failed (on Debian: apt-get install python3-venv)"; exit 1; }
    fi
    rm -f "$stamp"
    log "installing $req"
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip >&2
    "$venv/bin/python" -m pip install --quiet --disable-pip-version-check --only-binary=:all: \
      -r "$req" >&2
    echo "$want" >"$stamp"
    log "ready"
  fi
  exec 9>&-
fi

case "${1:-}" in
  --bin) echo "$venv/bin" ;;
  "") echo "$venv/bin/python" ;;
  *) echo "usage: $0 [--bin]" >&2; exit 2 ;;
esac
