"""What the explorer's frame worker does, without Textual: compute the frame of a request, handing an
iterative attack's live steps on while the request is current, with the hooks tests hold it by. The
explorer screen (``segadv_tui.screens.explorer``) runs it in a ``@work`` thread and posts the frame as a
message; nothing here touches a widget, and nothing imports torch (the attacker has it)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from segadv_tui.frames import Frame, FrameRequest, LiveStep, SliceCache

if TYPE_CHECKING:
    from segadv_tui.attacker import SliceAttacker


@dataclass(frozen=True)
class WorkerHooks:
    """Calls into the frame worker, for tests: ``on_frame_start`` when a computation starts, holding the
    model (tests pause it there); ``on_live`` after each live step of an iterative attack is posted (tests
    hold a run there), every ``live_interval`` seconds (None: the attacker's ~10 a second)."""

    on_frame_start: Callable[[FrameRequest], None] | None = None
    on_live: Callable[[LiveStep], None] | None = None
    live_interval: float | None = None


def compute_frame(
    request: FrameRequest,
    attacker: SliceAttacker,
    slices: SliceCache,
    img_size: int,
    *,
    should_stop: Callable[[], bool],
    post_live: Callable[[LiveStep], None],
    hooks: WorkerHooks,
) -> Frame | None:
    """``request``'s frame (None when ``should_stop`` said so); an iterative attack's live steps go to
    ``post_live`` while the request is current."""
    if should_stop():
        return None
    data = slices.get(request.source, img_size)
    on_start = None if hooks.on_frame_start is None else (lambda: hooks.on_frame_start(request))

    def on_live(live: LiveStep) -> None:
        if not should_stop():
            post_live(live)
            if hooks.on_live is not None:
                hooks.on_live(live)

    interval = {} if hooks.live_interval is None else {"live_interval": hooks.live_interval}
    return attacker.compute(
        data,
        request.attack,
        request_id=request.id,
        should_stop=should_stop,
        on_start=on_start,
        on_live=on_live,
        scored_on=request.scored_on,
        **interval,
    )
