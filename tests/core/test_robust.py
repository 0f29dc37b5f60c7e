"""The robustness report: ``core.evaluation.robustness`` against ``core.evaluation`` and hand counts, and ``segadv
robust`` end to end on the tiny demo data (its files hold core's numbers; bad input is one line)."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from core.attacks.config import ENSEMBLE, AttackConfig
from core.data.gitract import GITractDataset, with_organs
from core.evaluation.robustness import robustness, rog_fraction, size_tertiles
from core.evaluation.scoring import evaluate
from core.models.checkpoints import save_checkpoint
from core.models.loaded import LoadedModel
from core.models.registry import build_model
from core.organs import ORGANS
from core.results import SliceResult

IMG_SIZE = 48
EPS = [0.004, 0.03]


@pytest.fixture(scope="module")
def records(tiny_test_slices):
    return tiny_test_slices[:4]


def test_every_point_is_the_evaluation_at_its_eps(model, records):
    config = AttackConfig.for_method("apgd", steps=3, loss="masked-bce")
    progress = []
    report = robustness(
        [LoadedModel("random", model, {"img_size": IMG_SIZE})],
        records,
        config,
        EPS,
        batch_size=3,
        progress=lambda done, total: progress.append((done, total)),
    )
    assert progress[0] == (0, 8) and progress[-1] == (8, 8)
    (curve,) = report.curves
    assert [p.eps for p in curve.points] == EPS and curve.title == "MobileNetV2 U-Net (small)"
    for point in curve.points:
        # per-slice seeds: the same slices in other batches give the same numbers
        alone = evaluate(model, records, IMG_SIZE, config.with_eps(point.eps), batch_size=2)
        assert point.summary == alone.summary
        assert point.rog == rog_fraction(alone.rows) and point.wins is None
    assert report.budget == {"forward_backward": 3, "forward": 2}
    json.dumps(report.to_dict(), allow_nan=False)


def _row(slice_id, clean, adv, pixels, member=None):
    return SliceResult(
        slice_id=slice_id,
        eps=0.01,
        dsc_clean=np.array(clean, float),
        dsc_adv=np.array(adv, float),
        linf=0.01,
        l2=1.0,
        organ_pixels=np.array(pixels),
        member=member,
    )


def test_rog_and_size_tertiles_by_hand():
    rows = [
        _row("a", [0.8, 1.0, 0.9], [0.1, 1.0, 0.2], [10, 0, 50]),  # mean 0.9 -> 0.433: fallen
        _row("b", [0.8, 0.6, 1.0], [0.8, 0.5, 0.9], [40, 5, 20]),  # 0.8 -> 0.733
        _row("c", [0.9, 0.9, 0.9], [0.5, 0.4, 0.45], [30, 7, 90]),  # 0.9 -> 0.45: exactly half is not below
        _row("d", [0.6, 0.8, 1.0], [0.0, 0.1, 0.2], [20, 9, 0]),  # 0.8 -> 0.1: fallen
    ]
    assert rog_fraction(rows) == 0.5
    tertiles = size_tertiles(rows)
    large_bowel = tertiles["large_bowel"]  # sizes 10 (a), 20 (d), 30 (c), 40 (b): groups of 2, 1, 1
    assert [t.slices for t in large_bowel] == [2, 1, 1]
    assert (large_bowel[0].pixels_min, large_bowel[0].pixels_max) == (10, 20)
    assert large_bowel[0].dsc_adv == pytest.approx(0.05) and large_bowel[0].dsc_clean == pytest.approx(0.7)
    assert large_bowel[2].dsc_adv == pytest.approx(0.8)
    small_bowel = tertiles["small_bowel"]  # a has none: b (5), c (7), d (9)
    assert [t.slices for t in small_bowel] == [1, 1, 1] and small_bowel[0].dsc_adv == pytest.approx(0.5)
    assert [t.slices for t in tertiles["stomach"]] == [1, 1, 1]  # d has no stomach


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    return save_checkpoint(
        tmp_path_factory.mktemp("ck") / "tiny_small.safetensors", build_model("small"), img_size=IMG_SIZE
    )


def test_robust_command_writes_core_numbers_to_json_csv_png(run, checkpoint, tiny_demo):
    result = run(
        "robust",
        "-c",
        checkpoint,
        "-c",
        checkpoint,
        "--data",
        tiny_demo,
        "--limit",
        2,
        "--eps",
        "0.03,0.004",
        "--steps",
        3,
        "--out-dir",
        "out",
        "--dpi",
        100,
    )
    assert result.exit_code == 0, result.output
    assert "robust DSC" in result.stdout and "tertile" in result.stdout and "slices won" in result.stdout

    written = json.loads(open("out/robust.json").read())
    assert written["config"]["method"] == "ensemble" and written["eps_values"] == sorted(EPS)
    assert written["members"] == [m.name for m in ENSEMBLE] and len(written["curves"]) == 2
    assert written["budget"]["forward_backward"] == 3 * len(ENSEMBLE)
    from core.models.checkpoints import load_checkpoint

    model, _ = load_checkpoint(checkpoint)
    records = with_organs(GITractDataset(tiny_demo).split()[1])[:2]
    config = AttackConfig.for_method("ensemble", steps=3)
    for point in written["curves"][0]["points"]:
        expected = evaluate(model, records, IMG_SIZE, config.with_eps(point["eps"]))
        assert point["summary"] == json.loads(json.dumps(expected.summary.to_dict()))
        assert sum(point["wins"].values()) == expected.summary.scored
        assert [row["member"] for row in point["rows"]] == [row.member for row in expected.rows]
    assert written["curves"][0]["points"] == written["curves"][1]["points"]  # the same checkpoint twice

    with open("out/robust.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    labels = [f"{checkpoint.name} #1", f"{checkpoint.name} #2"]  # the same file twice, told apart
    assert [(r["checkpoint"], float(r["eps"])) for r in rows] == [(label, e) for label in labels for e in sorted(EPS)]
    first = written["curves"][0]["points"][0]
    assert float(rows[0]["dsc_adv_mean"]) == first["summary"]["mean_adv"]
    assert {f"wins_{m.name}" for m in ENSEMBLE} <= set(rows[0]) and f"dsc_adv_{ORGANS[2]}_small" in rows[0]
    with Image.open("out/robust.png") as png:  # two journal columns (7.2 in) at 100 dpi, a row per checkpoint
        assert png.format == "PNG" and png.width == 720 and png.height > 2 * 2.5 * 100
        assert png.info["dpi"] == pytest.approx((100, 100), abs=0.05)


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["--method", "cw"], "'cw'"),
        (["--loss", "hinge"], "'hinge'"),
        (["--eps", "0.01,2"], "'2'"),
        (["--eps", "0.01,x"], "'x'"),
        (["--eps", "0.03:0.01:0.01"], "0.03:0.01:0.01"),
        (["--steps", "0"], "steps"),
        (["--steps", "2"], "at least 3 steps"),
        (["--method", "fgsm", "--best-iterate"], "best iterate"),
        (["--json", "."], "--json '.'"),
    ],
)
def test_robust_bad_input_is_one_line_naming_the_value(run, checkpoint, tiny_demo, args, named):
    result = run("robust", "-c", checkpoint, "--data", tiny_demo, *args)
    assert result.exit_code == 2
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and named in lines[0], result.stderr


def test_shards_are_whole_batches_of_the_one_process_run():
    from core.distributed import Ranks, shard

    records = list(range(11))
    parts = [shard(records, 3, Ranks(rank, 3)) for rank in range(3)]
    assert [positions for _, positions in parts] == [[0, 1, 2, 9, 10], [3, 4, 5], [6, 7, 8]]
    assert shard(records, 3, Ranks()) == (records, records)


@pytest.mark.slow
def test_robust_under_torchrun_with_two_processes_equals_one_process(run, checkpoint, tiny_demo, tmp_path):
    import os
    import subprocess
    import sys
    from pathlib import Path

    args = [
        "robust",
        "-c",
        checkpoint,
        "--data",
        tiny_demo,
        "--limit",
        4,
        "--batch-size",
        2,
        "--eps",
        "0.004,0.03",
        "--method",
        "pgd",
        "--steps",
        2,
    ]
    alone = run(*args, "--json", "alone.json", "--csv", "alone.csv", "--png", "alone.png")
    assert alone.exit_code == 0, alone.output
    segadv = Path(sys.executable).with_name("segadv")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(__file__).resolve().parent.parent.parent)}
    command = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--standalone",
        "--nproc-per-node",
        "2",
        str(segadv),
        *map(str, args),
        "--json",
        "ranks.json",
        "--csv",
        "ranks.csv",
        "--png",
        "ranks.png",
        "--device",
        "cpu",
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300, cwd=tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert done.stdout.count("wrote ") == 1  # rank 0 alone prints and writes
    together, single = (json.loads((tmp_path / name).read_text()) for name in ("ranks.json", "alone.json"))
    for report in (together, single):
        for curve in report["curves"]:
            curve.pop("seconds")  # wall time, the only number allowed to differ
    for key in ("curves", "config", "eps_values", "slices"):
        assert together[key] == single[key], key
    assert (tmp_path / "ranks.csv").read_text() == (tmp_path / "alone.csv").read_text()


def test_a_check_with_an_undefined_number_says_n_a_not_nan():
    """A restart whose slices all score NaN leaves the convergence check's numbers undefined: the table
    says n/a, as every table does, never "nan"."""
    from core.evaluation.robust_checks import Check
    from segadv_tui.cli.robust import check_numbers

    nan = float("nan")
    check = Check(
        "converged",
        False,
        {
            "eps": 0.03,
            "steps": 10,
            "robust_dsc": 0.25,
            "double_steps": {"steps": 20, "robust_dsc": 0.2, "change": 0.05},
            "restart": {"seed": 1, "robust_dsc": nan, "change": nan},
        },
    )
    assert check_numbers(check) == "eps 0.03: 0.2500; 20 steps 0.2000 (-0.0500); a restart n/a (n/a)"
    gradients = Check("gradients", True, {"zero_gradient_fraction": nan, "limit": 0.5})
    assert check_numbers(gradients) == "zero-gradient share n/a (limit 0.5)"
