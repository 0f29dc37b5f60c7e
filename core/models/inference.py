"""The forward pass as attacks and scores take it: the model in eval mode, the precision (autocast,
and fp32 as the reference with TF32 off on CUDA), overflow-safe fp32 logits, and the predicted masks by
the model's output kind (``core.labels``): sigmoid, a label where its logit > 0; softmax, the argmax.
"""

from __future__ import annotations

from contextlib import contextmanager

import torch

from core.errors import check_choice
from core.labels import OUTPUT_KINDS, UW_MADISON
from core.names import PRECISIONS


def output_kind(model: torch.nn.Module) -> str:
    """The output kind of ``model``'s label set (through a DDP wrapper); a bare module without one (a test's)
    is UW-Madison's, sigmoid."""
    labels = getattr(getattr(model, "module", model), "labels", UW_MADISON)
    return labels.kind


def masks_from_logits(logits: torch.Tensor, kind: str) -> torch.Tensor:
    """Predicted masks, bool (N, L, H, W), one channel per foreground label, from logits (N, C, H, W):
    sigmoid (C = L), a label where its logit > 0 (sigmoid > 0.5); softmax (C = L + 1, background first),
    the one-hot argmax less the background channel, so a pixel is one label or none."""
    check_choice(kind, OUTPUT_KINDS, "output kind")
    if kind == "sigmoid":
        return logits > 0
    classes = logits.argmax(dim=1, keepdim=True)
    return torch.arange(1, logits.shape[1], device=logits.device).view(1, -1, 1, 1) == classes


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


@torch.no_grad()
def predict(model: torch.nn.Module, image: torch.Tensor, precision: str = "fp32") -> torch.Tensor:
    """The model's label masks, bool (N, L, H, W) (``masks_from_logits`` by its output kind), with the model
    in eval mode (a model left in train mode would update its batch-norm statistics while being scored)."""
    with eval_mode(model):
        return masks_from_logits(safe_logits(model, image, precision), output_kind(model))
