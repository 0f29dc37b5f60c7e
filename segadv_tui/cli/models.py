"""``segadv info`` (the model registry, the device, versions; or one checkpoint's metadata) and
``segadv import-checkpoint``."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, console, fail


@app.command()
def info(
    checkpoint: Path | None = typer.Argument(
        None, help="A segadv checkpoint: show how it was made (model, training, validation DSC, defence)."
    ),
) -> None:
    """List the model registry with parameter counts, the compute device and library versions; or show a checkpoint's metadata."""  # noqa: E501
    if checkpoint is not None:
        _checkpoint_info(checkpoint)
        return
    from importlib.metadata import PackageNotFoundError, version

    import torch

    from core.models.registry import REGISTRY, build_model, count_parameters
    from segadv_tui.render.tables import Table

    rows = []
    for name, spec in REGISTRY.items():
        # On the meta device no memory is allocated and no weights are initialised: counting is instant.
        with torch.device("meta"):
            params = count_parameters(build_model(name))
        rows.append((name, spec.title, spec.arch, spec.encoder, f"{params / 1e6:.2f}M"))
    console.print(
        Table(
            "models",
            ("name", "model", "architecture", "encoder", "parameters"),
            tuple(rows),
            justify=("left",) * 4 + ("right",),
        ).to_rich(title_justify="center")
    )

    if torch.cuda.is_available():
        device = ", ".join(f"cuda:{i} {torch.cuda.get_device_name(i)}" for i in range(torch.cuda.device_count()))
    else:
        device = f"CPU ({torch.get_num_threads()} threads); no CUDA"
    console.print(f"device: {device}", highlight=False)
    versions = []
    for package in ("segadv", "torch", "segmentation-models-pytorch", "monai", "kornia", "textual"):
        try:
            versions.append(f"{package} {version(package)}")
        except PackageNotFoundError:
            versions.append(f"{package} (not installed)")
    console.print("versions: " + ", ".join(versions), highlight=False)


def _checkpoint_info(path: Path) -> None:
    """The metadata of one checkpoint, read from its header (no weights loaded): a CheckpointError is one line."""
    from core.models.checkpoints import read_checkpoint_meta
    from core.names import defence_label

    meta = read_checkpoint_meta(path)
    lines = [
        f"{path}: {meta.get('title', meta['model'])}, {meta.get('params', 0) / 1e6:.2f}M parameters, "
        f"{meta['img_size']} px, weights stored in {meta.get('dtype', 'float32')}"
    ]
    if meta.get("epoch") is not None:
        lines.append(f"epoch {meta['epoch']} (the best by validation mean DSC)")
    val = meta.get("val_dsc") or {}
    if val:
        lines.append("validation DSC: " + "  ".join(f"{key} {value:.4f}" for key, value in val.items()))
    if meta.get("input_transposed"):
        lines.append(
            "input transposed: the weights expect slices with height and width swapped (as the paper's "
            "notebook fed them); segadv transposes each slice for the model and its masks back"
        )
    defence = meta.get("defence")
    lines.append(f"defence: {defence_label(defence)}")
    if defence:
        lines.append(
            f"  {defence['steps']} step(s) of {defence['step_size']:.4g}, "
            f"loss {defence['loss']}, {defence['ratio']:.0%} "
            f"of each batch adversarial, eps ramped over {defence['warmup_epochs']:g} epochs"
        )
        check = defence.get("check")
        if check:
            lines.append(
                f"  check at the saved epoch ({check['slices']} validation slices, eps {check['eps']:g}): clean "
                f"{check['clean_dsc']:.4f}  FGSM {check['fgsm_dsc']:.4f}  "
                f"PGD-{check['pgd_steps']} {check['pgd_dsc']:.4f}"
            )
        collapsed = defence.get("collapsed_epochs") or []
        lines.append(
            f"  catastrophic overfitting seen in epochs {', '.join(map(str, collapsed))}"
            if collapsed
            else "  no catastrophic overfitting seen"
        )
    args = meta.get("train_args")
    if args:
        lines.append("train args: " + ", ".join(f"{key}={value}" for key, value in args.items()))
    for line in lines:
        console.print(line, highlight=False, soft_wrap=True)


@app.command("import-checkpoint")
def import_checkpoint(
    source: Path = typer.Argument(..., help="Foreign weights: a .pt / .pth / .bin state dict."),
    model: str = typer.Option(
        ..., "--model", "-m", help="The model the weights belong to: a registry name, smp:ARCH:ENCODER or monai:NAME."
    ),
    out: Path = typer.Argument(..., help="Where to write the segadv checkpoint (.safetensors)."),
    img_size: int = typer.Option(224, "--img-size", help="The slice size the weights were trained at."),
    transposed: bool = typer.Option(
        False,
        "--transposed",
        help="The weights were trained on transposed slices "
        "(height and width swapped), as the paper's notebook fed them (transpose(2, 1, 0)): "
        "segadv then transposes each slice for the model and its masks back.",
    ),
    model_spec: Path | None = typer.Option(
        None, "--model-spec", help="JSON or TOML file of keyword arguments for an smp: or monai: --model."
    ),
) -> None:
    """Convert foreign weights (loaded safely, weights only) to a self-describing segadv checkpoint."""
    from core.errors import SegadvError
    from core.models.checkpoints import import_checkpoint as convert
    from core.models.registry import model_spec as check_model
    from core.models.specs import read_model_spec
    from segadv_tui.cli._outcome import print_written

    try:
        model_kwargs = read_model_spec(model_spec) if model_spec is not None else None
        check_model(model, model_kwargs)
    except SegadvError as exc:
        fail(str(exc))
    if img_size < 32 or img_size % 32:
        fail(f"--img-size {img_size} must be a multiple of 32")
    if out.suffix != ".safetensors":
        fail(f"{out}: the output must be a .safetensors file")
    written = convert(
        source, model, out, img_size=img_size, transposed=transposed, model_kwargs=model_kwargs
    )  # a CheckpointError: one line, exit 2
    print_written([written], detail=f" ({model}{', input transposed' if transposed else ''})")
