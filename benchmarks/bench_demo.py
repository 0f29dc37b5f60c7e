"""How long the built-in demo data set takes to make, and where the time goes.

Run: ``python benchmarks/bench_demo.py``. Prints wall and CPU seconds for the tiny and default sizes,
the per-slice cost of rendering, recording and PNG encoding, and the PNG settings side by side (the
demo uses Huffman-only deflate at level 1).
"""

from __future__ import annotations

import io
import tempfile
import time
import zlib
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.demo import write_demo_dataset
from core.data.phantom import SCAN_LENGTH_MM, Acquisition, Patient, pixel_grid, render


def _best_of(fn, repeats: int = 5) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return min(times)


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        for size in ("tiny", "default"):
            wall, cpu = time.perf_counter(), time.process_time()
            out = write_demo_dataset(Path(tmp) / size, size=size)
            wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
            slices = sum(1 for _ in (out / "train").rglob("*.png"))
            print(
                f"{size:8s} {slices:4d} slices  wall {wall:6.2f} s  cpu {cpu:6.2f} s  "
                f"({1000 * cpu / slices:.1f} ms/slice)"
            )

    anatomy = Patient(np.random.SeedSequence(0)).on_day(np.random.SeedSequence(1))
    acquisition = Acquisition.random(np.random.default_rng(2))
    for width, height in ((266, 266), (360, 310)):
        x, y = pixel_grid(width, height)
        zs = np.linspace(0, SCAN_LENGTH_MM, 28)
        t_render = _best_of(lambda: [render(anatomy, z, x, y) for z in zs], 3) / len(zs)
        signal, _ = render(anatomy, 150.0, x, y)
        t_record = _best_of(lambda: acquisition.record(signal, 0.5, np.random.default_rng(0)))
        image = acquisition.record(signal, 0.5, np.random.default_rng(0))
        print(f"{width} x {height}: render {1000 * t_render:.1f} ms, record {1000 * t_record:.1f} ms per slice")
        settings = {
            "zlib level 6 (Pillow default)": dict(),
            "zlib level 1": dict(compress_level=1),
            "level 1, Huffman only (demo)": dict(compress_level=1, compress_type=zlib.Z_HUFFMAN_ONLY),
        }
        baseline = None
        for name, options in settings.items():
            seconds = _best_of(lambda: Image.fromarray(image).save(io.BytesIO(), "PNG", **options))
            buffer = io.BytesIO()
            Image.fromarray(image).save(buffer, "PNG", **options)
            baseline = baseline or seconds
            print(
                f"  PNG {name:30s} {1000 * seconds:6.1f} ms  {len(buffer.getvalue()) / 1024:6.0f} KiB  "
                f"speed-up x{baseline / seconds:.1f}"
            )


if __name__ == "__main__":
    main()
