"""The robustness report: robust DSC against eps per label, with the distributions that means hide.

For each checkpoint and eps, one attack (``AttackConfig``, by default the worst-case ensemble) over the
slices, and from its per-slice results (``core.results.SliceResult``):

- the summary of ``core.evaluation.scoring.summarise``: robust DSC per organ and mean, attack success;
- ROG (Daza et al., MICCAI 2021): the fraction of scored slices whose mean DSC falls below half of its
  clean mean DSC;
- robust DSC per organ-size tertile: per organ, the scored slices that have it, split by its pixel
  count in the reference into three near-equal groups (small objects fall first: Halmosi et al. 2024);
- for the ensemble, how many scored slices each member won;
- damage (DSC over the labels present in the truth) and hallucination (the share of absent labels that
  appear), ``core.evaluation.label_split``.

Each slice is loaded once per checkpoint and attacked at every eps; FGSM reuses its gradient over eps.
Ctrl-C: ``core.evaluation.scoring.Interrupted`` with the report of the checkpoints finished and, for the one it was
on, every eps over the slices finished at every eps.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import torch

from core import distributed
from core.attacks.config import ENSEMBLE, AttackConfig, check_eps
from core.attacks.control import StopCheck, check_stop
from core.attacks.gradient_cache import GradientCache
from core.attacks.runner import AttackContext
from core.errors import OptionError
from core.evaluation.label_split import LabelSplit, label_split
from core.evaluation.scoring import (
    Interrupted,
    Partial,
    Summary,
    attack_slice,
    finished_batches,
    shared_labels,
    summarise,
)
from core.labels import LabelSet
from core.metrics import slice_spacing
from core.models.loaded import LoadedModel
from core.progress import Progress
from core.results import SliceResult, json_number, nanmean

TERTILES = ("small", "medium", "large")


@dataclass
class TertileScore:
    """One organ's slices of one size tertile: their organ pixel range and mean DSC of that organ."""

    tertile: str
    slices: int
    pixels_min: int | None
    pixels_max: int | None
    dsc_clean: float | None
    dsc_adv: float | None

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class RobustPoint:
    """One checkpoint at one eps."""

    eps: float
    summary: Summary
    rog: float | None  # share of scored slices with mean DSC < half of their clean mean DSC
    tertiles: dict[str, list[TertileScore]]
    wins: dict[str, int] | None  # ensemble member -> scored slices it won
    rows: list[SliceResult] = field(repr=False, default_factory=list)
    split: LabelSplit | None = None  # damage to present labels, hallucination of absent ones

    def to_dict(self) -> dict:
        return {
            "eps": self.eps,
            "summary": self.summary.to_dict(),
            "present_absent": None if self.split is None else self.split.to_dict(),
            "rog": self.rog,
            "wins": self.wins,
            "tertiles": {organ: [t.to_dict() for t in scores] for organ, scores in self.tertiles.items()},
            "rows": [row.to_dict() for row in self.rows],
        }


@dataclass
class RobustCurve:
    """One checkpoint over every eps."""

    label: str
    title: str
    img_size: int
    points: list[RobustPoint]
    seconds: float

    def point(self, eps: float) -> RobustPoint:
        for point in self.points:
            if point.eps == eps:
                return point
        raise KeyError(f"no point at eps {eps} for {self.label}")

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "title": self.title,
            "img_size": self.img_size,
            "seconds": self.seconds,
            "points": [p.to_dict() for p in self.points],
        }


@dataclass
class RobustnessReport:
    config: AttackConfig  # its eps is ignored: every point has its own
    eps_values: list[float]
    curves: list[RobustCurve]
    budget: dict[str, int]  # passes through the model per slice and eps
    labels: LabelSet  # every checkpoint's: what the per-label keys name

    @property
    def members(self) -> list[str] | None:
        return [member.name for member in ENSEMBLE] if self.config.method == "ensemble" else None

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "eps_values": self.eps_values,
            "budget": self.budget,
            "members": self.members,
            "labels": self.labels.to_meta(),
            "curves": [c.to_dict() for c in self.curves],
        }


def rog_fraction(rows: Sequence[SliceResult]) -> float | None:
    """The share of scored slices (with a positive clean mean DSC) whose mean DSC after the attack is
    below half of the clean one; None without such slices."""
    pairs = [(r.mean_clean, r.mean_adv) for r in rows if r.scored and np.isfinite(r.mean_clean) and r.mean_clean > 0]
    if not pairs:
        return None
    return float(np.mean([not (adv >= clean / 2) for clean, adv in pairs]))  # NaN after the attack counts as fallen


def size_tertiles(rows: Sequence[SliceResult], labels: LabelSet | None = None) -> dict[str, list[TertileScore]]:
    """Per label of ``labels`` (default: the rows' own), the scored slices whose reference has it, by its pixel
    count, in three near-equal groups (ties broken by slice id), with each group's pixel range and mean DSC
    of that label (no rows and no labels: no entries)."""
    if labels is None and rows:
        labels = rows[0].labels
    result = {}
    for index, organ in enumerate(labels.names if labels is not None else ()):
        having = sorted(
            (
                (int(r.organ_pixels[index]), r)
                for r in rows
                if r.scored and r.organ_pixels is not None and r.organ_pixels[index] > 0
            ),
            key=lambda pair: (pair[0], pair[1].slice_id),
        )
        groups = np.array_split(np.arange(len(having)), len(TERTILES))
        scores = []
        for name, members in zip(TERTILES, groups):
            pixels = [having[i][0] for i in members]
            chosen = [having[i][1] for i in members]
            clean = np.array([r.dsc_clean[index] for r in chosen], dtype=np.float64)
            adv = np.array([r.dsc_adv[index] for r in chosen], dtype=np.float64)
            scores.append(
                TertileScore(
                    tertile=name,
                    slices=len(chosen),
                    pixels_min=min(pixels) if pixels else None,
                    pixels_max=max(pixels) if pixels else None,
                    dsc_clean=json_number(nanmean(clean, axis=0)) if len(chosen) else None,
                    dsc_adv=json_number(nanmean(adv, axis=0)) if len(chosen) else None,
                )
            )
        result[organ] = scores
    return result


def member_wins(rows: Sequence[SliceResult]) -> dict[str, int] | None:
    """Scored slices won per ensemble member (every member listed, in order); None for other attacks."""
    if not rows or rows[0].member is None:
        return None
    wins = {member.name: 0 for member in ENSEMBLE}
    for row in rows:
        if row.scored and row.member is not None:
            wins[row.member] += 1
    return wins


def robust_point(eps: float, rows: list[SliceResult], labels: LabelSet) -> RobustPoint:
    return RobustPoint(
        eps=eps,
        summary=summarise(rows, labels),
        rog=rog_fraction(rows),
        tertiles=size_tertiles(rows, labels),
        wins=member_wins(rows),
        rows=rows,
        split=label_split(rows),
    )


def robustness(
    models: Sequence[LoadedModel],
    records: Sequence,
    config: AttackConfig,
    eps_values: Sequence[float],
    *,
    img_size: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> RobustnessReport:
    """``config``'s attack at every eps for each model over ``records``.
    ``img_size`` None: each checkpoint's ``meta["img_size"]``. ``progress(done, total)`` counts slice
    attacks (slices x eps x models)."""
    from core.attacks.ensemble import passes_per_slice

    eps_values = sorted({check_eps(eps, config.norm) for eps in eps_values})
    if not eps_values:
        raise OptionError("at least one eps value is needed")
    labels = shared_labels(models)
    records = list(records)
    total = len(records) * len(eps_values) * len(models)
    done = 0
    if progress is not None:
        progress(0, total)
    curves: list[RobustCurve] = []
    for index, loaded in enumerate(models):
        label, model, meta = loaded.label, loaded.model, loaded.meta
        size = img_size if img_size is not None else meta.get("img_size")
        if size is None:
            raise OptionError(f"{label}: no img_size in the checkpoint's metadata; pass img_size")
        started = time.perf_counter()
        cache = GradientCache(max_entries=4)  # FGSM: one gradient per batch serves every eps
        ranks = distributed.current()

        def attack(chunk, images, truth):
            """Per slice: its result at every eps."""
            nonlocal done
            ids = [record.id for record in chunk]
            context = AttackContext(
                cache=cache,
                cache_key=(label, tuple(ids), config.loss, config.target, config.mode),
                should_stop=should_stop,
            )
            per_slice = [{} for _ in chunk]
            spacing = slice_spacing(chunk, int(size))
            for eps in eps_values:
                check_stop(should_stop)
                scored = attack_slice(
                    model, images, truth, config.with_eps(eps), ids=ids, context=context, spacing=spacing
                )
                for rows, row in zip(per_slice, scored):
                    rows[eps] = row
                done += len(chunk) * ranks.world_size  # under torchrun: this rank's share times the ranks
                if progress is not None:
                    progress(min(done, total), total)
            return per_slice

        slices, interrupted = finished_batches(records, int(size), batch_size, device, ranks, attack)
        if ranks.active:
            done = len(curves) * len(records) * len(eps_values) + len(slices) * len(eps_values)
            if progress is not None:
                progress(done, total)
        if slices:
            spec = getattr(model, "spec", None)
            curves.append(
                RobustCurve(
                    label=label,
                    title=meta.get("title") or (spec.title if spec is not None else label),
                    img_size=int(size),
                    points=[robust_point(eps, [rows[eps] for rows in slices], labels) for eps in eps_values],
                    seconds=time.perf_counter() - started,
                )
            )
        if interrupted:
            finished = len(curves) - bool(slices)
            earlier = f"; {finished} checkpoint(s) before it complete" if finished else ""
            detail = f"checkpoint {label}, {index + 1} of {len(models)}{earlier}" if len(models) > 1 else None
            report = RobustnessReport(
                config=config, eps_values=eps_values, curves=curves, budget=passes_per_slice(config), labels=labels
            )
            raise Interrupted(report if curves else None, Partial(len(slices), len(records), "slices", detail))
    return RobustnessReport(
        config=config, eps_values=eps_values, curves=curves, budget=passes_per_slice(config), labels=labels
    )
