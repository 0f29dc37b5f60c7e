"""Checkpoints: exact round trips, safe foreign imports, refused pickles, clear key errors, atomic writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from typer.testing import CliRunner

import core
from core.models import checkpoints
from core.models.checkpoints import (
    CheckpointError,
    load_checkpoint,
    load_training_state,
    read_checkpoint_meta,
    save_checkpoint,
    save_training_state,
)
from core.models.registry import build_model
from core.organs import ORGANS

IMG = 64


@pytest.fixture(scope="module")
def small():
    torch.manual_seed(0)
    model = build_model("small").eval()
    # Non-trivial BatchNorm statistics, so a lost buffer would change the outputs.
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, torch.nn.BatchNorm2d):
                module.running_mean.uniform_(-0.1, 0.1)
                module.running_var.uniform_(0.5, 1.5)
    return model


@pytest.fixture(scope="module")
def batch():
    return torch.rand(2, 1, IMG, IMG, generator=torch.Generator().manual_seed(1))


def outputs(model, batch):
    with torch.no_grad():
        return model(batch)


def test_round_trip_gives_identical_outputs_and_full_metadata(tmp_path, small, batch):
    val = {"large_bowel": 0.8, "small_bowel": 0.7, "stomach": 0.9, "mean": 0.8}
    path = save_checkpoint(
        tmp_path / "m.safetensors",
        small,
        img_size=IMG,
        train_args={"lr": 3e-4},
        epoch=3,
        val_dsc=val,
        data_fingerprint="abc",
    )
    loaded, meta = load_checkpoint(path)
    assert not loaded.training
    assert torch.equal(outputs(loaded, batch), outputs(small, batch))
    expected = {
        "model": "small",
        "arch": "Unet",
        "encoder": "mobilenet_v2",
        "in_channels": 1,
        "classes": list(ORGANS),
        "img_size": IMG,
        "normalisation": "none",
        "train_args": {"lr": 3e-4},
        "epoch": 3,
        "val_dsc": val,
        "data_fingerprint": "abc",
        "segadv_version": core.__version__,
        "dtype": "float32",
        "params": sum(p.numel() for p in small.parameters()),
    }
    assert {key: meta[key] for key in expected} == expected
    assert read_checkpoint_meta(path) == meta


def test_fp16_storage_halves_the_file_and_loads_back_as_fp32(tmp_path, small, batch):
    full = save_checkpoint(tmp_path / "full.safetensors", small, img_size=IMG)
    half = save_checkpoint(tmp_path / "half.safetensors", small, img_size=IMG, dtype="float16")
    assert half.stat().st_size < 0.55 * full.stat().st_size
    loaded, meta = load_checkpoint(half)
    assert meta["dtype"] == "float16"
    assert all(p.dtype == torch.float32 for p in loaded.parameters())
    torch.testing.assert_close(outputs(loaded, batch), outputs(small, batch), atol=2e-3, rtol=2e-3)


def test_the_file_is_plain_safetensors_that_smp_state_dicts_fit(tmp_path, small):
    from safetensors.torch import load_file

    path = save_checkpoint(tmp_path / "m.safetensors", small, img_size=IMG)
    tensors = load_file(path)
    assert tensors.keys() == small.net.state_dict().keys()


@pytest.mark.parametrize("wrap", ["plain", "dataparallel", "nested"])
def test_foreign_state_dicts_import_with_identical_outputs(tmp_path, small, batch, wrap):
    if wrap == "plain":  # the paper's torch.save(model.state_dict()) of an smp Unet
        state, path = small.net.state_dict(), tmp_path / "unet_small.pt"
    elif wrap == "dataparallel":  # keys prefixed "module."
        state, path = torch.nn.DataParallel(small.net).state_dict(), tmp_path / "dp.pth"
        assert next(iter(state)).startswith("module.")
    else:
        # A trainer's checkpoint: weights under "state_dict", keys prefixed "model." (as Lightning saves them).
        weights = {f"model.{key}": value for key, value in small.net.state_dict().items()}
        state, path = {"state_dict": weights, "epoch": 7}, tmp_path / "trainer.bin"
    torch.save(state, path)
    loaded, meta = load_checkpoint(path, model_name="small")
    assert torch.equal(outputs(loaded, batch), outputs(small, batch))
    assert meta["model"] == "small" and meta["img_size"] == 224


def test_import_checkpoint_command_converts_foreign_weights(tmp_path, small, batch):
    from segadv_tui.cli import _register_commands, app

    _register_commands()

    torch.save(small.net.state_dict(), tmp_path / "w.pt")
    out = tmp_path / "converted.safetensors"
    result = CliRunner().invoke(
        app, ["import-checkpoint", str(tmp_path / "w.pt"), "--model", "small", str(out), "--img-size", "96"]
    )
    assert result.exit_code == 0, result.output
    loaded, meta = load_checkpoint(out)
    assert meta["img_size"] == 96 and meta["model"] == "small"
    assert torch.equal(outputs(loaded, batch), outputs(small, batch))

    torch.save({"head.weight": torch.zeros(3)}, tmp_path / "other.pt")
    mismatch = CliRunner().invoke(
        app, ["import-checkpoint", str(tmp_path / "other.pt"), "--model", "small", str(tmp_path / "x.safetensors")]
    )
    assert mismatch.exit_code == 2
    assert "missing keys" in mismatch.output and not (tmp_path / "x.safetensors").exists()


def test_weights_trained_on_transposed_slices_as_the_paper_notebook_did(tmp_path, small, batch):
    """``import-checkpoint --transposed``: the notebook fed ``transpose(2, 1, 0)`` slices, so its weights
    must see each slice transposed; segadv's masks come back in the stored orientation."""
    from segadv_tui.cli import _register_commands, app

    _register_commands()
    torch.save(small.net.state_dict(), tmp_path / "notebook.pt")
    out = tmp_path / "paper.safetensors"
    result = CliRunner().invoke(
        app,
        [
            "import-checkpoint",
            str(tmp_path / "notebook.pt"),
            "--model",
            "small",
            str(out),
            "--img-size",
            "64",
            "--transposed",
        ],
    )
    assert result.exit_code == 0 and "input transposed" in result.output, result.output
    loaded, meta = load_checkpoint(out)
    assert meta["input_transposed"] is True and loaded.transposed
    with torch.no_grad():  # a second implementation: the notebook's own orientation, by hand
        by_hand = small.net(batch.expand(-1, 3, -1, -1).transpose(2, 3)).transpose(2, 3)
        assert torch.allclose(loaded(batch), by_hand, atol=1e-5)
        assert not torch.allclose(loaded(batch), small(batch), atol=1e-3)  # the orientation matters
    shown = CliRunner().invoke(app, ["info", str(out)], env={"COLUMNS": "200"})
    assert "input transposed" in shown.output
    assert (
        read_checkpoint_meta(save_checkpoint(tmp_path / "plain.safetensors", small, img_size=64))["input_transposed"]
        is False
    )


class _WritesAMarker:
    """Unpickling this calls open(marker, "w"): code a checkpoint must never get to run."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return (open, (str(self.marker), "w"))


def test_a_pickle_that_would_run_code_is_refused_and_nothing_runs(tmp_path):
    marker = tmp_path / "pwned"
    evil = tmp_path / "evil.pt"
    torch.save({"encoder.weight": torch.zeros(1), "payload": _WritesAMarker(marker)}, evil)
    assert not marker.exists()

    with pytest.raises(CheckpointError, match="refused") as caught:
        load_checkpoint(evil, model_name="small")
    assert str(evil) in str(caught.value)
    assert not marker.exists()

    # The control: an unsafe load really would have run the payload.
    torch.load(evil, weights_only=False)["payload"].close()
    assert marker.exists()


def test_a_state_dict_that_does_not_fit_names_the_keys(tmp_path, small):
    state = dict(small.net.state_dict())
    state.pop("segmentation_head.0.bias")
    state["decoder.extra.weight"] = torch.zeros(3)
    state["segmentation_head.0.weight"] = torch.zeros(5, 8, 3, 3)
    torch.save(state, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "bad.pt", model_name="small")
    message = str(caught.value)
    assert str(tmp_path / "bad.pt") in message
    assert "1 missing keys: segmentation_head.0.bias" in message
    assert "1 unexpected keys: decoder.extra.weight" in message
    assert "segmentation_head.0.weight (5, 8, 3, 3)" in message


def test_many_mismatching_keys_are_counted_not_all_listed(tmp_path, small):
    # Keys under a wrapper name we do not strip: every key is missing and unexpected.
    torch.save({f"backbone.{key}": value for key, value in small.net.state_dict().items()}, tmp_path / "wrapped.pt")
    count = len(small.net.state_dict())
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "wrapped.pt", model_name="small")
    message = str(caught.value)
    assert f"{count} missing keys: " in message and f"{count} unexpected keys: backbone." in message
    assert f"({count - 5} more)" in message and len(message) < 2000


def test_missing_corrupt_and_unknown_files_name_the_path(tmp_path, small):
    with pytest.raises(CheckpointError, match="no such checkpoint"):
        load_checkpoint(tmp_path / "absent.safetensors")
    good = save_checkpoint(tmp_path / "good.safetensors", small, img_size=IMG)
    truncated = tmp_path / "truncated.safetensors"
    truncated.write_bytes(good.read_bytes()[:-1000])
    for reader in (load_checkpoint, read_checkpoint_meta):
        with pytest.raises(CheckpointError, match="truncated") as caught:
            reader(truncated)
        assert str(truncated) in str(caught.value)
    garbage = tmp_path / "garbage.safetensors"
    garbage.write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00not json at all!")
    with pytest.raises(CheckpointError, match="not a safetensors file"):
        load_checkpoint(garbage)
    torch.save(small.net.state_dict(), tmp_path / "w.pt")
    with pytest.raises(CheckpointError, match="unknown model 'nope'") as caught:
        load_checkpoint(tmp_path / "w.pt", model_name="nope")
    assert str(tmp_path / "w.pt") in str(caught.value)
    with pytest.raises(CheckpointError, match="need a model name"):
        load_checkpoint(tmp_path / "w.pt")
    (tmp_path / "damaged.pt").write_bytes(b"PK\x03\x04 not really a zip")
    with pytest.raises(CheckpointError, match="not a readable PyTorch"):
        load_checkpoint(tmp_path / "damaged.pt", model_name="small")


def test_bare_safetensors_without_our_metadata_point_to_import(tmp_path, small):
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in small.net.state_dict().items()}, tmp_path / "bare.safetensors")
    with pytest.raises(CheckpointError, match="import-checkpoint"):
        load_checkpoint(tmp_path / "bare.safetensors")


def test_a_crash_mid_save_leaves_the_old_checkpoint_intact(tmp_path, small, batch, monkeypatch):
    path = save_checkpoint(tmp_path / "best.safetensors", small, img_size=IMG, epoch=1)
    before = path.read_bytes()
    other = build_model("small")

    def crash(src, dst):  # the temporary file is complete; the process dies before the rename
        assert Path(src).stat().st_size > 0
        raise OSError("simulated crash")

    monkeypatch.setattr(checkpoints.os, "replace", crash)
    with pytest.raises(OSError, match="simulated crash"):
        save_checkpoint(path, other, img_size=IMG, epoch=2)
    monkeypatch.undo()

    assert path.read_bytes() == before
    loaded, meta = load_checkpoint(path)
    assert meta["epoch"] == 1
    assert torch.equal(outputs(loaded, batch), outputs(small, batch))
    assert [p.name for p in tmp_path.iterdir()] == ["best.safetensors"]  # no temporary left behind


def test_training_state_round_trips_and_refuses_code(tmp_path, small):
    state = {
        "model_name": "small",
        "epoch": 2,
        "step": 0,
        "model": small.state_dict(),
        "rng": {"torch": torch.get_rng_state(), "python": [3, [1, 2], None]},
    }
    path = save_training_state(tmp_path / "run.resume.pt", state)
    loaded = load_training_state(path)
    assert loaded["epoch"] == 2 and torch.equal(loaded["rng"]["torch"], state["rng"]["torch"])
    marker = tmp_path / "pwned"
    torch.save({"model": {}, "epoch": 0, "x": _WritesAMarker(marker)}, tmp_path / "evil.resume.pt")
    with pytest.raises(CheckpointError, match="refused"):
        load_training_state(tmp_path / "evil.resume.pt")
    assert not marker.exists()


def test_metadata_is_json_in_the_safetensors_header(tmp_path, small):
    path = save_checkpoint(tmp_path / "m.safetensors", small, img_size=IMG)
    raw = path.read_bytes()
    header_len = int.from_bytes(raw[:8], "little")
    header = json.loads(raw[8 : 8 + header_len])
    assert json.loads(header["__metadata__"]["classes"]) == list(ORGANS)


def test_the_bundled_checkpoint_names_the_path_it_ships_at():
    from core.paths import demo_checkpoint

    meta = read_checkpoint_meta(demo_checkpoint())
    assert meta["train_args"]["out"] == "checkpoints/demo_small.safetensors" and meta["epoch"] == 16
