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
"""

from __future__ import annotations

import gc

LONGEST_PAUSE_S = 30.0  # the explorer resumes collecting after this long even if no frame came

_paused = False
_frozen = False


def pause() -> None:
    """Stop collecting until :func:`resume`; nothing when the collector is off already (whoever turned it
    off turns it on again)."""
    global _paused
    if gc.isenabled():
        gc.disable()
        _paused = True


def resume() -> None:
    """Collect again where :func:`pause` stopped it, the first time in a process after freeing the
    launch's garbage and freezing what is left; otherwise nothing, however often it is called."""
    global _paused, _frozen
    if not _paused:
        return
    _paused = False
    if not _frozen:
        _frozen = True
        gc.collect()
        gc.freeze()
    gc.enable()


def is_paused() -> bool:
    return _paused
