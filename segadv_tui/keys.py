"""Every key of the explorer as data: the bindings (in the footer's order), the groups the help screen
lists them under, and the keys Textual's widgets provide that the help names too. The explorer screen
binds these, the app binds the ones that work on every screen, and the help screen and the command
palette read them from here, so a key added here is bound, listed and offered by name at once."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

from textual.binding import Binding

from core.attacks.config import METHOD_LIST
from core.labels import UW_MADISON, LabelSet
from core.names import CORRUPTION_LEVELS
from core.wording import label_nouns
from segadv_tui.state import EPS_STEP, STEPS_PER_PRESS, ExplorerState

# Keys 1 to 9 show or hide the first nine labels of the data's label set in every picture.
TOGGLED_LABELS = 9


def label_keys(labels: LabelSet) -> list[Binding]:
    """The keys that show or hide the first nine labels of ``labels``, named by them (the help and the
    command palette list these for the data's label set)."""
    return [
        Binding(
            str(number),
            f"toggle_organ({number - 1})",
            label.title,
            id=f"organ.{label.name}",
            show=False,
            tooltip=f"Show / hide the {label.title.lower()} in every picture",
        )
        for number, label in enumerate(labels.labels[:TOGGLED_LABELS], start=1)
    ]


def eps_tooltips(step: float, norm: str = "linf", corrupt: bool = False) -> dict[str, str]:
    """The eps keys' tooltips (binding id -> text): + and - add ``step`` to the eps of ``norm``, ] and [ five
    steps; under the corrupt method (``corrupt``) ] and [ step the severity to its end instead."""
    what = "Epsilon" if norm == "linf" else "L2 epsilon"
    tooltips = {}
    for name, size in (("", "fine"), ("5", "coarse")):
        amount = f"{step * STEPS_PER_PRESS[size]:.6g}"
        tooltips[f"eps.up{name}"] = f"{what} + {amount}"
        tooltips[f"eps.down{name}"] = f"{what} − {amount}"
    if corrupt:
        tooltips["eps.up5"] = f"Corruption severity to {CORRUPTION_LEVELS}"
        tooltips["eps.down5"] = "Corruption severity to 1"
    return tooltips


def explorer_eps_tooltips(state: ExplorerState) -> dict[str, str]:
    """The eps keys' tooltips for what a press does now (``ExplorerState.stepped_eps``): the settings' step
    in the norm in force (under L2 times the slice side), or under the corrupt method the severity."""
    return eps_tooltips(state.eps_key_step, state.attack.norm, state.attack.method == "corrupt")


def with_eps_tooltips(bindings: list[Binding], tooltips: Mapping[str, str]) -> list[Binding]:
    """``bindings`` with the eps keys' ``tooltips`` (``eps_tooltips``)."""
    return [
        replace(binding, tooltip=tooltips[binding.id]) if binding.id in tooltips else binding for binding in bindings
    ]


EPS_TOOLTIPS = eps_tooltips(EPS_STEP)

# Work on every screen (Table II's too): the app binds them.
APP_KEYS = [
    Binding("q", "app.quit", "Quit", id="quit", tooltip="Quit (a running computation is abandoned)"),
    Binding("question_mark", "app.help", "Help", id="help", tooltip="Show every key"),
]

# The explorer screen's keys; the app's lead them because a footer lists a screen's keys before the app's.
EXPLORER_KEYS = [
    *APP_KEYS,
    Binding("plus,equals_sign", "step_eps(1)", "eps+", id="eps.up", tooltip=EPS_TOOLTIPS["eps.up"]),
    Binding("minus", "step_eps(-1)", "eps−", id="eps.down", tooltip=EPS_TOOLTIPS["eps.down"]),
    Binding(
        "right_square_bracket",
        "step_eps(1, 'coarse')",
        "eps++",
        id="eps.up5",
        show=False,
        tooltip=EPS_TOOLTIPS["eps.up5"],
    ),
    Binding(
        "left_square_bracket",
        "step_eps(-1, 'coarse')",
        "eps−−",
        id="eps.down5",
        show=False,
        tooltip=EPS_TOOLTIPS["eps.down5"],
    ),
    # The corrupt method has no eps: + and - step its severity instead (the explorer lets one pair through).
    Binding("plus,equals_sign", "step_severity(1)", "sev+", id="eps.severity_up", tooltip="Corruption severity + 1"),
    Binding("minus", "step_severity(-1)", "sev−", id="eps.severity_down", tooltip="Corruption severity − 1"),
    Binding("0", "eps_zero", "eps 0", id="eps.zero", show=False, tooltip="Epsilon back to 0"),
    Binding("i", "edit_eps", "Type eps", id="eps.edit", show=False, tooltip="Type an epsilon (Enter applies)"),
    Binding("j", "slice(1)", "Next slice", id="slice.next", show=False, tooltip="Next slice"),
    Binding("k", "slice(-1)", "Prev slice", id="slice.prev", show=False, tooltip="Previous slice"),
    Binding(
        "o",
        "organs_only",
        "Organs only",
        id="slice.organs",
        show=False,
        tooltip="Show only slices with organs / all slices",
    ),
    Binding("l", "cycle('loss')", "Loss", id="attack.loss", tooltip="Next attack loss"),
    Binding(
        "m",
        "cycle('method')",
        "Method",
        id="attack.method",
        tooltip="Next method (" + ", ".join(method.title for method in METHOD_LIST) + ")",
    ),
    Binding(
        "t",
        "cycle('target')",
        "Target",
        id="attack.target",
        show=False,
        tooltip="Attack target: ground truth / clean prediction",
    ),
    Binding(
        "p", "cycle('mode')", "Mode", id="attack.mode", show=False, tooltip="FGSM mode: textbook / the paper's variant"
    ),
    Binding(
        "L",
        "cycle('norm')",
        "Norm",
        id="attack.norm",
        show=False,
        tooltip="Threat model: L-inf / L2 (L2 eps = slice side x L-inf eps)",
    ),
    Binding(
        "r",
        "cycle('corruption')",
        "Corruption",
        id="attack.corruption",
        show=False,
        tooltip="Corrupt: the next MRI artefact (the eps keys step its severity, 1 to 5)",
    ),
    Binding(
        "C",
        "certify",
        "Certify this slice",
        id="view.certify",
        show=False,
        tooltip="Certify this slice: randomized smoothing's certified pixels and DSC bound (n forward passes)",
    ),
    Binding(
        "u",
        "next_delta",
        "Universal",
        id="attack.delta",
        show=False,
        tooltip="The next universal perturbation found (method Universal; eps scales it)",
    ),
    Binding(
        "w",
        "score_on_next",
        "Score on",
        id="attack.score_on",
        show=False,
        tooltip="Score on the next checkpoint: another model's masks, this one's attack",
    ),
    Binding("T", "table_ii", "Table II", id="table2", tooltip="Table II over the test split"),
    Binding("e", "export_figure", "Export PNG", id="export.png", tooltip="Export the current view as a PNG"),
    Binding(
        "x",
        "export_scores",
        "Export scores",
        id="export.scores",
        show=False,
        tooltip="Export the scores table as CSV and Markdown",
    ),
    Binding(
        "v", "cycle_view", "View", id="view.next", tooltip="Next view of the pictures: overlay, difference, grid, focus"
    ),
    Binding(
        "z",
        "focus_view",
        "Focus",
        id="view.focus",
        tooltip="The focused picture alone, zoomable (z or Esc: back); Tab or a click picks the picture",
    ),
    Binding(
        "full_stop,greater_than_sign",
        "zoom(1)",
        "Zoom in",
        id="view.zoom_in",
        show=False,
        tooltip="Zoom in (Focus view), down to one image pixel per half cell; or the mouse wheel",
    ),
    Binding(
        "comma,less_than_sign",
        "zoom(-1)",
        "Zoom out",
        id="view.zoom_out",
        show=False,
        tooltip="Zoom out (Focus view), back to the whole slice",
    ),
    Binding("escape", "leave_focus", "Back", id="view.back", show=False, tooltip="Leave the Focus view"),
    *label_keys(UW_MADISON),  # the screen also binds MORE_LABEL_KEYS; help_groups names the data's
    Binding(
        "g",
        "cycle_graphics",
        "Graphics",
        id="graphics",
        show=False,
        tooltip="Cycle the picture renderer (half-block / kitty / sixel)",
    ),
    Binding(
        "b",
        "toggle_sidebar",
        "Sidebar",
        id="sidebar",
        show=False,
        tooltip="Show / hide the side panels (hidden by default on narrow terminals)",
    ),
    Binding(
        "c",
        "focus('checkpoints')",
        "Checkpoints",
        id="focus.checkpoints",
        show=False,
        tooltip="Go to the checkpoint list",
    ),
    Binding("s", "focus('slices')", "Slices", id="focus.slices", show=False, tooltip="Go to the slice browser"),
    Binding(
        "y",
        "copy('scores')",
        "Copy: scores",
        id="copy.scores",
        show=False,
        tooltip="Copy the scores table (Markdown) to the clipboard, over SSH too (OSC 52)",
    ),
]

# Keys 4 to 9 for label sets larger than UW-Madison's, bound beside EXPLORER_KEYS; the explorer lets a key
# through only where the data has its label.
MORE_LABEL_KEYS = [
    Binding(
        str(number),
        f"toggle_organ({number - 1})",
        f"Label {number}",
        id=f"organ.{number}",
        show=False,
        tooltip=f"Show / hide label {number} in every picture",
    )
    for number in range(len(UW_MADISON) + 1, TOGGLED_LABELS + 1)
]

# The help screen's groups, in its order: a key's id family (its id up to the first dot) -> the group's title.
HELP_GROUPS = {
    "eps": "Epsilon",
    "slice": "Slices",
    "attack": "Attack",
    "export": "Export",
    "focus": "Panels",
    "view": "View",
    "organ": "Organs",
    "graphics": "Display",
    "sidebar": "Display",
    "table2": "Display",
    "copy": "Clipboard",
    "help": "App",
    "quit": "App",
}

# Keys Textual's widgets and the palette provide, listed last.
ANYWHERE_KEYS = [
    Binding("ctrl+p", "command_palette", "Commands", tooltip="Command palette: every action by name"),
    Binding("tab", "focus_next", "Next panel", tooltip="Next panel"),
    Binding("up,down", "", "", tooltip="Move in the focused list (slices: slice by slice)"),
    Binding("up,down,left,right", "", "", tooltip="Focus view, zoomed in: pan (or drag with the mouse)"),
]


def help_groups(
    labels: LabelSet = UW_MADISON,
    keymap: Mapping[str, str] | None = None,
    eps_keys: Mapping[str, str] = EPS_TOOLTIPS,
) -> list[tuple[str, list[Binding]]]:
    """(title, keys) for the help screen: the explorer's keys by HELP_GROUPS, each with the keys ``keymap``
    (the user's, binding id -> keys) gives it and the eps keys' tooltips ``eps_keys``, the label keys
    those of ``labels`` (the data's), then the ones of anywhere."""
    keymap = keymap or {}
    titles = {**HELP_GROUPS, "organ": label_nouns(labels).capitalize()}
    groups: dict[str, list[Binding]] = {title: [] for title in titles.values()}
    for binding in with_eps_tooltips(EXPLORER_KEYS, eps_keys):
        family = binding.id.partition(".")[0]
        if family == "organ":
            continue
        if binding.id in keymap:
            binding = binding.with_key(keymap[binding.id])
        groups[titles[family]].append(binding)
    groups[titles["organ"]] = [
        binding.with_key(keymap[binding.id]) if binding.id in keymap else binding for binding in label_keys(labels)
    ]
    return [*groups.items(), ("Anywhere", ANYWHERE_KEYS)]
