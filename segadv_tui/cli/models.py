"""``segadv info`` (the model registry, the device, versions) and ``segadv import-checkpoint``."""

from __future__ import annotations

from pathlib import Path

import typer

from segadv_tui.cli import app, console, fail


@app.command()
def info() -> None:
    """List the model registry with parameter counts, the compute device and library versions."""
    from importlib.metadata import PackageNotFoundError, version

    import torch
    from rich.table import Table

    from core.models import REGISTRY, build_model, count_parameters

    table = Table(title="models")
    for column in ("name", "model", "architecture", "encoder", "parameters"):
        table.add_column(column, justify="right" if column == "parameters" else "left")
    for name, spec in REGISTRY.items():
        # On the meta device no memory is allocated and no weights are initialised: counting is instant.
        with torch.device("meta"):
            params = count_parameters(build_model(name))
        table.add_row(name, spec.title, spec.arch, spec.encoder, f"{params / 1e6:.2f}M")
    console.print(table)

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


@app.command("import-checkpoint")
def import_checkpoint(
    source: Path = typer.Argument(..., help="Foreign weights: a .pt / .pth / .bin state dict."),
    model: str = typer.Option(..., "--model", "-m", help="The registry model the weights belong to."),
    out: Path = typer.Argument(..., help="Where to write the segadv checkpoint (.safetensors)."),
    img_size: int = typer.Option(224, "--img-size", help="The slice size the weights were trained at."),
) -> None:
    """Convert foreign weights (loaded safely, weights only) to a self-describing segadv checkpoint."""
    from core.checkpoints import import_checkpoint as convert
    from core.models import REGISTRY

    if model not in REGISTRY:
        fail(f"unknown model {model!r}; choose from {', '.join(REGISTRY)}")
    if img_size < 32 or img_size % 32:
        fail(f"--img-size {img_size} must be a multiple of 32")
    if out.suffix != ".safetensors":
        fail(f"{out}: the output must be a .safetensors file")
    written = convert(source, model, out, img_size=img_size)  # a CheckpointError is one line, exit 2
    console.print(f"wrote {written} ({model})", highlight=False)
