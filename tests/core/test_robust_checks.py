"""The checks of ``core.evaluation.robust_checks`` (Carlini et al.) and ``segadv robust --checks``: a model whose input
gradient is zero everywhere fails them, the plain demo model passes them, and each verdict follows from
its numbers."""

from __future__ import annotations

import json

import pytest
import torch
from typer.testing import CliRunner

from core.attacks.config import AttackConfig
from core.data.gitract import open_dataset, select_slices
from core.evaluation.robust_checks import LARGE_EPS, _converged, _iterative, _monotone, run_checks
from core.models.checkpoints import load_checkpoint
from core.paths import demo_checkpoint
from core.results import SliceResult

EPS = 0.009
PGD = AttackConfig.for_method("pgd", steps=5)


class ZeroGradient(torch.nn.Module):
    """The demo model behind 8-bit quantisation: the same predictions, but round() has a zero derivative,
    so every input gradient is 0. A defence that only masks gradients looks like this to an attack."""

    def __init__(self, inner: torch.nn.Module):
        super().__init__()
        self.inner = inner

    def forward(self, x):
        return self.inner(torch.round(x * 255) / 255)


@pytest.fixture(scope="module")
def demo():
    model, meta = load_checkpoint(demo_checkpoint())
    return model, meta["img_size"]


@pytest.fixture(scope="module")
def records(tiny_demo):
    return select_slices(open_dataset(tiny_demo), "test", organs_only=True, test_fraction=0.1, seed=0)[:3]


def test_a_masked_gradient_fails_the_checks_that_catch_it(demo, records):
    plain, img_size = demo
    report = run_checks(
        ZeroGradient(plain).eval(),
        records,
        img_size,
        PGD,
        [EPS],
        label="masked",
        source=plain,
        source_label="demo_small",
    )
    assert not report.passed
    verdicts = {check.name: check.verdict for check in report.checks}
    assert verdicts["gradients"] == "FAIL" and report.check("gradients").numbers["zero_gradient_fraction"] == 1.0
    # Nothing but PGD's random start moves the image, so the plain model's transferred attack does better.
    transfer = report.check("transfer").numbers
    assert verdicts["transfer"] == "FAIL" and transfer["transfer"] < transfer["white_box"] - 0.05
    assert verdicts["large_eps"] == "FAIL" and report.check("large_eps").numbers["robust_dsc"] > 0.05
    # Random squares need no gradient: Square finds what PGD cannot.
    black_box = report.check("black_box").numbers
    assert verdicts["black_box"] == "FAIL" and black_box["square"] < black_box["attack"] - black_box["tolerance"]
    assert set(report.to_dict()["checks"][0]) >= {"name", "verdict", "numbers", "guards"}


def test_segadv_robust_checks_pass_on_the_plain_demo_model_and_land_in_the_json(tiny_demo, tmp_path):
    from segadv_tui.cli import _register_commands, app

    _register_commands()
    args = [
        "robust",
        "--data",
        str(tiny_demo),
        "--method",
        "pgd",
        "--steps",
        "5",
        "--eps",
        str(EPS),
        "--limit",
        "3",
        "--checks",
        "--out-dir",
        str(tmp_path),
    ]
    result = CliRunner().invoke(app, args, env={"COLUMNS": "250"})
    assert result.exit_code == 0, result.output
    assert "checks: 6 passed, 0 failed, 1 not applicable" in result.output
    assert "demo_small.safetensors is the transfer source itself" in result.output
    (report,) = json.loads((tmp_path / "robust.json").read_text())["checks"]
    assert report["passed"] and {check["name"]: check["verdict"] for check in report["checks"]} == {
        "gradients": "pass",
        "monotone": "pass",
        "large_eps": "pass",
        "iterative": "pass",
        "transfer": "n/a",
        "black_box": "pass",
        "converged": "pass",
    }
    assert report["robust_dsc"][f"{LARGE_EPS:g}"] <= 0.05 < report["robust_dsc"][f"{EPS:g}"]
    assert all(check["guards"] for check in report["checks"])


def test_verdicts_follow_from_the_numbers():
    assert _monotone({0.003: 0.6, 0.009: 0.4, 0.25: 0.0}).passed
    rising = _monotone({0.003: 0.4, 0.009: 0.45, 0.25: 0.0})
    assert not rising.passed and rising.numbers["rises"][0]["from_eps"] == 0.003
    assert _monotone({0.003: 0.4, 0.009: 0.405}).passed  # within the tolerance
    assert not _iterative(PGD, {0.009: 0.5}, {0.009: 0.45}).passed
    assert _iterative(AttackConfig(), {0.009: 0.5}, {0.009: 0.45}).passed is None  # FGSM against itself

    def row(dsc):
        return SliceResult(
            slice_id="s",
            eps=EPS,
            dsc_clean=torch.ones(3).numpy(),
            dsc_adv=torch.full((3,), dsc).numpy(),
            linf=EPS,
            l2=0.0,
            has_organs=True,
            scored=True,
        )

    base = [row(0.5), row(0.7)]
    assert _converged(PGD, EPS, base, 0.595, [row(0.5), row(0.7)]).passed
    assert not _converged(PGD, EPS, base, 0.55, base).passed  # more steps still lower it
    assert not _converged(PGD, EPS, base, 0.6, [row(0.4), row(0.7)]).passed  # a restart finds worse
