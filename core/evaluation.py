"""Attacks over a data set: per-slice rows, summaries, eps sweeps and the paper's Table II.

Everything here returns plain dataclasses with ``to_dict()`` (JSON-ready: NaN becomes None) and reports
progress through ``progress(done, total)`` in slices; ``should_stop()`` is checked between batches (and
between the steps of iterative attacks) and raises ``core.attacks.AttackCancelled``.

Scores are DSC against the ground truth, whatever the attack targets. A data-set figure is the mean
over the scored slices: by default those whose ground truth has at least one organ, as the paper did
(``score="all"`` scores every slice). Per organ, slices where the empty policy skips (NaN) are left
out. The data-set attack success is computed from the mean DSCs, ``(clean - adv) / clean``, the way a
reader of Table II would.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Sequence
from dataclasses import asdict, dataclass, field

import numpy as np
import torch

from core.attacks import (
    METHODS,
    PRECISIONS,
    TARGETS,
    GradientCache,
    StopCheck,
    adversarial_predictions,
    cached_gradient,
    check_eps,
    check_mode,
    check_stop,
    input_gradients,
    perturbation_norms,
    pgd,
)
from core.losses import check_loss
from core.metrics import attack_success, check_empty_policy, dice_per_organ, hausdorff_per_organ, mean_dsc, nanmean, predict
from core.models import count_parameters
from core.organs import ORGANS

SCORE_SLICES = ("nonempty", "all")

Progress = Callable[[int, int], None]


def _number(value) -> float | None:
    """A JSON-safe float: NaN / inf become None."""
    value = float(value)
    return value if np.isfinite(value) else None


def _organ_dict(values: np.ndarray) -> dict[str, float | None]:
    return {organ: _number(v) for organ, v in zip(ORGANS, values)}


@dataclass
class AttackConfig:
    """What attack to run. ``mode`` applies to FGSM only (the paper's variant is an FGSM formula);
    ``steps`` / ``step_size`` to BIM and PGD (step_size None = 2.5 eps / steps); ``seed`` seeds PGD's
    random start; ``score`` chooses the slices a summary averages over; ``hausdorff`` adds the 95th
    percentile Hausdorff distance (pixels at ``img_size``) of the clean and adversarial predictions."""

    method: str = "fgsm"
    loss: str = "bce"
    eps: float = 0.009
    mode: str = "textbook"
    target: str = "gt"
    steps: int = 10
    step_size: float | None = None
    empty: str = "one"
    score: str = "nonempty"
    seed: int = 0
    precision: str = "fp32"
    hausdorff: bool = False

    def __post_init__(self):
        if self.method not in METHODS:
            raise ValueError(f"unknown attack method {self.method!r}; choose from {', '.join(METHODS)}")
        check_loss(self.loss)
        self.eps = check_eps(self.eps)
        check_mode(self.mode)
        if self.mode == "paper" and self.method != "fgsm":
            raise ValueError(f"mode 'paper' is the paper's FGSM formula; it does not apply to {self.method}")
        if self.target not in TARGETS:
            raise ValueError(f"unknown attack target {self.target!r}; choose from {', '.join(TARGETS)}")
        if int(self.steps) < 1:
            raise ValueError(f"steps must be at least 1, got {self.steps}")
        self.steps = int(self.steps)
        if self.step_size is not None and not (np.isfinite(self.step_size) and self.step_size >= 0):
            raise ValueError(f"step_size must be a non-negative number, got {self.step_size}")
        check_empty_policy(self.empty)
        if self.score not in SCORE_SLICES:
            raise ValueError(f"unknown slice selection {self.score!r}; choose from {', '.join(SCORE_SLICES)}")
        if self.precision not in PRECISIONS:
            raise ValueError(f"unknown precision {self.precision!r}; choose from {', '.join(PRECISIONS)}")

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class SliceRow:
    """One slice attacked once. DSC per organ (None where the empty policy skips), AS None where
    undefined (clean DSC 0); ``zero_grad_fraction`` only for FGSM."""

    slice_id: str
    has_organs: bool
    scored: bool
    dsc_clean: dict[str, float | None]
    dsc_adv: dict[str, float | None]
    mean_clean: float | None
    mean_adv: float | None
    attack_success: dict[str, float | None]
    mean_attack_success: float | None
    linf: float
    l2: float
    zero_grad_fraction: float | None = None
    hd95_clean: dict[str, float | None] | None = None  # only when the config asks for it
    hd95_adv: dict[str, float | None] | None = None

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass
class Summary:
    """Means over the scored slices (see the module doc)."""

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

    def to_dict(self) -> dict:
        return asdict(self)


class _Scores:
    """Per-slice arrays of one attack over a data set, turned into rows and a summary."""

    def __init__(self):
        self.ids: list[str] = []
        self.has_organs: list[np.ndarray] = []
        self.dsc_clean: list[np.ndarray] = []
        self.dsc_adv: list[np.ndarray] = []
        self.linf: list[np.ndarray] = []
        self.l2: list[np.ndarray] = []
        self.zero: list[np.ndarray] = []
        self.hd_clean: list[np.ndarray] = []
        self.hd_adv: list[np.ndarray] = []

    def add(self, ids, has_organs, dsc_clean, dsc_adv, linf, l2, zero=None, hd_clean=None, hd_adv=None):
        self.ids.extend(ids)
        self.has_organs.append(np.asarray(has_organs, dtype=bool))
        self.dsc_clean.append(dsc_clean)
        self.dsc_adv.append(dsc_adv)
        self.linf.append(linf)
        self.l2.append(l2)
        self.zero.append(np.full(len(ids), np.nan) if zero is None else zero)
        if hd_clean is not None:
            self.hd_clean.append(hd_clean)
            self.hd_adv.append(hd_adv)

    def _hausdorff(self):
        """(clean, adv) float (n, organs) or (None, None) when not measured."""
        if not self.hd_clean:
            return None, None
        return np.concatenate(self.hd_clean), np.concatenate(self.hd_adv)

    def _arrays(self):
        width = len(ORGANS)
        cat = lambda parts, shape: np.concatenate(parts) if parts else np.zeros(shape)  # noqa: E731
        return (
            cat(self.has_organs, (0,)).astype(bool), cat(self.dsc_clean, (0, width)), cat(self.dsc_adv, (0, width)),
            cat(self.linf, (0,)), cat(self.l2, (0,)), cat(self.zero, (0,)),
        )

    def scored_mask(self, score: str) -> np.ndarray:
        has_organs = self._arrays()[0]
        return has_organs if score == "nonempty" else np.ones_like(has_organs)

    def rows(self, score: str) -> list[SliceRow]:
        has_organs, clean, adv, linf, l2, zero = self._arrays()
        scored = self.scored_mask(score)
        mean_clean, mean_adv = mean_dsc(clean), mean_dsc(adv)
        success, mean_success = attack_success(clean, adv), attack_success(mean_clean, mean_adv)
        hd_clean, hd_adv = self._hausdorff()
        return [
            SliceRow(
                slice_id=self.ids[i], has_organs=bool(has_organs[i]), scored=bool(scored[i]),
                dsc_clean=_organ_dict(clean[i]), dsc_adv=_organ_dict(adv[i]),
                mean_clean=_number(mean_clean[i]), mean_adv=_number(mean_adv[i]),
                attack_success=_organ_dict(success[i]), mean_attack_success=_number(mean_success[i]),
                linf=float(linf[i]), l2=float(l2[i]), zero_grad_fraction=_number(zero[i]),
                hd95_clean=None if hd_clean is None else _organ_dict(hd_clean[i]),
                hd95_adv=None if hd_adv is None else _organ_dict(hd_adv[i]),
            )
            for i in range(len(self.ids))
        ]

    def summary(self, score: str) -> Summary:
        _, clean, adv, linf, l2, _ = self._arrays()
        scored = self.scored_mask(score)
        clean, adv, linf, l2 = clean[scored], adv[scored], linf[scored], l2[scored]
        organ_clean, organ_adv = nanmean(clean, axis=0), nanmean(adv, axis=0)
        if not len(clean):
            organ_clean = organ_adv = np.full(len(ORGANS), np.nan)
        mean_clean = float(nanmean(mean_dsc(clean), axis=0)) if len(clean) else np.nan
        mean_adv = float(nanmean(mean_dsc(adv), axis=0)) if len(adv) else np.nan
        hd_clean, hd_adv = self._hausdorff()
        return Summary(
            slices=len(self.ids), scored=int(scored.sum()),
            dsc_clean=_organ_dict(organ_clean), dsc_adv=_organ_dict(organ_adv),
            mean_clean=_number(mean_clean), mean_adv=_number(mean_adv),
            attack_success=_organ_dict(attack_success(organ_clean, organ_adv)),
            mean_attack_success=_number(attack_success(mean_clean, mean_adv)),
            linf_max=_number(linf.max()) if len(linf) else None,
            linf_mean=_number(linf.mean()) if len(linf) else None,
            l2_mean=_number(l2.mean()) if len(l2) else None,
            hd95_clean=None if hd_clean is None else _organ_dict(nanmean(hd_clean[scored], axis=0)),
            hd95_adv=None if hd_adv is None else _organ_dict(nanmean(hd_adv[scored], axis=0)),
        )


@dataclass
class EvaluationResult:
    config: AttackConfig
    img_size: int
    rows: list[SliceRow]
    summary: Summary
    seconds: float

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(), "img_size": self.img_size, "seconds": self.seconds,
            "summary": self.summary.to_dict(), "rows": [row.to_dict() for row in self.rows],
        }


def _batches(records, img_size: int, batch_size: int, device):
    """(records, images (B, 1, S, S), masks (B, 3, S, S) float 0/1) on ``device``, read lazily."""
    from core.data import load_slice  # core.data is light; imported here to keep this module's deps clear

    if batch_size < 1:
        raise ValueError(f"batch_size must be at least 1, got {batch_size}")
    for start in range(0, len(records), batch_size):
        chunk = records[start : start + batch_size]
        loaded = [load_slice(record, img_size) for record in chunk]
        images = torch.from_numpy(np.stack([image for image, _ in loaded])).unsqueeze(1).to(device)
        masks = torch.from_numpy(np.stack([mask for _, mask in loaded])).float().to(device)
        yield chunk, images, masks


def _report(progress: Progress | None, done: int, total: int) -> None:
    if progress is not None:
        progress(done, total)


@dataclass
class SliceAttack:
    """One attack on a batch of slices (often one): the adversarial images and both predictions, scored.

    adversarial: (N, 1, H, W) on the model's device; clean_pred / adv_pred: bool (N, 3, H, W) on the CPU;
    dsc_clean / dsc_adv: (N, 3) per organ, NaN where the empty policy skips; linf / l2: (N,) realised
    perturbation norms; zero_grad_fraction: (N,) for FGSM, None otherwise.
    """

    adversarial: torch.Tensor
    clean_pred: torch.Tensor
    adv_pred: torch.Tensor
    dsc_clean: np.ndarray
    dsc_adv: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    zero_grad_fraction: np.ndarray | None = None

    @property
    def attack_success(self) -> np.ndarray:
        return attack_success(self.dsc_clean, self.dsc_adv)

    @property
    def mean_clean(self) -> np.ndarray:
        return mean_dsc(self.dsc_clean)

    @property
    def mean_adv(self) -> np.ndarray:
        return mean_dsc(self.dsc_adv)

    @property
    def mean_attack_success(self) -> np.ndarray:
        return attack_success(self.mean_clean, self.mean_adv)


def attack_slice(
    model: torch.nn.Module,
    image: torch.Tensor,
    truth: torch.Tensor | None,
    config: AttackConfig,
    *,
    cache: GradientCache | None = None,
    cache_key: Hashable | None = None,
    clean_pred: torch.Tensor | None = None,
    generator: torch.Generator | None = None,
    should_stop: StopCheck | None = None,
) -> SliceAttack:
    """``config``'s attack on ``image`` (N, 1, H, W), scored against ``truth`` (N, 3, H, W) 0/1.

    ``truth`` None (a lone picture) attacks and scores against the model's clean prediction. FGSM takes
    its clean prediction from the gradient's forward pass; with ``cache`` (``cache_key`` identifying the
    gradient: checkpoint, slice, loss, target, mode) a cached FGSM is ONE forward pass. BIM / PGD reuse
    ``clean_pred`` when given; PGD's random start comes from ``generator`` (default: seeded by
    ``config.seed``). ``should_stop`` is checked before the attack and between iterative steps.
    """
    check_stop(should_stop)
    target = truth if config.target == "gt" else None
    zero = None
    if config.method == "fgsm":
        entry = cached_gradient(
            model, image, target, config.loss, config.mode, cache=cache, cache_key=cache_key, precision=config.precision
        )
        clean_pred, zero = entry.clean_pred, entry.zero_fraction
        adversarial, adv_pred = adversarial_predictions(
            model, image, entry.sign, [config.eps], config.mode, precision=config.precision
        )[0]
    else:
        if clean_pred is None:
            with torch.no_grad():
                clean_pred = predict(model, image)
        random_start = config.method == "pgd"  # BIM is PGD from the clean image
        if generator is None and random_start:
            generator = torch.Generator(device=image.device).manual_seed(config.seed)
        adversarial = pgd(
            model, image, clean_pred.float() if target is None else target, config.eps, steps=config.steps,
            step_size=config.step_size, loss=config.loss, random_start=random_start, generator=generator,
            should_stop=should_stop,
        )
        with torch.no_grad():
            adv_pred = predict(model, adversarial)
    clean_pred, adv_pred = clean_pred.cpu(), adv_pred.cpu()
    reference = clean_pred if truth is None else truth.cpu()
    linf, l2 = perturbation_norms(image, adversarial)
    return SliceAttack(
        adversarial=adversarial, clean_pred=clean_pred, adv_pred=adv_pred,
        dsc_clean=dice_per_organ(clean_pred, reference, config.empty),
        dsc_adv=dice_per_organ(adv_pred, reference, config.empty), linf=linf, l2=l2, zero_grad_fraction=zero,
    )


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
) -> EvaluationResult:
    """Run ``config``'s attack over ``records`` (``core.data.SliceRecord``) at ``img_size``.

    The model must already be on ``device`` (batches are moved there). Each batch goes through
    ``attack_slice``: for FGSM one forward + backward + one forward.
    """
    records = list(records)
    started = time.perf_counter()
    scores = _Scores()
    generator = torch.Generator(device=device).manual_seed(config.seed) if config.method == "pgd" else None
    _report(progress, 0, len(records))
    done = 0
    for chunk, images, truth in _batches(records, img_size, batch_size, device):
        attacked = attack_slice(model, images, truth, config, generator=generator, should_stop=should_stop)
        truth_cpu = truth.cpu()
        hausdorff = {}
        if config.hausdorff:
            hausdorff = {
                "hd_clean": hausdorff_per_organ(attacked.clean_pred, truth_cpu),
                "hd_adv": hausdorff_per_organ(attacked.adv_pred, truth_cpu),
            }
        scores.add(
            [record.id for record in chunk], truth_cpu.flatten(1).any(1).numpy(), attacked.dsc_clean,
            attacked.dsc_adv, attacked.linf, attacked.l2, attacked.zero_grad_fraction, **hausdorff,
        )
        done += len(chunk)
        _report(progress, done, len(records))
    return EvaluationResult(
        config=config, img_size=img_size, rows=scores.rows(config.score), summary=scores.summary(config.score),
        seconds=time.perf_counter() - started,
    )


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
    losses: list[str]
    eps_values: list[float]
    mode: str
    target: str
    empty: str
    score: str
    img_size: int
    entries: list[SweepEntry]
    zero_grad_fraction: dict[str, float | None] = field(default_factory=dict)  # per loss, mean over slices
    seconds: float = 0.0

    def entry(self, loss: str, eps: float) -> SweepEntry:
        for item in self.entries:
            if item.loss == loss and item.eps == eps:
                return item
        raise KeyError(f"no sweep point for loss {loss!r} at eps {eps}")

    def to_dict(self) -> dict:
        return {
            "losses": self.losses, "eps_values": self.eps_values, "mode": self.mode, "target": self.target,
            "empty": self.empty, "score": self.score, "img_size": self.img_size, "seconds": self.seconds,
            "zero_grad_fraction": self.zero_grad_fraction, "entries": [e.to_dict() for e in self.entries],
        }


def evaluate_sweep(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    eps_values: Sequence[float],
    losses: Sequence[str] = ("bce",),
    *,
    mode: str = "textbook",
    target: str = "gt",
    empty: str = "one",
    score: str = "nonempty",
    batch_size: int = 16,
    chunk_size: int | None = None,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> SweepResult:
    """FGSM over ``records`` for every loss and eps: per batch ONE forward pass, one backward per loss,
    then batched forward passes of the adversarial images (``chunk_size`` images at a time,
    default ``core.attacks.default_chunk_size``)."""
    losses = [check_loss(name) for name in losses]
    if not losses:
        raise ValueError("at least one loss is needed")
    eps_values = [check_eps(eps) for eps in eps_values]
    if not eps_values:
        raise ValueError("at least one eps value is needed")
    check_mode(mode)
    check_empty_policy(empty)
    if target not in TARGETS:
        raise ValueError(f"unknown attack target {target!r}; choose from {', '.join(TARGETS)}")
    if score not in SCORE_SLICES:
        raise ValueError(f"unknown slice selection {score!r}; choose from {', '.join(SCORE_SLICES)}")
    records = list(records)
    started = time.perf_counter()
    scores = {(loss, eps): _Scores() for loss in losses for eps in eps_values}
    zero: dict[str, list[np.ndarray]] = {loss: [] for loss in losses}
    _report(progress, 0, len(records))
    done = 0
    for chunk, images, truth in _batches(records, img_size, batch_size, device):
        check_stop(should_stop)
        entries = input_gradients(model, images, truth if target == "gt" else None, losses, mode, precision=precision)
        truth_cpu = truth.cpu()
        ids, has_organs = [record.id for record in chunk], truth_cpu.flatten(1).any(1).numpy()
        dsc_clean = dice_per_organ(entries[losses[0]].clean_pred, truth_cpu, empty)
        for loss, entry in entries.items():
            zero[loss].append(entry.zero_fraction)
            outputs = adversarial_predictions(model, images, entry.sign, eps_values, mode, chunk_size=chunk_size, precision=precision)
            for eps, (adversarial, adv_pred) in zip(eps_values, outputs):
                linf, l2 = perturbation_norms(images, adversarial)
                scores[loss, eps].add(ids, has_organs, dsc_clean, dice_per_organ(adv_pred, truth_cpu, empty), linf, l2)
            check_stop(should_stop)
        done += len(chunk)
        _report(progress, done, len(records))
    return SweepResult(
        losses=losses, eps_values=eps_values, mode=mode, target=target, empty=empty, score=score, img_size=img_size,
        entries=[SweepEntry(loss, eps, scores[loss, eps].summary(score)) for loss in losses for eps in eps_values],
        zero_grad_fraction={loss: _number(np.concatenate(parts).mean()) if parts else None for loss, parts in zero.items()},
        seconds=time.perf_counter() - started,
    )


@dataclass
class TableIIRow:
    label: str
    title: str
    params: int
    dsc_clean: float | None
    dsc_adv: dict[str, float | None]  # per loss, mean DSC after the attack (the paper: FGSM)
    best_loss: str | None  # the most successful attack: lowest adversarial DSC
    summaries: dict[str, Summary] = field(default_factory=dict)

    def to_dict(self) -> dict:
        data = asdict(self)
        data["summaries"] = {loss: summary.to_dict() for loss, summary in self.summaries.items()}
        return data


@dataclass
class TableII:
    eps: float
    losses: list[str]
    mode: str
    target: str
    empty: str
    score: str
    rows: list[TableIIRow]
    method: str = "fgsm"
    steps: int = 10  # BIM / PGD

    def to_dict(self) -> dict:
        return {
            "eps": self.eps, "losses": self.losses, "mode": self.mode, "target": self.target, "empty": self.empty,
            "score": self.score, "method": self.method, "steps": self.steps, "rows": [row.to_dict() for row in self.rows],
        }


def table_ii(
    models: Sequence[tuple[str, torch.nn.Module, dict]],
    records: Sequence,
    losses: Sequence[str] = ("bce", "focal+dice", "focal"),
    eps: float = 0.009,
    *,
    img_size: int | None = None,
    method: str = "fgsm",
    steps: int = 10,
    mode: str = "textbook",
    target: str = "gt",
    empty: str = "one",
    score: str = "nonempty",
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    precision: str = "fp32",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> TableII:
    """The paper's Table II: for each (label, model, checkpoint meta), its parameters, clean mean DSC and
    mean DSC after the attack at ``eps`` with each loss. ``img_size`` None uses each checkpoint's
    ``meta["img_size"]``. ``progress`` counts slices over all models (and losses, for BIM / PGD).

    FGSM (the paper's) shares one gradient per slice and loss (``evaluate_sweep``); BIM and PGD
    (``steps`` iterations) run ``evaluate`` once per loss."""
    eps = check_eps(eps)
    losses = [check_loss(name) for name in losses]
    configs = {
        loss: AttackConfig(method=method, loss=loss, eps=eps, mode=mode, target=target, steps=steps, empty=empty,
                           score=score, precision=precision)
        for loss in losses
    }
    records = list(records)
    runs = 1 if method == "fgsm" else len(losses)
    total = len(records) * len(models) * runs
    rows = []
    for index, (label, model, meta) in enumerate(models):
        size = img_size if img_size is not None else (meta or {}).get("img_size")
        if size is None:
            raise ValueError(f"{label}: no img_size in the checkpoint's metadata; pass img_size")

        def run_progress(run: int):
            offset = (index * runs + run) * len(records)
            return None if progress is None else (lambda done, _total: progress(offset + done, total))

        options = dict(batch_size=batch_size, device=device, should_stop=should_stop)
        if method == "fgsm":
            result = evaluate_sweep(
                model, records, int(size), [eps], losses, mode=mode, target=target, empty=empty, score=score,
                precision=precision, progress=run_progress(0), **options,
            )
            summaries = {loss: result.entry(loss, result.eps_values[0]).summary for loss in result.losses}
        else:
            summaries = {
                loss: evaluate(model, records, int(size), configs[loss], progress=run_progress(run), **options).summary
                for run, loss in enumerate(losses)
            }
        adv = {loss: summary.mean_adv for loss, summary in summaries.items()}
        finite = {loss: value for loss, value in adv.items() if value is not None}
        meta = meta or {}
        spec = getattr(model, "spec", None)
        rows.append(
            TableIIRow(
                label=label,
                title=meta.get("title") or (spec.title if spec is not None else label),
                params=int(meta.get("params") or count_parameters(model)),
                dsc_clean=summaries[losses[0]].mean_clean,
                dsc_adv=adv,
                best_loss=min(finite, key=finite.get) if finite else None,
                summaries=summaries,
            )
        )
    return TableII(eps=eps, losses=losses, mode=mode, target=target, empty=empty, score=score, rows=rows, method=method,
                   steps=steps)
