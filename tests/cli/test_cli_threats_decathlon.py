"""``segadv certify`` and ``segadv corrupt`` on a tiny Decathlon folder with a softmax checkpoint: the JSON
names the checkpoint and the data's labels and holds what ``core.evaluation`` computes on the same slices;
the CSV has a row per slice and label (certify) or per point (corrupt)."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from decathlon_files import make_phantom_dataset

from core.data.gitract import select_slices
from core.data.open import open_dataset
from core.models.checkpoints import load_checkpoint, save_checkpoint
from core.models.registry import build_model

IMG_SIZE = 32
LIMIT = 2
LABELS = ["disc", "ring", "square"]


@pytest.fixture(scope="module")
def decathlon(tmp_path_factory):
    """The phantom Decathlon folder, a softmax ``small`` checkpoint of its labels (random weights, seed 0)
    and the first test slices with labels."""
    root = make_phantom_dataset(tmp_path_factory.mktemp("data") / "phantoms")
    dataset = open_dataset(root)
    torch.manual_seed(0)
    model = build_model("small", labels=dataset.labels)
    checkpoint = save_checkpoint(tmp_path_factory.mktemp("ck") / "softmax.safetensors", model, img_size=IMG_SIZE)
    return root, checkpoint, select_slices(dataset, "test", organs_only=True, limit=LIMIT)


@pytest.fixture(autouse=True)
def own_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))  # the label-presence cache of the reader


def test_certify_on_decathlon_equals_core(run, decathlon, tmp_path):
    from core.evaluation.certify import CertifyConfig, certify

    root, checkpoint, records = decathlon
    out, csv = tmp_path / "c.json", tmp_path / "c.csv"
    result = run("certify", "-c", checkpoint, "--data", root, "--limit", LIMIT, "--n", 100, "--n0", 4, "--json", out)
    assert result.exit_code == 0, result.output
    report = json.loads(out.read_text())
    assert report["labels"] == LABELS and report["checkpoint"] == str(checkpoint) and report["img_size"] == IMG_SIZE
    model, _ = load_checkpoint(checkpoint)
    expected = certify(model, records, IMG_SIZE, CertifyConfig(n=100, n0=4)).to_dict()
    assert report["slices"] == expected["slices"] and report["mean"] == expected["mean"]
    assert report["present_absent"] == expected["present_absent"]
    split = report["present_absent"]
    caption = " ".join(result.output.split())
    assert (
        f"{LIMIT} test slices" in caption and f"Labels present in the truth ({split['present_pairs']} pairs)" in caption
    )
    for row in report["slices"]:  # a softmax pixel is one test: it abstains for every label at once
        assert len(set(row["abstain"].values())) == 1

    result = run("certify", "-c", checkpoint, "--data", root, "--limit", LIMIT, "--n", 100, "--csv", csv, "--json", out)
    assert result.exit_code == 0, result.output
    lines = csv.read_text().splitlines()
    assert len(lines) == 1 + LIMIT * len(LABELS) and {line.split(",")[1] for line in lines[1:]} == set(LABELS)


def test_corrupt_on_decathlon_equals_core(run, decathlon, tmp_path):
    from core.evaluation.corruptions import corruption_curves

    root, checkpoint, records = decathlon
    out = tmp_path / "c.json"
    args = ["-c", checkpoint, "--data", root, "--limit", LIMIT, "--corruptions", "motion,gamma", "--eps", "0.009"]
    result = run("corrupt", *args, "--empty", "ZERO", "--json", out, "--csv", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert "Motion" in result.output and "FGSM, eps 0.009" in result.output
    report = json.loads(out.read_text())
    assert report["labels"] == LABELS and report["checkpoint"] == str(checkpoint) and report["slices"] == LIMIT
    model, _ = load_checkpoint(checkpoint)
    expected = corruption_curves(model, records, IMG_SIZE, ["motion", "gamma"], empty="zero").to_dict()
    assert report["corruptions"] == expected["corruptions"] and report["clean"] == expected["clean"]
    assert np.isfinite(report["mean_dsc_over_corruptions"])
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 1 + 1 + 10 + 1


def test_a_bad_empty_policy_is_one_line(run, decathlon):
    root, checkpoint, _ = decathlon
    for command in ("certify", "corrupt"):
        result = run(command, "-c", checkpoint, "--data", root, "--empty", "maybe")
        assert result.exit_code == 2, result.output
        assert "unknown empty-organ policy 'maybe'" in result.output and "Traceback" not in result.output
