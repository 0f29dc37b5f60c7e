"""One gradient, many eps: sign(grad) does not depend on eps, so it is kept per (checkpoint, slice,
loss, target, mode) in a thread-safe LRU, and FGSM at any eps costs one forward pass.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable

import torch

from core.attacks.gradients import GradientEntry, input_gradients


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
