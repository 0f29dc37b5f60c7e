"""DDP readiness: the registry models train under torchrun (gloo, CPU) without find_unused_parameters,
and a 2-process run resumes a saved state, with rank 0 alone reporting and saving.

Each torchrun test starts real processes and trains the real model for 2 steps at 64 x 64: about 8 s
(vgg) to 13 s (effb7, effb7pp) on 2 CPU cores, most of it imports and writing the checkpoint and the
resume state. ResNeXt-101 (24 s) is left out of the torchrun runs: its encoder uses every parameter
(checked in-process below), which is what DDP needed and the EfficientNet encoders lacked.
"""

from __future__ import annotations

import copy
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from quick_training import quick_train_config

from core.files import read_csv_log
from core.models.checkpoints import load_checkpoint, load_training_state, resume_path_for
from core.models.registry import REGISTRY, build_model, freeze_unused_parameters
from core.training.history import history_path_for, steps_path_for
from core.training.loop import train

# What smp's EfficientNet encoder builds but never runs (its classification head without the classifier).
EFFICIENTNET_UNUSED = ["net.encoder._conv_head.weight", "net.encoder._bn1.weight", "net.encoder._bn1.bias"]
# `small` runs under torchrun in the 2-process test; ResNeXt-101 (24 s) only in-process (see the doc).
TORCHRUN_MODELS = [name for name in REGISTRY if name not in ("resnext", "small")]


def torchrun(processes: int, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    """``torchrun --standalone --nproc-per-node N $(which segadv) ARGS``, as the README says to run it."""
    segadv = Path(sys.executable).with_name("segadv")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        str(processes),
        str(segadv),
        *args,
    ]
    return subprocess.run(command, env=env, cwd=cwd, capture_output=True, text=True, timeout=300)


@pytest.mark.xdist_group("registry_models")
@pytest.mark.parametrize("name", list(REGISTRY))
def test_only_the_parameters_the_forward_never_uses_are_frozen(registry_models, name):
    model = copy.deepcopy(registry_models(name)).train()  # freezing changes it: the shared one stays as built
    keys = list(model.state_dict())
    frozen = freeze_unused_parameters(model)
    assert frozen == (EFFICIENTNET_UNUSED if REGISTRY[name].encoder.startswith("efficientnet") else [])
    assert list(model.state_dict()) == keys and model.training
    # Every parameter still trainable gets a gradient from a training step: nothing left for DDP to wait on.
    model(torch.rand(2, 1, 64, 64)).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.xdist_group("registry_models")
def test_weights_of_an_unfrozen_model_load_into_a_frozen_one_and_back(registry_models):
    # Frozen parameters stay in the state dict: checkpoints written before and after load both ways.
    torch.manual_seed(1)
    unfrozen, frozen = build_model("effb7"), copy.deepcopy(registry_models("effb7"))  # different weights
    freeze_unused_parameters(frozen)
    frozen.load_state_dict(unfrozen.state_dict(), strict=True)
    unfrozen.load_state_dict(frozen.state_dict(), strict=True)
    assert torch.equal(frozen.net.encoder._conv_head.weight, unfrozen.net.encoder._conv_head.weight)


@pytest.mark.slow
@pytest.mark.parametrize("name", TORCHRUN_MODELS)
def test_every_model_trains_two_steps_under_torchrun_without_unused_parameters(tiny_demo, tmp_path, name):
    out = tmp_path / f"{name}.safetensors"
    done = torchrun(
        1,
        "train",
        "--model",
        name,
        "--encoder-weights",
        "none",
        "--device",
        "cpu",
        "--data",
        str(tiny_demo),
        "--limit-slices",
        "8",
        "--batch-size",
        "4",
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "2 steps per epoch" in output and "Traceback" not in output
    model, meta = load_checkpoint(out)
    assert meta["model"] == name and meta["epoch"] == 1
    state = load_training_state(out.with_name(f"{name}.resume.pt"))
    assert state["scheduler"]["last_epoch"] == 2


@pytest.mark.slow
def test_a_two_process_gloo_run_resumes_a_state_and_only_rank_0_reports_and_saves(tiny_demo, tmp_path):
    out = tmp_path / "ddp.safetensors"
    train(quick_train_config(tiny_demo, out, 64))
    # Both ranks restore rank 0's RNG state, then reseed per rank, and go on with epoch 2.
    done = torchrun(
        2,
        "train",
        "--model",
        "small",
        "--encoder-weights",
        "none",
        "--img-size",
        "64",
        "--batch-size",
        "8",
        "--workers",
        "0",
        "--data",
        str(tiny_demo),
        "--device",
        "cpu",
        "--out",
        str(out),
        "--epochs",
        "2",
        "--resume",
        str(resume_path_for(out)),
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "x 2 processes" in output and "resuming at epoch 2" in output
    assert "epoch 2/2" in output and "epoch 1/2" not in output
    assert output.count("best, saved to") <= 1 and output.count("best checkpoint") == 1
    state = load_training_state(resume_path_for(out))
    assert state["epoch"] == 2 and [h["epoch"] for h in state["history"]] == [1, 2]
    # 3 steps of 4 slices per process in each epoch; the cosine stretched to the longer run ends at 0.
    assert (state["scheduler"]["last_epoch"], state["scheduler"]["T_max"]) == (6, 6)
    assert state["optimizer"]["param_groups"][0]["lr"] == 0.0
    assert load_checkpoint(out)[1]["train_args"]["batch_size"] == 8
    names = ["ddp.history.csv", "ddp.resume.pt", "ddp.safetensors", "ddp.steps.csv"]
    assert sorted(p.name for p in tmp_path.iterdir()) == names
    # Rank 0 alone logs: the resumed run appended epoch 2 once, and each of its steps once.
    assert [row["epoch"] for row in read_csv_log(history_path_for(out))] == ["1", "2"]
    assert [(row["epoch"], row["step"]) for row in read_csv_log(steps_path_for(out))] == [("1", "3"), ("2", "3")]


@pytest.mark.slow
def test_adversarial_training_runs_under_torchrun_and_rank_0_alone_checks_and_records_the_defence(tiny_demo, tmp_path):
    out = tmp_path / "at.safetensors"
    done = torchrun(
        2,
        "train",
        "--model",
        "small",
        "--encoder-weights",
        "none",
        "--device",
        "cpu",
        "--data",
        str(tiny_demo),
        "--limit-slices",
        "8",
        "--batch-size",
        "4",
        "--img-size",
        "64",
        "--epochs",
        "1",
        "--workers",
        "0",
        "--adv",
        "pgd",
        "--adv-eps",
        "0.03",
        "--adv-steps",
        "2",
        "--out",
        str(out),
        cwd=tmp_path,
    )
    output = done.stdout + done.stderr
    assert done.returncode == 0, output
    assert "x 2 processes" in output and "Traceback" not in output
    assert output.count("adversarial training: pgd at eps 0.03 (2 steps of") == 1
    assert output.count("robust check on 4 validation slices") == 1
    defence = load_checkpoint(out)[1]["defence"]
    assert (defence["method"], defence["steps"], defence["eps"]) == ("pgd", 2, 0.03)
