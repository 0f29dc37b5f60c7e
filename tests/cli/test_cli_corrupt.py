"""``segadv corrupt`` end to end on the tiny demo with the bundled checkpoint."""

from __future__ import annotations

import json


def test_corrupt_writes_curves_beside_fgsm(run, tiny_demo, tmp_path):
    out = tmp_path / "c.json"
    args = ["--data", tiny_demo, "--limit", "2", "--corruptions", "gamma,noise", "--eps", "0.009"]
    result = run("corrupt", *args, "--json", out, "--csv", tmp_path / "c.csv")
    assert result.exit_code == 0, result.output
    assert "Gamma" in result.output and "FGSM, eps 0.009" in result.output
    report = json.loads(out.read_text())
    assert list(report["corruptions"]) == ["gamma", "noise"]
    assert [point["severity"] for point in report["corruptions"]["noise"]] == [1, 2, 3, 4, 5]
    means = [point["mean_dsc"] for name in ("gamma", "noise") for point in report["corruptions"][name]]
    assert report["mean_dsc_over_corruptions"] == sum(means) / len(means)
    assert report["fgsm"][0]["eps"] == 0.009 and report["slices"] == 2
    assert len((tmp_path / "c.csv").read_text().splitlines()) == 1 + 1 + 10 + 1


def test_an_unknown_corruption_is_one_line(run, tiny_demo):
    result = run("corrupt", "--data", tiny_demo, "--corruptions", "rain")
    assert result.exit_code == 2 and "unknown corruption 'rain'" in result.output and "Traceback" not in result.output
