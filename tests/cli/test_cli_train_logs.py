"""``segadv train``'s logs from the command line: the history named at the end, --tensorboard's missing package."""

from __future__ import annotations

import sys

from core.files import read_csv_log
from core.training.history import history_path_for, steps_path_for

QUICK = ["--model", "small", "--encoder-weights", "none", "--img-size", "32", "--batch-size", "8", "--workers", "0"]


def test_train_names_its_history_and_writes_both_logs(run, tiny_demo, tmp_path):
    out = tmp_path / "small.safetensors"
    result = run("train", *QUICK, "--data", tiny_demo, "--epochs", "1", "--log-every", "2", "--out", out)
    assert result.exit_code == 0, result.output
    assert f"history {history_path_for(out)}" in " ".join(result.stdout.split())
    assert [row["epoch"] for row in read_csv_log(history_path_for(out))] == ["1"]
    # 3 steps per epoch, a report every 2 and at the epoch's last step.
    assert [row["step"] for row in read_csv_log(steps_path_for(out))] == ["2", "3"]


def test_tensorboard_without_the_package_is_one_line(run, tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorboard", None)
    monkeypatch.delitem(sys.modules, "torch.utils.tensorboard", raising=False)
    out = tmp_path / "small.safetensors"
    result = run("train", *QUICK, "--data", tiny_demo, "--out", out, "--tensorboard", tmp_path / "tb")
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert "--tensorboard needs the tensorboard package: pip install 'segadv[tensorboard]'" in " ".join(
        result.output.split()
    )
    assert not out.exists()
