"""A UW-Madison tree opened for the first time: the explorer attacks its opening slice before the tree is
indexed (``state.first_look``), then fills the slices panel without attacking that slice again. Opened
again, the opening slice kept beside the cached index comes before the index is read."""

from __future__ import annotations

import random
import shutil
import threading
from pathlib import Path

import pytest
import torch
from tui_pilot import make_app, pilot_test, settle, until

import core.data.open
import segadv_tui.index_cache
from core.labels import UW_MADISON
from core.models.checkpoints import save_checkpoint
from core.models.registry import build_model
from core.paths import demo_checkpoint
from segadv_tui.state import first_look, opening_slice
from segadv_tui.widgets.slices import SliceBrowser


@pytest.fixture
def fresh_tree(tiny_demo, tmp_path):
    """The tiny demo at a new root: the index cache has no entry for it."""
    return shutil.copytree(tiny_demo, tmp_path / "fresh")


@pytest.fixture
def gated_index(monkeypatch):
    """Indexing a tree waits until the test opens the gate (then it reads the files as ever)."""
    gate = threading.Event()
    indexed = core.data.open.open_dataset

    def open_dataset(*args, **kwargs):
        gate.wait(60)
        return indexed(*args, **kwargs)

    monkeypatch.setattr(core.data.open, "open_dataset", open_dataset)
    return gate, indexed


def test_the_first_look_opens_the_slice_the_index_would(tiny_demo, fresh_tree, tmp_path):
    assert first_look(fresh_tree) == opening_slice(core.data.open.open_dataset(fresh_tree).records)
    # The real train.csv is not in case, day, slice order: the first look's order is the index's anyway.
    header, *rows = (fresh_tree / "train.csv").read_text().splitlines()
    random.Random(0).shuffle(rows)
    (fresh_tree / "train.csv").write_text("\n".join([header, *rows]) + "\n")
    records = core.data.open.open_dataset(fresh_tree).records
    for fraction in (0.1, 0.25, 0.5):
        assert first_look(fresh_tree, fraction) == opening_slice(records, fraction), fraction
    # One that cannot tell: nothing, and the index says what is wrong with the tree.
    (fresh_tree / "train.csv").write_bytes(b"\xff\xfe not a CSV")
    assert first_look(fresh_tree) is None
    (fresh_tree / "train.csv").unlink()
    assert first_look(fresh_tree) is None


async def _frame_before_the_index(pilot, app) -> None:
    for _ in range(600):  # the index is held at its gate: no settling, which would wait for it
        await pilot.pause(0.05)
        if app.explorer.state.frame is not None:
            return
    raise AssertionError(f"no frame before the index; notifications: {app.notices}")


@pilot_test
async def test_a_tree_opened_for_the_first_time_is_attacked_before_it_is_indexed(fresh_tree, gated_index):
    gate, indexed = gated_index
    app = make_app(fresh_tree, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(120, 40)) as pilot:
        await _frame_before_the_index(pilot, app)
        assert state.dataset is None and state.records == []
        assert state.frame.result.slice_id == opening_slice(indexed(fresh_tree).records).id
        assert app.query_one(SliceBrowser).border_subtitle == "indexing…"
        first = state.frame.request_id
        gate.set()
        await until(pilot, app, lambda: state.dataset is not None, "the index")
        await settle(pilot, app)
        browser = app.query_one(SliceBrowser)
        assert len(browser.all_records) == len(state.records) == len(indexed(fresh_tree).records)
        assert browser.current == state.source and state.source.id == state.frame.result.slice_id
        assert state.frame.request_id == first  # the same slice: not attacked again
        after = browser.neighbours(state.source)[0]  # j's
        await pilot.press("j")
        await until(pilot, app, lambda: state.frame.request_id > first, "the next slice's frame")
        assert state.frame.result.slice_id == after.id
        assert app.notices == []


@pilot_test
async def test_a_checkpoint_of_other_labels_is_refused_once_on_a_first_look(fresh_tree, gated_index, tmp_path):
    from label_sets import LIVER_TUMOUR

    torch.manual_seed(0)
    model = build_model("small", labels=LIVER_TUMOUR).eval()
    liver = save_checkpoint(tmp_path / "liver.safetensors", model, img_size=64)
    gate, _ = gated_index
    app = make_app(fresh_tree, liver)
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(600):
            await pilot.pause(0.05)
            if any(severity == "error" for severity, _ in app.notices):
                break
        gate.set()
        await until(pilot, app, lambda: app.explorer.state.dataset is not None, "the index")
        await settle(pilot, app)
        (message,) = [text for severity, text in app.notices if severity == "error"]
        assert UW_MADISON.describe() in message and LIVER_TUMOUR.describe() in message
        assert app.explorer.state.frame is None and app.explorer.state.attacked is None


@pilot_test
async def test_a_tree_opened_again_is_attacked_before_its_cached_index_is_read(fresh_tree, monkeypatch):
    app = make_app(fresh_tree, demo_checkpoint())
    async with app.run_test(size=(120, 40)) as pilot:  # the first start indexes the tree and keeps it
        await until(pilot, app, lambda: app.explorer.state.dataset is not None, "the index")
        await settle(pilot, app)
        opened = app.explorer.state.frame.result.slice_id
    gate = threading.Event()
    cached = segadv_tui.index_cache.load_index

    def load_index(*args, **kwargs):
        gate.wait(60)
        return cached(*args, **kwargs)

    monkeypatch.setattr(segadv_tui.index_cache, "load_index", load_index)
    app = make_app(fresh_tree, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(120, 40)) as pilot:
        await _frame_before_the_index(pilot, app)
        assert state.dataset is None and state.frame.result.slice_id == opened
        first = state.frame.request_id
        gate.set()
        await until(pilot, app, lambda: state.dataset is not None, "the index, from the cache")
        await settle(pilot, app)
        assert state.frame.request_id == first and app.query_one(SliceBrowser).current == state.source
        assert app.notices == []


@pilot_test
async def test_another_split_keeps_its_own_opening_slice_beside_the_cached_index(fresh_tree, monkeypatch):
    async def opened(**options) -> str:
        app = make_app(fresh_tree, demo_checkpoint(), **options)
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, app, lambda: app.explorer.state.dataset is not None, "the index")
            await settle(pilot, app)
            return app.explorer.state.frame.result.slice_id

    await opened()  # indexed, with the opening slice of the default split
    other = await opened(test_fraction=0.5)  # from the cached index: that split's opening slice kept beside it
    gate = threading.Event()
    cached = segadv_tui.index_cache.load_index
    monkeypatch.setattr(segadv_tui.index_cache, "load_index", lambda *a, **k: gate.wait(60) and cached(*a, **k))
    app = make_app(fresh_tree, demo_checkpoint(), test_fraction=0.5)
    async with app.run_test(size=(120, 40)) as pilot:
        await _frame_before_the_index(pilot, app)
        assert app.explorer.state.frame.result.slice_id == other
        gate.set()
        await until(pilot, app, lambda: app.explorer.state.dataset is not None, "the index")
        await settle(pilot, app)


def test_a_decathlon_folder_with_a_train_csv_is_no_uw_madison_tree(tmp_path):
    from decathlon_files import make_phantom_dataset

    from segadv_tui.screens.explorer import _uw_madison

    root = make_phantom_dataset(tmp_path / "phantom")
    (root / "train.csv").write_text("id,class,segmentation\n")
    assert not _uw_madison(root)  # dataset.json wins, as in data_layout: no first look, no index cache
    assert _uw_madison(shutil.copytree(tmp_path / "phantom", tmp_path / "uw", ignore=lambda *_: ["dataset.json"]))


@pilot_test
async def test_the_index_arriving_leaves_the_focus_where_the_user_put_it(fresh_tree, gated_index):
    from segadv_tui.widgets.attack import EpsInput

    gate, _ = gated_index
    app = make_app(fresh_tree, demo_checkpoint())
    async with app.run_test(size=(160, 48)) as pilot:
        await _frame_before_the_index(pilot, app)
        app.explorer.action_edit_eps()  # typing an eps while the tree is indexed
        await pilot.pause()
        gate.set()
        await until(pilot, app, lambda: app.explorer.state.dataset is not None, "the index")
        await settle(pilot, app)
        assert isinstance(app.focused, EpsInput)


@pilot_test
async def test_an_index_that_fails_after_a_first_look_shows_the_failure_not_indexing(fresh_tree):
    lines = (fresh_tree / "train.csv").read_text().splitlines()
    (fresh_tree / "train.csv").write_text("\n".join([*lines, lines[-1]]) + "\n")  # a duplicated row
    app = make_app(fresh_tree, demo_checkpoint())
    async with app.run_test(size=(120, 40)) as pilot:
        for _ in range(600):  # no settling: the data worker ends in an error, as it should
            await pilot.pause(0.05)
            if app.explorer._failed == "data":
                break
        assert app.explorer._failed == "data", app.notices
        assert "duplicate row" in " ".join(text for _, text in app.notices)
        assert app.query_one(SliceBrowser).border_subtitle != "indexing…"


@pilot_test
async def test_a_tree_indexed_from_a_relative_path_opens_again_from_an_absolute_one(fresh_tree, monkeypatch):
    monkeypatch.chdir(fresh_tree.parent)
    for data in (Path(fresh_tree.name), fresh_tree):  # the second start finds the first one's cache entry
        app = make_app(data, demo_checkpoint())
        async with app.run_test(size=(120, 40)) as pilot:
            await until(pilot, app, lambda: app.explorer.state.dataset is not None, "the index")
            await settle(pilot, app)
            assert app.explorer.state.frame is not None and app.notices == []
        monkeypatch.chdir("/")
