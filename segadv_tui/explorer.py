"""What the attack explorer shows for one slice and one set of attack settings, without Textual.

The app's workers call :class:`Explorer` and post the :class:`Frame` it returns; tests and the
benchmark call it directly. It owns the model's lock (one computation at a time, so a burst of key
presses never runs several attacks side by side), the shared sign(grad) cache (stepping FGSM's eps
costs one forward pass) and the clean prediction of the current slice.
"""

from __future__ import annotations

import os
import threading
import time
from typing import Callable

import numpy as np
import torch

from core.attacks import AttackCancelled, GradientCache, sweep
from core.evaluation import AttackConfig, SliceAttack, attack_slice
from segadv_tui.settings import CURVE_EPS, AttackSettings, Curve, Frame, SliceData

ShouldStop = Callable[[], bool]


def leave_a_core_for_the_ui() -> int:
    """Give torch every core but one, so the UI thread keeps drawing while a worker computes.

    On a 2-core machine a second intra-op thread only fights the UI thread (and Python's other
    threads) for the core: the small demo model's forward pass in a worker takes ~55 ms with two
    threads against ~25 ms with one. Returns the thread count now in use.
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    threads = max(1, min(torch.get_num_threads(), cores - 1))
    if threads != torch.get_num_threads():
        torch.set_num_threads(threads)
    return threads


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
        # Clean predictions per slice id, so BIM / PGD on a known slice skip that forward pass (FGSM
        # takes its own from the cached gradient).
        self._clean: dict[str, torch.Tensor] = {}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=self.device)[None]

    def _inputs(self, data: SliceData) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image (1, 1, S, S), ground truth (1, 3, S, S) or None) on the model's device."""
        truth = None if data.truth is None else self._tensor(np.asarray(data.truth, dtype=bool))
        return self._tensor(data.image)[None], truth

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
            image, truth = self._inputs(data)
            clean = self._clean.get(data.id)
            try:
                attacked = attack_slice(
                    self.model, image, truth, attack_config(settings), cache=self.cache,
                    cache_key=self._gradient_key(data, settings), should_stop=should_stop,
                    clean_pred=None if clean is None else clean.to(self.device),
                )
            except AttackCancelled:
                return None
            if clean is None:
                if len(self._clean) > 64:
                    self._clean.clear()
                self._clean[data.id] = attacked.clean_pred
            self.computations += 1
            seconds = time.perf_counter() - started
        return self._frame(request_id, data, settings, attacked, seconds)

    def _frame(self, request_id: int, data: SliceData, settings: AttackSettings, attacked: SliceAttack,
               seconds: float) -> Frame:
        clean = attacked.clean_pred[0].numpy()
        has_truth = data.truth is not None
        return Frame(
            request_id=request_id,
            checkpoint=self.checkpoint,
            slice_id=data.id,
            settings=settings,
            image=data.image,
            adversarial=attacked.adversarial[0, 0].cpu().numpy(),
            reference=np.asarray(data.truth, dtype=bool) if has_truth else clean,
            has_truth=has_truth,
            clean_prediction=clean,
            adversarial_prediction=attacked.adv_pred[0].numpy(),
            dsc_clean=attacked.dsc_clean[0],
            dsc_adv=attacked.dsc_adv[0],
            attack_success=attacked.attack_success[0],
            mean_clean=float(attacked.mean_clean[0]),
            mean_adv=float(attacked.mean_adv[0]),
            mean_attack_success=float(attacked.mean_attack_success[0]),
            linf=float(attacked.linf[0]),
            l2=float(attacked.l2[0]),
            seconds=seconds,
        )

    def curve(self, data: SliceData, settings: AttackSettings, eps_values=CURVE_EPS, *,
              should_stop: ShouldStop = lambda: False) -> Curve | None:
        """FGSM mean DSC at each eps for the slice and loss of ``settings`` (scored as the frames are)."""
        with self._lock:
            if should_stop():
                return None
            image, truth = self._inputs(data)
            # target None: the model's own clean prediction (also the reference when there is no truth).
            target = truth if settings.target == "gt" else None
            points = sweep(self.model, image, target, list(eps_values), loss=settings.loss, mode=settings.mode,
                           empty=settings.empty, cache=self.cache, cache_key=self._gradient_key(data, settings),
                           truth=truth)
        return Curve(self.checkpoint, data.id, settings.loss, settings.target, settings.mode,
                     tuple(float(p.eps) for p in points), tuple(float(p.mean[0]) for p in points))


def attack_config(settings: AttackSettings) -> AttackConfig:
    """core's attack configuration for the explorer's settings (the FGSM mode means nothing to BIM / PGD)."""
    return AttackConfig(
        method=settings.method, loss=settings.loss, eps=settings.eps,
        mode=settings.mode if settings.method == "fgsm" else "textbook", target=settings.target,
        steps=settings.steps, empty=settings.empty,
    )

