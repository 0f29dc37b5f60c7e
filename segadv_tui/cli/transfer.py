"""``segadv transfer``: attacks crafted on each source model (rows) scored on every target model (columns)."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segadv_tui.cli import app, console, fail
from segadv_tui.cli._common import (
    all_slices_option,
    batch_size_option,
    check_batch_size,
    data_option,
    device_option,
    empty_option,
    limit_option,
    loss_option,
    method_option,
    mode_option,
    organs_option,
    precision_option,
    seed_option,
    split_option,
    step_size_option,
    steps_option,
    strict_option,
    target_option,
)

DEFAULT_OUT_DIR = Path("segadv-out")


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
    checkpoints: Optional[list[Path]] = typer.Option(
        None, "--checkpoint", "-c",
        help="A checkpoint per model; repeat the option (at least two). Default: every bundled demo checkpoint.",
    ),
    data: Optional[Path] = data_option(),
    split: str = split_option(),
    loss: str = loss_option(),
    eps: str = typer.Option("0.009", "--eps", help="L-inf budget in pixel units ([0, 1] images); the paper used 0.009."),
    method: str = method_option(),
    steps: int = steps_option(),
    step_size: Optional[float] = step_size_option(),
    seed: int = seed_option(),
    organs: str = organs_option(),
    target: str = target_option(),
    mode: str = mode_option(),
    ensembles: bool = typer.Option(True, "--ensembles/--no-ensembles", help="With 3 models or more, add a leave-one-out ensemble row per model (the mean of the other models' logits)."),
    limit: Optional[int] = limit_option(),
    all_slices: bool = all_slices_option(),
    empty: str = empty_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option(),
    out_dir: Path = typer.Option(DEFAULT_OUT_DIR, "--out-dir", "-o", help="Folder for transfer.json, transfer.csv and transfer.png."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="JSON file (default OUT_DIR/transfer.json)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="One row per (source, target) (default OUT_DIR/transfer.csv)."),
    png_path: Optional[Path] = typer.Option(None, "--png", help="Heatmap of attack success with the numbers (default OUT_DIR/transfer.png)."),
    strict: bool = strict_option(),
) -> None:
    """Transfer matrix: each source's adversarial slices (crafted once) scored on every model; the diagonal is white-box."""
    from core.devices import resolve_device
    from core.files import write_csv, write_json, write_png
    from segadv_tui.cli._common import (
        attack_config, check_outputs, load_checkpoint, open_data, progress_bar, select_records,
    )

    paths = list(checkpoints) if checkpoints else bundled_checkpoints()
    if len(paths) < 2:
        given = "one checkpoint" if checkpoints else f"{len(paths)} bundled checkpoint(s)"
        fail(f"transfer compares models: give at least two checkpoints with -c (got {given})")
    config = attack_config(
        method=method, loss=loss, eps=eps, mode=mode, target=target, steps=steps, step_size=step_size, empty=empty,
        all_slices=all_slices, seed=seed, organs=organs, precision=precision,
    )
    check_batch_size(batch_size)
    json_path = json_path or out_dir / "transfer.json"
    csv_path = csv_path or out_dir / "transfer.csv"
    png_path = png_path or out_dir / "transfer.png"
    check_outputs(json=json_path, csv=csv_path, png=png_path)
    device = resolve_device(device)
    loaded = [load_checkpoint(path, device) for path in paths]
    sizes = {item.img_size for item in loaded}
    if len(sizes) > 1:
        fail("transfer needs one input size; the checkpoints take "
             + ", ".join(f"{item.path.name}: {item.img_size}" for item in loaded))
    dataset = open_data(data, strict)
    records = select_records(dataset, split, all_slices=all_slices, limit=limit)
    split = split.strip().lower()
    labels = model_labels(loaded)

    from core.devices import describe_device
    from core.transfer import transfer as run_transfer
    from segadv_tui.cli._outcome import keep_partial, print_written, result_json

    def payload(result) -> dict:
        return {
            "command": "transfer", "device": describe_device(device), "data": str(dataset.root),
            "data_fingerprint": dataset.fingerprint(), "split": split, "slices": len(records),
            "checkpoints": {label: str(item.path) for label, item in zip(labels, loaded)}, **result.to_dict(),
        }

    with keep_partial(json_path, payload, dataset), \
            progress_bar(f"transfer: {config.method_label} on {len(loaded)} models") as progress:
        result = run_transfer(
            [(label, item.model) for label, item in zip(labels, loaded)], records, loaded[0].img_size, config,
            ensembles=ensembles, batch_size=batch_size, device=device, progress=progress,
        )
    console.print(_transfer_table(result))
    caption = (
        f"{config.method_label}, {config.objective_label}, eps {config.eps:g}; {len(records)} {split} slices"
        f"{'' if all_slices else ' with organs'} of {dataset.root.name}; empty organs: {config.empty}. "
        f"Cells: mean attack success on the column's model (below: its mean DSC after the attack); "
        f"{result.attacks} attacks, {result.seconds:.1f} s."
    )
    write_json(json_path, result_json(payload(result), dataset))
    write_csv(csv_path, *transfer_rows(result))
    write_png(png_path, transfer_figure(result, caption))
    print_written([json_path, csv_path, png_path], dataset, json_path)


def _transfer_table(result):
    from rich.table import Table

    from segadv_tui.render.tables import number

    config = result.config
    table = Table(title=f"Transfer: mean attack success (mean DSC after), {config.label}", title_justify="left")
    table.add_column("source \\ target")
    for label in result.targets:
        clean = result.cell(result.sources[0].label, label).summary.mean_clean
        table.add_column(f"{label}\n(clean {number(clean, 3)})", justify="right")
    for source in result.sources:
        cells = []
        for label in result.targets:
            cell = result.cell(source.label, label)
            text = f"{number(cell.summary.mean_attack_success, 3)} ({number(cell.summary.mean_adv, 3)})"
            cells.append(f"[bold]{text}[/]" if cell.white_box else text)
        table.add_row(source.label, *cells, end_section=source is result.sources[len(result.targets) - 1])
    first = result.cells[0].summary
    table.caption = (
        f"bold: white-box (the target is among the attacked models); {first.scored} of {first.slices} slices scored; "
        f"{result.attacks} attacks, {result.seconds:.1f} s"
    )
    table.caption_justify = "left"
    return table


def transfer_rows(result) -> tuple[list[str], list[list]]:
    """One CSV row per (source, target): clean and adversarial mean DSC, AS, per organ, realised L-inf."""
    from core.organs import ORGANS

    header = ["source", "target", "white_box", "dsc_clean_mean", "dsc_adv_mean", "as_mean"]
    header += [f"dsc_adv_{organ}" for organ in ORGANS] + [f"as_{organ}" for organ in ORGANS]
    header += ["linf_max", "scored"]
    rows = []
    for cell in result.cells:
        s = cell.summary
        rows.append(
            [cell.source, cell.target, int(cell.white_box), s.mean_clean, s.mean_adv, s.mean_attack_success]
            + [s.dsc_adv[organ] for organ in ORGANS] + [s.attack_success[organ] for organ in ORGANS]
            + [s.linf_max, s.scored]
        )
    return header, rows


def transfer_figure(result, caption: str):
    """The heatmap: attack success per (source, target), DSC after the attack under it, white-box outlined."""
    import numpy as np

    from segadv_tui.render.plots import heatmap
    from segadv_tui.render.tables import number

    white_box = np.array([[result.cell(s.label, t).white_box for t in result.targets] for s in result.sources])
    columns = [f"{t} ({number(result.cell(result.sources[0].label, t).summary.mean_clean, 3)})" for t in result.targets]
    return heatmap(
        result.matrix("mean_attack_success"), [s.label for s in result.sources], columns,
        title=f"Transfer: attack success, {result.config.method_label} eps {result.config.eps:g}",
        row_title="crafted on", column_title="scored on (clean mean DSC)",
        second_line=result.matrix("mean_adv"), second_prefix="DSC ", marked=white_box,
        mark_note="white-box (the target was attacked)", caption=caption,
    )
