#!/usr/bin/env bash
# Owns the list of what a machine needs before `make run`, `make test` or `make lint` do any
# work. Prints each missing prerequisite on one line with the command that installs it (Debian
# apt commands; rustup for Rust) and exits 1; prints nothing and exits 0 when all are there.
# The README's "Prerequisites" section lists the same tools and minimum versions.
#
#   infra/dev/prereqs.sh run            `make run` (Go only when MONGODB_URI is unset: it builds
#                                       the local FerretDB)
#   infra/dev/prereqs.sh test           `make test`: everything below
#   infra/dev/prereqs.sh test-rust|test-helm|test-browser|lint
#
# Several modes may be given; their needs are merged.
set -euo pipefail

RUST_MIN=1.89     # Cargo.toml rust-version (and the highest rust-version of the locked crates)
GO_MIN_RUN=1.24   # FerretDB v1.24.2's go.mod: `go 1.24`
GO_MIN_TEST=1.26  # helm v3.22.0's go.mod: `go 1.26.0` (make test-helm builds helm)
PYTHON_MIN=3.10
JAVA_MIN=17       # Hadoop's MiniDFSCluster (make test: the HDFS tests)
MAVEN_MIN=3.6

[ $# -gt 0 ] || { echo "usage: $0 {run|test|test-rust|test-helm|test-browser|lint}..." >&2; exit 2; }

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo "
apt="${sudo}apt-get install -y"
go_arch="$(dpkg --print-architecture 2>/dev/null || echo amd64)"
go_install() {
  echo "curl -fsSL https://go.dev/dl/go$1.0.linux-$go_arch.tar.gz | ${sudo}tar -C /usr/local -xz && export PATH=/usr/local/go/bin:\$PATH  (Debian's golang-go may be too old)"
}

# version_ge HAVE WANT: dotted versions, numerically.
version_ge() {
  [ "$(printf '%s\n%s\n' "$2" "$1" | sort -t. -k1,1n -k2,2n -k3,3n | head -n1)" = "$2" ]
}

missing=()
miss() { missing+=("$(printf '%-28s %s' "$1" "$2")"); }

check_rust() {
  local v
  if ! command -v cargo >/dev/null || ! command -v rustc >/dev/null; then
    miss "Rust >= $RUST_MIN (cargo)" "curl --proto '=https' --tlsv1.2 -sSf https://sh.rustup.rs | sh -s -- -y && . \"\$HOME/.cargo/env\""
    return
  fi
  v="$(rustc --version | awk '{print $2}')"
  version_ge "${v%%-*}" "$RUST_MIN" ||
    miss "Rust >= $RUST_MIN (have $v)" "rustup update stable"
}

check_cc() {
  # The linker, and the C parts of ring, aws-lc-sys and zstd-sys.
  command -v cc >/dev/null || miss "C compiler (cc)" "$apt build-essential"
}

check_lint_tools() {
  command -v cargo >/dev/null || return 0
  cargo fmt --version >/dev/null 2>&1 || miss "rustfmt" "rustup component add rustfmt"
  cargo clippy --version >/dev/null 2>&1 || miss "clippy" "rustup component add clippy"
}

check_go() {
  local want="$1" v
  if ! command -v go >/dev/null; then
    miss "Go >= $want" "$(go_install "$want")"
    return
  fi
  v="$(go env GOVERSION 2>/dev/null || true)"
  v="${v#go}"
  v="${v%%[-+ ]*}"
  version_ge "$v" "$want" || miss "Go >= $want (have $v)" "$(go_install "$want")"
}

check_python() {
  if ! command -v python3 >/dev/null; then
    miss "Python >= $PYTHON_MIN" "$apt python3"
    return
  fi
  python3 -c "import sys; sys.exit(sys.version_info < tuple(map(int, '$PYTHON_MIN'.split('.'))))" ||
    miss "Python >= $PYTHON_MIN (have $(python3 -c 'import platform; print(platform.python_version())'))" "$apt python3"
}

check_venv() {
  command -v python3 >/dev/null || return 0
  python3 -c 'import venv, ensurepip' >/dev/null 2>&1 ||
    miss "Python venv module" "$apt python3-venv"
}

check_java() {
  local v
  if ! command -v java >/dev/null || ! command -v javac >/dev/null; then
    miss "Java (JDK) >= $JAVA_MIN" "$apt default-jdk-headless"
    return
  fi
  v="$(java -version 2>&1 | sed -n 's/.*version "\([0-9][0-9]*\).*/\1/p' | sed -n 1p)"
  if [ -z "$v" ] || [ "$v" -lt "$JAVA_MIN" ]; then
    miss "Java (JDK) >= $JAVA_MIN (have ${v:-?})" "$apt default-jdk-headless"
  fi
}

check_maven() {
  local v
  if ! command -v mvn >/dev/null; then
    miss "Maven >= $MAVEN_MIN" "$apt maven"
    return
  fi
  v="$(mvn -v 2>/dev/null | sed -n 's/.*Maven \([0-9][0-9.]*\).*/\1/p' | sed -n 1p)"
  version_ge "${v:-0}" "$MAVEN_MIN" || miss "Maven >= $MAVEN_MIN (have ${v:-?})" "$apt maven"
}

check_curl() { command -v curl >/dev/null || miss "curl" "$apt curl"; }

check_util_linux() {
  if ! command -v flock >/dev/null || ! command -v setsid >/dev/null; then
    miss "flock, setsid" "$apt util-linux"
  fi
}

# Chromium: `make test` installs Debian's package itself (infra/dev/install-tools.sh) when it
# may (root, or sudo without a password); otherwise it is a prerequisite like the others.
check_chromium() {
  { command -v chromium >/dev/null || command -v chromium-browser >/dev/null ||
    command -v google-chrome >/dev/null; } && command -v chromedriver >/dev/null && return 0
  if command -v apt-get >/dev/null && { [ "$(id -u)" -eq 0 ] || sudo -n true 2>/dev/null; }; then
    return 0
  fi
  miss "Chromium and its WebDriver" "$apt chromium chromium-driver"
}

declare -A need=()
for mode in "$@"; do
  case "$mode" in
    run)
      need[rust]=1 need[cc]=1 need[python]=1 need[util]=1
      [ -n "${MONGODB_URI:-}" ] || need[go_run]=1
      ;;
    lint) need[rust]=1 need[cc]=1 need[lint]=1 ;;
    test-rust) need[rust]=1 need[cc]=1 need[python]=1 need[venv]=1 need[util]=1 need[go_run]=1 need[java]=1 need[maven]=1 ;;
    test-helm) need[go_test]=1 need[python]=1 need[venv]=1 ;;
    test-browser) need[rust]=1 need[cc]=1 need[python]=1 need[util]=1 need[go_run]=1 need[curl]=1 need[chromium]=1 ;;
    test)
      need[rust]=1 need[cc]=1 need[python]=1 need[venv]=1 need[util]=1 need[go_test]=1 need[java]=1 need[maven]=1 need[curl]=1 need[chromium]=1
      ;;
    *) echo "prereqs.sh: unknown mode '$mode'" >&2; exit 2 ;;
  esac
done

[ -z "${need[rust]:-}" ] || check_rust
[ -z "${need[cc]:-}" ] || check_cc
[ -z "${need[lint]:-}" ] || check_lint_tools
if [ -n "${need[go_test]:-}" ]; then check_go "$GO_MIN_TEST"; elif [ -n "${need[go_run]:-}" ]; then check_go "$GO_MIN_RUN"; fi
[ -z "${need[python]:-}" ] || check_python
[ -z "${need[venv]:-}" ] || check_venv
[ -z "${need[java]:-}" ] || check_java
[ -z "${need[maven]:-}" ] || check_maven
[ -z "${need[curl]:-}" ] || check_curl
[ -z "${need[util]:-}" ] || check_util_linux
[ -z "${need[chromium]:-}" ] || check_chromium

if [ "${#missing[@]}" -gt 0 ]; then
  echo "Missing prerequisites for '$*' (install them, then run the command again):" >&2
  printf '  %s\n' "${missing[@]}" >&2
  exit 1
fi
