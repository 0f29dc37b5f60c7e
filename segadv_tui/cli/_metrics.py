"""The boundary metrics on the command line: ``--metrics`` / ``--nsd-tolerance`` as ``AttackConfig`` fields,
and the CSV columns and terminal tables HD95 and NSD add where they were asked for (none otherwise, so a
DSC-only run prints and writes what it always did).

Labels are the names a result carries (the keys of its per-label dicts), not a fixed list.
"""

from __future__ import annotations

import math

from segadv_tui.cli import fail

# (metric, the summary / row field stem, its title, decimals)
BOUNDARY = (("hd95", "HD95 mm", 2), ("nsd", "NSD", 3))
SIDES = ("clean", "adv")


def metric_fields(metrics: str, nsd_tolerance: float | None) -> dict:
    """``--metrics dsc,hd95,nsd`` and ``--nsd-tolerance MM`` as the ``AttackConfig`` fields ``hausdorff`` and
    ``nsd_tolerance``, or a one-line error. DSC is always scored; naming it is optional."""
    from core.names import DEFAULT_NSD_TOLERANCE, METRIC_NAMES
    from segadv_tui.cli._common import choice

    names = [choice(part, METRIC_NAMES, "metric") for part in metrics.split(",") if part.strip()]
    if not names:
        fail(f"--metrics {metrics!r} names no metric; choose from {', '.join(METRIC_NAMES)}")
    if nsd_tolerance is not None:
        if "nsd" not in names:
            fail(f"--nsd-tolerance {nsd_tolerance:g} applies to NSD; add nsd to --metrics")
        if not (math.isfinite(nsd_tolerance) and nsd_tolerance >= 0):
            fail(f"--nsd-tolerance {nsd_tolerance:g} must be a number of mm of at least 0")
    tolerance = DEFAULT_NSD_TOLERANCE if nsd_tolerance is None else nsd_tolerance
    return {"hausdorff": "hd95" in names, "nsd_tolerance": tolerance if "nsd" in names else None}


def measured(config) -> list[tuple[str, str, int]]:
    """The boundary metrics ``config`` scores, as ``BOUNDARY`` entries."""
    return [entry for entry in BOUNDARY if entry[0] in config.metrics]


def _labels(summary, metric: str) -> list[str]:
    return list(getattr(summary, f"{metric}_clean") or {})


def organ_columns(config, summary) -> tuple[list[str], list[list[str]]]:
    """The columns ``segadv attack``'s organ table gains: per measured metric, clean and adversarial, one
    cell per label and the mean (the labels in the summary's order)."""
    from segadv_tui.render.tables import number

    headers, columns = [], []
    for metric, title, digits in measured(config):
        for side in SIDES:
            values = getattr(summary, f"{metric}_{side}")
            headers.append(f"{title} {'clean' if side == 'clean' else 'adversarial'}")
            columns.append(
                [number(values[label], digits) for label in values]
                + [number(getattr(summary, f"mean_{metric}_{side}"), digits)]
            )
    return headers, columns


def summary_csv(config, summary, prefix: str = "") -> tuple[list[str], list]:
    """CSV columns of a summary's boundary metrics: ``{prefix}{metric}_{side}_{label}`` and ``_mean``."""
    header, cells = [], []
    for metric, _, _ in measured(config):
        for side in SIDES:
            values = getattr(summary, f"{metric}_{side}")
            header += [f"{prefix}{metric}_{side}_{label}" for label in values] + [f"{prefix}{metric}_{side}_mean"]
            cells += list(values.values()) + [getattr(summary, f"mean_{metric}_{side}")]
    return header, cells


def row_csv(config, row: dict) -> tuple[list[str], list]:
    """CSV columns of one slice's boundary metrics (its JSON form ``row``): ``{metric}_{side}_{label}``."""
    header, cells = [], []
    for metric, _, _ in measured(config):
        for side in SIDES:
            values = row[f"{metric}_{side}"]
            header += [f"{metric}_{side}_{label}" for label in values]
            cells += list(values.values())
    return header, cells


def boundary_table(config, title: str, entries, first: str):
    """A Rich table of mean boundary metrics, one row per (name, summary) of ``entries``, clean and
    adversarial per measured metric; None when none was asked for. ``first`` heads the names' column."""
    from segadv_tui.render.tables import Table, number

    metrics = measured(config)
    if not metrics:
        return None
    headers = [first]
    for _, name, _ in metrics:
        headers += [f"{name} clean", f"{name} adversarial"]
    rows = []
    for label, summary in entries:
        cells = [label]
        for metric, _, digits in metrics:
            cells += [number(getattr(summary, f"mean_{metric}_{side}"), digits) for side in SIDES]
        rows.append(tuple(cells))
    tolerance = f"; NSD within {config.nsd_tolerance:g} mm" if config.nsd_tolerance is not None else ""
    return Table(
        title,
        tuple(headers),
        tuple(rows),
        caption=f"means over the scored slices of each slice's mean over labels{tolerance}; empty labels: "
        f"{config.empty} (core.metrics)",
    ).to_rich()
