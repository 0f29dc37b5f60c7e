"""A Decathlon folder through the CLI's data plumbing (segadv_tui.cli._common.open_data): its problems and
a folder of neither layout are one line, exit 2."""

from __future__ import annotations

from decathlon_files import make_dataset


def test_strict_names_the_first_bad_volume(run, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    root = make_dataset(tmp_path / "d")
    (root / "labelsTr" / "b.nii.gz").unlink()
    result = run("attack", "--data", root, "--strict", "--limit", "1")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --strict: 1 problem(s) in {root}; the first: imagesTr/b_0000.nii.gz: no label file labelsTr/b.nii.gz"
    ]


def test_a_folder_of_neither_layout_is_one_line(run, tmp_path):
    (tmp_path / "empty").mkdir()
    result = run("attack", "--data", tmp_path / "empty", "--limit", "1")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert "holds neither dataset.json nor train.csv" in line and "imagesTr/CASE_0000.nii.gz" in line
