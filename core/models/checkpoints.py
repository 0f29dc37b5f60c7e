"""Safe, self-describing checkpoints: safetensors weights with JSON metadata, written atomically (``core.files``).

Our own format is a safetensors file holding the plain smp model's state dict (so smp can read it
directly) and, in the header, each metadata field as a JSON string. Foreign ``.pt`` / ``.pth`` /
``.bin`` state dicts (the paper's ``torch.save(model.state_dict())``, Kaggle notebooks) load only through
``torch.load(weights_only=True)``: a pickle that would run code is refused before anything runs.

Files come from other people, so reading is bounded and checked: the header's size, its JSON's size and
depth, every tensor entry, and every metadata value (``check_checkpoint_meta``, ``check_universal_meta``)
before anything is built or allocated from it; a bad value is a ``CheckpointError`` naming the file, the
key and the value.

Training state for ``--resume`` (optimizer, scheduler, RNG) lives in a separate ``*.resume.pt`` of
tensors and primitives only, also read with ``weights_only=True``.
"""

from __future__ import annotations

import json
import math
import os
import pickle
import re
import struct
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import TypeGuard

import torch
from safetensors import SafetensorError
from safetensors.torch import load as safetensors_load
from safetensors.torch import save as safetensors_save

import core
from core.errors import OptionError, SegadvError
from core.files import atomic_write, write_bytes
from core.labels import UW_MADISON, LabelSet, LabelSetError, is_label_name, label_set_from_meta
from core.models.registry import (
    NORMALISATIONS,
    REGISTRY,
    GrayscaleSegmenter,
    UnknownModelError,
    build_model,
    count_parameters,
    model_spec,
)
from core.models.specs import ModelSpecError, input_sizes, is_library_name, smp_architecture

FORMAT = "segadv-checkpoint/1"
UNIVERSAL_FORMAT = "segadv-universal/1"  # a universal perturbation (core.attacks.universal), the other segadv file
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
    meta = {
        "format": FORMAT,
        "model": spec.name,
        "arch": spec.arch,
        "encoder": spec.encoder,
        "title": spec.title,
        "params": count_parameters(model),
        "in_channels": 1,
        "classes": list(model.labels.names),
        # The label set (names, titles, colours) and output kind; absent before segadv 0.x wrote it: UW-Madison.
        "labels": model.labels.to_meta(),
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
        # Adversarial training's recipe and checks (core.training.adversarial); None: trained plainly.
        "defence": dict(defence) if defence is not None else None,
    }
    if is_library_name(spec.name):  # smp:/monai: networks: the keyword arguments that rebuild exactly this one
        meta["model_kwargs"] = spec.model_kwargs
    return meta


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
    problem = img_size_problem(model.spec.name, img_size, model.spec.model_kwargs)
    if problem:  # never write a file that the reader would refuse
        raise OptionError(f"image size {img_size}: {problem}")
    meta = checkpoint_meta(
        model,
        img_size=img_size,
        train_args=train_args,
        epoch=epoch,
        val_dsc=val_dsc,
        data_fingerprint=data_fingerprint,
        dtype=dtype,
        defence=defence,
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
    ``format`` says which), read from the header alone, every value checked for its kind of file."""
    path = Path(path)
    _, meta = read_safetensors(path)
    if meta is None:
        raise _bare_safetensors(path)
    (check_universal_meta if meta["format"] == UNIVERSAL_FORMAT else check_checkpoint_meta)(path, meta)
    return meta


def _bare_safetensors(path: Path) -> CheckpointError:
    return CheckpointError(
        f"{path}: a safetensors file without segadv metadata; import bare weights with "
        f"`segadv import-checkpoint {path} --model NAME OUT`"
    )


def read_checkpoint_meta(path: str | os.PathLike) -> dict:
    """The metadata of one of our checkpoints, read from the header alone (no weights are loaded), every
    value checked before anything uses it."""
    path = Path(path)
    _, meta = read_safetensors(path)
    if meta is None:
        raise _bare_safetensors(path)
    if meta["format"] == UNIVERSAL_FORMAT:
        raise CheckpointError(
            f"{path}: a universal perturbation (segadv universal), not a checkpoint; "
            f"apply it with --method universal --delta {path}"
        )
    check_checkpoint_meta(path, meta)
    return meta


# --- hostile files: bounded parsing, every value checked -----------------------------------------
# Checkpoints and deltas come from colleagues' folders and downloads: nothing a file says is used, and
# no allocation is made for it, before it is checked. The bounds sit far above any real file: the
# bundled checkpoints' headers are 40 KB, their longest metadata value (train_args) under 1 KB, and their
# deepest nesting 3 (defence -> check -> value).
MAX_HEADER_BYTES = 16 << 20
MAX_META_BYTES = 1 << 20  # one metadata value's JSON text
MAX_JSON_DEPTH = 16
MAX_IMG_SIZE = 4096  # a 4096 x 4096 float32 slice is 64 MB, a batch of 16 a GB before any activation
_SHOW_CHARS = 60


def parse_json(text: str | bytes, what: str, *, max_bytes: int = MAX_META_BYTES) -> object:
    """``json.loads`` of text from a file, bounded in size and depth: a ``CheckpointError`` starting with
    ``what`` for text that is too long, nested too deep (a nesting bomb) or not JSON."""
    if len(text) > max_bytes:
        raise CheckpointError(f"{what} is {len(text)} bytes of JSON; segadv reads at most {max_bytes}")
    try:
        value = json.loads(text)
    except RecursionError:  # the C scanner stops at the interpreter's recursion limit: far deeper than ours
        raise CheckpointError(f"{what} is JSON nested more than {MAX_JSON_DEPTH} deep") from None
    except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError, an integer of more than 4300 digits
        raise CheckpointError(f"{what} is not JSON ({_one_line(exc)})") from None
    if _json_depth(value) > MAX_JSON_DEPTH:
        raise CheckpointError(f"{what} is JSON nested more than {MAX_JSON_DEPTH} deep")
    return value


def _json_depth(value: object) -> int:
    """How many lists / objects deep ``value`` nests (iterative: a deep value must not recurse here)."""
    deepest, stack = 0, [(value, 1)]
    while stack:
        item, depth = stack.pop()
        if isinstance(item, (dict, list)):
            deepest = max(deepest, depth)
            if deepest > MAX_JSON_DEPTH:
                break
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))
    return deepest


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 200 else text[:200] + "..."


def _shown(value: object) -> str:
    text = repr(value)
    return text if len(text) <= _SHOW_CHARS else f"{text[:_SHOW_CHARS]}... ({len(text)} characters)"


def _key(key: object) -> str:
    """A key from a file as a message shows it: as it is when it is short and printable, else quoted and cut."""
    return key if isinstance(key, str) and key.isprintable() and len(key) <= 200 else _shown(key)


def read_safetensors(path: str | os.PathLike) -> tuple[dict[str, dict], dict | None]:
    """A safetensors file's tensor entries (name -> dtype, shape, data_offsets) and its segadv metadata,
    each value parsed as bounded JSON (``parse_json``; None when there is no ``format`` entry), from the
    header alone. What the metadata says is checked by ``check_checkpoint_meta`` / ``check_universal_meta``."""
    path = Path(path)
    header = _read_safetensors_header(path)
    raw = header.pop("__metadata__", None) or {}
    if "format" not in raw:
        return header, None
    meta = {key: parse_json(value, f"{path}: metadata {_key(key)}") for key, value in raw.items()}
    if meta["format"] not in (FORMAT, UNIVERSAL_FORMAT):
        raise CheckpointError(
            f"{path}: metadata format = {_shown(meta['format'])}: not a file this segadv reads "
            f"({FORMAT} or {UNIVERSAL_FORMAT}; a newer segadv may read it)"
        )
    return header, meta


def _read_safetensors_header(path: Path) -> dict:
    """Parse and check the header; catches truncated files and malformed entries before any weight is read."""
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
            raise CheckpointError(
                f"{path}: not a safetensors file or truncated (header of {header_len} bytes, file of {size})"
            )
        if header_len > MAX_HEADER_BYTES:
            raise CheckpointError(
                f"{path}: a header of {header_len} bytes; segadv reads headers of at most {MAX_HEADER_BYTES}"
            )
        header = parse_json(
            handle.read(header_len), f"{path}: not a safetensors file: its header", max_bytes=MAX_HEADER_BYTES
        )
    if not isinstance(header, dict):
        raise CheckpointError(f"{path}: not a safetensors file (its header is not a JSON object)")
    data_end = 0
    for key, entry in header.items():
        if key == "__metadata__":
            if not isinstance(entry, dict) or not all(isinstance(value, str) for value in entry.values()):
                raise CheckpointError(f"{path}: __metadata__ = {_shown(entry)}: not a map of strings to strings")
            continue
        offsets = entry.get("data_offsets") if isinstance(entry, dict) else None
        if not (
            _is_ints(offsets)
            and len(offsets) == 2
            and 0 <= offsets[0] <= offsets[1]
            and isinstance(entry.get("dtype"), str)
            and _is_ints(entry.get("shape"))
            and all(extent >= 0 for extent in entry["shape"])
        ):
            raise CheckpointError(
                f"{path}: tensor {_shown(key)} = {_shown(entry)}: not a safetensors entry "
                f"(dtype, shape, data_offsets [begin, end])"
            )
        data_end = max(data_end, offsets[1])
    if 8 + header_len + data_end != size:
        raise CheckpointError(
            f"{path}: truncated or corrupt ({size} bytes, the header promises {8 + header_len + data_end})"
        )
    return header


def _is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_ints(value: object) -> TypeGuard[list[int]]:
    return isinstance(value, list) and all(_is_int(item) for item in value)


def _is_number(value: object) -> TypeGuard[int | float]:
    return _is_int(value) or (isinstance(value, float) and math.isfinite(value))


def _is_str(value: object) -> bool:
    return isinstance(value, str)


def _optional(check):
    return lambda value: value is None or check(value)


def _is_count(value: object) -> bool:
    return _is_int(value) and value >= 0


def _is_dsc(value: object) -> bool:
    return _is_number(value) and 0 <= value <= 1


def _is_training_args(value: object) -> bool:
    """Training arguments as ``TrainConfig.as_args`` writes them: names to strings, numbers, booleans, null."""
    return isinstance(value, dict) and all(
        item is None or isinstance(item, (str, bool)) or _is_number(item) for item in value.values()
    )


def _is_label_list(value: object) -> bool:
    """Distinct label names (the model that applies the delta checks they are its own)."""
    return isinstance(value, list) and all(map(is_label_name, value)) and 0 < len(value) == len(set(value)) <= 64


def img_size_problem(model_name: str, img_size: object, model_kwargs: dict | None = None) -> str | None:
    """Why ``img_size`` is not a slice size the model ``model_name`` takes (None: it is one).

    smp's architectures say themselves whether they need a size divisible by the encoder's output stride
    (2 ** depth: UnetPlusPlus and FPN do, Unet pads inside); MONAI networks need a multiple of their
    strides' product (``core.models.specs.input_sizes``); the upper bound keeps a file from commanding
    gigabytes per slice. A library network's ``model_kwargs`` must have been checked (``model_spec``)."""
    if is_library_name(model_name):
        spec = model_spec(model_name, model_kwargs)
        multiple, smallest = input_sizes(model_name, spec.kwargs)
        if _is_int(img_size) and smallest <= img_size <= MAX_IMG_SIZE and img_size % multiple == 0:
            return None
        whole = f"a multiple of {multiple}" if multiple > 1 else "a whole number of pixels"
        return f"expected {whole} from {smallest} to {MAX_IMG_SIZE} (model {model_name!r})"
    spec = REGISTRY[model_name]
    divisible = smp_architecture(spec.arch).requires_divisible_input_shape
    stride = 2 ** spec.kwargs.get("encoder_depth", 5) if divisible else 1
    if _is_int(img_size) and stride <= img_size <= MAX_IMG_SIZE and img_size % stride == 0:
        return None
    whole = f"a multiple of {stride}" if stride > 1 else "a whole number of pixels"
    return f"expected {whole} from {stride} to {MAX_IMG_SIZE} (model {model_name!r}, smp {spec.arch})"


_FieldCheck = tuple[Callable[[object], bool], str]

# key -> (check, what is expected): every value a segadv file's metadata may hold. Keys not listed are
# kept unread (a newer segadv may add some); keys listed may be absent unless required.
_DEFENCE_CHECK_FIELDS: dict[str, _FieldCheck] = {
    "eps": (_is_number, "a number"),
    "slices": (_is_count, "a count"),
    "pgd_steps": (_is_count, "a count"),
    "clean_dsc": (_is_dsc, "a DSC from 0 to 1"),
    "fgsm_dsc": (_is_dsc, "a DSC from 0 to 1"),
    "pgd_dsc": (_is_dsc, "a DSC from 0 to 1"),
    "collapsed": (lambda value: isinstance(value, bool), "true or false"),
}
_DEFENCE_FIELDS: dict[str, _FieldCheck] = {
    "method": (_is_str, "a string"),
    "loss": (_is_str, "a string"),
    "eps": (_is_number, "a number"),
    "steps": (_is_count, "a count"),
    "step_size": (_is_number, "a number"),
    "ratio": (_is_number, "a number"),
    "warmup_epochs": (_is_number, "a number"),
    "check": (_optional(lambda value: isinstance(value, dict)), "an object or null"),
    "collapsed_epochs": (lambda value: _is_ints(value), "a list of epochs"),
}
_CHECKPOINT_FIELDS: dict[str, _FieldCheck] = {
    "model": (
        lambda value: isinstance(value, str) and (value in REGISTRY or is_library_name(value)),
        f"a segadv model ({', '.join(REGISTRY)}), smp:ARCH:ENCODER or monai:NAME",
    ),
    # Checked against the network's constructor: core.models.specs.check_model_kwargs.
    "model_kwargs": (lambda value: isinstance(value, dict), "an object of keyword arguments"),
    "arch": (_is_str, "a string"),
    "encoder": (_is_str, "a string"),
    "title": (_is_str, "a string"),
    "params": (_is_count, "a parameter count"),
    "in_channels": (lambda value: _is_int(value) and value == 1, "1 (segadv's models take one grey channel)"),
    "classes": (
        lambda value: isinstance(value, list) and all(isinstance(name, str) for name in value),
        "a list of label names",
    ),  # and the label set's names: checkpoint_labels
    "img_size": (_is_int, "a whole number of pixels"),  # and what the model takes: img_size_problem
    "normalisation": (
        lambda value: isinstance(value, str) and value in NORMALISATIONS,
        f"one of {', '.join(NORMALISATIONS)}",
    ),
    "input_transposed": (lambda value: isinstance(value, bool), "true or false"),
    "train_args": (_optional(_is_training_args), "an object of training arguments (strings, numbers, booleans, null)"),
    "epoch": (_optional(_is_count), "an epoch number or null"),
    "val_dsc": (
        _optional(lambda value: isinstance(value, dict) and all(map(_optional(_is_dsc), value.values()))),
        "an object of DSC values from 0 to 1",
    ),
    "data_fingerprint": (_optional(_is_str), "a string or null"),
    "segadv_version": (_is_str, "a version string"),
    "dtype": (lambda value: isinstance(value, str) and value in STORAGE_DTYPES, f"one of {', '.join(STORAGE_DTYPES)}"),
    "defence": (_optional(lambda value: isinstance(value, dict)), "an object or null"),
}
_UNIVERSAL_FIELDS: dict[str, _FieldCheck] = {
    "eps": (lambda value: _is_number(value) and 0 <= value <= 1, "a number from 0 to 1"),
    "organs": (_is_label_list, "a list of distinct label names"),
    "img_size": (
        lambda value: _is_int(value) and 1 <= value <= MAX_IMG_SIZE,
        f"a whole number of pixels from 1 to {MAX_IMG_SIZE}",
    ),
    "epochs": (_is_count, "a count"),
    "steps": (_is_count, "a count"),
    "batch_size": (_is_count, "a count"),
    "step_size": (_is_number, "a number"),
    "keep_weight": (_is_number, "a number"),
    "seed": (_is_int, "an integer"),
    "slices": (_is_count, "a count"),
    "seconds": (_is_number, "a number"),
    "loss_history": (lambda value: isinstance(value, list) and all(map(_is_number, value)), "a list of numbers"),
    "checkpoint": (_optional(_is_str), "a string or null"),
    "model": (_optional(_is_str), "a string or null"),
    "data": (_optional(_is_str), "a string or null"),
    "data_fingerprint": (_optional(_is_str), "a string or null"),
}


def check_checkpoint_meta(path: Path, meta: dict) -> None:
    """A ``CheckpointError`` naming the file, the key and the value for the first value of a checkpoint's
    metadata that is missing or not what segadv expects there."""
    _check_fields(path, meta, _CHECKPOINT_FIELDS, "", required=("model", "img_size", "normalisation", "classes"))
    spec = checkpoint_spec(path, meta)
    for key, expected in (("arch", spec.arch), ("encoder", spec.encoder)):
        if key in meta and meta[key] != expected:
            raise CheckpointError(
                f"{path}: metadata {key} = {_shown(meta[key])}: model {meta['model']!r} is {expected}"
            )
    problem = img_size_problem(meta["model"], meta["img_size"], spec.model_kwargs)
    if problem:
        raise CheckpointError(f"{path}: metadata img_size = {_shown(meta['img_size'])}: {problem}")
    labels = checkpoint_labels(path, meta)
    if meta["classes"] != list(labels.names):
        raise CheckpointError(
            f"{path}: metadata classes = {_shown(meta['classes'])}: "
            f"expected {list(labels.names)} (its label set's names)"
        )
    if meta.get("defence"):
        _check_fields(path, meta["defence"], _DEFENCE_FIELDS, "defence.", required=_DEFENCE_FIELDS)
        if meta["defence"]["check"]:
            _check_fields(
                path, meta["defence"]["check"], _DEFENCE_CHECK_FIELDS, "defence.check.", required=_DEFENCE_CHECK_FIELDS
            )


def checkpoint_spec(path: Path, meta: dict):
    """The network a checkpoint's metadata names (``model``, and ``model_kwargs`` for smp: / monai: ones),
    checked: a ``CheckpointError`` naming the key and what is wrong with it."""
    if not is_library_name(meta["model"]):
        if meta.get("model_kwargs"):
            raise CheckpointError(
                f"{path}: metadata model_kwargs = {_shown(meta['model_kwargs'])}: registry model "
                f"{meta['model']!r} takes none"
            )
        return REGISTRY[meta["model"]]
    try:
        return model_spec(meta["model"], _checked_model_kwargs(path, meta))
    except (ModelSpecError, UnknownModelError) as exc:
        raise CheckpointError(f"{path}: metadata model = {_shown(meta['model'])}: {exc}") from None


def _checked_model_kwargs(path: Path, meta: dict) -> dict:
    from core.models.specs import check_model_kwargs

    try:
        return check_model_kwargs(meta["model"], meta.get("model_kwargs", {}), f"{path}: metadata model_kwargs")
    except ModelSpecError as exc:
        if str(exc).startswith(f"{path}:"):
            raise CheckpointError(str(exc)) from None
        raise CheckpointError(f"{path}: metadata model = {_shown(meta['model'])}: {exc}") from None


def checkpoint_labels(path: Path, meta: dict) -> LabelSet:
    """The label set a checkpoint's metadata records; UW-Madison's organs (sigmoid) for a checkpoint written
    before segadv recorded label sets."""
    if "labels" not in meta:
        return UW_MADISON
    try:
        return label_set_from_meta(meta["labels"], f"{path}: metadata labels")
    except LabelSetError as exc:
        raise CheckpointError(str(exc)) from None


def check_universal_meta(path: Path, meta: dict) -> None:
    """The same for a universal perturbation's metadata."""
    _check_fields(path, meta, _UNIVERSAL_FIELDS, "", required=("eps", "organs", "img_size"))


def _check_fields(path: Path, values: dict, fields: dict, prefix: str, required) -> None:
    missing = [key for key in required if key not in values]
    if missing:
        raise CheckpointError(
            f"{path}: its metadata{' ' + prefix.rstrip('.') if prefix else ''} lacks {', '.join(missing)}"
        )
    for key, (check, expected) in fields.items():
        if key in values and not check(values[key]):
            raise CheckpointError(f"{path}: metadata {prefix}{_key(key)} = {_shown(values[key])}: expected {expected}")


def load_checkpoint(
    path: str | os.PathLike,
    device: str | torch.device = "cpu",
    *,
    model_name: str | None = None,
    labels: LabelSet = UW_MADISON,
    model_kwargs: dict | None = None,
) -> tuple[GrayscaleSegmenter, dict]:
    """Load a checkpoint as ``(model, meta)``, the model in eval mode on ``device`` in fp32.

    Our ``.safetensors`` files describe themselves; foreign ``.pt`` / ``.pth`` / ``.bin`` state dicts need
    ``model_name`` (a registry name, ``smp:ARCH:ENCODER`` or ``monai:NAME`` with ``model_kwargs``), are for
    ``labels`` and are read with ``torch.load(weights_only=True)``.
    """
    path = Path(path)
    if path.suffix in FOREIGN_SUFFIXES:
        if model_name is None:
            raise CheckpointError(
                f"{path}: foreign weights need a model name (--model {{{','.join(REGISTRY)}}}, "
                f"smp:ARCH:ENCODER or monai:NAME)"
            )
        loaded = _torch_load(path, "weights file")
        model = _build(model_name, "none", path, labels, model_kwargs)
        state_dict = _unwrap_state_dict(loaded, path, model.net.state_dict().keys())
        meta = checkpoint_meta(model, img_size=FOREIGN_IMG_SIZE)
        meta["source"] = str(path)
    else:
        meta = read_checkpoint_meta(path)
        if model_name is not None and model_name != meta["model"]:
            raise CheckpointError(f"{path}: holds model {meta['model']!r}, not {model_name!r}")
        if is_library_name(meta["model"]):
            _check_network_fits_file(path, meta)
        try:
            state_dict = safetensors_load(path.read_bytes())
        except (SafetensorError, ValueError, OSError) as exc:
            raise CheckpointError(f"{path}: cannot read its weights ({exc})") from None
        model = _build(
            meta["model"], meta["normalisation"], path, checkpoint_labels(path, meta), meta.get("model_kwargs")
        )
        model.transposed = meta.get("input_transposed", False)  # absent before segadv wrote it: False
    _load_state_dict(model, state_dict, path)
    model.to(device)
    model.eval()
    return model, meta


def _check_network_fits_file(path: Path, meta: dict) -> None:
    """A library network's ``model_kwargs`` within their bounds can still describe gigabytes of weights: the
    network is sized before it is built (on the meta device, where nothing is allocated) and refused when it
    holds more values than the file, whose size bounds what a file can command. SwinUNETR's constructor reads
    a tensor's value, which the meta device cannot give: its size is its transformer blocks' (about
    12 d^2 values a block of width d, the width doubling each stage)."""
    header, _ = read_safetensors(path)
    held = sum(math.prod(entry["shape"]) for entry in header.values())
    spec = checkpoint_spec(path, meta)
    if spec.arch == "SwinUNETR":
        kwargs = spec.kwargs
        needed = sum(
            12 * depth * (kwargs["feature_size"] * 2**stage) ** 2 for stage, depth in enumerate(kwargs["depths"])
        )
    else:
        with torch.device("meta"):
            model = _build(spec.name, meta["normalisation"], path, checkpoint_labels(path, meta), spec.kwargs)
        needed = sum(value.numel() for value in model.net.state_dict().values())
    if needed > held:
        raise CheckpointError(
            f"{path}: metadata model_kwargs = {_shown(meta.get('model_kwargs'))}: describe a network of at least "
            f"{needed} values; the file holds {held}"
        )


def _build(
    model_name: str,
    normalisation: str,
    path: Path,
    labels: LabelSet = UW_MADISON,
    model_kwargs: dict | None = None,
) -> GrayscaleSegmenter:
    try:
        return build_model(
            model_name, encoder_weights=None, normalisation=normalisation, labels=labels, model_kwargs=model_kwargs
        )
    except (UnknownModelError, ValueError) as exc:
        raise CheckpointError(f"{path}: {exc}") from None


# What torch.save writes: a zip archive (since torch 1.6), or a pickle that opens with torch's magic number.
_TORCH_ZIP = b"PK\x03\x04"
_TORCH_LEGACY_MAGIC = (0x1950A86A20F9469CFC6C).to_bytes(10, "little")
_UNSAFE_GLOBAL = re.compile(r"GLOBAL (\S+) was not an allowed global")


def _torch_load(path: Path, what: str) -> object:
    """``torch.load(weights_only=True)`` of a file that torch.save wrote, with the refusals in segadv's words:
    torch's own message advises turning ``weights_only`` off, which segadv never suggests."""
    if not path.is_file():
        raise CheckpointError(f"{path}: no such {what}")
    try:
        with open(path, "rb") as handle:
            head = handle.read(32)
    except OSError as exc:
        raise CheckpointError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if not (head.startswith(_TORCH_ZIP) or (head[:1] == b"\x80" and _TORCH_LEGACY_MAGIC in head)):
        raise CheckpointError(
            f"{path}: not a PyTorch file (torch.save writes a zip archive or a pickle that starts "
            f"with torch's magic number; this file is neither)"
        )
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        # weights_only stops at the first object that is not plain data, before anything runs.
        found = _UNSAFE_GLOBAL.search(str(exc))
        holds = f"a pickled {found[1]}" if found else "pickle instructions beyond tensors and plain data"
        raise CheckpointError(
            f"{path}: refused: it holds {holds}, and segadv loads tensors and plain data only, "
            f"so no code in a file ever runs"
        ) from None
    except Exception as exc:  # torch raises RuntimeError / EOFError / KeyError / zip errors for damaged files
        raise CheckpointError(
            f"{path}: not a readable PyTorch {what} ({type(exc).__name__}: {_one_line(exc)})"
        ) from None


def _unwrap_state_dict(loaded: object, path: Path, expected: Collection[str]) -> dict[str, torch.Tensor]:
    """The model's tensors from the shapes training scripts save: bare, nested, or with prefixes. A prefix
    stops being stripped once the keys are the ``expected`` ones (MONAI's UNet's own keys start "model.")."""
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
            f"{path}: not a state dict: {len(not_tensors)} entries are not tensors "
            f"({', '.join(map(_key, not_tensors[:_SHOW_KEYS]))})"
        )
    state_dict = dict(loaded)
    for prefix in _KEY_PREFIXES:
        if set(state_dict) == set(expected):
            break
        if all(key.startswith(prefix) for key in state_dict):
            state_dict = {key[len(prefix) :]: value for key, value in state_dict.items()}
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
                parts.append(f"{len(keys)} {label} keys: {', '.join(map(_key, keys[:_SHOW_KEYS]))}{more}")
        raise CheckpointError(
            f"{path}: the weights do not fit model {model.spec.name!r} ({model.spec.arch} {model.spec.encoder}): "
            + "; ".join(parts)
        )
    converted = {
        key: value.to(expected[key].dtype) if value.is_floating_point() else value for key, value in state_dict.items()
    }
    model.net.load_state_dict(converted, strict=True)


def import_checkpoint(
    source: str | os.PathLike,
    model_name: str,
    out: str | os.PathLike,
    *,
    img_size: int = FOREIGN_IMG_SIZE,
    transposed: bool = False,
    labels: LabelSet = UW_MADISON,
    model_kwargs: dict | None = None,
) -> Path:
    """Convert foreign weights (``.pt`` / ``.pth`` / ``.bin``) for model ``model_name`` (a registry name, or
    ``smp:`` / ``monai:`` with ``model_kwargs``) scoring ``labels`` to our format; ``transposed``: they were
    trained on transposed slices (the paper's notebook), recorded in the metadata."""
    source = Path(source)
    if source.suffix not in FOREIGN_SUFFIXES:
        raise CheckpointError(f"{source}: expected a {' / '.join(FOREIGN_SUFFIXES)} file of foreign weights")
    model, _ = load_checkpoint(source, model_name=model_name, labels=labels, model_kwargs=model_kwargs)
    model.transposed = bool(transposed)
    return save_checkpoint(
        out, model, img_size=img_size, train_args={"imported_from": source.name, "input_transposed": bool(transposed)}
    )


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
    state = _torch_load(path, "resume file")
    if not isinstance(state, dict) or "model" not in state or "epoch" not in state:
        raise CheckpointError(f"{path}: not a segadv resume file (no model / epoch entries)")
    return state
