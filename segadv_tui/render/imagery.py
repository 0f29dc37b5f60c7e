"""RGB pictures of a slice, its masks and an attack, shared by the PNG figures and the terminal views.

Torch-free numpy. A picture is a :class:`Scene`: a base layer (the grey slice, dimmed or not, or a ready
RGB picture), then translucent label fills, TP / FP / FN difference colours and one-pixel label outlines
on top, each label in its label set's colour. :func:`compose` draws a scene at any output size, optionally only a window
of it (the explorer's
zoom), so the PNG figures and every terminal view share one implementation. Shrinking averages areas
(a fill that covers half an output pixel tints it half as much, so a boundary that moves by one image
pixel still shows); growing repeats pixels. Outlines are found at image resolution and kept wherever
any of their pixels falls into an output pixel, so they stay one output pixel thin and never vanish.

The layers that do not change between eps steps (the resampled base, the outlines) are kept in a
:class:`LayerCache`; an eps step recomputes only the fills and differences.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from core.labels import UW_MADISON

# A scene's colours unless it says: UW-Madison's organs (large bowel, small bowel, stomach), as they have
# always been drawn; a scene of another label set carries that set's ``colours``.
ORGAN_COLOURS = UW_MADISON.colours
# The paper's difference map (true positive green, false positive blue, false negative red) in Okabe-Ito's
# bluish green, blue and vermillion: the paper's green and red look alike to deuteranopes, these do not
# (tests/tui/test_palette.py simulates it).
TP_COLOUR, FP_COLOUR, FN_COLOUR = (0, 158, 115), (0, 114, 178), (213, 94, 0)
FILL_ALPHA = 0.55
# Difference maps over the slice: the slice dimmed so that the three colours stand out.
DIFFERENCE_DIM = 0.45


def gray(image: np.ndarray) -> np.ndarray:
    """A [0, 1] slice (H, W) as an RGB picture."""
    g = (np.clip(np.asarray(image, dtype=np.float32), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    return np.repeat(g[..., None], 3, axis=2)


def perturbation_scale(delta: np.ndarray, eps: float | None = None) -> float:
    """The value drawn as full white in ``perturbation``: max(eps, realised L-inf)."""
    linf = float(np.abs(delta).max()) if np.size(delta) else 0.0
    return max(float(eps or 0.0), linf)


def perturbation(delta: np.ndarray, eps: float | None = None) -> np.ndarray:
    """A signed perturbation amplified to the full grey range: -max -> black, 0 -> mid grey, +max -> white.

    The scale is ``perturbation_scale``: eps (so pictures at one eps compare), or the realised L-inf
    where that is larger (the paper's FGSM moves pixels by up to 2 eps) so nothing saturates.
    """
    delta = np.asarray(delta, dtype=np.float32)
    scale = perturbation_scale(delta, eps)
    if scale <= 0:
        return gray(np.full(delta.shape, 0.5, dtype=np.float32))
    return gray(0.5 + 0.5 * np.clip(delta / scale, -1.0, 1.0))


# -- resampling ---------------------------------------------------------------------------------------


def _box_edges(size: int, out: int) -> tuple[np.ndarray, np.ndarray]:
    """Output pixel i covers source [start, stop): whole blocks when shrinking, one pixel when growing."""
    index = np.arange(out)
    start = (index * size) // out
    return start, np.maximum(((index + 1) * size) // out, start + 1)


def box_sums(values: np.ndarray, out_height: int, out_width: int) -> tuple[np.ndarray, np.ndarray]:
    """Sums of ``values`` (..., H, W) over each output pixel's source box, and the boxes' areas (oh, ow).

    A summed-area table, so any ratio costs the same few array operations.
    """
    height, width = values.shape[-2:]
    table = np.zeros(
        values.shape[:-2] + (height + 1, width + 1), dtype=np.float64 if values.dtype.kind == "f" else np.int64
    )
    table[..., 1:, 1:] = values.cumsum(-2).cumsum(-1)
    r0, r1 = _box_edges(height, out_height)
    c0, c1 = _box_edges(width, out_width)
    sums = (
        table[..., r1[:, None], c1[None, :]]
        - table[..., r0[:, None], c1[None, :]]
        - table[..., r1[:, None], c0[None, :]]
        + table[..., r0[:, None], c0[None, :]]
    )
    return sums, (r1 - r0)[:, None] * (c1 - c0)[None, :]


def _repeat_index(size: int, out: int) -> np.ndarray:
    return (np.arange(out) * size) // out


def coverage(masks: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """The fraction of each output pixel that ``masks`` (..., H, W) covers, float32 in [0, 1] (for a
    float array: its mean over the pixel)."""
    masks = np.asarray(masks)
    height, width = masks.shape[-2:]
    if out_height >= height and out_width >= width:  # growing: nearest, no sums needed
        rows, cols = _repeat_index(height, out_height), _repeat_index(width, out_width)
        return masks[..., rows[:, None], cols[None, :]].astype(np.float32)
    sums, area = box_sums(masks.astype(np.float64 if masks.dtype.kind == "f" else np.int32), out_height, out_width)
    return (sums / area).astype(np.float32)


def touched(masks: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Output pixels that contain at least one pixel of ``masks`` (..., H, W): thin lines survive shrinking."""
    masks = np.asarray(masks, dtype=bool)
    height, width = masks.shape[-2:]
    if out_height >= height and out_width >= width:
        rows, cols = _repeat_index(height, out_height), _repeat_index(width, out_width)
        return masks[..., rows[:, None], cols[None, :]]
    sums, _ = box_sums(masks.astype(np.int32), out_height, out_width)
    return sums > 0


def resize_rgb(rgb: np.ndarray, out_height: int, out_width: int) -> np.ndarray:
    """Resize a uint8 (H, W, 3) picture: box (area) average when shrinking, nearest when growing."""
    rgb = np.asarray(rgb)
    height, width = rgb.shape[:2]
    if (height, width) == (out_height, out_width):
        return rgb
    if out_height >= height and out_width >= width:
        rows, cols = _repeat_index(height, out_height), _repeat_index(width, out_width)
        return rgb[rows[:, None], cols[None, :]]
    sums, area = box_sums(np.moveaxis(rgb, -1, 0).astype(np.int64), out_height, out_width)
    return np.moveaxis((sums + area // 2) // area, 0, -1).astype(np.uint8)


# -- layers -------------------------------------------------------------------------------------------


def boundary(masks: np.ndarray) -> np.ndarray:
    """The one-pixel outline of each mask (..., H, W): mask pixels with a 4-neighbour outside the mask
    (the image's edge counts as outside)."""
    masks = np.asarray(masks, dtype=bool)
    padded = np.pad(masks, [(0, 0)] * (masks.ndim - 2) + [(1, 1), (1, 1)])
    inner = padded[..., :-2, 1:-1] & padded[..., 2:, 1:-1] & padded[..., 1:-1, :-2] & padded[..., 1:-1, 2:]
    return masks & ~inner


def shown(visible: tuple[bool, ...] | None, count: int) -> list[bool]:
    """Which of ``count`` labels are drawn: ``visible`` (None: all)."""
    return [True] * count if visible is None else [bool(v) for v in visible]


def difference_classes(truth: np.ndarray, prediction: np.ndarray, visible=None) -> np.ndarray:
    """(3, H, W) bool: true positive, false positive, false negative over the visible labels (None: all) of
    the (L, H, W) masks, exclusive.

    Later classes win where labels overlap: a miss (false negative) is the thing a reader must not overlook.
    """
    show = np.asarray(shown(visible, np.shape(truth)[0]), dtype=bool)
    truth = np.asarray(truth, dtype=bool)[show]
    prediction = np.asarray(prediction, dtype=bool)[show]
    fn = (~prediction & truth).any(axis=0)
    fp = (prediction & ~truth).any(axis=0) & ~fn
    tp = (prediction & truth).any(axis=0) & ~fn & ~fp
    return np.stack([tp, fp, fn])


@dataclass(frozen=True)
class Window:
    """The part of a slice that a picture shows, in image pixels."""

    top: int
    left: int
    height: int
    width: int

    @classmethod
    def whole(cls, shape: tuple[int, int]) -> Window:
        return cls(0, 0, int(shape[0]), int(shape[1]))

    @property
    def rows(self) -> slice:
        return slice(self.top, self.top + self.height)

    @property
    def cols(self) -> slice:
        return slice(self.left, self.left + self.width)

    def crop(self, array: np.ndarray) -> np.ndarray:
        """The window of ``array`` (..., H, W)."""
        return array[..., self.rows, self.cols]


@dataclass(frozen=True, eq=False)
class Scene:
    """What one picture shows, at image resolution; :func:`compose` draws it.

    ``base``: a float (H, W) slice in [0, 1] (drawn grey, times ``dim``; 0 gives black), or a ready
    uint8 (H, W, 3) picture. ``fill``: bool-able (L, H, W) label masks drawn as translucent fills;
    ``difference``: (truth, prediction) drawn as TP / FP / FN colours; ``outline``: (L, H, W) masks
    drawn as one-pixel outlines in the label colours. ``visible``: which labels are drawn (None: all);
    ``colours``: RGB per label, in mask order (a label set's ``colours.values()``).
    """

    base: np.ndarray
    fill: np.ndarray | None = None
    outline: np.ndarray | None = None
    difference: tuple[np.ndarray, np.ndarray] | None = None
    dim: float = 1.0
    visible: tuple[bool, ...] | None = None
    colours: tuple[tuple[int, int, int], ...] = tuple(ORGAN_COLOURS.values())

    @property
    def shape(self) -> tuple[int, int]:
        return tuple(np.shape(self.base)[:2])


class LayerCache:
    """The base and outline layers of recent scenes at recent output sizes and windows.

    An entry is found by its parameters and by its source array: the same object, or equal content
    (frames may carry fresh copies of an unchanged slice). Small and least-recently-used.
    """

    def __init__(self, size: int = 24):
        self.size = size
        self.hits = 0
        self.misses = 0
        self._entries: list[tuple[Hashable, np.ndarray, np.ndarray]] = []

    def get(self, key: Hashable, source: np.ndarray, make):
        for index, (entry_key, entry_source, value) in enumerate(self._entries):
            if entry_key == key and (
                entry_source is source or (entry_source.shape == source.shape and np.array_equal(entry_source, source))
            ):
                self.hits += 1
                if index:
                    self._entries.insert(0, self._entries.pop(index))
                return value
        self.misses += 1
        value = make()
        self._entries.insert(0, (key, source, value))
        del self._entries[self.size :]
        return value


def _base_layer(scene: Scene, window: Window, out_height: int, out_width: int) -> np.ndarray:
    """float32 (oh, ow, 3) in 0..255."""
    base = np.asarray(scene.base)
    if base.ndim == 3:
        return resize_rgb(base[window.rows, window.cols], out_height, out_width).astype(np.float32)
    if scene.dim == 0:
        return np.zeros((out_height, out_width, 3), dtype=np.float32)
    grey = coverage(np.clip(window.crop(base.astype(np.float32)), 0.0, 1.0), out_height, out_width)
    return np.repeat((grey * (255.0 * scene.dim))[..., None], 3, axis=2)


def _blend(rgb: np.ndarray, amount: np.ndarray, colour: tuple[int, int, int]) -> None:
    """rgb = (1 - amount) rgb + amount colour, in place; ``amount`` (oh, ow) in [0, 1]."""
    amount = amount[..., None]
    rgb *= 1.0 - amount
    rgb += amount * np.asarray(colour, dtype=np.float32)


def compose(
    scene: Scene, out_height: int, out_width: int, window: Window | None = None, cache: LayerCache | None = None
) -> np.ndarray:
    """``scene`` (or its ``window``) drawn at (out_height, out_width) pixels, uint8 RGB."""
    window = window or Window.whole(scene.shape)
    geometry = (window, out_height, out_width)
    base = np.asarray(scene.base)
    if cache is None:
        rgb = _base_layer(scene, window, out_height, out_width)
    else:
        rgb = cache.get(
            ("base", scene.dim, geometry), base, lambda: _base_layer(scene, window, out_height, out_width)
        ).copy()
    show = shown(scene.visible, len(scene.colours))
    if scene.fill is not None and any(show):
        fills = coverage(window.crop(np.asarray(scene.fill, dtype=bool)), out_height, out_width)
        for colour, fill, visible in zip(scene.colours, fills, show):
            if visible and fill.any():
                _blend(rgb, FILL_ALPHA * fill, colour)
    if scene.difference is not None and any(show):
        truth, prediction = (window.crop(np.asarray(m, dtype=bool)) for m in scene.difference)
        classes = coverage(difference_classes(truth, prediction, scene.visible), out_height, out_width)
        for amount, colour in zip(classes, (TP_COLOUR, FP_COLOUR, FN_COLOUR)):
            if amount.any():
                _blend(rgb, amount, colour)
    if scene.outline is not None and any(show):
        masks = np.asarray(scene.outline, dtype=bool)

        def outline_layer() -> np.ndarray:
            return touched(window.crop(boundary(masks)), out_height, out_width)

        lines = outline_layer() if cache is None else cache.get(("outline", geometry), masks, outline_layer)
        for colour, line, visible in zip(scene.colours, lines, show):
            if visible:
                rgb[line] = colour
    return (rgb + 0.5).astype(np.uint8)


def overlay(image: np.ndarray, masks: np.ndarray, visible=None, colours=tuple(ORGAN_COLOURS.values())) -> np.ndarray:
    """The slice in grey with each label's mask (L, H, W) tinted in its colour, at image resolution."""
    shape = np.shape(image)
    visible = None if visible is None else tuple(visible)
    return compose(Scene(np.asarray(image), fill=masks, visible=visible, colours=tuple(colours)), *shape)


def difference_map(truth: np.ndarray, prediction: np.ndarray, visible=None) -> np.ndarray:
    """TP green, FP blue, FN red over the visible labels (L, H, W; None: all); black elsewhere, as the
    paper's figures."""
    shape = np.shape(truth)[1:]
    blank = np.zeros(shape, dtype=np.float32)
    visible = None if visible is None else tuple(visible)
    return compose(Scene(blank, difference=(truth, prediction), dim=0.0, visible=visible), *shape)
