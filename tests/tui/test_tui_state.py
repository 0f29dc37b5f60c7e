"""The explorer's state and decisions (segadv_tui.state) without Textual: imported in a fresh process it
loads neither Textual nor torch, and its decisions are plain functions checked here without an app."""

from __future__ import annotations

import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from core.attacks.config import AttackConfig
from core.results import SliceResult
from segadv_tui.catalog import Catalog, CheckpointEntry, DeltaEntry, LoadedCheckpoint
from segadv_tui.frames import Curve, Frame
from segadv_tui.state import ExplorerOptions, ExplorerState, cycle_next


def _loaded_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_the_state_catalog_and_frames_import_without_textual_or_torch():
    loaded = _loaded_after_import("import segadv_tui.state, segadv_tui.catalog, segadv_tui.frames")
    assert not {"textual", "torch"} & loaded


def test_the_messages_take_the_catalog_types_from_the_catalog_not_from_a_widget():
    loaded = _loaded_after_import("import segadv_tui.messages")
    assert not {name for name in loaded if name.startswith("segadv_tui.widgets")}


def _checkpoint(name: str, img_size: int = 128) -> CheckpointEntry:
    return CheckpointEntry(Path(f"/ckpt/{name}.safetensors"), {"img_size": img_size, "model": "unet"})


def _state(**options) -> ExplorerState:
    state = ExplorerState(ExplorerOptions(**options))
    big = _checkpoint("big", 256)
    state.catalog = Catalog(
        [_checkpoint("demo_small"), _checkpoint("other"), big, CheckpointEntry(Path("/x.pt"), None, "bad")],
        [
            DeltaEntry(Path("/d/erase.safetensors"), 0.03, ("stomach",), 128, None),
            DeltaEntry(Path("/d/big.safetensors"), 0.02, ("stomach",), 256, None),
        ],
    )
    return state


def test_opening_checkpoint_scoring_choices_and_deltas_follow_the_attacked_model():
    state = _state()
    assert state.opening_checkpoint().path.stem == "demo_small"  # the bundled demo without --checkpoint
    assert _state(checkpoint=Path("/ckpt/other.safetensors")).opening_checkpoint().path.stem == "other"
    demo, other, big, _ = state.catalog.checkpoints
    state.attacked = LoadedCheckpoint(demo, model=None, meta=demo.meta)
    assert state.size_problem(big) == "it takes 256 px slices and demo_small 128 px"
    assert state.scoring_choices() == [None, other]  # not itself, not a 256 px model, not an unreadable file
    assert [d.path.stem for d in state.fitting_deltas()] == ["erase"]
    universal = state.with_next_delta()
    assert (universal.method, universal.delta) == ("universal", "/d/erase.safetensors")
    assert state.completed(AttackConfig(method="universal")).eps == 0.03  # a new delta starts at its own bound


def test_eps_steps_summary_and_export_names():
    state = _state()
    assert state.stepped_eps(1).eps == pytest.approx(0.010)
    assert state.stepped_eps(-1, "coarse").eps == pytest.approx(0.004)
    assert state.summary() == "[b]eps 0.009 · FGSM (textbook) · bce loss, target gt[/b] · no slice · no checkpoint"
    assert state.summary("CPU").endswith(" · CPU")
    assert cycle_next(["a", "b", "c"], "c") == "a" and cycle_next(["a", "b"], None) == "a"
    assert state.table_ii_stem(AttackConfig(eps=0.012)) == "table_ii_fgsm_eps0.012"
    assert state.has_truth and not ExplorerState(ExplorerOptions(image=Path("x.png"))).has_truth
    assert ExplorerState(ExplorerOptions(image=Path("x.png"))).attack.target == "pred"


def test_a_curve_belongs_to_a_frame_of_the_same_slice_loss_target_mode_and_scoring_model():
    curve = Curve("ckpt", "s1", "bce", "gt", "textbook", (0.0,), (1.0,))
    result = SliceResult("s1", 0.009, np.ones(3), np.zeros(3), linf=0.009, l2=0.1)
    frame = Frame(1, "ckpt", AttackConfig(method="bim"), result, seconds=0.1)
    assert ExplorerState.curve_matches(curve, frame)  # a BIM frame's curve is FGSM's
    assert not ExplorerState.curve_matches(curve, replace(frame, scored_on="other"))
    assert not ExplorerState.curve_matches(curve, replace(frame, config=AttackConfig(loss="focal")))
    state = _state()
    assert state.figure_name(frame) == "s1_model_bim_bce_eps0.009.png"
    assert state.scores_stem(replace(frame, scored_on="/ckpt/other.safetensors")) == "s1_bim_on_other_eps0.009_scores"
