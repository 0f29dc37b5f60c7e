"""Data-set evaluation on the tiny demo data: equal to a direct per-slice computation, JSON-ready."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.attacks.control import AttackCancelled
from core.attacks.fast_gradient import fgsm
from core.attacks.iterative import bim
from core.data.gitract import GITractDataset, load_slice
from core.evaluation.scoring import AttackConfig, evaluate, evaluate_sweep, table_ii
from core.metrics import (
    attack_success,
    dice_per_organ,
    hd95_per_organ,
    mean_dsc,
    nanmean,
    nsd_per_organ,
    slice_spacing,
)
from core.models.inference import predict
from core.models.loaded import LoadedModel
from core.organs import ORGANS

IMG_SIZE = 64


@pytest.fixture(scope="module")
def records(tiny_demo):
    records = GITractDataset(tiny_demo).records
    with_organs = [r for r in records if r.has_organs][:6]
    without = [r for r in records if not r.has_organs][:2]
    assert len(with_organs) == 6 and len(without) == 2, "the tiny demo needs slices with and without organs"
    return with_organs[:3] + without + with_organs[3:]


def _direct(model, record, config):
    """The same attack done by hand for one slice, through the public single-image functions."""
    image, masks = load_slice(record, IMG_SIZE)
    image = torch.from_numpy(image)[None, None]
    truth = torch.from_numpy(masks)[None].float()
    clean_pred = predict(model, image)
    target = truth if config.target == "gt" else clean_pred.float()
    if config.method == "fgsm":
        adversarial = fgsm(model, image, target, config.eps, config.loss, config.mode)
    else:
        adversarial = bim(model, image, target, config.eps, steps=config.steps, loss=config.loss)
    clean = dice_per_organ(clean_pred, truth, config.empty)[0]
    adv = dice_per_organ(predict(model, adversarial), truth, config.empty)[0]
    return clean, adv, float((adversarial - image).abs().max())


def _values(organ_dict):
    """A summary's per-organ dict (None where undefined) as an array (NaN where undefined)."""
    return np.array([np.nan if organ_dict[o] is None else organ_dict[o] for o in ORGANS])


@pytest.mark.parametrize(
    "config",
    [
        AttackConfig(eps=0.02),
        AttackConfig(eps=0.02, loss="focal+dice", mode="paper", target="pred", empty="skip"),
        AttackConfig(method="bim", eps=0.02, steps=2),
    ],
    ids=["fgsm", "fgsm-paper-pred-skip", "bim"],
)
def test_evaluate_equals_direct_per_slice_computation(model, records, config):
    progress = []
    result = evaluate(model, records, IMG_SIZE, config, batch_size=4, progress=lambda d, t: progress.append((d, t)))
    assert progress == [(0, 8), (4, 8), (8, 8)]
    assert [row.slice_id for row in result.rows] == [r.id for r in records]
    for row, record in zip(result.rows, records):
        clean, adv, linf = _direct(model, record, config)
        assert row.has_organs == record.has_organs == row.scored
        np.testing.assert_allclose(row.dsc_clean, clean, rtol=1e-12)
        # A batched gradient may flip a sign where it is ~0; allow a pixel or two of difference.
        np.testing.assert_allclose(row.dsc_adv, adv, atol=2e-3)
        assert row.linf == pytest.approx(linf, abs=1e-6)
        expected_success = attack_success(row.dsc_clean, row.dsc_adv)
        np.testing.assert_allclose(row.attack_success, expected_success)
        assert _values(row.to_dict()["attack_success"]) == pytest.approx(expected_success, nan_ok=True)
    # summary: mean over the slices whose ground truth has an organ
    scored = [row for row in result.rows if row.scored]
    assert result.summary.slices == 8 and result.summary.scored == 6
    assert result.summary.mean_adv == pytest.approx(np.nanmean([row.mean_adv for row in scored]))
    for organ in ORGANS:
        values = [row.dsc_clean[i] for row in scored for i in [ORGANS.index(organ)] if np.isfinite(row.dsc_clean[i])]
        assert result.summary.dsc_clean[organ] == pytest.approx(np.mean(values))
    json.dumps(result.to_dict(), allow_nan=False)


def test_score_all_includes_slices_without_organs(model, records):
    result = evaluate(model, records[:5], IMG_SIZE, AttackConfig(score="all"), batch_size=8)
    assert result.summary.scored == 5
    assert all(row.scored for row in result.rows)
    rows_mean = np.mean([mean_dsc(row.dsc_clean[None])[0] for row in result.rows])
    assert result.summary.mean_clean == pytest.approx(rows_mean)


def test_boundary_metrics_in_mm_on_request(model, records):
    subset = records[:2]
    config = AttackConfig(hausdorff=True, nsd_tolerance=3.0, eps=0.02, empty="skip")
    assert config.metrics == ("dsc", "hd95", "nsd")
    result = evaluate(model, subset, IMG_SIZE, config, batch_size=2)
    for row, record in zip(result.rows, subset):
        image, masks = load_slice(record, IMG_SIZE)
        clean_pred = predict(model, torch.from_numpy(image)[None, None])
        spacing = slice_spacing([record], IMG_SIZE)
        np.testing.assert_allclose(row.hd95_clean, hd95_per_organ(clean_pred, masks[None], spacing, "skip")[0])
        np.testing.assert_allclose(row.nsd_clean, nsd_per_organ(clean_pred, masks[None], 3.0, spacing, "skip")[0])
        assert set(row.to_dict()["hd95_adv"]) == set(row.to_dict()["nsd_adv"]) == set(ORGANS)
    for name in ("hd95_clean", "hd95_adv", "nsd_clean", "nsd_adv"):
        per_slice = np.array([getattr(row, name) for row in result.rows])
        np.testing.assert_allclose(_values(getattr(result.summary, name)), nanmean(per_slice, axis=0))
    data = json.loads(json.dumps(result.to_dict(), allow_nan=False))
    assert data["config"]["nsd_tolerance"] == 3.0 and data["config"]["hausdorff"] is True
    # A DSC-only run's JSON has no NSD keys at all (as before there were any), and HD95 as None.
    plain = evaluate(model, subset[:1], IMG_SIZE, AttackConfig(), batch_size=2)
    assert plain.rows[0].hd95_clean is None and "nsd_clean" not in plain.rows[0].to_dict()
    assert "nsd_clean" not in plain.summary.to_dict() and "nsd_tolerance" not in plain.to_dict()["config"]
    sweep = evaluate_sweep(model, subset, IMG_SIZE, [0.0, 0.02], ["bce"], config, batch_size=2)
    at_zero = sweep.entry("bce", 0.0).summary
    assert at_zero.nsd_adv == at_zero.nsd_clean and at_zero.hd95_adv == at_zero.hd95_clean
    json.dumps(result.to_dict(), allow_nan=False)


def test_sweep_and_table_agree_with_evaluate(model, records):
    subset = records[:4]
    swept = evaluate_sweep(model, subset, IMG_SIZE, [0.0, 0.02], ["bce", "dice"], batch_size=4)
    for loss in ("bce", "dice"):
        single = evaluate(model, subset, IMG_SIZE, AttackConfig(loss=loss, eps=0.02), batch_size=4).summary
        point = swept.entry(loss, 0.02).summary
        assert point.mean_adv == pytest.approx(single.mean_adv, abs=1e-12)
        assert point.mean_clean == pytest.approx(single.mean_clean, abs=1e-12)
        assert swept.entry(loss, 0.0).summary.mean_adv == pytest.approx(single.mean_clean, abs=1e-12)
    json.dumps(swept.to_dict(), allow_nan=False)

    table = table_ii(
        [LoadedModel("random", model, {"img_size": IMG_SIZE})],
        subset,
        ["bce", "dice"],
        AttackConfig(eps=0.02),
        batch_size=4,
    )
    (row,) = table.rows
    assert row.params == sum(p.numel() for p in model.parameters())
    assert row.title == "MobileNetV2 U-Net (small)"
    assert row.dsc_adv["bce"] == pytest.approx(swept.entry("bce", 0.02).summary.mean_adv, abs=1e-12)
    assert row.best_loss == min(row.dsc_adv, key=row.dsc_adv.get)
    json.dumps(table.to_dict(), allow_nan=False)


def test_should_stop_cancels_between_batches(model, records):
    with pytest.raises(AttackCancelled):
        evaluate(model, records, IMG_SIZE, AttackConfig(), batch_size=2, should_stop=lambda: True)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"method": "cw"}, "'cw'"),
        ({"loss": "ce"}, "'ce'"),
        ({"eps": 2.0}, "eps"),
        ({"mode": "paper", "method": "bim"}, "paper"),
        ({"target": "truth"}, "'truth'"),
        ({"empty": "nan"}, "'nan'"),
        ({"score": "some"}, "'some'"),
        ({"steps": 0}, "steps"),
    ],
)
def test_attack_config_names_the_bad_value(changes, message):
    with pytest.raises(ValueError, match=message):
        AttackConfig(**changes)


def test_attack_slice_with_a_cache_steps_eps_without_a_new_gradient(model, records):
    from core.attacks.gradient_cache import GradientCache
    from core.attacks.runner import AttackContext
    from core.evaluation.scoring import attack_slice

    record = next(r for r in records if r.has_organs)
    image, masks = load_slice(record, IMG_SIZE)
    image, truth = torch.from_numpy(image)[None, None], torch.from_numpy(masks)[None].float()
    cache, key = GradientCache(), ("random", record.id, "bce", "gt", "textbook")
    for eps in (0.01, 0.02):
        config = AttackConfig(eps=eps)
        (attacked,) = attack_slice(model, image, truth, config, context=AttackContext(cache=cache, cache_key=key))
        clean, adv, linf = _direct(model, record, config)
        np.testing.assert_allclose(attacked.dsc_clean, clean)
        np.testing.assert_allclose(attacked.dsc_adv, adv)
        assert attacked.linf == pytest.approx(linf, abs=1e-7)
    assert (cache.misses, cache.hits) == (1, 1)  # the second eps reused the first one's gradient


def test_table_ii_with_bim_equals_one_evaluation_per_loss(model, records):
    subset = [r for r in records if r.has_organs][:2]
    table = table_ii(
        [LoadedModel("random", model, {"img_size": IMG_SIZE})],
        subset,
        ["bce", "dice"],
        AttackConfig(method="bim", eps=0.02, steps=2),
    )
    (row,) = table.rows
    for loss in ("bce", "dice"):
        single = evaluate(model, subset, IMG_SIZE, AttackConfig(method="bim", loss=loss, eps=0.02, steps=2)).summary
        assert row.dsc_adv[loss] == pytest.approx(single.mean_adv, abs=1e-12)
    assert table.method == "bim" and row.best_loss == min(row.dsc_adv, key=row.dsc_adv.get)


def test_table_ii_runs_a_method_with_its_own_objective_once_in_one_column(model, records):
    """Erase (like the ensemble and universal) reads no loss: one run, not one identical run per loss."""
    from segadv_tui.render.tables import table_ii_table

    subset = [r for r in records if r.has_organs][:2]
    config = AttackConfig(method="erase", organs=("stomach",), eps=0.02, steps=2)
    seen = []
    table = table_ii(
        [LoadedModel("random", model, {"img_size": IMG_SIZE})],
        subset,
        ["bce", "dice", "focal"],
        config,
        progress=lambda done, total: seen.append(total),
    )
    (row,) = table.rows
    assert table.losses == ["bce"] and set(seen) == {len(subset)}
    assert row.dsc_adv["bce"] == pytest.approx(evaluate(model, subset, IMG_SIZE, config).summary.mean_adv, abs=1e-12)
    headers = table_ii_table(table).headers
    assert headers[3:] == ("Erase (organ logits to 0)",)
