"""The L2 threat model: projection and steepest steps against closed forms, and the L2 attacks (FGM, BIM,
PGD, APGD, the ensemble) on a per-pixel linear model (closed-form gradients) and a real random-weight smp
model at 32 px: realised L2 within eps, a batch equal to its slices one by one, the norm in the JSON."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from attack_models import PixelLinear, attacked_alone

from core.attacks.apgd import ApgdTrace, apgd
from core.attacks.config import MAX_L2_EPS, AttackConfig, check_eps
from core.attacks.fast_gradient_l2 import fgm_l2
from core.attacks.iterative import pgd, random_start_point
from core.attacks.norms import per_image_l2, project, steepest_step, uniform_in_l2_ball
from core.attacks.runner import AttackContext, run_attack
from core.errors import OptionError
from core.evaluation.scoring import attack_slice
from core.models.inference import predict

IDS = ["case1_day1_slice_0001", "case1_day1_slice_0002", "case2_day3_slice_0040"]


@pytest.fixture(scope="module")
def slices(model):
    """Three smooth 32 x 32 slices in [0.2, 0.8] and, as truth, the random model's own clean prediction."""
    generator = torch.Generator().manual_seed(5)
    image = torch.nn.functional.avg_pool2d(torch.rand(3, 1, 38, 38, generator=generator), 7, 1)
    image = 0.2 + 0.6 * (image - image.amin()) / (image.amax() - image.amin())
    return image, predict(model, image).float()


# --- projection and steps, closed forms ----------------------------------------------------------------


def test_l2_projection_of_a_known_vector():
    clean = torch.full((1, 1, 2, 2), 0.5)
    x = clean + torch.tensor([0.3, 0.4, 0.0, 0.0]).view(1, 1, 2, 2)  # ||delta|| = 0.5
    # radius 0.25: delta scaled by 0.25 / 0.5
    expected = clean + torch.tensor([0.15, 0.2, 0.0, 0.0]).view(1, 1, 2, 2)
    torch.testing.assert_close(project(x, clean, 0.25, "l2"), expected)
    # inside the ball (radius 1): unchanged
    torch.testing.assert_close(project(x, clean, 1.0, "l2"), x)
    # L-inf radius 0.2: each pixel clipped to [0.3, 0.7]
    torch.testing.assert_close(project(x, clean, 0.2, "linf"), clean + torch.tensor([0.2, 0.2, 0, 0]).view(1, 1, 2, 2))


def test_l2_projection_then_box_stays_in_the_ball():
    # delta (0.6, 0.8) from 0.9: the scaled point 0.9 + 0.6 * 0.5 = 1.2 is clipped to 1: only shorter.
    clean = torch.tensor([0.9, 0.1]).view(1, 1, 1, 2)
    x = clean + torch.tensor([0.6, 0.8]).view(1, 1, 1, 2)
    projected = project(x, clean, 0.5, "l2")
    torch.testing.assert_close(projected, torch.tensor([1.0, 0.5]).view(1, 1, 1, 2))
    assert per_image_l2(projected - clean).item() <= 0.5


@pytest.mark.parametrize("norm", ["linf", "l2"])
def test_projection_is_idempotent_and_lands_in_the_ball(norm):
    generator = torch.Generator().manual_seed(0)
    clean = torch.rand(4, 1, 16, 16, generator=generator)
    x = clean + torch.randn(4, 1, 16, 16, generator=generator)
    eps = torch.tensor([0.1, 0.5, 2.0, 8.0]) if norm == "l2" else torch.tensor([0.01, 0.03, 0.1, 0.5])
    once = project(x, clean, eps, norm)
    torch.testing.assert_close(project(once, clean, eps, norm), once, rtol=0, atol=1e-6)
    assert once.min() >= 0 and once.max() <= 1
    delta = (once - clean).flatten(1)
    sizes = delta.norm(dim=1) if norm == "l2" else delta.abs().amax(dim=1)
    assert (sizes <= eps + 1e-6).all()


def test_projection_of_a_batch_equals_its_images_alone():
    generator = torch.Generator().manual_seed(1)
    clean = torch.rand(3, 1, 8, 8, generator=generator)
    x = (clean + 0.5 * torch.randn(3, 1, 8, 8, generator=generator)).clamp(0, 1)
    eps = torch.tensor([0.2, 1.0, 3.0])
    batch = project(x, clean, eps, "l2")
    for i in range(3):
        torch.testing.assert_close(batch[i : i + 1], project(x[i : i + 1], clean[i : i + 1], float(eps[i]), "l2"))


def test_steepest_steps():
    grad = torch.tensor([[3.0, -4.0], [0.0, 0.0]]).view(2, 1, 1, 2)
    l2 = steepest_step(grad, "l2")
    torch.testing.assert_close(l2[0].flatten(), torch.tensor([0.6, -0.8]))
    assert (l2[1] == 0).all()  # no gradient, no direction
    torch.testing.assert_close(steepest_step(grad, "linf")[0].flatten(), torch.tensor([1.0, -1.0]))
    assert torch.allclose(per_image_l2(l2), torch.tensor([1.0, 0.0]))


def test_random_start_is_in_the_l2_ball_and_seeded_per_slice(slices):
    image, _ = slices
    start = random_start_point(image, 1.5, seed=3, ids=IDS, norm="l2")
    assert (per_image_l2(start - image) <= 1.5 + 1e-5).all()
    alone = random_start_point(image[1:2], 1.5, seed=3, ids=IDS[1:2], norm="l2")
    torch.testing.assert_close(start[1:2], alone)
    # Uniform in the ball of d dims: P(radius < r) = (r / eps)^d; in 2 dims a quarter lie within eps / 2.
    generator = torch.Generator().manual_seed(7)
    points = uniform_in_l2_ball(
        torch.randn(20000, 1, 1, 2, generator=generator), torch.rand(20000, generator=generator), 2.0
    )
    assert abs(float((per_image_l2(points) < 1.0).float().mean()) - 0.25) < 0.015
    # At d = 1024 the radius is almost always above 0.99 eps.
    assert (per_image_l2(uniform_in_l2_ball(torch.randn(50, 1, 32, 32), torch.rand(50), 1.0)) > 0.99).all()


# --- the attacks -----------------------------------------------------------------------------------------


def test_fgm_l2_matches_the_closed_form_gradient_of_a_pixel_linear_model():
    """BCE of logits w_c x + b_c: d loss / dx = sum_c w_c (sigmoid(z_c) - y_c) / (3 H W) per pixel."""
    torch.manual_seed(0)
    model = PixelLinear().eval()
    image = 0.3 + 0.4 * torch.rand(2, 1, 8, 8)
    target = (torch.rand(2, 3, 8, 8) > 0.5).float()
    z = model.w * image + model.b
    grad = (model.w * (torch.sigmoid(z) - target)).sum(1, keepdim=True).detach()
    eps = 0.25  # each pixel moves by at most eps: no pixel leaves [0, 1], the step is exactly eps long
    expected = image + eps * grad / grad.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
    adversarial = fgm_l2(model, image, target, eps)
    torch.testing.assert_close(adversarial, expected, rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(per_image_l2(adversarial - image), torch.full((2,), eps))


@pytest.mark.parametrize("method", ["fgsm", "bim", "pgd", "apgd"])
def test_l2_attacks_stay_in_the_ball_and_a_batch_equals_its_slices(model, slices, method):
    image, truth = slices
    eps = 1.0
    steps = {"fgsm": 1, "bim": 4, "pgd": 4, "apgd": 6}[method]
    values = {} if method == "fgsm" else {"steps": steps}
    config = AttackConfig.for_method(method, eps=eps, norm="l2", **values)
    batch = run_attack(model, image, truth, config, AttackContext(ids=IDS, reference=truth))
    realised = per_image_l2(batch.adversarial - image)
    assert (realised <= eps + 1e-5).all(), realised
    assert realised.max() > 0.5 * eps  # it did move
    for i, alone in enumerate(attacked_alone(model, image, truth, config, IDS)):
        torch.testing.assert_close(batch.adversarial[i : i + 1], alone.adversarial, rtol=0, atol=1e-6)


def test_l2_pgd_lowers_dsc_and_the_slice_result_reports_its_l2(model, slices):
    image, truth = slices
    config = AttackConfig.for_method("pgd", eps=2.0, norm="l2", steps=5, best_iterate=True)
    rows = attack_slice(model, image, truth, config, ids=IDS)
    result = run_attack(model, image, truth, config, AttackContext(ids=IDS, reference=truth))
    independent = [math.sqrt(float(((a - b) ** 2).sum())) for a, b in zip(result.adversarial, image)]
    np.testing.assert_allclose([row.l2 for row in rows], independent, rtol=1e-5)
    assert all(row.l2 <= 2.0 + 1e-5 for row in rows)
    assert np.mean([row.mean_adv for row in rows]) < np.mean([row.mean_clean for row in rows])
    assert rows[0].to_dict()["l2"] == pytest.approx(independent[0], rel=1e-5)


def test_l2_apgd_starts_with_step_two_eps(model, slices):
    image, truth = slices
    trace = ApgdTrace()
    apgd(model, image, truth, 0.8, steps=5, norm="l2", trace=trace)
    torch.testing.assert_close(trace.step_sizes[0], torch.full((3,), 1.6))


def test_explicit_linf_equals_the_default(model, slices):
    image, truth = slices
    default = pgd(model, image, truth, 0.02, steps=3, loss="dice")
    torch.testing.assert_close(
        pgd(model, image, truth, 0.02, steps=3, loss="dice", norm="linf"), default, rtol=0, atol=0
    )


def test_ensemble_members_carry_the_norm_and_the_json_says_it(model, slices):
    config = AttackConfig.for_method("ensemble", eps=1.0, norm="l2", steps=3)
    assert {member.norm for member in config.ensemble_members()} == {"l2"}
    assert config.to_dict()["norm"] == "l2" and AttackConfig().to_dict()["norm"] == "linf"
    assert "L2" in config.method_label and AttackConfig.for_method("fgsm", norm="l2").method_label == "FGM (L2)"
    image, truth = slices
    output = run_attack(model, image, truth, config, AttackContext(ids=IDS, reference=truth))
    assert (per_image_l2(output.adversarial - image) <= 1.0 + 1e-5).all()


def test_l2_eps_scale_and_bad_values():
    assert check_eps(12.0, "l2") == 12.0
    with pytest.raises(OptionError, match=r"\[0, 1\]"):
        AttackConfig(eps=1.5)
    with pytest.raises(OptionError, match="L2 eps"):
        AttackConfig(eps=MAX_L2_EPS + 1, norm="l2")
    with pytest.raises(OptionError, match="does not apply to erase"):
        AttackConfig.for_method("erase", norm="l2", organs=("stomach",))
    with pytest.raises(OptionError, match="unknown norm"):
        AttackConfig(norm="l1")
    with pytest.raises(OptionError, match="paper"):
        AttackConfig(mode="paper", norm="l2")
    assert AttackConfig(eps=2.0, norm="l2").with_eps(3.5).eps == 3.5
