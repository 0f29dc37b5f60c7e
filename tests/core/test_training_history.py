"""Training logs on disk: the history and steps CSVs of real tiny training runs, read while they train,
appended to on resume without the rows past the resume point; the log file's own rules (links, FIFOs,
folders, a half-written line); TensorBoard's missing package."""

from __future__ import annotations

import os
import shutil
import signal
import sys
import threading
from pathlib import Path

import pytest
from quick_training import quick_train_config

from core.errors import OptionError
from core.files import CsvLog, WriteError, read_csv_log
from core.models.checkpoints import read_checkpoint_meta, resume_path_for
from core.training.history import history_path_for, read_history, steps_path_for
from core.training.loop import EpochEnd, Step, TrainConfig, TrainingInterrupted, train

IMG = 32


def quick_config(data: Path, out: Path, **changes) -> TrainConfig:
    """24 training slices of the tiny demo in batches of 8: 3 steps per epoch; a loss report every step."""
    return quick_train_config(data, out, IMG, **{"epochs": 2, "log_every": 1, "patience": 0, **changes})


def _without_timing(rows: list[dict]) -> list[dict]:
    return [{k: v for k, v in row.items() if k not in ("seconds", "images_per_s")} for row in rows]


def test_two_epochs_write_a_history_that_grows_while_training(tiny_demo, tmp_path):
    out = tmp_path / "small.safetensors"
    seen_steps, seen_epochs = [], []

    def watch(event):
        # The logs are written before the front end hears of an event: a reader sees the row already.
        if isinstance(event, Step) and event.loss is not None:
            rows = read_csv_log(steps_path_for(out))
            seen_steps.append(len(rows))
            assert float(rows[-1]["loss"]) == event.loss and float(rows[-1]["lr"]) == event.lr
        if isinstance(event, EpochEnd):
            seen_epochs.append(len(read_csv_log(history_path_for(out))))

    result = train(quick_config(tiny_demo, out), progress=watch)
    assert seen_steps == [1, 2, 3, 4, 5, 6] and seen_epochs == [1, 2]
    history = read_csv_log(history_path_for(out))
    assert [row["epoch"] for row in history] == ["1", "2"]
    labels = [key.removeprefix("val_dsc_") for key in history[0] if key.startswith("val_dsc_")]
    assert labels == [*read_checkpoint_meta(out)["val_dsc"]]  # the val_dsc dict's keys, "mean" last
    for row, epoch in zip(history, result.history):
        assert float(row["train_loss"]) == epoch["train_loss"]
        assert {label: float(row[f"val_dsc_{label}"]) for label in labels} == {label: epoch[label] for label in labels}
        assert (
            float(row["seconds"]) > 0 and float(row["images_per_s"]) > 0 and 0 <= float(row["lr"]) < 3e-4
        )  # cosine to 0
    # The checkpoint is the best epoch's: its val_dsc is that row's, to the last bit.
    meta = read_checkpoint_meta(out)
    best = history[meta["epoch"] - 1]
    assert {label: float(best[f"val_dsc_{label}"]) for label in labels} == meta["val_dsc"]
    steps = read_csv_log(steps_path_for(out))
    assert [(row["epoch"], row["step"], row["global_step"]) for row in steps] == [
        ("1", "1", "1"),
        ("1", "2", "2"),
        ("1", "3", "3"),
        ("2", "1", "4"),
        ("2", "2", "5"),
        ("2", "3", "6"),
    ]
    assert read_history(out)[1]["val_dsc_mean"] == result.history[1]["mean"]
    assert read_history(tmp_path / "none.safetensors") is None
    os.mkfifo(history_path_for(tmp_path / "fifo.safetensors"))
    assert read_history(tmp_path / "fifo.safetensors") is None  # not waited on


def test_resume_appends_and_drops_the_rows_past_the_resume_point(tiny_demo, tmp_path):
    """A run's state after epoch 1 is kept aside; the run goes on to the end; resuming from the kept state
    rewrites epoch 2: each epoch and step once, epoch 2 as the first run had it (CPU training is exact)."""
    out = tmp_path / "small.safetensors"
    kept = tmp_path / "after-epoch-1.resume.pt"

    def keep_state(event):
        if isinstance(event, EpochEnd) and event.epoch == 1:  # the state is saved before EpochEnd is sent
            shutil.copy(resume_path_for(out), kept)

    train(quick_config(tiny_demo, out), progress=keep_state)
    whole_history, whole_steps = read_csv_log(history_path_for(out)), read_csv_log(steps_path_for(out))
    assert len(whole_history) == 2 and len(whole_steps) == 6
    train(quick_config(tiny_demo, out, resume=kept))
    assert _without_timing(read_csv_log(history_path_for(out))) == _without_timing(whole_history)
    assert _without_timing(read_csv_log(steps_path_for(out))) == _without_timing(whole_steps)


def test_ctrl_c_mid_epoch_then_resume_leaves_each_step_once(tiny_demo, tmp_path):
    out = tmp_path / "small.safetensors"

    def interrupt_at_step_2(event):
        if isinstance(event, Step) and event.epoch == 1 and event.step == 2:
            os.kill(os.getpid(), signal.SIGINT)  # the training loop stops before the next step

    with pytest.raises(TrainingInterrupted):
        train(quick_config(tiny_demo, out), progress=interrupt_at_step_2)
    assert [row["step"] for row in read_csv_log(steps_path_for(out))] == ["1", "2"]
    assert read_csv_log(history_path_for(out)) == []
    train(quick_config(tiny_demo, out, resume=resume_path_for(out)))
    steps = read_csv_log(steps_path_for(out))
    assert [(row["epoch"], row["step"]) for row in steps] == [(e, s) for e in "12" for s in "123"]
    assert [row["epoch"] for row in read_csv_log(history_path_for(out))] == ["1", "2"]


def test_adversarial_training_logs_its_check(tiny_demo, tmp_path):
    out = tmp_path / "at.safetensors"
    result = train(quick_config(tiny_demo, out, epochs=1, adv="fgsm-rs", adv_eps=0.01))
    (row,) = read_csv_log(history_path_for(out))
    check = result.history[0]["robust"]
    assert float(row["check_pgd_dsc"]) == check["pgd_dsc"] and float(row["check_fgsm_dsc"]) == check["fgsm_dsc"]
    assert row["check_collapsed"] == str(check["collapsed"]) and row["full_eps"] == "True"
    assert float(row["adv_eps"]) == pytest.approx(0.01)
    assert all(float(step["adv_eps"]) == pytest.approx(0.01) for step in read_csv_log(steps_path_for(out)))


def test_tensorboard_without_its_package_is_one_clear_error(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)  # an import of it fails, installed or not
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    out = tmp_path / "small.safetensors"
    with pytest.raises(OptionError, match=r"--tensorboard needs the tensorboard package: pip install"):
        train(quick_config(tiny_demo, out, tensorboard=tmp_path / "tb"))
    assert not out.exists() and not history_path_for(out).exists()


def test_a_folder_where_the_history_goes_stops_the_run_before_it_starts(tiny_demo, tmp_path):
    out = tmp_path / "small.safetensors"
    history_path_for(out).mkdir()
    with pytest.raises(WriteError, match=r"small\.history\.csv.*a folder"):
        train(quick_config(tiny_demo, out), progress=lambda event: pytest.fail(f"the run started: {event}"))


# --- the log file --------------------------------------------------------------------------------


def test_a_log_starts_afresh_or_keeps_rows_and_reads_back_whole_lines(tmp_path):
    path = tmp_path / "log.csv"
    log = CsvLog(path)
    assert path.read_text() == ""  # a new run's log is there (empty) from the start
    log.write({"epoch": 1, "loss": 0.5, "missing": float("nan")})
    log.write({"epoch": 2, "loss": 0.25, "extra": 7})  # a key the header lacks is left out
    log.close()
    assert path.read_text() == "epoch,loss,missing\n1,0.5,\n2,0.25,\n"
    log = CsvLog(path, keep=lambda row: int(row["epoch"]) <= 1)
    log.write({"loss": 0.125, "epoch": 2})  # written under the log's own header
    log.close()
    assert path.read_text() == "epoch,loss,missing\n1,0.5,\n2,0.125,\n"
    with path.open("a") as stream:
        stream.write("3,0.1")  # a row still being written
    assert [row["epoch"] for row in read_csv_log(path)] == ["1", "2"]
    CsvLog(path).close()
    assert path.read_text() == ""


def test_a_log_through_a_link_keeps_the_link(tmp_path):
    target, link = tmp_path / "real.csv", tmp_path / "link.csv"
    target.write_text("epoch\n1\n2\n")
    link.symlink_to(target)
    log = CsvLog(link, keep=lambda row: row["epoch"] == "1")
    log.write({"epoch": 5})
    log.close()
    assert link.is_symlink() and target.read_text() == "epoch\n1\n5\n"


def test_a_log_into_a_fifo_writes_into_it_and_a_folder_is_refused(tmp_path):
    fifo = tmp_path / "history.csv"
    os.mkfifo(fifo)
    received = []
    reader = threading.Thread(target=lambda: received.append(fifo.read_text()))
    reader.start()
    log = CsvLog(fifo, keep=lambda row: True)  # never read or replaced: appended to straight
    log.write({"epoch": 1})
    log.close()
    reader.join(timeout=10)
    assert received == ["epoch\n1\n"] and fifo.is_fifo()
    (tmp_path / "folder.csv").mkdir()
    with pytest.raises(WriteError, match="folder.csv.*a folder"):
        CsvLog(tmp_path / "folder.csv")
