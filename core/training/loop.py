"""Training the registry models with the paper's recipe, on one device or many (DDP under torchrun).

The recipe (the paper's text): AdamW (lr 3e-4, weight decay 1e-3), cosine annealing stepped every
iteration (by default over the whole run down to 0; ``schedule="paper"``: T_max 7081, eta_min 5e-6 as the
paper and its notebook), 15 epochs, batch 64, 224 x 224, MONAI's ``DiceFocalLoss(sigmoid=True, gamma=2)``
on logits, shift / scale / elastic augmentation, early stopping on validation mean DSC. Validation
scores the test split's slices that hold organs, as the paper scored.

Adversarial training (``--adv``, ``core.training.adversarial``) replaces a share of each batch by its
adversarial version before the step, with eps ramped up over the first epochs as a function of the
step's position (so a resumed run goes on with the ramp); each epoch ends with a check for catastrophic
overfitting on a few validation slices, and the best checkpoint is chosen among the epochs trained at the
full eps. The checkpoint's metadata records the defence.

``train`` reports through ``progress(event)`` with the event dataclasses below and never prints. The
best checkpoint (by validation mean DSC) and a resumable state are written atomically every epoch; a
run resumed mid-epoch replays that epoch's order and skips the batches already trained on. On one process
Ctrl-C is taken between steps (``_InterruptGate``), so the state saved is whole and a resume on the CPU
ends with the very tensors of a run that was never interrupted.

Under torchrun each process trains on its own GPU (``core.devices``: LOCAL_RANK, else RANK modulo the
GPU count) or on the CPU with gloo. Parameters the model never uses are frozen first
(``core.models.registry.freeze_unused_parameters``), so DDP needs no ``find_unused_parameters``.
"""

from __future__ import annotations

import itertools
import math
import os
import random
import signal
import socket
import threading
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import timedelta
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from torch import nn
from torch.utils.data import DataLoader, DistributedSampler, RandomSampler, Sampler

from core.data.decathlon import DEFAULT_SLICE_AXIS
from core.devices import describe_device, resolve_device
from core.errors import SegadvError
from core.labels import LabelSet, LabelSetError, label_set_from_meta
from core.models.checkpoints import (
    img_size_problem,
    load_training_state,
    resume_path_for,
    save_checkpoint,
    save_training_state,
)
from core.models.inference import masks_from_logits, output_kind
from core.models.registry import GrayscaleSegmenter, build_model, freeze_unused_parameters, model_spec
from core.models.specs import read_model_spec
from core.training.adversarial import (
    Defence,
    adversarial_batch,
    check_batch,
    check_overfitting,
    make_defence,
    robust_scores,
)

ENCODER_WEIGHTS = ("imagenet", "none")
# "run": one cosine over the whole run, down to 0. "paper": the paper's T_max of 7,081 iterations (its
# notebook's int(30000 / batch * epochs) + 50 at batch 64) with the notebook's eta_min.
SCHEDULES: dict[str, tuple[int, float] | None] = {"run": None, "paper": (7081, 5e-6)}
# Where smp 0.6 fetches pretrained encoder weights from.
WEIGHTS_HOST = ("huggingface.co", 443)


class TrainingError(SegadvError, RuntimeError):
    """Training cannot start or cannot go on; the message says why and what to do."""


class TrainingInterrupted(TrainingError):
    """Ctrl-C: ``resume_path`` holds the state to resume from (None: no state was saved yet)."""

    def __init__(self, message: str, resume_path: Path | None):
        super().__init__(message)
        self.resume_path = resume_path


@dataclass
class TrainConfig:
    model: str = "small"  # a registry name, smp:ARCH:ENCODER or monai:NAME
    model_spec: Path | None = None  # a JSON / TOML file of keyword arguments for an smp: / monai: model
    data: Path | None = None  # a UW-Madison or Decathlon folder; None: the built-in demo data
    # The model's output kind, sigmoid or softmax; None: the data's (softmax for a Decathlon label map,
    # sigmoid for regions and UW-Madison). Recorded in the checkpoint's label set.
    output: str | None = None
    slice_axis: int = DEFAULT_SLICE_AXIS  # how a Decathlon folder's volumes are cut (core.data.decathlon)
    out: Path | None = None  # the best checkpoint; None: runs/<model>.safetensors
    encoder_weights: str = "imagenet"
    epochs: int = 15
    batch_size: int = 64  # the global batch; each DDP process takes batch_size // world_size
    lr: float = 3e-4
    weight_decay: float = 1e-3
    img_size: int = 224
    patience: int = 5  # epochs without a better validation DSC before stopping; 0: never stop early
    augment: bool = True
    batch_dice: bool = False  # Dice pooled over the batch per organ (see make_loss); the paper's is per slice
    device: str = "auto"
    workers: int = 2
    seed: int = 0
    limit_slices: int | None = None
    test_fraction: float = 0.1
    resume: Path | None = None
    fp16_weights: bool = False  # store the checkpoint's weights in fp16
    schedule: str = "run"  # see SCHEDULES
    log_every: int = 10  # steps between loss reports: each report waits for the device (a host sync)
    tensorboard: Path | None = None  # a folder for TensorBoard's event files (core.training.history)
    # Adversarial training (core.training.adversarial); adv None: plain training.
    adv: str | None = None
    adv_eps: float | None = None
    adv_steps: int | None = None
    adv_loss: str = "focal+dice"
    adv_ratio: float = 1.0
    adv_warmup: float = 0.0  # epochs over which eps ramps up from 0
    # Gaussian noise N(0, sigma^2) added to every training slice (after augmentation, not clipped): what
    # randomized smoothing (core.evaluation.certify) needs of a model. 0: none.
    noise_sigma: float = 0.0
    # How long a DDP process waits in a collective; the others wait while rank 0 validates and saves
    # (well under a minute on a GPU with the full test split), so 10 minutes leaves room.
    dist_timeout_s: float = 600.0

    def checkpoint_path(self) -> Path:
        return Path(self.out) if self.out is not None else Path("runs") / f"{self.model.replace(':', '-')}.safetensors"

    def model_kwargs(self) -> dict | None:
        """The keyword arguments of ``model_spec`` (None: no file), as read; ``model_spec`` checks them."""
        return read_model_spec(self.model_spec) if self.model_spec is not None else None

    def defence(self) -> Defence | None:
        """The adversarial-training recipe of ``adv_*`` (None: plain training); an ``OptionError`` names a bad value."""
        return make_defence(
            self.adv,
            self.adv_eps,
            steps=self.adv_steps,
            loss=self.adv_loss,
            ratio=self.adv_ratio,
            warmup_epochs=self.adv_warmup,
        )

    def as_args(self) -> dict:
        """The configuration as JSON-able training arguments for the checkpoint's metadata."""
        return {key: str(value) if isinstance(value, Path) else value for key, value in asdict(self).items()}


# --- progress events ------------------------------------------------------------------------------


@dataclass(frozen=True)
class TrainStart:
    model: str
    device: str
    world_size: int
    train_slices: int
    val_slices: int
    epochs: int
    start_epoch: int  # 0-based; > 0 when resuming
    steps_per_epoch: int
    checkpoint: Path
    resume_path: Path
    labels: LabelSet  # the data's, which the model segments
    defence: dict | None = None  # core.training.adversarial.Defence.as_meta(); None: plain training


@dataclass(frozen=True)
class EpochStart:
    epoch: int  # 1-based
    epochs: int
    steps: int  # steps this epoch will run (fewer when resuming mid-epoch)


@dataclass(frozen=True)
class Step:
    """Sent after every step; ``loss`` and ``images_per_s`` only every ``log_every`` steps and at the
    epoch's last step (reading the loss waits for the device), None in between."""

    epoch: int
    step: int  # 1-based within this epoch's steps
    steps: int
    loss: float | None  # mean over the steps since the last report, averaged over DDP processes
    lr: float
    images_per_s: float | None
    adv_eps: float | None = None  # the step's adversarial eps (the warmup ramps it up); None: plain training


@dataclass(frozen=True)
class EpochEnd:
    epoch: int
    epochs: int
    train_loss: float
    val_dsc: dict[str, float]  # per label of the data (by name) and "mean"
    improved: bool
    best_dsc: float
    saved: Path | None  # the best checkpoint when this epoch improved it
    seconds: float
    # Adversarial training: the catastrophic-overfitting check (core.training.adversarial.OverfittingCheck).
    robust: dict | None = None
    # False while eps still ramps up: such an epoch cannot become the best checkpoint.
    full_eps: bool = True


@dataclass(frozen=True)
class InterruptRequested:
    """The first Ctrl-C: the run stops before its next step (after validation and the save when it came
    during an epoch's last step); a second Ctrl-C stops at once and saves nothing."""


@dataclass(frozen=True)
class EarlyStop:
    epoch: int
    patience: int
    best_dsc: float


@dataclass
class TrainResult:
    checkpoint: Path | None  # None when no epoch finished
    best_dsc: dict[str, float] | None
    epochs_run: int
    stopped_early: bool
    resume_path: Path
    is_main: bool  # False on DDP ranks other than 0, which neither log nor save
    history: list[dict] = field(default_factory=list)


TrainingEvents = Callable[[object], None]  # each event of the run (TrainStarted, StepDone, ...)

# Mid-epoch: the epoch's loss sum and its steps, and the sum not yet reported and its steps.
EpochLoss = tuple[float, int, float, int]


@dataclass
class _RunState:
    """Where the loop stands: what a resume file keeps of it (``_Run._save_state``)."""

    epoch: int = 0  # epochs finished
    step: int = 0  # steps of epoch ``epoch`` already run
    best_dsc: float = -1.0
    best_val: dict[str, float] | None = None  # the best epoch's validation DSC
    stale_epochs: int = 0
    history: list[dict] = field(default_factory=list)
    sampler: torch.Tensor | None = None  # the generator state at the start of epoch ``epoch``
    epoch_loss: EpochLoss | None = None


# --- the run --------------------------------------------------------------------------------------


def train(config: TrainConfig, progress: TrainingEvents | None = None) -> TrainResult:
    """Train ``config.model`` and keep the best checkpoint by validation mean DSC; see the module doc."""
    _check_config(config)
    if config.encoder_weights == "imagenet":  # before reading any data: fail at once when offline
        _check_weights_reachable(model_spec(config.model, config.model_kwargs()).encoder)
    dist_env = _DistributedEnv.from_environment()
    device = _training_device(config.device, dist_env)
    if dist_env.active:
        dist.init_process_group(
            backend="nccl" if device.type == "cuda" else "gloo",
            # A rank whose peer died (Ctrl-C, a crash) under a launcher that does not tear the job down
            # gives up after this instead of gloo's default 30 minutes.
            timeout=timedelta(seconds=config.dist_timeout_s),
            device_id=device if device.type == "cuda" else None,
        )
    # cuDNN picks the fastest kernels per shape once; training shapes are fixed, so this pays off.
    benchmark = torch.backends.cudnn.benchmark
    torch.backends.cudnn.benchmark = device.type == "cuda" or benchmark
    from core.training.history import training_log  # rank 0 logs the run to CSV files (and TensorBoard)

    try:
        log = training_log(config.checkpoint_path(), config.tensorboard, progress, dist_env.is_main)
        with log as events:
            return _Run(config, device, dist_env, events).run()
    finally:
        torch.backends.cudnn.benchmark = benchmark
        if dist_env.active and dist.is_initialized():
            dist.destroy_process_group()


def _check_config(config: TrainConfig) -> None:
    try:
        spec = model_spec(config.model, config.model_kwargs())
    except SegadvError as exc:
        raise TrainingError(str(exc)) from None
    if spec.library == "monai" and config.encoder_weights != "none":
        raise TrainingError(f"model {config.model!r} has no pretrained encoder: train it with --encoder-weights none")
    if config.encoder_weights not in ENCODER_WEIGHTS:
        raise TrainingError(
            f"unknown encoder weights {config.encoder_weights!r}; choose from {', '.join(ENCODER_WEIGHTS)}"
        )
    if config.schedule not in SCHEDULES:
        raise TrainingError(f"unknown schedule {config.schedule!r}; choose from {', '.join(SCHEDULES)}")
    checks = [
        (config.epochs >= 1, f"epochs must be at least 1, got {config.epochs}"),
        (config.batch_size >= 1, f"batch size must be at least 1, got {config.batch_size}"),
        (
            config.img_size >= 32 and config.img_size % 32 == 0,
            f"image size must be a multiple of 32, got {config.img_size}",
        ),
        # The bound the checkpoint's reader applies: refused now, not when the first epoch's checkpoint is saved.
        (
            img_size_problem(config.model, config.img_size, spec.model_kwargs) is None,
            f"image size {config.img_size}: {img_size_problem(config.model, config.img_size, spec.model_kwargs)}",
        ),
        (config.lr > 0 and math.isfinite(config.lr), f"learning rate must be a positive number, got {config.lr}"),
        (config.weight_decay >= 0, f"weight decay must be >= 0, got {config.weight_decay}"),
        (config.patience >= 0, f"patience must be >= 0, got {config.patience}"),
        (config.workers >= 0, f"workers must be >= 0, got {config.workers}"),
        (
            config.limit_slices is None or config.limit_slices >= 1,
            f"limit-slices must be at least 1, got {config.limit_slices}",
        ),
        (0 < config.test_fraction < 1, f"test fraction must be in (0, 1), got {config.test_fraction}"),
        (config.log_every >= 1, f"log-every must be at least 1, got {config.log_every}"),
        (config.dist_timeout_s > 0, f"the DDP timeout must be positive, got {config.dist_timeout_s} s"),
        (
            math.isfinite(config.noise_sigma) and 0 <= config.noise_sigma <= 1,
            f"noise sigma must be in [0, 1], got {config.noise_sigma}",
        ),
    ]
    for ok, message in checks:
        if not ok:
            raise TrainingError(message)
    defence = config.defence()
    if defence is not None and defence.warmup_epochs > config.epochs:
        raise TrainingError(
            f"--adv-warmup {config.adv_warmup:g} is longer than the run (--epochs {config.epochs}): "
            "eps would never reach --adv-eps"
        )


@dataclass(frozen=True)
class _DistributedEnv:
    """What torchrun (or srun and other launchers) tells each process through RANK / WORLD_SIZE."""

    active: bool
    rank: int = 0
    world_size: int = 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    @classmethod
    def from_environment(cls) -> _DistributedEnv:
        if "RANK" not in os.environ or "WORLD_SIZE" not in os.environ:
            return cls(active=False)
        return cls(active=True, rank=int(os.environ["RANK"]), world_size=int(os.environ["WORLD_SIZE"]))


def _training_device(requested: str, dist_env: _DistributedEnv) -> torch.device:
    """``core.devices``' rule; under DDP every process takes its own GPU, whatever index was asked for."""
    device = resolve_device(requested)
    if device.type == "cuda":
        if dist_env.active:
            device = resolve_device("cuda")  # LOCAL_RANK, else RANK modulo the GPU count
        torch.cuda.set_device(device)
    return device


def amp_dtype_for(device: torch.device) -> torch.dtype | None:
    """bf16 where the GPU computes it natively (Ampere and later), else fp16 with a grad scaler; the CPU
    trains in fp32. Emulated bf16 (V100, T4) is much slower than fp16, so it does not count."""
    if device.type != "cuda":
        return None
    with torch.cuda.device(device):
        native = torch.cuda.is_bf16_supported(including_emulation=False)
    return torch.bfloat16 if native else torch.float16


def _check_weights_reachable(encoder: str) -> None:
    """Fail at once, not after minutes of retries, when ImageNet weights cannot be downloaded."""
    try:
        socket.create_connection(WEIGHTS_HOST, timeout=5).close()
    except OSError as exc:
        raise TrainingError(
            f"cannot download the ImageNet weights of encoder {encoder!r}: {WEIGHTS_HOST[0]} is unreachable "
            f"({exc}); train from random weights with --encoder-weights none"
        ) from None


def _build_model(config: TrainConfig, labels: LabelSet) -> GrayscaleSegmenter:
    """The network of ``config``, with an output channel per label of the data (its checkpoints record them)."""
    model_kwargs = config.model_kwargs()
    if config.encoder_weights == "none":
        return build_model(config.model, encoder_weights=None, labels=labels, model_kwargs=model_kwargs)
    encoder = model_spec(config.model, model_kwargs).encoder
    try:
        return build_model(config.model, encoder_weights="imagenet", labels=labels, model_kwargs=model_kwargs)
    except Exception as exc:  # hub / http / timm errors differ by encoder; all mean "no weights"
        raise TrainingError(
            f"cannot download the ImageNet weights of encoder {encoder!r} ({type(exc).__name__}: {exc}); "
            f"train from random weights with --encoder-weights none"
        ) from None


def make_loss(batch_dice: bool = False, kind: str = "sigmoid") -> nn.Module:
    """Dice + Focal (gamma 2) on logits, MONAI's as in the paper's code; for a softmax model its softmax
    form (``core.losses.SoftmaxDiceFocalLoss``).

    The paper's Dice is per slice and organ: for an organ absent from a slice the Dice term saturates
    at 1 once the model paints a few pixels there, so it gives no gradient against such false positives
    (only the focal term does). ``batch_dice`` pools each organ over the batch, so the Dice term does push.
    """
    from monai.losses import DiceFocalLoss

    if kind == "softmax":
        from core.losses import SoftmaxDiceFocalLoss

        return SoftmaxDiceFocalLoss(batch=batch_dice)

    return DiceFocalLoss(sigmoid=True, gamma=2.0, batch=batch_dice)


def make_augmentation() -> nn.Module:
    """Shift, scale and elastic deformation of image and masks together, on a whole batch on its device."""
    import kornia.augmentation as K
    from kornia.constants import DataKey, Resample

    return K.AugmentationSequential(
        K.RandomAffine(degrees=0.0, translate=(0.0625, 0.0625), scale=(0.9, 1.1), p=0.5),
        K.RandomElasticTransform(kernel_size=(33, 33), sigma=(6.0, 6.0), alpha=(0.5, 0.5), align_corners=False, p=0.25),
        data_keys=["input", "mask"],
        # Nearest-neighbour warps keep the masks binary.
        extra_args={DataKey.MASK: {"resample": Resample.NEAREST, "align_corners": False}},
    )


class _Run:
    def __init__(
        self, config: TrainConfig, device: torch.device, dist_env: _DistributedEnv, progress: TrainingEvents | None
    ):
        self.config = config
        self.device = device
        self.dist = dist_env
        self.progress = progress or (lambda event: None)
        self.checkpoint = config.checkpoint_path()
        self.resume_path = resume_path_for(self.checkpoint)
        self.cuda = device.type == "cuda"
        self.amp_dtype = amp_dtype_for(device)
        self.defence = config.defence()
        # The attacks' name for the training precision.
        self.precision = {None: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16"}[self.amp_dtype]

    # -- setup --

    def _records(self):
        """(dataset, training slices, validation slices): the train side of the split by case, and the
        test side's slices with organs (as the paper scored), each sampled down to --limit-slices."""
        from core.data.gitract import select_slices
        from core.data.open import open_dataset

        dataset = open_dataset(self.config.data, slice_axis=self.config.slice_axis, kind=self.config.output)
        if self.config.output is not None and dataset.labels.kind != self.config.output:
            raise TrainingError(
                f"--output {self.config.output}: {dataset.root} holds {dataset.labels.describe()}, labels that "
                f"overlap, so only a sigmoid model segments them"
            )
        split = dict(test_fraction=self.config.test_fraction, seed=0)
        train_records = select_slices(dataset, "train", organs_only=False, **split)
        val_records = select_slices(dataset, "test", organs_only=True, **split)
        if self.config.limit_slices is not None:
            rng = random.Random(self.config.seed)
            limit = self.config.limit_slices
            train_records = sorted(rng.sample(train_records, min(limit, len(train_records))), key=lambda r: r.id)
            val_records = sorted(rng.sample(val_records, min(limit, len(val_records))), key=lambda r: r.id)
        return dataset, train_records, val_records

    def _loader(self, records, *, batch_size: int, sampler=None) -> DataLoader:
        from core.data.slice_dataset import SliceDataset

        workers = self.config.workers
        return DataLoader(
            SliceDataset(records, self.config.img_size),
            batch_size=batch_size,
            sampler=sampler,
            num_workers=workers,
            pin_memory=self.cuda,
            persistent_workers=workers > 0,
            drop_last=False,
            # Its own generator for the workers' base seed, so iterating the loader draws nothing from the
            # global RNG that augmentation uses: a resumed run draws the same augmentations.
            generator=torch.Generator().manual_seed(self.config.seed),
            worker_init_fn=_ignore_sigint,
        )

    def _to_device(self, tensor: torch.Tensor) -> torch.Tensor:
        tensor = tensor.to(self.device, non_blocking=self.cuda)
        return tensor.contiguous(memory_format=torch.channels_last) if self.cuda else tensor

    # -- main loop --

    def run(self) -> TrainResult:
        config = self.config
        _seed_everything(config.seed + self.dist.rank)
        dataset, train_records, val_records = self._records()
        self.train_slices = len(train_records)
        self.labels = dataset.labels
        model = _build_model(config, dataset.labels).to(self.device)
        freeze_unused_parameters(model)
        if self.cuda:
            model = model.to(memory_format=torch.channels_last)

        per_process_batch = max(1, config.batch_size // self.dist.world_size)
        generator = None
        if self.dist.active:
            # Its order depends on (seed, epoch) alone, so a resumed epoch gets it back from set_epoch.
            shuffled = DistributedSampler(
                _Indexable(len(train_records)),
                num_replicas=self.dist.world_size,
                rank=self.dist.rank,
                shuffle=True,
                seed=config.seed,
            )
        else:
            generator = torch.Generator().manual_seed(config.seed)
            shuffled = RandomSampler(range(len(train_records)), generator=generator)
        order = _SkipSampler(shuffled)
        train_loader = self._loader(train_records, batch_size=per_process_batch, sampler=order)
        val_loader = self._loader(val_records, batch_size=config.batch_size) if self.dist.is_main else None
        steps_per_epoch = len(train_loader)
        check = check_batch(val_loader, self.device) if self.defence is not None and self.dist.is_main else None

        # All parameters, frozen ones included: AdamW skips those without a gradient, and the optimizer
        # state keeps the layout of resume files written before they were frozen.
        optimizer = torch.optim.AdamW(model.parameters(), lr=config.lr, weight_decay=config.weight_decay)
        scheduler = _make_scheduler(optimizer, config.schedule, config.epochs * steps_per_epoch)
        scaler = torch.amp.GradScaler("cuda", enabled=self.amp_dtype == torch.float16)
        loss_fn = make_loss(config.batch_dice, output_kind(model))
        augment = make_augmentation().to(self.device) if config.augment else None

        state = _RunState(sampler=_generator_state(generator))
        if config.resume is not None:
            state = self._restore(config.resume, model, optimizer, scheduler, scaler)
            if config.schedule == "run":
                _stretch_cosine(scheduler, config.epochs * steps_per_epoch)
            if state.sampler is None:  # a resume file from before sampler states were kept
                state.sampler = _generator_state(generator)
            if self.dist.active:
                # The file holds rank 0's RNG state alone: without a reseed every rank would draw rank 0's
                # augmentations. Derived from the resume point, so a second resume draws other numbers.
                _seed_everything(_derived_seed(config.seed, self.dist.rank, state.epoch, state.step))

        net = model
        if self.dist.active:
            net = nn.parallel.DistributedDataParallel(model, device_ids=[self.device.index] if self.cuda else None)

        self.progress(
            TrainStart(
                model=config.model,
                device=describe_device(self.device),
                world_size=self.dist.world_size,
                train_slices=len(train_records),
                val_slices=len(val_records),
                epochs=config.epochs,
                start_epoch=state.epoch,
                steps_per_epoch=steps_per_epoch,
                checkpoint=self.checkpoint,
                resume_path=self.resume_path,
                defence=self.defence.as_meta() if self.defence is not None else None,
                labels=dataset.labels,
            )
        )
        fingerprint = dataset.fingerprint()
        stopped_early = False
        epoch = state.epoch
        sigint_at = int(os.environ.get("SEGADV_TEST_SIGINT_AT_STEP") or 0)
        # A resume file is only ever this run's last consistent state: the one it started from, then its own.
        self.last_saved = config.resume
        loss_sum, loss_steps, window_steps = 0.0, 0, 0
        window = None
        gate = _InterruptGate(self.progress, active=not self.dist.active)
        try:
            while epoch < config.epochs:
                started = time.perf_counter()
                if generator is None:  # torchrun: the distributed sampler's order comes from the epoch
                    shuffled.set_epoch(epoch)
                else:
                    generator.set_state(state.sampler)  # this epoch's order (a no-op unless resuming)
                # Steps this epoch already ran before an interrupt (capped: a state saved with fewer
                # processes has more steps per epoch).
                skip = min(state.step, steps_per_epoch)
                order.skip = skip * per_process_batch
                steps = steps_per_epoch - skip
                self.progress(EpochStart(epoch=epoch + 1, epochs=config.epochs, steps=steps))
                net.train()
                # The epoch's loss so far: a resumed epoch goes on with the sums of the steps it ran before.
                loss_sum, loss_steps, window_sum, window_steps = state.epoch_loss or (0.0, 0, 0.0, 0)
                state.epoch_loss = None
                # Losses stay on the device between reports: reading one waits for the GPU.
                window = torch.tensor(window_sum, device=self.device)
                seen, clock = 0, time.perf_counter()
                for index, (images, masks) in enumerate(train_loader):
                    gate.check()  # before this batch draws its augmentation: the state is whole here
                    images, masks = self._to_device(images), self._to_device(masks)
                    if augment is not None:
                        with torch.no_grad():
                            images, masks = augment(images, masks)
                            masks = (masks > 0.5).to(images.dtype)  # interpolation must not blur labels
                    if config.noise_sigma > 0:
                        # Seeded per (run, rank, position) like the adversarial starts: a resume draws it again.
                        draw = torch.Generator(device=self.device).manual_seed(
                            _derived_seed(config.seed, self.dist.rank, epoch, skip + index, 1)
                        )
                        noise = torch.randn(images.shape, generator=draw, device=self.device, dtype=images.dtype)
                        images = images + config.noise_sigma * noise
                    adv_eps = None
                    if self.defence is not None:
                        position = skip + index
                        adv_eps = self.defence.eps_at(epoch, position, steps_per_epoch)
                        # A seed per (run, rank, position): a resumed step draws the start it drew before.
                        starts = torch.Generator(device=self.device).manual_seed(
                            _derived_seed(config.seed, self.dist.rank, epoch, position)
                        )
                        images = adversarial_batch(
                            model, images, masks, self.defence, adv_eps, generator=starts, precision=self.precision
                        )
                    if epoch * steps_per_epoch + skip + index + 1 == sigint_at:
                        # Test hook: a terminal's Ctrl-C (SIGINT to the process group) while this step computes.
                        os.killpg(os.getpgrp(), signal.SIGINT)
                    loss = self._step(net, images, masks, loss_fn, optimizer, scaler)
                    scheduler.step()
                    window += loss.detach()
                    window_steps += 1
                    state.step = skip + index + 1
                    seen += images.shape[0] * self.dist.world_size
                    loss_value = speed = None
                    if state.step % config.log_every == 0 or index == steps - 1:
                        loss_value = self._global_mean(window) / window_steps
                        if not math.isfinite(loss_value):
                            raise TrainingError(
                                f"the loss became {loss_value} at epoch {epoch + 1}, by step {state.step}; training "
                                f"stopped and the best checkpoint {self.checkpoint} "
                                "was left untouched; try a lower --lr"
                            )
                        loss_sum += loss_value * window_steps
                        loss_steps += window_steps
                        window.zero_()
                        window_steps = 0
                        elapsed = time.perf_counter() - clock
                        speed = seen / elapsed if elapsed > 0 else 0.0
                    self.progress(
                        Step(
                            epoch=epoch + 1,
                            step=index + 1,
                            steps=steps,
                            loss=loss_value,
                            lr=scheduler.get_last_lr()[0],
                            images_per_s=speed,
                            adv_eps=adv_eps,
                        )
                    )
                epoch += 1
                state.epoch, state.step, state.sampler = epoch, 0, _generator_state(generator)
                stop = False
                if self.dist.is_main:
                    val_dsc = evaluate_dsc(model, val_loader, self.device, self.amp_dtype)
                    robust = self._overfitting_check(model, check, state.history)
                    # While eps still ramps up an epoch is easier than the defence: it cannot be the best.
                    full_eps = self.defence is None or self.defence.full_eps_from(epoch)
                    improved = full_eps and val_dsc["mean"] > state.best_dsc
                    train_loss = loss_sum / loss_steps if loss_steps else float("nan")
                    state.history.append(
                        {"epoch": epoch, "train_loss": train_loss, **val_dsc, **({"robust": robust} if robust else {})}
                    )
                    saved = None
                    if improved:
                        state.best_dsc, state.best_val, state.stale_epochs = val_dsc["mean"], val_dsc, 0
                        saved = save_checkpoint(
                            self.checkpoint,
                            model,
                            img_size=config.img_size,
                            train_args=config.as_args(),
                            epoch=epoch,
                            val_dsc=val_dsc,
                            data_fingerprint=fingerprint,
                            dtype="float16" if config.fp16_weights else None,
                            defence=self._defence_meta(robust, state.history),
                        )
                    elif full_eps:
                        state.stale_epochs += 1
                    self._save_state(state, model, optimizer, scheduler, scaler)
                    self.progress(
                        EpochEnd(
                            epoch=epoch,
                            epochs=config.epochs,
                            train_loss=train_loss,
                            val_dsc=val_dsc,
                            improved=improved,
                            best_dsc=state.best_dsc,
                            saved=saved,
                            seconds=time.perf_counter() - started,
                            robust=robust,
                            full_eps=full_eps,
                        )
                    )
                    stop = bool(config.patience) and state.stale_epochs >= config.patience and epoch < config.epochs
                stop = self._broadcast_flag(stop)
                if stop:
                    if self.dist.is_main:
                        self.progress(EarlyStop(epoch=epoch, patience=config.patience, best_dsc=state.best_dsc))
                    stopped_early = True
                    break
                gate.check()  # a Ctrl-C during the epoch's last step or its validation stops here, after the save
        except KeyboardInterrupt:
            where = f"epoch {epoch + 1}, step {state.step}"
            if gate.forced:  # mid-step: the weights, the optimizer and the RNGs may be half way through it
                if self.last_saved is None:
                    raise TrainingInterrupted(f"interrupted at once at {where}; no state was saved yet", None) from None
                raise TrainingInterrupted(
                    f"interrupted at once at {where}; the state saved last is in {self.last_saved}",
                    self.last_saved,
                ) from None
            if self.dist.is_main:
                if state.step and window is not None:
                    state.epoch_loss = (loss_sum, loss_steps, float(window), window_steps)
                self._save_state(state, model, optimizer, scheduler, scaler)
            raise TrainingInterrupted(
                f"interrupted at {where}; the state to resume from is in {self.resume_path}",
                self.resume_path,
            ) from None
        finally:
            gate.close()
        return TrainResult(
            checkpoint=self.checkpoint if state.best_val is not None else None,
            best_dsc=state.best_val,
            epochs_run=epoch,
            stopped_early=stopped_early,
            resume_path=self.resume_path,
            is_main=self.dist.is_main,
            history=state.history,
        )

    def _overfitting_check(self, model, check, history: list[dict]) -> dict | None:
        """FGSM against a short PGD on the fixed check slices at the full eps (None: plain training)."""
        if self.defence is None:
            return None
        images, masks = check
        clean, fgsm_dsc, pgd_dsc = robust_scores(
            model,
            images,
            masks,
            self.defence.eps,
            loss=self.defence.loss,
            seed=self.config.seed,
            precision=self.precision,
        )
        earlier = [entry["robust"] for entry in history if entry.get("robust")]
        return check_overfitting(
            clean, fgsm_dsc, pgd_dsc, earlier, eps=self.defence.eps, slices=images.shape[0]
        ).as_dict()

    def _defence_meta(self, robust: dict | None, history: list[dict]) -> dict | None:
        """The checkpoint's ``defence``: the recipe, this epoch's check and every epoch that collapsed so far."""
        if self.defence is None:
            return None
        return {
            **self.defence.as_meta(),
            "check": robust,
            "collapsed_epochs": [entry["epoch"] for entry in history if (entry.get("robust") or {}).get("collapsed")],
        }

    def _step(self, net, images, masks, loss_fn, optimizer, scaler) -> torch.Tensor:
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(self.device.type, dtype=self.amp_dtype, enabled=self.amp_dtype is not None):
            logits = net(images)
        # The loss in fp32: focal and dice terms are fragile in half precision.
        loss = loss_fn(logits.float(), masks)
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
        return loss

    def _global_mean(self, value: torch.Tensor) -> float:
        """``value`` summed over processes and divided by their number, so every rank sees the same NaN
        and stops together; the one host sync of a report."""
        if self.dist.active:
            value = value.clone()
            dist.all_reduce(value)
            value /= self.dist.world_size
        return float(value)

    def _broadcast_flag(self, flag: bool) -> bool:
        """Rank 0 decides (early stopping); the others wait here while it validates and saves."""
        if not self.dist.active:
            return flag
        tensor = torch.tensor([int(flag)], device=self.device)
        dist.broadcast(tensor, src=0)
        return bool(tensor.item())

    # -- resume --

    def _save_state(self, state: _RunState, model, optimizer, scheduler, scaler) -> None:
        save_training_state(
            self.resume_path,
            {
                "model_name": self.config.model,
                "img_size": self.config.img_size,
                # What the order of an epoch's batches depends on: a resume must replay the same order.
                "batch_size": self.config.batch_size,
                "seed": self.config.seed,
                "slice_axis": self.config.slice_axis,  # the same slices (a Decathlon folder's volumes cut so)
                "train_slices": self.train_slices,
                "epoch": state.epoch,
                "step": state.step,
                "best_dsc": state.best_dsc,
                "best_val": state.best_val,
                "stale_epochs": state.stale_epochs,
                "history": state.history,
                "model": {key: value.detach().cpu() for key, value in model.state_dict().items()},
                "optimizer": optimizer.state_dict(),
                "scheduler": scheduler.state_dict(),
                "scaler": scaler.state_dict(),
                "rng": _rng_state(),
                "sampler": state.sampler,  # the generator state at the start of epoch `epoch`
                "epoch_loss": None if state.epoch_loss is None else list(state.epoch_loss),  # EpochLoss
                "defence": self.defence.as_meta() if self.defence is not None else None,
                "labels": self.labels.to_meta(),  # the model's output channels: --data, --output
            },
        )
        self.last_saved = self.resume_path

    def _restore(self, path, model, optimizer, scheduler, scaler) -> _RunState:
        saved = load_training_state(path)
        for key, expected in (("model_name", self.config.model), ("img_size", self.config.img_size)):
            if saved.get(key) != expected:
                raise TrainingError(
                    f"{path}: was saved for {key.replace('_', ' ')} {saved.get(key)!r}, not {expected!r}"
                )
        # Files written before these were recorded lack them.
        for key, expected, option in (
            ("batch_size", self.config.batch_size, "--batch-size"),
            ("seed", self.config.seed, "--seed"),
            ("slice_axis", self.config.slice_axis, "--slice-axis"),
            ("train_slices", self.train_slices, "--data / --limit-slices"),
        ):
            if key in saved and saved[key] != expected:
                raise TrainingError(
                    f"{path}: was saved by a run with {key.replace('_', ' ')} {saved[key]!r}, not {expected!r}; "
                    f"resume with that run's {option}"
                )
        if "labels" in saved and saved["labels"] != self.labels.to_meta():
            raise TrainingError(
                f"{path}: was saved by a run whose model segments {_describe_labels(saved['labels'])}, not "
                f"{self.labels.describe()}; resume with that run's --data and --output"
            )
        defence = self.defence.as_meta() if self.defence is not None else None
        if saved.get("defence") != defence:
            raise TrainingError(
                f"{path}: was saved by a run with defence {_describe_defence(saved.get('defence'))}, not "
                f"{_describe_defence(defence)}; resume with that run's --adv options"
            )
        try:
            model.load_state_dict(saved["model"])
            optimizer.load_state_dict(saved["optimizer"])
            scheduler.load_state_dict(saved["scheduler"])
            load_scaler_state(scaler, saved.get("scaler"))
            _set_rng_state(saved["rng"])
            state = _RunState(
                **{key: saved[key] for key in ("epoch", "step", "best_dsc", "best_val", "stale_epochs", "history")}
            )
        except KeyError as exc:
            raise TrainingError(f"{path}: not a whole resume file (no {exc.args[0]!r} entry)") from None
        except (RuntimeError, ValueError, TypeError) as exc:
            raise TrainingError(f"{path}: does not fit this run ({' '.join(str(exc).split())})") from None
        state.sampler = saved.get("sampler")
        epoch_loss = saved.get("epoch_loss")
        if epoch_loss is not None:
            loss_sum, loss_steps, window_sum, window_steps = epoch_loss
            state.epoch_loss = (loss_sum, loss_steps, window_sum, window_steps)
        return state


def _describe_labels(meta: object) -> str:
    """A resume file's label set as messages name one, or what it holds instead."""
    try:
        return label_set_from_meta(meta, "labels").describe()
    except LabelSetError:
        return "labels it does not record readably"


def _describe_defence(defence: dict | None) -> str:
    if defence is None:
        return "none (plain training)"
    return ", ".join(f"{key} {value}" for key, value in defence.items())


def load_scaler_state(scaler: torch.amp.GradScaler, saved: dict | None) -> None:
    """Restore the fp16 loss scale when the saved run had one; a CPU or bf16 run saves an empty state,
    and an fp16 run resumed from it starts from the default scale (it adapts within a few steps)."""
    if saved:
        scaler.load_state_dict(saved)


def _make_scheduler(optimizer, schedule: str, total_steps: int):
    fixed = SCHEDULES[schedule]
    if fixed is None:
        return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=total_steps)
    t_max, eta_min = fixed
    return torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=t_max, eta_min=eta_min)


def _stretch_cosine(scheduler, total_steps: int) -> None:
    """A run resumed with more --epochs anneals to 0 at its new end: the cosine over ``total_steps``,
    with the learning rate put where that cosine is now (the scheduler's steps are relative, so without
    it a finished run would stay at 0, and one run past its old end would climb back up)."""
    if scheduler.T_max == total_steps:
        return
    scheduler.T_max = total_steps
    progress = math.cos(math.pi * scheduler.last_epoch / total_steps)
    for group, base_lr in zip(scheduler.optimizer.param_groups, scheduler.base_lrs):
        group["lr"] = scheduler.eta_min + (base_lr - scheduler.eta_min) * (1 + progress) / 2


class _InterruptGate:
    """Ctrl-C taken between steps on one process: the first SIGINT only asks (``check`` raises
    KeyboardInterrupt before the next batch, or after the epoch's save), so the state saved is whole and a
    resume goes on bit for bit; a second one raises at once (``forced``: nothing is saved). Under DDP, or
    off the main thread where no handler can be set, SIGINT raises where it lands, as Python's default."""

    def __init__(self, progress: TrainingEvents, *, active: bool):
        self.progress = progress
        self.requested = False
        self.forced = False
        self.previous = None
        if active and threading.current_thread() is threading.main_thread():
            self.previous = signal.signal(signal.SIGINT, self._on_sigint)

    def _on_sigint(self, signum, frame) -> None:
        if self.requested:
            self.forced = True
            raise KeyboardInterrupt
        self.requested = True
        self.progress(InterruptRequested())

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    def close(self) -> None:
        if self.previous is not None:
            signal.signal(signal.SIGINT, self.previous)
            self.previous = None


def _ignore_sigint(worker_id: int) -> None:
    """DataLoader workers leave Ctrl-C (a terminal sends it to the whole process group) to the main
    process, which stops between steps and then shuts them down; a worker that died of it would stall the
    batches the main process still fetches."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)


class _SkipSampler(Sampler[int]):
    """``sampler``'s order less its first ``skip`` indices: a resumed epoch leaves out the batches it
    already trained on (set ``skip`` before each epoch; it is read when the epoch's iteration starts)."""

    def __init__(self, sampler: Sampler[int]):
        self.sampler = sampler
        self.skip = 0

    def __iter__(self):
        return itertools.islice(iter(self.sampler), self.skip, None)

    def __len__(self) -> int:
        return max(0, len(self.sampler) - self.skip)


class _Indexable:
    """A length for DistributedSampler, which only needs ``len``."""

    def __init__(self, length: int):
        self.length = length

    def __len__(self) -> int:
        return self.length


@torch.no_grad()
def evaluate_dsc(model: nn.Module, loader: DataLoader, device: torch.device, amp_dtype=None) -> dict[str, float]:
    """Mean DSC per label of ``model.labels`` over the loader's slices (threshold 0.5, a label empty in both
    scores 1), keyed by label name, and their mean."""
    from core.metrics import dice_per_organ

    was_training = model.training
    model.eval()
    scores = []
    for images, masks in loader:
        images = images.to(device, non_blocking=device.type == "cuda")
        with torch.autocast(device.type, dtype=amp_dtype, enabled=amp_dtype is not None):
            logits = model(images)
        if amp_dtype is not None and not torch.isfinite(logits).all():
            logits = model(images)  # half precision overflowed: fp32, so no slice scores as an empty mask
        scores.append(dice_per_organ(masks_from_logits(logits.float(), output_kind(model)), masks > 0.5, empty="one"))
    model.train(was_training)
    per_organ = np.concatenate(scores).mean(axis=0)
    result = {name: float(value) for name, value in zip(model.labels.names, per_organ)}
    result["mean"] = float(per_organ.mean())
    return result


def _seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)  # seeds every CUDA device too


def _derived_seed(*parts: int) -> int:
    """One well-mixed seed per (seed, rank, epoch, step): nearby tuples give unrelated streams."""
    return int(np.random.SeedSequence([int(part) for part in parts]).generate_state(1, dtype=np.uint64)[0] >> 1)


def _generator_state(generator: torch.Generator | None) -> torch.Tensor | None:
    return generator.get_state() if generator is not None else None


def _rng_state() -> dict:
    """RNG states as tensors and primitives only, so the resume file loads with weights_only=True."""
    np_state = np.random.get_state()
    assert isinstance(np_state, tuple)  # the legacy form, the global RandomState's (MT19937) own
    return {
        "torch": torch.get_rng_state(),
        "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
        "numpy": [
            np_state[0],
            torch.from_numpy(np_state[1].astype(np.int64)),
            int(np_state[2]),
            int(np_state[3]),
            float(np_state[4]),
        ],
        "python": _to_lists(random.getstate()),
    }


def _set_rng_state(state: dict) -> None:
    torch.set_rng_state(state["torch"])
    if state["cuda"] and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])
    name, keys, pos, has_gauss, gauss = state["numpy"]
    np.random.set_state((name, keys.numpy().astype(np.uint32), pos, has_gauss, gauss))
    random.setstate(_to_tuples(state["python"]))


def _to_lists(value):
    return [_to_lists(item) for item in value] if isinstance(value, tuple) else value


def _to_tuples(value):
    return tuple(_to_tuples(item) for item in value) if isinstance(value, list) else value
