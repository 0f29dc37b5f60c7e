"""Attacks scored: per-slice results (``core.results.SliceResult``), summaries, eps sweeps and Table II.

Every attack is described by one ``core.attacks.config.AttackConfig`` and run through the registry
(``core.attacks.runner.run_attack``). Results are plain dataclasses with ``to_dict()`` (JSON-ready: NaN becomes
None); progress goes through ``progress(done, total)`` in slices; ``should_stop()`` is checked between
batches (and between the steps of iterative attacks) and raises ``core.attacks.control.AttackCancelled``.

Under torchrun the batches are shared over the processes and the results gathered, identical to one
process's (``core.distributed``).

Ctrl-C keeps what was done: the loops stop, and ``Interrupted`` (a KeyboardInterrupt) carries the run's
own result built from the finished slices only (summaries over those) and a ``Partial`` saying how far it
got; the commands write that result as partial (``segadv_tui.cli._outcome``).

Scores are DSC against the ground truth, whatever the attack targets. A data-set figure is the mean
over the scored slices: by default those whose ground truth has at least one organ, as the paper did
(``score="all"`` scores every slice). Per organ, slices where the empty policy skips (NaN) are left
out. The data-set attack success is computed from the mean DSCs, ``(clean - adv) / clean``, the way a
reader of Table II would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from core import distributed
from core.attacks.batch import check_batch_shape, model_labels, perturbation_norms
from core.attacks.config import AttackConfig, check_eps
from core.attacks.control import StopCheck, check_stop
from core.attacks.fast_gradient import adversarial_predictions
from core.attacks.gradient_cache import GradientCache, cached_gradient
from core.attacks.gradients import GradientEntry, input_gradients
from core.attacks.runner import AttackContext, AttackOutput, run_attack
from core.errors import OptionError
from core.labels import LabelSet, LabelSetError
from core.losses import check_loss
from core.metrics import dice_per_organ, hd95_per_organ, nsd_per_organ, slice_spacing
from core.models.loaded import LoadedModel
from core.models.registry import count_parameters
from core.progress import Progress
from core.results import SlicePictures, SliceResult, attack_success, json_number, label_dict, mean_dsc, nanmean


@dataclass(frozen=True)
class Partial:
    """How far a run stopped by Ctrl-C got: ``done`` of ``total`` ``unit`` are complete, and its result holds
    those only; ``detail`` says more where units nest (checkpoints, table cells)."""

    done: int
    total: int
    unit: str = "slices"
    detail: str | None = None

    def to_dict(self) -> dict:
        return {
            "status": "partial",
            "interrupted_after": self.done,
            "of": self.total,
            "unit": self.unit,
            **({"detail": self.detail} if self.detail else {}),
        }


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during a run, with what was complete: ``result`` is the run's own result made of the finished
    units only (None when none finished), ``partial`` says how far it got. A KeyboardInterrupt, so a caller
    that does not look for it still stops as on Ctrl-C."""

    def __init__(self, result, partial: Partial):
        super().__init__(f"interrupted after {partial.done} of {partial.total} {partial.unit}")
        self.result, self.partial = result, partial


# ---------------------------------------------------------------------------------------------------
# one batch: attack and score


def score_slices(
    ids: Sequence[str],
    eps: float,
    image: torch.Tensor,
    adversarial: torch.Tensor,
    clean_pred: torch.Tensor,
    adv_pred: torch.Tensor,
    reference: torch.Tensor,
    *,
    labels: LabelSet,
    empty: str = "one",
    score: str = "nonempty",
    has_truth: bool = True,
    zero_grad_fraction: np.ndarray | None = None,
    hausdorff: bool = False,
    nsd_tolerance: float | None = None,
    spacing: np.ndarray | None = None,
    pictures: bool = False,
    members: Sequence[str] | None = None,
) -> list[SliceResult]:
    """The ``SliceResult`` of each slice of a batch: DSC of the clean and adversarial predictions against
    ``reference`` (the ground truth, or the clean prediction where there is none), realised norms, and
    with ``pictures`` the numpy pictures; the masks hold one channel per label of ``labels``. The one place
    a per-slice score is made. ``hausdorff`` adds HD95, ``nsd_tolerance`` NSD at that many mm, in mm by
    ``spacing`` ((N, 2) rows, columns mm per pixel: ``core.metrics.slice_spacing``; None: pixels)."""
    # Scored where the masks are (the GPU in a CUDA run); only numbers and, when asked, pictures come back.
    reference = reference.to(adv_pred.device).bool()
    clean_pred, adv_pred = clean_pred.to(adv_pred.device).bool(), adv_pred.bool()
    dsc_clean, dsc_adv = dice_per_organ(clean_pred, reference, empty), dice_per_organ(adv_pred, reference, empty)
    linf, l2 = perturbation_norms(image, adversarial)
    has_organs = reference.flatten(1).any(1).cpu().numpy()
    organ_pixels = reference.flatten(2).sum(2).cpu().numpy()
    predicted_clean, predicted_adv = (p.flatten(2).any(2).cpu().numpy() for p in (clean_pred, adv_pred))
    hd_clean = hd_adv = None
    if hausdorff:
        hd_clean = hd95_per_organ(clean_pred.cpu(), reference.cpu(), spacing, empty)
        hd_adv = hd95_per_organ(adv_pred.cpu(), reference.cpu(), spacing, empty)
    nsd_clean = nsd_adv = None
    if nsd_tolerance is not None:
        nsd_clean = nsd_per_organ(clean_pred.cpu(), reference.cpu(), nsd_tolerance, spacing, empty)
        nsd_adv = nsd_per_organ(adv_pred.cpu(), reference.cpu(), nsd_tolerance, spacing, empty)
    slice_pictures: list[SlicePictures | None] = [None] * len(ids)
    if pictures:
        # The paper's mode perturbs a 3-channel copy of the slice: its picture is the channel mean.
        images, adversarial_images = image[:, 0].float().cpu().numpy(), adversarial.float().mean(1).cpu().numpy()
        clean_pred, adv_pred, reference = clean_pred.cpu(), adv_pred.cpu(), reference.cpu()
        slice_pictures = [
            SlicePictures(
                image=images[i],
                adversarial=adversarial_images[i],
                clean_prediction=clean_pred[i].numpy(),
                adversarial_prediction=adv_pred[i].numpy(),
                reference=reference[i].numpy(),
                has_truth=has_truth,
            )
            for i in range(len(ids))
        ]
    results = []
    for i, slice_id in enumerate(ids):
        results.append(
            SliceResult(
                slice_id=slice_id,
                eps=float(eps),
                dsc_clean=dsc_clean[i],
                dsc_adv=dsc_adv[i],
                linf=float(linf[i]),
                l2=float(l2[i]),
                has_organs=bool(has_organs[i]),
                scored=bool(has_organs[i]) or score == "all",
                zero_grad_fraction=None if zero_grad_fraction is None else float(zero_grad_fraction[i]),
                organ_pixels=organ_pixels[i],
                predicted_clean=predicted_clean[i],
                predicted_adv=predicted_adv[i],
                member=None if members is None else members[i],
                labels=labels,
                hd95_clean=None if hd_clean is None else hd_clean[i],
                hd95_adv=None if hd_adv is None else hd_adv[i],
                nsd_clean=None if nsd_clean is None else nsd_clean[i],
                nsd_adv=None if nsd_adv is None else nsd_adv[i],
                pictures=slice_pictures[i],
            )
        )
    return results


def _ids(ids: Sequence[str] | None, n: int) -> list[str]:
    ids = [str(i) for i in range(n)] if ids is None else list(ids)
    if len(ids) != n:
        raise ValueError(f"{len(ids)} slice ids for a batch of {n}")
    return ids


def attack_slice(
    model: torch.nn.Module,
    image: torch.Tensor,
    truth: torch.Tensor | None,
    config: AttackConfig,
    *,
    ids: Sequence[str] | None = None,
    context: AttackContext | None = None,
    pictures: bool = False,
    scored_on: torch.nn.Module | None = None,
    scored_clean: torch.Tensor | None = None,
    spacing: np.ndarray | None = None,
) -> list[SliceResult]:
    """``config``'s attack on ``image`` (N, 1, H, W), scored against ``truth`` (N, L, H, W) 0/1, one channel
    per label of the model's labels; ``spacing`` (N, 2) mm per pixel for the boundary metrics
    (``core.metrics.slice_spacing``; None: pixels).

    ``truth`` None (a lone picture) attacks and scores against the model's clean prediction. FGSM takes
    its clean prediction from the gradient's forward pass; with ``context.cache`` a cached FGSM is ONE
    forward pass. The iterative methods reuse ``context.clean_pred`` when given.

    ``scored_on``: the attack is crafted on ``model`` and scored on this other model (a transfer, as one
    cell of ``core.evaluation.transfer``'s matrix): its clean prediction (``scored_clean`` when known) and its
    prediction of the adversarial slice; a cached FGSM is then one forward pass of ``scored_on``."""
    target = truth if config.target == "gt" else None
    ids = _ids(ids, image.shape[0])
    # The slice ids seed random starts; the truth is what the best iterate is judged against.
    context = replace(context or AttackContext(), ids=ids, reference=truth, predict_result=scored_on is None)
    output = run_attack(model, image, target, config, context)
    clean_pred, adv_pred = scored_predictions(model, image, output, config.precision, scored_on, scored_clean)
    reference = clean_pred if truth is None else truth
    return score_slices(
        ids,
        config.eps,
        image,
        output.adversarial,
        clean_pred,
        adv_pred,
        reference,
        labels=model_labels(model),
        empty=config.empty,
        score=config.score,
        has_truth=truth is not None,
        zero_grad_fraction=output.zero_grad_fraction,
        hausdorff=config.hausdorff,
        nsd_tolerance=config.nsd_tolerance,
        spacing=spacing,
        pictures=pictures,
        members=output.members,
    )


def scored_predictions(
    model: torch.nn.Module,
    image: torch.Tensor,
    output: AttackOutput,
    precision: str = "fp32",
    scored_on: torch.nn.Module | None = None,
    scored_clean: torch.Tensor | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """(clean, adversarial) predictions an attack's ``output`` is scored with: the attacked ``model``'s own
    (those the attack computed on the way, else one forward pass), or for a transfer ``scored_on``'s (its
    clean prediction ``scored_clean`` when known)."""
    from core.models.inference import predict

    if scored_on is None:
        adv_pred = output.adv_pred if output.adv_pred is not None else predict(model, output.adversarial, precision)
        return output.clean_pred, adv_pred
    clean_pred = scored_clean.to(image.device) if scored_clean is not None else predict(scored_on, image, precision)
    return clean_pred, predict(scored_on, output.adversarial, precision)


def sweep(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor | None,
    eps_values: Sequence[float],
    config: AttackConfig | None = None,
    *,
    truth: torch.Tensor | None = None,
    ids: Sequence[str] | None = None,
    cache: GradientCache | None = None,
    cache_key: Hashable | None = None,
    gradient: GradientEntry | None = None,
    chunk_size: int | None = None,
    pictures: bool = False,
    scored_on: torch.nn.Module | None = None,
    spacing: np.ndarray | None = None,
) -> list[list[SliceResult]]:
    """FGSM (``config``'s loss, mode, precision, empty policy; its eps is ignored) at every eps of
    ``eps_values``: per eps, one ``SliceResult`` per slice. One backward pass per image (or none, from
    ``cache`` / ``gradient``) and batched forward passes. DSC is scored against ``truth`` (default:
    ``target``; ``target=None`` attacks the model's own clean prediction and, without ``truth``, scores
    against it). With a cache, ``cache_key`` must identify the gradient: (checkpoint, slice id(s), loss,
    target kind, mode); stepping eps in a front end is then one forward pass. ``scored_on``: the
    adversarial slices made from ``model``'s gradient are scored on this other model (a transfer), against
    its own clean prediction. ``spacing``: as for ``attack_slice``."""
    config = config or AttackConfig()
    if config.norm != "linf":
        raise OptionError("a sweep shares one FGSM gradient sign over eps: L-inf only; attack at each L2 eps instead")
    check_batch_shape(image, target, model_labels(model))
    eps_values = [check_eps(eps) for eps in eps_values]
    if truth is None:
        truth = target
    check_batch_shape(image, truth, model_labels(model))
    if gradient is None:
        gradient = cached_gradient(
            model, image, target, config.loss, config.mode, cache=cache, cache_key=cache_key, precision=config.precision
        )
    if not isinstance(gradient, GradientEntry):
        raise TypeError(f"expected a GradientEntry, got {type(gradient).__name__} (cache key {cache_key!r})")
    clean_pred = gradient.clean_pred
    if scored_on is not None:
        from core.models.inference import predict

        clean_pred = predict(scored_on, image, config.precision)
    reference = clean_pred if truth is None else truth
    ids = _ids(ids, image.shape[0])
    # The predictions are the scoring model's: the gradient is all the attacked model gives.
    outputs = adversarial_predictions(
        scored_on if scored_on is not None else model,
        image,
        gradient.sign,
        eps_values,
        config.mode,
        chunk_size=chunk_size,
        precision=config.precision,
    )
    return [
        score_slices(
            ids,
            eps,
            image,
            adversarial,
            clean_pred,
            adv_pred,
            reference,
            labels=model_labels(model),
            empty=config.empty,
            score=config.score,
            has_truth=truth is not None,
            zero_grad_fraction=gradient.zero_fraction,
            hausdorff=config.hausdorff,
            nsd_tolerance=config.nsd_tolerance,
            spacing=spacing,
            pictures=pictures,
        )
        for eps, (adversarial, adv_pred) in zip(eps_values, outputs)
    ]


# ---------------------------------------------------------------------------------------------------
# over a data set


@dataclass
class Summary:
    """Means over the scored slices (see the module doc); per-label values keyed by label name, in label order."""

    slices: int
    scored: int
    dsc_clean: dict[str, float | None]
    dsc_adv: dict[str, float | None]
    mean_clean: float | None
    mean_adv: float | None
    attack_success: dict[str, float | None]
    mean_attack_success: float | None
    linf_max: float | None
    linf_mean: float | None
    l2_mean: float | None
    hd95_clean: dict[str, float | None] | None = None  # mean over scored slices where defined
    hd95_adv: dict[str, float | None] | None = None
    # Likewise, and the mean over slices of each slice's mean over labels (as mean_clean is for DSC); absent
    # from the JSON when not measured.
    nsd_clean: dict[str, float | None] | None = None
    nsd_adv: dict[str, float | None] | None = None
    mean_hd95_clean: float | None = None
    mean_hd95_adv: float | None = None
    mean_nsd_clean: float | None = None
    mean_nsd_adv: float | None = None

    def to_dict(self) -> dict:
        return {k: v for k, v in self.__dict__.items() if v is not None or k not in _OPTIONAL_SUMMARY}


# The Summary fields a DSC-only run's JSON never had.
_OPTIONAL_SUMMARY = ("nsd_clean", "nsd_adv", "mean_hd95_clean", "mean_hd95_adv", "mean_nsd_clean", "mean_nsd_adv")


def summarise(results: Sequence[SliceResult], labels: LabelSet | None = None) -> Summary:
    """The mean scores of the scored ``results``, per label of ``labels`` (default: the results' own; no
    results and no labels: no per-label entries)."""
    if labels is None and results:
        labels = results[0].labels
    names = labels.names if labels is not None else ()
    scored = [r for r in results if r.scored]
    width = len(names)
    stack = lambda values: np.array(values, dtype=np.float64).reshape(-1, width)  # noqa: E731
    clean, adv = stack([r.dsc_clean for r in scored]), stack([r.dsc_adv for r in scored])
    linf, l2 = np.array([r.linf for r in scored]), np.array([r.l2 for r in scored])
    if scored:
        organ_clean, organ_adv = nanmean(clean, axis=0), nanmean(adv, axis=0)
        mean_clean, mean_adv = float(nanmean(mean_dsc(clean), axis=0)), float(nanmean(mean_dsc(adv), axis=0))
    else:
        organ_clean = organ_adv = np.full(width, np.nan)
        mean_clean = mean_adv = np.nan

    def boundary(name: str) -> tuple[dict[str, float | None] | None, float | None]:
        """The boundary score ``name`` per label and as the mean of the slices' means; None, None: not measured."""
        if not scored or getattr(scored[0], name) is None:
            return None, None
        values = stack([getattr(r, name) for r in scored])
        return label_dict(nanmean(values, axis=0), names), json_number(nanmean(nanmean(values, axis=1), axis=0))

    hd95_clean, mean_hd95_clean = boundary("hd95_clean")
    hd95_adv, mean_hd95_adv = boundary("hd95_adv")
    nsd_clean, mean_nsd_clean = boundary("nsd_clean")
    nsd_adv, mean_nsd_adv = boundary("nsd_adv")
    return Summary(
        slices=len(results),
        scored=len(scored),
        dsc_clean=label_dict(organ_clean, names),
        dsc_adv=label_dict(organ_adv, names),
        mean_clean=json_number(mean_clean),
        mean_adv=json_number(mean_adv),
        attack_success=label_dict(attack_success(organ_clean, organ_adv), names),
        mean_attack_success=json_number(attack_success(mean_clean, mean_adv)),
        linf_max=json_number(linf.max()) if len(linf) else None,
        linf_mean=json_number(linf.mean()) if len(linf) else None,
        l2_mean=json_number(l2.mean()) if len(l2) else None,
        hd95_clean=hd95_clean,
        hd95_adv=hd95_adv,
        nsd_clean=nsd_clean,
        nsd_adv=nsd_adv,
        mean_hd95_clean=mean_hd95_clean,
        mean_hd95_adv=mean_hd95_adv,
        mean_nsd_clean=mean_nsd_clean,
        mean_nsd_adv=mean_nsd_adv,
    )


@dataclass
class EvaluationResult:
    config: AttackConfig
    img_size: int
    rows: list[SliceResult]
    summary: Summary
    seconds: float
    labels: LabelSet  # the model's, which is the data's: what the per-label keys name

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "img_size": self.img_size,
            "seconds": self.seconds,
            "labels": self.labels.to_meta(),
            "summary": self.summary.to_dict(),
            "rows": [row.to_dict() for row in self.rows],
        }


def batches(records, img_size: int, batch_size: int, device, *, workers: int | None = None):
    """(records, images (B, 1, S, S), masks (B, L, S, S) float 0/1, a channel per label) on ``device``. On CUDA a
    DataLoader
    reads ahead in worker processes into pinned memory, so the GPU does not wait for PNG decoding."""
    from torch.utils.data import DataLoader

    from core.data.slice_dataset import SliceDataset

    if batch_size < 1:
        raise OptionError(f"batch size must be at least 1, got {batch_size}")
    device = torch.device(device)
    cuda = device.type == "cuda"
    if workers is None:
        workers = min(4, len(records) // batch_size) if cuda else 0
    loader = DataLoader(
        SliceDataset(records, img_size), batch_size=batch_size, shuffle=False, num_workers=workers, pin_memory=cuda
    )
    for start, (images, masks) in zip(range(0, len(records), batch_size), loader):
        yield (
            records[start : start + batch_size],
            images.to(device, non_blocking=cuda),
            masks.to(device, non_blocking=cuda),
        )


def finished_batches(
    records: Sequence,
    img_size: int,
    batch_size: int,
    device,
    ranks: distributed.Ranks,
    work: Callable[[list, torch.Tensor, torch.Tensor], list],
    on_batch: Callable[[int], None] | None = None,
) -> tuple[list, bool]:
    """``work(records, images, masks)`` (one item per slice) over this rank's share of ``records``
    (``core.distributed.shard``), gathered on every rank in record order, and whether Ctrl-C stopped it.
    The one loop of the evaluations: Ctrl-C inside a batch loses that batch only (its items are added at
    once), the finished ones are kept and gathered as usual. ``on_batch(n)``: this rank has n items."""
    mine, positions = distributed.shard(records, batch_size, ranks)
    items: list = []
    interrupted = False
    try:
        for chunk, images, masks in batches(mine, img_size, batch_size, device):
            items += work(chunk, images, masks)
            if on_batch is not None:
                on_batch(len(items))
    except KeyboardInterrupt:
        interrupted = True
    return distributed.gather_finished(items, positions[: len(items)], interrupted, ranks)


def _report(progress: Progress | None, done: int, total: int) -> None:
    """``progress(done, total)``; under torchrun ``done`` is this rank's share times the ranks (an estimate
    until the results are gathered)."""
    if progress is not None:
        progress(min(done, total), total)


def rank_progress(progress: Progress | None, ranks: distributed.Ranks, total: int) -> Callable[[int], None]:
    """``finished_batches``' ``on_batch`` for ``progress``: this rank's count of items, reported as a share of
    ``total`` (times the ranks under torchrun)."""
    return lambda done: _report(progress, done * ranks.world_size, total)


def evaluate(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    config: AttackConfig,
    *,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    scored_on: torch.nn.Module | None = None,
) -> EvaluationResult:
    """Run ``config``'s attack over ``records`` (a data set's slice records, whose labels are the model's) at
    ``img_size``.

    The model must already be on ``device`` (batches are moved there). Random starts are seeded per
    slice by ``config.seed`` and the slice id, so a slice's result does not depend on its batch.
    ``scored_on``: crafted on ``model``, scored on this other model (see ``attack_slice``)."""
    records = list(records)
    started = time.perf_counter()
    context = AttackContext(should_stop=should_stop)
    ranks = distributed.current()
    _report(progress, 0, len(records))

    def attack(chunk, images, truth):
        return attack_slice(
            model,
            images,
            truth,
            config,
            ids=[r.id for r in chunk],
            context=context,
            scored_on=scored_on,
            spacing=slice_spacing(chunk, img_size),
        )

    results, interrupted = finished_batches(
        records,
        img_size,
        batch_size,
        device,
        ranks,
        attack,
        rank_progress(progress, ranks, len(records)),
    )
    if ranks.active:
        _report(progress, len(results), len(records))
    result = EvaluationResult(
        config=config,
        img_size=img_size,
        rows=results,
        summary=summarise(results, model_labels(model)),
        seconds=time.perf_counter() - started,
        labels=model_labels(model),
    )
    if interrupted:
        raise Interrupted(result if results else None, Partial(len(results), len(records)))
    return result


@dataclass
class SweepEntry:
    """One (loss, eps) point of a data-set sweep."""

    loss: str
    eps: float
    summary: Summary

    def to_dict(self) -> dict:
        return {"loss": self.loss, "eps": self.eps, "summary": self.summary.to_dict()}


@dataclass
class SweepResult:
    config: AttackConfig  # FGSM's mode, target, precision and scoring; eps and loss vary
    losses: list[str]
    eps_values: list[float]
    img_size: int
    entries: list[SweepEntry]
    labels: LabelSet  # the model's: what the per-label keys name
    zero_grad_fraction: dict[str, float | None] = field(default_factory=dict)  # per loss, mean over slices
    seconds: float = 0.0

    def entry(self, loss: str, eps: float) -> SweepEntry:
        for item in self.entries:
            if item.loss == loss and item.eps == eps:
                return item
        raise KeyError(f"no sweep point for loss {loss!r} at eps {eps}")

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "losses": self.losses,
            "eps_values": self.eps_values,
            "img_size": self.img_size,
            "seconds": self.seconds,
            "labels": self.labels.to_meta(),
            "zero_grad_fraction": self.zero_grad_fraction,
            "entries": [e.to_dict() for e in self.entries],
        }


def _check_losses(losses: Sequence[str]) -> list[str]:
    losses = [check_loss(name) for name in losses]
    if not losses:
        raise OptionError("at least one loss is needed")
    return losses


def evaluate_sweep(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    eps_values: Sequence[float],
    losses: Sequence[str] = ("bce",),
    config: AttackConfig | None = None,
    *,
    batch_size: int = 16,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> SweepResult:
    """FGSM over ``records`` for every loss and eps (``config`` gives the mode, target, precision and
    scoring): per batch ONE forward pass, one backward per loss, then batched forward passes of the
    adversarial images (``chunk_size`` images at a time, default ``core.attacks.fast_gradient.default_chunk_size``)."""
    config = config or AttackConfig()
    if config.method != "fgsm":
        raise OptionError(f"a sweep shares one FGSM gradient over eps; it does not apply to {config.method}")
    if config.norm != "linf":
        raise OptionError("a sweep shares one FGSM gradient sign over eps: L-inf only; attack at each L2 eps instead")
    losses = _check_losses(losses)
    eps_values = [check_eps(eps) for eps in eps_values]
    if not eps_values:
        raise OptionError("at least one eps value is needed")
    records = list(records)
    started = time.perf_counter()
    ranks = distributed.current()
    _report(progress, 0, len(records))

    def attack(chunk, images, truth):
        """Per slice: its result at every (loss, eps) and its zero-gradient share per loss."""
        check_stop(should_stop)
        entries = input_gradients(
            model, images, truth if config.target == "gt" else None, losses, config.mode, precision=config.precision
        )
        ids = [record.id for record in chunk]
        per_slice = [({}, {}) for _ in chunk]
        for loss, entry in entries.items():
            per_eps = sweep(
                model,
                images,
                None,
                eps_values,
                config.replace(loss=loss),
                truth=truth,
                ids=ids,
                gradient=entry,
                chunk_size=chunk_size,
                spacing=slice_spacing(chunk, img_size),
            )
            for eps, scored in zip(eps_values, per_eps):
                for (rows, _), row in zip(per_slice, scored):
                    rows[loss, eps] = row
            for (_, zero), fraction in zip(per_slice, entry.zero_fraction):
                zero[loss] = fraction
            check_stop(should_stop)
        return per_slice

    slices, interrupted = finished_batches(
        records,
        img_size,
        batch_size,
        device,
        ranks,
        attack,
        rank_progress(progress, ranks, len(records)),
    )
    if ranks.active:
        _report(progress, len(slices), len(records))
    result = SweepResult(
        config=config,
        losses=losses,
        eps_values=eps_values,
        img_size=img_size,
        labels=model_labels(model),
        entries=[
            SweepEntry(loss, eps, summarise([rows[loss, eps] for rows, _ in slices], model_labels(model)))
            for loss in losses
            for eps in eps_values
        ],
        zero_grad_fraction={
            loss: json_number(np.mean([zero[loss] for _, zero in slices])) if slices else None for loss in losses
        },
        seconds=time.perf_counter() - started,
    )
    if interrupted:
        raise Interrupted(result if slices else None, Partial(len(slices), len(records)))
    return result


# ---------------------------------------------------------------------------------------------------
# the paper's Table II


@dataclass
class TableIIRow:
    label: str
    title: str
    params: int
    dsc_clean: float | None
    dsc_adv: dict[str, float | None]  # per loss, mean DSC after the attack (the paper: FGSM)
    best_loss: str | None  # the most successful attack: lowest adversarial DSC
    summaries: dict[str, Summary] = field(default_factory=dict)

    @property
    def attack_success(self) -> dict[str, float | None]:
        """Per loss, the attack success of the mean DSCs (None where undefined)."""
        return {
            loss: json_number(
                attack_success(np.nan if self.dsc_clean is None else self.dsc_clean, np.nan if adv is None else adv)
            )
            for loss, adv in self.dsc_adv.items()
        }

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "title": self.title,
            "params": self.params,
            "dsc_clean": self.dsc_clean,
            "dsc_adv": self.dsc_adv,
            "attack_success": self.attack_success,
            "best_loss": self.best_loss,
            "summaries": {loss: summary.to_dict() for loss, summary in self.summaries.items()},
        }


@dataclass
class TableII:
    config: AttackConfig  # the attack of every column; its loss is each column's
    losses: list[str]
    rows: list[TableIIRow]
    labels: LabelSet | None = None  # every model's: what the summaries' per-label keys name (None: the config's)

    @property
    def eps(self) -> float:
        return self.config.eps

    @property
    def method(self) -> str:
        return self.config.method

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "eps": self.eps,
            "losses": self.losses,
            "labels": (self.labels or self.config.labels).to_meta(),
            "rows": [row.to_dict() for row in self.rows],
        }


def table_ii(
    models: Sequence[LoadedModel],
    records: Sequence,
    losses: Sequence[str] = ("bce", "focal+dice", "focal"),
    config: AttackConfig | None = None,
    *,
    img_size: int | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> TableII:
    """The paper's Table II: for each model, its parameters, clean mean DSC and
    mean DSC after ``config``'s attack (default: the paper's FGSM at eps 0.009) with each loss.
    ``img_size`` None uses each checkpoint's ``meta["img_size"]``. ``progress`` counts slices over all
    models (and losses, for the methods that cannot share a gradient).

    FGSM shares one gradient per slice and loss (``evaluate_sweep``); the other methods run ``evaluate``
    once per loss, and a method with its own objective (the ensemble, erase, universal: no loss to
    choose) once, in a single column under the first loss's key."""
    config = config or AttackConfig()
    losses = _check_losses(losses)
    labels = shared_labels(models)
    if "loss" not in config.entry.parameters:
        losses = losses[:1]  # the same attack for every loss: one run, one column
    records = list(records)
    runs = 1 if config.method == "fgsm" else len(losses)
    total = len(records) * len(models) * runs
    rows = []
    for index, loaded in enumerate(models):
        label, model, meta = loaded.label, loaded.model, loaded.meta
        size = img_size if img_size is not None else meta.get("img_size")
        if size is None:
            raise OptionError(f"{label}: no img_size in the checkpoint's metadata; pass img_size")

        def run_progress(run: int):
            offset = (index * runs + run) * len(records)
            return None if progress is None else (lambda done, _total: progress(offset + done, total))

        summaries: dict[str, Summary] = {}
        stopped: Interrupted | None = None  # Ctrl-C: this row keeps its finished cells and the one it was on
        if config.method == "fgsm":
            sweep: SweepResult | None
            try:
                sweep = evaluate_sweep(
                    model,
                    records,
                    int(size),
                    [config.eps],
                    losses,
                    config,
                    progress=run_progress(0),
                    batch_size=batch_size,
                    device=device,
                    should_stop=should_stop,
                )
            except Interrupted as exc:
                sweep, stopped = exc.result, exc
            if sweep is not None:
                summaries = {loss: sweep.entry(loss, sweep.eps_values[0]).summary for loss in sweep.losses}
        else:
            for run, loss in enumerate(losses):
                result: EvaluationResult | None
                try:
                    result = evaluate(
                        model,
                        records,
                        int(size),
                        config.replace(loss=loss),
                        progress=run_progress(run),
                        batch_size=batch_size,
                        device=device,
                        should_stop=should_stop,
                    )
                except Interrupted as exc:
                    result, stopped = exc.result, exc
                if result is not None:
                    summaries[loss] = result.summary
                if stopped is not None:
                    break
        if summaries:
            rows.append(_table_row(label, model, meta, losses, summaries, config, complete=stopped is None))
        if stopped is not None:
            complete = index * len(losses) + (0 if config.method == "fgsm" else len(summaries) - bool(stopped.result))
            where = (
                ""
                if stopped.result is None
                else (
                    f"; the row of {label} holds {'its columns' if config.method == 'fgsm' else 'its last column'} "
                    f"over the first {stopped.partial.done} of {stopped.partial.total} slices"
                )
            )
            raise Interrupted(
                TableII(config=config, losses=losses, rows=rows, labels=labels) if rows else None,
                Partial(complete, len(models) * len(losses), "cells", f"cells are (model, loss){where}"),
            )
    return TableII(config=config, losses=losses, rows=rows, labels=labels)


def shared_labels(models: Sequence[LoadedModel]) -> LabelSet:
    """The label set of every model: a ``LabelSetError`` naming two models whose sets differ (their rows and
    columns would mean different things)."""
    if not models:
        raise OptionError("at least one model is needed")
    first = models[0]
    for other in models[1:]:
        if not other.labels.same_labels(first.labels):
            raise LabelSetError(
                f"{other.label} segments {other.labels.describe()} "
                f"but {first.label} segments {first.labels.describe()}; "
                "compare models of one label set"
            )
    return first.labels


def _table_row(
    label: str,
    model,
    meta: dict,
    losses: list[str],
    summaries: dict[str, Summary],
    config: AttackConfig,
    *,
    complete: bool = True,
) -> TableIIRow:
    """A model's row of Table II from its cells' summaries. The best loss only where every column is there
    over every slice (a cell cut short by Ctrl-C is over fewer)."""
    adv = {loss: summary.mean_adv for loss, summary in summaries.items()}
    finite = {loss: value for loss, value in adv.items() if value is not None}
    spec = getattr(model, "spec", None)
    return TableIIRow(
        label=label,
        title=meta.get("title") or (spec.title if spec is not None else label),
        params=int(meta.get("params") or count_parameters(model)),
        dsc_clean=summaries[next(iter(summaries))].mean_clean,
        dsc_adv=adv,
        best_loss=min(finite, key=lambda loss: finite[loss])
        if finite and complete and "loss" in config.entry.parameters
        else None,
        summaries=summaries,
    )
