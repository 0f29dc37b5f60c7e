"""The Attack panel: method, loss, target, mode, threat model (norm), the corrupt method's artefact, the labels to
erase (the label set's), the universal perturbation, epsilon (the corrupt method's severity) and the model the frames
are scored on; it shows the explorer's ``AttackConfig`` (and its scoring model) and
asks for changes. The method list is the attack registry's."""

from __future__ import annotations

from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Input, Label, Select

from core.attacks.config import METHOD_LIST, METHODS, AttackConfig
from core.labels import LabelSet
from core.names import CORRUPTION_TITLES, LOSS_NAMES, LOSS_TITLES, MODES, NORMS, TARGETS

# Field -> (label, value) options; the labels' values are comma lists, as AttackConfig accepts them.
CHOICES = {
    "method": [(method.title, method.name) for method in METHOD_LIST],
    "loss": [(LOSS_TITLES[name], name) for name in LOSS_NAMES],
    "target": [({"gt": "ground truth", "pred": "prediction"}.get(name, name), name) for name in TARGETS],
    "mode": [(name, name) for name in MODES],
    "norm": [({"linf": "L-inf", "l2": "L2"}.get(name, name), name) for name in NORMS],
    "corruption": [(title, name) for name, title in CORRUPTION_TITLES.items()],
}
# A select's label where its field's name does not fit the 9-column label.
FIELD_LABELS = {"corruption": "Artefact"}
ALL_WORDS = {2: "both", 3: "all three"}


def label_choices(labels: LabelSet) -> list[tuple[str, str]]:
    """The options of the labels to erase: each label of ``labels`` (by title), then all of them."""
    options = [(label.title, label.name) for label in labels.labels]
    if len(labels) > 1:
        options.append((ALL_WORDS.get(len(labels), f"all {len(labels)}"), ",".join(labels.names)))
    return options


def choice_value(config: AttackConfig, field: str) -> str:
    """``config``'s value of ``field`` as the panel's option value."""
    value = getattr(config, field)
    return ",".join(value) if field == "organs" else value


def strength_label(config: AttackConfig) -> str:
    """The Epsilon field's label: what the eps keys step for ``config`` (the corrupt method's severity)."""
    if config.method == "corrupt":
        return "Severity"
    return "Epsilon" if config.norm == "linf" else "L2 eps"


def strength_value(config: AttackConfig) -> str:
    return str(config.severity) if config.method == "corrupt" else f"{config.eps:.3f}"


# The value of the "none" option of the Delta and Score on selects (no delta; the attacked model).
NONE = ""


class EpsInput(Input):
    """Type an epsilon and press Enter; the panel validates it."""


class AttackPanel(Vertical):
    """Shows the current attack; posts ``Changed`` (a field and its new value) when the user edits one."""

    DEFAULT_CSS = """
    AttackPanel { height: auto; }
    AttackPanel Horizontal { height: 1; }
    AttackPanel Label { width: 9; color: $text-muted; }
    AttackPanel Select { width: 1fr; }
    AttackPanel EpsInput { width: 1fr; }
    """

    class Changed(Message):
        def __init__(self, field: str, value: str):
            super().__init__()
            self.field = field
            self.value = value

    def __init__(self, attack: AttackConfig, *, has_truth: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.initial = attack
        self.has_truth = has_truth  # a lone PNG has none: its Target stays off, whatever the method
        self.delta_paths: set[str] = set()
        self.choices = {**CHOICES, "organs": label_choices(attack.labels)}

    def compose(self) -> ComposeResult:
        for field, options in self.choices.items():
            with Horizontal():
                yield Label(FIELD_LABELS.get(field, field.capitalize()))
                yield Select(
                    options,
                    value=self._shown_value(self.initial, field),
                    allow_blank=False,
                    compact=True,
                    id=f"attack-{field}",
                )
        with Horizontal():
            yield Label("Delta")
            yield Select([("none", NONE)], value=NONE, allow_blank=False, compact=True, id="attack-delta")
        with Horizontal():
            yield Label(strength_label(self.initial), id="attack-eps-label")
            yield EpsInput(compact=True, id="attack-eps", placeholder="0.009")
        with Horizontal():
            yield Label("Score on")
            yield Select([("attacked model", NONE)], value=NONE, allow_blank=False, compact=True, id="attack-scored")

    def set_files(self, checkpoints: list[tuple[str, str]], deltas: list[tuple[str, str]]) -> None:
        """The options of Score on and Delta: (label, path) of every checkpoint and universal perturbation."""
        self.delta_paths = {path for _, path in deltas}
        for name, none, options in (("scored", "attacked model", checkpoints), ("delta", "none", deltas)):
            select = self.query_one(f"#attack-{name}", Select)
            with select.prevent(Select.Changed):
                select.set_options([(none, NONE), *options])

    def show_scored_on(self, path: str | None) -> None:
        select = self.query_one("#attack-scored", Select)
        with select.prevent(Select.Changed):
            select.value = path or NONE

    def show(self, attack: AttackConfig) -> None:
        """Mirror ``attack`` without echoing Changed messages back; a field the method does not read is
        disabled. The labels to erase are those of ``attack.labels`` (the data's)."""
        choices = label_choices(attack.labels)
        if choices != self.choices["organs"]:
            self.choices["organs"] = choices
            select = self.query_one("#attack-organs", Select)
            with select.prevent(Select.Changed):
                select.set_options(choices)
        for field in self.choices:
            select = self.query_one(f"#attack-{field}", Select)
            with select.prevent(Select.Changed):
                select.value = self._shown_value(attack, field)
        delta = self.query_one("#attack-delta", Select)
        with delta.prevent(Select.Changed):
            delta.value = attack.delta if attack.delta in self.delta_paths else NONE
        uses = attack.entry.parameters
        self.query_one("#attack-loss", Select).disabled = "loss" not in uses
        self.query_one("#attack-target", Select).disabled = not self.has_truth or not attack.entry.uses_target
        self.query_one("#attack-mode", Select).disabled = "mode" not in uses
        self.query_one("#attack-norm", Select).disabled = "norm" not in uses
        self.query_one("#attack-corruption", Select).disabled = "corruption" not in uses
        self.query_one("#attack-organs", Select).disabled = "organs" not in uses
        delta.disabled = "delta" not in uses
        self.query_one("#attack-eps-label", Label).update(strength_label(attack))
        eps = self.query_one(EpsInput)
        if not eps.has_focus:
            with eps.prevent(Input.Changed):
                eps.value = strength_value(attack)

    def on_select_changed(self, event: Select.Changed) -> None:
        event.stop()
        self.post_message(self.Changed(event.select.id.removeprefix("attack-"), str(event.value)))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        event.stop()
        self.post_message(self.Changed("eps", event.value))

    def _shown_value(self, config: AttackConfig, field: str) -> str:
        """The option to show: the config's own value, or where it has none among the options (no labels
        chosen yet) the erase method's default for its label set."""
        value = choice_value(config, field)
        if field == "organs" and value not in {option for _, option in self.choices["organs"]}:
            value = ",".join(METHODS["erase"].defaults(config.labels)["organs"])
        return value
