"""Checks that a robustness number is the model's and not the attack's failure: the parts of Carlini et al.'s
checklist (2019, "On Evaluating Adversarial Robustness") that apply to a white-box L-inf evaluation of a
segmenter. Each check passes or fails with its numbers, or does not apply (with the reason):

- ``gradients``: FGSM's share of input pixels whose gradient is exactly 0 is under a half. Guards against
  masked gradients (non-differentiable pre-processing, saturated outputs): the attacks have nothing to follow.
- ``monotone``: robust DSC does not rise with eps (beyond ``TOLERANCE``). A larger ball holds every smaller
  one, so a rise means the attack misses at the larger radius what it found at the smaller.
- ``large_eps``: at eps ``LARGE_EPS`` (0.25: a quarter of the intensity range) robust DSC is about 0
  (at most ``NEAR_ZERO``). There the image can be overwritten; an attack that cannot get there is broken.
- ``iterative``: the attack is at least as strong as one FGSM step at every eps (beyond ``TOLERANCE``).
  Guards against an iterative attack that is stuck (masked or noisy gradients, a bad step size).
- ``transfer``: the attack on the model itself beats the same attack made on another model (by default the
  plain demo checkpoint) and transferred. When transfer wins, the model's own gradients mislead: obfuscation.
- ``converged``: twice the steps, and one restart from another random start (per slice the worse of the
  two runs), each move robust DSC by less than ``TOLERANCE``. Otherwise the number is still falling.
- ``black_box``: the attack is at least as strong as the gradient-free Square attack (``core.attacks.square``,
  ``SQUARE_QUERIES`` queries, the attack's loss, or Dice for a method without one) at the largest eps. A model
  that resists gradient attacks but falls to random search is masking its gradients.

Under ``norm="l2"`` the FGSM comparison is the L2 fast gradient method at each eps, ``large_eps`` is L2
``LARGE_EPS * S`` on S x S slices (the L2 norm of a full-sign L-inf 0.25 perturbation), and ``black_box`` does
not apply (Square is L-inf).

Robust DSC here is the data-set mean over the scored slices (``core.evaluation.scoring.Summary.mean_adv``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace

import numpy as np
import torch

from core.attacks.batch import model_labels
from core.attacks.config import AttackConfig, check_eps
from core.attacks.control import StopCheck, check_stop
from core.evaluation.scoring import evaluate, evaluate_sweep, summarise
from core.progress import Progress
from core.results import SliceResult

TOLERANCE = 0.01
LARGE_EPS = 0.25
NEAR_ZERO = 0.05
ZERO_GRADIENT_LIMIT = 0.5
SQUARE_QUERIES = 300  # forward passes per slice: about the ensemble's 300 gradient passes, at a third of the cost
SQUARE_LOSS = "dice"  # for a method without a loss of its own (the ensemble): its strongest single member's

GUARDS = {
    "gradients": "masked gradients: zero input gradients leave the attacks nothing to follow",
    "monotone": "an attack that misses at a larger eps what it found at a smaller one",
    "large_eps": "a broken attack: at eps 0.25 the image can be overwritten, so robust DSC must reach about 0",
    "iterative": "a stuck iterative attack (masked or noisy gradients, a bad step size)",
    "transfer": "obfuscated gradients: the model's own gradients mislead where another model's do not",
    "converged": "an attack stopped too early: more steps or a restart would still lower robust DSC",
    "black_box": "masked gradients: a gradient-free attack (Square) finds what the gradient attacks miss",
}
TITLES = {
    "gradients": "input gradients are informative",
    "monotone": "robust DSC falls monotonically with eps",
    "large_eps": f"robust DSC reaches about 0 at eps {LARGE_EPS:g}",
    "iterative": "the attack is at least as strong as FGSM",
    "transfer": "white-box is at least as strong as transfer",
    "converged": "the attack has converged (more steps, a restart)",
    "black_box": "the attack is at least as strong as black-box Square",
}


@dataclass
class Check:
    name: str
    passed: bool | None  # None: does not apply here (``note`` says why)
    numbers: dict
    note: str = ""

    @property
    def title(self) -> str:
        return TITLES[self.name]

    @property
    def guards(self) -> str:
        return GUARDS[self.name]

    @property
    def verdict(self) -> str:
        return {True: "pass", False: "FAIL", None: "n/a"}[self.passed]

    def to_dict(self) -> dict:
        return {
            "name": self.name,
            "title": self.title,
            "verdict": self.verdict,
            "passed": self.passed,
            "numbers": self.numbers,
            "note": self.note,
            "guards": self.guards,
        }


@dataclass
class ChecksReport:
    label: str
    config: AttackConfig
    check_eps: float  # where transfer and convergence are measured: the largest eps evaluated
    checks: list[Check]
    seconds: float = 0.0
    robust_dsc: dict[float, float | None] = field(default_factory=dict)  # the attack's robust DSC per eps

    @property
    def passed(self) -> bool:
        """No check failed (one that does not apply does not fail)."""
        return all(check.passed is not False for check in self.checks)

    def check(self, name: str) -> Check:
        return next(check for check in self.checks if check.name == name)

    def to_dict(self) -> dict:
        return {
            "label": self.label,
            "config": self.config.to_dict(),
            "check_eps": self.check_eps,
            "passed": self.passed,
            "seconds": self.seconds,
            "robust_dsc": {f"{eps:g}": value for eps, value in self.robust_dsc.items()},
            "checks": [check.to_dict() for check in self.checks],
        }


def run_checks(
    model: torch.nn.Module,
    records: Sequence,
    img_size: int,
    config: AttackConfig,
    eps_values: Sequence[float],
    *,
    label: str = "model",
    source: torch.nn.Module | None = None,
    source_label: str | None = None,
    no_source: str = "no source model to transfer from",
    known: Mapping[float, Sequence[SliceResult]] | None = None,
    batch_size: int = 16,
    device: str | torch.device = "cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
    square_queries: int = SQUARE_QUERIES,
) -> ChecksReport:
    """Every check of the module doc for ``config``'s attack on ``model`` over ``records``.

    ``known`` holds per-slice results already measured with ``config`` (eps -> rows), so a report that ran
    the attack does not pay for it twice; ``source`` is the model the transfer attack is made on (None: the
    check does not apply, for the reason ``no_source``). Under torchrun every process calls this (the
    evaluations are shared); the report is the same on every rank. ``progress(done, total)`` counts slices over all the
    evaluations run here."""
    started = time.perf_counter()
    eps_values = sorted({check_eps(eps, config.norm) for eps in eps_values if eps > 0})
    if not eps_values:
        from core.errors import OptionError

        raise OptionError("the checks need at least one eps above 0")
    rows = {eps: list(results) for eps, results in (known or {}).items()}
    at = max(eps_values)
    iterative = config.entry.iterative
    l2 = config.norm == "l2"
    large = LARGE_EPS * img_size if l2 else LARGE_EPS
    square = config.method != "square" and not l2
    missing = [eps for eps in [*eps_values, large] if eps not in rows]
    runs = len(missing) + (len(eps_values) if l2 else 1) + (source is not None) + (2 if iterative else 0) + square
    counter = _Counter(progress, runs * len(records))

    def robust(cfg: AttackConfig):
        result = evaluate(
            model,
            records,
            img_size,
            cfg,
            batch_size=batch_size,
            device=device,
            progress=counter.part(),
            should_stop=should_stop,
        )
        counter.finish_part(len(records))
        return result

    for eps in missing:
        rows[eps] = robust(replace(config, eps=eps)).rows
    curve = {eps: summarise(rows[eps], model_labels(model)).mean_adv for eps in [*eps_values, large]}

    fgsm = AttackConfig.for_method(
        "fgsm",
        loss=config.loss if config.entry.uses_target else "bce",
        target=config.target,
        empty=config.empty,
        score=config.score,
        precision=config.precision,
        labels=config.labels,
        norm=config.norm,
    )
    if l2:  # the L2 step needs the gradient itself: one FGM run per eps
        fgm = {eps: robust(replace(fgsm, eps=eps)).rows for eps in eps_values}
        fgsm_dsc = {eps: summarise(fgm[eps]).mean_adv for eps in eps_values}
        fractions = [r.zero_grad_fraction for r in fgm[at] if r.zero_grad_fraction is not None]
        zero = float(np.mean(fractions)) if fractions else None
    else:
        fgsm_dsc, zero = _fgsm_sweep(
            model, records, img_size, eps_values, fgsm, batch_size, device, counter, should_stop
        )

    checks = [
        _gradients(zero),
        _monotone(curve),
        _large_eps(curve[large], large),
        _iterative(config, curve, fgsm_dsc),
    ]
    if source is None:
        checks.append(Check("transfer", None, {}, no_source))
    else:
        transferred = transfer_dsc(
            source,
            model,
            records,
            img_size,
            replace(config, eps=at),
            batch_size=batch_size,
            device=device,
            progress=counter.part(),
            should_stop=should_stop,
        )
        counter.finish_part(len(records))
        checks.append(_transfer(curve[at], transferred, source_label or "the source model", at))
    if square:
        square_config = AttackConfig.for_method(
            "square",
            eps=at,
            loss=config.loss if "loss" in config.entry.parameters else SQUARE_LOSS,
            steps=square_queries,
            seed=config.seed,
            target=config.target,
            empty=config.empty,
            score=config.score,
            precision=config.precision,
        )
        checks.append(_black_box(curve[at], robust(square_config).summary.mean_adv, square_config))
    else:
        reason = "the attack is Square itself" if config.method == "square" else "Square is an L-inf attack"
        checks.append(Check("black_box", None, {}, reason))
    if iterative:
        more = robust(replace(config, eps=at, steps=2 * config.steps))
        restart = robust(replace(config, eps=at, seed=config.seed + 1))
        checks.append(_converged(config, at, rows[at], more.summary.mean_adv, restart.rows))
    else:
        checks.append(Check("converged", None, {}, f"{config.method_label} is a single step"))
    check_stop(should_stop)
    return ChecksReport(
        label=label, config=config, check_eps=at, checks=checks, seconds=time.perf_counter() - started, robust_dsc=curve
    )


def _fgsm_sweep(model, records, img_size, eps_values, fgsm, batch_size, device, counter, should_stop):
    """(FGSM's robust DSC per eps, its zero-gradient share) from one shared gradient per slice."""
    sweep = evaluate_sweep(
        model,
        records,
        img_size,
        eps_values,
        (fgsm.loss,),
        fgsm,
        batch_size=batch_size,
        device=device,
        progress=counter.part(),
        should_stop=should_stop,
    )
    counter.finish_part(len(records))
    fgsm_dsc = {eps: sweep.entry(fgsm.loss, eps).summary.mean_adv for eps in eps_values}
    return fgsm_dsc, sweep.zero_grad_fraction.get(fgsm.loss)


# --- the checks, from numbers ----------------------------------------------------------------------


def _gradients(zero_fraction: float | None) -> Check:
    if zero_fraction is None:
        return Check("gradients", None, {}, "no FGSM gradient was taken")
    return Check(
        "gradients",
        zero_fraction < ZERO_GRADIENT_LIMIT,
        {"zero_gradient_fraction": zero_fraction, "limit": ZERO_GRADIENT_LIMIT},
    )


def _monotone(curve: Mapping[float, float | None]) -> Check:
    points = sorted((eps, dsc) for eps, dsc in curve.items() if dsc is not None)
    rises = [
        {"from_eps": a, "to_eps": b, "rise": db - da}
        for (a, da), (b, db) in zip(points, points[1:])
        if db > da + TOLERANCE
    ]
    numbers = {"robust_dsc": {f"{eps:g}": dsc for eps, dsc in points}, "tolerance": TOLERANCE, "rises": rises}
    return Check("monotone", not rises, numbers)


def _large_eps(dsc: float | None, eps: float = LARGE_EPS) -> Check:
    if dsc is None:
        return Check("large_eps", None, {}, "no slice was scored")
    return Check("large_eps", dsc <= NEAR_ZERO, {"eps": eps, "robust_dsc": dsc, "limit": NEAR_ZERO})


def _iterative(config: AttackConfig, curve: Mapping[float, float | None], fgsm: Mapping[float, float | None]) -> Check:
    if not config.entry.iterative:
        return Check("iterative", None, {}, f"{config.method_label} is FGSM itself")
    rows = {f"{eps:g}": {"attack": curve[eps], "fgsm": fgsm[eps]} for eps in fgsm}
    weaker = [
        eps
        for eps, row in rows.items()
        if row["attack"] is not None and row["fgsm"] is not None and row["attack"] > row["fgsm"] + TOLERANCE
    ]
    return Check("iterative", not weaker, {"robust_dsc": rows, "weaker_at": weaker, "tolerance": TOLERANCE})


def _transfer(white_box: float | None, transferred: float | None, source: str, eps: float) -> Check:
    if white_box is None or transferred is None:
        return Check("transfer", None, {}, "no slice was scored")
    return Check(
        "transfer",
        white_box <= transferred + TOLERANCE,
        {"eps": eps, "white_box": white_box, "transfer": transferred, "source": source, "tolerance": TOLERANCE},
    )


def _black_box(attack: float | None, square: float | None, square_config: AttackConfig) -> Check:
    if attack is None or square is None:
        return Check("black_box", None, {}, "no slice was scored")
    return Check(
        "black_box",
        attack <= square + TOLERANCE,
        {
            "eps": square_config.eps,
            "attack": attack,
            "square": square,
            "queries": square_config.steps,
            "loss": square_config.loss,
            "tolerance": TOLERANCE,
        },
    )


def _converged(config: AttackConfig, eps: float, rows, more_steps: float | None, restart_rows) -> Check:
    base = summarise(rows).mean_adv
    worst = [min(a.mean_adv, b.mean_adv) for a, b in zip(rows, restart_rows) if a.scored]
    restarted = float(np.nanmean(worst)) if worst else None
    if base is None or more_steps is None or restarted is None:
        return Check("converged", None, {}, "no slice was scored")
    steps_change, restart_change = base - more_steps, base - restarted
    numbers = {
        "eps": eps,
        "steps": config.steps,
        "robust_dsc": base,
        "double_steps": {"steps": 2 * config.steps, "robust_dsc": more_steps, "change": steps_change},
        "restart": {"seed": config.seed + 1, "robust_dsc": restarted, "change": restart_change},
        "tolerance": TOLERANCE,
    }
    return Check("converged", abs(steps_change) < TOLERANCE and restart_change < TOLERANCE, numbers)


# --- transfer ----------------------------------------------------------------------------------------


def transfer_dsc(
    source,
    model,
    records,
    img_size: int,
    config: AttackConfig,
    *,
    batch_size: int = 16,
    device="cpu",
    progress: Progress | None = None,
    should_stop: StopCheck | None = None,
) -> float | None:
    """Robust DSC of ``model`` on the adversarial slices ``config``'s attack makes on ``source`` (each slice
    with the random start it would have had on ``model``). Shared over torchrun's processes like ``evaluate``.
    ``core.evaluation.transfer.transfer`` would also attack ``model`` itself, which the report has already done."""
    return evaluate(
        source,
        records,
        img_size,
        config,
        batch_size=batch_size,
        device=device,
        progress=progress,
        should_stop=should_stop,
        scored_on=model,
    ).summary.mean_adv


class _Counter:
    """One progress count over several evaluations of the same slices."""

    def __init__(self, progress: Progress | None, total: int):
        self.progress, self.total, self.done = progress, total, 0
        self._report(0)

    def _report(self, done: int) -> None:
        if self.progress is not None:
            self.progress(min(done, self.total), self.total)

    def part(self) -> Callable[[int, int], None]:
        return lambda done, _total: self._report(self.done + done)

    def finish_part(self, size: int) -> None:
        self.done += size
        self._report(self.done)
