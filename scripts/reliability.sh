#!/usr/bin/env bash
# The reliability and security suite of issue #6 (see docs/RELIABILITY.md).
#
#   scripts/reliability.sh setup        as root: create the throwaway user the other-user
#                                       tests (tests/users.rs) run clients and servers as
#   scripts/reliability.sh fuzz [SECS]  run every fuzz target for SECS seconds (default 45)
#                                       on the corpus kept in fuzz/corpus/; a crash fails
#   scripts/reliability.sh soak [SECS]  the long load run (release build, 1,000 clients x
#                                       1,000 messages, then SECS seconds of churn; default 180)
#   scripts/reliability.sh ci           setup, then fuzz (what CI runs besides cargo test)
set -euo pipefail
cd "$(dirname "$0")/.."

OTHER_USER=pipette-other

step() { printf '\n==> %s\n' "$*"; }

setup() {
  step "reliability setup: throwaway user $OTHER_USER for tests/users.rs"
  if [ "$(id -u)" -ne 0 ]; then
    echo "not root: skipping (tests/users.rs is skipped too, except in CI where it fails)"
    return 0
  fi
  command -v setpriv >/dev/null || { echo "setpriv (util-linux) is missing" >&2; exit 1; }
  if ! getent passwd "$OTHER_USER" >/dev/null; then
    useradd --system --no-create-home --user-group --shell /usr/sbin/nologin "$OTHER_USER"
  fi
  id "$OTHER_USER"
}

fuzz() {
  local secs="${1:-45}"
  step "fuzzing: each target for ${secs}s"
  # cargo-fuzz needs a nightly compiler (sanitizer flags): the nightly toolchain when there
  # is one, else the stable one with RUSTC_BOOTSTRAP=1.
  local cargo=(cargo)
  if rustup toolchain list 2>/dev/null | grep -q '^nightly'; then
    cargo=(cargo +nightly)
  else
    export RUSTC_BOOTSTRAP=1
  fi
  # libfuzzer-sys compiles libFuzzer, which is C++.
  if ! command -v c++ >/dev/null 2>&1; then
    if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
      apt-get update -q
      DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends g++
    else
      echo "fuzzing needs a C++ compiler (c++): install g++ or clang" >&2
      exit 1
    fi
  fi
  if ! command -v cargo-fuzz >/dev/null 2>&1; then
    step "installing cargo-fuzz"
    cargo install cargo-fuzz --locked
  fi
  local target log status runs total=0
  for target in $(cd fuzz && "${cargo[@]}" fuzz list); do
    log="$(mktemp)"
    # The committed corpus is the seed; new inputs go to a scratch directory, so a CI run
    # leaves the repository unchanged. A crash leaves its input in fuzz/artifacts/<target>/.
    local scratch
    scratch="$(mktemp -d)"
    status=0
    (cd fuzz && "${cargo[@]}" fuzz run "$target" "$scratch" "corpus/$target" -- \
      -max_total_time="$secs" -print_final_stats=1) >"$log" 2>&1 || status=$?
    rm -rf "$scratch"
    runs="$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -n 1 || true)"
    if [ "$status" -ne 0 ]; then
      tail -n 60 "$log"
      echo "fuzz target $target FAILED (exit $status); the crashing input is in fuzz/artifacts/$target/" >&2
      rm -f "$log"
      exit 1
    fi
    echo "fuzz target $target: ${runs:-?} executions in ${secs}s, no crash"
    total=$((total + ${runs:-0}))
    rm -f "$log"
  done
  echo "fuzzing: $total executions in total"
}

soak() {
  local secs="${1:-180}"
  step "soak: release build, full-size load, then ${secs}s of churn"
  PIPETTE_SOAK_SECS="$secs" cargo test --release -p pipette-ipc --test load -- --include-ignored --nocapture
}

case "${1:-ci}" in
  setup) setup ;;
  fuzz) fuzz "${2:-45}" ;;
  soak) soak "${2:-180}" ;;
  ci) setup; fuzz "${2:-45}" ;;
  *) echo "usage: $0 [setup|fuzz [SECS]|soak [SECS]|ci]" >&2; exit 2 ;;
esac
