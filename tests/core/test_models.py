"""The model registry: every model builds, runs forward and backward, and the paper's sizes match Table II."""

from __future__ import annotations

import pytest
import torch
from typer.testing import CliRunner

from core.models.registry import REGISTRY, UnknownModelError, build_model, count_parameters

# Table II of the paper, in millions of parameters (3 input channels, 3 classes).
TABLE_II_PARAMS = {"vgg": 18.44, "resnext": 95.76, "effb7": 67.10, "effb7pp": 68.16}

# The registry models are built once per process (tests/conftest.py): keep their users on one xdist worker.
pytestmark = pytest.mark.xdist_group("registry_models")


def test_the_small_model_trains_forward_and_backward_to_its_weights(registry_models):
    model = registry_models("small").train()
    logits = model(torch.rand(2, 1, 64, 64))
    assert logits.shape == (2, 3, 64, 64)
    logits.square().mean().backward()
    grads = [p.grad for p in model.parameters()]
    assert all(g is not None and torch.isfinite(g).all() for g in grads)
    model.zero_grad(set_to_none=True)


@pytest.mark.parametrize("name", list(REGISTRY))
def test_every_model_gives_input_gradients_in_eval_mode(registry_models, name):
    # What an attack does: weights frozen, gradient of the loss with respect to the grayscale slice.
    model = registry_models(name).eval().requires_grad_(False)
    image = torch.rand(1, 1, 64, 64, requires_grad=True)
    logits = model(image)
    assert logits.shape == (1, 3, 64, 64)
    (grad,) = torch.autograd.grad(logits.square().mean(), image)
    assert grad.shape == image.shape and torch.isfinite(grad).all() and grad.abs().sum() > 0
    model.requires_grad_(True)


@pytest.mark.parametrize("name", list(TABLE_II_PARAMS))
def test_paper_models_have_table_ii_parameter_counts(registry_models, name):
    assert round(count_parameters(registry_models(name)) / 1e6, 2) == TABLE_II_PARAMS[name]


def test_small_model_is_light(registry_models):
    assert count_parameters(registry_models("small")) < 5_000_000


def test_unknown_model_names_the_choices():
    with pytest.raises(UnknownModelError, match="choose from vgg, resnext"):
        build_model("unet3000")


def test_info_lists_the_registry_with_parameter_counts_and_versions():
    from segadv_tui.cli import _register_commands, app

    _register_commands()

    result = CliRunner().invoke(app, ["info"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    for name, millions in TABLE_II_PARAMS.items():
        assert name in result.output and f"{millions:.2f}M" in result.output
    assert "device: CPU" in result.output or "device: cuda" in result.output
    assert f"torch {torch.__version__.split('+')[0]}" in result.output
