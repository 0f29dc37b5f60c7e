"""FGSM, BIM, PGD, erase-organs, the gradient cache and the sweep.

References: a per-pixel linear model whose gradient sign is known in closed form, gradients taken
independently with torch / MONAI losses, and properties on a real (random-weight) smp model.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceFocalLoss

from core.attacks.batch import perturbation_norms
from core.attacks.config import AttackConfig
from core.attacks.control import AttackCancelled
from core.attacks.fast_gradient import apply_sign, fgsm
from core.attacks.gradient_cache import GradientCache
from core.attacks.gradients import gradient_sign, input_gradients
from core.attacks.iterative import bim, erase_organs, pgd
from core.evaluation.scoring import sweep
from core.metrics import dice_per_organ, mean_dsc
from core.models.inference import predict
from core.models.registry import build_model


class PixelLinear(torch.nn.Module):
    """logits[c] = w[c] * x + b[c] at every pixel: d BCE / dx has a closed form."""

    def __init__(self, w=(1.0, -0.5, 2.0), b=(0.3, -0.2, 0.1)):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor(w).view(1, 3, 1, 1))
        self.b = torch.nn.Parameter(torch.tensor(b).view(1, 3, 1, 1))

    def forward(self, image):
        return self.w * image + self.b


def _smooth(generator, shape, kernel):
    """Smooth random fields (cropped from a larger box blur) for image-like inputs and blob masks."""
    n, c, h, w = shape
    return F.avg_pool2d(torch.rand(n, c, h + kernel - 1, w + kernel - 1, generator=generator), kernel, 1)


@pytest.fixture(scope="module")
def batch():
    generator = torch.Generator().manual_seed(1)
    image = _smooth(generator, (3, 1, 64, 64), 9)
    image = (image - image.amin()) / (image.amax() - image.amin())
    target = (_smooth(generator, (3, 3, 64, 64), 17) > 0.5).float()
    return image, target


# ---------------------------------------------------------------------------------------------------
# closed form on the linear model


def _linear_batch():
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(2, 1, 16, 16, generator=generator)
    target = (torch.rand(2, 3, 16, 16, generator=generator) > 0.5).float()
    return image, target


def test_fgsm_textbook_matches_closed_form_on_linear_model():
    model, (image, target) = PixelLinear(), _linear_batch()
    w, b = model.w.detach().double(), model.b.detach().double()
    x = image.double()
    # d/dx mean BCE = sum_c w_c (sigmoid(w_c x + b_c) - y_c) / (3 H W); the positive factor drops out.
    direction = (w * (torch.sigmoid(w * x + b) - target.double())).sum(1, keepdim=True)
    assert direction.abs().min() > 1e-4  # no pixel where float rounding could flip the sign
    for eps in (0.0, 0.01, 0.2):
        expected = (image + eps * direction.sign().float()).clamp(0, 1)
        assert torch.equal(fgsm(model, image, target, eps, "bce", "textbook"), expected)


def test_fgsm_paper_mode_matches_closed_form_on_linear_model():
    model, (image, target) = PixelLinear(), _linear_batch()
    # The notebook's input is the slice copied to 3 channels; on it this model's organ c reads channel c,
    # logits_c = w_c x_c + b_c. loss(mask, logits): d/d logits = -mask / (3 H W), so each channel's own
    # gradient is d/dx_c = -w_c y_c / (3 H W) whatever x is: zero where organ c is not marked.
    direction = -(model.w.detach() * target)
    assert ((direction == 0) == (target == 0)).all()
    eps = 0.05
    expected = ((1 - torch.tensor(eps)) * image + eps * direction.sign()).clamp(0, 1)
    adversarial = fgsm(model, image, target, eps, "bce", "paper")
    assert adversarial.shape == (2, 3, 16, 16) and torch.equal(adversarial, expected)
    # channels whose organ is not marked are only shrunk by (1 - eps)
    empty = target == 0
    assert torch.allclose(expected[empty], ((1 - eps) * image).expand_as(expected)[empty])


# ---------------------------------------------------------------------------------------------------
# properties on a real smp model


def _reference_sign(model, image, target, loss_of_logits, channels=1):
    """Independent gradient: torch autograd on a library loss, one image at a time. ``channels=3`` is the
    paper's notebook: the grey slice copied to 3 channels, fed to the plain smp network (no
    normalisation: these random-weight models have none), each channel's gradient its own."""
    assert model.normalisation == "none"
    signs, magnitudes = [], []
    for i in range(image.shape[0]):
        x = image[i : i + 1].clone().repeat(1, channels, 1, 1).requires_grad_(True)
        logits = model(x) if channels == 1 else model.net(x)
        (grad,) = torch.autograd.grad(loss_of_logits(logits, target[i : i + 1]), x)
        signs.append(grad.sign())
        magnitudes.append(grad.abs() / grad.abs().max())
    return torch.cat(signs), torch.cat(magnitudes)


REFERENCE_LOSSES = {
    ("bce", "textbook"): lambda logits, y: F.binary_cross_entropy_with_logits(logits, y),
    ("bce", "paper"): lambda logits, y: F.binary_cross_entropy_with_logits(y, logits),
    ("focal+dice", "textbook"): DiceFocalLoss(sigmoid=True, gamma=2.0),
    ("focal+dice", "paper"): lambda logits, y: DiceFocalLoss(sigmoid=True, gamma=2.0)(y, logits),
}


@pytest.mark.parametrize(("loss", "mode"), list(REFERENCE_LOSSES))
def test_fgsm_follows_its_formula_with_an_independent_gradient(model, batch, loss, mode):
    image, target = batch
    eps = 0.02
    reference, magnitude = _reference_sign(
        model, image, target, REFERENCE_LOSSES[loss, mode], 3 if mode == "paper" else 1
    )
    sign = gradient_sign(model, image, target, loss, mode)
    if mode == "paper":  # each channel its own sign, not one sign repeated
        assert sign.shape[1] == 3 and (sign != sign[:, :1]).float().mean() > 0.05
    differ = sign != reference
    # Signs may differ only where the gradient is ~0 (batched vs single-image float rounding).
    assert differ.float().mean() < 1e-3
    assert (magnitude[differ] < 1e-4).all()
    scale = 1 - torch.tensor(eps) if mode == "paper" else 1.0
    expected = (scale * image + eps * reference).clamp(0, 1)
    adversarial = fgsm(model, image, target, eps, loss, mode)
    assert torch.equal(adversarial[~differ], expected[~differ])


def test_fgsm_properties(model, batch):
    image, target = batch
    before = image.clone()
    for eps in (0.005, 0.03):
        adversarial = fgsm(model, image, target, eps)
        linf, l2 = perturbation_norms(image, adversarial)
        assert (adversarial - image).abs().max() <= eps + 1e-6  # float32 rounding of x + eps - x
        assert np.allclose(linf, eps, atol=1e-6)
        assert (l2 > 0).all()
        assert adversarial.min() >= 0 and adversarial.max() <= 1
    assert torch.equal(fgsm(model, image, target, 0.0), image)
    assert torch.equal(image, before)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not model.training


def test_paper_mode_realised_linf_can_exceed_eps(model, batch):
    image, target = batch
    linf, _ = perturbation_norms(image, fgsm(model, image, target, 0.02, mode="paper"))
    assert (linf > 0.02 + 1e-6).all() and (linf <= 0.04 + 1e-6).all()


def test_batch_equals_images_one_by_one(model, batch):
    image, target = batch
    together = fgsm(model, image, target, 0.02, "focal+dice")
    alone = torch.cat([fgsm(model, image[i : i + 1], target[i : i + 1], 0.02, "focal+dice") for i in range(3)])
    # Identical wherever the sign did not flip on a ~0 gradient (see the reference test above).
    assert ((together != alone).float().mean()) < 1e-3
    assert (together - alone).abs().max() <= 2 * 0.02 + 1e-6


def test_train_mode_model_is_attacked_in_eval_and_restored(batch):
    torch.manual_seed(0)
    model = build_model("small")
    image, target = batch
    assert model.training
    in_train_mode = fgsm(model, image[:1], target[:1], 0.01)
    assert model.training
    model.eval()
    assert torch.equal(in_train_mode, fgsm(model, image[:1], target[:1], 0.01))


def test_cached_gradient_gives_the_recomputed_result_bit_for_bit(model, batch):
    image, target = batch
    cache = GradientCache(max_entries=4)
    eps_values = [0.0, 0.004, 0.009, 0.03]
    key = ("random-small", "batch", "bce", "gt", "paper")
    config = AttackConfig(loss="bce", mode="paper")
    first = sweep(model, image, target, eps_values, config, cache=cache, cache_key=key, pictures=True)
    assert cache.misses == 1 and key in cache
    again = sweep(model, image, target, eps_values, config, cache=cache, cache_key=key, pictures=True)
    assert cache.hits == 1 and cache.misses == 1
    for eps, point, repeat in zip(eps_values, first, again):
        recomputed = fgsm(model, image, target, eps, "bce", "paper")
        assert [r.eps for r in point] == [eps] * 3
        # the paper's mode perturbs 3 channels; the picture is their mean
        assert recomputed.shape[1] == 3
        np.testing.assert_array_equal(np.stack([r.pictures.adversarial for r in point]), recomputed.mean(1).numpy())
        np.testing.assert_array_equal(np.stack([r.pictures.adversarial for r in repeat]), recomputed.mean(1).numpy())
        np.testing.assert_array_equal(
            np.stack([r.pictures.adversarial_prediction for r in point]), predict(model, recomputed).numpy()
        )
        np.testing.assert_array_equal(
            np.stack([r.dsc_adv for r in point]), dice_per_organ(predict(model, recomputed), target)
        )
        linf, l2 = perturbation_norms(image, recomputed)
        np.testing.assert_array_equal([r.linf for r in point], linf)
        np.testing.assert_array_equal([r.l2 for r in point], l2)
    clean = dice_per_organ(predict(model, image), target)
    np.testing.assert_array_equal(np.stack([r.dsc_clean for r in first[0]]), clean)
    np.testing.assert_array_equal(np.stack([r.dsc_adv for r in first[0]]), clean)  # eps 0 is the clean image
    np.testing.assert_array_equal(np.stack([r.attack_success for r in first[0]]), np.zeros((3, 3)))


def test_sweep_against_own_prediction_starts_at_dsc_one(model, batch):
    image, _ = batch
    points = sweep(model, image, None, [0.0, 0.03])
    np.testing.assert_array_equal([r.mean_clean for r in points[0]], np.ones(3))
    assert all(r.mean_adv < 1 for r in points[1])
    assert all(0 <= r.zero_grad_fraction <= 1 for r in points[1])


def test_several_losses_share_one_forward_pass(model, batch):
    image, target = batch
    entries = input_gradients(model, image, target, ("bce", "dice"))
    for loss in ("bce", "dice"):
        assert torch.equal(entries[loss].sign.float(), gradient_sign(model, image, target, loss))
    assert torch.equal(entries["bce"].clean_pred, predict(model, image))


def test_apply_sign_accepts_stacked_eps(batch):
    image, _ = batch
    sign = torch.ones_like(image)
    stacked = apply_sign(image.unsqueeze(0), sign.unsqueeze(0), torch.tensor([0.0, 0.1]).view(2, 1, 1, 1, 1))
    assert torch.equal(stacked[1], apply_sign(image, sign, 0.1))


def test_gradient_cache_is_least_recently_used():
    cache, calls = GradientCache(max_entries=2), []
    compute = lambda name: lambda: calls.append(name) or name  # noqa: E731
    cache.get_or_compute("a", compute("a"))
    cache.get_or_compute("b", compute("b"))
    cache.get_or_compute("a", compute("a"))  # hit: "b" is now the oldest
    cache.get_or_compute("c", compute("c"))
    assert calls == ["a", "b", "c"] and "b" not in cache and "a" in cache and len(cache) == 2
    with pytest.raises(ValueError, match="cache_key"):
        sweep(PixelLinear(), *_linear_batch(), [0.1], cache=cache)


def test_iterative_attacks_stay_in_the_ball_and_beat_fgsm(model, batch):
    image, _ = batch
    target = predict(model, image).float()  # the model's own prediction: clean DSC 1
    before = image.clone()
    eps = 0.03
    fgsm_dsc = mean_dsc(dice_per_organ(predict(model, fgsm(model, image, target, eps)), target)).mean()
    for name, adversarial in (
        ("bim", bim(model, image, target, eps, steps=5)),
        ("pgd", pgd(model, image, target, eps, steps=5, generator=torch.Generator().manual_seed(0))),
    ):
        assert (adversarial - image).abs().max() <= eps + 1e-6, name
        assert adversarial.min() >= 0 and adversarial.max() <= 1, name
        assert mean_dsc(dice_per_organ(predict(model, adversarial), target)).mean() <= fgsm_dsc, name
    assert torch.equal(image, before)
    assert torch.equal(bim(model, image, target, 0.0, steps=2), image)
    assert all(parameter.grad is None for parameter in model.parameters())
    assert not model.training


def test_pgd_random_start_is_seedable(model, batch):
    image, target = batch
    run = lambda seed: pgd(model, image[:1], target[:1], 0.01, steps=1, generator=torch.Generator().manual_seed(seed))  # noqa: E731
    assert torch.equal(run(3), run(3))
    assert not torch.equal(run(3), run(4))


def test_erase_organs_shrinks_the_chosen_organ(model, batch):
    image, _ = batch
    before = predict(model, image)
    adversarial = erase_organs(model, image, ["stomach"], 0.05, steps=5)
    after = predict(model, adversarial)
    assert after[:, 2].sum() < 0.9 * before[:, 2].sum()  # a random-weight model: a modest but clear shrink
    with torch.no_grad():
        assert model(adversarial)[:, 2].mean() < model(image)[:, 2].mean()
    assert (adversarial - image).abs().max() <= 0.05 + 1e-6
    with pytest.raises(ValueError, match="'liver'"):
        erase_organs(model, image, ["liver"], 0.05)


def test_should_stop_cancels_iterative_attacks(model, batch):
    image, target = batch
    calls = []

    def stop_on_third_check():
        calls.append(1)
        return len(calls) >= 3

    with pytest.raises(AttackCancelled):
        bim(model, image[:1], target[:1], 0.01, steps=10, should_stop=stop_on_third_check)
    assert len(calls) == 3


def test_bad_arguments_are_named(model, batch):
    image, target = batch
    with pytest.raises(ValueError, match="eps"):
        fgsm(model, image, target, -0.1)
    with pytest.raises(ValueError, match="'exact'"):
        fgsm(model, image, target, 0.1, mode="exact")
    with pytest.raises(ValueError, match=r"\(N, 1, H, W\)"):
        fgsm(model, image[:, 0], target, 0.1)
    with pytest.raises(ValueError, match="target must have shape"):
        fgsm(model, image, target[:2], 0.1)
    with pytest.raises(ValueError, match="'fp8'"):
        fgsm(model, image, target, 0.1, precision="fp8")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_reduced_precision_keeps_most_signs(model, batch, precision):
    # CPU autocast runs the same code path as CUDA; fp32 stays the reference.
    image, target = batch
    full = input_gradients(model, image[:1], target[:1])["bce"]
    reduced = input_gradients(model, image[:1], target[:1], precision=precision)["bce"]
    assert (full.sign == reduced.sign).float().mean() > 0.9
    assert reduced.sign.shape == image[:1].shape and reduced.clean_pred.dtype == torch.bool


def test_fp16_rescaling_prevents_gradient_underflow(model, batch):
    image, target = batch
    x = image[:1].clone().requires_grad_(True)
    with torch.autocast("cpu", dtype=torch.float16):
        logits = model(x)
    (plain,) = torch.autograd.grad(F.binary_cross_entropy_with_logits(logits.float(), target[:1]), x)
    plain_zero = (plain == 0).float().mean().item()
    rescaled_zero = input_gradients(model, image[:1], target[:1], precision="fp16")["bce"].zero_fraction[0]
    assert plain_zero > 0 and rescaled_zero < plain_zero


def test_a_batch_larger_than_the_chunk_is_split_and_gives_the_same_predictions(model, batch):
    from core.attacks.fast_gradient import adversarial_predictions

    image, target = batch
    sign = input_gradients(model, image, target)["bce"].sign
    whole = adversarial_predictions(model, image, sign, [0.01, 0.02], chunk_size=64)
    split = adversarial_predictions(model, image, sign, [0.01, 0.02], chunk_size=2)  # 3 images > 2: split
    for (adv_a, pred_a), (adv_b, pred_b) in zip(whole, split):
        assert torch.equal(adv_a, adv_b) and torch.equal(pred_a, pred_b)


class Overflowing(torch.nn.Module):
    """Logits of about 1e5 where the pixel is bright: finite in fp32, infinite in fp16 (max 65504)."""

    def __init__(self):
        super().__init__()
        self.conv = torch.nn.Conv2d(1, 3, 1)
        with torch.no_grad():
            self.conv.weight.fill_(2e5)
            self.conv.bias.fill_(-1e5)

    def forward(self, image):
        return self.conv(image)


def test_a_reduced_precision_pass_that_overflows_is_redone_in_fp32():
    from core.models.inference import safe_logits

    model, image = Overflowing(), torch.rand(2, 1, 8, 8)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.float16):
        assert not torch.isfinite(model(image)).all()  # the failure this guards against is real
    with torch.no_grad():
        logits = safe_logits(model, image, "fp16")
        assert torch.isfinite(logits).all() and torch.equal(logits, model(image))
    assert torch.equal(predict(model, image, "fp16"), predict(model, image))


def test_predict_scores_a_train_mode_model_in_eval_mode_and_leaves_it_as_it_was(batch):
    torch.manual_seed(0)
    model = build_model("small")
    image, _ = batch
    running = [b.clone() for b in model.buffers()]
    assert model.training
    prediction = predict(model, image)
    assert model.training and all(torch.equal(a, b) for a, b in zip(running, model.buffers()))
    assert torch.equal(prediction, predict(model.eval(), image))


def test_iterative_attacks_report_each_step_and_take_a_precision(model, batch):
    image, target = batch
    seen = []
    adversarial = pgd(
        model,
        image[:1],
        target[:1],
        0.01,
        steps=3,
        precision="bf16",
        loss="dice",
        generator=torch.Generator().manual_seed(0),
        on_step=lambda *state: seen.append(state),
    )
    assert [(step, steps) for step, steps, *_ in seen] == [(0, 3), (1, 3), (2, 3)]
    for _, _, iterate, logits, loss in seen:  # each step's own iterate, its logits and its objective
        assert (iterate - image[:1]).abs().max() <= 0.01 + 1e-6
        with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
            torch.testing.assert_close(logits, model(iterate).float())
        from core.losses import per_image_loss

        torch.testing.assert_close(loss, per_image_loss("dice", logits, target[:1]))
    assert (adversarial - image[:1]).abs().max() <= 0.01 + 1e-6
