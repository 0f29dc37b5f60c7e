"""``segadv-tui``: the keyboard-driven attack explorer (Textual).

The app keeps what concerns every screen: the style sheet, the command palette, the help, the keys that
work everywhere, central error reporting and the loading of torch. The explorer itself is its default
screen (``segadv_tui.screens.explorer``).

The screen paints at once: torch (seconds to import) starts loading in a thread as soon as the app is
created, while Textual composes and paints, so this module, the screens and the widgets import nothing
that pulls it in. segmentation-models-pytorch loads only to build a model from its file (a checkpoint
not in the model cache), MONAI only for a loss or metric that needs it.
"""

from __future__ import annotations

import threading

from textual.app import App

from core.errors import SegadvError
from segadv_tui.bug_report import bug_message, one_line, write_bug_report
from segadv_tui.config import CannotSave, Settings, save_theme
from segadv_tui.gc_pause import pause as pause_collector
from segadv_tui.gc_pause import resume as resume_collector
from segadv_tui.keys import APP_KEYS, explorer_eps_tooltips, help_groups
from segadv_tui.palette import ExplorerCommands
from segadv_tui.screens.explorer import ExplorerScreen, WorkerHooks
from segadv_tui.state import ExplorerOptions

_compute_loading: threading.Thread | None = None


def start_loading_compute() -> None:
    """Import torch, the model cache and the attack code in a thread, once per process.

    The workers that need them import them again and wait for this import to finish, so it only moves
    the seconds of importing to before the first paint rather than after it. segmentation-models-pytorch
    (seconds more) is not among them: a checkpoint opened before opens from the model cache
    (``core.models.compiled``) with torch alone, and smp loads only to build a model from its file.
    """
    global _compute_loading
    if _compute_loading is None:

        def load() -> None:
            try:
                import core.models.compiled  # noqa: F401  (torch)
                import segadv_tui.attacker  # noqa: F401  (the attacks and scores)
            except Exception:  # noqa: BLE001  the worker's own import raises it again, as a notification
                pass

        _compute_loading = threading.Thread(target=load, name="loading torch", daemon=True)
        _compute_loading.start()


class SegadvApp(App):
    """The explorer's app: ``options`` are the fields of :class:`ExplorerOptions` (what segadv-tui was
    started with); ``settings`` the settings file's (its keymap and theme apply here; a theme picked in
    the palette is saved to its file; None: the defaults, nothing saved); ``hooks`` reach into the frame
    worker, for tests."""

    CSS_PATH = "app.tcss"
    TITLE = "segadv"
    COMMANDS = App.COMMANDS | {ExplorerCommands}
    BINDINGS = APP_KEYS

    def __init__(self, *, hooks: WorkerHooks | None = None, settings: Settings | None = None, **options):
        super().__init__()
        pause_collector()  # up to the first frame (segadv_tui.gc_pause: half a second of the launch)
        start_loading_compute()
        self.settings = settings or Settings()
        if self.settings["keymap"]:
            self.set_keymap(self.settings["keymap"])
        if self.settings["theme"]:
            self.theme = self.settings["theme"]
        self.explorer = ExplorerScreen(ExplorerOptions(**options), hooks)

    def on_mount(self) -> None:
        for problem in self.settings.problems:  # each names the file and the key; the defaults apply
            self.notify(problem, severity="warning", timeout=15, markup=False)
        self.theme_changed_signal.subscribe(self, self._save_theme)

    def on_unmount(self) -> None:
        resume_collector()  # an app that ends before its first frame (a failed start, a quick q)

    def _save_theme(self, theme) -> None:
        """A theme picked (in the palette) is written to the settings file, so the next start has it."""
        path = self.settings.path
        if path is None or theme.name == self.settings["theme"]:
            return
        try:
            save_theme(path, theme.name)
        except (CannotSave, SegadvError) as exc:  # SegadvError: core.files' WriteError, naming the file
            self.notify(f"Theme not saved: {exc}", severity="warning", timeout=10, markup=False)
            return
        self.settings.override("theme", theme.name, str(path))
        self.notify(f"Theme {theme.name} saved to {path}", timeout=4, markup=False)

    def copy_text(self, what: str, text: str | None) -> None:
        """Put ``text`` on the local clipboard (OSC 52: through SSH and tmux to the user's terminal) and say so;
        ``what`` names it in the notification (None: nothing to copy yet)."""
        if text is None:
            self.notify(f"No {what} to copy yet.", severity="warning")
            return
        self.copy_to_clipboard(text)
        lines = text.count("\n") + (not text.endswith("\n"))
        self.notify(f"Copied {what} ({lines} line{'s' if lines != 1 else ''}) to the clipboard.", timeout=4)

    def get_default_screen(self) -> ExplorerScreen:
        return self.explorer

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """On the Table II screen only its own keys, quitting and help apply (its run froze the attack)."""
        from segadv_tui.screens.table_ii import TableIIScreen

        return not isinstance(self.screen, TableIIScreen) or action in ("quit", "help", "command_palette")

    def action_help(self) -> None:
        from segadv_tui.screens.help import HelpScreen

        state = self.explorer.state
        groups = help_groups(state.labels, self._keymap, explorer_eps_tooltips(state))
        self.push_screen(HelpScreen(groups, state.labels, self._keymap))

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
