"""Shared fixtures: the real Kaggle samples in ../shared and a tiny demo data set made once per run."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# pytest-xdist's workers run with COLUMNS=80; the CLI takes COLUMNS as the user's choice of width, so the
# tests would see tables wrapped as no pipe or file does.
os.environ.pop("COLUMNS", None)
# The explorer's settings file: none, unless a test names one (the user's own would change what runs).
os.environ["SEGADV_CONFIG"] = str(Path(__file__).resolve().parent / "no-such-segadv-config.toml")

REPO = Path(__file__).resolve().parent.parent
# segadv's cache (built-in demo data, index and model caches): the repository's own, never the user's; it
# outlives a run, as the user's does, so the default demo is made once.
os.environ["SEGADV_CACHE"] = str(REPO / ".test-cache")
REAL_SAMPLES = REPO.parent / "shared" / "real-samples"


@pytest.fixture(scope="session")
def real_samples() -> Path:
    if not (REAL_SAMPLES / "train_rows.csv").is_file():
        pytest.skip(f"the real Kaggle samples are not at {REAL_SAMPLES} (../shared is absent)")
    return REAL_SAMPLES


@pytest.fixture(scope="session")
def tiny_demo(tmp_path_factory) -> Path:
    """A tiny demo data set in the Kaggle layout (a few cases, both image sizes), made once."""
    from core.data.demo import write_demo_dataset

    return write_demo_dataset(tmp_path_factory.mktemp("demo") / "gi-tract", seed=0, size="tiny")


@pytest.fixture(scope="session")
def tiny_test_slices(tiny_demo) -> list:
    """What the commands score by default: the tiny demo's test split's slices with organs, in order."""
    from core.data.gitract import GITractDataset, with_organs

    return with_organs(GITractDataset(tiny_demo).split()[1])


@pytest.fixture(scope="session")
def small_checkpoint(tmp_path_factory) -> Path:
    """A real ``small`` U-Net with random weights (seed 0) saved for 64 x 64 slices: enough to exercise every
    code path of a command. Shared: no test may change the file."""
    import torch

    from core.models.checkpoints import save_checkpoint
    from core.models.registry import build_model

    torch.manual_seed(0)
    return save_checkpoint(tmp_path_factory.mktemp("ck") / "tiny_small.safetensors", build_model("small"), img_size=64)


@pytest.fixture(autouse=True)
def run_index(tmp_path_factory, monkeypatch) -> Path:
    """Each test records its runs in an index of its own (``SEGADV_RUNS``), never the user's; a test's
    commands (in-process or subprocesses) share it, so a rerun within a test can be served from the cache."""
    path = tmp_path_factory.mktemp("runs") / "runs.sqlite"
    monkeypatch.setenv("SEGADV_RUNS", str(path))
    return path


@pytest.fixture(scope="session", autouse=True)
def single_thread():
    """One torch thread for the whole run: the tests' small images gain nothing from a second one, and
    on a busy 2-core machine two threads spin-wait for each other (about 10x the CPU time)."""
    import torch

    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model():
    """A real ``small`` U-Net with random weights (seed 0), in eval mode; a module may define its own."""
    import torch

    from core.models.registry import build_model

    torch.manual_seed(0)
    return build_model("small").eval()


@pytest.fixture()
def run(monkeypatch, tmp_path):
    """``segadv ARGS`` invoked in-process from ``tmp_path`` (arguments as strings); returns Click's ``Result``
    (``exit_code``, ``stdout``, ``stderr``, ``output``)."""
    from typer.testing import CliRunner

    from segadv_tui import cli

    cli._register_commands()
    monkeypatch.chdir(tmp_path)
    runner = CliRunner()
    return lambda *args: runner.invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="session")
def registry_models():
    """Each registry model built once per session (seed 0; the big encoders take seconds each). Shared:
    a test that changes a model works on ``copy.deepcopy`` of it. Modules that use it mark themselves
    ``pytest.mark.xdist_group("registry_models")`` so one xdist worker builds them."""
    import torch

    from core.models.registry import build_model

    cache = {}

    def get(name):
        if name not in cache:
            torch.manual_seed(0)
            cache[name] = build_model(name)
        return cache[name]

    return get
