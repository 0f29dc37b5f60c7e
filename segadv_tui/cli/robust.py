"""``segadv robust``: the robustness report of one or more checkpoints (``core.robustness``).

Robust DSC per organ and mean at each eps with attack success, ROG (the share of slices whose mean DSC
falls below half of the clean one), robust DSC per organ-size tertile and, for the ensemble, how often
each member won; Rich tables on stdout, JSON / CSV / PNG files, a progress bar with an ETA on stderr.
``--checks`` adds the checks of ``core.robust_checks`` (Carlini et al.) per checkpoint, pass or fail with
their numbers, in the output and the JSON.
"""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from core.distributed import is_main_process
from segadv_tui.cli import app, console
from segadv_tui.cli._common import (
    all_slices_option,
    batch_size_option,
    best_iterate_option,
    check_batch_size,
    data_option,
    device_option,
    empty_option,
    limit_option,
    loss_option,
    precision_option,
    seed_option,
    split_option,
    steps_option,
    strict_option,
    target_option,
)

DEFAULT_OUT_DIR = Path("segadv-out")
DEFAULT_EPS = "0.001,0.003,0.009,0.016,0.031"


@app.command()
def robust(
    checkpoints: Optional[list[Path]] = typer.Option(
        None, "--checkpoint", "-c", help="A checkpoint to evaluate; repeat the option. Default: the bundled demo checkpoint."
    ),
    data: Optional[Path] = data_option(),
    split: str = split_option(),
    eps: str = typer.Option(DEFAULT_EPS, "--eps", help="Comma list or start:stop:step of L-inf budgets."),
    method: str = typer.Option("ensemble", "--method", help="Attack method (see segadv attack --help); default the worst-case ensemble."),
    loss: str = loss_option(),
    steps: Optional[int] = steps_option(),
    best_iterate: Optional[bool] = best_iterate_option(),
    seed: int = seed_option(),
    target: str = target_option(),
    limit: Optional[int] = limit_option(),
    all_slices: bool = all_slices_option(),
    empty: str = empty_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option(),
    out_dir: Path = typer.Option(DEFAULT_OUT_DIR, "--out-dir", "-o", help="Folder for robust.json, robust.csv and robust.png."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="JSON file with every number (default OUT_DIR/robust.json)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="CSV, one row per checkpoint and eps (default OUT_DIR/robust.csv)."),
    png_path: Optional[Path] = typer.Option(None, "--png", help="Robust DSC and AS against eps per organ (default OUT_DIR/robust.png)."),
    checks: bool = typer.Option(False, "--checks", help="Also run the checks that catch a fake defence (Carlini et al.): informative gradients, monotone in eps, about 0 at eps 0.25, the attack >= FGSM, white-box >= transfer, converged (doubled steps, a restart) at the largest eps. Costs about 5 more runs of the attack."),
    transfer_from: Optional[Path] = typer.Option(None, "--transfer-from", help="With --checks: the checkpoint the transfer attack is made on; default the bundled (plain) demo checkpoint."),
    strict: bool = strict_option(),
) -> None:
    """Robust DSC against eps per organ, with ROG, organ-size tertiles and the ensemble's wins per member."""
    from core.devices import resolve_device
    from core.files import write_csv, write_json, write_png
    from segadv_tui.cli._common import (
        attack_config, check_outputs, load_checkpoint, open_data, parse_eps_list, progress_bar, select_records,
    )
    from segadv_tui.render.figures import robustness_plot

    eps_values = parse_eps_list(eps)
    config = attack_config(method=method, eps=str(eps_values[0]), loss=loss, steps=steps, best_iterate=best_iterate,
                           seed=seed, target=target, empty=empty, precision=precision, all_slices=all_slices)
    check_batch_size(batch_size)
    json_path = json_path or out_dir / "robust.json"
    csv_path = csv_path or out_dir / "robust.csv"
    png_path = png_path or out_dir / "robust.png"
    check_outputs(json=json_path, csv=csv_path, png=png_path)
    device = resolve_device(device)
    loaded = [load_checkpoint(path, device) for path in (checkpoints or [None])]
    source = load_checkpoint(transfer_from, device) if checks else None
    dataset = open_data(data, strict)
    records = select_records(dataset, split, all_slices=all_slices, limit=limit)
    split = split.strip().lower()

    from core.devices import describe_device
    from core.robustness import robustness
    from segadv_tui.cli._outcome import keep_partial, print_written, result_json

    def payload(report, check_reports=()) -> dict:
        return {
            "command": "robust", "device": describe_device(device), "data": str(dataset.root),
            "data_fingerprint": dataset.fingerprint(), "split": split, "slices": len(records),
            "checkpoints": [str(item.path) for item in loaded], **report.to_dict(),
            **({"checks": [checked.to_dict() for checked in check_reports]} if checks else {}),
        }

    labels = [item.path.name for item in loaded]
    labels = [label if labels.count(label) == 1 else f"{label} #{labels[:i].count(label) + 1}" for i, label in enumerate(labels)]
    models = [(label, item.model, item.meta) for label, item in zip(labels, loaded)]
    description = f"{config.method_label}: {len(models)} model(s) x {len(eps_values)} eps x {len(records)} slices"
    with keep_partial(json_path, payload, dataset), progress_bar(description) as progress:
        report = robustness(models, records, config, eps_values, batch_size=batch_size, device=device, progress=progress)
    # Ctrl-C in the checks: the report is complete, the checks of the checkpoints finished are kept.
    with keep_partial(json_path, lambda finished: payload(report, finished), dataset):
        check_reports = _run_checks(report, loaded, source, records, config, eps_values, batch_size, device) if checks else []
    if not is_main_process():  # under torchrun rank 0 alone prints and writes
        return

    scope = f"{len(records)} {split} slices{'' if all_slices else ' with organs'}"
    for curve in report.curves:
        console.print(_curve_table(report, curve, scope))
        console.print(_tertile_table(report, curve))
        if report.members:
            console.print(_wins_table(report, curve))
    for checked in check_reports:
        console.print(_checks_table(checked, scope))
    if check_reports:
        verdicts = [check.verdict for checked in check_reports for check in checked.checks]
        console.print(f"checks: {verdicts.count('pass')} passed, {verdicts.count('FAIL')} failed, "
                      f"{verdicts.count('n/a')} not applicable", highlight=False)

    write_json(json_path, result_json(payload(report, check_reports), dataset))
    write_csv(csv_path, *robust_rows(report))
    write_png(png_path, robustness_plot(*_plot_points(report), caption=_caption(report, scope)))
    print_written([json_path, csv_path, png_path], dataset, json_path)


def _run_checks(report, loaded, source, records, config, eps_values, batch_size, device) -> list:
    """``core.robust_checks.run_checks`` per checkpoint, reusing the report's per-slice results. Ctrl-C:
    ``core.evaluation.Interrupted`` with the checks of the checkpoints finished (a check made over part of
    the slices would not say anything)."""
    from segadv_tui.cli._common import progress_bar

    from core.evaluation import Interrupted, Partial
    from core.robust_checks import run_checks

    results = []
    for item, curve in zip(loaded, report.curves):
        same = item.path.resolve() == source.path.resolve()
        known = {point.eps: point.rows for point in curve.points}
        try:
            with progress_bar(f"checks of {curve.label}") as progress:
                results.append(run_checks(
                    item.model, records, item.img_size, config, eps_values, label=curve.label,
                    source=None if same else source.model, source_label=source.path.name,
                    no_source=f"{source.path.name} is the transfer source itself (--transfer-from)", known=known,
                    batch_size=batch_size, device=device, progress=progress,
                ))
        except KeyboardInterrupt:
            raise Interrupted(results, Partial(len(results), len(loaded), "checkpoints' checks",
                                               "the robustness report is complete")) from None
    return results


def _checks_table(checked, scope: str):
    from rich.table import Table

    table = Table(title=f"{checked.label}: checks of {checked.config.method_label} ({scope}; transfer and "
                        f"convergence at eps {checked.check_eps:g}; {checked.seconds:.0f} s)")
    for column in ("check", "verdict", "numbers", "guards against"):
        table.add_column(column, overflow="fold")
    style = {"pass": "green", "FAIL": "bold red", "n/a": "dim"}
    for check in checked.checks:
        table.add_row(check.title, f"[{style[check.verdict]}]{check.verdict}[/]", check_numbers(check), check.guards)
    return table


def check_numbers(check) -> str:
    """A check's numbers in a few words (all of them are in the JSON)."""
    n = check.numbers
    if check.passed is None:
        return check.note
    if check.name == "gradients":
        return f"zero-gradient share {n['zero_gradient_fraction']:.3f} (limit {n['limit']:g})"
    if check.name == "monotone":
        curve = ", ".join(f"{eps}: {_dsc(dsc)}" for eps, dsc in n["robust_dsc"].items())
        rises = "; ".join(f"rises {r['rise']:+.4f} from {r['from_eps']:g} to {r['to_eps']:g}" for r in n["rises"])
        return f"robust DSC {curve}" + (f"; {rises}" if rises else "")
    if check.name == "large_eps":
        return f"robust DSC {n['robust_dsc']:.4f} at eps {n['eps']:g} (limit {n['limit']:g})"
    if check.name == "iterative":
        return "; ".join(f"eps {eps}: {_dsc(row['attack'])} vs FGSM {_dsc(row['fgsm'])}" for eps, row in n["robust_dsc"].items())
    if check.name == "transfer":
        return f"eps {n['eps']:g}: white-box {n['white_box']:.4f} vs transferred from {n['source']} {n['transfer']:.4f}"
    more, restart = n["double_steps"], n["restart"]
    return (f"eps {n['eps']:g}: {n['robust_dsc']:.4f}; {more['steps']} steps {more['robust_dsc']:.4f} "
            f"({-more['change']:+.4f}); a restart {restart['robust_dsc']:.4f} ({-restart['change']:+.4f})")


def _dsc(value) -> str:
    return "n/a" if value is None else f"{value:.4f}"


def _caption(report, scope: str) -> str:
    config = report.config
    cost = report.budget
    return (f"{config.method_label}, {config.objective_label}; {scope}; empty organs: {config.empty}; "
            f"{cost['forward_backward']} forward+backward and {cost['forward']} forward passes per slice and eps")


def _curve_table(report, curve, scope: str):
    from rich.table import Table

    from core.organs import ORGAN_TITLES, ORGANS
    from segadv_tui.render.tables import number

    table = Table(title=f"{curve.label} ({curve.title}): robust DSC, {report.config.method_label}", title_justify="left")
    for column in ("eps", *(ORGAN_TITLES[o] for o in ORGANS), "mean DSC", "mean AS", "ROG", "L-inf max"):
        table.add_column(column, justify="right")
    clean = curve.points[0].summary
    table.add_row("clean", *(number(clean.dsc_clean[o]) for o in ORGANS), number(clean.mean_clean), "", "", "",
                  end_section=True)
    for point in curve.points:
        s = point.summary
        table.add_row(f"{point.eps:g}", *(number(s.dsc_adv[o]) for o in ORGANS), f"[bold]{number(s.mean_adv)}[/]",
                      number(s.mean_attack_success), number(point.rog, 3), number(s.linf_max))
    table.caption = (f"{clean.scored} of {clean.slices} slices scored ({scope}); ROG: share of slices whose mean DSC "
                     f"falls below half of its clean DSC; {report.budget['forward_backward']} forward+backward passes "
                     f"per slice and eps; {curve.seconds:.1f} s")
    table.caption_justify = "left"
    return table


def _tertile_table(report, curve):
    from rich.table import Table

    from core.organs import ORGAN_TITLES, ORGANS
    from segadv_tui.render.tables import number

    table = Table(title=f"{curve.label}: robust DSC per organ-size tertile (organ pixels in the truth)", title_justify="left")
    for column in ("organ", "tertile", "slices", "pixels", "clean", *(f"eps {p.eps:g}" for p in curve.points)):
        table.add_column(column, justify="left" if column in ("organ", "tertile") else "right")
    for organ in ORGANS:
        for index, first in enumerate(curve.points[0].tertiles[organ]):
            pixels = "" if first.pixels_min is None else f"{first.pixels_min}-{first.pixels_max}"
            table.add_row(
                ORGAN_TITLES[organ] if index == 0 else "", first.tertile, str(first.slices), pixels, number(first.dsc_clean),
                *(number(point.tertiles[organ][index].dsc_adv) for point in curve.points),
                end_section=index == 2,
            )
    return table


def _wins_table(report, curve):
    from rich.table import Table

    table = Table(title=f"{curve.label}: slices won per ensemble member (lowest mean DSC; ties to the earlier)",
                  title_justify="left")
    table.add_column("member")
    for point in curve.points:
        table.add_column(f"eps {point.eps:g}", justify="right")
    for member in report.members:
        table.add_row(member, *(str(point.wins[member]) for point in curve.points))
    return table


def _plot_points(report) -> tuple[list[float], dict]:
    """The eps axis and, per checkpoint, (DSC series, AS series) per organ and mean; the clean scores
    are drawn at eps 0 when the list does not hold it."""
    from core.organs import ORGAN_TITLES, ORGANS

    def value(x):
        return float("nan") if x is None else float(x)

    with_clean = 0.0 not in report.eps_values
    eps = ([0.0] if with_clean else []) + list(report.eps_values)
    series = {}
    for curve in report.curves:
        clean = curve.points[0].summary
        dsc = {ORGAN_TITLES[o]: [value(clean.dsc_clean[o])] * with_clean + [value(p.summary.dsc_adv[o]) for p in curve.points]
               for o in ORGANS}
        dsc["mean"] = [value(clean.mean_clean)] * with_clean + [value(p.summary.mean_adv) for p in curve.points]
        success = {ORGAN_TITLES[o]: [0.0 * value(clean.dsc_clean[o])] * with_clean  # NaN where undefined
                   + [value(p.summary.attack_success[o]) for p in curve.points] for o in ORGANS}
        success["mean"] = [0.0 * value(clean.mean_clean)] * with_clean + [value(p.summary.mean_attack_success)
                                                                           for p in curve.points]
        series[curve.label] = (dsc, success)
    return eps, series


def robust_rows(report) -> tuple[list[str], list[list]]:
    """One CSV row per (checkpoint, eps): robust DSC and AS per organ and mean, ROG, the tertiles' robust
    DSC per organ, realised norms and, for the ensemble, the wins per member."""
    from core.organs import ORGANS
    from core.robustness import TERTILES

    def cell(value):
        return "" if value is None else float(value)

    header = ["checkpoint", "eps", "slices", "scored", "dsc_clean_mean", "dsc_adv_mean", "as_mean", "rog"]
    header += [f"dsc_clean_{o}" for o in ORGANS] + [f"dsc_adv_{o}" for o in ORGANS] + [f"as_{o}" for o in ORGANS]
    header += [f"dsc_adv_{o}_{t}" for o in ORGANS for t in TERTILES]
    header += ["linf_max", "l2_mean", "passes_forward_backward", "passes_forward"]
    header += [f"wins_{m}" for m in report.members or []]
    rows = []
    for curve in report.curves:
        for point in curve.points:
            s = point.summary
            rows.append(
                [curve.label, point.eps, s.slices, s.scored, cell(s.mean_clean), cell(s.mean_adv),
                 cell(s.mean_attack_success), cell(point.rog)]
                + [cell(s.dsc_clean[o]) for o in ORGANS] + [cell(s.dsc_adv[o]) for o in ORGANS]
                + [cell(s.attack_success[o]) for o in ORGANS]
                + [cell(t.dsc_adv) for o in ORGANS for t in point.tertiles[o]]
                + [cell(s.linf_max), cell(s.l2_mean), report.budget["forward_backward"], report.budget["forward"]]
                + [point.wins[m] for m in report.members or []]
            )
    return header, rows
