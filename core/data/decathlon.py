"""The Medical Segmentation Decathlon / nnU-Net raw layout: ``dataset.json``, ``imagesTr/``, ``labelsTr/``.

``dataset.json`` declares the labels (``core.data.dataset_json``: nnU-Net v2 and MSD v1 forms); the
label set is softmax unless the caller asks for sigmoid or the labels are overlapping regions.

Images are ``imagesTr/CASE_0000.nii.gz`` (one file per channel; MSD v1's ``imagesTr/CASE.nii.gz`` may
hold the channels in a fourth dimension), label maps ``labelsTr/CASE.nii.gz``. The models and attacks
take one grey channel, so a data set of several channels (``channel_names``, ``_0001`` files or a 4-D
image) is refused with one line naming its channels, rather than segmented from one of them unnoticed.

How a volume becomes slices:

- every volume is turned to its closest canonical orientation (RAS+, ``core.data.nifti``) and cut along
  ``slice_axis``: 2 (axial, the default: the plane most MSD and nnU-Net data sets are acquired and
  annotated in), 1 (coronal) or 0 (sagittal). A slice shows the two other axes with the higher one
  upwards (superior, or anterior for axial slices) and the lower one left to right: an axial slice has
  anterior at the top and the patient's left on the left (neurological convention). Its spacing is the
  header's voxel size along those two axes, (width, height) as for every record;
- intensities are normalised per volume, robustly: clipped to the 0.5th and 99.5th percentiles of the
  volume's non-zero voxels (zero is the background of skull-stripped and masked MRI) and scaled to
  [0, 1]. A volume whose percentiles coincide becomes 1 where it is non-zero. The percentiles are taken
  once per volume: the last volumes read (normalised image and label map) stay in memory up to
  ``VOLUME_CACHE_BYTES``, so a case's slices read it once;
- the masks are one channel per foreground label, in label-set order, from the integer label map.

Opening reads headers only (shape, orientation, voxel size), never voxels: a data set of hundreds of
cases opens in about a second (``benchmarks/bench_nifti.py``). Which labels each slice holds
(``has_labels``, ``labels_present``) needs the label maps: a case's label map is read when one of its
records is first asked (or loaded), and the answer is kept in memory and on disk in the per-user cache
(``decathlon-labelled/``, one small file per label file, keyed by the file's path, size and modification
time and the declared values), so the next run reads no label map for it.

Faults of single cases (a missing label file, an image and a label of different shapes, a file that is
not NIfTI, a header beyond the bounds) leave the case out, one line each in ``problems`` and an entry in
``skipped``. Faults found only in the voxels (label values ``dataset.json`` does not declare, a NaN or
infinite image) are a ``DataError`` naming the file when the slice is loaded, and a line in ``problems``
when ``has_labels`` meets them.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

import numpy as np

from core.data.dataset_json import LAYOUT, LabelValues, read_description
from core.data.gitract import DataError, SkippedSlice, resize_image, resize_masks, split_by_case
from core.data.nifti import NIFTI_ENDINGS, VolumeHeader, read_header, read_volume
from core.errors import OptionError
from core.paths import cache_dir

SLICE_AXES = (0, 1, 2)  # canonical RAS+ axes: sagittal, coronal, axial slices
SLICE_AXIS_NAMES = {"sagittal": 0, "coronal": 1, "axial": 2}
DEFAULT_SLICE_AXIS = 2
AXIS_LETTERS = "xyz"  # in record ids: CASE_z042 is axial slice 42
VOLUME_CACHE_BYTES = 512 << 20
_CHANNEL_FILE = re.compile(r"(.+)_(\d{4})")
_PRESENT_VERSION = 2


def parse_slice_axis(value: str | int, what: str = "slice axis") -> int:
    """The canonical axis a ``--slice-axis`` value names: ``axial``, ``coronal``, ``sagittal`` or 2, 1, 0; an
    ``OptionError`` naming ``what`` and the value otherwise."""
    text = str(value).strip().lower()
    if text in SLICE_AXIS_NAMES:
        return SLICE_AXIS_NAMES[text]
    if text in {str(axis) for axis in SLICE_AXES}:
        return int(text)
    raise OptionError(f"{what} {str(value)!r}: expected axial (2), coronal (1) or sagittal (0)")


def robust_normalise(volume: np.ndarray) -> np.ndarray:
    """``volume`` clipped to its non-zero voxels' 0.5th and 99.5th percentiles and scaled to [0, 1], float32."""
    volume = np.asarray(volume, dtype=np.float32)
    nonzero = volume[volume != 0]
    if nonzero.size == 0:
        return np.zeros_like(volume)
    low, high = np.percentile(nonzero, [0.5, 99.5])
    if high <= low:
        return (volume != 0).astype(np.float32)
    return np.clip((volume - np.float32(low)) / np.float32(high - low), 0.0, 1.0).astype(np.float32)


def slice_plane(volume: np.ndarray, axis: int, index: int) -> np.ndarray:
    """Slice ``index`` along canonical ``axis`` as an image: the higher remaining axis runs up the rows
    (superior, or anterior for axial slices, at the top), the lower one along the columns."""
    plane = volume[(slice(None),) * axis + (index,)]  # a view (np.take copies through a slow path)
    return np.ascontiguousarray(plane.T[::-1])


class _VolumeCache:
    """The normalised images and compact label maps read last, up to ``max_bytes`` (least recently used
    out first). Shared by a data set's cases and their threads; a copy sent to a worker process starts empty."""

    def __init__(self, max_bytes: int = VOLUME_CACHE_BYTES):
        self.max_bytes = max_bytes
        self._items: OrderedDict[str, tuple[np.ndarray, np.ndarray]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> tuple[np.ndarray, np.ndarray] | None:
        with self._lock:
            item = self._items.get(key)
            if item is not None:
                self._items.move_to_end(key)
            return item

    def put(self, key: str, item: tuple[np.ndarray, np.ndarray]) -> None:
        with self._lock:
            self._items[key] = item
            self._items.move_to_end(key)
            while len(self._items) > 1 and sum(a.nbytes + b.nbytes for a, b in self._items.values()) > self.max_bytes:
                self._items.popitem(last=False)

    def __getstate__(self) -> dict:
        return {"max_bytes": self.max_bytes}

    def __setstate__(self, state: dict) -> None:
        self.__init__(state["max_bytes"])  # type: ignore[misc]


class CaseVolume:
    """One case: its image and label files, their canonical shape and voxel size, and (once read) which
    slices along each axis hold a label."""

    def __init__(
        self,
        case: str,
        image: VolumeHeader,
        label_path: Path,
        values: LabelValues,
        axis: int,
        cache: _VolumeCache,
        problems: list[str],
    ):
        self.case = case
        self.image = image
        self.label_path = label_path
        self.values = values
        self.axis = axis
        self._cache = cache
        self._problems = problems
        self._present: tuple[np.ndarray, ...] | None = None  # per canonical axis: bool (slices, labels)

    def load_slice(self, index: int, img_size: int) -> tuple[np.ndarray, np.ndarray]:
        image, labels = self.volumes()
        plane = slice_plane(image, self.axis, index)
        compact = resize_masks(slice_plane(labels, self.axis, index), img_size)
        return resize_image(plane, img_size), self.values.table()[:, compact].astype(np.uint8)

    def volumes(self) -> tuple[np.ndarray, np.ndarray]:
        """(normalised image float32, compact label map uint8), canonical, from the cache or read now."""
        key = str(self.image.path)
        cached = self._cache.get(key)
        if cached is not None:
            return cached
        labels = self._read_labels()
        raw = read_volume(self.image.path)
        if raw.dtype.kind == "f" and not np.isfinite(raw).all():
            raise DataError(f"{self.image.path}: the volume holds NaN or infinite values")
        if raw.shape != labels.shape:
            raise DataError(
                f"{self.label_path}: {_dims(labels.shape)} voxels "
                f"but its image {self.image.path} has {_dims(raw.shape)}"
            )
        item = (robust_normalise(raw), labels)
        self._cache.put(key, item)
        return item

    def present(self) -> np.ndarray:
        """bool (slices along the slice axis, labels): which foreground labels each slice holds. An
        unreadable or invalid label map is a line in ``problems`` and counts as holding none."""
        if self._present is None:
            self._present = self._present_from_disk()
        if self._present is None:
            try:
                self._read_labels()
            except DataError as exc:
                self._problems.append(f"{exc}; its slices count as unlabelled")
                self._present = tuple(np.zeros((n, len(self.values.channels)), dtype=bool) for n in self.image.shape)
                return self._present[self.axis]
            assert self._present is not None  # _read_labels found it
            self._present_to_disk(self._present)
        return self._present[self.axis]

    def _read_labels(self) -> np.ndarray:
        labels = self.values.compact(read_volume(self.label_path), self.label_path)
        if labels.shape != self.image.shape:
            raise DataError(
                f"{self.label_path}: {_dims(labels.shape)} voxels but its image {self.image.path} has "
                f"{_dims(self.image.shape)}"
            )
        if self._present is None:
            self._present = self._present_of(labels)
        return labels

    def _present_of(self, labels: np.ndarray) -> tuple[np.ndarray, ...]:
        """Per canonical axis, bool (slices, labels): one count of values per slice (three passes over the
        volume whatever the number of labels), then the labels those values make."""
        table = self.values.table().T.astype(np.int64)  # (values, labels)
        present = []
        for axis in SLICE_AXES:
            rows = np.moveaxis(labels, axis, 0).reshape(labels.shape[axis], -1)
            counts = np.stack([np.bincount(row, minlength=len(self.values.values)) for row in rows])
            present.append((counts > 0).astype(np.int64) @ table > 0)
        return tuple(present)

    def _cache_file(self) -> Path | None:
        try:
            stat = self.label_path.stat()
        except OSError:
            return None
        key = f"{self.label_path.resolve()}\0{stat.st_size}\0{stat.st_mtime_ns}\0{self.values}\0{_PRESENT_VERSION}"
        return cache_dir() / "decathlon-labelled" / f"{hashlib.sha256(key.encode()).hexdigest()[:32]}.json"

    def _present_from_disk(self) -> tuple[np.ndarray, ...] | None:
        """What ``_present_to_disk`` wrote for this label file, or None when absent, damaged or not this shape."""
        path = self._cache_file()
        labels = len(self.values.channels)
        try:
            if path is None or path.stat().st_size > 16 << 20:
                return None
            saved = json.loads(path.read_text(encoding="utf-8"))
            present = saved["present"]
            if saved["shape"] != list(self.image.shape) or [len(p) for p in present] != [
                n * labels for n in self.image.shape
            ]:
                return None
            return tuple(
                (np.frombuffer(p.encode("ascii"), dtype=np.uint8) == ord("1")).reshape(n, labels)
                for p, n in zip(present, self.image.shape)
            )
        except (OSError, ValueError, KeyError, TypeError, UnicodeEncodeError):  # absent or damaged: read the labels
            return None

    def _present_to_disk(self, present: tuple[np.ndarray, ...]) -> None:
        """Written to a temporary name and renamed, without ``fsync`` (``core.files.atomic_write`` syncs,
        which cost 20 ms a case): a file lost in a crash is read again, a torn one fails the checks above."""
        path = self._cache_file()
        if path is None:
            return
        rows = ["".join("1" if flag else "0" for flag in axis.ravel()) for axis in present]
        temp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}")
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            temp.write_text(json.dumps({"shape": list(self.image.shape), "present": rows}), encoding="utf-8")
            os.replace(temp, path)
        except OSError:  # a cache we cannot write costs a read next time, nothing more
            temp.unlink(missing_ok=True)


@dataclass(frozen=True)
class VolumeSlice:
    """One slice of a case's volume: what a record of every data set says (``core.data``), and its volume."""

    id: str  # "CASE_z042": case, axis letter, slice index along it
    case: str
    index: int
    width: int
    height: int
    spacing: tuple[float, float]  # mm, (width, height)
    volume: CaseVolume = field(repr=False, compare=False)

    @property
    def has_labels(self) -> bool:
        """Any foreground label in the slice (reads the case's label map on first need; see the module)."""
        return bool(self.volume.present()[self.index].any())

    @property
    def labels_present(self) -> tuple[bool, ...]:
        """Which foreground labels the slice holds, in label-set order (from the same index)."""
        return tuple(bool(flag) for flag in self.volume.present()[self.index])

    def load(self, img_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
        """Image float32 (S, S) in [0, 1] (area resize) and masks uint8 (labels, S, S) (nearest)."""
        return self.volume.load_slice(self.index, img_size)


class DecathlonDataset:
    """Every slice of every training case of a Decathlon / nnU-Net raw folder (see the module)."""

    layout = "decathlon"

    def __init__(
        self,
        root: str | Path,
        *,
        slice_axis: int = DEFAULT_SLICE_AXIS,
        kind: str | None = None,
        exclude: Iterable[str] = (),
    ):
        self.root = Path(root)
        if slice_axis not in SLICE_AXES:
            raise DataError(f"slice axis {slice_axis!r}: expected axial (2), coronal (1) or sagittal (0)")
        self.slice_axis = slice_axis
        self.exclude = tuple(exclude)
        self.problems: list[str] = []
        self.skipped: list[SkippedSlice] = []
        if not self.root.is_dir():
            state = "is not a folder" if self.root.exists() else "does not exist"
            raise DataError(f"data folder {self.root} {state} (expected the Decathlon / nnU-Net layout: {LAYOUT})")
        self.description = read_description(self.root, kind)
        self.labels = self.description.labels
        if len(self.description.channel_names) > 1:
            self._refuse_channels(len(self.description.channel_names), self.root / "dataset.json")
        for folder in ("imagesTr", "labelsTr"):
            if not (self.root / folder).is_dir():
                raise DataError(
                    f"no {folder}/ folder in {self.root} (expected the Decathlon / nnU-Net layout: {LAYOUT})"
                )
        self._cache = _VolumeCache()
        self.cases = self._open_cases()
        self.records = [record for volume in self.cases for record in self._slices(volume)]
        self._by_id = {record.id: record for record in self.records}
        self._fingerprint: str | None = None

    # -- finding the cases --

    def _open_cases(self) -> list[CaseVolume]:
        ending = self.description.file_ending
        found = self._listed_cases() if self.description.training is not None else self._scanned_cases(ending)
        volumes = []
        for case, image, channel_files, label in sorted(found):
            if case in self.exclude:
                continue
            volume = self._open_case(case, image, channel_files, label)
            if volume is not None:
                volumes.append(volume)
        return volumes

    def _listed_cases(self) -> list[tuple[str, Path, int, Path]]:
        """(case, image, channel files, label) from MSD v1's ``training`` list. nnU-Net v1 lists
        ``imagesTr/CASE.nii.gz`` for files named ``CASE_0000.nii.gz``: either is taken."""
        found = []
        for image_text, label_text in self.description.training or ():
            label = self.root / PurePosixPath(label_text)
            ending = next((e for e in NIFTI_ENDINGS if label.name.endswith(e)), "")
            case = label.name[: -len(ending)] if ending else label.name
            image = self.root / PurePosixPath(image_text)
            if not image.is_file() and ending and image.name.endswith(ending):
                numbered = image.with_name(image.name[: -len(ending)] + "_0000" + ending)
                image = numbered if numbered.is_file() else image
            extra = 0
            if image.name.endswith("_0000" + ending):
                stem = image.name[: -len("_0000" + ending)]
                while (image.parent / f"{stem}_{extra + 1:04d}{ending}").is_file() and extra < 999:
                    extra += 1
            found.append((case, image, 1 + extra, label))
        return found

    def _scanned_cases(self, ending: str) -> list[tuple[str, Path, int, Path]]:
        """(case, image, channel files, label) from the names in ``imagesTr/`` and ``labelsTr/``."""
        labels = {name[: -len(ending)] for name in _names(self.root / "labelsTr", ending)}
        channels: dict[str, dict[int, str]] = {}
        for name in _names(self.root / "imagesTr", ending):
            stem = name[: -len(ending)]
            numbered = _CHANNEL_FILE.fullmatch(stem)
            if numbered is not None:
                channels.setdefault(numbered[1], {})[int(numbered[2])] = name
            elif stem in labels:  # MSD v1: CASE.nii.gz, its channels (if any) in a fourth dimension
                channels.setdefault(stem, {})[0] = name
            else:
                where = _printable(f"imagesTr/{name}")
                self._skip(where, f"not named CASE_XXXX{ending}", file=where, action="ignored")
        found = []
        for case, files in channels.items():
            if 0 not in files:
                where = _printable(f"imagesTr/{sorted(files.values())[0]}")
                self._skip(where, f"no {_printable(case)}_0000{ending} (the first channel) beside it", file=where)
                continue
            found.append(
                (case, self.root / "imagesTr" / files[0], len(files), self.root / "labelsTr" / f"{case}{ending}")
            )
        for case in sorted(labels - channels.keys()):
            where = _printable(f"labelsTr/{case}{ending}")
            self._skip(where, "no image in imagesTr/", file=where, action="ignored")
        return found

    def _open_case(self, case: str, image_path: Path, channel_files: int, label_path: Path) -> CaseVolume | None:
        where = _printable(_relative(image_path, self.root))
        if not case.isprintable() or not case:
            self._skip(where, "a case name that is empty or not printable", file=where)
            return None
        if not label_path.is_file():
            self._skip(where, f"no label file {_printable(_relative(label_path, self.root))}", file=where)
            return None
        try:
            image = read_header(image_path)
            label = read_header(label_path)
        except DataError as exc:
            self._skip(None, str(exc), file=where)
            return None
        label_where = _printable(_relative(label_path, self.root))
        if label.channels != 1:
            self._skip(label_where, f"a label map of {label.channels} channels (expected one)", file=label_where)
            return None
        if image.shape != label.shape:
            self._skip(
                label_where,
                f"{_dims(label.shape)} voxels but its image {where} has {_dims(image.shape)}",
                file=label_where,
            )
            return None
        if not np.allclose(image.zooms, label.zooms, rtol=1e-3, atol=1e-4):
            self._skip(
                label_where,
                f"voxels of {_dims(label.zooms)} mm but its image {where} has {_dims(image.zooms)} mm",
                file=label_where,
            )
            return None
        if max(channel_files, image.channels) > 1:
            self._refuse_channels(max(channel_files, image.channels), image_path)
        return CaseVolume(case, image, label_path, self.description.values, self.slice_axis, self._cache, self.problems)

    def _refuse_channels(self, channels: int, where: Path) -> None:
        """A ``DataError`` for a data set of several channels, naming them (see the module)."""
        names = self.description.channel_names
        named = f" ({', '.join(names)})" if len(names) == channels else ""
        raise DataError(
            f"{where}: {channels} image channels{named}; segadv's models and attacks take one channel, so "
            f"multi-channel data sets are not supported (keep one channel per case as CASE_0000)"
        )

    def _slices(self, volume: CaseVolume) -> list[VolumeSlice]:
        axis = self.slice_axis
        across, up = (a for a in SLICE_AXES if a != axis)
        shape, zooms = volume.image.shape, volume.image.zooms
        letter = AXIS_LETTERS[axis]
        return [
            VolumeSlice(
                id=f"{volume.case}_{letter}{index:03d}",
                case=volume.case,
                index=index,
                width=shape[across],
                height=shape[up],
                spacing=(zooms[across], zooms[up]),
                volume=volume,
            )
            for index in range(shape[axis])
        ]

    def _skip(self, where: str | None, reason: str, *, file: str, action: str = "skipped") -> None:
        """A case or file left out: one line in ``problems``, one entry in ``skipped``."""
        self.problems.append(f"{where}: {reason}; {action}" if where else f"{reason}; {action}")
        self.skipped.append(SkippedSlice(None, file, reason))

    # -- the data set protocol (core.data) --

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[VolumeSlice]:
        return iter(self.records)

    def by_id(self, slice_id: str) -> VolumeSlice:
        try:
            return self._by_id[slice_id]
        except KeyError:
            raise KeyError(f"no slice {slice_id!r} in {self.root}") from None

    def split(self, test_fraction: float = 0.1, seed: int = 0) -> tuple[list[VolumeSlice], list[VolumeSlice]]:
        """(train, test) split by case: every slice of a case lands on the same side. The test side gets
        ``round(test_fraction * cases)`` cases, at least one and leaving at least one for training when
        there are two or more; the same seed always gives the same split (as ``GITractDataset.split``)."""
        return split_by_case(self.records, test_fraction, seed)

    def fingerprint(self) -> str:
        """A short hash of the labels, the slicing, each case's shape and voxel size, its image file's size
        and its label file's bytes, wherever the root is (reads the label files once, not the images)."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            digest.update(json.dumps([self.layout, self.labels.to_meta(), self.slice_axis]).encode())
            for volume in self.cases:
                line = f"\n{volume.case},{volume.image.shape},{volume.image.zooms},{volume.image.path.stat().st_size},"
                digest.update(line.encode())
                with open(volume.label_path, "rb") as file:
                    for chunk in iter(lambda: file.read(1 << 20), b""):
                        digest.update(chunk)
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return (
            f"DecathlonDataset({str(self.root)!r}: {len(self.cases)} cases, {len(self.records)} slices, "
            f"{len(self.problems)} problems)"
        )


def _names(folder: Path, ending: str) -> list[str]:
    """File names in ``folder`` that end in ``ending``, sorted; hidden files (macOS's ``._CASE.nii.gz``
    copies in the MSD archives) are not data."""
    return sorted(
        entry.name
        for entry in os.scandir(folder)
        if entry.name.endswith(ending) and not entry.name.startswith(".") and entry.is_file()
    )


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return str(path)


def _printable(name: str) -> str:
    return name if name.isprintable() else repr(name)


def _dims(values) -> str:
    return " x ".join(f"{v:g}" if isinstance(v, float) else str(v) for v in values)
