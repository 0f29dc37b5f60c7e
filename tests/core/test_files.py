"""One writer for every file segadv writes (``core.files``): atomic, and with the permissions of an ordinary
new file under the user's umask, for each kind of output, written by core directly and by the real CLI."""

from __future__ import annotations

import csv
import json
import math
import os
import stat
import subprocess
import sys
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from core import files
from core.errors import SegadvError
from core.files import (
    WriteError,
    atomic_write,
    check_writable,
    csv_cell,
    json_number,
    write_csv,
    write_json,
    write_png,
    write_text,
)
from core.models.checkpoints import save_checkpoint, save_training_state
from core.models.registry import build_model

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
    payload = {
        "nan": float("nan"),
        "none": None,
        "inf": float("inf"),
        "f32": np.float32(0.5),
        "i64": np.int64(3),
        "array": np.array([0.25, np.nan]),
        "path": Path("a/b"),
        "tuple": (1, float("nan")),
    }
    written = json.loads(write_json(tmp_path / "m.json", payload).read_text())
    assert written == {
        "nan": None,
        "none": None,
        "inf": None,
        "f32": 0.5,
        "i64": 3,
        "array": [0.25, None],
        "path": "a/b",
        "tuple": [1, None],
    }
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
        [
            "table",
            "--checkpoint",
            str(checkpoint),
            "--data",
            str(tiny_demo),
            "--limit",
            "1",
            "--losses",
            "bce",
            "--md",
            str(out / "t.md"),
            "--csv",
            str(out / "t.csv"),
            "--json",
            str(out / "t.json"),
        ],
        ["figure", "--checkpoint", str(checkpoint), "--data", str(tiny_demo), "--out", str(out / "f.png")],
    ]
    code = CLI_RUNS.format(commands=commands)
    result = subprocess.run(
        ["sh", "-c", f'umask {mask:03o} && exec "$0" -c "$1"', sys.executable, code],
        capture_output=True,
        text=True,
        env={**os.environ, "OMP_NUM_THREADS": "1"},
    )
    assert result.returncode == 0, result.stderr
    written = {path.name: mode(path) for path in out.iterdir()}
    assert written == dict.fromkeys(["model.safetensors", "t.md", "t.csv", "t.json", "f.png"], 0o666 & ~mask)


# --- what a path names decides how it is written (nothing that is not ours is replaced) ------------


@contextmanager
def reading(fifo: Path):
    """A reader at the other end of ``fifo`` (opening a FIFO for writing waits for one), always ended."""
    reader = subprocess.Popen(["cat", str(fifo)], stdout=subprocess.PIPE)
    try:
        yield reader
    finally:
        reader.kill()
        reader.wait()


def test_a_symlink_is_written_through_and_stays_a_link(tmp_path):
    target = write_text(tmp_path / "real" / "results.json", "old")
    target.chmod(0o640)
    link = tmp_path / "latest.json"
    link.symlink_to(target)
    write_json(link, {"x": 1})
    assert link.is_symlink() and os.readlink(link) == str(target)
    assert json.loads(target.read_text()) == {"x": 1} and mode(target) == 0o640
    assert sorted(p.name for p in target.parent.iterdir()) == ["results.json"]  # no temporary left


def test_a_dangling_symlink_creates_its_target(tmp_path):
    link = tmp_path / "latest.csv"
    link.symlink_to(tmp_path / "runs" / "r1.csv")
    write_csv(link, ["a"], [[1]])
    assert link.is_symlink() and (tmp_path / "runs" / "r1.csv").read_text() == "a\n1\n"


def test_a_fifo_is_written_straight_into_and_stays_a_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    with reading(fifo) as reader:
        write_json(fifo, {"x": 1})
        out, _ = reader.communicate(timeout=30)
    assert json.loads(out) == {"x": 1}
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
    assert [p.name for p in tmp_path.iterdir()] == ["pipe"]


def test_a_link_to_a_fifo_is_written_into_the_fifo(tmp_path):
    fifo = tmp_path / "pipe"
    os.mkfifo(fifo)
    link = tmp_path / "out.json"
    link.symlink_to(fifo)
    with reading(fifo) as reader:
        write_text(link, "through\n")
        assert reader.communicate(timeout=30)[0] == b"through\n"
    assert link.is_symlink() and stat.S_ISFIFO(fifo.lstat().st_mode)


def test_dash_is_standard_output(capfd):
    write_text("-", "to stdout\n")
    assert capfd.readouterr().out == "to stdout\n"


def test_a_folder_and_a_socket_are_refused_and_left_alone(tmp_path):
    import socket

    folder = tmp_path / "folder"
    folder.mkdir()
    with pytest.raises(WriteError, match="folder.*is a folder"):
        write_text(folder, "x")
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        with pytest.raises(WriteError, match="s.sock.*is a socket"):
            write_text(sock_path, "x")
        with pytest.raises(WriteError, match="is a socket"):
            check_writable(sock_path)
        assert stat.S_ISSOCK(sock_path.lstat().st_mode)
    assert folder.is_dir() and not any(folder.iterdir())


def test_check_writable_creates_nothing_and_names_the_problem(tmp_path):
    check_writable(tmp_path / "new" / "deeper" / "x.json")  # the writer would make the folders
    assert not (tmp_path / "new").exists()
    check_writable(tmp_path / "x.json")
    (tmp_path / "file").write_text("")
    with pytest.raises(WriteError, match="is not a folder"):
        check_writable(tmp_path / "file" / "x.json")


@pytest.mark.skipif(os.geteuid() == 0, reason="root writes into read-only folders")
def test_check_writable_refuses_a_read_only_folder(tmp_path):
    folder = tmp_path / "ro"
    folder.mkdir()
    folder.chmod(0o555)
    try:
        with pytest.raises(WriteError, match="permission denied"):
            check_writable(folder / "x.json")
    finally:
        folder.chmod(0o755)


def test_the_cli_refuses_an_output_it_cannot_write_before_computing(tmp_path):
    """A socket as --json: one line and exit 2 at once, not after the whole attack."""
    import socket

    from typer.testing import CliRunner

    from segadv_tui.cli import _register_commands, app

    _register_commands()
    sock_path = tmp_path / "s.sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        result = CliRunner().invoke(app, ["attack", "--json", str(sock_path), "--data", str(tmp_path / "nowhere")])
    assert result.exit_code == 2
    # The output is checked first: the missing --data folder is never reached.
    assert "--json" in result.output and "is a socket" in result.output and "nowhere" not in result.output


def test_the_cli_writes_through_a_fifo_without_replacing_it(tmp_path, tiny_demo):
    fifo = tmp_path / "results.json"
    os.mkfifo(fifo)
    with reading(fifo) as reader:
        result = subprocess.run(
            [
                sys.executable,
                "-c",
                "from segadv_tui.cli import main; main()",
                "attack",
                "--data",
                str(tiny_demo),
                "--limit",
                "1",
                "--json",
                str(fifo),
            ],
            capture_output=True,
            text=True,
            env={**os.environ, "OMP_NUM_THREADS": "1"},
            timeout=300,
        )
        out, _ = reader.communicate(timeout=60)
    assert result.returncode == 0, result.stderr
    assert json.loads(out)["command"] == "attack"
    assert stat.S_ISFIFO(fifo.lstat().st_mode)
