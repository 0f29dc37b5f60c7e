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
    return subprocess.run(
        [*SEGADV, *arguments], capture_output=True, text=True, timeout=300, env={**env, "OMP_NUM_THREADS": "1"}
    )


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


def test_help_groups_the_options_in_panels():
    result = run_piped("attack", "--help")
    assert result.returncode == 0, result.stderr
    text = result.stdout
    panels = [text.index(f"╭─ {name} ") for name in ("Model", "Data", "Attack", "Compute", "Output")]
    assert panels == sorted(panels)
    model, data, attack, compute, output = panels
    assert model < text.index("--checkpoint") < data < text.index("--split") < attack
    assert attack < text.index("--method") < compute < text.index("--batch-size") < output < text.index("--json")


def test_one_table_type_prints_sections_colours_and_alignment_and_writes_the_same_rows_as_markdown_and_csv():
    from rich.console import Console

    from segadv_tui.render.tables import Table

    table = Table(
        "checks",
        ("check", "verdict", "number"),
        (("gradients", "pass", "0.1"), ("[n/a]", "FAIL", "n/a")),
        justify=("left", "left", "right"),
        sections=frozenset({0}),
        colours=({1: "green"}, {1: "bold red"}),
    )
    console = Console(width=60, force_terminal=True, color_system="truecolor")
    with console.capture() as captured:
        console.print(table.to_rich())
    printed = captured.get()
    assert "\x1b[32mpass" in printed and "\x1b[1;31mFAIL" in printed  # green, bold red
    assert "[n/a]" in printed  # a cell is text, never markup
    lines = printed.splitlines()
    assert lines.index(next(line for line in lines if "gradients" in line)) + 1 == lines.index(
        next(line for line in lines if line.startswith("├"))
    )  # a rule after the first section
    markdown = table.to_markdown().splitlines()
    assert markdown[3] == "| --- | --- | ---: |" and markdown[5] == "| [n/a] | FAIL | n/a |"
    assert table.to_csv() == "check,verdict,number\ngradients,pass,0.1\n[n/a],FAIL,\n"
