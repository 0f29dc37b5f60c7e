"""Training logs on disk: a run's epochs and steps as CSV files beside its checkpoint, and TensorBoard.

``TrainingLog`` is the training loop's events callback (``core.training.loop.TrainingEvents``) on rank 0: it
writes each event's numbers, then passes the event on to the front end's callback. So after an SSH drop
a run leaves more than scrollback, and ``tail -f`` follows it while it trains:

- ``NAME.history.csv`` (``history_path_for``), one row per epoch: ``epoch``, ``train_loss``, ``lr`` (at
  the epoch's last step), ``val_dsc_LABEL`` per label and ``val_dsc_mean`` (the checkpoint's ``val_dsc``;
  validation scores DSC only, so there is no validation loss), ``images_per_s`` and ``seconds``; for
  adversarial training also ``adv_eps`` (the last step's, ramped by the warmup), ``full_eps`` and the
  catastrophic-overfitting check (``check_clean_dsc``, ``check_fgsm_dsc``, ``check_pgd_dsc``,
  ``check_collapsed``, ...: ``core.training.adversarial.OverfittingCheck``).
- ``NAME.steps.csv`` (``steps_path_for``), one row per loss report (every ``--log-every`` steps and each
  epoch's last): ``epoch``, ``step`` (within the epoch), ``global_step``, ``loss`` (the mean since the
  last report), ``lr``, ``images_per_s`` (this epoch's so far), and ``adv_eps`` for adversarial training.

Both start afresh with a new run. A resumed run appends to them after dropping the rows past the point
it resumes from (rows a crash or Ctrl-C left after the last saved state), so each holds one row per
epoch or report of the run as it now stands. With ``tensorboard`` (a folder) the same numbers go to a
``torch.utils.tensorboard.SummaryWriter`` too: the optional ``tensorboard`` package.

No torch, and nothing of the training loop, which imports this module: events are told apart by their
class names, and the explorer reads a checkpoint's history (``read_history``) while it scans.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from contextlib import AbstractContextManager, nullcontext
from pathlib import Path
from typing import Any

from core.errors import OptionError
from core.files import CsvLog, check_writable, read_csv_log

TrainingEvents = Callable[[object], None]  # core.training.loop's events callback


def history_path_for(checkpoint: str | os.PathLike) -> Path:
    """``runs/resnext.safetensors`` -> ``runs/resnext.history.csv``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(checkpoint.suffix) + ".history.csv")


def steps_path_for(checkpoint: str | os.PathLike) -> Path:
    """``runs/resnext.safetensors`` -> ``runs/resnext.steps.csv``."""
    checkpoint = Path(checkpoint)
    return checkpoint.with_name(checkpoint.name.removesuffix(checkpoint.suffix) + ".steps.csv")


def read_history(checkpoint: str | os.PathLike) -> list[dict[str, float]] | None:
    """The epochs of ``checkpoint``'s history CSV as numbers (NaN for an empty cell, booleans as 0 / 1);
    None when it has none or it cannot be read (a history is an extra: its absence is no error)."""
    path = history_path_for(checkpoint)
    if not path.is_file():  # nothing, or a FIFO a reader would wait on for ever
        return None
    try:
        rows = read_csv_log(path)
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    epochs = []
    for row in rows:
        values = {}
        for key, text in row.items():
            if key is None or text is None:
                continue  # a row with more cells than the header
            values[key] = {"True": 1.0, "False": 0.0}[text] if text in ("True", "False") else _number(text)
        if "epoch" in values:
            epochs.append(values)
    return epochs or None


def _number(text: str) -> float:
    try:
        return float(text)
    except ValueError:
        return float("nan")


def _tensorboard_writer(folder: Path):
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise OptionError(
            "--tensorboard needs the tensorboard package: pip install 'segadv[tensorboard]' "
            "(or pip install tensorboard)"
        ) from None
    return SummaryWriter(log_dir=str(folder))


def training_log(
    checkpoint: Path, tensorboard: Path | None, progress: TrainingEvents | None, is_main: bool
) -> AbstractContextManager[TrainingEvents | None]:
    """The run's events callback as a context: on rank 0 a ``TrainingLog`` of ``checkpoint`` passing events
    on to ``progress``; on the other ranks ``progress`` itself (they write nothing)."""
    if not is_main:
        return nullcontext(progress)
    return TrainingLog(checkpoint, progress, tensorboard)


class TrainingLog:
    """The events callback that writes the logs of the module doc, then calls ``forward`` with each event.
    Files open at the run's start (``TrainStart``); ``close`` when the run ends. The TensorBoard writer is
    made at once, so a missing package stops the run before it loads anything."""

    def __init__(
        self, checkpoint: str | os.PathLike, forward: TrainingEvents | None = None, tensorboard: Path | None = None
    ):
        self.handlers: dict[str, Callable[[Any], None]] = {
            "TrainStart": self._start,
            "EpochStart": self._epoch_start,
            "Step": self._step,
            "EpochEnd": self._epoch_end,
        }
        self.checkpoint = Path(checkpoint)
        for path in (history_path_for(checkpoint), steps_path_for(checkpoint)):
            check_writable(path)  # a folder in the way: one line now, not after the first epoch
        self.forward = forward
        self.board = _tensorboard_writer(Path(tensorboard)) if tensorboard is not None else None
        self.history: CsvLog | None = None
        self.steps: CsvLog | None = None
        self.start_epoch = 0
        self.steps_per_epoch = 0
        self.skip = 0  # steps of the current epoch run before this process started it (a resume)
        self.last_step: Any = None  # a Step  # the epoch's latest loss report

    def __call__(self, event) -> None:
        handler = self.handlers.get(type(event).__name__)
        if handler is not None:
            handler(event)
        if self.forward is not None:
            self.forward(event)

    def _start(self, event) -> None:
        self.start_epoch, self.steps_per_epoch = event.start_epoch, event.steps_per_epoch
        resumed = event.start_epoch
        self.history = CsvLog(history_path_for(self.checkpoint), keep=lambda row: _int(row, "epoch") <= resumed)

    def _epoch_start(self, event) -> None:
        self.skip = self.steps_per_epoch - event.steps
        self.last_step = None
        if self.steps is None:  # the run's first epoch: where it starts is now known to the step
            epoch, step = event.epoch, self.skip
            self.steps = CsvLog(
                steps_path_for(self.checkpoint),
                keep=lambda row: (_int(row, "epoch"), _int(row, "step")) <= (epoch, step),
            )

    def _step(self, event) -> None:
        if event.loss is None:
            return
        self.last_step = event
        step = self.skip + event.step
        global_step = (event.epoch - 1) * self.steps_per_epoch + step
        row = {
            "epoch": event.epoch,
            "step": step,
            "global_step": global_step,
            "loss": event.loss,
            "lr": event.lr,
            "images_per_s": event.images_per_s,
        }
        if event.adv_eps is not None:
            row["adv_eps"] = event.adv_eps
        if self.steps is not None:
            self.steps.write(row)
        self._scalars("step", row, global_step)

    def _epoch_end(self, event) -> None:
        last = self.last_step
        row = {
            "epoch": event.epoch,
            "train_loss": event.train_loss,
            "lr": None if last is None else last.lr,
            **{f"val_dsc_{label}": value for label, value in event.val_dsc.items()},
            "images_per_s": None if last is None else last.images_per_s,
            "seconds": event.seconds,
        }
        if event.robust is not None:
            row["adv_eps"] = None if last is None else last.adv_eps
            row["full_eps"] = event.full_eps
            row.update({f"check_{key}": value for key, value in event.robust.items()})
        if self.history is not None:
            self.history.write(row)
        self._scalars("epoch", row, event.epoch)

    def _scalars(self, group: str, row: dict, step: int) -> None:
        if self.board is None:
            return
        for key, value in row.items():
            if key not in ("epoch", "step", "global_step") and isinstance(value, (int, float)) and value is not None:
                self.board.add_scalar(f"{group}/{key}", float(value), step)
        if group == "epoch":
            self.board.flush()

    def __enter__(self) -> TrainingLog:
        return self

    def __exit__(self, *exc_info) -> None:
        self.close()

    def close(self) -> None:
        for log in (self.history, self.steps):
            if log is not None:
                log.close()
        if self.board is not None:
            self.board.close()


def _int(row: dict, key: str) -> int:
    """A whole number cell of a log being resumed; a damaged one sorts last (its row is dropped)."""
    try:
        return int(float(row.get(key) or "nan"))
    except ValueError:
        return 2**62
