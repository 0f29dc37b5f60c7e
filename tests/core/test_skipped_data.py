"""Nothing dropped silently: a slice the data reader skips (here a malformed RLE, ``1 2 3``) is listed in the
JSON with its reason and counted in the last line; ``--strict`` turns it into one line and exit 2 before
anything is computed, on every command that reads data."""

from __future__ import annotations

import csv
import json
import shutil

import pytest


@pytest.fixture(scope="module")
def bad_rle(tiny_demo, tmp_path_factory):
    """A copy of the tiny demo whose first non-empty RLE is ``1 2 3``: (data folder, slice id, organ)."""
    root = tmp_path_factory.mktemp("bad") / "gi"
    shutil.copytree(tiny_demo, root)
    with (root / "train.csv").open(newline="") as file:
        rows = list(csv.reader(file))
    broken = next(row for row in rows[1:] if row[2])
    broken[2] = "1 2 3"
    with (root / "train.csv").open("w", newline="") as file:
        csv.writer(file).writerows(rows)
    return root, broken[0], broken[1]


def test_a_malformed_rle_is_listed_in_the_json_and_counted_in_the_last_line(run, bad_rle, tmp_path):
    data, slice_id, organ = bad_rle
    result = run("attack", "--data", data, "--limit", 1, "--device", "cpu", "--json", "a.json")
    assert result.exit_code == 0, result.output
    reason = f"RLE has an odd number of values (3) ({slice_id}, {organ})"
    report = json.loads((tmp_path / "a.json").read_text())
    assert report["status"] == "complete"
    assert report["skipped"] == [{"slice_id": slice_id, "file": "train.csv", "reason": reason}]
    assert report["data_problems"] == [f"{reason}; skipped"]
    last = result.stdout.strip().splitlines()[-1]
    assert last == 'wrote a.json; skipped 1 slice with problems in the data (listed under "skipped" in a.json)'
    assert result.stderr.startswith(f"note: 1 problem(s) in {data}, e.g. {reason}; skipped")


@pytest.mark.parametrize(
    "command",
    [
        ["attack"],
        ["sweep"],
        ["table"],
        ["figure"],
        ["robust"],
        ["transfer"],
        ["universal"],
        ["study", "luminosity"],
        ["train", "--model", "small", "--encoder-weights", "none"],
    ],
)
def test_strict_stops_at_the_first_problem_before_computing_with_one_line(run, bad_rle, tmp_path, command):
    data, slice_id, organ = bad_rle
    result = run(*command, "--data", data, "--device", "cpu", "--strict")
    assert result.exit_code == 2, result.output
    assert result.stderr.splitlines() == [
        f"error: --strict: 1 problem(s) in {data}; the first: RLE has an odd number of values (3) ({slice_id}, {organ})"
    ]
    assert result.stdout == "" and list(tmp_path.iterdir()) == []  # nothing computed, nothing written
