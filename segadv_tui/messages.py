"""What the explorer's workers post back to the UI thread: one dataclass per result (as Posting does)."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from textual.message import Message

from segadv_tui.catalog import Catalog, LoadedCheckpoint
from segadv_tui.frames import Curve, Frame, LiveStep


@dataclass
class OpeningSlice(Message):
    """The slice to open on, found before the data set's index is complete (``state.first_look``)."""

    record: Any  # core.data.gitract.SliceRecord
    labels: Any  # core.labels.LabelSet: the data's


@dataclass
class DataReady(Message):
    dataset: Any  # core.data.gitract.GITractDataset, or None for a lone PNG
    records: list
    description: str
    opening: Any = None  # the slice to open on (``state.opening_slice``), None without records


@dataclass
class CheckpointsFound(Message):
    catalog: Catalog
    device: str
    device_text: str


@dataclass
class ModelLoaded(Message):
    checkpoint: LoadedCheckpoint
    scoring: bool = False  # loaded to score the frames on (a transfer), not to attack


@dataclass
class FrameReady(Message):
    frame: Frame


@dataclass
class LiveStepReady(Message):
    """An iterative attack's progress (at most about 10 a second)."""

    live: LiveStep


@dataclass
class CurveReady(Message):
    curve: Curve


@dataclass
class Progressed(Message):
    """Table II's run: ``done`` of ``total`` slices."""

    done: int
    total: int


@dataclass
class TableIIFinished(Message):
    table: Any  # segadv_tui.render.tables.Table, or None when cancelled
    served_from: int | None = None  # the run whose stored result it is (None: computed now)


@dataclass
class CertifyReady(Message):
    """A slice certified by randomized smoothing (the explorer's Certify command)."""

    picture: Any  # segadv_tui.frames.CertifiedPicture
