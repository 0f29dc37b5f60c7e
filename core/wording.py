"""How messages, captions and tables name a label set's things: UW-Madison's labels are organs.

Every output says "organ" for the UW-Madison GI Tract data (its captions, tables and snapshots stay as they
always were) and "label" for any other label set, where a label may be a tumour or grey matter.
"""

from __future__ import annotations

from core.labels import UW_MADISON, LabelSet


def label_noun(labels: LabelSet) -> str:
    """``organ`` for UW-Madison's three organs, ``label`` for any other label set."""
    return "organ" if labels.same_labels(UW_MADISON) else "label"


def label_nouns(labels: LabelSet) -> str:
    """The plural of ``label_noun``: ``organs`` or ``labels``."""
    return label_noun(labels) + "s"


def with_labels_caption(labels: LabelSet, all_slices: bool) -> str:
    """`` with organs`` (or `` with labels``) after "N test slices", nothing when every slice is used."""
    return "" if all_slices else f" with {label_nouns(labels)}"


def mean_over_caption(labels: LabelSet) -> str:
    """`` (mean over Grey matter, White matter)``: which labels a table's mean DSC averages, for a label set
    other than UW-Madison's (whose tables keep the paper's wording)."""
    if labels.same_labels(UW_MADISON):
        return ""
    return f" (mean over {', '.join(labels.titles[name] for name in labels.names)})"
