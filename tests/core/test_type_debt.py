"""The type debt cannot grow back silently: mypy's configuration switches no error code off for a module,
reports ignores that are no longer needed, and every ``# type: ignore`` in the code names its error code."""

from __future__ import annotations

import io
import re
import sys
import tokenize
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:
    import tomli as tomllib

ROOT = Path(__file__).resolve().parents[2]
CODE_FOLDERS = ("core", "segadv_tui", "tests", "benchmarks")
# What would take a module out of mypy's hands: per-module switches and inline configuration.
SILENCING_KEYS = {"disable_error_code", "ignore_errors", "disable_error_codes"}
_BARE_IGNORE = re.compile(r"#\s*type:\s*ignore(?!\[)")
_INLINE_CONFIG = re.compile(r"#\s*mypy:")


def _pyproject() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))


def silenced_modules(mypy: dict) -> list[str]:
    """The overrides (and the top level) of ``[tool.mypy]`` that switch errors off, as "module: keys"."""
    found = []
    if SILENCING_KEYS & mypy.keys():
        found.append(f"[tool.mypy]: {', '.join(sorted(SILENCING_KEYS & mypy.keys()))}")
    for override in mypy.get("overrides", []):
        keys = SILENCING_KEYS & override.keys()
        if keys:
            found.append(f"{override.get('module')}: {', '.join(sorted(keys))}")
    return found


def bad_comments(source: str) -> list[tuple[int, str]]:
    """(line, comment) of each bare ``# type: ignore`` and each inline ``# mypy:`` setting in ``source``:
    comments only, so a string that spells one is not counted."""
    found = []
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT and (_BARE_IGNORE.search(token.string) or _INLINE_CONFIG.match(token.string)):
            found.append((token.start[0], token.string))
    return found


def test_mypy_silences_no_module():
    mypy = _pyproject()["tool"]["mypy"]
    assert silenced_modules(mypy) == []
    assert mypy.get("warn_unused_ignores") is True  # an ignore the code no longer needs is an error


def test_ruff_flags_blanket_type_ignores():
    selected = _pyproject()["tool"]["ruff"]["lint"]["select"]
    assert "PGH003" in selected or "PGH" in selected


def test_every_type_ignore_names_its_error_code():
    found = []
    for folder in CODE_FOLDERS:
        for path in sorted((ROOT / folder).rglob("*.py")):
            found += [
                f"{path.relative_to(ROOT)}:{line}: {text}" for line, text in bad_comments(path.read_text("utf-8"))
            ]
    assert found == []


def test_the_checks_see_what_they_look_for():
    # The detectors themselves, on what they must and must not report.
    source = (
        "x = f()  # type: ignore\n"
        "y = g()  # type:ignore  # why\n"
        "z = h()  # type: ignore[arg-type]\n"
        "# mypy: disable-error-code=index\n"
        "s = '# type: ignore'\n"
    )
    assert [line for line, _ in bad_comments(source)] == [1, 2, 4]
    debt = {
        "overrides": [
            {"module": "core.a", "disable_error_code": ["index"]},
            {"module": "t.*", "follow_imports": "skip"},
        ]
    }
    assert silenced_modules(debt) == ["core.a: disable_error_code"]
    assert silenced_modules({"ignore_errors": True}) == ["[tool.mypy]: ignore_errors"]
