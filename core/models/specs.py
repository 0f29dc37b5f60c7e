"""Networks beyond the registry's named models: ``smp:ARCH:ENCODER`` and ``monai:NAME``, their keyword
arguments (``model_kwargs``, from a small JSON or TOML spec file or a checkpoint's metadata), checked before
anything is built from them, and the slice sizes each network takes.

- ``smp:ARCH:ENCODER``: any segmentation-models-pytorch architecture (``Unet``, ``FPN``, ...) and encoder
  (smp's own, e.g. ``resnet18``, or a timm one as ``tu-NAME``), e.g. ``smp:Unet:resnet18``. Its classes are
  the label set's channels and it takes the grey slice copied to 3 channels, as the paper's models
  (``core.models.registry.GrayscaleSegmenter``). ``model_kwargs`` go to the architecture (e.g.
  ``decoder_channels``).
- ``monai:NAME``: one of MONAI's 2-D networks in ``MONAI_NETWORKS``; segadv sets ``spatial_dims=2``,
  ``in_channels=1`` (the slice itself, no copies, no normalisation) and ``out_channels`` = the label set's
  channels; ``model_kwargs`` give the rest, over the defaults below, so ``monai:UNet`` works without a file:

  - ``UNet``: channels [16, 32, 64, 128], strides [2, 2, 2], num_res_units 2 (slices a multiple of the
    strides' product, 8);
  - ``AttentionUnet``: channels [16, 32, 64, 128], strides [2, 2, 2] (a multiple of 8);
  - ``SwinUNETR``: feature_size 24, depths [2, 2, 2, 2], num_heads [3, 6, 12, 24], patch_size 2 (MONAI
    asks for a multiple of patch_size ** 5, 32, and
    its deepest instance norm for 2 x 2 pixels there: at least 64);
  - ``DynUNet``: kernel_size [3, 3, 3, 3], strides [1, 2, 2, 2], upsample_kernel_size the strides after the
    first, filters [16, 32, 64, 128] (a multiple of the strides' product, 8).

A checkpoint records the name and the whole ``model_kwargs`` (defaults included), so it rebuilds the same
network whatever later defaults say. Values are JSON scalars (bounded numbers, short strings, booleans,
null) or short lists of whole numbers: enough for every size and switch of these networks, and nothing a
file could turn into gigabytes or code.
"""

from __future__ import annotations

import inspect
import json
import math
import os
import re
import sys
from pathlib import Path

from core.errors import SegadvError

SMP_PREFIX, MONAI_PREFIX = "smp:", "monai:"
MAX_KWARGS = 32
MAX_KWARG_INT = 1024  # the largest whole number a keyword takes (channels, sizes); far above a 2-D net's
MAX_KWARG_LIST = 8  # the longest list (levels of a U-Net)
MAX_KWARG_STR = 40
MAX_SPEC_BYTES = 64 << 10
_KWARG_NAME = re.compile(r"[a-z_][a-z0-9_]{0,39}")
_NAME_PART = re.compile(r"[A-Za-z0-9_.\-]{1,80}")

# What segadv sets itself, from the label set and the slice: a spec file may not.
_SMP_SET_BY_SEGADV = ("encoder_name", "encoder_weights", "in_channels", "classes", "activation", "aux_params")
_MONAI_SET_BY_SEGADV = ("spatial_dims", "in_channels", "out_channels")
# Keywords that change what the forward returns (a list of outputs): segadv scores one output.
_MONAI_REFUSED = {"deep_supervision": "segadv trains and attacks the final output only"}

MONAI_NETWORKS: dict[str, dict] = {
    "UNet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2},
    "AttentionUnet": {"channels": [16, 32, 64, 128], "strides": [2, 2, 2]},
    "SwinUNETR": {"feature_size": 24, "depths": [2, 2, 2, 2], "num_heads": [3, 6, 12, 24], "patch_size": 2},
    "DynUNet": {"kernel_size": [3, 3, 3, 3], "strides": [1, 2, 2, 2], "filters": [16, 32, 64, 128]},
}


class ModelSpecError(SegadvError, ValueError):
    """A network name, spec file or keyword argument segadv cannot build; the message names it."""


def is_library_name(name: str) -> bool:
    """``smp:...`` or ``monai:...``: a network named by its library rather than by the registry."""
    return isinstance(name, str) and name.startswith((SMP_PREFIX, MONAI_PREFIX))


def split_name(name: str) -> tuple[str, str, str]:
    """(library, architecture, encoder) of ``smp:ARCH:ENCODER`` or ``monai:NAME`` (encoder ""), each checked:
    a ``ModelSpecError`` that lists the choices for an unknown one."""
    library, _, rest = name.partition(":")
    parts = rest.split(":")
    if library == "smp":
        if len(parts) != 2 or not all(_NAME_PART.fullmatch(part) for part in parts):
            raise ModelSpecError(f"model {name!r}: expected smp:ARCH:ENCODER, e.g. smp:Unet:resnet18")
        arch, encoder = parts
        smp_architecture(arch)
        _check_smp_encoder(encoder)
        return "smp", arch, encoder
    if library == "monai":
        if len(parts) != 1 or parts[0] not in MONAI_NETWORKS:
            raise ModelSpecError(f"model {name!r}: unknown MONAI network; choose from {', '.join(MONAI_NETWORKS)}")
        return "monai", parts[0], ""
    raise ModelSpecError(f"model {name!r}: expected smp:ARCH:ENCODER or monai:NAME")


def smp_architecture(arch: str):
    """smp's class for ``arch`` (its class name, as smp spells it: ``Unet``, ``FPN``, ``DeepLabV3Plus``)."""
    import segmentation_models_pytorch as smp

    classes = {cls.__name__: cls for cls in smp.MODEL_ARCHITECTURES_MAPPING.values()}
    if arch not in classes:
        raise ModelSpecError(f"unknown smp architecture {arch!r}; choose from {', '.join(classes)}")
    return classes[arch]


def _check_smp_encoder(encoder: str) -> None:
    import segmentation_models_pytorch as smp

    if encoder.startswith("tu-"):
        import timm

        if not timm.is_model(encoder[3:]):
            raise ModelSpecError(f"unknown timm encoder {encoder!r}: timm has no model {encoder[3:]!r}")
        return
    names = smp.encoders.get_encoder_names()
    if encoder not in names:
        raise ModelSpecError(
            f"unknown smp encoder {encoder!r}; choose from {', '.join(names)}, or tu-NAME for a timm model"
        )


def check_model_kwargs(name: str, kwargs: object, where: str = "model_kwargs") -> dict:
    """``kwargs`` for network ``name`` when every key is a keyword of its constructor that segadv does not
    set itself and every value is bounded plain data (see the module doc); with the MONAI defaults filled
    in. A ``ModelSpecError`` starting with ``where`` and naming the key otherwise."""
    library, arch, _ = split_name(name)
    if not isinstance(kwargs, dict):
        raise ModelSpecError(f"{where}: expected an object of keyword arguments, not {type(kwargs).__name__}")
    if len(kwargs) > MAX_KWARGS:
        raise ModelSpecError(f"{where}: {len(kwargs)} keyword arguments; segadv reads at most {MAX_KWARGS}")
    set_by_segadv: tuple[str, ...]
    if library == "smp":
        accepted = set(inspect.signature(smp_architecture(arch)).parameters) - set(_SMP_SET_BY_SEGADV)
        set_by_segadv = _SMP_SET_BY_SEGADV
    else:
        from monai.networks import nets

        accepted = set(inspect.signature(getattr(nets, arch)).parameters) - set(_MONAI_SET_BY_SEGADV)
        set_by_segadv = _MONAI_SET_BY_SEGADV
    accepted -= {"self", "kwargs"}
    checked = {}
    for key, value in kwargs.items():
        shown = key if isinstance(key, str) and _KWARG_NAME.fullmatch(key) else repr(key)[:60]
        if key in set_by_segadv:
            raise ModelSpecError(f"{where}.{shown}: segadv sets it (from the label set and the slice)")
        if library == "monai" and key in _MONAI_REFUSED and value:
            raise ModelSpecError(f"{where}.{shown} = {value!r}: not supported ({_MONAI_REFUSED[key]})")
        if key not in accepted:
            raise ModelSpecError(f"{where}.{shown}: not a keyword of {name}; choose from {', '.join(sorted(accepted))}")
        if not _plain_value(value):
            raise ModelSpecError(
                f"{where}.{shown} = {repr(value)[:60]}: expected a number (whole numbers up to "
                f"{MAX_KWARG_INT}), a string of up to {MAX_KWARG_STR} characters, true/false, null, "
                f"or a list of up to {MAX_KWARG_LIST} whole numbers from 0 to {MAX_KWARG_INT}"
            )
        checked[key] = list(value) if isinstance(value, (list, tuple)) else value
    if library == "monai":
        defaults = {
            key: list(value) if isinstance(value, list) else value for key, value in MONAI_NETWORKS[arch].items()
        }
        checked = {**defaults, **checked}
        if arch == "DynUNet" and "upsample_kernel_size" not in checked and isinstance(checked["strides"], list):
            checked["upsample_kernel_size"] = checked["strides"][1:]
    return checked


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _plain_value(value: object) -> bool:
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, int):
        return abs(value) <= MAX_KWARG_INT
    if isinstance(value, float):
        return math.isfinite(value)
    if isinstance(value, str):
        return len(value) <= MAX_KWARG_STR and value.isprintable()
    if isinstance(value, (list, tuple)):
        return len(value) <= MAX_KWARG_LIST and all(_is_int(item) and 0 <= item <= MAX_KWARG_INT for item in value)
    return False


def read_model_spec(path: str | os.PathLike) -> dict:
    """The keyword arguments in a spec file: one JSON object (``.json``) or TOML table (``.toml``) of
    ``keyword = value``; checked against the network by ``check_model_kwargs``."""
    path = Path(path)
    if path.suffix not in (".json", ".toml"):
        raise ModelSpecError(f"{path}: a model spec is a .json or .toml file")
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ModelSpecError(f"{path}: cannot read it ({exc.strerror or exc})") from None
    if len(data) > MAX_SPEC_BYTES:
        raise ModelSpecError(f"{path}: {len(data)} bytes; a model spec is at most {MAX_SPEC_BYTES}")
    if sys.version_info >= (3, 11):
        import tomllib
    else:  # the same parser, before it joined the standard library
        import tomli as tomllib
    try:
        text = data.decode("utf-8")
        value = tomllib.loads(text) if path.suffix == ".toml" else json.loads(text)
    except (ValueError, RecursionError) as exc:  # JSONDecodeError, TOMLDecodeError, UnicodeDecodeError
        raise ModelSpecError(f"{path}: not {path.suffix[1:].upper()} ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(value, dict):
        raise ModelSpecError(f"{path}: expected an object of keyword arguments, not {type(value).__name__}")
    return value


def input_sizes(name: str, kwargs: dict) -> tuple[int, int]:
    """(multiple, smallest): a slice size network ``name`` with (checked) ``kwargs`` takes is a multiple of
    the first and at least the second."""
    library, arch, _ = split_name(name)
    if library == "smp":
        cls = smp_architecture(arch)
        if not cls.requires_divisible_input_shape:
            return 1, 1
        parameter = inspect.signature(cls).parameters.get("encoder_depth")
        multiple = 2 ** int(kwargs.get("encoder_depth", parameter.default if parameter is not None else 5))
        return multiple, multiple
    if arch == "SwinUNETR":
        # Its deepest map is 1 / patch_size ** 5 of the slice, and its instance norm needs 2 x 2 of it there.
        multiple = int(kwargs["patch_size"]) ** 5
        return multiple, 2 * multiple
    strides = kwargs["strides"]  # each level downsamples by its stride
    multiple = math.prod(strides) if isinstance(strides, list) else 1
    return multiple, multiple
