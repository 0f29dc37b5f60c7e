"""SVG snapshots of the explorer (pytest-textual-snapshot, pinned with textual): each view of the pictures
after three eps steps at 160 x 48 (Overlay, the default, also at 80 x 24; Focus zoomed in and panned),
the help screen, and the bundled universal perturbation scored on another checkpoint.

Deterministic: every worker has finished, the step time and the device are fixed texts, the eps field's
cursor does not blink, torch runs on one thread (the same sums on every run). Update with
``pytest tests/tui/test_tui_snapshots.py --snapshot-update`` and look at the SVGs before committing them.
"""

from __future__ import annotations

import pytest
from tui_pilot import first_frame, make_app, settle, until

from core.paths import demo_checkpoint
from segadv_tui.widgets.attack import EpsInput


def explorer_after_three_steps(tiny_demo, *keys: str):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state

    async def run_before(pilot) -> None:
        await first_frame(pilot, app)
        app.query_one(EpsInput).cursor_blink = False
        await pilot.press("plus", "plus", "plus")
        await until(
            pilot,
            app,
            lambda: state.frame.config.eps == pytest.approx(0.012) and state.curve is not None,
            "the eps 0.012 frame and its curve",
        )
        await pilot.press(*keys)
        await settle(pilot, app)

    return app, run_before


def test_main_screen(snap_compare, tiny_demo):
    """The Overlay view, the default."""
    app, run_before = explorer_after_three_steps(tiny_demo)
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)


def test_main_screen_small_terminal(snap_compare, tiny_demo):
    app, run_before = explorer_after_three_steps(tiny_demo)
    assert snap_compare(app, terminal_size=(80, 24), run_before=run_before)


def test_difference_view(snap_compare, tiny_demo):
    app, run_before = explorer_after_three_steps(tiny_demo, "v")
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)


def test_grid_view(snap_compare, tiny_demo):
    app, run_before = explorer_after_three_steps(tiny_demo, "v", "v")
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)


def test_focus_view_zoomed_in(snap_compare, tiny_demo):
    """The adversarial overlay alone, two zoom steps in, panned down, the stomach hidden."""
    app, run_before = explorer_after_three_steps(tiny_demo, "z", "full_stop", "full_stop", "down", "3")
    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)


def test_help_screen(snap_compare, tiny_demo):
    app, run_before = explorer_after_three_steps(tiny_demo, "question_mark")
    assert snap_compare(app, terminal_size=(120, 50), run_before=run_before)


def test_universal_perturbation_scored_on_another_checkpoint(snap_compare, tiny_demo):
    """u: the bundled delta at its eps, then w: its masks and scores on demo_small_at (◆ in the list)."""
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state

    async def run_before(pilot) -> None:
        await first_frame(pilot, app)
        app.query_one(EpsInput).cursor_blink = False
        await pilot.press("u")
        await until(pilot, app, lambda: state.frame.config.method == "universal", "the universal frame")
        await pilot.press("w")
        await until(
            pilot,
            app,
            lambda: state.frame.scored_on is not None and state.curve is not None and state.curve.scored_on is not None,
            "the frame and curve scored on the next checkpoint",
        )
        await settle(pilot, app)

    assert snap_compare(app, terminal_size=(160, 48), run_before=run_before)
