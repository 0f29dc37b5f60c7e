"""The compute core stays free of the front ends and has no import cycle, and the CLI starts without
loading torch. Every core module is checked, found by walking the package, not from a list."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

CORE = Path(__file__).resolve().parents[2] / "core"


def _loaded_after_import(statement: str) -> set[str]:
    code = f"import sys; {statement}; print(' '.join(sorted(sys.modules)))"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return set(out.stdout.split())


def test_core_does_not_import_textual_or_rich():
    code = (
        "import pkgutil, core; names = [m.name for m in pkgutil.walk_packages(core.__path__, 'core.')]; "
        "[__import__(n) for n in names]"
    )
    loaded = _loaded_after_import(code)
    assert "core.attacks.iterative" in loaded and "core.evaluation.scoring" in loaded  # the walk found them
    assert not {"textual", "rich", "typer"} & loaded


def _core_modules() -> dict[str, Path]:
    modules = {}
    for path in sorted(CORE.rglob("*.py")):
        parts = list(path.relative_to(CORE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        modules[".".join(parts)] = path
    return modules


def _import_graph() -> tuple[dict[str, set[str]], list[tuple[str, str]]]:
    """core's imports as module -> imported core modules (function-local imports too), and the private
    names (``_x``) one module imports from another."""
    modules = _core_modules()
    graph: dict[str, set[str]] = {name: set() for name in modules}
    private = []
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.ImportFrom) and not node.level and (node.module or "").split(".")[0] == "core":
                for alias in node.names:
                    full = f"{node.module}.{alias.name}"
                    if full in modules:
                        graph[name].add(full)
                    else:
                        graph[name].add(node.module)
                        if alias.name.startswith("_"):
                            private.append((name, full))
            elif isinstance(node, ast.Import):
                graph[name] |= {a.name for a in node.names if a.name.split(".")[0] == "core"}
        graph[name] = {target for target in graph[name] if target in modules and target != name}
    return graph, private


def test_core_has_no_import_cycle_and_no_private_import():
    graph, private = _import_graph()
    cycles = []
    state: dict[str, str] = {}

    def visit(name: str, path: list[str]) -> None:
        state[name] = "open"
        for target in sorted(graph[name]):
            if state.get(target) == "open":
                cycles.append(" -> ".join(path[path.index(target) :] + [target]))
            elif target not in state:
                visit(target, path + [target])
        state[name] = "done"

    for name in sorted(graph):
        if name not in state:
            visit(name, [name])
    assert cycles == []
    assert private == []
    assert len(graph) > 30  # the walk saw the subpackages


def test_cli_help_does_not_import_torch():
    loaded = _loaded_after_import("import segadv_tui.cli as c; c._register_commands()")
    assert "torch" not in loaded


def test_monai_loads_only_for_the_losses_and_metrics_that_need_it():
    """MONAI takes seconds to import: BCE and DSC (the explorer's first frame) do without it."""
    code = (
        "import sys, torch; from core.losses import per_image_loss; from core.metrics import dice_per_organ; "
        "import core.attacks.fast_gradient, core.attacks.iterative, core.evaluation.scoring, segadv_tui.attacker; "
        "x = torch.zeros(1, 3, 4, 4); per_image_loss('bce', x, x); dice_per_organ(x > 0, x > 0); "
        "print('monai' in sys.modules); per_image_loss('focal', x, x); print('monai' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False", "True"]


def test_the_writer_and_the_bug_report_do_not_import_torch():
    # The explorer writes exports and bug reports from its UI thread, before torch may have loaded.
    loaded = _loaded_after_import("import core.files, core.paths, segadv_tui.bug_report")
    assert not {"torch", "textual"} & loaded
