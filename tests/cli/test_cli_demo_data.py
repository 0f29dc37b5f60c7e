"""``segadv demo-data --kind mni152``: the real-MRI data set from the command line, and without nilearn."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

pytest.importorskip("nilearn")


def test_demo_data_mni152_writes_a_decathlon_folder(run, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    result = run("demo-data", "--kind", "mni152", "--size", "tiny", "--out", "brain")
    assert result.exit_code == 0, result.output
    assert (
        result.stdout.startswith("wrote 3 cases, ")
        and "grey_matter, white_matter, other_brain (softmax)" in result.stdout
    )
    assert (tmp_path / "brain" / "dataset.json").is_file() and (tmp_path / "brain" / "NOTICE").is_file()
    refused = run("demo-data", "--kind", "mni152", "--size", "tiny", "brain")
    assert refused.exit_code == 2 and "brain is not empty (pass --overwrite" in refused.stderr
    both = run("demo-data", "a", "--out", "b")
    assert both.exit_code == 2 and "not both" in both.stderr
    unknown = run("demo-data", "--kind", "ct", "--out", "c")
    assert unknown.exit_code == 2 and "--kind must be one of phantom, mni152" in unknown.stderr


def test_without_nilearn_it_is_one_line_and_writes_nothing(tmp_path):
    code = "import sys\nsys.modules['nilearn'] = None\nfrom segadv_tui.cli import main\nmain()"
    env = {**os.environ, "SEGADV_STATE": str(tmp_path / "state"), "SEGADV_CACHE": str(tmp_path / "cache")}
    result = subprocess.run(
        [sys.executable, "-c", code, "demo-data", "--kind", "mni152", "--out", "brain"],
        capture_output=True,
        text=True,
        env=env,
        cwd=tmp_path,
    )
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        "error: the MNI152 data needs nilearn: pip install 'segadv[mri]' (nilearn and nibabel)"
    ]
    assert not (tmp_path / "brain").exists() and not (tmp_path / "cache").exists()
