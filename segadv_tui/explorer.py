"""What the attack explorer shows for one slice and one set of attack settings, without Textual.

The app's workers call :class:`Explorer` and post the :class:`Frame` it returns; tests and the
benchmark call it directly. It owns the model's lock (one computation at a time, so a burst of key
presses never runs several attacks side by side), the shared sign(grad) cache (stepping FGSM's eps
costs one forward pass) and the clean prediction of the current slice.
"""

from __future__ import annotations

import math
import threading
import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Callable

import numpy as np
import torch

from core.attacks import AttackCancelled, GradientCache, bim, input_gradients, pgd, sweep
from core.data import SliceRecord, load_slice, read_slice, resize_image
from core.metrics import attack_success, dice_per_organ, mean_dsc, predict

EPS_STEP_FINE = 0.001
EPS_STEP_COARSE = 0.005
# Eps values of the DSC-against-eps curve (FGSM from the shared gradient: one backward, then forwards).
CURVE_EPS = tuple(round(0.005 * i, 3) for i in range(11))

ShouldStop = Callable[[], bool]


def clamp_eps(value: float) -> float:
    """Epsilon kept in [0, 1] and rounded to 1e-6 so repeated steps do not drift (0.1 + 0.001 ...)."""
    return round(min(1.0, max(0.0, float(value))), 6)


@dataclass(frozen=True)
class AttackSettings:
    loss: str = "bce"
    method: str = "fgsm"
    target: str = "gt"  # "gt" | "pred"
    mode: str = "textbook"  # FGSM only; BIM / PGD are textbook attacks
    eps: float = 0.009
    steps: int = 10
    empty: str = "one"

    def with_eps(self, eps: float) -> "AttackSettings":
        return replace(self, eps=clamp_eps(eps))

    @property
    def label(self) -> str:
        mode = f" {self.mode}" if self.method == "fgsm" else f" {self.steps} steps"
        return f"eps {self.eps:.3f} · {self.method.upper()}{mode} · {self.loss} loss · target {self.target}"


@dataclass(frozen=True)
class SliceData:
    """A slice at model resolution; ``truth`` is None for a lone PNG (no ground truth)."""

    id: str
    image: np.ndarray  # float32 (S, S) in [0, 1]
    truth: np.ndarray | None  # uint8 (3, S, S)


def load_slice_data(source: SliceRecord | Path, img_size: int) -> SliceData:
    """A data set record (with its masks) or a lone PNG file (no ground truth), at model resolution."""
    if isinstance(source, SliceRecord):
        image, masks = load_slice(source, img_size)
        return SliceData(source.id, image, masks)
    return SliceData(Path(source).name, resize_image(read_slice(source), img_size), None)


@dataclass(frozen=True)
class Frame:
    """One computed view: pictures' data and scores, for the request that asked for it."""

    request_id: int
    checkpoint: str
    slice_id: str
    settings: AttackSettings
    image: np.ndarray  # float32 (S, S)
    adversarial: np.ndarray  # float32 (S, S)
    reference: np.ndarray  # bool (3, S, S): ground truth, or the clean prediction when there is none
    has_truth: bool
    clean_prediction: np.ndarray  # bool (3, S, S)
    adversarial_prediction: np.ndarray  # bool (3, S, S)
    dsc_clean: np.ndarray  # (3,) per organ, NaN where the empty policy skips
    dsc_adv: np.ndarray  # (3,)
    attack_success: np.ndarray  # (3,), NaN where undefined (clean DSC 0)
    mean_clean: float
    mean_adv: float
    mean_attack_success: float
    linf: float
    l2: float
    seconds: float


@dataclass(frozen=True)
class Curve:
    """Mean DSC of FGSM against eps for one slice, loss, target and mode (from one shared gradient)."""

    checkpoint: str
    slice_id: str
    loss: str
    target: str
    mode: str
    eps: tuple[float, ...]
    mean_dsc: tuple[float, ...]


class Explorer:
    """Attacks one slice at a time with one model; safe to call from worker threads."""

    def __init__(self, model: torch.nn.Module, checkpoint: str, *, device: str | torch.device = "cpu",
                 cache: GradientCache | None = None):
        self.model = model
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.cache = cache if cache is not None else GradientCache()
        self.computations = 0  # frames actually computed (stale requests skipped before starting are not)
        self._lock = threading.Lock()
        self._clean: dict[str, np.ndarray] = {}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=self.device)[None]

    def _clean_prediction(self, data: SliceData, image: torch.Tensor, settings: AttackSettings) -> np.ndarray:
        if data.id not in self._clean:
            if len(self._clean) > 64:
                self._clean.clear()
            if settings.method == "fgsm" and settings.target == "gt" and data.truth is not None:
                # FGSM's gradient pass predicts the clean slice too: one forward pass saved per new slice.
                target = self._tensor(np.asarray(data.truth, dtype=bool))
                clean = self._gradient(data, settings, image, target).clean_pred
            else:
                clean = predict(self.model, image)
            self._clean[data.id] = clean[0].cpu().numpy()
        return self._clean[data.id]

    def _gradient(self, data: SliceData, settings: AttackSettings, image: torch.Tensor, target: torch.Tensor):
        return self.cache.get_or_compute(
            self._gradient_key(data, settings),
            lambda: input_gradients(self.model, image, target, (settings.loss,), settings.mode)[settings.loss],
        )

    def _attack_target(self, data: SliceData, settings: AttackSettings, clean: np.ndarray) -> np.ndarray:
        if settings.target == "gt" and data.truth is not None:
            return np.asarray(data.truth, dtype=bool)
        return clean

    def _gradient_key(self, data: SliceData, settings: AttackSettings) -> tuple:
        return (self.checkpoint, data.id, settings.loss, settings.target, settings.mode)

    def compute(self, data: SliceData, settings: AttackSettings, *, request_id: int = 0,
                should_stop: ShouldStop = lambda: False, on_start: Callable[[], None] | None = None) -> Frame | None:
        """The frame for ``settings`` on ``data``; None when ``should_stop`` said so at a check.

        ``on_start`` runs once the model is ours and the request is still current (tests hold it there).
        """
        with self._lock:
            if should_stop():
                return None
            if on_start is not None:
                on_start()
            started = time.perf_counter()
            image = self._tensor(data.image)[None]  # (1, 1, S, S)
            clean = self._clean_prediction(data, image, settings)
            if should_stop():
                return None
            try:
                adversarial, adversarial_prediction = self._attack(data, settings, image, clean, should_stop)
            except AttackCancelled:
                return None
            self.computations += 1
            seconds = time.perf_counter() - started
        return self._frame(request_id, data, settings, clean, adversarial, adversarial_prediction, seconds)

    def _attack(self, data: SliceData, settings: AttackSettings, image: torch.Tensor, clean: np.ndarray,
                should_stop: ShouldStop) -> tuple[np.ndarray, np.ndarray]:
        """(adversarial image (S, S), its predicted masks (3, S, S))."""
        target = self._tensor(self._attack_target(data, settings, clean))  # (1, 3, S, S)
        if settings.method == "fgsm":
            # One eps of core's sweep: the cached gradient plus one forward pass.
            (point,) = sweep(self.model, image, target, [settings.eps], loss=settings.loss, mode=settings.mode,
                             empty=settings.empty, cache=self.cache, cache_key=self._gradient_key(data, settings))
            return point.adv_image[0, 0].numpy(), point.adv_pred[0].numpy()
        if settings.method == "bim":
            adversarial = bim(self.model, image, target, settings.eps, steps=settings.steps, loss=settings.loss,
                              should_stop=should_stop)
        elif settings.method == "pgd":
            # A fixed seed: the same settings always show the same frame.
            generator = torch.Generator(device=self.device).manual_seed(0)
            adversarial = pgd(self.model, image, target, settings.eps, steps=settings.steps, loss=settings.loss,
                              generator=generator, should_stop=should_stop)
        else:
            raise ValueError(f"unknown attack method {settings.method!r}")
        with torch.no_grad():
            prediction = predict(self.model, adversarial)
        return adversarial[0, 0].cpu().numpy(), prediction[0].cpu().numpy()

    def _frame(self, request_id: int, data: SliceData, settings: AttackSettings, clean: np.ndarray,
               adversarial: np.ndarray, adversarial_prediction: np.ndarray, seconds: float) -> Frame:
        has_truth = data.truth is not None
        reference = np.asarray(data.truth, dtype=bool) if has_truth else clean
        dsc = dice_per_organ(np.stack([clean, adversarial_prediction]), np.stack([reference, reference]),
                             empty=settings.empty)
        means = mean_dsc(dsc)
        delta = adversarial.astype(np.float64) - data.image.astype(np.float64)
        return Frame(
            request_id=request_id,
            checkpoint=self.checkpoint,
            slice_id=data.id,
            settings=settings,
            image=data.image,
            adversarial=adversarial,
            reference=reference,
            has_truth=has_truth,
            clean_prediction=clean,
            adversarial_prediction=adversarial_prediction,
            dsc_clean=dsc[0],
            dsc_adv=dsc[1],
            attack_success=attack_success(dsc[0], dsc[1]),
            mean_clean=float(means[0]),
            mean_adv=float(means[1]),
            mean_attack_success=float(attack_success(means[:1], means[1:])[0]),
            linf=float(np.abs(delta).max()) if delta.size else 0.0,
            l2=float(np.sqrt((delta**2).sum())),
            seconds=seconds,
        )

    def curve(self, data: SliceData, settings: AttackSettings, eps_values=CURVE_EPS, *,
              should_stop: ShouldStop = lambda: False) -> Curve | None:
        """FGSM mean DSC at each eps for the slice and loss of ``settings`` (scored as the frames are)."""
        with self._lock:
            if should_stop():
                return None
            image = self._tensor(data.image)[None]
            clean = self._clean_prediction(data, image, settings)
            target = self._tensor(self._attack_target(data, settings, clean))
            reference = self._tensor(data.truth if data.truth is not None else clean)
            points = sweep(self.model, image, target, list(eps_values), loss=settings.loss, mode=settings.mode,
                           empty=settings.empty, cache=self.cache, cache_key=self._gradient_key(data, settings),
                           truth=reference)
        return Curve(self.checkpoint, data.id, settings.loss, settings.target, settings.mode,
                     tuple(float(p.eps) for p in points), tuple(float(p.mean[0]) for p in points))


def format_score(value: float) -> str:
    """A DSC / AS value for tables: three decimals, 'n/a' where undefined."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3f}"
