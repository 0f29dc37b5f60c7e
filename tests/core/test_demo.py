"""The built-in demo data set: Kaggle layout, determinism, a plausible phantom, atomic writes, the CLI."""

from __future__ import annotations

import csv
import re
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from core.data.demo import DEMO_VERSION, demo_data_dir, write_demo_dataset
from core.data.phantom import SCAN_LENGTH_MM, Patient, pixel_grid, render
from core.data.rle import rle_decode
from core.organs import ORGANS

SLICE_FILE = re.compile(r"slice_(\d{4})_(\d+)_(\d+)_1\.50_1\.50\.png")


def _slice_files(root: Path) -> dict[str, dict]:
    """Every slice file under ``root/train``, checked against the Kaggle folder pattern, by slice id."""
    found = {}
    for path in sorted((root / "train").rglob("*")):
        if path.is_dir():
            continue
        rel = path.relative_to(root / "train").parts
        assert len(rel) == 4, path
        case_dir, day_dir, scans, name = rel
        case = re.fullmatch(r"case(\d+)", case_dir)
        day = re.fullmatch(rf"{case_dir}_day(\d+)", day_dir)
        match = SLICE_FILE.fullmatch(name)
        assert case and day and scans == "scans" and match, path
        number, width, height = (int(v) for v in match.groups())
        found[f"{day_dir}_slice_{number:04d}"] = dict(
            case=int(case[1]), day=int(day[1]), number=number, width=width, height=height, path=path
        )
    return found


def _rows(root: Path) -> list[list[str]]:
    with open(root / "train.csv", newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def _masks(root: Path) -> dict[str, np.ndarray]:
    """Decoded (3, H, W) masks by slice id, sized from the slice's file name."""
    files = _slice_files(root)
    rows = _rows(root)[1:]
    out = {}
    for i in range(0, len(rows), 3):
        slice_id = rows[i][0]
        f = files[slice_id]
        out[slice_id] = np.stack(
            [rle_decode(r[2], f["height"], f["width"], slice_id=slice_id) for r in rows[i : i + 3]]
        )
    return out


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    union = np.logical_or(a, b).sum()
    return float(np.logical_and(a, b).sum() / union) if union else float("nan")


def test_layout_names_and_16_bit_pngs(tiny_demo):
    files = _slice_files(tiny_demo)
    assert {(f["width"], f["height"]) for f in files.values()} == {(266, 266), (360, 310)}
    case_days = {(f["case"], f["day"]) for f in files.values()}
    cases = {case for case, _ in case_days}
    assert len(cases) == 4 and len(case_days) == 5  # one case was scanned on two days
    assert all(2 <= case <= 150 and 0 <= day <= 40 for case, day in case_days)
    assert not case_days & {(7, 0), (81, 30)}  # the real data set's faulty case-days
    for f in files.values():
        with Image.open(f["path"]) as image:
            assert image.format == "PNG" and image.mode == "I;16"
            assert image.size == (f["width"], f["height"])  # the file name's first number is the width
            pixels = np.array(image)
        assert pixels.shape == (f["height"], f["width"]) and pixels.dtype == np.uint16
        assert 500 < pixels.max() < 20000  # a real-looking range, not [0, 1] or 8-bit


def test_three_rows_per_slice_in_organ_order(tiny_demo):
    rows = _rows(tiny_demo)
    assert rows[0] == ["id", "class", "segmentation"]
    body = rows[1:]
    assert len(body) % 3 == 0
    ids = [body[i][0] for i in range(0, len(body), 3)]
    for i, slice_id in enumerate(ids):
        assert [r[0] for r in body[3 * i : 3 * i + 3]] == [slice_id] * 3
        assert tuple(r[1] for r in body[3 * i : 3 * i + 3]) == ORGANS
    assert len(set(ids)) == len(ids)
    assert set(ids) == set(_slice_files(tiny_demo))  # every row has its image and every image its rows


def test_masks_lie_inside_the_body(tiny_demo):
    files = _slice_files(tiny_demo)
    for slice_id, masks in _masks(tiny_demo).items():
        image = np.array(Image.open(files[slice_id]["path"]), dtype=np.float64)
        image /= image.max()
        # The body from the picture alone: a 5 x 5 mean beats the noise, then its bounding rows/columns.
        padded = np.pad(image, 2, mode="edge")
        smooth = sum(padded[i : i + image.shape[0], j : j + image.shape[1]] for i in range(5) for j in range(5)) / 25
        body = smooth > 0.25
        rows, cols = np.flatnonzero(body.any(axis=1)), np.flatnonzero(body.any(axis=0))
        inside = np.zeros_like(body)
        inside[rows[0] : rows[-1] + 1, cols[0] : cols[-1] + 1] = True
        organs = masks.any(axis=0)
        assert not (organs & ~inside).any(), slice_id
        if organs.any():  # organs are drawn where the signal is, not on the dark background
            assert image[organs].mean() > 3 * image[~inside].mean(), slice_id


def test_scans_start_and_end_without_organs_and_have_them_in_the_middle(tiny_demo):
    masks = _masks(tiny_demo)
    files = _slice_files(tiny_demo)
    by_scan: dict[tuple[int, int], list[tuple[int, bool]]] = {}
    for slice_id, m in masks.items():
        f = files[slice_id]
        by_scan.setdefault((f["case"], f["day"]), []).append((f["number"], bool(m.any())))
    middle = []
    for slices in by_scan.values():
        flags = [has for _, has in sorted(slices)]
        assert not flags[0] and not flags[-1]
        middle += flags[1:-1]
    assert sum(middle) >= 0.75 * len(middle)
    present = np.array([m.reshape(3, -1).any(axis=1) for m in masks.values()])
    assert present.any(axis=0).all()  # each organ appears somewhere


def test_same_seed_gives_identical_files(tiny_demo, tmp_path):
    again = tmp_path / "again"
    again.mkdir()  # an existing empty folder is fine to write into
    write_demo_dataset(again, seed=0, size="tiny")
    assert (again / "train.csv").read_bytes() == (tiny_demo / "train.csv").read_bytes()
    first, second = _slice_files(tiny_demo), _slice_files(again)
    assert first.keys() == second.keys()
    for slice_id in first:
        assert first[slice_id]["path"].read_bytes() == second[slice_id]["path"].read_bytes(), slice_id


def test_different_seeds_give_different_patients(tiny_demo, tmp_path):
    other = write_demo_dataset(tmp_path / "other", seed=1, size="tiny")
    assert (other / "train.csv").read_bytes() != (tiny_demo / "train.csv").read_bytes()
    a = sorted(_slice_files(tiny_demo).values(), key=lambda f: (f["case"], f["day"], f["number"]))
    b = sorted(_slice_files(other).values(), key=lambda f: (f["case"], f["day"], f["number"]))
    assert a[3]["path"].read_bytes() != b[3]["path"].read_bytes()


def test_neighbouring_slices_vary_smoothly():
    """Organs are 3-D shapes: neighbouring slices overlap far more than slices a quarter-scan apart."""
    x, y = pixel_grid(266, 266)
    anatomy = Patient(np.random.SeedSequence(11)).on_day(np.random.SeedSequence(12))
    organs = [render(anatomy, z, x, y)[1].any(axis=0) for z in np.linspace(0, SCAN_LENGTH_MM, 28)]
    near = np.nanmean([_iou(organs[i], organs[i + 1]) for i in range(27)])
    far = np.nanmean([_iou(organs[i], organs[i + 7]) for i in range(21)])
    assert near > 0.4 and near > 2.5 * far, (near, far)


def test_another_day_is_the_same_patient_moved_a_little():
    x, y = pixel_grid(266, 266)
    patient = Patient(np.random.SeedSequence(21))
    day_a, day_b = (patient.on_day(np.random.SeedSequence(s)) for s in (1, 2))
    stranger = Patient(np.random.SeedSequence(22)).on_day(np.random.SeedSequence(1))
    same, other = [], []
    for z in np.linspace(60, 240, 7):
        a, b, c = (render(anatomy, z, x, y)[1] for anatomy in (day_a, day_b, stranger))
        same.append(_iou(a, b))
        other.append(_iou(a, c))
    assert 0.3 < np.nanmean(same) < 0.98 and np.nanmean(same) > np.nanmean(other) + 0.1, (same, other)


def test_refuses_a_non_empty_folder_and_overwrites_on_request(tmp_path):
    out = tmp_path / "data"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    with pytest.raises(FileExistsError, match="not empty"):
        write_demo_dataset(out, size="tiny")
    assert (out / "notes.txt").read_text() == "keep me"
    write_demo_dataset(out, size="tiny", overwrite=True)
    assert not (out / "notes.txt").exists() and (out / "train.csv").is_file()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["data"]  # no temporary folders left behind


def test_an_interrupted_write_leaves_nothing_behind(tmp_path):
    def interrupt(done, total):
        if done == 4:
            raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(tmp_path / "fresh", size="tiny", progress=interrupt)
    assert list(tmp_path.iterdir()) == []
    kept = tmp_path / "kept"
    kept.mkdir()
    (kept / "notes.txt").write_text("old data")
    with pytest.raises(KeyboardInterrupt):
        write_demo_dataset(kept, size="tiny", overwrite=True, progress=interrupt)
    assert [p.name for p in tmp_path.iterdir()] == ["kept"]
    assert (kept / "notes.txt").read_text() == "old data"


def test_rejects_bad_size_and_seed(tmp_path):
    with pytest.raises(ValueError, match="huge"):
        write_demo_dataset(tmp_path / "a", size="huge")
    with pytest.raises(ValueError, match="-1"):
        write_demo_dataset(tmp_path / "b", seed=-1)
    assert list(tmp_path.iterdir()) == []


def test_demo_data_dir_is_made_once_and_safe_when_two_processes_race(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path))
    start = threading.Barrier(2)
    results, errors, calls = [], [], []

    def make():
        start.wait()
        try:
            results.append(demo_data_dir(seed=5, size="tiny", progress=lambda done, total: calls.append((done, total))))
        except Exception as exc:  # noqa: BLE001 (surfaced by the assertion below)
            errors.append(exc)

    workers = [threading.Thread(target=make) for _ in range(2)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join()
    assert errors == []
    assert results == [tmp_path / f"demo-v{DEMO_VERSION}-tiny-seed5"] * 2
    assert [p.name for p in tmp_path.iterdir()] == [f"demo-v{DEMO_VERSION}-tiny-seed5"]  # the loser's folder is gone
    total = len(_slice_files(results[0]))
    assert sorted(calls) == sorted([(i, total) for i in range(1, total + 1)] * 2)  # one call per slice
    later = []
    assert demo_data_dir(seed=5, size="tiny", progress=lambda *a: later.append(a)) == results[0]
    assert later == []  # reused, not made again


def _cli():
    from typer.testing import CliRunner

    from segadv_tui.cli import _register_commands, app

    _register_commands()
    return CliRunner(), app


def test_cli_writes_the_demo(tiny_demo, tmp_path, monkeypatch):
    runner, app = _cli()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo-data", "out", "--size", "tiny", "--seed", "0"])
    assert result.exit_code == 0, result.output
    slices = len(_slice_files(tmp_path / "out"))
    with_organs = sum(m.any() for m in _masks(tmp_path / "out").values())
    assert f"{slices} slices ({with_organs} with organs)" in result.output and "out" in result.output
    assert (tmp_path / "out" / "train.csv").read_bytes() == (tiny_demo / "train.csv").read_bytes()

    again = runner.invoke(app, ["demo-data", "out", "--size", "tiny"])
    assert again.exit_code != 0
    assert len(again.output.strip().splitlines()) == 1 and "--overwrite" in again.output


@pytest.mark.parametrize("args", [["--size", "huge"], ["--seed", "-2"]])
def test_cli_rejects_bad_arguments_in_one_line(tmp_path, monkeypatch, args):
    runner, app = _cli()
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["demo-data", "out", *args])
    assert result.exit_code != 0
    lines = result.output.strip().splitlines()
    assert len(lines) == 1 and args[0] in lines[0] and "Traceback" not in result.output
    assert not (tmp_path / "out").exists()
