"""The explorer's state and its decisions, without Textual or torch: what it was started with, the attack
it shows, the checkpoints it found and loaded, which model scores the frames, which universal
perturbation applies, whether a curve belongs to a frame, the summary line and the names of exports.

The explorer screen owns one :class:`ExplorerState` and changes it on the UI thread; the command
palette and the Table II screen read it. Every method here is a plain function of the state, so the
decisions are tested without an app.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from rich.markup import escape

from core.attacks.config import MAX_L2_EPS, METHODS, AttackConfig, clamp_eps
from core.data.decathlon import DEFAULT_SLICE_AXIS
from core.data.gitract import SliceRecord, select_slices, split_by_case, with_labels
from core.labels import UW_MADISON, LabelSet, LabelSetError, check_same_labels
from core.models.loaded import LoadedModel
from core.names import CORRUPTION_LEVELS, CORRUPTION_TITLES
from core.paths import DEMO_CHECKPOINT_NAME
from segadv_tui.catalog import Catalog, CheckpointEntry, DeltaEntry, LoadedCheckpoint
from segadv_tui.frames import Curve, Frame, FrameRequest, LiveStep

# Epsilon per step of the eps keys: + and - step finely (ExplorerOptions.eps_step), ] and [ coarsely. Under
# the corrupt method the same keys step the severity by one (coarse: to the end of 1..5).
EPS_STEP = 0.001
STEPS_PER_PRESS = {"fine": 1, "coarse": 5}
# The slice side an L2 eps is scaled by before a checkpoint says its own (the demo checkpoint's).
DEFAULT_IMG_SIZE = 224
# The work whose failure takes the pictures' place, and the title it is shown under.
FAILURE_TITLES = {
    "scan": "Cannot start",
    "data": "Cannot open the data",
    "load": "Cannot open the checkpoint",
    "frame": "Cannot attack this slice",
}

T = TypeVar("T")


def cycle_next(values: Sequence[T], current: Any) -> T:
    """The value after ``current`` in ``values``, back to the first after the last (or if it is not there)."""
    index = values.index(current) if current in values else -1
    return values[(index + 1) % len(values)]


@dataclass
class ExplorerOptions:
    """What segadv-tui was started with: the data (or one PNG), where to find checkpoints and universal
    perturbations (``checkpoint``: the one to open; ``deltas``: the first is opened), the Table II slice
    limit, the picture renderer, where exports go (None: the working folder), the device (None: the
    best there is) and how the summary and scores show it."""

    data: Path | None = None
    slice_axis: int = DEFAULT_SLICE_AXIS  # how a Decathlon folder's volumes are cut (--slice-axis)
    image: Path | None = None
    checkpoint_dirs: list[Path] | None = None
    checkpoints: list[Path] | None = None
    checkpoint: Path | None = None
    deltas: list[Path] | None = None
    limit: int | None = None
    graphics: str = "halfblock"
    export_dir: Path | None = None
    device: str | None = None
    device_label: str | None = None
    show_timings: bool = True
    hausdorff: bool = False  # --metrics: HD95 and NSD (at nsd_tolerance mm) as columns of the Scores table
    nsd_tolerance: float | None = None
    eps_step: float = EPS_STEP  # per + / -; ] and [ step five times as far (the settings file's)
    test_fraction: float = 0.1  # the test split's share of the cases (the settings file's split)
    view: str = "overlay"  # the pictures' view at start
    certify_sigma: float = 0.25  # randomized smoothing's noise for the Certify command (segadv certify's default)
    certify_samples: int = 100  # its n: n + 16 forward passes a slice

    def __post_init__(self) -> None:
        self.checkpoint_dirs = list(self.checkpoint_dirs or [])
        self.checkpoints = list(self.checkpoints or [])
        self.deltas = [Path(path) for path in self.deltas or []]
        self.export_dir = Path(self.export_dir) if self.export_dir else Path.cwd()

    @property
    def checkpoint_files(self) -> list[Path]:
        """The checkpoint files to list beside those of the folders: --checkpoints' and --checkpoint."""
        return self.checkpoints + ([Path(self.checkpoint)] if self.checkpoint is not None else [])

    def label_kind(self) -> str | None:
        """The kind a Decathlon folder's labels take: that of --checkpoint, so that a sigmoid model trained
        on a label map is attacked on it. None (the data's own) without --checkpoint or a Decathlon folder,
        or where the data cannot take that kind (regions are sigmoid only): the label check then names
        both sets. Reads the checkpoint's header (torch loads): called from the data worker."""
        if self.checkpoint is None or self.data is None or not (Path(self.data) / "dataset.json").is_file():
            return None
        from core.data.dataset_json import read_description
        from core.errors import SegadvError
        from core.models.checkpoints import checkpoint_labels, read_checkpoint_meta

        try:
            kind = checkpoint_labels(Path(self.checkpoint), read_checkpoint_meta(self.checkpoint)).kind
            read_description(Path(self.data), kind)
        except SegadvError:
            return None
        return kind


@dataclass
class ExplorerState:
    """Everything the explorer shows and chose, changed only on the UI thread."""

    options: ExplorerOptions
    attack: AttackConfig = field(init=False)  # a lone PNG is attacked against its clean prediction
    device: str | None = field(init=False)  # --device until torch has loaded and resolved it
    dataset: Any = None  # a data set (core.data), None for a lone PNG
    data_labels: LabelSet | None = None  # the data's labels before its index is complete (a first look)
    records: list = field(default_factory=list)
    source: SliceRecord | Path | None = None  # the slice attacked
    catalog: Catalog = field(default_factory=Catalog)
    loaded: dict[Path, LoadedCheckpoint] = field(default_factory=dict)
    attacked: LoadedCheckpoint | None = None  # the checkpoint the attack is crafted on
    scored_on: Path | None = None  # the checkpoint the frames are scored on (None: the attacked one)
    scoring_wanted: Path | None = None  # the latest choice: a model still loading applies only if it is this
    frame: Frame | None = None
    curve: Curve | None = None
    live: LiveStep | None = None  # the latest progress of an iterative attack
    live_steps: int = 0  # progress repaints of iterative attacks shown
    dropped_frames: int = 0  # frames that arrived for a request no longer the latest
    latest_request: int = 0
    table_ii: Any = None  # the latest finished Table II (segadv_tui.render.tables.Table), for copying

    def __post_init__(self) -> None:
        self.attack = AttackConfig(
            target="gt" if self.has_truth else "pred",
            hausdorff=self.options.hausdorff,
            nsd_tolerance=self.options.nsd_tolerance,
        )
        self.device = self.options.device

    @property
    def has_truth(self) -> bool:
        return self.options.image is None

    # -- the label set --------------------------------------------------------------------------------

    @property
    def labels(self) -> LabelSet:
        """What the masks, toggles and scores show: the data's labels, for a lone PNG the attacked
        checkpoint's (UW-Madison's until either is known)."""
        if self.dataset is not None:
            return self.dataset.labels
        if self.data_labels is not None:
            return self.data_labels
        if self.attacked is not None:
            return self.attacked.model.labels
        return UW_MADISON

    def label_problem(self, loaded: LoadedCheckpoint) -> str | None:
        """Why ``loaded`` cannot be attacked on the data (its label set is not the data's), in one line
        naming both sets; None where it can (or no data is open yet, or a lone PNG)."""
        if self.dataset is None and self.data_labels is None:
            return None
        try:
            root = self.dataset.root if self.dataset is not None else self.options.data
            check_same_labels(loaded.model.labels, self.labels, loaded.path.name, f"data {root}")
        except LabelSetError as exc:
            return str(exc)
        return None

    # -- the checkpoints ------------------------------------------------------------------------------

    def opening_checkpoint(self) -> CheckpointEntry | None:
        """The checkpoint to open first: --checkpoint, else the bundled demo, else the first loadable one."""
        entries = self.catalog.checkpoints
        chosen = None
        if self.options.checkpoint is not None:
            wanted = Path(self.options.checkpoint).resolve()
            chosen = next((e for e in entries if e.path.resolve() == wanted), None)
        demo = Path(DEMO_CHECKPOINT_NAME).stem
        return (
            chosen
            or next((e for e in entries if e.meta is not None and e.path.stem == demo), None)
            or next((e for e in entries if e.meta is not None), None)
        )

    def checkpoint_is_a_delta(self) -> bool:
        """Whether --checkpoint names a universal perturbation found (it opens with --delta)."""
        if self.options.checkpoint is None:
            return False
        wanted = Path(self.options.checkpoint).resolve()
        return any(delta.path.resolve() == wanted for delta in self.catalog.deltas)

    def size_problem(self, entry: CheckpointEntry) -> str | None:
        """Why ``entry`` cannot score the attacked model's adversarial slices (None: it can)."""
        if self.attacked is None or entry.meta is None:
            return None
        size, attacked = entry.meta.get("img_size"), self.attacked.meta.get("img_size")
        if size == attacked:
            return None
        return f"it takes {size} px slices and {self.attacked.path.stem} {attacked} px"

    def scoring_model(self) -> LoadedCheckpoint | None:
        """The loaded checkpoint the frames are scored on, when not the attacked one."""
        return None if self.scored_on is None else self.loaded[self.scored_on]

    def scoring_choices(self) -> list[CheckpointEntry | None]:
        """What w cycles through: the attacked model (None), then every other checkpoint that can score it."""
        return [None] + [
            entry
            for entry in self.catalog.checkpoints
            if entry.meta is not None and entry.path != self.attacked.path and not self.size_problem(entry)
        ]

    def scoring_problem(self, entry: CheckpointEntry) -> str | None:
        """Why the frames cannot be scored on ``entry`` (None: they can)."""
        return entry.problem if entry.meta is None else self.size_problem(entry)

    def next_scoring_choice(self) -> tuple[CheckpointEntry | None, str | None]:
        """(what w scores on next: the next checkpoint that can, back to the attacked model (None) after the
        last, None) or (None, why there is none)."""
        choices = self.scoring_choices()
        if len(choices) == 1:
            return None, "No other checkpoint of this input size to score on (see --checkpoints)."
        paths = [None if entry is None else entry.path for entry in choices]
        current = self.scored_on if self.scored_on in paths else None
        return choices[paths.index(cycle_next(paths, current))], None

    # -- universal perturbations ----------------------------------------------------------------------

    def delta_entry(self, path: str | None) -> DeltaEntry | None:
        """The universal perturbation found at ``path`` (None: not one of them)."""
        return next((delta for delta in self.catalog.deltas if path is not None and str(delta.path) == path), None)

    def fitting_deltas(self) -> list[DeltaEntry]:
        """The universal perturbations that fit the attacked model's input (all of them before one is loaded)."""
        size = None if self.attacked is None else self.attacked.meta.get("img_size")
        return [delta for delta in self.catalog.deltas if size is None or delta.img_size == size]

    def opening_delta(self) -> DeltaEntry | None:
        """The universal perturbation of --delta, once found."""
        wanted = {path.resolve() for path in self.options.deltas}
        return next((delta for delta in self.catalog.deltas if delta.path.resolve() in wanted), None)

    def next_delta_problem(self) -> str | None:
        """Why u has no universal perturbation to apply (None: it has)."""
        if self.catalog.deltas and not self.fitting_deltas():
            sizes = ", ".join(sorted({f"{delta.img_size} px" for delta in self.catalog.deltas}))
            return (
                f"No universal perturbation found for {self.attacked.meta['img_size']} px slices (the ones found "
                f"are {sizes})."
            )
        if not self.catalog.deltas:
            return (
                "No universal perturbation found: make one with `segadv universal` and open it with "
                "segadv-tui --delta FILE (or put it in a --checkpoints folder)."
            )
        return None

    def with_next_delta(self) -> AttackConfig:
        """The attack with the next fitting universal perturbation (see next_delta_problem first)."""
        paths = [str(delta.path) for delta in self.fitting_deltas()]
        current = self.attack.delta if self.attack.method == "universal" else None
        return self.changed(method="universal", delta=cycle_next(paths, current))

    # -- the attack -----------------------------------------------------------------------------------

    def completed(self, attack: AttackConfig) -> AttackConfig:
        """``attack`` as the explorer runs it: the universal method with a perturbation (the first that fits),
        and a newly chosen perturbation at the bound it was made with (eps then scales it)."""
        if attack.method == "universal" and attack.delta is None and self.fitting_deltas():
            attack = attack.replace(delta=str(self.fitting_deltas()[0].path))
        if attack.delta is not None and attack.delta != self.attack.delta:
            chosen = self.delta_entry(attack.delta)
            if chosen is not None:
                attack = attack.with_eps(chosen.eps)
        return attack

    @property
    def eps_scale(self) -> float:
        """What one unit of L-inf eps is in the attack's norm: 1, or for L2 the slice side S (an L-inf
        perturbation e on every pixel of an S x S slice has L2 norm S e), so the eps keys step an L2 eps by
        the same per-pixel amount."""
        if self.attack.norm == "linf":
            return 1.0
        return float(self.attacked.img_size if self.attacked is not None else DEFAULT_IMG_SIZE)

    @property
    def eps_key_step(self) -> float:
        """What + and - add to the attack's eps (] and [ five times as much): eps_step times ``eps_scale``."""
        return self.options.eps_step * self.eps_scale

    def stepped_eps(self, direction: int, size: str = "fine") -> AttackConfig:
        """The attack with eps one step (``eps_key_step``, five for "coarse") up (direction > 0)
        or down; under the corrupt method the severity one step (coarse: to 1 or 5)."""
        sign = 1 if direction > 0 else -1
        if self.attack.method == "corrupt":
            return self.attack.with_severity(self.attack.severity + sign * (1 if size == "fine" else CORRUPTION_LEVELS))
        step = self.eps_key_step * STEPS_PER_PRESS[size] * sign
        return self.attack.with_eps(self.attack.eps + step)

    @property
    def curve_eps(self) -> float:
        """Where the L-inf FGSM curve marks the attack: its eps at the same size per pixel."""
        return self.pixel_eps(self.attack)

    def pixel_eps(self, config: AttackConfig) -> float:
        """``config``'s eps per pixel: L-inf eps as it is, an L2 eps over the slice side (what the curve marks
        and the perturbation picture is scaled by; the realised L-inf wins where larger)."""
        if config.norm == "linf":
            return config.eps
        return config.eps / float(self.attacked.img_size if self.attacked is not None else DEFAULT_IMG_SIZE)

    def with_norm(self, norm: str) -> AttackConfig:
        """The attack in ``norm`` with eps carried over at the same per-pixel size (L-inf e <-> L2 S e)."""
        if norm == self.attack.norm:
            return self.attack
        scale = float(self.attacked.img_size if self.attacked is not None else DEFAULT_IMG_SIZE)
        eps = self.attack.eps * scale if norm == "l2" else self.attack.eps / scale
        return self.attack.replace(norm=norm, eps=clamp_eps(eps, norm))

    def changed(self, **changes) -> AttackConfig:
        """``self.attack.replace(**changes)``; a new method without an L2 form falls back to L-inf with eps
        carried over at the same per-pixel size (an L2 eps of the slice is no L-inf eps)."""
        method = changes.get("method", self.attack.method)
        attack = self.attack
        if attack.norm == "l2" and method in METHODS and "norm" not in METHODS[method].parameters:
            attack = self.with_norm("linf")
        return attack.replace(**changes)

    def cycled(self, field: str, values: Sequence[str]) -> AttackConfig | str:
        """The attack with the next of ``values`` for ``field``, or why ``field`` does not apply (a line for
        a notification). Picking a corruption under another method switches to the corrupt method."""
        attack = self.attack
        if field == "target" and not self.has_truth:
            return "A lone PNG has no ground truth: the target is the clean prediction."
        if field == "mode" and "mode" not in attack.entry.parameters:
            return "The paper's variant exists for FGSM only."
        if field in ("loss", "target") and not attack.entry.uses_target:
            return f"{attack.entry.title} has its own objective ({attack.objective_label})."
        if field == "norm":
            if "norm" not in attack.entry.parameters:
                return f"{attack.entry.title} is an L-inf attack; L2 applies to FGSM, BIM, PGD, APGD and the ensemble."
            return self.with_norm(cycle_next(values, attack.norm))
        if field == "corruption" and attack.method != "corrupt":
            return self.changed(method="corrupt", corruption=attack.corruption)
        current = ",".join(attack.organs) if field == "organs" else getattr(attack, field)
        return self.changed(**{field: cycle_next(values, current)})

    def typed_eps(self, text: str) -> tuple[AttackConfig | None, str | None]:
        """What the Epsilon field's ``text`` asks for: (the attack, None), (the attack, a warning that it was
        clamped) or (None, why it cannot be used). Under the corrupt method the field is the severity."""
        attack = self.attack
        if attack.method == "corrupt":
            try:
                severity = int(text.strip())
            except ValueError:
                return None, f"Severity must be a whole number from 1 to {CORRUPTION_LEVELS}, not {text!r}."
            if not 1 <= severity <= CORRUPTION_LEVELS:
                return None, f"Severity must be from 1 to {CORRUPTION_LEVELS}, not {severity}."
            return attack.with_severity(severity), None
        bound = 1.0 if attack.norm == "linf" else MAX_L2_EPS
        what = "Epsilon" if attack.norm == "linf" else "L2 epsilon"
        try:
            eps = float(text)
        except ValueError:
            return None, f"{what} must be a number in [0, {bound:g}], not {text!r}."
        warning = None if 0.0 <= eps <= bound else f"{what} {eps:g} is outside [0, {bound:g}]: clamped."
        return attack.with_eps(eps), warning

    def certify_config(self) -> tuple[Any, str | None]:
        """The Certify command's ``core.evaluation.certify.CertifyConfig`` (the settings' sigma and n, the
        attack's seed and empty-label policy), and why no pixel of the slice could be certified with it
        (None: some could). Imports torch: call once a model is loaded."""
        from core.errors import OptionError
        from core.evaluation.certify import CertifyConfig, samples_needed

        options = self.options
        try:
            config = CertifyConfig(
                sigma=options.certify_sigma, n=options.certify_samples, seed=self.attack.seed, empty=self.attack.empty
            )
        except OptionError as exc:
            return None, f"Cannot certify: {exc}."
        labels = self.labels
        size = self.attacked.img_size if self.attacked is not None else DEFAULT_IMG_SIZE
        tests = (len(labels) if labels.kind == "sigmoid" else 1) * size * size
        needed = samples_needed(config.tau, config.alpha, tests)
        if config.n < needed:
            return None, (
                f"Cannot certify with n {config.n}: no pixel of a {size} px slice can pass the corrected test with "
                f"fewer than {needed} samples (settings: certify_samples)."
            )
        return config, None

    # -- frames ---------------------------------------------------------------------------------------

    def new_request(self) -> FrameRequest:
        """A request for the frame of the current slice and attack; it supersedes every earlier one."""
        self.latest_request += 1
        return FrameRequest(self.latest_request, self.source, self.attack, self.scoring_model())

    def is_latest(self, request_id: int) -> bool:
        return request_id == self.latest_request

    @staticmethod
    def curve_matches(curve: Curve, frame: Frame) -> bool:
        """Whether ``curve`` is the eps curve of ``frame``: FGSM's, for the frame's loss and target."""
        fgsm = frame.config.replace(method="fgsm")
        return (curve.checkpoint, curve.slice_id, curve.loss, curve.target, curve.mode, curve.scored_on) == (
            frame.checkpoint,
            frame.slice_id,
            fgsm.loss,
            fgsm.target,
            fgsm.mode,
            frame.scored_on,
        )

    def summary(self, device: str | None = None, *, short: bool = False) -> str:
        """The summary line (Rich markup): the attack, the slice and the checkpoint, most telling first as
        narrow terminals cut the end; ``device`` ends it where the header (which names it) is hidden.
        ``short``: fewer words (``short_label``) for a line too short for these, so 80 columns hold them all."""
        checkpoint = self.attacked.path.stem if self.attacked else "no checkpoint"
        source = getattr(self.source, "id", None) or (Path(self.source).name if self.source else "no slice")
        if self.scored_on is not None:
            checkpoint += f"→{self.scored_on.stem}" if short else f" → scored on {self.scored_on.stem}"
        attack = self.attack
        delta = self.delta_entry(attack.delta) if attack.method == "universal" else None
        scale = attack.eps / delta.eps if delta is not None and delta.eps > 0 else None
        if short:
            label = escape(short_label(attack, scale))
        elif scale is not None and delta is not None:  # eps scales the saved delta: say by how much
            label = escape(f"eps {attack.eps:.3f} (×{scale:.2f} of {delta.eps:.3f}) · {attack.method_label}")
        else:
            label = escape(attack.label)
        text = f"[b]{label}[/b] · {escape(str(source))} · {escape(checkpoint)}"
        return f"{text} · {device}" if device else text

    def failure_advice(self, group: str) -> str:
        """What to do when the work ``group`` (FAILURE_TITLES) failed."""
        if group == "load":
            advice = (
                "Pick another checkpoint in the list (c, then Enter), or start segadv-tui with --checkpoint "
                "FILE: a .safetensors file written by segadv train, or converted from other weights by "
                "segadv import-checkpoint."
            )
            if self.attacked is not None:
                advice += f" {self.attacked.path.stem} is still in use: an eps step shows its pictures again."
            return advice
        if not self.has_truth and group in ("data", "frame"):
            return "Start segadv-tui with another --image FILE.png (a 16-bit PNG slice), or --data DIR."
        if group == "data":
            return (
                "Start segadv-tui with --data DIR (a Kaggle root: train.csv and train/), or without --data "
                "for the built-in demo."
            )
        if group == "frame":
            return "Pick another slice (j / k, or s for the slice list) or other attack settings."
        return "Start segadv-tui again with other options (segadv-tui --help lists them)."

    # -- keys -----------------------------------------------------------------------------------------

    def key_applies(self, action: str, parameters: tuple) -> bool:
        """Whether the explorer's key for ``action`` works with the current attack: + and - step eps, or
        under the corrupt method its severity (never both: the footer names the one that does), and 0 sets
        eps, which that method has not."""
        if action == "step_severity" or (action == "step_eps" and len(parameters) == 1) or action == "eps_zero":
            return (self.attack.method == "corrupt") == (action == "step_severity")
        return True

    # -- exports --------------------------------------------------------------------------------------

    def copy_texts(self) -> dict[str, tuple[str, str | None]]:
        """What y and the palette copy: name -> (what it is, its text; None while there is none)."""
        from rich.text import Text

        from segadv_tui.render.tables import scores_table

        frame, table_ii = self.frame, self.table_ii
        slice_id = getattr(self.source, "id", None) or (Path(self.source).name if self.source else None)
        return {
            "scores": ("the scores table", None if frame is None else scores_table(frame).to_markdown()),
            "table2": ("Table II", None if table_ii is None else table_ii.to_markdown()),
            "summary": ("the summary line", Text.from_markup(self.summary()).plain if self.attacked else None),
            "slice": ("the slice id", slice_id),
        }

    def figure_name(self, frame: Frame) -> str:
        """The PNG file name of ``frame``'s figure: slice, checkpoint(s), attack and eps."""
        scored = "" if frame.scored_on is None else "_on_" + Path(frame.scored_on).stem
        config = frame.config
        if config.method == "corrupt":  # no loss, and eps is ignored: the artefact and its severity
            return f"{frame.slice_id}_{self._attacked_name()}{scored}_{corruption_name(config)}.png"
        return (
            f"{frame.slice_id}_{self._attacked_name()}{scored}_{config.method}"
            f"_{config.loss.replace('+', '-')}_eps{config.eps:.3f}.png"
        )

    def figure_caption(self, frame: Frame) -> str:
        """The exported figure's caption: the models, the slice, the attack, and the Scores title's split."""
        from core.evaluation.label_split import label_split
        from segadv_tui.render.tables import split_line

        checkpoint = self._attacked_name()
        crafted = f"crafted on {checkpoint}, scored on {Path(frame.scored_on).stem}" if frame.scored_on else checkpoint
        caption = f"{crafted} · {frame.slice_id} · {frame.config.label} · L-inf {frame.result.linf:.4f}"
        split = split_line(label_split([frame.result])).replace("→", " to ")  # the figure's font has no arrow
        return f"{caption} · {split}" if split else caption

    @staticmethod
    def scores_stem(frame: Frame) -> str:
        """The file name, without suffix, of ``frame``'s scores table."""
        scored = "" if frame.scored_on is None else "_on_" + Path(frame.scored_on).stem
        if frame.config.method == "corrupt":
            return f"{frame.slice_id}_{corruption_name(frame.config)}{scored}_scores"
        return f"{frame.slice_id}_{frame.config.method}{scored}_eps{frame.config.eps:.3f}_scores"

    @staticmethod
    def table_ii_stem(attack: AttackConfig) -> str:
        return f"table_ii_{attack.method}_eps{attack.eps:.3f}"

    def _attacked_name(self) -> str:
        return self.attacked.path.stem if self.attacked else "model"

    # -- Table II -------------------------------------------------------------------------------------

    def table_ii_records(self) -> list[SliceRecord]:
        """The test split's slices with labels (the ones the paper scores), at most --limit of them."""
        return select_slices(self.dataset, "test", limit=self.options.limit, test_fraction=self.options.test_fraction)

    def table_ii_models(self) -> list[LoadedModel]:
        """Every loaded checkpoint, named by its file's stem."""
        return [loaded.as_model(path.stem) for path, loaded in self.loaded.items()]


def short_label(attack: AttackConfig, delta_scale: float | None = None) -> str:
    """``L2 eps 1.152 · FGM · bce, gt``, ``severity 3 · Blur``: ``AttackConfig.label`` in fewer words for the
    summary line of a narrow terminal; ``delta_scale``: how many times its saved delta a universal attack is."""
    if attack.method == "corrupt":
        return f"severity {attack.severity} · {CORRUPTION_TITLES[attack.corruption]}"
    eps = f"eps {attack.eps:.3f}" if attack.norm == "linf" else f"{attack.norm.upper()} eps {attack.eps:.3f}"
    if delta_scale is not None:
        eps += f" ×{delta_scale:.2f}"
    parts = [eps, attack.method_label.split(" (")[0]]  # the method without its details
    if attack.entry.uses_target and "loss" in attack.entry.parameters:
        parts.append(f"{attack.loss}, {attack.target}")
    return " · ".join(parts)


def corruption_name(config: AttackConfig) -> str:
    """``corrupt-blur-s3``: the corrupt method's part of an export's file name."""
    return f"corrupt-{config.corruption}-s{config.severity}"


def opening_slice(records: Sequence, test_fraction: float = 0.1):
    """The slice the explorer opens on: among the test split's slices (the ones the paper scores), the first
    with the most labels in its truth, every label where one has them all. Its first scores are then
    damage to labels that are there: on a slice without a label, a few stray pixels of it turn that
    label's DSC from 1 to 0 and read as the model failing on it. Without a test slice with labels, the
    first slice with labels, else the first slice. Records say which labels they hold without loading the
    slice (UW-Madison's from their RLEs, a Decathlon volume's from its cached label index)."""
    # The split Table II scores (table_ii_records: a data set's split is split_by_case), so it scores this slice.
    _, test = split_by_case(list(records), test_fraction)
    candidates = with_labels(test) or with_labels(records) or list(records)
    return max(candidates, key=lambda record: sum(record.labels_present))  # the first of the most


def first_look(root: Path, test_fraction: float = 0.1) -> SliceRecord | None:
    """The slice the explorer opens a UW-Madison tree on before the tree is indexed (seconds at real scale):
    ``opening_slice``'s choice among the slices train.csv lists, its file found with one folder listing.
    The index's own choice is the same slice wherever every listed slice has its file; None where the
    quick read cannot tell (the index then reads the tree and says what is wrong with it)."""
    from core.data.gitract import find_slice, listed_slices

    try:
        listed = listed_slices(root)
        return find_slice(root, opening_slice(listed, test_fraction)) if listed else None
    except Exception:  # noqa: BLE001  any fault of a hostile train.csv: the index reports it, by name
        return None
