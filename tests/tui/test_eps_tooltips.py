"""The eps keys' tooltips say what a press adds wherever they are shown (the footer's bindings, the help
screen and the command palette): the configured eps step (the settings file's eps_step), under L2 the
L2 step, under the corrupt method the severity. Each is checked against what the key then does."""

from __future__ import annotations

import re

import pytest
from textual.widgets import Static
from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.paths import demo_checkpoint
from segadv_tui.keys import EXPLORER_KEYS, eps_tooltips, help_groups
from segadv_tui.palette import ExplorerCommands

STEP_TOOLTIPS = {  # a step of 0.002: + and - one step, ] and [ five
    "eps.up": "Epsilon + 0.002",
    "eps.down": "Epsilon − 0.002",
    "eps.up5": "Epsilon + 0.01",
    "eps.down5": "Epsilon − 0.01",
}


def test_the_help_lists_the_default_and_a_configured_step():
    default = {binding.id: binding.tooltip for _, bindings in help_groups() for binding in bindings}
    assert default["eps.up"] == "Epsilon + 0.001" and default["eps.down5"] == "Epsilon − 0.005"
    groups = help_groups(eps_keys=eps_tooltips(0.002))
    configured = {binding.id: binding.tooltip for _, bindings in groups for binding in bindings}
    assert {key: configured[key] for key in STEP_TOOLTIPS} == STEP_TOOLTIPS
    assert configured["eps.zero"] == default["eps.zero"]  # the other keys as they were
    assert {binding.id for binding in EXPLORER_KEYS if binding.id.startswith("eps.")} >= set(STEP_TOOLTIPS)


@pilot_test
async def test_footer_help_and_palette_show_the_configured_step(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint(), eps_step=0.002)
    async with app.run_test(size=(160, 48)) as pilot:
        await settle(pilot, app)
        footer = {
            active.binding.id: active.tooltip or active.binding.tooltip
            for active in app.screen.active_bindings.values()
        }
        assert {key: footer[key] for key in STEP_TOOLTIPS} == STEP_TOOLTIPS
        palette = {name: text for name, _, text in ExplorerCommands(app.screen)._commands()}
        assert palette["eps+"] == "Epsilon + 0.002" and palette["eps−−"] == "Epsilon − 0.01"
        await pilot.press("question_mark")
        await settle(pilot, app)
        keys = str(app.screen.query_one("#help-keys", Static).render())
        assert all(text in keys for text in STEP_TOOLTIPS.values())
        assert "0.001" not in keys and "0.005" not in keys


def footer_tooltips(app) -> dict[str, str]:
    """Binding id -> the tooltip the footer would show, for the keys the explorer lets through now."""
    return {
        active.binding.id: active.tooltip or active.binding.tooltip
        for active in app.screen.active_bindings.values()
        if active.enabled
    }


async def help_keys(pilot, app) -> str:
    """The help screen's key table, read and closed again."""
    await pilot.press("question_mark")
    await settle(pilot, app)
    keys = str(app.screen.query_one("#help-keys", Static).render())
    await pilot.press("escape")
    await settle(pilot, app)
    return keys


async def step_by(pilot, app, key: str) -> float:
    """What ``key`` added to the attack's eps (its frame awaited)."""
    state = app.explorer.state
    before = state.attack.eps
    await pilot.press(key)
    await until(pilot, app, lambda: state.frame.config == state.attack, f"the frame after {key}")
    return state.attack.eps - before


@pilot_test
async def test_under_l2_the_tooltips_say_the_l2_step_a_press_adds(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "the L2 frame")
        footer = footer_tooltips(app)
        fine = re.fullmatch(r"L2 epsilon \+ ([0-9.]+)", footer["eps.up"])
        assert fine, footer["eps.up"]
        assert footer["eps.down"] == f"L2 epsilon − {fine[1]}"
        # The step the tooltip names is the one + and ] then add (the demo's slice side times 0.001).
        assert float(fine[1]) == pytest.approx(await step_by(pilot, app, "plus"), abs=1e-6)
        assert float(fine[1]) != pytest.approx(0.001)
        coarse = re.fullmatch(r"L2 epsilon \+ ([0-9.]+)", footer_tooltips(app)["eps.up5"])
        assert coarse and float(coarse[1]) == pytest.approx(await step_by(pilot, app, "right_square_bracket"), abs=1e-6)
        keys = await help_keys(pilot, app)
        assert f"L2 epsilon + {fine[1]}" in keys and f"L2 epsilon − {coarse[1]}" in keys
        assert "Epsilon + 0.001" not in keys
        palette = {name: text for name, _, text in ExplorerCommands(app.screen)._commands()}
        assert palette["eps+"] == f"L2 epsilon + {fine[1]}"
        await pilot.press("L")  # back under L-inf: the configured step again
        await until(pilot, app, lambda: state.frame.config.norm == "linf", "the L-inf frame")
        assert footer_tooltips(app)["eps.up"] == "Epsilon + 0.001"
        assert await step_by(pilot, app, "plus") == pytest.approx(0.001, abs=1e-9)
        assert "Epsilon + 0.001" in await help_keys(pilot, app)


@pilot_test
async def test_under_the_corrupt_method_the_tooltips_say_the_severity(tiny_demo):
    app = make_app(tiny_demo, demo_checkpoint())
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("r")  # the corrupt method: + and - step the severity, ] and [ to its ends
        await until(pilot, app, lambda: state.frame.config.method == "corrupt", "the corrupt frame")
        footer = footer_tooltips(app)
        assert "eps.up" not in footer and footer["eps.severity_up"] == "Corruption severity + 1"
        assert footer["eps.up5"] == "Corruption severity to 5" and footer["eps.down5"] == "Corruption severity to 1"
        await pilot.press("right_square_bracket")
        await until(pilot, app, lambda: state.frame.config.severity == 5, "severity 5")
        await pilot.press("left_square_bracket")
        await until(pilot, app, lambda: state.frame.config.severity == 1, "severity 1")
        assert "Corruption severity to 5" in await help_keys(pilot, app)
        await pilot.press("m")  # a method with eps again
        await until(pilot, app, lambda: state.frame.config.method != "corrupt", "a method with eps")
        assert footer_tooltips(app)["eps.up5"] == "Epsilon + 0.005"


@pilot_test
async def test_a_remapped_eps_key_keeps_its_key_and_says_the_l2_step(tiny_demo, tmp_path):
    from segadv_tui.config import load_settings

    (tmp_path / "config.toml").write_text('[keymap]\n"eps.up" = "n"\n')
    app = make_app(tiny_demo, demo_checkpoint(), settings=load_settings(tmp_path / "config.toml"))
    state = app.explorer.state
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await pilot.press("L")
        await until(pilot, app, lambda: state.frame.config.norm == "l2", "the L2 frame")
        (active,) = [active for active in app.screen.active_bindings.values() if active.binding.id == "eps.up"]
        assert active.binding.key == "n"
        step = float(footer_tooltips(app)["eps.up"].removeprefix("L2 epsilon + "))
        assert step == pytest.approx(await step_by(pilot, app, "n"), abs=1e-6)
