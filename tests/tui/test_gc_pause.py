"""The launch pauses Python's cyclic garbage collector up to the first frame (segadv_tui.gc_pause), and every
way a launch ends turns it on again: the first frame painted, a failure shown, the app closed."""

from __future__ import annotations

import gc
import subprocess
import sys
import textwrap
import threading

import pytest
from tui_pilot import first_frame, make_app, pilot_test, until

from core.paths import demo_checkpoint
from segadv_tui import gc_pause
from segadv_tui.workers import WorkerHooks


@pytest.fixture(autouse=True)
def collecting_after():
    """Whatever a test does, the rest of the session collects."""
    yield
    gc_pause.resume()
    gc.enable()


def test_pause_and_resume_free_the_garbage_and_freeze_the_first_launch_only_and_leave_others_collectors_alone():
    # In a fresh process: this one's first launch froze its objects long ago.
    code = textwrap.dedent(
        """
        import gc, weakref
        from segadv_tui import gc_pause
        class Node: pass
        gc_pause.pause(); assert not gc.isenabled() and gc_pause.is_paused()
        cycle = Node(); cycle.me = cycle; dead = weakref.ref(cycle); del cycle  # the launch's garbage
        assert dead() is not None  # not collected while paused
        gc_pause.resume(); assert gc.isenabled() and not gc_pause.is_paused()
        assert dead() is None  # freed, not frozen
        frozen = gc.get_freeze_count(); assert frozen > 1000, frozen
        gc_pause.resume(); assert gc.isenabled()  # twice: nothing
        junk = [[] for _ in range(5000)]
        gc_pause.pause(); gc_pause.resume()  # a second launch in the process: no freeze
        assert gc.get_freeze_count() == frozen, (gc.get_freeze_count(), frozen)
        gc.disable(); gc_pause.pause(); gc_pause.resume()
        assert not gc.isenabled()  # turned off by someone else: theirs to turn on
        print("ok")
        """
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.stdout.strip() == "ok", done.stderr


@pilot_test
async def test_the_launch_runs_without_collecting_until_its_first_frame_is_painted(tiny_demo):
    collecting = []  # whether the collector ran as each frame's computation started
    hooks = WorkerHooks(on_frame_start=lambda request: collecting.append(gc.isenabled()))
    app = make_app(tiny_demo, demo_checkpoint(), hooks=hooks)
    assert not gc.isenabled() and gc_pause.is_paused()  # from the app's creation: torch imports from there
    async with app.run_test(size=(120, 40)) as pilot:
        await first_frame(pilot, app)
        await until(pilot, app, gc.isenabled, "collecting again, a moment after the first frame")
        assert not gc_pause.is_paused()
        await pilot.press("plus")
        await until(pilot, app, lambda: len(collecting) == 2, "the eps step's frame")
    assert collecting == [False, True]


def test_a_pause_of_another_thread_outlasts_the_launch_and_the_last_to_end_turns_collecting_on():
    gc_pause.pause()
    with gc_pause.paused():  # an index unpickled while the first frame is painted
        gc_pause.resume()
        assert not gc.isenabled()
    assert gc.isenabled()
    with gc_pause.paused():
        gc_pause.pause()
        assert not gc.isenabled()
    assert not gc.isenabled()  # the launch's pause still holds
    gc_pause.resume()
    assert gc.isenabled()


@pilot_test
async def test_a_launch_without_a_frame_collects_again(tiny_demo, tmp_path):
    # A checkpoint that is not one: the failure is shown where the pictures go, and the collector runs again.
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint")
    app = make_app(tiny_demo, broken)
    async with app.run_test(size=(120, 40)) as pilot:
        await until(pilot, app, lambda: app.explorer._failed == "load", "the failure shown")
        assert gc.isenabled()


@pilot_test
async def test_an_app_closed_before_its_first_frame_collects_again(tiny_demo, monkeypatch):
    import segadv_tui.catalog

    gate = threading.Event()  # the checkpoints are not scanned before q: no model, no frame
    scan = segadv_tui.catalog.scan
    monkeypatch.setattr(segadv_tui.catalog, "scan", lambda *a, **k: gate.wait(60) and scan(*a, **k))
    app = make_app(tiny_demo, demo_checkpoint())
    async with app.run_test(size=(120, 40)) as pilot:
        await pilot.pause(0.3)
        assert not gc.isenabled() and app.explorer.state.frame is None
        await pilot.press("q")
        gate.set()
    assert gc.isenabled() and not gc_pause.is_paused() and app.explorer.state.frame is None
