"""The charts for papers (``segadv_tui.render.charts``): each writes a valid PDF, SVG and PNG, the same bytes
for the same chart, at the asked width and resolution; label colours come from the label set; no number
is written as -0.000; a bad extension, width or resolution is one line before any work.

The charts are drawn from plain data here; the commands that draw them run in tests/cli/test_cli_attack.py,
tests/core/test_robust.py, tests/core/test_transfer.py and tests/core/test_luminosity.py.
"""

from __future__ import annotations

import io
import math
import random
import subprocess
import sys
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.colors import to_hex
from PIL import Image

from core.errors import OptionError
from core.files import csv_cell, json_number, write_csv
from core.labels import OKABE_ITO, UW_MADISON, label_set
from segadv_tui.render import charts
from segadv_tui.render.figure_style import COLUMN_WIDTHS, FigureStyle, figure_format
from segadv_tui.render.tables import Table, number

EPS = [0.0, 0.004, 0.008, 0.012]
TITLES = UW_MADISON.titles


def _sweep(style):
    return charts.sweep_chart(
        EPS,
        {"BCE": [0.8, 0.5, None, 0.2], "Focal": [0.8, 0.7, 0.6, 0.5]},
        {"BCE": [0.0, 0.3, None, 0.7], "Focal": [0.0, -0.05, 0.2, 0.4]},
        style=style,
        caption="a caption",
    )


def _robust(style, labels=UW_MADISON):
    def series(scale):
        return {labels.titles[name]: [1 - scale * e * (i + 1) * 20 for e in EPS] for i, name in enumerate(labels.names)}

    curves = {"a.safetensors": (series(1), series(-1)), "b.safetensors": (series(2), series(-2))}
    for dsc, success in curves.values():
        dsc["mean"], success["mean"] = [0.9, 0.6, 0.4, 0.2], [0.0, 0.3, 0.5, 0.8]
    colours = {labels.titles[name]: colour for name, colour in labels.colours.items()}
    return charts.robustness_chart(EPS, curves, colours, style=style)


def _heatmap(style):
    """The transfer matrix of four checkpoints and their leave-one-out ensembles: long names, 8 x 4 cells."""
    names = ["demo_small", "demo_small_at", "demo_small_fpn", "demo_small_unetpp"]
    rng = np.random.default_rng(1)
    values = rng.uniform(-0.3, 1, (8, 4))
    values[0, 1], values[1, 0], values[2, 2] = -0.0001, np.nan, -0.0
    second = rng.uniform(0, 1, (8, 4))
    second[1, 0] = np.nan
    return charts.heatmap_chart(
        values,
        names + [f"all but {name}" for name in names],
        [f"{name} (0.812)" for name in names],
        style=style,
        title="Transfer: attack success, FGSM (textbook) eps 0.009",
        row_title="crafted on",
        column_title="scored on (clean mean DSC)",
        colour_title="mean attack success",
        second_line=second,
        second_prefix="DSC ",
        marked=np.vstack([np.eye(4, dtype=bool), ~np.eye(4, dtype=bool)]),
        mark_note="white-box (the target was attacked)",
    )


def _scatter(style):
    rng = np.random.default_rng(0)
    names = ("raw slice, mean", "raw slice, 99th percentile", "model input, 99th percentile")  # as the study's
    panels = {name: (list(rng.random(20) * 7000 + 1000), list(rng.random(20))) for name in names}
    return charts.scatter_chart(
        panels,
        style=style,
        y_label="attack success (mean over organs)",
        notes=dict.fromkeys(panels, "rho -0.818  95% CI [-0.972, -0.399]  n 20"),
        title="Attack success against slice intensity",
    )


def _pictures(style):
    picture = np.zeros((16, 16, 3), dtype=np.uint8)
    picture[4:12, 4:12] = (0, 158, 115)
    legend = [(TITLES[name], colour) for name, colour in UW_MADISON.colours.items()]
    return charts.picture_chart([(f"panel {i}", picture) for i in range(6)], legend, style=style, title="slice")


CHARTS = {"sweep": _sweep, "robust": _robust, "heatmap": _heatmap, "scatter": _scatter, "pictures": _pictures}


def _render(draw, style, kind: str, tmp_path) -> bytes:
    path = tmp_path / f"chart.{kind}"
    charts.save_chart(path, draw(style))
    return path.read_bytes()


@pytest.mark.parametrize("name", CHARTS)
def test_every_chart_writes_pdf_svg_and_png_reproducibly(name, tmp_path):
    draw = CHARTS[name]
    style = FigureStyle("double", 60)
    pdf = _render(draw, style, "pdf", tmp_path)
    assert pdf.startswith(b"%PDF-") and b"/CreationDate" not in pdf and b"/ModDate" not in pdf
    assert b"/FontFile2" in pdf and b"/Type3" not in pdf  # TrueType embedded (pdf.fonttype 42), no Type 3
    svg = _render(draw, style, "svg", tmp_path)
    root = ElementTree.fromstring(svg)
    assert root.tag == "{http://www.w3.org/2000/svg}svg" and b"<dc:date>" not in svg
    png = _render(draw, style, "png", tmp_path)
    # Drawn again from scratch, the same bytes: no date, no random SVG id, no font subset tag by chance.
    for kind, first in (("pdf", pdf), ("svg", svg), ("png", png)):
        assert _render(draw, style, kind, tmp_path) == first, kind
    with Image.open(io.BytesIO(png)) as image:
        assert image.format == "PNG" and image.width == round(COLUMN_WIDTHS["double"] * 60)
        assert image.info["dpi"] == pytest.approx((60, 60), abs=0.05)  # PNG stores pixels per metre, whole numbers


@pytest.mark.parametrize("width", COLUMN_WIDTHS)
@pytest.mark.parametrize("name", ["sweep", "robust", "heatmap"])
def test_charts_are_one_or_two_journal_columns_wide_at_the_asked_dpi(name, width, tmp_path):
    png = _render(CHARTS[name], FigureStyle(width, 90), "png", tmp_path)
    with Image.open(io.BytesIO(png)) as image:
        assert image.width == round(COLUMN_WIDTHS[width] * 90)
        assert image.info["dpi"] == pytest.approx((90, 90), abs=0.05)  # PNG stores pixels per metre, whole numbers
    svg = ElementTree.fromstring(_render(CHARTS[name], FigureStyle(width, 90), "svg", tmp_path))
    assert svg.get("width") == f"{COLUMN_WIDTHS[width] * 72:g}pt"  # the vector form: the width in points


def test_no_text_of_a_chart_overlaps_another_or_leaves_the_figure(monkeypatch):
    """Titles, tick labels, axis labels, cell numbers and legend entries each get their own room, inside
    the figure, at both widths: every text drawn is recorded with its box as it is drawn."""
    from matplotlib.text import Text

    drawn: list = []
    draw_text = Text.draw

    def recording(text, renderer):
        draw_text(text, renderer)
        if text.get_visible() and text.get_text().strip():
            drawn.append((text.get_text(), text.get_window_extent(renderer)))

    monkeypatch.setattr(Text, "draw", recording)
    for width in COLUMN_WIDTHS:
        for name, draw in CHARTS.items():
            figure = draw(FigureStyle(width, 72)).figure
            drawn.clear()
            FigureCanvasAgg(figure).draw()  # lays the figure out (constrained layout) and draws it, as saving does
            assert len(drawn) > 5
            inside = figure.bbox.padded(1)
            for i, (text, box) in enumerate(drawn):
                assert inside.contains(box.x0, box.y0) and inside.contains(box.x1, box.y1), (name, width, text)
                for other, other_box in drawn[i + 1 :]:
                    overlap = box.intersection(box, other_box)
                    assert overlap is None or overlap.width * overlap.height < 2, (name, width, text, other)


def test_sweep_draws_a_line_per_loss_in_order_with_a_gap_where_a_value_is_missing():
    figure = _sweep(FigureStyle()).figure
    dsc_axes = figure.axes[0]
    lines = dsc_axes.get_lines()
    assert [line.get_label() for line in lines] == ["BCE", "Focal"]
    assert [to_hex(line.get_color()) for line in lines] == [c.lower() for c in charts.SERIES_COLOURS[:2]]
    assert math.isnan(lines[0].get_ydata()[2]) and list(lines[1].get_ydata()) == [0.8, 0.7, 0.6, 0.5]
    # Scores from 0 to 1 (a little more, so markers there are whole); an attack that helped: below 0.
    assert dsc_axes.get_ylim() == pytest.approx((-0.03, 1.03)) and figure.axes[1].get_ylim()[0] < -0.1


def test_label_colours_come_from_the_label_set():
    """UW-Madison keeps the explorer's colours; a new label set gets Okabe-Ito; the charts and the explorer's
    pictures draw each label in its set's colour and nothing else does."""
    from segadv_tui.render.imagery import ORGAN_COLOURS

    assert ORGAN_COLOURS == UW_MADISON.colours
    assert UW_MADISON.colours == {
        "large_bowel": (255, 170, 40),
        "small_bowel": (80, 200, 255),
        "stomach": (230, 80, 200),
    }
    liver = label_set(["liver", "spleen", "kidney_left"])
    assert [label.colour for label in liver.labels] == list(OKABE_ITO[:3])
    for labels in (UW_MADISON, liver):
        figure = _robust(FigureStyle(), labels).figure
        drawn = {line.get_label(): to_hex(line.get_color()) for line in figure.axes[0].get_lines()}
        expected = {labels.titles[n]: "#{:02x}{:02x}{:02x}".format(*rgb) for n, rgb in labels.colours.items()}
        assert drawn == {**expected, "mean": "#000000"}


def test_the_journal_slice_figure_has_six_panels_and_a_legend_of_the_label_set():
    from segadv_tui.render.figures import CHART_PANELS, DIFFERENCE_LEGEND, AttackPanels, attack_chart

    rng = np.random.default_rng(0)
    image = rng.random((32, 32)).astype(np.float32)
    masks = (rng.random((3, 32, 32)) > 0.7).astype(np.uint8)
    panels = AttackPanels(image, np.clip(image + 0.01, 0, 1), masks, masks, masks[::-1], 0.01, 0.8, 0.4)
    for width, rows in (("single", 2), ("double", 1)):
        figure = attack_chart(panels, UW_MADISON, "caption", FigureStyle(width)).figure
        shown = [ax for ax in figure.axes if ax.get_visible()]
        assert len(shown) == len(CHART_PANELS) == 6 and len({round(ax.get_position().y0, 6) for ax in shown}) == rows
        assert shown[3].get_title() == "Clean prediction\nDSC 0.800"
        (legend,) = figure.legends
        entries = [
            (text.get_text(), to_hex(patch.get_facecolor())) for text, patch in zip(legend.texts, legend.get_patches())
        ]
        expected = [(TITLES[n], "#{:02x}{:02x}{:02x}".format(*c)) for n, c in UW_MADISON.colours.items()]
        expected += [(name, "#{:02x}{:02x}{:02x}".format(*c)) for name, c in DIFFERENCE_LEGEND]
        assert sorted(entries) == sorted(expected)


def test_number_never_writes_negative_zero():
    """Against a second formatter: Python's own, with a minus sign removed wherever every digit is zero."""

    def reference(value: float, digits: int, signed: bool) -> str:
        text = f"{value:+.{digits}f}" if signed else f"{value:.{digits}f}"
        return text.replace("-", "+" if signed else "", 1) if set(text.lstrip("+-")) <= {"0", "."} else text

    rng = random.Random(0)
    values = [0.0, -0.0, -1e-300, -0.0004, -0.00049999, -0.0005, -0.0006, 0.0005, -1.0, 2.5, -12.34567]
    values += [rng.uniform(-0.002, 0.002) for _ in range(2000)]
    for value in values:
        for digits in (0, 1, 3, 4):
            for signed in (False, True):
                assert number(value, digits, signed=signed) == reference(value, digits, signed), (value, digits)
    assert number(-0.0001, 3) == "0.000" and number(-0.0, 4) == "0.0000" and number(-0.0004, 3, signed=True) == "+0.000"
    assert number(-0.0006, 3) == "-0.001" and number(float("nan")) == "n/a" and number(None) == "n/a"


def test_tables_csv_json_and_heatmaps_write_no_negative_zero(tmp_path):
    assert str(csv_cell(-0.0)) == "0.0" and str(csv_cell(np.float32(-0.0))) == "0.0" and csv_cell(-1e-9) == -1e-9
    assert str(json_number(-0.0)) == "0.0" and json_number(float("nan")) is None
    write_csv(tmp_path / "t.csv", ["a", "b"], [[-0.0, np.float64(-0.0)]])
    assert (tmp_path / "t.csv").read_text() == "a,b\n0.0,0.0\n"
    table = Table("t", ("x", "AS"), (("a", number(-0.00001, 3)),))
    assert "-0" not in table.to_csv() + table.to_markdown()
    texts = [text.get_text() for text in _heatmap(FigureStyle()).figure.axes[0].texts]
    assert texts[1].startswith("0.000\n") and texts[10].startswith("0.000\n") and texts[4] == "n/a\nDSC n/a"
    assert not any("-0.000" in t for t in texts) and any(t.startswith("-0.") for t in texts)


def test_figure_format_comes_from_the_extension():
    assert [figure_format(p) for p in ("a.pdf", "b.SVG", "c.png", "-", "noextension")] == [
        "pdf",
        "svg",
        "png",
        "png",
        "png",
    ]
    with pytest.raises(OptionError, match=r"^--png 'fig.jpg': unknown figure format '\.jpg'; use \.pdf, \.svg, \.png$"):
        figure_format("fig.jpg", "--png")
    with pytest.raises(OptionError, match="choose from single, double"):
        FigureStyle("triple")
    with pytest.raises(OptionError, match="--dpi 10: choose a resolution from 50 to 1200"):
        FigureStyle("single", 10)


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["sweep", "--out", "s.jpg"], "--png 's.jpg': unknown figure format '.jpg'; use .pdf, .svg, .png"),
        (["robust", "--png", "r.eps"], "--png 'r.eps': unknown figure format '.eps'; use .pdf, .svg, .png"),
        (["figure", "--out", "f.tiff"], "--out 'f.tiff': unknown figure format '.tiff'; use .pdf, .svg, .png"),
        (["study", "luminosity", "--width", "wide"], "unknown figure width 'wide'; choose from single, double"),
        (["transfer", "--dpi", "5000"], "--dpi 5000: choose a resolution from 50 to 1200"),
    ],
)
def test_a_bad_figure_option_is_one_line_before_any_work(run, args, says, tmp_path):
    result = run(*args)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {says}"]
    assert list(tmp_path.iterdir()) == []  # nothing written, no folder made


def test_the_explorer_and_the_cli_start_without_matplotlib():
    code = (
        "import sys, segadv_tui.app, segadv_tui.screens.explorer, segadv_tui.render.figures, segadv_tui.cli as c; "
        "c._register_commands(); print('matplotlib' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False"]
