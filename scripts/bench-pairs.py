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
    cmd = prefix + [binary, "--profile", transport, str(n), workload]
    out = subprocess.run(cmd, capture_output=True, text=True, check=False)
    lines = out.stdout.strip().splitlines()
    if out.returncode != 0 or not lines:
        sys.exit(f"{' '.join(cmd)} failed ({out.returncode}): {out.stderr.strip()}")
    return float(lines[-1].split()[0])


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--qos0", action="store_true", help="hold a PM QoS request of 0")
    p.add_argument("--rounds", type=int, default=7)
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
    baselines = []
    for _ in range(a.rounds):
        base = figure(prefix, a.binaries[0], a.baseline, a.workload, a.n)
        baselines.append(base)
        for b in a.binaries:
            ratios[b].append(figure(prefix, b, a.transport, a.workload, a.n) / base)

    setting = "PM QoS 0" if a.qos0 else "default"
    unit = "us" if a.workload == "rtt" else ("connections/s" if a.workload == "conn" else "MiB/s")
    print(
        f"{a.workload} {a.n}, {setting}, {a.rounds} rounds: {a.baseline} median "
        f"{statistics.median(baselines):.1f} {unit}; {a.transport} / {a.baseline}"
        + (" (lower is better)" if a.workload == "rtt" else "")
    )
    for b, v in ratios.items():
        v.sort()
        print(f"  {b}: median {statistics.median(v):.3f}, range {v[0]:.2f}-{v[-1]:.2f}")


if __name__ == "__main__":
    main()
