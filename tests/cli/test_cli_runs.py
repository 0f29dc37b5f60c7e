"""The run index from the command line: every computing command leaves a record, a rerun with the same key
is served from the cache and writes the same bytes, ``--no-cache`` computes, a locked index is a warning
and the command finishes, a crash or Ctrl-C leaves no result; ``segadv runs ls/show/compare/export/rm``;
under torchrun rank 0 alone records. Real commands on the tiny demo, real SQLite files."""

from __future__ import annotations

import csv
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from core.runs import index as index_module
from core.runs.index import RunIndex
from segadv_tui.cli._common import TEST_HOOK_SIGINT

SERVED = "note: served from the run index"


@pytest.fixture(scope="module")
def checkpoint(small_checkpoint):
    return small_checkpoint


@pytest.fixture()
def attack(run, checkpoint, tiny_demo):
    """``segadv attack`` on 2 tiny demo slices, one slice per batch, with more arguments."""
    return lambda *more: run("attack", "-c", checkpoint, "--data", tiny_demo, "--limit", 2, "--batch-size", 1, *more)


def records(path) -> list:
    with RunIndex(path) as index:
        return [index.get(record.id, with_result=True) for record in index.records()]


def test_a_rerun_is_served_from_the_cache_and_writes_the_same_bytes(attack, run_index, tmp_path):
    first = attack("--json", "a.json", "--csv", "a.csv")
    assert first.exit_code == 0, first.output
    assert SERVED not in first.stderr
    second = attack("--json", "b.json", "--csv", "b.csv", "--batch-size", 2)  # the batch size is not in the key
    assert second.exit_code == 0, second.output
    assert f"{SERVED} {run_index}: the result of run 1 (" in second.stderr
    assert (tmp_path / "a.json").read_bytes() == (tmp_path / "b.json").read_bytes()
    assert (tmp_path / "a.csv").read_bytes() == (tmp_path / "b.csv").read_bytes()
    # the same table (its "seconds" the computation's), only the files named differ
    assert first.stdout.replace("a.json, a.csv", "b.json, b.csv") == second.stdout

    forced = attack("--json", "c.json", "--no-cache")
    assert forced.exit_code == 0 and SERVED not in forced.stderr
    a, c = (json.loads((tmp_path / name).read_text()) for name in ("a.json", "c.json"))
    assert a.pop("seconds") != c.pop("seconds") and a == c  # computed again: the same numbers, its own time

    done = records(run_index)
    assert [(r.id, r.status, r.cached_from) for r in done] == [(1, "done", None), (2, "done", 1), (3, "done", None)]
    assert done[0].cache_key == done[1].cache_key == done[2].cache_key
    assert done[1].result_json == json.loads((tmp_path / "b.json").read_text())
    assert done[1].files == [str(tmp_path / "b.json"), str(tmp_path / "b.csv")]
    assert done[0].argv[:2] == ["segadv", "attack"] and "a.json" in done[0].argv
    assert done[0].summary["dsc_adv"] == a["summary"]["mean_adv"]
    assert done[0].checkpoints[0]["sha256"] == done[1].checkpoints[0]["sha256"]
    assert done[0].config["config"]["eps"] == 0.009 and done[0].versions["torch"] == torch.__version__


def test_anything_in_the_key_changed_computes(attack, run_index, tiny_demo, checkpoint, tmp_path):
    assert attack().exit_code == 0
    for more in (["--eps", "0.01"], ["--loss", "dice"], ["--limit", 1], ["--split", "train"]):
        result = attack(*more)
        assert result.exit_code == 0 and SERVED not in result.stderr, more
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(checkpoint).read_bytes())
    moved = attack("-c", copy)  # the same content under another name: the same key
    assert SERVED in moved.stderr
    assert len({record.cache_key for record in records(run_index)}) == 5


def test_table_ii_rerun_is_served_and_writes_the_same_markdown(run, checkpoint, tiny_demo, run_index, tmp_path):
    common = ["table", "-c", checkpoint, "--data", tiny_demo, "--limit", 2, "--losses", "bce,dice"]
    assert run(*common, "--md", "t1.md", "--json", "t1.json").exit_code == 0
    again = run(*common, "--md", "t2.md", "--json", "t2.json")
    assert again.exit_code == 0 and SERVED in again.stderr
    assert (tmp_path / "t1.md").read_bytes() == (tmp_path / "t2.md").read_bytes()
    assert (tmp_path / "t1.json").read_bytes() == (tmp_path / "t2.json").read_bytes()
    (table,) = {r.summary["dsc_adv[tiny_small.safetensors,dice]"] for r in records(run_index)}
    assert table == json.loads((tmp_path / "t1.json").read_text())["rows"][0]["dsc_adv"]["dice"]


def test_a_locked_index_is_one_warning_and_the_command_finishes(attack, run_index, monkeypatch, tmp_path):
    RunIndex(run_index).close()
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT_S", 0.2)
    holder = sqlite3.connect(run_index, isolation_level=None)
    holder.execute("BEGIN EXCLUSIVE")
    try:
        result = attack("--json", "a.json")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(warnings) == 1 and str(run_index) in warnings[0] and "locked" in warnings[0], result.stderr
    assert json.loads((tmp_path / "a.json").read_text())["status"] == "complete"
    assert records(run_index) == []


def test_a_damaged_index_is_one_warning_and_the_command_finishes(attack, tmp_path):
    damaged = tmp_path / "damaged.sqlite"
    damaged.write_bytes(b"\x00garbage" * 512)
    result = attack("--json", "a.json", "--runs", damaged)
    assert result.exit_code == 0, result.output
    assert result.stderr.count("warning:") == 1 and "damaged.sqlite" in result.stderr
    assert (tmp_path / "a.json").is_file() and damaged.read_bytes() == b"\x00garbage" * 512


def test_a_crash_leaves_a_failed_record_without_a_result(attack, run_index, monkeypatch):
    import core.evaluation.scoring as scoring

    def crash(*args, **kwargs):
        raise RuntimeError("the GPU fell off")

    monkeypatch.setattr(scoring, "evaluate", crash)  # fault injection: a crash inside the computation
    result = attack()
    assert result.exit_code == 1
    (record,) = records(run_index)
    assert record.status == "failed" and record.error == "RuntimeError: the GPU fell off"
    assert record.result_json is None and record.ended is not None
    monkeypatch.undo()
    assert SERVED not in attack().stderr  # nothing to serve


def test_ctrl_c_leaves_an_interrupted_record_without_a_result(tiny_demo, tmp_path, run_index):
    env = {**os.environ, "OMP_NUM_THREADS": "1", TEST_HOOK_SIGINT: "1", "SEGADV_STATE": str(tmp_path / "state")}
    done = subprocess.run(
        [sys.executable, "-c", "from segadv_tui.cli import main; main()", "attack", "--data", str(tiny_demo)]
        + ["--limit", "3", "--batch-size", "1", "--device", "cpu", "--json", "a.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 130, done.stderr
    (record,) = records(run_index)
    assert record.status == "interrupted" and record.result_json is None
    with RunIndex(run_index) as index:
        assert index.cached(record.cache_key) is None


def test_runs_ls_show_compare_export_rm(attack, run, run_index, tmp_path):
    assert attack("--json", "a.json").exit_code == 0
    assert attack().exit_code == 0
    assert attack("--eps", "0.02").exit_code == 0

    listed = run("runs", "ls")
    assert listed.exit_code == 0, listed.output
    lines = [line for line in listed.stdout.splitlines() if line.startswith("│")]
    assert len(lines) == 3 and "done (cached, run 1)" in lines[1] and "dsc_adv" in lines[0]
    assert "segadv attack" in lines[0] and "--eps 0.02" in lines[2]
    assert run("runs", "ls", "--last", 1).stdout.count("│  3 │") == 1

    shown = run("runs", "show", 1)
    assert shown.exit_code == 0 and "sha256" in shown.stdout and str(tmp_path / "a.json") in shown.stdout

    compared = run("runs", "compare", 1, 2, 3)
    assert compared.exit_code == 0
    differing = compared.stdout.split("configuration that differs")[1]
    assert "config.eps" in differing and "0.009" in differing and "0.02" in differing
    assert "config.loss" not in differing and "checkpoints" not in differing
    assert "dsc_adv" in compared.stdout.split("configuration that differs")[0]

    exported = run("runs", "export", 1, 3, "--csv", "e.csv")
    assert exported.exit_code == 0, exported.output
    rows = list(csv.DictReader((tmp_path / "e.csv").open()))
    a = json.loads((tmp_path / "a.json").read_text())
    assert [row["run_id"] for row in rows] == ["1", "1", "3", "3"]
    assert [row["slice_id"] for row in rows[:2]] == [row["slice_id"] for row in a["rows"]]
    assert float(rows[0]["dsc_adv.stomach"]) == pytest.approx(a["rows"][0]["dsc_adv"]["stomach"], abs=1e-12)

    removed = run("runs", "rm", 1, 2)
    assert removed.exit_code == 0 and "removed runs 1, 2" in removed.stdout
    assert [record.id for record in records(run_index)] == [3]
    assert SERVED not in attack().stderr  # the removed runs took their result with them


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (["runs", "show", 42], "no run 42"),
        (["runs", "compare", 1], "at least two"),
        (["runs", "rm", 1, 42], "no run 42"),
        (["runs", "export", 1], "--csv"),
        (["runs", "ls", "--last", 0], "--last 0"),
    ],
)
def test_bad_runs_input_is_one_line(attack, run, args, named):
    assert attack().exit_code == 0
    result = run(*args)
    assert result.exit_code == 2 and named in result.stderr and len(result.stderr.strip().splitlines()) == 1


def test_export_parquet_says_in_one_line_what_it_needs(attack, run, tmp_path):
    assert attack().exit_code == 0
    result = run("runs", "export", 1, "--parquet", "e.parquet")
    try:
        import pyarrow.parquet as pq
    except ImportError:
        assert result.exit_code == 2 and "pyarrow" in result.stderr and not (tmp_path / "e.parquet").exists()
    else:
        assert result.exit_code == 0, result.output
        assert pq.read_table(tmp_path / "e.parquet").num_rows == 2


def test_a_damaged_index_is_an_error_for_the_runs_commands(run, tmp_path):
    (tmp_path / "bad.sqlite").write_bytes(b"\x00garbage" * 512)
    result = run("runs", "ls", "--runs", tmp_path / "bad.sqlite")
    assert result.exit_code == 2 and "bad.sqlite" in result.stderr


@pytest.mark.slow
def test_under_torchrun_rank_0_alone_records(tiny_demo, tmp_path, run_index):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGADV_STATE": str(tmp_path / "state")}
    torchrun = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc-per-node", "2"]
    done = subprocess.run(
        [*torchrun, str(Path(sys.executable).with_name("segadv")), "attack", "--data", str(tiny_demo)]
        + ["--limit", "2", "--batch-size", "1", "--device", "cpu", "--json", "a.json"],
        cwd=tmp_path,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr
    (record,) = records(run_index)
    assert record.status == "done" and record.result_json == json.loads((tmp_path / "a.json").read_text())


def test_report_writes_markdown_and_html_with_tables_provenance_and_links(
    attack, run, run_index, checkpoint, tiny_demo, tmp_path
):
    from html.parser import HTMLParser

    assert attack("--json", "a.json").exit_code == 0
    table = run("table", "-c", checkpoint, "--data", tiny_demo, "--limit", 2, "--losses", "bce,dice", "--md", "t.md")
    assert table.exit_code == 0, table.output
    made = run("report", "--last", 2, "-o", "rep")
    assert made.exit_code == 0, made.output
    assert "wrote rep/report.md, rep/report.html (2 run(s): 1, 2)" in made.stdout

    md = (tmp_path / "rep" / "report.md").read_text()
    assert "## Run 1: attack" in md and "## Run 2: table" in md and "**Table II**" in md
    assert "| MobileNetV2 U-Net (small) | " in md  # Table II's layout, from the stored result
    assert "(../a.json)" in md and "(../t.md)" in md  # the files the runs wrote, relative to the report
    sha = records(run_index)[0].checkpoints[0]["sha256"]
    assert sha[:16] in md and "configuration that differs" in md

    page = (tmp_path / "rep" / "report.html").read_text()
    opened: list[str] = []

    class Balanced(HTMLParser):
        def handle_starttag(self, tag, attrs):
            if tag not in ("meta", "br", "img"):
                opened.append(tag)

        def handle_endtag(self, tag):
            assert opened.pop() == tag

    Balanced().feed(page)
    assert opened == [] and '<a href="../a.json">a.json</a>' in page and "<caption>Table II</caption>" in page

    assert run("report", 1, "--last", 1, "-o", "x").exit_code == 2
    assert run("report", 7, "-o", "x").exit_code == 2


@pytest.mark.parametrize(
    ("command", "args", "number"),
    [
        ("robust", ["--eps", "0.004,0.01", "--method", "fgsm"], "dsc_adv[tiny_small.safetensors@0.01]"),
        ("transfer", ["--no-ensembles"], "attack_success[tiny_small->copy]"),
        ("sweep", ["--eps", "0,0.01", "--losses", "bce"], "dsc_adv[bce@0.01]"),
    ],
)
def test_sweep_robust_and_transfer_reruns_are_served_and_write_the_same_json(
    run, checkpoint, tiny_demo, run_index, tmp_path, command, args, number
):
    copy = tmp_path / "copy.safetensors"
    copy.write_bytes(Path(checkpoint).read_bytes())
    models = ["-c", checkpoint] + (["-c", copy] if command == "transfer" else [])
    common = [command, *models, "--data", tiny_demo, "--limit", 1, *args]
    first = run(*common, "-o", "one")
    assert first.exit_code == 0, first.output
    again = run(*common, "-o", "two")
    assert again.exit_code == 0 and SERVED in again.stderr, again.output
    one, two = (tmp_path / "one" / f"{command}.json", tmp_path / "two" / f"{command}.json")
    assert one.read_bytes() == two.read_bytes()
    assert (tmp_path / "one" / f"{command}.csv").read_bytes() == (tmp_path / "two" / f"{command}.csv").read_bytes()
    done = records(run_index)
    assert [(r.status, r.cached_from) for r in done] == [("done", None), ("done", 1)]
    assert number in done[0].summary and done[0].summary == done[1].summary


@pytest.mark.slow
def test_two_terminals_running_commands_at_once_both_record(tiny_demo, tmp_path, run_index):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "SEGADV_STATE": str(tmp_path / "state")}
    segadv = [sys.executable, "-c", "from segadv_tui.cli import main; main()"]
    common = ["--data", str(tiny_demo), "--limit", "2", "--device", "cpu"]
    started = [
        subprocess.Popen(
            [*segadv, *command, *common, "--json", f"{name}.json"],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for name, command in (("one", ["attack"]), ("two", ["attack", "--loss", "dice"]))
    ]
    for process in started:
        _, stderr = process.communicate(timeout=300)
        assert process.returncode == 0 and "warning" not in stderr, stderr
    done = records(run_index)
    assert sorted(record.result_json["config"]["loss"] for record in done) == ["bce", "dice"]
    assert {record.status for record in done} == {"done"} and len({record.pid for record in done}) == 2
