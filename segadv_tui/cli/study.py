"""``segadv study ...``: the paper's open questions as studies. ``luminosity``: attack success against intensity."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app
from segadv_tui.cli._common import attack_config, choice, prepare, progress_bar, refuse_artefacts
from segadv_tui.cli._options import (
    ATTACK,
    BatchSize,
    Checkpoint,
    Data,
    Device,
    Dpi,
    Empty,
    FigureWidth,
    ForeignModel,
    Limit,
    Loss,
    Method,
    Mode,
    Organs,
    Seed,
    SliceAxis,
    Split,
    Steps,
    StepSize,
    Strict,
    Target,
    out_dir_option,
    output_option,
)
from segadv_tui.cli._outcome import Outputs
from segadv_tui.render.figure_style import figure_style

study_app = typer.Typer(help="Studies of the paper's open questions (luminosity).", no_args_is_help=True)
app.add_typer(study_app, name="study")

STUDY = "Study"  # the panel of the study's own options in --help


@study_app.command()
def luminosity(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    loss: Loss = "bce",
    eps: str = typer.Option(
        "0.009",
        "--eps",
        rich_help_panel=ATTACK,
        help="L-inf budget in pixel units; the paper used 0.009.",
    ),
    method: Method = "fgsm",
    steps: Steps = None,
    step_size: StepSize = None,
    seed: Seed = 0,
    organs: Organs = None,
    delta: Path | None = typer.Option(
        None,
        "--delta",
        rich_help_panel=ATTACK,
        help="The universal method's perturbation.",
    ),
    target: Target = "gt",
    mode: Mode = "textbook",
    limit: Limit = None,
    empty: Empty = "one",
    bootstrap: str = typer.Option(
        "slice",
        "--bootstrap",
        rich_help_panel=STUDY,
        help="What the bootstrap resamples: slice, scan (case and day) or case (patient); slices of one scan are not "
        "independent.",
    ),
    resamples: int = typer.Option(2000, "--resamples", rich_help_panel=STUDY, help="Bootstrap resamples."),
    device: Device = "auto",
    batch_size: BatchSize = 16,
    out_dir: Path = out_dir_option("luminosity.json", "luminosity.png"),
    json_path: Path | None = output_option("--json", "JSON file (default OUT_DIR/luminosity.json)."),
    png_path: Path | None = output_option(
        "--png", "Scatter plots: .pdf, .svg or .png (default OUT_DIR/luminosity.png).", "--out"
    ),
    width: FigureWidth = "double",
    dpi: Dpi = 300,
    csv_path: Path | None = output_option("--csv", "Also write one row per slice as CSV."),
    strict: Strict = False,
) -> None:
    """Attack success per slice against its intensity (raw and model input, mean and 99th percentile): Spearman's rho, bootstrap 95 % CI."""  # noqa: E501
    from core.evaluation.luminosity import BOOTSTRAP_UNITS

    style = figure_style(width, dpi)
    config = attack_config(
        method=method,
        loss=loss,
        eps=eps,
        mode=mode,
        target=target,
        steps=steps,
        step_size=step_size,
        empty=empty,
        seed=seed,
        delta=delta,
    )
    refuse_artefacts(config, "study luminosity", "measures the attack's success against an eps budget")
    unit = choice(bootstrap, BOOTSTRAP_UNITS, "bootstrap unit")
    run = prepare(
        "study luminosity",
        Outputs("luminosity", out_dir, optional=("csv",), json=json_path, png=png_path, csv=csv_path),
        batch_size=batch_size,
        device=device,
        checkpoints=[checkpoint],
        model=model,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        limit=limit,
    )
    loaded = run.checkpoint
    config = run.attack_config(config, organs or run.labels.names[-1])

    from core.evaluation.luminosity import FEATURES, luminosity_study

    def payload(result) -> dict:
        return run.payload(result.to_dict(), models={"checkpoint": str(loaded.path)}, slices=False)

    # Ctrl-C: the correlations of the slices attacked so far.
    with run.keep_partial(payload), progress_bar(f"luminosity: {config.method_label} eps {config.eps:g}") as progress:
        result = luminosity_study(
            loaded.model,
            run.records,
            loaded.img_size,
            config,
            unit=unit,
            resamples=resamples,
            seed=seed,
            batch_size=batch_size,
            device=run.device,
            progress=progress,
        )
    caption = (
        f"{loaded.path.name}: {loaded.title}; {config.label}; {len(result.rows)} {run.split} slices of "
        f"{run.dataset.root.name} with a defined attack success; bootstrap over {unit}s "
        f"({_count(result, unit)}), {result.resamples} resamples."
    )
    header = ["slice_id", "case", "scan", *FEATURES, "dsc_clean", "dsc_adv", "attack_success"]
    run.finish(
        _correlation_table(result, loaded, run.split),
        json=lambda: payload(result),
        png=lambda: _scatter(result, caption, style, run.labels),
        csv=lambda: (header, [[row[key] for key in header] for row in result.rows]),
    )


def _scatter(result, caption: str, style, labels):
    """Attack success against each intensity feature, a panel each, with rho and its interval."""
    from core.evaluation.luminosity import FEATURES
    from core.wording import label_nouns
    from segadv_tui.render.charts import scatter_chart
    from segadv_tui.render.tables import number

    notes = {
        FEATURES[name]: f"rho {number(c.rho, 3)}  95% CI [{number(c.low, 3)}, {number(c.high, 3)}]  n {c.n}"
        for name, c in result.correlations.items()
    }
    panels = {
        FEATURES[name]: ([row[name] for row in result.rows], [row["attack_success"] for row in result.rows])
        for name in FEATURES
    }
    return scatter_chart(
        panels,
        style=style,
        y_label=f"attack success (mean over {label_nouns(labels)})",
        notes=notes,
        title="Attack success against slice intensity",
        caption=caption,
    )


def _correlation_table(result, loaded, split: str):
    from core.evaluation.luminosity import FEATURES
    from segadv_tui.render.tables import Table, number

    s = result.summary
    return Table(
        f"{loaded.title}: attack success against intensity, {result.config.label}",
        ("feature", "Spearman's rho", "95 % CI", "slices"),
        tuple(
            (FEATURES[name], number(c.rho, 3), f"[{number(c.low, 3)}, {number(c.high, 3)}]", str(c.n))
            for name, c in result.correlations.items()
        ),
        caption=f"{split} split; mean DSC {number(s.mean_clean, 3)} -> {number(s.mean_adv, 3)}, attack success "
        f"{number(s.mean_attack_success, 3)}; percentile bootstrap over {result.unit}s "
        f"({_count(result, result.unit)}) ({result.resamples} resamples); {result.seconds:.1f} s",
    ).to_rich()


def _count(result, unit: str) -> int:
    """How many units the bootstrap drew from (an interval needs at least two)."""
    return len(result.rows) if unit == "slice" else len({row[unit] for row in result.rows})
