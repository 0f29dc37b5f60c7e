"""A UW-Madison tree opened for the first time: the explorer attacks its opening slice before the tree is
indexed (``state.first_look``), then fills the slices panel without attacking that slice again. Opened
again, the opening slice kept beside the cached index comes before the index is read."""

from __future__ import annotations

import shutil
import threading

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
