"""Softmax (multi-class) models: the prediction is the argmax, every attack loss in its softmax form
against hand-written formulas and its gradient against the closed form, and FGSM, PGD, APGD, the ensemble
and the erase attack on a small MONAI U-Net trained here on phantom shapes."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from monai.losses import DiceLoss, FocalLoss

from core.attacks.config import AttackConfig
from core.attacks.fast_gradient import fgsm
from core.attacks.iterative import erase_organs, erasure_loss
from core.attacks.runner import run_attack
from core.errors import OptionError
from core.labels import label_set
from core.losses import LOSS_NAMES, SoftmaxDiceFocalLoss, class_map, per_image_loss
from core.metrics import dice_per_organ
from core.models.inference import masks_from_logits, output_kind, predict
from core.models.registry import build_model
from core.training.loop import make_loss

LABELS = label_set(["disc", "ring", "square"], "softmax")


@pytest.fixture(scope="module")
def batch():
    """Softmax logits (N, 4, H, W) and non-overlapping masks (N, 3, H, W), one image without label 2."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(4, 4, 8, 8, generator=generator, dtype=torch.float64) * 3
    classes = torch.randint(0, 4, (4, 8, 8), generator=generator)
    classes[1][classes[1] == 3] = 0
    masks = torch.stack([classes == label for label in (1, 2, 3)], dim=1).double()
    return logits, masks, classes


def _grad(name, logits, masks, schedule=(1, 1)):
    logits = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(per_image_loss(name, logits, masks, kind="softmax", schedule=schedule).sum(), logits)
    return grad


def _probabilities(logits, classes):
    p = torch.softmax(logits, dim=1)
    onehot = F.one_hot(classes, 4).permute(0, 3, 1, 2).double()
    correct = (logits.argmax(dim=1) == classes).double().unsqueeze(1)
    return p, onehot, correct


# --- predictions -------------------------------------------------------------------------------


def test_softmax_masks_are_the_argmax_less_the_background():
    logits = torch.tensor([[2.0, 1.0, 0.0, -1.0], [0.0, 3.0, 1.0, 0.0], [-5.0, -4.0, -3.0, -1.0]]).T
    logits = logits.reshape(1, 4, 1, 3)  # three pixels: background, label 0, label 2
    masks = masks_from_logits(logits, "softmax")
    assert masks.dtype == torch.bool and masks.shape == (1, 3, 1, 3)
    assert masks[0, :, 0].T.tolist() == [[False, False, False], [True, False, False], [False, False, True]]
    assert torch.equal(masks_from_logits(logits[:, 1:], "sigmoid"), logits[:, 1:] > 0)


def test_predict_follows_the_models_label_set():
    torch.manual_seed(0)
    model = build_model("monai:UNet", labels=LABELS, model_kwargs={"channels": [4, 8], "strides": [2]})
    image = torch.rand(2, 1, 32, 32)
    assert output_kind(model) == "softmax"
    masks = predict(model, image)
    assert masks.shape == (2, 3, 32, 32)
    assert int(masks.sum(dim=1).max()) <= 1  # one label or none per pixel
    with torch.no_grad():
        assert torch.equal(masks, F.one_hot(model(image).argmax(1), 4).permute(0, 3, 1, 2)[:, 1:].bool())
    assert output_kind(torch.nn.Conv2d(1, 3, 1)) == "sigmoid"  # a bare module: UW-Madison's kind


# --- losses ---------------------------------------------------------------------------------------


def test_class_map_gives_background_zero_and_labels_from_one(batch):
    _, masks, classes = batch
    assert torch.equal(class_map(masks), classes)


def test_cross_entropy_gradient_is_softmax_minus_onehot(batch):
    logits, masks, classes = batch
    p, onehot, _ = _probabilities(logits, classes)
    assert torch.allclose(_grad("bce", logits, masks), (p - onehot) / 64, atol=1e-12)
    by_hand = -(onehot * torch.log(p)).sum(1).flatten(1).mean(1)
    assert torch.allclose(per_image_loss("bce", logits, masks, kind="softmax"), by_hand)


def test_focal_and_dice_match_monai_and_the_formula(batch):
    logits, masks, classes = batch
    p, onehot, _ = _probabilities(logits, classes)
    p_true = (p * onehot).sum(1)
    focal = per_image_loss("focal", logits, masks, kind="softmax")
    assert torch.allclose(focal, (-((1 - p_true) ** 2) * torch.log(p_true)).flatten(1).mean(1))
    dice = per_image_loss("dice", logits, masks, kind="softmax")
    for i in range(4):
        one = logits[i : i + 1].float(), classes[i : i + 1, None].float()
        assert dice[i].item() == pytest.approx(DiceLoss(softmax=True, to_onehot_y=True)(*one).item(), rel=1e-5)
        # MONAI's mean runs over the classes too, where only the true class is non-zero.
        monai_focal = FocalLoss(gamma=2.0, use_softmax=True, to_onehot_y=True)(*one).item() * 4
        assert focal[i].item() == pytest.approx(monai_focal, rel=1e-5)
    assert torch.allclose(per_image_loss("focal+dice", logits, masks, kind="softmax"), focal + dice)


def test_masked_ce_gradient_counts_only_correct_pixels(batch):
    logits, masks, classes = batch
    p, onehot, correct = _probabilities(logits, classes)
    grad = _grad("masked-bce", logits, masks)
    assert torch.allclose(grad, correct * (p - onehot) / 64, atol=1e-12)
    assert 0 < correct.mean() < 1 and torch.all(grad * (1 - correct) == 0)  # zero where already wrong


def test_balanced_masked_ce_weighs_each_present_class_alike(batch):
    logits, masks, classes = batch
    p, onehot, correct = _probabilities(logits, classes)
    counts = onehot.sum(dim=(2, 3))  # (N, C) pixels per true class
    present = (counts > 0).sum(dim=1)
    assert present[1] == 3 and present[0] == 4
    weight = (onehot / counts.clamp(min=1)[:, :, None, None]).sum(1, keepdim=True) / present.view(-1, 1, 1, 1)
    assert torch.allclose(_grad("balanced-bce", logits, masks), weight * correct * (p - onehot), atol=1e-12)


def test_cos_weight_is_the_detached_cosine(batch):
    logits, masks, classes = batch
    p, onehot, _ = _probabilities(logits, classes)
    cosine = ((p * onehot).sum(1) / p.norm(dim=1)).unsqueeze(1)
    assert torch.allclose(_grad("cos-bce", logits, masks), cosine * (p - onehot) / 64, atol=1e-12)


def test_segpgd_weights_follow_the_schedule(batch):
    logits, masks, classes = batch
    p, onehot, correct = _probabilities(logits, classes)
    lam = (3 - 1) / (2 * 5)
    weight = (1 - lam) * correct + lam * (1 - correct)
    assert torch.allclose(_grad("seg-bce", logits, masks, (3, 5)), weight * (p - onehot) / 64, atol=1e-12)


def test_js_is_the_divergence_from_the_onehot_bounded_by_log_2(batch):
    logits, masks, classes = batch
    p, onehot, _ = _probabilities(logits, classes)
    m = (p + onehot) / 2
    kl_p = (p * torch.log(p / m)).sum(1)
    kl_y = (onehot * torch.log(torch.where(onehot > 0, onehot / m, 1.0))).sum(1)
    js = per_image_loss("js", logits, masks, kind="softmax")
    assert torch.allclose(js, (0.5 * (kl_p + kl_y)).flatten(1).mean(1))
    p_true = (p * onehot).sum(1, keepdim=True)
    expected = 0.5 * torch.log(p_true / (1 + p_true)) * p_true * (onehot - p) / 64
    assert torch.allclose(_grad("js", logits, masks), expected, atol=1e-12)
    extreme = torch.zeros(1, 4, 1, 2, dtype=torch.float64)
    extreme[0, 0, 0, 0] = 200.0  # pixel 0 sure of the background, pixel 1 uniform
    target = torch.zeros(1, 3, 1, 2, dtype=torch.float64)
    target[0, 0] = 1  # both pixels are label 0: pixel 0 as wrong as it gets
    per_pixel = per_image_loss("js", extreme, target, kind="softmax") * 2
    assert 0 < per_pixel.item() < 2 * math.log(2) and math.isfinite(per_pixel.item())
    right = torch.full((1, 4, 1, 1), -100.0, dtype=torch.float64)
    right[0, 1] = 100.0
    assert per_image_loss("js", right, target[..., :1], kind="softmax").item() == pytest.approx(0, abs=1e-12)


@pytest.mark.parametrize("name", LOSS_NAMES)
def test_a_batch_equals_its_images_one_by_one(name, batch):
    logits, masks, _ = batch
    grad = _grad(name, logits, masks, (2, 4))
    values = per_image_loss(name, logits, masks, kind="softmax", schedule=(2, 4))
    assert values.shape == (4,)
    for i in range(4):
        one = logits[i : i + 1], masks[i : i + 1]
        assert torch.allclose(values[i], per_image_loss(name, *one, kind="softmax", schedule=(2, 4))[0])
        assert torch.allclose(grad[i], _grad(name, *one, (2, 4))[0], atol=1e-12)


def test_softmax_losses_refuse_masks_that_do_not_fit(batch):
    logits, masks, _ = batch
    with pytest.raises(ValueError, match="need target masks of shape"):
        per_image_loss("bce", logits, torch.cat([masks, masks[:, :1]], dim=1), kind="softmax")


def test_the_training_loss_is_the_mean_per_image_loss_and_pools_dice_over_the_batch(batch):
    logits, masks, classes = batch
    logits, masks = logits.float(), masks.float()
    assert isinstance(make_loss(False, "softmax"), SoftmaxDiceFocalLoss)
    expected = per_image_loss("focal+dice", logits, masks, kind="softmax").mean()
    assert torch.allclose(make_loss(False, "softmax")(logits, masks), expected)
    pooled = DiceLoss(softmax=True, to_onehot_y=True, batch=True)(logits, classes[:, None].float())
    focal = per_image_loss("focal", logits, masks, kind="softmax").mean()
    assert torch.allclose(make_loss(True, "softmax")(logits, masks), pooled + focal)


# --- attacks on a trained softmax model ---------------------------------------------------------


def phantoms(count: int, seed: int, size: int = 32) -> tuple[torch.Tensor, torch.Tensor]:
    """Slices of a disc, the ring around it and a square (labels disc, ring, square), each its own grey."""
    generator = torch.Generator().manual_seed(seed)
    yy, xx = torch.meshgrid(torch.arange(size), torch.arange(size), indexing="ij")
    images = torch.rand(count, 1, size, size, generator=generator) * 0.1
    masks = torch.zeros(count, 3, size, size)
    for i in range(count):
        cy, cx = torch.randint(8, size - 8, (2,), generator=generator).tolist()
        radius2 = (yy - cy) ** 2 + (xx - cx) ** 2
        disc, ring = radius2 < 25, (radius2 >= 25) & (radius2 < 64)
        top, left = torch.randint(0, size - 8, (2,), generator=generator).tolist()
        square = torch.zeros(size, size, dtype=torch.bool)
        square[top : top + 8, left : left + 8] = True
        square &= ~(disc | ring)
        masks[i] = torch.stack([disc, ring, square]).float()
        images[i, 0] += 0.8 * disc + 0.4 * ring + 0.6 * square
    return images.clamp(0, 1), masks


@pytest.fixture(scope="module")
def trained():
    """A MONAI U-Net (8 and 16 channels) trained 60 steps on phantoms with the softmax training loss."""
    torch.manual_seed(0)
    model = build_model(
        "monai:UNet", labels=LABELS, model_kwargs={"channels": [8, 16], "strides": [2], "num_res_units": 1}
    )
    images, masks = phantoms(32, seed=0)
    loss_fn = make_loss(False, "softmax")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(60):
        chosen = torch.randint(0, 32, (8,))
        optimizer.zero_grad()
        loss_fn(model(images[chosen]), masks[chosen]).backward()
        optimizer.step()
    model.eval()
    test_images, test_masks = phantoms(6, seed=1)
    return model, test_images, test_masks


def test_the_trained_model_segments_the_phantoms(trained):
    model, images, masks = trained
    assert dice_per_organ(predict(model, images), masks).mean() > 0.8


@pytest.mark.parametrize(
    "method, values",
    [("fgsm", {}), ("pgd", {"steps": 4}), ("apgd", {"steps": 5}), ("ensemble", {"steps": 3})],
)
def test_attacks_lower_a_softmax_models_dsc_within_eps(trained, method, values):
    model, images, masks = trained
    before = images.clone()
    eps = 0.06
    clean = dice_per_organ(predict(model, images), masks).mean()
    output = run_attack(model, images, masks, AttackConfig.for_method(method, eps=eps, **values))
    assert torch.equal(images, before)  # the input is never modified
    assert (output.adversarial - images).abs().max() <= eps + 1e-6
    assert output.adversarial.min() >= 0 and output.adversarial.max() <= 1
    predicted = output.adv_pred if output.adv_pred is not None else predict(model, output.adversarial)
    assert predicted.shape == masks.shape and int(predicted.sum(dim=1).max()) <= 1
    assert torch.equal(predicted, predict(model, output.adversarial))  # the attack's masks are the argmax's
    assert dice_per_organ(predicted, masks).mean() < clean - 0.05


def test_fgsm_batch_equals_its_slices_one_by_one(trained):
    model, images, masks = trained
    together = fgsm(model, images, masks, 0.03)
    for i in (0, 5):
        assert torch.equal(together[i : i + 1], fgsm(model, images[i : i + 1], masks[i : i + 1], 0.03))


def test_the_papers_swapped_fgsm_is_refused_for_softmax(trained):
    model, images, masks = trained
    with pytest.raises(OptionError, match="swapped-argument FGSM is defined for sigmoid models"):
        fgsm(model, images, masks, 0.03, mode="paper")


def test_erase_removes_a_softmax_label(trained):
    model, images, _ = trained
    before = predict(model, images)[:, 0].sum()
    after = predict(model, erase_organs(model, images, 0, 0.2, steps=20))[:, 0].sum()
    assert after < 0.25 * before


def test_softmax_erasure_loss_is_minus_log_of_the_other_classes_probability(batch):
    logits, _, _ = batch
    p = torch.softmax(logits, dim=1)
    expected = -torch.log(1 - p[:, 1] - p[:, 3])  # labels 0 and 2 are channels 1 and 3
    assert torch.allclose(erasure_loss(logits, [0, 2], "softmax"), expected)
    sigmoid = erasure_loss(logits[:, 1:], [1], "sigmoid")
    assert torch.allclose(
        sigmoid,
        F.binary_cross_entropy_with_logits(
            logits[:, 2:3], torch.zeros(4, 1, 8, 8, dtype=torch.float64), reduction="none"
        ),
    )
