"""A tiny data set of a label set other than UW-Madison's, for the tests of label sets: two labels (liver,
tumour), real 16-bit PNG slices and mask arrays on disk, records that load themselves, a split by case.

It has the data set interface every reader has (``core.data``: ``root``, ``labels``, ``layout``, ``records``,
``split``, ``by_id``, ``fingerprint``, ``skipped``, ``problems``; records with ``id``, ``case``, ``width``,
``height``, ``spacing``, ``has_labels`` and ``load``). Until a reader of such a layout is wired into
``open_dataset``, ``open_labelled`` stands in for it where a test opens a folder holding ``labels.json``.
"""

from __future__ import annotations

import hashlib
import json
import random
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.gitract import SliceRecord, read_slice, resize_image, resize_masks
from core.labels import label_set, label_set_from_meta

LIVER_TUMOUR = label_set(("liver", "tumour"))
SIZE = 64
MARKER = "labels.json"


@dataclass(frozen=True)
class LabelledRecord(SliceRecord):
    """A slice of this data set. A ``SliceRecord`` only because the explorer's slice cache still tells a
    record from a lone PNG by that type (a record of any reader will do once it calls ``record.load``)."""

    mask_path: Path = Path()  # uint8 (labels, height, width), label order
    labelled: bool = False

    @property
    def has_labels(self) -> bool:
        return self.labelled

    @property
    def has_organs(self) -> bool:
        return self.labelled

    def masks(self) -> np.ndarray:
        return np.load(self.mask_path)

    def load(self, img_size: int = SIZE) -> tuple[np.ndarray, np.ndarray]:
        return resize_image(read_slice(self.path), img_size), resize_masks(self.masks(), img_size)


class LabelledData:
    layout = "test-two-labels"

    def __init__(self, root: Path):
        self.root = Path(root)
        index = json.loads((self.root / MARKER).read_text())
        self.labels = label_set_from_meta(index["labels"], str(self.root / MARKER))
        self.records = [
            LabelledRecord(
                id=row["id"],
                case=row["case"],
                day=0,
                slice=row["slice"],
                width=SIZE,
                height=SIZE,
                spacing=(1.0, 1.0),
                path=self.root / row["image"],
                rles=(),
                mask_path=self.root / row["masks"],
                labelled=row["has_labels"],
            )
            for row in index["slices"]
        ]
        self.skipped: list = []
        self.problems: list[str] = []

    def __iter__(self):
        return iter(self.records)

    def __len__(self) -> int:
        return len(self.records)

    def by_id(self, slice_id: str) -> LabelledRecord:
        for record in self.records:
            if record.id == slice_id:
                return record
        raise KeyError(slice_id)

    def split(self, test_fraction: float = 0.1, seed: int = 0):
        cases = sorted({record.case for record in self.records})
        random.Random(seed).shuffle(cases)
        test_cases = set(cases[: max(1, round(test_fraction * len(cases)))])
        return (
            [r for r in self.records if r.case not in test_cases],
            [r for r in self.records if r.case in test_cases],
        )

    def fingerprint(self) -> str:
        return hashlib.sha256((self.root / MARKER).read_bytes()).hexdigest()[:16]


def write_labelled_data(root: Path, cases: int = 3, slices: int = 4, seed: int = 0) -> Path:
    """``cases`` x ``slices`` slices of a bright disc (liver) holding a brighter small one (tumour) on some,
    over noise; the first slice of each case has neither label."""
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    rows = []
    yy, xx = np.mgrid[:SIZE, :SIZE]
    for case in range(1, cases + 1):
        for number in range(slices):
            centre = rng.uniform(24, 40, size=2)
            liver = (number > 0) & ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < rng.uniform(10, 16) ** 2)
            tumour = liver & (number % 2 == 1) & ((yy - centre[0]) ** 2 + (xx - centre[1]) ** 2 < 5**2)
            image = 0.2 + 0.4 * liver + 0.3 * tumour + rng.normal(0, 0.03, (SIZE, SIZE))
            pixels = (np.clip(image, 0, 1) * 60000).astype(np.uint16)
            slice_id = f"case{case}_day0_slice_{number:04d}"
            Image.fromarray(pixels).save(root / f"{slice_id}.png")
            np.save(root / f"{slice_id}.npy", np.stack([liver, tumour]).astype(np.uint8))
            rows.append(
                {
                    "id": slice_id,
                    "case": case,
                    "slice": number,
                    "image": f"{slice_id}.png",
                    "masks": f"{slice_id}.npy",
                    "has_labels": bool(liver.any()),
                }
            )
    (root / MARKER).write_text(json.dumps({"labels": LIVER_TUMOUR.to_meta(), "slices": rows}))
    return root


def open_labelled(monkeypatch) -> None:
    """Make ``open_dataset`` (the CLI's and the explorer's) open a folder holding ``labels.json`` as
    ``LabelledData``, and any other as before."""
    import core.data.open

    original = core.data.open.open_dataset

    def open_dataset(root=None, **options):
        if root is not None and (Path(root) / MARKER).is_file():
            return LabelledData(root)
        return original(root, **options)

    monkeypatch.setattr(core.data.open, "open_dataset", open_dataset)
