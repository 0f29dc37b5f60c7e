"""The explorer beyond the L-inf attacks, under Pilot with the real app, the bundled demo checkpoint and the
tiny demo data: the corrupt method (the eps keys step its severity), the L2 threat model, the present /
absent split of the scores and the certified-pixel picture.

Every number is checked against core computed directly on the same slice (``corrupt`` with the slice's
seed, ``label_split``, ``certify_slice``), not against the explorer's own copies."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from textual.command import CommandList
from textual.widgets import Select
from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.attacks.iterative import slice_seed
from core.evaluation.certify import certified_dice, certify_slice, label_masks
from core.evaluation.corruptions import corrupt
from core.evaluation.label_split import label_split
from core.paths import demo_checkpoint
from segadv_tui.render.tables import format_score
from segadv_tui.screens.certify import ABSTAIN_COLOUR, CertifyScreen
from segadv_tui.widgets.attack import EpsInput
from segadv_tui.widgets.picture import Picture
from segadv_tui.widgets.scores import ScoresPanel


def status(app) -> str:
    return str(app.query_one("#scores-status").render())


@pilot_test
async def test_eps_keys_step_the_severity_of_a_corruption(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("r")  # the corrupt method, its first corruption (Gaussian noise)
        await until(pilot, app, lambda: state.frame.config.method == "corrupt", "the corrupt frame")
        assert state.frame.config.severity == 1
        assert app.query_one("#attack-corruption").value == "noise" and not app.query_one("#attack-corruption").disabled
        assert app.query_one("#attack-norm").disabled  # an artefact has no threat model
        assert app.screen.active_bindings["plus"].binding.action == "step_severity(1)"
        assert str(app.query_one("#attack-eps-label").render()) == "Severity"
        first = state.frame.result.pictures.adversarial
        await pilot.press("plus", "plus")
        await until(pilot, app, lambda: state.frame.config.severity == 3, "the severity 3 frame")
        assert state.attack.eps == 0.009  # untouched: the corrupt method ignores it
        assert app.query_one(EpsInput).value == "3" and status(app).startswith("severity 3 ·")
        assert "severity 3" in str(app.query_one("#summary").render())
        pictures = state.frame.result.pictures
        # The picture recomputed, and it is core's corruption of the slice with the slice's own seed.
        expected = corrupt(
            torch.as_tensor(pictures.image)[None, None], "noise", 3, [slice_seed(0, state.frame.slice_id)]
        )
        np.testing.assert_allclose(pictures.adversarial, expected[0, 0].numpy(), atol=1e-6)
        assert not np.array_equal(first, pictures.adversarial)
        await pilot.press("plus", "plus", "plus", "plus")  # 5 is the most
        await until(pilot, app, lambda: state.frame.config.severity == 5, "the severity 5 frame")
        await pilot.press("r")  # the next corruption, at the same severity
        await until(pilot, app, lambda: state.frame.config.corruption == "bias", "the bias-field frame")
        assert state.frame.config.severity == 5
        await pilot.press("ctrl+p", *"corruption blur")  # the palette names them
        await until(pilot, app, lambda: app.screen.query_one(CommandList).option_count, "palette hits")
        assert "Corruption: Blur" in str(app.screen.query_one(CommandList).get_option_at_index(0).prompt)
        await pilot.press("enter")
        await until(pilot, app, lambda: state.frame.config.corruption == "blur", "the blur frame")
        assert state.frame.config.severity == 5
        await pilot.press("m")  # leaving the method: the eps keys step eps again
        await settle(pilot, app)
        assert app.screen.active_bindings["plus"].binding.action == "step_eps(1)"
        assert str(app.query_one("#attack-eps-label").render()) == "Epsilon"


@pilot_test
async def test_l2_norm_steps_eps_on_its_own_scale(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        size = state.attacked.img_size
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "the L2 frame")
        assert state.attack.eps == pytest.approx(0.009 * size)  # the same size per pixel
        assert str(app.query_one("#attack-eps-label").render()) == "L2 eps"
        await pilot.press("plus")
        await until(pilot, app, lambda: state.frame.config.eps == pytest.approx(0.010 * size, abs=1e-6), "one L2 step")
        assert status(app).startswith(f"L2 eps {0.010 * size:.2f} · L∞ ")
        assert state.frame.result.l2 <= state.frame.config.eps + 1e-4  # in the L2 ball
        assert "(L2)" in str(app.query_one("#summary").render())
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "linf", "back to L-inf")
        assert state.attack.eps == pytest.approx(0.010)
        app.query_one("#attack-norm", Select).value = "l2"  # the Attack panel's select does the same
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "L2 from the select")
        assert state.attack.eps == pytest.approx(0.010 * size)


@pilot_test
async def test_l2_survives_a_new_slice_and_a_method_without_l2(tiny_demo):
    """Under L2, eps is the slice's L2 norm (above 1 at the demo's size): a new slice's eps curve (FGSM, L-inf)
    and a method with no L2 form (the explorer falls back to L-inf, eps at the same per-pixel size) must not
    take it as an L-inf eps."""
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "the L2 frame")
        assert state.attack.eps > 1
        await pilot.press("j")
        await until(
            pilot,
            app,
            lambda: state.curve is not None and state.curve.slice_id == state.frame.slice_id == state.source.id,
            "the new slice's eps curve",
        )
        await pilot.press("r")  # the corrupt method has no L2 form
        await until(pilot, app, lambda: state.frame.config.method == "corrupt", "the corrupt frame")
        assert (state.attack.norm, state.attack.eps) == ("linf", pytest.approx(0.009))
        await pilot.press("m")  # after Corrupt, the registry's first: FGSM
        await until(pilot, app, lambda: state.frame.config.method == "fgsm", "the FGSM frame")
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "L2 again")
        for method in ("square", "erase"):  # the palette's and the Method select's way
            assert (state.changed(method=method).norm, state.changed(method=method).eps) == (
                "linf",
                pytest.approx(0.009),
            )
        assert app.is_running and not [message for _, message in app.notices if "failed" in message.lower()]


@pilot_test
async def test_scores_show_the_present_absent_split_of_label_split(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        for _ in range(6):  # slices until one has a label absent from its truth
            split = label_split([state.frame.result])
            if split.absent_pairs:
                break
            await pilot.press("j")
            await until(
                pilot, app, lambda: not state.live and state.frame.slice_id == state.source.id, "the next slice"
            )
        assert split.absent_pairs, "no slice of the tiny demo lacks a label"
        absent = split.absent_pairs
        clean, adv = (round(share * absent) for share in (split.hallucination_clean, split.hallucination_adv))
        assert app.query_one(ScoresPanel).border_title == (
            f"Scores · present {format_score(split.damage_clean)}→{format_score(split.damage_adv)} · "
            f"halluc. {clean}/{absent}→{adv}/{absent}"
        )


@pilot_test
async def test_certify_shows_core_s_certified_pixels(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("C")
        await until(pilot, app, lambda: isinstance(app.screen, CertifyScreen), "the certified picture")
        assert any("forward passes" in message for _, message in app.notices)
        shown = app.screen.picture
        config, problem = state.certify_config()
        assert problem is None and shown.samples == config.n and shown.sigma == config.sigma

        # core, directly, on the same slice and seed
        model = state.attacked.model
        image = torch.as_tensor(shown.image)[None, None]
        classes = certify_slice(model, image, config, slice_seed(config.seed, shown.slice_id))
        positive, abstained = label_masks(classes, model.labels.kind, len(model.labels))
        np.testing.assert_array_equal(shown.positive, positive)
        np.testing.assert_array_equal(shown.abstained, abstained)
        np.testing.assert_allclose(shown.dsc_certified, certified_dice(positive, abstained, shown.reference))
        np.testing.assert_allclose(shown.abstain, abstained.reshape(len(positive), -1).mean(1))
        text = str(app.screen.query_one("#certify-scores").render())
        for value in shown.dsc_certified:
            assert format_score(value) in text

        picture = app.screen.query_one(Picture)
        scene = picture.scene
        assert scene.colours[-1] == ABSTAIN_COLOUR and np.array_equal(scene.fill[-1], abstained.any(0))
        await pilot.press("escape")
        await settle(pilot, app)
        assert not isinstance(app.screen, CertifyScreen)
