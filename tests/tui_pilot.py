"""Helpers for driving the real app under Pilot without an asyncio plugin or wall-clock waits."""

from __future__ import annotations

import asyncio
import functools
from pathlib import Path

from textual.worker import WorkerCancelled

from segadv_tui.app import SegadvApp


def pilot_test(scenario):
    """An async Pilot scenario as a plain test (no asyncio plugin needed)."""

    @functools.wraps(scenario)
    def test(*args, **kwargs):
        asyncio.run(scenario(*args, **kwargs))

    return test


def make_app(data: Path | None, checkpoint: Path, **kwargs) -> SegadvApp:
    app = SegadvApp(data=data, checkpoint=checkpoint, device="cpu", device_label="CPU", show_timings=False, **kwargs)
    record_notifications(app)
    return app


def record_notifications(app: SegadvApp) -> None:
    """Keep every notification in ``app.notices`` as (severity, message): toasts expire on a clock."""
    app.notices = []
    notify = app.notify

    def recording_notify(message, *args, severity="information", **kwargs):
        app.notices.append((severity, str(message)))
        return notify(message, *args, severity=severity, **kwargs)

    app.notify = recording_notify


async def settle(pilot, app: SegadvApp) -> None:
    """Until no worker runs and every posted message is handled (a worker cancelled by a newer one of its
    exclusive group is done, as the app means it to be)."""
    for _ in range(200):
        try:
            await app.workers.wait_for_complete()
        except WorkerCancelled:
            pass
        await pilot.pause()
        if not any(w.is_running for w in app.workers):
            return
    raise AssertionError("workers kept running")


async def until(pilot, app: SegadvApp, condition, what: str) -> None:
    """Settle until ``condition()`` holds (workers may start from handlers that have not run yet)."""
    for _ in range(400):
        await settle(pilot, app)
        if condition():
            return
    raise AssertionError(f"{what} never happened; notifications: {getattr(app, 'notices', [])}")


async def first_frame(pilot, app: SegadvApp) -> None:
    await until(pilot, app, lambda: app.explorer.state.frame is not None, "a first frame")
