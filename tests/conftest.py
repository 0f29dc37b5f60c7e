"""Shared fixtures: the real Kaggle samples in ../shared and a tiny demo data set made once per run."""

from __future__ import annotations

from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
REAL_SAMPLES = REPO.parent / "shared" / "real-samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    if not (REAL_SAMPLES / "train_rows.csv").is_file():
        pytest.skip(f"the real Kaggle samples are not at {REAL_SAMPLES} (../shared is absent)")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A tiny demo data set in the Kaggle layout (a few cases, both image sizes), made once."""
    from core.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "gi-tract", seed=0, size="tiny")
