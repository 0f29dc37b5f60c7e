"""Adversarial training (``--adv``): the attack's passes leave batch norm alone, a tiny run trains on
adversarial batches and records its defence, resume goes on with the eps ramp, catastrophic overfitting
is recognised, and bad options are one line. The 2-process torchrun run is in test_ddp.py."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from core.errors import OptionError, SegadvError
from core.models.checkpoints import load_checkpoint, load_training_state, read_checkpoint_meta, resume_path_for
from core.models.registry import build_model
from core.training.adversarial import CHECK_PGD_STEPS, Defence, adversarial_batch, check_overfitting, make_defence
from core.training.loop import EpochEnd, Step, TrainConfig, TrainingError, TrainingInterrupted, train

IMG = 64
# 24 training slices in batches of 8: 3 steps per epoch; 4 validation slices.
QUICK = ["--model", "small", "--encoder-weights", "none", "--img-size", str(IMG), "--batch-size", "8", "--workers", "0"]
EPS = 0.03


def cli():
    from segadv_tui.cli import _register_commands, app

    _register_commands()
    return app


def quick_config(data, out, **changes) -> TrainConfig:
    settings = dict(
        model="small", data=data, out=out, encoder_weights="none", epochs=1, batch_size=8, img_size=IMG, workers=0
    )
    return TrainConfig(**{**settings, **changes})


def fgsm_rs(**changes) -> Defence:
    return make_defence("fgsm-rs", EPS, **changes)


def test_the_attack_leaves_batch_norm_statistics_and_train_mode_alone_and_only_the_ratio_is_attacked():
    torch.manual_seed(0)
    model = build_model("small").train()
    images, masks = torch.rand(4, 1, IMG, IMG), (torch.rand(4, 3, IMG, IMG) > 0.7).float()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    defence = make_defence("pgd", EPS, steps=2, ratio=0.5)
    generator = torch.Generator().manual_seed(1)
    mixed = adversarial_batch(model, images, masks, defence, EPS, generator=generator)

    assert model.training
    assert all(torch.equal(before[key], value) for key, value in model.state_dict().items())  # running stats too
    assert all(p.grad is None for p in model.parameters())  # gradients were taken for the input only
    assert torch.equal(mixed[2:], images[2:])  # ratio 0.5 of 4: the first 2 are attacked
    delta = (mixed[:2] - images[:2]).abs()
    assert delta.amax() <= EPS + 1e-6 and delta.amax() > EPS / 2
    assert mixed.min() >= 0 and mixed.max() <= 1
    # A seeded generator gives the same start, so the same batch again.
    again = adversarial_batch(model, images, masks, defence, EPS, generator=torch.Generator().manual_seed(1))
    assert torch.equal(again, mixed)


def test_the_eps_ramp_and_the_recipes_follow_the_papers():
    defence = fgsm_rs(warmup_epochs=2)
    assert (defence.steps, defence.step_size) == (1, pytest.approx(1.25 * EPS))  # Wong et al.'s alpha
    # 3 steps per epoch, 2 epochs of warmup: eps / 6 per step, full from the 6th step on.
    ramp = [defence.eps_at(epoch, step, 3) for epoch in range(3) for step in range(3)]
    assert ramp == pytest.approx([EPS * min(1, k / 6) for k in range(1, 10)])
    assert not defence.full_eps_from(1) and defence.full_eps_from(2)
    pgd = make_defence("pgd", EPS, steps=4)
    assert (pgd.steps, pgd.step_size, pgd.eps_at(0, 0, 3)) == (4, pytest.approx(2.5 * EPS / 4), EPS)
    assert [fgsm_rs(ratio=0.5).adversarial_count(n) for n in (1, 2, 3, 8)] == [1, 1, 2, 4]


@pytest.mark.parametrize(
    "history, pgd, fgsm, collapsed",
    [
        ([(0.6, 0.4)], 0.15, 0.58, True),  # PGD fell to under half of its best while FGSM held: the signature
        ([(0.6, 0.4)], 0.15, 0.30, False),  # both fell: a worse model, not a single-step blind spot
        ([(0.6, 0.4)], 0.35, 0.70, False),  # PGD held
        ([(0.3, 0.1), (0.5, 0.3)], 0.4, 0.8, False),  # still improving
        ([], 0.0, 0.9, False),  # the first epoch has nothing to collapse from
    ],
)
def test_catastrophic_overfitting_is_a_pgd_collapse_while_fgsm_holds(history, pgd, fgsm, collapsed):
    earlier = [check_overfitting(0.8, f, p, [], eps=EPS, slices=8).as_dict() for f, p in history]
    result = check_overfitting(0.8, fgsm, pgd, earlier, eps=EPS, slices=8)
    assert result.collapsed is collapsed and result.pgd_steps == CHECK_PGD_STEPS


def test_a_tiny_adversarial_run_changes_the_weights_and_records_the_defence(tiny_demo, tmp_path):
    plain, defended = tmp_path / "plain.safetensors", tmp_path / "at.safetensors"
    train(quick_config(tiny_demo, plain))
    args = [
        "train",
        *QUICK,
        "--data",
        str(tiny_demo),
        "--epochs",
        "1",
        "--out",
        str(defended),
        "--adv",
        "fgsm-rs",
        "--adv-eps",
        str(EPS),
        "--adv-ratio",
        "0.5",
    ]
    result = CliRunner().invoke(cli(), args, env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    assert "adversarial training: fgsm-rs at eps 0.03" in result.output
    assert "robust check on 4 validation slices at eps 0.03" in result.output

    # Same seed, same batches and augmentations: only the adversarial images make the weights differ.
    plain_model, plain_meta = load_checkpoint(plain)
    model, meta = load_checkpoint(defended)
    plain_weights, weights = plain_model.state_dict(), model.state_dict()
    assert any(not torch.equal(plain_weights[key], weights[key]) for key in weights)
    assert plain_meta["defence"] is None
    defence = meta["defence"]
    assert {key: defence[key] for key in ("method", "eps", "steps", "loss", "ratio", "warmup_epochs")} == {
        "method": "fgsm-rs",
        "eps": EPS,
        "steps": 1,
        "loss": "focal+dice",
        "ratio": 0.5,
        "warmup_epochs": 0.0,
    }
    assert defence["check"]["slices"] == 4 and 0 <= defence["check"]["pgd_dsc"] <= 1
    assert defence["collapsed_epochs"] == []
    assert meta["train_args"]["adv"] == "fgsm-rs"

    shown = CliRunner().invoke(cli(), ["info", str(defended)], env={"COLUMNS": "200"})
    assert shown.exit_code == 0 and "defence: FGSM-RS AT eps 0.03" in shown.output
    assert "no catastrophic overfitting seen" in shown.output

    from segadv_tui.catalog import scan

    defences = {entry.path.name: entry.defence for entry in scan([tmp_path]).checkpoints}
    assert defences == {"at.safetensors": "FGSM-RS AT eps 0.03", "plain.safetensors": None}


def test_resume_after_an_interrupt_goes_on_with_the_eps_ramp_and_ends_as_an_uninterrupted_run(tiny_demo, tmp_path):
    settings = dict(epochs=2, log_every=1, adv="fgsm-rs", adv_eps=EPS, adv_warmup=2)

    def ramp(events):
        return [(e.epoch, e.step, e.adv_eps) for e in events if isinstance(e, Step)]

    whole = []
    train(quick_config(tiny_demo, tmp_path / "whole.safetensors", **settings), progress=whole.append)
    assert [eps for *_, eps in ramp(whole)] == pytest.approx([EPS * k / 6 for k in range(1, 7)])
    # Epoch 1 ended before eps was full: not a candidate for the best checkpoint.
    assert [e.full_eps for e in whole if isinstance(e, EpochEnd)] == [False, True]
    assert read_checkpoint_meta(tmp_path / "whole.safetensors")["epoch"] == 2

    def interrupt_after_second_step(event):
        if isinstance(event, Step) and event.step == 2:
            raise KeyboardInterrupt

    out = tmp_path / "parts.safetensors"
    with pytest.raises(TrainingInterrupted) as caught:
        train(quick_config(tiny_demo, out, **settings), progress=interrupt_after_second_step)
    resumed = []
    train(quick_config(tiny_demo, out, resume=caught.value.resume_path, **settings), progress=resumed.append)
    # The ramp goes on from step 3 of 6, and the random starts are the same: the same final weights.
    assert [eps for *_, eps in ramp(resumed)] == pytest.approx([EPS * k / 6 for k in range(3, 7)])
    final_whole = load_training_state(resume_path_for(tmp_path / "whole.safetensors"))["model"]
    final_parts = load_training_state(resume_path_for(out))["model"]
    assert all(torch.equal(final_whole[key], final_parts[key]) for key in final_whole)

    # A resume with other --adv settings would mislabel the checkpoint: refused, naming both.
    with pytest.raises(TrainingError, match="defence method fgsm-rs, eps 0.03.*not none"):
        train(quick_config(tiny_demo, out, epochs=3, resume=resume_path_for(out)))


@pytest.mark.parametrize(
    "option, message",
    [
        (["--adv", "fgsm"], "unknown adversarial training method 'fgsm'; choose from fgsm-rs, pgd"),
        (["--adv", "pgd"], "--adv pgd needs --adv-eps"),
        (["--adv-eps", "0.01"], "--adv-eps needs --adv (fgsm-rs or pgd)"),
        (["--adv", "pgd", "--adv-eps", "2"], "--adv-eps must be in (0, 1], got 2.0"),
        (
            ["--adv", "pgd", "--adv-eps", "0.01", "--adv-steps", "0"],
            "--adv-steps must be a whole number of at least 1, got 0",
        ),
        (["--adv", "fgsm-rs", "--adv-eps", "0.01", "--adv-steps", "3"], "--adv-steps 3 needs --adv pgd"),
        (["--adv", "pgd", "--adv-eps", "0.01", "--adv-ratio", "1.5"], "--adv-ratio must be in (0, 1], got 1.5"),
        (["--adv", "pgd", "--adv-eps", "0.01", "--adv-loss", "l2"], "unknown loss 'l2'"),
        (
            ["--adv", "pgd", "--adv-eps", "0.01", "--adv-warmup", "-1"],
            "--adv-warmup must be a number of epochs >= 0, got -1.0",
        ),
        (
            ["--adv", "pgd", "--adv-eps", "0.01", "--adv-warmup", "3"],
            "--adv-warmup 3 is longer than the run (--epochs 1)",
        ),
    ],
)
def test_bad_adversarial_options_give_one_line(tiny_demo, tmp_path, option, message):
    args = [
        "train",
        *QUICK,
        "--data",
        str(tiny_demo),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "x.safetensors"),
        *option,
    ]
    result = CliRunner().invoke(cli(), args, env={"COLUMNS": "300"})
    output = " ".join(result.output.split())
    assert result.exit_code == 2 and message in output and "Traceback" not in output
    assert not (tmp_path / "x.safetensors").exists()


def test_make_defence_errors_are_option_errors():
    with pytest.raises(OptionError, match="'fgsm'"):
        make_defence("fgsm", 0.01)
    assert issubclass(OptionError, SegadvError) and make_defence(None, None) is None
