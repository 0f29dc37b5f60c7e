"""``segadv-tui``: the keyboard-driven attack explorer (Textual).

State lives here and in ``@on`` handlers on the UI thread; every piece of model or file work runs in a
thread worker that never touches a widget and posts a message back. Each frame request carries an
increasing id: a worker skips its work when a newer request exists by the time it starts, iterative
attacks stop at their next step, and a frame that arrives for an old id is dropped. The Explorer's lock
lets only one computation run at a time, so holding ``+`` never builds a backlog.

The screen paints at once: torch and segmentation-models-pytorch (seconds to import) start loading in a
thread as soon as the app is created, while Textual composes and paints, so this module and the widgets
import nothing that pulls them in. MONAI loads only when a loss or metric that needs it is first used.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from rich.markup import escape
from textual import on, work
from textual.app import App, ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical
from textual.widgets import Footer, Header, Static
from textual.worker import Worker, WorkerState, get_current_worker

from core.attack_config import METHOD_LIST, AttackConfig
from core.errors import SegadvError
from segadv_tui.bug_report import bug_message, one_line, write_bug_report
from segadv_tui.settings import (EPS_STEP_COARSE, EPS_STEP_FINE, Curve, Frame, ScoringModel, SliceData,
                                 load_slice_data)
from segadv_tui.messages import CheckpointsFound, CurveReady, DataReady, FrameReady, LiveStepReady, ModelLoaded
from segadv_tui.palette import ExplorerCommands
from segadv_tui.widgets.attack import CHOICES, AttackPanel, EpsInput, choice_value
from segadv_tui.widgets.checkpoints import CheckpointEntry, CheckpointList
from segadv_tui.widgets.images import VIEWS, Picture, PictureViews
from segadv_tui.widgets.scores import DscCurve, ScoresPanel
from segadv_tui.widgets.slices import SliceBrowser, opening_slice

if TYPE_CHECKING:
    from segadv_tui.explorer import Explorer

NARROW_WIDTH = 120  # below: the sidebar folds away (b shows it)
SHORT_HEIGHT = 36  # below: one row of the four essential pictures
HEADER_HEIGHT = 52  # below: the header's row goes to the pictures (the summary line names the device)
# The work whose failure takes the pictures' place, and the title it is shown under.
FAILURE_TITLES = {"scan": "Cannot start", "data": "Cannot open the data", "load": "Cannot open the checkpoint",
                  "frame": "Cannot attack this slice"}


@dataclass(frozen=True)
class FrameRequest:
    id: int
    source: object  # SliceRecord or Path
    settings: AttackConfig
    scored_on: ScoringModel | None = None  # the model the frame is scored on: a transfer


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
                import core.checkpoints  # noqa: F401  (torch, smp)
                import segadv_tui.explorer  # noqa: F401  (the attacks and scores)
            except Exception:  # noqa: BLE001  the worker's own import raises it again, as a notification
                pass

        _compute_loading = threading.Thread(target=load, name="loading torch", daemon=True)
        _compute_loading.start()


class SegadvApp(App):
    """Pick a checkpoint and a slice, step epsilon, watch the masks and the scores."""

    CSS_PATH = "app.tcss"
    TITLE = "segadv"
    COMMANDS = App.COMMANDS | {ExplorerCommands}
    BINDINGS = [
        Binding("q", "quit", "Quit", id="quit", tooltip="Quit (a running computation is abandoned)"),
        Binding("question_mark", "help", "Help", id="help", tooltip="Show every key"),
        Binding("plus,equals_sign", "eps(1)", "eps+", id="eps.up", tooltip="Epsilon + 0.001"),
        Binding("minus", "eps(-1)", "eps−", id="eps.down", tooltip="Epsilon − 0.001"),
        Binding("right_square_bracket", "eps(5)", "eps++", id="eps.up5", show=False, tooltip="Epsilon + 0.005"),
        Binding("left_square_bracket", "eps(-5)", "eps−−", id="eps.down5", show=False, tooltip="Epsilon − 0.005"),
        Binding("0", "eps_zero", "eps 0", id="eps.zero", show=False, tooltip="Epsilon back to 0"),
        Binding("i", "edit_eps", "Type eps", id="eps.edit", show=False, tooltip="Type an epsilon (Enter applies)"),
        Binding("j", "slice(1)", "Next slice", id="slice.next", show=False, tooltip="Next slice"),
        Binding("k", "slice(-1)", "Prev slice", id="slice.prev", show=False, tooltip="Previous slice"),
        Binding("o", "organs_only", "Organs only", id="slice.organs", show=False,
                tooltip="Show only slices with organs / all slices"),
        Binding("l", "cycle('loss')", "Loss", id="attack.loss", tooltip="Next attack loss"),
        Binding("m", "cycle('method')", "Method", id="attack.method",
                tooltip="Next method (" + ", ".join(method.title for method in METHOD_LIST) + ")"),
        Binding("t", "cycle('target')", "Target", id="attack.target", show=False,
                tooltip="Attack target: ground truth / clean prediction"),
        Binding("p", "cycle('mode')", "Mode", id="attack.mode", show=False,
                tooltip="FGSM mode: textbook / the paper's variant"),
        Binding("u", "next_delta", "Universal", id="attack.delta", show=False,
                tooltip="The next universal perturbation found (method Universal; eps scales it)"),
        Binding("w", "score_on_next", "Score on", id="attack.score_on", show=False,
                tooltip="Score on the next checkpoint: another model's masks, this one's attack"),
        Binding("T", "table_ii", "Table II", id="table2", tooltip="Table II over the test split"),
        Binding("e", "export_figure", "Export PNG", id="export.png", tooltip="Export the current view as a PNG"),
        Binding("x", "export_scores", "Export scores", id="export.scores", show=False,
                tooltip="Export the scores table as CSV and Markdown"),
        Binding("v", "cycle_view", "View", id="view.next",
                tooltip="Next view of the pictures: overlay, difference, grid, focus"),
        Binding("z", "focus_view", "Focus", id="view.focus",
                tooltip="The focused picture alone, zoomable (z or Esc: back); Tab or a click picks the picture"),
        Binding("full_stop,greater_than_sign", "zoom(1)", "Zoom in", id="view.zoom_in", show=False,
                tooltip="Zoom in (Focus view), down to one image pixel per half cell; or the mouse wheel"),
        Binding("comma,less_than_sign", "zoom(-1)", "Zoom out", id="view.zoom_out", show=False,
                tooltip="Zoom out (Focus view), back to the whole slice"),
        Binding("escape", "leave_focus", "Back", id="view.back", show=False, tooltip="Leave the Focus view"),
        Binding("1", "toggle_organ(0)", "Large bowel", id="organ.large_bowel", show=False,
                tooltip="Show / hide the large bowel in every picture"),
        Binding("2", "toggle_organ(1)", "Small bowel", id="organ.small_bowel", show=False,
                tooltip="Show / hide the small bowel in every picture"),
        Binding("3", "toggle_organ(2)", "Stomach", id="organ.stomach", show=False,
                tooltip="Show / hide the stomach in every picture"),
        Binding("g", "cycle_graphics", "Graphics", id="graphics", show=False,
                tooltip="Cycle the picture renderer (half-block / kitty / sixel)"),
        Binding("b", "toggle_sidebar", "Sidebar", id="sidebar", show=False,
                tooltip="Show / hide the side panels (hidden by default on narrow terminals)"),
        Binding("c", "focus('checkpoints')", "Checkpoints", id="focus.checkpoints", show=False,
                tooltip="Go to the checkpoint list"),
        Binding("s", "focus('slices')", "Slices", id="focus.slices", show=False, tooltip="Go to the slice browser"),
    ]

    def __init__(
        self,
        *,
        data: Path | None = None,
        image: Path | None = None,
        checkpoint_dirs: list[Path] | None = None,
        checkpoints: list[Path] | None = None,
        checkpoint: Path | None = None,
        deltas: list[Path] | None = None,
        limit: int | None = None,
        graphics: str = "halfblock",
        export_dir: Path | None = None,
        device: str | None = None,
        device_label: str | None = None,
        show_timings: bool = True,
        frame_hook: Callable[[FrameRequest], None] | None = None,
        live_interval: float | None = None,
        live_hook: Callable[[object], None] | None = None,
    ):
        super().__init__()
        start_loading_compute()
        from core.paths import bundled_checkpoint_dirs

        self.data_root = data
        self.image_path = image
        self.checkpoint_dirs = bundled_checkpoint_dirs() + list(checkpoint_dirs or [])
        self.checkpoint_files = list(checkpoints or []) + ([Path(checkpoint)] if checkpoint is not None else [])
        self.initial_checkpoint = checkpoint
        self.delta_files = [Path(path) for path in deltas or []]  # --delta: the first one is opened
        self.limit = limit
        self.graphics = graphics
        self.graphics_choices = ["halfblock"] + ([graphics] if graphics != "halfblock" else [])
        self.export_dir = Path(export_dir) if export_dir else Path.cwd()
        self.device = device  # checked by core.devices once torch has loaded (None: auto)
        self.device_label = device_label
        self.show_timings = show_timings
        # Called in the frame worker when its computation starts, holding the model (tests pause it there).
        self.frame_hook = frame_hook
        # Seconds between live repaints of an iterative attack (None: the explorer's ~10 a second), and a
        # call in the worker after each one is posted (tests hold a run there).
        self.live_interval = live_interval
        self.live_hook = live_hook

        self.settings = AttackConfig(target="pred" if image is not None else "gt")
        self.dataset = None
        self.records: list = []
        self.source: object | None = None  # the current SliceRecord or Path
        self.explorer = None  # an Explorer once a model is loaded
        self.checkpoint_meta: dict | None = None
        self.checkpoint_entry: CheckpointEntry | None = None
        self.loaded: dict[Path, tuple[object, dict, CheckpointEntry]] = {}
        self.scored_on: Path | None = None  # the checkpoint the frames are scored on (None: the attacked one)
        self._scoring_wanted: Path | None = None  # the latest choice; a model still loading applies only if it is
        self.deltas: list = []  # DeltaEntry: the universal perturbations found
        self.frame: Frame | None = None
        self.curve: Curve | None = None
        self.dropped_frames = 0
        self.live_steps = 0  # progress repaints of iterative attacks shown
        self.live = None  # the latest progress of an iterative attack
        self._latest_request = 0
        self._frame_worker: Worker | None = None  # the latest frame request's (an older one's failure is stale)
        self._load_worker: Worker | None = None  # the latest checkpoint load's
        self._failed: str | None = None  # the FAILURE_TITLES group whose failure was shown last
        self._slice_cache: dict[tuple[str, int], SliceData] = {}
        self._slice_cache_lock = threading.Lock()
        self._sidebar_forced: bool | None = None
        self._focus_sidebar = False  # the Focus view hides the side panels until b shows them
        self._view_before_focus = "overlay"

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield CheckpointList(id="checkpoints")
                yield SliceBrowser(id="slices")
                yield AttackPanel(self.settings, id="attack")
            with Vertical(id="view"):
                yield Static("starting…", id="summary")
                yield PictureViews(renderer=self.graphics, id="images")
                with Horizontal(id="bottom"):
                    yield ScoresPanel(show_timings=self.show_timings, id="scores")
                    yield DscCurve(id="curve")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#checkpoints").border_title = "Checkpoints"
        self.query_one("#slices").border_title = "Slices"
        self.query_one("#attack").border_title = "Attack"
        self.query_one("#scores").border_title = "Scores"
        self.query_one("#curve").border_title = "FGSM mean DSC vs eps"
        self.query_one(AttackPanel).show(self.settings, has_truth=self.image_path is None)
        self.query_one("#images").loading = True
        self._update_layout(self.size.width, self.size.height)
        self.sub_title = self.device_label or "loading torch…"
        self._summary("loading torch and the model…")
        self._find_checkpoints()
        self._load_data()

    def on_resize(self, event) -> None:
        self._update_layout(event.size.width, event.size.height)

    def _update_layout(self, width: int, height: int) -> None:
        narrow = width < NARROW_WIDTH
        self.screen.set_class(narrow, "-narrow")
        self.screen.set_class(height < SHORT_HEIGHT, "-short")
        self.screen.set_class(height < HEADER_HEIGHT, "-compact")
        self.screen.set_class(height < 26, "-tiny")
        show_sidebar = (not narrow) if self._sidebar_forced is None else self._sidebar_forced
        if self._in_focus_view():
            show_sidebar = self._focus_sidebar  # the picture as large as the terminal allows
        self.screen.set_class(not show_sidebar, "-no-sidebar")

    # -- start-up: checkpoints and data ---------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan", name="Loading torch")
    def _find_checkpoints(self) -> None:
        # torch, segmentation-models-pytorch and MONAI take seconds to import: here, not before the first paint.
        from core.devices import describe_device, resolve_device
        from segadv_tui.widgets.checkpoints import find_checkpoints

        device = resolve_device(self.device)  # a device that does not exist: a notification naming those that do
        entries, deltas = find_checkpoints(self.checkpoint_dirs, self.checkpoint_files + self.delta_files)
        self.post_message(CheckpointsFound(entries, deltas, str(device), describe_device(device)))

    @on(CheckpointsFound)
    def _checkpoints_found(self, message: CheckpointsFound) -> None:
        self.device = message.device
        if not self.device_label:
            self.sub_title = message.device_text
        entries = message.entries
        browser = self.query_one(CheckpointList)
        browser.set_entries(entries)
        self.deltas = message.deltas
        self.query_one(AttackPanel).set_files(
            [(entry.path.stem, str(entry.path)) for entry in entries if entry.meta is not None],
            [(delta.path.stem, str(delta.path)) for delta in self.deltas],
        )
        wanted = {path.resolve() for path in self.delta_files}
        opened = next((delta for delta in self.deltas if delta.path.resolve() in wanted), None)
        if opened is not None:
            self.set_settings(self.settings.replace(method="universal", delta=str(opened.path)))
        chosen = None
        if self.initial_checkpoint is not None:
            wanted = Path(self.initial_checkpoint).resolve()
            chosen = next((e for e in entries if e.path.resolve() == wanted), None)
            if any(delta.path.resolve() == wanted for delta in self.deltas):
                self.notify(f"--checkpoint {self.initial_checkpoint} is a universal perturbation, not a checkpoint "
                            f"(open it with --delta).", severity="warning", timeout=10, markup=False)
        if chosen is None:
            chosen = next((e for e in entries if e.meta is not None and e.path.stem == "demo_small"), None)
        if chosen is None:
            chosen = next((e for e in entries if e.meta is not None), None)
        if chosen is None:
            self.query_one("#images").loading = False
            self.notify("No loadable checkpoint found (see --checkpoints).", severity="warning", timeout=8)
            self._show_failure("load", "No loadable checkpoint found.")
            return
        self.load_checkpoint(chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data", name="Opening the data")
    def _load_data(self) -> None:
        if self.image_path is not None:
            self.post_message(DataReady(None, [Path(self.image_path)], str(self.image_path)))
            return
        from core.data import open_dataset

        dataset = open_dataset(self.data_root)
        description = str(self.data_root) if self.data_root else "built-in demo"
        self.post_message(DataReady(dataset, list(dataset.records), description))
        for problem in dataset.problems[:3]:
            self.call_from_thread(self.notify, problem, severity="warning", timeout=8)

    @on(DataReady)
    def _data_ready(self, message: DataReady) -> None:
        self.dataset = message.dataset
        self.records = message.records
        browser = self.query_one(SliceBrowser)
        if self.image_path is not None:
            browser.border_subtitle = "one PNG, no ground truth"
            browser.root.add_leaf(Path(self.image_path).name, data=None)
            self.source = Path(self.image_path)
            self.request_frame()
            return
        browser.set_records(self.records)
        if not self.records:
            self.notify(f"No slices in {message.description}.", severity="warning", markup=False)
            self._show_failure("data", f"No slices in {message.description}.")
            return
        browser.focus()
        first = opening_slice(message.dataset)
        if not browser.records:
            browser.set_organs_only(False)
        browser.choose(first)

    @on(CheckpointList.Chosen)
    def _checkpoint_chosen(self, message: CheckpointList.Chosen) -> None:
        self.load_checkpoint(message.entry)

    def load_checkpoint(self, entry: CheckpointEntry) -> None:
        if entry.path in self.loaded:
            model, meta, entry = self.loaded[entry.path]
            self._use_model(entry, model, meta)
            return
        if entry.meta is None:  # its header said why already: no worker to fail the same way
            self.notify(f"Cannot open {entry.path}: {entry.problem}", severity="error", timeout=10, markup=False)
            self._show_failure("load", f"{entry.path}: {entry.problem}")
            return
        if self._failed == "load":  # another checkpoint picked: the loading indicator replaces that failure
            self.query_one(PictureViews).clear_failure()
        self.query_one("#images").loading = True
        self._load_worker = self._load_checkpoint_worker(entry)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load", name="Loading the checkpoint")
    def _load_checkpoint_worker(self, entry: CheckpointEntry) -> None:
        self._load_model(entry, scoring=False)

    @work(thread=True, exclusive=True, exit_on_error=False, group="load-scoring", name="Loading the model to score on")
    def _load_scoring_worker(self, entry: CheckpointEntry) -> None:
        self._load_model(entry, scoring=True)

    def _load_model(self, entry: CheckpointEntry, *, scoring: bool) -> None:
        from core.checkpoints import load_checkpoint
        from segadv_tui.explorer import leave_a_core_for_the_ui

        leave_a_core_for_the_ui()
        model, meta = load_checkpoint(entry.path, self.device)
        self.post_message(ModelLoaded(entry, model, meta, scoring))

    @on(ModelLoaded)
    def _model_loaded(self, message: ModelLoaded) -> None:
        self.loaded[message.entry.path] = (message.model, message.meta, message.entry)
        self.query_one(CheckpointList).mark(message.entry.path, current=False)
        if message.scoring:
            if message.entry.path == self._scoring_wanted:  # not overtaken by a later choice while it loaded
                self.score_on(message.entry)
        else:
            self._use_model(message.entry, message.model, message.meta)

    def _use_model(self, entry: CheckpointEntry, model, meta: dict) -> None:
        self.checkpoint_entry, self.checkpoint_meta = entry, meta
        from segadv_tui.explorer import Explorer  # torch is loaded by now (the model is here)

        self.explorer = Explorer(model, str(entry.path), device=self.device)
        self.curve = None
        if self.source is None:  # no slice to attack yet (or none to be had): the summary names the model
            self._summary()
        self.query_one(CheckpointList).mark(entry.path, current=True)
        self.query_one("#images").loading = False
        if self.scored_on is not None:
            scoring = self.loaded[self.scored_on][2]
            if scoring.path == entry.path:
                self._set_scored_on(None, request=False)  # the attacked model itself: white box again
            elif self._size_problem(scoring):
                self.notify(f"Scoring on the attacked model again: {self._size_problem(scoring)}.", severity="warning",
                            markup=False)
                self._set_scored_on(None, request=False)
        self.request_frame()

    # -- scoring on another model (a transfer) ---------------------------------------------------

    def score_on(self, entry: CheckpointEntry | None) -> None:
        """Score the frames on ``entry``'s model, the attack still crafted on the current checkpoint (None,
        or the current checkpoint itself: white box). A model not loaded yet is loaded first."""
        if entry is None or (self.checkpoint_entry is not None and entry.path == self.checkpoint_entry.path):
            self._scoring_wanted = None
            self._set_scored_on(None)
            return
        problem = entry.problem if entry.meta is None else self._size_problem(entry)
        if problem:
            self.notify(f"Cannot score on {entry.path.stem}: {problem}.", severity="error", markup=False)
            self._show_scored_on()
            return
        self._scoring_wanted = entry.path
        if entry.path not in self.loaded:
            self._load_scoring_worker(entry)
            return
        self._set_scored_on(entry.path)

    def _show_scored_on(self) -> None:
        """The Score on select back on the model the frames are scored on (after a refusal or a failed load)."""
        self._scoring_wanted = self.scored_on
        self.query_one(AttackPanel).show_scored_on(None if self.scored_on is None else str(self.scored_on))

    def _size_problem(self, entry: CheckpointEntry) -> str | None:
        """Why ``entry`` cannot score the attacked model's adversarial slices (None: it can)."""
        if self.checkpoint_meta is None or entry.meta is None:
            return None
        size, attacked = entry.meta.get("img_size"), self.checkpoint_meta.get("img_size")
        if size == attacked:
            return None
        return f"it takes {size} px slices and {self.checkpoint_entry.path.stem} {attacked} px"

    def _set_scored_on(self, path: Path | None, *, request: bool = True) -> None:
        self.query_one(AttackPanel).show_scored_on(None if path is None else str(path))
        if path == self.scored_on:
            return
        self.scored_on = path
        self.curve = None
        self.query_one(CheckpointList).mark_scored_on(path)
        self.query_one("#scores").border_title = "Scores" if path is None else f"Scores on {path.stem}"
        if request:
            self.request_frame()

    def action_score_on_next(self) -> None:
        """The next checkpoint of the list to score on, back to the attacked model after the last."""
        if self.checkpoint_entry is None:
            return
        choices = [None] + [entry for entry in self.query_one(CheckpointList).entries
                            if entry.meta is not None and entry.path != self.checkpoint_entry.path
                            and not self._size_problem(entry)]
        if len(choices) == 1:
            self.notify("No other checkpoint of this input size to score on (see --checkpoints).", severity="warning")
            return
        paths = [None if entry is None else entry.path for entry in choices]
        current = paths.index(self.scored_on) if self.scored_on in paths else 0
        self.score_on(choices[(current + 1) % len(choices)])

    def _scoring_model(self) -> ScoringModel | None:
        if self.scored_on is None:
            return None
        return ScoringModel(str(self.scored_on), self.loaded[self.scored_on][0])

    # -- universal perturbations -----------------------------------------------------------------

    def delta_entry(self, path: str | None):
        """The DeltaEntry of ``path`` among those found (None: not one of them)."""
        return next((delta for delta in self.deltas if path is not None and str(delta.path) == path), None)

    def fitting_deltas(self) -> list:
        """The deltas found that fit the attacked model's input (all of them before a model is loaded)."""
        size = None if self.checkpoint_meta is None else self.checkpoint_meta.get("img_size")
        return [delta for delta in self.deltas if size is None or delta.img_size == size]

    def action_next_delta(self) -> None:
        if self.deltas and not self.fitting_deltas():
            self.notify(f"No universal perturbation found for {self.checkpoint_meta['img_size']} px slices (the ones "
                        f"found are {', '.join(sorted({f'{d.img_size} px' for d in self.deltas}))}).", severity="warning",
                        timeout=8, markup=False)
            return
        if not self.deltas:
            self.notify("No universal perturbation found: make one with `segadv universal` and open it with "
                        "segadv-tui --delta FILE (or put it in a --checkpoints folder).", severity="warning",
                        timeout=8, markup=False)
            return
        paths = [str(delta.path) for delta in self.fitting_deltas()]
        current = paths.index(self.settings.delta) if self.settings.method == "universal" and self.settings.delta in paths else -1
        self.set_settings(self.settings.replace(method="universal", delta=paths[(current + 1) % len(paths)]))

    # -- slices ----------------------------------------------------------------------------------

    @on(SliceBrowser.Chosen)
    def _slice_chosen(self, message: SliceBrowser.Chosen) -> None:
        if message.record is self.source:
            return
        self.source = message.record
        self.request_frame()

    def action_slice(self, delta: int) -> None:
        if self.image_path is None:
            self.query_one(SliceBrowser).step(delta)

    def action_organs_only(self) -> None:
        browser = self.query_one(SliceBrowser)
        if self.image_path is None:
            browser.set_organs_only(not browser.organs_only)
            self.notify("Showing only slices with organs." if browser.organs_only else "Showing all slices.")

    # -- attack settings -------------------------------------------------------------------------

    def set_settings(self, settings: AttackConfig) -> None:
        if settings.method == "universal" and settings.delta is None and self.fitting_deltas():
            settings = settings.replace(delta=str(self.fitting_deltas()[0].path))  # the universal method needs one
        if settings.delta is not None and settings.delta != self.settings.delta:
            chosen = self.delta_entry(settings.delta)
            if chosen is not None:  # a new delta starts at the bound it was made with; eps then scales it
                settings = settings.with_eps(chosen.eps)
        if settings == self.settings:
            self.query_one(AttackPanel).show(settings, has_truth=self.image_path is None)  # a select left elsewhere
            return
        self.settings = settings
        self.query_one(AttackPanel).show(settings, has_truth=self.image_path is None)
        curve = self.query_one(DscCurve)
        curve.show(curve.curve, settings.eps)
        self.request_frame()

    def action_eps(self, steps: int) -> None:
        step = EPS_STEP_COARSE if abs(steps) == 5 else EPS_STEP_FINE
        self.set_settings(self.settings.with_eps(self.settings.eps + step * (1 if steps > 0 else -1)))

    def action_eps_zero(self) -> None:
        self.set_settings(self.settings.with_eps(0.0))

    def action_edit_eps(self) -> None:
        self._show_sidebar_if_hidden()
        self.query_one(EpsInput).focus()

    def action_cycle(self, field: str) -> None:
        if field == "target" and self.image_path is not None:
            self.notify("A lone PNG has no ground truth: the target is the clean prediction.")
            return
        if field == "mode" and "mode" not in self.settings.entry.parameters:
            self.notify("The paper's variant exists for FGSM only.")
            return
        if field in ("loss", "target") and not self.settings.entry.uses_target:
            self.notify(f"{self.settings.entry.title} has its own objective ({self.settings.objective_label}).")
            return
        values = [value for _, value in CHOICES[field]]
        current = values.index(choice_value(self.settings, field))
        self.set_settings(self.settings.replace(**{field: values[(current + 1) % len(values)]}))

    @on(AttackPanel.Changed)
    def _attack_changed(self, message: AttackPanel.Changed) -> None:
        if message.field == "scored":
            self.score_on(next((entry for entry in self.query_one(CheckpointList).entries
                                if str(entry.path) == message.value), None))
            return
        if message.field == "delta":
            if not message.value and self.settings.method == "universal":  # it needs one: keep the current
                self.query_one(AttackPanel).show(self.settings, has_truth=self.image_path is None)
                return
            self.set_settings(self.settings.replace(delta=message.value or None))
            return
        if message.field != "eps":
            self.set_settings(self.settings.replace(**{message.field: message.value}))
            return
        try:
            eps = float(message.value)
        except ValueError:
            self.notify(f"Epsilon must be a number in [0, 1], not {message.value!r}.", severity="error")
            self.query_one(AttackPanel).show(self.settings)
            return
        if not 0.0 <= eps <= 1.0:
            self.notify(f"Epsilon {eps:g} is outside [0, 1]: clamped.", severity="warning")
        self.query_one(SliceBrowser).focus()  # away from the field, so the keys are shortcuts again
        self.set_settings(self.settings.with_eps(eps))
        self.query_one(AttackPanel).show(self.settings)

    # -- frames ----------------------------------------------------------------------------------

    def request_frame(self) -> None:
        """Ask for the frame of the current checkpoint, slice and settings; newer requests win."""
        if self.explorer is None or self.source is None:
            return
        self._latest_request += 1
        self._summary()
        self._frame_worker = self._compute_frame(
            FrameRequest(self._latest_request, self.source, self.settings, self._scoring_model()), self.explorer)

    def _slice_data(self, source, img_size: int) -> SliceData:
        key = (str(getattr(source, "id", source)), img_size)
        with self._slice_cache_lock:
            cached = self._slice_cache.get(key)
        if cached is None:
            cached = load_slice_data(source, img_size)
            with self._slice_cache_lock:
                if len(self._slice_cache) > 256:
                    self._slice_cache.clear()
                self._slice_cache[key] = cached
        return cached

    @work(thread=True, exclusive=True, exit_on_error=False, group="frame", name="Attacking the slice")
    def _compute_frame(self, request: FrameRequest, explorer: Explorer) -> None:
        worker = get_current_worker()

        def should_stop() -> bool:
            return worker.is_cancelled or request.id != self._latest_request

        if should_stop():
            return
        data = self._slice_data(request.source, int(self.checkpoint_meta["img_size"]))
        hook = None if self.frame_hook is None else (lambda: self.frame_hook(request))

        def on_live(live) -> None:
            if not should_stop():
                self.post_message(LiveStepReady(live))
                if self.live_hook is not None:
                    self.live_hook(live)

        interval = {} if self.live_interval is None else {"live_interval": self.live_interval}
        frame = explorer.compute(data, request.settings, request_id=request.id, should_stop=should_stop, on_start=hook,
                                 on_live=on_live, scored_on=request.scored_on, **interval)
        if frame is not None:
            self.post_message(FrameReady(frame))

    @on(LiveStepReady)
    def _live_step(self, message: LiveStepReady) -> None:
        live = message.live
        if live.request_id != self._latest_request:
            return
        self.live_steps += 1
        self.live = live
        self._show_pictures(live.result, live.config.eps)
        self.query_one(ScoresPanel).show_live(live)

    def _show_pictures(self, result, eps: float) -> None:
        """The pictures of a slice's attack (a finished frame or an iterative run's current iterate)."""
        from segadv_tui.render.figures import AttackPanels

        self.query_one(PictureViews).show(AttackPanels.from_result(result, eps), result.pictures.has_truth)

    @on(FrameReady)
    def _frame_ready(self, message: FrameReady) -> None:
        frame = message.frame
        if frame.request_id != self._latest_request:
            self.dropped_frames += 1
            return
        self.frame = frame
        self._show_pictures(frame.result, frame.config.eps)
        self.query_one(ScoresPanel).show(frame)
        live = self.live if self.live is not None and self.live.request_id == frame.request_id else None
        if live is None:
            self.query_one(ScoresPanel).clear_live()
        else:  # the run's history, closed by the final iterate's score
            self.query_one(ScoresPanel).show_live_line(replace(
                live, step=live.steps, seconds=frame.seconds, mean_dsc=live.mean_dsc + (frame.result.mean_adv,)))
        curve = self.query_one(DscCurve)
        if self.curve is not None and self._curve_matches(self.curve, frame):
            curve.show(self.curve, frame.config.eps)
        else:
            curve.show(None, frame.config.eps)
            self._compute_curve(frame.request_id, self._slice_data_cached(frame), frame.config, self.explorer,
                                self._scoring_model() if frame.scored_on is not None else None)
        self._summary()

    def _slice_data_cached(self, frame: Frame) -> SliceData:
        key = (frame.slice_id, int(self.checkpoint_meta["img_size"]))
        pictures = frame.result.pictures
        return self._slice_cache.get(key) or SliceData(frame.slice_id, pictures.image,
                                                       pictures.reference.astype("uint8") if frame.has_truth else None)

    @staticmethod
    def _curve_matches(curve: Curve, frame: Frame) -> bool:
        fgsm = frame.config.replace(method="fgsm")  # the curve is FGSM's, for the frame's loss and target
        return (curve.checkpoint, curve.slice_id, curve.loss, curve.target, curve.mode, curve.scored_on) == (
            frame.checkpoint, frame.slice_id, fgsm.loss, fgsm.target, fgsm.mode, frame.scored_on)

    @work(thread=True, exclusive=True, exit_on_error=False, group="curve", name="Sweeping eps")
    def _compute_curve(self, request_id: int, data: SliceData, settings: AttackConfig, explorer: Explorer,
                       scored_on: ScoringModel | None = None) -> None:
        worker = get_current_worker()
        curve = explorer.curve(data, settings, should_stop=lambda: worker.is_cancelled, scored_on=scored_on)
        if curve is not None:
            self.post_message(CurveReady(curve))

    @on(CurveReady)
    def _curve_ready(self, message: CurveReady) -> None:
        self.curve = message.curve
        if self.frame is not None and self._curve_matches(message.curve, self.frame):
            self.query_one(DscCurve).show(message.curve, self.settings.eps)

    def _attack_panels(self, frame: Frame):
        from segadv_tui.render.figures import AttackPanels

        return AttackPanels.from_result(frame.result, frame.config.eps)

    def _summary(self, text: str | None = None) -> None:
        if text is None:
            checkpoint = self.checkpoint_entry.path.stem if self.checkpoint_entry else "no checkpoint"
            source = getattr(self.source, "id", None) or (Path(self.source).name if self.source else "no slice")
            if self.scored_on is not None:
                checkpoint = f"{checkpoint} → scored on {self.scored_on.stem}"
            settings = self.settings
            label = escape(settings.label)
            delta = self.delta_entry(settings.delta) if settings.method == "universal" else None
            if delta is not None and delta.eps > 0:  # eps scales the saved delta: say by how much
                label = escape(f"eps {settings.eps:.3f} (×{settings.eps / delta.eps:.2f} of {delta.eps:.3f}) · "
                               f"{settings.method_label}")
            # Most telling first: narrow terminals cut the end.
            text = f"[b]{label}[/b] · {escape(str(source))} · {escape(checkpoint)}"
            if self.screen_stack[0].has_class("-compact") and self.sub_title:
                text += f" · {self.sub_title}"
        self.query_one("#summary", Static).update(text, layout=False)  # one fixed line: no re-layout

    # -- central error handling ------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        worker = event.worker
        if worker.group in ("scan", "load", "frame"):
            self.query_one("#images").loading = False
        if worker.group == "load-scoring":
            self._show_scored_on()
        message = self.report_worker_error(worker.name, worker.error)
        stale = (worker.group == "frame" and worker is not self._frame_worker) or (
            worker.group == "load" and worker is not self._load_worker)
        if worker.group in FAILURE_TITLES and not stale:
            self._show_failure(worker.group, message)

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

    def _show_failure(self, group: str, message: str) -> None:
        """What failed and what to do about it, where the pictures would be, until the user picks something
        that works (the next pictures replace it). ``group``: the work that failed (FAILURE_TITLES)."""
        if group == "load":
            advice = ("Pick another checkpoint in the list (c, then Enter), or start segadv-tui with --checkpoint "
                      "FILE: a .safetensors file written by segadv train, or converted from other weights by "
                      "segadv import-checkpoint.")
            if self.checkpoint_entry is not None:
                advice += f" {self.checkpoint_entry.path.stem} is still in use: an eps step shows its pictures again."
        elif self.image_path is not None and group in ("data", "frame"):
            advice = "Start segadv-tui with another --image FILE.png (a 16-bit PNG slice), or --data DIR."
        elif group == "data":
            advice = ("Start segadv-tui with --data DIR (a Kaggle root: train.csv and train/), or without --data "
                      "for the built-in demo.")
        elif group == "frame":
            advice = "Pick another slice (j / k, or s for the slice list) or other attack settings."
        else:
            advice = "Start segadv-tui again with other options (segadv-tui --help lists them)."
        self._failed = group
        self.query_one("#images").loading = False
        self.query_one(PictureViews).show_failure(FAILURE_TITLES[group], f"{message}\n\n{advice}")
        self.query_one(ScoresPanel).clear()  # no scores or curve of an earlier choice beside the failure
        self.query_one(DscCurve).clear()
        self._summary()

    # -- screens, exports and misc ---------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        """On the Table II screen only its own keys, quitting and help apply (its run froze the settings)."""
        from segadv_tui.widgets.table_ii import TableIIScreen

        if isinstance(self.screen, TableIIScreen) and action not in ("quit", "help", "command_palette"):
            return False
        if action == "leave_focus":
            return self._in_focus_view()
        return True

    def action_help(self) -> None:
        from segadv_tui.widgets.help import HelpScreen

        self.push_screen(HelpScreen(self.binding_groups()))

    def binding_groups(self) -> list[tuple[str, list[Binding]]]:
        groups = {"Epsilon": "eps.", "Slices": "slice.", "Attack": "attack.", "Export": "export.",
                  "Panels": "focus.", "View": "view.", "Organs": "organ.", "Display": ("graphics", "sidebar", "table2"),
                  "App": ("help", "quit")}
        result = []
        for title, prefix in groups.items():
            bindings = [b for b in self.BINDINGS if b.id and (b.id.startswith(prefix) if isinstance(prefix, str)
                                                             else b.id in prefix)]
            result.append((title, bindings))
        result.append(("Anywhere", [Binding("ctrl+p", "command_palette", "Commands",
                                            tooltip="Command palette: every action by name"),
                                    Binding("tab", "focus_next", "Next panel", tooltip="Next panel"),
                                    Binding("up,down", "", "", tooltip="Move in the focused list (slices: slice by slice)"),
                                    Binding("up,down,left,right", "", "",
                                            tooltip="Focus view, zoomed in: pan (or drag with the mouse)")]))
        return result

    # -- views ---------------------------------------------------------------------------------------

    def show_view(self, view: str) -> None:
        """Switch the pictures to ``view``; Focus shows the focused picture (or the view's main one)."""
        views = self.query_one(PictureViews)
        if view == views.view:
            return
        key = views.focus_key() if view == "focus" else None
        if view == "focus":
            self._view_before_focus = views.view
        views.show_view(view, key)
        self._update_layout(self.size.width, self.size.height)
        if view == "focus":
            views.focus_picture().focus()
        elif isinstance(self.focused, Picture) and not self.focused.display:
            self.query_one(SliceBrowser).focus()

    def _in_focus_view(self) -> bool:
        return self.screen_stack[0].query_one(PictureViews).view == "focus"

    def action_cycle_view(self) -> None:
        current = self.query_one(PictureViews).view
        self.show_view(VIEWS[(VIEWS.index(current) + 1) % len(VIEWS)])

    def action_focus_view(self) -> None:
        views = self.query_one(PictureViews)
        if views.view == "focus":
            self.action_leave_focus()
        else:
            self.show_view("focus")

    def action_leave_focus(self) -> None:
        self.show_view(self._view_before_focus)

    def action_zoom(self, direction: int) -> None:
        views = self.query_one(PictureViews)
        if views.view != "focus":
            self.action_focus_view()
        picture = views.focus_picture()
        changed = picture.zoom_in() if direction > 0 else picture.zoom_out()
        if not changed and direction > 0:
            self.notify("At one image pixel per half cell: the closest zoom.", timeout=3)

    def action_toggle_organ(self, index: int) -> None:
        self.query_one(PictureViews).toggle_organ(index)

    def action_toggle_sidebar(self) -> None:
        hidden = self.screen.has_class("-no-sidebar")
        if self._in_focus_view():
            self._focus_sidebar = hidden
        else:
            self._sidebar_forced = hidden
        self._update_layout(self.size.width, self.size.height)

    def _show_sidebar_if_hidden(self) -> None:
        if self.screen.has_class("-no-sidebar"):
            self.action_toggle_sidebar()

    def action_focus(self, widget_id: str) -> None:
        self._show_sidebar_if_hidden()
        self.query_one(f"#{widget_id}").focus()

    def action_cycle_graphics(self) -> None:
        if len(self.graphics_choices) == 1:
            self.notify("Only the half-block renderer is available: start with --graphics kitty or sixel "
                        "in a terminal that supports it.")
            return
        index = self.graphics_choices.index(self.query_one(PictureViews).renderer)
        renderer = self.graphics_choices[(index + 1) % len(self.graphics_choices)]
        self.query_one(PictureViews).use_renderer(renderer)
        self.notify(f"Pictures: {renderer}")

    def action_export_figure(self) -> None:
        if self.frame is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        self._export_figure(self.frame)

    @work(thread=True, exit_on_error=False, group="export", name="Exporting the figure")
    def _export_figure(self, frame: Frame) -> None:
        from core.files import write_png
        from segadv_tui.render.figures import attack_figure

        checkpoint = self.checkpoint_entry.path.stem if self.checkpoint_entry else "model"
        scored = "" if frame.scored_on is None else Path(frame.scored_on).stem
        name = f"{frame.slice_id}_{checkpoint}{'_on_' + scored if scored else ''}_{frame.config.method}" \
               f"_{frame.config.loss.replace('+', '-')}_eps{frame.config.eps:.3f}.png"
        crafted = f"crafted on {checkpoint}, scored on {scored}" if scored else checkpoint
        caption = f"{crafted} · {frame.slice_id} · {frame.config.label} · L-inf {frame.result.linf:.4f}"
        path = write_png(self.export_dir / name, attack_figure(self._attack_panels(frame), caption))
        self.call_from_thread(self.notify, f"Saved {path}")

    def action_export_scores(self) -> None:
        from segadv_tui.render.tables import save_tables, scores_table

        if self.frame is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        scored = "" if self.frame.scored_on is None else "_on_" + Path(self.frame.scored_on).stem
        stem = f"{self.frame.slice_id}_{self.frame.config.method}{scored}_eps{self.frame.config.eps:.3f}_scores"
        try:
            paths = save_tables(scores_table(self.frame), self.export_dir / stem)
        except SegadvError as exc:  # the message names the file
            self.notify(f"Could not export the scores: {exc}", severity="error", markup=False)
            return
        self.notify("Saved " + ", ".join(str(p) for p in paths))

    def action_table_ii(self) -> None:
        from segadv_tui.widgets.table_ii import TableIIScreen

        if self.dataset is None or not self.loaded:
            self.notify("Table II needs a data set with ground truth and a loaded checkpoint.", severity="warning")
            return
        self.push_screen(TableIIScreen(self))

    def table_ii_records(self) -> list:
        """The test split's slices with organs (the ones the paper scores), at most --limit of them."""
        from core.data import select_slices

        return select_slices(self.dataset, "test", limit=self.limit)

    def table_ii_models(self) -> list[tuple[str, object, dict]]:
        """Every loaded checkpoint as (label, model, meta)."""
        return [(path.stem, model, meta) for path, (model, meta, _) in self.loaded.items()]
