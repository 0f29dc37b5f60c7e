"""The Attack panel: method, loss, target, mode, the organs to erase and epsilon; it shows the app's
``AttackConfig`` and asks for changes. The method list is the attack registry's."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select

from core.attack_config import METHOD_LIST, METHODS, AttackConfig
from core.names import LOSS_NAMES, LOSS_TITLES, MODES, TARGETS
from core.organs import ORGAN_TITLES, ORGANS

# Field -> (label, value) options; organs' values are comma lists, as AttackConfig accepts them.
CHOICES = {
    "method": [(method.title, method.name) for method in METHOD_LIST],
    "loss": [(LOSS_TITLES[name], name) for name in LOSS_NAMES],
    "target": [({"gt": "ground truth", "pred": "prediction"}.get(name, name), name) for name in TARGETS],
    "mode": [(name, name) for name in MODES],
    "organs": [(ORGAN_TITLES[organ], organ) for organ in ORGANS] + [("all three", ",".join(ORGANS))],
}


def choice_value(config: AttackConfig, field: str) -> str:
    """``config``'s value of ``field`` as the panel's option value."""
    value = getattr(config, field)
    return ",".join(value) if field == "organs" else value


class EpsInput(Input):
    """Type an epsilon and press Enter; the panel validates it."""


class AttackPanel(Vertical):
    """Shows the current settings; posts ``Changed`` (a field and its new value) when the user edits one."""

    DEFAULT_CSS = """
    AttackPanel { height: auto; }
    AttackPanel Horizontal { height: 1; }
    AttackPanel Label { width: 8; color: $text-muted; }
    AttackPanel Select { width: 1fr; }
    AttackPanel EpsInput { width: 1fr; }
    """

    class Changed(Message):
        def __init__(self, field: str, value: str):
            super().__init__()
            self.field = field
            self.value = value

    def __init__(self, settings: AttackConfig, **kwargs):
        super().__init__(**kwargs)
        self.initial = settings

    def compose(self) -> ComposeResult:
        for field, options in CHOICES.items():
            with Horizontal():
                yield Label(field.capitalize())
                yield Select(options, value=_shown_value(self.initial, field), allow_blank=False, compact=True,
                             id=f"attack-{field}")
        with Horizontal():
            yield Label("Epsilon")
            yield EpsInput(compact=True, id="attack-eps", placeholder="0.009")

    def show(self, settings: AttackConfig, *, has_truth: bool = True) -> None:
        """Mirror ``settings`` without echoing Changed messages back; a field the method does not read is
        disabled."""
        for field in CHOICES:
            select = self.query_one(f"#attack-{field}", Select)
            with select.prevent(Select.Changed):
                select.value = _shown_value(settings, field)
        uses = settings.entry.parameters
        self.query_one("#attack-loss", Select).disabled = "loss" not in uses
        self.query_one("#attack-target", Select).disabled = not has_truth or not settings.entry.uses_target
        self.query_one("#attack-mode", Select).disabled = "mode" not in uses
        self.query_one("#attack-organs", Select).disabled = "organs" not in uses
        eps = self.query_one(EpsInput)
        if not eps.has_focus:
            with eps.prevent(Input.Changed):
                eps.value = f"{settings.eps:.3f}"

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(event.select.id.removeprefix("attack-"), str(event.value)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Changed("eps", event.value))


def _shown_value(config: AttackConfig, field: str) -> str:
    """The option to show: the config's own value, or where it has none among the options (no organs
    chosen yet) the erase method's default."""
    value = choice_value(config, field)
    if field == "organs" and value not in {option for _, option in CHOICES["organs"]}:
        value = ",".join(METHODS["erase"].parameters["organs"])
    return value
