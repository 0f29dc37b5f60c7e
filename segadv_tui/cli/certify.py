"""``segadv certify``: a certified DSC lower bound per label by randomized smoothing (core.evaluation.certify)."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app
from segadv_tui.cli._common import choice, prepare_scoring, progress_bar
from segadv_tui.cli._options import (
    Checkpoint,
    Data,
    Device,
    Empty,
    ForeignModel,
    Limit,
    SliceAxis,
    Split,
    Strict,
    out_dir_option,
    output_option,
)

SMOOTHING = "Smoothing"  # the panel of the certificate's own options in --help


@app.command()
def certify(
    checkpoint: Checkpoint = None,
    model: ForeignModel = None,
    data: Data = None,
    slice_axis: SliceAxis = None,
    split: Split = "test",
    limit: Limit = None,
    sigma: float = typer.Option(
        0.25, "--sigma", rich_help_panel=SMOOTHING, help="Gaussian noise std, in [0, 1] pixel units."
    ),
    n: int = typer.Option(100, "--n", rich_help_panel=SMOOTHING, help="Noise samples per slice for the test."),
    n0: int = typer.Option(
        16, "--n0", rich_help_panel=SMOOTHING, help="Noise samples per slice that choose each pixel's class."
    ),
    radius: float | None = typer.Option(
        None,
        "--radius",
        rich_help_panel=SMOOTHING,
        help="Certify at this L2 radius (pixel units); default sigma * 0.674, the radius of tau = 0.75.",
    ),
    alpha: float = typer.Option(
        0.001, "--alpha", rich_help_panel=SMOOTHING, help="Error level of the corrected tests, per slice."
    ),
    correction: str = typer.Option(
        "holm",
        "--correction",
        rich_help_panel=SMOOTHING,
        help="Multiple testing over the pixels: holm (family-wise error) or bh (false-discovery rate).",
    ),
    empty: Empty = "one",
    seed: int = typer.Option(0, "--seed", rich_help_panel=SMOOTHING, help="Seed of the noise (per slice)."),
    device: Device = "auto",
    batch_size: int = typer.Option(32, "--batch-size", help="Noisy copies per forward pass."),
    out_dir: Path = out_dir_option("certify.json"),
    json_path: Path | None = output_option("--json", "JSON file (default OUT_DIR/certify.json)."),
    csv_path: Path | None = output_option("--csv", "Also write one row per slice and label as CSV."),
    strict: Strict = False,
) -> None:
    """Certified DSC by randomized smoothing (Fischer et al. 2021): per label, a lower bound that holds for every L2 perturbation below the radius, and the abstain rate. The model must be trained with noise (segadv train --noise-sigma)."""  # noqa: E501
    from core.evaluation.certify import CORRECTIONS, CertifyConfig
    from core.evaluation.certify import certify as run_certify
    from core.names import EMPTY_POLICIES

    config = CertifyConfig(
        sigma=sigma,
        n=n,
        n0=n0,
        radius=radius,
        alpha=alpha,
        correction=choice(correction, CORRECTIONS, "correction"),
        empty=choice(empty, EMPTY_POLICIES, "empty-organ policy"),
        seed=seed,
        batch_size=batch_size,
    )
    run = prepare_scoring(
        "certify",
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
    )
    loaded = run.checkpoint
    title = f"certify: sigma {config.sigma:g}, radius {config.certified_radius:.3g}"
    with run.keep_partial(run.checkpoint_payload), progress_bar(title) as progress:
        result = run_certify(loaded.model, run.records, loaded.img_size, config, device=run.device, progress=progress)
    run.finish(
        _table(result, loaded, run.split),
        json=lambda: run.checkpoint_payload(result),
        csv=lambda: _rows(result),
    )


def _table(result, loaded, split: str):
    from segadv_tui.render.tables import Table, number

    titles = loaded.model.labels.titles
    means = {key: result.mean(key) for key in ("dsc_base", "dsc_certified", "abstain")}
    config = result.config
    pairs = result.present_absent()
    return Table(
        f"{loaded.title}: certified DSC at L2 radius {config.certified_radius:.3g} (sigma {config.sigma:g})",
        ("label", "DSC (base model)", "certified DSC (lower bound)", "abstained pixels"),
        tuple(
            (
                titles[name],
                number(means["dsc_base"][i]),
                number(means["dsc_certified"][i]),
                number(means["abstain"][i], 3),
            )
            for i, name in enumerate(result.labels)
        ),
        caption=f"{len(result.rows)} {split} slices; n {config.n} + n0 {config.n0} forward passes a slice, "
        f"{config.correction} at alpha {config.alpha:g} (tau {config.tau:.3f}); abstained pixels count as wrong; "
        f"{result.seconds:.1f} s. Labels present in the truth ({pairs['present_pairs']} pairs): DSC "
        f"{number(pairs['dsc_base_present'])}, certified {number(pairs['dsc_certified_present'])}; absent "
        f"({pairs['absent_pairs']} pairs): predicted in {_share(pairs['shown_base_absent'])}, may appear within the "
        f"radius in {_share(pairs['shown_certified_absent'])}",
    ).to_rich()


def _share(value: float | None) -> str:
    return "n/a" if value is None else f"{100 * value:.0f} %"


def _rows(result):
    header = ["slice_id", "label", "dsc_base", "dsc_certified", "abstain"]
    rows = [
        [row.slice_id, name, row.dsc_base[i], row.dsc_certified[i], row.abstain[i]]
        for row in result.rows
        for i, name in enumerate(result.labels)
    ]
    return header, rows
