"""``segadv study luminosity``: Spearman's rho against scipy, the bootstrap interval, the intensity
features of a known 16-bit slice, and the command's files."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image
from scipy.stats import spearmanr
from typer.testing import CliRunner

from core.data.gitract import GITractDataset
from core.evaluation.luminosity import bootstrap_interval, slice_luminosity, spearman
from core.models.checkpoints import save_checkpoint
from core.models.registry import build_model
from segadv_tui import cli


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_rho_matches_scipy_with_ties_and_noise(seed):
    rng = np.random.default_rng(seed)
    x = rng.integers(0, 12, 60).astype(float)  # many ties
    y = 0.5 * x + rng.normal(0, 2, 60)
    assert spearman(x, y) == pytest.approx(spearmanr(x, y).statistic, abs=1e-12)
    assert spearman(x, -x) == pytest.approx(-1.0) and spearman(x, np.exp(x)) == pytest.approx(1.0)


def test_rho_is_undefined_for_a_constant_side_or_too_few_pairs():
    assert np.isnan(spearman([1, 2, 3, 4], [5, 5, 5, 5])) and np.isnan(spearman([1, 2], [2, 1]))


def test_the_bootstrap_interval_brackets_rho_and_is_reproducible():
    rng = np.random.default_rng(0)
    x = rng.normal(size=80)
    y = x + rng.normal(size=80)
    low, high = bootstrap_interval(x, y, resamples=500, seed=3)
    assert low < spearman(x, y) < high and high - low < 0.5
    assert (low, high) == bootstrap_interval(x, y, resamples=500, seed=3)


def test_resampling_whole_groups_widens_the_interval_of_clustered_data():
    # 6 scans of 10 near-identical slices: 60 pairs, but only 6 independent ones.
    rng = np.random.default_rng(1)
    x, y = rng.normal(size=6), rng.normal(size=6)
    x, y = np.repeat(x, 10) + rng.normal(0, 1e-3, 60), np.repeat(y, 10) + rng.normal(0, 1e-3, 60)
    slices = bootstrap_interval(x, y, resamples=500)
    cases = bootstrap_interval(x, y, groups=np.repeat(np.arange(6), 10), resamples=500)
    assert cases[1] - cases[0] > 2 * (slices[1] - slices[0])
    # One scan resampled is always itself: no interval rather than a zero-width one.
    assert bootstrap_interval(x, y, groups=np.zeros(60), resamples=50) == (None, None)


def test_the_features_of_a_known_16_bit_slice(tmp_path):
    pixels = np.zeros((40, 40), dtype=np.uint16)
    pixels[:, 20:] = 4000
    pixels[0, 0] = 8000
    path = tmp_path / "slice_0001_40_40_1.50_1.50.png"
    Image.fromarray(pixels).save(path)
    features = slice_luminosity(path, 20)
    assert features["raw_mean"] == pytest.approx(pixels.mean())
    assert features["raw_p99"] == pytest.approx(np.percentile(pixels.astype(float), 99))
    assert features["input_mean"] == pytest.approx(pixels.mean() / 8000, rel=1e-5)
    assert features["input_p99"] == pytest.approx(0.5)


@pytest.fixture()
def luminosity(monkeypatch, tmp_path, tiny_demo):
    """``segadv study luminosity ARGS`` on a random small U-Net at 64 x 64 and the tiny demo, from tmp_path."""
    torch.manual_seed(0)
    checkpoint = save_checkpoint(tmp_path / "small.safetensors", build_model("small"), img_size=64)
    cli._register_commands()
    monkeypatch.chdir(tmp_path)
    return lambda *args: CliRunner().invoke(
        cli.app, ["study", "luminosity", "-c", str(checkpoint), "--data", str(tiny_demo), *args], env={"COLUMNS": "200"}
    )


def test_cli_writes_json_png_csv(luminosity, tmp_path, tiny_demo):
    result = luminosity("--eps", "0.05", "--resamples", "200", "--csv", "l.csv", "--bootstrap", "scan")
    assert result.exit_code == 0, result.output
    written = json.loads((tmp_path / "segadv-out" / "luminosity.json").read_text())
    records = GITractDataset(tiny_demo).records
    rows = written["rows"]
    success = [row["attack_success"] for row in rows]
    for name, correlation in written["correlations"].items():
        expected = spearmanr([row[name] for row in rows], success).statistic
        assert correlation["n"] == len(rows)
        if np.isfinite(expected):
            assert correlation["rho"] == pytest.approx(expected, abs=1e-12)
    assert written["bootstrap_unit"] == "scan" and {row["scan"] for row in rows} <= {r.case_day for r in records}
    assert len((tmp_path / "l.csv").read_text().strip().splitlines()) == 1 + len(rows)
    with Image.open(tmp_path / "segadv-out" / "luminosity.png") as png:  # 7.2 in at 300 dpi, by default
        assert png.width == 2160 and png.height >= 1400 and png.info["dpi"] == pytest.approx((300, 300), abs=0.05)


def test_cli_bad_bootstrap_unit_is_one_line(monkeypatch, tmp_path, tiny_demo):
    cli._register_commands()
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(cli.app, ["study", "luminosity", "--data", str(tiny_demo), "--bootstrap", "patient"])
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "'patient'" in lines[0] and "slice, scan, case" in lines[0]


def test_an_interval_that_cannot_be_had_is_printed_as_n_a(luminosity):
    """The tiny demo's test split is one case: a bootstrap over cases has one unit to draw, so no interval;
    its cell says so (it was read as Rich markup and printed empty)."""
    result = luminosity("--limit", "3", "--resamples", "20", "--bootstrap", "case")
    assert result.exit_code == 0, result.output
    (row,) = [line for line in result.stdout.splitlines() if "raw slice, mean" in line]
    assert "[n/a, n/a]" in row
