#!/usr/bin/env bash
# Lints the Unix systems CI cannot run (issue #13): clippy, warnings as errors, for macOS
# (Intel and Apple silicon) and FreeBSD, with all features and with the default ones.
# Checking needs the Rust targets (rustup target add ...) but no linker or SDK: nothing is
# linked. The portable code paths that Linux can run are run by scripts/test-portable.sh.
set -euo pipefail
cd "$(dirname "$0")/.."
targets=(x86_64-apple-darwin aarch64-apple-darwin x86_64-unknown-freebsd)
installed=$(rustup target list --installed 2>/dev/null || true)
for t in "${targets[@]}"; do
  if ! grep -qx "$t" <<<"$installed"; then
    rustup target add "$t"
  fi
done
for t in "${targets[@]}"; do
  echo "clippy --target $t (all features, then default features)"
  cargo clippy --workspace --all-targets --all-features --target "$t" -- -D warnings
  # The workspace unifies features (the CLI and bench turn tokio on): the library alone
  # with its default features is the other build users get.
  cargo clippy -p pipette-ipc --all-targets --target "$t" -- -D warnings
done
