"""The explorer follows the label set of the data: on a 2-label data set (tests/label_sets.py) its legend,
keys, scores, erase choices, palette and help name those labels; a checkpoint of other labels is refused."""

from __future__ import annotations

import pytest
import torch
from label_sets import LIVER_TUMOUR, SIZE, open_labelled, write_labelled_data
from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.labels import UW_MADISON
from core.models.checkpoints import save_checkpoint
from core.models.registry import build_model
from core.paths import demo_checkpoint
from segadv_tui.render.tables import format_score
from segadv_tui.widgets.images import PictureViews
from segadv_tui.widgets.scores import ScoresTable


@pytest.fixture(scope="module")
def labelled(tmp_path_factory):
    return write_labelled_data(tmp_path_factory.mktemp("labelled") / "liver")


@pytest.fixture(scope="module")
def two_label_checkpoint(tmp_path_factory):
    torch.manual_seed(0)
    model = build_model("small", labels=LIVER_TUMOUR).eval()
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "liver_small.safetensors", model, img_size=SIZE)


def legend_text(app) -> str:
    return app.query_one("#legend").render().plain


def test_two_labels_in_legend_keys_scores_attack_panel_and_help(monkeypatch, labelled, two_label_checkpoint):
    open_labelled(monkeypatch)

    @pilot_test
    async def scenario():
        app = make_app(labelled, two_label_checkpoint)
        state = app.explorer.state
        async with app.run_test(size=(160, 48)) as pilot:
            await first_frame(pilot, app)
            assert state.labels == LIVER_TUMOUR and state.attack.labels == LIVER_TUMOUR
            legend = legend_text(app)
            assert "1 ■ liver" in legend and "2 ■ tumour" in legend and "3 " not in legend
            assert "bowel" not in legend and "stomach" not in legend

            views = app.query_one(PictureViews)
            assert views.organs == (True, True)
            await pilot.press("2")
            await settle(pilot, app)
            assert views.organs == (True, False) and "□ tumour" in legend_text(app)
            await pilot.press("3")  # no third label: nothing happens
            await settle(pilot, app)
            assert views.organs == (True, False)
            await pilot.press("2")
            await settle(pilot, app)

            # The scores: a row per label, each the frame's DSC of that label.
            table = app.query_one(ScoresTable)
            assert [str(table.get_row_at(i)[0]) for i in range(table.row_count)] == ["Liver", "Tumour", "Mean"]
            assert str(table.ordered_columns[0].label) == "Label"
            result = state.frame.result
            for index, name in enumerate(LIVER_TUMOUR.names):
                shown = table.cell_text(name, "clean").rstrip("*").strip()
                assert shown == format_score(result.dsc_clean[index]).strip()

            select = app.query_one("#attack-organs")
            assert [value for _, value in select._options] == ["liver", "tumour", "liver,tumour"]
            app.explorer.set_attack(state.attack.replace(method="erase"))
            await settle(pilot, app)
            assert state.frame.config.organs == ("tumour",) and select.value == "tumour"

            await pilot.press("question_mark")
            await settle(pilot, app)
            keys = str(app.screen.query_one("#help-keys").render())
            assert "Labels" in keys and "Show / hide the tumour in every picture" in keys and "stomach" not in keys
            assert "Labels (1 2): liver, tumour" in str(app.screen.query_one("#help-usage").render())
            await pilot.press("escape")

    scenario()


def test_a_checkpoint_of_other_labels_is_refused_naming_both(monkeypatch, labelled):
    open_labelled(monkeypatch)

    @pilot_test
    async def scenario():
        app = make_app(labelled, demo_checkpoint())  # UW-Madison's organs on liver data
        state = app.explorer.state
        async with app.run_test(size=(160, 48)) as pilot:
            await until(pilot, app, lambda: any(s == "error" for s, _ in app.notices), "a refusal")
            await settle(pilot, app)
            (message,) = [text for severity, text in app.notices if severity == "error"]
            assert UW_MADISON.describe() in message and LIVER_TUMOUR.describe() in message
            assert "\n" not in message
            assert state.attacked is None and state.frame is None and state.loaded == {}
            assert "Cannot open the checkpoint" in str(app.query_one("#failure").border_title)

    scenario()
