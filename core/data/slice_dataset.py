"""A PyTorch ``Dataset`` over slice records: each item is read from disk when it is asked for.

Kept apart from ``core.data`` because it needs torch; ``from core.data.slice_dataset import SliceDataset`` loads it.
Nothing is cached, so a data set of 38,000 slices costs only its list of records in memory.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch.utils.data import Dataset


class SliceDataset(Dataset):
    """(image (1, S, S) float32 in [0, 1], masks (3, S, S) float32 0/1) per slice, organs in ORGANS order."""

    def __init__(self, records: Sequence, img_size: int = 224):
        if img_size < 1:
            raise ValueError(f"img_size must be positive, got {img_size}")
        self.records = list(records)
        self.img_size = img_size

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image, masks = self.records[index].load(self.img_size)
        return torch.from_numpy(image).unsqueeze(0), torch.from_numpy(masks).float()
