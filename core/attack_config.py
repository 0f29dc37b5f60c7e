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
from core.names import EMPTY_POLICIES, LOSS_NAMES, MODES, TARGETS
from core.organs import ORGANS

PRECISIONS = ("fp32", "bf16", "fp16")
SCORE_SLICES = ("nonempty", "all")


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


METHOD_LIST = (
    AttackMethod(
        "fgsm", "FGSM", "fast gradient sign method: one signed-gradient step of eps",
        {"loss": "bce", "mode": "textbook"}, "core.attacks:run_fgsm",
    ),
    AttackMethod(
        "bim", "BIM", "basic iterative method / I-FGSM: signed steps from the clean image, projected to the eps ball",
        {"loss": "bce", "steps": 10, "step_size": None}, "core.attacks:run_iterative", iterative=True,
    ),
    AttackMethod(
        "pgd", "PGD", "projected gradient descent: BIM from a uniformly random start in the eps ball",
        {"loss": "bce", "steps": 10, "step_size": None, "seed": 0}, "core.attacks:run_iterative", iterative=True,
    ),
    AttackMethod(
        "erase", "Erase", "targeted: descend BCE(chosen organs' logits, 0) so those organs vanish",
        {"organs": ("stomach",), "steps": 10, "step_size": None}, "core.attacks:run_erase", iterative=True,
        uses_target=False,
    ),
    AttackMethod(
        "universal", "Universal", "a saved universal perturbation (segadv universal) added to every slice, scaled to L-inf eps",
        {"delta": None}, "core.universal:run_universal", uses_target=False,
    ),
)
METHODS = {method.name: method for method in METHOD_LIST}
METHOD_NAMES = tuple(METHODS)


def check_eps(eps: float) -> float:
    try:
        eps = float(eps)
    except (TypeError, ValueError):
        raise OptionError(f"eps {eps!r} is not a number") from None
    if not math.isfinite(eps) or not 0.0 <= eps <= 1.0:
        raise OptionError(f"eps must be in [0, 1] (pixel scale), got {eps:g}")
    return eps


def clamp_eps(value: float) -> float:
    """Epsilon kept in [0, 1] and rounded to 1e-6, so repeated steps do not drift (0.1 + 0.001 ...)."""
    return round(min(1.0, max(0.0, float(value))), 6)


def parse_organs(organs) -> tuple[str, ...]:
    """Organ names (a comma list or a sequence) -> the chosen organs in ``ORGANS`` order."""
    if isinstance(organs, str):
        organs = [part.strip() for part in organs.split(",") if part.strip()]
    chosen = {check_choice(str(organ).strip().lower(), ORGANS, "organ") for organ in organs}
    return tuple(organ for organ in ORGANS if organ in chosen)


@dataclass(frozen=True)
class AttackConfig:
    """One attack and how it is scored.

    ``mode`` is FGSM's formula (textbook or the paper's); ``steps`` / ``step_size`` apply to the iterative
    methods (step_size None: 2.5 eps / steps); ``seed`` seeds PGD's random start; ``organs`` are the
    organs ``erase`` removes; ``precision`` is the forward pass's autocast (fp32 is the reference).
    ``delta`` is the file of the universal method's saved perturbation (``core.universal``; read by its
    runner, so every front end can run it). ``empty`` is the DSC of an organ absent from truth and prediction, ``score`` the slices a summary
    averages over, ``hausdorff`` adds the 95th-percentile Hausdorff distance.
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
    delta: str | None = None
    precision: str = "fp32"
    empty: str = "one"
    score: str = "nonempty"
    hausdorff: bool = False

    def __post_init__(self):
        check_choice(self.method, METHOD_NAMES, "attack method")
        check_choice(self.loss, LOSS_NAMES, "loss")
        object.__setattr__(self, "eps", check_eps(self.eps))
        check_choice(self.mode, MODES, "FGSM mode")
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
        organs = parse_organs(self.organs)
        if self.method == "erase" and not organs:
            raise OptionError("the erase attack needs at least one organ; choose from " + ", ".join(ORGANS))
        object.__setattr__(self, "organs", organs)
        if self.delta is not None:
            object.__setattr__(self, "delta", str(self.delta))
        check_choice(self.precision, PRECISIONS, "precision")
        check_choice(self.empty, EMPTY_POLICIES, "empty-organ policy")
        check_choice(self.score, SCORE_SLICES, "slice selection")

    @classmethod
    def for_method(cls, method: str, **values) -> "AttackConfig":
        """A config for ``method`` with its registry defaults, overridden by ``values``."""
        entry = METHODS[check_choice(method, METHOD_NAMES, "attack method")]
        return cls(method=method, **{**entry.parameters, **values})

    @property
    def entry(self) -> AttackMethod:
        return METHODS[self.method]

    def replace(self, **changes) -> "AttackConfig":
        """A copy with ``changes``. When the method changes, what only the old method read goes back to
        its default and what only the new one reads takes the new method's default (the paper's FGSM
        mode does not follow the user to PGD; erase starts with an organ to erase)."""
        method = changes.get("method", self.method)
        if method != self.method:
            old, new = self.entry.parameters, METHODS[check_choice(method, METHOD_NAMES, "attack method")].parameters
            defaults = {f.name: f.default for f in fields(AttackConfig)}
            for name in old.keys() - new.keys():
                changes.setdefault(name, defaults[name])
            for name in new.keys() - old.keys():
                changes.setdefault(name, new[name])
        return replace(self, **changes)

    def with_eps(self, eps: float) -> "AttackConfig":
        """A copy at ``clamp_eps(eps)``: what stepping eps from the keyboard asks for."""
        return replace(self, eps=clamp_eps(eps))

    @property
    def method_label(self) -> str:
        """``FGSM (textbook)``, ``PGD (10 steps)``, ``Erase stomach (10 steps)``: the one place a method is named."""
        entry = self.entry
        if self.method == "fgsm":
            return f"FGSM ({self.mode})"
        if self.method == "erase":
            return f"Erase {'+'.join(self.organs)} ({self.steps} steps)"
        if self.method == "universal":
            return f"Universal ({PurePath(self.delta).name if self.delta else 'no delta'})"
        return f"{entry.title} ({self.steps} steps)"

    @property
    def objective_label(self) -> str:
        """What the attack optimises: ``bce loss, target gt`` (erase has its own objective)."""
        if self.method == "universal":
            return "saved universal perturbation"
        if not self.entry.uses_target:
            return "organ logits to 0"
        return f"{self.loss} loss, target {self.target}"

    @property
    def label(self) -> str:
        return f"eps {self.eps:.3f} · {self.method_label} · {self.objective_label}"

    def to_dict(self) -> dict:
        data = asdict(self)
        data["organs"] = list(self.organs)
        data["method_label"] = self.method_label
        return data
