"""The Checkpoints panel: every checkpoint found, with its model, size, image size, validation DSC and
defence (adversarial training, from the metadata). The same scan finds the universal perturbations
(``segadv universal``) beside them, which the Attack panel offers."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from rich.console import Group
from rich.text import Text
from textual.message import Message
from textual.widgets import OptionList
from textual.widgets.option_list import Option

CHECKPOINT_SUFFIXES = (".safetensors",)


@dataclass(frozen=True)
class CheckpointEntry:
    path: Path
    meta: dict | None  # None when the header cannot be read
    problem: str | None = None

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


def find_checkpoints(folders: list[Path], files: list[Path] = ()) -> tuple[list[CheckpointEntry], list[DeltaEntry]]:
    """The checkpoints in ``folders`` (non-recursive) and ``files`` with their metadata headers, and the
    universal perturbations among them."""
    from core.checkpoints import FOREIGN_SUFFIXES, UNIVERSAL_FORMAT, read_checkpoint_meta, read_safetensors_meta

    paths: list[Path] = [Path(f) for f in files]
    for folder in folders:
        paths.extend(sorted(p for p in Path(folder).iterdir() if p.suffix in CHECKPOINT_SUFFIXES))
    entries, deltas, seen = [], [], set()
    for path in paths:
        key = path.resolve()
        if key in seen:
            continue
        seen.add(key)
        if path.suffix in FOREIGN_SUFFIXES:  # the explorer takes no --model to build them with
            entries.append(CheckpointEntry(path, None, f"weights without segadv metadata: convert them with "
                                                       f"`segadv import-checkpoint {path} --model NAME OUT.safetensors`, "
                                                       f"then open OUT.safetensors"))
            continue
        try:
            meta = read_safetensors_meta(path)
            if meta.get("format") == UNIVERSAL_FORMAT:
                deltas.append(_delta_entry(path, meta))
                continue
            entries.append(CheckpointEntry(path, read_checkpoint_meta(path)))
        except (ValueError, OSError) as exc:
            entries.append(CheckpointEntry(path, None, str(exc).removeprefix(f"{path}: ")))
    return entries, deltas


def _delta_entry(path: Path, meta: dict) -> DeltaEntry:
    try:
        return DeltaEntry(path, float(meta["eps"]), tuple(meta["organs"]), int(meta["img_size"]), meta.get("checkpoint"))
    except KeyError as exc:
        raise ValueError(f"a universal perturbation without {exc} in its header") from None
    except (TypeError, ValueError):
        raise ValueError("a universal perturbation whose eps, organs or image size cannot be read") from None


class CheckpointList(OptionList):
    """Choosing an entry asks the app to load it; the loaded ones are marked."""

    class Chosen(Message):
        def __init__(self, entry: CheckpointEntry):
            super().__init__()
            self.entry = entry

    def __init__(self, **kwargs):
        super().__init__(**kwargs)
        self.entries: list[CheckpointEntry] = []
        self.loaded: set[Path] = set()
        self.current: Path | None = None
        self.scored_on: Path | None = None  # the model the frames are scored on, when not the current one

    def set_entries(self, entries: list[CheckpointEntry]) -> None:
        self.entries = list(entries)
        self._redraw()

    def mark(self, path: Path, *, current: bool) -> None:
        self.loaded.add(path)
        if current:
            self.current = path
        self._redraw()

    def mark_scored_on(self, path: Path | None) -> None:
        self.scored_on = path
        self._redraw()

    def _redraw(self) -> None:
        highlighted = self.highlighted
        self.clear_options()
        for entry in self.entries:
            # ▶ attacked, ◆ scored on (a transfer), ● loaded.
            marker = ("▶ " if entry.path == self.current else "◆ " if entry.path == self.scored_on
                      else "● " if entry.path in self.loaded else "  ")
            # One line each for name and summary, cut with an ellipsis: the full error is in a notification.
            name = Text(marker + entry.path.stem, style="bold" if entry.meta else "bold red",
                        no_wrap=True, overflow="ellipsis")
            summary = Text("  " + entry.summary, style="dim" if entry.meta else "red", no_wrap=True, overflow="ellipsis")
            lines = [name, summary]
            if entry.defence:  # a line of its own: the summary line is full at the panel's width
                lines.append(Text("  " + entry.defence, style="dim italic", no_wrap=True, overflow="ellipsis"))
            self.add_option(Option(Group(*lines)))
        if self.entries:
            self.highlighted = min(highlighted or 0, len(self.entries) - 1)

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        self.post_message(self.Chosen(self.entries[event.option_index]))
