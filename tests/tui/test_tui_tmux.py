"""End to end in a real terminal: segadv-tui in tmux, one eps step from the keyboard, read the screen, cycle
the views, focus and zoom a picture, quit.

The waits poll the screen until a deadline (they bound a failure; nothing asserts a duration).
"""

from __future__ import annotations

import os
import re
import shlex
import shutil
import subprocess
import sys
import time

import pytest
import torch

from core.attacks.fast_gradient import fgsm
from core.data.gitract import load_slice, open_dataset
from core.metrics import dice_per_organ, mean_dsc
from core.models.checkpoints import load_checkpoint
from core.models.inference import predict
from core.paths import demo_checkpoint

pytestmark = [
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed (apt-get install tmux)"),
    pytest.mark.xdist_group("tmux"),  # one real terminal at a time (see test_tui_config)
]

DEADLINE_S = 120


class Tmux:
    def __init__(self, socket: str):
        self.socket = socket

    def __call__(self, *args: str) -> str:
        result = subprocess.run(["tmux", "-L", self.socket, *args], capture_output=True, text=True, check=True)
        return result.stdout

    def screen(self) -> str:
        return self("capture-pane", "-p", "-t", "tui")

    def wait_for(self, pattern: str) -> re.Match:
        deadline = time.monotonic() + DEADLINE_S
        while time.monotonic() < deadline:
            match = re.search(pattern, self.screen())
            if match:
                return match
            time.sleep(0.2)
        raise AssertionError(f"{pattern!r} never appeared; the screen:\n{self.screen()}")


def expected_mean_dsc(data, slice_id: str, eps: float) -> tuple[float, float]:
    model, meta = load_checkpoint(demo_checkpoint())
    image, masks = load_slice(open_dataset(data).by_id(slice_id), meta["img_size"])
    x, truth = torch.from_numpy(image)[None, None], torch.from_numpy(masks)[None]
    adversarial = fgsm(model, x, truth.float(), eps)
    means = mean_dsc(
        dice_per_organ(torch.cat([predict(model, x), predict(model, adversarial)]), torch.cat([truth, truth]).bool())
    )
    return float(means[0]), float(means[1])


def test_segadv_tui_in_tmux(tiny_demo, tmp_path):
    tmux = Tmux(f"segadv-test-{os.getpid()}")
    status = tmp_path / "status"
    # Unset COLUMNS / LINES (pytest's terminal may export them): the app must size itself to the pane.
    program = shlex.join(
        [
            "env",
            "-u",
            "COLUMNS",
            "-u",
            "LINES",
            sys.executable,
            "-c",
            "from segadv_tui.launch import main; main()",
            "--data",
            str(tiny_demo),
            "--checkpoint",
            str(demo_checkpoint()),
            "--export-dir",
            str(tmp_path),
        ]
    )
    tmux(
        "new-session",
        "-d",
        "-s",
        "tui",
        "-x",
        "160",
        "-y",
        "50",
        f"{program}; echo $? > {shlex.quote(str(status))}; sleep 30",
    )
    tmux("set", "-g", "set-clipboard", "on")  # OSC 52 (y) lands in tmux's paste buffer
    try:
        tmux.wait_for(r"Mean\s+\d\.\d{3}\s+\d\.\d{3}")  # the first frame's table
        tmux.wait_for(r"eps 0\.009 · L∞")
        tmux("send-keys", "-t", "tui", "+")
        tmux.wait_for(r"eps 0\.010 · L∞")
        screen = tmux.screen()
        slice_id = re.search(r"case\d+_day\d+_slice_\d{4}", screen).group(0)
        clean, adv = expected_mean_dsc(tiny_demo, slice_id, 0.010)
        assert re.search(rf"Mean\s+{clean:.3f}\s+{adv:.3f}", screen), screen
        tmux("send-keys", "-t", "tui", "y")  # the scores, as Markdown, to the terminal's clipboard
        tmux.wait_for("Copied the scores table")
        mean = re.search(r"^\| Mean \| (\S+) \| (\S+) \|", tmux("show-buffer"), re.M)
        assert float(mean[1]) == pytest.approx(clean, abs=1e-3) and float(mean[2]) == pytest.approx(adv, abs=1e-3)
        assert "Traceback" not in screen
        assert re.search(r"Clean · DSC \d\.\d{3}.*Adversarial · DSC \d\.\d{3}", screen)  # Overlay, the default
        for key, title in (
            ("v", r"Difference, clean · DSC"),
            ("v", r"Perturbation ×\d+"),
            ("v", r"whole slice \d+×\d+"),
            ("period", r"rows \d+–\d+, cols \d+–\d+ of"),
            ("z", r"Clean pred · DSC \d"),
            ("z", r"rows \d+–\d+, cols \d+–\d+ of"),
        ):
            tmux("send-keys", "-t", "tui", "." if key == "period" else key)
            tmux.wait_for(title)
        tmux("send-keys", "-t", "tui", "q")
        deadline = time.monotonic() + DEADLINE_S
        while not status.exists() and time.monotonic() < deadline:
            time.sleep(0.2)
        assert status.read_text().strip() == "0"
        assert "Traceback" not in tmux.screen()
    finally:
        subprocess.run(["tmux", "-L", tmux.socket, "kill-server"], capture_output=True)
