"""The explorer's prefetch (issue 21, slice steps): once a frame is shown and the explorer is idle, the
next and previous slices in the browser's order are read and their gradient (FGSM) or clean prediction
computed into the attacker's bounded caches. A frame computed from that state is the one computed cold,
array for array; a prefetch gives way to a newer request; a slice it cannot read is said only when chosen.
The references are a fresh ``SliceAttacker`` with empty caches, on the real bundled checkpoints."""

from __future__ import annotations

import dataclasses
import shutil

import numpy as np
import pytest
from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.attacks.config import AttackConfig
from core.data.gitract import open_dataset, with_organs
from core.models.checkpoints import load_checkpoint
from core.paths import bundled_checkpoint_dirs, demo_checkpoint
from segadv_tui.attacker import SliceAttacker
from segadv_tui.catalog import LoadedCheckpoint, scan
from segadv_tui.frames import load_slice_data
from segadv_tui.state import opening_slice
from segadv_tui.widgets.slices import SliceBrowser

SIZE = (160, 48)


@pytest.fixture(scope="module")
def model_and_meta():
    return load_checkpoint(demo_checkpoint())


@pytest.fixture(scope="module")
def fpn() -> LoadedCheckpoint:
    entry = next(entry for entry in scan(bundled_checkpoint_dirs()).checkpoints if entry.path.stem == "demo_small_fpn")
    model, meta = load_checkpoint(entry.path)
    return LoadedCheckpoint(entry, model, meta)


def assert_same_frame(shown, cold) -> None:
    """Every score and picture of two frames' results, exactly."""
    a, b = shown.result, cold.result
    for name in ("dsc_clean", "dsc_adv", "linf", "l2", "zero_grad_fraction", "organ_pixels"):
        np.testing.assert_array_equal(np.asarray(getattr(a, name)), np.asarray(getattr(b, name)), err_msg=name)
    for field in dataclasses.fields(a.pictures):
        name = field.name
        np.testing.assert_array_equal(getattr(a.pictures, name), getattr(b.pictures, name), err_msg=name)


@pytest.mark.parametrize(
    "config",
    [
        AttackConfig(eps=0.02),
        AttackConfig(eps=0.02, loss="dice", target="pred"),
        AttackConfig(method="bim", eps=0.02, steps=3),
    ],
    ids=["fgsm", "fgsm-dice-pred", "bim"],
)
def test_a_frame_from_prefetched_state_is_the_cold_frame(tiny_demo, model_and_meta, config):
    model, meta = model_and_meta
    record = with_organs(open_dataset(tiny_demo).records)[1]
    data = load_slice_data(record, meta["img_size"])
    cold = SliceAttacker(model, "demo").compute(data, config)

    warm = SliceAttacker(model, "demo")
    assert warm.prefetch(data, config)
    misses = warm.cache.misses
    frame = warm.compute(data, config)
    assert_same_frame(frame, cold)
    if config.method == "fgsm":  # the frame took the prefetched gradient: no backward pass of its own
        assert warm.cache.misses == misses and warm.cache.hits >= 1
    else:  # the iterative attack started from the prefetched clean prediction
        assert ("demo", data.id) in warm._clean


def test_a_transfer_frame_from_prefetched_state_is_the_cold_frame(tiny_demo, model_and_meta, fpn):
    model, meta = model_and_meta
    record = with_organs(open_dataset(tiny_demo).records)[2]
    data = load_slice_data(record, meta["img_size"])
    config = AttackConfig(eps=0.03)
    cold = SliceAttacker(model, "demo").compute(data, config, scored_on=fpn)

    warm = SliceAttacker(model, "demo")
    assert warm.prefetch(data, config, scored_on=fpn)
    assert (str(fpn.path), data.id) in warm._clean  # the scoring model's clean prediction, ahead
    assert_same_frame(warm.compute(data, config, scored_on=fpn), cold)


def test_a_prefetch_gives_way_to_a_newer_request(tiny_demo, model_and_meta, fpn):
    """A stop seen before a piece starts computes nothing more; the pieces done stay cached."""
    model, meta = model_and_meta
    data = load_slice_data(with_organs(open_dataset(tiny_demo).records)[0], meta["img_size"])
    attacker = SliceAttacker(model, "demo")
    assert not attacker.prefetch(data, AttackConfig(), should_stop=lambda: True)
    assert len(attacker.cache) == 0 and not attacker._clean

    checks: list[int] = []

    def stop_at_the_second_piece() -> bool:
        checks.append(1)
        return len(checks) > 1

    assert not attacker.prefetch(data, AttackConfig(), should_stop=stop_at_the_second_piece, scored_on=fpn)
    assert len(attacker.cache) == 1  # the gradient, done before the stop
    assert (str(fpn.path), data.id) not in attacker._clean  # the scoring model's prediction, never started


@pilot_test
async def test_j_after_an_idle_moment_runs_only_the_eps_step_and_shows_the_cold_frame(tiny_demo, model_and_meta):
    model, meta = model_and_meta
    app = make_app(tiny_demo, demo_checkpoint())
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        await settle(pilot, app)  # the curve, then the prefetch
        browser = app.query_one(SliceBrowser)
        index = browser.records.index(state.source)
        following = browser.records[index + 1]
        attacker = explorer.attacker
        # j's slice and k's, in the browser's order, both read and with their gradients.
        assert index > 0 and browser.neighbours(state.source) == [following, browser.records[index - 1]]
        for record in browser.neighbours(state.source):
            assert (record.id, 128) in explorer._slices._slices
            assert attacker._gradient_key(load_slice_data(record, 128), state.attack) in attacker.cache
        key = attacker._gradient_key(load_slice_data(following, 128), state.attack)
        prefetched = attacker.cache.get(key)
        assert prefetched is not None
        await pilot.press("j")
        await until(pilot, app, lambda: state.frame.slice_id == following.id, "the next slice's frame")
        assert attacker.cache.get(key) is prefetched  # the frame took it: a gradient of its own would replace it
        cold = SliceAttacker(model, "demo").compute(load_slice_data(following, meta["img_size"]), state.attack)
        assert_same_frame(state.frame, cold)
        assert state.dropped_frames == 0


@pilot_test
async def test_a_neighbour_that_cannot_be_read_is_said_when_chosen_not_before(tiny_demo, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    dataset = open_dataset(data)
    first = opening_slice(dataset.records)
    shown = with_organs(dataset.records)
    following = shown[shown.index(first) + 1]
    following.path.write_bytes(b"\x89PNG broken")
    app = make_app(data, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        await settle(pilot, app)  # the prefetch tried the broken slice and said nothing
        assert not [message for severity, message in app.notices if severity == "error"]
        await pilot.press("j")
        await until(pilot, app, lambda: app.notices, "a notification")
        assert any(following.path.name in message for severity, message in app.notices if severity == "error")
        assert state.source.id == following.id
