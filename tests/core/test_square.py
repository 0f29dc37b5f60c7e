"""The Square attack: the paper's square-size schedule by hand, the greedy acceptance (the kept loss is the
largest evaluated), the L-inf ball, a batch equal to its slices alone, and a model with masked gradients
(its input quantised, so every input gradient is 0) that falls to Square but not to FGSM, which the
black-box check of ``robust --checks`` flags: the sigmoid demo checkpoint on the tiny demo, and a softmax
MONAI U-Net trained here on a tiny Decathlon folder."""

from __future__ import annotations

import pytest
import torch
from attack_models import attacked_alone

from core.attacks.config import AttackConfig
from core.attacks.ensemble import passes_per_slice
from core.attacks.runner import AttackContext, run_attack
from core.attacks.square import P_INIT, square_attack, square_share, square_side
from core.evaluation.robust_checks import run_checks
from core.evaluation.scoring import evaluate
from core.models.inference import predict

IDS = ["case1_day1_slice_0001", "case1_day1_slice_0002", "case2_day3_slice_0040"]


class Quantised(torch.nn.Module):
    """``inner(round(x * levels) / levels)``: round has no gradient, so every input gradient is exactly 0."""

    def __init__(self, inner: torch.nn.Module, levels: int = 16):
        super().__init__()
        self.inner, self.levels = inner, levels
        self.labels = inner.labels  # the output kind the attacks and scores follow

    def forward(self, image):
        return self.inner(torch.round(image * self.levels) / self.levels)


def test_square_size_schedule_is_the_papers():
    # p_init until iteration 10 of 10000, then halved after 10, 50, 200, 500, 1000, 2000, 4000, 6000, 8000
    assert [square_share(i, 10000) for i in (0, 10, 11, 50, 51, 200, 201, 8000, 8001, 9999)] == [
        P_INIT,
        P_INIT,
        P_INIT / 2,
        P_INIT / 2,
        P_INIT / 4,
        P_INIT / 4,
        P_INIT / 8,
        P_INIT / 256,
        P_INIT / 512,
        P_INIT / 512,
    ]
    # rescaled to 100 iterations: iteration 1 is the 100th of 10000
    assert square_share(0, 100) == P_INIT and square_share(1, 100) == P_INIT / 4
    assert square_side(0.8, 32, 32) == 29  # round(sqrt(0.8 * 1024)) = round(28.6)
    assert square_side(1.0, 32, 32) == 31 and square_side(1e-6, 32, 32) == 1


def test_the_kept_point_has_the_largest_loss_evaluated_and_stays_in_the_ball(model):
    generator = torch.Generator().manual_seed(2)
    image = torch.rand(3, 1, 32, 32, generator=generator)
    target = predict(model, image).float()
    evaluated = []
    best, best_loss = square_attack(
        model,
        image,
        target,
        0.05,
        steps=12,
        loss="dice",
        ids=IDS,
        on_step=lambda step, steps, x, logits, loss: evaluated.append(loss),
    )
    assert len(evaluated) == 13  # the start and one proposal per step
    torch.testing.assert_close(best_loss, torch.stack(evaluated).amax(dim=0))
    delta = best - image
    assert delta.abs().max() <= 0.05 + 1e-6 and best.min() >= 0 and best.max() <= 1
    assert passes_per_slice(AttackConfig.for_method("square", steps=12)) == {"forward_backward": 0, "forward": 14}


def test_a_batch_equals_its_slices_alone(model):
    generator = torch.Generator().manual_seed(4)
    image = torch.rand(3, 1, 32, 32, generator=generator)
    truth = predict(model, image).float()
    config = AttackConfig.for_method("square", eps=0.03, steps=8)
    batch = run_attack(model, image, truth, config, AttackContext(ids=IDS, reference=truth))
    for i, alone in enumerate(attacked_alone(model, image, truth, config, IDS)):
        torch.testing.assert_close(batch.adversarial[i : i + 1], alone.adversarial, rtol=0, atol=1e-6)
        assert torch.equal(batch.adv_pred[i : i + 1], alone.adv_pred)


@pytest.fixture(scope="module")
def masked(tiny_demo):
    """The demo checkpoint behind an input quantiser, and two tiny-demo slices with organs (scored at the
    checkpoint's 128 px)."""
    from core.data.gitract import open_dataset, select_slices
    from core.models.checkpoints import load_checkpoint
    from core.paths import demo_checkpoint

    model, _ = load_checkpoint(demo_checkpoint())
    records = select_slices(open_dataset(tiny_demo), "all", organs_only=True, limit=2)
    return Quantised(model).eval(), records


@pytest.mark.parametrize(
    "fixture, img_size, eps", [("masked", 128, 0.03), ("masked_softmax", 32, 0.06)], ids=["sigmoid", "softmax"]
)
def test_masked_gradients_fall_to_square_not_to_fgsm_and_the_check_flags_it(request, fixture, img_size, eps):
    model, records = request.getfixturevalue(fixture)
    fgsm = evaluate(model, records, img_size, AttackConfig(eps=eps))
    assert fgsm.rows[0].zero_grad_fraction == 1.0  # nothing for a gradient to follow
    assert fgsm.summary.mean_adv == fgsm.summary.mean_clean
    square = evaluate(model, records, img_size, AttackConfig.for_method("square", eps=eps, steps=40))
    assert square.summary.mean_adv < fgsm.summary.mean_adv - 0.05

    report = run_checks(model, records, img_size, AttackConfig(eps=eps), [eps], square_queries=40)
    check = report.check("black_box")
    assert check.passed is False and not report.passed
    assert check.numbers["square"] == pytest.approx(square.summary.mean_adv)
    assert check.numbers["attack"] == pytest.approx(fgsm.summary.mean_adv)
    assert "masked gradients" in check.guards


def test_the_check_passes_where_gradients_work_and_does_not_apply_to_l2(masked):
    model, records = masked
    plain = model.inner
    report = run_checks(
        plain, records, 128, AttackConfig.for_method("pgd", eps=0.009, steps=10), [0.009], square_queries=10
    )
    check = report.check("black_box")
    assert check.passed is True and check.numbers["attack"] < check.numbers["square"]
    l2 = run_checks(plain, records, 128, AttackConfig(eps=1.0, norm="l2"), [1.0], square_queries=10)
    assert l2.check("black_box").passed is None and "L-inf" in l2.check("black_box").note
    assert l2.check("large_eps").numbers["eps"] == 0.25 * 128
    assert l2.check("gradients").passed is True  # the FGM rows' zero-gradient share


@pytest.fixture(scope="module")
def masked_softmax(tmp_path_factory):
    """A softmax MONAI U-Net trained 80 steps on a tiny Decathlon folder of phantoms, behind an input
    quantiser, and two of its slices with labels (32 px)."""
    from decathlon_files import make_phantom_dataset

    from core.data.gitract import select_slices
    from core.data.open import open_dataset
    from core.metrics import dice_per_organ
    from core.models.registry import build_model
    from core.training.loop import make_loss

    dataset = open_dataset(make_phantom_dataset(tmp_path_factory.mktemp("decathlon") / "phantoms"))
    assert dataset.labels.kind == "softmax" and dataset.labels.names == ("disc", "ring", "square")
    records = select_slices(dataset, "all", organs_only=True)
    loaded = [record.load(32) for record in records]
    images = torch.stack([torch.from_numpy(image) for image, _ in loaded]).unsqueeze(1)
    masks = torch.stack([torch.from_numpy(mask) for _, mask in loaded]).float()
    torch.manual_seed(0)
    model = build_model(
        "monai:UNet", labels=dataset.labels, model_kwargs={"channels": [8, 16], "strides": [2], "num_res_units": 1}
    )
    loss_fn = make_loss(False, "softmax")
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(80):
        chosen = torch.randint(0, len(images), (8,))
        optimizer.zero_grad()
        loss_fn(model(images[chosen]), masks[chosen]).backward()
        optimizer.step()
    model.eval()
    assert dice_per_organ(predict(model, images), masks).mean() > 0.8  # trained: its DSC is worth attacking
    return Quantised(model).eval(), records[:2]


def test_square_raises_a_softmax_models_cross_entropy(masked_softmax):
    """The kept loss is the softmax form's (the cross-entropy over the classes), recomputed by hand."""
    import torch.nn.functional as F

    from core.losses import class_map

    model, records = masked_softmax
    image = torch.stack([torch.from_numpy(record.load(32)[0]) for record in records]).unsqueeze(1)
    target = predict(model, image).float()
    best, best_loss = square_attack(model.inner, image, target, 0.06, steps=10, ids=IDS[:2])
    with torch.no_grad():
        by_hand = F.cross_entropy(model.inner(best), class_map(target), reduction="none").flatten(1).mean(1)
        start = F.cross_entropy(model.inner(image), class_map(target), reduction="none").flatten(1).mean(1)
    torch.testing.assert_close(best_loss, by_hand)
    assert (best_loss > start).all()
