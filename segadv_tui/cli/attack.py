"""The headless attack commands: ``attack``, ``sweep``, ``table`` (the paper's Table II) and ``figure``.

Each runs on the demo data and the bundled demo checkpoint by default, prints Rich tables and writes
machine-readable JSON / CSV / Markdown / PNG; the numbers all come from ``core.evaluation``.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Optional

import typer

from core.distributed import is_main_process
from segadv_tui.cli import app, console, fail
from segadv_tui.cli._common import (
    all_slices_option,
    batch_size_option,
    best_iterate_option,
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
    precision_option,
    seed_option,
    split_option,
    step_size_option,
    steps_option,
    strict_option,
    target_option,
)

DEFAULT_OUT_DIR = Path("segadv-out")
PAPER_LOSSES = "bce,focal+dice,focal"


def _source_info(loaded, dataset, split: str, records, device) -> dict:
    """Where the numbers come from, for the JSON files."""
    from core.devices import describe_device

    return {
        "device": describe_device(device),
        "checkpoint": str(loaded.path),
        "model": loaded.meta.get("model"),
        "title": loaded.title,
        "img_size": loaded.img_size,
        "data": str(dataset.root),
        "data_fingerprint": dataset.fingerprint(),
        "split": split,
        "slices": len(records),
    }


@app.command()
def attack(
    checkpoint: Optional[Path] = checkpoint_option(),
    model: Optional[str] = model_option(),
    data: Optional[Path] = data_option(),
    split: str = split_option(),
    loss: str = loss_option(),
    eps: Optional[str] = typer.Option(None, "--eps", help="L-inf budget in pixel units ([0, 1] images); default 0.009 (the paper's), for --method universal the delta's own bound."),
    method: str = method_option(),
    steps: Optional[int] = steps_option(),
    step_size: Optional[float] = step_size_option(),
    best_iterate: Optional[bool] = best_iterate_option(),
    seed: int = seed_option(),
    organs: str = organs_option(),
    delta: Optional[Path] = typer.Option(None, "--delta", help="The universal method's perturbation (made by `segadv universal`)."),
    target: str = target_option(),
    mode: str = mode_option(),
    limit: Optional[int] = limit_option(),
    all_slices: bool = all_slices_option(),
    empty: str = empty_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option(),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the summary and per-slice rows as JSON."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write one row per slice as CSV."),
    strict: bool = strict_option(),
) -> None:
    """Attack a checkpoint over a data split: DSC clean vs adversarial per organ, attack success, realised L-inf / L2."""
    from core.devices import resolve_device
    from core.files import write_csv, write_json
    from segadv_tui.cli._common import (
        attack_config, check_outputs, load_checkpoint, open_data, progress_bar, select_records,
    )

    from segadv_tui.cli.universal import attack_eps

    config = attack_config(
        method=method, loss=loss, eps=attack_eps(method, delta, eps), mode=mode, target=target, steps=steps,
        step_size=step_size, empty=empty, all_slices=all_slices, seed=seed, organs=organs, precision=precision,
        delta=delta, best_iterate=best_iterate,  # delta a Path: attack_config lower-cases strings
    )
    check_batch_size(batch_size)
    check_outputs(json=json_path, csv=csv_path)
    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device, model)
    dataset = open_data(data, strict)
    records = select_records(dataset, split, all_slices=all_slices, limit=limit)
    split = split.strip().lower()

    from core.evaluation import evaluate
    from segadv_tui.cli._outcome import keep_partial, print_written, result_json

    def payload(result) -> dict:
        return {"command": "attack", **_source_info(loaded, dataset, split, records, device), **result.to_dict()}

    with keep_partial(json_path or DEFAULT_OUT_DIR / "attack.json", payload, dataset), \
            progress_bar(f"{config.method_label} eps {config.eps:g}") as progress:
        result = evaluate(
            loaded.model, records, loaded.img_size, config, batch_size=batch_size, device=device, progress=progress
        )
    if not is_main_process():  # under torchrun rank 0 alone prints and writes
        return
    console.print(_attack_table(result, loaded, split))
    if json_path is not None:
        write_json(json_path, result_json(payload(result), dataset))
    if csv_path is not None:
        write_csv(csv_path, *attack_rows(result))
    print_written([path for path in (json_path, csv_path) if path is not None], dataset, json_path)


def _attack_table(result, loaded, split: str):
    from rich.table import Table

    from core.organs import ORGAN_TITLES, ORGANS
    from segadv_tui.render.tables import number

    config, summary = result.config, result.summary
    title = f"{loaded.title}: {config.method_label}, {config.objective_label}, eps {config.eps:g}"
    table = Table(title=title, title_justify="left")
    table.add_column("organ")
    for column in ("DSC clean", "DSC adversarial", "attack success"):
        table.add_column(column, justify="right")
    for organ in ORGANS:
        table.add_row(
            ORGAN_TITLES[organ], number(summary.dsc_clean[organ]), number(summary.dsc_adv[organ]),
            number(summary.attack_success[organ]),
        )
    table.add_row(
        "[bold]mean[/]", f"[bold]{number(summary.mean_clean)}[/]", f"[bold]{number(summary.mean_adv)}[/]",
        f"[bold]{number(summary.mean_attack_success)}[/]", end_section=True,
    )
    table.caption = (
        f"{summary.scored} of {summary.slices} slices scored ({split} split, empty organs: {config.empty}); "
        f"realised L-inf max {number(summary.linf_max)}, mean {number(summary.linf_mean)}; L2 mean {number(summary.l2_mean, 3)}; "
        f"{result.seconds:.1f} s"
    )
    table.caption_justify = "left"
    return table


def attack_rows(result) -> tuple[list[str], list[list]]:
    """One CSV row per slice: DSC clean / adversarial and AS per organ and mean, realised norms."""
    from core.organs import ORGANS

    header = ["slice_id", "has_organs", "scored"]
    for prefix in ("dsc_clean", "dsc_adv", "as"):
        header += [f"{prefix}_{organ}" for organ in ORGANS] + [f"{prefix}_mean"]
    header += ["linf", "l2", "zero_grad_fraction"]
    rows = []
    for row in (result_row.to_dict() for result_row in result.rows):
        cells = [row["slice_id"], int(row["has_organs"]), int(row["scored"])]
        for per_organ, mean in (("dsc_clean", "mean_clean"), ("dsc_adv", "mean_adv"), ("attack_success", "mean_attack_success")):
            cells += [row[per_organ][organ] for organ in ORGANS] + [row[mean]]
        cells += [row["linf"], row["l2"], row["zero_grad_fraction"]]
        rows.append(cells)
    return header, rows


@app.command()
def sweep(
    checkpoint: Optional[Path] = checkpoint_option(),
    model: Optional[str] = model_option(),
    data: Optional[Path] = data_option(),
    split: str = split_option(),
    eps: str = typer.Option("0:0.03:0.003", "--eps", help="start:stop:step (stop included) or a comma list, e.g. 0,0.005,0.009."),
    losses: str = typer.Option(PAPER_LOSSES, "--losses", help="Comma list of attack losses: bce, focal, dice, focal+dice."),
    target: str = target_option(),
    mode: str = mode_option(),
    limit: Optional[int] = limit_option(),
    all_slices: bool = all_slices_option(),
    empty: str = empty_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option(),
    out_dir: Path = typer.Option(DEFAULT_OUT_DIR, "--out-dir", "-o", help="Folder for sweep.json, sweep.csv and sweep.png."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="JSON file (default OUT_DIR/sweep.json)."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="CSV file (default OUT_DIR/sweep.csv)."),
    png_path: Optional[Path] = typer.Option(None, "--png", help="Plot of DSC and AS against eps (default OUT_DIR/sweep.png)."),
    strict: bool = strict_option(),
) -> None:
    """FGSM DSC and attack success against eps, per loss: one gradient per slice and loss serves every eps."""
    from core.devices import resolve_device
    from core.files import write_csv, write_json, write_png
    from segadv_tui.cli._common import (
        attack_config, check_outputs, load_checkpoint, open_data, parse_eps_list, parse_losses, progress_bar,
        select_records,
    )
    from segadv_tui.render.figures import sweep_plot

    eps_values = parse_eps_list(eps)
    loss_names = parse_losses(losses)
    config = attack_config(mode=mode, target=target, empty=empty, precision=precision, all_slices=all_slices)
    check_batch_size(batch_size)
    json_path = json_path or out_dir / "sweep.json"
    csv_path = csv_path or out_dir / "sweep.csv"
    png_path = png_path or out_dir / "sweep.png"
    check_outputs(json=json_path, csv=csv_path, png=png_path)
    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device, model)
    dataset = open_data(data, strict)
    records = select_records(dataset, split, all_slices=all_slices, limit=limit)
    split = split.strip().lower()

    from core.evaluation import evaluate_sweep
    from segadv_tui.cli._outcome import keep_partial, print_written, result_json

    def payload(result) -> dict:
        return {"command": "sweep", **_source_info(loaded, dataset, split, records, device), **result.to_dict()}

    with keep_partial(json_path, payload, dataset), \
            progress_bar(f"sweep {len(eps_values)} eps x {len(loss_names)} losses") as progress:
        result = evaluate_sweep(
            loaded.model, records, loaded.img_size, eps_values, loss_names, config, batch_size=batch_size,
            device=device, progress=progress,
        )
    if not is_main_process():  # under torchrun rank 0 alone prints and writes
        return
    console.print(_sweep_table(result, loaded))

    write_json(json_path, result_json(payload(result), dataset))
    header, rows = sweep_rows(result)
    write_csv(csv_path, header, rows)
    from core.losses import LOSS_TITLES

    dsc = {
        LOSS_TITLES[loss]: [result.entry(loss, e).summary.mean_adv for e in result.eps_values] for loss in result.losses
    }
    success = {
        LOSS_TITLES[loss]: [result.entry(loss, e).summary.mean_attack_success for e in result.eps_values]
        for loss in result.losses
    }
    caption = (
        f"{loaded.path.name}: {loaded.title}; {config.method_label}, target {config.target}; {len(records)} {split} slices"
        f"{'' if all_slices else ' with organs'}; empty organs: {config.empty}"
    )
    write_png(png_path, sweep_plot(result.eps_values, dsc, success, caption=caption))
    print_written([json_path, csv_path, png_path], dataset, json_path)


def _sweep_table(result, loaded):
    from rich.table import Table

    from core.losses import LOSS_TITLES
    from segadv_tui.render.tables import number

    first = result.entry(result.losses[0], result.eps_values[0]).summary
    table = Table(
        title=f"{result.config.method_label} sweep on {loaded.title}: mean DSC / attack success (clean DSC {number(first.mean_clean)})",
        title_justify="left",
    )
    table.add_column("eps", justify="right")
    for loss in result.losses:
        table.add_column(f"{LOSS_TITLES[loss]} DSC", justify="right")
        table.add_column(f"{LOSS_TITLES[loss]} AS", justify="right")
    for eps in result.eps_values:
        cells = [f"{eps:g}"]
        for loss in result.losses:
            summary = result.entry(loss, eps).summary
            cells += [number(summary.mean_adv), number(summary.mean_attack_success)]
        table.add_row(*cells)
    table.caption = f"{first.scored} of {first.slices} slices scored; {result.seconds:.1f} s"
    table.caption_justify = "left"
    return table


def sweep_rows(result) -> tuple[list[str], list[list]]:
    """One CSV row per (loss, eps): mean DSC clean / adversarial, AS, per organ, and realised norms."""
    from core.organs import ORGANS

    header = ["loss", "eps", "dsc_clean_mean", "dsc_adv_mean", "as_mean"]
    header += [f"dsc_adv_{organ}" for organ in ORGANS] + [f"as_{organ}" for organ in ORGANS]
    header += ["linf_max", "linf_mean", "l2_mean", "scored"]
    rows = []
    for entry in result.entries:
        s = entry.summary
        rows.append(
            [entry.loss, entry.eps, s.mean_clean, s.mean_adv, s.mean_attack_success]
            + [s.dsc_adv[organ] for organ in ORGANS]
            + [s.attack_success[organ] for organ in ORGANS]
            + [s.linf_max, s.linf_mean, s.l2_mean, s.scored]
        )
    return header, rows


@app.command()
def table(
    checkpoints: Optional[list[Path]] = typer.Option(
        None, "--checkpoint", "-c", help="A checkpoint per row; repeat the option. Default: the bundled demo checkpoint."
    ),
    data: Optional[Path] = data_option(),
    split: str = split_option(),
    losses: str = typer.Option(PAPER_LOSSES, "--losses", help="Comma list of FGSM losses, one column each."),
    eps: str = typer.Option("0.009", "--eps", help="L-inf budget (the paper: 0.009)."),
    method: str = method_option(),
    steps: Optional[int] = steps_option(),
    best_iterate: Optional[bool] = best_iterate_option(),
    seed: int = seed_option(),
    target: str = target_option(),
    mode: str = mode_option(),
    limit: Optional[int] = limit_option(),
    all_slices: bool = all_slices_option(),
    empty: str = empty_option(),
    device: str = device_option(),
    precision: str = precision_option(),
    batch_size: int = batch_size_option(),
    md_path: Optional[Path] = typer.Option(None, "--md", help="Write the table as Markdown."),
    csv_path: Optional[Path] = typer.Option(None, "--csv", help="Write the table as CSV."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the table with per-organ summaries as JSON."),
    strict: bool = strict_option(),
) -> None:
    """The paper's Table II: parameters, clean DSC and DSC after the attack (FGSM) with each loss; the best attack in bold."""
    from core.devices import resolve_device
    from core.files import write_csv, write_json, write_text
    from segadv_tui.cli._common import (
        attack_config, check_outputs, load_checkpoint, open_data, parse_losses, progress_bar, select_records,
    )
    from segadv_tui.render.tables import table_ii_table

    loss_names = parse_losses(losses)
    config = attack_config(method=method, eps=eps, steps=steps, seed=seed, mode=mode, target=target, empty=empty,
                           precision=precision, all_slices=all_slices, best_iterate=best_iterate)
    check_batch_size(batch_size)
    check_outputs(md=md_path, csv=csv_path, json=json_path)
    device = resolve_device(device)
    loaded = [load_checkpoint(path, device) for path in (checkpoints or [None])]
    dataset = open_data(data, strict)
    records = select_records(dataset, split, all_slices=all_slices, limit=limit)
    split = split.strip().lower()

    from core.devices import describe_device
    from core.evaluation import table_ii
    from segadv_tui.cli._outcome import keep_partial, print_written, result_json

    def payload(result) -> dict:
        return {
            "command": "table", "device": describe_device(device), "data": str(dataset.root),
            "data_fingerprint": dataset.fingerprint(), "split": split, "slices": len(records),
            "checkpoints": [str(item.path) for item in loaded], **result.to_dict(),
        }

    models = [(item.path.name, item.model, item.meta) for item in loaded]
    runs = f"{len(loss_names)} losses" if "loss" in config.entry.parameters else "its own objective"
    with keep_partial(json_path or DEFAULT_OUT_DIR / "table.json", payload, dataset), \
            progress_bar(f"Table II: {len(models)} model(s) x {runs}") as progress:
        result = table_ii(models, records, loss_names, config, batch_size=batch_size, device=device, progress=progress)
    if not is_main_process():  # under torchrun rank 0 alone prints and writes
        return
    caption = (
        f"DSC before and after {config.method_label} at eps {config.eps:g}, target {config.target}; {len(records)} {split} slices"
        f"{'' if all_slices else ' with organs'} of {dataset.root}; lowest DSC (best attack) in bold."
    )
    formatted = table_ii_table(result, caption=caption)
    console.print(formatted.to_rich(title="Table II"))
    if md_path is not None:
        write_text(md_path, formatted.to_markdown())
    if csv_path is not None:
        write_csv(csv_path, *table_ii_csv(result, loaded))
    if json_path is not None:
        write_json(json_path, result_json(payload(result), dataset))
    print_written([path for path in (md_path, csv_path, json_path) if path is not None], dataset, json_path)


def table_ii_csv(result, loaded) -> tuple[list[str], list[list]]:
    # A method with its own objective has one column, under the first loss's key (core.evaluation.table_ii).
    uses_loss = "loss" in result.config.entry.parameters
    header = ["model", "title", "checkpoint", "parameters", "dsc_clean"] + [
        f"dsc_{result.method}_{loss}" if uses_loss else f"dsc_{result.method}" for loss in result.losses]
    header += ["best_loss"]
    rows = [
        [item.meta.get("model"), row.title, str(item.path), row.params, row.dsc_clean]
        + [row.dsc_adv[loss] for loss in result.losses]
        + [row.best_loss or ""]
        for row, item in zip(result.rows, loaded)
    ]
    return header, rows


@app.command()
def figure(
    checkpoint: Optional[Path] = checkpoint_option(),
    model: Optional[str] = model_option(),
    data: Optional[Path] = data_option(),
    slice_id: Optional[str] = typer.Option(
        None, "--slice", "-s", help="Slice id, e.g. case123_day20_slice_0065; default: a test slice with organs."
    ),
    loss: str = loss_option(),
    eps: str = typer.Option("0.009", "--eps", help="L-inf budget in pixel units."),
    method: str = method_option(),
    steps: Optional[int] = steps_option(),
    step_size: Optional[float] = step_size_option(),
    best_iterate: Optional[bool] = best_iterate_option(),
    seed: int = seed_option(),
    organs: str = organs_option(),
    delta: Optional[Path] = typer.Option(None, "--delta", help="The universal method's perturbation (made by `segadv universal`)."),
    target: str = target_option(),
    mode: str = mode_option(),
    empty: str = empty_option(),
    device: str = device_option(),
    out: Optional[Path] = typer.Option(None, "--out", "-o", help="PNG file; default segadv-out/figure-SLICE-METHOD-LOSS-epsEPS.png."),
    strict: bool = strict_option(),
) -> None:
    """A PNG like the paper's figures 5-8: input, adversarial input, perturbation, truth, predictions, differences."""
    from core.devices import resolve_device
    from core.files import write_png
    from segadv_tui.cli._common import (
        attack_config, check_outputs, load_checkpoint, open_data,
    )
    from segadv_tui.render.figures import AttackPanels, attack_figure
    from segadv_tui.render.tables import number

    config = attack_config(
        method=method, loss=loss, eps=eps, mode=mode, target=target, steps=steps, step_size=step_size, empty=empty,
        all_slices=True, seed=seed, organs=organs, delta=delta, best_iterate=best_iterate,
    )
    check_outputs(out=out)
    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device, model)
    dataset = open_data(data, strict)
    record = _find_slice(dataset, slice_id)

    result = _attack_one_slice(loaded.model, record, loaded.img_size, config, device)
    if not is_main_process():  # under torchrun rank 0 alone prints and writes
        return
    mean_clean, mean_adv, success, linf = result.mean_clean, result.mean_adv, result.mean_attack_success, result.linf
    caption = (
        f"{loaded.path.name}: {loaded.title} | slice {record.id} | {config.method_label}, {config.objective_label} | "
        f"eps {config.eps:g} | "
        f"DSC {number(mean_clean, 3)} -> {number(mean_adv, 3)} | AS {number(success, 3)} | realised L-inf {number(linf)}"
    )
    panels = AttackPanels.from_result(result)
    image = attack_figure(panels, caption)
    out = out or DEFAULT_OUT_DIR / f"figure-{record.id}-{config.method}-{config.loss}-eps{config.eps:g}.png"
    write_png(out, image)
    console.print(
        f"wrote {out} ({image.width} x {image.height}): slice {record.id}, mean DSC {number(mean_clean)} -> "
        f"{number(mean_adv)}, AS {number(success)}, realised L-inf {number(linf)}",
        highlight=False, soft_wrap=True,
    )


def _attack_one_slice(model, record, img_size: int, config, device):
    """One slice attacked by ``core.evaluation.attack_slice``: its ``SliceResult`` with the pictures."""
    import torch

    from core.data import load_slice
    from core.evaluation import attack_slice

    image_np, masks_np = load_slice(record, img_size)
    image = torch.from_numpy(image_np)[None, None].to(device)
    truth = torch.from_numpy(masks_np)[None].float().to(device)
    return attack_slice(model, image, truth, config, ids=[record.id], pictures=True)[0]


def _find_slice(dataset, slice_id: str | None):
    """The record named ``slice_id``, or a one-line error with suggestions. By default the test slice
    showing the most organs, the largest (an informative figure on a fresh install)."""
    from core.data import with_organs

    if slice_id is None:
        candidates = with_organs(dataset.split()[1]) or with_organs(dataset) or list(dataset)
        if not candidates:
            fail(f"{dataset.root} has no slices")
        return max(candidates, key=_organ_extent)
    try:
        return dataset.by_id(slice_id.strip())
    except KeyError:
        ids = [record.id for record in dataset]
        close = difflib.get_close_matches(slice_id.strip(), ids, n=3, cutoff=0.6)
        suggestions = close or [record.id for record in with_organs(dataset)[:3]] or ids[:3]
        hint = f"; try {', '.join(suggestions)}" if suggestions else ""
        fail(f"no slice {slice_id!r} in {dataset.root.name}{hint}")


def _organ_extent(record) -> tuple[int, int]:
    """(organs present, organ pixels), read off the RLE run lengths without painting the masks."""
    lengths = [sum(int(n) for n in rle.split()[1::2]) for rle in record.rles]
    return sum(1 for n in lengths if n), sum(lengths)
