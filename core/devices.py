"""The one device rule: ``auto`` (CUDA when available, else the CPU), ``cpu``, ``cuda`` or ``cuda:N``,
checked against the devices that exist, for every command and the explorer."""

from __future__ import annotations

import os

from core.errors import OptionError

DEVICE_HELP = "auto (CUDA when available, else CPU), cpu, cuda or cuda:N"


def resolve_device(requested: str | None = "auto"):
    """The ``torch.device`` for ``requested``; an ``OptionError`` naming the devices that exist when it
    names none of them. Under torchrun a bare ``cuda`` / ``auto`` means this process's own GPU
    (``LOCAL_RANK``, else ``RANK`` modulo the GPU count)."""
    import torch

    text = "auto" if requested is None else str(requested).strip().lower()
    if text == "auto":
        text = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        device = torch.device(text)
    except (RuntimeError, ValueError):
        raise OptionError(f"unknown device {requested!r}; use {DEVICE_HELP}") from None
    if device.type == "cpu":
        return torch.device("cpu")
    if device.type != "cuda":
        raise OptionError(f"device {requested!r} is not supported; use {DEVICE_HELP}")
    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        raise OptionError(f"device {requested!r}: CUDA is not available on this machine (use cpu or auto)")
    if device.index is None:
        device = torch.device("cuda", _process_gpu(count))
    if device.index >= count:
        existing = ", ".join(f"cuda:{i}" for i in range(count))
        raise OptionError(f"device {requested!r} does not exist; this machine has {existing}")
    return device


def _process_gpu(count: int) -> int:
    """This process's GPU under a launcher (torchrun sets LOCAL_RANK; srun and others only RANK)."""
    if "LOCAL_RANK" in os.environ:
        return int(os.environ["LOCAL_RANK"]) % count
    if "RANK" in os.environ:
        return int(os.environ["RANK"]) % count
    import torch

    return torch.cuda.current_device()


def describe_device(device) -> str:
    """``cpu`` or ``cuda:0 (NVIDIA H200)``: what JSON outputs and the explorer's header show."""
    import torch

    device = torch.device(device)
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    return str(device)
