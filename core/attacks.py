"""Adversarial attacks on the organ segmenters: FGSM (textbook and the paper's variant), BIM, PGD and a
targeted "erase organs" attack, the registry's runners (``core.attack_config.METHODS``), and the gradient
cache and batched adversarial forward passes that ``core.evaluation.sweep`` builds on (APGD and the
ensemble: ``core.apgd``, ``core.ensemble``).

Images are (N, 1, H, W) in [0, 1], targets (N, 3, H, W) 0/1 masks (the ground truth, or the model's
own clean prediction from ``core.metrics.predict``). Gradients are taken with ``torch.autograd.grad``
with respect to the input only, so parameters never get a ``.grad`` and ``requires_grad`` is never
toggled. The model is run in eval mode: a model left in train mode is switched to eval for the call and
back afterwards (front ends keep their models in eval mode, so two threads never see a switch).
Every loss is reduced per image (``core.losses``), so a batch is attacked exactly as its images one by
one. Inputs are never modified in place.

FGSM modes:

- ``textbook``: ``x_adv = clip01(x + eps * sign(grad_x L(f(x), y)))`` (Goodfellow et al.).
- ``paper``: what the paper's notebook computed, ``clip01((1 - eps) * x + eps * sign(grad_x L(y, f(x))))``
  with the loss called as ``loss(mask, logits)``: the mask is the loss's "logits" argument and the model's
  logits its "target". For BCE that makes d loss / d logits = -mask / (3 H W): the step lowers the logits
  on ground-truth pixels and ignores everything else, whatever the model predicts. Its realised L-inf
  can reach 2 eps (``(1 - eps) x`` shrinks the image too), so results always report it. As in the
  notebook, x is the grey slice copied to 3 channels and the sign is taken per channel (the three
  channel gradients disagree in sign on most pixels): the adversarial input is (N, 3, H, W), scored as
  such, its norms measured in that 3-channel space and its pictures showing the channel mean.

sign(grad) does not depend on eps: ``GradientCache`` keeps it per (checkpoint, slice, loss, target,
mode), and ``core.evaluation.sweep`` turns one backward pass per image into any number of eps values with batched
forward passes.

Iterative attacks can keep their best iterate (``BestIterate``): per slice the point whose prediction has
the lowest mean DSC against the scoring reference, from the forward passes the attack makes anyway.
Random starts are drawn per slice from a seed derived from the slice id (``random_start_point``), so a slice
starts from the same point whatever batch, process or device it is attacked in.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from core.attack_config import PRECISIONS, AttackConfig, check_eps
from core.errors import OptionError, check_choice
from core.losses import check_loss, per_image_loss
from core.names import MODES, TARGETS  # noqa: F401  (re-exported)
from core.organs import ORGANS

StopCheck = Callable[[], bool]
# on_step(step, steps, iterate, logits, loss): an iterative attack's progress, for live views. Called
# once per step with the iterate the step starts from (step 0: the start point), its fp32 logits and its
# per-image objective, all computed anyway for the step's gradient, so watching costs no extra pass.
StepCallback = Callable[[int, int, torch.Tensor, torch.Tensor, torch.Tensor], None]


class AttackCancelled(Exception):
    """Raised when ``should_stop()`` returned True; nothing partial is returned."""


# ---------------------------------------------------------------------------------------------------
# validation and small helpers


def check_mode(mode: str) -> str:
    return check_choice(mode, MODES, "FGSM mode")


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
def eval_mode(model: torch.nn.Module):
    """Attacks and scores see the model as deployed (batch norm running stats); a model left in train
    mode is switched to eval for the call and switched back afterwards."""
    was_training = model.training
    if was_training:
        model.eval()
    try:
        yield
    finally:
        if was_training:
            model.train()


def precision_autocast(device: torch.device, precision: str):
    """The autocast context for ``precision`` on ``device``. "fp32" is the reference: on CUDA it also
    turns TF32 off (``reference_math``), so fp32 convolutions are true fp32."""
    check_choice(precision, PRECISIONS, "precision")
    if precision == "fp32":
        return reference_math(device, precision)
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return torch.autocast(device_type=device.type, dtype=dtype)


@contextmanager
def reference_math(device: torch.device, precision: str = "fp32"):
    """For fp32 on CUDA, TF32 off in matmuls and cuDNN convolutions, forward and backward: cuDNN's TF32
    (its default for convolutions) rounds inputs to 10 mantissa bits, which flips gradient signs near 0
    and makes a batch differ from its slices one by one. Elsewhere nothing changes."""
    if precision != "fp32" or device.type != "cuda":
        yield
        return
    saved = torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = torch.backends.cudnn.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32, torch.backends.cudnn.allow_tf32 = saved


def safe_logits(model: torch.nn.Module, image: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """fp32 logits of ``model(image)`` run at ``precision``; a reduced-precision pass that overflowed
    (non-finite logits would score as empty masks, crediting the damage to the attack) is redone in fp32."""
    with precision_autocast(image.device, precision):
        logits = model(image).float()
    if precision != "fp32" and not torch.isfinite(logits).all():
        with precision_autocast(image.device, "fp32"):
            logits = model(image).float()
    return logits


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

    sign: int8 (N, 1, H, W) in {-1, 0, 1}, (N, 3, H, W) in the paper's mode; clean_pred: bool (N, 3, H, W), the prediction on the clean
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
    with reference_math(image.device, precision):
        entries = _input_gradients(model, image, target, losses, mode, precision)
    if entries is None:  # fp16 overflow
        with reference_math(image.device, "fp32"):
            entries = _input_gradients(model, image, target, losses, mode, "fp32")
    return entries


def _input_gradients(model, image, target, losses, mode, precision):
    # The paper's notebook fed the slice copied to 3 channels and took each channel's own gradient.
    x = (image.detach().repeat(1, 3, 1, 1) if mode == "paper" else image.detach().clone()).requires_grad_(True)
    if target is not None:
        target = target.detach()
    with eval_mode(model), torch.enable_grad():
        with precision_autocast(image.device, precision):
            logits = model(x)
        logits = logits.float()
        clean_pred = logits.detach() > 0
        if target is None:
            target = clean_pred
        entries = {}
        for index, name in enumerate(losses):
            loss = _attack_loss(name, logits, target, mode).sum()
            grad = _input_gradient(loss, logits, x, precision, retain_graph=index < len(losses) - 1)
            if grad is None:
                return None
            sign = grad.sign().to(torch.int8)
            zero_fraction = (sign == 0).flatten(1).float().mean(dim=1).cpu().double().numpy()
            entries[name] = GradientEntry(sign=sign, clean_pred=clean_pred, zero_fraction=zero_fraction)
    return entries


def _input_gradient(loss, logits, x, precision, *, retain_graph=False):
    """d loss / d x; None when an fp16 pass gave non-finite gradients (the caller redoes it in fp32).

    In fp16, d loss / d logits is taken in fp32 and rescaled per image to a peak of 1 before it enters the
    fp16 graph: no underflow (nor overflow) on the way back, and the sign, all an L-inf attack uses, is
    unchanged."""
    if precision != "fp16":
        (grad,) = torch.autograd.grad(loss, x, retain_graph=retain_graph)
        return grad
    (grad_logits,) = torch.autograd.grad(loss, logits, retain_graph=True)
    peak = grad_logits.flatten(1).abs().amax(dim=1).clamp_min(torch.finfo(torch.float32).tiny)
    scale = peak.view(-1, *([1] * (grad_logits.ndim - 1)))
    (grad,) = torch.autograd.grad(logits, x, grad_outputs=grad_logits / scale, retain_graph=retain_graph)
    return grad if torch.isfinite(grad).all() else None


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
    A 3-channel sign (the paper's mode) on a 1-channel image gives the 3-channel adversarial input.

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


def loss_and_gradient(model, x, objective, step: int, precision: str = "fp32", *, need_grad: bool = True):
    """(objective per image (N,), d sum(objective) / dx or None, fp32 logits) at ``x``, all detached:
    one forward (and backward) pass of an iterative attack. ``objective(logits, step)`` -> (N,), ``step``
    1-based. An fp16 pass that overflows is redone in fp32; without ``need_grad`` only the forward runs."""
    x = x.detach().requires_grad_(need_grad)
    with torch.enable_grad() if need_grad else torch.no_grad():
        for attempt in dict.fromkeys((precision, "fp32")):
            with precision_autocast(x.device, attempt):
                logits = model(x)
            logits = logits.float()
            if not need_grad:
                if attempt == "fp32" or torch.isfinite(logits).all():
                    return objective(logits, step).detach(), None, logits
                continue
            values = objective(logits, step)
            grad = _input_gradient(values.sum(), logits, x, attempt)
            if grad is not None:
                return values.detach(), grad, logits.detach()
    raise AssertionError("unreachable: the fp32 pass always returns")


class BestIterate:
    """Per slice, the iterate whose prediction has the lowest mean DSC against ``reference`` (ties: the
    higher loss), with that prediction and DSC. Fed by the attack's own forward passes, so it costs no
    extra pass; the last iterate is among the candidates, so the result is never worse than it.
    ``empty`` is the scoring's empty-organ policy; a slice whose every organ is skipped (NaN) counts as
    the worst score for the attacker."""

    def __init__(self, reference: torch.Tensor, empty: str = "one"):
        self.reference = reference.detach().bool()
        self.empty = empty
        self.adversarial: torch.Tensor | None = None
        self.prediction: torch.Tensor | None = None
        self.dsc: torch.Tensor | None = None
        self.loss: torch.Tensor | None = None

    def update(self, x: torch.Tensor, logits: torch.Tensor, loss: torch.Tensor) -> None:
        from core.metrics import mean_dice_on_device

        prediction = logits.detach() > 0
        dsc = mean_dice_on_device(prediction, self.reference, self.empty)
        dsc = torch.where(torch.isnan(dsc), torch.inf, dsc)
        loss = loss.detach().double()
        if self.dsc is None:
            self.adversarial, self.prediction, self.dsc, self.loss = x.detach().clone(), prediction, dsc, loss
            return
        better = (dsc < self.dsc) | ((dsc == self.dsc) & (loss > self.loss))
        self.adversarial = torch.where(_per_image(better, x), x.detach(), self.adversarial)
        self.prediction = torch.where(_per_image(better, prediction), prediction, self.prediction)
        self.dsc, self.loss = torch.where(better, dsc, self.dsc), torch.where(better, loss, self.loss)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    """(N,) values shaped to broadcast over a batch like ``like``."""
    return values.view(-1, *([1] * (like.ndim - 1)))


def _iterate(model, image, start, eps, steps, step_size, objective, direction, should_stop,
             precision="fp32", on_step=None, tracker: BestIterate | None = None):
    """Signed-gradient steps on ``objective(logits, step) -> (N,)``, projected to the eps ball and [0, 1].
    With a ``tracker`` every iterate, the last included (one more forward pass), is offered to it."""
    eps = check_eps(eps)
    if isinstance(steps, bool) or int(steps) != steps or steps < 1:
        raise OptionError(f"steps must be a whole number of at least 1, got {steps}")
    alpha = default_step_size(eps, steps) if step_size is None else float(step_size)
    if not np.isfinite(alpha) or alpha < 0:
        raise OptionError(f"step size must be a non-negative number, got {step_size}")
    clean = image.detach()
    lower, upper = (clean - eps).clamp(min=0.0), (clean + eps).clamp(max=1.0)
    adversarial = start.detach()
    with eval_mode(model), reference_math(image.device, precision):
        for step in range(steps):
            check_stop(should_stop)
            values, grad, logits = loss_and_gradient(model, adversarial, objective, step + 1, precision)
            if tracker is not None:
                tracker.update(adversarial, logits, values)
            if on_step is not None:
                on_step(step, steps, adversarial, logits, values)
            adversarial = torch.minimum(torch.maximum(adversarial + direction * alpha * grad.sign(), lower), upper)
        if tracker is not None:
            values, _, logits = loss_and_gradient(model, adversarial, objective, steps + 1, precision, need_grad=False)
            tracker.update(adversarial, logits, values)
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
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Basic iterative method / I-FGSM (Kurakin et al.): ``steps`` FGSM steps of ``step_size`` (default
    2.5 eps / steps) from the clean image, each projected to the L-inf eps ball and to [0, 1]: PGD
    without the random start."""
    return pgd(
        model, image, target, eps, steps=steps, step_size=step_size, loss=loss, random_start=False,
        precision=precision, should_stop=should_stop, on_step=on_step,
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
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Projected gradient descent (Madry et al.): BIM from a uniformly random start in the eps ball
    (clipped to [0, 1]): one draw from ``generator`` for the batch, or without one the per-position
    seeds of ``random_start_point`` (seed 0)."""
    _check_batch(image, target)
    check_loss(loss)
    eps = check_eps(eps)
    start = random_start_point(image, eps, generator=generator) if random_start else image.detach().clone()
    return _pgd_from(model, image, target, start, eps, steps, step_size, loss, precision, should_stop, on_step)


def _pgd_from(model, image, target, start, eps, steps, step_size, loss, precision, should_stop, on_step,
              tracker: BestIterate | None = None) -> torch.Tensor:
    target = target.detach()
    return _iterate(
        model, image, start, eps, steps, step_size,
        lambda logits, step: per_image_loss(loss, logits, target, schedule=(step, steps)), +1.0, should_stop,
        precision, on_step, tracker,
    )


def slice_seed(seed: int, slice_id: str) -> int:
    """A 63-bit seed for one slice's random start, from the run's seed and the slice id."""
    digest = hashlib.blake2b(f"{int(seed)}:{slice_id}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "little") >> 1


def random_start_point(image: torch.Tensor, eps: float, *, seed: int = 0, ids: Sequence[str] | None = None,
                 generator: torch.Generator | None = None) -> torch.Tensor:
    """``image`` plus uniform noise in [-eps, eps], clipped to [0, 1].

    With ``generator``, one draw for the whole batch. Otherwise each slice draws its own noise on the
    CPU from ``slice_seed(seed, id)`` (ids default to the batch positions), so a slice starts from the
    same point in any batch, on any rank and any device."""
    image = image.detach()
    if generator is not None:
        noise = torch.rand(image.shape, generator=generator, device=generator.device, dtype=image.dtype)
    else:
        ids = [str(i) for i in range(image.shape[0])] if ids is None else list(ids)
        if len(ids) != image.shape[0]:
            raise ValueError(f"{len(ids)} slice ids for a batch of {image.shape[0]}")
        noise = torch.stack([
            torch.rand(image.shape[1:], generator=torch.Generator().manual_seed(slice_seed(seed, i)), dtype=image.dtype)
            for i in ids
        ])
    return (image + (2 * noise.to(image.device) - 1) * eps).clamp(0.0, 1.0)


def organ_indices(organs: Sequence[str | int] | str | int) -> list[int]:
    """Organ names (``core.organs.ORGANS``) or channel indices -> sorted unique channel indices."""
    if isinstance(organs, (str, int)):
        organs = [organs]
    indices = set()
    for organ in organs:
        if isinstance(organ, str):
            indices.add(ORGANS.index(check_choice(organ, ORGANS, "organ")))
        elif 0 <= int(organ) < len(ORGANS):
            indices.add(int(organ))
        else:
            raise OptionError(f"organ index {organ} out of range 0..{len(ORGANS) - 1}")
    if not indices:
        raise OptionError("choose at least one organ to erase")
    return sorted(indices)


def erase_organs(
    model: torch.nn.Module,
    image: torch.Tensor,
    organs: Sequence[str | int] | str | int,
    eps: float,
    *,
    steps: int = 10,
    step_size: float | None = None,
    precision: str = "fp32",
    should_stop: StopCheck | None = None,
    on_step: StepCallback | None = None,
) -> torch.Tensor:
    """Targeted attack: descend BCE(logits of ``organs``, 0) so those organs vanish from the prediction,
    leaving the other organs' logits out of the objective. Projected like ``bim``."""
    _check_batch(image)
    channels = organ_indices(organs)

    def objective(logits: torch.Tensor, step: int) -> torch.Tensor:
        chosen = logits[:, channels].float()
        return F.binary_cross_entropy_with_logits(chosen, torch.zeros_like(chosen), reduction="none").flatten(1).mean(1)

    return _iterate(model, image, image.detach().clone(), eps, steps, step_size, objective, -1.0, should_stop,
                    precision, on_step)


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
    images go through the model, without autograd, in batches of at most ``chunk_size`` images (whole
    eps groups of N where N fits; a larger N is split). Default: ``default_chunk_size``."""
    _check_batch(image)
    n = image.shape[0]
    eps_values = [check_eps(eps) for eps in eps_values]
    if chunk_size is None:
        chunk_size = default_chunk_size(image.device)
    chunk_size = max(1, int(chunk_size))
    clean = image.detach()
    results = []
    with eval_mode(model), torch.no_grad():
        if n <= chunk_size:
            per_chunk = chunk_size // max(n, 1)
            for start in range(0, len(eps_values), per_chunk):
                group = eps_values[start : start + per_chunk]
                eps_t = torch.tensor(group, dtype=clean.dtype, device=clean.device).view(-1, 1, 1, 1, 1)
                adversarial = apply_sign(clean.unsqueeze(0), sign.unsqueeze(0), eps_t, mode)
                predicted = (safe_logits(model, adversarial.flatten(0, 1), precision) > 0).unflatten(0, (len(group), n))
                results.extend(zip(adversarial.unbind(0), predicted.unbind(0)))
            return results
        for eps in eps_values:  # one eps group is already more than a chunk: split it
            adversarial = apply_sign(clean, sign, eps, mode)
            predicted = torch.cat([
                safe_logits(model, adversarial[start : start + chunk_size], precision) > 0
                for start in range(0, n, chunk_size)
            ])
            results.append((adversarial, predicted))
    return results


# ---------------------------------------------------------------------------------------------------
# the registry's runners: one signature for every method (``core.attack_config.METHODS``)


@dataclass
class AttackContext:
    """What a runner may use beyond the config: a gradient cache (FGSM; ``cache_key`` identifies the
    gradient: checkpoint, slice id(s), loss, target, mode), the clean prediction when already known, a
    generator for random starts (default: per slice, from ``config.seed`` and ``ids``, see
    ``random_start_point``), the slice ids, the scoring reference (the ground truth; None: the clean
    prediction), which the best iterate is judged against, a stop check and a per-iteration callback
    for live views. ``predict_result`` False: the caller scores the result on another model (a
    transfer), so a runner need not spend a forward pass predicting it with the attacked one."""

    cache: GradientCache | None = None
    cache_key: Hashable | None = None
    clean_pred: torch.Tensor | None = None
    generator: torch.Generator | None = None
    should_stop: StopCheck | None = None
    on_step: StepCallback | None = None
    ids: Sequence[str] | None = None
    reference: torch.Tensor | None = None
    predict_result: bool = True


@dataclass
class AttackOutput:
    """A runner's result: the adversarial batch, and what it learnt on the way (None: not computed);
    ``members``: for the ensemble, the member that won each slice."""

    adversarial: torch.Tensor
    clean_pred: torch.Tensor | None = None
    adv_pred: torch.Tensor | None = None
    zero_grad_fraction: np.ndarray | None = None
    members: list[str] | None = None


def run_attack(model, image, target, config: AttackConfig, context: AttackContext | None = None) -> AttackOutput:
    """``config``'s attack on ``image`` against ``target`` (None: the model's own clean prediction)."""
    context = context or AttackContext()
    check_stop(context.should_stop)
    return config.entry.function()(model, image, target, config, context)


def run_fgsm(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """FGSM from the (cached) gradient; its clean prediction comes from the gradient's own forward pass,
    and the adversarial prediction from one more forward pass (none when ``context.predict_result`` is off)."""
    entry = cached_gradient(model, image, target, config.loss, config.mode, cache=context.cache,
                            cache_key=context.cache_key, precision=config.precision)
    if not context.predict_result:
        return AttackOutput(apply_sign(image.detach(), entry.sign, config.eps, config.mode), entry.clean_pred,
                            zero_grad_fraction=entry.zero_fraction)
    adversarial, adv_pred = adversarial_predictions(model, image, entry.sign, [config.eps], config.mode,
                                                    precision=config.precision)[0]
    return AttackOutput(adversarial, entry.clean_pred, adv_pred, entry.zero_fraction)


def _clean_prediction(model, image, config: AttackConfig, context: AttackContext) -> torch.Tensor:
    if context.clean_pred is not None:
        return context.clean_pred.to(image.device)
    from core.metrics import predict

    return predict(model, image, config.precision)


def scoring_reference(clean_pred: torch.Tensor, context: AttackContext) -> torch.Tensor:
    """What a slice is scored against: the ground truth given in ``context``, else the clean prediction."""
    return clean_pred if context.reference is None else context.reference.to(clean_pred.device)


def run_iterative(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """BIM (from the clean image) or PGD (from a random start: ``context.generator``, else per slice from
    ``config.seed``), with the best iterate by DSC when ``config.best_iterate``."""
    _check_batch(image, target)
    check_loss(config.loss)
    clean_pred = _clean_prediction(model, image, config, context)
    if config.method == "pgd":
        start = random_start_point(image, config.eps, seed=config.seed, ids=context.ids, generator=context.generator)
    else:
        start = image.detach().clone()
    tracker = BestIterate(scoring_reference(clean_pred, context), config.empty) if config.best_iterate else None
    adversarial = _pgd_from(
        model, image, clean_pred.float() if target is None else target, start, config.eps, config.steps,
        config.step_size, config.loss, config.precision, context.should_stop, context.on_step, tracker,
    )
    if tracker is not None:
        return AttackOutput(tracker.adversarial, clean_pred, tracker.prediction)
    return AttackOutput(adversarial, clean_pred)


def run_erase(model, image, target, config: AttackConfig, context: AttackContext) -> AttackOutput:
    """The targeted erasure of ``config.organs`` (its own objective: ``target`` and the loss do not apply)."""
    clean_pred = _clean_prediction(model, image, config, context)
    adversarial = erase_organs(
        model, image, config.organs, config.eps, steps=config.steps, step_size=config.step_size,
        precision=config.precision, should_stop=context.should_stop, on_step=context.on_step,
    )
    return AttackOutput(adversarial, clean_pred)
