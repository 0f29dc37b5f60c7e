"""How responsive the explorer is, measured in one run on the real app (Pilot, headless) and printed as ratios.

(a) time to first frame: from starting the app to the first attacked slice on screen (checkpoint load,
    data set, gradient, forward, pictures, table);
(b) keystroke to updated table for one FGSM eps step (`+`), against a bare forward pass of the same
    model on one slice at the checkpoint's image size: the cached gradient should make the ratio close
    to 1 plus rendering;
(c) the half-block renderer: a 224 x 224 picture into 56 x 28 cells.

    python benchmarks/bench_tui.py [--data DIR] [--checkpoint FILE] [--steps 20]

Defaults: the bundled demo checkpoint and a tiny demo data set written to a temporary folder.
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch


def bare_forward_seconds(model, image: np.ndarray, repeats: int) -> list[float]:
    x = torch.from_numpy(image)[None, None]
    times = []
    with torch.no_grad():
        model(x)  # warm-up: the first call per shape builds kernels
        for _ in range(repeats):
            started = time.perf_counter()
            model(x)
            times.append(time.perf_counter() - started)
    return times


async def measure_app(data: Path, checkpoint: Path, steps: int) -> tuple[float, list[float], list[float], object]:
    from segadv_tui.app import SegadvApp

    started = time.perf_counter()
    app = SegadvApp(data=data, checkpoint=checkpoint, device="cpu")
    async with app.run_test(size=(160, 50)) as pilot:
        while app.frame is None:
            await pilot.pause(0)
        await pilot.pause(0)  # the frame's widgets refreshed
        first_frame = time.perf_counter() - started
        await app.workers.wait_for_complete()  # the eps curve of the first slice
        await pilot.pause()
        latencies, computing = [], []
        for _ in range(steps):
            target = app.settings.with_eps(app.settings.eps + 0.001).eps
            pressed = time.perf_counter()
            await pilot.press("plus")
            while app.frame.settings.eps != target:
                await pilot.pause(0)
            await pilot.pause(0)
            latencies.append(time.perf_counter() - pressed)
            computing.append(app.frame.seconds)
        source = app.source
    return first_frame, latencies, computing, source


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", type=Path, default=None, help="Kaggle-layout data root (default: a tiny demo)")
    parser.add_argument("--checkpoint", type=Path, default=None, help="default: the bundled demo checkpoint")
    parser.add_argument("--steps", type=int, default=20, help="eps steps to time")
    args = parser.parse_args()

    from core.checkpoints import load_checkpoint
    from core.demo import write_demo_dataset
    from core.paths import demo_checkpoint
    from segadv_tui.explorer import load_slice_data
    from segadv_tui.halfblock import render_strips

    checkpoint = args.checkpoint or demo_checkpoint()
    with tempfile.TemporaryDirectory() as temporary:
        data = args.data or write_demo_dataset(Path(temporary) / "demo", seed=0, size="tiny")
        first_frame, latencies, computing, source = asyncio.run(measure_app(data, checkpoint, args.steps))
        model, meta = load_checkpoint(checkpoint)
        image = load_slice_data(source, int(meta["img_size"])).image
    forward = bare_forward_seconds(model, image, args.steps)

    rgb = (np.random.default_rng(0).random((224, 224, 3)) * 255).astype(np.uint8)
    render_strips(rgb, 56, 28)
    render = []
    for _ in range(50):
        started = time.perf_counter()
        render_strips(rgb, 56, 28)
        render.append(time.perf_counter() - started)

    step, bare = statistics.median(latencies), statistics.median(forward)
    print(f"checkpoint {checkpoint.name} ({meta['model']}, {meta['img_size']} px), torch threads {torch.get_num_threads()}")
    print(f"time to first frame            {first_frame:8.2f} s")
    print(f"eps step, key to updated table {step * 1000:8.1f} ms (median of {len(latencies)}, "
          f"min {min(latencies) * 1000:.1f}, max {max(latencies) * 1000:.1f})")
    print(f"  of which the worker computed {statistics.median(computing) * 1000:8.1f} ms (cached gradient, forward, scores)")
    print(f"bare forward pass, one slice   {bare * 1000:8.1f} ms (median of {len(forward)})")
    print(f"ratio step / forward           {step / bare:8.2f}")
    print(f"half-block 224x224 -> 56x28    {statistics.median(render) * 1000:8.2f} ms (random pixels, worst case)")


if __name__ == "__main__":
    main()
