"""Ctrl-C in the middle of an epoch, through the real ``segadv train`` in a child process, and the printed
``--resume`` command: the run ends with the very tensors of a run that was never interrupted.

The child's test hook SEGADV_TEST_SIGINT_AT_STEP=k sends SIGINT to its process group (as a terminal's
Ctrl-C does, DataLoader workers included) while global step k computes, after the step drew its
augmentation: where a real Ctrl-C lands nearly every time."""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from core.models.checkpoints import load_training_state, resume_path_for
from core.training.loop import Step, TrainConfig, TrainingInterrupted, train

pytestmark = pytest.mark.slow  # starts processes of its own (see pyproject's markers)

SEGADV = Path(sys.executable).with_name("segadv")
# 24 training slices of the tiny demo in batches of 8: 3 steps per epoch; the default 2 loader workers.
ARGS = ["--model", "small", "--encoder-weights", "none", "--img-size", "32", "--batch-size", "8", "--epochs", "2"]


def segadv_train(data: Path, out: Path, *, sigint_at: int | None = None, command: list[str] | None = None):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    env.pop("SEGADV_TEST_SIGINT_AT_STEP", None)
    if sigint_at is not None:
        env["SEGADV_TEST_SIGINT_AT_STEP"] = str(sigint_at)
    args = command or ["train", *ARGS, "--data", str(data), "--out", str(out)]
    # A session of its own: the hook's SIGINT reaches the child's process group, not pytest's.
    return subprocess.run(
        [str(SEGADV), *args], capture_output=True, text=True, env=env, timeout=300, check=False, start_new_session=True
    )


def tensors(path: Path) -> dict[str, torch.Tensor]:
    with safe_open(str(path), "pt") as weights:
        return {key: weights.get_tensor(key) for key in weights.keys()}


def differing(a: dict, b: dict) -> list[str]:
    assert a.keys() == b.keys()
    return [key for key in a if not torch.equal(a[key], b[key])]


def test_ctrl_c_mid_epoch_then_the_printed_resume_ends_with_the_uninterrupted_runs_tensors(tiny_demo, tmp_path):
    whole = tmp_path / "whole.safetensors"
    done = segadv_train(tiny_demo, whole)
    assert done.returncode == 0, done.stderr

    out = tmp_path / "parts.safetensors"
    command = None
    # Step 2 of 3 of epoch 1, then, in the resumed run, step 2 of 3 of epoch 2.
    for step in (2, 5):
        interrupted = segadv_train(tiny_demo, out, sigint_at=step, command=command)
        assert interrupted.returncode == 130, interrupted.stderr
        message = " ".join(interrupted.stderr.split())
        assert "Ctrl-C: stopping after this step" in message
        printed = shlex.split(message.split("error: interrupted; resume with: ", 1)[1])
        assert printed[0] == "segadv" and printed[-2:] == ["--resume", str(resume_path_for(out))]
        command = printed[1:]
        saved = load_training_state(resume_path_for(out))
        assert (saved["epoch"], saved["step"]) == divmod(step, 3)  # the step that was computing finished
    resumed = segadv_train(tiny_demo, out, command=command)
    assert resumed.returncode == 0, resumed.stderr

    assert differing(tensors(whole), tensors(out)) == []
    whole_state, parts_state = load_training_state(resume_path_for(whole)), load_training_state(resume_path_for(out))
    assert differing(whole_state["model"], parts_state["model"]) == []
    for key, state in whole_state["optimizer"]["state"].items():
        assert differing(state, parts_state["optimizer"]["state"][key]) == []
    assert whole_state["scheduler"] == parts_state["scheduler"]
    # Train loss and validation DSC of every epoch, so the best epoch too.
    assert whole_state["history"] == parts_state["history"]


def test_a_second_ctrl_c_stops_at_once_and_keeps_only_the_state_saved_last(tiny_demo, tmp_path):
    out = tmp_path / "x.safetensors"

    def ctrl_c_twice(event):
        if isinstance(event, Step) and event.step == 1:
            os.kill(os.getpid(), signal.SIGINT)  # asks to stop after this step
            os.kill(os.getpid(), signal.SIGINT)  # insists: no step boundary comes, so nothing whole to save

    config = TrainConfig(
        model="small", data=tiny_demo, out=out, encoder_weights="none", epochs=1, batch_size=8, img_size=32, workers=0
    )
    with pytest.raises(
        TrainingInterrupted, match="interrupted at once at epoch 1, step 1; no state was saved yet"
    ) as caught:
        train(config, progress=ctrl_c_twice)
    assert caught.value.resume_path is None and not resume_path_for(out).exists()
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # Python's own handler is back
