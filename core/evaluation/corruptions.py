"""Robustness that is not adversarial: the MRI artefacts a scanner makes, at five fixed severities each.

TorchIO (a maintained library for exactly these) makes them: noise, bias field, motion, ghosting, spike,
blur and gamma. Each severity fixes the transform's parameters (a range of one value where TorchIO draws
one, the drawing range where the parameter is random by nature: a bias field's coefficients, the motion's
timing), as ``SEVERITIES`` lists. A corruption is seeded per slice by ``seed`` and the slice id, so a slice
gets the same artefact in every batch and run. The slice is a 2-D image in [0, 1] of 1 mm pixels (the
model's input, after resizing); the result is clipped back to [0, 1], the range every model here takes.

The summary is ImageNet-C's idea for segmentation: the mean DSC over every corruption and severity (its
mCE is an error relative to a baseline model; here there is none, so the mean DSC itself, and its drop
from clean).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from core import distributed
from core.attacks.iterative import slice_seed
from core.errors import OptionError, check_choice
from core.metrics import check_empty_policy, dice_per_organ
from core.models.inference import predict
from core.progress import Progress
from core.results import json_number, nanmean

LEVELS = 5
# name -> (title, the transform's parameters at severities 1..5). Intensities are in [0, 1] image units,
# distances in pixels (1 mm), angles in degrees.
SEVERITIES: dict[str, tuple[str, tuple[dict, ...]]] = {
    "noise": ("Gaussian noise", tuple({"std": s} for s in (0.02, 0.04, 0.06, 0.08, 0.10))),
    "bias": ("Bias field", tuple({"coefficients": c} for c in (0.1, 0.2, 0.3, 0.4, 0.5))),
    "motion": ("Motion", tuple({"degrees": d, "translation": d} for d in (1.0, 2.0, 3.0, 4.0, 5.0))),
    "ghosting": ("Ghosting", tuple({"intensity": i} for i in (0.1, 0.2, 0.3, 0.4, 0.5))),
    "spike": ("Spike", tuple({"intensity": i} for i in (0.05, 0.1, 0.15, 0.2, 0.25))),
    "blur": ("Blur", tuple({"std": s} for s in (0.5, 1.0, 1.5, 2.0, 2.5))),
    "gamma": ("Gamma", tuple({"log_gamma": g} for g in (0.1, 0.2, 0.3, 0.4, 0.5))),
}
CORRUPTIONS = tuple(SEVERITIES)


def _transform(name: str, severity: int):
    import torchio as tio  # about two seconds: only the corruption commands pay for it

    parameters = SEVERITIES[name][1][severity - 1]
    if name == "noise":
        return tio.RandomNoise(mean=0.0, std=(parameters["std"],) * 2)
    if name == "bias":
        return tio.RandomBiasField(coefficients=parameters["coefficients"], order=3)
    if name == "motion":
        return tio.RandomMotion(
            degrees=(parameters["degrees"],) * 2, translation=(parameters["translation"],) * 2, num_transforms=2
        )
    if name == "ghosting":
        return tio.RandomGhosting(num_ghosts=(4, 4), intensity=(parameters["intensity"],) * 2, axes=(0, 1))
    if name == "spike":
        return tio.RandomSpike(num_spikes=(1, 1), intensity=(parameters["intensity"],) * 2)
    if name == "blur":
        return tio.RandomBlur(std=(parameters["std"],) * 2)
    return tio.RandomGamma(log_gamma=(parameters["log_gamma"],) * 2)


def check_corruption(name: str, severity: int) -> tuple[str, int]:
    check_choice(name, CORRUPTIONS, "corruption")
    if not 1 <= severity <= LEVELS:
        raise OptionError(f"severity must be 1 to {LEVELS}, got {severity}")
    return name, severity


def corrupt(images: torch.Tensor, name: str, severity: int, seeds: Sequence[int]) -> torch.Tensor:
    """``images`` (N, 1, H, W) in [0, 1] with corruption ``name`` at ``severity``, image i drawn from
    ``seeds[i]``; the same shape, device and dtype, clipped to [0, 1]. The input is not modified."""
    check_corruption(name, severity)
    import torchio as tio

    transform = _transform(name, severity)
    out = []
    for image, seed in zip(images.detach().cpu().float(), seeds):
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            # TorchIO works on (C, W, H, D) volumes: a slice is a volume one voxel deep.
            volume = transform(tio.ScalarImage(tensor=image.unsqueeze(-1))).data[..., 0]
        out.append(volume.clamp(0.0, 1.0))
    return torch.stack(out).to(images.device, images.dtype)


@dataclass
class CorruptionResult:
    labels: tuple[str, ...]
    img_size: int
    slices: int
    clean: np.ndarray  # (L,) mean DSC per label
    dsc: dict[tuple[str, int], np.ndarray]  # (corruption, severity) -> (L,) mean DSC per label
    seed: int = 0
    seconds: float = 0.0
    adversarial: dict[float, np.ndarray] = field(default_factory=dict)  # eps -> (L,), FGSM beside them

    @property
    def mean_clean(self) -> float:
        return float(nanmean(self.clean, axis=0))

    def mean(self, corruption: str, severity: int) -> float:
        return float(nanmean(self.dsc[(corruption, severity)], axis=0))

    @property
    def mean_over_all(self) -> float:
        """The mean DSC over every corruption and severity (each label mean first)."""
        return float(np.mean([self.mean(name, level) for name, level in self.dsc]))

    def to_dict(self) -> dict:
        def per_label(values):
            return {name: json_number(v) for name, v in zip(self.labels, values)}

        return {
            "labels": list(self.labels),
            "img_size": self.img_size,
            "slices": self.slices,
            "seed": self.seed,
            "seconds": self.seconds,
            "severities": {name: list(levels) for name, (_, levels) in SEVERITIES.items()},
            "clean": {"dsc": per_label(self.clean), "mean_dsc": json_number(self.mean_clean)},
            "mean_dsc_over_corruptions": json_number(self.mean_over_all),
            "corruptions": {
                name: [
                    {"severity": level, "dsc": per_label(self.dsc[(name, level)]), "mean_dsc": self.mean(name, level)}
                    for level in range(1, LEVELS + 1)
                    if (name, level) in self.dsc
                ]
                for name in dict.fromkeys(name for name, _ in self.dsc)
            },
            "fgsm": [
                {"eps": eps, "dsc": per_label(values), "mean_dsc": json_number(float(nanmean(values, axis=0)))}
                for eps, values in self.adversarial.items()
            ],
        }


def corruption_curves(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    corruptions: Sequence[str] = CORRUPTIONS,
    *,
    seed: int = 0,
    empty: str = "one",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
) -> CorruptionResult:
    """Mean DSC per label of ``model`` on ``records``, clean and under every corruption at severities 1..5.
    Ctrl-C keeps the finished batches (``core.evaluation.scoring.Interrupted``)."""
    from core.evaluation.scoring import Interrupted, Partial, finished_batches, rank_progress

    check_empty_policy(empty)
    for name in corruptions:
        check_corruption(name, 1)
    records = list(records)
    started = time.perf_counter()
    keys = [(name, level) for name in corruptions for level in range(1, LEVELS + 1)]

    def work(chunk, images, truth):
        seeds = [slice_seed(seed, record.id) for record in chunk]
        rows = [dice_per_organ(predict(model, images), truth, empty)]
        for name, level in keys:
            rows.append(dice_per_organ(predict(model, corrupt(images, name, level, seeds)), truth, empty))
        return list(np.stack(rows, axis=1))  # per slice: (1 + keys, L)

    ranks = distributed.current()
    items, interrupted = finished_batches(
        records,
        img_size,
        batch_size,
        device,
        ranks,
        work,
        rank_progress(progress, ranks, len(records)),
    )
    labels = model.labels.names
    scores = np.stack(items) if items else np.full((0, 1 + len(keys), len(labels)), np.nan)
    means = nanmean(scores, axis=0)
    result = CorruptionResult(
        labels,
        img_size,
        len(items),
        means[0],
        {key: means[i + 1] for i, key in enumerate(keys)},
        seed,
        time.perf_counter() - started,
    )
    if interrupted:
        raise Interrupted(result if items else None, Partial(len(items), len(records)))
    return result
