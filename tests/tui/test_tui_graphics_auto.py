"""``--graphics auto``: the decision inside and outside tmux, and the real queries through a real tmux (the
one this machine has: no outer terminal attached, so it answers for itself), plus OSC 52 reaching tmux's
paste buffer (``set-clipboard on``), as a terminal gets the explorer's y."""  # noqa

from __future__ import annotations

import os
import shlex
import shutil
import subprocess
import sys
import time

import pytest

from segadv_tui.render.graphics import choose_graphics, tmux_graphics

TMUX = {"TMUX": "/tmp/tmux-0/default,1,0", "TERM": "tmux-256color"}
DEADLINE_S = 60


@pytest.mark.parametrize(
    ("answered", "passthrough", "renderer"),
    [
        ("sixel", False, "sixel"),  # tmux 3.4+ draws sixels itself
        ("sixel", True, "sixel"),
        ("kitty", True, "kitty"),  # textual-image 0.13+ wraps its images in the passthrough
        ("kitty", False, "halfblock"),  # tmux would drop the images
        (None, True, "halfblock"),
    ],
)
def test_inside_tmux_the_terminal_s_answer_decides(answered, passthrough, renderer):
    assert tmux_graphics(answered, passthrough) == renderer


def test_auto_asks_the_terminal_only_inside_tmux():
    asked = []

    def ask() -> str:
        asked.append(True)
        return "sixel"

    assert choose_graphics("auto", {**TMUX}, isatty=True, ask_terminal=ask) == "sixel" and asked
    asked.clear()
    assert choose_graphics("auto", {"TERM": "xterm-256color"}, isatty=True, ask_terminal=ask) == "halfblock"
    assert choose_graphics("auto", {"KITTY_WINDOW_ID": "1"}, isatty=True, ask_terminal=ask) == "kitty"
    assert choose_graphics("auto", {**TMUX}, isatty=False, ask_terminal=ask) == "halfblock"  # no terminal
    assert choose_graphics("kitty", {**TMUX}, isatty=True, ask_terminal=ask) == "kitty"  # asked for: given
    assert not asked


# The tests that run a real terminal share one xdist worker: two at once on two busy cores starve each other.
needs_tmux = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
    pytest.mark.xdist_group("tmux"),
]


def run_in_tmux(tmp_path, code: str, *options: tuple[str, str]) -> str:
    """Run ``code`` in a pane of a new tmux server (without pytest's variables) and return what it wrote to
    stdout, captured to a file."""
    socket = f"segadv-graphics-{os.getpid()}"
    output = tmp_path / "out"
    env = {key: value for key, value in os.environ.items() if not key.startswith("PYTEST")}
    command = shlex.join(["sh", "-c", f"{shlex.quote(sys.executable)} -c {shlex.quote(code)} > {output}; sleep 30"])
    tmux = ["tmux", "-L", socket]
    try:
        subprocess.run(
            [*tmux, "-f", "/dev/null", "new-session", "-d", "-s", "g", "-x", "80", "-y", "24", command],
            check=True,
            env=env,
        )
        for name, value in options:
            subprocess.run([*tmux, "set", "-g", name, value], check=True)
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            if output.exists() and output.read_text().endswith("\n"):
                return output.read_text()
            time.sleep(0.2)
        raise AssertionError(f"nothing came from the pane in {DEADLINE_S} s")
    finally:
        subprocess.run([*tmux, "kill-server"], capture_output=True)


@needs_tmux[0]
@needs_tmux[1]
def test_auto_in_a_real_tmux_without_image_support_is_half_blocks(tmp_path):
    code = (
        "from segadv_tui.render.graphics import choose_graphics, terminal_graphics; "
        "print(terminal_graphics(), choose_graphics('auto'))"
    )
    assert run_in_tmux(tmp_path, code).split() == ["None", "halfblock"]
