#!/usr/bin/env bash
# The portable Unix code paths, run on Linux (issue #13). With PIPETTE_UNIX_PORTABLE=1,
# build.rs sets `--cfg pipette_portable` for pipette-ipc, and the Linux build takes the code
# paths of macOS and the BSDs wherever Linux has the calls they use: plain socket(2)/accept(2)
# followed by fcntl(FD_CLOEXEC) and ioctl(FIONBIO), the socket file's mode set by chmod
# between bind and listen instead of fchmod, pipe(2) + fcntl, and listeners woken by their
# own wake-up (a pipe in the blocking listener's poller, a cancellation token in the async
# one) instead of shutdown(2) of the listening socket. What stays Linux's own in this run
# (epoll, SO_PEERCRED, MSG_NOSIGNAL) is listed in sys/mod.rs.
#
# Only pipette-ipc and its tests are rebuilt (the dependencies are shared with the normal
# build); the next normal build rebuilds them back.
set -euo pipefail
cd "$(dirname "$0")/.."
export PIPETTE_UNIX_PORTABLE=1
cargo test -p pipette-ipc --all-features --lib \
  --test endpoint --test messaging --test shutdown --test users \
  --test async --test shutdown_races --test names \
  --test single_instance --test values
