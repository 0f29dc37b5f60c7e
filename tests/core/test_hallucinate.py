"""The ``hallucinate`` loss, sigmoid and softmax, against its closed-form gradient and hand-written values (and
the softmax form of one label against the sigmoid form of the logit difference), FGSM / PGD with it making
absent labels appear for both kinds, and the damage / hallucination split of robust DSC against a count by
hand."""

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
from core.hallucination import DICE_SMOOTH, TOP_K, hallucinate_loss, hallucinate_softmax_loss
from core.labels import label_set
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


# --- softmax ------------------------------------------------------------------------------------


class SoftmaxPixelLinear(torch.nn.Module):
    """Softmax logits (background, a, b, c) = (0, 4x - 1, -3x + 1.2, 20x - 16): a where 0.25 < x and it
    beats b, b where x < 0.4 and it beats a, c only where x > 0.9375 (where 20x - 16 passes 4x - 1)."""

    labels = label_set(["a", "b", "c"], "softmax")

    def __init__(self):
        super().__init__()
        self.w = torch.nn.Parameter(torch.tensor([0.0, 4.0, -3.0, 20.0]).view(1, 4, 1, 1))
        self.b = torch.nn.Parameter(torch.tensor([0.0, -1.0, 1.2, -16.0]).view(1, 4, 1, 1))

    def forward(self, image):
        return self.w * image + self.b


def _softmax_logits_and_target():
    """float64 logits (2, 4, 8, 8) and non-overlapping masks (2, 3, 8, 8): image 0 holds labels 0 and 2,
    image 1 no label at all."""
    generator = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 4, 8, 8, generator=generator, dtype=torch.float64) * 3
    target = torch.zeros(2, 3, 8, 8, dtype=torch.float64)
    target[0, 0, 2:5, 2:5] = 1
    target[0, 2, 5:, 5:] = 1
    return logits, target


def test_softmax_absent_labels_push_their_top_k_margins_over_the_best_other_class():
    logits, target = _softmax_logits_and_target()
    z = logits[1:].clone().requires_grad_(True)  # image 1: every label absent, so only the absent term
    (grad,) = torch.autograd.grad(hallucinate_softmax_loss(z, target[1:]).sum(), z)
    expected = torch.zeros(4, 64, dtype=torch.float64)
    pixels = logits[1].reshape(4, 64)
    for label in range(3):
        channel = label + 1
        others = [c for c in range(4) if c != channel]
        margins = [(float(pixels[channel, i] - pixels[others, i].max()), i) for i in range(64)]
        for margin, i in sorted(margins, reverse=True)[:TOP_K]:
            # d/dz of mean over labels (3) of mean over k of log sigmoid(z_c - z_best_other)
            weight = torch.sigmoid(torch.tensor(-margin, dtype=torch.float64)) / (TOP_K * 3)
            expected[channel, i] += weight
            expected[others[int(pixels[others, i].argmax())], i] -= weight
    torch.testing.assert_close(grad[0].reshape(4, 64), expected)


def test_softmax_present_labels_are_soft_dice_plus_their_masked_binary_ce():
    logits, target = _softmax_logits_and_target()
    p = torch.softmax(logits[0], dim=0).reshape(4, 64)
    argmax = logits[0].argmax(dim=0).reshape(64)
    terms = []
    for label in range(3):
        t = target[0, label].reshape(64)
        if t.sum() == 0:  # label 1 is absent: log sigmoid of the k largest margins
            others = torch.cat([logits[0, :2], logits[0, 3:]]).reshape(3, 64)
            margin = logits[0, 2].reshape(64) - others.max(dim=0).values
            terms.append(F.logsigmoid(margin.topk(TOP_K).values).mean())
            continue
        q = p[label + 1]
        dice = 1 - (2 * (q * t).sum() + DICE_SMOOTH) / (q.sum() + t.sum() + DICE_SMOOTH)
        right = ((argmax == label + 1) == (t > 0.5)).double()
        bce = -(t * torch.log(q) + (1 - t) * torch.log(1 - q))
        terms.append(dice + (right * bce).mean())
    expected = sum(terms) / 3
    torch.testing.assert_close(per_image_loss("hallucinate", logits, target, kind="softmax")[0], expected)


def test_one_softmax_label_is_the_sigmoid_form_of_the_logit_difference():
    logits, target = _softmax_logits_and_target()
    two = logits[:, :2].clone().requires_grad_(True)  # background and label 0
    one = target[:, :1]
    softmax = hallucinate_softmax_loss(two, one)
    difference = (two[:, 1:] - two[:, :1]).detach().requires_grad_(True)
    sigmoid = hallucinate_loss(difference, one)
    torch.testing.assert_close(softmax, sigmoid)
    (grad_softmax,) = torch.autograd.grad(softmax.sum(), two)
    (grad_sigmoid,) = torch.autograd.grad(sigmoid.sum(), difference)
    torch.testing.assert_close(grad_softmax[:, 1:], grad_sigmoid)
    torch.testing.assert_close(grad_softmax[:, :1], -grad_sigmoid)


def test_a_softmax_batch_equals_its_images_alone():
    logits, target = _softmax_logits_and_target()
    batch = hallucinate_softmax_loss(logits, target)
    for i in range(2):
        torch.testing.assert_close(batch[i : i + 1], hallucinate_softmax_loss(logits[i : i + 1], target[i : i + 1]))


def test_softmax_losses_stay_finite_where_a_label_takes_all_the_probability():
    logits = torch.zeros(1, 3, 4, 4, requires_grad=True)
    big = logits + torch.tensor([0.0, 200.0, 0.0]).view(1, 3, 1, 1)  # p of label 0 rounds to 1
    target = torch.zeros(1, 2, 4, 4)
    target[0, 1] = 1  # label 1 everywhere: every pixel wrong for both labels
    loss = hallucinate_softmax_loss(big, target)
    (grad,) = torch.autograd.grad(loss.sum(), logits)
    assert torch.isfinite(loss).all() and torch.isfinite(grad).all()


@pytest.mark.parametrize("method", ["fgsm", "pgd"])
def test_attacks_with_it_make_absent_labels_win_a_softmax_models_argmax(method):
    model = SoftmaxPixelLinear().eval()
    generator = torch.Generator().manual_seed(1)
    image = 0.2 + 0.65 * torch.rand(2, 1, 32, 32, generator=generator)  # label c (x > 0.9375) nowhere
    truth = predict(model, image).float()
    assert truth[:, 2].sum() == 0 and truth[:, 0].sum() > 0 and truth[:, 1].sum() > 0
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
