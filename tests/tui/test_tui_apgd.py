"""APGD in the explorer: a registry entry reaches the method list, runs in the app's worker with every
step reported to the live view, and shows core's own scores (the demo checkpoint, the tiny demo data)."""

from __future__ import annotations

import numpy as np
from tui_pilot import first_frame, make_app, pilot_test, settle

from core.attacks.config import AttackConfig
from core.data.gitract import open_dataset, with_organs
from core.evaluation.scoring import attack_slice
from core.models.checkpoints import load_checkpoint
from core.paths import demo_checkpoint
from segadv_tui.attacker import SliceAttacker
from segadv_tui.frames import load_slice_data
from segadv_tui.render.tables import format_score
from segadv_tui.widgets.scores import ScoresTable

SIZE = (160, 50)


def _core_result(model, data, config):
    import torch

    image = torch.as_tensor(data.image, dtype=torch.float32)[None, None]
    truth = torch.as_tensor(np.asarray(data.truth, dtype=bool), dtype=torch.float32)[None]
    return attack_slice(model, image, truth, config, ids=[data.id])[0]


def test_explorer_reports_every_apgd_step_and_core_scores(tiny_demo):
    model, meta = load_checkpoint(demo_checkpoint())
    record = with_organs(open_dataset(tiny_demo).records)[0]
    data = load_slice_data(record, meta["img_size"])
    config = AttackConfig.for_method("apgd", steps=8, radii=(2, 1.5, 1))
    live = []
    frame = SliceAttacker(model, "demo").compute(data, config, on_live=live.append, live_interval=0.0)
    assert [(step.step, step.steps) for step in live] == [(k, 8) for k in range(8)]  # each step's start point
    assert len(live[-1].mean_dsc) == 8
    expected = _core_result(model, data, config)
    np.testing.assert_array_equal(frame.result.dsc_adv, expected.dsc_adv)


async def _settle_past_cancelled(pilot, app) -> None:
    """``settle``, where a superseded frame worker may end cancelled (the helper reports that as an error)."""
    from textual.worker import WorkerCancelled

    for _ in range(10):
        try:
            return await settle(pilot, app)
        except WorkerCancelled:
            await pilot.pause()
    raise AssertionError("workers kept being cancelled")


@pilot_test
async def test_apgd_is_in_the_method_cycle_and_shows_core_scores(tiny_demo):
    checkpoint = demo_checkpoint()
    model, meta = load_checkpoint(checkpoint)
    app = make_app(tiny_demo, checkpoint)
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        await pilot.press("m", "m", "m")  # fgsm -> bim -> pgd -> apgd
        assert state.attack.method == "apgd" and state.attack.steps == 100  # PGD's 10 became APGD's 100
        assert state.attack.best_iterate
        # The app has no steps key; fewer steps keep the test short (the 100-step request is dropped).
        explorer.set_attack(state.attack.replace(steps=12))
        await _settle_past_cancelled(pilot, app)
        assert (state.frame.config.method, state.frame.config.steps) == ("apgd", 12)
        assert app.query_one("#attack-method").value == "apgd"
        data = load_slice_data(state.source, meta["img_size"])
        expected = _core_result(model, data, state.attack)
        table = app.query_one(ScoresTable)
        assert table.cell_text("mean", "adv") == format_score(expected.mean_adv)
        assert table.cell_text("mean", "clean") == format_score(expected.mean_clean)
