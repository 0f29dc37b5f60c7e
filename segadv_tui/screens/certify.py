"""The certified-pixel picture of one slice (``C``, or "Certify this slice" in the palette): randomized
smoothing's certified pixels per label in the label colours, the abstained ones in a colour of their own,
the reference as an outline, and per label the certified DSC lower bound and the abstain rate
(``core.evaluation.certify``; computed by the explorer's worker, shown here)."""

from __future__ import annotations

import numpy as np
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Vertical
from textual.screen import ModalScreen
from textual.widgets import Static

from core.results import nanmean
from segadv_tui.frames import CertifiedPicture
from segadv_tui.render.imagery import Scene
from segadv_tui.render.tables import format_score
from segadv_tui.widgets.picture import Picture

# Abstained pixels: red, apart from the label colours (UW-Madison's orange, blue, magenta) and the grey slice.
ABSTAIN_COLOUR = (230, 30, 30)


def certified_scene(picture: CertifiedPicture, colours: tuple[tuple[int, int, int], ...]) -> Scene:
    """The slice with the certified pixels of each label filled in its colour, the pixels abstained on any
    label in ``ABSTAIN_COLOUR`` and the reference outlined."""
    fill = np.concatenate([picture.positive, picture.abstained.any(0)[None]])
    return Scene(picture.image, fill=fill, outline=picture.reference, colours=(*colours, ABSTAIN_COLOUR))


def certified_lines(picture: CertifiedPicture, titles: list[str], colours) -> Text:
    """Per label: its colour, certified DSC, abstain rate and the base model's DSC; then their means."""
    reference = "truth" if picture.has_truth else "clean prediction"
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(f"{'':2}{'':14}{'cert. DSC':>10}{'abstain':>9}{'base DSC':>10}\n", style="dim")
    for title, colour, certified, abstain, base in zip(
        titles, colours, picture.dsc_certified, picture.abstain, picture.dsc_base
    ):
        text.append("■ ", style=f"rgb({colour[0]},{colour[1]},{colour[2]})")
        text.append(f"{title[:14]:14}{format_score(certified):>10}{abstain:>9.1%}{format_score(base):>10}\n")
    means = [
        float(nanmean(np.asarray(values, dtype=np.float64)[None], axis=1)[0])
        for values in (picture.dsc_certified, picture.abstain, picture.dsc_base)
    ]
    text.append(f"{'':2}{'Mean':14}{format_score(means[0]):>10}{means[1]:>9.1%}{format_score(means[2]):>10}\n")
    text.append("■ ", style="rgb({},{},{})".format(*ABSTAIN_COLOUR))
    text.append(f"abstained (counted wrong)  outline = {reference}\n", style="dim")
    text.append(
        f"σ {picture.sigma:g} · n {picture.samples} · {picture.forward_passes} passes · {picture.seconds:.1f} s",
        style="dim",
    )
    return text


class CertifyScreen(ModalScreen):
    """One certified slice; Esc (or q) goes back to the explorer."""

    DEFAULT_CSS = """
    CertifyScreen { align: center middle; }
    CertifyScreen > Vertical { width: 90%; height: 90%; border: round $primary; background: $surface; }
    CertifyScreen #certify-scores { height: auto; padding: 0 1; }
    """
    BINDINGS = [
        Binding("escape", "dismiss", "Back", id="certify.back"),
        Binding("q", "dismiss", "Back", show=False),
    ]

    def __init__(self, picture: CertifiedPicture, titles: list[str], colours: tuple[tuple[int, int, int], ...]):
        super().__init__()
        self.picture, self.titles, self.colours = picture, titles, colours

    def compose(self) -> ComposeResult:
        picture = self.picture
        with Vertical() as box:
            box.border_title = f"Certified pixels · {picture.slice_id} · L2 radius {picture.radius:.3f}"
            yield Picture("certified", id="certify-picture")
            yield Static(certified_lines(picture, self.titles, self.colours), id="certify-scores")

    def on_mount(self) -> None:
        mean = float(nanmean(np.asarray(self.picture.dsc_certified, dtype=np.float64)[None], axis=1)[0])
        self.query_one(Picture).show(
            f"Certified · DSC ≥ {format_score(mean)}", certified_scene(self.picture, self.colours)
        )
