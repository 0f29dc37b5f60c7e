"""How an explorer process ends: promptly on SIGTERM / SIGHUP, and, served, when its server is gone.

Textual ends an app by draining its message queues and then waiting for its thread workers, which torch
can keep busy for many seconds (an import, a Table II); a process asked to end must not wait for them.
So an end request asks the app to exit (the terminal is restored), and the process ends as soon as the
app has stopped, or ``GRACE_S`` later whatever is still running. A second request ends it at once.
"""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import threading

from textual import events
from textual.app import App
from textual.drivers.web_driver import WebDriver
from textual.geometry import Size

GRACE_S = 3.0
SIGNALS = (signal.SIGTERM, signal.SIGHUP)
# What the terminal driver sets up, undone when the process must end before Textual could undo it:
# line wrap, bracketed paste, mouse reporting, the alternate screen, the hidden cursor.
RESTORE_TERMINAL = b"\x1b[?7h\x1b[?2004l\x1b[?1000l\x1b[?1003l\x1b[?1015l\x1b[?1006l\x1b[?1049l\x1b[?25h"

_ending = threading.Lock()
_status: list[int] = []  # the exit status an end request asked for, once asked


def end(app: App, status: int) -> None:
    """Ask ``app`` to exit; the process ends when it has stopped (``EndWhenAsked``) or ``GRACE_S`` later,
    whichever comes first. A second call ends it now."""
    if not _ending.acquire(blocking=False) or not (app.is_running and app._dom_ready):
        # Asked twice, or before the app's first screen is laid out (an exit then removes the widgets
        # its on_mount looks for) or after it began to end: nothing is left to do cleanly.
        _hard_exit(app, status)
    _status.append(status)
    timer = threading.Timer(GRACE_S, _hard_exit, (app, status))
    timer.daemon = True
    timer.start()
    try:
        app._loop.call_soon_threadsafe(app.exit, None, status)
    except RuntimeError:  # the loop closed in between
        _hard_exit(app, status)


def end_on_signals(app: App) -> None:
    """SIGTERM and SIGHUP (the terminal or the SSH session went away) end the app and the process."""
    for signum in SIGNALS:
        signal.signal(signum, lambda signum, frame: end(app, 128 + signum))
    if not issubclass(app.driver_class, EndWhenAsked):
        app.driver_class = type(app.driver_class.__name__, (EndWhenAsked, app.driver_class), {})


def _hard_exit(app: App, status: int) -> None:
    driver = app._driver
    attributes = getattr(driver, "attrs_before", None)  # the terminal driver's saved tty settings
    if attributes is not None:
        import termios

        try:
            termios.tcsetattr(driver.fileno, termios.TCSANOW, attributes)
            os.write(driver.fileno, RESTORE_TERMINAL)
        except (OSError, termios.error):  # the terminal is gone (SIGHUP): nothing to restore
            pass
    for stream in (sys.__stdout__, sys.__stderr__):  # not the app's capture of print()
        try:
            stream.flush()
        except (OSError, ValueError, AttributeError):
            pass
    os._exit(status)


class EndWhenAsked:
    """A driver mixin: once an end was asked and the app has stopped, the process ends at once."""

    def stop_application_mode(self) -> None:
        super().stop_application_mode()
        if _status:  # the app has ended as asked: its thread workers are not waited for
            self.close()  # the terminal driver's writer thread: what it queued, the restore included, is written
            _hard_exit(self._app, _status[0])


class ServedDriver(EndWhenAsked, WebDriver):
    """textual-serve's web driver for a browser tab's explorer (TEXTUAL_DRIVER names it).

    - Sizes in order: the web driver posts its first size (from the URL) through a task and the
      browser's resizes straight from its input thread, so a resize sent at once could arrive before
      the first size, and the stale size last. Quit during start-up then left the screen laying out
      two sizes in turn for ever, at 100 % CPU, with the exit waiting behind it (issue 24). Every
      size and the quit go through the same queue here, in the order they came.
    - The server's quit, SIGTERM, SIGHUP, SIGINT and the end of stdin (the server is gone) all end
      the process within ``GRACE_S`` (see ``end``).
    """

    def start_application_mode(self) -> None:
        self._loop = asyncio.get_running_loop()
        super().start_application_mode()
        for signum in (*SIGNALS, signal.SIGINT):  # replaces the web driver's, which only ask the app
            self._loop.add_signal_handler(signum, end, self._app, 128 + signum)

    def _post_in_order(self, message) -> None:
        asyncio.run_coroutine_threadsafe(self._app._post_message(message), loop=self._loop)

    def _end_in_order(self) -> None:
        async def ask() -> None:
            end(self._app, 0)

        asyncio.run_coroutine_threadsafe(ask(), loop=self._loop)

    def on_meta(self, packet_type: str, payload: dict[str, object]) -> None:
        if packet_type == "resize":
            self._size = (payload["width"], payload["height"])
            size = Size(*self._size)
            self._post_in_order(events.Resize(size, size))
        elif packet_type == "quit":
            self._end_in_order()
        else:
            super().on_meta(packet_type, payload)

    def run_input_thread(self) -> None:
        super().run_input_thread()
        if not self.exit_event.is_set():  # stdin ended before the app did: the server is gone
            self._end_in_order()
