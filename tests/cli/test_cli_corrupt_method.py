"""``segadv attack --method corrupt``: the registry's MRI-artefact method, scored as every attack is.

Its numbers are checked against the corruption applied by hand (``core.evaluation.corruptions.corrupt``
with the slice's seed, the model's prediction, Dice against the truth): the registry run must be that
computation, not another one."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from core.attacks.config import AttackConfig
from core.attacks.iterative import slice_seed
from core.data.gitract import GITractDataset, with_organs
from core.errors import OptionError
from core.evaluation.corruptions import CORRUPTIONS, LEVELS, SEVERITIES, corrupt
from core.metrics import dice_per_organ
from core.models.checkpoints import load_checkpoint, save_checkpoint
from core.models.inference import predict
from core.models.registry import build_model
from core.names import CORRUPTION_LEVELS, CORRUPTION_NAMES, CORRUPTION_TITLES

IMG_SIZE = 64
LIMIT = 2


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny_small.safetensors", build_model("small"), img_size=IMG_SIZE
    )


def test_the_names_are_the_corruptions_module_s():
    assert CORRUPTION_NAMES == CORRUPTIONS and CORRUPTION_LEVELS == LEVELS
    assert CORRUPTION_TITLES == {name: title for name, (title, _) in SEVERITIES.items()}


def test_registry_run_is_the_corruption_applied_by_hand(run, checkpoint, tiny_demo):
    result = run(
        "attack",
        "--checkpoint",
        checkpoint,
        "--data",
        tiny_demo,
        "--limit",
        LIMIT,
        "--method",
        "corrupt",
        "--corruption",
        "Blur",
        "--severity",
        "4",
        "--seed",
        "3",
        "--json",
        "c.json",
    )
    assert result.exit_code == 0, result.output
    assert "Corrupt (Blur, severity 4)" in result.stdout and "eps ignored" in result.stdout
    written = json.loads(open("c.json").read())
    assert written["config"]["corruption"] == "blur" and written["config"]["severity"] == 4

    model, _ = load_checkpoint(checkpoint)
    records = with_organs(GITractDataset(tiny_demo).split()[1])[:LIMIT]
    assert [row["slice_id"] for row in written["rows"]] == [record.id for record in records]
    for row, record in zip(written["rows"], records):
        image, masks = record.load(IMG_SIZE)
        image = torch.as_tensor(image)[None, None]
        corrupted = corrupt(image, "blur", 4, [slice_seed(3, record.id)])
        expected = dice_per_organ(predict(model, corrupted), torch.as_tensor(masks)[None].bool(), "one")[0]
        got = np.array([np.nan if v is None else v for v in row["dsc_adv"].values()])
        np.testing.assert_allclose(got, expected, rtol=1e-6, atol=1e-6)
        assert row["linf"] == pytest.approx(float((corrupted - image).abs().max()), abs=1e-6)


@pytest.mark.parametrize(
    "args, named",
    [
        (["--corruption", "rain"], "rain"),
        (["--severity", "6"], "6"),
        (["--severity", "two"], "two"),
        (["--severity", "0"], "0"),
    ],
)
def test_a_bad_corruption_or_severity_is_one_line(run, checkpoint, tiny_demo, args, named):
    result = run("attack", "--method", "corrupt", *args, "--checkpoint", checkpoint, "--data", tiny_demo)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and named in lines[0] and "Traceback" not in result.output


def test_config_keeps_attacks_as_they_were():
    assert "corruption" not in AttackConfig().to_dict() and "severity" not in AttackConfig().to_dict()
    config = AttackConfig.for_method("corrupt", corruption="gamma", severity=5)
    assert config.label == "severity 5 · Gamma corruption · eps ignored"
    assert config.with_severity(9).severity == 5 and config.with_severity(0).severity == 1
    back = config.replace(method="pgd")  # what only corrupt reads goes back to its default
    assert (back.corruption, back.severity) == (CORRUPTION_NAMES[0], 1)
    with pytest.raises(OptionError, match="corrupt method"):
        AttackConfig(method="pgd", severity=3)


@pytest.mark.parametrize(
    ("command", "needs"),
    [
        (["robust"], "robust measures DSC against eps"),
        (["transfer", "-c", "{ck}", "-c", "{ck}"], "transfer crafts a perturbation on one model"),
        (["study", "luminosity"], "study luminosity measures the attack's success against an eps budget"),
    ],
    ids=["robust", "transfer", "luminosity"],
)
def test_commands_of_eps_or_source_models_refuse_the_artefacts(run, checkpoint, tiny_demo, command, needs):
    """An artefact ignores eps and the attacked model: curves over eps, transfer matrices and luminosity
    studies of it would print the same number everywhere as if it were a finding."""
    args = [str(checkpoint) if part == "{ck}" else part for part in command]
    if command[0] != "transfer":
        args += ["--checkpoint", checkpoint]
    result = run(*args, "--method", "corrupt", "--data", tiny_demo, "--limit", LIMIT)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {needs}"), result.stderr
    assert "segadv corrupt" in lines[0]


def test_table_ii_of_the_artefact_names_no_eps(run, checkpoint, tiny_demo, tmp_path):
    result = run(
        "table", "-c", checkpoint, "--data", tiny_demo, "--limit", LIMIT, "--method", "corrupt", "--md", "t.md"
    )
    assert result.exit_code == 0, result.output
    caption = (tmp_path / "t.md").read_text().strip().splitlines()[-1]
    assert caption.startswith("DSC before and after Corrupt") and "eps" not in caption, caption
