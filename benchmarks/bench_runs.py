"""What the results cache saves: ``segadv attack`` on the built-in demo computed (``--no-cache``) and the same
command served from the run index, as a user runs them (whole processes: start-up, checkpoint, data and
all), side by side.

Run: ``python benchmarks/bench_runs.py [--limit N] [--repeats K] [--method fgsm|pgd ...]``. Each repeat runs
the computed command then the cached one, so both see the same machine load; prints each pair, the median
ratio cached / computed, the same ratio of the seconds the index recorded inside the commands (start-up
before the command left out) and the load average (``os.getloadavg``) before and after. A fresh index in a
temporary folder; the demo data is made on first use, before the timing.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def segadv(args: list[str], env: dict, cwd: str) -> float:
    """Wall seconds of one ``segadv ARGS`` process (which must succeed)."""
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", "from segadv_tui.cli import main; main()", *args],
        env=env,
        cwd=cwd,
        capture_output=True,
        text=True,
    )
    seconds = time.perf_counter() - started
    if done.returncode != 0:
        sys.exit(f"segadv {' '.join(args)} failed ({done.returncode}): {done.stderr.strip()}")
    return seconds


def _recorded_seconds(index: Path) -> tuple[float, float]:
    """The wall seconds the index recorded for the last two runs (computed, cached)."""
    from core.runs.index import RunIndex

    with RunIndex(index) as runs:
        computed, cached = runs.records(last=2)
    assert cached.cached_from is not None and computed.cached_from is None
    return computed.wall_seconds or 0.0, cached.wall_seconds or 0.0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=32, help="test slices attacked (default 32)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--method", default="fgsm", help="attack method (pgd makes the computation heavier)")
    options = parser.parse_args()

    with tempfile.TemporaryDirectory() as folder:
        env = {**os.environ, "SEGADV_RUNS": str(Path(folder) / "runs.sqlite"), "PYTHONPATH": os.getcwd()}
        command = ["attack", "--limit", str(options.limit), "--method", options.method, "--device", "cpu"]
        segadv([*command, "--json", "warm.json"], env, folder)  # the demo data, the page cache, the index
        load_before = os.getloadavg()
        pairs, insides = [], []
        for repeat in range(options.repeats):
            computed = segadv([*command, "--no-cache", "--json", f"computed{repeat}.json"], env, folder)
            cached = segadv([*command, "--json", f"cached{repeat}.json"], env, folder)
            # served from the newest computed run: this repeat's
            same = (
                Path(folder, f"cached{repeat}.json").read_bytes() == Path(folder, f"computed{repeat}.json").read_bytes()
            )
            pairs.append((computed, cached))
            inside = _recorded_seconds(Path(folder) / "runs.sqlite")
            insides.append(inside)
            print(
                f"repeat {repeat}: computed {computed:6.2f} s, cached {cached:6.2f} s, ratio {cached / computed:.3f}; "
                f"inside the command {inside[0]:.2f} s -> {inside[1]:.2f} s"
                f"{'' if same else '  (the cached JSON differs from the computed one!)'}"
            )
        load_after = os.getloadavg()
    ratio = statistics.median(cached / computed for computed, cached in pairs)
    print(
        f"segadv {' '.join(command)}: median cached / computed = {ratio:.3f} "
        f"({statistics.median(c for c, _ in pairs):.2f} s -> {statistics.median(c for _, c in pairs):.2f} s)"
    )
    print(
        "inside the command (the records' wall seconds: from the command's start, torch imported, checkpoint and "
        f"data loaded, to its end): median ratio {statistics.median(c / w for w, c in insides):.3f}"
    )
    print(f"load average (1, 5, 15 min) before {load_before}, after {load_after}; {os.cpu_count()} CPUs")


if __name__ == "__main__":
    main()
