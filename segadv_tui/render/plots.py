"""PNG charts for the study commands, drawn with Pillow and ``segadv_tui.render.figures``' helpers: a
heatmap with its numbers in the cells (``segadv transfer``) and a scatter plot (``segadv study``)."""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence

import numpy as np
from PIL import Image, ImageDraw

from segadv_tui.render.figures import (
    BACKGROUND,
    GRID,
    INK,
    PAD,
    SERIES_COLOURS,
    _fit,
    _tick_label,
    _wrap,
    font,
    nice_ticks,
)
from segadv_tui.render.tables import number

# Diverging scale: blue below 0 (the attack helped the model), white at 0, red towards 1.
_LOW, _MID, _HIGH = np.array((33, 102, 172)), np.array((255, 255, 255)), np.array((178, 24, 43))
MISSING_FILL = (235, 235, 235)


def heat_colour(value: float | None, low: float = -1.0, high: float = 1.0) -> tuple[int, int, int]:
    """The fill of a cell: ``_MID`` at 0, ``_HIGH`` at ``high``, ``_LOW`` at ``low``; grey where missing."""
    if value is None or not math.isfinite(value):
        return MISSING_FILL
    if value >= 0:
        t, end = min(1.0, value / high) if high > 0 else 1.0, _HIGH
    else:
        t, end = min(1.0, value / low) if low < 0 else 1.0, _LOW
    return tuple(int(round(c)) for c in _MID + t * (end - _MID))


def _ink_on(fill: tuple[int, int, int]) -> tuple[int, int, int]:
    """Black or white text, whichever reads on ``fill``."""
    luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
    return INK if luminance > 140 else (255, 255, 255)


def heatmap(
    values: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    title: str,
    row_title: str = "",
    column_title: str = "",
    second_line: np.ndarray | None = None,
    second_prefix: str = "",
    marked: np.ndarray | None = None,
    mark_note: str = "",
    caption: str = "",
    digits: int = 3,
) -> Image.Image:
    """``values`` (rows, columns) as coloured cells with the number in each (``second_line``: a smaller
    number under it, after ``second_prefix``); cells where ``marked`` is True get a thick outline,
    explained by ``mark_note`` in the legend line."""
    values = np.asarray(values, dtype=np.float64)
    n_rows, n_columns = values.shape
    title_font, label_font, cell_font, small_font = font(18), font(14), font(17), font(12)
    measure = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    label_w = max([int(measure.textlength(label, font=label_font)) for label in row_labels] + [60]) + 2 * PAD
    cell_w = max([int(measure.textlength(label, font=label_font)) + 16 for label in column_labels] + [110])
    cell_h = 56 if second_line is not None else 40
    top = 40 + (24 if column_title else 0) + 28
    width = label_w + n_columns * cell_w + PAD + (24 if row_title else 0)
    caption_lines = _wrap(caption, font(13), width - 2 * PAD) if caption else []
    legend_h = 30
    height = top + n_rows * cell_h + PAD + legend_h + len(caption_lines) * 19 + PAD
    figure = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    left = label_w + (24 if row_title else 0)

    draw.text((width / 2, 12), _fit(draw, title, title_font, width - 2 * PAD), fill=INK, font=title_font, anchor="mt")
    if column_title:
        draw.text((left + n_columns * cell_w / 2, 44), column_title, fill=INK, font=label_font, anchor="mt")
    if row_title:
        label = Image.new("RGBA", (int(draw.textlength(row_title, font=label_font)) + 4, 20), (0, 0, 0, 0))
        ImageDraw.Draw(label).text((2, 2), row_title, fill=INK, font=label_font)
        label = label.rotate(90, expand=True)
        figure.paste(label, (4, int(top + n_rows * cell_h / 2 - label.height / 2)), label)
    for column, text in enumerate(column_labels):
        draw.text((left + (column + 0.5) * cell_w, top - 8), text, fill=INK, font=label_font, anchor="ms")
    for row, text in enumerate(row_labels):
        draw.text((left - 8, top + (row + 0.5) * cell_h), text, fill=INK, font=label_font, anchor="rm")
        for column in range(n_columns):
            value = values[row, column]
            box = (left + column * cell_w, top + row * cell_h, left + (column + 1) * cell_w, top + (row + 1) * cell_h)
            fill = heat_colour(value)
            draw.rectangle(box, fill=fill, outline=GRID)
            ink = _ink_on(fill)
            centre_x = (box[0] + box[2]) / 2
            main = number(value, digits)
            if second_line is None:
                draw.text((centre_x, (box[1] + box[3]) / 2), main, fill=ink, font=cell_font, anchor="mm")
            else:
                draw.text((centre_x, box[1] + 20), main, fill=ink, font=cell_font, anchor="mm")
                extra = number(second_line[row, column], digits)
                draw.text((centre_x, box[1] + 42), f"{second_prefix}{extra}", fill=ink, font=small_font, anchor="mm")
            if marked is not None and marked[row, column]:
                draw.rectangle((box[0] + 2, box[1] + 2, box[2] - 2, box[3] - 2), outline=INK, width=3)

    y = top + n_rows * cell_h + PAD
    x = left
    for text, value in (("-1", -1.0), ("0", 0.0), ("0.5", 0.5), ("1", 1.0)):
        draw.rectangle((x, y + 2, x + 14, y + 16), fill=heat_colour(value), outline=INK)
        draw.text((x + 20, y), text, fill=INK, font=small_font)
        x += 20 + int(draw.textlength(text, font=small_font)) + 14
    if mark_note:
        draw.rectangle((x + 10, y + 2, x + 24, y + 16), outline=INK, width=3)
        draw.text((x + 30, y), mark_note, fill=INK, font=small_font)
    y += legend_h
    for line in caption_lines:
        draw.text((PAD, y), line, fill=INK, font=font(13))
        y += 19
    return figure


def scatter_plot(
    panels: Mapping[str, tuple[Sequence[float], Sequence[float]]],
    *,
    y_label: str,
    notes: Mapping[str, str] | None = None,
    title: str = "",
    caption: str = "",
    size: tuple[int, int] = (420, 380),
) -> Image.Image:
    """One scatter chart per entry of ``panels`` (x label -> (xs, ys)), side by side in rows of two,
    sharing ``y_label``; ``notes[x label]`` is printed in the chart's corner (e.g. rho and its interval)."""
    charts = [
        _scatter(
            xs,
            ys,
            x_label=label,
            y_label=y_label,
            note=(notes or {}).get(label, ""),
            colour=SERIES_COLOURS[index % len(SERIES_COLOURS)],
            size=size,
        )
        for index, (label, (xs, ys)) in enumerate(panels.items())
    ]
    per_row = min(2, len(charts)) or 1
    n_rows = math.ceil(len(charts) / per_row)
    width = per_row * size[0]
    title_h = 34 if title else 0
    caption_lines = _wrap(caption, font(13), width - 2 * PAD) if caption else []
    height = title_h + n_rows * size[1] + len(caption_lines) * 19 + (PAD if caption_lines else 0)
    figure = Image.new("RGB", (width, height), BACKGROUND)
    draw = ImageDraw.Draw(figure)
    if title:
        draw.text((width / 2, 10), _fit(draw, title, font(17), width - 2 * PAD), fill=INK, font=font(17), anchor="mt")
    for index, chart in enumerate(charts):
        figure.paste(chart, ((index % per_row) * size[0], title_h + (index // per_row) * size[1]))
    y = title_h + n_rows * size[1]
    for line in caption_lines:
        draw.text((PAD, y), line, fill=INK, font=font(13))
        y += 19
    return figure


def _scatter(xs, ys, *, x_label: str, y_label: str, note: str, colour, size) -> Image.Image:
    width, height = size
    chart = Image.new("RGB", size, BACKGROUND)
    draw = ImageDraw.Draw(chart)
    label_font, tick_font = font(14), font(12)
    left, right, top, bottom = 64, 16, 34, 52
    plot = (left, top, width - right, height - bottom)
    points = [
        (float(x), float(y))
        for x, y in zip(xs, ys)
        if x is not None and y is not None and math.isfinite(x) and math.isfinite(y)
    ]

    def span(values: list[float]) -> tuple[float, float]:
        if not values:
            return 0.0, 1.0
        low, high = min(values), max(values)
        margin = (high - low) * 0.05 or abs(low) * 0.1 or 0.5
        return low - margin, high + margin

    x_low, x_high = span([p[0] for p in points])
    y_low, y_high = span([p[1] for p in points])

    def to_px(x: float, y: float) -> tuple[float, float]:
        return (
            plot[0] + (x - x_low) / (x_high - x_low) * (plot[2] - plot[0]),
            plot[3] - (y - y_low) / (y_high - y_low) * (plot[3] - plot[1]),
        )

    x_ticks, y_ticks = nice_ticks(x_low, x_high, 5), nice_ticks(y_low, y_high, 6)
    for tick in y_ticks:
        _, py = to_px(x_low, tick)
        draw.line((plot[0], py, plot[2], py), fill=GRID)
        draw.text((plot[0] - 6, py), _tick_label(tick, y_ticks), fill=INK, font=tick_font, anchor="rm")
    for tick in x_ticks:
        px, _ = to_px(tick, y_low)
        draw.line((px, plot[1], px, plot[3]), fill=GRID)
        draw.text((px, plot[3] + 6), _tick_label(tick, x_ticks), fill=INK, font=tick_font, anchor="mt")
    draw.rectangle(plot, outline=INK)
    for x, y in points:
        px, py = to_px(x, y)
        draw.ellipse((px - 3, py - 3, px + 3, py + 3), fill=colour)
    draw.text(
        ((plot[0] + plot[2]) / 2, plot[3] + 26),
        _fit(draw, x_label, label_font, plot[2] - plot[0]),
        fill=INK,
        font=label_font,
        anchor="mt",
    )
    label = Image.new("RGBA", (int(draw.textlength(y_label, font=label_font)) + 4, 20), (0, 0, 0, 0))
    ImageDraw.Draw(label).text((2, 2), y_label, fill=INK, font=label_font)
    label = label.rotate(90, expand=True)
    chart.paste(label, (4, int((plot[1] + plot[3]) / 2 - label.height / 2)), label)
    if note:
        draw.text((plot[0], 10), _fit(draw, note, label_font, width - plot[0] - right), fill=INK, font=label_font)
    return chart
