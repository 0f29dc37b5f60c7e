"""The pictures of an attacked slice, in four views that ``v`` cycles, over one legend line.

- Overlay (the default): the clean and adversarial predictions side by side, as large as the room
  allows, each a translucent fill over the clean slice with the truth as a one-pixel outline;
- Difference: the clean and adversarial TP / FP / FN maps over the dimmed slice, as large;
- Grid: the paper's eight panels;
- Focus (``z``): the focused picture alone, zoomable down to one image pixel per half cell.

Every view reads one picture bundle (:class:`AttackPanels`); only the view on screen is drawn, and a
hidden view catches up when it is shown. ``1`` to ``9`` show or hide a label (UW-Madison's organs: ``1``
``2`` ``3``) in every view, the first nine of a larger label set. When the
pictures cannot be made (a bad checkpoint, image or data set), the failure and what to do take their
place until the next pictures arrive.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Container, Vertical
from textual.widgets import ContentSwitcher, Static

from core.labels import UW_MADISON, LabelSet
from segadv_tui.keys import TOGGLED_LABELS
from segadv_tui.render.figures import PANEL_LAYOUT, AttackPanels, perturbation_gain
from segadv_tui.render.imagery import FN_COLOUR, FP_COLOUR, TP_COLOUR, LayerCache
from segadv_tui.render.tables import format_score
from segadv_tui.widgets.picture import GRAPHICS_WIDGETS, HalfBlockView, Picture  # noqa: F401  (re-exported)

VIEWS = ("overlay", "difference", "grid", "focus")
VIEW_TITLES = {"overlay": "Overlay", "difference": "Difference", "grid": "Grid", "focus": "Focus"}
# Panels that stay in the grid when the terminal is short (one row of four).
ESSENTIAL_PANELS = ("input", "adversarial", "adversarial_prediction", "adversarial_difference")
GRID_TITLES = {
    "input": "Input",
    "adversarial": "Adversarial input",
    "perturbation": "Perturbation",
    "truth": "Ground truth",
    "clean_prediction": "Clean prediction",
    "clean_difference": "Difference, clean",
    "adversarial_prediction": "Adv. prediction",
    "adversarial_difference": "Difference, adv.",
}
# The picture each view shows in Focus when no picture has the keyboard focus.
DEFAULT_FOCUS = {
    "overlay": "overlay.adversarial",
    "difference": "difference.adversarial",
    "grid": "adversarial_prediction",
    "focus": "overlay.adversarial",
}


def _rgb(colour: tuple[int, int, int]) -> str:
    return f"rgb({colour[0]},{colour[1]},{colour[2]})"


def picture_titles(panels: AttackPanels, has_truth: bool) -> dict[str, str]:
    """Short titles for every picture key, fit for a narrow pane (eps is on the summary line above)."""
    clean, adv = format_score(panels.dsc_clean), format_score(panels.dsc_adv)
    gain = perturbation_gain(panels.adversarial - panels.image, panels.eps)
    titles = dict(GRID_TITLES)
    titles.update(
        {
            "perturbation": f"Perturbation ×{gain}",
            "clean_prediction": f"Clean pred · DSC {clean}",
            "adversarial_prediction": f"Adv. pred · DSC {adv}",
            "overlay.clean": f"Clean · DSC {clean}",
            "overlay.adversarial": f"Adversarial · DSC {adv}",
            "difference.clean": f"Difference, clean · DSC {clean}",
            "difference.adversarial": f"Difference, adversarial · DSC {adv}",
        }
    )
    if not has_truth:
        # A lone PNG: the model's clean prediction stands in for the truth.
        titles["truth"] = "Target (clean pred.)"
    return titles


def legend(
    view: str, key: str | None, visible: tuple[bool, ...], has_truth: bool, labels: LabelSet = UW_MADISON
) -> Text:
    """The line under the pictures: what the colours mean, and which labels of ``labels`` are shown (the
    first nine have a key; the others are always shown)."""
    text = Text(no_wrap=True, overflow="ellipsis")
    for number, (label, shown) in enumerate(zip(labels.labels, visible), start=1):
        if number <= TOGGLED_LABELS:
            text.append(f"{number} ", style="dim")
        if shown:
            text.append("■ ", style=_rgb(label.rgb))
            text.append(label.title.lower())
        else:
            text.append(f"□ {label.title.lower()}", style="dim strike")
        text.append("  ")
    kind = key.split(".")[0] if key and view == "focus" else view
    if kind == "overlay":
        text.append(f"fill = prediction, line = {'truth' if has_truth else 'target'}", style="dim")
    if kind in ("difference", "grid", "clean_difference", "adversarial_difference"):
        for name, colour in (("true pos.", TP_COLOUR), ("false pos.", FP_COLOUR), ("false neg.", FN_COLOUR)):
            text.append("■ ", style=_rgb(colour))
            text.append(f"{name}  ")
    return text


class PictureView(Container):
    """A set of pictures, shown together; ``keys`` are AttackPanels scene keys."""

    keys: tuple[str, ...] = ()

    def __init__(self, renderer: str, cache: LayerCache, **kwargs):
        super().__init__(**kwargs)
        self.renderer = renderer
        self.cache = cache

    def picture(self, key: str) -> Picture:
        return next(p for p in self.query(Picture) if p.key == key)

    def show(self, panels: AttackPanels, has_truth: bool, visible: tuple[bool, ...]) -> None:
        scenes, titles = panels.scenes(visible), picture_titles(panels, has_truth)
        for picture in self.query(Picture):
            picture.show(titles[picture.key], scenes[picture.key])


class OverlayView(PictureView):
    DEFAULT_CSS = "OverlayView { layout: horizontal; } OverlayView > #picture-overlay-clean { margin-right: 1; }"
    keys = ("overlay.clean", "overlay.adversarial")

    def compose(self) -> ComposeResult:
        for key in self.keys:
            yield Picture(key, renderer=self.renderer, cache=self.cache, id=f"picture-{key.replace('.', '-')}")


class DifferenceView(OverlayView):
    DEFAULT_CSS = (
        "DifferenceView { layout: horizontal; } DifferenceView > #picture-difference-clean { margin-right: 1; }"
    )
    keys = ("difference.clean", "difference.adversarial")


class GridView(PictureView):
    DEFAULT_CSS = "GridView { layout: grid; grid-size: 4 2; grid-gutter: 0 1; }"
    keys = tuple(key for row in PANEL_LAYOUT for key in row)

    def compose(self) -> ComposeResult:
        for key in self.keys:
            picture = Picture(key, renderer=self.renderer, cache=self.cache, id=f"image-{key}")
            if key not in ESSENTIAL_PANELS:
                picture.add_class("optional")
            yield picture


class FocusView(PictureView):
    """One picture of any view's, alone and zoomable."""

    def __init__(self, renderer: str, cache: LayerCache, **kwargs):
        super().__init__(renderer, cache, **kwargs)
        self.key = DEFAULT_FOCUS["focus"]

    def compose(self) -> ComposeResult:
        yield Picture(self.key, renderer=self.renderer, cache=self.cache, zoomable=True, id="focus-picture")

    def show(self, panels: AttackPanels, has_truth: bool, visible: tuple[bool, ...]) -> None:
        picture = self.query_one(Picture)
        picture.key = self.key
        picture.show(picture_titles(panels, has_truth)[self.key], panels.scenes(visible)[self.key])


class PictureViews(Vertical):
    """The views in a switcher, the legend line under them; the state of view, shown labels and renderer."""

    DEFAULT_CSS = """
    PictureViews { height: 1fr; }
    PictureViews > ContentSwitcher { height: 1fr; }
    PictureViews > ContentSwitcher > * { height: 1fr; }
    PictureViews > #legend { height: 1; padding: 0 1; color: $text; }
    PictureViews > #failure {
        display: none; height: 1fr; padding: 1 2; border: round $error; border-title-color: $error;
    }
    PictureViews.-failed > ContentSwitcher, PictureViews.-failed > #legend { display: none; }
    PictureViews.-failed > #failure { display: block; }
    """

    def __init__(self, renderer: str = "halfblock", view: str = "overlay", **kwargs):
        super().__init__(**kwargs)
        self.renderer = renderer
        # The first view is the switcher's initial one: a switch made from the screen's on_mount could come
        # before the switcher's own mount, which would set its initial view back.
        self.view = view
        self.labels = UW_MADISON  # until the data or the checkpoint says
        self.organs: tuple[bool, ...] = (True,) * len(self.labels)  # shown, per label
        self.panels: AttackPanels | None = None
        self.has_truth = True
        self.cache = LayerCache()
        self._version = 0  # counts the pictures shown
        self._shown: dict[str, tuple] = {}  # view -> (version, organs, renderer) it last drew
        self.failure: str | None = None  # what is shown instead of the pictures (None: the pictures)

    def compose(self) -> ComposeResult:
        with ContentSwitcher(initial=self.view):
            yield OverlayView(self.renderer, self.cache, id="overlay")
            yield DifferenceView(self.renderer, self.cache, id="difference")
            yield GridView(self.renderer, self.cache, id="grid")
            yield FocusView(self.renderer, self.cache, id="focus")
        yield Static(id="failure", markup=False)
        yield Static(id="legend")

    def on_mount(self) -> None:
        self._update_legend()

    def current(self) -> PictureView:
        return self.query_one(f"#{self.view}", PictureView)

    def show(self, panels: AttackPanels, has_truth: bool) -> None:
        """New pictures: drawn in the view on screen; the others catch up when they are shown."""
        self.panels, self.has_truth = panels, has_truth
        self._version += 1
        self.clear_failure()
        if panels.labels != self.labels:  # pictures of another label set: all of its labels shown
            self.labels, self.organs = panels.labels, (True,) * len(panels.labels)
        self._draw()

    def show_failure(self, title: str, text: str) -> None:
        """``text`` (what failed and what to do) where the pictures would be, until the next pictures
        or :meth:`clear_failure`."""
        self.failure = text
        failure = self.query_one("#failure", Static)
        failure.border_title = title
        failure.update(text)
        self.add_class("-failed")

    def clear_failure(self) -> None:
        self.failure = None
        self.remove_class("-failed")

    def _draw(self) -> None:
        if self.panels is None:
            return
        state = (self._version, self.organs, self.renderer)
        if self._shown.get(self.view) == state:
            return
        self.current().show(self.panels, self.has_truth, self.organs)
        self._shown[self.view] = state
        self._update_legend()

    def show_view(self, view: str, focus_key: str | None = None) -> None:
        """Switch to ``view``; for Focus, show the picture ``focus_key`` (a scene key)."""
        if view == "focus":
            focus = self.query_one(FocusView)
            key = focus_key or DEFAULT_FOCUS[self.view]
            if key != focus.key:
                focus.key = key
                self._shown.pop("focus", None)
        self.view = view
        self.query_one(ContentSwitcher).current = view
        self._draw()
        self._update_legend()

    def set_labels(self, labels: LabelSet) -> None:
        """The label set the pictures show: every label shown again when it changes."""
        if labels != self.labels:
            self.labels, self.organs = labels, (True,) * len(labels)
            self._shown.clear()
            self._draw()
            self._update_legend()

    def toggle_organ(self, index: int) -> None:
        if index >= min(len(self.labels), TOGGLED_LABELS):
            return
        visible = list(self.organs)
        visible[index] = not visible[index]
        self.organs = tuple(visible)
        self._draw()
        self._update_legend()

    def use_renderer(self, renderer: str) -> None:
        self.renderer = renderer
        for picture in self.query(Picture):
            picture.use_renderer(renderer)
        self._shown.clear()
        self._draw()

    def focus_picture(self) -> Picture:
        return self.query_one("#focus-picture", Picture)

    def focus_key(self) -> str:
        """The picture Focus shows: the one with the keyboard focus, else the current view's default."""
        focused = self.app.focused
        if (
            isinstance(focused, Picture)
            and focused.key
            and self.view != "focus"
            and focused in self.current().query(Picture)
        ):
            return focused.key
        return DEFAULT_FOCUS[self.view] if self.view != "focus" else self.query_one(FocusView).key

    def _update_legend(self) -> None:
        if not self.is_mounted:
            return
        key = self.query_one(FocusView).key if self.view == "focus" else None
        self.query_one("#legend", Static).update(
            legend(self.view, key, self.organs, self.has_truth, self.labels), layout=False
        )

    def picture_sizes(self) -> dict[str, tuple[int, int]]:
        """(width, height) in pixels (half cells) of each picture of the current view, as last drawn."""
        return {picture.key: picture.drawn for picture in self.current().query(Picture)}
