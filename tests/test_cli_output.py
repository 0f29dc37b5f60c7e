"""What the CLI prints into a pipe: complete tables (no 80-column truncation), and a file written to ``-``
alone on standard output, its tables moved to stderr."""

from __future__ import annotations

import json
import os
import subprocess
import sys

SEGADV = [sys.executable, "-c", "from segadv_tui.cli import main; main()"]


def run_piped(*arguments: str) -> subprocess.CompletedProcess:
    env = {key: value for key, value in os.environ.items() if key != "COLUMNS"}
    return subprocess.run([*SEGADV, *arguments], capture_output=True, text=True, timeout=300,
                          env={**env, "OMP_NUM_THREADS": "1"})


def test_a_table_printed_into_a_pipe_is_complete():
    result = run_piped("info")
    assert result.returncode == 0, result.stderr
    assert "resnext101_32x8d" in result.stdout and "…" not in result.stdout


def test_json_to_stdout_comes_alone_and_the_table_goes_to_stderr(tiny_demo):
    result = run_piped("attack", "--data", str(tiny_demo), "--limit", "1", "--json", "-")
    assert result.returncode == 0, result.stderr
    payload = json.loads(result.stdout)  # nothing but the JSON on stdout
    assert payload["command"] == "attack" and payload["summary"]["slices"] == 1
    assert "DSC clean" in result.stderr


def test_two_outputs_cannot_both_be_stdout(tiny_demo):
    result = run_piped("attack", "--data", str(tiny_demo), "--json", "-", "--csv", "-")
    assert result.returncode == 2
    assert "only one output can be '-'" in result.stderr and len(result.stderr.strip().splitlines()) == 1
