"""Every command follows the label set of the data: a 2-label data set (tests/label_sets.py) through
``attack``, ``table`` and ``robust``, their numbers checked against core.metrics on the records' own masks,
and a checkpoint of another label set refused in one line naming both sets."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from label_sets import LIVER_TUMOUR, SIZE, LabelledData, open_labelled, write_labelled_data

from core.labels import UW_MADISON
from core.metrics import dice_per_organ
from core.models.checkpoints import save_checkpoint
from core.models.inference import predict
from core.models.registry import build_model


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return write_labelled_data(tmp_path_factory.mktemp("labelled") / "liver")


@pytest.fixture(scope="module")
def two_label_model():
    torch.manual_seed(0)
    return build_model("small", labels=LIVER_TUMOUR).eval()


@pytest.fixture(scope="module")
def two_label_checkpoint(two_label_model, tmp_path_factory):
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "liver_small.safetensors", two_label_model, img_size=SIZE)


@pytest.fixture()
def cli(run, monkeypatch):
    open_labelled(monkeypatch)
    return run


def test_attack_scores_the_data_labels_and_equals_an_independent_dice(
    cli, labelled, two_label_checkpoint, two_label_model
):
    result = cli(
        "attack", "-c", two_label_checkpoint, "--data", labelled, "--eps", "0.02", "--json", "a.json", "--csv", "a.csv"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads(open("a.json").read())
    assert payload["labels"] == LIVER_TUMOUR.to_meta()
    assert list(payload["summary"]["dsc_clean"]) == ["liver", "tumour"]
    assert "Liver" in result.stdout and "Tumour" in result.stdout and "Stomach" not in result.stdout
    assert "empty labels" in result.stdout and "label" in result.stdout.split("DSC clean")[0]

    # Clean DSC per label of every scored slice, from the records' own masks and core.metrics.
    test = [r for r in LabelledData(labelled).split()[1] if r.has_labels]
    assert [row["slice_id"] for row in payload["rows"]] == [r.id for r in test]
    for record, row in zip(test, payload["rows"]):
        image, masks = record.load(SIZE)
        clean = predict(two_label_model, torch.from_numpy(image)[None, None])
        expected = dice_per_organ(clean, torch.from_numpy(masks)[None].bool(), "one")[0]
        got = np.array([row["dsc_clean"][name] for name in ("liver", "tumour")], dtype=float)
        np.testing.assert_allclose(got, expected, atol=1e-9)
        assert row["organ_pixels"] == {"liver": int(masks[0].sum()), "tumour": int(masks[1].sum())}

    with open("a.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert header[3:6] == ["dsc_clean_liver", "dsc_clean_tumour", "dsc_clean_mean"]
    assert not any("bowel" in column or "stomach" in column for column in header)


def test_erase_takes_the_data_labels_by_label_or_organ(cli, labelled, two_label_checkpoint):
    erased = cli(
        "attack", "-c", two_label_checkpoint, "--data", labelled, "--method", "erase", "--label", "Tumour",
        "--steps", "2", "--json", "e.json",
    )  # fmt: skip
    assert erased.exit_code == 0, erased.output
    assert json.loads(open("e.json").read())["config"]["organs"] == ["tumour"]
    default = cli(
        "attack",
        "-c",
        two_label_checkpoint,
        "--data",
        labelled,
        "--method",
        "erase",
        "--steps",
        "1",
        "--json",
        "d.json",
    )
    assert default.exit_code == 0, default.output
    assert json.loads(open("d.json").read())["config"]["organs"] == ["tumour"]  # the label set's last

    wrong = cli("attack", "-c", two_label_checkpoint, "--data", labelled, "--method", "erase", "--organs", "stomach")
    assert wrong.exit_code == 2
    lines = wrong.stderr.strip().splitlines()
    assert len(lines) == 1 and "'stomach'" in lines[0] and "liver, tumour" in lines[0], wrong.stderr


def test_table_and_robust_follow_the_data_labels(cli, labelled, two_label_checkpoint):
    table = cli(
        "table", "-c", two_label_checkpoint, "--data", labelled, "--losses", "bce", "--json", "t.json", "--md", "t.md"
    )
    assert table.exit_code == 0, table.output
    written = json.loads(open("t.json").read())
    assert written["labels"] == LIVER_TUMOUR.to_meta()
    assert list(written["rows"][0]["summaries"]["bce"]["dsc_adv"]) == ["liver", "tumour"]
    assert "test slices with labels" in open("t.md").read()

    robust = cli(
        "robust", "-c", two_label_checkpoint, "--data", labelled, "--method", "fgsm", "--eps", "0.01",
        "--json", "r.json", "--csv", "r.csv", "--png", "r.png",
    )  # fmt: skip
    assert robust.exit_code == 0, robust.output
    report = json.loads(open("r.json").read())
    assert report["labels"] == LIVER_TUMOUR.to_meta()
    point = report["curves"][0]["points"][0]
    assert list(point["tertiles"]) == ["liver", "tumour"]
    with open("r.csv", newline="") as handle:
        header = next(csv.reader(handle))
    assert "dsc_adv_tumour_small" in header and not any("stomach" in column for column in header)
    assert "label-size tertile" in robust.stdout and "slices with labels" in robust.stdout


def test_a_checkpoint_of_other_labels_is_refused_in_one_line_naming_both(
    cli, labelled, two_label_checkpoint, tiny_demo
):
    uw_on_liver = cli("attack", "--data", labelled)  # the bundled demo checkpoint: UW-Madison's organs
    assert uw_on_liver.exit_code == 2
    lines = uw_on_liver.stderr.strip().splitlines()
    assert len(lines) == 1, uw_on_liver.stderr
    assert UW_MADISON.describe() in lines[0] and LIVER_TUMOUR.describe() in lines[0]

    liver_on_uw = cli("robust", "-c", two_label_checkpoint, "--data", tiny_demo)
    assert liver_on_uw.exit_code == 2
    lines = liver_on_uw.stderr.strip().splitlines()
    assert len(lines) == 1 and "liver_small.safetensors" in lines[0], liver_on_uw.stderr
    assert UW_MADISON.describe() in lines[0] and LIVER_TUMOUR.describe() in lines[0]
