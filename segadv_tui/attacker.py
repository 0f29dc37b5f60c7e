"""The explorer's attack engine for one model and one slice at a time, without Textual.

The explorer's workers call :class:`SliceAttacker` and post the :class:`Frame` it returns; tests and the
benchmark call it directly. It owns the model's lock (one computation at a time, so a burst of key
presses never runs several attacks side by side), the shared sign(grad) cache (stepping FGSM's eps
costs one forward pass) and the clean predictions of the current slice, which ``prefetch`` fills ahead
for the slices the user is likely to pick next.

A frame may be scored on another loaded checkpoint (``scored_on``): the attack is crafted on the
attacker's model and the masks, scores, live steps and eps curve are the other model's, as one cell of
``segadv transfer``'s matrix.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

from core.attacks.batch import model_labels
from core.attacks.config import AttackConfig
from core.attacks.control import AttackCancelled, StopCheck
from core.attacks.gradient_cache import GradientCache, cached_gradient
from core.attacks.runner import AttackContext
from core.evaluation.scoring import attack_slice, score_slices, sweep
from core.metrics import dice_per_organ, mean_dsc
from core.models.inference import masks_from_logits
from segadv_tui.catalog import LoadedCheckpoint
from segadv_tui.frames import CURVE_EPS, CertifiedPicture, Curve, Frame, LiveStep, SliceData

LIVE_INTERVAL = 0.1  # seconds between live repaints of an iterative attack: about 10 frames a second


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


class SliceAttacker:
    """Attacks one slice at a time with one model; safe to call from worker threads."""

    def __init__(
        self,
        model: torch.nn.Module,
        checkpoint: str,
        *,
        device: str | torch.device = "cpu",
        cache: GradientCache | None = None,
    ):
        self.model = model
        self.checkpoint = checkpoint
        self.device = torch.device(device)
        self.cache = cache if cache is not None else GradientCache()
        self.computations = 0  # frames actually computed (stale requests skipped before starting are not)
        self._lock = threading.Lock()
        # Clean predictions per (checkpoint, slice id), so BIM / PGD on a known slice skip that forward pass
        # (FGSM takes its own from the cached gradient), and so does a transfer frame's scoring model.
        self._clean: dict[tuple[str, str], torch.Tensor] = {}

    def _tensor(self, array: np.ndarray) -> torch.Tensor:
        return torch.as_tensor(np.ascontiguousarray(array), dtype=torch.float32, device=self.device)[None]

    def _inputs(self, data: SliceData) -> tuple[torch.Tensor, torch.Tensor | None]:
        """(image (1, 1, S, S), ground truth (1, L, S, S) or None) on the model's device."""
        truth = None if data.truth is None else self._tensor(np.asarray(data.truth, dtype=bool))
        return self._tensor(data.image)[None], truth

    def _gradient_key(self, data: SliceData, config: AttackConfig) -> tuple:
        return (self.checkpoint, data.id, config.loss, config.target, config.mode)

    def compute(
        self,
        data: SliceData,
        config: AttackConfig,
        *,
        request_id: int = 0,
        should_stop: StopCheck = lambda: False,
        on_start: Callable[[], None] | None = None,
        on_live: Callable[[LiveStep], None] | None = None,
        live_interval: float = LIVE_INTERVAL,
        scored_on: LoadedCheckpoint | None = None,
    ) -> Frame | None:
        """The frame for ``config`` on ``data``; None when ``should_stop`` said so at a check.

        ``on_start`` runs once the model is ours and the request is still current (tests hold it there).
        An iterative attack reports its progress to ``on_live`` at most every ``live_interval`` seconds
        (and at its first step), scored from the logits its steps compute anyway (on ``scored_on``: one
        more forward pass of that model per step). ``scored_on``: crafted here, scored on that model.
        """
        with self._lock:
            if should_stop():
                return None
            if on_start is not None:
                on_start()
            started = time.perf_counter()
            image, truth = self._inputs(data)
            live = on_live is not None and config.entry.iterative
            clean = self._clean.get((self.checkpoint, data.id))
            if clean is None and live:  # the live view scores each step against it
                clean = self._clean_prediction(self.checkpoint, self.model, data.id, image, config)
            scored_clean = None
            if scored_on is not None:
                scored_clean = self._clean_prediction(str(scored_on.path), scored_on.model, data.id, image, config)
            on_step = None
            if live:
                reference_clean = (clean if scored_on is None else scored_clean).to(self.device)
                on_step = _LiveReporter(
                    request_id,
                    config,
                    data.id,
                    image,
                    truth,
                    reference_clean,
                    started,
                    on_live,
                    live_interval,
                    model_labels(self.model),
                    None if scored_on is None else scored_on.model,
                )
            context = AttackContext(
                cache=self.cache,
                cache_key=self._gradient_key(data, config),
                should_stop=should_stop,
                clean_pred=None if clean is None else clean.to(self.device),
                on_step=on_step,
            )
            try:
                (result,) = attack_slice(
                    self.model,
                    image,
                    truth,
                    config,
                    ids=[data.id],
                    context=context,
                    pictures=True,
                    scored_on=None if scored_on is None else scored_on.model,
                    scored_clean=None if scored_clean is None else scored_clean.to(self.device),
                    spacing=None if data.spacing is None else data.spacing[None],
                )
            except AttackCancelled:
                return None
            if clean is None and scored_on is None:
                clean_prediction = torch.as_tensor(result.pictures.clean_prediction)[None]
                self._remember_clean((self.checkpoint, data.id), clean_prediction)
            self.computations += 1
            seconds = time.perf_counter() - started
        return Frame(
            request_id=request_id,
            checkpoint=self.checkpoint,
            config=config,
            result=result,
            seconds=seconds,
            scored_on=None if scored_on is None else str(scored_on.path),
        )

    def prefetch(
        self,
        data: SliceData,
        config: AttackConfig,
        *,
        should_stop: StopCheck = lambda: False,
        scored_on: LoadedCheckpoint | None = None,
    ) -> bool:
        """Compute ahead, while the explorer is idle, what a frame for ``config`` on ``data`` would start
        with, into the caches that frame reads: FGSM's gradient (sign and clean prediction: the frame is
        then one forward pass), another method's clean prediction, and ``scored_on``'s clean prediction.
        The same calls as the frame's own, so the frame's numbers are those of a cold one. Each piece takes
        the model's lock on its own and checks ``should_stop`` first, so a request waits for one piece at
        most. False when it stopped before the end."""
        pieces: list[Callable[[torch.Tensor, torch.Tensor | None], object]] = []
        if config.method == "fgsm" and config.norm == "linf":  # run_fgsm's cached_gradient, with its key
            pieces.append(
                lambda image, truth: cached_gradient(
                    self.model,
                    image,
                    truth if config.target == "gt" else None,
                    config.loss,
                    config.mode,
                    cache=self.cache,
                    cache_key=self._gradient_key(data, config),
                    precision=config.precision,
                )
            )
        else:  # compute()'s context.clean_pred
            pieces.append(lambda image, _: self._clean_prediction(self.checkpoint, self.model, data.id, image, config))
        if scored_on is not None:
            pieces.append(
                lambda image, _: self._clean_prediction(str(scored_on.path), scored_on.model, data.id, image, config)
            )
        for piece in pieces:
            with self._lock:
                if should_stop():
                    return False
                piece(*self._inputs(data))
        return True

    def _clean_prediction(
        self, checkpoint: str, model: torch.nn.Module, slice_id: str, image: torch.Tensor, config: AttackConfig
    ) -> torch.Tensor:
        """``model``'s clean prediction of the slice (on the CPU), computed once per checkpoint and slice."""
        clean = self._clean.get((checkpoint, slice_id))
        if clean is None:
            from core.models.inference import predict

            clean = self._remember_clean((checkpoint, slice_id), predict(model, image, config.precision).cpu())
        return clean

    def _remember_clean(self, key: tuple[str, str], prediction: torch.Tensor) -> torch.Tensor:
        if len(self._clean) > 64:
            self._clean.clear()
        self._clean[key] = prediction
        return prediction

    def curve(
        self,
        data: SliceData,
        config: AttackConfig,
        eps_values=CURVE_EPS,
        *,
        should_stop: StopCheck = lambda: False,
        scored_on: LoadedCheckpoint | None = None,
    ) -> Curve | None:
        """FGSM mean DSC at each eps for the slice and loss of ``config`` (scored as the frames are, on
        ``scored_on`` when given)."""
        fgsm = config.replace(method="fgsm") if config.method != "fgsm" else config
        # The curve is of DSC alone, L-inf (an L2 frame's eps is marked at its per-pixel size).
        # Its own eps is unused (eps_values are swept): 0, since an L2 frame's eps may be over L-inf's bound of 1.
        fgsm = fgsm.replace(hausdorff=False, nsd_tolerance=None, norm="linf", eps=0.0)
        with self._lock:
            if should_stop():
                return None
            image, truth = self._inputs(data)
            # target None: the model's own clean prediction (also the reference when there is no truth).
            target = truth if fgsm.target == "gt" else None
            per_eps = sweep(
                self.model,
                image,
                target,
                list(eps_values),
                fgsm,
                truth=truth,
                ids=[data.id],
                cache=self.cache,
                cache_key=self._gradient_key(data, fgsm),
                scored_on=None if scored_on is None else scored_on.model,
            )
        return Curve(
            self.checkpoint,
            data.id,
            fgsm.loss,
            fgsm.target,
            fgsm.mode,
            tuple(float(eps) for eps in eps_values),
            tuple(results[0].mean_adv for results in per_eps),
            scored_on=None if scored_on is None else str(scored_on.path),
        )

    def certify(self, data: SliceData, config, empty: str = "one") -> CertifiedPicture:
        """``data`` certified by randomized smoothing with ``config`` (a ``CertifyConfig``), seeded per slice
        as ``segadv certify`` seeds it: ``config.forward_passes`` forward passes."""
        from core.attacks.iterative import slice_seed
        from core.evaluation.certify import certified_dice, certify_slice, label_masks
        from core.models.inference import predict

        labels = model_labels(self.model)
        with self._lock:
            started = time.perf_counter()
            image, truth = self._inputs(data)
            classes = certify_slice(self.model, image, config, slice_seed(config.seed, data.id))
            clean = predict(self.model, image)
        reference = (clean if truth is None else truth)[0].bool().cpu().numpy()
        positive, abstained = label_masks(classes, labels.kind, len(labels))
        return CertifiedPicture(
            slice_id=data.id,
            checkpoint=self.checkpoint,
            image=np.asarray(data.image, dtype=np.float32),
            reference=reference,
            has_truth=truth is not None,
            positive=np.asarray(positive),
            abstained=np.asarray(abstained),
            dsc_certified=certified_dice(positive, abstained, reference, empty),
            dsc_base=dice_per_organ(clean, torch.as_tensor(reference)[None].to(clean.device), empty)[0],
            abstain=abstained.reshape(len(labels), -1).mean(1).astype(np.float64),
            sigma=config.sigma,
            samples=config.n,
            radius=config.certified_radius,
            forward_passes=config.forward_passes,
            seconds=time.perf_counter() - started,
        )


class _LiveReporter:
    """The ``on_step`` of an iterative attack in the explorer: records every step's mean DSC and objective,
    and every ``interval`` seconds scores the iterate with its pictures and hands it to ``on_live``. With
    ``scored_on`` every step is scored on that model's prediction of the iterate (``clean_pred`` is its)."""

    def __init__(
        self, request_id, config, slice_id, image, truth, clean_pred, started, on_live, interval, labels, scored_on=None
    ):
        self.request_id, self.config, self.slice_id, self.labels = request_id, config, slice_id, labels
        self.image, self.clean_pred, self.started = image, clean_pred, started
        self.reference = clean_pred if truth is None else truth
        self.has_truth = truth is not None
        self.on_live, self.interval = on_live, interval
        self.scored_on = scored_on
        self.mean_dsc: list[float] = []
        self.loss: list[float] = []
        self.last = float("-inf")

    def __call__(self, step, steps, iterate, logits, loss) -> None:
        if self.scored_on is None:  # a softmax model's logits have the background channel more than its masks
            prediction = masks_from_logits(
                logits, "softmax" if logits.shape[1] > self.reference.shape[1] else "sigmoid"
            )
        else:
            from core.models.inference import predict

            prediction = predict(self.scored_on, iterate, self.config.precision)
        self.mean_dsc.append(float(mean_dsc(dice_per_organ(prediction, self.reference, self.config.empty))[0]))
        self.loss.append(float(loss.mean()))
        now = time.perf_counter()
        if now - self.last < self.interval and step > 0:
            return
        self.last = now
        (result,) = score_slices(
            [self.slice_id],
            self.config.eps,
            self.image,
            iterate,
            self.clean_pred,
            prediction,
            self.reference,
            labels=self.labels,
            empty=self.config.empty,
            score=self.config.score,
            has_truth=self.has_truth,
            pictures=True,
        )
        self.on_live(
            LiveStep(
                self.request_id,
                self.config,
                step,
                steps,
                now - self.started,
                tuple(self.mean_dsc),
                tuple(self.loss),
                result,
            )
        )
