"""What a new user meets first, under Pilot with the real app: a checkpoint, image or data set that cannot
be opened shows why and what to do where the pictures would be (and stays until something else is
picked); the explorer opens on a test slice with every organ present; a score the empty-organ rule
decided is marked, with its footnote under the table and in the help.
"""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.data.gitract import open_dataset
from core.organs import ORGANS
from core.paths import demo_checkpoint
from segadv_tui.state import opening_slice
from segadv_tui.widgets.images import PictureViews
from segadv_tui.widgets.scores import ScoresTable

SIZE = (160, 48)


def failure(app) -> str | None:
    return app.query_one(PictureViews).failure


def summary(app) -> str:
    return str(app.query_one("#summary").render())


async def assert_failure_stays(pilot, app, *parts: str) -> str:
    """The failure names ``parts`` in place of the pictures, and it is still there once everything has run
    (no loading indicator or "loading" line left for ever)."""
    await until(pilot, app, lambda: failure(app) is not None, "a failure in place of the pictures")
    await settle(pilot, app)
    text = failure(app)
    assert text is not None and all(part in text for part in parts), text
    views = app.query_one(PictureViews)
    assert views.query_one("#failure").display and not views.loading
    assert "loading" not in summary(app)
    return text


@pilot_test
async def test_a_bad_checkpoint_shows_why_and_what_to_do_until_another_is_picked(tmp_path, tiny_demo):
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    app = make_app(tiny_demo, broken)
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        text = await assert_failure_stays(pilot, app, str(broken), "Pick another checkpoint", "--checkpoint")
        assert "no checkpoint" in summary(app)
        assert any(str(broken) in message for severity, message in app.notices if severity == "error")

        listing = app.query_one("#checkpoints")
        listing.focus()
        listing.highlighted = [entry.path.stem for entry in listing.entries].index("demo_small")
        await pilot.press("enter")
        await first_frame(pilot, app)
        assert failure(app) is None and app.query_one(PictureViews).panels is not None
        assert Path(state.frame.checkpoint).stem == "demo_small" and "--model" not in text


@pilot_test
async def test_foreign_weights_get_advice_that_works_in_the_explorer(tmp_path, tiny_demo):
    """segadv-tui takes no --model: the way in is segadv import-checkpoint, then --checkpoint."""
    weights = tmp_path / "weights.pt"
    weights.write_bytes(b"PK\x03\x04 not really a torch file")
    app = make_app(tiny_demo, weights)
    async with app.run_test(size=SIZE) as pilot:
        text = await assert_failure_stays(pilot, app, str(weights), f"segadv import-checkpoint {weights} --model NAME")
        assert "(--model" not in text and "pass --model" not in text


@pilot_test
async def test_a_slice_that_cannot_be_read_shows_why_until_another_slice_is_picked(tmp_path, tiny_demo):
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    opening = opening_slice(open_dataset(data).records)
    opening.path.write_bytes(b"\x89PNG broken")
    app = make_app(data, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await assert_failure_stays(pilot, app, opening.path.name, "Pick another slice")
        assert app.query_one(ScoresTable).cell_text("mean", "clean") == "–"

        await pilot.press("j")
        await first_frame(pilot, app)
        assert failure(app) is None and state.frame.slice_id != opening.id


@pilot_test
async def test_data_that_cannot_be_opened_shows_why_in_place_of_the_pictures(tmp_path):
    data = tmp_path / "data"
    (data / "train").mkdir(parents=True)
    (data / "train.csv").write_text("id,foo\n1,2\n")
    app = make_app(data, demo_checkpoint())
    explorer = app.explorer
    async with app.run_test(size=SIZE) as pilot:
        await assert_failure_stays(pilot, app, str(data / "train.csv"), "--data DIR")
        await until(pilot, app, lambda: explorer.attacker is not None, "the checkpoint loaded")
        assert failure(app) is not None and "no slice" in summary(app) and "demo_small" in summary(app)


def give_every_organ(data: Path, slice_id: str, donor: str) -> None:
    """Fill the organs ``slice_id`` lacks with ``donor``'s masks (same case and day: same image size)."""
    path = data / "train.csv"
    with path.open(newline="") as file:
        rows = list(csv.DictReader(file))
    masks = {row["class"]: row["segmentation"] for row in rows if row["id"] == donor}
    for row in rows:
        if row["id"] == slice_id and not row["segmentation"]:
            row["segmentation"] = masks[row["class"]]
    with path.open("w", newline="") as file:
        writer = csv.DictWriter(file, fieldnames=["id", "class", "segmentation"])
        writer.writeheader()
        writer.writerows(rows)


@pilot_test
async def test_the_explorer_opens_on_a_test_slice_with_every_organ(tmp_path, tiny_demo):
    """The tiny demo's test split has slices with two organs; give a later one all three: it opens there,
    and its scores carry no mark and no footnote."""
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    _, test = open_dataset(data).split()
    two = [record for record in test if sum(map(bool, record.rles)) == 2]
    chosen = two[-1]
    lacking = [i for i, rle in enumerate(chosen.rles) if not rle]
    give_every_organ(
        data,
        chosen.id,
        donor=next(r.id for r in test if r.case_day == chosen.case_day and all(r.rles[i] for i in lacking)),
    )
    assert all(open_dataset(data).by_id(chosen.id).rles) and not all(two[0].rles)
    app = make_app(data, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        assert state.source.id == state.frame.slice_id == chosen.id
        table = app.query_one(ScoresTable)
        assert not any("*" in table.cell_text(row, column) for row in ORGANS for column in ("clean", "adv", "as"))
        assert str(app.query_one("#scores-live").render()) == ""


@pilot_test
async def test_a_score_the_empty_organ_rule_decided_is_marked_and_explained(tiny_demo):
    """The tiny demo's test split has no slice with all three organs: the app opens on its first with the
    most (two); the absent organ's DSC cells carry the mark, the line under the table says what it means,
    and so does the help."""
    dataset = open_dataset(tiny_demo)
    _, test = dataset.split()
    most = max(sum(map(bool, record.rles)) for record in test)
    expected = next(record for record in test if sum(map(bool, record.rles)) == most)
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        assert state.frame.slice_id == expected.id and most == 2
        table = app.query_one(ScoresTable)
        for organ, rle in zip(ORGANS, expected.rles):
            for column in ("clean", "adv"):
                assert table.cell_text(organ, column).endswith("*") == (not rle), (organ, column)
            assert not table.cell_text(organ, "as").endswith("*")
        assert not table.cell_text("mean", "clean").endswith("*")
        assert str(app.query_one("#scores-live").render()) == "* not in the truth: 1 if none predicted, else 0"

        await pilot.press("question_mark")
        await settle(pilot, app)
        help_line = str(app.screen.query_one("#help-empty-organs").render())
        assert "marked *" in help_line and "absent from the truth" in help_line and "empty counts 1" in help_line
