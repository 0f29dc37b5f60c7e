"""``segadv transfer``: attacks crafted on each source model (rows) scored on every target model (columns)."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, fail
from segadv_tui.cli._common import attack_config, prepare, progress_bar, refuse_artefacts
from segadv_tui.cli._metrics import boundary_table, metric_fields, summary_csv
from segadv_tui.cli._options import (
    ATTACK,
    AllSlices,
    BatchSize,
    Data,
    Device,
    Dpi,
    Empty,
    FigureWidth,
    Limit,
    Loss,
    Method,
    Metrics,
    Mode,
    NsdTolerance,
    Organs,
    Precision,
    Seed,
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
from segadv_tui.cli._outcome import Outputs
from segadv_tui.cli._runs import NoCache, RunsIndex
from segadv_tui.render.figure_style import figure_style


def bundled_checkpoints() -> list[Path]:
    """Every bundled demo checkpoint (``demo_*.safetensors``), the default set of models to compare."""
    from core.paths import bundled_checkpoint_dirs

    for folder in bundled_checkpoint_dirs():
        found = sorted(folder.glob("demo_*.safetensors"))
        if found:
            return found
    return []


def model_labels(loaded) -> list[str]:
    """Short names for the models: the registry name where those differ, else the file names."""
    for labels in ([item.meta.get("model") or item.path.stem for item in loaded], [item.path.stem for item in loaded]):
        if len(set(labels)) == len(labels):
            return labels
    return [f"{index + 1}:{item.path.stem}" for index, item in enumerate(loaded)]


@app.command()
def transfer(
    checkpoints: list[Path] | None = checkpoints_option(
        "A checkpoint per model; repeat the option (at least two). Default: every bundled demo checkpoint."
    ),
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    loss: Loss = "bce",
    eps: str = typer.Option(
        "0.009",
        "--eps",
        rich_help_panel=ATTACK,
        help="L-inf budget in pixel units ([0, 1] images); the paper used 0.009.",
    ),
    method: Method = "fgsm",
    steps: Steps = None,
    step_size: StepSize = None,
    seed: Seed = 0,
    organs: Organs = None,
    target: Target = "gt",
    mode: Mode = "textbook",
    ensembles: bool = typer.Option(
        True,
        "--ensembles/--no-ensembles",
        rich_help_panel=ATTACK,
        help="With 3 models or more, add a leave-one-out ensemble row per model (the mean of the other models' "
        "logits).",
    ),
    limit: Limit = None,
    all_slices: AllSlices = False,
    empty: Empty = "one",
    metrics: Metrics = "dsc",
    nsd_tolerance: NsdTolerance = None,
    device: Device = "auto",
    precision: Precision = "fp32",
    batch_size: BatchSize = 16,
    out_dir: Path = out_dir_option("transfer.json", "transfer.csv", "transfer.png"),
    json_path: Path | None = output_option("--json", "JSON file (default OUT_DIR/transfer.json)."),
    csv_path: Path | None = output_option("--csv", "One row per (source, target) (default OUT_DIR/transfer.csv)."),
    png_path: Path | None = output_option(
        "--png",
        "Heatmap of attack success with the numbers: .pdf, .svg or .png (default OUT_DIR/transfer.png).",
        "--out",
    ),
    run_index: RunsIndex = None,
    no_cache: NoCache = False,
    width: FigureWidth = "double",
    dpi: Dpi = 300,
    strict: Strict = False,
) -> None:
    """Transfer matrix: each source's adversarial slices (crafted once) scored on every model; the diagonal is white-box."""  # noqa: E501
    style = figure_style(width, dpi)
    paths = list(checkpoints) if checkpoints else bundled_checkpoints()
    if len(paths) < 2:
        given = "one checkpoint" if checkpoints else f"{len(paths)} bundled checkpoint(s)"
        fail(f"transfer compares models: give at least two checkpoints with -c (got {given})")
    config = attack_config(
        method=method,
        loss=loss,
        eps=eps,
        mode=mode,
        target=target,
        steps=steps,
        step_size=step_size,
        empty=empty,
        all_slices=all_slices,
        seed=seed,
        precision=precision,
        **metric_fields(metrics, nsd_tolerance),
    )
    refuse_artefacts(config, "transfer", "crafts a perturbation on one model to score it on another")
    run = prepare(
        "transfer",
        Outputs("transfer", out_dir, json=json_path, csv=csv_path, png=png_path),
        batch_size=batch_size,
        device=device,
        checkpoints=paths,
        check_models=_one_input_size,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        all_slices=all_slices,
        limit=limit,
    )
    loaded = run.checkpoints
    config = run.attack_config(config, organs or run.labels.names[-1])
    labels = model_labels(loaded)

    from core.evaluation.transfer import transfer as run_transfer

    def payload(result) -> dict:
        return run.payload(result.to_dict(), checkpoints={label: str(item.path) for label, item in zip(labels, loaded)})

    with (
        run.keep_partial(payload),
        progress_bar(f"transfer: {config.method_label} on {len(loaded)} models") as progress,
    ):
        key = {"config": config.to_dict(), "labels": labels, "ensembles": ensembles}
        result = run.cached(key, run_transfer)(
            [item.as_model(label) for label, item in zip(labels, loaded)],
            run.records,
            loaded[0].img_size,
            config,
            ensembles=ensembles,
            batch_size=batch_size,
            device=run.device,
            progress=progress,
        )
    from core.wording import label_nouns, mean_over_caption

    caption = (
        f"{config.method_label}, {config.objective_label}, eps {config.eps:g}; {len(run.records)} {run.split} slices"
        f"{run.with_caption(all_slices)} of {run.dataset.root.name}; empty {label_nouns(run.labels)}: {config.empty}. "
        f"Cells: mean attack success on the column's model{mean_over_caption(run.labels)} "
        f"(below: its mean DSC after the attack); "
        f"{result.attacks} attacks, {result.seconds:.1f} s."
    )
    entries = [(f"{cell.source} -> {cell.target}", cell.summary) for cell in result.cells]
    boundary = boundary_table(config, "Transfer: boundary metrics", entries, "source -> target")
    run.finish(
        _transfer_table(result, mean_over_caption(run.labels)),
        *([boundary] if boundary else []),
        json=lambda: payload(result),
        csv=lambda: transfer_rows(result),
        png=lambda: transfer_figure(result, caption, style),
    )


def _one_input_size(loaded) -> None:
    """Every model attacks and scores the same tensors."""
    if len({item.img_size for item in loaded}) > 1:
        fail(
            "transfer needs one input size; the checkpoints take "
            + ", ".join(f"{item.path.name}: {item.img_size}" for item in loaded)
        )


def _transfer_table(result, mean_over: str):
    from segadv_tui.render.tables import Table, number

    headers = ["source \\ target"]
    for label in result.targets:
        clean = result.cell(result.sources[0].label, label).summary.mean_clean
        headers.append(f"{label}\n(clean {number(clean, 3)})")
    rows, bold = [], []
    for source in result.sources:
        cells = [result.cell(source.label, label) for label in result.targets]
        rows.append(
            (
                source.label,
                *(
                    f"{number(cell.summary.mean_attack_success, 3)} ({number(cell.summary.mean_adv, 3)})"
                    for cell in cells
                ),
            )
        )
        bold.append(frozenset(1 + i for i, cell in enumerate(cells) if cell.white_box))
    first = result.cells[0].summary
    return Table(
        f"Transfer: mean attack success (mean DSC after){mean_over}, {result.config.label}",
        tuple(headers),
        tuple(rows),
        tuple(bold),
        sections=frozenset({len(result.targets) - 1}),
        caption=f"bold: white-box (the target is among the attacked models); {first.scored} of {first.slices} slices "
        f"scored; {result.attacks} attacks, {result.seconds:.1f} s",
    ).to_rich()


def transfer_rows(result) -> tuple[list[str], list[list]]:
    """One CSV row per (source, target): clean and adversarial mean DSC, AS, per label (by name), realised L-inf."""
    names = result.labels.names
    header = ["source", "target", "white_box", "dsc_clean_mean", "dsc_adv_mean", "as_mean"]
    header += [f"dsc_adv_{name}" for name in names] + [f"as_{name}" for name in names]
    header += ["linf_max", "scored"]
    if result.cells:
        header += summary_csv(result.config, result.cells[0].summary)[0]
    rows = []
    for cell in result.cells:
        s = cell.summary
        rows.append(
            [cell.source, cell.target, int(cell.white_box), s.mean_clean, s.mean_adv, s.mean_attack_success]
            + [s.dsc_adv[name] for name in names]
            + [s.attack_success[name] for name in names]
            + [s.linf_max, s.scored]
            + summary_csv(result.config, s)[1]
        )
    return header, rows


def transfer_figure(result, caption: str, style):
    """The heatmap: attack success per (source, target), DSC after the attack under it, white-box outlined."""
    import numpy as np

    from segadv_tui.render.charts import heatmap_chart
    from segadv_tui.render.tables import number

    white_box = np.array([[result.cell(s.label, t).white_box for t in result.targets] for s in result.sources])
    columns = [f"{t} ({number(result.cell(result.sources[0].label, t).summary.mean_clean, 3)})" for t in result.targets]
    return heatmap_chart(
        result.matrix("mean_attack_success"),
        [s.label for s in result.sources],
        columns,
        style=style,
        colour_title="mean attack success",
        title=f"Transfer: attack success, {result.config.method_label} eps {result.config.eps:g}",
        row_title="crafted on",
        column_title="scored on (clean mean DSC)",
        second_line=result.matrix("mean_adv"),
        second_prefix="DSC ",
        marked=white_box,
        mark_note="white-box (the target was attacked)",
        caption=caption,
    )
