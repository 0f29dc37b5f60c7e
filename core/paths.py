"""Where segadv keeps things: the per-user cache, the state folder (bug reports) and the bundled checkpoints."""

from __future__ import annotations

import os
from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent

DEMO_CHECKPOINT_NAME = "demo_small.safetensors"


def cache_dir() -> Path:
    """Per-user cache folder (``$SEGADV_CACHE``, else ``$XDG_CACHE_HOME/segadv``, else ``~/.cache/segadv``)."""
    override = os.environ.get("SEGADV_CACHE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(base).expanduser() / "segadv"


def bundled_checkpoint_dirs() -> list[Path]:
    """Folders holding the checkpoints that ship with segadv.

    A wheel carries them inside the package (``core/bundled_checkpoints``); an editable install or a
    source checkout has them in the repository's top-level ``checkpoints/``.
    """
    candidates = [_PACKAGE_DIR / "bundled_checkpoints", _PACKAGE_DIR.parent / "checkpoints"]
    return [path for path in candidates if path.is_dir()]


def demo_checkpoint() -> Path:
    """The bundled demo checkpoint (``small`` trained on the demo data)."""
    for folder in bundled_checkpoint_dirs():
        path = folder / DEMO_CHECKPOINT_NAME
        if path.is_file():
            return path
    searched = ", ".join(str(p) for p in bundled_checkpoint_dirs()) or str(_PACKAGE_DIR.parent / "checkpoints")
    raise FileNotFoundError(f"the bundled demo checkpoint {DEMO_CHECKPOINT_NAME} is not in {searched}")


def state_dir() -> Path:
    """Per-user state folder, where bug reports go (``$SEGADV_STATE``, else ``$XDG_STATE_HOME/segadv``,
    else ``~/.local/state/segadv``)."""
    override = os.environ.get("SEGADV_STATE")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_STATE_HOME") or Path.home() / ".local" / "state"
    return Path(base).expanduser() / "segadv"
