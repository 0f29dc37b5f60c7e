"""The fuzz targets of tests/core/test_fuzz_readers.py, run for minutes instead of a few examples each.

    python benchmarks/fuzz.py --minutes 5                 # all targets, the time shared between them
    python benchmarks/fuzz.py --minutes 2 --target png    # one target

Each input must give a result or a SegadvError within the deadline and the memory bound (the checks
of the tests). Prints, per target, how many inputs were tried, how many were read and how many refused,
and every failure with the input that shows it (hypothesis shrinks it first). Exit status 1 when
anything failed.
"""

from __future__ import annotations

import argparse
import sys
import time
import traceback
from collections import Counter
from datetime import timedelta
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "tests"), str(REPO / "tests" / "core")]

import test_fuzz_readers as fuzz
from hypothesis import HealthCheck, given, settings

from core.errors import SegadvError

ROUND = 500  # examples per hypothesis run; runs repeat, each from a fresh random seed, until time is up


def run_target(name: str, seconds: float) -> tuple[Counter, list[str]]:
    target = fuzz.TARGETS[name]
    outcomes: Counter = Counter()
    failures: list[str] = []
    counting = fuzz.result_or_refusal

    def result_or_refusal(read, *args):  # the tests' own check, counted
        outcome = counting(read, *args)
        outcomes["refused" if isinstance(outcome, SegadvError) else "read"] += 1
        return outcome

    def check(case):
        outcomes["inputs"] += 1
        target.check(case)

    fuzz.result_or_refusal = result_or_refusal
    run = settings(
        max_examples=ROUND, deadline=timedelta(seconds=5), database=None, suppress_health_check=list(HealthCheck)
    )(given(target.inputs)(check))
    end = time.monotonic() + seconds
    try:
        while time.monotonic() < end:
            try:
                run()
            except Exception:  # a failure: hypothesis has shrunk it and noted the falsifying input
                failures.append(traceback.format_exc(limit=-3))
                print(f"{name}: FAILURE\n{failures[-1]}", flush=True)
    finally:
        fuzz.result_or_refusal = counting
    return outcomes, failures


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=5.0, help="total time, shared by the targets")
    parser.add_argument("--target", action="append", choices=sorted(fuzz.TARGETS), help="repeatable; default: all")
    args = parser.parse_args()
    names = args.target or list(fuzz.TARGETS)
    total, failed = 0, 0
    for name in names:
        started = time.monotonic()
        outcomes, failures = run_target(name, args.minutes * 60 / len(names))
        seconds = time.monotonic() - started
        total, failed = total + outcomes["inputs"], failed + len(failures)
        print(
            f"{name:12s} {outcomes['inputs']:7d} inputs in {seconds:5.0f} s ({outcomes['inputs'] / seconds:6.1f}/s): "
            f"{outcomes['read']} reads gave a result, {outcomes['refused']} a SegadvError; {len(failures)} failures",
            flush=True,
        )
    print(f"total: {total} inputs, {failed} failures")
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
