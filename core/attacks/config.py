"""What attack to run: the attack registry and the one attack configuration, without torch.

Every front end (each CLI command, the explorer, its Table II) and ``core.evaluation`` describe an attack
with one ``AttackConfig``; it is validated here, once. The methods are a registry (``METHODS``): each
entry names its parameters with their defaults and the function that runs it (imported on first use,
so front ends can list the methods before torch has loaded). A new attack is one entry here and one
function in ``core.attacks``.
"""

from __future__ import annotations

import importlib
import math
from dataclasses import asdict, dataclass, fields, replace
from pathlib import PurePath

from core.errors import OptionError, check_choice
from core.labels import UW_MADISON, LabelSet
from core.names import (
    CORRUPTION_LEVELS,
    CORRUPTION_NAMES,
    CORRUPTION_TITLES,
    EMPTY_POLICIES,
    LOSS_NAMES,
    MODES,
    NORMS,
    PRECISIONS,
    TARGETS,
)
from core.wording import label_noun

SCORE_SLICES = ("nonempty", "all")
# L2 eps is the norm of a slice's perturbation in [0, 1] pixels (core.attacks.norms): at most the L2
# diameter of the largest slice a checkpoint takes (4096 px).
MAX_L2_EPS = 4096.0


@dataclass(frozen=True)
class AttackMethod:
    """One registry entry. ``parameters`` are the ``AttackConfig`` fields this method reads, with the
    defaults a front end shows for it; ``runner`` is ``"module:function"`` with the signature
    ``function(model, image, target, config, context) -> AttackOutput`` (see ``core.attacks``)."""

    name: str
    title: str
    summary: str
    parameters: dict
    runner: str
    iterative: bool = False
    uses_target: bool = True  # False: the method has its own objective (erase ignores loss and target)

    def function(self):
        module, name = self.runner.split(":")
        return getattr(importlib.import_module(module), name)

    def defaults(self, labels: LabelSet) -> dict:
        """``parameters`` for a model of ``labels``: the labels to erase default to the label set's last one
        (UW-Madison's stomach, the registry's default)."""
        if "organs" not in self.parameters:
            return dict(self.parameters)
        return {**self.parameters, "organs": (labels.names[-1],)}


@dataclass(frozen=True)
class EnsembleMember:
    """One APGD run of the ensemble: its loss and radius schedule (multiples of eps)."""

    loss: str
    radii: tuple[float, ...] = (1.0,)

    @property
    def name(self) -> str:
        """``apgd-js``, ``apgd-masked-bce@2-1.5-1``: how results name the member that won a slice."""
        schedule = "" if self.radii == (1.0,) else "@" + "-".join(f"{r:g}" for r in self.radii)
        return f"apgd-{self.loss}{schedule}"


# The ensemble's members, chosen by measurement on the demo checkpoint (README, "Robustness evaluation"):
# of 18 APGD-100 runs (9 losses, radii 1 or SEA's 2 / 1.5 / 1) on 12 held-out test slices at eps 0.009,
# the three whose per-slice worst case is lowest (greedy and exhaustive agree); a fourth gained 0.004.
# Ties go to the earlier member, so the strongest alone comes first.
ENSEMBLE = (
    EnsembleMember("dice"),
    EnsembleMember("cos-bce", (2.0, 1.5, 1.0)),
    EnsembleMember("focal+dice", (2.0, 1.5, 1.0)),
)

METHOD_LIST = (
    AttackMethod(
        "fgsm",
        "FGSM",
        "fast gradient sign method: one signed-gradient step of eps",
        {"loss": "bce", "mode": "textbook", "norm": "linf"},
        "core.attacks.fast_gradient:run_fgsm",
    ),
    AttackMethod(
        "bim",
        "BIM",
        "basic iterative method / I-FGSM: signed steps from the clean image, projected to the eps ball",
        {"loss": "bce", "steps": 10, "step_size": None, "best_iterate": False, "norm": "linf"},
        "core.attacks.iterative:run_iterative",
        iterative=True,
    ),
    AttackMethod(
        "pgd",
        "PGD",
        "projected gradient descent: BIM from a uniformly random start in the eps ball",
        {"loss": "bce", "steps": 10, "step_size": None, "seed": 0, "best_iterate": False, "norm": "linf"},
        "core.attacks.iterative:run_iterative",
        iterative=True,
    ),
    AttackMethod(
        "apgd",
        "APGD",
        "auto-PGD (Croce & Hein 2020): step 2 eps, halved at checkpoints when the loss stalls, momentum 0.75, "
        "restarts from the best point; keeps the iterate with the lowest DSC",
        {"loss": "bce", "steps": 100, "seed": 0, "best_iterate": True, "radii": (1.0,), "norm": "linf"},
        "core.attacks.apgd:run_apgd",
        iterative=True,
    ),
    AttackMethod(
        "ensemble",
        "Ensemble",
        "per slice the worst case (lowest mean DSC) of a fixed list of APGD runs with different losses and radii",
        {"steps": 100, "seed": 0, "best_iterate": True, "norm": "linf"},
        "core.attacks.ensemble:run_ensemble",
        iterative=True,
    ),
    AttackMethod(
        "square",
        "Square",
        "black-box Square attack (Andriushchenko et al. 2020): random squares of +-eps kept when they raise the "
        "loss, no gradients; steps = queries; keeps the iterate with the lowest DSC",
        {"loss": "bce", "steps": 1000, "seed": 0, "best_iterate": True},
        "core.attacks.square:run_square",
        iterative=True,
    ),
    AttackMethod(
        "erase",
        "Erase",
        "targeted: descend BCE(chosen organs' logits, 0) so those organs vanish",
        {"organs": ("stomach",), "steps": 10, "step_size": None},  # UW-Madison's; any label set's: defaults()
        "core.attacks.iterative:run_erase",
        iterative=True,
        uses_target=False,
    ),
    AttackMethod(
        "universal",
        "Universal",
        "a saved universal perturbation (segadv universal) added to every slice, scaled to L-inf eps",
        {"delta": None},
        "core.attacks.universal:run_universal",
        uses_target=False,
    ),
    AttackMethod(
        "corrupt",
        "Corrupt",
        "not an attack: an MRI artefact (segadv corrupt's, TorchIO) at a severity of 1 to 5, seeded per slice; "
        "eps is ignored",
        {"corruption": CORRUPTION_NAMES[0], "severity": 1, "seed": 0},
        "core.evaluation.corruption_method:run_corrupt",
        uses_target=False,
    ),
)
METHODS = {method.name: method for method in METHOD_LIST}
METHOD_NAMES = tuple(METHODS)
BEST_ITERATE_METHODS = tuple(method.name for method in METHOD_LIST if "best_iterate" in method.parameters)


def check_eps(eps: float, norm: str = "linf") -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise OptionError(f"eps {eps!r} is not a number") from None
    if check_choice(norm, NORMS, "norm") == "l2":
        if not math.isfinite(eps) or not 0.0 <= eps <= MAX_L2_EPS:
            raise OptionError(
                f"L2 eps must be in [0, {MAX_L2_EPS:g}] (the slice's L2 norm in [0, 1] pixels), got {eps:g}"
            )
        return eps
    if not math.isfinite(eps) or not 0.0 <= eps <= 1.0:
        raise OptionError(f"eps must be in [0, 1] (pixel scale), got {eps:g}")
    return eps


def clamp_eps(value: float, norm: str = "linf") -> float:
    """Epsilon kept in [0, 1] (L2: [0, ``MAX_L2_EPS``]) and rounded to 1e-6, so repeated steps do not drift
    (0.1 + 0.001 ...)."""
    return round(min(1.0 if norm == "linf" else MAX_L2_EPS, max(0.0, float(value))), 6)


def parse_radii(radii) -> tuple[float, ...]:
    """APGD's radius schedule as multiples of eps (a comma list or a sequence): each at least 1, at most 3
    stages, the last exactly 1 (the result lies in the eps ball)."""
    if isinstance(radii, str):
        radii = [part.strip() for part in radii.split(",") if part.strip()]
    try:
        values = tuple(float(r) for r in radii)
    except (TypeError, ValueError):
        raise OptionError(f"radii {radii!r} must be numbers (multiples of eps), e.g. 2,1.5,1") from None
    if not values or len(values) > 3 or values[-1] != 1.0 or not all(math.isfinite(r) and r >= 1.0 for r in values):
        raise OptionError(
            f"radii {','.join(f'{r:g}' for r in values) or '(none)'} must be 1 to 3 multiples of eps, "
            "each at least 1 and the last 1, e.g. 2,1.5,1"
        )
    return values


def parse_organs(organs, labels: LabelSet = UW_MADISON) -> tuple[str, ...]:
    """Label names of ``labels`` (a comma list or a sequence, any case) -> the chosen labels in label order;
    an unknown name is an ``OptionError`` that lists the label set's names."""
    if isinstance(organs, str):
        organs = [part.strip() for part in organs.split(",") if part.strip()]
    chosen = {check_choice(str(organ).strip().lower(), labels.names, label_noun(labels)) for organ in organs}
    return tuple(name for name in labels.names if name in chosen)


@dataclass(frozen=True)
class AttackConfig:
    """One attack and how it is scored.

    ``mode`` is FGSM's formula (textbook or the paper's); ``steps`` / ``step_size`` apply to the iterative methods
    (step_size None: 2.5 eps / steps; APGD has its own schedule); ``seed`` seeds the random starts (per slice: see
    ``core.attacks.iterative.random_start_point``); ``best_iterate`` returns, per slice, the iterate with the lowest
    mean DSC instead of the last one (None: the method's default, on for APGD and the ensemble); ``radii`` is APGD's
    radius schedule in multiples of eps (SEA: 2, 1.5, 1); ``organs`` are the labels of ``labels`` (the model's label
    set, UW-Madison unless given) that ``erase`` removes; ``precision`` is the forward pass's autocast (fp32 is the
    reference). ``norm`` is the threat model (``core.attacks.norms``): ``linf``, or ``l2`` with eps the L2 norm of the
    slice's perturbation. ``delta`` is the file of the universal method's saved perturbation
    (``core.attacks.universal``; read by its runner, so every front end can run it). ``corruption`` and ``severity``
    (1..5) are the corrupt method's MRI artefact (``core.evaluation.corruptions``; not an attack: eps is ignored).
    ``empty`` is the DSC of an organ absent from truth and prediction, ``score`` the slices a summary averages over.
    ``hausdorff`` adds HD95 and ``nsd_tolerance`` (mm; None: not measured) the normalised surface Dice at that
    tolerance, both in mm per label (``core.metrics``); ``metrics`` names what is scored.
    """

    method: str = "fgsm"
    loss: str = "bce"
    eps: float = 0.009
    mode: str = "textbook"
    target: str = "gt"
    steps: int = 10
    step_size: float | None = None
    seed: int = 0
    organs: tuple[str, ...] = ()
    best_iterate: bool | None = None
    radii: tuple[float, ...] = (1.0,)
    delta: str | None = None
    precision: str = "fp32"
    empty: str = "one"
    score: str = "nonempty"
    hausdorff: bool = False
    nsd_tolerance: float | None = None
    labels: LabelSet = UW_MADISON  # not in to_dict: a result records its label set once, beside the config
    norm: str = "linf"
    corruption: str = CORRUPTION_NAMES[0]  # the corrupt method's (in to_dict for it alone)
    severity: int = 1

    def __post_init__(self):
        check_choice(self.method, METHOD_NAMES, "attack method")
        check_choice(self.loss, LOSS_NAMES, "loss")
        check_choice(self.norm, NORMS, "norm")
        if self.norm != "linf" and "norm" not in self.entry.parameters:
            raise OptionError(f"norm {self.norm} does not apply to {self.method}: it is an L-inf attack")
        object.__setattr__(self, "eps", check_eps(self.eps, self.norm))
        check_choice(self.mode, MODES, "FGSM mode")
        if self.mode == "paper" and self.norm != "linf":
            raise OptionError("mode 'paper' is the paper's L-inf FGSM formula; it does not apply to norm l2")
        if self.mode == "paper" and self.method != "fgsm":
            raise OptionError(f"mode 'paper' is the paper's FGSM formula; it does not apply to {self.method}")
        check_choice(self.target, TARGETS, "attack target")
        if isinstance(self.steps, bool) or int(self.steps) != self.steps or self.steps < 1:
            raise OptionError(f"steps must be a whole number of at least 1, got {self.steps}")
        object.__setattr__(self, "steps", int(self.steps))
        if self.step_size is not None:
            if not (math.isfinite(float(self.step_size)) and float(self.step_size) >= 0):
                raise OptionError(f"step size must be a non-negative number, got {self.step_size}")
            object.__setattr__(self, "step_size", float(self.step_size))
        object.__setattr__(self, "seed", int(self.seed))
        organs = parse_organs(self.organs, self.labels)
        if self.method == "erase" and not organs:
            raise OptionError(
                f"the erase attack needs at least one {label_noun(self.labels)}; "
                f"choose from {', '.join(self.labels.names)}"
            )
        object.__setattr__(self, "organs", organs)
        parameters = self.entry.parameters
        if self.best_iterate is None:
            object.__setattr__(self, "best_iterate", bool(parameters.get("best_iterate", False)))
        elif not isinstance(self.best_iterate, bool):
            raise OptionError(f"best_iterate must be true or false, got {self.best_iterate!r}")
        elif self.best_iterate and "best_iterate" not in parameters:
            raise OptionError(
                f"the best iterate applies to the iterative methods ({', '.join(BEST_ITERATE_METHODS)}), "
                f"not to {self.method}"
            )
        radii = parse_radii(self.radii)
        if radii != (1.0,) and "radii" not in parameters:
            raise OptionError(f"radii apply to apgd, not to {self.method}")
        if len(radii) > self.steps:
            raise OptionError(f"{len(radii)} radii need at least {len(radii)} steps, got {self.steps}")
        stages = max(len(member.radii) for member in ENSEMBLE)
        if self.method == "ensemble" and self.steps < stages:
            raise OptionError(f"the ensemble's radius stages need at least {stages} steps per member, got {self.steps}")
        object.__setattr__(self, "radii", radii)
        if self.delta is not None:
            object.__setattr__(self, "delta", str(self.delta))
        self._check_corruption()
        check_choice(self.precision, PRECISIONS, "precision")
        check_choice(self.empty, EMPTY_POLICIES, "empty-organ policy")
        check_choice(self.score, SCORE_SLICES, "slice selection")
        if not isinstance(self.hausdorff, bool):
            raise OptionError(f"hausdorff must be true or false, got {self.hausdorff!r}")
        if self.nsd_tolerance is not None:
            if isinstance(self.nsd_tolerance, bool) or not (
                math.isfinite(float(self.nsd_tolerance)) and float(self.nsd_tolerance) >= 0
            ):
                raise OptionError(f"the NSD tolerance must be a number of mm of at least 0, got {self.nsd_tolerance}")
            object.__setattr__(self, "nsd_tolerance", float(self.nsd_tolerance))

    def _check_corruption(self) -> None:
        check_choice(self.corruption, CORRUPTION_NAMES, "corruption")
        try:  # a whole number, or its digits (a settings file's)
            level = None if isinstance(self.severity, bool) else int(str(self.severity).strip())
        except ValueError:
            level = None
        if level is None or not 1 <= level <= CORRUPTION_LEVELS:
            raise OptionError(f"severity must be a whole number from 1 to {CORRUPTION_LEVELS}, got {self.severity!r}")
        object.__setattr__(self, "severity", level)
        if self.method != "corrupt" and (self.corruption, level) != (CORRUPTION_NAMES[0], 1):
            raise OptionError(f"corruption and severity apply to the corrupt method, not to {self.method}")

    @property
    def metrics(self) -> tuple[str, ...]:
        """The per-slice scores: ``dsc``, then ``hd95`` and ``nsd`` where asked (``core.names.METRIC_NAMES`` order)."""
        return ("dsc",) + ("hd95",) * self.hausdorff + ("nsd",) * (self.nsd_tolerance is not None)

    @classmethod
    def for_method(cls, method: str, **values) -> AttackConfig:
        """A config for ``method`` with its registry defaults (for ``values["labels"]``), overridden by ``values``."""
        entry = METHODS[check_choice(method, METHOD_NAMES, "attack method")]
        return cls(method=method, **{**entry.defaults(values.get("labels", UW_MADISON)), **values})

    def for_labels(self, labels: LabelSet, organs=None) -> AttackConfig:
        """This attack on a model of ``labels``: the labels to erase are ``organs`` (names, any case; an
        unknown one is an ``OptionError`` listing the set's), else the ones chosen if ``labels`` has them,
        else the method's default for ``labels``."""
        if organs is None:
            organs = self.organs
            if not set(organs) <= set(labels.names):
                organs = self.entry.defaults(labels).get("organs", ())
        return replace(self, labels=labels, organs=parse_organs(organs, labels))

    @property
    def entry(self) -> AttackMethod:
        return METHODS[self.method]

    def replace(self, **changes) -> AttackConfig:
        """A copy with ``changes``. When the method changes, what only the old method read goes back to
        its default, what only the new one reads takes the new method's default, and what both read
        keeps its value unless it was the old method's default, which becomes the new one's (the paper's
        FGSM mode does not follow the user to PGD; erase starts with an organ to erase; PGD's 10 steps
        become APGD's 100, a chosen 50 stays 50)."""
        method = changes.get("method", self.method)
        if method != self.method:
            old = self.entry.defaults(self.labels)
            new = METHODS[check_choice(method, METHOD_NAMES, "attack method")].defaults(self.labels)
            defaults = {f.name: f.default for f in fields(AttackConfig)}
            for name in old.keys() - new.keys():
                changes.setdefault(name, defaults[name])
            for name in new.keys() - old.keys():
                changes.setdefault(name, new[name])
            for name in old.keys() & new.keys():
                if getattr(self, name) == old[name]:
                    changes.setdefault(name, new[name])
        return replace(self, **changes)

    def ensemble_members(self) -> list[AttackConfig]:
        """The ensemble's APGD runs as configs of their own (same eps, steps, seed, target and scoring):
        each can be run alone and gives, per slice, what it contributed to the ensemble."""
        if self.method != "ensemble":
            raise OptionError(f"{self.method} is not the ensemble")
        shared = {
            name: getattr(self, name)
            for name in (
                "eps",
                "target",
                "steps",
                "seed",
                "best_iterate",
                "precision",
                "empty",
                "score",
                "hausdorff",
                "nsd_tolerance",
                "labels",
                "norm",
            )
        }
        return [AttackConfig(method="apgd", loss=member.loss, radii=member.radii, **shared) for member in ENSEMBLE]

    def with_severity(self, severity: int) -> AttackConfig:
        """A copy at ``severity`` kept in 1..5: what the eps keys ask for under the corrupt method."""
        return replace(self, severity=min(CORRUPTION_LEVELS, max(1, int(severity))))

    def with_eps(self, eps: float) -> AttackConfig:
        """A copy at ``clamp_eps(eps)``: what stepping eps from the keyboard asks for."""
        return replace(self, eps=clamp_eps(eps, self.norm))

    @property
    def method_label(self) -> str:
        """``FGSM (textbook)``, ``PGD (10 steps)``, ``Erase stomach (10 steps)``, ``PGD (10 steps, L2)``: the one
        place a method is named. FGSM's L2 form is the fast gradient method, ``FGM (L2)``."""
        entry = self.entry
        l2 = [self.norm.upper()] if self.norm != "linf" else []
        if self.method == "fgsm":
            return "FGM (L2)" if l2 else f"FGSM ({self.mode})"
        if self.method == "erase":
            return f"Erase {'+'.join(self.organs)} ({self.steps} steps)"
        if self.method == "ensemble":
            return f"Ensemble ({', '.join([f'{len(ENSEMBLE)} x APGD-{self.steps}', *l2])})"
        if self.method == "universal":
            return f"Universal ({PurePath(self.delta).stem if self.delta else 'no delta'})"
        if self.method == "corrupt":
            return f"Corrupt ({CORRUPTION_TITLES[self.corruption]}, severity {self.severity})"
        details = [f"{self.steps} steps"]
        if self.radii != (1.0,):
            details.append("radii " + "/".join(f"{r:g}" for r in self.radii) + " eps")
        if self.best_iterate != entry.parameters.get("best_iterate", False):
            details.append("best iterate" if self.best_iterate else "last iterate")
        return f"{entry.title} ({', '.join(details + l2)})"

    @property
    def objective_label(self) -> str:
        """What the attack optimises: ``bce loss, target gt`` (erase has its own objective)."""
        if self.method == "universal":
            return "saved universal perturbation"
        if self.method == "corrupt":
            return "MRI artefact, no objective"
        if not self.entry.uses_target:
            return f"{label_noun(self.labels)} logits to 0"
        if "loss" not in self.entry.parameters:
            return f"worst of {', '.join(dict.fromkeys(member.loss for member in ENSEMBLE))}, target {self.target}"
        return f"{self.loss} loss, target {self.target}"

    @property
    def label(self) -> str:
        if self.method == "corrupt":
            return f"severity {self.severity} · {CORRUPTION_TITLES[self.corruption]} corruption · eps ignored"
        norm = "" if self.norm == "linf" else f" ({self.norm.upper()})"
        return f"eps {self.eps:.3f}{norm} · {self.method_label} · {self.objective_label}"

    def to_dict(self) -> dict:
        data = asdict(self)
        del data["labels"]
        data["organs"] = list(self.organs)
        data["radii"] = list(self.radii)
        if self.nsd_tolerance is None:
            del data["nsd_tolerance"]  # not measured: the JSON of a DSC-only run is as it always was
        if self.method != "corrupt":  # an attack's JSON is as it was before the corrupt method
            del data["corruption"], data["severity"]
        data["method_label"] = self.method_label
        return data
