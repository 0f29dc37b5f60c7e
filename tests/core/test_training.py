"""Training on the tiny demo data: checkpoints, Ctrl-C and resume, NaN stops, schedules, devices.
DDP runs under torchrun are in test_ddp.py."""

from __future__ import annotations

import math
import shlex
import shutil
import sys
from functools import partial
from pathlib import Path

import pytest
import torch
from quick_training import quick_train_config
from typer.testing import CliRunner

import core.training.loop
from core.errors import SegadvError
from core.models.checkpoints import load_checkpoint, load_training_state, read_checkpoint_meta, resume_path_for
from core.organs import ORGANS
from core.training.loop import (
    EpochStart,
    Step,
    TrainConfig,
    TrainingError,
    TrainingInterrupted,
    TrainStart,
    amp_dtype_for,
    load_scaler_state,
    train,
)

IMG = 64
# 24 training slices in batches of 8: 3 steps per epoch.
QUICK = ["--model", "small", "--encoder-weights", "none", "--img-size", str(IMG), "--batch-size", "8", "--workers", "0"]


def cli():
    from segadv_tui.cli import _register_commands, app

    _register_commands()

    return app


def quick_config(data: Path, out: Path, **changes) -> TrainConfig:
    return quick_train_config(data, out, IMG, **changes)


@pytest.fixture(scope="module")
def one_epoch_run(tiny_demo, tmp_path_factory):
    out = tmp_path_factory.mktemp("train") / "small.safetensors"
    result = CliRunner().invoke(cli(), ["train", *QUICK, "--data", str(tiny_demo), "--epochs", "1", "--out", str(out)])
    return out, result


def test_one_epoch_on_tiny_demo_writes_a_loadable_checkpoint(one_epoch_run, tiny_demo):
    from core.data.gitract import open_dataset

    out, result = one_epoch_run
    assert result.exit_code == 0, result.output
    assert "epoch 1/1" in result.output and f"best checkpoint {out}" in result.output
    model, meta = load_checkpoint(out)
    assert meta["model"] == "small" and meta["img_size"] == IMG and meta["epoch"] == 1
    assert set(meta["val_dsc"]) == {*ORGANS, "mean"} and 0 <= meta["val_dsc"]["mean"] <= 1
    assert meta["data_fingerprint"] == open_dataset(tiny_demo).fingerprint()
    assert meta["train_args"]["lr"] == 3e-4 and meta["train_args"]["weight_decay"] == 1e-3
    with torch.no_grad():
        assert torch.isfinite(model(torch.rand(1, 1, IMG, IMG))).all()
    assert resume_path_for(out).is_file()


def test_ctrl_c_mid_epoch_saves_state_and_resume_runs_the_remaining_steps(tiny_demo, tmp_path):
    out = tmp_path / "run.safetensors"

    def interrupt_after_first_step(event):
        if isinstance(event, Step) and event.step == 1:
            raise KeyboardInterrupt

    with pytest.raises(TrainingInterrupted) as caught:
        train(quick_config(tiny_demo, out), progress=interrupt_after_first_step)
    saved = load_training_state(caught.value.resume_path)
    assert (saved["epoch"], saved["step"]) == (0, 1)
    assert saved["scheduler"]["last_epoch"] == 1
    assert not out.exists()  # no epoch finished, so no best checkpoint yet

    events = []
    result = train(quick_config(tiny_demo, out, resume=caught.value.resume_path), progress=events.append)
    start = next(e for e in events if isinstance(e, TrainStart))
    epoch_start = next(e for e in events if isinstance(e, EpochStart))
    assert start.steps_per_epoch == 3 and epoch_start.steps == 2  # only the steps not yet done
    final = load_training_state(result.resume_path)
    assert final["scheduler"]["last_epoch"] == 3 == final["scheduler"]["T_max"]
    assert {int(s["step"]) for s in final["optimizer"]["state"].values()} == {3}  # AdamW went on counting
    assert read_checkpoint_meta(out)["epoch"] == 1


def test_interrupted_cli_says_how_to_resume_and_the_resumed_run_finishes(tiny_demo, tmp_path, monkeypatch):
    out = tmp_path / "cli.safetensors"
    args = ["train", *QUICK, "--data", str(tiny_demo), "--epochs", "2", "--out", str(out)]

    def ctrl_c_during_validation(*_args, **_kwargs):
        raise KeyboardInterrupt

    with monkeypatch.context() as patch:
        patch.setattr(core.training.loop, "evaluate_dsc", ctrl_c_during_validation)
        patch.setattr(sys, "argv", ["segadv", *args])
        interrupted = CliRunner().invoke(cli(), args)
    assert interrupted.exit_code == 130
    message = " ".join(interrupted.output.split())
    assert "interrupted; resume with: segadv train" in message
    command = shlex.split(message.split("resume with: ", 1)[1])
    assert command[-2:] == ["--resume", str(resume_path_for(out))]

    resumed = CliRunner().invoke(cli(), command[1:])
    assert resumed.exit_code == 0, resumed.output
    assert "epoch 2/2" in resumed.output and "epoch 1/2" not in resumed.output
    state = load_training_state(resume_path_for(out))
    assert state["scheduler"]["last_epoch"] == 6 and [h["epoch"] for h in state["history"]] == [2]
    assert read_checkpoint_meta(out)["epoch"] == 2


def test_a_finished_run_resumed_with_more_epochs_anneals_over_the_longer_run(one_epoch_run, tiny_demo, tmp_path):
    out = tmp_path / "longer.safetensors"
    shutil.copy(resume_path_for(one_epoch_run[0]), resume_path_for(out))
    events = []
    train(quick_config(tiny_demo, out, epochs=2, resume=resume_path_for(out)), progress=events.append)
    lrs = [e.lr for e in events if isinstance(e, Step)]
    # The 1-epoch run had annealed to 0 over its 3 steps; steps 4 to 6 follow the cosine over 6 steps.
    assert lrs == pytest.approx([3e-4 * (1 + math.cos(math.pi * step / 6)) / 2 for step in (4, 5, 6)], abs=1e-12)


def test_a_nan_loss_stops_training_and_leaves_the_best_checkpoint_untouched(one_epoch_run, tiny_demo, tmp_path):
    best = tmp_path / "best.safetensors"
    shutil.copy(one_epoch_run[0], best)
    before = best.read_bytes()
    with pytest.raises(TrainingError, match=r"loss became (nan|inf).*untouched"):
        train(quick_config(tiny_demo, best, lr=1e30))
    assert best.read_bytes() == before


def test_imagenet_weights_offline_fail_at_once_naming_none(tiny_demo, tmp_path, monkeypatch):
    def unreachable(*_args, **_kwargs):
        raise OSError("Network is unreachable")

    monkeypatch.setattr(core.training.loop.socket, "create_connection", unreachable)
    with pytest.raises(TrainingError, match="--encoder-weights none"):
        train(quick_config(tiny_demo, tmp_path / "x.safetensors", encoder_weights="imagenet"))


@pytest.mark.parametrize(
    "option, message",
    [
        (["--img-size", "100"], "multiple of 32"),
        # Refused before training, not by the checkpoint's writer after the first epoch.
        (["--img-size", "4128"], "image size 4128: expected a whole number of pixels from 1 to 4096"),
        (["--model", "unet9"], "unknown model 'unet9'; choose from vgg, resnext"),
        (["--epochs", "0"], "at least 1"),
        (["--schedule", "linear"], "unknown schedule 'linear'; choose from run, paper"),
        (["--log-every", "0"], "log-every must be at least 1, got 0"),
        (["--device", "tpu"], "unknown device 'tpu'"),
        (["--device", "cuda:3"], "'cuda:3'"),
        (["--noise-sigma", "2"], "noise sigma must be in [0, 1], got 2.0"),
    ],
)
def test_bad_options_give_one_line(tiny_demo, tmp_path, option, message):
    args = ["train", *QUICK, "--data", str(tiny_demo), "--out", str(tmp_path / "x.safetensors"), *option]
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


@pytest.mark.parametrize(
    "change, message",
    [
        # Another batch size or seed would replay another order of batches: refused, naming both values.
        (["--batch-size", "4"], "was saved by a run with batch size 8, not 4; resume with that run's --batch-size"),
        (["--seed", "1"], "was saved by a run with seed 0, not 1; resume with that run's --seed"),
        ("drop optimizer", "not a whole resume file (no 'optimizer' entry)"),
        ("other model", "does not fit this run (Error(s) in loading state_dict"),
    ],
    ids=["batch-size", "seed", "no-optimizer", "other-weights"],
)
def test_a_mismatched_or_broken_resume_file_gives_one_line_and_exit_2(
    one_epoch_run, tiny_demo, tmp_path, change, message
):
    resume = tmp_path / "x.resume.pt"
    args = [
        "train",
        *QUICK,
        "--data",
        str(tiny_demo),
        "--out",
        str(tmp_path / "x.safetensors"),
        "--resume",
        str(resume),
    ]
    state = load_training_state(resume_path_for(one_epoch_run[0]))
    if change == "drop optimizer":
        del state["optimizer"]
    elif change == "other model":
        state["model"] = {key: value[..., :1] if value.ndim else value for key, value in state["model"].items()}
    elif isinstance(change, list):
        args += change
    torch.save(state, resume)
    result = CliRunner().invoke(cli(), args)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output, result.output
    assert len(result.output.strip().splitlines()) == 1


def test_batch_dice_pushes_against_false_positives_on_slices_without_the_organ():
    from core.training.loop import make_loss

    target = torch.zeros(2, 3, 8, 8)
    target[1, :, 2:6, 2:6] = 1  # slice 0 holds no organ, slice 1 all three
    logits = torch.where(target > 0, 3.0, -3.0)
    logits[0, :, :4, :4] = 1.0  # the model paints organs on the empty slice

    def dice_gradient_on_the_false_positives(batch_dice):
        logits_ = logits.clone().requires_grad_(True)
        make_loss(batch_dice).dice(logits_, target).backward()
        return float(logits_.grad[0, :, :4, :4].abs().sum())

    # Per slice (the paper's loss) the Dice term of an empty slice has saturated at 1: no push back.
    assert dice_gradient_on_the_false_positives(batch_dice=False) < 1e-6
    assert dice_gradient_on_the_false_positives(batch_dice=True) > 1e-2


@pytest.mark.parametrize("noise_sigma", [0.0, 0.1], ids=["plain", "noise"])
def test_a_resumed_epoch_goes_on_with_the_next_batch_and_ends_where_an_uninterrupted_run_ends(
    tiny_demo, tmp_path, noise_sigma
):
    """Interrupted after step 1 of 3, the resumed run trains on batches 2 and 3 of the same order (the
    sampler's generator state at the epoch's start is saved) and, augmentation (and --noise-sigma's noise)
    included, ends with the very weights of a run that was never interrupted."""

    def losses(events):
        return [(e.epoch, e.step, e.loss) for e in events if isinstance(e, Step)]

    whole = []
    config = partial(quick_config, epochs=2, log_every=1, noise_sigma=noise_sigma)
    train(config(tiny_demo, tmp_path / "whole.safetensors"), progress=whole.append)

    def interrupt_after_first_step(event):
        if isinstance(event, Step) and event.step == 1:
            raise KeyboardInterrupt

    out = tmp_path / "parts.safetensors"
    with pytest.raises(TrainingInterrupted) as caught:
        train(config(tiny_demo, out), progress=interrupt_after_first_step)
    assert load_training_state(caught.value.resume_path)["step"] == 1
    resumed = []
    train(config(tiny_demo, out, resume=caught.value.resume_path), progress=resumed.append)

    # Each step's loss depends on its batch: steps 2 and 3 of epoch 1, then all of epoch 2, match.
    expected = [(epoch, step - 1 if epoch == 1 else step, loss) for epoch, step, loss in losses(whole)[1:]]
    assert losses(resumed) == expected
    final_whole = load_training_state(resume_path_for(tmp_path / "whole.safetensors"))["model"]
    final_parts = load_training_state(resume_path_for(out))["model"]
    assert all(torch.equal(final_whole[key], final_parts[key]) for key in final_whole)


def test_the_loss_is_read_every_log_every_steps_and_the_paper_schedule_is_the_papers(tiny_demo, tmp_path):
    events = []
    result = train(
        quick_config(tiny_demo, tmp_path / "p.safetensors", log_every=2, schedule="paper"), progress=events.append
    )
    steps = [e for e in events if isinstance(e, Step)]
    assert [e.step for e in steps] == [1, 2, 3]
    assert [e.loss is not None for e in steps] == [False, True, True]  # every 2 steps and the epoch's last
    assert [e.images_per_s is not None for e in steps] == [False, True, True]
    scheduler = load_training_state(result.resume_path)["scheduler"]
    assert (scheduler["T_max"], scheduler["eta_min"], scheduler["last_epoch"]) == (7081, 5e-6, 3)
    assert steps[-1].lr == pytest.approx(5e-6 + (3e-4 - 5e-6) * (1 + math.cos(math.pi * 3 / 7081)) / 2)


def test_an_fp16_run_resumes_from_a_state_saved_without_a_grad_scaler():
    # A CPU or bf16 run saves the disabled scaler's empty state; loading it raw is the crash.
    enabled = torch.amp.GradScaler("cpu", init_scale=1024.0)
    with pytest.raises(RuntimeError, match="source state dict is empty"):
        enabled.load_state_dict(torch.amp.GradScaler("cpu", enabled=False).state_dict())
    load_scaler_state(enabled, torch.amp.GradScaler("cpu", enabled=False).state_dict())
    load_scaler_state(enabled, None)  # resume files of older versions
    assert enabled.get_scale() == 1024.0
    load_scaler_state(enabled, torch.amp.GradScaler("cpu", init_scale=8.0).state_dict())
    assert enabled.get_scale() == 8.0


def test_the_cpu_trains_in_fp32_and_a_missing_gpu_is_one_segadv_error(tiny_demo, tmp_path):
    assert amp_dtype_for(torch.device("cpu")) is None
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    with pytest.raises(SegadvError, match="'cuda:1'"):
        train(quick_config(tiny_demo, tmp_path / "x.safetensors", device="cuda:1"))


def test_noise_sigma_trains_on_noisy_slices_and_records_it(tiny_demo, tmp_path):
    """One step each: the same seed with and without --noise-sigma gives other weights, and the checkpoint
    says which it was."""
    weights = {}
    for sigma in (0.0, 0.25):
        out = tmp_path / f"noise-{sigma}.safetensors"
        train(quick_config(tiny_demo, out, limit_slices=8, augment=False, noise_sigma=sigma))
        model, meta = load_checkpoint(out)
        assert meta["train_args"]["noise_sigma"] == sigma
        weights[sigma] = model.state_dict()
    assert any(not torch.equal(weights[0.0][key], weights[0.25][key]) for key in weights[0.0])
