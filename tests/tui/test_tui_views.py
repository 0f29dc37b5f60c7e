"""The explorer's four views under Pilot: the real app, the bundled demo checkpoint, the tiny demo data.

Picture sizes are read off the widgets (the cells each picture drew, two pixels per cell); the scores
table and the eps curve must be on screen in every view.
"""

from __future__ import annotations

import numpy as np
import pytest
from textual.command import CommandList
from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.paths import demo_checkpoint
from segadv_tui.widgets.images import VIEWS, HalfBlockView, Picture, PictureViews

# The sizes: at 160 x 48 each Overlay picture is at least this many pixels square.
OVERLAY_MIN = {True: 56, False: 72}  # side panels shown / hidden


def on_screen(app, selector: str) -> bool:
    widget = app.query_one(selector)
    region = widget.region
    return widget.display and region.width > 0 and region.height > 0 and app.screen.region.contains_region(region)


def shown_pictures(app) -> list[Picture]:
    return [picture for picture in app.query_one(PictureViews).current().query(Picture) if picture.display]


def assert_fits(picture: Picture) -> None:
    """What the picture drew fits its box: width in cells, height in half cells."""
    width, height = picture.drawn
    box = picture.content_size
    assert 0 < width <= box.width and 0 < height <= 2 * box.height, (picture.key, picture.drawn, box)


@pilot_test
async def test_views_at_160_by_48(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        views = app.query_one(PictureViews)
        assert views.view == "overlay"  # the default
        sizes = {}
        for keys, view, sidebar in (
            ([], "overlay", True),
            (["b"], "overlay", False),
            (["b", "v"], "difference", True),
            (["v"], "grid", True),
            (["v"], "focus", False),
            (["v"], "overlay", True),
        ):
            await pilot.press(*keys)
            await settle(pilot, app)
            assert views.view == view
            assert app.query_one("#sidebar").display == sidebar, (view, keys)
            pictures = shown_pictures(app)
            assert len(pictures) == {"overlay": 2, "difference": 2, "grid": 8, "focus": 1}[view]
            for picture in pictures:
                assert_fits(picture)
            sizes[(view, sidebar)] = [picture.drawn for picture in pictures]
            # The scores table and the eps curve stay in every view.
            assert on_screen(app, "#scores-table") and on_screen(app, "#curve") and on_screen(app, "#legend")
        for sidebar, least in OVERLAY_MIN.items():
            assert all(min(size) >= least for size in sizes[("overlay", sidebar)]), sizes
        assert all(min(size) >= OVERLAY_MIN[True] for size in sizes[("difference", True)]), sizes
        assert min(sizes[("focus", False)][0]) >= OVERLAY_MIN[False]
        # The pair takes the room the side panels leave: together nearly the whole width.
        assert sum(width for width, _ in sizes[("overlay", False)]) >= 2 * 72


@pilot_test
async def test_views_at_80_by_24(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    async with app.run_test(size=(80, 24)) as pilot:
        await first_frame(pilot, app)
        views = app.query_one(PictureViews)
        for view in VIEWS:
            if views.view != view:
                await pilot.press("v")
            await settle(pilot, app)
            assert views.view == view and not app.query_one("#sidebar").display
            for picture in shown_pictures(app):
                assert_fits(picture)
                # What 80 x 24 leaves under the table: about a third of the model's 128 pixels.
                assert min(picture.drawn) >= (18 if view == "grid" else 24), (view, picture.key, picture.drawn)
            assert on_screen(app, "#scores-table") and on_screen(app, "#curve")
            # A short terminal's grid keeps the four essential pictures.
            assert len(shown_pictures(app)) == {"overlay": 2, "difference": 2, "grid": 4, "focus": 1}[view]


def cells(picture: Picture) -> np.ndarray:
    return picture.query_one(HalfBlockView)._cells.copy()


@pilot_test
async def test_organ_toggles_change_every_view(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        # An organ of this slice's truth: outlined in the overlays, drawn in the truth and difference maps.
        organ = int(np.flatnonzero(state.frame.result.pictures.reference.any(axis=(1, 2)))[0])
        key = str(organ + 1)
        views = app.query_one(PictureViews)
        for view, picture_id in (
            ("overlay", "#picture-overlay-clean"),
            ("difference", "#picture-difference-clean"),
            ("grid", "#image-truth"),
        ):
            if views.view != view:
                await pilot.press("v")
            await settle(pilot, app)
            picture = app.query_one(picture_id, Picture)
            shown = cells(picture)
            await pilot.press(key)
            await settle(pilot, app)
            assert views.organs[organ] is False
            assert not np.array_equal(cells(picture), shown), view
            assert "strike" in str(app.query_one("#legend").render().spans)
            await pilot.press(key)
            await settle(pilot, app)
            assert np.array_equal(cells(picture), shown), view  # back as it was


@pilot_test
async def test_zoom_and_pan_stay_in_bounds(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.click("#picture-overlay-clean")  # a click picks the picture z shows
        await pilot.press("z")
        await settle(pilot, app)
        views = app.query_one(PictureViews)
        picture = views.focus_picture()
        assert views.view == "focus" and picture.key == "overlay.clean" and app.focused is picture
        height, width = picture.scene.shape
        assert "whole slice" in picture.heading and not picture.zoomed

        for _ in range(12):  # well past the closest zoom
            await pilot.press("full_stop")
        await settle(pilot, app)
        window = picture.window()
        assert picture.zoom == pytest.approx(picture.max_zoom())
        # One image pixel per half cell: the picture drew exactly the window's pixels.
        assert picture.drawn == (window.width, window.height)
        assert "1 px per half cell" in picture.heading
        assert any("closest zoom" in message for _, message in app.notices)

        def inside() -> bool:
            w = picture.window()
            return 0 <= w.top and w.top + w.height <= height and 0 <= w.left and w.left + w.width <= width

        for key, edge in (
            ("down", lambda w: w.top + w.height == height),
            ("right", lambda w: w.left + w.width == width),
            ("up", lambda w: w.top == 0),
            ("left", lambda w: w.left == 0),
        ):
            for _ in range(30):
                await pilot.press(key)
                assert inside()
            await settle(pilot, app)
            if key in ("down", "up") or window.width < width:
                assert edge(picture.window()), key
        top = picture.window().top
        assert f"rows {top}–{top + picture.window().height - 1}" in picture.heading

        # Drag: the slice follows the pointer (up moves the window down), and stays inside.
        await pilot.mouse_down(picture, offset=(40, 30))
        await pilot.hover(picture, offset=(40, 10))
        await pilot.mouse_up(picture, offset=(40, 10))
        assert picture.window().top > top and inside()
        await pilot.mouse_down(picture, offset=(40, 2))
        await pilot.hover(picture, offset=(40, 35))
        await pilot.mouse_up(picture, offset=(40, 35))
        assert picture.window().top == 0

        # An eps step keeps the zoom; zooming out ends at the whole slice.
        zoomed = picture.window()
        await pilot.press("plus")
        await settle(pilot, app)
        assert picture.window() == zoomed
        for _ in range(12):
            await pilot.press("comma")
        assert not picture.zoomed and "whole slice" in picture.heading
        await pilot.press("z")
        assert views.view == "overlay"


@pilot_test
async def test_eps_step_repaints_only_what_changed(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await settle(pilot, app)
        views = app.query_one(PictureViews)
        clean = app.query_one("#picture-overlay-clean", Picture).query_one(HalfBlockView)
        adversarial = app.query_one("#picture-overlay-adversarial", Picture).query_one(HalfBlockView)
        misses = views.cache.misses
        await pilot.press("plus", "plus", "plus")
        await until(pilot, app, lambda: state.frame.config.eps == pytest.approx(0.012), "the eps 0.012 frame")
        # The clean picture did not change, so none of its rows was repainted; the grey layer and the
        # outlines came from the cache.
        assert clean.repainted_rows == 0
        assert adversarial.repainted_rows < adversarial.content_size.height
        assert views.cache.misses == misses
        # A new slice: new layers.
        await pilot.press("j")
        await settle(pilot, app)
        assert views.cache.misses > misses


@pilot_test
async def test_views_in_the_palette_and_the_help(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("ctrl+p", *"view grid")
        await until(pilot, app, lambda: app.screen.query_one(CommandList).option_count, "palette hits")
        assert "View: Grid" in str(app.screen.query_one(CommandList).get_option_at_index(0).prompt)
        await pilot.press("enter")
        await settle(pilot, app)
        assert app.query_one(PictureViews).view == "grid"
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help-keys").render())
        for words in ("Next view", "focused picture alone", "Zoom in", "Show / hide the stomach", "pan"):
            assert words in text
