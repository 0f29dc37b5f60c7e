"""The summary line (``#summary``) as drawn: at 80 x 24 it says the eps (under L2 the L2 eps), the method,
the slice and the checkpoint in fewer words; at 160 x 48 its wording is the long one where that fits.
Under Pilot with the real app, the bundled demo checkpoint and the tiny demo data; the line is read as
the terminal draws it."""

from __future__ import annotations

from textual.geometry import Region
from tui_pilot import first_frame, make_app, pilot_test, until

from core.paths import demo_checkpoint
from segadv_tui.state import short_label


def drawn(app) -> str:
    """The summary line's text as drawn, cut where the terminal cuts it."""
    widget = app.query_one("#summary")
    (strip,) = widget.render_lines(Region(0, 0, widget.outer_size.width, 1))
    return strip.text.strip()


@pilot_test
async def test_at_80_by_24_the_summary_names_eps_slice_and_checkpoint(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(80, 24)) as pilot:
        await first_frame(pilot, app)
        line = drawn(app)
        assert line.startswith(f"eps {state.frame.config.eps:.3f} · FGSM · bce, gt · ")
        assert state.frame.slice_id in line and line.endswith(f"{demo_checkpoint().stem} · CPU")
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "the L2 frame")
        line = drawn(app)
        assert line.startswith(f"L2 eps {state.frame.config.eps:.3f} · FGM · ")
        assert state.frame.slice_id in line and demo_checkpoint().stem in line
        await pilot.press("r")  # the corrupt method: its severity where the eps was
        await until(pilot, app, lambda: state.frame.config.method == "corrupt", "the corrupt frame")
        assert drawn(app).startswith("severity 1 · Gaussian noise · ") and demo_checkpoint().stem in drawn(app)
        await pilot.press("w")  # scored on another model: both names, cut with a sign where they do not fit
        await until(pilot, app, lambda: state.frame.scored_on is not None, "a frame scored on another model")
        line = drawn(app)
        assert f"{demo_checkpoint().stem}→" in line and (line.endswith("…") or line.endswith(" · CPU"))
        app.explorer.score_on(None)  # white box again
        await until(pilot, app, lambda: state.frame.scored_on is None, "white box again")
        await pilot.resize_terminal(160, 48)  # wide: the long wording, at once
        await until(pilot, app, lambda: "corruption" in drawn(app), "the long wording")
        assert drawn(app).startswith(f"{state.attack.label} · {state.frame.slice_id} · {demo_checkpoint().stem}")


@pilot_test
async def test_at_160_by_48_the_summary_is_the_long_line(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        assert drawn(app) == f"{state.attack.label} · {state.frame.slice_id} · {demo_checkpoint().stem} · CPU"
        await pilot.press("w")  # scored on another model: the long line would lose its end, the short fits
        await until(pilot, app, lambda: state.frame.scored_on is not None, "a frame scored on another model")
        assert drawn(app).endswith(f" · {state.frame.slice_id} · {demo_checkpoint().stem}→{state.scored_on.stem} · CPU")
        assert drawn(app).startswith(f"eps {state.attack.eps:.3f} · FGSM · bce, gt · ")


def test_the_short_label_of_each_kind_of_attack():
    from core.attacks.config import AttackConfig

    assert short_label(AttackConfig(eps=0.009)) == "eps 0.009 · FGSM · bce, gt"
    assert short_label(AttackConfig(eps=1.152, norm="l2")) == "L2 eps 1.152 · FGM · bce, gt"
    assert short_label(AttackConfig(method="pgd", loss="dice", target="pred")) == "eps 0.009 · PGD · dice, pred"
    assert short_label(AttackConfig(method="corrupt", corruption="blur", severity=3)) == "severity 3 · Blur"
    assert short_label(AttackConfig(method="universal", eps=0.02), 2.0) == "eps 0.020 ×2.00 · Universal"
