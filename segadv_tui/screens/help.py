"""The help screen: every key of the explorer, read from its bindings (``segadv_tui.keys``) so it cannot go stale."""

from __future__ import annotations

import re
from collections.abc import Mapping

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import VerticalScroll
from textual.keys import REPLACED_KEYS, key_to_character
from textual.screen import ModalScreen
from textual.widgets import Static

from core.labels import UW_MADISON, LabelSet
from core.wording import label_noun
from segadv_tui.keys import EXPLORER_KEYS

KEY_NAMES = {
    "plus": "+",
    "equals_sign": "=",
    "minus": "-",
    "right_square_bracket": "]",
    "left_square_bracket": "[",
    "question_mark": "?",
    "up": "↑",
    "down": "↓",
    "left": "←",
    "right": "→",
    "escape": "Esc",
    "enter": "Enter",
    "slash": "/",
    "full_stop": ".",
    "greater_than_sign": ">",
    "comma": ",",
    "less_than_sign": "<",
}

# {binding id}: that binding's first key, as the user's keymap has it.
USAGE = (
    "Pick a checkpoint and a slice (case → day → slice), then step epsilon and watch the masks and the "
    "scores change. FGSM reuses one gradient per slice and loss: each eps step is one forward pass. "
    "Views ({view.next}): Overlay, the clean and adversarial predictions as translucent fills over the clean "
    "slice, "
    "the truth as a thin outline; Difference, both TP / FP / FN maps over the dimmed slice; Grid, the "
    "paper's eight panels; Focus ({view.focus}), one picture alone, zoomed with {view.zoom_in} and "
    "{view.zoom_out} down to one image pixel per "
    "half cell and panned with the arrows or the mouse. Organs (1 2 3): large bowel orange, small bowel "
    "blue, stomach magenta. Difference maps: true positive green, false positive blue, false negative red. "
    "AS = (DSC clean − DSC adv) / DSC clean. Transfer ({attack.score_on}, or Score on): the attack is crafted on the "
    "current checkpoint (▶) and the masks and scores are another's (◆). Universal perturbations ({attack.delta}; made "
    "by segadv universal, opened with --delta or found beside the checkpoints): eps scales the saved delta."
)
# The rule that decides the score of an organ the truth lacks (core.metrics), beside the mark it gets.
EMPTY_ORGANS = (
    "Scores marked * are of an organ absent from the truth (the target without one): its DSC is 1 while none "
    "of it is predicted and 0 from one predicted pixel (empty counts 1, as the paper scored), so a few stray "
    "pixels can halve a slice's mean. The explorer opens on a test-split slice with every organ present (or as "
    "many as any test slice has)."
)
UW_LABELS_SENTENCE = "Organs (1 2 3): large bowel orange, small bowel blue, stomach magenta."


def usage(labels: LabelSet) -> str:
    """``USAGE`` for the data's label set: its labels, their keys and colours (UW-Madison's as written)."""
    if labels.same_labels(UW_MADISON):
        return USAGE
    keys = " ".join(str(number) for number in range(1, min(len(labels), 9) + 1))
    named = ", ".join(label.title.lower() for label in labels.labels)
    more = f"; the first 9 of {len(labels)} have a key, the others are always shown" if len(labels) > 9 else ""
    sentence = f"Labels ({keys}): {named}, in the legend's colours{more}."
    return USAGE.replace(UW_LABELS_SENTENCE, sentence)


def empty_labels(labels: LabelSet) -> str:
    """``EMPTY_ORGANS`` in the label set's words (organs for UW-Madison, labels otherwise)."""
    if label_noun(labels) == "organ":
        return EMPTY_ORGANS
    return EMPTY_ORGANS.replace("an organ", "a label").replace("every organ", "every label")


def key_label(keys: str) -> str:
    """Keys as the help shows them: "plus,equals_sign" is "+ =", a user's "commercial_at" is "@"."""
    return " ".join(KEY_NAMES.get(k) or key_to_character(REPLACED_KEYS.get(k, k)) or k for k in keys.split(","))


def with_keys(text: str, keymap: Mapping[str, str]) -> str:
    """``text`` with each {binding id} replaced by that binding's first key (the user's, from ``keymap``)."""
    defaults = {binding.id: binding.key for binding in EXPLORER_KEYS}

    def first_key(match: re.Match) -> str:
        keys = keymap.get(match[1]) or defaults[match[1]]
        return key_label(keys.split(",")[0])

    return re.sub(r"\{([a-z0-9_.]+)\}", first_key, text)


def bindings_table(groups: list[tuple[str, list[Binding]]]) -> Text:
    text = Text()
    for title, bindings in groups:
        text.append(f"{title}\n", style="bold underline")
        for binding in bindings:
            text.append(f"  {key_label(binding.key):>12}  ", style="bold")
            text.append(f"{binding.tooltip or binding.description}\n")
        text.append("\n")
    return text


class HelpScreen(ModalScreen):
    """Every key, grouped; Esc, q or ? closes it."""

    DEFAULT_CSS = """
    HelpScreen { align: center middle; }
    HelpScreen > VerticalScroll {
        width: 96; max-width: 100%; height: auto; max-height: 100%;
        border: thick $primary; background: $surface; padding: 1 2;
    }
    """
    BINDINGS = [Binding("escape,q,question_mark", "dismiss", "Close help", id="help.close")]

    def __init__(
        self,
        groups: list[tuple[str, list[Binding]]],
        labels: LabelSet = UW_MADISON,
        keymap: Mapping[str, str] | None = None,
    ):
        super().__init__()
        self.groups = groups
        self.labels = labels  # the data's: the usage names its labels and keys
        self.keymap = keymap or {}

    def compose(self) -> ComposeResult:
        with VerticalScroll() as scroll:
            scroll.border_title = "segadv-tui · keys"
            yield Static(with_keys(usage(self.labels), self.keymap) + "\n", id="help-usage")
            yield Static(empty_labels(self.labels) + "\n", id="help-empty-organs")
            yield Static(bindings_table(self.groups), id="help-keys")
