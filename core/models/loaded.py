"""A model as core's comparisons take it (Table II, the robustness report, transfer): the name its rows and
columns go by, the module, and its checkpoint's metadata. Torch-free to import, so the front ends' checkpoint
types can hand one over (``segadv_tui.catalog.LoadedCheckpoint.as_model``)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

    from core.labels import LabelSet


@dataclass(frozen=True)
class LoadedModel:
    """``label`` names the model in results (a file name, "model 1"); ``meta`` is its checkpoint's metadata
    (``core.models.checkpoints``; empty for a model without one, which then needs an explicit img_size)."""

    label: str
    model: torch.nn.Module
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def labels(self) -> LabelSet:
        """The label set of its output channels."""
        from core.attacks.batch import model_labels  # torch: a model is loaded by now

        return model_labels(self.model)
