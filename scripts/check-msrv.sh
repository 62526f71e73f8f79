#!/usr/bin/env bash
# The declared rust-version (workspace Cargo.toml) is honoured: this machine has one Rust
# toolchain and cannot fetch another, so instead of building with the old compiler:
#  1. clippy's `incompatible_msrv` lint (on by default, an error under -D warnings; .ci/run's
#     clippy step) rejects std APIs newer than rust-version in our code;
#  2. this script checks that no dependency of a published crate (pipette-ipc, pipette-cli)
#     declares a newer rust-version than ours, in the locked versions.
# What neither covers: language features newer than rust-version (rare; the compiler is the
# only full check).
set -euo pipefail
cd "$(dirname "$0")/.."
cargo metadata --format-version 1 --locked --all-features | python3 -c '
import json, sys
m = json.load(sys.stdin)
pkgs = {p["id"]: p for p in m["packages"]}
def ver(s):
    return tuple(int(x) for x in (s.split(".") + ["0", "0"])[:3])
ours = {p["name"]: p for p in m["packages"] if p["source"] is None}
msrv = ver(ours["pipette-ipc"]["rust_version"])
nodes = {n["id"]: n for n in m["resolve"]["nodes"]}
# Everything a published crate needs to build (normal and build dependencies, any target).
todo = [ours[n]["id"] for n in ("pipette-ipc", "pipette-cli")]
seen = set()
while todo:
    i = todo.pop()
    if i in seen:
        continue
    seen.add(i)
    for d in nodes[i]["deps"]:
        if any(k["kind"] in (None, "build") for k in d["dep_kinds"]):
            todo.append(d["pkg"])
bad = []
for i in sorted(seen):
    p = pkgs[i]
    rv = p.get("rust_version")
    if rv and ver(rv) > msrv:
        bad.append("%s %s needs Rust %s" % (p["name"], p["version"], rv))
    if p["source"] is None and ver(p["rust_version"] or "0") != msrv:
        bad.append("%s declares rust-version %s, not the workspace one" % (p["name"], p["rust_version"]))
name = ".".join(map(str, msrv))
if bad:
    sys.exit(f"rust-version {name} is not honoured:\n  " + "\n  ".join(bad) +
             "\nPin an older version (cargo update -p NAME --precise VERSION) or raise rust-version.")
print(f"rust-version {name}: {len(seen)} packages that the published crates build with declare nothing newer")
'
