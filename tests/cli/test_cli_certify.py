"""``segadv certify`` end to end on the tiny demo with the bundled checkpoint."""

from __future__ import annotations

import json

import pytest


def test_certify_writes_a_bound_per_label(run, tiny_demo, tmp_path):
    out = tmp_path / "c.json"
    result = run(
        "certify",
        "--data",
        tiny_demo,
        "--limit",
        "2",
        "--n",
        "100",
        "--n0",
        "4",
        "--json",
        out,
        "--csv",
        tmp_path / "c.csv",
    )
    assert result.exit_code == 0, result.output
    assert "certified DSC at L2 radius 0.169" in result.output
    report = json.loads(out.read_text())
    assert report["forward_passes_per_slice"] == 104 and report["labels"] == ["large_bowel", "small_bowel", "stomach"]
    assert len(report["slices"]) == 2
    for row in report["slices"]:
        for name in report["labels"]:
            base, bound = row["dsc_base"][name], row["dsc_certified"][name]
            assert 0 <= bound <= 1 and 0 <= base <= 1 and 0 <= row["abstain"][name] <= 1
    lines = (tmp_path / "c.csv").read_text().splitlines()
    assert lines[0] == "slice_id,label,dsc_base,dsc_certified,abstain" and len(lines) == 1 + 2 * 3


@pytest.mark.parametrize(
    "option, message",
    [
        (["--correction", "bonferroni"], "unknown correction 'bonferroni'; choose from holm, bh"),
        (["--n", "20"], "with n=20 samples no pixel can be certified at radius 0.169"),
        (["--sigma", "0"], "sigma must be a positive number, got 0.0"),
    ],
)
def test_bad_values_are_one_line(run, tiny_demo, option, message):
    result = run("certify", "--data", tiny_demo, "--limit", "1", *option)
    assert result.exit_code == 2 and message in " ".join(result.output.split()), result.output
    assert "Traceback" not in result.output
