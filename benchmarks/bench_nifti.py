"""How fast a Decathlon-layout data set opens: 300 generated cases of 64 x 64 x 24 voxels in a temporary folder.

Prints the time to open it (headers only), its slice count, the time to load the first slice (reads and
normalises that case's volume), a second slice of the same case (from the in-memory volume cache), the
time to find every slice with labels (reads every label map) and the same after reopening (from the
on-disk cache), with ``os.getloadavg()`` before and after.

    python benchmarks/bench_nifti.py [--cases 300] [--shape 64 64 24]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))


def write_dataset(root: Path, cases: int, shape: tuple[int, int, int]) -> None:
    """``cases`` cases of noise with a box of label 1 and one of label 2, stored LPS (so opening reorients)."""
    import nibabel as nib

    (root / "imagesTr").mkdir(parents=True)
    (root / "labelsTr").mkdir()
    labels = {"background": 0, "organ": 1, "lesion": 2}
    description = {"channel_names": {"0": "MRI"}, "labels": labels, "numTraining": cases, "file_ending": ".nii.gz"}
    (root / "dataset.json").write_text(json.dumps(description))
    rng = np.random.default_rng(0)
    affine = np.diag([-1.2, -1.2, 3.0, 1.0])
    x, y, z = shape
    for case in range(cases):
        image = rng.normal(500, 50, shape).astype(np.int16)
        label = np.zeros(shape, dtype=np.uint8)
        label[x // 4 : x // 2, y // 4 : y // 2, z // 3 : 2 * z // 3] = 1
        label[x // 2 : x // 2 + 4, y // 2 : y // 2 + 4, z // 2] = 2
        nib.save(nib.Nifti1Image(image, affine), root / "imagesTr" / f"case_{case:04d}_0000.nii.gz")
        nib.save(nib.Nifti1Image(label, affine), root / "labelsTr" / f"case_{case:04d}.nii.gz")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", type=int, default=300)
    parser.add_argument("--shape", type=int, nargs=3, default=(64, 64, 24))
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as temp:
        os.environ["SEGADV_CACHE"] = str(Path(temp) / "cache")  # the on-disk label index goes here, not ~/.cache
        root = Path(temp) / "Dataset900_Bench"
        started = time.perf_counter()
        write_dataset(root, args.cases, tuple(args.shape))
        print(
            f"generated {args.cases} cases of {' x '.join(map(str, args.shape))} "
            f"in {time.perf_counter() - started:.1f} s"
        )
        import nibabel  # noqa: F401  (imported before timing: the CLI pays it once per process)

        from core.data.open import open_dataset

        print(f"load average before: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")
        started = time.perf_counter()
        dataset = open_dataset(root)
        opened = time.perf_counter() - started
        print(
            f"open: {opened:.3f} s for {len(dataset.cases)} cases, {len(dataset)} slices, "
            f"{len(dataset.problems)} problems"
        )
        started = time.perf_counter()
        dataset.records[0].load(224)
        first = time.perf_counter() - started
        started = time.perf_counter()
        dataset.records[1].load(224)
        second = time.perf_counter() - started
        print(f"first slice: {first * 1000:.1f} ms (reads the volume); next slice of that case: {second * 1000:.2f} ms")
        started = time.perf_counter()
        labelled = sum(record.has_labels for record in dataset)
        index = time.perf_counter() - started
        print(f"slices with labels: {labelled}, found in {index:.2f} s (reads every label map)")
        started = time.perf_counter()
        again = open_dataset(root)
        assert sum(record.has_labels for record in again) == labelled
        reopened = time.perf_counter() - started
        print(f"reopen and find them again: {reopened:.3f} s (the on-disk index; {index / reopened:.1f}x faster)")
        print(f"load average after: {' '.join(f'{v:.2f}' for v in os.getloadavg())}")


if __name__ == "__main__":
    main()
