"""How responsive the explorer is, measured in one run on the real app (Pilot, headless) and printed as ratios.

(a) launch to first paint and to first attacked frame: a fresh Python process that imports the app and
    runs it (what `segadv-tui` does), timed from the process start to the first screen update and to the
    first screen update that shows an attacked slice (checkpoint load, data set, gradient, forward,
    pictures, table);
(b) keystroke to updated picture and table for one FGSM eps step (`+`) in the default Overlay view at
    160 x 48: from the key event reaching the app to the end of the first screen update drawn after the
    new frame arrived (turned into terminal output, as a real terminal would get it), against a bare
    forward pass of the app's own model on the same slice, in a worker thread with the app's torch
    thread count: the cached gradient should make the ratio close to 1 plus drawing; and the same step
    scored on another checkpoint (Score on: the bundled demo_small_fpn), which should cost the other
    model's forward pass instead of this one's, not both;
(b') key to new picture for a slice step (j, the next slice: a new gradient, FGSM and scores), the median
    of ``--steps``, and the process's resident memory before, halfway and after them (it should stay flat:
    the explorer's caches are bounded);
(c) the half-block renderer against textual-image's half-cell renderer (both Rich segments, two pixels
    per cell): an overlay of a demo slice and random pixels (the worst case: no two cells alike), into
    80 x 40 cells and into the Overlay view's picture sizes.

    python benchmarks/bench_tui.py [--data DIR] [--checkpoint FILE] [--steps 20]

Defaults: the bundled demo checkpoint and a tiny demo data set written to a temporary folder.

    python benchmarks/bench_tui.py --first-frames [--repeats 3] [--compare OTHER_CHECKOUT]

prints only (a), for the three data sets of issue 21: the tiny demo, the default demo (363 slices) and a
real-scale Kaggle tree (85 cases x 3 days x 144 slices = 36,720 slices and 110,160 CSV rows: hard links
to the default demo's PNGs, each slice's rows copied from the one it links to; see ``real_scale_tree``),
each opened first with cold caches (the first launch of a data set: its index, and for the tiny demo, the
first data set, the checkpoint's model cache; printed on its own), then ``--repeats`` more times from
the caches (their median). ``--compare`` launches another checkout's code (a ``git archive`` of an older
commit, say) alternately with this one's, so both see the same machine load, and prints both with their
ratio.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

SIZE = (160, 48)

# Run in a fresh process: prints "paint" at the first screen update and "frame" at the first one that
# shows an attacked slice, then quits once the data set's index is complete (read after the first frame,
# and cached for the next launch; a close before then leaves it unread).
LAUNCH = (
    """
import asyncio, sys
from pathlib import Path
from segadv_tui.app import SegadvApp

async def run():
    app = SegadvApp(data=Path(sys.argv[1]), checkpoint=Path(sys.argv[2]), device="cpu")
    done = asyncio.Event()
    display = app._display

    def recording_display(screen, renderable):
        display(screen, renderable)
        if renderable is not None and not done.is_set():
            print("frame" if app.explorer.state.frame is not None else "paint", flush=True)
            if app.explorer.state.frame is not None:
                done.set()

    app._display = recording_display
    async with app.run_test(size=(%d, %d)) as pilot:
        await done.wait()
        while app.explorer.state.dataset is None:  # the index, read after the frame: the next launch's cache
            await pilot.pause(0.05)

asyncio.run(run())
"""
    % SIZE
)


def launch_seconds(
    data: Path, checkpoint: Path, code: Path | None = None, cache: Path | None = None
) -> tuple[float, float, float]:
    """(first paint, first attacked frame) in seconds from starting a fresh Python process, and the CPU
    seconds that process used in all (it quits once its index is complete): less moved by other work than the wall
    clock on a shared machine. ``code``: the checkout whose segadv runs (default: this one's); ``cache``: its
    cache folder (SEGADV_CACHE: the index cache, the model cache; default: the user's)."""
    env = dict(os.environ)
    if code is not None:
        env["PYTHONPATH"] = str(code)
    if cache is not None:
        env["SEGADV_CACHE"] = str(cache)
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    started = time.perf_counter()
    child = subprocess.Popen(
        [sys.executable, "-c", LAUNCH, str(data), str(checkpoint)],
        stdout=subprocess.PIPE,
        text=True,
        env=env,
        cwd=None if code is None else code,
    )
    paint = frame = None
    for line in child.stdout:
        now = time.perf_counter() - started
        if paint is None:
            paint = now
        if line.strip() == "frame":
            frame = now
            break
    child.wait()
    if frame is None:
        raise SystemExit(f"the app never showed a frame (exit status {child.returncode})")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return paint, frame, cpu


def real_scale_tree(demo: Path, root: Path, cases: int = 85, days: int = 3, slices: int = 144) -> Path:
    """A Kaggle tree of the real data set's size at ``root``: ``cases`` x ``days`` x ``slices`` slice files,
    hard links to ``demo``'s PNGs in turn (so it takes no space), and train.csv with each slice's three rows
    copied from the demo slice it links to (so the organs, and the explorer's opening slice, are real)."""
    import csv

    from core.data.gitract import open_dataset

    sources = open_dataset(demo).records
    rows: dict[str, list[list[str]]] = {}
    with (demo / "train.csv").open(newline="") as file:
        for row in list(csv.reader(file))[1:]:
            rows.setdefault(row[0], []).append(row)
    lines = [["id", "class", "segmentation"]]
    index = 0
    for case in range(1, cases + 1):
        for day in range(1, days + 1):
            scans = root / "train" / f"case{case}" / f"case{case}_day{day}" / "scans"
            scans.mkdir(parents=True, exist_ok=True)
            for number in range(1, slices + 1):
                source = sources[index % len(sources)]
                index += 1
                name = f"slice_{number:04d}" + source.path.name[len("slice_0000") :]
                os.link(source.path, scans / name)
                slice_id = f"case{case}_day{day}_slice_{number:04d}"
                lines += [[slice_id, organ, rle] for _, organ, rle in rows[source.id]]
    with (root / "train.csv").open("w", newline="") as file:
        csv.writer(file, lineterminator="\n").writerows(lines)
    return root


def first_frames(checkpoint: Path, repeats: int, compare: Path | None) -> None:
    """Launch to first paint and to first attacked frame on the three data sets (see the module's doc)."""
    from core.data.demo import demo_data_dir, write_demo_dataset

    with tempfile.TemporaryDirectory() as temporary:
        demo = demo_data_dir()
        # Cold caches of our own, one per checkout (two checkouts' index entries of one tree would replace
        # each other): the first launch indexes each data set, and this checkout's builds the model with
        # smp and leaves it in its model cache (core.models.compiled) for the next launches.
        caches = [Path(temporary) / f"cache{number}" for number in range(2)]
        sets = [
            ("the tiny demo", write_demo_dataset(Path(temporary) / "tiny", seed=0, size="tiny")),
            ("the default demo (363 slices)", demo),
            ("real scale (36,720 slices)", real_scale_tree(demo, Path(temporary) / "real")),
        ]
        codes = [("this checkout", None)] + ([(f"{compare}", compare)] if compare else [])
        load = os.getloadavg()[0]
        print(f"load average {load:.1f} on {os.cpu_count()} cores; a cold launch, then the median of {repeats}")
        for title, data in sets:
            runs: dict[str, list[tuple[float, float, float]]] = {name: [] for name, _ in codes}
            for _ in range(repeats + 1):
                for (name, code), cache in zip(codes, caches):  # alternately: both see the same load
                    runs[name].append(launch_seconds(data, checkpoint, code, cache))
            # The first launch of each data set is the cold one; the median is of the launches after it.
            medians = {name: [statistics.median(values) for values in zip(*runs[name][1:])] for name in runs}
            for name in runs:
                paint, frame, cpu = medians[name]
                each = ", ".join(f"{run[1]:.2f}" for run in runs[name][1:])
                cold = runs[name][0]
                print(
                    f"{title:<32} {name:<24} first paint {paint:5.2f} s, first frame {frame:5.2f} s, "
                    f"{cpu:5.2f} s of CPU (frames: {each} s); cold caches: first frame {cold[1]:5.2f} s, "
                    f"{cold[2]:5.2f} s of CPU"
                )
            if compare:
                (_, ours), (_, theirs) = list(medians.items())[0], list(medians.items())[1]
                cold_ratio = runs[codes[0][0]][0][1] / runs[codes[1][0]][0][1]
                print(
                    f"{'':<32} first frame: this checkout / the other {ours[1] / theirs[1]:.2f} "
                    f"(cold caches: {cold_ratio:.2f})"
                )
        print(f"load average {os.getloadavg()[0]:.1f} at the end")


def bare_forward_seconds(model, image: np.ndarray, repeats: int) -> list[float]:
    """Forward passes of one slice in a fresh thread, as the app's workers run them."""
    import torch

    times: list[float] = []

    def run() -> None:
        x = torch.from_numpy(image)[None, None]
        with torch.no_grad():
            model(x)  # warm-up: the first call per shape builds kernels
            for _ in range(repeats):
                started = time.perf_counter()
                model(x)
                times.append(time.perf_counter() - started)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    return times


async def measure_app(data: Path, checkpoint: Path, steps: int):
    from textual import events

    from segadv_tui.app import SegadvApp
    from segadv_tui.frames import load_slice_data
    from segadv_tui.widgets.images import PictureViews

    app = SegadvApp(data=data, checkpoint=checkpoint, device="cpu")
    explorer = app.explorer
    state = explorer.state
    painted = asyncio.Event()
    waiting_for: list[float] = []  # the eps whose frame the next screen update must show
    waiting_for_slice: list[str] = []  # or the slice it must show
    display = app._display

    def recording_display(screen, renderable):
        display(screen, renderable)  # headless: draws nothing, so make the terminal output here
        if renderable is not None and hasattr(renderable, "render_segments"):
            renderable.render_segments(app.console)
        if waiting_for and state.frame is not None and state.frame.config.eps == waiting_for[0]:
            painted.set()
        if waiting_for_slice and state.frame is not None and state.frame.slice_id == waiting_for_slice[0]:
            painted.set()

    app._display = recording_display
    async with app.run_test(size=SIZE) as pilot:
        while state.frame is None:
            await pilot.pause(0.01)  # a tight pause(0) loop can starve the workers
        await app.workers.wait_for_complete()  # the eps curve of the first slice
        await pilot.pause()
        views = app.query_one(PictureViews)
        drawing: list[float] = []
        show = views.show

        def timed_show(*args):
            started = time.perf_counter()
            show(*args)
            drawing.append(time.perf_counter() - started)

        views.show = timed_show

        async def step_eps(key: str, change: float):
            latencies, computing, cpu = [], [], []
            for _ in range(steps):
                waiting_for[:] = [state.attack.with_eps(state.attack.eps + change).eps]
                painted.clear()
                pressed, pressed_cpu = time.perf_counter(), time.process_time()
                app._driver.send_message(events.Key(key, {"plus": "+", "minus": "-"}[key]))  # as the driver posts
                await asyncio.wait_for(painted.wait(), timeout=60)
                latencies.append(time.perf_counter() - pressed)
                cpu.append(time.process_time() - pressed_cpu)  # every thread of this process: UI and worker
                computing.append(state.frame.seconds)
                await pilot.pause()  # let the curve marker and anything else settle before the next key
            screen = "\n".join(strip.text for strip in app.screen._compositor.render_strips())
            shown = f"eps {waiting_for[0]:.3f}"
            if shown not in screen:
                raise SystemExit(f"the screen does not show {shown!r} after the last step")
            return latencies, cpu, computing

        latencies, cpu, computing = await step_eps("plus", 0.001)

        async def step_slices():
            """j (the next slice) ``steps`` times: key to the new slice's attacked frame on screen (a new
            slice: its gradient, FGSM, both forward passes, scores, pictures), and the process's RSS."""
            from segadv_tui.widgets.slices import SliceBrowser

            browser = app.query_one(SliceBrowser)
            ids = [record.id for record in browser.records]
            waiting_for.clear()  # the eps steps' wait: any repaint at this eps would count
            latencies, computing, rss = [], [], [resident_mib()]
            for _ in range(min(steps, len(ids) - 1 - ids.index(state.frame.slice_id))):
                waiting_for_slice[:] = [ids[ids.index(state.frame.slice_id) + 1]]
                painted.clear()
                pressed = time.perf_counter()
                app._driver.send_message(events.Key("j", "j"))
                await asyncio.wait_for(painted.wait(), timeout=60)
                latencies.append(time.perf_counter() - pressed)
                computing.append(state.frame.seconds)
                await app.workers.wait_for_complete()  # its eps curve, as a user reading the frame would let it
                await pilot.pause()
                rss.append(resident_mib())
            waiting_for_slice.clear()
            return latencies, computing, rss

        slice_steps = await step_slices()
        # The same steps back down, scored on another checkpoint (its gradient cached by the first step).
        fpn = next(entry for entry in state.catalog.checkpoints if entry.path.stem == "demo_small_fpn")
        explorer.score_on(fpn)
        while state.frame.scored_on != str(fpn.path):
            await pilot.pause(0.01)  # a tight pause(0) loop can starve the workers
        await app.workers.wait_for_complete()
        await pilot.pause()
        scored = await step_eps("minus", -0.001)
        model = explorer.attacker.model
        image = load_slice_data(state.source, state.attacked.img_size).image
        meta = state.attacked.meta
        sizes = views.picture_sizes()
    return latencies, cpu, computing, drawing, sizes, model, image, meta, scored, slice_steps


def resident_mib() -> float:
    """This process's resident memory now, in MiB (Linux: /proc/self/statm)."""
    with open("/proc/self/statm") as file:
        return int(file.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def median_seconds(function, repeats: int = 30) -> float:
    function()
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        function()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def render_comparison(image: np.ndarray) -> list[tuple[str, int, int, float, float]]:
    """(picture, cols, rows, our seconds, textual-image's seconds): the same RGB picture into the same cells.

    Ours: resize, pack, merge runs, Strips (what the explorer's pictures do). Theirs: the Rich renderable
    of textual-image's HalfcellImage widget, rendered to segments by a console of the box's size.
    """
    from PIL import Image
    from rich.console import Console
    from textual_image.renderable.halfcell import Image as HalfcellImage

    from segadv_tui.render.halfblock import render_strips
    from segadv_tui.render.imagery import Scene, compose

    truth = np.zeros((3,) + image.shape, dtype=bool)
    height, width = image.shape
    truth[0, height // 4 : height // 2, width // 4 : width // 2] = True
    truth[2, height // 2 : 3 * height // 4, width // 2 : 3 * width // 4] = True
    overlay = compose(Scene(image, fill=truth, outline=truth), 2 * height, 2 * width)
    noise = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    console = Console(width=200, height=100, color_system="truecolor", force_terminal=True, file=open("/dev/null", "w"))
    results = []
    for name, rgb in (("overlay of a demo slice", overlay), ("random pixels", noise)):
        picture = Image.fromarray(rgb, "RGB")
        for cols, rows in ((80, 40), (59, 30), (72, 36)):
            options = console.options.update(width=cols, height=rows)
            ours = median_seconds(lambda: render_strips(rgb, cols, rows))
            theirs = median_seconds(
                lambda: list(console.render(HalfcellImage(picture, width=cols, height=rows), options))
            )
            results.append((name, cols, rows, ours, theirs))
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="Kaggle-layout data root (default: a tiny demo)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled demo checkpoint")
    parser.add_argument("--steps", type=int, default=20, help="eps steps to time")
    parser.add_argument("--first-frames", action="store_true", help="only (a), on the three data sets")
    parser.add_argument("--repeats", type=int, default=3, help="--first-frames: launches after the cold one")
    parser.add_argument("--compare", type=Path, default=None, help="--first-frames: another checkout, side by side")
    args = parser.parse_args()
    if args.first_frames:
        from core.paths import demo_checkpoint

        first_frames(args.checkpoint or demo_checkpoint(), args.repeats, args.compare)
        return

    from core.data.demo import write_demo_dataset
    from core.paths import demo_checkpoint

    checkpoint = args.checkpoint or demo_checkpoint()
    with tempfile.TemporaryDirectory() as temporary:
        data = args.data or write_demo_dataset(Path(temporary) / "demo", seed=0, size="tiny")
        paint, first_frame, launch_cpu = launch_seconds(data, checkpoint)
        latencies, step_cpu, computing, drawing, sizes, model, image, meta, scored, slice_steps = asyncio.run(
            measure_app(data, checkpoint, args.steps)
        )
    import torch

    threads = torch.get_num_threads()  # as the app left it
    forward = bare_forward_seconds(model, image, args.steps)

    renders = render_comparison(image)

    step, bare = statistics.median(latencies), statistics.median(forward)
    print(
        f"load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} cores; "
        f"checkpoint {checkpoint.name} ({meta['model']}, {meta['img_size']} px), torch threads {threads}"
    )
    print(f"launch to first paint          {paint:8.2f} s (fresh process: imports, layout)")
    print(
        f"launch to first frame          {first_frame:8.2f} s (attacked slice, pictures and table on screen; "
        f"{launch_cpu:.2f} s of CPU)"
    )
    print(
        f"eps step, key to new picture   {step * 1000:8.1f} ms (median of {len(latencies)}, "
        f"min {min(latencies) * 1000:.1f}, max {max(latencies) * 1000:.1f}; "
        f"{statistics.median(step_cpu) * 1000:.1f} ms of CPU)"
    )
    print(
        f"  of which the worker computed {statistics.median(computing) * 1000:8.1f} ms "
        "(cached gradient, forward, scores)"
    )
    print(
        f"  and the pictures took        {statistics.median(drawing) * 1000:8.1f} ms (compose, cells, changed rows; "
        f"sizes in pixels: {', '.join(f'{w}x{h}' for w, h in sizes.values())})"
    )
    print(
        f"bare forward pass, one slice   {bare * 1000:8.1f} ms (median of {len(forward)}, worker thread, "
        f"{threads} torch threads)"
    )
    print(f"ratio step / forward           {step / bare:8.2f}")
    scored_step = statistics.median(scored[0])
    print(
        f"eps step scored on demo_small_fpn {scored_step * 1000:5.1f} ms (median of {len(scored[0])}; the worker "
        f"{statistics.median(scored[2]) * 1000:.1f} ms): {scored_step / step:.2f}x the white-box step"
    )
    slice_latencies, slice_computing, rss = slice_steps
    if slice_latencies:
        print(
            f"slice step (j), key to new frame {statistics.median(slice_latencies) * 1000:6.1f} ms (median of "
            f"{len(slice_latencies)}, min {min(slice_latencies) * 1000:.1f}, max {max(slice_latencies) * 1000:.1f}; "
            f"the worker {statistics.median(slice_computing) * 1000:.1f} ms: gradient, FGSM, forward passes, scores)"
        )
        middle = rss[len(rss) // 2]
        print(
            f"resident memory (this process)  {rss[0]:6.0f} MiB before the slice steps, {middle:.0f} after "
            f"{len(rss) // 2}, {rss[-1]:.0f} after {len(rss) - 1}"
        )
    print("half-block renderers, ms per picture (median of 30): ours vs textual-image's half-cell, ratio")
    for name, cols, rows, ours, theirs in renders:
        print(
            f"  {name:<22} {cols:3d} x {rows:2d} cells {ours * 1000:7.2f} vs {theirs * 1000:7.2f} ms  "
            f"{theirs / ours:5.1f}x"
        )


if __name__ == "__main__":
    main()
