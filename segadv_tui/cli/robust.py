"""``segadv robust``: the robustness report of one or more checkpoints (``core.evaluation.robustness``).

Robust DSC per organ and mean at each eps with attack success, ROG (the share of slices whose mean DSC
falls below half of the clean one), robust DSC per organ-size tertile and, for the ensemble, how often
each member won; Rich tables on stdout, JSON / CSV / PNG files, a progress bar with an ETA on stderr.
``--checks`` adds the checks of ``core.evaluation.robust_checks`` (Carlini et al.) per checkpoint, pass or fail with
their numbers, in the output and the JSON.
"""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app
from segadv_tui.cli._common import attack_config, parse_eps_list, prepare, progress_bar, refuse_artefacts
from segadv_tui.cli._metrics import boundary_table, metric_fields, summary_csv
from segadv_tui.cli._options import (
    ATTACK,
    AllSlices,
    BatchSize,
    BestIterate,
    Data,
    Device,
    Dpi,
    Empty,
    FigureWidth,
    Limit,
    Loss,
    Metrics,
    Norm,
    NsdTolerance,
    Precision,
    Seed,
    SliceAxis,
    Split,
    Steps,
    Strict,
    Target,
    checkpoints_option,
    out_dir_option,
    output_option,
)
from segadv_tui.cli._outcome import Outputs
from segadv_tui.cli._runs import NoCache, RunsIndex
from segadv_tui.render.figure_style import figure_style

DEFAULT_EPS = "0.001,0.003,0.009,0.016,0.031"
CHECKS = "Checks"  # the panel of --checks in --help


@app.command()
def robust(
    checkpoints: list[Path] | None = checkpoints_option(
        "A checkpoint to evaluate; repeat the option. Default: the bundled demo checkpoint."
    ),
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    eps: str = typer.Option(
        DEFAULT_EPS,
        "--eps",
        rich_help_panel=ATTACK,
        help="Comma list or start:stop:step of L-inf budgets (with --norm l2: L2 norms of the slice).",
    ),
    method: str = typer.Option(
        "ensemble",
        "--method",
        rich_help_panel=ATTACK,
        help="Attack method (see segadv attack --help); default the worst-case ensemble.",
    ),
    loss: Loss = "bce",
    steps: Steps = None,
    best_iterate: BestIterate = None,
    seed: Seed = 0,
    target: Target = "gt",
    norm: Norm = "linf",
    limit: Limit = None,
    all_slices: AllSlices = False,
    empty: Empty = "one",
    metrics: Metrics = "dsc",
    nsd_tolerance: NsdTolerance = None,
    device: Device = "auto",
    precision: Precision = "fp32",
    batch_size: BatchSize = 16,
    out_dir: Path = out_dir_option("robust.json", "robust.csv", "robust.png"),
    json_path: Path | None = output_option("--json", "JSON file with every number (default OUT_DIR/robust.json)."),
    csv_path: Path | None = output_option("--csv", "CSV, one row per checkpoint and eps (default OUT_DIR/robust.csv)."),
    png_path: Path | None = output_option(
        "--png",
        "Chart of robust DSC and AS against eps per organ: .pdf, .svg or .png (default OUT_DIR/robust.png).",
        "--out",
    ),
    width: FigureWidth = "double",
    dpi: Dpi = 300,
    checks: bool = typer.Option(
        False,
        "--checks",
        rich_help_panel=CHECKS,
        help="Also run the checks that catch a fake defence (Carlini et al.): informative gradients, monotone in eps, "
        "about 0 at eps 0.25, the attack >= FGSM, white-box >= transfer, the attack >= black-box Square (300 "
        "queries), converged (doubled steps, a restart) at the largest eps. Costs about 5 more runs of the attack.",
    ),
    transfer_from: Path | None = typer.Option(
        None,
        "--transfer-from",
        rich_help_panel=CHECKS,
        help="With --checks: the checkpoint the transfer attack is made on; default the bundled (plain) demo "
        "checkpoint.",
    ),
    run_index: RunsIndex = None,
    no_cache: NoCache = False,
    strict: Strict = False,
) -> None:
    """Robust DSC against eps per organ, with ROG, organ-size tertiles and the ensemble's wins per member."""
    from rich.text import Text

    style = figure_style(width, dpi)
    eps_values = parse_eps_list(eps, norm=norm.strip().lower())
    config = attack_config(
        method=method,
        eps=str(eps_values[0]),
        loss=loss,
        steps=steps,
        best_iterate=best_iterate,
        seed=seed,
        target=target,
        empty=empty,
        precision=precision,
        all_slices=all_slices,
        **metric_fields(metrics, nsd_tolerance),
        norm=norm,
    )
    refuse_artefacts(config, "robust", "measures DSC against eps")
    paths = list(checkpoints or [None])
    # The transfer source loads with the checkpoints, before the data: a bad --transfer-from stops first.
    run = prepare(
        "robust",
        Outputs("robust", out_dir, json=json_path, csv=csv_path, png=png_path),
        batch_size=batch_size,
        device=device,
        checkpoints=paths + ([transfer_from] if checks else []),
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        all_slices=all_slices,
        limit=limit,
    )
    loaded, source = run.checkpoints[: len(paths)], (run.checkpoints[-1] if checks else None)
    config = run.attack_config(config)

    from core.evaluation.robustness import robustness

    def payload(report, check_reports=()) -> dict:
        return run.payload(
            {**report.to_dict(), **({"checks": [checked.to_dict() for checked in check_reports]} if checks else {})},
            checkpoints=[str(item.path) for item in loaded],
        )

    labels = [item.path.name for item in loaded]
    labels = [
        label if labels.count(label) == 1 else f"{label} #{labels[:i].count(label) + 1}"
        for i, label in enumerate(labels)
    ]
    models = [item.as_model(label) for label, item in zip(labels, loaded)]
    description = f"{config.method_label}: {len(models)} model(s) x {len(eps_values)} eps x {len(run.records)} slices"
    with run.keep_partial(payload), progress_bar(description) as progress:
        key = {"config": config.to_dict(), "eps": eps_values, "labels": labels}
        report = run.cached(key, robustness)(
            models, run.records, config, eps_values, batch_size=batch_size, device=run.device, progress=progress
        )
    # Ctrl-C in the checks: the report is complete, the checks of the checkpoints finished are kept.
    with run.keep_partial(lambda finished: payload(report, finished)):
        check_reports = (
            _run_checks(report, loaded, source, run.records, config, eps_values, batch_size, run.device)
            if checks
            else []
        )

    scope = f"{len(run.records)} {run.split} slices{run.with_caption(all_slices)}"
    shown = []
    for curve in report.curves:
        shown += [_curve_table(report, curve, scope), _tertile_table(report, curve)]
        if report.members:
            shown.append(_wins_table(report, curve))
        entries = [(f"{point.eps:g}", point.summary) for point in curve.points]
        shown += filter(None, [boundary_table(config, f"{curve.label}: boundary metrics", entries, "eps")])
    shown += [_checks_table(checked, scope) for checked in check_reports]
    if check_reports:
        verdicts = [check.verdict for checked in check_reports for check in checked.checks]
        shown.append(
            Text(
                f"checks: {verdicts.count('pass')} passed, {verdicts.count('FAIL')} failed, "
                f"{verdicts.count('n/a')} not applicable"
            )
        )
    run.finish(
        *shown,
        json=lambda: payload(report, check_reports),
        csv=lambda: robust_rows(report),
        png=lambda: _plot(report, scope, run.dataset.labels, style),
    )


def _plot(report, scope: str, labels, style):
    from segadv_tui.render.charts import robustness_chart

    colours = {labels.titles[name]: colour for name, colour in labels.colours.items()}
    return robustness_chart(*_plot_points(report), colours, style=style, caption=_caption(report, scope))


def _run_checks(report, loaded, source, records, config, eps_values, batch_size, device) -> list:
    """``core.evaluation.robust_checks.run_checks`` per checkpoint, reusing the report's per-slice results. Ctrl-C:
    ``core.evaluation.scoring.Interrupted`` with the checks of the checkpoints finished (a check made over part of
    the slices would not say anything)."""
    from core.evaluation.robust_checks import run_checks
    from core.evaluation.scoring import Interrupted, Partial

    results = []
    for item, curve in zip(loaded, report.curves):
        same = item.path.resolve() == source.path.resolve()
        known = {point.eps: point.rows for point in curve.points}
        try:
            with progress_bar(f"checks of {curve.label}") as progress:
                results.append(
                    run_checks(
                        item.model,
                        records,
                        item.img_size,
                        config,
                        eps_values,
                        label=curve.label,
                        source=None if same else source.model,
                        source_label=source.path.name,
                        no_source=f"{source.path.name} is the transfer source itself (--transfer-from)",
                        known=known,
                        batch_size=batch_size,
                        device=device,
                        progress=progress,
                    )
                )
        except KeyboardInterrupt:
            raise Interrupted(
                results, Partial(len(results), len(loaded), "checkpoints' checks", "the robustness report is complete")
            ) from None
    return results


def _checks_table(checked, scope: str):
    from segadv_tui.render.tables import Table

    colour = {"pass": "green", "FAIL": "bold red", "n/a": "dim"}
    return Table(
        f"{checked.label}: checks of {checked.config.method_label} ({scope}; transfer and convergence at eps "
        f"{checked.check_eps:g}; {checked.seconds:.0f} s)",
        ("check", "verdict", "numbers", "guards against"),
        tuple((check.title, check.verdict, check_numbers(check), check.guards) for check in checked.checks),
        justify=("left",) * 4,
        colours=tuple({1: colour[check.verdict]} for check in checked.checks),
    ).to_rich(title_justify="center", overflow="fold")


def check_numbers(check) -> str:
    """A check's numbers in a few words (all of them are in the JSON), "n/a" where one is undefined."""
    from segadv_tui.render.tables import number

    n = check.numbers
    if check.passed is None:
        return check.note
    if check.name == "gradients":
        return f"zero-gradient share {number(n['zero_gradient_fraction'], 3)} (limit {n['limit']:g})"
    if check.name == "monotone":
        curve = ", ".join(f"{eps}: {number(dsc)}" for eps, dsc in n["robust_dsc"].items())
        rises = "; ".join(
            f"rises {number(r['rise'], signed=True)} from {r['from_eps']:g} to {r['to_eps']:g}" for r in n["rises"]
        )
        return f"robust DSC {curve}" + (f"; {rises}" if rises else "")
    if check.name == "large_eps":
        return f"robust DSC {number(n['robust_dsc'])} at eps {n['eps']:g} (limit {n['limit']:g})"
    if check.name == "iterative":
        return "; ".join(
            f"eps {eps}: {number(row['attack'])} vs FGSM {number(row['fgsm'])}" for eps, row in n["robust_dsc"].items()
        )
    if check.name == "black_box":
        return (
            f"eps {n['eps']:g}: the attack {number(n['attack'])} vs Square ({n['queries']} queries, {n['loss']}) "
            f"{number(n['square'])}"
        )
    if check.name == "transfer":
        return (
            f"eps {n['eps']:g}: white-box {number(n['white_box'])} vs transferred from {n['source']} "
            f"{number(n['transfer'])}"
        )
    more, restart = n["double_steps"], n["restart"]
    return (
        f"eps {n['eps']:g}: {number(n['robust_dsc'])}; {more['steps']} steps {number(more['robust_dsc'])} "
        f"({number(-more['change'], signed=True)}); a restart {number(restart['robust_dsc'])} "
        f"({number(-restart['change'], signed=True)})"
    )


def _caption(report, scope: str) -> str:
    from core.wording import label_nouns

    config = report.config
    cost = report.budget
    return (
        f"{config.method_label}, {config.objective_label}; {scope}; "
        f"empty {label_nouns(report.labels)}: {config.empty}; "
        f"{cost['forward_backward']} forward+backward and {cost['forward']} forward passes per slice and eps"
    )


def _curve_table(report, curve, scope: str):
    from segadv_tui.render.tables import Table, number

    names, titles = report.labels.names, report.labels.titles
    l2 = report.config.norm == "l2"
    headers = (
        "eps",
        *(titles[o] for o in names),
        "mean DSC",
        "mean AS",
        "ROG",
        "L2 mean" if l2 else "L-inf max",
        "damage",
        "halluc.",
    )
    clean = curve.points[0].summary
    first = curve.points[0].split
    rows = [
        (
            "clean",
            *(number(clean.dsc_clean[o]) for o in names),
            number(clean.mean_clean),
            "",
            "",
            "",
            number(first and first.damage_clean),
            number(first and first.hallucination_clean, 3),
        )
    ]
    for point in curve.points:
        s = point.summary
        rows.append(
            (
                f"{point.eps:g}",
                *(number(s.dsc_adv[o]) for o in names),
                number(s.mean_adv),
                number(s.mean_attack_success),
                number(point.rog, 3),
                number(s.l2_mean if l2 else s.linf_max),
                number(point.split and point.split.damage_adv),
                number(point.split and point.split.hallucination_adv, 3),
            )
        )
    mean_dsc = 1 + len(names)
    return Table(
        f"{curve.label} ({curve.title}): robust DSC, {report.config.method_label}",
        headers,
        tuple(rows),
        bold=(frozenset(),) + (frozenset({mean_dsc}),) * len(curve.points),
        sections=frozenset({0}),
        justify=("right",) * len(headers),
        caption=f"{clean.scored} of {clean.slices} slices scored ({scope}); ROG: share of slices whose mean DSC "
        f"falls below half of its clean DSC; damage: DSC over the organs present in the truth; halluc.: share of "
        "the organs absent from the truth that are predicted; "
        f"{report.budget['forward_backward']} forward+backward passes "
        f"per slice and eps; {curve.seconds:.1f} s",
    ).to_rich()


def _tertile_table(report, curve):
    from core.wording import label_noun
    from segadv_tui.render.tables import Table, number

    noun, titles = label_noun(report.labels), report.labels.titles
    headers = (noun, "tertile", "slices", "pixels", "clean", *(f"eps {p.eps:g}" for p in curve.points))
    rows, sections = [], set()
    for organ in report.labels.names:
        for index, first in enumerate(curve.points[0].tertiles[organ]):
            pixels = "" if first.pixels_min is None else f"{first.pixels_min}-{first.pixels_max}"
            rows.append(
                (
                    titles[organ] if index == 0 else "",
                    first.tertile,
                    str(first.slices),
                    pixels,
                    number(first.dsc_clean),
                    *(number(point.tertiles[organ][index].dsc_adv) for point in curve.points),
                )
            )
            if index == 2:
                sections.add(len(rows) - 1)
    return Table(
        f"{curve.label}: robust DSC per {noun}-size tertile ({noun} pixels in the truth)",
        headers,
        tuple(rows),
        justify=("left", "left") + ("right",) * (len(headers) - 2),
        sections=frozenset(sections),
    ).to_rich()


def _wins_table(report, curve):
    from segadv_tui.render.tables import Table

    return Table(
        f"{curve.label}: slices won per ensemble member (lowest mean DSC; ties to the earlier)",
        ("member", *(f"eps {point.eps:g}" for point in curve.points)),
        tuple((member, *(str(point.wins[member]) for point in curve.points)) for member in report.members),
    ).to_rich()


def _plot_points(report) -> tuple[list[float], dict]:
    """The eps axis and, per checkpoint, (DSC series, AS series) per label (by title) and mean; the clean
    scores are drawn at eps 0 when the list does not hold it."""
    names, titles = report.labels.names, report.labels.titles

    def value(x):
        return float("nan") if x is None else float(x)

    with_clean = 0.0 not in report.eps_values
    eps = ([0.0] if with_clean else []) + list(report.eps_values)
    series = {}
    for curve in report.curves:
        clean = curve.points[0].summary
        dsc = {
            titles[o]: [value(clean.dsc_clean[o])] * with_clean + [value(p.summary.dsc_adv[o]) for p in curve.points]
            for o in names
        }
        dsc["mean"] = [value(clean.mean_clean)] * with_clean + [value(p.summary.mean_adv) for p in curve.points]
        success = {
            titles[o]: [0.0 * value(clean.dsc_clean[o])] * with_clean  # NaN where undefined
            + [value(p.summary.attack_success[o]) for p in curve.points]
            for o in names
        }
        success["mean"] = [0.0 * value(clean.mean_clean)] * with_clean + [
            value(p.summary.mean_attack_success) for p in curve.points
        ]
        series[curve.label] = (dsc, success)
    return eps, series


def robust_rows(report) -> tuple[list[str], list[list]]:
    """One CSV row per (checkpoint, eps): robust DSC and AS per label (by name) and mean, ROG, the tertiles'
    robust DSC per label, realised norms and, for the ensemble, the wins per member."""
    from core.evaluation.robustness import TERTILES

    names = report.labels.names

    def cell(value):
        return "" if value is None else float(value)

    header = ["checkpoint", "eps", "slices", "scored", "dsc_clean_mean", "dsc_adv_mean", "as_mean", "rog"]
    header += [f"dsc_clean_{o}" for o in names] + [f"dsc_adv_{o}" for o in names] + [f"as_{o}" for o in names]
    header += [f"dsc_adv_{o}_{t}" for o in names for t in TERTILES]
    header += ["linf_max", "l2_mean", "passes_forward_backward", "passes_forward"]
    header += [f"wins_{m}" for m in report.members or []]
    split_keys = ("damage_clean", "damage_adv", "hallucination_clean", "hallucination_adv")
    header += list(split_keys)
    if report.curves:
        header += summary_csv(report.config, report.curves[0].points[0].summary)[0]
    rows = []
    for curve in report.curves:
        for point in curve.points:
            s = point.summary
            rows.append(
                [
                    curve.label,
                    point.eps,
                    s.slices,
                    s.scored,
                    cell(s.mean_clean),
                    cell(s.mean_adv),
                    cell(s.mean_attack_success),
                    cell(point.rog),
                ]
                + [cell(s.dsc_clean[o]) for o in names]
                + [cell(s.dsc_adv[o]) for o in names]
                + [cell(s.attack_success[o]) for o in names]
                + [cell(t.dsc_adv) for o in names for t in point.tertiles[o]]
                + [cell(s.linf_max), cell(s.l2_mean), report.budget["forward_backward"], report.budget["forward"]]
                + [point.wins[m] for m in report.members or []]
                + [cell(point.split and getattr(point.split, key)) for key in split_keys]
                + summary_csv(report.config, s)[1]
            )
    return header, rows
