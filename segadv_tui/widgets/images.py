"""The Images panel: the eight pictures of an attacked slice, each in a titled, resizable cell."""

from __future__ import annotations

import numpy as np
from rich.style import Style
from textual.app import ComposeResult
from textual.containers import Grid
from textual.strip import Strip
from textual.widget import Widget

from segadv_tui.render.tables import format_score
from segadv_tui.render.figures import PANEL_LAYOUT, AttackPanels
from segadv_tui.render.halfblock import render_strips

# Panels that stay when the terminal is short (one row of four).
ESSENTIAL_PANELS = ("input", "adversarial", "adversarial_prediction", "adversarial_difference")
# Textual-image renderers by --graphics name; filled in by the app's start-up (their import queries the terminal).
GRAPHICS_WIDGETS: dict[str, type[Widget]] = {}


class HalfBlockView(Widget):
    """A picture drawn with our half-block renderer, re-fitted to the cell box on every resize."""

    DEFAULT_CSS = "HalfBlockView { width: 1fr; height: 1fr; }"

    def __init__(self, rgb: np.ndarray | None = None, **kwargs):
        super().__init__(**kwargs)
        self._rgb = rgb
        self._strips: list[Strip] = []
        self._strips_size: tuple[int, int] | None = None

    def show(self, rgb: np.ndarray | None) -> None:
        self._rgb = rgb
        self._strips_size = None
        self.refresh()

    def render_lines(self, crop) -> list[Strip]:
        # The content size once per repaint, not once per line (it is a screen lookup each time).
        width, height = self.content_size
        if self._strips_size != (width, height):
            background = Style(bgcolor=self.rich_style.bgcolor)
            self._strips = [] if self._rgb is None else render_strips(self._rgb, width, height, background)
            self._strips_size = (width, height)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        return self._strips[y] if y < len(self._strips) else Strip.blank(self._strips_size[0], self.rich_style)


class ImagePanel(Widget):
    """A titled picture; the picture widget is our half-block view or a textual-image one."""

    DEFAULT_CSS = """
    ImagePanel { border: round $panel; border-title-color: $text-muted; height: 1fr; width: 1fr; }
    """

    def __init__(self, key: str, title: str, renderer: str = "halfblock", **kwargs):
        super().__init__(id=f"image-{key}", **kwargs)
        self.key = key
        self.border_title = title
        self.renderer = renderer
        self._rgb: np.ndarray | None = None

    def compose(self) -> ComposeResult:
        yield self._picture_widget()

    def _picture_widget(self) -> Widget:
        if self.renderer == "halfblock" or self._rgb is None:
            return HalfBlockView(self._rgb)
        from PIL import Image

        widget = GRAPHICS_WIDGETS[self.renderer](Image.fromarray(np.ascontiguousarray(self._rgb), "RGB"))
        widget.styles.width = "1fr"
        widget.styles.height = "1fr"
        return widget

    def show(self, title: str, rgb: np.ndarray) -> None:
        if title != self.border_title:  # setting it repaints the panel, even to the same text
            self.border_title = title
        # An eps step leaves half the pictures as they were: redrawing them would only cost time.
        if self._rgb is not None and self._rgb.shape == rgb.shape and np.array_equal(self._rgb, rgb):
            return
        self._rgb = rgb
        if self.renderer == "halfblock":
            self.query_one(HalfBlockView).show(rgb)
        else:
            self._swap_picture()

    def use_renderer(self, renderer: str) -> None:
        if renderer != self.renderer:
            self.renderer = renderer
            self._swap_picture()

    def _swap_picture(self) -> None:
        self.remove_children()
        self.mount(self._picture_widget())


class ImageGrid(Grid):
    """Input, adversarial input, amplified perturbation, ground truth, predictions and difference maps."""

    TITLES = {
        "input": "Input", "adversarial": "Adversarial input", "perturbation": "Perturbation",
        "truth": "Ground truth", "clean_prediction": "Clean prediction",
        "clean_difference": "Difference, clean", "adversarial_prediction": "Adv. prediction",
        "adversarial_difference": "Difference, adv.",
    }

    def __init__(self, renderer: str = "halfblock", **kwargs):
        super().__init__(**kwargs)
        self.renderer = renderer

    def compose(self) -> ComposeResult:
        for row in PANEL_LAYOUT:
            for key in row:
                panel = ImagePanel(key, self.TITLES[key], self.renderer)
                if key not in ESSENTIAL_PANELS:
                    panel.add_class("optional")
                yield panel

    def show(self, panels: AttackPanels, has_truth: bool) -> None:
        """The figure's pictures, with titles short enough for a narrow cell."""
        titles = dict(self.TITLES)
        pictures = panels.pictures()
        titles["perturbation"] = pictures["perturbation"][0].replace("Perturbation (x", "Perturbation ×").rstrip(")")
        titles["clean_prediction"] = f"Clean pred · DSC {format_score(panels.dsc_clean)}"
        titles["adversarial_prediction"] = f"Adv. pred · DSC {format_score(panels.dsc_adv)}"
        if not has_truth:
            # A lone PNG: the model's clean prediction stands in for the truth.
            titles["truth"] = "Target (clean pred.)"
        for key, (_, picture) in pictures.items():
            self.query_one(f"#image-{key}", ImagePanel).show(titles[key], picture)

    def use_renderer(self, renderer: str) -> None:
        self.renderer = renderer
        for panel in self.query(ImagePanel):
            panel.use_renderer(renderer)
