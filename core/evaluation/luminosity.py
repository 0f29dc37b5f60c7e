"""Does attack success depend on how bright a slice is? (The paper's open question on luminosity.)

Per slice: the mean and 99th-percentile intensity of the raw stored slice (16-bit values, before the
divide-by-max normalisation) and of the model's input (normalised and resized), against the slice's mean
attack success from ``core.evaluation.scoring.evaluate``. Each pair gets Spearman's rho (rank correlation: robust
to the very different scales of raw and normalised intensity) and a percentile-bootstrap 95 % interval,
resampling slices, or whole scans (case and day) or cases (patients): slices of one scan share its
acquisition (gain, coil bias, noise) and anatomy, so they are not independent.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy.stats import rankdata

from core.attacks.config import AttackConfig
from core.data.gitract import read_raw_slice, resize_image
from core.errors import OptionError, check_choice
from core.evaluation.scoring import Interrupted, Summary, evaluate
from core.files import json_number
from core.progress import Progress

BOOTSTRAP_UNITS = ("slice", "scan", "case")
FEATURES = {
    "raw_mean": "raw slice, mean",
    "raw_p99": "raw slice, 99th percentile",
    "input_mean": "model input, mean",
    "input_p99": "model input, 99th percentile",
}


def slice_luminosity(path, img_size: int) -> dict[str, float]:
    """The four intensity features of one slice file (see ``FEATURES``), from one read of the PNG."""
    raw = read_raw_slice(path)
    peak = float(raw.max()) if raw.size else 0.0
    model_input = resize_image(raw / peak if peak > 0 else raw, img_size)  # as core.data.gitract.load_slice makes it
    return {
        "raw_mean": float(raw.mean()),
        "raw_p99": float(np.percentile(raw, 99)),
        "input_mean": float(model_input.mean()),
        "input_p99": float(np.percentile(model_input, 99)),
    }


def spearman(x, y) -> float:
    """Spearman's rho: Pearson's r of the average ranks (ties share a rank, as ``scipy.stats.spearmanr``);
    NaN where either side is constant or there are fewer than 3 pairs."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    if x.shape != y.shape or x.ndim != 1:
        raise ValueError(f"spearman takes two 1-D arrays of one length, got {x.shape} and {y.shape}")
    if len(x) < 3:
        return float("nan")
    rx, ry = rankdata(x) - (len(x) + 1) / 2, rankdata(y) - (len(y) + 1) / 2
    scale = np.sqrt((rx * rx).sum() * (ry * ry).sum())
    return float((rx * ry).sum() / scale) if scale > 0 else float("nan")


def bootstrap_interval(
    x,
    y,
    *,
    groups: Sequence | None = None,
    resamples: int = 2000,
    level: float = 0.95,
    seed: int = 0,
) -> tuple[float | None, float | None]:
    """Percentile-bootstrap interval of Spearman's rho: ``resamples`` draws with replacement of the pairs,
    or of whole ``groups`` (e.g. the case of each slice) with all their pairs. Draws where rho is
    undefined (a constant resample) are left out; None where fewer than half the draws give a rho, or
    where there are fewer than two groups (one scan resampled is always itself: no interval)."""
    if resamples < 1:
        raise OptionError(f"bootstrap resamples must be at least 1, got {resamples}")
    if not 0 < level < 1:
        raise OptionError(f"confidence level must be between 0 and 1, got {level}")
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    labels = np.arange(len(x)) if groups is None else np.asarray(groups)
    members = [np.flatnonzero(labels == label) for label in dict.fromkeys(labels.tolist())]
    if len(members) < 2:
        return None, None
    rng = np.random.default_rng(seed)
    values = []
    for _ in range(resamples):
        chosen = np.concatenate([members[i] for i in rng.integers(0, len(members), len(members))])
        rho = spearman(x[chosen], y[chosen])
        if np.isfinite(rho):
            values.append(rho)
    if len(values) < resamples / 2:
        return None, None
    tail = (1 - level) / 2 * 100
    low, high = np.percentile(values, [tail, 100 - tail])
    return float(low), float(high)


@dataclass
class Correlation:
    feature: str
    rho: float | None
    low: float | None
    high: float | None
    n: int

    def to_dict(self) -> dict:
        return dict(self.__dict__)


@dataclass
class LuminosityResult:
    config: AttackConfig
    img_size: int
    rows: list[dict]  # per scored slice: id, case, the four features, DSC clean / adversarial, attack success
    correlations: dict[str, Correlation]
    summary: Summary
    unit: str  # what the bootstrap resamples: slice, scan or case
    resamples: int
    seconds: float

    def to_dict(self) -> dict:
        return {
            "config": self.config.to_dict(),
            "img_size": self.img_size,
            "seconds": self.seconds,
            "bootstrap_unit": self.unit,
            "resamples": self.resamples,
            "summary": self.summary.to_dict(),
            "correlations": {name: c.to_dict() for name, c in self.correlations.items()},
            "rows": self.rows,
        }


def luminosity_study(
    model,
    records: Sequence,
    img_size: int,
    config: AttackConfig,
    *,
    unit: str = "slice",
    resamples: int = 2000,
    seed: int = 0,
    batch_size: int = 16,
    device="cpu",
    progress: Progress | None = None,
) -> LuminosityResult:
    """``config``'s attack over ``records`` and the rank correlation of each feature with attack success.
    Slices whose attack success is undefined (clean DSC 0) or that are not scored are left out; the
    bootstrap resamples ``unit``s (``BOOTSTRAP_UNITS``)."""
    check_choice(unit, BOOTSTRAP_UNITS, "bootstrap unit")
    started = time.perf_counter()
    records = list(records)
    try:
        result, stopped = (
            evaluate(model, records, img_size, config, batch_size=batch_size, device=device, progress=progress),
            None,
        )
    except Interrupted as exc:  # Ctrl-C: the study of the slices attacked
        if exc.result is None:
            raise
        result, stopped = exc.result, exc.partial
    by_id = {record.id: record for record in records}
    rows = []
    for row in result.rows:
        success = row.mean_attack_success
        if not row.scored or not np.isfinite(success):
            continue
        record = by_id[row.slice_id]
        rows.append(
            {
                "slice_id": row.slice_id,
                "case": record.case,
                "scan": record.case_day,
                **slice_luminosity(record.path, img_size),
                "dsc_clean": json_number(row.mean_clean),
                "dsc_adv": json_number(row.mean_adv),
                "attack_success": success,
            }
        )
    successes = np.array([row["attack_success"] for row in rows])
    groups = None if unit == "slice" else [row[unit] for row in rows]
    correlations = {}
    for index, feature in enumerate(FEATURES):
        values = np.array([row[feature] for row in rows])
        low, high = bootstrap_interval(values, successes, groups=groups, resamples=resamples, seed=seed + index)
        correlations[feature] = Correlation(feature, json_number(spearman(values, successes)), low, high, len(rows))
    study = LuminosityResult(
        config=config,
        img_size=img_size,
        rows=rows,
        correlations=correlations,
        summary=result.summary,
        unit=unit,
        resamples=resamples,
        seconds=time.perf_counter() - started,
    )
    if stopped is not None:
        raise Interrupted(study, stopped)
    return study
