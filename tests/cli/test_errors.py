"""One error path for the real ``segadv`` process: bad input (a ``SegadvError``) is one line and exit 2,
anything else is a bug in segadv (one line naming a log file with the traceback, exit 1), Ctrl-C is 130.

Each case runs ``segadv_tui.cli.main()`` in a fresh process; a bug is planted by replacing one function
before ``main()`` runs, since segadv has none to offer on purpose.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from core.paths import demo_checkpoint, state_dir


def segadv(tmp_path: Path, *args: str, plant: str = "") -> subprocess.CompletedProcess:
    code = f"{plant}\nfrom segadv_tui.cli import main\nmain()"
    env = {**os.environ, "SEGADV_STATE": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, env=env, cwd=tmp_path)


def test_bad_input_met_deep_in_a_command_is_one_line_and_exit_2(tmp_path, tiny_demo):
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(demo_checkpoint().read_bytes()[:-100])
    result = segadv(tmp_path, "attack", "--checkpoint", str(truncated), "--data", str(tiny_demo), "--limit", "1")
    assert result.returncode == 2, result.stderr
    assert result.stderr.strip().splitlines() == [
        f"error: {truncated}: truncated or corrupt "
        f"({truncated.stat().st_size} bytes, the header promises "
        f"{truncated.stat().st_size + 100})"
    ]
    assert not (tmp_path / "state").exists()  # bad input is not a bug: no log


def test_a_programming_error_is_reported_as_a_bug_with_its_traceback_in_a_log(tmp_path):
    # A bare ValueError deep inside a command: once reported as "bad input", now a bug.
    plant = "import core.data.demo\ncore.data.demo._plan = lambda seed, size: int('not a number')"
    result = segadv(tmp_path, "demo-data", "out", "--size", "tiny", plant=plant)
    assert result.returncode == 1, result.stderr
    (line,) = result.stderr.strip().splitlines()
    (log,) = (tmp_path / "state").glob("bug-*.log")
    assert line.startswith("a bug in segadv: ValueError: invalid literal for int()") and str(log) in line
    text = log.read_text()
    assert "Traceback (most recent call last)" in text and "in <lambda>" in text and "demo-data out" in text
    assert not (tmp_path / "out").exists()


def test_ctrl_c_is_exit_130_and_no_bug(tmp_path):
    plant = (
        "import core.data.demo\ndef interrupt(seed, size): raise KeyboardInterrupt\ncore.data.demo._plan = interrupt"
    )
    result = segadv(tmp_path, "demo-data", "out", "--size", "tiny", plant=plant)
    assert result.returncode == 130 and "bug" not in result.stderr and "Traceback" not in result.stderr
    assert not (tmp_path / "state").exists()


def test_a_reader_that_leaves_early_is_not_a_bug_but_another_broken_pipe_is(tmp_path):
    """``segadv ... | head``: the write that finds standard output's reader gone (planted, as where it
    happens depends on timing) ends the command quietly, as Python's documentation advises. A broken
    pipe while the reader is still there (a worker's, a subprocess's) is a bug like any other."""
    plant = (
        "import core.models.checkpoints\ndef closed(path): raise BrokenPipeError(32, 'Broken pipe')\n"
        "core.models.checkpoints.read_checkpoint_meta = closed"
    )
    code = f"{plant}\nfrom segadv_tui.cli import main\nmain()"
    env = {**os.environ, "SEGADV_STATE": str(tmp_path / "state"), "OMP_NUM_THREADS": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", code, "info", str(demo_checkpoint())],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        cwd=tmp_path,
    )
    process.stdout.close()  # the reader leaves before anything is written
    stderr = process.stderr.read().decode()
    assert process.wait(timeout=120) == 1 and stderr == ""
    assert not (tmp_path / "state").exists()

    result = segadv(tmp_path, "info", str(demo_checkpoint()), plant=plant)  # the reader stays
    assert result.returncode == 1 and result.stderr.startswith("a bug in segadv: BrokenPipeError")
    assert len(list((tmp_path / "state").glob("bug-*.log"))) == 1


def test_usage_errors_stay_one_line_and_exit_2(tmp_path):
    result = segadv(tmp_path, "attack", "--no-such-option")
    assert result.returncode == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error:") and "--no-such-option" in line


def test_segadv_tui_takes_the_same_path_before_the_app_starts(tmp_path):
    code = "from segadv_tui.launch import main\nmain()"
    for args, named in ((["--graphics", "ascii"], "'ascii'"), (["--no-such-option"], "--no-such-option")):
        result = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path)
        assert result.returncode == 2
        (line,) = result.stderr.strip().splitlines()
        assert line.startswith("error:") and named in line


def test_the_state_folder_follows_segadv_state_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGADV_STATE", str(tmp_path / "mine"))
    assert state_dir() == tmp_path / "mine"
    monkeypatch.delenv("SEGADV_STATE")
    monkeypatch.setenv("XDG_STATE_HOME", str(tmp_path / "xdg"))
    assert state_dir() == tmp_path / "xdg" / "segadv"
    monkeypatch.delenv("XDG_STATE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path))
    assert state_dir() == tmp_path / ".local" / "state" / "segadv"
