"""``core.models.loaded.LoadedModel``, the one shape in which Table II, the robustness report and transfer take
their models, and the front ends' checkpoint handing one over. Real registry models, random weights."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import pytest
import torch

from core.evaluation.scoring import shared_labels
from core.labels import UW_MADISON, LabelSetError, label_set
from core.models.loaded import LoadedModel
from core.models.registry import build_model
from segadv_tui.catalog import CheckpointEntry, LoadedCheckpoint

LIVER_TUMOUR = label_set(("liver", "tumour"), kind="softmax")


@pytest.fixture(scope="module")
def two_label_model():
    return build_model("small", labels=LIVER_TUMOUR).eval()


def test_its_labels_are_the_model_outputs(two_label_model):
    loaded = LoadedModel("liver", two_label_model)
    assert loaded.labels.same_labels(LIVER_TUMOUR) and loaded.meta == {}
    with torch.no_grad():  # the label set is what the logits are: L + 1 channels for softmax
        assert two_label_model(torch.rand(1, 1, 32, 32)).shape[1] == len(loaded.labels.names) + 1
    assert LoadedModel("bare", torch.nn.Conv2d(1, 3, 1)).labels is UW_MADISON  # a module without labels
    with pytest.raises(dataclasses.FrozenInstanceError):
        loaded.label = "other"  # type: ignore[misc]


def test_shared_labels_names_the_two_models_whose_sets_differ(two_label_model):
    gi = LoadedModel("gi.safetensors", build_model("small").eval())
    liver = LoadedModel("liver.safetensors", two_label_model)
    assert shared_labels([gi, LoadedModel("gi copy", gi.model)]) is UW_MADISON
    with pytest.raises(LabelSetError) as caught:
        shared_labels([gi, liver])
    assert str(caught.value) == (
        "liver.safetensors segments liver, tumour (softmax) but gi.safetensors segments "
        "large_bowel, small_bowel, stomach (sigmoid); compare models of one label set"
    )


def test_a_loaded_checkpoint_hands_over_its_model_and_metadata(two_label_model):
    meta = {"model": "small", "img_size": 64}
    checkpoint = LoadedCheckpoint(CheckpointEntry(Path("runs/liver.safetensors"), meta), two_label_model, meta)
    loaded = checkpoint.as_model("liver #2")
    assert loaded == LoadedModel("liver #2", two_label_model, meta)
    assert loaded.model is checkpoint.model and loaded.meta is checkpoint.meta
