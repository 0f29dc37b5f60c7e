"""The Attack panel: loss, method, target, mode and epsilon; it shows the app's settings and asks for changes."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select

from core.names import LOSS_NAMES, LOSS_TITLES, METHODS, MODES, TARGETS
from segadv_tui.settings import AttackSettings

CHOICES = {
    "loss": [(LOSS_TITLES[name], name) for name in LOSS_NAMES],
    "method": [(name.upper(), name) for name in METHODS],
    "target": [({"gt": "ground truth", "pred": "prediction"}.get(name, name), name) for name in TARGETS],
    "mode": [(name, name) for name in MODES],
}


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

    def __init__(self, settings: AttackSettings, **kwargs):
        super().__init__(**kwargs)
        self.initial = settings

    def compose(self) -> ComposeResult:
        for field, options in CHOICES.items():
            with Horizontal():
                yield Label(field.capitalize())
                yield Select(options, value=getattr(self.initial, field), allow_blank=False, compact=True,
                             id=f"attack-{field}")
        with Horizontal():
            yield Label("Epsilon")
            yield EpsInput(compact=True, id="attack-eps", placeholder="0.009")

    def show(self, settings: AttackSettings, *, has_truth: bool = True) -> None:
        """Mirror ``settings`` without echoing Changed messages back."""
        for field in CHOICES:
            select = self.query_one(f"#attack-{field}", Select)
            with select.prevent(Select.Changed):
                select.value = getattr(settings, field)
        self.query_one("#attack-target", Select).disabled = not has_truth
        self.query_one("#attack-mode", Select).disabled = settings.method != "fgsm"
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
