"""The compute core stays free of the front ends, and the CLI starts without loading torch."""

from __future__ import annotations

import subprocess
import sys

CORE_MODULES = [
    "core.data", "core.demo", "core.files", "core.models", "core.checkpoints", "core.losses",
    "core.metrics", "core.attacks", "core.evaluation", "core.training",
]


def _loaded_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_does_not_import_textual_or_rich():
    loaded = _loaded_after_import("; ".join(f"import {m}" for m in CORE_MODULES))
    assert not {"textual", "rich", "typer"} & loaded


def test_cli_help_does_not_import_torch():
    loaded = _loaded_after_import("import segadv_tui.cli as c; c._register_commands()")
    assert "torch" not in loaded


def test_monai_loads_only_for_the_losses_and_metrics_that_need_it():
    """MONAI takes seconds to import: BCE and DSC (the explorer's first frame) do without it."""
    code = (
        "import sys, torch; from core.losses import per_image_loss; from core.metrics import dice_per_organ; "
        "import core.attacks, core.evaluation, segadv_tui.attacker; "
        "x = torch.zeros(1, 3, 4, 4); per_image_loss('bce', x, x); dice_per_organ(x > 0, x > 0); "
        "print('monai' in sys.modules); per_image_loss('focal', x, x); print('monai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_the_writer_and_the_bug_report_do_not_import_torch():
    # The explorer writes exports and bug reports from its UI thread, before torch may have loaded.
    loaded = _loaded_after_import("import core.files, core.paths, segadv_tui.bug_report")
    assert not {"torch", "textual"} & loaded
