"""Label sets: what a data set's masks and a model's output channels mean.

A label set names the foreground labels (name, title, colour) in channel order and says how a model
scores them:

- ``sigmoid``: multi-label, one logit channel per label, a pixel is a label's where its logit > 0
  (UW-Madison's three organs overlap, so the paper's models are of this kind);
- ``softmax``: multi-class, one channel more for the background (channel 0, as nnU-Net and MONAI order
  them), a pixel is the label of its largest logit.

Whatever the kind, masks travel as 0/1 arrays of shape (labels, H, W) in label order, one channel per
foreground label (a softmax model's masks never overlap), so scores, tables and pictures read both
kinds alike. Only ``core.models.inference`` and ``core.losses`` look at the kind.

No torch here: the CLI and the explorer list labels at import time.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from core.errors import SegadvError

OUTPUT_KINDS = ("sigmoid", "softmax")
MAX_LABELS = 64
# Okabe & Ito's colour-blind-safe palette (orange, sky blue, bluish green, yellow, blue, vermillion,
# reddish purple): label i of a label set without colours of its own gets colour i modulo 7.
OKABE_ITO = ("#E69F00", "#56B4E9", "#009E73", "#F0E442", "#0072B2", "#D55E00", "#CC79A7")
_NAME = re.compile(r"[a-z][a-z0-9_]{0,39}")
_COLOUR = re.compile(r"#[0-9A-Fa-f]{6}")


def is_label_name(value: object) -> bool:
    """A string that can name a label (lower case, digits, underscores; at most 40 characters)."""
    return isinstance(value, str) and _NAME.fullmatch(value) is not None


class LabelSetError(SegadvError, ValueError):
    """A label set that cannot be used, or two that do not match; the message names both sides."""


@dataclass(frozen=True)
class Label:
    name: str  # a key in JSON, CSV and option values: lower case, digits and underscores
    title: str  # as tables and legends show it
    colour: str  # "#RRGGBB"

    @property
    def rgb(self) -> tuple[int, int, int]:
        return tuple(int(self.colour[i : i + 2], 16) for i in (1, 3, 5))  # type: ignore[return-value]


@dataclass(frozen=True)
class LabelSet:
    labels: tuple[Label, ...]
    kind: str = "sigmoid"

    def __post_init__(self) -> None:
        if self.kind not in OUTPUT_KINDS:
            raise LabelSetError(f"output kind {self.kind!r}: expected one of {', '.join(OUTPUT_KINDS)}")
        if not 1 <= len(self.labels) <= MAX_LABELS:
            raise LabelSetError(f"a label set holds 1 to {MAX_LABELS} labels, not {len(self.labels)}")
        names = [label.name for label in self.labels]
        for label in self.labels:
            if not _NAME.fullmatch(label.name):
                raise LabelSetError(
                    f"label name {label.name!r}: expected a lower-case name of letters, digits and underscores"
                )
            if not _COLOUR.fullmatch(label.colour):
                raise LabelSetError(f"label {label.name}: colour {label.colour!r} is not #RRGGBB")
        if len(set(names)) != len(names):
            raise LabelSetError(f"label names repeat: {', '.join(names)}")

    @property
    def names(self) -> tuple[str, ...]:
        return tuple(label.name for label in self.labels)

    @property
    def titles(self) -> dict[str, str]:
        return {label.name: label.title for label in self.labels}

    @property
    def colours(self) -> dict[str, tuple[int, int, int]]:
        return {label.name: label.rgb for label in self.labels}

    @property
    def channels(self) -> int:
        """The model's output channels: one per label, and the background first for softmax."""
        return len(self.labels) + (self.kind == "softmax")

    def __len__(self) -> int:
        return len(self.labels)

    def index(self, name: str) -> int:
        try:
            return self.names.index(name)
        except ValueError:
            raise LabelSetError(f"unknown label {name!r}; choose from {', '.join(self.names)}") from None

    def describe(self) -> str:
        """``large_bowel, small_bowel, stomach (sigmoid)``: how messages name a label set."""
        return f"{', '.join(self.names)} ({self.kind})"

    def same_labels(self, other: LabelSet) -> bool:
        """The same names in the same order and the same kind (titles and colours may differ)."""
        return self.names == other.names and self.kind == other.kind

    def to_meta(self) -> dict:
        """The JSON form a checkpoint and a results file record."""
        return {
            "kind": self.kind,
            "labels": [{"name": label.name, "title": label.title, "colour": label.colour} for label in self.labels],
        }


def label_set(names: Sequence[str], kind: str = "sigmoid", titles: Mapping[str, str] | None = None) -> LabelSet:
    """A label set from names alone: titles from the names ("small_bowel" -> "Small bowel") unless given,
    Okabe-Ito colours in order."""
    titles = titles or {}
    return LabelSet(
        tuple(
            Label(name, titles.get(name) or name.replace("_", " ").capitalize(), OKABE_ITO[i % len(OKABE_ITO)])
            for i, name in enumerate(names)
        ),
        kind,
    )


def label_set_from_meta(value: object, where: str) -> LabelSet:
    """The label set a file recorded (``LabelSet.to_meta``), every value checked: a ``LabelSetError``
    starting with ``where`` (the file and key) for anything else."""
    if not (isinstance(value, dict) and isinstance(value.get("labels"), list) and isinstance(value.get("kind"), str)):
        raise LabelSetError(f"{where}: expected an object with kind and labels")
    labels = []
    for entry in value["labels"][: MAX_LABELS + 1]:
        if not (
            isinstance(entry, dict) and all(isinstance(entry.get(key), str) for key in ("name", "title", "colour"))
        ):
            raise LabelSetError(f"{where}: a label is not an object of name, title and colour strings")
        labels.append(Label(entry["name"], entry["title"][:80], entry["colour"]))
    try:
        return LabelSet(tuple(labels), value["kind"])
    except LabelSetError as exc:
        raise LabelSetError(f"{where}: {exc}") from None


def check_same_labels(model: LabelSet, data: LabelSet, model_source: object, data_source: object) -> None:
    """Refuse a model whose label set is not the data's, in one line that names both sets."""
    if not model.same_labels(data):
        raise LabelSetError(
            f"{model_source} segments {model.describe()}, but {data_source} holds {data.describe()}; "
            f"use a checkpoint trained on this data's labels"
        )


# The UW-Madison GI Tract data set: three overlapping organs in the order of train.csv, scored by sigmoid.
# Its colours are the ones segadv has always drawn them in (its pictures and snapshots stay as they were).
UW_MADISON = LabelSet(
    (
        Label("large_bowel", "Large bowel", "#FFAA28"),
        Label("small_bowel", "Small bowel", "#50C8FF"),
        Label("stomach", "Stomach", "#E650C8"),
    ),
    "sigmoid",
)
