# shellcheck shell=bash
# Sourced, not run. Where cargo puts this workspace's binaries, asked of cargo itself, so
# scripts that start one of our binaries honour CARGO_TARGET_DIR, build.target-dir in a cargo
# config, and so on. (The helper tools stay in <repo>/target/tools whatever these say.)
#
#   cargo_target_dir          print the target directory (`cargo metadata` → target_directory)
#   cargo_bin NAME [PROFILE]  print the path of binary NAME built with PROFILE (default debug;
#                             release for `cargo build --release`)

_cargo_sh_repo="$(cd "$(dirname "${BASH_SOURCE[0]}")/../../.." && pwd)"

cargo_target_dir() {
  cargo metadata --format-version 1 --no-deps --manifest-path "$_cargo_sh_repo/Cargo.toml" |
    python3 -c 'import json, sys; print(json.load(sys.stdin)["target_directory"])'
}

cargo_bin() {
  local dir
  dir="$(cargo_target_dir)" || return 1
  echo "$dir/${2:-debug}/$1"
}
