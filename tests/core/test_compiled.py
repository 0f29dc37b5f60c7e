"""The model cache (core.models.compiled): a checkpoint opened once opens later as traced TorchScript with
torch alone, and gives the same logits, input gradients and attacks as the model built from the file; a
stale, corrupt or foreign cache file is never trusted, and a cache that cannot be written is no cache."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from core.attacks.config import AttackConfig
from core.evaluation.scoring import attack_slice
from core.models.checkpoints import CheckpointError, load_checkpoint, save_checkpoint
from core.models.compiled import (
    CompiledSegmenter,
    cache_key,
    checked_meta,
    entry_path,
    load_compiled,
    open_model,
    save_compiled,
)
from core.models.registry import GrayscaleSegmenter, build_model

SIZE = 64


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch) -> Path:
    folder = tmp_path / "cache"
    monkeypatch.setenv("SEGADV_CACHE", str(folder))
    return folder


def _checkpoint(folder: Path, name: str, seed: int = 0, **kwargs) -> Path:
    torch.manual_seed(seed)
    model = build_model(name, **kwargs).eval()
    return save_checkpoint(folder / f"{name.replace(':', '_')}_{seed}.safetensors", model, img_size=SIZE)


def _compiled(path: Path) -> tuple[GrayscaleSegmenter, CompiledSegmenter]:
    model, meta = load_checkpoint(path)
    assert save_compiled(path, model, meta)
    compiled, compiled_meta = open_model(path)
    assert isinstance(compiled, CompiledSegmenter) and compiled_meta == meta
    return model, compiled


def _logits_and_gradients(model, image: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    image = image.clone().requires_grad_(True)
    logits = model(image)
    # A loss that weighs every output value differently, so a wrong pixel or channel shows in the gradient.
    weights = torch.linspace(-1, 1, logits.numel()).view_as(logits)
    (gradient,) = torch.autograd.grad((logits * weights).sum(), image)
    return logits.detach(), gradient


@pytest.mark.parametrize(
    ("name", "kwargs"),
    [
        ("small", {}),
        ("smp:FPN:resnet18", {"model_kwargs": {"encoder_depth": 3, "decoder_pyramid_channels": 32}}),
    ],
)
def test_compiled_logits_and_input_gradients_are_the_models_bit_for_bit(tmp_path, name, kwargs):
    model, compiled = _compiled(_checkpoint(tmp_path, name, **kwargs))
    generator = torch.Generator().manual_seed(1)
    # Batch sizes other than the trace's (1), and the paper's 3-channel input for an smp network.
    for shape in ((1, 1, SIZE, SIZE), (3, 1, SIZE, SIZE), (2, 3, SIZE, SIZE)):
        image = torch.rand(shape, generator=generator)
        for _ in range(3):  # a graph executor that optimised after some runs would differ here
            expected, expected_gradient = _logits_and_gradients(model, image)
            logits, gradient = _logits_and_gradients(compiled, image)
            assert torch.equal(logits, expected) and torch.equal(gradient, expected_gradient)
    assert compiled.labels == model.labels


def test_a_transposed_checkpoint_compiles_transposed(tmp_path):
    torch.manual_seed(0)
    model = build_model("small").eval()
    model.transposed = True
    path = save_checkpoint(tmp_path / "transposed.safetensors", model, img_size=SIZE)
    built, compiled = _compiled(path)
    image = torch.rand(1, 1, SIZE, SIZE, generator=torch.Generator().manual_seed(2))
    assert torch.equal(compiled(image), built(image))
    upright = build_model("small").eval()
    upright.load_state_dict(built.state_dict())
    assert not torch.allclose(compiled(image), upright(image))  # the transposition is in the graph


def test_fgsm_through_the_compiled_model_is_the_same_attack(tmp_path):
    model, compiled = _compiled(_checkpoint(tmp_path, "small"))
    generator = torch.Generator().manual_seed(3)
    image = torch.rand(2, 1, SIZE, SIZE, generator=generator)
    truth = torch.zeros(2, 3, SIZE, SIZE, dtype=torch.bool)
    truth[:, 0, 10:30, 10:30] = True
    truth[:, 2, 30:50, 25:60] = True
    config = AttackConfig(eps=0.02)
    expected = attack_slice(model, image, truth, config, ids=["a", "b"], pictures=True)
    results = attack_slice(compiled, image, truth, config, ids=["a", "b"], pictures=True)
    for result, reference in zip(results, expected):
        assert np.array_equal(result.pictures.adversarial, reference.pictures.adversarial)
        assert np.array_equal(result.dsc_adv, reference.dsc_adv, equal_nan=True)
        assert result.mean_adv == reference.mean_adv


def test_a_changed_checkpoint_is_read_from_its_file_again(tmp_path):
    path = _checkpoint(tmp_path, "small")
    _compiled(path)
    torch.manual_seed(5)
    other = build_model("small").eval()
    save_checkpoint(path, other, img_size=SIZE)  # same name and size, other weights
    model, _ = open_model(path)
    assert isinstance(model, GrayscaleSegmenter)
    image = torch.rand(1, 1, SIZE, SIZE)
    assert torch.equal(model(image), other(image))


@pytest.mark.parametrize("damage", ["truncated", "garbage", "empty", "another checkpoint's"])
def test_a_corrupt_or_foreign_cache_file_is_ignored_removed_and_rebuilt(tmp_path, damage):
    path = _checkpoint(tmp_path, "small")
    _compiled(path)
    entry = entry_path(cache_key(path), ".pt")
    if damage == "truncated":
        entry.write_bytes(entry.read_bytes()[: entry.stat().st_size // 2])
    elif damage == "garbage":
        entry.write_bytes(os.urandom(4096))
    elif damage == "empty":
        entry.write_bytes(b"")
    else:
        other = _checkpoint(tmp_path, "small", seed=7)
        _compiled(other)
        entry.write_bytes(entry_path(cache_key(other), ".pt").read_bytes())
    assert load_compiled(path) is None
    assert not entry.exists()
    model, meta = open_model(path)
    assert isinstance(model, GrayscaleSegmenter)
    assert save_compiled(path, model, meta)
    assert isinstance(open_model(path)[0], CompiledSegmenter)


def test_a_cache_that_cannot_be_written_is_no_cache(tmp_path, monkeypatch):
    blocker = tmp_path / "a file"
    blocker.write_text("not a folder")
    monkeypatch.setenv("SEGADV_CACHE", str(blocker / "cache"))  # no folder can be made under a file
    path = _checkpoint(tmp_path, "small")
    model, meta = open_model(path)
    assert isinstance(model, GrayscaleSegmenter)
    assert not save_compiled(path, model, meta)
    assert checked_meta(path) == meta
    assert isinstance(open_model(path)[0], GrayscaleSegmenter)


def test_checked_metadata_is_kept_and_a_bad_header_is_refused_every_time(tmp_path):
    path = _checkpoint(tmp_path, "small")
    meta = checked_meta(path)
    entry = entry_path(cache_key(path), ".json")
    assert json.loads(entry.read_text())["meta"] == meta == load_checkpoint(path)[1]
    entry.write_text("{torn")
    assert checked_meta(path) == meta  # checked from the file again
    assert json.loads(entry.read_text())["meta"] == meta
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\x08\x00\x00\x00\x00\x00\x00\x00{}      ")
    for _ in range(2):
        with pytest.raises(CheckpointError, match="bad.safetensors"):
            checked_meta(bad)


def test_an_untraceable_model_is_not_cached(tmp_path):
    path = _checkpoint(tmp_path, "small")
    model, meta = load_checkpoint(path)

    class DependsOnTheInput(torch.nn.Module):  # a branch on a value: the trace would bake one side in
        labels = model.labels

        def forward(self, image):
            return model(image) if float(image.mean()) > 0.5 else -model(image)

    assert not save_compiled(path, DependsOnTheInput(), meta)
    assert load_compiled(path) is None


def test_the_explorer_opens_a_cached_checkpoint_without_smp_timm_or_torchvision(tiny_demo, cache):
    """A fresh process on a warm cache: up to the first attacked frame, the app imports torch and none of
    segmentation-models-pytorch, timm, torchvision or MONAI, and attacks the compiled model."""
    from core.paths import bundled_checkpoint_dirs, demo_checkpoint
    from segadv_tui.catalog import scan

    scan(bundled_checkpoint_dirs())  # what a first launch leaves: every bundled header checked
    model, meta = load_checkpoint(demo_checkpoint())
    assert save_compiled(demo_checkpoint(), model, meta)  # and the opened checkpoint compiled
    code = f"""
import asyncio, sys
from pathlib import Path
from segadv_tui.app import SegadvApp

async def run():
    app = SegadvApp(data=Path({str(tiny_demo)!r}), checkpoint=Path({str(demo_checkpoint())!r}), device="cpu")
    async with app.run_test(size=(160, 48)) as pilot:
        while app.explorer.state.frame is None:
            await pilot.pause(0.05)
        print(type(app.explorer.attacker.model).__name__, app.explorer.state.frame.result.mean_adv)
        print(*sorted(name for name in ("segmentation_models_pytorch", "timm", "torchvision", "monai", "torch")
                      if name in sys.modules))

asyncio.run(run())
"""
    env = {**os.environ, "SEGADV_CACHE": str(cache), "PYTHONPATH": str(Path(__file__).resolve().parents[2])}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    (kind, mean_adv), loaded = (line.split() for line in out.stdout.strip().splitlines()[-2:])
    assert kind == "CompiledSegmenter"
    assert loaded == ["torch"]
    assert 0 <= float(mean_adv) <= 1


def test_the_cache_keeps_the_most_recently_used_models(tmp_path, monkeypatch):
    import core.models.compiled as compiled

    monkeypatch.setitem(compiled.KEEP, ".pt", 2)
    paths = [_checkpoint(tmp_path, "small", seed=seed) for seed in range(3)]
    _compiled(paths[0])
    _compiled(paths[1])
    os.utime(entry_path(cache_key(paths[1]), ".pt"), ns=(1, 1))  # long unused
    assert load_compiled(paths[0]) is not None  # used just now
    _compiled(paths[2])
    assert load_compiled(paths[0]) is not None and load_compiled(paths[2]) is not None
    assert load_compiled(paths[1]) is None


def test_torchscripts_deprecation_warnings_never_reach_the_user(tmp_path):
    import warnings

    path = _checkpoint(tmp_path, "small")
    model, meta = load_checkpoint(path)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        assert save_compiled(path, model, meta)
        assert load_compiled(path) is not None
    assert [str(warning.message) for warning in caught] == []


def test_the_papers_mode_is_refused_for_a_one_channel_model_cached_or_not(tmp_path):
    """The paper's FGSM feeds 3 channels: a one-channel MONAI network refuses it with one line whether it was
    built from its file or opened from the cache (a traced model has no spec, only its input channels)."""
    from core.attacks.gradients import check_paper_mode
    from core.errors import OptionError

    model, compiled = _compiled(_checkpoint(tmp_path, "monai:UNet", model_kwargs={"channels": [4, 8], "strides": [2]}))
    for network in (model, compiled):
        with pytest.raises(OptionError, match="mode 'paper' feeds the slice copied to 3 channels"):
            check_paper_mode(network)
    check_paper_mode(_compiled(_checkpoint(tmp_path, "small"))[1])  # a 3-channel network takes it
