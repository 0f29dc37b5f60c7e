"""Safe, self-describing checkpoints: safetensors weights with JSON metadata, written atomically (``core.files``).

Our own format is a safetensors file holding the plain smp model's state dict (so smp can read it
directly) and, in the header, each metadata field as a JSON string. Foreign ``.pt`` / ``.pth`` /
``.bin`` state dicts (the paper's ``torch.save(model.state_dict())``, Kaggle notebooks) load only through
``torch.load(weights_only=True)``: a pickle that would run code is refused before anything runs.

Training state for ``--resume`` (optimizer, scheduler, RNG) lives in a separate ``*.resume.pt`` of
tensors and primitives only, also read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import os
import pickle
import struct
from collections.abc import Mapping
from pathlib import Path

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

import core
from core.errors import OptionError, SegadvError
from core.files import atomic_write, write_bytes
from core.models import REGISTRY, GrayscaleSegmenter, UnknownModelError, build_model, count_parameters
from core.organs import ORGANS

FORMAT = "segadv-checkpoint/1"
UNIVERSAL_FORMAT = "segadv-universal/1"  # a universal perturbation (core.universal), the other segadv file
FOREIGN_SUFFIXES = (".pt", ".pth", ".bin")
STORAGE_DTYPES = {"float32": torch.float32, "float16": torch.float16}
# The paper's models saw 224 x 224 slices with no normalisation; foreign weights default to that.
FOREIGN_IMG_SIZE = 224
# Nested entries under which training scripts commonly keep the weights.
_STATE_DICT_ENTRIES = ("state_dict", "model_state_dict", "model", "net")
# Prefixes added by DataParallel / DDP ("module."), Lightning modules ("model.") and our own wrapper ("net.").
_KEY_PREFIXES = ("module.", "model.", "net.")
_SHOW_KEYS = 5


class CheckpointError(SegadvError, ValueError):
    """A checkpoint that cannot be read or does not fit its model; the message names the file."""


# --- our format -------------------------------------------------------------------------------------


def checkpoint_meta(
    model: GrayscaleSegmenter,
    *,
    img_size: int,
    train_args: Mapping | None = None,
    epoch: int | None = None,
    val_dsc: Mapping[str, float] | None = None,
    data_fingerprint: str | None = None,
    dtype: str = "float32",
    defence: Mapping | None = None,
) -> dict:
    """The metadata that describes ``model``: what it is, how it was trained and how it scored."""
    spec = model.spec
    return {
        "format": FORMAT,
        "model": spec.name,
        "arch": spec.arch,
        "encoder": spec.encoder,
        "title": spec.title,
        "params": count_parameters(model),
        "in_channels": 1,
        "classes": list(ORGANS),
        "img_size": int(img_size),
        "normalisation": model.normalisation,
        # The weights expect transposed slices (the paper's notebook; see GrayscaleSegmenter).
        "input_transposed": model.transposed,
        "train_args": dict(train_args) if train_args is not None else None,
        "epoch": epoch,
        "val_dsc": {key: float(value) for key, value in val_dsc.items()} if val_dsc is not None else None,
        "data_fingerprint": data_fingerprint,
        "segadv_version": core.__version__,
        "dtype": dtype,
        # Adversarial training's recipe and checks (core.adversarial_training); None: trained plainly.
        "defence": dict(defence) if defence is not None else None,
    }


def save_checkpoint(
    path: str | os.PathLike,
    model: GrayscaleSegmenter,
    *,
    img_size: int,
    train_args: Mapping | None = None,
    epoch: int | None = None,
    val_dsc: Mapping[str, float] | None = None,
    data_fingerprint: str | None = None,
    dtype: str | None = None,
    defence: Mapping | None = None,
) -> Path:
    """Write ``model`` and its metadata to ``path`` (safetensors) atomically.

    ``dtype="float16"`` halves the file by storing floating-point weights in fp16; they load back as fp32.
    """
    dtype = dtype or "float32"
    if dtype not in STORAGE_DTYPES:
        raise OptionError(f"unknown storage dtype {dtype!r}; choose from {', '.join(STORAGE_DTYPES)}")
    meta = checkpoint_meta(
        model, img_size=img_size, train_args=train_args, epoch=epoch, val_dsc=val_dsc,
        data_fingerprint=data_fingerprint, dtype=dtype, defence=defence,
    )
    tensors = {}
    for key, value in model.net.state_dict().items():
        value = value.detach().to("cpu")
        if value.is_floating_point():
            value = value.to(STORAGE_DTYPES[dtype])
        # clone(): safetensors refuses tensors that share storage.
        tensors[key] = value.contiguous().clone()
    header = {key: json.dumps(value) for key, value in meta.items()}
    data = safetensors_save(tensors, metadata=header)
    return write_bytes(path, data)


def read_safetensors_meta(path: str | os.PathLike) -> dict:
    """The JSON metadata of a segadv safetensors file (a checkpoint, or a universal perturbation: its
    ``format`` says which), read from the header alone."""
    path = Path(path)
    header, _ = _read_safetensors_header(path)
    raw = header.get("__metadata__") or {}
    if "format" not in raw:
        raise CheckpointError(
            f"{path}: a safetensors file without segadv metadata; import bare weights with "
            f"`segadv import-checkpoint {path} --model NAME OUT`"
        )
    try:
        return {key: json.loads(value) for key, value in raw.items()}
    except (TypeError, json.JSONDecodeError) as exc:
        raise CheckpointError(f"{path}: its metadata is not valid JSON ({exc})") from None


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The metadata of one of our checkpoints, read from the header alone (no weights are loaded)."""
    path = Path(path)
    meta = read_safetensors_meta(path)
    if meta.get("format") == UNIVERSAL_FORMAT:
        raise CheckpointError(f"{path}: a universal perturbation (segadv universal), not a checkpoint; "
                              f"apply it with --method universal --delta {path}")
    missing = [key for key in ("model", "img_size", "normalisation", "classes") if key not in meta]
    if missing:
        raise CheckpointError(f"{path}: its metadata lacks {', '.join(missing)}")
    return meta


def _read_safetensors_header(path: Path) -> tuple[dict, int]:
    """Parse and check the header; catches truncated files before any weight is read."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    size = path.stat().st_size
    try:
        handle = open(path, "rb")
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    with handle:
        prefix = handle.read(8)
        if len(prefix) < 8:
            raise CheckpointError(f"{path}: not a safetensors file (only {size} bytes)")
        (header_len,) = struct.unpack("<Q", prefix)
        if header_len > size - 8:
            raise CheckpointError(f"{path}: not a safetensors file or truncated (header of {header_len} bytes, file of {size})")
        try:
            header = json.loads(handle.read(header_len))
        except (UnicodeDecodeError, json.JSONDecodeError):
            raise CheckpointError(f"{path}: not a safetensors file (its header is not JSON)") from None
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_end = max(
        (entry["data_offsets"][1] for key, entry in header.items() if key != "__metadata__" and isinstance(entry, dict)),
        default=0,
    )
    if 8 + header_len + data_end != size:
        raise CheckpointError(
            f"{path}: truncated or corrupt ({size} bytes, the header promises {8 + header_len + data_end})"
        )
    return header, header_len


def load_checkpoint(
    path: str | os.PathLike, device: str | torch.device = "cpu", *, model_name: str | None = None
) -> tuple[GrayscaleSegmenter, dict]:
    """Load a checkpoint as ``(model, meta)``, the model in eval mode on ``device`` in fp32.

    Our ``.safetensors`` files describe themselves; foreign ``.pt`` / ``.pth`` / ``.bin`` state dicts need
    ``model_name`` (a registry name) and are read with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if path.suffix in FOREIGN_SUFFIXES:
        if model_name is None:
            raise CheckpointError(f"{path}: foreign weights need a model name (--model {{{','.join(REGISTRY)}}})")
        state_dict = _read_foreign_state_dict(path)
        model = _build(model_name, "none", path)
        meta = checkpoint_meta(model, img_size=FOREIGN_IMG_SIZE)
        meta["source"] = str(path)
    else:
        meta = read_checkpoint_meta(path)
        if model_name is not None and model_name != meta["model"]:
            raise CheckpointError(f"{path}: holds model {meta['model']!r}, not {model_name!r}")
        if meta.get("in_channels", 1) != 1 or list(meta["classes"]) != list(ORGANS):
            raise CheckpointError(
                f"{path}: expects {meta.get('in_channels')} input channels and classes {meta['classes']}; "
                f"segadv needs 1 channel and {list(ORGANS)}"
            )
        try:
            state_dict = safetensors_load(path.read_bytes())
        except (SafetensorError, ValueError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot read its weights ({exc})") from None
        model = _build(meta["model"], meta["normalisation"], path)
        model.transposed = bool(meta.get("input_transposed", False))  # absent before segadv wrote it: False
    _load_state_dict(model, state_dict, path)
    model.to(device)
    model.eval()
    return model, meta


def _build(model_name: str, normalisation: str, path: Path) -> GrayscaleSegmenter:
    try:
        return build_model(model_name, encoder_weights=None, normalisation=normalisation)
    except (UnknownModelError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


def _read_foreign_state_dict(path: Path) -> dict[str, torch.Tensor]:
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only stops at the first object that is not plain data, before anything runs.
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise CheckpointError(
            f"{path}: refused: it is a pickle that would build arbitrary objects or run code, and segadv "
            f"loads weights only ({reason})"
        ) from None
    except Exception as exc:  # torch raises RuntimeError / EOFError / zip errors for damaged files
        raise CheckpointError(f"{path}: not a readable PyTorch weights file ({type(exc).__name__}: {exc})") from None
    return _unwrap_state_dict(loaded, path)


def _unwrap_state_dict(loaded: object, path: Path) -> dict[str, torch.Tensor]:
    """The model's tensors from the shapes training scripts save: bare, nested, or with prefixes."""
    if isinstance(loaded, Mapping):
        for entry in _STATE_DICT_ENTRIES:
            if isinstance(loaded.get(entry), Mapping):
                loaded = loaded[entry]
                break
    if not isinstance(loaded, Mapping) or not loaded:
        raise CheckpointError(f"{path}: holds {type(loaded).__name__}, not a state dict of tensors")
    not_tensors = [key for key, value in loaded.items() if not isinstance(value, torch.Tensor)]
    if not_tensors:
        raise CheckpointError(
            f"{path}: not a state dict: {len(not_tensors)} entries are not tensors ({', '.join(map(str, not_tensors[:_SHOW_KEYS]))})"
        )
    state_dict = dict(loaded)
    for prefix in _KEY_PREFIXES:
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix):]: value for key, value in state_dict.items()}
    return state_dict


def _load_state_dict(model: GrayscaleSegmenter, state_dict: Mapping[str, torch.Tensor], path: Path) -> None:
    """Load into ``model.net`` in fp32, or name exactly which keys and shapes do not fit."""
    expected = model.net.state_dict()
    missing = [key for key in expected if key not in state_dict]
    unexpected = [key for key in state_dict if key not in expected]
    wrong_shape = [
        f"{key} {tuple(state_dict[key].shape)} != {tuple(value.shape)}"
        for key, value in expected.items()
        if key in state_dict and state_dict[key].shape != value.shape
    ]
    if missing or unexpected or wrong_shape:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong_shape)):
            if keys:
                more = f", ... ({len(keys) - _SHOW_KEYS} more)" if len(keys) > _SHOW_KEYS else ""
                parts.append(f"{len(keys)} {label} keys: {', '.join(keys[:_SHOW_KEYS])}{more}")
        raise CheckpointError(
            f"{path}: the weights do not fit model {model.spec.name!r} ({model.spec.arch} {model.spec.encoder}): "
            + "; ".join(parts)
        )
    converted = {
        key: value.to(expected[key].dtype) if value.is_floating_point() else value
        for key, value in state_dict.items()
    }
    model.net.load_state_dict(converted, strict=True)


def import_checkpoint(source: str | os.PathLike, model_name: str, out: str | os.PathLike, *, img_size: int = FOREIGN_IMG_SIZE,
                      transposed: bool = False) -> Path:
    """Convert foreign weights (``.pt`` / ``.pth`` / ``.bin``) for registry model ``model_name`` to our format;
    ``transposed``: they were trained on transposed slices (the paper's notebook), recorded in the metadata."""
    source = Path(source)
    if source.suffix not in FOREIGN_SUFFIXES:
        raise CheckpointError(f"{source}: expected a {' / '.join(FOREIGN_SUFFIXES)} file of foreign weights")
    model, _ = load_checkpoint(source, model_name=model_name)
    model.transposed = bool(transposed)
    return save_checkpoint(out, model, img_size=img_size,
                           train_args={"imported_from": source.name, "input_transposed": bool(transposed)})


# --- training state for --resume ------------------------------------------------------------------


def resume_path_for(checkpoint: str | os.PathLike) -> Path:
    """Where training keeps the resumable state of the run whose best checkpoint is ``checkpoint``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(checkpoint.suffix) + ".resume.pt")


def save_training_state(path: str | os.PathLike, state: Mapping) -> Path:
    """Atomically save ``state`` (tensors, numbers, strings, lists, dicts only) for ``--resume``."""
    return atomic_write(path, lambda stream: torch.save(dict(state), stream))


def load_training_state(path: str | os.PathLike) -> dict:
    """Read a ``*.resume.pt`` written by :func:`save_training_state`, refusing anything but plain data."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such resume file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise CheckpointError(f"{path}: refused: it holds objects other than plain training state ({exc})") from None
    except Exception as exc:
        raise CheckpointError(f"{path}: not a readable resume file ({type(exc).__name__}: {exc})") from None
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a segadv resume file (no model / epoch entries)")
    return state
