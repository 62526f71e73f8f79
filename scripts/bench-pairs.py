#!/usr/bin/env python3
"""Alternated timing of pipette-bench binaries against a baseline measured in the same round.

On these virtual machines a figure drifts with the host's load from minute to minute, so a
change is judged by ratios taken seconds apart: each round runs the baseline transport once,
then the transport under test once with every binary given, and each binary's figure is
divided by that round's baseline. Prints each binary's median ratio and range.

    scripts/bench-pairs.py [--qos0] [--rounds N] WORKLOAD N BASELINE TRANSPORT BIN [BIN ...]

    WORKLOAD   conn (connections/s), rtt (median round trip, lower is better), tput64, tput4m
    N          the workload's count, as `pipette-bench --profile T N WORKLOAD` takes it
    BASELINE   the baseline transport, run with the first BIN (raw-uds, tokio-uds, ...)
    TRANSPORT  the transport under test (pipette, pipette-async, ...)
    --qos0     hold a PM QoS request of 0 during every run (../shared/tools/pm-qos-zero, or
               $PM_QOS_ZERO), as tuned's latency-performance profile does
    --cacheline  before and after each round, the host's cache-line round trip between two
               threads (`BIN --cacheline` of the last BIN); the medians are then also given
               per placement (the figures, not the ratios: the baseline does not follow it),
               near (< 200 ns both times) and far (> 250 ns both times), which the
               shared-memory transports follow (docs/PERFORMANCE.md, "Machine")

Example (a build before and after a change, 11 rounds, both settings):

    scripts/bench-pairs.py --rounds 11 conn 3000 tokio-uds pipette-async /tmp/before target/release/pipette-bench
    scripts/bench-pairs.py --qos0 --rounds 11 conn 3000 tokio-uds pipette-async /tmp/before target/release/pipette-bench

Never run it while something else uses the CPUs (a build, a test run): the figures would
measure that.
"""

import argparse
import os
import statistics
import subprocess
import sys


def figure(prefix, binary, transport, workload, n):
    """One run's figure: the first number of the last line pipette-bench prints."""
    if transport is None:
        cmd = [binary, "--cacheline"]
    else:
        cmd = prefix + [binary, "--profile", transport, str(n), workload]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return float(lines[-1].split()[0])


def cacheline(binary):
    """The host's cache-line round trip between two threads, ns (`pipette-bench --cacheline`)."""
    return figure([], binary, None, None, None)


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qos0", action="store_true", help="hold a PM QoS request of 0")
    p.add_argument("--rounds", type=int, default=7)
    p.add_argument("--cacheline", action="store_true", help="record the host's placement")
    p.add_argument("workload", choices=["conn", "rtt", "tput64", "tput4m"])
    p.add_argument("n", type=int)
    p.add_argument("baseline")
    p.add_argument("transport")
    p.add_argument("binaries", nargs="+")
    a = p.parse_args()

    prefix = []
    if a.qos0:
        here = os.path.dirname(os.path.abspath(__file__))
        tool = os.environ.get(
            "PM_QOS_ZERO", os.path.join(here, "..", "..", "shared", "tools", "pm-qos-zero")
        )
        if not os.access(tool, os.X_OK):
            sys.exit(f"--qos0: {tool} is not an executable; set PM_QOS_ZERO to the tool")
        prefix = [tool]

    ratios = {b: [] for b in a.binaries}
    figures = {b: [] for b in a.binaries}
    baselines = []
    placements = []
    for r in range(a.rounds):
        before = cacheline(a.binaries[-1]) if a.cacheline else None
        base = figure(prefix, a.binaries[0], a.baseline, a.workload, a.n)
        baselines.append(base)
        for b in a.binaries:
            figures[b].append(figure(prefix, b, a.transport, a.workload, a.n))
            ratios[b].append(figures[b][-1] / base)
        if a.cacheline:
            after = cacheline(a.binaries[-1])
            place = "near" if max(before, after) < 200 else "far" if min(before, after) > 250 else "mixed"
            placements.append(place)
            print(
                f"round {r}: cache line {before:.0f} -> {after:.0f} ns ({place}); "
                + ", ".join(f"{figures[b][-1]:.4g} ({ratios[b][-1]:.3g})" for b in a.binaries),
                flush=True,
            )

    setting = "PM QoS 0" if a.qos0 else "default"
    unit = "us" if a.workload == "rtt" else ("connections/s" if a.workload == "conn" else "MiB/s")
    print(
        f"{a.workload} {a.n}, {setting}, {a.rounds} rounds: {a.baseline} median "
        f"{statistics.median(baselines):.1f} {unit}; {a.transport} / {a.baseline}"
        + (" (lower is better)" if a.workload == "rtt" else "")
    )
    for b, v in ratios.items():
        line = (
            f"  {b}: median {statistics.median(v):.3g}, range {min(v):.3g}-{max(v):.3g}"
            f" ({statistics.median(figures[b]):.4g} {unit})"
        )
        for place in ("near", "far"):
            w = [x for x, p in zip(figures[b], placements) if p == place]
            if w:
                line += f"; {place} ({len(w)}): {statistics.median(w):.4g} {unit}, {min(w):.4g}-{max(w):.4g}"
        print(line)


if __name__ == "__main__":
    main()
