"""The explorer's decisions for the threat models beyond L-inf (segadv_tui.state) and its layout by terminal
size (segadv_tui.layout), without Textual or an app: the eps keys under the corrupt method and L2, the
cycling keys, the Epsilon field, which of + / - is bound, and the CSS classes per size."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

from core.attacks.config import MAX_L2_EPS, AttackConfig
from core.names import CORRUPTION_NAMES, NORMS
from segadv_tui.catalog import CheckpointEntry, LoadedCheckpoint
from segadv_tui.layout import layout_classes
from segadv_tui.state import ExplorerOptions, ExplorerState, corruption_name


def _state(img_size: int = 128, **options) -> ExplorerState:
    state = ExplorerState(ExplorerOptions(**options))
    entry = CheckpointEntry(Path("/ckpt/demo.safetensors"), {"img_size": img_size, "model": "unet"})
    state.attacked = LoadedCheckpoint(entry, model=None, meta=entry.meta)
    return state


def test_layout_and_workers_import_without_textual_or_torch():
    code = "import sys, segadv_tui.layout, segadv_tui.workers; print(' '.join(sorted(sys.modules)))"
    loaded = set(
        subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    )
    assert not {"textual", "torch"} & loaded


def test_eps_keys_step_the_severity_of_the_corrupt_method_within_1_to_5():
    state = _state()
    state.attack = state.attack.replace(method="corrupt")
    assert state.attack.severity == 1 and state.stepped_eps(-1).severity == 1
    state.attack = state.stepped_eps(1)
    assert (state.attack.severity, state.attack.eps) == (2, 0.009)  # eps untouched: the method ignores it
    assert state.stepped_eps(1, "coarse").severity == 5 and state.stepped_eps(-1, "coarse").severity == 1
    assert state.key_applies("step_severity", (1,)) and not state.key_applies("step_eps", (1,))
    assert not state.key_applies("eps_zero", ()) and state.key_applies("step_eps", (1, "coarse"))
    assert "severity 2" in state.summary()
    state.attack = state.attack.replace(method="fgsm")
    assert not state.key_applies("step_severity", (1,)) and state.key_applies("step_eps", (1,))


def test_l2_eps_is_scaled_by_the_slice_side_both_ways():
    state = _state(img_size=128)
    state.attack = state.with_norm("l2")
    assert state.attack.norm == "l2" and state.attack.eps == pytest.approx(0.009 * 128)
    assert state.eps_scale == 128 and state.curve_eps == pytest.approx(0.009)
    # the perturbation picture of an L2 frame is scaled per pixel, not by the slice's norm
    assert state.pixel_eps(AttackConfig(norm="l2", eps=1.28)) == pytest.approx(0.01)
    assert state.pixel_eps(AttackConfig(eps=0.02)) == 0.02
    assert state.stepped_eps(1).eps == pytest.approx(0.010 * 128)
    assert state.stepped_eps(-1, "coarse").eps == pytest.approx(0.004 * 128)
    state.attack = state.with_norm("linf")
    assert state.attack.eps == pytest.approx(0.009)


def test_cycling_keys_refuse_what_does_not_apply():
    state = _state()
    state.attack = state.attack.replace(method="square")  # an L-inf attack only
    assert "L-inf attack" in state.cycled("norm", NORMS)
    state.attack = state.attack.replace(method="fgsm")
    assert state.cycled("norm", NORMS).norm == "l2"
    corrupt = state.cycled("corruption", CORRUPTION_NAMES)  # another method: switch to corrupt
    assert (corrupt.method, corrupt.corruption) == ("corrupt", "noise")
    state.attack = corrupt
    assert state.cycled("corruption", CORRUPTION_NAMES).corruption == "bias"
    assert "own objective" in state.cycled("loss", ["bce", "dice"])
    assert ExplorerState(ExplorerOptions(image=Path("x.png"))).cycled("target", ["gt", "pred"]).startswith("A lone")


def test_the_epsilon_field_reads_eps_l2_eps_or_the_severity():
    state = _state()
    assert state.typed_eps("0.02")[0].eps == 0.02
    attack, warning = state.typed_eps("3")
    assert attack.eps == 1.0 and "outside [0, 1]" in warning
    assert state.typed_eps("abc") == (None, "Epsilon must be a number in [0, 1], not 'abc'.")
    state.attack = state.with_norm("l2")
    assert state.typed_eps("3")[0].eps == 3.0 and state.typed_eps("3")[1] is None
    assert f"[0, {MAX_L2_EPS:g}]" in state.typed_eps("1e9")[1]
    state.attack = AttackConfig(method="corrupt")
    assert state.typed_eps("4")[0].severity == 4
    assert state.typed_eps("6") == (None, "Severity must be from 1 to 5, not 6.")
    assert state.typed_eps("x")[0] is None


def test_export_names_of_a_corruption_name_the_artefact_not_eps():
    assert corruption_name(AttackConfig(method="corrupt", corruption="blur", severity=3)) == "corrupt-blur-s3"


@pytest.mark.parametrize(
    "size, forced, focus, focus_sidebar, classes",
    [
        ((160, 48), None, False, False, {"-wide", "-compact"}),
        ((80, 24), None, False, False, {"-narrow", "-short", "-compact", "-tiny", "-no-sidebar"}),
        ((200, 60), None, False, False, {"-wide"}),
        ((149, 60), None, False, False, set()),
        ((80, 60), True, False, False, {"-narrow"}),  # b showed the sidebar on a narrow terminal
        ((200, 60), None, True, False, {"-wide", "-no-sidebar"}),  # Focus hides it until b
        ((200, 60), False, True, True, {"-wide"}),
    ],
)
def test_layout_classes_by_terminal_size(size, forced, focus, focus_sidebar, classes):
    got = layout_classes(*size, sidebar_forced=forced, focus_view=focus, focus_sidebar=focus_sidebar)
    assert {name for name, present in got.items() if present} == classes


def test_certify_settings_are_read_and_a_bad_one_is_named(tmp_path):
    from segadv_tui.config import load_settings

    path = tmp_path / "config.toml"
    path.write_text("certify_samples = 300\ncertify_sigma = 0.5\n")
    settings = load_settings(path)
    assert (settings["certify_samples"], settings["certify_sigma"], settings.problems) == (300, 0.5, [])
    path.write_text("certify_samples = 2.5\n")
    settings = load_settings(path)
    assert settings["certify_samples"] == 100  # the default kept
    (problem,) = settings.problems
    assert str(path) in problem and "certify_samples" in problem and "2.5" in problem


def test_certify_needs_enough_samples_for_the_corrected_test():
    from types import SimpleNamespace

    from core.labels import UW_MADISON

    state = _state(img_size=128, certify_samples=10)
    state.dataset = SimpleNamespace(labels=UW_MADISON)  # what the data's label set decides: 3 tests a pixel
    config, problem = state.certify_config()
    assert config is None and "certify_samples" in problem and "fewer than" in problem
    state.options.certify_samples = 100
    config, problem = state.certify_config()
    assert problem is None and (config.n, config.sigma, config.forward_passes) == (100, 0.25, 116)
