"""``--metrics dsc,hd95,nsd`` end to end: the boundary metrics reach the JSON, the CSV and the tables of
``attack``, ``table``, ``robust`` and ``transfer``, equal to core's own evaluation, and only when asked."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch

from core.data.gitract import GITractDataset, with_organs
from core.evaluation.scoring import AttackConfig, evaluate
from core.models.checkpoints import load_checkpoint, save_checkpoint
from core.models.registry import build_model
from core.organs import ORGANS

IMG_SIZE = 64
LIMIT = 2


@pytest.fixture(scope="module")
def checkpoints(tmp_path_factory):
    """Two real small U-Nets with random weights at 64 x 64 (transfer needs two)."""
    folder = tmp_path_factory.mktemp("ck")
    paths = []
    for seed, name in ((0, "small"), (1, "small-fpn")):
        torch.manual_seed(seed)
        paths.append(save_checkpoint(folder / f"tiny_{name}.safetensors", build_model(name), img_size=IMG_SIZE))
    return paths


def _common(checkpoint, tiny_demo):
    return ["--checkpoint", checkpoint, "--data", tiny_demo, "--limit", LIMIT]


def _rows(path):
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


def test_attack_adds_hd95_and_nsd_equal_to_core(run, checkpoints, tiny_demo, tmp_path):
    result = run(
        "attack",
        *_common(checkpoints[0], tiny_demo),
        "--metrics",
        "dsc,hd95,nsd",
        "--nsd-tolerance",
        "3",
        "--json",
        "a.json",
        "--csv",
        "a.csv",
    )
    assert result.exit_code == 0, result.output
    assert "HD95 mm clean" in result.stdout and "NSD adversarial" in result.stdout
    data = json.loads((tmp_path / "a.json").read_text())
    assert data["config"]["hausdorff"] is True and data["config"]["nsd_tolerance"] == 3.0
    model, _ = load_checkpoint(checkpoints[0])
    slices = with_organs(GITractDataset(tiny_demo).split()[1])[:LIMIT]
    expected = evaluate(model, slices, IMG_SIZE, AttackConfig(hausdorff=True, nsd_tolerance=3.0))
    for row, want in zip(data["rows"], expected.rows):
        for name in ("hd95_clean", "hd95_adv", "nsd_clean", "nsd_adv"):
            got = np.array([np.nan if row[name][o] is None else row[name][o] for o in ORGANS])
            np.testing.assert_allclose(got, getattr(want, name), rtol=1e-9)
    summary = data["summary"]
    for name in ("hd95_clean", "hd95_adv", "nsd_clean", "nsd_adv"):
        assert set(summary[name]) == set(ORGANS) and summary[f"mean_{name}"] == getattr(
            expected.summary, f"mean_{name}"
        )
    assert all(0 <= value <= 1 for value in summary["nsd_adv"].values() if value is not None)
    rows = _rows(tmp_path / "a.csv")
    assert [float(rows[0][f"hd95_clean_{o}"]) for o in ORGANS] == pytest.approx(list(expected.rows[0].hd95_clean))
    assert f"nsd_adv_{ORGANS[-1]}" in rows[0]


def test_dsc_alone_adds_nothing(run, checkpoints, tiny_demo, tmp_path):
    result = run("attack", *_common(checkpoints[0], tiny_demo), "--json", "a.json", "--csv", "a.csv")
    assert result.exit_code == 0, result.output
    assert "HD95" not in result.stdout and "NSD" not in result.stdout
    data = json.loads((tmp_path / "a.json").read_text())
    assert "nsd_tolerance" not in data["config"] and "nsd_clean" not in data["rows"][0]
    assert data["rows"][0]["hd95_clean"] is None and "mean_hd95_clean" not in data["summary"]
    assert not any(name.startswith(("hd95", "nsd")) for name in _rows(tmp_path / "a.csv")[0])


@pytest.mark.parametrize(
    "arguments, message",
    [
        (["--metrics", "dice"], "unknown metric 'dice'"),
        (["--metrics", ","], "names no metric"),
        (["--nsd-tolerance", "3"], "add nsd to --metrics"),
        (["--metrics", "nsd", "--nsd-tolerance", "-1"], "at least 0"),
    ],
)
def test_bad_metric_options_are_one_line(run, checkpoints, tiny_demo, arguments, message):
    result = run("attack", *_common(checkpoints[0], tiny_demo), *arguments)
    assert result.exit_code == 2 and message in result.output and "Traceback" not in result.output


def test_table_robust_and_transfer_carry_the_columns(run, checkpoints, tiny_demo, tmp_path):
    common = ["--data", tiny_demo, "--limit", LIMIT, "--metrics", "hd95,nsd"]
    table = run("table", "-c", checkpoints[0], *common, "--losses", "bce", "--csv", "t.csv", "--json", "t.json")
    assert table.exit_code == 0, table.output
    assert "boundary metrics" in table.stdout
    row = _rows(tmp_path / "t.csv")[0]
    summary = json.loads((tmp_path / "t.json").read_text())["rows"][0]["summaries"]["bce"]
    assert float(row["bce_nsd_adv_mean"]) == pytest.approx(summary["mean_nsd_adv"])
    robust = run("robust", "-c", checkpoints[0], *common, "--method", "fgsm", "--eps", "0,0.02", "-o", "r")
    assert robust.exit_code == 0, robust.output
    points = _rows(tmp_path / "r" / "robust.csv")
    # At eps 0 the attack changes nothing: adversarial equals clean.
    assert points[0]["hd95_adv_mean"] == points[0]["hd95_clean_mean"] and "nsd_adv_stomach" in points[1]
    transfer = run("transfer", "-c", checkpoints[0], "-c", checkpoints[1], *common, "-o", "x")
    assert transfer.exit_code == 0, transfer.output
    cells = _rows(tmp_path / "x" / "transfer.csv")
    assert len(cells) == 4 and all("hd95_adv_mean" in cell and "nsd_clean_mean" in cell for cell in cells)
