"""One titled picture of a Scene, drawn at the widget's own size; the Focus view's picture zooms and pans.

The half-block path composes the scene at exactly the cells it fills (two pixels per cell) and keeps
the packed cells of the last drawing: a new scene redraws, and marks for repainting, only the rows that
differ, so an eps step that moves one organ's boundary repaints a few lines, not the picture. The
kitty / sixel path (textual-image) gets the scene at image resolution, scaled by a whole factor.
"""

from __future__ import annotations

import math

import numpy as np
from rich.segment import Segment
from rich.style import Style
from rich.text import Text
from textual import events
from textual.app import ComposeResult
from textual.binding import Binding
from textual.geometry import Region
from textual.strip import Strip
from textual.widget import Widget

from segadv_tui.render.halfblock import fit_cells, pack_cells, row_segments
from segadv_tui.render.imagery import LayerCache, Scene, Window, compose

# Textual-image renderers by --graphics name; filled in by the app's start-up (their import queries the terminal).
GRAPHICS_WIDGETS: dict[str, type[Widget]] = {}
ZOOM_STEP = 1.25
# kitty / sixel pictures: at least this many pixels on their long side (terminals scale them to the cells).
GRAPHICS_PIXELS = 512


class HalfBlockView(Widget):
    """The scene as half-block cells, centred in the widget; repaints only the rows that changed."""

    DEFAULT_CSS = "HalfBlockView { width: 1fr; height: 1fr; }"

    def __init__(self, picture: Picture, **kwargs):
        super().__init__(**kwargs)
        self.picture = picture
        self._cells: np.ndarray | None = None  # (rows, cols) packed colours of the last drawing
        self._strips: list[Strip] = []
        self._geometry: tuple | None = None  # (box cols, box rows, picture cols, picture rows, left, top, bg)
        self.repainted_rows = 0  # rows marked for repainting by the last update (tests, benchmark)

    def on_resize(self) -> None:
        self.update(partial=False)

    def update(self, partial: bool = True, repaint: bool = True) -> None:
        """Draw the picture's scene again; with ``partial``, repaint only the rows that differ.

        ``repaint=False`` while Textual is already painting this widget (it asked for the lines).
        """
        width, height = self.content_size
        scene = self.picture.scene
        if scene is None or width <= 0 or height <= 0:
            self._cells, self._strips, self._geometry = None, [], None
            if repaint:
                self.refresh()
            return
        window = self.picture.window((width, height))
        cols, rows = fit_cells(window.height, window.width, width, height)
        cells = pack_cells(compose(scene, 2 * rows, cols, window, self.picture.cache))
        left, top = (width - cols) // 2, (height - rows) // 2
        geometry = (width, height, cols, rows, left, top, self.rich_style.bgcolor)
        self.picture.drawn = (cols, 2 * rows)
        if partial and geometry == self._geometry and self._cells is not None:
            changed = np.flatnonzero((cells != self._cells).any(axis=1))
        else:
            changed = None
            blank = Strip([Segment(" " * width, Style(bgcolor=geometry[-1]))], width)
            self._strips = [blank] * height
        self._geometry, self._cells = geometry, cells
        background = Style(bgcolor=geometry[-1])
        pad_left = [Segment(" " * left, background)] if left else []
        pad_right = [Segment(" " * (width - cols - left), background)] if width - cols - left else []
        for row in range(rows) if changed is None else changed.tolist():
            self._strips[top + row] = Strip(pad_left + row_segments(cells[row]) + pad_right, width)
        if changed is None:
            self.repainted_rows = height
            if repaint:
                self.refresh()
        else:
            self.repainted_rows = len(changed)
            for row in changed.tolist():
                self.refresh(Region(0, top + row, width, 1))

    def render_lines(self, crop) -> list[Strip]:
        # Drawn on demand too: a picture whose view was hidden has had no size to draw at; and again when
        # the background changed (a theme picked in the palette), as the margins are drawn in it.
        geometry = self._geometry
        if geometry is None or geometry[:2] != tuple(self.content_size) or geometry[-1] != self.rich_style.bgcolor:
            self.update(partial=False, repaint=False)
        return super().render_lines(crop)

    def render_line(self, y: int) -> Strip:
        if y < len(self._strips):
            return self._strips[y]
        return Strip.blank(self.content_size.width, self.rich_style)


class PictureTitle(Widget):
    """The title row over a picture, drawn like a border's top edge: ``─ Title ──────``.

    A row of its own, not a border title: a border title belongs to the whole widget, so changing it
    (the DSC in it changes with every eps step) would repaint every row of the picture under it.
    """

    COMPONENT_CLASSES = {"picture-title--line"}
    DEFAULT_CSS = """
    PictureTitle { height: 1; color: $text-muted; }
    PictureTitle > .picture-title--line { color: $panel; }
    """

    def __init__(self, text: str = "", **kwargs):
        super().__init__(**kwargs)
        self.text = text

    def show(self, text: str) -> None:
        if text != self.text:
            self.text = text
            self.refresh()

    def render(self) -> Text:
        width = self.content_size.width
        title = Text(self.text[: max(0, width - 4)], no_wrap=True)
        line = self.get_component_rich_style("picture-title--line")
        return Text.assemble(
            ("─ ", line), title, (" " + "─" * max(0, width - len(title) - 3), line), no_wrap=True, end=""
        )


class Picture(Widget, can_focus=True):
    """A titled picture of a Scene; focusable (``z`` shows the focused one alone), zoomable when ``zoomable``.

    Zoom is a factor over the fitted size (1: the whole slice) up to one image pixel per half cell;
    the window of the slice shown is kept inside the slice.
    """

    DEFAULT_CSS = """
    Picture { width: 1fr; height: 1fr; layout: vertical; }
    Picture:focus > PictureTitle { color: $text; text-style: bold; }
    Picture:focus > PictureTitle > .picture-title--line { color: $primary; }
    """
    BINDINGS = [
        Binding("up", "pan(-1, 0)", "Pan up", show=False),
        Binding("down", "pan(1, 0)", "Pan down", show=False),
        Binding("left", "pan(0, -1)", "Pan left", show=False),
        Binding("right", "pan(0, 1)", "Pan right", show=False),
    ]

    def __init__(
        self,
        key: str,
        title: str = "",
        renderer: str = "halfblock",
        cache: LayerCache | None = None,
        zoomable: bool = False,
        **kwargs,
    ):
        super().__init__(**kwargs)
        self.key = key
        self.title = title  # as given; ``heading`` adds what a zoomed picture shows
        self.heading = title
        self.renderer = renderer
        self.cache = cache if cache is not None else LayerCache()
        self.zoomable = zoomable
        self.scene: Scene | None = None
        self.zoom = 1.0
        self.drawn = (0, 0)  # (width, height) in pixels (half cells) of the last half-block drawing
        self._origin = (0.0, 0.0)  # top-left of the window, image pixels (fractional while dragging)
        self._box = (0, 0)  # the cells the last window was computed for
        self._drag: tuple[int, int, float, float] | None = None

    def compose(self) -> ComposeResult:
        yield PictureTitle(self.heading)
        yield self._picture_widget()

    def _picture_widget(self) -> Widget:
        if self.renderer == "halfblock":
            return HalfBlockView(self)
        from PIL import Image

        widget = GRAPHICS_WIDGETS[self.renderer](Image.fromarray(self._graphics_rgb(), "RGB") if self.scene else None)
        widget.styles.width = "1fr"
        widget.styles.height = "1fr"
        return widget

    def _graphics_rgb(self) -> np.ndarray:
        window = self.window()
        factor = max(1, math.ceil(GRAPHICS_PIXELS / max(window.height, window.width)))
        return compose(self.scene, window.height * factor, window.width * factor, window, self.cache)

    # -- content -----------------------------------------------------------------------------------

    def show(self, title: str, scene: Scene) -> None:
        """A new scene (and title); zoom and pan stay where they are when the slice keeps its size."""
        if self.scene is not None and self.scene.shape != scene.shape:
            self.zoom, self._origin = 1.0, (0.0, 0.0)
        self.scene = scene
        self.title = title
        self._update_title()
        self._redraw()

    def _redraw(self) -> None:
        if not self.is_mounted or len(self.children) < 2:
            return
        if self.renderer == "halfblock":
            self.query_one(HalfBlockView).update()
        elif self.scene is not None:
            from PIL import Image

            self.children[-1].image = Image.fromarray(self._graphics_rgb(), "RGB")

    def use_renderer(self, renderer: str) -> None:
        if renderer != self.renderer:
            self.renderer = renderer
            if self.is_mounted and len(self.children) == 2:
                self.children[-1].remove()
                self.mount(self._picture_widget())

    # -- zoom and pan ------------------------------------------------------------------------------

    def _content_box(self) -> tuple[int, int]:
        """(cols, rows) of the picture's box (under the title); while its view is hidden, the last size it had."""
        size = self.children[-1].content_size if len(self.children) == 2 else None
        if size is not None and size.area:
            self._box = tuple(size)
        return self._box

    def fit_scale(self, box: tuple[int, int] | None = None) -> float:
        """Half cells per image pixel when the whole slice fits the box."""
        cols, rows = box or self._content_box()
        height, width = self.scene.shape if self.scene is not None else (1, 1)
        return min(cols / width, 2 * rows / height) if cols > 0 and rows > 0 else 1.0

    def max_zoom(self, box: tuple[int, int] | None = None) -> float:
        """The zoom at which one image pixel is one half cell (never below 1: the whole slice)."""
        return max(1.0, 1.0 / self.fit_scale(box)) if self.zoomable else 1.0

    def window(self, box: tuple[int, int] | None = None) -> Window:
        """The part of the slice shown in a box of (cols, rows) cells at the current zoom and pan."""
        if self.scene is None:
            return Window(0, 0, 1, 1)
        box = box or self._content_box()
        height, width = self.scene.shape
        zoom = min(self.zoom, self.max_zoom(box))
        if zoom <= 1.0:
            return Window.whole((height, width))
        scale = self.fit_scale(box) * zoom
        cols, rows = box
        window_h = max(1, min(height, int(2 * rows / scale + 1e-9)))
        window_w = max(1, min(width, int(cols / scale + 1e-9)))
        top = int(round(min(max(self._origin[0], 0.0), height - window_h)))
        left = int(round(min(max(self._origin[1], 0.0), width - window_w)))
        return Window(top, left, window_h, window_w)

    @property
    def zoomed(self) -> bool:
        """Whether only a part of the slice is shown."""
        if self.scene is None:
            return False
        window = self.window()
        return (window.height, window.width) != self.scene.shape

    def set_zoom(self, zoom: float) -> None:
        """Zoom about the centre of the window shown now, within [1, ``max_zoom``]."""
        if self.scene is None:
            return
        before = self.window()
        self.zoom = min(max(1.0, zoom), self.max_zoom())
        after = self.window()
        centre = (before.top + before.height / 2, before.left + before.width / 2)
        self._origin = (centre[0] - after.height / 2, centre[1] - after.width / 2)
        self._clamp_origin()
        self._changed_view()

    def zoom_in(self) -> bool:
        """One step closer; False when already at one image pixel per half cell."""
        if self.zoom >= self.max_zoom() - 1e-9:
            return False
        step = self.zoom * ZOOM_STEP
        self.set_zoom(self.max_zoom() if step > self.max_zoom() / 1.1 else step)
        return True

    def zoom_out(self) -> bool:
        if self.zoom <= 1.0 + 1e-9:
            return False
        step = min(self.zoom, self.max_zoom()) / ZOOM_STEP
        self.set_zoom(1.0 if step < 1.1 else step)
        return True

    def pan(self, rows: float, cols: float) -> None:
        """Move the window by ``rows`` / ``cols`` image pixels, staying inside the slice."""
        self._origin = (self._origin[0] + rows, self._origin[1] + cols)
        self._clamp_origin()
        self._changed_view()

    def _clamp_origin(self) -> None:
        window = self.window()
        height, width = self.scene.shape
        self._origin = (
            min(max(self._origin[0], 0.0), height - window.height),
            min(max(self._origin[1], 0.0), width - window.width),
        )

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        # The arrows pan only a zoomed picture; otherwise they do what they do elsewhere.
        if action == "pan":
            return self.zoomable and self.zoomed
        return True

    def action_pan(self, rows: int, cols: int) -> None:
        window = self.window()
        self.pan(rows * max(1, window.height // 8), cols * max(1, window.width // 8))

    def on_mouse_down(self, event: events.MouseDown) -> None:
        if self.zoomable and self.zoomed:
            self._drag = (event.screen_x, event.screen_y, *self._origin)
            self.capture_mouse()

    def on_mouse_move(self, event: events.MouseMove) -> None:
        if self._drag is None:
            return
        x0, y0, top, left = self._drag
        scale = self.fit_scale() * min(self.zoom, self.max_zoom())
        # The slice follows the pointer: one cell is 1 / scale image pixels across, 2 / scale down.
        self._origin = (top - 2 * (event.screen_y - y0) / scale, left - (event.screen_x - x0) / scale)
        self._clamp_origin()
        self._changed_view()

    def on_mouse_up(self) -> None:
        if self._drag is not None:
            self._drag = None
            self.release_mouse()

    def on_mouse_scroll_up(self, event: events.MouseScrollUp) -> None:
        if self.zoomable:
            event.stop()
            self.zoom_in()

    def on_mouse_scroll_down(self, event: events.MouseScrollDown) -> None:
        if self.zoomable:
            event.stop()
            self.zoom_out()

    def on_resize(self) -> None:
        if self.zoomable and self.scene is not None:
            self._clamp_origin()
            self._update_title()

    def _changed_view(self) -> None:
        self._update_title()
        self._redraw()
        self.refresh_bindings()

    def _update_title(self) -> None:
        title = self.title
        if self.zoomable and self.scene is not None:
            height, width = self.scene.shape
            window = self.window()
            if self.zoomed:
                zoom = min(self.zoom, self.max_zoom())
                detail = "1 px per half cell" if zoom >= self.max_zoom() - 1e-9 else f"×{zoom:.2f}"
                title = (
                    f"{title} · {detail} · rows {window.top}–{window.top + window.height - 1}, "
                    f"cols {window.left}–{window.left + window.width - 1} of {height}×{width}"
                )
            else:
                title = f"{title} · whole slice {height}×{width}"
        self.heading = title
        if self.is_mounted and self.children:
            self.query_one(PictureTitle).show(title)
