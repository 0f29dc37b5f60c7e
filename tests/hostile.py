"""Hostile files made from the files the project ships: a safetensors file taken apart into its header
and its data, edited, and put back together (tests/core/test_hostile_files.py, tests/core/test_fuzz_readers.py,
benchmarks/fuzz.py)."""

from __future__ import annotations

import json
import os
import struct
import tracemalloc
from pathlib import Path

from core.errors import SegadvError

REPO = Path(__file__).resolve().parent.parent
CHECKPOINTS = REPO / "checkpoints"
DEMO_CHECKPOINT = CHECKPOINTS / "demo_small.safetensors"
DEMO_DELTA = CHECKPOINTS / "universal_demo_small_stomach.safetensors"
# The most a reader may allocate (tracemalloc: Python objects and numpy arrays) for one input: the largest
# slice segadv reads (core.data.rle.MAX_PIXELS, 2^24 pixels) is 64 MiB as float32 beside its 32 MiB 16-bit copy.
MEMORY_BOUND = 128 << 20


def safetensors_parts(path: Path) -> tuple[dict, int]:
    """``path``'s header (parsed) and the length of its data section."""
    raw = path.read_bytes()
    (length,) = struct.unpack("<Q", raw[:8])
    return json.loads(raw[8 : 8 + length]), len(raw) - 8 - length


def header_bytes(header: dict | bytes) -> bytes:
    return header if isinstance(header, bytes) else json.dumps(header).encode()


def write_safetensors(path: Path, header: dict | bytes, data: bytes | int, *, header_len: int | None = None) -> Path:
    """A safetensors file of ``header`` (a dict, or raw bytes) and ``data`` (bytes, or a length: zeros as a
    sparse file, for the readers that look at the header alone). ``header_len`` overrides the length
    prefix."""
    text = header_bytes(header)
    with open(path, "wb") as file:
        file.write(struct.pack("<Q", len(text) if header_len is None else header_len) + text)
        if isinstance(data, int):
            file.truncate(8 + len(text) + data)
        else:
            file.write(data)
    return path


def with_meta(header: dict, **values: str) -> dict:
    """``header`` with metadata entries replaced by ``values`` (the raw strings the file holds)."""
    edited = json.loads(json.dumps(header))
    edited["__metadata__"].update(values)
    return edited


def hostile_checkpoints(folder: Path) -> dict[str, Path]:
    """The files of issue 23's table, each the bundled demo checkpoint with one edit."""
    folder.mkdir(parents=True, exist_ok=True)
    header, size = safetensors_parts(DEMO_CHECKPOINT)
    data = DEMO_CHECKPOINT.read_bytes()[-size:]
    past_end = json.loads(json.dumps(header))
    first = next(key for key in header if key != "__metadata__")
    past_end[first]["data_offsets"] = [size + 8, size + 16]
    files = {
        "header length 2^40": (header, {"header_len": 2**40}),
        "tensor offsets past the end": (past_end, {}),
        "model os.system": (with_meta(header, model=json.dumps("os.system")), {}),
        "classes a, b": (with_meta(header, classes=json.dumps(["a", "b"])), {}),
        "train_args nested 100,000 deep": (with_meta(header, train_args="[" * 100_000 + "]" * 100_000), {}),
        "img_size 1000000000": (with_meta(header, img_size="1000000000"), {}),
        "img_size 40000": (with_meta(header, img_size="40000"), {}),
    }
    return {
        name: write_safetensors(folder / f"{index}.safetensors", edited, data, **options)
        for index, (name, (edited, options)) in enumerate(files.items())
    }


def result_or_refusal(read, *args):
    """``read(*args)``: its result, or the ``SegadvError`` it raised (any other exception propagates),
    after checking that it allocated at most ``MEMORY_BOUND`` and that a refusal is one line."""
    tracemalloc.start()
    try:
        try:
            outcome = read(*args)
        except SegadvError as exc:
            outcome = exc
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak <= MEMORY_BOUND, f"{read.__name__} allocated {peak / 2**20:.0f} MiB"
    if isinstance(outcome, SegadvError):
        message = str(outcome)
        assert message and "\n" not in message and len(message) < 1000, message
    return outcome


def unique_path(folder: Path, suffix: str) -> Path:
    """A new file name in ``folder`` (the delta reader caches by path, time and size)."""
    unique_path.count = getattr(unique_path, "count", 0) + 1
    return folder / f"input{os.getpid()}_{unique_path.count}{suffix}"
