"""Certified DSC by randomized smoothing for segmentation (Fischer, Baader & Vechev, ICML 2021, "Scalable
Certified Segmentation via Randomized Smoothing").

The smoothed segmenter labels each pixel with the class the base model gives it most often under Gaussian
noise N(0, sigma^2) on the whole slice, or abstains. A pixel is certified at radius R = sigma * Phi^-1(tau)
when a one-sided binomial test rejects "the top class has probability <= tau" (p-value
``P(Binom(n, tau) >= n_top)``); the tests of all pixels of a slice are corrected together (Holm-Bonferroni
controls the family-wise error at ``alpha``, Benjamini-Hochberg the false-discovery rate), so with
probability at least 1 - alpha every certified pixel keeps its class under any L2 perturbation of the slice
of norm below R. The top class is chosen on ``n0`` separate noise samples, so the test's count does not
depend on the choice (Cohen et al.'s selection step; it costs n0 forward passes more).

Kinds (``core.labels``): a softmax model's pixel is one test among L + 1 classes; a sigmoid model's labels
are independent binary problems, one test per (label, pixel).

The certified DSC of a label is a lower bound of the DSC of the smoothed segmenter on every input within
R: every abstained pixel is counted wrong (a false negative on the truth, a false positive elsewhere).
Noise is added to the [0, 1] slice without clipping, as the smoothing theorem needs; the model must have
been trained with such noise (``segadv train --noise-sigma``) or it abstains nearly everywhere.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch
from scipy.stats import binom, norm

from core import distributed
from core.attacks.iterative import slice_seed
from core.errors import OptionError, check_choice
from core.metrics import check_empty_policy, empty_score
from core.models.inference import eval_mode, predict
from core.progress import Progress
from core.results import json_number, nanmean

CORRECTIONS = ("holm", "bh")
ABSTAIN = -1


@dataclass(frozen=True)
class CertifyConfig:
    sigma: float = 0.25
    n: int = 100  # noise samples for the test
    n0: int = 16  # noise samples that choose each pixel's top class
    radius: float | None = None  # None: the radius of tau = 0.75, the paper's default
    alpha: float = 0.001
    correction: str = "holm"
    empty: str = "one"
    seed: int = 0
    batch_size: int = 32  # noisy copies per forward pass

    def __post_init__(self) -> None:
        check_choice(self.correction, CORRECTIONS, "multiple-testing correction")
        check_empty_policy(self.empty)
        if not (math.isfinite(self.sigma) and self.sigma > 0):
            raise OptionError(f"sigma must be a positive number, got {self.sigma}")
        if self.n < 1 or self.n0 < 1:
            raise OptionError(f"n and n0 must be at least 1, got n={self.n}, n0={self.n0}")
        if not 0 < self.alpha < 1:
            raise OptionError(f"alpha must be in (0, 1), got {self.alpha}")
        if self.batch_size < 1:
            raise OptionError(f"batch size must be at least 1, got {self.batch_size}")
        if self.radius is not None and not (math.isfinite(self.radius) and self.radius > 0):
            raise OptionError(f"radius must be a positive number, got {self.radius}")

    @property
    def tau(self) -> float:
        """The top-class probability a pixel must beat to be certified at ``radius``: Phi(R / sigma)."""
        return 0.75 if self.radius is None else float(norm.cdf(self.radius / self.sigma))

    @property
    def certified_radius(self) -> float:
        return float(self.sigma * norm.ppf(self.tau))

    @property
    def forward_passes(self) -> int:
        """Forward passes per slice."""
        return self.n + self.n0

    def to_dict(self) -> dict:
        return {
            "sigma": self.sigma,
            "n": self.n,
            "n0": self.n0,
            "radius": self.certified_radius,
            "tau": self.tau,
            "alpha": self.alpha,
            "correction": self.correction,
            "empty": self.empty,
            "seed": self.seed,
        }


def samples_needed(tau: float, alpha: float, tests: int) -> int:
    """The fewest samples with which one pixel can pass the corrected test at all: a top class seen in every
    sample has p-value tau^n, and Holm's (or Bonferroni's) smallest threshold is alpha / tests."""
    return math.ceil(math.log(alpha / max(tests, 1)) / math.log(tau))


def rejected(pvalues: np.ndarray, alpha: float, correction: str) -> np.ndarray:
    """Which null hypotheses the correction rejects, a bool array shaped like ``pvalues``.

    Holm-Bonferroni: sorted ascending, reject p_(k) while p_(k) <= alpha / (m - k + 1) (k from 1), and stop
    at the first that is not. Benjamini-Hochberg: reject the k smallest, k the largest with
    p_(k) <= k alpha / m."""
    check_choice(correction, CORRECTIONS, "multiple-testing correction")
    flat = pvalues.ravel()
    m = flat.size
    order = np.argsort(flat, kind="stable")
    ranked = flat[order]
    ranks = np.arange(1, m + 1)
    if correction == "holm":
        passing = ranked <= alpha / (m - ranks + 1)
        count = m if passing.all() else int(np.argmin(passing))
    else:
        below = np.nonzero(ranked <= ranks * alpha / m)[0]
        count = int(below[-1]) + 1 if below.size else 0
    result = np.zeros(m, dtype=bool)
    result[order[:count]] = True
    return result.reshape(pvalues.shape)


def _class_maps(masks: torch.Tensor, kind: str) -> torch.Tensor:
    """Predicted masks (B, L, H, W) -> class maps (B, T, H, W): sigmoid T = L binary maps; softmax T = 1
    map of 0 (background) or 1 + the label."""
    if kind == "sigmoid":
        return masks.long()
    return torch.where(masks.any(1), masks.long().argmax(1) + 1, 0).unsqueeze(1)


def vote_counts(
    model: torch.nn.Module, image: torch.Tensor, sigma: float, samples: int, generator: torch.Generator, batch_size: int
) -> torch.Tensor:
    """How often each class is predicted at each pixel over ``samples`` noisy copies of ``image`` (1, 1, H, W):
    int64 (T, C, H, W), C = 2 for a sigmoid model's labels, L + 1 classes for a softmax one."""
    kind = getattr(getattr(model, "labels", None), "kind", "sigmoid")
    counts = None
    done = 0
    while done < samples:
        size = min(batch_size, samples - done)
        noise = torch.randn((size, *image.shape[1:]), generator=generator, device="cpu").to(image.device)
        classes = _class_maps(predict(model, image + sigma * noise), kind)  # (B, T, H, W)
        if counts is None:
            labels = model.labels.channels if kind == "softmax" else 2
            counts = torch.zeros((classes.shape[1], labels, *classes.shape[2:]), dtype=torch.int64, device=image.device)
        counts.scatter_add_(1, classes.transpose(0, 1), torch.ones_like(classes.transpose(0, 1)))
        done += size
    assert counts is not None
    return counts


def certify_slice(model: torch.nn.Module, image: torch.Tensor, config: CertifyConfig, seed: int) -> np.ndarray:
    """The smoothed segmentation of one slice (1, 1, H, W): int (T, H, W) class per test, ``ABSTAIN`` (-1)
    where the corrected test does not certify the pixel at ``config.certified_radius``."""
    generator = torch.Generator().manual_seed(seed)
    with eval_mode(model):
        selection = vote_counts(model, image, config.sigma, config.n0, generator, config.batch_size)
        estimation = vote_counts(model, image, config.sigma, config.n, generator, config.batch_size)
    top = selection.argmax(1)  # (T, H, W); ties go to the lowest class (background / absent)
    top_count = estimation.gather(1, top.unsqueeze(1)).squeeze(1).cpu().numpy()
    pvalues = binom.sf(top_count - 1, config.n, config.tau)  # P(Binom(n, tau) >= count)
    certified = rejected(pvalues, config.alpha, config.correction)
    return np.where(certified, top.cpu().numpy(), ABSTAIN)


def label_masks(classes: np.ndarray, kind: str, labels: int) -> tuple[np.ndarray, np.ndarray]:
    """(certified masks, abstained masks), bool (L, H, W), from ``certify_slice``'s class maps."""
    if kind == "sigmoid":
        return classes == 1, classes == ABSTAIN
    positive = np.stack([classes[0] == label + 1 for label in range(labels)])
    return positive, np.broadcast_to(classes[0] == ABSTAIN, positive.shape)


def certified_dice(positive: np.ndarray, abstained: np.ndarray, truth: np.ndarray, empty: str = "one") -> np.ndarray:
    """The DSC lower bound per label (L,): abstained pixels are false negatives on the truth and false
    positives elsewhere. Truth and worst-case prediction both empty: the ``empty`` policy's score."""
    truth = truth.astype(bool)
    worst = positive | (abstained & ~truth)
    overlap = (positive & truth).reshape(len(truth), -1).sum(1)
    total = truth.reshape(len(truth), -1).sum(1) + worst.reshape(len(truth), -1).sum(1)
    with np.errstate(invalid="ignore", divide="ignore"):
        dsc = np.where(total > 0, 2 * overlap / np.maximum(total, 1), empty_score(empty))
    return dsc.astype(np.float64)


@dataclass
class CertifiedSlice:
    slice_id: str
    dsc_base: np.ndarray  # (L,) the base model on the clean slice
    dsc_certified: np.ndarray  # (L,) the lower bound at the radius
    abstain: np.ndarray  # (L,) fraction of pixels abstained
    present: np.ndarray | None = None  # (L,) bool: the label has pixels in the truth
    shown_base: np.ndarray | None = None  # (L,) bool: the base model predicts the label somewhere
    shown_certified: np.ndarray | None = None  # (L,) bool: a certified or abstained pixel may be the label

    def to_dict(self, names: Sequence[str]) -> dict:
        return {
            "slice_id": self.slice_id,
            "dsc_base": {name: json_number(v) for name, v in zip(names, self.dsc_base)},
            "dsc_certified": {name: json_number(v) for name, v in zip(names, self.dsc_certified)},
            "abstain": {name: json_number(v) for name, v in zip(names, self.abstain)},
        }


@dataclass
class CertifyResult:
    config: CertifyConfig
    labels: tuple[str, ...]
    img_size: int
    rows: list[CertifiedSlice]
    seconds: float = 0.0
    maps: list[np.ndarray] = field(default_factory=list, repr=False)  # per slice, certify_slice's class maps

    def mean(self, attribute: str) -> np.ndarray:
        return nanmean(np.stack([getattr(row, attribute) for row in self.rows]), axis=0)

    def present_absent(self) -> dict:
        """The certificate split as ``robust`` splits a DSC (``core.evaluation.label_split``): over the
        (slice, label) pairs whose label is present in the truth, the mean DSC of the base model and the
        certified bound; over those absent, the share the base model predicts and the share that may appear
        within the radius (a certified pixel of the label, or an abstained pixel, which the bound counts
        as one). A softmax pixel abstains for every label at once, so one abstained pixel takes the bound of
        every absent label to 0: the split shows how much of the bound's drop that is."""
        present = np.array([row.present for row in self.rows], dtype=bool).reshape(-1, len(self.labels))

        def mean(attribute: str, pairs: np.ndarray) -> float | None:
            if not pairs.any():
                return None
            values = np.stack([getattr(row, attribute) for row in self.rows])[pairs].astype(np.float64)
            return json_number(nanmean(values, axis=0))

        return {
            "present_pairs": int(present.sum()),
            "absent_pairs": int((~present).sum()),
            "dsc_base_present": mean("dsc_base", present),
            "dsc_certified_present": mean("dsc_certified", present),
            "shown_base_absent": mean("shown_base", ~present),
            "shown_certified_absent": mean("shown_certified", ~present),
        }

    def to_dict(self) -> dict:
        means = {
            key: {name: json_number(v) for name, v in zip(self.labels, self.mean(key))}
            for key in ("dsc_base", "dsc_certified", "abstain")
        }
        return {
            "config": self.config.to_dict(),
            "labels": list(self.labels),
            "img_size": self.img_size,
            "forward_passes_per_slice": self.config.forward_passes,
            "seconds": self.seconds,
            "mean": means,
            "present_absent": self.present_absent(),
            "slices": [row.to_dict(self.labels) for row in self.rows],
        }


def certify(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    config: CertifyConfig,
    *,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    keep_maps: bool = False,
) -> CertifyResult:
    """Certify every slice of ``records`` (one data-loader batch of 1: the noisy copies are the batch).
    Ctrl-C keeps the finished slices (``core.evaluation.scoring.Interrupted``)."""
    from core.evaluation.scoring import Interrupted, Partial, finished_batches, rank_progress
    from core.metrics import dice_per_organ

    labels = model.labels
    tests = (len(labels) if labels.kind == "sigmoid" else 1) * img_size * img_size
    needed = samples_needed(config.tau, config.alpha, tests)
    if config.n < needed:
        raise OptionError(
            f"with n={config.n} samples no pixel can be certified at radius {config.certified_radius:.3g} "
            f"(tau {config.tau:.4g}, alpha {config.alpha:g}, {tests} tests a slice): use --n {needed} or more, "
            f"or a smaller radius"
        )
    records = list(records)
    started = time.perf_counter()
    maps: list[np.ndarray] = []

    def work(chunk, images, truth):
        rows = []
        for record, image, masks in zip(chunk, images, truth):
            image = image.unsqueeze(0)
            classes = certify_slice(model, image, config, slice_seed(config.seed, record.id))
            positive, abstained = label_masks(classes, labels.kind, len(labels))
            truth_np = masks.cpu().numpy() > 0.5
            predicted = predict(model, image)
            base = dice_per_organ(predicted, masks.unsqueeze(0), empty=config.empty)[0]
            rows.append(
                CertifiedSlice(
                    record.id,
                    base,
                    certified_dice(positive, abstained, truth_np, config.empty),
                    abstained.reshape(len(labels), -1).mean(1).astype(np.float64),
                    present=truth_np.reshape(len(labels), -1).any(1),
                    shown_base=predicted[0].flatten(1).any(1).cpu().numpy(),
                    shown_certified=(positive | abstained).reshape(len(labels), -1).any(1),
                )
            )
            if keep_maps:
                maps.append(classes)
        return rows

    ranks = distributed.current()
    rows, interrupted = finished_batches(
        records,
        img_size,
        1,
        device,
        ranks,
        work,
        rank_progress(progress, ranks, len(records)),
    )
    result = CertifyResult(config, labels.names, img_size, rows, time.perf_counter() - started, maps)
    if interrupted:
        raise Interrupted(result if rows else None, Partial(len(rows), len(records)))
    return result
