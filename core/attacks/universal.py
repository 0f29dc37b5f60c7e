"""Universal organ-erasure perturbations: ONE delta, at the model's input size, that removes the chosen
organs from the prediction on every slice while keeping the others (a targeted universal perturbation,
as Metzen et al., ICCV 2017, made for pedestrians in street scenes).

``craft_universal`` optimises the delta over a set of slices (the training split) by signed-gradient
descent, projected to the L-inf eps ball after every step: per batch, the loss is BCE of the chosen
organs' logits against 0 plus ``keep_weight`` times BCE of the other organs' logits against the model's
own clean prediction. The adversarial slice is ``clip01(x + delta)``, so it stays in [0, 1] and within eps
of x. ``universal_report`` scores a delta on other slices (the test split); ``run_universal`` is the
registry's runner (``segadv attack --method universal --delta FILE``), scaling the saved delta to
``config.eps``. Ctrl-C: ``core.evaluation.scoring.Interrupted`` with the delta after the steps made, or the report
over the slices scored.

A delta file is safetensors: the tensor ``delta`` (S, S) float32 and JSON metadata (``FORMAT``, the eps it
was bounded by, organs, image size, the checkpoint and data it was made on).
"""

from __future__ import annotations

import json
import math
import os
import random
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from core import distributed
from core.attacks.batch import model_labels
from core.attacks.config import AttackConfig, check_eps, parse_organs
from core.attacks.control import StopCheck, check_stop
from core.attacks.iterative import erasure_loss
from core.attacks.runner import AttackContext, AttackOutput
from core.errors import OptionError, SegadvError
from core.evaluation.scoring import (
    Interrupted,
    Partial,
    Summary,
    batches,
    finished_batches,
    score_slices,
    summarise,
)
from core.files import json_number, write_bytes
from core.labels import LabelSet
from core.losses import class_map
from core.models.checkpoints import UNIVERSAL_FORMAT as FORMAT
from core.models.checkpoints import CheckpointError, check_universal_meta, read_safetensors
from core.models.inference import eval_mode, output_kind, predict
from core.progress import Progress
from core.wording import label_noun


class DeltaError(SegadvError, ValueError):
    """A universal-perturbation file that cannot be read or does not fit the model; names the file."""


@dataclass
class UniversalDelta:
    """A universal perturbation: ``delta`` float32 (S, S) in [-eps, eps], and what made it."""

    delta: torch.Tensor
    eps: float
    organs: tuple[str, ...]
    meta: dict = field(default_factory=dict)  # checkpoint, data, epochs, steps, loss history, ...

    @property
    def img_size(self) -> int:
        return int(self.delta.shape[-1])

    def scaled(self, eps: float) -> torch.Tensor:
        """The delta rescaled so its bound is ``eps`` instead of ``self.eps`` (zero where it was made at 0)."""
        if self.eps == 0:
            return torch.zeros_like(self.delta)
        return self.delta * (eps / self.eps)


def _check_epochs(epochs: int) -> int:
    if isinstance(epochs, bool) or int(epochs) != epochs or epochs < 1:
        raise OptionError(f"epochs must be a whole number of at least 1, got {epochs}")
    return int(epochs)


def _objective(
    logits: torch.Tensor,
    clean_pred: torch.Tensor,
    erase: list[int],
    keep: list[int],
    keep_weight: float,
    kind: str = "sigmoid",
):
    """Per-batch loss: erase the chosen organs (logits to 0 probability), keep the others as predicted.
    Softmax: the chosen labels' total probability to 0 (``erasure_loss``), and the cross-entropy towards
    the clean prediction's classes on the pixels it gave to the other labels or the background."""
    if kind == "softmax":
        loss = erasure_loss(logits, erase, kind).mean()
        if keep and keep_weight > 0:
            classes = class_map(clean_pred)
            kept = ~clean_pred[:, erase].any(dim=1)
            ce = F.cross_entropy(logits, classes, reduction="none")
            loss = loss + keep_weight * (ce * kept).mean()
        return loss
    chosen = logits[:, erase]
    loss = F.binary_cross_entropy_with_logits(chosen, torch.zeros_like(chosen))
    if keep and keep_weight > 0:
        loss = loss + keep_weight * F.binary_cross_entropy_with_logits(logits[:, keep], clean_pred[:, keep].float())
    return loss


def craft_universal(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    organs: Sequence[str] | str,
    eps: float,
    *,
    epochs: int = 5,
    batch_size: int = 16,
    step_size: float | None = None,
    keep_weight: float = 1.0,
    seed: int = 0,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> UniversalDelta:
    """One delta that erases ``organs`` (labels of the model's labels) on ``records``, within ``eps``.

    ``epochs`` passes over the slices in a seeded random order; one signed step per batch, of
    ``step_size`` (default eps / 4) annealed by a cosine to 0 over the run, so the delta settles instead of
    dithering by a full step at the end. ``progress(done, total)`` counts batches."""
    labels = model_labels(model)
    organs = parse_organs(organs, labels)
    if not organs:
        raise OptionError(f"choose at least one {label_noun(labels)} to erase; choose from {', '.join(labels.names)}")
    eps = check_eps(eps)
    epochs = _check_epochs(epochs)
    if batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    alpha = eps / 4 if step_size is None else float(step_size)
    if not math.isfinite(alpha) or alpha < 0:
        raise OptionError(f"step size must be a non-negative number, got {step_size}")
    if not math.isfinite(keep_weight) or keep_weight < 0:
        raise OptionError(f"keep weight must be a non-negative number, got {keep_weight}")
    records = list(records)
    if not records:
        raise OptionError("no slices to optimise the perturbation on")
    device = torch.device(device)
    erase = [labels.index(organ) for organ in organs]
    keep = [index for index in range(len(labels)) if index not in erase]
    delta = torch.zeros(1, 1, img_size, img_size, device=device)
    kind = output_kind(model)
    order = random.Random(seed)
    per_epoch = math.ceil(len(records) / batch_size)
    total, step, history = epochs * per_epoch, 0, []
    started = time.perf_counter()
    if progress is not None:
        progress(0, total)
    interrupted = False
    with eval_mode(model):
        try:
            for _ in range(epochs):
                shuffled = order.sample(records, len(records))
                losses = []
                for _, images, _ in batches(shuffled, img_size, batch_size, device):
                    check_stop(should_stop)
                    # The keep term's target; one more forward pass, where the keep term is there at all.
                    clean_pred = predict(model, images) if keep and keep_weight > 0 else None
                    x = delta.detach().requires_grad_(True)
                    with torch.enable_grad():
                        loss = _objective(
                            model((images + x).clamp(0.0, 1.0)).float(), clean_pred, erase, keep, keep_weight, kind
                        )
                        (grad,) = torch.autograd.grad(loss, x)
                    rate = alpha * 0.5 * (1 + math.cos(math.pi * step / total))
                    # One statement: Ctrl-C leaves the delta and its step count in step.
                    delta, step = (delta - rate * grad.sign()).clamp(-eps, eps), step + 1
                    losses.append(float(loss.detach()))
                    if progress is not None:
                        progress(step, total)
                history.append(float(np.mean(losses)))
        except KeyboardInterrupt:
            interrupted = True
    meta = {
        "epochs": epochs,
        "steps": step,
        "batch_size": batch_size,
        "step_size": alpha,
        "keep_weight": keep_weight,
        "seed": seed,
        "slices": len(records),
        "loss_history": history,
        "seconds": time.perf_counter() - started,
    }
    made = UniversalDelta(delta=delta[0, 0].detach().cpu(), eps=eps, organs=organs, meta=meta)
    if interrupted:  # the delta after the steps made: a valid one within eps, less optimised
        raise Interrupted(made if step else None, Partial(step, total, "steps", "the delta after those steps"))
    return made


# ---------------------------------------------------------------------------------------------------
# files


def save_delta(path: str | os.PathLike, universal: UniversalDelta) -> Path:
    """Write ``universal`` to ``path`` (safetensors, through ``core.files``' atomic writer)."""
    from safetensors.torch import save

    header = {
        "format": FORMAT,
        "eps": universal.eps,
        "organs": list(universal.organs),
        "img_size": universal.img_size,
        **universal.meta,
    }
    data = save(
        {"delta": universal.delta.detach().float().cpu().contiguous()},
        metadata={key: json.dumps(value) for key, value in header.items()},
    )
    return write_bytes(path, data)


def load_delta(path: str | os.PathLike) -> UniversalDelta:
    """The universal perturbation saved at ``path``; a ``DeltaError`` naming the file when it is not one."""
    path = Path(path).expanduser()
    if not path.is_file():
        raise DeltaError(
            f"delta file {str(path)!r} does not exist" if not path.exists() else f"delta {str(path)!r} is not a file"
        )
    stat = path.stat()
    return _load_delta(str(path.resolve()), stat.st_mtime_ns, stat.st_size)


@lru_cache(maxsize=8)  # keyed by modification time and size: a rewritten file is read again
def _load_delta(path: str, _mtime_ns: int, _size: int) -> UniversalDelta:
    from safetensors import SafetensorError, safe_open

    try:  # the header and every metadata value, checked before the tensor is read
        tensors, meta = read_safetensors(path)
        if meta is None or meta["format"] != FORMAT or "delta" not in tensors:
            raise DeltaError(f"{path} is not a segadv universal perturbation (make one with `segadv universal`)")
        check_universal_meta(Path(path), meta)
    except CheckpointError as exc:
        raise DeltaError(str(exc)) from None
    size, entry = meta["img_size"], tensors["delta"]
    if entry["dtype"] != "F32" or entry["shape"] != [size, size]:  # as save_delta writes it
        shape = entry["shape"][:3] + (["..."] if len(entry["shape"]) > 3 else [])  # as long as the file wants
        raise DeltaError(
            f"{path}: tensor delta is {entry['dtype'][:12]!r} {shape}; expected 'F32' [{size}, {size}] "
            f"(metadata img_size = {size})"
        )
    try:
        with safe_open(path, framework="pt") as handle:
            delta = handle.get_tensor("delta")
    except (SafetensorError, OSError) as exc:
        raise DeltaError(f"cannot read delta {path}: {exc}") from None
    eps = float(meta.pop("eps"))
    largest = float(delta.abs().max())  # NaN when any value is NaN
    if not largest <= eps * (1 + 1e-6):  # eps is stored as float64, the delta was clamped in float32
        raise DeltaError(f"{path}: the delta reaches {largest:g}, beyond its metadata eps = {eps:g}")
    organs = tuple(meta.pop("organs"))
    for key in ("format", "img_size"):
        meta.pop(key, None)
    return UniversalDelta(delta=delta, eps=eps, organs=organs, meta=meta)


def check_fits(universal: UniversalDelta, img_size: int, source: str = "the delta") -> None:
    """A ``DeltaError`` unless the delta is the size of the model's input."""
    if universal.img_size != img_size:
        raise DeltaError(
            f"{source} is {universal.img_size} x {universal.img_size} "
            f"but the model takes {img_size} x {img_size} slices"
        )


# ---------------------------------------------------------------------------------------------------
# the registry's runner and the report


def apply_delta(image: torch.Tensor, delta: torch.Tensor) -> torch.Tensor:
    """``clip01(image + delta)`` for a batch (N, 1, S, S) and one delta (S, S)."""
    return (image.detach() + delta.to(image.device, image.dtype)).clamp(0.0, 1.0)


def run_universal(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """``config.delta``'s saved perturbation, rescaled to ``config.eps``, added to every slice."""
    if config.delta is None:
        raise DeltaError("the universal method needs a perturbation file (--delta FILE, made by `segadv universal`)")
    universal = load_delta(config.delta)
    check_fits(universal, image.shape[-1], f"delta {Path(config.delta).name}")
    if context.clean_pred is not None:
        clean_pred = context.clean_pred.to(image.device)
    else:  # not needed when the result is scored on another model (a transfer)
        clean_pred = predict(model, image, config.precision) if context.predict_result else None
    return AttackOutput(apply_delta(image, universal.scaled(config.eps)), clean_pred)


@dataclass
class UniversalReport:
    """A delta scored on held-out slices: DSC (``summary``, from ``core.evaluation.scoring.score_slices``) and, per
    organ, the mean predicted area (share of the slice's pixels) before and after, and the share of slices
    predicted to hold the organ whose adversarial prediction has none of it (``vanished``)."""

    organs: tuple[str, ...]
    eps: float
    summary: Summary
    labels: LabelSet  # the model's: what the per-label keys name
    area_clean: dict[str, float | None]
    area_adv: dict[str, float | None]
    vanished: dict[str, float | None]
    present: dict[str, int]  # slices whose clean prediction holds the organ
    slices: int

    def area_ratio(self, organ: str) -> float | None:
        """Predicted area after over before (None where the clean prediction has none)."""
        clean, adv = self.area_clean[organ], self.area_adv[organ]
        return None if not clean or adv is None else adv / clean

    def to_dict(self) -> dict:
        return {
            "organs": list(self.organs),
            "eps": self.eps,
            "slices": self.slices,
            "labels": self.labels.to_meta(),
            "summary": self.summary.to_dict(),
            "area_clean": self.area_clean,
            "area_adv": self.area_adv,
            "vanished": self.vanished,
            "present": self.present,
            "area_ratio": {name: json_number(self.area_ratio(name)) for name in self.labels.names},
        }


def universal_report(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    universal: UniversalDelta,
    *,
    eps: float | None = None,
    empty: str = "one",
    score: str = "nonempty",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> UniversalReport:
    """``universal`` (rescaled to ``eps``, default its own) applied to ``records`` and scored."""
    check_fits(universal, img_size)
    labels = model_labels(model)
    if not set(universal.organs) <= set(labels.names):
        raise DeltaError(
            f"the delta erases {', '.join(universal.organs)}, which the model's labels ({labels.describe()}) lack"
        )
    eps = universal.eps if eps is None else check_eps(eps)
    delta = universal.scaled(eps)
    records = list(records)
    if progress is not None:
        progress(0, len(records))

    def apply_and_score(chunk, images, truth):
        """Per slice: its result and the predicted area of each organ before and after."""
        adversarial = apply_delta(images, delta)
        clean_pred, adv_pred = predict(model, images), predict(model, adversarial)
        rows = score_slices(
            [r.id for r in chunk],
            eps,
            images,
            adversarial,
            clean_pred,
            adv_pred,
            truth,
            labels=labels,
            empty=empty,
            score=score,
        )
        clean_area = clean_pred.flatten(2).float().mean(2).cpu().numpy()
        adv_area = adv_pred.flatten(2).float().mean(2).cpu().numpy()
        return list(zip(rows, clean_area, adv_area))

    done = None if progress is None else (lambda n: progress(n, len(records)))
    slices, interrupted = finished_batches(
        records, img_size, batch_size, device, distributed.Ranks(), apply_and_score, done
    )
    if interrupted and not slices:
        raise Interrupted(None, Partial(0, len(records)))
    rows = [row for row, _, _ in slices]
    clean_area, adv_area = np.array([area for _, area, _ in slices]), np.array([area for _, _, area in slices])
    present = clean_area > 0
    report = UniversalReport(
        organs=universal.organs,
        eps=eps,
        summary=summarise(rows, labels),
        labels=labels,
        slices=len(rows),
        area_clean={o: json_number(clean_area[:, i].mean()) for i, o in enumerate(labels.names)},
        area_adv={o: json_number(adv_area[:, i].mean()) for i, o in enumerate(labels.names)},
        vanished={
            o: json_number(np.mean(adv_area[present[:, i], i] == 0)) if present[:, i].any() else None
            for i, o in enumerate(labels.names)
        },
        present={o: int(present[:, i].sum()) for i, o in enumerate(labels.names)},
    )
    if interrupted:
        raise Interrupted(report, Partial(len(rows), len(records)))
    return report
