"""Every reader of a file fuzzed (issue 23): random and mutated inputs (mutations of the files the project
ships: the bundled checkpoints and delta, slice PNGs, train.csv rows) give a result or a ``SegadvError``,
never another exception, never more than ``MEMORY_BOUND`` (tracemalloc) or the deadline.

Each target is a strategy and a check; the tests here run a few examples of each (the suite's budget),
``benchmarks/fuzz.py`` runs the same targets for minutes (``SEGADV_FUZZ_EXAMPLES`` sets the count here).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import shutil
import struct
import tempfile
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from functools import cache
from pathlib import Path

import numpy as np
from hostile import CHECKPOINTS, DEMO_DELTA, result_or_refusal, safetensors_parts, unique_path, write_safetensors
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from core.attacks.universal import load_delta
from core.data.gitract import GITractDataset, load_slice, read_slice, resize_image
from core.data.rle import rle_decode, rle_encode
from core.errors import SegadvError
from core.models.checkpoints import read_checkpoint_meta, read_safetensors_meta

REAL_SAMPLES = Path(__file__).resolve().parent.parent.parent.parent / "shared" / "real-samples"
EXAMPLES = int(os.environ.get("SEGADV_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large, HealthCheck.filter_too_much],
)
# Values that break readers: boundaries of 32- and 64-bit integers, NaN and infinities as float32.
INTERESTING = [struct.pack("<I", value) for value in (0, 1, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF)] + [
    struct.pack("<f", value) for value in (float("nan"), float("inf"), -float("inf"), 1e30)
]


@cache
def workdir() -> Path:
    """Scratch files for the inputs (one folder per process, removed at exit)."""
    import atexit

    folder = Path(tempfile.mkdtemp(prefix="segadv-fuzz-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    return folder


# -- mutations --------------------------------------------------------------------------------------------------


@st.composite
def mutated(draw, seed: bytes, start: int = 0, max_edits: int = 6) -> bytes:
    """``seed`` with a few byte-level edits at or after ``start``: bit flips, new bytes, insertions,
    deletions, truncation, repeats, interesting 4-byte values."""
    data = bytearray(seed)
    for _ in range(draw(st.integers(1, max_edits))):
        at = draw(st.integers(min(start, len(data)), len(data)))
        kind = draw(st.sampled_from(("flip", "byte", "insert", "delete", "truncate", "repeat", "interesting")))
        if kind == "flip" and at < len(data):
            data[at] ^= 1 << draw(st.integers(0, 7))
        elif kind == "byte" and at < len(data):
            data[at] = draw(st.integers(0, 255))
        elif kind == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=16))
        elif kind == "delete":
            del data[at : at + draw(st.integers(1, 64))]
        elif kind == "truncate":
            del data[at:]
        elif kind == "repeat":
            data[at:at] = bytes(data[at : at + draw(st.integers(1, 32))]) * draw(st.integers(1, 64))
        elif kind == "interesting":
            data[at : at + 4] = draw(st.sampled_from(INTERESTING))
    return bytes(data)


def deep(depth: int) -> str:
    return "[" * depth + "]" * depth


json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text(max_size=12)
    | st.sampled_from(
        [
            0,
            -1,
            32,
            4096,
            4097,
            10**9,
            2**63,
            10**40,
            1e308,
            "small",
            "none",
            "float16",
            ["large_bowel", "small_bowel", "stomach"],
            ["stomach"],
            "segadv-checkpoint/1",
            "segadv-universal/1",
        ]
    ),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)
# What a metadata entry's string may hold: JSON, broken JSON, nesting bombs, long numbers.
json_texts = st.one_of(
    json_values.map(json.dumps),
    st.text(max_size=24),
    st.integers(1, 200_000).map(deep),
    st.integers(1, 6000).map(lambda n: "9" * n),
)


# -- target: safetensors headers and metadata (checkpoints, deltas) ------------------------------------------


@cache
def safetensors_seeds() -> list[tuple[dict, int]]:
    """The bundled files' headers and data lengths."""
    return [safetensors_parts(path) for path in sorted(CHECKPOINTS.glob("*.safetensors"))]


@st.composite
def safetensors_inputs(draw) -> tuple[bytes, int, int | None]:
    """(header bytes, data length, length prefix or None) from a bundled file with a few edits."""
    header, size = draw(st.sampled_from(safetensors_seeds()))
    header = json.loads(json.dumps(header))
    meta, tensors = header.setdefault("__metadata__", {}), [key for key in header if key != "__metadata__"]
    header_len = None
    edits = draw(
        st.lists(
            st.sampled_from(("meta value", "meta delete", "tensor field", "header", "bytes", "length", "data length")),
            min_size=1,
            max_size=3,
        )
    )
    for edit in sorted(edits, key=lambda edit: edit == "header"):  # the metadata is edited before it may be replaced
        if edit == "meta value":
            key = draw(st.sampled_from(sorted(meta)) | st.text(max_size=8)) if meta else draw(st.text(max_size=8))
            meta[key] = draw(json_texts)
        elif edit == "meta delete" and meta:
            del meta[draw(st.sampled_from(sorted(meta)))]
        elif edit == "tensor field" and tensors:
            entry = header[draw(st.sampled_from(tensors))]
            entry[draw(st.sampled_from(("dtype", "shape", "data_offsets")))] = draw(json_values)
        elif edit == "header":
            header[draw(st.sampled_from(["__metadata__", *tensors[:3]]) | st.text(max_size=6))] = draw(json_values)
        elif edit == "data length":
            size = max(0, size + draw(st.integers(-64, 64)))
    text = json.dumps(header).encode()
    if "bytes" in edits:
        text = draw(mutated(text))
    if "length" in edits:
        header_len = draw(st.integers(0, 2**64 - 1) | st.integers(max(0, len(text) - 8), len(text) + 8))
    return text, size, header_len


def check_safetensors(case: tuple[bytes, int, int | None]) -> None:
    """The header readers; a checkpoint they accept also prints with ``segadv info`` (every value used)."""
    from segadv_tui.cli.models import _checkpoint_info

    text, size, header_len = case
    path = write_safetensors(unique_path(workdir(), ".safetensors"), text, size, header_len=header_len)
    result_or_refusal(read_safetensors_meta, path)
    if not isinstance(result_or_refusal(read_checkpoint_meta, path), SegadvError):
        with contextlib.redirect_stdout(io.StringIO()):
            _checkpoint_info(path)
    path.unlink()


# -- target: the delta file ------------------------------------------------------------------------------------


@st.composite
def delta_inputs(draw) -> bytes:
    """The bundled delta: its header edited as above, or its bytes mutated anywhere (its values too)."""
    raw = DEMO_DELTA.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header, data = json.loads(raw[8 : 8 + length]), raw[8 + length :]
    if draw(st.booleans()):
        return draw(mutated(raw))
    meta = header["__metadata__"]
    for _ in range(draw(st.integers(1, 3))):
        if draw(st.booleans()):
            meta[draw(st.sampled_from(sorted(meta)) | st.text(max_size=8))] = draw(json_texts)
        else:
            header["delta"][draw(st.sampled_from(("dtype", "shape", "data_offsets")))] = draw(json_values)
    text = json.dumps(header).encode()
    if draw(st.booleans()):  # values: NaN, infinities, beyond eps
        data = draw(mutated(data))
    return struct.pack("<Q", len(text)) + text + data


def check_delta(raw: bytes) -> None:
    path = unique_path(workdir(), ".safetensors")  # a new name each time: load_delta caches by path
    path.write_bytes(raw)
    result_or_refusal(load_delta, path)
    path.unlink()


# -- target: slice PNGs ------------------------------------------------------------------------------------------


def png_bytes(pixels: np.ndarray, **options) -> bytes:
    from PIL import Image
    from PIL.PngImagePlugin import PngInfo

    info = PngInfo()
    info.add_text("Comment", "segadv fuzz seed", zip=True)
    stream = io.BytesIO()
    Image.fromarray(pixels).save(stream, format="PNG", pnginfo=info, **options)
    return stream.getvalue()


@cache
def png_seeds() -> list[bytes]:
    """Small PNGs of the kinds a data set may hold (16-bit and 8-bit grey, palette, RGBA), and the real
    slices where ../shared is present."""
    rng = np.random.default_rng(0)
    seeds = [
        png_bytes((rng.random((20, 24)) * 40000).astype(np.uint16)),
        png_bytes((rng.random((9, 7)) * 255).astype(np.uint8)),
        png_bytes((rng.random((6, 5, 4)) * 255).astype(np.uint8)),
        png_bytes((rng.random((8, 8)) * 255).astype(np.uint8), optimize=True),
    ]
    from PIL import Image

    stream = io.BytesIO()
    Image.fromarray((rng.random((10, 10)) * 255).astype(np.uint8)).convert("P").save(stream, format="PNG")
    seeds.append(stream.getvalue())
    seeds += [path.read_bytes() for path in sorted(REAL_SAMPLES.glob("*.png"))]
    return seeds


def with_size(png: bytes, width: int, height: int) -> bytes:
    """``png`` whose IHDR claims another size, its CRC made right (so only the size is wrong)."""
    ihdr = png[12:16] + struct.pack(">II", width, height) + png[24:29]
    return png[:8] + png[8:12] + ihdr + struct.pack(">I", zlib.crc32(ihdr)) + png[33:]


@st.composite
def png_inputs(draw) -> bytes:
    seed = draw(st.sampled_from(png_seeds()))
    kind = draw(st.sampled_from(("mutated", "mutated body", "size", "random")))
    if kind == "mutated":
        return draw(mutated(seed))
    if kind == "mutated body":  # past the IHDR, so the decoders see the damage
        return draw(mutated(seed, start=33))
    if kind == "size":
        extent = st.integers(0, 2**32 - 1) | st.integers(0, 5000)
        return with_size(seed, draw(extent), draw(extent))
    return draw(st.binary(max_size=256))


def check_png(raw: bytes) -> None:
    path = unique_path(workdir(), ".png")
    path.write_bytes(raw)
    image = result_or_refusal(read_slice, path)
    if not isinstance(image, SegadvError):
        assert image.ndim == 2 and np.isfinite(image).all() and image.min() >= 0 and image.max() <= 1
        resize_image(image, 16)
    path.unlink()


# -- target: RLE -------------------------------------------------------------------------------------------------


@cache
def rle_seeds() -> list[str]:
    rng = np.random.default_rng(1)
    seeds = [rle_encode(rng.random((20, 30)) < density) for density in (0.05, 0.5)]
    if (REAL_SAMPLES / "train_rows.csv").is_file():
        seeds += [
            row.split(",")[2]
            for row in (REAL_SAMPLES / "train_rows.csv").read_text().splitlines()[1:]
            if row.count(",") == 2 and row.split(",")[2]
        ]
    return seeds


@st.composite
def rle_inputs(draw) -> tuple[str, int, int]:
    kind = draw(st.sampled_from(("mutated", "integers", "text")))
    if kind == "mutated":
        text = draw(mutated(draw(st.sampled_from(rle_seeds())).encode())).decode("utf-8", "replace")
    elif kind == "integers":
        text = " ".join(map(str, draw(st.lists(st.integers(-(2**70), 2**70) | st.integers(-3, 700), max_size=20))))
    else:
        text = draw(st.text(max_size=40))
    extent = st.integers(-2, 300) | st.integers(0, 10**6)
    return text, draw(extent), draw(extent)


def check_rle(case: tuple[str, int, int]) -> None:
    text, height, width = case
    mask = result_or_refusal(rle_decode, text, height, width)
    if not isinstance(mask, SegadvError):
        assert mask.shape == (height, width) and set(np.unique(mask)) <= {0, 1}


# -- target: a data set's train.csv and file names --------------------------------------------------------------

SLICES = ((1, 16, 16), (2, 16, 16), (3, 24, 16))  # slice number, width, height of the synthetic case-day


@cache
def csv_seeds() -> list[bytes]:
    """A train.csv for the synthetic tree of ``data_root`` (valid RLEs), and the real rows where present."""
    rng = np.random.default_rng(2)
    lines = ["id,class,segmentation"]
    for number, width, height in SLICES:
        for organ, density in (("large_bowel", 0.1), ("small_bowel", 0.0), ("stomach", 0.4)):
            lines.append(f"case1_day1_slice_{number:04d},{organ},{rle_encode(rng.random((height, width)) < density)}")
    seeds = ["\n".join(lines).encode()]
    if (REAL_SAMPLES / "train_rows.csv").is_file():
        seeds.append((REAL_SAMPLES / "train_rows.csv").read_bytes())
    return seeds


@cache
def slice_png(width: int, height: int) -> bytes:
    return png_bytes((np.random.default_rng(width * height).random((height, width)) * 30000).astype(np.uint16))


slice_names = st.from_regex(r"slice_[0-9]{1,12}_[0-9]{1,12}_[0-9]{1,12}_[0-9.]{1,12}_[0-9.]{1,12}\.png", fullmatch=True)


@st.composite
def dataset_inputs(draw) -> tuple[bytes, list[str]]:
    """(train.csv, extra file names in the scans folder)."""
    seed = draw(st.sampled_from(csv_seeds()))
    kind = draw(st.sampled_from(("mutated", "rows", "random")))
    if kind == "mutated":
        text = draw(mutated(seed))
    elif kind == "rows":
        ids = (
            st.from_regex(r"case[0-9]{1,12}_day[0-9]{1,12}_slice_[0-9]{1,12}", fullmatch=True)
            | st.sampled_from([f"case1_day1_slice_{number:04d}" for number, _, _ in SLICES])
            | st.text(max_size=12)
        )
        organs = st.sampled_from(("large_bowel", "small_bowel", "stomach")) | st.text(max_size=12)
        rles = st.sampled_from(rle_seeds()) | rle_inputs().map(lambda case: case[0])
        rows = draw(st.lists(st.tuples(ids, organs, rles), max_size=8))
        stream = io.StringIO()
        import csv

        csv.writer(stream).writerows([("id", "class", "segmentation"), *rows])
        text = stream.getvalue().encode()
    else:
        text = draw(st.binary(max_size=200))
    names = draw(
        st.lists(
            slice_names
            | st.text(st.characters(blacklist_characters="/\0"), min_size=1, max_size=30).map(
                lambda name: name + ".png"
            )
            | st.sampled_from(["\udcff.png", "slice_\udc80_1_1_1_1.png"]),
            max_size=3,
        )
    )  # the last: names that are not UTF-8 (bytes 0xff, 0x80 on disk)
    return text, names


def check_dataset(case: tuple[bytes, list[str]]) -> None:
    text, names = case
    root = unique_path(workdir(), "")
    scans = root / "train" / "case1" / "case1_day1" / "scans"
    scans.mkdir(parents=True)
    for number, width, height in SLICES:
        (scans / f"slice_{number:04d}_{width}_{height}_1.50_1.50.png").write_bytes(slice_png(width, height))
    for name in names:
        with contextlib.suppress(OSError, UnicodeEncodeError):  # a name no file can have is not the reader's to judge
            (scans / name).write_bytes(slice_png(16, 16))
    (root / "train.csv").write_bytes(text)

    def read_all():
        dataset = GITractDataset(root)
        assert all(
            isinstance(problem, str) and "\n" not in problem and len(problem) < 1000 for problem in dataset.problems
        )
        for record in dataset:
            record.masks()
            with contextlib.suppress(SegadvError):  # a slice's own fault (its size against its name)
                load_slice(record, 16)
        return dataset

    result_or_refusal(read_all)
    shutil.rmtree(root)


# -- the targets, and a few examples of each in the suite ------------------------------------------------------


@dataclass(frozen=True)
class Target:
    inputs: st.SearchStrategy
    check: Callable


TARGETS = {
    "safetensors": Target(safetensors_inputs(), check_safetensors),
    "delta": Target(delta_inputs(), check_delta),
    "png": Target(png_inputs(), check_png),
    "rle": Target(rle_inputs(), check_rle),
    "dataset": Target(dataset_inputs(), check_dataset),
}


# -- known hostile inputs first (each broke a reader before issue 23), then the fuzzer's ---------------------


def _nested_train_args() -> tuple[bytes, int, None]:
    header, size = safetensors_seeds()[0]
    header = json.loads(json.dumps(header))
    header["__metadata__"]["train_args"] = deep(100_000)
    return json.dumps(header).encode(), size, None


def _nested_delta() -> bytes:
    raw = DEMO_DELTA.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + length])
    header["__metadata__"]["loss_history"] = deep(100_000)
    text = json.dumps(header).encode()
    return struct.pack("<Q", len(text)) + text + raw[8 + length :]


def _bomb_png() -> bytes:
    """5800 x 5800 zero pixels in 33 KB: decoded, 170 MB of arrays."""
    return (
        with_size(png_seeds()[1], 5800, 5800)[:33]
        + _chunk(b"IDAT", zlib.compress(bytes(5801 * 5800), 9))
        + _chunk(b"IEND", b"")
    )


def _chunk(kind: bytes, data: bytes) -> bytes:
    return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))


@FUZZ
@example(_nested_train_args())
@given(TARGETS["safetensors"].inputs)
def test_fuzz_safetensors_headers_and_metadata(case):
    check_safetensors(case)


@FUZZ
@example(_nested_delta())
@given(TARGETS["delta"].inputs)
def test_fuzz_delta_files(raw):
    check_delta(raw)


def _long_chunk_png() -> bytes:
    """A chunk whose length claims 4 GB (Pillow read it with one ``read(length)``)."""
    seed = png_seeds()[1]
    at = seed.index(b"IDAT") - 4
    return seed[:at] + struct.pack(">I", 0xFFFFFF7F) + seed[at + 4 :]


@FUZZ
@example(_bomb_png())
@example(_long_chunk_png())
@given(TARGETS["png"].inputs)
def test_fuzz_slice_pngs(raw):
    check_png(raw)


@FUZZ
@example(("1 ²", 8, 8))
@given(TARGETS["rle"].inputs)
def test_fuzz_rle(case):
    check_rle(case)


@FUZZ
@example((f"id,class,segmentation\ncase1_day1_slice_{'9' * 5000},stomach,\n".encode(), []))
@given(TARGETS["dataset"].inputs)
def test_fuzz_train_csv_and_file_names(case):
    check_dataset(case)
