"""The ``hallucinate`` loss against its closed-form gradient, FGSM / PGD with it making absent labels appear,
and the damage / hallucination split of robust DSC against a count by hand."""

from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from core.attacks.config import AttackConfig
from core.attacks.runner import AttackContext, run_attack
from core.evaluation.label_split import label_split
from core.evaluation.robustness import robustness
from core.evaluation.scoring import attack_slice
from core.hallucination import DICE_SMOOTH, TOP_K, hallucinate_loss
from core.losses import per_image_loss
from core.models.inference import predict
from core.models.loaded import LoadedModel


class PixelLinear(torch.nn.Module):
    """logits[c] = w[c] * x + b[c]: organ 0 where x > 0.25, organ 1 where x < 0.4, organ 2 where x > 0.8."""

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([4.0, -3.0, 5.0]).view(1, 3, 1, 1))
        self.b = torch.nn.Parameter(torch.tensor([-1.0, 1.2, -4.0]).view(1, 3, 1, 1))

    def forward(self, image):
        return self.w * image + self.b


def _logits_and_target():
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 3, 8, 8, generator=generator) * 3
    target = torch.zeros(2, 3, 8, 8)
    target[0, 0, 2:5, 2:5] = 1  # image 0: labels 0 and 2 present, 1 absent
    target[0, 2, 5:, 5:] = 1
    target[1, 2, :3, :] = 1  # image 1: label 2 present, 0 and 1 absent
    return logits, target


def test_absent_label_gradient_is_the_closed_form_on_its_top_k_pixels_only():
    logits, target = _logits_and_target()
    z = logits.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(hallucinate_loss(z, target).sum(), z)
    for image, label in ((0, 1), (1, 0), (1, 1)):
        channel = logits[image, label].flatten()
        top = channel.topk(TOP_K).indices
        # d/dz of mean over labels (3) of mean over top-k of log sigmoid(z): sigmoid(-z) / (k * 3)
        expected = torch.zeros_like(channel)
        expected[top] = torch.sigmoid(-channel[top]) / (TOP_K * 3)
        torch.testing.assert_close(grad[image, label].flatten(), expected)
        assert (grad[image, label].flatten() != 0).sum() == TOP_K
    assert (grad[0, 0] != 0).any() and (grad[1, 2] != 0).any()  # present labels: a segmentation loss


def test_present_label_term_is_soft_dice_plus_masked_bce():
    logits, target = _logits_and_target()
    z, t = logits[1, 2].flatten(), target[1, 2].flatten()
    p = torch.sigmoid(z)
    dice = 1 - (2 * (p * t).sum() + DICE_SMOOTH) / (p.sum() + t.sum() + DICE_SMOOTH)
    correct = ((z > 0) == (t > 0.5)).float()
    masked = (correct * F.binary_cross_entropy_with_logits(z, t, reduction="none")).mean()
    absent = [F.logsigmoid(logits[1, c].flatten().topk(TOP_K).values).mean() for c in (0, 1)]
    expected = (absent[0] + absent[1] + dice + masked) / 3
    torch.testing.assert_close(per_image_loss("hallucinate", logits, target)[1], expected)


def test_a_batch_equals_its_images_alone():
    logits, target = _logits_and_target()
    batch = hallucinate_loss(logits, target)
    for i in range(2):
        torch.testing.assert_close(batch[i : i + 1], hallucinate_loss(logits[i : i + 1], target[i : i + 1]))


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_with_it_create_pixels_of_absent_labels(method):
    model = PixelLinear().eval()
    generator = torch.Generator().manual_seed(1)
    image = 0.2 + 0.5 * torch.rand(2, 1, 32, 32, generator=generator)  # organ 2 (x > 0.8) nowhere
    truth = predict(model, image).float()
    assert truth[:, 2].sum() == 0 and truth[:, :2].sum() > 0
    config = AttackConfig.for_method(method, loss="hallucinate", eps=0.12, **({"steps": 5} if method == "pgd" else {}))
    output = run_attack(model, image, truth, config, AttackContext(ids=["a", "b"], reference=truth))
    appeared = predict(model, output.adversarial)[:, 2].flatten(1).sum(1)
    assert (appeared >= 1).all(), appeared


def test_damage_and_hallucination_split_counted_by_hand():
    model = PixelLinear().eval()
    image = torch.full((2, 1, 8, 8), 0.6)
    image[1, 0, :2, :2] = 0.9  # slice 1: organ 2 predicted on 4 pixels
    truth = torch.zeros(2, 3, 8, 8)
    truth[:, 0] = 1  # organ 0 present everywhere (predicted everywhere: x > 0.25): DSC 1
    truth[0, 1, :4] = 1  # slice 0: organ 1 present on half the slice, never predicted (x > 0.4): DSC 0
    config = AttackConfig(eps=0.0)
    rows = attack_slice(model, image, truth, config, ids=["s0", "s1"])
    split = label_split(rows)
    # present pairs: (s0, 0) DSC 1, (s0, 1) DSC 0, (s1, 0) DSC 1 -> 2/3; absent: (s0, 2), (s1, 1), (s1, 2),
    # of which (s1, 2) is predicted -> 1/3.
    assert (split.present_pairs, split.absent_pairs) == (3, 3)
    assert split.damage_clean == pytest.approx(2 / 3) and split.damage_adv == pytest.approx(2 / 3)
    assert split.hallucination_clean == pytest.approx(1 / 3) and split.hallucination_adv == pytest.approx(1 / 3)
    mean = np.mean([row.mean_adv for row in rows])
    assert mean == pytest.approx((1 + 0 + 1 + 1 + 1 + 0) / 6)  # the mixed number the split explains


def test_robust_report_carries_the_split(tiny_demo):
    from core.data.gitract import open_dataset, select_slices
    from core.models.checkpoints import load_checkpoint
    from core.paths import demo_checkpoint

    model, meta = load_checkpoint(demo_checkpoint())
    records = select_slices(open_dataset(tiny_demo), "all", organs_only=True, limit=2)
    config = AttackConfig.for_method("pgd", loss="hallucinate", steps=2)
    report = robustness([LoadedModel("demo", model, meta)], records, config, [0.009], img_size=64)
    point = report.curves[0].points[0]
    data = point.to_dict()["present_absent"]
    assert data["present_pairs"] + data["absent_pairs"] == 3 * point.summary.scored
    assert data == label_split(point.rows).to_dict()
