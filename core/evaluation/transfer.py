"""Transfer between models: adversarial inputs crafted on each source model, scored on every target model.

A source is one model (its row's diagonal cell is the white-box case) or, with three models or more, a
leave-one-out model ensemble: the mean of the logits of every model but one (``LogitEnsemble``), so that
the model left out is a target the attack never saw. The ensemble is an ``nn.Module``, so every registry
attack (``core.attacks.config.METHODS``) runs on it unchanged.

Each source's adversarial batch is crafted ONCE and scored on every target: S attacks and S x T forward
passes per batch, not S x T attacks. A model scored on its own adversarial inputs gets exactly what
``core.evaluation.scoring.evaluate`` gives it (same attack context, same clean and adversarial predictions).
Ctrl-C: ``core.evaluation.scoring.Interrupted`` with every cell over the batches finished for every source.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass, replace

import numpy as np
import torch
from torch import nn

from core import distributed
from core.attacks.config import AttackConfig
from core.attacks.control import StopCheck, check_stop
from core.attacks.runner import AttackContext, run_attack
from core.errors import OptionError
from core.evaluation.scoring import (
    Interrupted,
    Partial,
    Summary,
    finished_batches,
    score_slices,
    scored_predictions,
    shared_labels,
    summarise,
)
from core.labels import LabelSet
from core.metrics import slice_spacing
from core.models.inference import predict
from core.models.loaded import LoadedModel
from core.progress import Progress
from core.results import SliceResult


class LogitEnsemble(nn.Module):
    """The mean of its members' logits: one model to attack in place of several, of their one label set."""

    def __init__(self, members: Sequence[nn.Module]):
        super().__init__()
        if not members:
            raise ValueError("an ensemble needs at least one model")
        self.labels = shared_labels([LoadedModel(f"model {i + 1}", member) for i, member in enumerate(members)])
        self.members = nn.ModuleList(members)
        # In eval mode from the start: ``core.models.inference.eval_mode`` would otherwise switch a fresh module
        # (training=True) to eval for each attack and back to train, members included.
        self.train(False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return torch.stack([member(image).float() for member in self.members]).mean(dim=0)


@dataclass(frozen=True)
class TransferSource:
    """A row of the transfer matrix: the models (indices into the model list) whose logits the attack saw."""

    label: str
    members: tuple[int, ...]
    left_out: int | None = None  # a leave-one-out ensemble: the model it leaves out

    @property
    def is_ensemble(self) -> bool:
        return self.left_out is not None

    def to_dict(self) -> dict:
        return {"label": self.label, "members": list(self.members), "left_out": self.left_out}


def transfer_sources(labels: Sequence[str], *, ensembles: bool = True) -> list[TransferSource]:
    """One source per model, then (three models or more, ``ensembles``) one leave-one-out ensemble per
    model. With two models the ensemble without one is the other model, a row already there."""
    sources = [TransferSource(label, (index,)) for index, label in enumerate(labels)]
    if ensembles and len(labels) >= 3:
        everyone = range(len(labels))
        sources += [
            TransferSource(f"all but {label}", tuple(j for j in everyone if j != index), left_out=index)
            for index, label in enumerate(labels)
        ]
    return sources


@dataclass
class TransferCell:
    source: str
    target: str
    white_box: bool  # the target is among the models the attack saw
    summary: Summary

    def to_dict(self) -> dict:
        return {
            "source": self.source,
            "target": self.target,
            "white_box": self.white_box,
            "summary": self.summary.to_dict(),
        }


@dataclass
class TransferResult:
    config: AttackConfig
    targets: list[str]
    sources: list[TransferSource]
    img_size: int
    cells: list[TransferCell]
    rows: dict[tuple[str, str], list[SliceResult]]  # (source, target) -> per-slice results
    attacks: int  # attack runs (batches x sources): one per source and batch, whatever the targets
    seconds: float
    labels: LabelSet  # every model's: what the per-label keys name

    def cell(self, source: str, target: str) -> TransferCell:
        for cell in self.cells:
            if cell.source == source and cell.target == target:
                return cell
        raise KeyError(f"no transfer cell ({source!r}, {target!r})")

    def matrix(self, field: str = "mean_attack_success") -> np.ndarray:
        """(sources, targets) of one ``Summary`` field; NaN where undefined."""
        return np.array(
            [
                [
                    np.nan if (value := getattr(self.cell(s.label, t).summary, field)) is None else value
                    for t in self.targets
                ]
                for s in self.sources
            ],
            dtype=np.float64,
        )

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "img_size": self.img_size,
            "seconds": self.seconds,
            "attacks": self.attacks,
            "labels": self.labels.to_meta(),
            "targets": self.targets,
            "sources": [source.to_dict() for source in self.sources],
            "cells": [cell.to_dict() for cell in self.cells],
        }


def transfer(
    models: Sequence[LoadedModel],
    records: Sequence,
    img_size: int,
    config: AttackConfig,
    *,
    ensembles: bool = True,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> TransferResult:
    """``config``'s attack crafted on every source (``transfer_sources``) and scored on every model.

    ``models`` are already on ``device``, all taking ``img_size`` slices (their metadata is not read).
    ``progress(done, total)`` counts slices attacked over all sources."""
    if len(models) < 2:
        raise OptionError(f"transfer needs at least two models to compare, got {len(models)}")
    labels = [loaded.label for loaded in models]
    if len(set(labels)) != len(labels):
        raise OptionError(f"model labels must differ, got {', '.join(labels)}")
    label_set = shared_labels(models)
    records = list(records)
    started = time.perf_counter()
    device = torch.device(device)
    sources = transfer_sources(labels, ensembles=ensembles)
    attacked = [
        LogitEnsemble([models[i].model for i in source.members])
        if source.is_ensemble
        else models[source.members[0]].model
        for source in sources
    ]
    # Made per batch as core.evaluation.scoring.evaluate makes it (random starts seeded per slice id; the batch's
    # ids and truth), so each row's diagonal equals evaluate.
    context = AttackContext(should_stop=should_stop)
    total, done, attacks = len(records) * len(sources), 0, 0
    if progress is not None:
        progress(0, total)

    def attack(chunk, images, truth):
        """Per slice: its result in every (source, target) cell."""
        nonlocal done, attacks
        ids = [record.id for record in chunk]
        target = truth if config.target == "gt" else None
        clean = [predict(loaded.model, images, config.precision) for loaded in models]
        per_slice = [{} for _ in chunk]
        for source, model in zip(sources, attacked):
            check_stop(should_stop)
            output = run_attack(model, images, target, config, replace(context, ids=ids, reference=truth))
            attacks += 1
            for index, scorer in enumerate(models):
                # White box on one model: its own predictions from the attack, exactly as evaluate scores.
                white_box = source.members == (index,)
                clean_pred, adv_pred = scored_predictions(
                    scorer.model,
                    images,
                    output,
                    config.precision,
                    scored_on=None if white_box else scorer.model,
                    scored_clean=None if white_box else clean[index],
                )
                scored = score_slices(
                    ids,
                    config.eps,
                    images,
                    output.adversarial,
                    clean_pred,
                    adv_pred,
                    truth,
                    labels=label_set,
                    empty=config.empty,
                    score=config.score,
                    zero_grad_fraction=output.zero_grad_fraction,
                    hausdorff=config.hausdorff,
                    nsd_tolerance=config.nsd_tolerance,
                    spacing=slice_spacing(chunk, img_size),
                )
                for cells, row in zip(per_slice, scored):
                    cells[source.label, scorer.label] = row
            done += len(chunk)
            if progress is not None:
                progress(done, total)
        return per_slice

    # One process (transfer is not sharded under torchrun): every cell advances over the same slices.
    slices, interrupted = finished_batches(records, img_size, batch_size, device, distributed.Ranks(), attack)
    rows = {(s.label, t): [cells[s.label, t] for cells in slices] for s in sources for t in labels}
    cells = [
        TransferCell(source.label, label, index in source.members, summarise(rows[source.label, label], label_set))
        for source in sources
        for index, label in enumerate(labels)
    ]
    result = TransferResult(
        config=config,
        targets=labels,
        sources=sources,
        img_size=img_size,
        cells=cells,
        rows=rows,
        attacks=attacks,
        seconds=time.perf_counter() - started,
        labels=label_set,
    )
    if interrupted:
        raise Interrupted(
            result if slices else None,
            Partial(len(slices), len(records), "slices", "every cell over the same finished slices"),
        )
    return result
