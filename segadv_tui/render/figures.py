"""One attacked slice as the paper's figures 5 to 8: the pictures (``AttackPanels``), drawn as a PNG with
Pillow (``attack_figure``) or, for a journal, as matplotlib panels (``attack_chart``).

The pictures come from ``segadv_tui.render.imagery``, so either form shows exactly the colours of the terminal
views. The CLI's ``figure`` command and the TUI's export key use it; the charts of the other commands are
``segadv_tui.render.charts``'.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
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
from segadv_tui.render.tables import number

BACKGROUND = (255, 255, 255)
INK = (20, 20, 20)
GRID = (225, 225, 225)

PANEL_TARGET = 256  # panels are scaled by a whole factor to about this many pixels, nearest neighbour
PAD = 12
# The attack figure's grid: two rows of four panels; the journal form's six (attack_chart).
PANEL_LAYOUT = (
    ("input", "adversarial", "perturbation", "truth"),
    ("clean_prediction", "clean_difference", "adversarial_prediction", "adversarial_difference"),
)
CHART_PANELS = (
    "input",
    "perturbation",
    "truth",
    "clean_prediction",
    "adversarial_prediction",
    "adversarial_difference",
)
DIFFERENCE_LEGEND = (("true positive", TP_COLOUR), ("false positive", FP_COLOUR), ("false negative", FN_COLOUR))


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


def _with_dsc(title: str, dsc: float | None, separator: str = "  ") -> str:
    return title if dsc is None or math.isnan(dsc) else f"{title}{separator}DSC {number(dsc, 3)}"


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
    x = _swatch_row(draw, PAD, y, organs, 14)
    _swatch_row(draw, x + 24, y, DIFFERENCE_LEGEND, 14)
    y += legend_h
    for line in caption_lines:
        draw.text((PAD, y), line, fill=INK, font=font(caption_size))
        y += caption_size + 6
    return figure


def attack_chart(panels: AttackPanels, labels, caption: str, style):
    """The journal form of the attack figure (``segadv figure --out fig.pdf``), a
    ``segadv_tui.render.charts.Chart``: the slice, the perturbation, the truth, the clean and adversarial
    predictions and the adversarial difference map, in one row on two columns and two rows of three on one
    (``style``, a ``FigureStyle``), with a legend of ``labels``' colours (a ``core.labels.LabelSet``) and the
    difference map's."""
    from segadv_tui.render.charts import picture_chart

    pictures = panels.pictures()
    titles = {key: title for key, (title, _) in pictures.items()}
    titles["clean_prediction"] = _with_dsc("Clean prediction", panels.dsc_clean, "\n")
    titles["adversarial_prediction"] = _with_dsc("Adversarial prediction", panels.dsc_adv, "\n")
    titles["adversarial_difference"] = "Difference, adversarial"
    legend = [(labels.titles[name], colour) for name, colour in labels.colours.items()] + list(DIFFERENCE_LEGEND)
    return picture_chart(
        [(titles[key], pictures[key][1]) for key in CHART_PANELS],
        legend,
        style=style,
        title="An attacked slice: input, perturbation, truth, predictions and difference map",
        caption=caption,
    )


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
