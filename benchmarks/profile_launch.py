"""Where one launch of the explorer goes: a timeline of its steps, from the start of a fresh process to the
first attacked frame on screen (headless, the real app, 160 x 48).

Each step is timed by wrapping the function that does it (its module's attribute, replaced before the app
calls it; a module that imports torch is wrapped as it is imported, by an import hook), in whatever thread
runs it. The wrappers cost microseconds; ``import torch`` is timed from the moment it starts to when its
module is complete.

    python benchmarks/profile_launch.py [--data DIR] [--checkpoint FILE]

Default: the built-in demo data and the bundled demo checkpoint. Run it twice: the first launch of a data
set or checkpoint fills the caches (the index cache, the model cache) that the second one opens from.
"""

from __future__ import annotations

import time

STARTED = time.perf_counter()

import argparse  # noqa: E402  (the clock starts first)
import asyncio  # noqa: E402
import functools  # noqa: E402
import importlib.abc  # noqa: E402
import importlib.util  # noqa: E402
import os  # noqa: E402
import sys  # noqa: E402
import threading  # noqa: E402
from pathlib import Path  # noqa: E402

EVENTS: list[tuple[str, float, float | None, str]] = []  # (step, from, to or None for a moment, thread)


def now() -> float:
    return time.perf_counter() - STARTED


def timed(step: str, function):
    @functools.wraps(function)
    def wrapper(*args, **kwargs):
        begun = now()
        try:
            return function(*args, **kwargs)
        finally:
            EVENTS.append((step, begun, now(), threading.current_thread().name))

    return wrapper


class TorchWatch(importlib.abc.MetaPathFinder):
    """Times ``import torch`` and wraps ``core.models.compiled.open_model`` once it is imported."""

    def find_spec(self, name, path, target=None):
        if name not in ("torch", "core.models.compiled"):
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        execute = spec.loader.exec_module

        def exec_module(module):
            begun = now()
            execute(module)
            if name == "torch":
                EVENTS.append(("import torch", begun, now(), threading.current_thread().name))
            else:
                module.open_model = timed("the model opened (open_model)", module.open_model)

        spec.loader.exec_module = exec_module
        return spec


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="a data folder (default: the built-in demo)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled demo checkpoint")
    args = parser.parse_args()
    sys.meta_path.insert(0, TorchWatch())
    begun = now()
    from segadv_tui.app import SegadvApp

    EVENTS.append(("segadv_tui.app imported (Textual, the screens, the widgets)", begun, now(), "main"))
    import core.data.open
    import segadv_tui.catalog
    import segadv_tui.gc_pause
    import segadv_tui.index_cache
    import segadv_tui.screens.explorer as explorer
    from core.data.demo import demo_data_dir
    from core.paths import demo_checkpoint

    segadv_tui.index_cache.load_index = timed("the index cache read", segadv_tui.index_cache.load_index)
    segadv_tui.index_cache.save_index = timed("the index saved to its cache", segadv_tui.index_cache.save_index)
    core.data.open.open_dataset = timed("the data indexed from its files", core.data.open.open_dataset)
    segadv_tui.catalog.scan = timed("checkpoint headers scanned", segadv_tui.catalog.scan)
    explorer.first_look = timed("a first look: the opening slice from train.csv", explorer.first_look)
    explorer.compute_frame = timed("the first frame computed", explorer.compute_frame)
    explorer.resume_collector = timed("the collector resumed (gc.freeze)", explorer.resume_collector)
    data = args.data or demo_data_dir()
    checkpoint = args.checkpoint or demo_checkpoint()

    async def run() -> None:
        app = SegadvApp(data=data, checkpoint=checkpoint, device="cpu")
        shown = asyncio.Event()
        display = app._display

        def recording_display(screen, renderable):
            display(screen, renderable)
            if renderable is None or shown.is_set():
                return
            if app.explorer.state.frame is not None:
                EVENTS.append(("first attacked frame on screen", now(), None, "main"))
                shown.set()
            elif not any(step == "first paint" for step, *_ in EVENTS):
                EVENTS.append(("first paint", now(), None, "main"))

        app._display = recording_display
        async with app.run_test(size=(160, 48)) as pilot:
            await shown.wait()
            while app.explorer.state.dataset is None:  # the index, read after the first frame
                await pilot.pause(0.05)
            await pilot.pause(0.3)  # and saved to its cache

    asyncio.run(run())
    print(f"{data} ({checkpoint.name}); load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
    print(f"{'step':<62} {'from -> to, s':>15} {'seconds':>8}  thread")
    seen = set()
    for step, begun, ended, thread in sorted(EVENTS, key=lambda event: event[1]):
        if step in seen and step == "the first frame computed":
            continue  # later frames (the prefetch's) are not the launch's
        seen.add(step)
        span = f"{begun:5.2f} -> {ended:5.2f}" if ended is not None else f"at {begun:5.2f}"
        took = f"{ended - begun:8.2f}" if ended is not None else " " * 8
        print(f"{step:<62} {span:>15} {took}  {thread}")


if __name__ == "__main__":
    main()
