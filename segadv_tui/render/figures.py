"""PNG figures drawn with Pillow: one attacked slice as the paper's figures 5 to 8, eps-sweep plots and the
robustness report's curves.

Pillow only (no matplotlib): the pictures come from ``segadv_tui.render.imagery``, so a PNG shows exactly the
colours of the terminal views. The CLI's ``figure`` / ``sweep`` commands and the TUI's export key use it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageDraw, ImageFont

from core.labels import UW_MADISON, LabelSet
from segadv_tui.render.imagery import (
    DIFFERENCE_DIM,
    FN_COLOUR,
    FP_COLOUR,
    TP_COLOUR,
    Scene,
    compose,
    perturbation,
    perturbation_scale,
)

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (225, 225, 225)
# Line colours for sweep plots, one per loss in order (colour-blind friendly Okabe-Ito hues).
SERIES_COLOURS = ((0, 114, 178), (213, 94, 0), (0, 158, 115), (204, 121, 167), (230, 159, 0), (86, 180, 233), (0, 0, 0))

PANEL_TARGET = 256  # panels are scaled by a whole factor to about this many pixels, nearest neighbour
PAD = 12
# The attack figure's grid: two rows of four panels.
PANEL_LAYOUT = (
    ("input", "adversarial", "perturbation", "truth"),
    ("clean_prediction", "clean_difference", "adversarial_prediction", "adversarial_difference"),
)


def font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    """Pillow's bundled scalable font: the same look on every machine, no system fonts needed."""
    return ImageFont.load_default(size=size)


@dataclass(frozen=True)
class AttackPanels:
    """Everything one attack figure shows, for a single slice at model resolution.

    ``image`` / ``adversarial``: float (H, W) in [0, 1]; masks: bool-able (L, H, W), a channel per label
    of ``labels`` (whose colours and titles the pictures and legend show).
    ``eps`` scales the perturbation picture (None: the perturbation's own L-inf).
    ``dsc_clean`` / ``dsc_adv``: optional mean DSC shown under the prediction panels.
    """

    image: np.ndarray
    adversarial: np.ndarray
    truth: np.ndarray
    clean_prediction: np.ndarray
    adversarial_prediction: np.ndarray
    eps: float | None = None
    dsc_clean: float | None = None
    dsc_adv: float | None = None
    labels: LabelSet = UW_MADISON

    @property
    def colours(self) -> tuple[tuple[int, int, int], ...]:
        return tuple(self.labels.colours.values())

    @classmethod
    def from_result(cls, result, eps: float | None = None) -> AttackPanels:
        """The panels of a ``core.results.SliceResult`` that carries its pictures. The perturbation is
        scaled by ``eps``, or by the realised L-inf where that is larger (the paper's mode reaches 2 eps)."""
        pictures = result.pictures
        scale = max(result.eps if eps is None else eps, result.linf) or None
        return cls(
            image=pictures.image,
            adversarial=pictures.adversarial,
            truth=pictures.reference,
            clean_prediction=pictures.clean_prediction,
            adversarial_prediction=pictures.adversarial_prediction,
            eps=scale,
            dsc_clean=result.mean_clean,
            dsc_adv=result.mean_adv,
            labels=result.labels,
        )

    def scenes(self, visible: tuple[bool, ...] | None = None) -> dict[str, Scene]:
        """Every picture of the attack as a Scene (``imagery.compose`` draws it at any size).

        The keys of ``PANEL_LAYOUT`` (the paper's eight panels), plus the explorer's large views: the clean
        and adversarial predictions as translucent fills with the truth as an outline, both over the clean
        slice (so that only the masks change with eps), and their difference maps over the dimmed slice.
        ``visible``: which labels are drawn (None: all).
        """
        image = np.asarray(self.image, dtype=np.float32)
        adversarial = np.asarray(self.adversarial, dtype=np.float32)
        black = np.zeros_like(image)
        colours = self.colours

        def scene(base, **layers) -> Scene:
            return Scene(base, visible=visible, colours=colours, **layers)

        return {
            "input": scene(image),
            "adversarial": scene(adversarial),
            "perturbation": scene(perturbation(adversarial - image, self.eps)),
            "truth": scene(image, fill=self.truth),
            "clean_prediction": scene(image, fill=self.clean_prediction),
            "clean_difference": scene(black, difference=(self.truth, self.clean_prediction), dim=0.0),
            "adversarial_prediction": scene(adversarial, fill=self.adversarial_prediction),
            "adversarial_difference": scene(black, difference=(self.truth, self.adversarial_prediction), dim=0.0),
            "overlay.clean": scene(image, fill=self.clean_prediction, outline=self.truth),
            "overlay.adversarial": scene(image, fill=self.adversarial_prediction, outline=self.truth),
            "difference.clean": scene(image, difference=(self.truth, self.clean_prediction), dim=DIFFERENCE_DIM),
            "difference.adversarial": scene(
                image, difference=(self.truth, self.adversarial_prediction), dim=DIFFERENCE_DIM
            ),
        }

    def pictures(self, visible: tuple[bool, ...] | None = None) -> dict[str, tuple[str, np.ndarray]]:
        """Panel key -> (title, uint8 RGB picture at image resolution), the keys of ``PANEL_LAYOUT``."""
        image = np.asarray(self.image, dtype=np.float32)
        delta = np.asarray(self.adversarial, dtype=np.float32) - image
        titles = {
            "input": "Input",
            "adversarial": "Adversarial input",
            "perturbation": f"Perturbation (x{perturbation_gain(delta, self.eps)})",
            "truth": "Ground truth",
            "clean_prediction": _with_dsc("Clean prediction", self.dsc_clean),
            "clean_difference": "Difference, clean",
            "adversarial_prediction": _with_dsc("Adversarial prediction", self.dsc_adv),
            "adversarial_difference": "Difference, adversarial",
        }
        scenes = self.scenes(visible)
        return {key: (title, compose(scenes[key], *image.shape)) for key, title in titles.items()}


def _with_dsc(title: str, dsc: float | None) -> str:
    return title if dsc is None or math.isnan(dsc) else f"{title}  DSC {dsc:.3f}"


def perturbation_gain(delta: np.ndarray, eps: float | None) -> str:
    """How much the perturbation picture amplifies: full grey range over the scale it was drawn at."""
    scale = perturbation_scale(delta, eps)
    return f"{0.5 / scale:.0f}" if scale > 0 else "1"


def _scaled(picture: np.ndarray, factor: int) -> Image.Image:
    image = Image.fromarray(np.ascontiguousarray(picture), "RGB")
    if factor == 1:
        return image
    return image.resize((image.width * factor, image.height * factor), Image.NEAREST)


def _swatch_row(
    draw: ImageDraw.ImageDraw, x: int, y: int, items: Sequence[tuple[str, tuple[int, int, int]]], size: int
) -> int:
    """Coloured squares with labels from (x, y); returns the x after the last label."""
    text_font = font(size)
    for label, colour in items:
        draw.rectangle((x, y + 2, x + size, y + size + 2), fill=colour, outline=INK)
        x += size + 6
        draw.text((x, y), label, fill=INK, font=text_font)
        x += int(draw.textlength(label, font=text_font)) + 18
    return x


def attack_figure(panels: AttackPanels, caption: str) -> Image.Image:
    """The figure of one attacked slice: 2 x 4 titled panels, a colour legend and a caption line."""
    pictures = panels.pictures()
    height, width = pictures["input"][1].shape[:2]
    factor = max(1, round(PANEL_TARGET / max(height, width)))
    panel_w, panel_h = width * factor, height * factor
    title_size = 15
    title_h = title_size + 10
    columns = len(PANEL_LAYOUT[0])
    canvas_w = PAD + columns * (panel_w + PAD)
    legend_h, caption_size = 28, 14
    caption_lines = _wrap(caption, font(caption_size), canvas_w - 2 * PAD)
    caption_h = len(caption_lines) * (caption_size + 6) + 6
    canvas_h = PAD + len(PANEL_LAYOUT) * (title_h + panel_h + PAD) + legend_h + caption_h + PAD
    figure = Image.new("RGB", (canvas_w, canvas_h), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    title_font = font(title_size)

    y = PAD
    for row in PANEL_LAYOUT:
        x = PAD
        for key in row:
            title, picture = pictures[key]
            title = _fit(draw, title, title_font, panel_w)
            draw.text((x + panel_w / 2, y + title_h - 6), title, fill=INK, font=title_font, anchor="ms")
            figure.paste(_scaled(picture, factor), (x, y + title_h))
            x += panel_w + PAD
        y += title_h + panel_h + PAD

    organs = [(label.title, label.rgb) for label in panels.labels.labels]
    differences = [("true positive", TP_COLOUR), ("false positive", FP_COLOUR), ("false negative", FN_COLOUR)]
    x = _swatch_row(draw, PAD, y, organs, 14)
    _swatch_row(draw, x + 24, y, differences, 14)
    y += legend_h
    for line in caption_lines:
        draw.text((PAD, y), line, fill=INK, font=font(caption_size))
        y += caption_size + 6
    return figure


def _fit(draw: ImageDraw.ImageDraw, text: str, text_font, width: int) -> str:
    """``text`` shortened with an ellipsis to fit ``width`` pixels."""
    if draw.textlength(text, font=text_font) <= width:
        return text
    while text and draw.textlength(text + "…", font=text_font) > width:
        text = text[:-1]
    return text + "…"


def _wrap(text: str, text_font, width: int) -> list[str]:
    """Greedy wrap to ``width`` pixels, breaking between `` | ``-separated fields first, then between words."""
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))

    def fits(candidate: str) -> bool:
        return measure.textlength(candidate, font=text_font) <= width

    lines: list[str] = []
    for paragraph in text.splitlines() or [""]:
        line = ""
        for field in paragraph.split(" | "):
            candidate = f"{line} | {field}" if line else field
            if fits(candidate):
                line = candidate
                continue
            if line:
                lines.append(line + " |")
            line = ""
            for word in field.split(" "):  # a field longer than a line breaks between words
                candidate = f"{line} {word}" if line else word
                if line and not fits(candidate):
                    lines.append(line)
                    line = word
                else:
                    line = candidate
        lines.append(line)
    return lines


def nice_ticks(low: float, high: float, count: int = 6) -> list[float]:
    """Round tick values (1, 2 or 5 times a power of ten) covering [low, high]."""
    if not (math.isfinite(low) and math.isfinite(high)) or high <= low:
        return [low]
    raw = (high - low) / max(count - 1, 1)
    power = 10 ** math.floor(math.log10(raw))
    step = next(m * power for m in (1, 2, 2.5, 5, 10) if m * power >= raw)
    first = math.floor(low / step + 1e-9) * step
    ticks = []
    value = first
    while value <= high + step * 1e-6:
        if value >= low - step * 1e-6:
            ticks.append(round(value, 12))
        value += step
    return ticks


def _tick_label(value: float, ticks: Sequence[float]) -> str:
    step = ticks[1] - ticks[0] if len(ticks) > 1 else 1.0
    decimals = max(0, -math.floor(math.log10(step) + 1e-9)) if step > 0 else 0
    if step > 0 and abs(round(step * 10**decimals) - step * 10**decimals) > 1e-6:
        decimals += 1  # 2.5 x 10^k steps
    return f"{value:.{decimals}f}"


def line_chart(
    xs: Sequence[float],
    series: Mapping[str, Sequence[float]],
    *,
    title: str,
    x_label: str,
    y_label: str,
    y_range: tuple[float, float] | None = None,
    size: tuple[int, int] = (640, 460),
) -> Image.Image:
    """One line with markers per series over shared ``xs``; NaN values break the line. Axes, ticks, grid, legend."""
    width, height = size
    figure = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(figure)
    title_font, label_font, tick_font = font(17), font(14), font(12)
    left, right, top, bottom = 70, 20, 40, 78
    plot = (left, top, width - right, height - bottom)

    values = [v for ys in series.values() for v in ys if v is not None and math.isfinite(v)]
    x_low, x_high = (min(xs), max(xs)) if xs else (0.0, 1.0)
    if x_high <= x_low:  # one eps: centre it
        pad = abs(x_low) * 0.5 or 0.01
        x_low, x_high = x_low - pad, x_high + pad
    if y_range is None:
        y_low, y_high = (min(values), max(values)) if values else (0.0, 1.0)
        if y_high <= y_low:
            y_low, y_high = y_low - 0.5, y_high + 0.5
    else:
        y_low, y_high = y_range

    def to_px(x: float, y: float) -> tuple[float, float]:
        px = plot[0] + (x - x_low) / (x_high - x_low) * (plot[2] - plot[0])
        py = plot[3] - (y - y_low) / (y_high - y_low) * (plot[3] - plot[1])
        return px, py

    x_ticks, y_ticks = nice_ticks(x_low, x_high, 7), nice_ticks(y_low, y_high, 6)
    for tick in y_ticks:
        _, py = to_px(x_low, tick)
        draw.line((plot[0], py, plot[2], py), fill=GRID)
        draw.line((plot[0] - 5, py, plot[0], py), fill=INK)
        draw.text((plot[0] - 8, py), _tick_label(tick, y_ticks), fill=INK, font=tick_font, anchor="rm")
    for tick in x_ticks:
        px, _ = to_px(tick, y_low)
        draw.line((px, plot[1], px, plot[3]), fill=GRID)
        draw.line((px, plot[3], px, plot[3] + 5), fill=INK)
        draw.text((px, plot[3] + 8), _tick_label(tick, x_ticks), fill=INK, font=tick_font, anchor="mt")
    draw.rectangle(plot, outline=INK)
    draw.text((width / 2, 12), title, fill=INK, font=title_font, anchor="mt")
    draw.text(((plot[0] + plot[2]) / 2, plot[3] + 30), x_label, fill=INK, font=label_font, anchor="mt")
    label = Image.new("RGBA", (int(draw.textlength(y_label, font=label_font)) + 4, 20), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((2, 2), y_label, fill=INK, font=label_font)
    label = label.rotate(90, expand=True)
    figure.paste(label, (6, int((plot[1] + plot[3]) / 2 - label.height / 2)), label)

    for index, (name, ys) in enumerate(series.items()):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        points = [to_px(x, y) if y is not None and math.isfinite(y) else None for x, y in zip(xs, ys)]
        for a, b in zip(points, points[1:]):
            if a is not None and b is not None:
                draw.line((a, b), fill=colour, width=3)
        for point in points:
            if point is not None:
                draw.ellipse((point[0] - 4, point[1] - 4, point[0] + 4, point[1] + 4), fill=colour)

    # Legend in a row under the axis label, outside the plot, so it never hides a line.
    x = plot[0]
    y = plot[3] + 62
    for index, name in enumerate(series):
        colour = SERIES_COLOURS[index % len(SERIES_COLOURS)]
        draw.line((x, y, x + 24, y), fill=colour, width=3)
        draw.ellipse((x + 8, y - 4, x + 16, y + 4), fill=colour)
        draw.text((x + 30, y), name, fill=INK, font=label_font, anchor="lm")
        x += 30 + int(draw.textlength(name, font=label_font)) + 24
    return figure


def sweep_plot(
    eps: Sequence[float],
    dsc: Mapping[str, Sequence[float]],
    attack_success: Mapping[str, Sequence[float]] | None = None,
    *,
    caption: str = "",
) -> Image.Image:
    """Mean DSC against eps, one line per loss; with ``attack_success`` a second chart beside it.

    Missing values (None or NaN) leave a gap in the line.
    """
    charts = [
        line_chart(eps, dsc, title="Mean DSC after the attack", x_label="eps", y_label="mean DSC", y_range=(0.0, 1.0))
    ]
    if attack_success is not None:
        # AS is negative where an attack happens to help the model: extend the axis down to show it.
        values = [v for ys in attack_success.values() for v in ys if v is not None and math.isfinite(v)]
        low = min([0.0, *values])
        low = math.floor(low * 10) / 10 if low < 0 else 0.0
        charts.append(
            line_chart(eps, attack_success, title="Attack success", x_label="eps", y_label="AS", y_range=(low, 1.0))
        )
    caption_font = font(14)
    width = sum(c.width for c in charts)
    caption_lines = _wrap(caption, caption_font, width - 2 * PAD) if caption else []
    caption_h = len(caption_lines) * 20 + (PAD if caption_lines else 0)
    figure = Image.new("RGB", (width, charts[0].height + caption_h), BACKGROUND)
    x = 0
    for chart in charts:
        figure.paste(chart, (x, 0))
        x += chart.width
    draw = ImageDraw.Draw(figure)
    y = charts[0].height
    for line in caption_lines:
        draw.text((PAD, y), line, fill=INK, font=caption_font)
        y += 20
    return figure


def robustness_plot(
    eps: Sequence[float],
    curves: Mapping[str, tuple[Mapping[str, Sequence[float]], Mapping[str, Sequence[float]]]],
    *,
    caption: str = "",
) -> Image.Image:
    """One row per checkpoint (``curves``: label -> (robust DSC series, attack success series), e.g. one
    per organ and their mean): robust DSC against eps on the left, attack success on the right."""
    rows = []
    for label, (dsc, success) in curves.items():
        values = [v for ys in success.values() for v in ys if v is not None and math.isfinite(v)]
        low = min([0.0, *values])
        low = math.floor(low * 10) / 10 if low < 0 else 0.0
        rows.append(
            [
                line_chart(eps, dsc, title=f"{label}: robust DSC", x_label="eps", y_label="DSC", y_range=(0.0, 1.0)),
                line_chart(
                    eps, success, title=f"{label}: attack success", x_label="eps", y_label="AS", y_range=(low, 1.0)
                ),
            ]
        )
    caption_font = font(14)
    width = max(sum(chart.width for chart in row) for row in rows)
    caption_lines = _wrap(caption, caption_font, width - 2 * PAD) if caption else []
    caption_h = len(caption_lines) * 20 + (PAD if caption_lines else 0)
    height = sum(row[0].height for row in rows)
    figure = Image.new("RGB", (width, height + caption_h), BACKGROUND)
    y = 0
    for row in rows:
        x = 0
        for chart in row:
            figure.paste(chart, (x, y))
            x += chart.width
        y += row[0].height
    draw = ImageDraw.Draw(figure)
    for line in caption_lines:
        draw.text((PAD, y), line, fill=INK, font=caption_font)
        y += 20
    return figure
