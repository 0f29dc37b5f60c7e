"""The Scores panel's split of the mean DSC into labels present and absent in the truth (``label_split``),
beyond the panel's title: in the exported and copied scores table and the exported figure's caption, in
the title's words; and in a transfer's title ("Scores on NAME"), whole at 160 x 48 and split first at
80 x 24. Under Pilot with the real app, the bundled checkpoints and the tiny demo data; the split is
computed from core's ``label_split`` of the frame shown, the title read from the drawn border."""

from __future__ import annotations

from dataclasses import replace

from textual.geometry import Region
from tui_pilot import first_frame, make_app, pilot_test, until

from core.evaluation.label_split import label_split
from core.paths import demo_checkpoint
from segadv_tui.render.tables import split_line
from segadv_tui.widgets.scores import ScoresPanel, scores_title


def expected_split(result) -> str:
    """The split in the Scores title's words (``split_line``, whose wording the title's tests check), from
    core's label_split of the frame: what every export and copy must say too."""
    return split_line(label_split([result]))


def test_the_split_s_words_are_core_s_numbers():
    from core.evaluation.label_split import LabelSplit

    split = LabelSplit(
        damage_clean=0.8721,
        damage_adv=0.75,
        present_pairs=2,
        hallucination_clean=0.0,
        hallucination_adv=1.0,
        absent_pairs=1,
    )
    assert split_line(split) == "present 0.872→0.750 · halluc. 0/1→1/1"
    assert split_line(replace(split, absent_pairs=0)) == "present 0.872→0.750 · none absent"
    assert split_line(None) == "" and split_line(replace(split, present_pairs=0, absent_pairs=0)) == ""


def drawn_top_line(widget) -> str:
    """The text of ``widget``'s first row as drawn (its top border and title, cut as the terminal cuts)."""
    (strip,) = widget.render_lines(Region(0, 0, widget.outer_size.width, 1))
    return strip.text


async def to_a_slice_with_an_absent_label(pilot, app) -> None:
    state = app.explorer.state
    for _ in range(6):
        if label_split([state.frame.result]).absent_pairs:
            return
        await pilot.press("j")
        await until(pilot, app, lambda: not state.live and state.frame.slice_id == state.source.id, "the next slice")
    raise AssertionError("no slice of the tiny demo lacks a label")


@pilot_test
async def test_the_exported_and_copied_scores_carry_the_split(tiny_demo, tmp_path):
    app = make_app(tiny_demo, demo_checkpoint(), export_dir=tmp_path)
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await to_a_slice_with_an_absent_label(pilot, app)
        split = expected_split(state.frame.result)
        assert "halluc." in split and app.query_one(ScoresPanel).border_title.endswith(split)
        await pilot.press("y")  # the clipboard's Markdown: the table, then the split as its caption
        await until(pilot, app, lambda: app.clipboard, "the copy")
        copied = app.clipboard.splitlines()
        assert copied[-1] == split and copied[-2] == "" and copied[-3].startswith("| Mean |")
        await pilot.press("x")
        await until(pilot, app, lambda: list(tmp_path.glob("*_scores.md")), "the exported table")
        (markdown,) = tmp_path.glob("*_scores.md")
        assert markdown.read_text(encoding="utf-8") == app.clipboard
        # e's figure: in the words of the title, the arrow (which Pillow's bundled font lacks) spelled out
        assert state.figure_caption(state.frame).endswith(" · " + split.replace("→", " to "))


@pilot_test
async def test_a_transfer_s_title_fits_at_160_by_48(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await to_a_slice_with_an_absent_label(pilot, app)
        await pilot.press("w")  # score on the next checkpoint of the list
        await until(pilot, app, lambda: state.frame.scored_on is not None, "a frame scored on another model")
        name = state.scored_on.stem
        title = f"Scores on {name} · {expected_split(state.frame.result)}"
        assert app.query_one(ScoresPanel).border_title == title
        assert title in drawn_top_line(app.query_one(ScoresPanel))  # whole, no "…"


@pilot_test
async def test_a_transfer_s_title_keeps_the_split_at_80_by_24(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(80, 24)) as pilot:
        await first_frame(pilot, app)
        await to_a_slice_with_an_absent_label(pilot, app)
        await pilot.press("w")
        await until(pilot, app, lambda: state.frame.scored_on is not None, "a frame scored on another model")
        drawn = drawn_top_line(app.query_one(ScoresPanel))
        assert drawn.startswith(f"─{expected_split(state.frame.result)} · on ")  # the name is what is cut
        app.explorer.score_on(None)  # the Score on select's "none": the attacked model, the title as it was
        await until(pilot, app, lambda: state.frame.scored_on is None, "white box again")
        assert app.query_one(ScoresPanel).border_title == f"Scores · {expected_split(state.frame.result)}"


def test_the_title_puts_the_split_before_a_name_too_long_for_the_room():
    split = "present 0.541→0.540 · none absent"
    assert scores_title(None, "") == "Scores" and scores_title("b", "") == "Scores on b"
    assert scores_title(None, split, 10) == f"Scores · {split}"  # white box: as it always was
    assert scores_title("demo_small_at", split, 70) == f"Scores on demo_small_at · {split}"
    assert scores_title("demo_small_at", split, 47) == f"{split} · on demo_small_at"
    assert scores_title("demo_small_at", split) == f"Scores on demo_small_at · {split}"  # before a layout
