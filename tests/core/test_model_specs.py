"""Any smp or MONAI network (``smp:ARCH:ENCODER``, ``monai:NAME`` with keyword arguments from a spec file):
built with the label set's channels, trained a step, saved and reloaded bit for bit, attacked, imported from
foreign weights, trained through the CLI; bad names, spec files and checkpoint metadata refused in one line."""

from __future__ import annotations

import json
import re

import pytest
import torch
from hostile import safetensors_parts, with_meta, write_safetensors

from core.attacks.fast_gradient import fgsm
from core.labels import UW_MADISON, label_set
from core.models.checkpoints import (
    CheckpointError,
    img_size_problem,
    load_checkpoint,
    read_checkpoint_meta,
    save_checkpoint,
)
from core.models.inference import predict
from core.models.registry import (
    UnknownModelError,
    build_model,
    count_parameters,
    freeze_unused_parameters,
    model_spec,
)
from core.models.specs import ModelSpecError, read_model_spec
from core.training.loop import make_loss

SOFTMAX = label_set(["grey", "white", "rest"], "softmax")
# Small enough to train and save in a test; every one takes a 64 px slice.
NETWORKS = {
    "smp:Unet:tu-mobilenetv3_small_050": {"decoder_channels": [16, 8, 8, 8, 8]},
    "smp:FPN:tu-mobilenetv3_small_050": {"decoder_pyramid_channels": 32, "decoder_segmentation_channels": 32},
    "monai:UNet": {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1},
    "monai:AttentionUnet": {"channels": [4, 8], "strides": [2]},
    "monai:DynUNet": {"kernel_size": [3, 3, 3], "strides": [1, 2, 2], "filters": [4, 8, 16]},
    "monai:SwinUNETR": {"feature_size": 12, "depths": [1, 1, 1, 1], "num_heads": [1, 1, 1, 1]},
}


def _trained_a_step(name: str, labels=SOFTMAX):
    torch.manual_seed(0)
    model = build_model(name, labels=labels, model_kwargs=NETWORKS[name])
    freeze_unused_parameters(model)
    images = torch.rand(2, 1, 64, 64)
    masks = torch.zeros(2, len(labels), 64, 64)
    masks[:, 0, 10:30, 10:30] = 1
    masks[:, 1, 40:60, 40:60] = 1
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3)
    model.train()
    optimizer.zero_grad()
    loss = make_loss(False, labels.kind)(model(images), masks)
    loss.backward()
    optimizer.step()
    assert torch.isfinite(loss)
    return model.eval(), images, masks


@pytest.mark.parametrize("name", NETWORKS)
def test_a_network_trains_saves_reloads_bit_for_bit_and_is_attacked(name, tmp_path):
    model, images, masks = _trained_a_step(name)
    path = save_checkpoint(tmp_path / "net.safetensors", model, img_size=64)
    meta = read_checkpoint_meta(path)
    assert meta["model"] == name and meta["model_kwargs"] == model.spec.kwargs
    assert meta["labels"]["kind"] == "softmax" and meta["params"] == count_parameters(model)
    loaded, _ = load_checkpoint(path)
    assert loaded.spec == model.spec and loaded.labels.same_labels(SOFTMAX)
    state, again = model.net.state_dict(), loaded.net.state_dict()
    assert state.keys() == again.keys() and all(torch.equal(state[key], again[key]) for key in state)
    with torch.no_grad():
        assert torch.equal(model(images), loaded(images))
    adversarial = fgsm(loaded, images, masks, 0.03)
    assert (adversarial - images).abs().max() <= 0.03 + 1e-6
    assert predict(loaded, adversarial).shape == masks.shape


def test_monai_networks_take_the_slice_itself_and_smp_ones_three_copies():
    monai = build_model("monai:UNet", labels=SOFTMAX)
    assert monai.spec.in_channels == 1 and monai.net.model[0].conv.unit0.conv.in_channels == 1
    assert monai(torch.rand(1, 1, 32, 32)).shape == (1, 4, 32, 32)
    smp_net = build_model(
        "smp:Unet:tu-mobilenetv3_small_050", model_kwargs=NETWORKS["smp:Unet:tu-mobilenetv3_small_050"]
    )
    assert smp_net.spec.in_channels == 3 and smp_net(torch.rand(1, 1, 64, 64)).shape == (1, 3, 64, 64)
    with pytest.raises(ModelSpecError, match="normalisation 'none'"):
        build_model("monai:UNet", normalisation="imagenet")
    with pytest.raises(ModelSpecError, match="no pretrained encoder"):
        build_model("monai:UNet", encoder_weights="imagenet")


def test_monai_defaults_are_recorded_so_the_checkpoint_rebuilds_them():
    assert model_spec("monai:UNet").kwargs == {"channels": [16, 32, 64, 128], "strides": [2, 2, 2], "num_res_units": 2}
    dyn = model_spec("monai:DynUNet", {"strides": [1, 2, 2, 2]}).kwargs
    assert dyn["upsample_kernel_size"] == [2, 2, 2] and dyn["filters"] == [16, 32, 64, 128]
    assert model_spec("monai:UNet", {"channels": [8, 16], "strides": [2]}).kwargs["channels"] == [8, 16]


@pytest.mark.parametrize(
    "name, message",
    [
        ("smp:Unett:resnet18", "unknown smp architecture 'Unett'; choose from Unet, UnetPlusPlus, MAnet"),
        ("smp:Unet:resnet19", "unknown smp encoder 'resnet19'; choose from resnet18"),
        ("smp:Unet:tu-nonesuch", "unknown timm encoder 'tu-nonesuch'"),
        ("smp:Unet", "expected smp:ARCH:ENCODER"),
        ("monai:VNet", "unknown MONAI network; choose from UNet, AttentionUnet, SwinUNETR, DynUNet"),
        ("unet9", "unknown model 'unet9'; choose from vgg, resnext"),
    ],
)
def test_unknown_names_list_the_choices(name, message):
    with pytest.raises((ModelSpecError, UnknownModelError), match=re.escape(message)):
        build_model(name)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"channelz": [4, 8]}, "model_kwargs.channelz: not a keyword of monai:UNet; choose from act, adn_ordering"),
        ({"out_channels": 9}, "model_kwargs.out_channels: segadv sets it"),
        ({"channels": [4] * 9}, "model_kwargs.channels = [4, 4, 4, 4, 4, 4, 4, 4, 4]: expected a number"),
        ({"channels": [4, 100000]}, "model_kwargs.channels = [4, 100000]: expected"),
        ({"dropout": {"p": 1}}, "model_kwargs.dropout = {'p': 1}: expected"),
        ({"channels": [4], "strides": []}, "MONAI refused it"),
    ],
)
def test_bad_keyword_arguments_name_the_key(kwargs, message):
    with pytest.raises(ModelSpecError, match=re.escape(message)):
        build_model("monai:UNet", model_kwargs=kwargs)


def test_registry_models_take_no_keyword_arguments_and_stay_as_they_were():
    with pytest.raises(ModelSpecError, match="built as the paper's"):
        build_model("small", model_kwargs={"decoder_channels": [8, 8, 8, 8, 8]})
    assert model_spec("small").model_kwargs == {} and build_model("small").spec.library == "smp"


def test_spec_files_in_json_and_toml(tmp_path):
    (tmp_path / "spec.json").write_text(json.dumps({"channels": [8, 16], "strides": [2]}))
    (tmp_path / "spec.toml").write_text("channels = [8, 16]\nstrides = [2]\nnum_res_units = 1\n")
    assert read_model_spec(tmp_path / "spec.json") == {"channels": [8, 16], "strides": [2]}
    assert read_model_spec(tmp_path / "spec.toml") == {"channels": [8, 16], "strides": [2], "num_res_units": 1}
    (tmp_path / "bad.toml").write_text("channels = [8, \n")
    with pytest.raises(ModelSpecError, match="bad.toml: not TOML"):
        read_model_spec(tmp_path / "bad.toml")
    (tmp_path / "list.json").write_text("[1, 2]")
    with pytest.raises(ModelSpecError, match="list.json: expected an object of keyword arguments, not list"):
        read_model_spec(tmp_path / "list.json")
    with pytest.raises(ModelSpecError, match="a model spec is a .json or .toml file"):
        read_model_spec(tmp_path / "spec.yaml")


def test_slice_sizes_follow_each_network():
    assert img_size_problem("monai:UNet", 64, {"channels": [4, 8, 16], "strides": [2, 2]}) is None
    assert "a multiple of 8 from 8" in img_size_problem("monai:UNet", 68)  # strides 2, 2, 2 by default
    assert "a multiple of 32 from 64" in img_size_problem("monai:SwinUNETR", 32)
    assert img_size_problem("monai:SwinUNETR", 96) is None
    assert "a multiple of 32" in img_size_problem("smp:FPN:resnet18", 48)
    assert img_size_problem("smp:FPN:resnet18", 40, {"encoder_depth": 3}) is None
    assert "a multiple of 8 from 8" in img_size_problem("smp:FPN:resnet18", 44, {"encoder_depth": 3})
    assert img_size_problem("smp:Unet:resnet18", 50) is None  # smp's Unet pads inside


@pytest.fixture(scope="module")
def unet_checkpoint(tmp_path_factory):
    model, _, _ = _trained_a_step("monai:UNet")
    return save_checkpoint(tmp_path_factory.mktemp("unet") / "unet.safetensors", model, img_size=64)


@pytest.mark.parametrize(
    "values, message",
    [
        ({"model_kwargs": json.dumps({"channels": [4, 8, 16], "strides": [2, 2], "evil": 1})}, "model_kwargs.evil"),
        ({"model_kwargs": json.dumps({"channels": [4, 8, 5000], "strides": [2, 2]})}, "model_kwargs.channels"),
        ({"model_kwargs": json.dumps([1])}, "metadata model_kwargs = [1]: expected an object"),
        ({"model": json.dumps("monai:VNet")}, "metadata model = 'monai:VNet': model 'monai:VNet': unknown MONAI"),
        ({"model": json.dumps("smp:Nope:resnet18")}, "unknown smp architecture 'Nope'"),
        ({"model": json.dumps("small")}, "model_kwargs = {'channels'"),
        ({"img_size": "62"}, "metadata img_size = 62: expected a multiple of 4 from 4"),
        # Within the bounds, yet far more weights than the file holds: refused before anything is built.
        (
            {"model_kwargs": json.dumps({"channels": [1024] * 8, "strides": [1] * 7, "num_res_units": 8})},
            "describe a network of at least",
        ),
        (
            {
                "model": json.dumps("monai:SwinUNETR"),
                "arch": json.dumps("SwinUNETR"),
                "model_kwargs": json.dumps({"feature_size": 1020, "depths": [64] * 4, "num_heads": [12] * 4}),
            },
            "describe a network of at least 67917312000 values; the file holds 3446",
        ),
    ],
)
def test_checkpoints_with_bad_model_metadata_are_refused_naming_the_key(unet_checkpoint, tmp_path, values, message):
    header, size = safetensors_parts(unet_checkpoint)
    data = unet_checkpoint.read_bytes()[-size:]
    path = write_safetensors(tmp_path / "bad.safetensors", with_meta(header, **values), data)
    with pytest.raises(CheckpointError, match=re.escape(f"{path}: ") + ".*" + re.escape(message)) as caught:
        load_checkpoint(path)
    assert "\n" not in str(caught.value)


def test_foreign_state_dicts_of_library_networks_import_and_load(tmp_path, run):
    model, images, _ = _trained_a_step("monai:UNet", UW_MADISON)
    (tmp_path / "spec.json").write_text(json.dumps(NETWORKS["monai:UNet"]))
    torch.save({"state_dict": {f"module.{k}": v for k, v in model.net.state_dict().items()}}, tmp_path / "w.pth")
    result = run(
        "import-checkpoint", tmp_path / "w.pth", "--model", "monai:UNet", "--model-spec", tmp_path / "spec.json",
        "--img-size", "64", tmp_path / "imported.safetensors",
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    loaded, meta = load_checkpoint(tmp_path / "imported.safetensors")
    assert meta["model_kwargs"] == model.spec.kwargs and meta["labels"]["kind"] == "sigmoid"
    with torch.no_grad():
        assert torch.equal(loaded(images), model(images))
    # Without the spec the default UNet does not fit, and the message says which keys.
    result = run("import-checkpoint", tmp_path / "w.pth", "--model", "monai:UNet", tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "the weights do not fit model 'monai:UNet'" in result.output
    result = run("import-checkpoint", tmp_path / "w.pth", "--model", "smp:Unett:resnet18", tmp_path / "x.safetensors")
    assert result.exit_code == 2 and "unknown smp architecture 'Unett'" in result.output


def test_train_builds_a_monai_network_from_a_toml_spec(tiny_demo, tmp_path, run):
    (tmp_path / "spec.toml").write_text("channels = [4, 8, 16]\nstrides = [2, 2]\nnum_res_units = 1\n")
    out = tmp_path / "unet.safetensors"
    args = ["--encoder-weights", "none", "--img-size", "64", "--batch-size", "8", "--workers", "0", "--epochs", "1"]
    result = run(
        "train", "--model", "monai:UNet", "--model-spec", tmp_path / "spec.toml", *args, "--data", tiny_demo,
        "--limit-slices", "8", "--out", out,
    )  # fmt: skip
    assert result.exit_code == 0, result.output
    model, meta = load_checkpoint(out)
    assert meta["model"] == "monai:UNet" and meta["model_kwargs"]["channels"] == [4, 8, 16]
    assert meta["train_args"]["model_spec"] == str(tmp_path / "spec.toml")
    assert model.labels.same_labels(UW_MADISON)
    result = run("train", "--model", "monai:UNet", "--img-size", "64", "--data", tiny_demo, "--out", out)
    assert result.exit_code == 2 and "has no pretrained encoder: train it with --encoder-weights none" in result.output
    result = run("train", "--model", "smp:Unet:resnet19", *args, "--data", tiny_demo, "--out", out)
    assert result.exit_code == 2 and "unknown smp encoder 'resnet19'" in result.output


@pytest.mark.parametrize("name", NETWORKS)
def test_every_trainable_parameter_of_a_library_network_gets_a_gradient(name):
    # What DDP needs without find_unused_parameters (core.models.registry.freeze_unused_parameters).
    model = build_model(name, labels=SOFTMAX, model_kwargs=NETWORKS[name]).train()
    keys = list(model.state_dict())
    freeze_unused_parameters(model)
    assert list(model.state_dict()) == keys
    model(torch.rand(2, 1, 64, 64)).square().mean().backward()
    assert all(p.grad is not None for p in model.parameters() if p.requires_grad)


@pytest.mark.slow
def test_a_monai_network_trains_under_torchrun_with_two_processes(tiny_demo, tmp_path):
    from test_ddp import torchrun

    (tmp_path / "spec.json").write_text(json.dumps(NETWORKS["monai:UNet"]))
    out = tmp_path / "unet.safetensors"
    done = torchrun(
        2, "train", "--model", "monai:UNet", "--model-spec", str(tmp_path / "spec.json"), "--encoder-weights", "none",
        "--device", "cpu", "--data", str(tiny_demo), "--limit-slices", "8", "--batch-size", "4", "--img-size", "64",
        "--epochs", "1", "--workers", "0", "--out", str(out), cwd=tmp_path,
    )  # fmt: skip
    output = done.stdout + done.stderr
    assert done.returncode == 0 and "Traceback" not in output, output
    model, meta = load_checkpoint(out)
    assert (
        meta["model"] == "monai:UNet"
        and meta["model_kwargs"] == model_spec("monai:UNet", NETWORKS["monai:UNet"]).kwargs
    )
