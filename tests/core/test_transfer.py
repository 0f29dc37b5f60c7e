"""``segadv transfer`` and ``core.evaluation.transfer``: the diagonal is the white-box attack, the leave-one-out
ensemble never sees its target, bad input is one line. Real smp models (random weights) at 64 x 64."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import torch

from core.attacks.config import AttackConfig
from core.errors import OptionError
from core.evaluation.scoring import evaluate
from core.evaluation.transfer import LogitEnsemble, transfer, transfer_sources
from core.models.checkpoints import save_checkpoint
from core.models.loaded import LoadedModel
from core.models.registry import build_model

IMG_SIZE = 64
LIMIT = 3


@pytest.fixture(scope="module")
def models():
    """Three architectures of the registry, random weights, eval mode."""
    built = []
    for seed, name in enumerate(("small", "small-fpn", "small-unetpp")):
        torch.manual_seed(seed)
        built.append(LoadedModel(name, build_model(name).eval()))
    return built


@pytest.fixture(scope="module")
def records(tiny_test_slices):
    return tiny_test_slices[:LIMIT]


def _same_rows(rows, expected):
    assert [row.slice_id for row in rows] == [row.slice_id for row in expected]
    for row, reference in zip(rows, expected):
        np.testing.assert_array_equal(row.dsc_clean, reference.dsc_clean)
        np.testing.assert_array_equal(row.dsc_adv, reference.dsc_adv)
        assert row.linf == reference.linf and row.l2 == reference.l2


@pytest.mark.parametrize(
    "config", [AttackConfig(eps=0.03), AttackConfig.for_method("pgd", eps=0.03, steps=2)], ids=["fgsm", "pgd"]
)
def test_the_diagonal_is_the_white_box_attack(models, records, config):
    # Batches of 2 over 3 slices: PGD's random starts are seeded per slice, as evaluate's are.
    result = transfer(models[:2], records, IMG_SIZE, config, batch_size=2)
    assert result.attacks == 2 * 2  # one attack per source and batch, not one per (source, target)
    for label, model in ((loaded.label, loaded.model) for loaded in models[:2]):
        expected = evaluate(model, records, IMG_SIZE, config, batch_size=2)
        _same_rows(result.rows[label, label], expected.rows)
        assert result.cell(label, label).summary == expected.summary and result.cell(label, label).white_box
    off = result.cell("small", "small-fpn")
    assert not off.white_box
    assert off.summary.mean_clean == result.cell("small-fpn", "small-fpn").summary.mean_clean


@pytest.mark.parametrize(
    "config",
    [AttackConfig(eps=0.03), AttackConfig.for_method("pgd", eps=0.03, steps=2), AttackConfig(eps=0.03, target="pred")],
    ids=["fgsm", "pgd", "fgsm-pred"],
)
def test_one_slice_scored_on_another_model_is_the_transfer_cell(models, records, config):
    """The explorer's "score on": ``attack_slice(..., scored_on=B)`` per slice equals the (A, B) cell of the
    matrix, cached FGSM included, and so does the eps sweep made from A's gradient."""
    from core.attacks.gradient_cache import GradientCache
    from core.attacks.runner import AttackContext
    from core.data.gitract import load_slice
    from core.evaluation.scoring import attack_slice, sweep

    (source, attacked), (target, scoring) = (models[0].label, models[0].model), (models[1].label, models[1].model)
    result = transfer(models[:2], records, IMG_SIZE, config, batch_size=1, ensembles=False)
    cache = GradientCache()
    for record, expected in zip(records, result.rows[source, target]):
        image, masks = load_slice(record, IMG_SIZE)
        image, truth = torch.from_numpy(image)[None, None], torch.from_numpy(masks.astype(bool))[None]
        for _ in range(2):  # the second FGSM comes from the gradient cache
            context = AttackContext(cache=cache, cache_key=(source, record.id, config.loss, config.target, config.mode))
            (row,) = attack_slice(attacked, image, truth, config, ids=[record.id], context=context, scored_on=scoring)
            _same_rows([row], [expected])
        if config.method == "fgsm":
            target_mask = truth if config.target == "gt" else None
            (swept,) = sweep(
                attacked, image, target_mask, [config.eps], config, truth=truth, ids=[record.id], scored_on=scoring
            )[0]
            _same_rows([swept], [expected])
    white = result.rows[source, source]
    assert any(not np.array_equal(a.dsc_adv, b.dsc_adv) for a, b in zip(white, result.rows[source, target]))


def test_leave_one_out_ensembles_never_include_their_target():
    sources = transfer_sources(["a", "b", "c", "d"])
    ensembles = [s for s in sources if s.is_ensemble]
    assert [s.left_out for s in ensembles] == [0, 1, 2, 3]
    for source in ensembles:
        assert source.left_out not in source.members and len(source.members) == 3
    assert not [s for s in transfer_sources(["a", "b"]) if s.is_ensemble]  # the other model is already a row
    assert not [s for s in transfer_sources(["a", "b", "c"], ensembles=False) if s.is_ensemble]


def test_the_ensemble_row_does_not_depend_on_the_model_it_leaves_out(models, records):
    config = AttackConfig(eps=0.03)
    torch.manual_seed(7)
    swapped = models[:2] + [LoadedModel("small-unetpp", build_model("small-unetpp").eval())]
    first = transfer(models, records, IMG_SIZE, config)
    second = transfer(swapped, records, IMG_SIZE, config)
    for target in ("small", "small-fpn"):  # the left-out model changed; the attack on the others did not
        _same_rows(first.rows["all but small-unetpp", target], second.rows["all but small-unetpp", target])
    cell = first.cell("all but small-unetpp", "small-unetpp")
    assert not cell.white_box and first.cell("all but small-unetpp", "small").white_box
    # And the row is the attack on the mean of the other two models' logits, scored on the third.
    ensemble = LogitEnsemble([models[0].model, models[1].model])
    crafted = evaluate(ensemble, records, IMG_SIZE, config)
    assert [r.linf for r in first.rows["all but small-unetpp", "small-unetpp"]] == [r.linf for r in crafted.rows]


def test_the_ensemble_is_the_mean_of_logits_and_leaves_its_members_in_eval_mode(models):
    members = [loaded.model for loaded in models[:2]]
    ensemble = LogitEnsemble(members)
    image = torch.rand(2, 1, IMG_SIZE, IMG_SIZE)
    with torch.no_grad():
        expected = (members[0](image) + members[1](image)) / 2
        torch.testing.assert_close(ensemble(image), expected)
    from core.attacks.fast_gradient import fgsm

    fgsm(ensemble, image, torch.zeros(2, 3, IMG_SIZE, IMG_SIZE), 0.01)
    assert not ensemble.training and not any(m.training for m in members)


def test_one_model_is_an_option_error(models, records):
    with pytest.raises(OptionError, match="at least two"):
        transfer(models[:1], records, IMG_SIZE, AttackConfig())


@pytest.fixture(scope="module")
def checkpoints(models, tmp_path_factory):
    folder = tmp_path_factory.mktemp("transfer-ck")
    return [save_checkpoint(folder / f"{m.label}.safetensors", m.model, img_size=IMG_SIZE) for m in models[:2]]


def test_cli_writes_the_matrix_and_its_diagonal_is_segadv_attack(run, checkpoints, tiny_demo):
    common = ["--data", tiny_demo, "--limit", LIMIT, "--eps", "0.03"]
    result = run(
        "transfer",
        "-c",
        checkpoints[0],
        "-c",
        checkpoints[1],
        *common,
        "--json",
        "t.json",
        "--csv",
        "t.csv",
        "--png",
        "t.svg",
        "--width",
        "single",
    )
    assert result.exit_code == 0, result.output
    attacked = run("attack", "-c", checkpoints[1], *common, "--json", "a.json")
    assert attacked.exit_code == 0, attacked.output
    matrix, single = json.loads(open("t.json").read()), json.loads(open("a.json").read())
    diagonal = next(c for c in matrix["cells"] if c["source"] == c["target"] == "small-fpn")
    assert diagonal["summary"] == single["summary"] and diagonal["white_box"]
    assert len(matrix["cells"]) == 4 and matrix["attacks"] == 2
    assert len(open("t.csv").read().strip().splitlines()) == 1 + 4
    svg = ElementTree.parse("t.svg").getroot()
    assert svg.get("width") == "252pt"  # one journal column, 3.5 in
    assert svg.find(".//{http://purl.org/dc/elements/1.1/}title").text.startswith("Transfer: attack success")


def test_cli_one_checkpoint_is_one_line_exit_2(run, checkpoints, tiny_demo):
    result = run("transfer", "-c", checkpoints[0], "--data", tiny_demo)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "at least two" in lines[0]
