"""``segadv-tui``: the keyboard-driven attack explorer (Textual).

The app keeps what concerns every screen: the style sheet, the command palette, the help, the keys that
work everywhere, central error reporting and the loading of torch. The explorer itself is its default
screen (``segadv_tui.screens.explorer``).

The screen paints at once: torch and segmentation-models-pytorch (seconds to import) start loading in a
thread as soon as the app is created, while Textual composes and paints, so this module, the screens and
the widgets import nothing that pulls them in. MONAI loads only when a loss or metric that needs it is
first used.
"""

from __future__ import annotations

import threading

from textual.app import App

from core.errors import SegadvError
from segadv_tui.bug_report import bug_message, one_line, write_bug_report
from segadv_tui.keys import APP_KEYS, help_groups
from segadv_tui.palette import ExplorerCommands
from segadv_tui.screens.explorer import ExplorerScreen, WorkerHooks
from segadv_tui.state import ExplorerOptions

_compute_loading: threading.Thread | None = None


def start_loading_compute() -> None:
    """Import torch, segmentation-models-pytorch and the attack code in a thread, once per process.

    The workers that need them import them again and wait for this import to finish, so it only moves
    the seconds of importing to before the first paint rather than after it.
    """
    global _compute_loading
    if _compute_loading is None:

        def load() -> None:
            try:
                import core.models.checkpoints  # noqa: F401  (torch, smp)
                import segadv_tui.attacker  # noqa: F401  (the attacks and scores)
            except Exception:  # noqa: BLE001  the worker's own import raises it again, as a notification
                pass

        _compute_loading = threading.Thread(target=load, name="loading torch", daemon=True)
        _compute_loading.start()


class SegadvApp(App):
    """The explorer's app: ``options`` are the fields of :class:`ExplorerOptions` (what segadv-tui was
    started with); ``hooks`` reach into the frame worker, for tests."""

    CSS_PATH = "app.tcss"
    TITLE = "segadv"
    COMMANDS = App.COMMANDS | {ExplorerCommands}
    BINDINGS = APP_KEYS

    def __init__(self, *, hooks: WorkerHooks | None = None, **options):
        super().__init__()
        start_loading_compute()
        self.explorer = ExplorerScreen(ExplorerOptions(**options), hooks)

    def get_default_screen(self) -> ExplorerScreen:
        return self.explorer

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """On the Table II screen only its own keys, quitting and help apply (its run froze the attack)."""
        from segadv_tui.screens.table_ii import TableIIScreen

        return not isinstance(self.screen, TableIIScreen) or action in ("quit", "help", "command_palette")

    def action_help(self) -> None:
        from segadv_tui.screens.help import HelpScreen

        labels = self.explorer.state.labels
        self.push_screen(HelpScreen(help_groups(labels), labels))

    def report_worker_error(self, task: str, error: BaseException) -> str:
        """A notification, and the app keeps running: bad input says what is wrong; anything else is a
        bug, with its traceback in a log file (as the CLI reports it). Returns the message, without the task."""
        # markup=False: a message is arbitrary text ("[0, 1]", paths), never Textual markup.
        if isinstance(error, SegadvError):
            message = one_line(error)
            self.notify(f"{task} failed: {message}", severity="error", timeout=10, markup=False)
        else:
            message = bug_message(error, write_bug_report(error))
            self.notify(f"{task} failed: {message}", severity="error", timeout=20, markup=False)
        return message
