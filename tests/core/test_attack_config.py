"""The one attack configuration and the attack registry: validation, method switching, labels, and the
front ends reading the registry (no torch needed for any of it)."""

from __future__ import annotations

import subprocess
import sys

import pytest

from core.attacks.config import METHOD_LIST, METHODS, AttackConfig, clamp_eps
from core.errors import OptionError, SegadvError


def test_every_registry_entry_names_a_real_runner_and_valid_defaults():
    assert [m.name for m in METHOD_LIST] == [
        "fgsm",
        "bim",
        "pgd",
        "apgd",
        "ensemble",
        "square",
        "erase",
        "universal",
        "corrupt",
    ]
    for method in METHOD_LIST:
        assert callable(method.function())
        config = AttackConfig.for_method(method.name)
        assert config.method == method.name
        for field, default in method.parameters.items():
            assert getattr(config, field) == (tuple(default) if isinstance(default, tuple) else default)


def test_switching_method_drops_what_only_the_old_one_read():
    paper = AttackConfig(mode="paper", loss="dice")
    bim = paper.replace(method="bim")
    assert (bim.mode, bim.loss) == ("textbook", "dice")  # the FGSM formula stays behind, the loss comes along
    erase = bim.replace(method="erase")
    assert erase.organs == ("stomach",) and erase.steps == bim.steps
    assert erase.replace(method="fgsm").organs == ()
    # What only the new method reads starts at that method's default, not at a value FGSM ignored.
    assert AttackConfig(steps=7).replace(method="pgd").steps == METHODS["pgd"].parameters["steps"]
    assert AttackConfig(steps=7).replace(method="pgd", steps=3).steps == 3


@pytest.mark.parametrize(
    ("values", "named"),
    [
        ({"method": "cw"}, "'cw'"),
        ({"loss": "hinge"}, "'hinge'"),
        ({"eps": 1.5}, "1.5"),
        ({"eps": "x"}, "'x'"),
        ({"steps": 0}, "steps"),
        ({"steps": 2.5}, "2.5"),
        ({"step_size": -1.0}, "-1"),
        ({"method": "erase", "organs": "liver"}, "'liver'"),
        ({"method": "erase", "organs": ()}, "organ"),
        ({"method": "pgd", "mode": "paper"}, "paper"),
        ({"precision": "fp8"}, "'fp8'"),
        ({"target": "x"}, "'x'"),
    ],
)
def test_bad_values_are_user_errors_naming_the_value(values, named):
    with pytest.raises(OptionError, match=named) as caught:
        AttackConfig(**values)
    assert isinstance(caught.value, SegadvError)


def test_organs_accept_a_comma_list_in_any_order_and_case():
    assert AttackConfig(method="erase", organs="Stomach, large_bowel").organs == ("large_bowel", "stomach")


def test_labels_name_the_method_once():
    assert AttackConfig().method_label == "FGSM (textbook)"
    assert AttackConfig(method="pgd", steps=20).method_label == "PGD (20 steps)"
    erase = AttackConfig(method="erase", organs=("stomach", "small_bowel"))
    assert erase.method_label == "Erase small_bowel+stomach (10 steps)"
    assert erase.label == "eps 0.009 · Erase small_bowel+stomach (10 steps) · organ logits to 0"
    assert AttackConfig(eps=0.0123456789).with_eps(0.1 + 0.001 * 3).eps == 0.103 == clamp_eps(0.10300000001)
    assert AttackConfig().with_eps(-1).eps == 0 and AttackConfig().with_eps(7).eps == 1


def test_to_dict_is_json_ready_and_round_trips():
    import json

    config = AttackConfig(method="erase", organs=("stomach",), eps=0.02)
    data = json.loads(json.dumps(config.to_dict()))
    data.pop("method_label")
    assert AttackConfig(**data) == config


def test_the_front_ends_read_the_registry_without_torch():
    code = (
        "import sys; import core.attacks.config, segadv_tui.widgets.attack as w, segadv_tui.palette;"
        "print([v for _, v in w.CHOICES['method']]); print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split("\n")
    assert out[0] == str(list(METHODS)) and out[1] == "False"
