"""The model cache: what opening a checkpoint once has learned, kept so later launches open it with torch alone.

Importing segmentation-models-pytorch takes seconds (its package imports every encoder, timm and torchvision's
models, and torchvision imports torch._dynamo), whatever the checkpoint's architecture. So a checkpoint opened
once leaves two things in the user's cache folder (``core.paths.cache_dir()/models``):

- its checked metadata (``<key>.json``): the next scan trusts it without the checks that need smp;
- its model traced to TorchScript (``<key>.pt``, written by :func:`save_compiled` after the explorer's first
  frame): the next launch loads it with ``torch.jit.load`` and attacks it at once. The traced graph runs the
  same ATen operations as the model, so its logits and input gradients are the model's (bit-identical on the
  CPU; the tests check it), in eval mode and fp32 only: it never trains.

The key is the checkpoint's content as far as it can be had without reading the weights (its size,
modification time, inode and the SHA-256 of its header and of its first and last megabyte) with the code
that built and traced it (torch's version, the installed smp / timm / MONAI packages, segadv's model code)
and the device. Nothing is trusted: a cache file that is stale, truncated, foreign or unreadable is ignored
(and removed) and the checkpoint is read from its file again; a cache that cannot be written is no cache.
TorchScript is deprecated in favour of ``torch.export``, whose loader imports torch._dynamo (seconds): its
FutureWarnings are silenced here, and if a later torch drops it the cache is simply never used.
"""

from __future__ import annotations

import hashlib
import importlib.util
import io
import json
import os
import warnings
from pathlib import Path

import torch
from torch import nn

from core.labels import LabelSet
from core.models.checkpoints import MAX_HEADER_BYTES, checkpoint_labels, load_checkpoint, read_safetensors_meta
from core.paths import cache_dir

SIDE = 1 << 20  # bytes hashed at each end of the file, past the header
LIBRARIES = ("torch", "segmentation_models_pytorch", "timm", "monai")
_CODE = (
    "registry.py",
    "specs.py",
    "checkpoints.py",
    "compiled.py",
)  # segadv's code that builds, checks and traces a model
KEEP = {".pt": 8, ".json": 256}  # entries kept, the most recently used (a model is the size of its checkpoint)
TRACE_TOLERANCE = 1e-5  # a traced module whose logits stray further from the model's on a probe is not kept


class CompiledSegmenter(nn.Module):
    """A checkpoint's model as traced TorchScript, behind the same interface the attacks use: (N, 1, H, W)
    slices in [0, 1] (or the paper's (N, 3, H, W) for a 3-channel network) -> logits of ``labels``."""

    def __init__(self, traced: torch.jit.ScriptModule, labels: LabelSet, in_channels: int):
        super().__init__()
        self.traced = traced
        self.labels = labels
        self.in_channels = in_channels

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        channels = (1, 3) if self.in_channels == 3 else (1,)
        if image.ndim != 4 or image.shape[1] not in channels:
            raise ValueError(f"expected a grayscale batch of shape (N, 1, H, W), got {tuple(image.shape)}")
        # The graph as traced, operation by operation: no fusion that could change a float.
        with torch.jit.optimized_execution(False):
            return self.traced(image)


def cache_key(path: str | os.PathLike, device: str | torch.device = "cpu") -> str | None:
    """The key of ``path``'s cache entries (see the module's doc); None when the file cannot be read."""
    path = Path(path)
    digest = hashlib.sha256()
    try:
        stat = path.stat()
        with open(path, "rb") as handle:
            head = handle.read(8)
            header_bytes = int.from_bytes(head, "little") if len(head) == 8 else 0
            digest.update(head + handle.read(min(header_bytes, MAX_HEADER_BYTES)))
            digest.update(handle.read(SIDE))
            handle.seek(max(0, stat.st_size - SIDE))
            digest.update(handle.read(SIDE))
    except OSError:
        return None
    digest.update(
        f"\n{stat.st_size} {stat.st_mtime_ns} {stat.st_ino} {torch.__version__} {torch.device(device).type}\n".encode()
    )
    for library in LIBRARIES:
        digest.update(_code_stamp(library))
    here = Path(__file__).parent
    for name in _CODE:
        digest.update(_stat_line(here / name))
    return digest.hexdigest()[:32]


def _code_stamp(package: str) -> bytes:
    """The installed ``package``'s ``__init__.py`` as a stat line (an upgrade rewrites it), found without
    importing the package."""
    try:
        spec = importlib.util.find_spec(package)
    except (ImportError, ValueError):
        spec = None
    return _stat_line(Path(spec.origin)) if spec is not None and spec.origin else f"{package} -\n".encode()


def _stat_line(path: Path) -> bytes:
    try:
        stat = path.stat()
    except OSError:
        return f"{path} -\n".encode()
    return f"{path} {stat.st_size} {stat.st_mtime_ns} {stat.st_ino}\n".encode()


def entry_path(key: str, suffix: str) -> Path:
    return cache_dir() / "models" / f"{key}{suffix}"


def checked_meta(path: str | os.PathLike) -> dict:
    """A segadv safetensors file's metadata, checked (``core.models.checkpoints.read_safetensors_meta``: a
    ``CheckpointError`` naming the file and the key for a bad one), from the cache when this very file was
    checked before."""
    key = cache_key(path)
    cached = _read_meta(key) if key is not None else None
    if cached is not None:
        return cached
    meta = read_safetensors_meta(path)
    if key is not None:
        _write(entry_path(key, ".json"), json.dumps({"key": key, "meta": meta}).encode())
    return meta


def _read_meta(key: str) -> dict | None:
    entry = entry_path(key, ".json")
    try:
        stored = json.loads(entry.read_bytes())
    except FileNotFoundError:
        return None
    except (OSError, ValueError):  # unreadable or torn: checked again from the file
        _remove(entry)
        return None
    if isinstance(stored, dict) and stored.get("key") == key and isinstance(stored.get("meta"), dict):
        _touch(entry)
        return stored["meta"]
    _remove(entry)
    return None


def open_model(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[nn.Module, dict]:
    """``(model, meta)`` of the checkpoint at ``path`` in eval mode on ``device``: the compiled model from the
    cache when there is a good one (torch alone), else the model built from the file
    (``core.models.checkpoints.load_checkpoint``: smp or MONAI, and its errors)."""
    compiled = load_compiled(path, device)
    if compiled is not None:
        return compiled
    return load_checkpoint(path, device)


def load_compiled(path: str | os.PathLike, device: str | torch.device = "cpu") -> tuple[CompiledSegmenter, dict] | None:
    """The cached compiled model of the checkpoint at ``path`` and its metadata; None when there is no good one."""
    key = cache_key(path, device)
    if key is None:
        return None
    entry = entry_path(key, ".pt")
    if not entry.is_file():
        return None
    extra = {"segadv.json": ""}
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # TorchScript's deprecation: the cache's business, not the user's
            traced = torch.jit.load(str(entry), map_location=torch.device(device), _extra_files=extra)
        stored = json.loads(extra["segadv.json"])
        if stored.get("key") != key:
            raise ValueError("another checkpoint's")
        meta = stored["meta"]
        model = CompiledSegmenter(traced, checkpoint_labels(Path(path), meta), int(stored["in_channels"]))
    except Exception:  # noqa: BLE001  torn, foreign or from another torch: built from the checkpoint again
        _remove(entry)
        return None
    _touch(entry)
    return model.eval(), meta


def save_compiled(path: str | os.PathLike, model: nn.Module, meta: dict, device: str | torch.device = "cpu") -> bool:
    """Trace ``model`` (the checkpoint at ``path``'s, built from it, with its checked ``meta``) and keep it in
    the cache for :func:`open_model`; False when it could not be traced faithfully or written (no cache)."""
    key = cache_key(path, device)
    if key is None or isinstance(model, CompiledSegmenter):
        return False
    size = int(meta["img_size"])
    spec = getattr(model, "spec", None)
    in_channels = 3 if spec is None else spec.in_channels
    generator = torch.Generator().manual_seed(0)
    example = torch.rand(1, 1, size, size, generator=generator).to(device)
    probe = torch.rand(2, 1, size, size, generator=generator).to(device)  # another batch size than the trace's
    try:
        with warnings.catch_warnings(), torch.no_grad():
            warnings.simplefilter("ignore")  # the tracer's notes on shape checks, TorchScript's deprecation
            traced = torch.jit.trace(model.eval(), example, check_trace=False)
            compiled = CompiledSegmenter(traced, checkpoint_labels(Path(path), meta), in_channels)
            if not torch.allclose(compiled(probe), model(probe), rtol=TRACE_TOLERANCE, atol=TRACE_TOLERANCE):
                return False  # the trace baked in something that depends on the input: never used
            buffer = io.BytesIO()
            payload = {"key": key, "meta": meta, "in_channels": in_channels}
            torch.jit.save(traced, buffer, _extra_files={"segadv.json": json.dumps(payload)})
    except Exception:  # noqa: BLE001  a network TorchScript cannot trace: it is built from the file each time
        return False
    return _write(entry_path(key, ".pt"), buffer.getvalue())


def _write(entry: Path, data: bytes) -> bool:
    from core.errors import SegadvError
    from core.files import write_bytes

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(entry, data)
    except (OSError, SegadvError):  # a full disk, a read-only cache folder: no cache
        return False
    _prune(entry.parent, entry.suffix)
    return True


def _touch(entry: Path) -> None:
    """Mark ``entry`` used now, so pruning keeps it."""
    try:
        os.utime(entry)
    except OSError:
        pass


def _prune(folder: Path, suffix: str) -> None:
    """Keep the ``KEEP[suffix]`` most recently used entries: a checkpoint rewritten by training leaves its old ones."""
    try:
        entries = sorted(folder.glob(f"*{suffix}"), key=lambda path: path.stat().st_mtime_ns, reverse=True)
    except OSError:  # another process pruned it first
        return
    for old in entries[KEEP[suffix] :]:
        _remove(old)


def _remove(entry: Path) -> None:
    try:
        entry.unlink()
    except OSError:
        pass
