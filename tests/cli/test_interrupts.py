"""Ctrl-C keeps what was done: a real SIGINT to a real ``segadv`` process part-way through a run leaves the
finished part in ``x.partial.json`` (never over a complete ``x.json``), marked partial, with summaries over
the finished part only; one line says so, and the exit status is 130.

The SIGINT comes from the test hook ``SEGADV_TEST_HOOK_SIGINT_AT=k``: a command's progress bar sends it to
its own process when it reaches k (under torchrun to torchrun, which passes it on to every rank as a
terminal's Ctrl-C does), so the point of the interruption is known. The numbers of the finished part are
checked against a complete run over the same slices. The sweep, Table II, transfer and the luminosity
study are interrupted in-process, from their progress callback (a KeyboardInterrupt, as Ctrl-C raises),
where their units (points, cells, the matrix, the study) are checked.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from core.attacks.config import AttackConfig
from core.attacks.universal import load_delta
from core.data.gitract import GITractDataset, with_organs
from core.evaluation.luminosity import luminosity_study
from core.evaluation.scoring import Interrupted, evaluate_sweep, table_ii
from core.evaluation.transfer import transfer
from core.models.loaded import LoadedModel
from segadv_tui.cli._common import TEST_HOOK_SIGINT

IMG_SIZE = 64
FINISHED = "(marked partial; summaries over the finished part only)"


def segadv_interrupted(tmp_path: Path, at: int, *args, processes: int = 0) -> subprocess.CompletedProcess:
    """``segadv ARGS`` (under torchrun with ``processes``) in ``tmp_path``, sent SIGINT at progress ``at``."""
    env = {**os.environ, "OMP_NUM_THREADS": "1", TEST_HOOK_SIGINT: str(at), "SEGADV_STATE": str(tmp_path / "state")}
    segadv = [sys.executable, "-c", "from segadv_tui.cli import main; main()"]
    if processes:
        segadv = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            str(processes),
            str(Path(sys.executable).with_name("segadv")),
        ]
    return subprocess.run(
        [*segadv, *map(str, args)], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300
    )


def read(path: Path) -> dict:
    return json.loads(path.read_text())


def test_ctrl_c_in_attack_writes_the_finished_slices_beside_the_complete_result(tiny_demo, tmp_path, run):
    (tmp_path / "a.json").write_text('{"earlier": "complete"}')
    common = ["--data", tiny_demo, "--batch-size", 1, "--device", "cpu"]
    done = segadv_interrupted(tmp_path, 2, "attack", *common, "--limit", 4, "--json", "a.json")
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [f"interrupted after 2 of 4 slices: wrote a.partial.json {FINISHED}"]
    assert read(tmp_path / "a.json") == {"earlier": "complete"}  # never replaced by a partial result
    assert not (tmp_path / "state").exists()  # Ctrl-C is not a bug
    partial = read(tmp_path / "a.partial.json")
    assert (partial["status"], partial["interrupted_after"], partial["of"], partial["unit"]) == (
        "partial",
        2,
        4,
        "slices",
    )

    two = run("attack", *common, "--limit", 2, "--json", "two.json")
    assert two.exit_code == 0, two.output
    complete = read(tmp_path / "two.json")
    assert complete["status"] == "complete"
    assert len(partial["rows"]) == 2 and partial["rows"] == complete["rows"]
    assert partial["summary"] == complete["summary"] and partial["summary"]["slices"] == 2


def test_ctrl_c_before_any_slice_is_finished_says_so_in_one_line_and_writes_nothing(tiny_demo, tmp_path):
    done = segadv_interrupted(
        tmp_path, 0, "attack", "--data", tiny_demo, "--limit", 2, "--device", "cpu", "--json", "a.json"
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == ["interrupted; nothing finished was written"]
    assert list(tmp_path.iterdir()) == []


def test_ctrl_c_in_robust_keeps_every_eps_over_the_finished_slices_and_writes_no_csv_or_png(tiny_demo, tmp_path, run):
    common = ["--data", tiny_demo, "--method", "fgsm", "--eps", "0.003,0.009", "--batch-size", 1, "--device", "cpu"]
    # Progress counts slice attacks (2 eps per slice): 5 is the first eps of the third slice, lost with its batch.
    done = segadv_interrupted(tmp_path, 5, "robust", *common, "--limit", 4)
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [
        f"interrupted after 2 of 4 slices: wrote segadv-out/robust.partial.json {FINISHED}"
    ]
    assert sorted(path.name for path in (tmp_path / "segadv-out").iterdir()) == ["robust.partial.json"]
    partial = read(tmp_path / "segadv-out" / "robust.partial.json")
    assert (partial["status"], partial["interrupted_after"], partial["of"]) == ("partial", 2, 4)

    two = run("robust", *common, "--limit", 2, "--out-dir", "two")
    assert two.exit_code == 0, two.output
    complete = read(tmp_path / "two" / "robust.json")
    for report in (partial, complete):
        for curve in report["curves"]:
            curve.pop("seconds")
    assert partial["curves"] == complete["curves"]
    assert [len(point["rows"]) for point in partial["curves"][0]["points"]] == [2, 2]


def test_ctrl_c_while_crafting_a_universal_delta_saves_the_delta_of_the_steps_made(tiny_demo, tmp_path):
    done = segadv_interrupted(
        tmp_path,
        2,
        "universal",
        "--data",
        tiny_demo,
        "--epochs",
        2,
        "--train-limit",
        3,
        "--batch-size",
        1,
        "--limit",
        1,
        "--device",
        "cpu",
        "--out",
        "d.safetensors",
    )
    assert done.returncode == 130, done.stderr
    assert done.stderr.splitlines() == [
        "interrupted after 2 of 6 steps (the delta after those steps): wrote d.partial.safetensors, "
        f"universal.partial.json {FINISHED}"
    ]
    assert not (tmp_path / "d.safetensors").exists()
    delta = load_delta(tmp_path / "d.partial.safetensors")
    assert delta.meta["steps"] == 2 and delta.meta["status"] == "partial" and delta.meta["of"] == 6
    assert 0 < float(delta.delta.abs().max()) <= delta.eps
    report = read(tmp_path / "universal.partial.json")
    assert report["status"] == "partial" and report["delta"] == "d.partial.safetensors" and "summary" not in report


@pytest.mark.slow
def test_ctrl_c_under_torchrun_writes_the_slices_every_rank_finished_from_rank_0(tiny_demo, tmp_path):
    done = segadv_interrupted(
        tmp_path,
        2,
        "attack",
        "--data",
        tiny_demo,
        "--limit",
        4,
        "--batch-size",
        1,
        "--device",
        "cpu",
        "--json",
        "a.json",
        processes=2,
    )
    assert f"wrote a.partial.json {FINISHED}" in done.stderr, done.stderr
    assert done.stderr.count("interrupted after") == 1  # rank 0 alone writes and says so
    partial = read(tmp_path / "a.partial.json")
    ids = [record.id for record in with_organs(GITractDataset(tiny_demo).split()[1])]
    rows = [row["slice_id"] for row in partial["rows"]]
    # Rank 0 stopped after its first batch; rank 1 had done 0 to 2 of its batches (1 and 3).
    assert rows[0] == ids[0] and rows == [i for i in ids if i in rows] and len(rows) == partial["interrupted_after"]
    assert partial["summary"]["slices"] == len(rows) < 4 and partial["status"] == "partial"


# --- in-process: the units that are not slices --------------------------------------------------------


@pytest.fixture(scope="module")
def records(tiny_test_slices):
    return tiny_test_slices[:3]


def stop_at(count: int):
    """A progress callback that is Ctrl-C once progress reaches ``count``."""

    def progress(done: int, _total: int) -> None:
        if done >= count:
            raise KeyboardInterrupt

    return progress


def test_a_sweep_interrupted_keeps_every_point_over_the_finished_slices(model, records):
    with pytest.raises(Interrupted) as caught:
        evaluate_sweep(model, records, IMG_SIZE, [0.003, 0.009], ["bce", "dice"], batch_size=1, progress=stop_at(2))
    assert (caught.value.partial.done, caught.value.partial.total) == (2, 3)
    whole = evaluate_sweep(model, records[:2], IMG_SIZE, [0.003, 0.009], ["bce", "dice"], batch_size=1)
    cut = caught.value.result
    assert [e.to_dict() for e in cut.entries] == [e.to_dict() for e in whole.entries]
    assert cut.zero_grad_fraction == whole.zero_grad_fraction and {e.summary.slices for e in cut.entries} == {2}


def test_table_ii_interrupted_keeps_the_finished_cells_and_the_row_it_was_on(model, records):
    models = [LoadedModel("a", model, {"img_size": IMG_SIZE}), LoadedModel("b", model, {"img_size": IMG_SIZE})]
    # FGSM fills a row's columns together; Ctrl-C after b's first slice.
    with pytest.raises(Interrupted) as caught:
        table_ii(models, records, ["bce", "dice"], batch_size=1, progress=stop_at(len(records) + 1))
    partial, result = caught.value.partial, caught.value.result
    assert (partial.done, partial.total, partial.unit) == (2, 4, "cells")
    whole = table_ii(models[:1], records, ["bce", "dice"], batch_size=1)
    assert result.rows[0].to_dict() == whole.rows[0].to_dict()
    cut = result.rows[1]
    assert {summary.slices for summary in cut.summaries.values()} == {1} and cut.best_loss is None
    assert "over the first 1 of 3 slices" in partial.detail


def test_transfer_interrupted_keeps_every_cell_over_the_same_finished_slices(model, records):
    models = [LoadedModel("a", model), LoadedModel("b", model)]
    config = AttackConfig(eps=0.02)
    # Progress counts slices per source: 3 is the first source of the second batch, lost with it.
    with pytest.raises(Interrupted) as caught:
        transfer(models, records, IMG_SIZE, config, batch_size=1, progress=stop_at(3))
    assert (caught.value.partial.done, caught.value.partial.total) == (1, 3)
    whole = transfer(models, records[:1], IMG_SIZE, config, batch_size=1)
    assert [c.to_dict() for c in caught.value.result.cells] == [c.to_dict() for c in whole.cells]


def test_the_luminosity_study_interrupted_is_the_study_of_the_slices_attacked(model, records):
    config = AttackConfig(eps=0.02)
    with pytest.raises(Interrupted) as caught:
        luminosity_study(model, records, IMG_SIZE, config, resamples=50, batch_size=1, progress=stop_at(2))
    whole = luminosity_study(model, records[:2], IMG_SIZE, config, resamples=50, batch_size=1)
    study = caught.value.result
    assert caught.value.partial.done == 2 and study.summary.to_dict() == whole.summary.to_dict()
    assert study.rows == whole.rows and {k: c.to_dict() for k, c in study.correlations.items()} == {
        k: c.to_dict() for k, c in whole.correlations.items()
    }
