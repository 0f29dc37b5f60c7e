"""``segadv universal``: one organ-erasing perturbation optimised over the training split, reported on the test split."""

from __future__ import annotations

from pathlib import Path
from typing import Optional

import typer

from segadv_tui.cli import app, console
from segadv_tui.cli._common import (
    all_slices_option,
    batch_size_option,
    check_batch_size,
    checkpoint_option,
    data_option,
    device_option,
    empty_option,
    model_option,
    seed_option,
    strict_option,
)


def attack_eps(method: str, delta: Path | None, eps: str | None) -> str:
    """The --eps of ``segadv attack``: as given, else 0.009, or for the universal method the bound its
    delta was made with (the delta applied as saved)."""
    if eps is not None:
        return eps
    if method.strip().lower() == "universal" and delta is not None:
        from core.universal import load_delta

        return repr(load_delta(delta).eps)
    return "0.009"


@app.command()
def universal(
    checkpoint: Optional[Path] = checkpoint_option(),
    model: Optional[str] = model_option(),
    data: Optional[Path] = data_option(),
    organ: list[str] = typer.Option(["stomach"], "--organ", help="An organ to erase (large_bowel, small_bowel, stomach); repeat for more."),
    eps: str = typer.Option("0.03", "--eps", help="L-inf bound of the perturbation, in pixel units."),
    epochs: int = typer.Option(5, "--epochs", help="Passes over the training slices."),
    step_size: Optional[float] = typer.Option(None, "--step-size", help="First signed step (cosine-annealed to 0); default eps / 4."),
    keep_weight: float = typer.Option(1.0, "--keep-weight", help="Weight of keeping the other organs as predicted (0: erase only)."),
    train_limit: Optional[int] = typer.Option(None, "--train-limit", help="Optimise on at most this many training slices."),
    limit: Optional[int] = typer.Option(None, "--limit", "-n", help="Report on at most this many test slices."),
    all_slices: bool = all_slices_option(),
    empty: str = empty_option(),
    seed: int = seed_option(),
    device: str = device_option(),
    batch_size: int = batch_size_option(),
    out: Path = typer.Option(Path("segadv-out/delta.safetensors"), "--out", "-o", help="The perturbation (safetensors)."),
    json_path: Optional[Path] = typer.Option(None, "--json", help="Write the test-split report as JSON."),
    strict: bool = strict_option(),
) -> None:
    """A universal perturbation that erases the chosen organs from every slice and keeps the others (Metzen et al. 2017)."""
    from core.attack_config import parse_organs
    from core.devices import describe_device, resolve_device
    from core.files import write_json
    from segadv_tui.cli._common import check_outputs, load_checkpoint, open_data, parse_eps, progress_bar, select_records

    organs = parse_organs(organ)  # an unknown organ is an OptionError: one line, exit 2
    bound = parse_eps(eps)
    check_batch_size(batch_size)
    check_outputs(out=out, json=json_path)
    device = resolve_device(device)
    loaded = load_checkpoint(checkpoint, device, model)
    dataset = open_data(data, strict)
    train_records = select_records(dataset, "train", all_slices=all_slices, limit=train_limit)
    test_records = select_records(dataset, "test", all_slices=all_slices, limit=limit)

    from core.universal import craft_universal, save_delta, universal_report
    from segadv_tui.cli._outcome import keep_partial, partial_path, print_written, result_json

    def payload(delta_path: Path, made, report=None) -> dict:
        return {
            "command": "universal", "device": describe_device(device), "checkpoint": str(loaded.path),
            "data": str(dataset.root), "data_fingerprint": dataset.fingerprint(), "delta": str(delta_path),
            "train_slices": len(train_records), "test_slices": len(test_records), "crafting": made.meta,
            **(report.to_dict() if report is not None else {}),
        }

    def note_provenance(made) -> None:
        made.meta.update(checkpoint=str(loaded.path), model=loaded.meta.get("model"), data=str(dataset.root),
                         data_fingerprint=dataset.fingerprint())

    def save_partial_delta(made, partial) -> list[Path]:
        """Ctrl-C while crafting: the delta after the steps made, beside --out, marked partial."""
        note_provenance(made)
        made.meta.update(partial.to_dict())
        return [save_delta(partial_path(out), made)]

    # Ctrl-C while crafting: no report; the JSON names the partial delta.
    report_json = json_path or out.with_name("universal.json")
    with keep_partial(report_json, lambda made: payload(partial_path(out), made), dataset, also=save_partial_delta), \
            progress_bar(f"universal: erase {'+'.join(organs)}, {epochs} epochs") as progress:
        made = craft_universal(
            loaded.model, train_records, loaded.img_size, organs, bound, epochs=epochs, batch_size=batch_size,
            step_size=step_size, keep_weight=keep_weight, seed=seed, device=device, progress=progress,
        )
    note_provenance(made)
    save_delta(out, made)
    # Ctrl-C while scoring: the delta is complete and saved; the report covers the slices scored.
    with keep_partial(report_json, lambda report: payload(out, made, report), dataset), \
            progress_bar("scoring on the test split") as progress:
        report = universal_report(loaded.model, test_records, loaded.img_size, made, empty=empty,
                                  score="all" if all_slices else "nonempty", batch_size=batch_size, device=device,
                                  progress=progress)
    console.print(_report_table(report, loaded, len(train_records), made))
    if json_path is not None:
        write_json(json_path, result_json(payload(out, made, report), dataset))
    print_written([path for path in (out, json_path) if path is not None], dataset, json_path)


def _report_table(report, loaded, train_slices: int, made):
    from rich.table import Table

    from core.organs import ORGAN_TITLES, ORGANS
    from segadv_tui.render.tables import number

    s = report.summary
    table = Table(
        title=f"{loaded.title}: universal perturbation erasing {' + '.join(report.organs)}, eps {report.eps:g} (test split)",
        title_justify="left",
    )
    table.add_column("organ")
    for column in ("DSC clean", "DSC adversarial", "area clean", "area adversarial", "area after / before", "vanished"):
        table.add_column(column, justify="right")
    for organ in ORGANS:
        chosen = organ in report.organs
        name = f"[bold]{ORGAN_TITLES[organ]} (erased)[/]" if chosen else ORGAN_TITLES[organ]
        vanished = report.vanished[organ]
        table.add_row(
            name, number(s.dsc_clean[organ]), number(s.dsc_adv[organ]), number(report.area_clean[organ]),
            number(report.area_adv[organ]), number(report.area_ratio(organ), 3),
            f"{number(vanished, 3)} of {report.present[organ]}" if vanished is not None else "n/a",
        )
    table.caption = (
        f"optimised on {train_slices} training slices ({made.meta['epochs']} epochs, {made.meta['steps']} steps, "
        f"{made.meta['seconds']:.1f} s); scored on {report.slices} test slices, DSC over {s.scored}. Area: share of the "
        f"slice predicted as the organ. Vanished: share of the slices predicted to hold the organ where the attacked "
        f"prediction has none of it."
    )
    table.caption_justify = "left"
    return table
