"""The explorer's transfer view and universal perturbations, under Pilot with the bundled checkpoints:
"score on" another model (the attack crafted on the current checkpoint, the masks and scores another's)
and a saved universal perturbation whose scale steps with eps. What the app shows is checked against
core called directly (``core.evaluation.transfer.transfer``'s cell, ``core.evaluation``)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tui_pilot import first_frame, make_app, pilot_test, until

from core.attacks.universal import UniversalDelta, load_delta, save_delta
from core.data.gitract import load_slice
from core.evaluation.scoring import attack_slice, sweep
from core.evaluation.transfer import transfer
from core.models.checkpoints import load_checkpoint
from core.models.loaded import LoadedModel
from core.paths import bundled_checkpoint_dirs, demo_checkpoint
from segadv_tui.catalog import scan
from segadv_tui.frames import CURVE_EPS
from segadv_tui.screens.explorer import WorkerHooks
from segadv_tui.widgets.checkpoints import CheckpointList

FPN = "demo_small_fpn"


@pytest.fixture(scope="module")
def bundled():
    """The checkpoints and deltas found in the bundled folder."""
    return scan(bundled_checkpoint_dirs())


@pytest.fixture(scope="module")
def fpn_path(bundled) -> Path:
    return next(entry.path for entry in bundled.checkpoints if entry.path.stem == FPN)


@pytest.fixture(scope="module")
def bundled_delta(bundled) -> Path:
    (delta,) = bundled.deltas
    return delta.path


def inputs(record, img_size: int = 128):
    image, masks = load_slice(record, img_size)
    return torch.from_numpy(image)[None, None], torch.from_numpy(masks.astype(bool))[None]


def same_scores(shown, expected) -> None:
    np.testing.assert_array_equal(shown.dsc_clean, expected.dsc_clean)
    np.testing.assert_array_equal(shown.dsc_adv, expected.dsc_adv)
    assert shown.linf == expected.linf


def test_the_scan_tells_checkpoints_from_universal_perturbations(bundled, bundled_delta):
    checkpoints, deltas = bundled.checkpoints, bundled.deltas
    assert bundled_delta.name not in {entry.path.name for entry in checkpoints}
    assert all(entry.meta is not None for entry in checkpoints)
    (delta,) = deltas
    assert (delta.eps, delta.organs, delta.img_size) == (0.03, ("stomach",), 128)
    assert delta.summary == "erases stomach · eps 0.030 · 128px · made on demo_small"


@pilot_test
async def test_score_on_another_model_is_the_transfer_cell_and_w_cycles_back_to_white_box(tiny_demo, fpn_path):
    app = make_app(tiny_demo, demo_checkpoint())
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        record = state.source
        attacked, _ = load_checkpoint(demo_checkpoint())
        scoring, _ = load_checkpoint(fpn_path)
        config = state.attack
        # Reference: the (demo_small, demo_small_fpn) cell of the transfer matrix on this one slice.
        matrix = transfer(
            [LoadedModel("a", attacked), LoadedModel("b", scoring)], [record], 128, config, ensembles=False
        )
        white_box, transferred = matrix.rows["a", "a"][0], matrix.rows["a", "b"][0]

        explorer.score_on(next(e for e in app.query_one(CheckpointList).entries if e.path == fpn_path))
        await until(
            pilot,
            app,
            lambda: (
                state.frame.scored_on == str(fpn_path)
                and state.curve is not None
                and state.curve.scored_on == str(fpn_path)
            ),
            "a frame and curve scored on the FPN",
        )
        same_scores(state.frame.result, transferred)
        assert state.frame.checkpoint == str(demo_checkpoint())  # still crafted on demo_small
        assert "demo_small→demo_small_fpn" in str(app.query_one("#summary").render())  # the long line's too long
        assert app.query_one("#scores").heading == "Scores on demo_small_fpn"
        assert app.query_one("#attack-scored").value == str(fpn_path)
        from segadv_tui.render.tables import scores_table

        assert scores_table(state.frame).title.endswith("crafted on demo_small, scored on demo_small_fpn")
        image, truth = inputs(record)
        expected_curve = sweep(attacked, image, truth, list(CURVE_EPS), config, truth=truth, scored_on=scoring)
        assert state.curve.mean_dsc == tuple(results[0].mean_adv for results in expected_curve)

        # eps steps stay scored on the FPN: one gradient of demo_small, the FPN's forward pass
        await pilot.press("plus")
        await until(pilot, app, lambda: state.frame.config.eps == pytest.approx(0.010), "the eps 0.010 frame")
        (expected,) = attack_slice(attacked, image, truth, config.with_eps(0.010), ids=[record.id], scored_on=scoring)
        same_scores(state.frame.result, expected)
        await pilot.press("minus")
        await until(pilot, app, lambda: state.frame.config.eps == pytest.approx(0.009), "back at eps 0.009")

        # w: the next checkpoints of the list, then the attacked model again (white box)
        seen = []
        for _ in range(len(app.query_one(CheckpointList).entries)):
            await pilot.press("w")
            await until(
                pilot,
                app,
                lambda: state.frame.scored_on == (None if state.scored_on is None else str(state.scored_on)),
                "the frame of the next scoring model",
            )
            seen.append(state.scored_on)
            if state.scored_on is None:
                break
        assert seen[-1] is None and fpn_path not in seen[:1]
        same_scores(state.frame.result, white_box)
        assert app.query_one("#scores").heading == "Scores"


@pilot_test
async def test_attacking_the_model_scored_on_is_white_box_again(tiny_demo, fpn_path):
    app = make_app(tiny_demo, demo_checkpoint())
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        entries = app.query_one(CheckpointList).entries
        fpn = next(e for e in entries if e.path == fpn_path)
        explorer.score_on(fpn)
        await until(pilot, app, lambda: state.frame.scored_on == str(fpn_path), "a frame scored on the FPN")
        assert "◆ demo_small_fpn" in str(
            app.query_one(CheckpointList).get_option_at_index(entries.index(fpn)).prompt.renderables[0]
        )
        explorer.load_checkpoint(fpn)
        await until(pilot, app, lambda: state.frame.checkpoint == str(fpn_path), "a frame attacking the FPN")
        assert state.scored_on is None and state.frame.scored_on is None


@pilot_test
async def test_a_universal_perturbation_opens_at_its_eps_and_eps_scales_it(tiny_demo, bundled_delta):
    app = make_app(tiny_demo, demo_checkpoint(), deltas=[bundled_delta])
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await until(
            pilot,
            app,
            lambda: state.frame is not None and state.frame.config.method == "universal",
            "the universal perturbation's frame",
        )
        config = state.frame.config
        assert (config.delta, config.eps) == (str(bundled_delta), 0.03)
        model, _ = load_checkpoint(demo_checkpoint())
        image, truth = inputs(state.source)
        (expected,) = attack_slice(model, image, truth, config, ids=[state.source.id])
        same_scores(state.frame.result, expected)
        assert state.frame.result.linf == pytest.approx(float(load_delta(bundled_delta).delta.abs().max()), abs=1e-6)
        for _ in range(5):
            await pilot.press("left_square_bracket")  # eps - 0.005, five times: the delta at a sixth
        await until(pilot, app, lambda: state.frame.config.eps == pytest.approx(0.005), "the eps 0.005 frame")
        assert state.frame.result.linf <= 0.005 + 1e-6
        (expected,) = attack_slice(model, image, truth, config.with_eps(0.005), ids=[state.source.id])
        same_scores(state.frame.result, expected)
        assert "eps 0.005 (×0.17 of 0.030) · Universal" in str(app.query_one("#summary").render())
        assert app.query_one("#attack-delta").value == str(bundled_delta)

        await pilot.press("m")  # away from universal: the delta no longer applies
        await until(pilot, app, lambda: state.frame.config.method != "universal", "another method's frame")
        assert state.frame.config.delta is None and app.query_one("#attack-delta").disabled


@pilot_test
async def test_u_finds_the_bundled_perturbation_and_a_wrong_size_one_is_a_notification(
    tiny_demo, bundled_delta, tmp_path
):
    small = save_delta(tmp_path / "small.safetensors", UniversalDelta(torch.zeros(64, 64), 0.02, ("stomach",)))
    app = make_app(tiny_demo, demo_checkpoint(), checkpoint_dirs=[tmp_path])
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        assert state.frame.config.method == "fgsm"  # the perturbations found are offered, not applied
        assert {delta.path.name for delta in state.catalog.deltas} == {bundled_delta.name, small.name}
        for _ in range(2):  # u offers only the deltas of the model's input size
            await pilot.press("u")
            await until(
                pilot, app, lambda: state.frame.config.method == "universal", "the bundled perturbation's frame"
            )
            assert (state.frame.config.delta, state.frame.config.eps) == (str(bundled_delta), 0.03)
        select = app.query_one("#attack-delta")
        select.value = ""  # "none" while the method needs a delta: the select comes back to the current one
        await until(pilot, app, lambda: select.value == str(bundled_delta), "the select back on the delta")
        assert state.attack.delta == str(bundled_delta)
        select.value = str(small)  # the select lists every delta found: this one is 64 x 64
        await until(pilot, app, lambda: any("64 x 64" in text for _, text in app.notices), "the size notification")
        (text,) = [text for severity, text in app.notices if "64 x 64" in text and severity == "error"]
        assert "small.safetensors" in text and "128 x 128" in text
        assert state.attack.delta == str(small) and state.frame.config.delta == str(
            bundled_delta
        )  # the last good frame
        assert app.is_running


@pilot_test
async def test_a_choice_made_while_a_model_loads_wins_over_that_model(tiny_demo, fpn_path):
    app = make_app(tiny_demo, demo_checkpoint())
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        fpn = next(e for e in app.query_one(CheckpointList).entries if e.path == fpn_path)
        explorer.score_on(fpn)  # starts loading the FPN
        explorer.score_on(None)  # and back to white box before it has loaded
        await until(pilot, app, lambda: fpn_path in state.loaded, "the FPN loaded")
        await until(pilot, app, lambda: state.frame.scored_on is None, "a white-box frame")
        assert state.scored_on is None and app.query_one("#attack-scored").value == ""


@pilot_test
async def test_live_steps_are_scored_on_the_other_model(tiny_demo, fpn_path):
    lives = []
    app = make_app(tiny_demo, demo_checkpoint(), hooks=WorkerHooks(on_live=lives.append, live_interval=0.0))
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        explorer.score_on(next(e for e in app.query_one(CheckpointList).entries if e.path == fpn_path))
        await until(pilot, app, lambda: state.frame.scored_on == str(fpn_path), "a frame scored on the FPN")
        explorer.set_attack(state.attack.replace(method="pgd", steps=3, eps=0.03))
        await until(pilot, app, lambda: state.frame.config.method == "pgd", "the PGD frame")
        scoring, _ = load_checkpoint(fpn_path)
        attacked, _ = load_checkpoint(demo_checkpoint())
        live = [step for step in lives if step.config.method == "pgd"]
        assert [step.step for step in live] == [0, 1, 2]  # the start point and two steps; the frame has the last
        from core.models.inference import predict

        for step in live:
            iterate = torch.from_numpy(step.result.pictures.adversarial)[None, None]
            np.testing.assert_array_equal(
                step.result.pictures.adversarial_prediction, predict(scoring, iterate)[0].numpy()
            )
        assert any(
            not np.array_equal(
                step.result.pictures.adversarial_prediction,
                predict(attacked, torch.from_numpy(step.result.pictures.adversarial)[None, None])[0].numpy(),
            )
            for step in live
        )
        same_scores(
            state.frame.result,
            attack_slice(attacked, *inputs(state.source), state.frame.config, ids=[state.source.id], scored_on=scoring)[
                0
            ],
        )


def test_a_bad_delta_is_one_line_before_start(tmp_path):
    from typer.testing import CliRunner

    from segadv_tui.launch import command

    (tmp_path / "bad.safetensors").write_bytes(b"not a safetensors file")
    for arguments, expected in (
        (["--delta", str(tmp_path / "none.safetensors")], "does not exist"),
        (["--delta", str(tmp_path / "bad.safetensors")], "bad.safetensors"),
        (["--delta", str(demo_checkpoint())], "not a segadv universal perturbation"),
    ):
        result = CliRunner().invoke(command, arguments)
        output = " ".join(result.output.split())
        assert result.exit_code == 2, (arguments, output)
        assert expected in output and "Traceback" not in output


def test_a_delta_given_as_a_checkpoint_says_what_it_is(bundled_delta):
    from core.models.checkpoints import CheckpointError, read_checkpoint_meta

    with pytest.raises(CheckpointError, match="a universal perturbation .* --method universal --delta"):
        read_checkpoint_meta(bundled_delta)
