"""Evaluation under torchrun: the batches of a run shared over the processes, the results gathered.

``torchrun --nproc-per-node N $(which segadv) attack ...`` starts N processes with RANK / WORLD_SIZE set.
Batch i of the one-process run goes to rank i mod N, whole (so every slice is attacked in exactly the
batch, with exactly the seed, it would have had alone: the numbers equal a one-process run's to the
last digit); each rank's per-slice results are then gathered on every rank in the original order
(``gather_finished``). The process group is started on first use with the gloo backend, which carries
these Python objects on any device; the commands print and write on rank 0 only.
Ctrl-C reaches every process (torchrun passes it on): each rank stops its loop, the finished results are
gathered in the same exchange, and rank 0 writes them as a partial result.
"""

from __future__ import annotations

import atexit
import os
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass


@dataclass(frozen=True)
class Ranks:
    rank: int = 0
    world_size: int = 1

    @property
    def active(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def current() -> Ranks:
    """This process's place: from the process group, started here from torchrun's environment on first
    use; one process of one when not launched by torchrun."""
    if int(os.environ.get("WORLD_SIZE", "1")) <= 1 or "RANK" not in os.environ:
        return Ranks()
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group(backend="gloo")
        atexit.register(_shut_down)
    return Ranks(dist.get_rank(), dist.get_world_size())


def is_main_process() -> bool:
    """True except on the ranks above 0 of a torchrun launch (without starting a process group)."""
    return int(os.environ.get("RANK", "0")) == 0


def _shut_down() -> None:
    import torch.distributed as dist

    if dist.is_initialized():
        dist.destroy_process_group()


def shard(records: Sequence, batch_size: int, ranks: Ranks) -> tuple[list, list[int]]:
    """(this rank's records, their positions in ``records``): batch i of ``batch_size`` goes to rank
    i mod world size, so ``core.evaluation.scoring.batches`` over them yields exactly those batches."""
    positions = [
        position
        for start in range(ranks.rank * batch_size, len(records), ranks.world_size * batch_size)
        for position in range(start, min(start + batch_size, len(records)))
    ]
    return [records[p] for p in positions], positions


def gather_finished(items: Sequence, positions: Sequence[int], interrupted: bool, ranks: Ranks) -> tuple[list, bool]:
    """Every rank's ``items`` (one per position), on every rank, in position order, and whether any rank was
    ``interrupted``: the end of a loop that Ctrl-C may have cut short, each rank giving the items it
    finished and their positions. Every rank
    makes this one exchange whether it finished or not, so a rank that finished and one that was stopped
    still pair up; Ctrl-C arriving during the exchange is held until it is over (one rank leaving it would
    leave the others waiting) and counts as an interruption."""
    if not ranks.active:
        return list(items), interrupted
    import torch.distributed as dist

    with _sigint_held() as arrived:
        parts: list = [None] * ranks.world_size
        dist.all_gather_object(parts, (list(positions), list(items), interrupted))
    merged = sorted(
        ((p, item) for part_positions, part_items, _ in parts for p, item in zip(part_positions, part_items)),
        key=lambda pair: pair[0],
    )
    return [item for _, item in merged], any(part[2] for part in parts) or arrived()


@contextmanager
def _sigint_held() -> Iterator[Callable[[], bool]]:
    """SIGINT noted instead of raised while the block runs; yields whether it came. Signal handlers can only
    be set from the main thread: elsewhere (never the case under torchrun) the block runs as it is."""
    if threading.current_thread() is not threading.main_thread():
        yield lambda: False
        return
    arrived: list[int] = []
    previous = signal.signal(signal.SIGINT, lambda signum, frame: arrived.append(signum))
    try:
        yield lambda: bool(arrived)
    finally:
        signal.signal(signal.SIGINT, previous)
