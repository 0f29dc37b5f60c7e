"""What the explorer can open: the checkpoints found in the folders and files it was given, with their
metadata headers, and the universal perturbations (``segadv universal``) among them; and a checkpoint
once its model is loaded. No Textual and no torch: the scan reads headers only, and the Checkpoints
panel, the Attack panel, the palette and the messages all take these types from here."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from core.models.loaded import LoadedModel

CHECKPOINT_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class CheckpointEntry:
    path: Path
    meta: dict | None  # None when the header cannot be read
    problem: str | None = None
    history: tuple[dict, ...] | None = None  # its training history's epochs (core.training.history), if it has one

    @property
    def summary(self) -> str:
        if self.meta is None:
            return f"✗ {self.problem}"
        meta = self.meta
        params = f"{meta['params'] / 1e6:.2f}M" if isinstance(meta.get("params"), (int, float)) else "?"
        val = meta.get("val_dsc") or {}
        dsc = f"DSC {val['mean']:.3f}" if isinstance(val, dict) and val.get("mean") is not None else "no val DSC"
        return f"{meta.get('model', '?')} · {params} · {meta.get('img_size', '?')}px · {dsc}"

    @property
    def defence(self) -> str | None:
        """How an adversarially trained checkpoint was defended ("FGSM-RS AT eps 0.012"); None: plainly trained."""
        if not self.meta or not self.meta.get("defence"):
            return None
        from core.names import defence_label

        return defence_label(self.meta["defence"])


@dataclass(frozen=True)
class DeltaEntry:
    """A universal perturbation file: the bound it was made with, the organs it erases, its size and the
    checkpoint it was made on (from its header)."""

    path: Path
    eps: float
    organs: tuple[str, ...]
    img_size: int
    checkpoint: str | None

    @property
    def summary(self) -> str:
        made_on = f" · made on {Path(self.checkpoint).stem}" if self.checkpoint else ""
        return f"erases {'+'.join(self.organs)} · eps {self.eps:.3f} · {self.img_size}px{made_on}"


@dataclass(frozen=True)
class Catalog:
    """The checkpoints (readable or not, each with why) and the universal perturbations a scan found."""

    checkpoints: list[CheckpointEntry] = field(default_factory=list)
    deltas: list[DeltaEntry] = field(default_factory=list)


@dataclass(frozen=True)
class LoadedCheckpoint:
    """A checkpoint whose model is loaded: its entry, the model (a ``torch.nn.Module`` in eval mode) and
    its checked metadata. The explorer attacks one and may score the frames on another."""

    entry: CheckpointEntry
    model: Any
    meta: dict

    @property
    def path(self) -> Path:
        return self.entry.path

    @property
    def img_size(self) -> int:
        return int(self.meta["img_size"])

    @property
    def title(self) -> str:
        """The model's name for people: its title, else its registry name, else the file's."""
        return str(self.meta.get("title") or self.meta.get("model") or self.path.stem)

    def as_model(self, label: str) -> LoadedModel:
        """The model as core's comparisons take it, named ``label`` in their rows and columns."""
        return LoadedModel(label, self.model, self.meta)


def scan(folders: list[Path], files: list[Path] = ()) -> Catalog:
    """The checkpoints in ``folders`` (non-recursive) and ``files`` with their metadata headers, and the
    universal perturbations among them."""
    from core.models.checkpoints import FOREIGN_SUFFIXES, UNIVERSAL_FORMAT
    from core.models.compiled import checked_meta
    from core.training.history import read_history

    paths: list[Path] = [Path(f) for f in files]
    for folder in folders:
        paths.extend(sorted(p for p in Path(folder).iterdir() if p.suffix in CHECKPOINT_SUFFIXES))
    catalog, seen = Catalog(), set()
    for path in paths:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        if path.suffix in FOREIGN_SUFFIXES:  # the explorer takes no --model to build them with
            catalog.checkpoints.append(
                CheckpointEntry(
                    path,
                    None,
                    (
                        f"weights without segadv metadata: convert them with "
                        f"`segadv import-checkpoint {path} --model NAME OUT.safetensors`, then open OUT.safetensors"
                    ),
                )
            )
            continue
        try:
            meta = checked_meta(path)  # checked once per file: the checks of a library network import smp
            if meta.get("format") == UNIVERSAL_FORMAT:
                catalog.deltas.append(_delta_entry(path, meta))
                continue
            history = read_history(path)
            # Checked as a checkpoint's by the reader.
            catalog.checkpoints.append(CheckpointEntry(path, meta, history=tuple(history) if history else None))
        except (ValueError, OSError) as exc:
            catalog.checkpoints.append(CheckpointEntry(path, None, str(exc).removeprefix(f"{path}: ")))
    return catalog


def _delta_entry(path: Path, meta: dict) -> DeltaEntry:
    try:
        return DeltaEntry(
            path, float(meta["eps"]), tuple(meta["organs"]), int(meta["img_size"]), meta.get("checkpoint")
        )
    except KeyError as exc:
        raise ValueError(f"a universal perturbation without {exc} in its header") from None
    except (TypeError, ValueError):
        raise ValueError("a universal perturbation whose eps, organs or image size cannot be read") from None
