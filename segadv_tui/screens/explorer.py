"""The explorer screen: the panels, their layout, the keys' actions, and the workers that scan, load,
attack, sweep, prefetch and certify.

The decisions are elsewhere, without Textual: what the keys and fields ask of the attack, which model
scores, what is copied (``segadv_tui.state``), the layout by terminal size (``segadv_tui.layout``) and
what the frame worker computes (``segadv_tui.workers``); this module composes, handles and posts.

The state changes here, in ``@on`` handlers and actions on the UI thread; every
piece of model or file work runs in a thread worker that never touches a widget and posts a message
back. Each frame request carries an increasing id: a worker skips its work when a newer request exists
by the time it starts, iterative attacks stop at their next step, and a frame that arrives for an old id
is dropped. The attacker's lock lets only one computation run at a time, so holding ``+`` never builds a
backlog.

This module and the widgets import nothing that pulls in torch: the workers import it (the app has
started loading it in a thread) and the screen paints at once.
"""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path
from typing import TYPE_CHECKING

from textual import events, on, work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.geometry import Size
from textual.screen import Screen
from textual.widgets import Footer, Header
from textual.worker import Worker, WorkerState, get_current_worker

from core.attacks.config import AttackConfig
from core.errors import SegadvError
from core.wording import with_labels_caption
from segadv_tui.catalog import CheckpointEntry, LoadedCheckpoint
from segadv_tui.frames import Frame, FrameRequest, SliceCache, SliceData
from segadv_tui.gc_pause import LONGEST_PAUSE_S
from segadv_tui.gc_pause import resume as resume_collector
from segadv_tui.keys import EXPLORER_KEYS, MORE_LABEL_KEYS, TOGGLED_LABELS, explorer_eps_tooltips, with_eps_tooltips
from segadv_tui.layout import layout_classes
from segadv_tui.messages import (
    CertifyReady,
    CheckpointsFound,
    CurveReady,
    DataReady,
    FrameReady,
    LiveStepReady,
    ModelLoaded,
    OpeningSlice,
)
from segadv_tui.state import FAILURE_TITLES, ExplorerOptions, ExplorerState, cycle_next, first_look, opening_slice
from segadv_tui.widgets.attack import CHOICES, AttackPanel, EpsInput
from segadv_tui.widgets.checkpoints import CheckpointList
from segadv_tui.widgets.images import VIEWS, Picture, PictureViews
from segadv_tui.widgets.scores import DscCurve, ScoresPanel, ScoresTable
from segadv_tui.widgets.slices import SliceBrowser
from segadv_tui.widgets.summary import SummaryLine
from segadv_tui.workers import WorkerHooks, compute_frame

if TYPE_CHECKING:
    from segadv_tui.attacker import SliceAttacker


class ExplorerScreen(Screen):
    """Pick a checkpoint and a slice, step epsilon, watch the masks and the scores."""

    BINDINGS = [*EXPLORER_KEYS, *MORE_LABEL_KEYS]

    def __init__(self, options: ExplorerOptions, hooks: WorkerHooks | None = None):
        super().__init__()
        self.state = ExplorerState(options)
        self.hooks = hooks or WorkerHooks()
        self._title_eps_keys()
        self.attacker: SliceAttacker | None = None  # once a model is loaded
        self.graphics_choices = ["halfblock"] + ([options.graphics] if options.graphics != "halfblock" else [])
        self._slices = SliceCache()
        self._frame_worker: Worker | None = None  # the latest frame request's (an older one's failure is stale)
        self._load_worker: Worker | None = None  # the latest checkpoint load's
        self._compiled: set[Path] = set()  # checkpoints whose model the model cache was given this session
        self._failed: str | None = None  # the FAILURE_TITLES group whose failure was shown last
        self._sidebar_forced: bool | None = None
        self._focus_sidebar = False  # the Focus view hides the side panels until b shows them
        self._view_before_focus = "overlay"
        # Set once the launch is over (its first frame painted, or a failure shown): a tree opened for the
        # first time is indexed from then on, not while torch imports (they share the GIL).
        self._launched = threading.Event()

    # -- layout --------------------------------------------------------------------------------

    def compose(self) -> ComposeResult:
        yield Header()
        with Horizontal(id="body"):
            with Vertical(id="sidebar"):
                yield CheckpointList(id="checkpoints")
                yield SliceBrowser(id="slices")
                yield AttackPanel(self.state.attack, has_truth=self.state.has_truth, id="attack")
            with Vertical(id="view"):
                yield SummaryLine("starting…", id="summary")
                # The settings file's default_view; Focus is switched to once mounted (it picks its picture).
                first = "overlay" if self.state.options.view == "focus" else self.state.options.view
                yield PictureViews(renderer=self.state.options.graphics, view=first, id="images")
                with Horizontal(id="bottom"):
                    yield ScoresPanel(
                        show_timings=self.state.options.show_timings, metrics=self.state.attack.metrics, id="scores"
                    )
                    yield DscCurve(id="curve")
        yield Footer()

    def on_mount(self) -> None:
        self.query_one("#checkpoints").border_title = "Checkpoints"
        self.query_one("#slices").border_title = "Slices"
        self.query_one("#attack").border_title = "Attack"
        self.query_one(ScoresPanel).set_scored_on(None)
        self.query_one("#curve").border_title = "FGSM mean DSC vs eps"
        self.query_one(AttackPanel).show(self.state.attack)
        self.query_one("#images").loading = True
        self._update_layout()
        if self.state.options.view == "focus":
            self.call_after_refresh(self.show_view, "focus")
        self.app.sub_title = self.state.options.device_label or "loading torch…"
        self._summary("loading torch and the model…")
        self.set_timer(LONGEST_PAUSE_S, self._launch_over)  # should neither a frame nor a failure come
        self._scan_catalog()
        self._load_data()

    def on_resize(self, event: events.Resize) -> None:
        self._update_layout(event.size)

    def _update_layout(self, size: Size | None = None) -> None:
        width, height = size or self.app.size
        classes = layout_classes(
            width,
            height,
            sidebar_forced=self._sidebar_forced,
            focus_view=self._in_focus_view(),
            focus_sidebar=self._focus_sidebar,
        )
        for name, present in classes.items():
            self.set_class(present, name)

    def _title_eps_keys(self) -> None:
        """The footer's eps tooltips say what a press adds now (``explorer_eps_tooltips``): after a change of
        norm, method or slice size too. Textual has no public way to retitle a binding."""
        tooltips = explorer_eps_tooltips(self.state)
        keys = self._bindings.key_to_bindings
        for key, bindings in keys.items():
            keys[key] = with_eps_tooltips(bindings, tooltips)

    # -- start-up: checkpoints and data ---------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="scan", name="Loading torch")
    def _scan_catalog(self) -> None:
        # torch, segmentation-models-pytorch and MONAI take seconds to import: here, not before the first paint.
        from core.devices import describe_device, resolve_device
        from core.paths import bundled_checkpoint_dirs
        from segadv_tui.catalog import scan

        options = self.state.options
        device = resolve_device(options.device)  # a device that does not exist: a notification naming those that do
        catalog = scan(bundled_checkpoint_dirs() + options.checkpoint_dirs, options.checkpoint_files + options.deltas)
        self.post_message(CheckpointsFound(catalog, str(device), describe_device(device)))

    @on(CheckpointsFound)
    def _catalog_found(self, message: CheckpointsFound) -> None:
        state = self.state
        state.device = message.device
        if not state.options.device_label:
            self.app.sub_title = message.device_text
        state.catalog = message.catalog
        self.query_one(CheckpointList).set_entries(state.catalog.checkpoints)
        self.query_one(AttackPanel).set_files(
            [(entry.path.stem, str(entry.path)) for entry in state.catalog.checkpoints if entry.meta is not None],
            [(delta.path.stem, str(delta.path)) for delta in state.catalog.deltas],
        )
        opened = state.opening_delta()
        if opened is not None:
            self.set_attack(state.changed(method="universal", delta=str(opened.path)))
        if state.checkpoint_is_a_delta():
            self.notify(
                f"--checkpoint {state.options.checkpoint} is a universal perturbation, not a checkpoint "
                f"(open it with --delta).",
                severity="warning",
                timeout=10,
                markup=False,
            )
        chosen = state.opening_checkpoint()
        if chosen is None:
            self.query_one("#images").loading = False
            self.notify("No loadable checkpoint found (see --checkpoints).", severity="warning", timeout=8)
            self._show_failure("load", "No loadable checkpoint found.")
            return
        self.load_checkpoint(chosen)

    @work(thread=True, exclusive=True, exit_on_error=False, group="data", name="Opening the data")
    def _load_data(self) -> None:
        options = self.state.options
        if options.image is not None:
            self.post_message(DataReady(None, [Path(options.image)], str(options.image)))
            return
        from core.data.gitract import GITractDataset
        from core.data.open import open_dataset
        from segadv_tui.index_cache import cached_opening, index_key, load_index, save_index, save_opening

        # A UW-Madison tree indexed before opens from the cache (seconds at real scale); a fresh index is
        # saved after the explorer has it. A Decathlon folder's index reads headers only: no cache. The
        # opening slice comes first (kept beside the index, or a first look at a tree not indexed before),
        # and the index, a 37 MB pickle or seconds of reading at real scale, after the first frame. The
        # root is absolute: the records carry their paths under it, whatever folder the next start is in.
        root = None if options.data is None else Path(options.data).absolute()
        dataset, key, opening = None, None, None
        if root is not None and _uw_madison(root):
            key = index_key(root)
            opening = cached_opening(root, key, options.test_fraction)
            if opening is None:
                dataset, _ = load_index(root, key)
            if dataset is None and opening is None:
                opening = first_look(root, options.test_fraction)
            if opening is not None:
                self.post_message(OpeningSlice(opening, GITractDataset.labels))
                worker = get_current_worker()
                self._wait_for_the_launch(worker)
                if worker.is_cancelled:  # the app closed before its first frame: no index to read
                    return
                dataset, _ = load_index(root, key)
        fresh = dataset is None
        if fresh:
            dataset = open_dataset(root, slice_axis=options.slice_axis, kind=options.label_kind())
        description = str(options.data) if options.data else "built-in demo"
        first = opening_slice(dataset.records, options.test_fraction) if dataset.records else None
        self.post_message(DataReady(dataset, list(dataset.records), description, first))
        for problem in dataset.problems[:3]:
            self.app.call_from_thread(self.notify, problem, severity="warning", timeout=8)
        if key is not None and first is not None:
            if fresh:
                save_index(root, key, dataset, (options.test_fraction, first))
            elif opening is None:  # the index from the cache, but no opening slice for this split beside it
                save_opening(root, key, options.test_fraction, first)

    def _wait_for_the_launch(self, worker: Worker) -> None:
        """Until the launch is over (``_launched``: at most LONGEST_PAUSE_S) or the app closes."""
        while not self._launched.wait(0.05) and not worker.is_cancelled:
            pass

    def _launch_over(self) -> None:
        if not self._launched.is_set():
            resume_collector()  # the launch's pause (segadv_tui.gc_pause), before the index may unpickle
            self._launched.set()

    def _use_data_labels(self) -> None:
        """Show the data's labels, now known; a checkpoint that came first must segment them."""
        self._use_labels()
        attacked = self.state.attacked
        problem = self.state.label_problem(attacked) if attacked is not None else None
        if attacked is not None and problem:
            self._refuse(attacked, problem)

    @on(OpeningSlice)
    def _opening_slice(self, message: OpeningSlice) -> None:
        """Attack the opening slice while the index is read: the slices panel fills when it is complete."""
        state = self.state
        if state.dataset is not None or state.source is not None:  # the index came first
            return
        state.data_labels = message.labels
        self._use_data_labels()
        browser = self.query_one(SliceBrowser)
        browser.border_subtitle = "indexing…"
        browser.focus()  # where the index would put it: not later, when the user may be typing elsewhere
        state.source = message.record
        self.request_frame()

    @on(DataReady)
    def _data_ready(self, message: DataReady) -> None:
        state = self.state
        state.dataset = message.dataset
        state.records = message.records
        self._use_data_labels()
        browser = self.query_one(SliceBrowser)
        if not state.has_truth:
            browser.border_subtitle = "one PNG, no ground truth"
            browser.root.add_leaf(Path(state.options.image).name, data=None)
            state.source = Path(state.options.image)
            self.request_frame()
            return
        browser.set_records(state.records, state.labels)
        if not state.records:
            self.notify(f"No slices in {message.description}.", severity="warning", markup=False)
            self._show_failure("data", f"No slices in {message.description}.")
            return
        opened = None  # the slice a first look opened, where the index holds it as it was
        if state.source is not None:
            try:
                indexed = message.dataset.by_id(state.source.id)
            except KeyError:
                indexed = None
            opened = indexed if indexed == state.source else None
        if opened is None:
            browser.focus()
        first = message.opening if opened is None else opened
        if not browser.records:
            browser.set_organs_only(False)
        browser.choose(first)
        frame = state.frame
        # Shown before j and k had slices: their prefetch now.
        if opened is not None and frame is not None and state.is_latest(frame.request_id):
            self._follow_frame(frame)

    # -- checkpoints ------------------------------------------------------------------------------

    @on(CheckpointList.Chosen)
    def _checkpoint_chosen(self, message: CheckpointList.Chosen) -> None:
        self.load_checkpoint(message.entry)

    def load_checkpoint(self, entry: CheckpointEntry) -> None:
        """Attack ``entry``'s model, loading it first unless it is loaded."""
        if entry.path in self.state.loaded:
            self._attack_with(self.state.loaded[entry.path])
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
        from core.models.compiled import open_model
        from segadv_tui.attacker import leave_a_core_for_the_ui

        leave_a_core_for_the_ui()
        model, meta = open_model(entry.path, self.state.device)  # torch alone when opened before
        self.post_message(ModelLoaded(LoadedCheckpoint(entry, model, meta), scoring))

    @on(ModelLoaded)
    def _model_loaded(self, message: ModelLoaded) -> None:
        loaded = message.checkpoint
        problem = self.state.label_problem(loaded)
        if problem:
            self._refuse(loaded, problem, scoring=message.scoring)
            return
        self.state.loaded[loaded.path] = loaded
        self.query_one(CheckpointList).mark(loaded.path, current=False)
        if message.scoring:
            if loaded.path == self.state.scoring_wanted:  # not overtaken by a later choice while it loaded
                self.score_on(loaded.entry)
        else:
            self._attack_with(loaded)

    def _refuse(self, loaded: LoadedCheckpoint, problem: str, *, scoring: bool = False) -> None:
        """``loaded`` segments other labels than the data's: say so (one line naming both sets), and
        attack (or score on) it no more."""
        state = self.state
        state.loaded.pop(loaded.path, None)
        self.notify(problem, severity="error", timeout=10, markup=False)
        if scoring:
            state.scoring_wanted = None
            self._show_scored_on()
            return
        if state.attacked is loaded:
            state.attacked, self.attacker = None, None
        self.query_one(CheckpointList).unmark(loaded.path)
        self._show_failure("load", problem)

    def _use_labels(self) -> None:
        """Show the label set of the data (for a lone PNG, the checkpoint's): the labels to erase, the
        pictures' labels and keys, the scores' rows."""
        state = self.state
        labels = state.labels
        if state.attack.labels != labels:
            state.attack = state.attack.for_labels(labels)
            self.query_one(AttackPanel).show(state.attack)
        self.query_one(PictureViews).set_labels(labels)
        self.query_one(ScoresPanel).query_one(ScoresTable).set_labels(labels)

    def _attack_with(self, loaded: LoadedCheckpoint) -> None:
        state = self.state
        state.attacked = loaded
        if state.dataset is None:  # a lone PNG: the checkpoint's labels are the ones shown
            self._use_labels()
        from segadv_tui.attacker import SliceAttacker  # torch is loaded by now (the model is here)

        self.attacker = SliceAttacker(loaded.model, str(loaded.path), device=state.device)
        state.curve = None
        self._title_eps_keys()  # an L2 step is the slice side's multiple: this model's side
        self.refresh_bindings()
        if state.source is None:  # no slice to attack yet (or none to be had): the summary names the model
            self._summary()
        self.query_one(CheckpointList).mark(loaded.path, current=True)
        self.query_one("#images").loading = False
        if state.scored_on is not None:
            scoring = state.loaded[state.scored_on].entry
            if scoring.path == loaded.path:
                self._set_scored_on(None, request=False)  # the attacked model itself: white box again
            elif state.size_problem(scoring):
                self.notify(
                    f"Scoring on the attacked model again: {state.size_problem(scoring)}.",
                    severity="warning",
                    markup=False,
                )
                self._set_scored_on(None, request=False)
        self.request_frame()

    # -- scoring on another model (a transfer) ---------------------------------------------------

    def score_on(self, entry: CheckpointEntry | None) -> None:
        """Score the frames on ``entry``'s model, the attack still crafted on the current checkpoint (None,
        or the current checkpoint itself: white box). A model not loaded yet is loaded first."""
        state = self.state
        if entry is None or (state.attacked is not None and entry.path == state.attacked.path):
            state.scoring_wanted = None
            self._set_scored_on(None)
            return
        problem = state.scoring_problem(entry)
        if problem:
            self.notify(f"Cannot score on {entry.path.stem}: {problem}.", severity="error", markup=False)
            self._show_scored_on()
            return
        state.scoring_wanted = entry.path
        if entry.path not in state.loaded:
            self._load_scoring_worker(entry)
            return
        self._set_scored_on(entry.path)

    def _show_scored_on(self) -> None:
        """The Score on select back on the model the frames are scored on (after a refusal or a failed load)."""
        scored_on = self.state.scored_on
        self.state.scoring_wanted = scored_on
        self.query_one(AttackPanel).show_scored_on(None if scored_on is None else str(scored_on))

    def _set_scored_on(self, path: Path | None, *, request: bool = True) -> None:
        self.query_one(AttackPanel).show_scored_on(None if path is None else str(path))
        if path == self.state.scored_on:
            return
        self.state.scored_on = path
        self.state.curve = None
        self.query_one(CheckpointList).mark_scored_on(path)
        self.query_one(ScoresPanel).set_scored_on(None if path is None else path.stem)
        if request:
            self.request_frame()

    def action_score_on_next(self) -> None:
        """The next checkpoint of the list to score on, back to the attacked model after the last."""
        if self.state.attacked is None:
            return
        entry, problem = self.state.next_scoring_choice()
        if problem:
            self.notify(problem, severity="warning")
            return
        self.score_on(entry)

    # -- universal perturbations -----------------------------------------------------------------

    def action_next_delta(self) -> None:
        problem = self.state.next_delta_problem()
        if problem:
            self.notify(problem, severity="warning", timeout=8, markup=False)
            return
        self.set_attack(self.state.with_next_delta())

    # -- slices ----------------------------------------------------------------------------------

    @on(SliceBrowser.Chosen)
    def _slice_chosen(self, message: SliceBrowser.Chosen) -> None:
        if message.record == self.state.source:  # equal: the index's record of the slice a first look opened
            return
        self.state.source = message.record
        self.request_frame()

    def action_slice(self, offset: int) -> None:
        if self.state.has_truth:
            self.query_one(SliceBrowser).step(offset)

    def action_organs_only(self) -> None:
        browser = self.query_one(SliceBrowser)
        if self.state.has_truth and self.state.dataset is None:
            self.notify("The slices are still being indexed.")
            return
        if self.state.has_truth:
            browser.set_organs_only(not browser.organs_only)
            only = f"Showing only slices{with_labels_caption(self.state.labels, False)}."
            self.notify(only if browser.organs_only else "Showing all slices.")

    # -- the attack ------------------------------------------------------------------------------

    def set_attack(self, attack: AttackConfig) -> None:
        """Attack with ``attack`` from now on (completed as the explorer runs it) and show it."""
        state = self.state
        attack = state.completed(attack)
        self.query_one(AttackPanel).show(attack)  # also puts back a select left elsewhere when nothing changed
        if attack == state.attack:
            return
        retitle = (attack.method, attack.norm) != (state.attack.method, state.attack.norm)
        state.attack = attack
        if retitle:  # the eps keys step the severity under the corrupt method, and L2's eps by its own step
            self._title_eps_keys()
            self.refresh_bindings()
        curve = self.query_one(DscCurve)
        curve.show(curve.curve, state.curve_eps)
        self.request_frame()

    def action_step_eps(self, direction: int, size: str = "fine") -> None:
        self.set_attack(self.state.stepped_eps(direction, size))

    def action_eps_zero(self) -> None:
        self.set_attack(self.state.attack.with_eps(0.0))

    def action_edit_eps(self) -> None:
        self._show_sidebar_if_hidden()
        self.query_one(EpsInput).focus()

    def action_step_severity(self, direction: int) -> None:
        self.set_attack(self.state.stepped_eps(direction))

    def action_cycle(self, field: str) -> None:
        cycled = self.state.cycled(field, [value for _, value in CHOICES[field]])
        if isinstance(cycled, str):
            self.notify(cycled)
            return
        self.set_attack(cycled)

    @on(AttackPanel.Changed)
    def _attack_changed(self, message: AttackPanel.Changed) -> None:
        state = self.state
        if message.field == "scored":
            chosen = (entry for entry in state.catalog.checkpoints if str(entry.path) == message.value)
            self.score_on(next(chosen, None))
            return
        if message.field == "delta":
            if not message.value and state.attack.method == "universal":  # it needs one: keep the current
                self.query_one(AttackPanel).show(state.attack)
                return
            self.set_attack(state.attack.replace(delta=message.value or None))
            return
        if message.field == "norm":  # eps carried over to the new norm's scale
            self.set_attack(state.with_norm(message.value))
            return
        if message.field != "eps":
            self.set_attack(state.changed(**{message.field: message.value}))
            return
        attack, problem = state.typed_eps(message.value)  # under the corrupt method, the severity
        if attack is None:
            self.notify(problem, severity="error", markup=False)
            self.query_one(AttackPanel).show(state.attack)
            return
        if problem:
            self.notify(problem, severity="warning", markup=False)
        self.query_one(SliceBrowser).focus()  # away from the field, so the keys are shortcuts again
        self.set_attack(attack)  # shows it

    # -- frames ----------------------------------------------------------------------------------

    def request_frame(self) -> None:
        """Ask for the frame of the current checkpoint, slice and attack; newer requests win."""
        if self.attacker is None or self.state.source is None:
            return
        request = self.state.new_request()
        self._summary()
        self._frame_worker = self._compute_frame(request, self.attacker)

    @work(thread=True, exclusive=True, exit_on_error=False, group="frame", name="Attacking the slice")
    def _compute_frame(self, request: FrameRequest, attacker: SliceAttacker) -> None:
        worker = get_current_worker()
        frame = compute_frame(
            request,
            attacker,
            self._slices,
            self.state.attacked.img_size,
            should_stop=lambda: worker.is_cancelled or not self.state.is_latest(request.id),
            post_live=lambda live: self.post_message(LiveStepReady(live)),
            hooks=self.hooks,
        )
        if frame is not None:
            self.post_message(FrameReady(frame))

    @on(LiveStepReady)
    def _live_step(self, message: LiveStepReady) -> None:
        live = message.live
        if not self.state.is_latest(live.request_id):
            return
        self.state.live_steps += 1
        self.state.live = live
        self._show_pictures(live.result, self.state.pixel_eps(live.config))
        self.query_one(ScoresPanel).show_live(live)

    def _show_pictures(self, result, eps: float) -> None:
        """The pictures of a slice's attack (a finished frame or an iterative run's current iterate); the
        perturbation drawn at ``eps`` per pixel (``ExplorerState.pixel_eps``)."""
        from segadv_tui.render.figures import AttackPanels

        self.query_one(PictureViews).show(AttackPanels.from_result(result, eps), result.pictures.has_truth)

    @on(FrameReady)
    def _frame_ready(self, message: FrameReady) -> None:
        state = self.state
        frame = message.frame
        if not state.is_latest(frame.request_id):
            state.dropped_frames += 1
            return
        state.frame = frame
        self._show_pictures(frame.result, self.state.pixel_eps(frame.config))
        scores = self.query_one(ScoresPanel)
        scores.show(frame)
        live = state.live if state.live is not None and state.live.request_id == frame.request_id else None
        if live is None:
            scores.clear_live()
        else:  # the run's history, closed by the final iterate's score
            scores.show_live_line(
                replace(live, step=live.steps, seconds=frame.seconds, mean_dsc=live.mean_dsc + (frame.result.mean_adv,))
            )
        if not self._launched.is_set():
            # Once this frame is on screen: from call_after_refresh, the collection's 0.2 s came before the
            # terminal had the frame and delayed it by as much (benchmarks/profile_launch.py).
            self.set_timer(0.1, self._launch_over)
        self._follow_frame(frame)
        self._summary()
        if state.attacked.path not in self._compiled:  # after the first frame: the next launch's is sooner
            self._compiled.add(state.attacked.path)
            self._compile_model(state.attacked, state.device)

    def _follow_frame(self, frame: Frame) -> None:
        """The frame's eps curve (unless the curve shown is its) and the prefetch of the slices ``j`` and
        ``k`` choose next, after the frame is painted: started at once, they slowed it (j in 74-110 ms
        against 78-86)."""
        state = self.state
        curve = self.query_one(DscCurve)
        curve_data = None
        if state.curve is not None and state.curve_matches(state.curve, frame):
            curve.show(state.curve, state.curve_eps)
        else:
            curve.show(None, state.curve_eps)
            curve_data = self._slices.of_frame(frame, state.attacked.img_size)
        upcoming = self.query_one(SliceBrowser).neighbours(state.source) if state.has_truth else []
        self.call_after_refresh(
            self._after_frame,
            frame.request_id,
            curve_data,
            upcoming,
            state.attacked.img_size,
            frame.config,
            self.attacker,
            state.scoring_model() if frame.scored_on is not None else None,
        )

    @work(thread=True, exit_on_error=False, group="compile", name="Caching the compiled model")
    def _compile_model(self, loaded: LoadedCheckpoint, device: str) -> None:
        from core.models.compiled import save_compiled

        save_compiled(loaded.path, loaded.model, loaded.meta, device)  # nothing to say when it cannot: no cache

    @work(thread=True, exclusive=True, exit_on_error=False, group="curve", name="Sweeping eps and prefetching")
    def _after_frame(
        self,
        request_id: int,
        curve_data: SliceData | None,
        upcoming: list,
        img_size: int,
        attack: AttackConfig,
        attacker: SliceAttacker,
        scored_on: LoadedCheckpoint | None = None,
    ) -> None:
        """Once a frame is shown: its eps curve (``curve_data``: its slice, None when the curve shown is
        already its), then, while no newer request exists, what the ``upcoming`` slices' frames (j's and
        k's) start with: the slice read and resized, its gradient or clean prediction. A request that
        arrives meanwhile waits for one piece of the prefetch at most (``SliceAttacker.prefetch``)."""
        worker = get_current_worker()
        if curve_data is not None:
            curve = attacker.curve(curve_data, attack, should_stop=lambda: worker.is_cancelled, scored_on=scored_on)
            if curve is None:
                return
            self.post_message(CurveReady(curve))

        def should_stop() -> bool:
            return worker.is_cancelled or not self.state.is_latest(request_id)

        for record in upcoming:
            if should_stop():
                return
            try:
                data = self._slices.get(record, img_size)
            except SegadvError:  # a slice that cannot be read: said when it is chosen, not ahead of time
                continue
            if not attacker.prefetch(data, attack, should_stop=should_stop, scored_on=scored_on):
                return

    @on(CurveReady)
    def _curve_ready(self, message: CurveReady) -> None:
        state = self.state
        state.curve = message.curve
        if state.frame is not None and state.curve_matches(message.curve, state.frame):
            self.query_one(DscCurve).show(message.curve, state.curve_eps)

    def _summary(self, text: str | None = None) -> None:
        """The summary line: ``text``, or what the explorer attacks and how (state.summary), in fewer words
        where the long ones do not fit."""
        line = self.query_one(SummaryLine)
        if text is not None:
            line.show(text)
            return
        device = self.app.sub_title if self.has_class("-compact") else None
        line.show(self.state.summary(device), self.state.summary(device, short=True))

    # -- failures ----------------------------------------------------------------------------------

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.state != WorkerState.ERROR:
            return
        worker = event.worker
        if worker.group in ("scan", "load", "frame"):
            self.query_one("#images").loading = False
        if worker.group == "load-scoring":
            self._show_scored_on()
        message = self.app.report_worker_error(worker.name, worker.error)
        stale = (worker.group == "frame" and worker is not self._frame_worker) or (
            worker.group == "load" and worker is not self._load_worker
        )
        if worker.group in FAILURE_TITLES and not stale:
            self._show_failure(worker.group, message)

    def _show_failure(self, group: str, message: str) -> None:
        """What failed and what to do about it, where the pictures would be, until the user picks something
        that works (the next pictures replace it). ``group``: the work that failed (FAILURE_TITLES)."""
        self._failed = group
        self._launch_over()  # without a frame
        if group == "data":
            self.query_one(SliceBrowser).border_subtitle = ""  # not "indexing…" beside the failure
        self.query_one("#images").loading = False
        advice = self.state.failure_advice(group)
        self.query_one(PictureViews).show_failure(FAILURE_TITLES[group], f"{message}\n\n{advice}")
        self.query_one(ScoresPanel).clear()  # no scores or curve of an earlier choice beside the failure
        self.query_one(DscCurve).clear()
        self._summary()

    # -- keys --------------------------------------------------------------------------------------

    def check_action(self, action: str, parameters: tuple) -> bool | None:
        from segadv_tui.screens.table_ii import TableIIScreen

        if isinstance(self.app.screen, TableIIScreen):  # the palette's commands: Table II's run froze the attack
            return False
        if action == "leave_focus":
            return self._in_focus_view()
        if action == "toggle_organ":  # keys 1 to 9: as many as the label set has
            return parameters[0] < min(len(self.state.labels), TOGGLED_LABELS)
        return self.state.key_applies(action, parameters)

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
        self._update_layout()
        if view == "focus":
            views.focus_picture().focus()
        elif isinstance(self.focused, Picture) and not self.focused.display:
            self.query_one(SliceBrowser).focus()

    def _in_focus_view(self) -> bool:
        return self.query_one(PictureViews).view == "focus"

    def action_cycle_view(self) -> None:
        self.show_view(cycle_next(VIEWS, self.query_one(PictureViews).view))

    def action_focus_view(self) -> None:
        if self._in_focus_view():
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
        hidden = self.has_class("-no-sidebar")
        if self._in_focus_view():
            self._focus_sidebar = hidden
        else:
            self._sidebar_forced = hidden
        self._update_layout()

    def _show_sidebar_if_hidden(self) -> None:
        if self.has_class("-no-sidebar"):
            self.action_toggle_sidebar()

    def action_focus(self, widget_id: str) -> None:
        self._show_sidebar_if_hidden()
        self.query_one(f"#{widget_id}").focus()

    def action_cycle_graphics(self) -> None:
        if len(self.graphics_choices) == 1:
            self.notify(
                "Only the half-block renderer is available: start with --graphics kitty or sixel "
                "in a terminal that supports it."
            )
            return
        views = self.query_one(PictureViews)
        renderer = cycle_next(self.graphics_choices, views.renderer)
        views.use_renderer(renderer)
        self.notify(f"Pictures: {renderer}")

    # -- certification -------------------------------------------------------------------------------

    def action_certify(self) -> None:
        """Certify the slice shown by randomized smoothing (n forward passes, in a worker) and show its
        certified pixels."""
        state = self.state
        if self.attacker is None or state.frame is None:
            self.notify("Nothing to certify yet: wait for the slice's pictures.", severity="warning")
            return
        config, problem = state.certify_config()
        if problem:
            self.notify(problem, severity="error", timeout=10, markup=False)
            return
        data = self._slices.of_frame(state.frame, state.attacked.img_size)
        self.notify(
            f"Certifying {data.id}: {config.forward_passes} forward passes (σ {config.sigma:g}, n {config.n})…",
            timeout=5,
        )
        self._certify_worker(data, config, self.attacker)

    @work(thread=True, exclusive=True, exit_on_error=False, group="certify", name="Certifying the slice")
    def _certify_worker(self, data: SliceData, config, attacker: SliceAttacker) -> None:
        self.post_message(CertifyReady(attacker.certify(data, config, self.state.attack.empty)))

    @on(CertifyReady)
    def _certified(self, message: CertifyReady) -> None:
        from segadv_tui.screens.certify import CertifyScreen

        labels = self.state.labels
        self.app.push_screen(
            CertifyScreen(message.picture, list(labels.titles.values()), tuple(labels.colours.values()))
        )

    # -- exports and Table II ----------------------------------------------------------------------

    def action_export_figure(self) -> None:
        frame = self.state.frame
        if frame is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        state = self.state
        self._export_figure(
            frame,
            state.pixel_eps(frame.config),
            state.options.export_dir / state.figure_name(frame),
            state.figure_caption(frame),
        )

    @work(thread=True, exit_on_error=False, group="export", name="Exporting the figure")
    def _export_figure(self, frame: Frame, eps: float, path: Path, caption: str) -> None:
        from core.files import write_png
        from segadv_tui.render.figures import AttackPanels, attack_figure

        path = write_png(path, attack_figure(AttackPanels.from_result(frame.result, eps), caption))
        self.app.call_from_thread(self.notify, f"Saved {path}")

    def action_export_scores(self) -> None:
        from segadv_tui.render.tables import save_tables, scores_table

        frame = self.state.frame
        if frame is None:
            self.notify("Nothing to export yet.", severity="warning")
            return
        try:
            paths = save_tables(scores_table(frame), self.state.options.export_dir / self.state.scores_stem(frame))
        except SegadvError as exc:  # the message names the file
            self.notify(f"Could not export the scores: {exc}", severity="error", markup=False)
            return
        self.notify("Saved " + ", ".join(str(p) for p in paths))

    def action_copy(self, name: str) -> None:
        self.app.copy_text(*self.state.copy_texts()[name])

    def action_table_ii(self) -> None:
        from segadv_tui.screens.table_ii import TableIIScreen

        if self.state.dataset is None and self.state.source is not None and self.state.has_truth:
            self.notify("Table II: the slices are still being indexed.", severity="warning")
            return
        if self.state.dataset is None or not self.state.loaded:
            self.notify("Table II needs a data set with ground truth and a loaded checkpoint.", severity="warning")
            return
        self.app.push_screen(TableIIScreen(self.state))


def _uw_madison(root: Path) -> bool:
    """Whether ``root`` is read as UW-Madison data (``data_layout``'s rule: dataset.json wins over train.csv)."""
    from core.data.open import DataError, data_layout

    try:
        return data_layout(root) == "uw-madison"
    except DataError:  # neither: opening it says so
        return False
