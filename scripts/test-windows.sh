#!/usr/bin/env bash
# Builds pipette for x86_64-pc-windows-gnu and runs clippy and the tests under Wine.
#
# Usage: scripts/test-windows.sh [extra cargo test args...]   (e.g. --test windows)
#        SKIP_CLIPPY=1 scripts/test-windows.sh ...             (tests only)
#        SKIP_BLOCKING=1 / SKIP_ASYNC=1                         (skip the blocking / async runs)
# The async run is the tokio API's suite (tests/async.rs) and the doctests with the feature.
# Recipe: a ProcessPrng shim DLL (Wine 8.0 lacks bcryptprimitives.dll), a private Wine prefix
# under target/wine-prefix, and a warm wineserver whose output goes nowhere near our pipes.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
target=x86_64-pc-windows-gnu

# Prerequisites, installed only when missing.
missing=()
command -v x86_64-w64-mingw32-gcc >/dev/null || missing+=(gcc-mingw-w64-x86-64)
command -v wine >/dev/null || missing+=(wine64 wine64-preloader wine)
command -v wineserver >/dev/null || missing+=(wine64)
if ((${#missing[@]})); then
    echo "installing ${missing[*]}" >&2
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_=sudo
    $sudo_ apt-get update
    $sudo_ apt-get install -y --no-install-recommends gcc-mingw-w64-x86-64 wine64 wine64-preloader wine
fi
if ! rustup target list --installed | grep -qx "$target"; then
    rustup target add "$target"
fi

out="$root/target/wine"
mkdir -p "$out"
dll="$out/bcryptprimitives.dll"
if [ ! -f "$dll" ] || [ scripts/windows-shim/shim.c -nt "$dll" ] || [ scripts/windows-shim/shim.def -nt "$dll" ]; then
    x86_64-w64-mingw32-gcc -O2 -shared -s -o "$dll" \
        scripts/windows-shim/shim.c scripts/windows-shim/shim.def -ladvapi32
fi

export WINEPREFIX="$root/target/wine-prefix"
export WINEDEBUG=-all
export WINEDLLOVERRIDES="mscoree,mshtml="
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_LINKER=x86_64-w64-mingw32-gcc
export CARGO_TARGET_X86_64_PC_WINDOWS_GNU_RUNNER=wine

if [ ! -f "$WINEPREFIX/system.reg" ]; then
    echo "creating the Wine prefix $WINEPREFIX" >&2
    mkdir -p "$WINEPREFIX"
    wineboot -i >/dev/null 2>&1
    wineserver -w
fi
cp "$dll" "$WINEPREFIX/drive_c/windows/system32/bcryptprimitives.dll"

# A warm server, started with its output away from any pipe (else background services inherit
# the log pipe and a piped cargo test can hang). Killed on every exit.
trap 'wineserver -k >/dev/null 2>&1 || true' EXIT
wineserver -p >/dev/null 2>&1
wine cmd /c exit >/dev/null 2>&1 </dev/null

echo "== clippy ($target)" >&2
if [ -z "${SKIP_CLIPPY:-}" ]; then
    cargo clippy --target "$target" -p pipette-ipc -p pipette-cli --all-targets -- -D warnings
    cargo clippy --target "$target" -p pipette-ipc --all-targets --all-features -- -D warnings
fi
if [ -z "${SKIP_BLOCKING:-}" ]; then
    echo "== tests ($target)" >&2
    cargo test --target "$target" -p pipette-ipc -p pipette-cli --no-fail-fast "$@"
fi
if [ -z "${SKIP_ASYNC:-}" ]; then
    echo "== async tests and doctests, feature tokio ($target)" >&2
    cargo test --target "$target" -p pipette-ipc --features tokio --test async --test shutdown_races --test shm --test handles
    cargo test --target "$target" -p pipette-ipc --features tokio --doc
fi
echo "== ok" >&2
