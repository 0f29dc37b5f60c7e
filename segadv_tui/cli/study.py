"""``segadv study ...``: the paper's open questions as studies. ``luminosity``: attack success against intensity."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segadv_tui.cli import app, console
from segadv_tui.cli._common import (
    batch_size_option,
    check_batch_size,
    checkpoint_option,
    data_option,
    device_option,
    empty_option,
    limit_option,
    loss_option,
    method_option,
    mode_option,
    model_option,
    organs_option,
    seed_option,
    split_option,
    step_size_option,
    steps_option,
    strict_option,
    target_option,
)

study_app = typer.Typer(help="Studies of the paper's open questions (luminosity).", no_args_is_help=True)
app.add_typer(study_app, name="study")

DEFAULT_OUT_DIR = Path("segadv-out")


@study_app.command()
def luminosity(
    checkpoint: Optional[Path] = checkpoint_option(),
    model: Optional[str] = model_option(),
    data: Optional[Path] = data_option(),
    split: str = split_option(),
    loss: str = loss_option(),
    eps: str = typer.Option("0.009", "--eps", help="L-inf budget in pixel units; the paper used 0.009."),
    method: str = method_option(),
    steps: int = steps_option(),
    step_size: Optional[float] = step_size_option(),
    seed: int = seed_option(),
    organs: str = organs_option(),
    delta: Optional[Path] = typer.Option(None, "--delta", help="The universal method's perturbation."),
    target: str = target_option(),
    mode: str = mode_option(),
    limit: Optional[int] = limit_option(),
    empty: str = empty_option(),
    bootstrap: str = typer.Option("slice", "--bootstrap", help="What the bootstrap resamples: slice, scan (case and day) or case (patient); slices of one scan are not independent."),
    resamples: int = typer.Option(2000, "--resamples", help="Bootstrap resamples."),
    device: str = device_option(),
    batch_size: int = batch_size_option(),
    out_dir: Path = typer.Option(DEFAULT_OUT_DIR, "--out-dir", "-o", help="Folder for luminosity.json and luminosity.png."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="JSON file (default OUT_DIR/luminosity.json)."),
    png_path: Optional[Path] = typer.Option(None, "--png", help="Scatter plots (default OUT_DIR/luminosity.png)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Also write one row per slice as CSV."),
    strict: bool = strict_option(),
) -> None:
    """Attack success per slice against its intensity (raw and model input, mean and 99th percentile): Spearman's rho, bootstrap 95 % CI."""
    from core.devices import describe_device, resolve_device
    from core.files import write_csv, write_json, write_png
    from segadv_tui.cli._common import attack_config, check_outputs, load_checkpoint, open_data, progress_bar, select_records

    config = attack_config(
        method=method, loss=loss, eps=eps, mode=mode, target=target, steps=steps, step_size=step_size, empty=empty,
        seed=seed, organs=organs, delta=delta,
    )
    from core.errors import check_choice
    from core.luminosity import BOOTSTRAP_UNITS

    unit = check_choice(bootstrap.strip().lower(), BOOTSTRAP_UNITS, "bootstrap unit")
    check_batch_size(batch_size)
    json_path = json_path or out_dir / "luminosity.json"
    png_path = png_path or out_dir / "luminosity.png"
    check_outputs(json=json_path, png=png_path, csv=csv_path)
    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device, model)
    dataset = open_data(data, strict)
    records = select_records(dataset, split, limit=limit)
    split = split.strip().lower()

    from core.luminosity import FEATURES, luminosity_study
    from segadv_tui.cli._outcome import keep_partial, print_written, result_json

    def payload(result) -> dict:
        return {
            "command": "study luminosity", "device": describe_device(device), "checkpoint": str(loaded.path),
            "data": str(dataset.root), "data_fingerprint": dataset.fingerprint(), "split": split, **result.to_dict(),
        }

    # Ctrl-C: the correlations of the slices attacked so far.
    with keep_partial(json_path, payload, dataset), \
            progress_bar(f"luminosity: {config.method_label} eps {config.eps:g}") as progress:
        result = luminosity_study(loaded.model, records, loaded.img_size, config, unit=unit, resamples=resamples,
                                  seed=seed, batch_size=batch_size, device=device, progress=progress)
    console.print(_correlation_table(result, loaded, split))
    write_json(json_path, result_json(payload(result), dataset))
    from segadv_tui.render.plots import scatter_plot
    from segadv_tui.render.tables import number

    notes = {
        FEATURES[name]: f"rho {number(c.rho, 3)}  95% CI [{number(c.low, 3)}, {number(c.high, 3)}]  n {c.n}"
        for name, c in result.correlations.items()
    }
    panels = {FEATURES[name]: ([row[name] for row in result.rows], [row["attack_success"] for row in result.rows])
              for name in FEATURES}
    caption = (f"{loaded.path.name}: {loaded.title}; {config.label}; {len(result.rows)} {split} slices of "
               f"{dataset.root.name} with a defined attack success; bootstrap over {unit}s ({_count(result, unit)}), "
               f"{result.resamples} resamples.")
    write_png(png_path, scatter_plot(panels, y_label="attack success (mean over organs)", notes=notes,
                                     title="Attack success against slice intensity", caption=caption))
    written = [json_path, png_path]
    if csv_path is not None:
        header = ["slice_id", "case", "scan", *FEATURES, "dsc_clean", "dsc_adv", "attack_success"]
        write_csv(csv_path, header, [[row[key] for key in header] for row in result.rows])
        written.append(csv_path)
    print_written(written, dataset, json_path)


def _correlation_table(result, loaded, split: str):
    from rich.table import Table

    from core.luminosity import FEATURES
    from segadv_tui.render.tables import number

    table = Table(title=f"{loaded.title}: attack success against intensity, {result.config.label}", title_justify="left")
    for column, justify in (("feature", "left"), ("Spearman's rho", "right"), ("95 % CI", "right"), ("slices", "right")):
        table.add_column(column, justify=justify)
    for name, c in result.correlations.items():
        table.add_row(FEATURES[name], number(c.rho, 3), f"[{number(c.low, 3)}, {number(c.high, 3)}]", str(c.n))
    s = result.summary
    table.caption = (
        f"{split} split; mean DSC {number(s.mean_clean, 3)} -> {number(s.mean_adv, 3)}, attack success "
        f"{number(s.mean_attack_success, 3)}; percentile bootstrap over {result.unit}s ({_count(result, result.unit)}) "
        f"({result.resamples} resamples); {result.seconds:.1f} s"
    )
    table.caption_justify = "left"
    return table


def _count(result, unit: str) -> int:
    """How many units the bootstrap drew from (an interval needs at least two)."""
    return len(result.rows) if unit == "slice" else len({row[unit] for row in result.rows})
