"""What makes two computations the same: content hashes of the inputs, the version of the code, and the
cache key made of them.

A result is served from the run index only when its key matches exactly: the checkpoints' content hashes,
the data set's fingerprint, the selected slices, the attack configuration, the device type and the code
(segadv's version, a hash of ``core``'s sources, torch's and smp's versions). A batch size or an output
path is not in the key: they do not change the numbers.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Sequence
from functools import lru_cache
from importlib import metadata
from pathlib import Path

import core

CORE_DIR = Path(core.__file__).resolve().parent
HASH_CHUNK = 1 << 20


def file_sha256(path: str | os.PathLike) -> str:
    """The sha256 of a file's bytes, read in chunks (a checkpoint may be gigabytes)."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(HASH_CHUNK), b""):
            digest.update(chunk)
    return digest.hexdigest()


@lru_cache(maxsize=1)
def core_sources_hash() -> str:
    """A hash of every ``core`` module's source: any change to the code that computes results changes it."""
    digest = hashlib.sha256()
    for path in sorted(CORE_DIR.rglob("*.py")):
        digest.update(path.relative_to(CORE_DIR).as_posix().encode() + b"\0")
        digest.update(path.read_bytes() + b"\0")
    return digest.hexdigest()[:16]


def _version(package: str) -> str | None:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return None


@lru_cache(maxsize=1)
def versions() -> dict[str, str | None]:
    """The versions a record keeps: segadv (with the hash of core's sources), torch (with its build, such as
    ``+cu130``), smp, Python."""
    import torch

    return {
        "segadv": core.__version__,
        "core_sources": core_sources_hash(),
        "torch": torch.__version__,
        "smp": _version("segmentation-models-pytorch"),
        "python": platform.python_version(),
    }


def selection_fingerprint(records: Iterable) -> str:
    """A hash of the selected slices: their ids in order and, where a record names its file, the file's size
    and modification time (an edited image is a different input; the data set's fingerprint covers the
    labels only)."""
    digest = hashlib.sha256()
    for record in records:
        digest.update(str(record.id).encode() + b"\0")
        path = getattr(record, "path", None)
        if path is not None:
            try:
                stat = os.stat(path)
            except OSError:
                digest.update(b"missing\0")
            else:
                digest.update(f"{stat.st_size}:{stat.st_mtime_ns}\0".encode())
    return digest.hexdigest()[:16]


def canonical_json(value) -> str:
    """``value`` as JSON with sorted keys and no spaces: equal values, equal text."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def cache_key(fields: dict) -> str:
    """The key of a computation: the sha256 of its fields (inputs' hashes, configuration, code version) as
    canonical JSON, with the code's versions added."""
    code = {name: value for name, value in versions().items() if name != "python"}
    return hashlib.sha256(canonical_json({"fields": fields, "code": code}).encode()).hexdigest()


def computation_fields(
    command: str,
    key: dict,
    *,
    checkpoints: Iterable[str],
    data_fingerprint: str,
    records: Iterable,
    device_type: str,
    delta_sha256: str | None = None,
) -> dict:
    """The fields of a computation's cache key, as every front end makes them: the command, ``key`` (the
    attack configuration and what else the command's result depends on), the checkpoints' content hashes,
    the data's fingerprint, the selected slices (``selection_fingerprint``), the device type (CPU and GPU
    results differ in the last digits) and, for the universal method, its perturbation's hash."""
    fields = {
        "command": command,
        **key,
        "checkpoints": list(checkpoints),
        "data_fingerprint": data_fingerprint,
        "selection": selection_fingerprint(records),
        "device_type": device_type,
    }
    if delta_sha256 is not None:
        fields["delta_sha256"] = delta_sha256
    return fields


def table_ii_key(config, losses: Iterable[str]) -> dict:
    """Table II's own key fields, the same from the CLI (``segadv table``) and the explorer: the attack
    without its loss (each column sets its own) and without what only other methods read, and the losses. The rows'
    labels are not in it: each front
    end names a checkpoint its own way (``table_ii_relabelled``)."""
    from core.attacks.config import METHODS

    # a field that only other methods read (erase's organs under FGSM) does not change this one's result
    others = {name for method in METHODS.values() for name in method.parameters} - set(config.entry.parameters)
    attack = {name: value for name, value in config.to_dict().items() if name not in others | {"loss"}}
    return {"config": attack, "losses": list(losses)}


def table_ii_relabelled(table, labels: Sequence[str]):
    """A ``core.evaluation.scoring.TableII`` served from the index with its rows named as this front end names
    its checkpoints (the rows follow the checkpoints' order, which the key fixes)."""
    from dataclasses import replace

    return replace(table, rows=[replace(row, label=label) for row, label in zip(table.rows, labels)])
