"""``segadv corrupt``: DSC under MRI artefacts at five severities (core.evaluation.corruptions), beside FGSM."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app
from segadv_tui.cli._common import attack_config, choice, parse_eps_list, prepare_scoring, progress_bar
from segadv_tui.cli._options import (
    BatchSize,
    Checkpoint,
    Data,
    Device,
    Empty,
    ForeignModel,
    Limit,
    Loss,
    SliceAxis,
    Split,
    Strict,
    out_dir_option,
    output_option,
)

CORRUPTIONS_PANEL = "Corruptions"


@app.command()
def corrupt(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    limit: Limit = None,
    corruptions: str = typer.Option(
        "all",
        "--corruptions",
        rich_help_panel=CORRUPTIONS_PANEL,
        help="Comma list of noise, bias, motion, ghosting, spike, blur, gamma; or all.",
    ),
    eps: str = typer.Option(
        "0.002,0.004,0.006,0.008,0.01",
        "--eps",
        rich_help_panel=CORRUPTIONS_PANEL,
        help="The FGSM curve printed beside them (L-inf eps, a comma list or start:stop:step); none: no attack.",
    ),
    loss: Loss = "bce",
    seed: int = typer.Option(0, "--seed", rich_help_panel=CORRUPTIONS_PANEL, help="Seed of the artefacts (per slice)."),
    empty: Empty = "one",
    device: Device = "auto",
    batch_size: BatchSize = 16,
    out_dir: Path = out_dir_option("corrupt.json"),
    json_path: Path | None = output_option("--json", "JSON file (default OUT_DIR/corrupt.json)."),
    csv_path: Path | None = output_option("--csv", "Also write the curves as CSV (one row per point)."),
    strict: Strict = False,
) -> None:
    """Mean DSC under seven MRI artefacts (TorchIO) at severities 1 to 5, and their mean over all (an mCE-like summary), beside the FGSM curve."""  # noqa: E501
    from core.evaluation.corruptions import CORRUPTIONS
    from core.names import EMPTY_POLICIES

    empty = choice(empty, EMPTY_POLICIES, "empty-organ policy")
    names = (
        list(CORRUPTIONS)
        if corruptions.strip().lower() == "all"
        else list(dict.fromkeys(choice(part, CORRUPTIONS, "corruption") for part in corruptions.split(",") if part))
    )
    eps_values = [] if eps.strip().lower() == "none" else parse_eps_list(eps)
    configs = [attack_config(eps=str(value), loss=loss, empty=empty) for value in eps_values]
    run = prepare_scoring(
        "corrupt",
        out_dir,
        json_path,
        csv_path,
        checkpoint=checkpoint,
        model=model,
        data=data,
        strict=strict,
        slice_axis=slice_axis,
        split=split,
        limit=limit,
        device=device,
        batch_size=batch_size,
    )
    loaded = run.checkpoint

    import numpy as np

    from core.evaluation.corruptions import corruption_curves
    from core.evaluation.scoring import evaluate

    with run.keep_partial(run.checkpoint_payload), progress_bar(f"corruptions: {', '.join(names)}") as progress:
        result = corruption_curves(
            loaded.model,
            run.records,
            loaded.img_size,
            names,
            seed=seed,
            empty=empty,
            batch_size=batch_size,
            device=run.device,
            progress=progress,
        )
    with progress_bar("FGSM beside them") as progress:
        for index, config in enumerate(configs):
            summary = evaluate(
                loaded.model, run.records, loaded.img_size, config, batch_size=batch_size, device=run.device
            ).summary
            values = [np.nan if summary.dsc_adv[name] is None else summary.dsc_adv[name] for name in result.labels]
            result.adversarial[config.eps] = np.array(values, dtype=np.float64)
            progress(index + 1, len(configs))
    run.finish(
        _table(result, loaded, run.split),
        json=lambda: run.checkpoint_payload(result),
        csv=lambda: _rows(result),
    )


def _table(result, loaded, split: str):
    import numpy as np

    from core.evaluation.corruptions import LEVELS, SEVERITIES
    from segadv_tui.render.tables import Table, number

    names = list(dict.fromkeys(name for name, _ in result.dsc))
    rows = [
        (SEVERITIES[name][0], *(number(result.mean(name, level), 3) for level in range(1, LEVELS + 1)))
        for name in names
    ]
    if result.adversarial:
        means = [float(np.nanmean(values)) for values in result.adversarial.values()]
        rows.append(
            ("FGSM, eps " + " / ".join(f"{eps:g}" for eps in result.adversarial), *(number(m, 3) for m in means))
        )
    return Table(
        f"{loaded.title}: mean DSC under MRI artefacts, severity 1 to {LEVELS}",
        ("corruption", *(str(level) for level in range(1, LEVELS + 1))),
        tuple(tuple(row) + ("",) * (1 + LEVELS - len(row)) for row in rows),
        sections=frozenset({len(names) - 1}) if result.adversarial else frozenset(),
        caption=f"{result.slices} {split} slices; clean {number(result.mean_clean, 3)}; mean over "
        f"{len(names)} corruptions x {LEVELS} severities {number(result.mean_over_all, 3)}; "
        f"{result.seconds:.1f} s",
    ).to_rich()


def _rows(result):
    import numpy as np

    header = ["kind", "name", "level", "mean_dsc", *(f"dsc_{name}" for name in result.labels)]
    rows = [["clean", "", "", result.mean_clean, *result.clean]]
    rows += [
        ["corruption", name, level, result.mean(name, level), *values] for (name, level), values in result.dsc.items()
    ]
    rows += [["fgsm", "", eps, float(np.nanmean(values)), *values] for eps, values in result.adversarial.items()]
    return header, rows
