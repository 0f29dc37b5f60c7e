"""``dataset.json`` of the Medical Segmentation Decathlon / nnU-Net raw layout: its labels, channels, file
ending and training list, read and checked (``core.data.decathlon`` reads the volumes).

The labels, in either form:

- nnU-Net v2: ``"labels": {"background": 0, "Grey matter": 1, ...}`` with ``channel_names`` and
  ``file_ending``; a region (``"whole tumour": [1, 2, 3]``) covers several values; regions overlap, so
  a data set with regions is sigmoid by default;
- MSD v1: ``"labels": {"0": "background", "1": "liver"}`` with ``modality`` and a ``training`` list of
  ``{"image": ..., "label": ...}`` paths.

Label names become lower-case identifiers ("Grey matter" -> ``grey_matter``; titles keep the original
names), in declaration order (MSD v1: by value). Label maps are exclusive, so the label set is softmax
unless the caller asks for sigmoid. 0 is always the background.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

import numpy as np

from core.data.gitract import DataError
from core.data.nifti import NIFTI_ENDINGS, one_line
from core.errors import check_choice
from core.labels import MAX_LABELS, LabelSet, label_set

LAYOUT = "dataset.json, imagesTr/CASE_0000.nii.gz and labelsTr/CASE.nii.gz"
MAX_JSON_BYTES = 16 << 20
MAX_CASES = 100_000
MAX_LABEL_VALUE = 32767


@dataclass(frozen=True)
class LabelValues:
    """How a label map's integers become masks: every declared value, and the values of each foreground
    label in label-set order (one value each, or several for an nnU-Net v2 region)."""

    values: tuple[int, ...]  # ascending, 0 (background) first
    channels: tuple[tuple[int, ...], ...]

    def compact(self, volume: np.ndarray, path: Path) -> np.ndarray:
        """The label map as uint8 positions in ``values``; a ``DataError`` naming ``path`` for a value that
        is not an integer or not declared."""
        if volume.dtype.kind == "f":
            whole = np.isfinite(volume) & (volume == np.round(volume))
            if not whole.all():
                bad = volume[~whole][:3]
                raise DataError(f"{path}: the label map holds {', '.join(f'{v:g}' for v in bad)}, not whole numbers")
        low, high = (volume.min(), volume.max()) if volume.size else (0, 0)
        lookup = np.full(max(self.values) + 1, 255, dtype=np.uint8)
        lookup[list(self.values)] = np.arange(len(self.values), dtype=np.uint8)
        if low >= 0 and high <= max(self.values):
            # An integer array indexes as it is (no copy as intp: 8 bytes a voxel of a 250M-voxel CT).
            compact = lookup[volume if volume.dtype.kind in "iu" else volume.astype(np.int32)]
            if not (compact == 255).any():
                return compact
        inside = (volume >= 0) & (volume <= max(self.values))
        undeclared = ~inside
        undeclared[inside] = lookup[volume[inside].astype(np.intp)] == 255
        found = np.unique(volume[undeclared])
        shown = ", ".join(f"{v:g}" for v in found[:5]) + (f" and {found.size - 5} more" if found.size > 5 else "")
        raise DataError(
            f"{path}: label value(s) {shown} not in dataset.json's labels ({', '.join(map(str, self.values))})"
        )

    def foreground(self) -> np.ndarray:
        """bool per position in ``values``: belongs to some foreground label."""
        return np.asarray(self.table().any(axis=0))

    def table(self) -> np.ndarray:
        """bool (labels, positions): which positions in ``values`` each foreground label covers."""
        table = np.zeros((len(self.channels), len(self.values)), dtype=bool)
        for channel, values in enumerate(self.channels):
            table[channel, [self.values.index(v) for v in values]] = True
        return table


@dataclass(frozen=True)
class DatasetDescription:
    """What ``dataset.json`` says that segadv uses."""

    labels: LabelSet
    values: LabelValues
    file_ending: str
    channel_names: tuple[str, ...]  # from channel_names (nnU-Net v2) or modality (MSD v1); may be empty
    training: tuple[tuple[str, str], ...] | None  # MSD v1's (image, label) paths, relative to the root


def read_description(root: Path, kind: str | None = None) -> DatasetDescription:
    """``root/dataset.json`` read and checked: a ``DataError`` naming the file and key for anything wrong.
    ``kind`` (sigmoid or softmax) overrides the default (softmax; sigmoid for regions)."""
    path = root / "dataset.json"
    if kind is not None:
        check_choice(kind, ("sigmoid", "softmax"), "label kind")
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_JSON_BYTES:
                raise DataError(f"{path}: {size} bytes; segadv reads a dataset.json of at most {MAX_JSON_BYTES}")
            description = json.loads(file.read().decode("utf-8"))
    except FileNotFoundError:
        raise DataError(f"no dataset.json in {root} (expected the Decathlon / nnU-Net layout: {LAYOUT})") from None
    except (UnicodeDecodeError, json.JSONDecodeError, RecursionError) as exc:
        raise DataError(f"{path}: not JSON ({str(exc)[:200]})") from None
    except OSError as exc:
        raise DataError(f"cannot read {path}: {one_line(exc)}") from None
    if not isinstance(description, dict):
        raise DataError(f"{path}: expected a JSON object, found {type(description).__name__}")
    if "labels" not in description:
        raise DataError(f'{path}: no "labels" (expected {{"background": 0, "name": 1, ...}})')
    labels, values = _parse_labels(description["labels"], path, kind)
    ending = description.get("file_ending", ".nii.gz")
    if ending not in NIFTI_ENDINGS:
        raise DataError(
            f"{path}: file_ending {str(ending)[:40]!r}; segadv reads NIfTI ({' or '.join(NIFTI_ENDINGS)}) only"
        )
    channels = description.get("channel_names", description.get("modality")) or {}
    channel_names = (
        tuple(str(name)[:40] for _, name in sorted(channels.items(), key=lambda item: str(item[0]))[:MAX_CASES])
        if isinstance(channels, dict)
        else ()
    )
    training = _parse_training(description.get("training"), path)
    return DatasetDescription(labels, values, ending, channel_names, training)


def _parse_labels(raw: object, path: Path, kind: str | None) -> tuple[LabelSet, LabelValues]:
    where = f"{path}: labels"
    if not isinstance(raw, dict) or not raw:
        raise DataError(f'{where}: expected an object such as {{"background": 0, "liver": 1}}')
    if len(raw) > MAX_LABELS + 1:
        raise DataError(f"{where}: {len(raw)} entries; segadv reads at most {MAX_LABELS} labels besides the background")
    msd_v1 = all(key.isascii() and key.strip().isdigit() for key in raw) and all(
        isinstance(v, str) for v in raw.values()
    )
    entries: list[tuple[str, tuple[int, ...]]] = []
    if msd_v1:
        entries = sorted(((name, (int(key),)) for key, name in raw.items()), key=lambda entry: entry[1])
    else:
        for name, value in raw.items():
            if _is_int(value):
                entries.append((name, (value,)))
            elif isinstance(value, list) and value and all(_is_int(v) for v in value):
                entries.append((name, tuple(sorted(set(value)))))
            else:
                raise DataError(
                    f"{where}: {_quote(name)}: {_quote(json.dumps(value))} is not an integer or a list of integers "
                    f'(expected {{"name": value}} as nnU-Net v2 writes, or {{"value": "name"}} as MSD v1)'
                )
    for name, values in entries:
        if any(not 0 <= v <= MAX_LABEL_VALUE for v in values):
            raise DataError(f"{where}: {_quote(name)}: values must be 0 to {MAX_LABEL_VALUE}, got {list(values)}")
        if name.strip().lower() == "background" and values != (0,):
            raise DataError(f"{where}: background must be 0, got {list(values)}")
    foreground = [(name, values) for name, values in entries if values != (0,)]
    for name, values in foreground:
        if 0 in values:
            raise DataError(f"{where}: {_quote(name)} covers 0, the background")
    if not foreground:
        raise DataError(f"{where}: no label besides the background")
    regions = any(len(values) > 1 for _, values in foreground)
    singles = [values[0] for _, values in foreground if len(values) == 1]
    if len(set(singles)) != len(singles):
        repeated = sorted({v for v in singles if singles.count(v) > 1})
        raise DataError(f"{where}: two labels share the value {repeated[0]}")
    if regions and kind == "softmax":
        raise DataError(f"{where}: regions (labels of several values) overlap, so they cannot be softmax classes")
    names, titles = [], {}
    for title, _ in foreground:
        name = _label_name(title)
        if name in names:
            raise DataError(f"{where}: {_quote(title)} and another label both become the name {name!r}")
        names.append(name)
        titles[name] = (title.strip() if title.strip().isprintable() else repr(title))[:80] or name
    labels = label_set(names, kind or ("sigmoid" if regions else "softmax"), titles)
    declared = tuple(sorted({0, *(v for _, values in foreground for v in values)}))
    return labels, LabelValues(declared, tuple(values for _, values in foreground))


def _parse_training(raw: object, path: Path) -> tuple[tuple[str, str], ...] | None:
    if raw is None:
        return None
    if not isinstance(raw, list) or len(raw) > MAX_CASES:
        raise DataError(f'{path}: training: expected a list of at most {MAX_CASES} {{"image", "label"}} objects')
    pairs = []
    for i, entry in enumerate(raw):
        if not (
            isinstance(entry, dict) and isinstance(entry.get("image"), str) and isinstance(entry.get("label"), str)
        ):
            raise DataError(f'{path}: training[{i}]: expected an object with "image" and "label" paths')
        for key in ("image", "label"):
            parts = PurePosixPath(entry[key]).parts
            if entry[key].startswith("/") or ".." in parts or not entry[key].isprintable() or len(entry[key]) > 400:
                raise DataError(
                    f"{path}: training[{i}].{key}: {_quote(entry[key])} is not a path inside the data folder"
                )
        pairs.append((entry["image"], entry["label"]))
    return tuple(pairs)


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _label_name(title: str) -> str:
    """A label's name from its dataset.json name: lower case, runs of anything else as one underscore,
    prefixed with ``label_`` where it would not start with a letter ("1" -> "label_1")."""
    name = re.sub(r"[^a-z0-9]+", "_", title.strip().lower()).strip("_")
    if not name[:1].isalpha():
        name = f"label_{name}".rstrip("_")
    return name[:40].rstrip("_")


def _quote(text: str) -> str:
    return repr(text) if len(text) <= 60 else f"{text[:60]!r}... ({len(text)} characters)"
