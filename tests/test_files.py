"""One writer for every file segadv writes (``core.files``): atomic, and with the permissions of an ordinary
new file under the user's umask, for each kind of output, written by core directly and by the real CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import files
from core.checkpoints import save_checkpoint, save_training_state
from core.errors import SegadvError
from core.files import WriteError, atomic_write, csv_cell, json_number, write_csv, write_json, write_png, write_text
from core.models import build_model

UMASKS = (0o022, 0o077)


def mode(path: Path) -> int:
    return path.stat().st_mode & 0o777


@contextmanager
def umask(value: int):
    previous = os.umask(value)
    try:
        yield
    finally:
        os.umask(previous)


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    return build_model("small").eval()


@pytest.mark.parametrize("mask", UMASKS, ids=lambda mask: f"umask{mask:03o}")
def test_every_writer_gives_a_new_file_the_mode_the_umask_allows(tmp_path, small, mask):
    with umask(mask):
        written = [
            write_text(tmp_path / "t.md", "| a |\n"),
            write_json(tmp_path / "j.json", {"x": 1}),
            write_csv(tmp_path / "c.csv", ["a"], [[1]]),
            write_png(tmp_path / "p.png", Image.new("RGB", (4, 4))),
            save_checkpoint(tmp_path / "m.safetensors", small, img_size=64),
            save_training_state(tmp_path / "m.resume.pt", {"epoch": 1, "model": {}}),
        ]
    # 0o666 less the umask, as open(path, "w") gives; mkstemp's 0o600 would hide results from a group.
    assert {path.name: mode(path) for path in written} == {path.name: 0o666 & ~mask for path in written}


def test_a_replaced_file_keeps_its_own_mode(tmp_path):
    path = write_text(tmp_path / "results.json", "old")
    path.chmod(0o640)
    with umask(0o022):
        write_text(path, "new")
    assert path.read_text() == "new" and mode(path) == 0o640


def test_a_writer_that_fails_halfway_leaves_no_file_and_the_old_one_intact(tmp_path):
    target = write_text(tmp_path / "x.bin", "old")

    def half_write(stream):
        stream.write(b"half")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):  # not an OSError: passes through unchanged
        atomic_write(target, half_write)
    assert target.read_text() == "old" and [p.name for p in tmp_path.iterdir()] == ["x.bin"]


def test_an_unwritable_path_is_a_user_error_naming_the_file(tmp_path):
    blocker = write_text(tmp_path / "a-file", "")
    target = blocker / "out.json"  # a folder that is a file: fails as root too
    with pytest.raises(WriteError, match="out.json") as caught:
        write_json(target, {})
    assert isinstance(caught.value, SegadvError) and isinstance(caught.value, OSError)
    assert str(target) in str(caught.value)


def test_a_failed_rename_leaves_no_temporary(tmp_path, monkeypatch):
    monkeypatch.setattr(files.os, "replace", lambda src, dst: (_ for _ in ()).throw(PermissionError(13, "denied")))
    with pytest.raises(WriteError, match="denied"):
        write_text(tmp_path / "x.txt", "text")
    assert list(tmp_path.iterdir()) == []


def test_missing_numbers_are_null_in_json_and_empty_in_csv(tmp_path):
    payload = {"nan": float("nan"), "none": None, "inf": float("inf"), "f32": np.float32(0.5), "i64": np.int64(3),
               "array": np.array([0.25, np.nan]), "path": Path("a/b"), "tuple": (1, float("nan"))}
    written = json.loads(write_json(tmp_path / "m.json", payload).read_text())
    assert written == {"nan": None, "none": None, "inf": None, "f32": 0.5, "i64": 3, "array": [0.25, None],
                       "path": "a/b", "tuple": [1, None]}
    assert json_number(np.float64(0.125)) == 0.125 and json_number(math.nan) is None

    write_csv(tmp_path / "m.csv", ["a", "b", "c", "d"], [[float("nan"), None, np.float32(0.5), 0.1 + 0.2]])
    with open(tmp_path / "m.csv", newline="") as handle:
        assert list(csv.reader(handle)) == [["a", "b", "c", "d"], ["", "", "0.5", repr(0.1 + 0.2)]]
    assert csv_cell("n") == "n" and csv_cell(np.int64(2)) == 2


def test_json_refuses_what_it_cannot_hold(tmp_path):
    with pytest.raises(TypeError, match="object"):  # a bug in the caller, not bad input
        write_json(tmp_path / "x.json", {"x": object()})
    assert not (tmp_path / "x.json").exists()


# The real CLI, one process per umask: torch loads once and main() runs each command as `segadv` would.
CLI_RUNS = """
import sys
from segadv_tui import cli

for argv in {commands!r}:
    sys.argv = ["segadv", *argv]
    try:
        cli.main()
    except SystemExit as exit:
        if exit.code:
            raise
"""


@pytest.mark.parametrize("mask", UMASKS, ids=lambda mask: f"umask{mask:03o}")
def test_the_cli_writes_each_kind_of_output_with_the_umasks_mode(tmp_path, tiny_demo, small, mask):
    torch.save(small.net.state_dict(), tmp_path / "foreign.pt")
    out = tmp_path / "out"
    checkpoint = out / "model.safetensors"
    commands = [
        ["import-checkpoint", str(tmp_path / "foreign.pt"), "--model", "small", str(checkpoint), "--img-size", "64"],
        ["table", "--checkpoint", str(checkpoint), "--data", str(tiny_demo), "--limit", "1", "--losses", "bce",
         "--md", str(out / "t.md"), "--csv", str(out / "t.csv"), "--json", str(out / "t.json")],
        ["figure", "--checkpoint", str(checkpoint), "--data", str(tiny_demo), "--out", str(out / "f.png")],
    ]
    code = CLI_RUNS.format(commands=commands)
    result = subprocess.run(
        ["sh", "-c", f'umask {mask:03o} && exec "$0" -c "$1"', sys.executable, code],
        capture_output=True, text=True, env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    written = {path.name: mode(path) for path in out.iterdir()}
    assert written == dict.fromkeys(["model.safetensors", "t.md", "t.csv", "t.json", "f.png"], 0o666 & ~mask)
