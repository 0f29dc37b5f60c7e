"""``--norm l2``, ``--method square`` and ``--loss hallucinate`` from the command line on the tiny demo data: the
JSON holds what ``core.evaluation`` computes and names the norm; bad combinations are one line."""

from __future__ import annotations

import json

import pytest

from core.evaluation.scoring import AttackConfig, evaluate
from core.models.checkpoints import load_checkpoint

IMG_SIZE = 64
LIMIT = 2


@pytest.mark.parametrize(
    "options, config",
    [
        (
            ["--method", "pgd", "--norm", "l2", "--eps", "1.5", "--steps", "2"],
            AttackConfig.for_method("pgd", norm="l2", eps=1.5, steps=2),
        ),
        (
            ["--method", "square", "--steps", "3", "--eps", "0.03"],
            AttackConfig.for_method("square", eps=0.03, steps=3),
        ),
        (["--loss", "hallucinate"], AttackConfig(loss="hallucinate")),
    ],
)
def test_attack_json_equals_core(run, small_checkpoint, tiny_demo, tiny_test_slices, options, config):
    result = run(
        "attack", "--checkpoint", small_checkpoint, "--data", tiny_demo, "--limit", LIMIT, *options, "--json", "a.json"
    )
    assert result.exit_code == 0, result.output
    written = json.loads(open("a.json").read())
    assert written["config"]["norm"] == config.norm and written["config"]["method_label"] == config.method_label
    model, _ = load_checkpoint(small_checkpoint)
    expected = evaluate(model, tiny_test_slices[:LIMIT], IMG_SIZE, config)
    assert written["summary"] == json.loads(json.dumps(expected.summary.to_dict()))
    if config.norm == "l2":
        assert all(0 < row["l2"] <= 1.5 + 1e-5 for row in written["rows"])


@pytest.mark.parametrize(
    "args, named",
    [
        (["--norm", "l1"], "l1"),
        (["--eps", "2"], "2"),
        (["--norm", "l2", "--eps", "5000"], "5000"),
        (["--method", "erase", "--norm", "l2"], "l2"),
        (["--method", "square", "--norm", "l2"], "square"),
        (["--norm", "l2", "--mode", "paper"], "paper"),
    ],
)
def test_bad_combinations_are_one_line(run, small_checkpoint, tiny_demo, args, named):
    result = run("attack", "--checkpoint", small_checkpoint, "--data", tiny_demo, *args)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], result.stderr
