"""The explorer with ``--metrics``: HD95 and NSD columns in the Scores table, in mm from the slice's own
spacing; and a checkpoint's training curves in the Checkpoints panel where its history CSV is beside it."""

from __future__ import annotations

import shutil

import numpy as np
from tui_pilot import first_frame, make_app, pilot_test

from core.files import CsvLog
from core.metrics import hd95_per_organ, nsd_per_organ, slice_spacing
from core.organs import ORGANS
from core.paths import demo_checkpoint
from core.training.history import history_path_for
from segadv_tui.render.tables import number
from segadv_tui.widgets.checkpoints import CheckpointList, training_curves
from segadv_tui.widgets.scores import ScoresTable

SIZE = (160, 48)


@pilot_test
async def test_boundary_metrics_are_columns_when_asked(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint(), hausdorff=True, nsd_tolerance=3.0)
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        table = app.query_one(ScoresTable)
        assert [str(column.label).strip() for column in table.columns.values()][4:] == [
            "HD95 cln",
            "HD95 adv",
            "NSD cln",
            "NSD adv",
        ]
        result, pictures = state.frame.result, state.frame.result.pictures
        # Recomputed from the frame's own masks and the record's spacing at the model's size.
        spacing = slice_spacing([state.source], state.attacked.img_size)
        clean, truth = pictures.clean_prediction[None], pictures.reference[None]
        np.testing.assert_allclose(result.hd95_clean, hd95_per_organ(clean, truth, spacing)[0])
        np.testing.assert_allclose(result.nsd_clean, nsd_per_organ(clean, truth, 3.0, spacing)[0])
        for index, organ in enumerate(ORGANS):
            assert table.cell_text(organ, "hd95_adv") == number(result.hd95_adv[index], 1)
            assert table.cell_text(organ, "nsd_clean") == number(result.nsd_clean[index], 3)
        assert table.cell_text("mean", "nsd_adv") == number(np.nanmean(result.nsd_adv), 3)


@pilot_test
async def test_without_metrics_the_table_is_as_before(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        assert list(app.query_one(ScoresTable).columns) == ["organ", "clean", "adv", "as"]
        assert app.explorer.state.frame.result.hd95_clean is None


@pilot_test
async def test_a_checkpoint_with_a_history_shows_its_curves(tiny_demo, tmp_path):
    folder = tmp_path / "runs"
    folder.mkdir()
    trained = shutil.copy(demo_checkpoint(), folder / "trained.safetensors")
    log = CsvLog(history_path_for(trained))
    for epoch, loss, dsc in ((1, 0.9, 0.2), (2, 0.6, 0.5), (3, 0.4, 0.75)):
        log.write({"epoch": epoch, "train_loss": loss, "val_dsc_mean": dsc})
    log.close()
    app = make_app(tiny_demo, demo_checkpoint(), checkpoint_dirs=[folder])
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        listing = app.query_one(CheckpointList)
        entries = {entry.path.name: entry for entry in listing.entries}
        assert [row["val_dsc_mean"] for row in entries["trained.safetensors"].history] == [0.2, 0.5, 0.75]
        assert entries["demo_small.safetensors"].history is None  # the bundled ones have none
        line = training_curves(entries["trained.safetensors"].history)
        assert line == "3 ep · loss █▄▁ 0.400 DSC ▁▅█ 0.750"
        index = list(entries).index("trained.safetensors")
        shown = " ".join(str(part) for part in listing.get_option_at_index(index).prompt.renderables)
        assert line in shown
