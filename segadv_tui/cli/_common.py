"""Option parsing, loading and the setup shared by the attack commands (``prepare``: batch size, outputs,
device, checkpoints, data and slices, in that order), each bad value turned into one clear line.

Options that name a choice (loss, method, split, ...) arrive as plain strings (``segadv_tui.cli._options``)
and are checked here, so a bad value gives ``error: unknown loss 'foo'; choose from ...`` rather than a
usage box.
Heavy modules (torch, core) are imported inside the functions: ``segadv --help`` must stay fast.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

from segadv_tui.bug_report import one_line
from segadv_tui.catalog import CheckpointEntry, LoadedCheckpoint
from segadv_tui.cli import err_console, fail

# How close a range's last value must come to its stop to count as the stop (float steps drift).
RANGE_TOLERANCE = 1e-9
MAX_EPS_VALUES = 1000  # a typo like 0:1:0.00001 should not start a day-long sweep
T = TypeVar("T")


def choice(value: str, choices: Sequence[str], what: str) -> str:
    """``value`` stripped and lower-cased (options take any case) if it is one of ``choices``, else
    ``core.errors.check_choice``'s error naming it (one line, exit status 2)."""
    from core.errors import check_choice

    return check_choice(value.strip().lower(), choices, what)


def parse_eps(text: str, option: str = "--eps", norm: str = "linf") -> float:
    """One perturbation budget in [0, 1] (images live in [0, 1]); under ``norm`` l2 the slice's L2 norm, in
    [0, ``core.attacks.config.MAX_L2_EPS``]."""
    from core.attacks.config import MAX_L2_EPS

    upper = MAX_L2_EPS if norm == "l2" else 1.0
    try:
        value = float(text)
    except ValueError:
        fail(f"{option} {text!r} is not a number")
    if not math.isfinite(value) or value < 0 or value > upper:
        fail(f"{option} {text!r} must be a number in [0, {upper:g}]")
    return value


def parse_eps_list(text: str, option: str = "--eps", norm: str = "linf") -> list[float]:
    """``start:stop:step`` (stop included within float tolerance) or a comma list, sorted and deduplicated."""
    text = text.strip()
    if ":" in text:
        parts = text.split(":")
        if len(parts) != 3:
            fail(f"{option} {text!r} is not start:stop:step")
        start, stop, step = (parse_eps(part, option, norm) for part in parts)
        if step <= 0:
            fail(f"{option} {text!r} has step {parts[2]!r}; the step must be greater than 0")
        if stop < start:
            fail(f"{option} {text!r} has stop {parts[1]!r} below start {parts[0]!r}")
        count = math.floor((stop - start) / step + RANGE_TOLERANCE * max(1.0, (stop - start) / step)) + 1
        if count > MAX_EPS_VALUES:
            fail(f"{option} {text!r} gives {count} eps values; at most {MAX_EPS_VALUES}")
        values = [round(start + i * step, 12) for i in range(count)]
    else:
        values = [parse_eps(part, option, norm) for part in text.split(",") if part.strip()]
    if not values:
        fail(f"{option} {text!r} gives no eps values")
    return sorted(set(values))


def parse_losses(text: str) -> list[str]:
    """A comma list of attack losses, in the order given, each from ``core.losses.LOSS_NAMES``."""
    from core.losses import LOSS_NAMES

    losses = [choice(part, LOSS_NAMES, "loss") for part in text.split(",") if part.strip()]
    if not losses:
        fail(f"--losses {text!r} names no loss; choose from {', '.join(LOSS_NAMES)}")
    return list(dict.fromkeys(losses))


def attack_config(*, method: str = "fgsm", eps: str = "0.009", all_slices: bool = False, **values):
    """The one ``core.attacks.config.AttackConfig`` from the command line's values (strings lower-cased),
    or a one-line error naming the bad value. ``all_slices`` scores slices without organs too; an option
    left unset (None) takes the method's default."""
    from core.attacks.config import AttackConfig

    values = {
        key: value.strip().lower() if isinstance(value, str) else value
        for key, value in values.items()
        if value is not None
    }
    return AttackConfig.for_method(
        method.strip().lower(),
        eps=parse_eps(eps, norm=values.get("norm", "linf")),
        score="all" if all_slices else "nonempty",
        **values,
    )


def refuse_artefacts(config, command: str, needs: str) -> None:
    """The corrupt method ignores eps and the model it would attack: a one-line error from ``command``, whose
    results ``needs`` one of them."""
    if config.method == "corrupt":
        fail(
            f"{command} {needs}, and the corrupt method ignores it (an MRI artefact, not an attack); "
            "use segadv corrupt for DSC against severity, or segadv attack --method corrupt for one severity"
        )


def check_batch_size(batch_size: int) -> int:
    if batch_size < 1:
        fail(f"--batch-size {batch_size} must be at least 1")
    return batch_size


def checkpoint_fields(loaded: LoadedCheckpoint) -> dict:
    """A checkpoint as a command's JSON names the one it attacked (its labels are the result's)."""
    return {
        "checkpoint": str(loaded.path),
        "model": loaded.meta.get("model"),
        "title": loaded.title,
        "img_size": loaded.img_size,
    }


def load_checkpoint(path: Path | None, device, model_name: str | None = None) -> LoadedCheckpoint:
    """The checkpoint at ``path`` (None: the bundled demo checkpoint) loaded on ``device`` (a resolved
    ``torch.device``), or a one-line error.

    ``model_name`` names the registry model of foreign ``.pt`` / ``.pth`` / ``.bin`` weights."""
    from core.models.checkpoints import load_checkpoint as load
    from core.paths import demo_checkpoint

    if path is None:
        try:
            path = demo_checkpoint()
        except FileNotFoundError as exc:
            fail(f"no --checkpoint given and {exc}")
    path = Path(path).expanduser()
    if not path.is_file():
        fail(
            f"checkpoint {str(path)!r} does not exist"
            if not path.exists()
            else f"checkpoint {str(path)!r} is not a file"
        )
    model, meta = load(path, device=device, model_name=model_name)  # a CheckpointError names the file
    return LoadedCheckpoint(CheckpointEntry(path, meta), model, meta)


def open_data(data: Path | None, strict: bool = False, *, slice_axis: str | None = None, kind: str | None = None):
    """The data set at ``data`` (None: the built-in demo data, generated on first use), or a one-line error.
    Problems the reader met (slices it skipped, organ rows it took as absent) are a note, or with
    ``strict`` a one-line error naming the first.

    ``slice_axis`` (--slice-axis: axial, coronal, sagittal or 2, 1, 0; None: axial) cuts a Decathlon
    folder and is refused for UW-Madison data. ``kind`` (sigmoid or softmax: the checkpoint's) is the label
    kind a Decathlon folder's labels take; a folder that cannot take it (regions are sigmoid only) opens
    with its own, for ``check_labels`` to name both sets."""
    from core.data.decathlon import DEFAULT_SLICE_AXIS, parse_slice_axis
    from core.data.gitract import DataError
    from core.data.open import data_layout, open_dataset
    from core.errors import OptionError

    axis = DEFAULT_SLICE_AXIS
    if slice_axis is not None:
        try:
            axis = parse_slice_axis(slice_axis, "--slice-axis")
        except OptionError as exc:
            fail(str(exc))
    if data is not None:
        data = Path(data).expanduser()
        if not data.is_dir():
            fail(
                f"data folder {str(data)!r} does not exist"
                if not data.exists()
                else f"--data {str(data)!r} is not a folder"
            )
    try:
        if slice_axis is not None and (data is None or data_layout(data) != "decathlon"):
            fail(
                f"--slice-axis cuts a Decathlon folder's volumes, but {str(data) if data else 'the demo data'!r} "
                "holds UW-Madison slices; leave --slice-axis out"
            )
        if data is None:
            with progress_bar("preparing the demo data (first use)") as progress:
                dataset = open_dataset(None, progress=progress)
        else:
            try:
                dataset = open_dataset(data, slice_axis=axis, kind=kind)
            except DataError:
                if kind is None:
                    raise
                dataset = open_dataset(data, slice_axis=axis)  # its own kind; the label check names both
    except (DataError, OSError) as exc:
        fail(f"cannot read data {str(data) if data else 'demo'!r}: {one_line(exc)}")
    if dataset.problems:
        count = f"{len(dataset.problems)} problem(s) in {dataset.root}"
        if strict:
            fail(f"--strict: {count}; the first: {dataset.problems[0].rsplit('; ', 1)[0]}")  # not "; skipped"
        err_console.print(
            f"note: {count}, e.g. {dataset.problems[0]} (the JSON lists them; --strict stops instead)",
            highlight=False,
            soft_wrap=True,
            markup=False,
        )
    return dataset


def select_records(dataset, split: str, *, all_slices: bool = False, limit: int | None = None) -> list:
    """``core.data.gitract.select_slices`` for the command line's --split / --all-slices / --limit."""
    from core.data.gitract import select_slices

    return select_slices(dataset, split, organs_only=not all_slices, limit=limit)


@dataclass
class CommandRun:
    """What a command works on, made by ``prepare``: the device, the loaded checkpoints, the data set and
    the slices of --split; and its ``Outputs``, written by ``finish``."""

    command: str  # as the JSON names it ("attack", "study luminosity")
    outputs: Any  # segadv_tui.cli._outcome.Outputs
    device: Any  # torch.device
    checkpoints: list[LoadedCheckpoint]
    dataset: Any  # a data set (core.data): records, split, root, labels
    split: str | None  # None: the command picks its slices itself (figure, universal)
    records: list

    @property
    def checkpoint(self) -> LoadedCheckpoint:
        """The checkpoint of a command that takes one."""
        return self.checkpoints[0]

    @property
    def labels(self):
        """The data's label set (``core.labels.LabelSet``), which every checkpoint's is (``prepare`` checked)."""
        return self.dataset.labels

    def with_caption(self, all_slices: bool) -> str:
        """`` with organs`` (UW-Madison) or `` with labels`` after "N test slices", nothing with --all-slices."""
        from core.wording import with_labels_caption

        return with_labels_caption(self.labels, all_slices)

    def attack_config(self, config, organs=None):
        """``config`` for this data's label set: the labels to erase are ``organs`` (the --label values; the
        commands with that option default it to the set's last label, as they always named UW-Madison's
        stomach; None: the method's default), an unknown one a one-line error listing the set's."""
        return config.for_labels(self.labels, organs)

    def select(self, split: str, *, all_slices: bool = False, limit: int | None = None) -> list:
        return select_records(self.dataset, split, all_slices=all_slices, limit=limit)

    def payload(self, fields: dict, *, models: dict | None = None, checkpoints=None, slices: bool = True) -> dict:
        """The command's JSON before ``result_json``: its name, where the numbers come from (the device,
        ``models``, the data, the split and, with ``slices``, how many slices), ``checkpoints``, then
        ``fields`` (the result)."""
        from core.devices import describe_device

        head = {
            "command": self.command,
            "device": describe_device(self.device),
            **(models or {}),
            "data": str(self.dataset.root),
            "data_fingerprint": self.dataset.fingerprint(),
        }
        if self.split is not None:
            head["split"] = self.split
            if slices:
                head["slices"] = len(self.records)
        if checkpoints is not None:
            head["checkpoints"] = checkpoints
        return {**head, **fields}

    def checkpoint_payload(self, result) -> dict:
        """The JSON of a command about its one checkpoint: ``payload`` naming the checkpoint, then
        ``result.to_dict()`` (which counts its own slices)."""
        return self.payload(result.to_dict(), models=checkpoint_fields(self.checkpoint), slices=False)

    def cached(self, key: dict, compute: Callable[..., T]) -> Callable[..., T]:
        """``compute`` served from the run index: ``run.cached(key, evaluate)(model, records, ...)`` returns
        the result an earlier run stored under the same key, else calls ``compute`` with the arguments. The
        key is ``key`` (the attack configuration and what else decides the result) with the checkpoints'
        hashes, the data's fingerprint, the slices, the device type and the code's version; --no-cache computes."""
        from segadv_tui.cli._runs import cached

        return lambda *args, **kwargs: cached(self, key, lambda: compute(*args, **kwargs))

    def keep_partial(self, payload, also=None):
        """``segadv_tui.cli._outcome.keep_partial`` beside this command's JSON."""
        from segadv_tui.cli._outcome import keep_partial

        return keep_partial(self.outputs.partial_json, payload, self.dataset, also)

    def finish(self, *shown, detail: str = "", skipped: bool = True, **contents) -> None:
        """Under torchrun on rank 0 alone: print ``shown`` (tables, lines), write the outputs (``contents``:
        option -> a function making its content, ``Outputs.write``) and say what was written, ``detail`` and,
        with ``skipped``, the slices the reader left out."""
        from core.distributed import is_main_process
        from segadv_tui.cli import _runs as runs
        from segadv_tui.cli import console
        from segadv_tui.cli._outcome import print_written, result_json

        if not is_main_process():
            return
        for renderable in shown:
            console.print(renderable)
        made = contents["json"]() if "json" in contents else None  # made once: for the file and the run index
        if made is not None:
            contents = {**contents, "json": lambda: made}
        self.outputs.write(self.dataset, contents)
        runs.finished(None if made is None else result_json(made, self.dataset), self.outputs.written)
        print_written(self.outputs.written, self.dataset if skipped else None, self.outputs.paths.get("json"), detail)


def prepare(
    command: str,
    outputs,
    *,
    device: str,
    data: Path | None,
    strict: bool,
    checkpoints: Sequence[Path | None] = (None,),
    model: str | None = None,
    check_models: Callable[[list[LoadedCheckpoint]], None] | None = None,
    split: str | None = None,
    all_slices: bool = False,
    limit: int | None = None,
    batch_size: int | None = None,
    slice_axis: str | None = None,
) -> CommandRun:
    """Everything a command does before its work, in the order that stops at the first bad value before
    anything slow: --batch-size, the outputs, the device, the checkpoints (None: the bundled demo; ``model``
    names the registry model of foreign weights), ``check_models`` of them, the data and, with ``split``,
    its slices (a Decathlon folder cut along ``slice_axis``, its labels of the checkpoints' kind). Then the
    run's record is opened in the run index (``segadv_tui.cli._runs``)."""
    from core.devices import resolve_device
    from segadv_tui.cli._runs import begin as begin_record

    if batch_size is not None:
        check_batch_size(batch_size)
    outputs.check()
    resolved = resolve_device(device)
    loaded = [load_checkpoint(path, resolved, model) for path in checkpoints]
    if check_models is not None:
        check_models(loaded)
    kinds = {item.model.labels.kind for item in loaded}
    dataset = open_data(data, strict, slice_axis=slice_axis, kind=kinds.pop() if len(kinds) == 1 else None)
    check_labels(loaded, dataset)
    split = None if split is None else split.strip().lower()
    records = [] if split is None else select_records(dataset, split, all_slices=all_slices, limit=limit)
    run = CommandRun(command, outputs, resolved, loaded, dataset, split, records)
    begin_record(run)
    return run


def prepare_scoring(
    command: str,
    out_dir: Path,
    json_path: Path | None,
    csv_path: Path | None,
    *,
    checkpoint: Path | None,
    model: str | None,
    data: Path | None,
    strict: bool,
    split: str,
    limit: int | None,
    device: str,
    batch_size: int | None = None,
    slice_axis: str | None = None,
) -> CommandRun:
    """``prepare`` for a command that scores one checkpoint on the --split slices with labels and writes
    ``OUT_DIR/COMMAND.json`` (or --json) and, when asked, --csv: certify, corrupt."""
    from segadv_tui.cli._outcome import Outputs

    return prepare(
        command,
        Outputs(command, out_dir, optional=("csv",), json=json_path, csv=csv_path),
        batch_size=batch_size,
        device=device,
        checkpoints=[checkpoint],
        model=model,
        data=data,
        strict=strict,
        split=split,
        limit=limit,
        slice_axis=slice_axis,
    )


def check_labels(loaded: Sequence[LoadedCheckpoint], dataset) -> None:
    """Refuse a checkpoint whose label set is not the data's: one line naming both sets."""
    from core.labels import check_same_labels

    for item in loaded:
        check_same_labels(item.model.labels, dataset.labels, item.path.name, f"data {dataset.root}")


@contextmanager
def progress_bar(description: str) -> Iterator:
    """A Rich progress bar on stderr (stdout stays clean for tables); yields ``progress(done, total)``."""
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
        TimeRemainingColumn,
    )

    with Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        TimeRemainingColumn(),
        console=err_console,
        transient=True,
        disable=not err_console.is_terminal,  # piped or captured: no bar, and no stray blank lines
    ) as progress:
        task = progress.add_task(description, total=None)
        interrupt_at = _test_hook_sigint_at()

        def report(done: int, total: int) -> None:
            nonlocal interrupt_at
            progress.update(task, completed=done, total=total)
            if interrupt_at is not None and done >= interrupt_at:
                interrupt_at = None
                _send_test_sigint()

        yield report


TEST_HOOK_SIGINT = "SEGADV_TEST_HOOK_SIGINT_AT"


def _test_hook_sigint_at() -> int | None:
    """A test hook: with ``SEGADV_TEST_HOOK_SIGINT_AT=k`` a progress bar sends Ctrl-C (a real SIGINT) once
    it reaches k, so the tests interrupt a real command at a known point."""
    value = os.environ.get(TEST_HOOK_SIGINT)
    return int(value) if value else None


def _send_test_sigint() -> None:
    """SIGINT to this process or, under torchrun, from rank 0 to torchrun, which passes it to every rank
    as a Ctrl-C in the terminal does."""
    import signal

    from core.distributed import is_main_process

    if "TORCHELASTIC_RUN_ID" not in os.environ:
        os.kill(os.getpid(), signal.SIGINT)
    elif is_main_process():
        os.kill(os.getppid(), signal.SIGINT)


def check_outputs(**paths: Path | None) -> None:
    """Refuse, before any work is done, output paths the writer could not write (keyword = option name):
    a folder, a socket, a block device, a folder without write permission (``core.files.check_writable``)."""
    from core.files import STDOUT, WriteError, check_writable
    from segadv_tui.cli import stdout_carries_a_file

    to_stdout = [option for option, path in paths.items() if path is not None and str(path) == STDOUT]
    if len(to_stdout) > 1:
        fail(f"only one output can be '-' (standard output), not {', '.join('--' + name for name in to_stdout)}")
    if to_stdout:
        stdout_carries_a_file()
    for option, path in paths.items():
        if path is None:
            continue
        try:
            check_writable(path)
        except WriteError as exc:
            hint = "; give a file name" if Path(path).expanduser().is_dir() else ""
            fail(f"--{option.replace('_', '-')} {str(path)!r}: {exc.reason}{hint}")
