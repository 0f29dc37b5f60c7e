"""The headless attack commands: ``attack``, ``sweep``, ``table`` (the paper's Table II) and ``figure``.

Each runs on the demo data and the bundled demo checkpoint by default, prints Rich tables and writes
machine-readable JSON / CSV / Markdown / PNG; the numbers all come from ``core.evaluation``.
"""

from __future__ import annotations

import difflib
from pathlib import Path

import typer

from segadv_tui.cli import app, fail
from segadv_tui.cli._common import (
    attack_config,
    checkpoint_fields,
    parse_eps_list,
    parse_losses,
    prepare,
    progress_bar,
)
from segadv_tui.cli._metrics import boundary_table, metric_fields, organ_columns, row_csv, summary_csv
from segadv_tui.cli._options import (
    ATTACK,
    DATA,
    AllSlices,
    BatchSize,
    BestIterate,
    Checkpoint,
    Corruption,
    Data,
    Delta,
    Device,
    Dpi,
    Empty,
    FigureWidth,
    ForeignModel,
    Limit,
    Loss,
    Method,
    Metrics,
    Mode,
    Norm,
    NsdTolerance,
    Organs,
    Precision,
    Seed,
    Severity,
    SliceAxis,
    Split,
    Steps,
    StepSize,
    Strict,
    Target,
    checkpoints_option,
    out_dir_option,
    output_option,
)
from segadv_tui.cli._outcome import DEFAULT_OUT_DIR, Outputs
from segadv_tui.cli._runs import NoCache, RunsIndex
from segadv_tui.render.figure_style import figure_style

PAPER_LOSSES = "bce,focal+dice,focal"


@app.command()
def attack(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    loss: Loss = "bce",
    eps: str | None = typer.Option(
        None,
        "--eps",
        rich_help_panel=ATTACK,
        help="L-inf budget in pixel units ([0, 1] images), or with --norm l2 the slice's L2 norm; default 0.009 (the "
        "paper's), for --method universal the delta's own bound.",
    ),
    method: Method = "fgsm",
    steps: Steps = None,
    step_size: StepSize = None,
    best_iterate: BestIterate = None,
    seed: Seed = 0,
    organs: Organs = None,
    delta: Delta = None,
    target: Target = "gt",
    mode: Mode = "textbook",
    norm: Norm = "linf",
    corruption: Corruption = None,
    severity: Severity = None,
    limit: Limit = None,
    all_slices: AllSlices = False,
    empty: Empty = "one",
    metrics: Metrics = "dsc",
    nsd_tolerance: NsdTolerance = None,
    device: Device = "auto",
    precision: Precision = "fp32",
    batch_size: BatchSize = 16,
    json_path: Path | None = output_option("--json", "Write the summary and per-slice rows as JSON."),
    csv_path: Path | None = output_option("--csv", "Write one row per slice as CSV."),
    run_index: RunsIndex = None,
    no_cache: NoCache = False,
    strict: Strict = False,
) -> None:
    """Attack a checkpoint over a data split: DSC clean vs adversarial per organ, attack success, realised L-inf / L2."""  # noqa: E501
    from segadv_tui.cli.universal import attack_eps

    config = attack_config(
        method=method,
        loss=loss,
        eps=attack_eps(method, delta, eps),
        mode=mode,
        target=target,
        steps=steps,
        step_size=step_size,
        empty=empty,
        all_slices=all_slices,
        seed=seed,
        precision=precision,
        delta=delta,
        best_iterate=best_iterate,  # delta a Path: attack_config lower-cases strings
        **metric_fields(metrics, nsd_tolerance),
        norm=norm,
        corruption=corruption,
        severity=severity,
    )
    run = prepare(
        "attack",
        Outputs("attack", json=json_path, csv=csv_path),
        batch_size=batch_size,
        device=device,
        checkpoints=[checkpoint],
        model=model,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        all_slices=all_slices,
        limit=limit,
    )
    loaded = run.checkpoint
    config = run.attack_config(config, organs or run.labels.names[-1])

    from core.evaluation.scoring import evaluate

    def payload(result) -> dict:
        return run.payload(result.to_dict(), models=checkpoint_fields(loaded))

    with run.keep_partial(payload), progress_bar(f"{config.method_label} eps {config.eps:g}") as progress:
        result = run.cached({"config": config.to_dict()}, evaluate)(
            loaded.model,
            run.records,
            loaded.img_size,
            config,
            batch_size=batch_size,
            device=run.device,
            progress=progress,
        )
    run.finish(_attack_table(result, loaded, run.split), json=lambda: payload(result), csv=lambda: attack_rows(result))


def _attack_table(result, loaded, split: str):
    from core.wording import label_noun, label_nouns
    from segadv_tui.render.tables import Table, number

    config, summary, labels = result.config, result.summary, result.labels
    rows = [
        (
            labels.titles[name],
            number(summary.dsc_clean[name]),
            number(summary.dsc_adv[name]),
            number(summary.attack_success[name]),
        )
        for name in labels.names
    ]
    rows.append(("mean", number(summary.mean_clean), number(summary.mean_adv), number(summary.mean_attack_success)))
    boundary, columns = organ_columns(config, summary)
    rows = [row + tuple(column[i] for column in columns) for i, row in enumerate(rows)]
    strength = "eps ignored" if config.method == "corrupt" else f"eps {config.eps:g}"
    return Table(
        f"{loaded.title}: {config.method_label}, {config.objective_label}, {strength}",
        (label_noun(labels), "DSC clean", "DSC adversarial", "attack success", *boundary),
        tuple(rows),
        bold=(frozenset(),) * len(labels) + (frozenset(range(4)),),
        sections=frozenset({len(labels)}),
        caption=f"{summary.scored} of {summary.slices} slices scored ({split} split, empty {label_nouns(labels)}: "
        f"{config.empty}); "
        f"realised L-inf max {number(summary.linf_max)}, mean {number(summary.linf_mean)}; L2 mean "
        f"{number(summary.l2_mean, 3)}; {result.seconds:.1f} s",
    ).to_rich()


def attack_rows(result) -> tuple[list[str], list[list]]:
    """One CSV row per slice: DSC clean / adversarial and AS per label (by name) and mean, realised norms."""
    names = result.labels.names
    header = ["slice_id", "has_organs", "scored"]
    for prefix in ("dsc_clean", "dsc_adv", "as"):
        header += [f"{prefix}_{name}" for name in names] + [f"{prefix}_mean"]
    header += ["linf", "l2", "zero_grad_fraction"]
    if result.rows:
        header += row_csv(result.config, result.rows[0].to_dict())[0]
    rows = []
    for row in (result_row.to_dict() for result_row in result.rows):
        cells = [row["slice_id"], int(row["has_organs"]), int(row["scored"])]
        for per_organ, mean in (
            ("dsc_clean", "mean_clean"),
            ("dsc_adv", "mean_adv"),
            ("attack_success", "mean_attack_success"),
        ):
            cells += [row[per_organ][name] for name in names] + [row[mean]]
        cells += [row["linf"], row["l2"], row["zero_grad_fraction"]] + row_csv(result.config, row)[1]
        rows.append(cells)
    return header, rows


@app.command()
def sweep(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    eps: str = typer.Option(
        "0:0.03:0.003",
        "--eps",
        rich_help_panel=ATTACK,
        help="start:stop:step (stop included) or a comma list, e.g. 0,0.005,0.009.",
    ),
    losses: str = typer.Option(
        PAPER_LOSSES,
        "--losses",
        rich_help_panel=ATTACK,
        help="Comma list of attack losses: bce, focal, dice, focal+dice.",
    ),
    target: Target = "gt",
    mode: Mode = "textbook",
    limit: Limit = None,
    all_slices: AllSlices = False,
    empty: Empty = "one",
    device: Device = "auto",
    precision: Precision = "fp32",
    batch_size: BatchSize = 16,
    out_dir: Path = out_dir_option("sweep.json", "sweep.csv", "sweep.png"),
    json_path: Path | None = output_option("--json", "JSON file (default OUT_DIR/sweep.json)."),
    csv_path: Path | None = output_option("--csv", "CSV file (default OUT_DIR/sweep.csv)."),
    png_path: Path | None = output_option(
        "--png", "Chart of DSC and AS against eps: .pdf, .svg or .png (default OUT_DIR/sweep.png).", "--out"
    ),
    width: FigureWidth = "double",
    dpi: Dpi = 300,
    run_index: RunsIndex = None,
    no_cache: NoCache = False,
    strict: Strict = False,
) -> None:
    """FGSM DSC and attack success against eps, per loss: one gradient per slice and loss serves every eps."""
    style = figure_style(width, dpi)
    eps_values = parse_eps_list(eps)
    loss_names = parse_losses(losses)
    config = attack_config(mode=mode, target=target, empty=empty, precision=precision, all_slices=all_slices)
    run = prepare(
        "sweep",
        Outputs("sweep", out_dir, json=json_path, csv=csv_path, png=png_path),
        batch_size=batch_size,
        device=device,
        checkpoints=[checkpoint],
        model=model,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        all_slices=all_slices,
        limit=limit,
    )
    loaded = run.checkpoint
    config = run.attack_config(config)

    from core.evaluation.scoring import evaluate_sweep
    from core.wording import label_nouns

    def payload(result) -> dict:
        return run.payload(result.to_dict(), models=checkpoint_fields(loaded))

    with run.keep_partial(payload), progress_bar(f"sweep {len(eps_values)} eps x {len(loss_names)} losses") as progress:
        result = run.cached({"config": config.to_dict(), "eps": eps_values, "losses": loss_names}, evaluate_sweep)(
            loaded.model,
            run.records,
            loaded.img_size,
            eps_values,
            loss_names,
            config,
            batch_size=batch_size,
            device=run.device,
            progress=progress,
        )
    caption = (
        f"{loaded.path.name}: {loaded.title}; {config.method_label}, target {config.target}; {len(run.records)} "
        f"{run.split} slices{run.with_caption(all_slices)}; empty {label_nouns(run.labels)}: {config.empty}"
    )
    run.finish(
        _sweep_table(result, loaded),
        json=lambda: payload(result),
        csv=lambda: sweep_rows(result),
        png=lambda: _sweep_plot(result, caption, style),
    )


def _sweep_plot(result, caption: str, style):
    """Mean DSC and attack success against eps, a line per loss."""
    from core.losses import LOSS_TITLES
    from segadv_tui.render.charts import sweep_chart

    dsc = {
        LOSS_TITLES[loss]: [result.entry(loss, e).summary.mean_adv for e in result.eps_values] for loss in result.losses
    }
    success = {
        LOSS_TITLES[loss]: [result.entry(loss, e).summary.mean_attack_success for e in result.eps_values]
        for loss in result.losses
    }
    return sweep_chart(result.eps_values, dsc, success, style=style, caption=caption)


def _sweep_table(result, loaded):
    from core.losses import LOSS_TITLES
    from segadv_tui.render.tables import Table, number

    first = result.entry(result.losses[0], result.eps_values[0]).summary
    headers = ["eps"]
    for loss in result.losses:
        headers += [f"{LOSS_TITLES[loss]} DSC", f"{LOSS_TITLES[loss]} AS"]
    rows = []
    for eps in result.eps_values:
        cells = [f"{eps:g}"]
        for loss in result.losses:
            summary = result.entry(loss, eps).summary
            cells += [number(summary.mean_adv), number(summary.mean_attack_success)]
        rows.append(tuple(cells))
    return Table(
        f"{result.config.method_label} sweep on {loaded.title}: mean DSC / attack success (clean DSC "
        f"{number(first.mean_clean)})",
        tuple(headers),
        tuple(rows),
        justify=("right",) * len(headers),
        caption=f"{first.scored} of {first.slices} slices scored; {result.seconds:.1f} s",
    ).to_rich()


def sweep_rows(result) -> tuple[list[str], list[list]]:
    """One CSV row per (loss, eps): mean DSC clean / adversarial, AS, per label (by name), and realised norms."""
    names = result.labels.names
    header = ["loss", "eps", "dsc_clean_mean", "dsc_adv_mean", "as_mean"]
    header += [f"dsc_adv_{name}" for name in names] + [f"as_{name}" for name in names]
    header += ["linf_max", "linf_mean", "l2_mean", "scored"]
    rows = []
    for entry in result.entries:
        s = entry.summary
        rows.append(
            [entry.loss, entry.eps, s.mean_clean, s.mean_adv, s.mean_attack_success]
            + [s.dsc_adv[name] for name in names]
            + [s.attack_success[name] for name in names]
            + [s.linf_max, s.linf_mean, s.l2_mean, s.scored]
        )
    return header, rows


@app.command()
def table(
    checkpoints: list[Path] | None = checkpoints_option(
        "A checkpoint per row; repeat the option. Default: the bundled demo checkpoint."
    ),
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    losses: str = typer.Option(
        PAPER_LOSSES,
        "--losses",
        rich_help_panel=ATTACK,
        help="Comma list of FGSM losses, one column each.",
    ),
    eps: str = typer.Option("0.009", "--eps", rich_help_panel=ATTACK, help="L-inf budget (the paper: 0.009)."),
    method: Method = "fgsm",
    steps: Steps = None,
    best_iterate: BestIterate = None,
    seed: Seed = 0,
    target: Target = "gt",
    mode: Mode = "textbook",
    limit: Limit = None,
    all_slices: AllSlices = False,
    empty: Empty = "one",
    metrics: Metrics = "dsc",
    nsd_tolerance: NsdTolerance = None,
    device: Device = "auto",
    precision: Precision = "fp32",
    batch_size: BatchSize = 16,
    md_path: Path | None = output_option("--md", "Write the table as Markdown."),
    csv_path: Path | None = output_option("--csv", "Write the table as CSV."),
    json_path: Path | None = output_option("--json", "Write the table with per-organ summaries as JSON."),
    run_index: RunsIndex = None,
    no_cache: NoCache = False,
    strict: Strict = False,
) -> None:
    """The paper's Table II: parameters, clean DSC and DSC after the attack (FGSM) with each loss; the best attack in bold."""  # noqa: E501
    from segadv_tui.render.tables import table_ii_table

    loss_names = parse_losses(losses)
    config = attack_config(
        method=method,
        eps=eps,
        steps=steps,
        seed=seed,
        mode=mode,
        target=target,
        empty=empty,
        precision=precision,
        all_slices=all_slices,
        best_iterate=best_iterate,
        **metric_fields(metrics, nsd_tolerance),
    )
    run = prepare(
        "table",
        Outputs("table", md=md_path, csv=csv_path, json=json_path),
        batch_size=batch_size,
        device=device,
        checkpoints=checkpoints or [None],
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        all_slices=all_slices,
        limit=limit,
    )
    loaded = run.checkpoints
    config = run.attack_config(config)

    from core.evaluation.scoring import table_ii
    from core.runs.keys import table_ii_key, table_ii_relabelled

    def payload(result) -> dict:
        return run.payload(result.to_dict(), checkpoints=[str(item.path) for item in loaded])

    models = [item.as_model(item.path.name) for item in loaded]
    runs = f"{len(loss_names)} losses" if "loss" in config.entry.parameters else "its own objective"
    with run.keep_partial(payload), progress_bar(f"Table II: {len(models)} model(s) x {runs}") as progress:
        result = run.cached(table_ii_key(config, loss_names), table_ii)(
            models, run.records, loss_names, config, batch_size=batch_size, device=run.device, progress=progress
        )
        result = table_ii_relabelled(result, [model.label for model in models])  # as named here, if served
    from core.wording import mean_over_caption

    caption = (
        f"DSC{mean_over_caption(run.labels)} before and after {config.method_label}"
        f"{'' if config.method == 'corrupt' else f' at eps {config.eps:g}, target {config.target}'}; "
        f"{len(run.records)} {run.split} slices{run.with_caption(all_slices)} of {run.dataset.root}; "
        f"lowest DSC (best attack) in bold."
    )
    formatted = table_ii_table(result, caption=caption)
    boundary = boundary_table(
        config,
        "Table II: boundary metrics",
        [(f"{row.title} / {loss}", summary) for row in result.rows for loss, summary in row.summaries.items()],
        "model / loss",
    )
    run.finish(
        formatted.to_rich(title="Table II"),
        *([boundary] if boundary else []),
        md=formatted.to_markdown,
        csv=lambda: table_ii_csv(result, loaded),
        json=lambda: payload(result),
    )


def table_ii_csv(result, loaded) -> tuple[list[str], list[list]]:
    # A method with its own objective has one column, under the first loss's key (core.evaluation.scoring.table_ii).
    uses_loss = "loss" in result.config.entry.parameters
    header = ["model", "title", "checkpoint", "parameters", "dsc_clean"] + [
        f"dsc_{result.method}_{loss}" if uses_loss else f"dsc_{result.method}" for loss in result.losses
    ]
    header += ["best_loss"]
    rows = [
        [item.meta.get("model"), row.title, str(item.path), row.params, row.dsc_clean]
        + [row.dsc_adv[loss] for loss in result.losses]
        + [row.best_loss or ""]
        + [
            cell
            for loss, summary in row.summaries.items()
            for cell in summary_csv(result.config, summary, f"{loss}_")[1]
        ]
        for row, item in zip(result.rows, loaded)
    ]
    if result.rows:  # the boundary metrics per loss, clean and adversarial, where asked
        header += [
            n for loss, s in result.rows[0].summaries.items() for n in summary_csv(result.config, s, f"{loss}_")[0]
        ]
    return header, rows


@app.command()
def figure(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    slice_id: str | None = typer.Option(
        None,
        "--slice",
        "-s",
        rich_help_panel=DATA,
        help="Slice id, e.g. case123_day20_slice_0065; default: a test slice with organs.",
    ),
    loss: Loss = "bce",
    eps: str = typer.Option("0.009", "--eps", rich_help_panel=ATTACK, help="L-inf budget in pixel units."),
    method: Method = "fgsm",
    steps: Steps = None,
    step_size: StepSize = None,
    best_iterate: BestIterate = None,
    seed: Seed = 0,
    organs: Organs = None,
    delta: Delta = None,
    target: Target = "gt",
    mode: Mode = "textbook",
    empty: Empty = "one",
    device: Device = "auto",
    out: Path | None = output_option(
        "--out",
        "PNG: the eight panels as the terminal draws them; PDF or SVG: six matplotlib panels for a journal, "
        f"--width wide; default {DEFAULT_OUT_DIR}/figure-SLICE-METHOD-LOSS-epsEPS.png.",
        "-o",
    ),
    width: FigureWidth = "double",
    strict: Strict = False,
) -> None:
    """A figure like the paper's figures 5-8: input, adversarial input, perturbation, truth, predictions, differences."""  # noqa: E501
    from segadv_tui.render.figure_style import figure_format
    from segadv_tui.render.figures import AttackPanels, attack_chart, attack_figure
    from segadv_tui.render.tables import number

    style = figure_style(width, 300)
    config = attack_config(
        method=method,
        loss=loss,
        eps=eps,
        mode=mode,
        target=target,
        steps=steps,
        step_size=step_size,
        empty=empty,
        all_slices=True,
        seed=seed,
        delta=delta,
        best_iterate=best_iterate,
    )
    run = prepare(
        "figure",
        Outputs("figure", figures=("out",), out=out),
        device=device,
        checkpoints=[checkpoint],
        model=model,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
    )
    loaded = run.checkpoint
    config = run.attack_config(config, organs or run.labels.names[-1])
    record = _find_slice(run.dataset, slice_id)

    result = _attack_one_slice(loaded.model, record, loaded.img_size, config, run.device)
    mean_clean, mean_adv, success, linf = result.mean_clean, result.mean_adv, result.mean_attack_success, result.linf
    caption = (
        f"{loaded.path.name}: {loaded.title} | slice {record.id} | {config.method_label}, {config.objective_label} | "
        f"eps {config.eps:g} | "
        f"DSC {number(mean_clean, 3)} -> {number(mean_adv, 3)} | AS {number(success, 3)} "
        f"| realised L-inf {number(linf)}"
    )
    run.outputs.name_default("out", f"figure-{record.id}-{config.method}-{config.loss}-eps{config.eps:g}.png")
    panels = AttackPanels.from_result(result)
    if figure_format(run.outputs.paths["out"]) == "png":
        image = attack_figure(panels, caption)
        size = f"{image.width} x {image.height}"
    else:
        image = attack_chart(panels, run.dataset.labels, caption, style)
        size = f"{style.width} column"
    # One slice: the slices the reader left out bear on nothing here.
    run.finish(
        out=lambda: image,
        skipped=False,
        detail=f" ({size}): slice {record.id}, mean DSC {number(mean_clean)} -> "
        f"{number(mean_adv)}, AS {number(success)}, realised L-inf {number(linf)}",
    )


def _attack_one_slice(model, record, img_size: int, config, device):
    """One slice attacked by ``core.evaluation.scoring.attack_slice``: its ``SliceResult`` with the pictures."""
    import torch

    from core.evaluation.scoring import attack_slice

    image_np, masks_np = record.load(img_size)
    image = torch.from_numpy(image_np)[None, None].to(device)
    truth = torch.from_numpy(masks_np)[None].float().to(device)
    return attack_slice(model, image, truth, config, ids=[record.id], pictures=True)[0]


def _find_slice(dataset, slice_id: str | None):
    """The record named ``slice_id``, or a one-line error with suggestions. By default the test slice
    showing the most organs, the largest (an informative figure on a fresh install); in other layouts,
    whose records cannot tell their extent without being read, the first test slice with labels."""
    from core.data.gitract import with_labels

    if slice_id is None:
        candidates = with_labels(dataset.split()[1]) or with_labels(dataset.records) or list(dataset.records)
        if not candidates:
            fail(f"{dataset.root} has no slices")
        if dataset.layout != "uw-madison":
            return candidates[0]
        return max(candidates, key=_organ_extent)
    try:
        return dataset.by_id(slice_id.strip())
    except KeyError:
        ids = [record.id for record in dataset]
        close = difflib.get_close_matches(slice_id.strip(), ids, n=3, cutoff=0.6)
        suggestions = close or [record.id for record in with_labels(dataset.records)[:3]] or ids[:3]
        hint = f"; try {', '.join(suggestions)}" if suggestions else ""
        fail(f"no slice {slice_id!r} in {dataset.root.name}{hint}")


def _organ_extent(record) -> tuple[int, int]:
    """(organs present, organ pixels) of a UW-Madison record, read off the RLE run lengths without painting
    the masks."""
    lengths = [sum(int(n) for n in rle.split()[1::2]) for rle in record.rles]
    return sum(1 for n in lengths if n), sum(lengths)
