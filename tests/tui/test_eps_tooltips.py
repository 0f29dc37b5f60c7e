"""The eps keys' tooltips say the configured eps step (the settings file's eps_step) wherever they are shown:
the footer's bindings, the help screen and the command palette."""

from __future__ import annotations

from textual.widgets import Static
from tui_pilot import make_app, pilot_test, settle

from core.paths import demo_checkpoint
from segadv_tui.keys import EXPLORER_KEYS, help_groups
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
    configured = {binding.id: binding.tooltip for _, bindings in help_groups(eps_step=0.002) for binding in bindings}
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
