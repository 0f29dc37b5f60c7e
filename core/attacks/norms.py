"""The threat models: the L-inf and L2 balls an attack searches, their projections and normalised steps.

An attack's perturbation ``delta = x_adv - x`` of a slice (N, 1, H, W) in [0, 1] is bounded per slice:

- ``linf``: every pixel moves by at most eps; the steepest step is ``sign(g)``;
- ``l2``: the L2 norm of the whole slice's delta, ``sqrt(sum delta_ij^2)`` in [0, 1] pixel units, is at
  most eps; the steepest step is ``g / ||g||_2`` (per slice).

The scale of L2 eps: a full-sign perturbation of L-inf eps e on an S x S slice has L2 norm ``S * e``
(``sqrt(S * S) * e``), so L-inf 0.009 on a 128 px slice is as large as L2 1.15 spread evenly, and L2 eps
of 0.5 / 1 / 2 on 128 px are (in energy) L-inf 0.004 / 0.008 / 0.016 spread over every pixel. An L2 attack
may spend the budget on a few pixels instead: L2 1 can move 100 pixels by 0.1 each. The largest L2 distance
between two [0, 1] slices of S x S pixels is S, so eps is checked against
``core.attacks.config.MAX_L2_EPS`` (the largest slice a checkpoint takes).

Projection: ``linf`` clips each pixel to [x - eps, x + eps]; ``l2`` scales delta by ``min(1, eps / ||delta||)``
(the Euclidean projection onto the ball). Both then clip to [0, 1]; since x is in [0, 1], clipping only moves
pixels towards x, so the result stays in the ball (for L2 it is the ball-then-box order AutoAttack uses, which
is not the exact projection onto the intersection but never leaves it).
"""

from __future__ import annotations

import torch

from core.errors import check_choice
from core.names import NORMS

# Below this a gradient (or delta) counts as zero: no direction to normalise.
TINY = 1e-12


def check_norm(norm: str) -> str:
    return check_choice(norm, NORMS, "norm")


def per_image_l2(values: torch.Tensor) -> torch.Tensor:
    """The L2 norm of each image of a batch, (N,), in fp32 at least."""
    return values.flatten(1).to(torch.promote_types(values.dtype, torch.float32)).norm(dim=1)


def _per_image(values: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
    return values.view(-1, *([1] * (like.ndim - 1))).to(like.dtype)


def steepest_step(grad: torch.Tensor, norm: str) -> torch.Tensor:
    """The unit step of ``norm`` that raises a linear function with gradient ``grad`` the most, per image:
    ``sign(grad)`` (L-inf) or ``grad / ||grad||_2`` (L2; zero where the whole gradient is zero)."""
    if check_norm(norm) == "linf":
        return grad.sign()
    length = per_image_l2(grad)
    return grad / _per_image(length.clamp_min(TINY), grad) * _per_image(length > TINY, grad)


def project(x: torch.Tensor, clean: torch.Tensor, eps, norm: str) -> torch.Tensor:
    """``x`` moved into the ``norm`` ball of radius ``eps`` (a number, or (N,) per image) around ``clean``,
    then clipped to [0, 1] (see the module doc)."""
    check_norm(norm)
    eps_t = torch.as_tensor(eps, dtype=x.dtype, device=x.device)
    radius = _per_image(eps_t.expand(x.shape[0]), x) if eps_t.ndim else eps_t
    if norm == "linf":  # the box [x - eps, x + eps] and [0, 1] in one clip, as the attacks always did
        return torch.minimum(torch.maximum(x, (clean - radius).clamp(min=0.0)), (clean + radius).clamp(max=1.0))
    delta = x - clean
    length = _per_image(per_image_l2(delta), x)
    return (clean + delta * torch.clamp(radius / length.clamp_min(TINY), max=1.0)).clamp(0.0, 1.0)


def uniform_in_l2_ball(noise: torch.Tensor, uniform: torch.Tensor, eps: float) -> torch.Tensor:
    """A point uniform in the L2 ball of radius ``eps``, per image, from standard normal ``noise`` (N, ...)
    and ``uniform`` (N,) in [0, 1): direction ``noise / ||noise||``, radius ``eps * u ** (1 / d)``."""
    d = noise[0].numel()
    radius = eps * uniform.to(noise.dtype) ** (1.0 / d)
    return noise / _per_image(per_image_l2(noise).clamp_min(TINY), noise) * _per_image(radius, noise)
