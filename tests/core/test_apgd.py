"""APGD, the best iterate, per-slice random starts and the worst-case ensemble.

References: the paper's checkpoints by hand, a plain-Python scalar APGD (Algorithm 1 of Croce & Hein
2020) on a quadratic, a per-pixel linear model (a batch is then exactly its slices one by one), and
properties on a real random-weight smp model.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from attack_models import PixelLinear, attacked_alone

from core.attacks.apgd import ApgdTrace, apgd, apgd_stage, checkpoints, stage_steps
from core.attacks.config import ENSEMBLE, AttackConfig
from core.attacks.ensemble import passes_per_slice
from core.attacks.iterative import random_start_point
from core.attacks.runner import AttackContext, run_attack
from core.errors import OptionError
from core.evaluation.scoring import attack_slice
from core.metrics import dice_per_organ, mean_dice_on_device, mean_dsc
from core.models.inference import predict


class Repeat(torch.nn.Module):
    """The input as its own three 'logits': lets a test choose the objective as a function of x."""

    def forward(self, image):
        return image.expand(-1, 3, -1, -1)


def _smooth(generator, shape, kernel):
    n, c, h, w = shape
    return torch.nn.functional.avg_pool2d(
        torch.rand(n, c, h + kernel - 1, w + kernel - 1, generator=generator), kernel, 1
    )


@pytest.fixture(scope="module")
def slices(model):
    """Three image-like 48 x 48 slices and, as their truth, the random model's own clean prediction
    (clean DSC 1, so every attack has room to lower it)."""
    generator = torch.Generator().manual_seed(3)
    image = _smooth(generator, (3, 1, 48, 48), 9)
    image = (image - image.amin()) / (image.amax() - image.amin())
    return (
        image,
        predict(model, image).float(),
        ["case1_day1_slice_0001", "case1_day1_slice_0002", "case2_day3_slice_0040"],
    )


# ---------------------------------------------------------------------------------------------------
# the step-size schedule


def test_checkpoints_are_the_papers():
    # p_j = 0, 0.22, 0.41, 0.57, 0.70, 0.80, 0.87, 0.93, 0.99 (Croce & Hein 2020, section 3.2)
    assert checkpoints(100) == [0, 22, 41, 57, 70, 80, 87, 93, 99]
    assert checkpoints(10) == [0, 3, 5, 6, 7, 8, 9, 10]
    assert checkpoints(1) == [0, 1]
    assert stage_steps(100, 3) == [30, 30, 40] and stage_steps(100, 1) == [100] and stage_steps(3, 3) == [1, 1, 1]


def _scalar_apgd(clean, start, eps, steps, f, df, marks):
    """Algorithm 1 of the paper for one pixel, in plain Python: the eta used at each step and x_max."""
    low, high = max(clean - eps, 0.0), min(clean + eps, 1.0)
    project = lambda v: min(max(v, low), high)  # noqa: E731
    sign = lambda v: (v > 0) - (v < 0)  # noqa: E731
    eta, x = 2 * eps, project(start)
    x_previous, f_previous = x, f(x)
    x_max, f_max = x, f(x)
    f_max_at_mark, halved_at_mark, last_mark, increases = f_max, False, 0, 0
    etas = []
    for k in range(steps):
        etas.append(eta)
        z = project(x + eta * sign(df(x)))
        new = z if k == 0 else project(x + 0.75 * (z - x) + 0.25 * (x - x_previous))
        x_previous, x = x, new
        increases += f(x) > f_previous
        f_previous = f(x)
        if f(x) > f_max:
            x_max, f_max = x, f(x)
        if k + 1 in marks:
            halve = increases < 0.75 * (k + 1 - last_mark) or (not halved_at_mark and f_max <= f_max_at_mark)
            if halve:
                eta, x, f_previous = eta / 2, x_max, f_max
            halved_at_mark, f_max_at_mark, last_mark, increases = halve, f_max, k + 1, 0
    return etas, x_max


def test_step_size_schedule_on_a_quadratic_matches_the_papers_algorithm():
    # f(x) = -(x - c)^2 on one pixel around 0.5 with eps 0.1: optimum inside the ball (c = 0.5371) for
    # the first slice, outside it (c = 0.93, best point the ball's edge 0.6) for the second.
    centres = (0.5371, 0.93)
    image = torch.full((2, 1, 1, 1), 0.5, dtype=torch.float64)
    centre = torch.tensor(centres, dtype=torch.float64).view(2, 1, 1, 1)

    def objective(logits, step):
        return -((logits[:, :1] - centre) ** 2).flatten(1).sum(1)

    steps, eps = 20, 0.1
    marks = [5, 9, 12, 14, 16, 18, 19]  # ceil(20 p_j), by hand
    assert [w for w in checkpoints(steps) if 0 < w < steps] == marks
    trace = ApgdTrace()
    result = apgd_stage(Repeat(), image, image, eps, steps, objective, trace=trace)
    etas = torch.stack(trace.step_sizes).numpy()  # (steps, 2)
    for i, c in enumerate(centres):
        expected_etas, expected_best = _scalar_apgd(
            0.5, 0.5, eps, steps, lambda v: -((v - c) ** 2), lambda v: -2 * (v - c), marks
        )
        np.testing.assert_allclose(etas[:, i], expected_etas, rtol=0, atol=1e-15)
        assert result.best_x[i].item() == pytest.approx(expected_best, abs=1e-12)
        # eta starts at 2 eps, only halves, and only right after a checkpoint
        assert etas[0, i] == pytest.approx(2 * eps)
        for k in range(1, steps):
            assert etas[k, i] in (etas[k - 1, i], etas[k - 1, i] / 2)
            if etas[k, i] != etas[k - 1, i]:
                assert k in marks
    assert abs(result.best_x[0].item() - centres[0]) < 0.01  # converged inside the ball
    assert result.best_x[1].item() == pytest.approx(0.6)  # the edge of the ball
    # Stuck on the edge, the loss never rises again: eta halves at every checkpoint.
    assert all(trace.halved[m][1] for m in marks)
    assert etas[-1, 1] == pytest.approx(2 * eps / 2 ** len(marks))  # the last mark, 19, comes before step 20


# ---------------------------------------------------------------------------------------------------
# the best iterate and the ball


def test_mean_dice_on_device_equals_the_scored_mean():
    generator = torch.Generator().manual_seed(0)
    pred = torch.rand(6, 3, 8, 8, generator=generator) > 0.6
    target = torch.rand(6, 3, 8, 8, generator=generator) > 0.7
    pred[0], target[0] = False, False  # every organ empty in both
    target[1, 1], pred[2, 2] = False, False  # prediction without truth; truth without prediction
    pred[3, 0] = target[3, 0] = False  # one organ empty in both
    for empty in ("one", "skip", "zero"):
        expected = mean_dsc(dice_per_organ(pred, target, empty))
        np.testing.assert_allclose(mean_dice_on_device(pred, target, empty).numpy(), expected, rtol=1e-6)


@pytest.mark.parametrize("method", ["bim", "pgd", "apgd"])
def test_best_iterate_is_never_worse_than_the_last_and_is_scored_as_returned(model, slices, method):
    image, truth, ids = slices
    eps = 0.02
    last = attack_slice(
        model, image, truth, AttackConfig.for_method(method, eps=eps, steps=6, best_iterate=False), ids=ids
    )
    best_config = AttackConfig.for_method(method, eps=eps, steps=6, best_iterate=True)
    best = attack_slice(model, image, truth, best_config, ids=ids)
    for b, lst in zip(best, last):
        assert b.mean_adv <= lst.mean_adv
    assert np.mean([b.mean_adv for b in best]) < 0.9  # the attack did something
    # the prediction the tracker kept is the model's prediction of the point it returned
    output = run_attack(model, image, truth, best_config, AttackContext(ids=ids, reference=truth))
    assert torch.equal(output.adv_pred, predict(model, output.adversarial))
    np.testing.assert_array_equal(np.stack([b.dsc_adv for b in best]), dice_per_organ(output.adv_pred, truth))


def _methods():
    return [
        AttackConfig(eps=0.03),
        AttackConfig.for_method("bim", eps=0.03, steps=3, best_iterate=True),
        AttackConfig.for_method("pgd", eps=0.03, steps=3),
        AttackConfig.for_method("apgd", eps=0.03, steps=4, loss="js"),
        AttackConfig.for_method("apgd", eps=0.03, steps=4, loss="seg-bce", radii=(2, 1.5, 1)),
        AttackConfig.for_method("erase", eps=0.03, steps=3),
        AttackConfig.for_method("ensemble", eps=0.03, steps=3),
    ]


@pytest.mark.parametrize("config", _methods(), ids=lambda c: c.method_label)
def test_every_method_stays_in_the_eps_ball_and_the_box_and_leaves_the_input_alone(config):
    # The per-pixel model makes every method cheap; the ball is a property of the projection, not of the model.
    model = PixelLinear()
    generator = torch.Generator().manual_seed(5)
    image = torch.rand(2, 1, 16, 16, generator=generator)
    image[0, 0, :4] = 0.0
    image[1, 0, :4] = 1.0  # pixels on the box's faces
    truth = (torch.rand(2, 3, 16, 16, generator=generator) > 0.5).float()
    before = image.clone()
    output = run_attack(model, image, truth, config, AttackContext(ids=["a", "b"], reference=truth))
    assert (output.adversarial - image).abs().max() <= config.eps + 1e-6
    assert output.adversarial.min() >= 0 and output.adversarial.max() <= 1
    assert torch.equal(image, before)


# ---------------------------------------------------------------------------------------------------
# a batch is its slices one by one; random starts per slice


def test_random_start_depends_on_the_slice_not_on_the_batch():
    image = torch.full((3, 1, 8, 8), 0.5)
    together = random_start_point(image, 0.1, seed=7, ids=["a", "b", "c"])
    alone = torch.cat([random_start_point(image[:1], 0.1, seed=7, ids=[i]) for i in "abc"])
    assert torch.equal(together, alone)
    assert not torch.equal(together[0], together[1])
    assert not torch.equal(together, random_start_point(image, 0.1, seed=8, ids=["a", "b", "c"]))
    assert (together - image).abs().max() <= 0.1


@pytest.mark.parametrize(
    "config",
    [
        AttackConfig.for_method("apgd", eps=0.05, steps=12, loss="masked-bce", radii=(2, 1.5, 1)),
        AttackConfig.for_method("pgd", eps=0.05, steps=5, loss="cos-bce", best_iterate=True),
        AttackConfig.for_method("ensemble", eps=0.05, steps=6),
    ],
    ids=["apgd", "pgd", "ensemble"],
)
def test_batch_equals_slices_one_by_one_exactly_on_a_per_pixel_model(config):
    model = PixelLinear()
    generator = torch.Generator().manual_seed(6)
    image = torch.rand(3, 1, 12, 12, generator=generator)
    truth = (torch.rand(3, 3, 12, 12, generator=generator) > 0.5).float()
    ids = ["s0", "s1", "s2"]
    together = run_attack(model, image, truth, config, AttackContext(ids=ids, reference=truth))
    for i, alone in enumerate(attacked_alone(model, image, truth, config, ids)):
        assert torch.equal(together.adversarial[i], alone.adversarial[0])
        assert torch.equal(together.adv_pred[i], alone.adv_pred[0])
        if together.members is not None:
            assert together.members[i] == alone.members[0]


def test_apgd_batch_equals_slices_one_by_one_on_a_real_model(model, slices):
    image, truth, ids = slices
    config = AttackConfig.for_method("apgd", eps=0.02, steps=5)
    together = attack_slice(model, image, truth, config, ids=ids)
    alone = [attack_slice(model, image[i : i + 1], truth[i : i + 1], config, ids=ids[i : i + 1])[0] for i in range(3)]
    # A batched convolution may round differently and flip a sign where the gradient is ~0; the
    # trajectories then part a little, so compare the scores, not the pixels.
    np.testing.assert_allclose([r.mean_adv for r in together], [r.mean_adv for r in alone], atol=0.02)


# ---------------------------------------------------------------------------------------------------
# the ensemble


def test_ensemble_is_per_slice_no_better_than_any_member(model, slices):
    image, truth, ids = slices
    config = AttackConfig.for_method("ensemble", eps=0.02, steps=4)
    ensemble = attack_slice(model, image, truth, config, ids=ids)
    members = {
        m.name: attack_slice(model, image, truth, c, ids=ids) for m, c in zip(ENSEMBLE, config.ensemble_members())
    }
    for i, row in enumerate(ensemble):
        for name, results in members.items():
            assert row.mean_adv <= results[i].mean_adv, (row.slice_id, name)
        # the winner is named, and the slice's scores are the winner's own
        assert row.member in members
        np.testing.assert_array_equal(row.dsc_adv, members[row.member][i].dsc_adv)
        first_best = min(members, key=lambda name: members[name][i].mean_adv)  # ties: the earlier member
        assert members[row.member][i].mean_adv == members[first_best][i].mean_adv
        assert row.to_dict()["member"] == row.member


def test_ensemble_budget_in_passes_per_slice():
    config = AttackConfig.for_method("ensemble", steps=100)
    stages = sum(len(member.radii) for member in ENSEMBLE)
    assert passes_per_slice(config) == {"forward_backward": 100 * len(ENSEMBLE), "forward": 1 + stages}
    assert passes_per_slice(AttackConfig.for_method("apgd", steps=100)) == {"forward_backward": 100, "forward": 2}


@pytest.mark.parametrize(
    "config",
    [
        AttackConfig.for_method("ensemble", eps=0.03, steps=7),
        AttackConfig.for_method("apgd", eps=0.03, steps=9, radii=(2, 1.5, 1)),
        AttackConfig.for_method("pgd", eps=0.03, steps=5, best_iterate=True),
        AttackConfig.for_method("bim", eps=0.03, steps=5),
        AttackConfig(eps=0.03),
    ],
    ids=lambda c: c.method_label,
)
def test_stated_passes_are_the_passes_made(config):
    model = PixelLinear()
    counts = {True: 0, False: 0}
    model.register_forward_hook(
        lambda module, inputs, output: counts.__setitem__(
            torch.is_grad_enabled(), counts[torch.is_grad_enabled()] + inputs[0].shape[0]
        )
    )
    image = torch.rand(2, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    truth = (image > 0.5).float().expand(-1, 3, -1, -1)
    attack_slice(model, image, truth, config, ids=["a", "b"])
    stated = passes_per_slice(config)
    assert (counts[True] / 2, counts[False] / 2) == (stated["forward_backward"], stated["forward"])


# ---------------------------------------------------------------------------------------------------
# the configuration


def test_method_defaults_follow_a_method_change_unless_chosen():
    pgd = AttackConfig.for_method("pgd")
    assert (pgd.steps, pgd.best_iterate) == (10, False)
    moved = pgd.replace(method="apgd")
    assert (moved.steps, moved.best_iterate, moved.radii) == (100, True, (1.0,))
    chosen = pgd.replace(steps=50, best_iterate=True).replace(method="apgd")
    assert (chosen.steps, chosen.best_iterate) == (50, True)
    assert moved.replace(method="fgsm").best_iterate is False
    assert moved.replace(radii=(2, 1.5, 1)).replace(method="pgd").radii == (1.0,)
    assert AttackConfig(method="apgd").best_iterate is True and AttackConfig(method="bim").best_iterate is False
    assert AttackConfig.for_method("ensemble").method_label == f"Ensemble ({len(ENSEMBLE)} x APGD-100)"
    assert "best iterate" in AttackConfig.for_method("pgd", best_iterate=True).method_label
    assert "last iterate" in AttackConfig.for_method("apgd", best_iterate=False).method_label
    assert AttackConfig.for_method("apgd", radii="2,1.5,1").to_dict()["radii"] == [2.0, 1.5, 1.0]


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "fgsm", "best_iterate": True}, "best iterate"),
        ({"method": "apgd", "radii": (2.0, 1.5)}, "the last 1"),
        ({"method": "apgd", "radii": (0.5, 1.0)}, "at least 1"),
        ({"method": "apgd", "radii": "2,x,1"}, "numbers"),
        ({"method": "pgd", "radii": (2.0, 1.0)}, "apply to apgd"),
        ({"method": "apgd", "radii": (2.0, 1.5, 1.0), "steps": 2}, "at least 3 steps"),
        ({"method": "apgd", "best_iterate": "yes"}, "true or false"),
    ],
)
def test_bad_config_names_the_value(changes, message):
    with pytest.raises(OptionError, match=message):
        AttackConfig(**changes)


def test_apgd_checks_its_arguments(slices, model):
    image, truth, _ = slices
    with pytest.raises(OptionError, match="steps"):
        apgd(model, image, truth, 0.01, steps=0)
    with pytest.raises(ValueError, match="'ce'"):
        apgd(model, image, truth, 0.01, loss="ce")
    assert math.isfinite(float(apgd(model, image[:1], truth[:1], 0.0, steps=1).adversarial.sum()))
