"""The launch runs with Python's cyclic garbage collector paused, up to the first attacked frame.

A launch builds some 470,000 objects that live as long as the app: torch's modules, Textual's widgets and
styles, the data set's index. With the collector on, their allocation sets off hundreds of collections
that walk them again and again: about 0.5 s of a 3 s launch, holding the GIL that the screen's painting and
torch's import share (measured: the default demo's first frame 2.98-3.13 s with it, 2.35-2.49 s without).

Once the first frame is on screen (or the launch has failed, or the app ended, or
:data:`LONGEST_PAUSE_S` has passed), one full collection frees the cyclic garbage the launch left (some
60,000 objects; 0.2 s, while the user looks at the frame), what survives is frozen (``gc.freeze``: later
collections skip it, so they stay short while the user steps through slices) and collecting starts again.
Measured over 40 slice steps (``benchmarks/bench_tui.py --steps 40``, load 1.5 to 1.7): freezing without
that collection kept 14 MiB more; collecting without freezing made the slice steps' median 98 ms instead of
83-85 ms (its longest 398 ms). Only the first launch in a process freezes: an app started again in the same
process (the tests run hundreds) must not keep every earlier app's objects for good.

Other threads pause it too, for work that allocates much and frees little (``paused``: unpickling a
cached index). Every pause is counted under one lock: the collector runs again when the last one ends,
whichever thread ends it, and never where it was off before the first.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Iterator
from contextlib import contextmanager

LONGEST_PAUSE_S = 30.0  # the explorer resumes collecting after this long even if no frame came

_lock = threading.Lock()
_holds = 0  # pauses in force: the launch's and any ``paused`` block's
_was_enabled = False  # whether the collector ran when the first of them began
_launch = False  # the launch's pause is in force
_frozen = False


def pause() -> None:
    """The launch's pause, until :func:`resume` (once: a second call is nothing)."""
    global _launch
    with _lock:
        if _launch:
            return
        _launch = True
        _hold()


def resume() -> None:
    """End the launch's pause; the first time in a process, free the launch's garbage and freeze what is
    left. Nothing where the launch's pause is not in force, however often it is called."""
    global _launch, _frozen
    with _lock:
        if not _launch:
            return
        _launch = False
        if not _frozen and _was_enabled:
            _frozen = True
            gc.collect()
            gc.freeze()
        _release()


@contextmanager
def paused() -> Iterator[None]:
    """No collections inside the block (whatever other threads pause or resume meanwhile)."""
    with _lock:
        _hold()
    try:
        yield
    finally:
        with _lock:
            _release()


def is_paused() -> bool:
    return _launch


def _hold() -> None:  # under _lock
    global _holds, _was_enabled
    if _holds == 0:
        _was_enabled = gc.isenabled()
        gc.disable()
    _holds += 1


def _release() -> None:  # under _lock
    global _holds
    _holds -= 1
    if _holds == 0 and _was_enabled:
        gc.enable()
