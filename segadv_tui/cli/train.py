"""``segadv train``: the paper's recipe with Rich progress, on one device or under torchrun on many, plainly
or adversarially (``--adv``)."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import typer

from core.distributed import is_main_process
from segadv_tui.cli import app, console, err_console, fail
from segadv_tui.cli._common import open_data
from segadv_tui.cli._options import COMPUTE, DATA, MODEL, OUTPUT, Data, SliceAxis, Strict

TRAINING = "Training"  # the panels of train's own options in --help
ADVERSARIAL = "Adversarial training"


@app.command()
def train(
    model: str = typer.Option(
        ...,
        "--model",
        "-m",
        rich_help_panel=MODEL,
        help="Registry model (`segadv info` lists them), e.g. resnext or effb7pp; or any smp network as "
        "smp:ARCH:ENCODER (smp:Unet:resnet18) or MONAI one as monai:NAME (UNet, AttentionUnet, SwinUNETR, DynUNet).",
    ),
    model_spec: Path | None = typer.Option(
        None,
        "--model-spec",
        rich_help_panel=MODEL,
        help="JSON or TOML file of keyword arguments for an smp: or monai: --model (e.g. channels, strides).",
    ),
    encoder_weights: str = typer.Option(
        "imagenet",
        "--encoder-weights",
        rich_help_panel=MODEL,
        help="imagenet (as the paper; downloads) or none.",
    ),
    img_size: int = typer.Option(
        224,
        "--img-size",
        rich_help_panel=MODEL,
        help="Slices are resized to this square size (multiple of 32).",
    ),
    output: str | None = typer.Option(
        None,
        "--output",
        rich_help_panel=MODEL,
        help="The model's output: softmax (multi-class, a background channel) or sigmoid (multi-label, a channel "
        "per label); default: the data's (softmax for a Decathlon label map, sigmoid for regions and UW-Madison).",
    ),
    data: Data = None,
    slice_axis: SliceAxis = None,
    limit_slices: int | None = typer.Option(
        None,
        "--limit-slices",
        rich_help_panel=DATA,
        help="Use at most this many training (and validation) slices.",
    ),
    strict: Strict = False,
    epochs: int = typer.Option(15, "--epochs", rich_help_panel=TRAINING, help="Epochs."),
    batch_size: int = typer.Option(
        64,
        "--batch-size",
        rich_help_panel=TRAINING,
        help="Global batch size (split over DDP processes).",
    ),
    lr: float = typer.Option(
        3e-4,
        "--lr",
        rich_help_panel=TRAINING,
        help="AdamW learning rate (cosine annealed per iteration).",
    ),
    schedule: str = typer.Option(
        "run",
        "--schedule",
        rich_help_panel=TRAINING,
        help="Cosine annealing over the whole run down to 0 (run), or the paper's T_max 7081 with eta_min 5e-6 "
        "(paper).",
    ),
    weight_decay: float = typer.Option(1e-3, "--weight-decay", rich_help_panel=TRAINING, help="AdamW weight decay."),
    patience: int = typer.Option(
        5,
        "--patience",
        rich_help_panel=TRAINING,
        help="Stop after this many epochs without a better validation DSC; 0: never.",
    ),
    no_augment: bool = typer.Option(
        False,
        "--no-augment",
        rich_help_panel=TRAINING,
        help="Train without shift / scale / elastic augmentation.",
    ),
    batch_dice: bool = typer.Option(
        False,
        "--batch-dice",
        rich_help_panel=TRAINING,
        help="Dice over the whole batch per organ (punishes false positives on slices without the organ); the paper's "
        "is per slice.",
    ),
    seed: int = typer.Option(0, "--seed", rich_help_panel=TRAINING, help="Random seed."),
    resume: Path | None = typer.Option(
        None,
        "--resume",
        rich_help_panel=TRAINING,
        help="Continue from a *.resume.pt written by an earlier run.",
    ),
    adv: str | None = typer.Option(
        None,
        "--adv",
        rich_help_panel=ADVERSARIAL,
        help="Adversarial training: fgsm-rs (FGSM from a random start, Wong et al. 2020; about 2x the cost) or pgd "
        "(PGD-K, Madry et al. 2018; about K + 1 times).",
    ),
    adv_eps: float | None = typer.Option(
        None,
        "--adv-eps",
        rich_help_panel=ADVERSARIAL,
        help="L-inf radius of the training attack (images in [0, 1]), e.g. 0.009.",
    ),
    adv_steps: int | None = typer.Option(
        None,
        "--adv-steps",
        rich_help_panel=ADVERSARIAL,
        help="PGD steps K (default 3; step 2.5 eps / K); FGSM-RS takes one step of 1.25 eps.",
    ),
    adv_loss: str = typer.Option(
        "focal+dice",
        "--adv-loss",
        rich_help_panel=ADVERSARIAL,
        help="The per-image loss the training attack raises (default: the training loss's form).",
    ),
    adv_ratio: float = typer.Option(
        1.0,
        "--adv-ratio",
        rich_help_panel=ADVERSARIAL,
        help="Share of each batch replaced by its adversarial version: 1.0 all, 0.5 half.",
    ),
    adv_warmup: float = typer.Option(
        0.0,
        "--adv-warmup",
        rich_help_panel=ADVERSARIAL,
        help="Epochs over which eps ramps up linearly from 0; the best checkpoint is chosen among epochs at the full "
        "eps.",
    ),
    noise_sigma: float = typer.Option(
        0.0,
        "--noise-sigma",
        rich_help_panel=ADVERSARIAL,
        help="Gaussian noise of this std added to every training slice, for randomized smoothing (segadv certify).",
    ),
    device: str = typer.Option(
        "auto",
        "--device",
        rich_help_panel=COMPUTE,
        help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N; under torchrun each process takes its own "
        "GPU.",
    ),
    workers: int = typer.Option(2, "--workers", rich_help_panel=COMPUTE, help="Data-loading worker processes."),
    log_every: int = typer.Option(
        10,
        "--log-every",
        rich_help_panel=COMPUTE,
        help="Report the loss every N steps (each report waits for the GPU), on screen and as a row of NAME.steps.csv "
        "beside the checkpoint.",
    ),
    dist_timeout: float = typer.Option(
        600.0,
        "--dist-timeout",
        rich_help_panel=COMPUTE,
        help="Seconds a torchrun process waits for the others (rank 0 validates alone) before it gives up.",
    ),
    out: Path | None = typer.Option(
        None,
        "--out",
        "-o",
        rich_help_panel=OUTPUT,
        help="Best checkpoint (.safetensors); default runs/MODEL.safetensors.",
    ),
    fp16_weights: bool = typer.Option(
        False,
        "--fp16-weights",
        rich_help_panel=OUTPUT,
        help="Store the checkpoint's weights in fp16 (half the size).",
    ),
    tensorboard: Path | None = typer.Option(
        None,
        "--tensorboard",
        rich_help_panel=OUTPUT,
        metavar="DIR",
        help="Also write the history's and steps' numbers for TensorBoard into DIR (needs the tensorboard package: "
        "pip install tensorboard, or segadv's tensorboard extra). "
        "The CSVs NAME.history.csv and NAME.steps.csv are always written.",
    ),
) -> None:
    """Train a model of the paper (AdamW, cosine annealing, Dice + Focal loss, early stopping)."""
    if data is not None and not Path(data).expanduser().is_dir():
        fail(f"--data {str(data)!r} is not a folder")
    if resume is not None and not Path(resume).expanduser().is_file():
        fail(f"--resume {str(resume)!r} does not exist")
    from segadv_tui.cli._common import check_outputs

    check_outputs(out=out)  # before hours of training, not after

    from core.data.decathlon import DEFAULT_SLICE_AXIS, parse_slice_axis
    from core.errors import SegadvError, check_choice
    from core.labels import OUTPUT_KINDS
    from core.models.registry import model_spec as check_model
    from core.models.specs import read_model_spec
    from core.training.loop import ENCODER_WEIGHTS, SCHEDULES, TrainConfig, TrainingInterrupted
    from core.training.loop import train as run_training

    try:
        check_model(model, read_model_spec(model_spec) if model_spec is not None else None)
        check_choice(encoder_weights, ENCODER_WEIGHTS, "encoder weights")
        check_choice(schedule, SCHEDULES, "schedule")
        if output is not None:
            check_choice(output, OUTPUT_KINDS, "--output")
        axis = DEFAULT_SLICE_AXIS if slice_axis is None else parse_slice_axis(slice_axis, "--slice-axis")
    except SegadvError as exc:
        fail(str(exc))
    config = TrainConfig(
        model=model,
        model_spec=Path(model_spec).expanduser() if model_spec else None,
        data=Path(data).expanduser() if data else None,
        output=output,
        slice_axis=axis,
        out=out,
        encoder_weights=encoder_weights,
        epochs=epochs,
        batch_size=batch_size,
        lr=lr,
        weight_decay=weight_decay,
        img_size=img_size,
        patience=patience,
        augment=not no_augment,
        batch_dice=batch_dice,
        device=device,
        workers=workers,
        seed=seed,
        limit_slices=limit_slices,
        resume=Path(resume).expanduser() if resume else None,
        fp16_weights=fp16_weights,
        schedule=schedule,
        log_every=log_every,
        tensorboard=Path(tensorboard).expanduser() if tensorboard else None,
        dist_timeout_s=dist_timeout,
        adv=adv,
        adv_eps=adv_eps,
        adv_steps=adv_steps,
        adv_loss=adv_loss,
        adv_ratio=adv_ratio,
        adv_warmup=adv_warmup,
        noise_sigma=noise_sigma,
    )
    try:
        config.defence()  # a bad --adv option: one line before anything loads
    except SegadvError as exc:
        fail(str(exc))
    if strict or is_main_process():  # the data's problems: a note, or with --strict a stop before training
        open_data(data, strict, slice_axis=slice_axis, kind=output)
    with _TrainingProgress() as progress:
        try:
            result = run_training(config, progress=progress)
        except TrainingInterrupted as exc:
            progress.stop()
            if exc.resume_path is None:
                fail("interrupted before any state was saved: nothing to resume", code=130)
            fail(f"interrupted; resume with: {_resume_command(exc.resume_path)}", code=130)
        except SegadvError as exc:  # bad data, checkpoint, device or option: one line
            progress.stop()
            fail(str(exc))
    if not result.is_main:
        return
    if result.checkpoint is None:
        fail("no epoch finished, so no checkpoint was saved")
    best = result.best_dsc
    how = f"early stop after {result.epochs_run} epochs" if result.stopped_early else f"{result.epochs_run} epochs"
    from core.training.history import history_path_for

    console.print(
        f"[bold green]best checkpoint[/] {result.checkpoint} (validation mean DSC {best['mean']:.4f}; {how}); "
        f"resume state {result.resume_path}; history {history_path_for(result.checkpoint)}",
        highlight=False,
    )


def _resume_command(resume_path: Path) -> str:
    """The command that was run, with ``--resume`` pointing at the saved state."""
    args = sys.argv[1:]
    kept, skip = [], False
    for arg in args:
        if skip:
            skip = False
            continue
        if arg == "--resume":
            skip = True
            continue
        if arg.startswith("--resume="):
            continue
        kept.append(arg)
    return shlex.join(["segadv", *kept, "--resume", str(resume_path)])


class _TrainingProgress:
    """Turns core.training's events into a Rich bar per epoch and a line of validation DSC per epoch."""

    def __enter__(self):
        self.bars = None
        if not is_main_process():  # under torchrun only rank 0 reports
            return self
        from rich.progress import (
            BarColumn,
            MofNCompleteColumn,
            Progress,
            TextColumn,
            TimeElapsedColumn,
            TimeRemainingColumn,
        )

        self.bars = Progress(
            TextColumn("{task.description}"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("loss {task.fields[loss]}  lr {task.fields[lr]}{task.fields[eps]}  {task.fields[speed]} img/s"),
            TimeElapsedColumn(),
            TextColumn("eta"),
            TimeRemainingColumn(),
            console=err_console,
        )
        self.bars.__enter__()
        self.task = None
        return self

    def __exit__(self, *exc_info):
        self.stop()

    def stop(self) -> None:
        if self.bars is not None:
            self.bars.__exit__(None, None, None)
            self.bars = None

    def __call__(self, event) -> None:
        from core.training.loop import EarlyStop, EpochEnd, EpochStart, InterruptRequested, Step, TrainStart
        from core.wording import with_labels_caption

        if self.bars is None:
            return
        log = self.bars.console.print
        if isinstance(event, TrainStart):
            resumed = f", resuming at epoch {event.start_epoch + 1}" if event.start_epoch else ""
            with_labels = with_labels_caption(event.labels, all_slices=False)
            log(
                f"training [bold]{event.model}[/] on {event.device}"
                f"{f' x {event.world_size} processes' if event.world_size > 1 else ''}: "
                f"{event.train_slices} training slices, {event.val_slices} validation slices{with_labels}, "
                f"{event.steps_per_epoch} steps per epoch{resumed}",
                highlight=False,
            )
            if event.defence is not None:
                d = event.defence
                steps = f"{d['steps']} step of" if d["steps"] == 1 else f"{d['steps']} steps of"
                warmup = f", eps ramped up over {d['warmup_epochs']:g} epochs" if d["warmup_epochs"] else ""
                log(
                    f"adversarial training: {d['method']} at eps {d['eps']:g} ({steps} {d['step_size']:.4g}, loss "
                    f"{d['loss']}), {d['ratio']:.0%} of each batch adversarial{warmup}",
                    highlight=False,
                )
        elif isinstance(event, EpochStart):
            self.task = self.bars.add_task(
                f"epoch {event.epoch}/{event.epochs}",
                total=event.steps,
                loss="-",
                lr="-",
                speed="-",
                eps="",
            )
        elif isinstance(event, Step) and self.task is not None:
            reported = {} if event.loss is None else {"loss": f"{event.loss:.4f}", "speed": f"{event.images_per_s:.1f}"}
            if event.adv_eps is not None:
                reported["eps"] = f"  eps {event.adv_eps:.4f}"
            self.bars.update(self.task, completed=event.step, lr=f"{event.lr:.2e}", **reported)
        elif isinstance(event, EpochEnd):
            organs = "  ".join(f"{name} {value:.4f}" for name, value in event.val_dsc.items() if name != "mean")
            saved = f"  [green]best, saved to {event.saved}[/]" if event.saved else ""
            ramp = "" if event.full_eps else "  (eps still ramping up: not a candidate for best)"
            log(
                f"epoch {event.epoch}/{event.epochs}: train loss {event.train_loss:.4f}  val DSC {organs}  "
                f"mean {event.val_dsc['mean']:.4f}  ({event.seconds:.0f} s){saved}{ramp}",
                highlight=False,
            )
            robust = event.robust
            if robust is not None:
                log(
                    f"  robust check on {robust['slices']} validation slices at eps {robust['eps']:g}: clean "
                    f"{robust['clean_dsc']:.4f}  FGSM {robust['fgsm_dsc']:.4f}  "
                    f"PGD-{robust['pgd_steps']} {robust['pgd_dsc']:.4f}",
                    highlight=False,
                )
                if robust["collapsed"]:
                    log(
                        "  [bold yellow]warning: catastrophic overfitting[/]: PGD robust DSC collapsed while FGSM "
                        "robust DSC held; the checkpoint's metadata records this epoch (try a smaller --adv-eps, "
                        "a longer --adv-warmup or --adv pgd)",
                        highlight=False,
                    )
        elif isinstance(event, InterruptRequested):
            log(
                "Ctrl-C: stopping after this step to save a state to resume from; Ctrl-C again stops at once "
                "and keeps only the state saved last",
                highlight=False,
            )
        elif isinstance(event, EarlyStop):
            log(
                f"early stop: no better validation DSC for {event.patience} epochs (best {event.best_dsc:.4f})",
                highlight=False,
            )
