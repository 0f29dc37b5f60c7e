"""``segadv universal``: one label-erasing perturbation optimised over the training split, reported on the test
split."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app
from segadv_tui.cli._common import parse_eps, prepare, progress_bar
from segadv_tui.cli._options import (
    ATTACK,
    DATA,
    AllSlices,
    BatchSize,
    Checkpoint,
    Data,
    Device,
    Empty,
    ForeignModel,
    Seed,
    SliceAxis,
    Strict,
    output_option,
)
from segadv_tui.cli._outcome import DEFAULT_OUT_DIR, Outputs


def attack_eps(method: str, delta: Path | None, eps: str | None) -> str:
    """The --eps of ``segadv attack``: as given, else 0.009, or for the universal method the bound its
    delta was made with (the delta applied as saved)."""
    if eps is not None:
        return eps
    if method.strip().lower() == "universal" and delta is not None:
        from core.attacks.universal import load_delta

        return repr(load_delta(delta).eps)
    return "0.009"


@app.command()
def universal(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    organ: list[str] | None = typer.Option(
        None,
        "--label",
        "--organ",
        rich_help_panel=ATTACK,
        help="A label of the data to erase (UW-Madison: large_bowel, small_bowel, stomach); repeat for more; "
        "default: the last one (stomach).",
    ),
    eps: str = typer.Option(
        "0.03",
        "--eps",
        rich_help_panel=ATTACK,
        help="L-inf bound of the perturbation, in pixel units.",
    ),
    epochs: int = typer.Option(5, "--epochs", rich_help_panel=ATTACK, help="Passes over the training slices."),
    step_size: float | None = typer.Option(
        None,
        "--step-size",
        rich_help_panel=ATTACK,
        help="First signed step (cosine-annealed to 0); default eps / 4.",
    ),
    keep_weight: float = typer.Option(
        1.0,
        "--keep-weight",
        rich_help_panel=ATTACK,
        help="Weight of keeping the other organs as predicted (0: erase only).",
    ),
    train_limit: int | None = typer.Option(
        None,
        "--train-limit",
        rich_help_panel=DATA,
        help="Optimise on at most this many training slices.",
    ),
    limit: int | None = typer.Option(
        None,
        "--limit",
        "-n",
        rich_help_panel=DATA,
        help="Report on at most this many test slices.",
    ),
    all_slices: AllSlices = False,
    empty: Empty = "one",
    seed: Seed = 0,
    device: Device = "auto",
    batch_size: BatchSize = 16,
    out: Path = output_option(
        "--out", "The perturbation (safetensors).", "-o", default=DEFAULT_OUT_DIR / "delta.safetensors"
    ),
    json_path: Path | None = output_option("--json", "Write the test-split report as JSON."),
    strict: Strict = False,
) -> None:
    """A universal perturbation that erases the chosen organs from every slice and keeps the others (Metzen et al. 2017)."""  # noqa: E501
    from core.attacks.config import parse_organs

    bound = parse_eps(eps)
    # The report's JSON is written only with --json; Ctrl-C's partial one goes beside --out.
    run = prepare(
        "universal",
        Outputs("universal", out.parent, optional=("json",), out=out, json=json_path),
        batch_size=batch_size,
        device=device,
        checkpoints=[checkpoint],
        model=model,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
    )
    loaded = run.checkpoint
    # An unknown label is an OptionError listing the data's: one line, exit 2.
    organs = parse_organs(organ or [run.labels.names[-1]], run.labels)
    train_records = run.select("train", all_slices=all_slices, limit=train_limit)
    test_records = run.select("test", all_slices=all_slices, limit=limit)

    from core.attacks.universal import craft_universal, save_delta, universal_report
    from segadv_tui.cli._outcome import partial_path

    def payload(delta_path: Path, made, report=None) -> dict:
        return run.payload(
            {
                "delta": str(delta_path),
                "train_slices": len(train_records),
                "test_slices": len(test_records),
                "crafting": made.meta,
                **(report.to_dict() if report is not None else {}),
            },
            models={"checkpoint": str(loaded.path)},
        )

    def note_provenance(made) -> None:
        made.meta.update(
            checkpoint=str(loaded.path),
            model=loaded.meta.get("model"),
            data=str(run.dataset.root),
            data_fingerprint=run.dataset.fingerprint(),
        )

    def save_partial_delta(made, partial) -> list[Path]:
        """Ctrl-C while crafting: the delta after the steps made, beside --out, marked partial."""
        note_provenance(made)
        made.meta.update(partial.to_dict())
        return [save_delta(partial_path(out), made)]

    # Ctrl-C while crafting: no report; the JSON names the partial delta.
    with (
        run.keep_partial(lambda made: payload(partial_path(out), made), also=save_partial_delta),
        progress_bar(f"universal: erase {'+'.join(organs)}, {epochs} epochs") as progress,
    ):
        made = craft_universal(
            loaded.model,
            train_records,
            loaded.img_size,
            organs,
            bound,
            epochs=epochs,
            batch_size=batch_size,
            step_size=step_size,
            keep_weight=keep_weight,
            seed=seed,
            device=run.device,
            progress=progress,
        )
    note_provenance(made)
    save_delta(out, made)
    run.outputs.saved(out)
    # Ctrl-C while scoring: the delta is complete and saved; the report covers the slices scored.
    with (
        run.keep_partial(lambda report: payload(out, made, report)),
        progress_bar("scoring on the test split") as progress,
    ):
        report = universal_report(
            loaded.model,
            test_records,
            loaded.img_size,
            made,
            empty=empty,
            score="all" if all_slices else "nonempty",
            batch_size=batch_size,
            device=run.device,
            progress=progress,
        )
    run.finish(_report_table(report, loaded, len(train_records), made), json=lambda: payload(out, made, report))


def _report_table(report, loaded, train_slices: int, made):
    from core.wording import label_noun
    from segadv_tui.render.tables import Table, number

    s, names, titles, noun = report.summary, report.labels.names, report.labels.titles, label_noun(report.labels)
    rows = []
    for organ in names:
        vanished = report.vanished[organ]
        rows.append(
            (
                f"{titles[organ]} (erased)" if organ in report.organs else titles[organ],
                number(s.dsc_clean[organ]),
                number(s.dsc_adv[organ]),
                number(report.area_clean[organ]),
                number(report.area_adv[organ]),
                number(report.area_ratio(organ), 3),
                f"{number(vanished, 3)} of {report.present[organ]}" if vanished is not None else "n/a",
            )
        )
    return Table(
        f"{loaded.title}: universal perturbation erasing {' + '.join(report.organs)}, eps {report.eps:g} (test split)",
        (noun, "DSC clean", "DSC adversarial", "area clean", "area adversarial", "area after / before", "vanished"),
        tuple(rows),
        bold=tuple(frozenset({0}) if organ in report.organs else frozenset() for organ in names),
        caption=f"optimised on {train_slices} training slices ({made.meta['epochs']} epochs, {made.meta['steps']} "
        f"steps, {made.meta['seconds']:.1f} s); scored on {report.slices} test slices, DSC over {s.scored}. "
        f"Area: share of the slice predicted as the {noun}. Vanished: share of the slices predicted to hold "
        f"the {noun} where the attacked prediction has none of it.",
    ).to_rich()
