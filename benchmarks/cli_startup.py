"""Start-up cost of the light commands: `cod --help` and `cod info FILE`, wall time and peak
memory of the whole process, for this checkout against another one, side by side.

    python benchmarks/cli_startup.py --baseline /tmp/cod-base [--runs 15]
    (make the baseline with: git archive COMMIT | tar -x -C /tmp/cod-base)

Each run is a fresh interpreter (`python -m cod ...` with PYTHONPATH set to the checkout), the
two checkouts alternating run by run so that a loaded machine weighs on both alike; the table
gives the median wall time and the peak RSS (wait4's ru_maxrss of the child) and the ratios.
Issue 14's target: under 0.3 s and 150 MB.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def run_once(checkout: Path, argv: list[str]) -> tuple[float, float]:
    """(wall seconds, peak RSS in MB) of `python -m cod ARGV` with ``checkout`` on the path."""
    env = dict(os.environ, PYTHONPATH=str(checkout), HF_HUB_OFFLINE="1")
    t0 = time.perf_counter()
    p = subprocess.Popen([sys.executable, "-m", "cod", *argv], cwd=checkout, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    _, status, usage = os.wait4(p.pid, 0)
    wall = time.perf_counter() - t0
    p.returncode = os.waitstatus_to_exitcode(status)
    if p.returncode != 0:
        raise SystemExit(f"{checkout}: `cod {' '.join(argv)}` exited {p.returncode}")
    return wall, usage.ru_maxrss / 1024


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--baseline", required=True, help="another checkout of cod (e.g. main before the change)")
    ap.add_argument("--runs", type=int, default=15)
    ap.add_argument("--file", default=str(ROOT / "tests" / "data" / "sample.codlite-small-0.0312.cod"), help="the .cod file for `cod info`")
    args = ap.parse_args()
    checkouts = {"this": ROOT, "baseline": Path(args.baseline).resolve()}
    commands = {"cod --help": ["--help"], "cod info FILE": ["info", str(Path(args.file).resolve())]}
    print(f"# {platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, load {os.getloadavg()[0]:.2f}, Python {platform.python_version()}, {args.runs} runs each, alternating")
    print(f"{'command':<15} {'checkout':<9} {'median s':>9} {'peak MB':>8}")
    for label, argv in commands.items():
        times: dict[str, list[float]] = {k: [] for k in checkouts}
        mem: dict[str, list[float]] = {k: [] for k in checkouts}
        for k, c in checkouts.items():  # one untimed warm-up each (file cache)
            run_once(c, argv)
        for _ in range(args.runs):
            for k, c in checkouts.items():
                t, m = run_once(c, argv)
                times[k].append(t)
                mem[k].append(m)
        med = {k: statistics.median(v) for k, v in times.items()}
        peak = {k: max(v) for k, v in mem.items()}
        for k in checkouts:
            print(f"{label:<15} {k:<9} {med[k]:9.3f} {peak[k]:8.0f}")
        print(f"{label:<15} {'ratio':<9} {med['this'] / med['baseline']:9.3f} {peak['this'] / peak['baseline']:8.3f}")


if __name__ == "__main__":
    main()
