"""The options the commands share, as typed ``Annotated`` aliases, each in its panel of ``--help``.

A command declares ``split: Split = "test"``: the alias carries the flag, the help and the panel, the
default stays in the signature where Typer reads it. An option whose help is the command's own (its --eps,
its checkpoints) is declared in the command with one of these panels; its output files by ``output_option``.

Choices (loss, method, split, ...) arrive as plain strings and are checked by the command
(``segadv_tui.cli._common``), so that a bad value is one line naming it rather than a usage box. The help
texts that list the registries import ``core.names``, ``core.attacks.config`` and ``core.devices``, which
load no torch: ``segadv --help`` stays fast.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from core.attacks.config import METHOD_LIST
from core.devices import DEVICE_HELP
from core.names import CORRUPTION_LEVELS, CORRUPTION_NAMES, DEFAULT_NSD_TOLERANCE, LOSS_NAMES
from segadv_tui.cli._outcome import DEFAULT_OUT_DIR
from segadv_tui.render.figure_style import COLUMN_WIDTHS

# The panels of --help, in the order a reader decides: what to attack, on which slices, how, where the
# results go, on what hardware.
MODEL = "Model"
DATA = "Data"
ATTACK = "Attack"
OUTPUT = "Output"
COMPUTE = "Compute"

Checkpoint = Annotated[
    Path | None,
    typer.Option(
        "--checkpoint",
        "-c",
        rich_help_panel=MODEL,
        help="A segadv checkpoint (.safetensors), or foreign weights (.pt/.pth/.bin) with --model; default: the "
        "bundled demo checkpoint.",
    ),
]
ForeignModel = Annotated[
    str | None,
    typer.Option(
        "--model",
        "-m",
        rich_help_panel=MODEL,
        help="Registry model of foreign .pt/.pth/.bin weights.",
    ),
]

Data = Annotated[
    Path | None,
    typer.Option(
        "--data",
        "-d",
        rich_help_panel=DATA,
        help="A data folder: UW-Madison (train.csv, train/) or Decathlon / nnU-Net (dataset.json, imagesTr/, "
        "labelsTr/); default: the built-in demo data.",
    ),
]
SliceAxis = Annotated[
    str | None,
    typer.Option(
        "--slice-axis",
        rich_help_panel=DATA,
        help="How a Decathlon folder's volumes are cut: axial (default), coronal or sagittal (or 2, 1, 0).",
    ),
]
Split = Annotated[
    str,
    typer.Option(
        "--split",
        rich_help_panel=DATA,
        help="Slices to use: test (10% of cases, seed 0), train or all.",
    ),
]
AllSlices = Annotated[
    bool,
    typer.Option(
        "--all-slices",
        rich_help_panel=DATA,
        help="Also use and score slices without organs (the paper scores only slices with organs).",
    ),
]
Limit = Annotated[int | None, typer.Option("--limit", "-n", rich_help_panel=DATA, help="Use at most this many slices.")]
Strict = Annotated[
    bool,
    typer.Option(
        "--strict",
        rich_help_panel=DATA,
        help="Stop (exit status 2, before any computing) at the first problem in the data, such as a malformed RLE "
        'or an image without rows; by default such slices are skipped, counted at the end and listed under "skipped" '
        "in the JSON.",
    ),
]

Loss = Annotated[str, typer.Option("--loss", rich_help_panel=ATTACK, help=f"Attack loss: {', '.join(LOSS_NAMES)}.")]
Method = Annotated[
    str,
    typer.Option(
        "--method",
        rich_help_panel=ATTACK,
        help=f"Attack method. {'; '.join(f'{m.name}: {m.summary}' for m in METHOD_LIST)}.",
    ),
]
Steps = Annotated[
    int | None,
    typer.Option(
        "--steps",
        rich_help_panel=ATTACK,
        help="Iterations of the iterative methods; default: the method's (bim, pgd, erase 10; apgd 100; ensemble 100 "
        "per member).",
    ),
]
StepSize = Annotated[
    float | None,
    typer.Option(
        "--step-size",
        rich_help_panel=ATTACK,
        help="Step of the iterative methods; default 2.5 eps / steps.",
    ),
]
BestIterate = Annotated[
    bool | None,
    typer.Option(
        "--best-iterate/--last-iterate",
        rich_help_panel=ATTACK,
        help="Keep, per slice, the iterate with the lowest mean DSC (bim, pgd, apgd, ensemble); "
        "default: on for apgd and the ensemble.",
    ),
]
Seed = Annotated[int, typer.Option("--seed", rich_help_panel=ATTACK, help="Seed of PGD's random start.")]
Organs = Annotated[
    str | None,
    typer.Option(
        "--label",
        "--organs",
        "--organ",
        rich_help_panel=ATTACK,
        help="Labels the erase method removes: a comma list of the data's labels (UW-Madison: large_bowel, "
        "small_bowel, stomach); default: the last one (stomach).",
    ),
]
Delta = Annotated[
    Path | None,
    typer.Option(
        "--delta",
        rich_help_panel=ATTACK,
        help="The universal method's perturbation (made by `segadv universal`).",
    ),
]
# Strings, checked by AttackConfig: a bad severity is one line naming it, not a usage box.
Corruption = Annotated[
    str | None,
    typer.Option(
        "--corruption",
        rich_help_panel=ATTACK,
        help=f"The corrupt method's MRI artefact (segadv corrupt's): {', '.join(CORRUPTION_NAMES)}; default "
        f"{CORRUPTION_NAMES[0]}.",
    ),
]
Severity = Annotated[
    str | None,
    typer.Option(
        "--severity",
        rich_help_panel=ATTACK,
        help=f"The corrupt method's severity, 1 to {CORRUPTION_LEVELS} (fixed per level, see segadv corrupt); "
        "default 1.",
    ),
]
Norm = Annotated[
    str,
    typer.Option(
        "--norm",
        rich_help_panel=ATTACK,
        help="Threat model: linf (eps per pixel), or l2 (eps the L2 norm of the slice's perturbation in [0, 1] "
        "pixels; L-inf e spread over an S x S slice has L2 S * e) for fgsm, bim, pgd, apgd and the ensemble.",
    ),
]
Target = Annotated[
    str,
    typer.Option(
        "--target",
        rich_help_panel=ATTACK,
        help="Attack the ground truth (gt) or the model's clean prediction (pred).",
    ),
]
Mode = Annotated[
    str,
    typer.Option(
        "--mode",
        rich_help_panel=ATTACK,
        help="FGSM formula: textbook, or paper (the paper's notebook).",
    ),
]
Empty = Annotated[
    str,
    typer.Option(
        "--empty",
        rich_help_panel=ATTACK,
        help="DSC of an organ absent from truth and prediction: one, skip or zero.",
    ),
]
Metrics = Annotated[
    str,
    typer.Option(
        "--metrics",
        rich_help_panel=ATTACK,
        help="Scores per label: a comma list of dsc (always), hd95 (95th-percentile Hausdorff distance, mm) and nsd "
        "(normalised surface Dice within --nsd-tolerance mm), in mm from each slice's pixel spacing.",
    ),
]
NsdTolerance = Annotated[
    float | None,
    typer.Option(
        "--nsd-tolerance",
        rich_help_panel=ATTACK,
        metavar="MM",
        help=f"NSD's tolerance in mm; default {DEFAULT_NSD_TOLERANCE:g} "
        "(a little over one UW-Madison pixel at 224 x 224).",
    ),
]

Device = Annotated[str, typer.Option("--device", rich_help_panel=COMPUTE, help=f"Device: {DEVICE_HELP}.")]
Precision = Annotated[
    str,
    typer.Option(
        "--precision",
        rich_help_panel=COMPUTE,
        help="fp32, or bf16 / fp16 autocast (for CUDA).",
    ),
]
BatchSize = Annotated[int, typer.Option("--batch-size", rich_help_panel=COMPUTE, help="Slices per batch.")]


FigureWidth = Annotated[
    str,
    typer.Option(
        "--width",
        rich_help_panel=OUTPUT,
        help=f"Figure width: single ({COLUMN_WIDTHS['single']} in, one journal column) or double "
        f"({COLUMN_WIDTHS['double']} in, two columns); the text is 7-8 pt at that size.",
    ),
]
Dpi = Annotated[
    int,
    typer.Option(
        "--dpi",
        rich_help_panel=OUTPUT,
        help="Resolution of a PNG figure, in dots per inch; PDF and SVG are vector, fonts embedded.",
    ),
]


def checkpoints_option(help: str):
    """``--checkpoint`` / ``-c``, repeated: the checkpoints a command compares (None: the command's default)."""
    return typer.Option(None, "--checkpoint", "-c", rich_help_panel=MODEL, help=help)


def output_option(flag: str, help: str, *more_flags: str, default: Path | None = None):
    """An output file of the command (``--json``, ``--csv``, ``--png``, ``--md``, ``--out``)."""
    return typer.Option(default, flag, *more_flags, help=help, rich_help_panel=OUTPUT)


def out_dir_option(*files: str):
    """``--out-dir`` / ``-o``: the folder of the command's default output ``files``."""
    listed = f"{', '.join(files[:-1])} and {files[-1]}" if len(files) > 1 else files[0]
    return output_option("--out-dir", f"Folder for {listed}.", "-o", default=DEFAULT_OUT_DIR)
