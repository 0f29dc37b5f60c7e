"""The paper's U-Net family as a registry keyed by name, any smp or MONAI network by its library name
(``smp:ARCH:ENCODER``, ``monai:NAME``: ``core.models.specs``), all behind one grayscale-input wrapper.

Every model a caller gets takes the slice itself, shape (N, 1, H, W) in [0, 1], and returns the logits
of its label set (``core.labels``; by default UW-Madison's large_bowel, small_bowel, stomach). For smp
networks the wrapper repeats the slice to the encoder's 3 channels (as the paper's code fed it) and applies
the encoder's normalisation inside the model; MONAI networks take the one channel as it is. Attacks work in
the [0, 1] pixel space of the slice and an adversarial image is still a grayscale slice.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

from core.errors import SegadvError, check_choice
from core.labels import UW_MADISON, LabelSet
from core.models.specs import (
    ModelSpecError,
    check_model_kwargs,
    input_sizes,
    is_library_name,
    smp_architecture,
    split_name,
)

# Per-channel mean / std applied inside the model; "none" is what the paper's code did ([0, 1] input).
NORMALISATIONS = {
    "none": ((0.0, 0.0, 0.0), (1.0, 1.0, 1.0)),
    "imagenet": ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225)),
}


@dataclass(frozen=True)
class ModelSpec:
    name: str
    arch: str  # smp class name, or MONAI network name
    encoder: str  # "" for MONAI networks
    title: str  # as in the paper's Table II
    kwargs: dict = field(default_factory=dict)
    library: str = "smp"  # "smp" or "monai"

    @property
    def in_channels(self) -> int:
        """The channels the network takes: the slice copied to 3 for smp encoders, the slice itself for MONAI."""
        return 1 if self.library == "monai" else 3

    @property
    def model_kwargs(self) -> dict:
        """What a checkpoint records to rebuild the network: nothing for a registry model (its name says it
        all), the keyword arguments for a library one."""
        return dict(self.kwargs) if is_library_name(self.name) else {}


REGISTRY: dict[str, ModelSpec] = {
    spec.name: spec
    for spec in (
        ModelSpec("vgg", "Unet", "vgg13", "VGG U-Net"),
        ModelSpec("resnext", "Unet", "resnext101_32x8d", "ResNeXt U-Net"),
        ModelSpec("effb7", "Unet", "efficientnet-b7", "EffB7 U-Net"),
        ModelSpec("effb7pp", "UnetPlusPlus", "efficientnet-b7", "EffB7 U-Net++"),
        # Light enough to train and attack on a laptop CPU; 4.13M parameters.
        ModelSpec(
            "small",
            "Unet",
            "mobilenet_v2",
            "MobileNetV2 U-Net (small)",
            {"decoder_channels": (128, 64, 32, 16, 8)},
        ),
        # Two more small demo architectures, so transfer between models can be studied on the CPU. timm's
        # EfficientNet-B0 (tu-), not smp's: smp's batch-norm momentum of 0.01 left the running statistics
        # far behind the weights in a short run (eval-mode logits all negative after 6 epochs). FPN keeps
        # 64 segmentation channels: its GroupNorm(32) needs 2 values a group at the 1 x 1 deepest map of a
        # 32 px probe (freeze_unused_parameters).
        ModelSpec(
            "small-unetpp",
            "UnetPlusPlus",
            "tu-regnetx_002",
            "RegNetX-200MF U-Net++ (small)",
            {"decoder_channels": (128, 64, 32, 16, 8)},
        ),
        ModelSpec(
            "small-fpn",
            "FPN",
            "tu-efficientnet_b0",
            "EfficientNet-B0 FPN (small)",
            {"decoder_pyramid_channels": 64, "decoder_segmentation_channels": 64},
        ),
    )
}


class UnknownModelError(SegadvError, ValueError):
    pass


def model_spec(name: str, model_kwargs: dict | None = None) -> ModelSpec:
    """The spec of a registry model or of a library network (``core.models.specs``) with ``model_kwargs``
    (checked; registry models take none). An ``UnknownModelError`` / ``ModelSpecError`` names what is wrong."""
    if not is_library_name(name):
        if name not in REGISTRY:
            raise UnknownModelError(
                f"unknown model {name!r}; choose from {', '.join(REGISTRY)}, smp:ARCH:ENCODER or monai:NAME"
            )
        if model_kwargs:
            raise ModelSpecError(
                f"model {name!r} is built as the paper's; keyword arguments apply to smp: and monai: models"
            )
        return REGISTRY[name]
    library, arch, encoder = split_name(name)
    kwargs = check_model_kwargs(name, model_kwargs or {})
    title = f"{arch} {encoder} (smp)" if library == "smp" else f"MONAI {arch}"
    return ModelSpec(name, arch, encoder, title, kwargs, library)


class GrayscaleSegmenter(nn.Module):
    """(N, 1, H, W) slice in [0, 1] -> (N, C, H, W) logits, C = ``labels.channels``; ``net`` is the plain smp
    or MONAI model (an smp one sees the slice copied to 3 channels and normalised, a MONAI one the slice).

    ``transposed``: ``net`` was trained on slices with height and width swapped, as the paper's notebook
    fed them (``transpose(2, 1, 0)``); each slice is transposed before ``net`` and its logits back, so
    inputs, masks and perturbations stay in the stored orientation everywhere else."""

    def __init__(
        self,
        net: nn.Module,
        spec: ModelSpec,
        normalisation: str = "none",
        transposed: bool = False,
        labels: LabelSet = UW_MADISON,
    ):
        super().__init__()
        check_choice(normalisation, NORMALISATIONS, "normalisation")
        if spec.in_channels == 1 and normalisation != "none":
            raise ModelSpecError(
                f"model {spec.name!r} takes the slice as it is: normalisation 'none', not {normalisation!r}"
            )
        self.net = net
        self.spec = spec
        self.normalisation = normalisation
        self.transposed = bool(transposed)
        self.labels = labels  # what the output channels mean: labels.channels of them
        mean, std = NORMALISATIONS[normalisation]
        # Not persistent: the state dict is exactly the smp model's, prefixed with "net.".
        self.register_buffer("mean", torch.tensor(mean).view(1, 3, 1, 1), persistent=False)
        self.register_buffer("std", torch.tensor(std).view(1, 3, 1, 1), persistent=False)

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        if self.spec.in_channels == 1:
            if image.ndim != 4 or image.shape[1] != 1:
                raise ValueError(f"expected a grayscale batch of shape (N, 1, H, W), got {tuple(image.shape)}")
            if self.transposed:
                return self.net(image.transpose(-1, -2)).transpose(-1, -2)
            return self.net(image)
        if image.ndim != 4 or image.shape[1] not in (1, 3):
            raise ValueError(
                f"expected a grayscale batch of shape (N, 1, H, W), or (N, 3, H, W) as the paper fed it, "
                f"got {tuple(image.shape)}"
            )
        # (N, 3, H, W): the slice already copied to 3 channels (the paper's FGSM perturbs each one).
        rgb = image.expand(-1, 3, -1, -1) if image.shape[1] == 1 else image
        if self.transposed:
            return self.net(((rgb - self.mean) / self.std).transpose(-1, -2)).transpose(-1, -2)
        return self.net((rgb - self.mean) / self.std)


def build_model(
    name: str,
    encoder_weights: str | None = None,
    normalisation: str | None = None,
    labels: LabelSet = UW_MADISON,
    model_kwargs: dict | None = None,
) -> GrayscaleSegmenter:
    """The model ``name`` (a registry name, ``smp:ARCH:ENCODER`` or ``monai:NAME`` with ``model_kwargs``)
    with ``labels.channels`` logits and no activation.

    ``encoder_weights="imagenet"`` downloads pretrained encoder weights (as the paper did) and implies
    ImageNet normalisation; ``None`` gives random weights and, by default, no normalisation. MONAI networks
    have no pretrained encoder and take no normalisation.
    """
    spec = model_spec(name, model_kwargs)
    if normalisation is None:
        normalisation = "imagenet" if encoder_weights == "imagenet" else "none"
    if spec.library == "monai":
        if encoder_weights is not None:
            raise ModelSpecError(f"model {name!r} has no pretrained encoder: build it with encoder weights none")
        return GrayscaleSegmenter(_monai_network(spec, labels.channels), spec, normalisation, labels=labels)
    architecture = smp_architecture(spec.arch)
    try:
        net = architecture(
            encoder_name=spec.encoder,
            encoder_weights=encoder_weights,
            in_channels=3,
            classes=labels.channels,
            activation=None,
            **spec.kwargs,
        )
    except (TypeError, ValueError, KeyError, AssertionError) as exc:
        if name in REGISTRY:
            raise
        raise ModelSpecError(
            f"model {name!r} with {spec.kwargs}: smp refused it ({' '.join(str(exc).split())[:200]})"
        ) from None
    return GrayscaleSegmenter(net, spec, normalisation, labels=labels)


def _monai_network(spec: ModelSpec, channels: int) -> nn.Module:
    from monai.networks import nets

    try:
        return getattr(nets, spec.arch)(spatial_dims=2, in_channels=1, out_channels=channels, **spec.kwargs)
    except (TypeError, ValueError, KeyError, AssertionError, IndexError) as exc:
        raise ModelSpecError(
            f"model {spec.name!r} with {spec.kwargs}: MONAI refused it ({' '.join(str(exc).split())[:200]})"
        ) from None


def count_parameters(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def freeze_unused_parameters(model: nn.Module) -> list[str]:
    """Stop ``requires_grad`` on the parameters that ``model``'s forward never reaches; their names.

    smp's EfficientNet encoders keep ``_conv_head`` and ``_bn1`` (1.64 M parameters) that their forward
    skips, and DistributedDataParallel then waits for gradients that never come. One probe (a 32 x 32
    zero slice, eval mode: no batch-norm statistics move, no random number is drawn) finds them for any
    model, including ones added later, where a list of names per encoder would go stale.
    The parameters stay in the model, so the state dict and every checkpoint keep their keys.
    """
    named = [(name, parameter) for name, parameter in model.named_parameters() if parameter.requires_grad]
    if not named:
        return []
    spec = getattr(model, "spec", None)
    # A library network's probe is at least 64 px, its deepest map 2 x 2 (group and instance norms need more
    # than one value), or the smallest slice it takes.
    size = max(64, input_sizes(spec.name, spec.kwargs)[1]) if spec is not None and is_library_name(spec.name) else 32
    was_training = model.training
    model.eval()
    try:
        with torch.enable_grad():
            logits = model(torch.zeros(1, 1, size, size, device=named[0][1].device))
            grads = torch.autograd.grad(logits.sum(), [parameter for _, parameter in named], allow_unused=True)
    finally:
        model.train(was_training)
    unused = [(name, parameter) for (name, parameter), grad in zip(named, grads) if grad is None]
    for _, parameter in unused:
        parameter.requires_grad_(False)
    return [name for name, _ in unused]
