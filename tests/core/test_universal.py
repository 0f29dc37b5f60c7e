"""Universal perturbations (``core.attacks.universal``, ``segadv universal``, ``segadv attack --method universal``):
the box and the eps ball hold, eps 0 changes nothing, erasing an organ on a trained model shrinks that
organ more than the others on held-out slices, and bad input is one line."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.attacks.config import AttackConfig
from core.attacks.universal import (
    DeltaError,
    UniversalDelta,
    apply_delta,
    craft_universal,
    load_delta,
    save_delta,
    universal_report,
)
from core.data.gitract import GITractDataset, select_slices
from core.errors import SegadvError
from core.evaluation.scoring import batches, evaluate
from core.models.checkpoints import load_checkpoint, save_checkpoint
from core.models.registry import build_model

IMG_SIZE = 64


@pytest.fixture(scope="module")
def dataset(tiny_demo):
    return GITractDataset(tiny_demo)


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return build_model("small").eval()


def test_the_perturbation_stays_in_the_eps_ball_and_the_box(model, dataset):
    records = select_slices(dataset, "train")[:8]
    # A step as large as eps: the delta reaches the bound, so the projection is what keeps it there.
    made = craft_universal(model, records, IMG_SIZE, ["stomach"], 0.05, epochs=2, batch_size=4, step_size=0.05)
    assert made.delta.shape == (IMG_SIZE, IMG_SIZE) and made.meta["steps"] == 4
    bound = torch.tensor(0.05)  # the eps ball in the delta's own float32
    assert made.delta.abs().max() == bound
    for _, images, _ in batches(records, IMG_SIZE, 8, "cpu"):
        adversarial = apply_delta(images, made.delta)
        assert adversarial.min() >= 0 and adversarial.max() <= 1
        assert (adversarial - images).abs().max() <= 0.05 + 1e-7


def test_eps_zero_changes_nothing(model, dataset, tmp_path):
    records = select_slices(dataset, "test")
    made = craft_universal(
        model, select_slices(dataset, "train")[:4], IMG_SIZE, ["stomach"], 0.0, epochs=1, batch_size=4
    )
    assert not made.delta.any()
    path = save_delta(tmp_path / "zero.safetensors", made)
    result = evaluate(model, records, IMG_SIZE, AttackConfig(method="universal", eps=0.0, delta=str(path)))
    for row in result.rows:
        assert row.linf == 0.0
        np.testing.assert_array_equal(row.dsc_adv, row.dsc_clean)


def test_a_delta_saved_and_loaded_is_the_same_and_scales_to_eps(tmp_path):
    delta = torch.linspace(-0.02, 0.02, 16 * 16).reshape(16, 16)
    path = save_delta(tmp_path / "d.safetensors", UniversalDelta(delta, 0.02, ("stomach",), {"epochs": 3}))
    loaded = load_delta(path)
    assert torch.equal(loaded.delta, delta) and loaded.eps == 0.02 and loaded.organs == ("stomach",)
    assert loaded.meta["epochs"] == 3 and loaded.img_size == 16
    torch.testing.assert_close(loaded.scaled(0.01), delta / 2)
    checkpoint = save_checkpoint(tmp_path / "model.safetensors", build_model("small"), img_size=16)
    with pytest.raises(DeltaError, match="model.safetensors is not a segadv universal perturbation"):
        load_delta(checkpoint)


@pytest.fixture(scope="module")
def trained():
    """A trained model for free: the bundled demo checkpoint (``small`` at 128 px), which never saw the
    tiny demo data set."""
    from core.paths import demo_checkpoint

    model, meta = load_checkpoint(demo_checkpoint())
    return model, int(meta["img_size"])


def test_erasing_the_stomach_shrinks_it_more_than_the_other_organs_on_held_out_slices(trained, dataset):
    model, size = trained
    made = craft_universal(model, select_slices(dataset, "train"), size, ["stomach"], 0.05, epochs=3, batch_size=4)
    report = universal_report(model, select_slices(dataset, "test", organs_only=False), size, made, score="all")
    assert report.present["stomach"] > 0
    stomach = report.area_ratio("stomach")
    others = [report.area_ratio(organ) for organ in ("large_bowel", "small_bowel")]
    assert stomach < 1 and all(stomach < ratio for ratio in others if ratio is not None), report.to_dict()


@pytest.fixture(scope="module")
def checkpoint(model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("universal-ck") / "small64.safetensors", model, img_size=IMG_SIZE)


def test_cli_crafts_reports_and_attack_applies_the_saved_delta(run, checkpoint, tiny_demo):
    made = run(
        "universal",
        "-c",
        checkpoint,
        "--data",
        tiny_demo,
        "--organ",
        "stomach",
        "--organ",
        "small_bowel",
        "--eps",
        "0.04",
        "--epochs",
        "1",
        "--batch-size",
        "8",
        "--out",
        "d.safetensors",
        "--json",
        "u.json",
    )
    assert made.exit_code == 0, made.output
    report = json.loads(open("u.json").read())
    assert report["organs"] == ["small_bowel", "stomach"] and report["eps"] == 0.04
    assert load_delta("d.safetensors").meta["checkpoint"] == str(checkpoint)
    # Without --eps the delta applies as saved; its DSC is the report's (both from score_slices).
    applied = run(
        "attack",
        "-c",
        checkpoint,
        "--data",
        tiny_demo,
        "--method",
        "universal",
        "--delta",
        "d.safetensors",
        "--json",
        "a.json",
    )
    assert applied.exit_code == 0, applied.output
    attacked = json.loads(open("a.json").read())
    assert attacked["config"]["eps"] == 0.04 and attacked["config"]["delta"] == "d.safetensors"
    assert attacked["summary"] == report["summary"]


@pytest.mark.parametrize(
    "args, named",
    [
        (["universal", "--organ", "liver"], "liver"),
        (["attack", "--method", "universal"], "--delta"),
        (["attack", "--method", "universal", "--delta", "nowhere.safetensors"], "nowhere.safetensors"),
    ],
)
def test_bad_input_is_one_line_exit_2(run, checkpoint, tiny_demo, args, named):
    result = run(*args, "-c", checkpoint, "--data", tiny_demo)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], result.stderr


def test_a_delta_of_the_wrong_size_is_one_line_exit_2(run, checkpoint, tiny_demo, tmp_path):
    save_delta(tmp_path / "big.safetensors", UniversalDelta(torch.zeros(128, 128), 0.03, ("stomach",)))
    result = run("attack", "-c", checkpoint, "--data", tiny_demo, "--method", "universal", "--delta", "big.safetensors")
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "128 x 128" in lines[0] and "64 x 64" in lines[0], result.stderr
    assert isinstance(DeltaError("x"), SegadvError)
