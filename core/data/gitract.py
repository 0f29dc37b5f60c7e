"""The UW-Madison GI Tract data set on disk: ``train.csv`` plus ``train/caseN/caseN_dayD/scans/*.png``.

Reads the real Kaggle layout and the built-in demo (which is written in the same layout), joins the
three organ rows of each slice, and turns a slice into the model's input: the image divided by its own
max and resized by area averaging, the masks resized by nearest neighbour so they stay 0/1.

Only numpy and Pillow are imported here, so that the CLI and the TUI can import this module quickly;
the torch ``SliceDataset`` lives in ``core.data.slice_dataset``.
"""

from __future__ import annotations

import csv
import hashlib
import io
import os
import random
import re
import struct
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from core.data.rle import MAX_PIXELS, RLEError, rle_decode
from core.errors import SegadvError
from core.labels import UW_MADISON
from core.organs import ORGANS

EXCLUDED_CASE_DAYS = ("case7_day0", "case81_day30")
CSV_COLUMNS = ("id", "class", "segmentation")
LAYOUT = "train.csv and train/caseN/caseN_dayD/scans/slice_NNNN_W_H_PW_PH.png"

# At most 9 digits a number: every one is a plain int, never one of Python's 4300-digit ValueErrors.
_ID = re.compile(r"case(\d{1,9})_day(\d{1,9})_slice_(\d{1,9})")
_CASE_DIR = re.compile(r"case(\d{1,9})")
_DAY_DIR = re.compile(r"case(\d{1,9})_day(\d{1,9})")
_NUMBER = r"(\d{1,9}(?:\.\d{0,9})?)"
_SLICE_FILE = re.compile(rf"slice_(\d{{1,9}})_(\d{{1,9}})_(\d{{1,9}})_{_NUMBER}_{_NUMBER}\.png")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
# A slice of MAX_PIXELS 16-bit pixels stored without compression, twice over: no real slice comes near.
MAX_PNG_BYTES = 4 * MAX_PIXELS


class DataError(SegadvError, ValueError):
    """A bad data set: a missing or unreadable file, a malformed train.csv, a broken layout.

    The message names the file, the row or the value at fault.
    """


def read_slice(path: str | Path) -> np.ndarray:
    """Read one slice PNG (16-bit or 8-bit) as float32 (H, W) in [0, 1], divided by its own max.

    An all-zero image stays zero. A missing, truncated or non-image file raises ``DataError``.
    """
    pixels = read_raw_slice(path)
    peak = float(pixels.max()) if pixels.size else 0.0
    if peak > 0:
        pixels /= peak
    return pixels


def read_raw_slice(path: str | Path) -> np.ndarray:
    """One slice PNG as stored (16-bit values, before any normalisation), float32 (H, W).

    Only PNG is read (Pillow's other decoders never see the data), and its size is checked from its
    header before anything is decoded: more than ``MAX_PIXELS`` is refused, not allocated. Pillow reads
    from the file's bytes in memory, never from the file: it reads the rest of a chunk with one
    ``read(length)``, and a file's ``read`` allocates the length a damaged chunk claims (4 GB) up front."""
    path = Path(path)
    try:
        with open(path, "rb") as file:
            size = os.fstat(file.fileno()).st_size
            if size > MAX_PNG_BYTES:
                raise DataError(f"{path}: a PNG of {size} bytes; segadv reads slice PNGs of at most {MAX_PNG_BYTES}")
            data = file.read()
        if len(data) < 24 or not data.startswith(_PNG_SIGNATURE) or data[12:16] != b"IHDR":
            raise DataError(f"cannot read image {path}: not a PNG file")
        width, height = struct.unpack(">II", data[16:24])
        if width * height > MAX_PIXELS:
            raise DataError(
                f"{path}: its PNG header says {width} x {height} pixels; segadv reads slices of at "
                f"most {MAX_PIXELS} pixels"
            )
        with Image.open(io.BytesIO(data), formats=("PNG",)) as image:
            if image.mode not in ("I;16", "I;16B", "I;16L", "I", "L"):
                image = image.convert("L")
            pixels = np.asarray(image)
    except FileNotFoundError:
        raise DataError(f"image file not found: {path}") from None
    except DataError:  # our own, from the header: already says what is wrong
        raise
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
        raise DataError(f"cannot read image {path}: {exc}") from None
    return pixels.astype(np.float32)


class _LabelsByRLE:
    """Which labels a slice's truth holds, from its RLEs (``rles``, in ORGANS order; "" = absent), without
    decoding them: what every data set's records say (``core.data``)."""

    rles: tuple[str, ...]

    @property
    def has_labels(self) -> bool:
        """Any label in the ground truth."""
        return any(self.rles)

    @property
    def labels_present(self) -> tuple[bool, ...]:
        """Which labels the ground truth holds, in label-set order."""
        return tuple(bool(rle) for rle in self.rles)


@dataclass(frozen=True)
class SliceRecord(_LabelsByRLE):
    """One scan slice: where its PNG is, what its file name says, and its three organ RLEs."""

    id: str  # "case123_day20_slice_0065"
    case: int
    day: int
    slice: int
    width: int
    height: int
    spacing: tuple[float, float]  # pixel spacing in mm, in file-name order (width, height)
    path: Path
    rles: tuple[str, ...]  # one per organ, in ORGANS order; "" = organ absent

    @property
    def case_day(self) -> str:
        return f"case{self.case}_day{self.day}"

    @property
    def has_organs(self) -> bool:
        return any(self.rles)

    def load(self, img_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
        """``load_slice(self, img_size)``: every data set's records load themselves the same way."""
        return load_slice(self, img_size)

    def masks(self) -> np.ndarray:
        """The ground truth as uint8 0/1 of shape (3, height, width), organs in ORGANS order."""
        return np.stack(
            [
                rle_decode(rle, self.height, self.width, slice_id=self.id, organ=organ)
                for organ, rle in zip(ORGANS, self.rles)
            ]
        )


@dataclass(frozen=True)
class SkippedSlice:
    """A slice, file or folder the reader left out of the data set, and why."""

    slice_id: str | None  # None where the file name gives none
    file: str  # relative to the data root: the image, the folder, or train.csv for a bad row
    reason: str

    def to_dict(self) -> dict:
        return dict(self.__dict__)


class GITractDataset:
    """Every slice of a Kaggle root (the folder holding ``train.csv`` and ``train/``), joined with its rows.

    Structural faults (no train.csv, missing columns, an unknown organ, duplicated rows, an unreadable
    CSV) raise ``DataError``. Faults of single slices (a row without an image, an image without rows,
    missing organ rows, a malformed RLE, an odd file name) are listed in ``problems``, one line each;
    those that leave a slice or file out are also in ``skipped`` (``SkippedSlice``), for the JSON reports.
    """

    labels = UW_MADISON  # three overlapping organs, sigmoid (core.labels)
    layout = "uw-madison"

    def __init__(self, root: str | Path, *, exclude: Iterable[str] = EXCLUDED_CASE_DAYS):
        self.root = Path(root)
        self.exclude = tuple(exclude)
        self.problems: list[str] = []
        self.skipped: list[SkippedSlice] = []
        if not self.root.is_dir():
            state = "is not a folder" if self.root.exists() else "does not exist"
            raise DataError(f"data folder {self.root} {state} (expected a Kaggle root: {LAYOUT})")
        csv_path = self.root / "train.csv"
        if not csv_path.is_file():
            raise DataError(f"no train.csv in {self.root} (expected a Kaggle root: {LAYOUT})")
        if not (self.root / "train").is_dir():
            raise DataError(f"no train/ folder in {self.root} (expected a Kaggle root: {LAYOUT})")
        rows = self._read_rows(csv_path)
        images = self._find_images()
        self.records = self._join(rows, images)
        self._by_id = {record.id: record for record in self.records}
        self._fingerprint: str | None = None

    def _read_rows(self, csv_path: Path) -> dict[str, dict[str, str]]:
        """id -> {organ: rle} for every row of train.csv outside the excluded case-days."""
        rows: dict[str, dict[str, str]] = {}
        first_line: dict[tuple[str, str], int] = {}
        try:
            with csv_path.open(newline="", encoding="utf-8") as file:
                reader = csv.reader(file)
                header, (id_at, class_at, rle_at) = _read_header(reader, csv_path)
                last_id, excluded = None, False
                for fields in reader:
                    if not fields:
                        continue
                    at = f"{csv_path} line {reader.line_num}"
                    if len(fields) != len(header):
                        raise DataError(f"{at}: {len(fields)} fields, expected {len(header)} ({_columns(header)})")
                    slice_id, organ = fields[id_at].strip(), fields[class_at].strip()
                    if slice_id != last_id:  # rows come in threes: parse each id once
                        parsed = _ID.fullmatch(slice_id)
                        if parsed is None:
                            raise DataError(f"{at}: id {_cut(slice_id)} is not like case123_day20_slice_0065")
                        excluded = f"case{int(parsed[1])}_day{int(parsed[2])}" in self.exclude
                        last_id = slice_id
                    if organ not in ORGANS:
                        raise DataError(f"{at}: unknown class {_cut(organ)} (expected one of {', '.join(ORGANS)})")
                    if (slice_id, organ) in first_line:
                        first = first_line[slice_id, organ]
                        raise DataError(f"{at}: duplicate row for {slice_id} {organ} (first on line {first})")
                    first_line[slice_id, organ] = reader.line_num
                    if not excluded:
                        rows.setdefault(slice_id, {})[organ] = _rle_field(fields[rle_at])
        except (csv.Error, UnicodeDecodeError) as exc:
            raise DataError(f"cannot read {csv_path} as CSV: {exc}") from None
        except OSError as exc:
            raise DataError(f"cannot read {csv_path}: {exc}") from None
        return rows

    def _find_images(self) -> dict[str, tuple[Path, re.Match]]:
        """id -> (path, file-name match) for every slice PNG outside the excluded case-days."""
        images: dict[str, tuple[Path, re.Match]] = {}
        for case_dir in _subfolders(self.root / "train"):
            for day_dir in _subfolders(case_dir):
                case_match, day_match = _CASE_DIR.fullmatch(case_dir.name), _DAY_DIR.fullmatch(day_dir.name)
                if case_match is None or day_match is None or case_match[1] != day_match[1]:
                    folder = _printable(f"train/{case_dir.name}/{day_dir.name}")
                    self._skip(folder, "not a caseN/caseN_dayD folder", file=folder, action="ignored")
                    continue
                if f"case{int(day_match[1])}_day{int(day_match[2])}" in self.exclude:
                    continue
                scans = day_dir / "scans"
                for entry in sorted(os.scandir(scans) if scans.is_dir() else (), key=lambda e: e.name):
                    if not entry.name.endswith(".png"):
                        continue
                    where = _printable(f"train/{case_dir.name}/{day_dir.name}/scans/{entry.name}")
                    name = _SLICE_FILE.fullmatch(entry.name)
                    problem = _file_name_problem(name)
                    if problem:
                        self._skip(where, problem, file=where, action="ignored")
                        continue
                    assert name is not None  # _file_name_problem says why it is None
                    slice_id = f"{day_dir.name}_slice_{name[1]}"
                    if slice_id in images:
                        first = images[slice_id][0].name
                        self._skip(
                            where,
                            f"a second file for {slice_id} (first {first})",
                            slice_id=slice_id,
                            file=where,
                            action="ignored",
                        )
                        continue
                    images[slice_id] = (Path(entry.path), name)
        return images

    def _skip(
        self, where: str | None, reason: str, *, file: str, slice_id: str | None = None, action: str = "skipped"
    ) -> None:
        """A slice (or file, or folder) left out: one line in ``problems``, one entry in ``skipped``."""
        self.problems.append(f"{where}: {reason}; {action}" if where else f"{reason}; {action}")
        self.skipped.append(SkippedSlice(slice_id, file, reason))

    def _join(self, rows: dict[str, dict[str, str]], images: dict[str, tuple[Path, re.Match]]) -> list[SliceRecord]:
        for slice_id in sorted(rows.keys() - images.keys()):
            self._skip(slice_id, "has rows in train.csv but no image file", slice_id=slice_id, file="train.csv")
        records = []
        for slice_id, (path, name) in images.items():
            organ_rles = rows.get(slice_id)
            if organ_rles is None:
                where = path.relative_to(self.root)
                self._skip(slice_id, f"image {where} has no rows in train.csv", slice_id=slice_id, file=str(where))
                continue
            absent = [organ for organ in ORGANS if organ not in organ_rles]
            if absent:
                self.problems.append(f"{slice_id}: no train.csv row for {', '.join(absent)}; taken as absent")
            records.append(_record(slice_id, path, name, organ_rles))
        bad_rles = _rle_problems(records)
        for i, message in bad_rles.items():
            self._skip(None, message, slice_id=records[i].id, file="train.csv")  # the message names the slice
        records = [record for i, record in enumerate(records) if i not in bad_rles]
        records.sort(key=lambda r: (r.case, r.day, r.slice))
        return records

    def __len__(self) -> int:
        return len(self.records)

    def __iter__(self) -> Iterator[SliceRecord]:
        return iter(self.records)

    def by_id(self, slice_id: str) -> SliceRecord:
        try:
            return self._by_id[slice_id]
        except KeyError:
            raise KeyError(f"no slice {slice_id!r} in {self.root}") from None

    def split(self, test_fraction: float = 0.1, seed: int = 0) -> tuple[list[SliceRecord], list[SliceRecord]]:
        """(train, test) split by case (patient): every slice of a case lands on the same side.

        The test side gets ``round(test_fraction * cases)`` cases, at least one and leaving at least one
        for training when there are two or more. The same seed always gives the same split.
        """
        return split_by_case(self.records, test_fraction, seed)

    def fingerprint(self) -> str:
        """A short hash of the slices and their labels (ids, sizes, spacing, RLEs), wherever the root is."""
        if self._fingerprint is None:
            digest = hashlib.sha256()
            for r in self.records:
                line = f"{r.id},{r.width},{r.height},{r.spacing[0]},{r.spacing[1]},{'|'.join(r.rles)}\n"
                digest.update(line.encode())
            self._fingerprint = digest.hexdigest()[:16]
        return self._fingerprint

    def __repr__(self) -> str:
        return f"GITractDataset({str(self.root)!r}: {len(self.records)} slices, {len(self.problems)} problems)"


def _read_header(reader, csv_path: Path) -> tuple[list[str], tuple[int, ...]]:
    """train.csv's header from ``reader`` (names stripped, a byte-order mark dropped) and where its id,
    class and segmentation columns are; ``DataError`` for an empty file or a missing column."""
    header = next(reader, None)
    if header is None:
        raise DataError(f"{csv_path} is empty (expected the columns {', '.join(CSV_COLUMNS)})")
    header = [name.strip().lstrip("\ufeff") for name in header]
    missing = [name for name in CSV_COLUMNS if name not in header]
    if missing:
        raise DataError(
            f"{csv_path} lacks the column(s) {', '.join(missing)} "
            f"(has {_columns(header) or 'none'}; expected {', '.join(CSV_COLUMNS)})"
        )
    return header, tuple(header.index(name) for name in CSV_COLUMNS)


def _rle_field(value: str) -> str:
    """A segmentation cell as a record keeps it: "" for an absent organ (Kaggle writes NaN or nothing)."""
    rle = value.strip()
    return "" if rle.lower() == "nan" else rle


def _file_name_problem(name: re.Match | None) -> str | None:
    """Why a slice file's name (its ``_SLICE_FILE`` match) leaves it out of the data set; None: it names a slice."""
    if name is None:
        return "not named slice_NNNN_W_H_PW_PH.png"
    if int(name[2]) == 0 or int(name[3]) == 0:
        return "file name gives an empty image size"
    if int(name[2]) * int(name[3]) > MAX_PIXELS:
        return f"file name gives {name[2]} x {name[3]} pixels, more than the {MAX_PIXELS} segadv reads"
    if float(name[4]) == 0 or float(name[5]) == 0:
        return "file name gives a pixel spacing of 0 mm"
    return None


def _record(slice_id: str, path: Path, name: re.Match, organ_rles: dict[str, str]) -> SliceRecord:
    """The record of the slice ``slice_id`` (its folder's day and its file's number), its file at ``path``
    whose name is ``name`` (checked by ``_file_name_problem``), its rows' RLEs by organ."""
    parsed = _ID.fullmatch(slice_id)
    assert parsed is not None, slice_id  # built from folder and file names that matched
    return SliceRecord(
        id=slice_id,
        case=int(parsed[1]),
        day=int(parsed[2]),
        slice=int(parsed[3]),
        width=int(name[2]),
        height=int(name[3]),
        spacing=(float(name[4]), float(name[5])),
        path=path,
        rles=tuple(organ_rles.get(organ, "") for organ in ORGANS),
    )


@dataclass(frozen=True)
class ListedSlice(_LabelsByRLE):
    """A slice as train.csv lists it (``listed_slices``), before its file is found or its rows checked:
    what choosing a slice by case and labels needs."""

    id: str
    case: int
    day: int
    slice: int
    rles: tuple[str, ...]  # in ORGANS order; "" = absent


def listed_slices(root: str | Path, exclude: Iterable[str] = EXCLUDED_CASE_DAYS) -> list[ListedSlice]:
    """The slices train.csv lists outside the excluded case-days, in the index's order (case, day, slice:
    the real train.csv is not), from one quick pass that
    checks only what it reads (a fraction of indexing a real-scale tree: no file is listed, no RLE
    checked). ``GITractDataset`` checks everything and says what is wrong; this raises ``DataError`` for
    a train.csv it cannot read so (a bad header, an id not like case123_day20_slice_0065)."""
    csv_path = Path(root) / "train.csv"
    excluded = set(exclude)
    rows: dict[str, dict[str, str]] = {}
    try:
        with csv_path.open(newline="", encoding="utf-8") as file:
            reader = csv.reader(file)
            header, (id_at, class_at, rle_at) = _read_header(reader, csv_path)
            for fields in reader:
                if len(fields) == len(header):
                    rows.setdefault(fields[id_at].strip(), {})[fields[class_at].strip()] = _rle_field(fields[rle_at])
    except (csv.Error, UnicodeDecodeError, OSError) as exc:
        raise DataError(f"cannot read {csv_path}: {exc}") from None
    listed = []
    for slice_id, organ_rles in rows.items():
        parsed = _ID.fullmatch(slice_id)
        if parsed is None:
            raise DataError(f"{csv_path}: id {_cut(slice_id)} is not like case123_day20_slice_0065")
        case, day, number = int(parsed[1]), int(parsed[2]), int(parsed[3])
        if f"case{case}_day{day}" not in excluded:
            listed.append(ListedSlice(slice_id, case, day, number, tuple(organ_rles.get(o, "") for o in ORGANS)))
    listed.sort(key=lambda entry: (entry.case, entry.day, entry.slice))
    return listed


def find_slice(root: str | Path, listed: ListedSlice) -> SliceRecord | None:
    """The record ``GITractDataset(root)`` makes of ``listed``, found with one folder listing: its file in
    its case-day's scans folder, named by the reader's rules, the only one of its slice, and its RLEs
    decodable. None where the data set would not have it so (no such file, two files, a bad RLE)."""
    parsed = _ID.fullmatch(listed.id)
    if parsed is None:
        return None
    day = listed.id[: listed.id.index("_slice_")]
    scans = Path(root) / "train" / f"case{parsed[1]}" / day / "scans"
    try:
        entries = sorted(os.scandir(scans), key=lambda entry: entry.name)
    except OSError:
        return None
    found = []
    for entry in entries:
        name = _SLICE_FILE.fullmatch(entry.name)
        if name is not None and f"{day}_slice_{name[1]}" == listed.id:
            found.append((entry, name))
    if len(found) != 1 or _file_name_problem(found[0][1]) or not found[0][0].is_file():
        return None
    entry, name = found[0]
    record = _record(listed.id, Path(entry.path), name, dict(zip(ORGANS, listed.rles)))
    try:
        record.masks()
    except RLEError:
        return None
    return record


def _columns(header: list[str]) -> str:
    """train.csv's column names as a message lists them: the first few (a header may have thousands)."""
    names = ", ".join(_cut(name) if len(name) > 60 or not name.isprintable() else name for name in header[:6])
    return names + (f", ... ({len(header)} columns)" if len(header) > 6 else "")


def _cut(value: str) -> str:
    """A field of train.csv as a message quotes it: a field may be 128 KB long."""
    return repr(value) if len(value) <= 60 else f"{value[:60]!r}... ({len(value)} characters)"


def _printable(name: str) -> str:
    """A path from the data set as a problem line shows it: quoted when it holds a newline or other control
    character, so each problem stays one line."""
    return name if name.isprintable() else repr(name)


def _subfolders(folder: Path) -> list[Path]:
    return sorted(Path(entry.path) for entry in os.scandir(folder) if entry.is_dir())


def _rle_problems(records: list[SliceRecord]) -> dict[int, str]:
    """record index -> why one of its RLEs cannot be decoded, for the records with a malformed RLE.

    Decoding every mask would take many seconds on the real data set, so all runs are checked at once
    without painting them (plain ascending, disjoint ``start length`` pairs inside the image), and only
    a suspicious RLE goes to ``rle_decode`` for the verdict and the message.
    """
    suspects: set[tuple[int, int]] = set()
    tokens: list[str] = []
    owners: list[tuple[int, int]] = []
    runs_per_owner: list[int] = []
    for i, record in enumerate(records):
        for organ, rle in enumerate(record.rles):
            if not rle:
                continue
            parts = rle.split()
            digits = "".join(parts)
            if len(parts) % 2 or not (digits.isascii() and digits.isdigit()):
                suspects.add((i, organ))
                continue
            tokens += parts
            owners.append((i, organ))
            runs_per_owner.append(len(parts) // 2)
    try:
        values = np.array(tokens, dtype=np.int64)
    except OverflowError:  # a number beyond 64 bits: let rle_decode judge every RLE
        suspects.update(owners)
        tokens = []
    if tokens:
        starts, lengths = values[0::2], values[1::2]
        ends = starts - 1 + lengths  # exclusive, 0-indexed
        owner = np.repeat(np.arange(len(owners)), runs_per_owner)
        sizes = np.array([records[i].height * records[i].width for i, _ in owners], dtype=np.int64)
        previous_end = np.concatenate([[0], ends[:-1]])
        previous_end[np.concatenate([[True], owner[1:] != owner[:-1]])] = 0  # each RLE starts afresh
        bad = (starts <= previous_end) | (lengths < 1) | (ends > sizes[owner])
        suspects.update(owners[k] for k in np.unique(owner[bad]).tolist())
    problems: dict[int, str] = {}
    for i, organ in sorted(suspects):
        record = records[i]
        try:
            rle_decode(record.rles[organ], record.height, record.width, slice_id=record.id, organ=ORGANS[organ])
        except RLEError as exc:
            problems.setdefault(i, str(exc))
    return problems


def split_by_case(records: list, test_fraction: float = 0.1, seed: int = 0) -> tuple[list, list]:
    """(train, test) records of any data set, split by ``record.case``: ``round(test_fraction * cases)``
    cases (at least one, leaving one for training) shuffled by ``seed`` go to the test side."""
    if not 0 < test_fraction < 1:
        raise ValueError(f"test_fraction must be between 0 and 1, got {test_fraction}")
    cases = sorted({record.case for record in records})
    random.Random(seed).shuffle(cases)
    n_test = min(max(round(test_fraction * len(cases)), 1), len(cases) - 1) if len(cases) >= 2 else 0
    test_cases = set(cases[:n_test])
    return [r for r in records if r.case not in test_cases], [r for r in records if r.case in test_cases]


def with_labels(records: Iterable) -> list:
    """The slice records (of any data set) whose ground truth has at least one label (the ones the paper scores)."""
    return [record for record in records if record.has_labels]


def with_organs(records: Iterable[SliceRecord]) -> list[SliceRecord]:
    """The UW-Madison slices whose ground truth has at least one organ: ``with_labels`` of this reader's."""
    return with_labels(records)


SPLITS = ("test", "train", "all")


def select_slices(
    dataset,
    split: str = "test",
    *,
    organs_only: bool = True,
    limit: int | None = None,
    test_fraction: float = 0.1,
    seed: int = 0,
) -> list[SliceRecord]:
    """The slices a command scores, of any data set (its ``records``, ``split`` by case, ``root`` and
    ``labels``): one side of the split (the test side by default), only those whose ground truth has a
    label unless ``organs_only`` is False (as the paper scored), at most ``limit`` of them in data-set
    order. An empty selection is a ``DataError`` naming the split."""
    from core.errors import OptionError, check_choice
    from core.wording import label_nouns

    check_choice(split, SPLITS, "split")
    if limit is not None and limit < 1:
        raise OptionError(f"limit must be at least 1, got {limit}")
    if split == "all":
        records = list(dataset.records)
    else:
        train, test = dataset.split(test_fraction, seed)
        records = test if split == "test" else train
    if organs_only:
        records = with_labels(records)
    if not records:
        wanted = f"slices with {label_nouns(dataset.labels)}" if organs_only else "slices"
        raise DataError(f"the {split} split of {str(dataset.root)!r} has no {wanted}")
    return records[:limit] if limit else records


def resize_image(image: np.ndarray, size: int) -> np.ndarray:
    """Resize a 2-D float image to (size, size) by area averaging; float32, clipped to [0, 1].

    Pillow's BOX filter on a 32-bit float image weights every source pixel by the exact fraction of it
    that an output pixel covers (what OpenCV's INTER_AREA does when shrinking, as the Kaggle notebooks
    did), whereas torch's ``interpolate(mode="area")`` is adaptive average pooling over whole-pixel
    windows of uneven size; Pillow also keeps torch out of the data path.
    """
    image = np.asarray(image, dtype=np.float32)
    if image.ndim != 2:
        raise ValueError(f"resize_image takes a 2-D image, got shape {image.shape}")
    if image.shape == (size, size):
        return image.copy()
    resized = Image.fromarray(image).resize((size, size), Image.Resampling.BOX)
    return np.clip(np.asarray(resized, dtype=np.float32), 0.0, 1.0)


def resize_masks(masks: np.ndarray, size: int) -> np.ndarray:
    """Resize (..., H, W) masks to (..., size, size) by nearest neighbour (pixel centres); stays 0/1 uint8."""
    masks = np.asarray(masks)
    height, width = masks.shape[-2:]
    rows = np.minimum(((np.arange(size) + 0.5) * height / size).astype(np.int64), height - 1)
    cols = np.minimum(((np.arange(size) + 0.5) * width / size).astype(np.int64), width - 1)
    return np.ascontiguousarray(masks[..., rows, :][..., cols], dtype=np.uint8)


def load_slice(record: SliceRecord, img_size: int = 224) -> tuple[np.ndarray, np.ndarray]:
    """One slice ready for a model: image float32 (S, S) in [0, 1] and masks uint8 (3, S, S)."""
    image = read_slice(record.path)
    if image.shape != (record.height, record.width):
        raise DataError(
            f"{record.path}: the image is {image.shape[1]} x {image.shape[0]} (width x height) "
            f"but its file name says {record.width} x {record.height}"
        )
    return resize_image(image, img_size), resize_masks(record.masks(), img_size)


def open_dataset(
    root: str | Path | None = None, *, exclude: Iterable[str] = EXCLUDED_CASE_DAYS, progress=None
) -> GITractDataset:
    """The data set at ``root``, or the built-in demo (generated on first use, reporting ``progress``)."""
    if root is None:
        from core.data.demo import demo_data_dir  # the demo generator is only needed without --data

        root = demo_data_dir(progress=progress)
    return GITractDataset(root, exclude=exclude)
