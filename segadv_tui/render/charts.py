"""Charts for papers, drawn with matplotlib: the eps sweep (``segadv sweep``), the robustness curves
(``segadv robust``), the transfer heatmap (``segadv transfer``), the intensity scatter (``segadv study
luminosity``) and the journal form of one attacked slice (``segadv figure --out fig.pdf``).

Each takes plain data (names, numbers, colours as "#RRGGBB" or RGB) and a ``FigureStyle`` (one or two journal
columns wide, the PNG resolution) and returns a ``Chart``; ``save_chart`` writes it as PDF, SVG or PNG by the
file's extension. The files are reproducible (the same chart gives the same bytes): no creation date in PDF
or SVG, SVG ids derived from the content; fonts are embedded as TrueType (pdf.fonttype 42), never Type 3,
which journals' checkers refuse. A chart's caption (the run's provenance) goes into the file's metadata, not
onto the figure: a journal typesets captions itself.

matplotlib takes about a second to import: the commands import this module when they draw, the explorer
never does (its pictures are ``segadv_tui.render.imagery``'s). No pyplot: figures are plain ``Figure``
objects, so nothing global is touched and no GUI backend is ever chosen.
"""

from __future__ import annotations

import functools
import math
import textwrap
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np
from matplotlib import rc_context
from matplotlib.colors import Normalize, to_rgb
from matplotlib.figure import Figure
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import MaxNLocator

import core
from core.files import atomic_write
from core.labels import OKABE_ITO
from segadv_tui.render.figure_style import FigureStyle, figure_format
from segadv_tui.render.tables import number

Colour = str | tuple[int, int, int]

# Sizes for a figure printed at its width: 7-8 pt text, thin lines (journals ask for 6 pt at the least).
STYLE = {
    "font.family": "DejaVu Sans",  # shipped with matplotlib: the same glyphs on every machine
    "font.size": 8,
    "axes.titlesize": 8,
    "axes.labelsize": 8,
    "xtick.labelsize": 7,
    "ytick.labelsize": 7,
    "legend.fontsize": 7,
    "figure.titlesize": 9,
    "axes.linewidth": 0.6,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.grid": True,
    "grid.color": "#dddddd",
    "grid.linewidth": 0.5,
    "lines.linewidth": 1.2,
    "lines.markersize": 3.5,
    "xtick.major.width": 0.6,
    "ytick.major.width": 0.6,
    "legend.frameon": False,
    "pdf.fonttype": 42,
    "ps.fonttype": 42,
    "svg.fonttype": "path",  # glyphs as outlines: the SVG looks the same without the font installed
    "svg.hashsalt": "segadv",  # SVG ids from the content, not a random salt: the same chart, the same bytes
    "image.interpolation": "none",  # slice panels stay pixels: PDF and SVG embed them unresampled
}
# Lines of things that are not labels (losses): Okabe-Ito without its yellow, which vanishes on white.
SERIES_COLOURS = tuple(OKABE_ITO[i] for i in (4, 5, 2, 6, 0, 1))
MEAN_COLOUR = "#000000"  # the mean over labels, beside the labels' own colours
HEAT_MAP = "RdBu_r"  # diverging, blue below 0 (the attack helped), red towards 1; readable by deuteranopes
MISSING_FILL = "#ebebeb"


@dataclass
class Chart:
    """A drawn figure with the title and caption its file's metadata records."""

    figure: Figure
    title: str
    caption: str = ""


def _styled(draw):
    """Draw under ``STYLE``: text sizes are read when the text is made, so the whole drawing needs it."""

    @functools.wraps(draw)
    def styled(*args, **kwargs):
        with rc_context(STYLE):
            return draw(*args, **kwargs)

    return styled


def save_chart(path, chart: Chart) -> None:
    """Write ``chart`` to ``path`` as its extension says (``figure_style.figure_format``), atomically; the
    PNG at the chart's resolution."""
    kind = figure_format(path)
    metadata = {"Title": chart.title, "Creator": f"segadv {core.__version__}"}
    if kind == "pdf":
        metadata |= {"Subject": chart.caption, "CreationDate": None}
    elif kind == "svg":
        metadata |= {"Description": chart.caption, "Date": None}
    else:
        metadata |= {"Description": chart.caption}
    with rc_context(STYLE):
        atomic_write(path, lambda stream: chart.figure.savefig(stream, format=kind, dpi="figure", metadata=metadata))


def _colour(colour: Colour) -> tuple[float, float, float]:
    if isinstance(colour, str):
        return to_rgb(colour)
    return (colour[0] / 255, colour[1] / 255, colour[2] / 255)


def _values(values: Sequence[float | None]) -> np.ndarray:
    """Numbers to draw, None as NaN (matplotlib leaves a gap there)."""
    return np.array([np.nan if v is None else float(v) for v in values], dtype=np.float64)


def _success_floor(series: Mapping[str, Sequence[float | None]]) -> float:
    """The lowest attack success to show: 0, or the lowest value's tenth below (an attack can help a model)."""
    finite = [v for values in series.values() for v in _values(values) if math.isfinite(v)]
    low = min([0.0, *finite])
    return math.floor(low * 10) / 10 if low < 0 else 0.0


def _padded(y_range: tuple[float, float]) -> tuple[float, float]:
    """A score axis a little wider than its range, so that a marker at 0 or 1 is drawn whole."""
    margin = 0.03 * (y_range[1] - y_range[0])
    return y_range[0] - margin, y_range[1] + margin


def _figure(style: FigureStyle, height: float) -> Figure:
    return Figure(figsize=(style.inches, height), dpi=style.dpi, layout="constrained")


def _legend(figure: Figure, handles: Sequence, style: FigureStyle) -> None:
    """One legend for every panel, under them (``outside``: constrained layout keeps room for it), in as
    many columns as the widest entry allows across the figure, read row by row."""
    widest = max(len(handle.get_label()) for handle in handles)
    # An entry takes its swatch (about 3 em) and its text (about 0.55 em a character) at the legend's size.
    entry = (3 + 0.55 * widest) * STYLE["legend.fontsize"] / 72
    columns = max(1, min(len(handles), int(style.inches * 0.95 // entry)))
    rows = math.ceil(len(handles) / columns)
    # matplotlib fills a legend column by column: transpose, so the entries read across as given.
    order = [r * columns + c for c in range(columns) for r in range(rows) if r * columns + c < len(handles)]
    figure.legend(handles=[handles[i] for i in order], loc="outside lower center", ncols=columns)


def _wrap(text: str, inches: float, size: float) -> str:
    """``text`` in lines about ``inches`` wide at ``size`` pt, broken between its fields (parts two spaces
    apart, such as "rho 0.12  95% CI [0.01, 0.20]  n 40") where it can, else between words."""
    width = max(10, int(inches * 72 / (0.6 * size)))  # DejaVu Sans: about 0.6 em a character
    lines: list[str] = []
    for field in text.split("  "):
        if lines and len(lines[-1]) + 2 + len(field) <= width:
            lines[-1] += "  " + field
        else:
            lines += textwrap.wrap(field, width, break_long_words=False, break_on_hyphens=False) or [""]
    return "\n".join(lines)


def _eps_axis(ax, style: FigureStyle) -> None:
    """Few enough eps ticks that their labels (0.0125 and the like) never touch."""
    ax.xaxis.set_major_locator(MaxNLocator(nbins=4 if style.single else 6))


@_styled
def sweep_chart(
    eps: Sequence[float],
    dsc: Mapping[str, Sequence[float | None]],
    attack_success: Mapping[str, Sequence[float | None]] | None = None,
    *,
    style: FigureStyle,
    caption: str = "",
) -> Chart:
    """Mean DSC against eps, a line per loss; with ``attack_success`` a second panel (beside it on two
    columns, under it on one). Missing values (None, NaN) leave a gap."""
    panels = [("Mean DSC after the attack", "mean DSC", dsc, (0.0, 1.0))]
    if attack_success is not None:
        panels.append(("Attack success", "attack success", attack_success, (_success_floor(attack_success), 1.0)))
    rows, columns = (len(panels), 1) if style.single else (1, len(panels))
    figure = _figure(style, 2.3 * rows + 0.4 if style.single else 2.9)
    axes = figure.subplots(rows, columns, squeeze=False).ravel()
    xs = _values(eps)
    for ax, (title, y_label, series, y_range) in zip(axes, panels):
        for index, (name, values) in enumerate(series.items()):
            ax.plot(xs, _values(values), marker="o", color=SERIES_COLOURS[index % len(SERIES_COLOURS)], label=name)
        ax.set(title=title, xlabel="eps", ylabel=y_label, ylim=_padded(y_range))
        _eps_axis(ax, style)
    _legend(figure, axes[0].get_legend_handles_labels()[0], style)
    return Chart(figure, "Mean DSC and attack success against eps", caption)


@_styled
def robustness_chart(
    eps: Sequence[float],
    curves: Mapping[str, tuple[Mapping[str, Sequence[float | None]], Mapping[str, Sequence[float | None]]]],
    colours: Mapping[str, Colour],
    *,
    style: FigureStyle,
    caption: str = "",
) -> Chart:
    """A row per checkpoint (``curves``: its name -> (robust DSC series, attack success series)): robust
    DSC against eps on the left, attack success on the right. A series named in ``colours`` (a label) is
    drawn in its colour, any other (the mean) in black, thicker."""
    figure = _figure(style, (1.9 if style.single else 2.5) * len(curves) + 0.45)
    rows = figure.subfigures(len(curves), 1, squeeze=False).ravel()
    xs = _values(eps)
    handles: list = []
    for row, (name, (dsc, success)) in zip(rows, curves.items()):
        row.suptitle(name)
        for ax, series, title, y_range in zip(
            row.subplots(1, 2),
            (dsc, success),
            ("robust DSC", "attack success"),
            ((0.0, 1.0), (_success_floor(success), 1.0)),
        ):
            for label, values in series.items():
                known = label in colours
                ax.plot(
                    xs,
                    _values(values),
                    marker="o",
                    label=label,
                    color=_colour(colours[label]) if known else MEAN_COLOUR,
                    linewidth=None if known else 1.8,
                )
            ax.set(xlabel="eps", ylabel=title, ylim=_padded(y_range))
            _eps_axis(ax, style)
            handles = handles or ax.get_legend_handles_labels()[0]
    _legend(figure, handles, style)
    return Chart(figure, "Robust DSC and attack success against eps", caption)


@_styled
def heatmap_chart(
    values: np.ndarray,
    row_labels: Sequence[str],
    column_labels: Sequence[str],
    *,
    style: FigureStyle,
    title: str,
    row_title: str = "",
    column_title: str = "",
    colour_title: str = "",
    second_line: np.ndarray | None = None,
    second_prefix: str = "",
    marked: np.ndarray | None = None,
    mark_note: str = "",
    caption: str = "",
    digits: int = 3,
) -> Chart:
    """``values`` (rows, columns) in [-1, 1] as coloured cells with the number in each (``second_line``: a
    second number under it, after ``second_prefix``); cells where ``marked`` is True are outlined, as the
    legend's ``mark_note`` says. Missing values (NaN) are grey, "n/a"."""
    values = np.asarray(values, dtype=np.float64)
    n_rows, n_columns = values.shape
    label_size, text_em = STYLE["ytick.labelsize"], 0.6  # DejaVu Sans: about 0.6 em a character
    if style.single:  # room for the cells: long row names on two lines, the colour bar under the map
        row_labels = [_wrap(label, 1.2, label_size) for label in row_labels]
    label_pt = max(len(line) for label in row_labels for line in label.split("\n")) * text_em * label_size + 20
    cell_pt = (style.inches * 72 - label_pt - (0 if style.single else 60) - 10) / n_columns

    def cell_texts(prefix: str) -> list[list[str]]:
        return [
            [
                number(values[row, column], digits)
                + ("" if second_line is None else f"\n{prefix}{number(second_line[row, column], digits)}")
                for column in range(n_columns)
            ]
            for row in range(n_rows)
        ]

    def fitting_size(texts: list[list[str]]) -> float:
        longest = max(len(line) for row in texts for text in row for line in text.split("\n"))
        return min(7.0, 0.9 * cell_pt / (text_em * longest))

    texts = cell_texts(second_prefix)
    if second_prefix and fitting_size(texts) < 5:  # too narrow for the prefix: the colour bar's title says it
        texts = cell_texts("")
        colour_title = f"{colour_title} (under it: {second_prefix.strip()})"
    size = max(4.5, fitting_size(texts))

    def widest_pt(labels: Sequence[str]) -> float:
        return max(len(line) for label in labels for line in label.split("\n")) * text_em * label_size + 6

    # Column names across, on lines as wide as a cell; where a word is wider, they stand upright.
    wrapped = [_wrap(label, (cell_pt - 6) / 72, label_size) for label in column_labels]
    slanted = widest_pt(wrapped) > cell_pt
    column_labels = list(column_labels) if slanted else wrapped
    column_pt = widest_pt(column_labels)
    lines = 1 if second_line is None else 2
    height = (
        0.25
        * (
            _wrap(title, 0.95 * style.inches, STYLE["axes.titlesize"]).count("\n")
            + 1
            + bool(column_title)
            + bool(mark_note)
        )
        + n_rows * (lines * size * 1.3 / 72 + 0.12)
        + (column_pt / 72 if slanted else 0.15 * max(label.count("\n") + 1 for label in column_labels))
        + (0.55 if style.single else 0)
        + 0.3
    )
    figure = _figure(style, height)
    ax = figure.subplots()
    ax.grid(False)
    norm = Normalize(-1.0, 1.0, clip=True)
    cmap = _heat_map()
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap, norm=norm, aspect="auto")
    for row in range(n_rows):
        for column in range(n_columns):
            value = values[row, column]
            fill = cmap(norm(value)) if math.isfinite(value) else _colour(MISSING_FILL)
            luminance = 0.299 * fill[0] + 0.587 * fill[1] + 0.114 * fill[2]
            ink = "black" if luminance > 0.55 else "white"
            ax.text(column, row, texts[row][column], ha="center", va="center", fontsize=size, color=ink)
            if marked is not None and marked[row, column]:
                # Inset, so that two outlined neighbours keep a line of their colours between them.
                ax.add_patch(Rectangle((column - 0.44, row - 0.42), 0.88, 0.84, fill=False, linewidth=1.4))
    if slanted:
        ax.set_xticks(range(n_columns), column_labels, rotation=90)
    else:
        ax.set_xticks(range(n_columns), column_labels)
    ax.set_yticks(range(n_rows), row_labels)
    ax.tick_params(length=0)
    for spine in ax.spines.values():
        spine.set_visible(False)
    figure.suptitle(_wrap(title, 0.95 * style.inches, STYLE["axes.titlesize"]), fontsize=STYLE["axes.titlesize"])
    ax.set(xlabel=column_title, ylabel=row_title)
    if style.single:
        figure.colorbar(image, ax=ax, label=colour_title, location="bottom", shrink=0.8, aspect=30)
    else:
        figure.colorbar(image, ax=ax, label=colour_title, shrink=0.9, aspect=15)
    if mark_note:
        _legend(figure, [Patch(fill=False, edgecolor="black", linewidth=1.4, label=mark_note)], style)
    return Chart(figure, title, caption)


def _heat_map():
    from matplotlib import colormaps

    return colormaps[HEAT_MAP].with_extremes(bad=MISSING_FILL)


@_styled
def scatter_chart(
    panels: Mapping[str, tuple[Sequence[float | None], Sequence[float | None]]],
    *,
    style: FigureStyle,
    y_label: str,
    notes: Mapping[str, str] | None = None,
    title: str = "",
    caption: str = "",
) -> Chart:
    """One scatter panel per entry of ``panels`` (x label -> (xs, ys)), two to a row, sharing ``y_label``;
    ``notes[x label]`` is the panel's title (e.g. rho and its interval)."""
    columns = min(2, len(panels)) or 1
    n_rows = math.ceil(len(panels) / columns)
    figure = _figure(style, (1.8 if style.single else 2.6) * n_rows + 0.3)
    axes = figure.subplots(n_rows, columns, squeeze=False, sharey=True).ravel()
    note_size = STYLE["xtick.labelsize"]
    for ax, (x_label, (xs, ys)) in zip(axes, panels.items()):
        ax.scatter(_values(xs), _values(ys), s=8, color=SERIES_COLOURS[0], linewidths=0)
        ax.set_title(_wrap((notes or {}).get(x_label, ""), 0.9 * style.inches / columns, note_size), fontsize=note_size)
        ax.set_xlabel(_wrap(x_label, 0.9 * style.inches / columns, STYLE["axes.labelsize"]))
    figure.supylabel(y_label, fontsize=STYLE["axes.labelsize"])
    for ax in axes[len(panels) :]:
        ax.set_visible(False)
    if title:
        figure.suptitle(title)
    return Chart(figure, title or y_label, caption)


@_styled
def picture_chart(
    pictures: Sequence[tuple[str, np.ndarray]],
    legend: Sequence[tuple[str, Colour]],
    *,
    style: FigureStyle,
    title: str,
    caption: str = "",
) -> Chart:
    """Titled RGB pictures (uint8 (H, W, 3)) side by side, in one row on two columns and in rows of three
    on one, pixels as they are; ``legend``: (name, colour) swatches under them."""
    columns = 3 if style.single else len(pictures)
    n_rows = math.ceil(len(pictures) / columns)
    height, width = pictures[0][1].shape[:2]
    panel = style.inches / columns
    figure = _figure(style, n_rows * (panel * height / width + 0.35) + 0.35)
    axes = figure.subplots(n_rows, columns, squeeze=False).ravel()
    for ax, (name, picture) in zip(axes, pictures):
        ax.imshow(picture)
        ax.set_title(name, fontsize="small")
        ax.set_axis_off()
    for ax in axes[len(pictures) :]:
        ax.set_visible(False)
    handles = [
        Patch(facecolor=_colour(colour), edgecolor="black", linewidth=0.4, label=name) for name, colour in legend
    ]
    _legend(figure, handles, style)
    return Chart(figure, title, caption)
