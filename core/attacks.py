"""Adversarial attacks on the organ segmenters: FGSM (textbook and the paper's variant), BIM, PGD and a
targeted "erase organs" attack, plus the gradient cache and the eps sweep built on it.

Images are (N, 1, H, W) in [0, 1], targets (N, 3, H, W) 0/1 masks (the ground truth, or the model's
own clean prediction from ``core.metrics.predict``). Gradients are taken with ``torch.autograd.grad``
with respect to the input only, so parameters never get a ``.grad`` and nothing is toggled on the
model (safe when a front end attacks the same model from two threads); the model is run in eval mode.
Every loss is reduced per image (``core.losses``), so a batch is attacked exactly as its images one by
one. Inputs are never modified in place.

FGSM modes:

- ``textbook``: ``x_adv = clip01(x + eps * sign(grad_x L(f(x), y)))`` (Goodfellow et al.).
- ``paper``: what the paper's notebook computed, ``clip01((1 - eps) * x + eps * sign(grad_x L(y, f(x))))``
  with the loss called as ``loss(mask, logits)``: the mask is the loss's "logits" argument and the model's
  logits its "target". For BCE that makes d loss / d logits = -mask / (3 H W): the step lowers the logits
  on ground-truth pixels and ignores everything else, whatever the model predicts. Its realised L-inf
  can reach 2 eps (``(1 - eps) x`` shrinks the image too), so results always report it.

sign(grad) does not depend on eps: ``GradientCache`` keeps it per (checkpoint, slice, loss, target,
mode), and ``sweep`` turns one backward pass per image into any number of eps values with batched
forward passes.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.losses import check_loss, per_image_loss
from core.metrics import attack_success, check_empty_policy, dice_per_organ, mean_dsc
from core.names import METHODS, MODES, TARGETS  # noqa: F401  (re-exported)
from core.organs import ORGANS

PRECISIONS = ("fp32", "bf16", "fp16")

StopCheck = Callable[[], bool]


class AttackCancelled(Exception):
    """Raised when ``should_stop()`` returned True; nothing partial is returned."""


# ---------------------------------------------------------------------------------------------------
# validation and small helpers


def check_mode(mode: str) -> str:
    if mode not in MODES:
        raise ValueError(f"unknown FGSM mode {mode!r}; choose from {', '.join(MODES)}")
    return mode


def check_eps(eps: float) -> float:
    eps = float(eps)
    if not np.isfinite(eps) or not 0.0 <= eps <= 1.0:
        raise ValueError(f"eps must be in [0, 1] (pixel scale), got {eps}")
    return eps


def _check_batch(image: torch.Tensor, target: torch.Tensor | None = None) -> None:
    if image.ndim != 4 or image.shape[1] != 1:
        raise ValueError(f"image must have shape (N, 1, H, W), got {tuple(image.shape)}")
    if target is not None:
        expected = (image.shape[0], len(ORGANS), *image.shape[2:])
        if tuple(target.shape) != expected:
            raise ValueError(f"target must have shape {expected} for this image, got {tuple(target.shape)}")


def check_stop(should_stop: StopCheck | None) -> None:
    """Raise ``AttackCancelled`` when ``should_stop()`` says so (None: never)."""
    if should_stop is not None and should_stop():
        raise AttackCancelled("cancelled")


@contextmanager
def _eval_mode(model: torch.nn.Module):
    """Attacks see the model as deployed (batch norm running stats); a model left in train mode is
    switched to eval for the attack and switched back afterwards."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def precision_autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` ("fp32": none) on ``device``."""
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; choose from {', '.join(PRECISIONS)}")
    if precision == "fp32":
        return nullcontext()
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


def perturbation_norms(image: torch.Tensor, adversarial: torch.Tensor) -> tuple[np.ndarray, np.ndarray]:
    """Realised L-inf and L2 of ``adversarial - image`` per image, float64 (N,) each."""
    delta = (adversarial.detach() - image.detach()).flatten(1).float()
    linf = delta.abs().amax(dim=1) if delta.shape[1] else torch.zeros(delta.shape[0])
    l2 = delta.norm(dim=1)
    return linf.cpu().double().numpy(), l2.cpu().double().numpy()


# ---------------------------------------------------------------------------------------------------
# gradients


def _attack_loss(name: str, logits: torch.Tensor, target: torch.Tensor, mode: str) -> torch.Tensor:
    if mode == "paper":
        # Literally the notebook's call, loss(mask, logits): arguments swapped on purpose.
        return per_image_loss(name, target.to(logits.dtype), logits)
    return per_image_loss(name, logits, target)


@dataclass
class GradientEntry:
    """What one backward pass yields for a batch, and what ``GradientCache`` keeps.

    sign: int8 (N, 1, H, W) in {-1, 0, 1}; clean_pred: bool (N, 3, H, W), the prediction on the clean
    image (from the same forward pass); zero_fraction: float64 (N,), the share of pixels whose gradient
    is exactly 0 (sign 0: FGSM leaves them unchanged; in fp16 without loss scaling this is most of them).
    """

    sign: torch.Tensor
    clean_pred: torch.Tensor
    zero_fraction: np.ndarray


def input_gradients(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor | None,
    losses: Sequence[str] = ("bce",),
    mode: str = "textbook",
    *,
    precision: str = "fp32",
) -> dict[str, GradientEntry]:
    """sign(grad_x loss) for each loss from ONE forward pass, one backward per loss.

    ``target=None`` attacks the model's own clean prediction, taken from that same forward pass.

    ``precision`` "bf16" / "fp16" runs the forward under autocast (for CUDA; fp32 is the reference).
    With fp16 the gradient entering the model is rescaled per image (sign is invariant to a positive
    scale) so the small input gradients do not underflow to zero; if fp16 still gives non-finite
    gradients the batch is recomputed in fp32.
    """
    _check_batch(image, target)
    losses = [check_loss(name) for name in losses]
    if not losses:
        raise ValueError("at least one loss is needed")
    check_mode(mode)
    entries = _input_gradients(model, image, target, losses, mode, precision)
    if entries is None:  # fp16 overflow
        entries = _input_gradients(model, image, target, losses, mode, "fp32")
    return entries


def _input_gradients(model, image, target, losses, mode, precision):
    x = image.detach().clone().requires_grad_(True)
    if target is not None:
        target = target.detach()
    with _eval_mode(model), torch.enable_grad():
        with precision_autocast(image.device, precision):
            logits = model(x)
        logits = logits.float()
        clean_pred = logits.detach() > 0
        if target is None:
            target = clean_pred
        entries = {}
        for index, name in enumerate(losses):
            loss = _attack_loss(name, logits, target, mode).sum()
            keep_graph = index < len(losses) - 1
            if precision == "fp16":
                # d loss / d logits in fp32, rescaled per image to a peak of 1 before it enters the fp16
                # graph: no underflow (nor overflow) on the way back, and the sign is unchanged.
                (grad_logits,) = torch.autograd.grad(loss, logits, retain_graph=True)
                peak = grad_logits.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
                (grad,) = torch.autograd.grad(logits, x, grad_outputs=grad_logits / peak.view(-1, 1, 1, 1), retain_graph=keep_graph)
                if not torch.isfinite(grad).all():
                    return None
            else:
                (grad,) = torch.autograd.grad(loss, x, retain_graph=keep_graph)
            sign = grad.sign().to(torch.int8)
            zero_fraction = (sign == 0).flatten(1).float().mean(dim=1).cpu().double().numpy()
            entries[name] = GradientEntry(sign=sign, clean_pred=clean_pred, zero_fraction=zero_fraction)
    return entries


def gradient_sign(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    loss: str = "bce",
    mode: str = "textbook",
    *,
    precision: str = "fp32",
) -> torch.Tensor:
    """sign(grad_x L) as used by FGSM in ``mode``, same shape and dtype as ``image``."""
    entry = input_gradients(model, image, target, (loss,), mode, precision=precision)[loss]
    return entry.sign.to(image.dtype)


def apply_sign(image: torch.Tensor, sign: torch.Tensor, eps, mode: str = "textbook") -> torch.Tensor:
    """The FGSM step for a known gradient sign; ``eps`` a number or a tensor broadcastable to ``image``.

    Both the plain and the cached path come through here, so their results agree bit for bit.
    """
    check_mode(mode)
    eps_t = torch.as_tensor(eps, dtype=image.dtype, device=image.device)
    step = eps_t * sign.to(image.dtype)
    if mode == "paper":
        return ((1 - eps_t) * image + step).clamp(0.0, 1.0)
    return (image + step).clamp(0.0, 1.0)


def fgsm(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    loss: str = "bce",
    mode: str = "textbook",
    *,
    precision: str = "fp32",
) -> torch.Tensor:
    """Fast gradient sign method, untargeted (raises the loss against ``target``); see the module doc."""
    eps = check_eps(eps)
    sign = input_gradients(model, image, target, (loss,), mode, precision=precision)[loss].sign
    return apply_sign(image.detach(), sign, eps, mode)


# ---------------------------------------------------------------------------------------------------
# iterative attacks (textbook formulation only)


def default_step_size(eps: float, steps: int) -> float:
    """2.5 eps / steps (Madry et al.): enough to reach the ball's surface and move along it."""
    return 2.5 * eps / steps


def _iterate(model, image, start, eps, steps, step_size, objective, direction, should_stop):
    """Signed-gradient steps on ``objective(logits) -> (N,)``, projected to the eps ball and [0, 1]."""
    eps = check_eps(eps)
    if steps < 1:
        raise ValueError(f"steps must be at least 1, got {steps}")
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    if not np.isfinite(alpha) or alpha < 0:
        raise ValueError(f"step_size must be a non-negative number, got {step_size}")
    clean = image.detach()
    lower, upper = (clean - eps).clamp(min=0.0), (clean + eps).clamp(max=1.0)
    adversarial = start
    with _eval_mode(model):
        for _ in range(steps):
            check_stop(should_stop)
            x = adversarial.detach().requires_grad_(True)
            with torch.enable_grad():
                (grad,) = torch.autograd.grad(objective(model(x)).sum(), x)
            adversarial = torch.minimum(torch.maximum(x.detach() + direction * alpha * grad.sign(), lower), upper)
    return adversarial.detach()


def bim(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str = "bce",
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """Basic iterative method / I-FGSM (Kurakin et al.): ``steps`` FGSM steps of ``step_size`` (default
    2.5 eps / steps) from the clean image, each projected to the L-inf eps ball and to [0, 1]: PGD
    without the random start."""
    return pgd(
        model, image, target, eps, steps=steps, step_size=step_size, loss=loss, random_start=False,
        should_stop=should_stop,
    )


def pgd(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    loss: str = "bce",
    random_start: bool = True,
    generator: torch.Generator | None = None,
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.): BIM from a uniformly random start in the eps ball
    (clipped to [0, 1]); pass a seeded ``generator`` for a reproducible start."""
    _check_batch(image, target)
    check_loss(loss)
    eps = check_eps(eps)
    start = image.detach().clone()
    if random_start:
        noise_device = generator.device if generator is not None else image.device
        noise = torch.rand(image.shape, generator=generator, device=noise_device, dtype=image.dtype)
        start = (start + (2 * noise.to(image.device) - 1) * eps).clamp(0.0, 1.0)
    target = target.detach()
    return _iterate(
        model, image, start, eps, steps, step_size,
        lambda logits: per_image_loss(loss, logits.float(), target), +1.0, should_stop,
    )


def organ_indices(organs: Sequence[str | int] | str | int) -> list[int]:
    """Organ names (``core.organs.ORGANS``) or channel indices -> sorted unique channel indices."""
    if isinstance(organs, (str, int)):
        organs = [organs]
    indices = set()
    for organ in organs:
        if isinstance(organ, str):
            if organ not in ORGANS:
                raise ValueError(f"unknown organ {organ!r}; choose from {', '.join(ORGANS)}")
            indices.add(ORGANS.index(organ))
        elif 0 <= int(organ) < len(ORGANS):
            indices.add(int(organ))
        else:
            raise ValueError(f"organ index {organ} out of range 0..{len(ORGANS) - 1}")
    if not indices:
        raise ValueError("choose at least one organ to erase")
    return sorted(indices)


def erase_organs(
    model: torch.nn.Module,
    image: torch.Tensor,
    organs: Sequence[str | int] | str | int,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    should_stop: StopCheck | None = None,
) -> torch.Tensor:
    """Targeted attack: descend BCE(logits of ``organs``, 0) so those organs vanish from the prediction,
    leaving the other organs' logits out of the objective. Projected like ``bim``."""
    _check_batch(image)
    channels = organ_indices(organs)

    def objective(logits: torch.Tensor) -> torch.Tensor:
        chosen = logits[:, channels].float()
        return F.binary_cross_entropy_with_logits(chosen, torch.zeros_like(chosen), reduction="none").flatten(1).mean(1)

    return _iterate(model, image, image.detach().clone(), eps, steps, step_size, objective, -1.0, should_stop)


# ---------------------------------------------------------------------------------------------------
# one gradient, many eps


class GradientCache:
    """LRU of ``GradientEntry`` (sign(grad), clean prediction) keyed by whatever identifies the gradient:
    by convention ``(checkpoint id, slice id(s), loss, target kind, mode)``. Thread-safe; ``compute``
    runs outside the lock (two threads may compute the same key once each; the last one is kept)."""

    def __init__(self, max_entries: int = 256):
        if max_entries < 1:
            raise ValueError(f"max_entries must be at least 1, got {max_entries}")
        self.max_entries = max_entries
        self._entries: OrderedDict[Hashable, object] = OrderedDict()
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def get(self, key: Hashable):
        with self._lock:
            if key in self._entries:
                self._entries.move_to_end(key)
                self.hits += 1
                return self._entries[key]
            return None

    def put(self, key: Hashable, value) -> None:
        with self._lock:
            self._entries[key] = value
            self._entries.move_to_end(key)
            while len(self._entries) > self.max_entries:
                self._entries.popitem(last=False)

    def get_or_compute(self, key: Hashable, compute: Callable[[], object]):
        value = self.get(key)
        if value is not None:
            return value
        with self._lock:
            self.misses += 1
        value = compute()
        self.put(key, value)
        return value

    def clear(self) -> None:
        with self._lock:
            self._entries.clear()

    def __contains__(self, key: Hashable) -> bool:
        with self._lock:
            return key in self._entries

    def __len__(self) -> int:
        with self._lock:
            return len(self._entries)


def cached_gradient(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor | None,
    loss: str = "bce",
    mode: str = "textbook",
    *,
    cache: GradientCache | None = None,
    cache_key: Hashable | None = None,
    precision: str = "fp32",
) -> GradientEntry:
    """``input_gradients`` for one loss, taken from ``cache`` when it holds ``cache_key`` (which must
    identify the gradient: checkpoint, slice id(s), loss, target kind, mode) and kept there otherwise."""
    def compute() -> GradientEntry:
        return input_gradients(model, image, target, (loss,), mode, precision=precision)[loss]

    if cache is None:
        return compute()
    if cache_key is None:
        raise ValueError("a cache needs a cache_key: (checkpoint, slice, loss, target, mode)")
    return cache.get_or_compute(cache_key, compute)


@dataclass
class SweepPoint:
    """One eps of a sweep, for a batch of N slices. Arrays are float64 numpy, masks/images CPU tensors.

    dsc / dsc_clean: (N, 3) per organ (NaN where the empty policy skips); mean / mean_clean: (N,);
    attack_success: (N, 3), NaN where DSC_clean is 0; linf / l2: (N,) realised perturbation norms;
    zero_grad_fraction: (N,); adv_pred: bool (N, 3, H, W); adv_image: (N, 1, H, W).
    """

    eps: float
    adv_pred: torch.Tensor
    dsc: np.ndarray
    mean: np.ndarray
    attack_success: np.ndarray
    linf: np.ndarray
    l2: np.ndarray
    dsc_clean: np.ndarray
    mean_clean: np.ndarray
    mean_attack_success: np.ndarray
    zero_grad_fraction: np.ndarray
    adv_image: torch.Tensor


def default_chunk_size(device: torch.device) -> int:
    """Images per no-grad forward pass in a sweep. On CPU big batches are slower per image once the
    activations leave the caches (small model at 128 x 128: ~47 ms per image at 4 to 8 images, ~100 ms
    at 40); a GPU wants big batches."""
    return 128 if device.type == "cuda" else 8


def adversarial_predictions(
    model: torch.nn.Module,
    image: torch.Tensor,
    sign: torch.Tensor,
    eps_values: Sequence[float],
    mode: str = "textbook",
    *,
    chunk_size: int | None = None,
    precision: str = "fp32",
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """(adversarial image, predicted masks) for every eps, from a known sign: the k * N adversarial
    images go through the model in batches of about ``chunk_size`` images (whole eps groups of N),
    without autograd. Default: ``default_chunk_size``."""
    _check_batch(image)
    n = image.shape[0]
    eps_values = [check_eps(eps) for eps in eps_values]
    if chunk_size is None:
        chunk_size = default_chunk_size(image.device)
    per_chunk = max(1, chunk_size // max(n, 1))
    clean = image.detach()
    results = []
    with _eval_mode(model), torch.no_grad():
        for start in range(0, len(eps_values), per_chunk):
            group = eps_values[start : start + per_chunk]
            eps_t = torch.tensor(group, dtype=clean.dtype, device=clean.device).view(-1, 1, 1, 1, 1)
            adversarial = apply_sign(clean.unsqueeze(0), sign.unsqueeze(0), eps_t, mode)
            with precision_autocast(clean.device, precision):
                logits = model(adversarial.flatten(0, 1))
            predicted = (logits > 0).unflatten(0, (len(group), n))
            results.extend(zip(adversarial.unbind(0), predicted.unbind(0)))
    return results


def sweep(
    model: torch.nn.Module,
    image: torch.Tensor,
    target: torch.Tensor,
    eps_values: Sequence[float],
    loss: str = "bce",
    mode: str = "textbook",
    empty: str = "one",
    cache: GradientCache | None = None,
    cache_key: Hashable | None = None,
    *,
    truth: torch.Tensor | None = None,
    gradient: GradientEntry | None = None,
    chunk_size: int | None = None,
    precision: str = "fp32",
) -> list[SweepPoint]:
    """FGSM at every eps in ``eps_values`` with one backward pass per image (or none, from ``cache``
    / ``gradient``) and batched forward passes; DSC is scored against ``truth`` (default: ``target``;
    ``target=None`` attacks the model's own clean prediction and, without ``truth``, scores against it).

    With a cache, ``cache_key`` must identify the gradient: (checkpoint, slice id(s), loss, target kind,
    mode). Stepping eps in a front end is then one forward pass of the adversarial batch.
    """
    _check_batch(image, target)
    check_loss(loss)
    check_mode(mode)
    check_empty_policy(empty)
    if truth is None:
        truth = target
    _check_batch(image, truth)
    if gradient is None:
        gradient = cached_gradient(model, image, target, loss, mode, cache=cache, cache_key=cache_key, precision=precision)
    if not isinstance(gradient, GradientEntry):
        raise TypeError(f"expected a GradientEntry, got {type(gradient).__name__} (cache key {cache_key!r})")
    truth_cpu = (gradient.clean_pred if truth is None else truth).detach().to("cpu").bool()
    dsc_clean = dice_per_organ(gradient.clean_pred.cpu(), truth_cpu, empty)
    mean_clean = mean_dsc(dsc_clean)
    points = []
    outputs = adversarial_predictions(model, image, gradient.sign, eps_values, mode, chunk_size=chunk_size, precision=precision)
    for eps, (adversarial, predicted) in zip(eps_values, outputs):
        adv_pred = predicted.cpu()
        dsc = dice_per_organ(adv_pred, truth_cpu, empty)
        mean = mean_dsc(dsc)
        linf, l2 = perturbation_norms(image, adversarial)
        points.append(
            SweepPoint(
                eps=float(eps), adv_pred=adv_pred, dsc=dsc, mean=mean,
                attack_success=attack_success(dsc_clean, dsc), linf=linf, l2=l2,
                dsc_clean=dsc_clean, mean_clean=mean_clean, mean_attack_success=attack_success(mean_clean, mean),
                zero_grad_fraction=gradient.zero_fraction, adv_image=adversarial.cpu(),
            )
        )
    return points
