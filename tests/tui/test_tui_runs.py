"""The explorer's Table II and the run index: a Table II that ``segadv table`` computed opens at once in the
app (served from the index under the same key, the same numbers), r computes it again, and each run is
recorded. The real app under Pilot, the real CLI in-process, a real SQLite index."""

from __future__ import annotations

import json

import pytest
from tui_pilot import first_frame, make_app, pilot_test, until

from core.names import PAPER_LOSS_NAMES
from core.paths import demo_checkpoint
from core.runs.index import RunIndex

SIZE = (160, 50)


@pytest.fixture(scope="module")
def checkpoint():
    return demo_checkpoint()


@pilot_test
async def test_a_table_ii_the_cli_computed_opens_from_the_index_and_r_computes(tiny_demo, checkpoint, run, run_index):
    losses = ",".join(PAPER_LOSS_NAMES)  # the explorer's Table II columns
    made = run("table", "-c", checkpoint, "--data", tiny_demo, "--limit", 2, "--losses", losses, "--json", "t.json")
    assert made.exit_code == 0, made.output
    with open("t.json") as handle:  # the run fixture works in its own folder
        cli_row = json.load(handle)["rows"][0]

    app = make_app(tiny_demo, checkpoint, limit=2)
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        await pilot.press("T")
        screen = app.screen
        await until(pilot, app, lambda: screen.table is not None, "the Table II served")
        status = str(screen.query_one("#table2-status").render())
        assert "from the run index (run 1;" in status
        (row,) = screen.table.rows
        assert row[2] == f"{cli_row['dsc_clean']:.4f}"
        assert [cell.split()[0] for cell in row[3:]] == [f"{cli_row['dsc_adv'][loss]:.4f}" for loss in screen.losses]

        served = screen.table
        await pilot.press("r")
        await until(pilot, app, lambda: screen.table is not served, "the Table II computed again")
        assert "run index" not in str(screen.query_one("#table2-status").render())
        assert screen.table.rows == served.rows
        await pilot.press("escape")

    with RunIndex(run_index) as index:
        records = index.records()
        served_rows = index.get(2, with_result=True).result_json["rows"]
    assert [row["label"] for row in served_rows] == ["demo_small"]  # as the explorer names it, not the CLI
    assert [(r.command, r.status, r.cached_from) for r in records] == [
        ("table", "done", None),
        ("table", "done", 1),
        ("table", "done", None),
    ]
    assert records[0].cache_key == records[1].cache_key == records[2].cache_key
    assert records[1].argv[0] == "segadv-tui"
