"""One run's life in the index, from a front end's point of view: a record opened as ``running`` before
the work, the results cache asked, and the record closed with its status in a ``finally``. (numpy, for
the stored results, is imported only when a result is stored or read: every command opens a record.)

The index is a convenience, never a reason to lose a computation: the first failure to open, read or
write it (damaged, locked past the busy timeout, not writable) is one warning through ``warn`` and the
run goes on unrecorded. Under torchrun only rank 0 writes; the cache is not asked there (every rank must
take the same path, and a record written between two ranks' look-ups would split them).
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.distributed import is_main_process
from core.runs.index import RunIndex, RunIndexError
from core.runs.keys import cache_key, versions


@dataclass(frozen=True)
class Clock:
    """When a run started, by the wall clock, the monotonic clock and this process's CPU time."""

    wall: float
    monotonic: float
    cpu: float

    @classmethod
    def now(cls) -> Clock:
        return cls(time.time(), time.perf_counter(), time.process_time())


@dataclass(frozen=True)
class CacheHit:
    """A result served from the index: the object, the run that computed it and when that run started."""

    result: object
    run_id: int
    started: float


class RunRecorder:
    """The record of one command run in the index at ``path`` (None: the default), timed from ``started``
    (default: now). ``warn(line)`` is called at most once, on the first failure; after it the recorder does
    nothing."""

    def __init__(
        self,
        path: str | os.PathLike | None,
        command: str,
        argv: Sequence[str],
        warn: Callable[[str], None],
        started: Clock | None = None,
    ):
        self.path, self.command, self.argv, self.warn = path, command, list(argv), warn
        self.started = started or Clock.now()
        self.index: RunIndex | None = None
        self.run_id: int | None = None
        self.broken = not is_main_process()  # ranks above 0 keep no record
        self.key: str | None = None
        self.config: dict | None = None
        self.cached_from: int | None = None
        self.result = None

    def _attempt(self, action: Callable[[RunIndex], object]):
        """``action(index)``, or None after one warning if the index fails."""
        if self.broken:
            return None
        try:
            if self.index is None:
                self.index = RunIndex(self.path)
            return action(self.index)
        except RunIndexError as exc:
            self.broken = True
            self.warn(
                f"{exc}; this run is not recorded "
                "(the computation goes on; SEGADV_RUNS or --runs chooses another index)"
            )
            self._close_index()
            return None

    def _close_index(self) -> None:
        if self.index is not None:
            self.index.close()
            self.index = None

    def file_sha256(self, path: str | os.PathLike) -> str:
        """A checkpoint's content hash: from the index's hash cache where it can, else read here."""
        from core.runs.keys import file_sha256

        found = self._attempt(lambda index: index.file_sha256(path))
        return found if isinstance(found, str) else file_sha256(Path(path).expanduser())

    def open(self, **fields) -> None:
        """Open the record as ``running`` with ``fields`` (device, checkpoints, data, split, ...)."""
        fields = {"host": socket.gethostname(), "pid": os.getpid(), "versions": versions(), **fields}
        self.run_id = self._attempt(lambda index: index.open_run(self.command, self.argv, self.started.wall, **fields))

    def lookup(self, key_fields: dict, *, use_cache: bool) -> CacheHit | None:
        """The result of an earlier ``done`` run with the same key, unless ``use_cache`` is off or this is
        a torchrun job; the key is remembered for the record either way."""
        from core.distributed import current

        key = self.key = cache_key(key_fields)
        self.config = key_fields
        if not use_cache or current().active:
            return None
        found = self._attempt(lambda index: index.cached(key))
        if not found:
            return None
        from core.runs.stored import StoredResultError, load_result

        run_id, started, blob = found
        try:
            result = load_result(blob)
        except StoredResultError as exc:
            self.warn(f"run index {self.index_path}: run {run_id}'s result is not usable ({exc}); computing it again")
            return None
        self.cached_from = run_id
        return CacheHit(result, run_id, started)

    @property
    def index_path(self) -> str:
        return str(self.index.path if self.index is not None else self.path)

    def keep(self, result) -> None:
        """The result object to store when the run closes ``done`` (only a run with a key stores one)."""
        self.result = result

    def close(self, status: str, **fields) -> None:
        """Close the record: ``status``, the times and ``fields`` (summary, files, result_json, error); a
        ``done`` run with a cache key stores its result object for the cache."""
        run_id = self.run_id
        if run_id is None:
            self._close_index()
            return
        values = {
            "status": status,
            "ended": time.time(),
            "wall_seconds": time.perf_counter() - self.started.monotonic,
            "cpu_seconds": time.process_time() - self.started.cpu,
            "cache_key": self.key,
            "cached_from": self.cached_from,
            **({"config": self.config} if self.config is not None else {}),
            **fields,
        }
        from core.runs.stored import dump_result

        stored = dump_result(self.result) if status == "done" and self.key and self.result is not None else None
        if status != "done":
            values.pop("result_json", None)  # never half a result
        self._attempt(lambda index: index.update_run(run_id, result=stored, **values))
        self._close_index()
