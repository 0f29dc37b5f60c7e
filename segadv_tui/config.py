"""The explorer's settings file: ``$XDG_CONFIG_HOME/segadv/config.toml`` (``~/.config/segadv/config.toml``
without it; ``SEGADV_CONFIG`` names another file), read with tomllib.

Every key, its default and what it does are in :data:`KEYS`; :func:`documentation` writes them out as a
commented file (``segadv config show`` prints it, ``segadv config edit`` starts a new file with it). A file
that is not TOML leaves every key at its default; a key that is unknown or has a bad value leaves that
key at its default; either way one line names the file and the key (a notification in the explorer, a
line on stderr from the commands). Command-line options win over the file.

The explorer writes one key back: ``theme``, when a theme is picked in the palette (:func:`save_theme`).
It edits that one line, so comments and the other keys stay as the user wrote them, and it refuses
(saying why) rather than rewrite a file whose ``theme`` it cannot replace faithfully.

No Textual and no torch at import: the launcher reads the file before the app starts.
"""

from __future__ import annotations

import os
import re
import textwrap
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from segadv_tui.render.graphics import GRAPHICS  # light: no Textual

try:
    import tomllib
except ModuleNotFoundError:  # Python 3.10
    import tomli as tomllib  # type: ignore[no-redef]

CONFIG_ENV = "SEGADV_CONFIG"
VIEWS = ("overlay", "difference", "grid", "focus")  # segadv_tui.widgets.images.VIEWS, without importing Textual
MODIFIERS = ("ctrl", "shift", "alt", "meta", "super", "hyper")


class BadValue(ValueError):
    """A key's value the explorer cannot use; the message says why (without the key or the file)."""


def config_path(environ: Mapping[str, str] = os.environ) -> Path:
    """The settings file: $SEGADV_CONFIG, else $XDG_CONFIG_HOME/segadv/config.toml, else
    ~/.config/segadv/config.toml."""
    if environ.get(CONFIG_ENV):
        return Path(environ[CONFIG_ENV]).expanduser()
    base = environ.get("XDG_CONFIG_HOME") or ""
    # The XDG rule: a relative XDG_CONFIG_HOME is invalid and ignored.
    folder = Path(base) if base and Path(base).is_absolute() else Path.home() / ".config"
    return folder / "segadv" / "config.toml"


# -- checking each key's value -----------------------------------------------------------------------------


def _key_problem(key: str) -> str | None:
    """Why ``key`` (Textual's spelling: "n", "ctrl+n", "plus", "f5", "+") is not a key (None: it is one)."""
    from textual.keys import REPLACED_KEYS, Keys, key_to_character

    key = key.strip()
    *modifiers, base = [key] if key == "+" else key.split("+")
    if any(modifier not in MODIFIERS for modifier in modifiers):
        return f"{key!r} has a modifier that is not one of {', '.join(MODIFIERS)}"
    if len(base) == 1 or base in REPLACED_KEYS or base in {k.value for k in Keys} or key_to_character(base):
        return None
    return f"{key!r} is not a key Textual knows (examples: n, ctrl+n, f5, plus, escape)"


def keymap_bindings() -> list:
    """Every binding a keymap can rebind (Textual's ``Binding``, by its id): the explorer's keys and the
    app's, then the Table II screen's and the help's own."""
    from segadv_tui.keys import EXPLORER_KEYS
    from segadv_tui.screens.help import HelpScreen
    from segadv_tui.screens.table_ii import TableIIScreen

    return [binding for binding in [*EXPLORER_KEYS, *TableIIScreen.BINDINGS, *HelpScreen.BINDINGS] if binding.id]


def binding_ids() -> list[str]:
    return [binding.id for binding in keymap_bindings()]


def _keymap(value: Any, problems: list[str]) -> dict[str, str]:
    if not isinstance(value, dict):
        raise BadValue('must be a table of binding id = "keys" (ids: segadv config show)')
    known, keymap = binding_ids(), {}
    for binding_id, keys in value.items():
        if binding_id not in known:
            problems.append(f"keymap.{binding_id}: no key has this id (the ids: {', '.join(known)})")
            continue
        if not isinstance(keys, str) or not keys.strip():
            problems.append(f'keymap.{binding_id}: must be a string of keys, comma-separated ("n", "n,ctrl+up")')
            continue
        bad = [problem for key in keys.split(",") if (problem := _key_problem(key))]
        if bad:
            problems.append(f"keymap.{binding_id}: {bad[0]}")
            continue
        keymap[binding_id] = ",".join(key.strip() for key in keys.split(","))
    return keymap


def _theme(value: Any, problems: list[str]) -> str:
    from textual.theme import BUILTIN_THEMES

    if not isinstance(value, str) or value not in BUILTIN_THEMES:
        raise BadValue(f"must be one of {', '.join(BUILTIN_THEMES)}, not {value!r}")
    return value


def _choice(choices: tuple[str, ...]) -> Callable[[Any, list[str]], str]:
    def check(value: Any, problems: list[str]) -> str:
        if value not in choices:
            raise BadValue(f"must be one of {', '.join(choices)}, not {value!r}")
        return value

    return check


def _folder(value: Any, base: Path) -> Path:
    if not isinstance(value, str) or not value:
        raise BadValue(f"must be a folder's path as a string, not {value!r}")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else base / path
    if not path.is_dir():
        raise BadValue(f"{value}: no such folder")
    return path


def _checkpoint_dirs(value: Any, problems: list[str], base: Path) -> list[Path]:
    if not isinstance(value, list):
        raise BadValue(f'must be a list of folders (["~/runs"]), not {value!r}')
    return [_folder(item, base) for item in value]


def _data(value: Any, problems: list[str], base: Path) -> Path:
    path = _folder(value, base)
    if not (path / "train.csv").is_file():
        raise BadValue(f"{value}: no train.csv there (expected the Kaggle layout: train.csv and train/)")
    return path


def _whole(low: int, high: int) -> Callable[[Any, list[str]], int]:
    def check(value: Any, problems: list[str]) -> int:
        if not (isinstance(value, int) and not isinstance(value, bool) and low <= value <= high):
            raise BadValue(f"must be a whole number from {low} to {high}, not {value!r}")
        return value

    return check


def _number(low: float, high: float, *, closed: bool) -> Callable[[Any, list[str]], float]:
    def check(value: Any, problems: list[str]) -> float:
        inside = isinstance(value, (int, float)) and not isinstance(value, bool)
        inside = inside and (low < value <= high if closed else low < value < high)
        if not inside:
            bounds = f"in ({low:g}, {high:g}]" if closed else f"between {low:g} and {high:g}"
            raise BadValue(f"must be a number {bounds}, not {value!r}")
        return float(value)

    return check


@dataclass(frozen=True)
class Key:
    """One setting: its name, its default, how it is written in TOML (an example), what it does, and the check
    that turns a value read from the file into the one used (raising BadValue)."""

    name: str
    default: Any
    example: str
    help: str
    check: Callable[..., Any]
    relative: bool = False  # its check takes the config file's folder (paths relative to it)


KEYS = (
    Key(
        "keymap",
        {},
        '{ "eps.up" = "n", "eps.down" = "N" }',
        "Keys for the explorer's actions, by binding id (`segadv config show` lists the ids); comma-separated "
        "keys in Textual's names (n, ctrl+n, f5, plus). A key given here replaces the action's default keys, "
        "in every screen, the footer and the help.",
        _keymap,
    ),
    Key(
        "theme",
        None,
        '"nord"',
        "The colour theme (Textual's built-in themes; default: textual-dark). Saved here when you pick one in "
        "the command palette (ctrl+p, Theme).",
        _theme,
    ),
    Key(
        "graphics",
        "auto",
        '"auto"',
        "Picture renderer: auto | halfblock | kitty | sixel (--graphics wins). auto: kitty or sixel where the "
        "terminal answers for them (inside tmux too, through its passthrough), half-blocks elsewhere.",
        _choice(GRAPHICS),
    ),
    Key(
        "default_view",
        "overlay",
        '"overlay"',
        "The pictures' view at start: overlay | difference | grid | focus.",
        _choice(VIEWS),
    ),
    Key(
        "checkpoint_dirs",
        [],
        '["~/segadv/runs"]',
        "Folders scanned for checkpoints besides the bundled ones (--checkpoints wins); a relative path is "
        "relative to this file's folder.",
        _checkpoint_dirs,
        relative=True,
    ),
    Key(
        "data",
        None,
        '"~/data/uw-madison-gi-tract"',
        "The data folder opened when neither --data nor --image is given (a Kaggle root: train.csv and "
        "train/); default: the built-in demo.",
        _data,
        relative=True,
    ),
    Key(
        "eps_step",
        0.001,
        "0.001",
        "Epsilon per + / - press (] and [ step five times as far); a number in (0, 0.1].",
        _number(0.0, 0.1, closed=True),
    ),
    Key(
        "split",
        0.1,
        "0.1",
        "The fraction of cases in the test split (by case, seed 0) that Table II scores and the opening "
        "slice comes from; between 0 and 1.",
        _number(0.0, 1.0, closed=False),
    ),
    Key(
        "certify_samples",
        100,
        "100",
        "Noise samples n of the explorer's Certify command (C): n + 16 forward passes a slice (segadv certify "
        "--n); a whole number from 1 to 100000.",
        _whole(1, 100_000),
    ),
    Key(
        "certify_sigma",
        0.25,
        "0.25",
        "Randomized smoothing's noise sigma for the Certify command (segadv certify --sigma); in (0, 1].",
        _number(0.0, 1.0, closed=True),
    ),
)
KEYS_BY_NAME = {key.name: key for key in KEYS}


def documentation() -> str:
    """Every key with its default and what it does, as a commented TOML file (each key commented out)."""
    lines = [
        "# segadv-tui settings (TOML). Every key is optional; remove the # to set one.",
        "# Command-line options win over this file. `segadv config show` prints the values in effect.",
        "",
    ]
    for key in KEYS:
        lines += [f"# {line}" for line in textwrap.wrap(key.help, 100)]
        default = "(none)" if key.default in (None, [], {}) else _toml_value(key.default)
        lines += [f"# default: {default}", f"# {key.name} = {key.example}", ""]
    return "\n".join(lines)


# -- reading -------------------------------------------------------------------------------------------------


@dataclass
class Settings:
    """The settings in effect: each key's value, where it came from ("default", the file, or an option),
    the file they were read from and the problems found in it (one line each, naming the file and the key)."""

    path: Path | None = None
    values: dict[str, Any] = field(default_factory=lambda: {key.name: _fresh(key.default) for key in KEYS})
    sources: dict[str, str] = field(default_factory=lambda: {key.name: "default" for key in KEYS})
    problems: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Any:
        return self.values[name]

    def override(self, name: str, value: Any, source: str) -> None:
        """``value`` wins over the file's (a command-line option: ``source`` names it)."""
        self.values[name] = value
        self.sources[name] = source


def _fresh(default: Any) -> Any:
    return type(default)(default) if isinstance(default, (list, dict)) else default


def load_settings(path: Path | None = None) -> Settings:
    """The settings from ``path`` (default: :func:`config_path`); no file: every default, no problem."""
    path = config_path() if path is None else Path(path)
    settings = Settings(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return settings
    except (OSError, UnicodeDecodeError) as exc:
        settings.problems.append(f"{path}: cannot read it ({_reason(exc)}); using the defaults")
        return settings
    try:
        table = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        settings.problems.append(f"{path}: not valid TOML ({exc}); using the defaults")
        return settings
    for name, value in table.items():
        key = KEYS_BY_NAME.get(name)
        if key is None:
            settings.problems.append(f"{path}: {name}: no such key (the keys: {', '.join(KEYS_BY_NAME)})")
            continue
        found: list[str] = []
        try:
            used = key.check(value, found, path.parent) if key.relative else key.check(value, found)
        except BadValue as exc:
            settings.problems.append(f"{path}: {name}: {exc}; using the default")
            continue
        settings.problems += [f"{path}: {problem}; ignored" for problem in found]
        settings.values[name] = used
        settings.sources[name] = str(path)
    return settings


def _reason(exc: BaseException) -> str:
    return getattr(exc, "strerror", None) or str(exc)


# -- writing the theme back ----------------------------------------------------------------------------------

_BARE_KEY = re.compile(r"[A-Za-z0-9_-]+")
# theme = "name" (a basic or literal string), with an optional comment after it: the one form rewritten.
_THEME_LINE = re.compile(r"""^(?P<lead>\s*theme\s*=\s*)(?P<value>"[^"\\\n]*"|'[^'\n]*')(?P<tail>\s*(#.*)?)$""")


class CannotSave(Exception):
    """The theme was not saved; the message says why and what to do."""


def save_theme(path: Path, theme: str) -> Path:
    """Write ``theme = "theme"`` into the settings file at ``path`` (made with its folder if absent), changing
    only that line: comments and the other keys stay. Atomic (core.files). Raises CannotSave where the file
    cannot be read as TOML or its theme cannot be rewritten faithfully (it is left as it was)."""
    from core.files import write_text

    if not _BARE_KEY.fullmatch(theme):
        raise CannotSave(f"{theme!r} is not a theme name segadv writes")
    line = f'theme = "{theme}"'
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        text = None
    except (OSError, UnicodeDecodeError) as exc:
        raise CannotSave(f"cannot read {path} ({_reason(exc)})") from None
    if text is None:
        new = f"{line}\n"
        before: dict[str, Any] = {}
    else:
        try:
            before = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise CannotSave(f"{path} is not valid TOML ({exc}): fix it, or set {line} there yourself") from None
        new = _with_theme(text, line)
    if new is None or _parsed(new) != {**before, "theme": theme}:
        raise CannotSave(f"cannot rewrite the theme in {path} without changing more than it: set {line} there yourself")
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_text(path, new)


def _parsed(text: str) -> dict[str, Any] | None:
    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError:
        return None


def _with_theme(text: str, line: str) -> str | None:
    """``text`` with its top-level theme line replaced by ``line`` (or ``line`` added before the first table);
    None where the theme is written in a form this does not rewrite (a multi-line string, a dotted key)."""
    lines = text.splitlines(keepends=True)
    first_table = next((i for i, row in enumerate(lines) if row.lstrip().startswith("[")), len(lines))
    for i, row in enumerate(lines[:first_table]):
        match = _THEME_LINE.match(row.rstrip("\r\n"))
        if match:
            ending = row[len(row.rstrip("\r\n")) :]
            lines[i] = f"{match['lead']}{line.split('= ', 1)[1]}{match['tail']}{ending}"
            return "".join(lines)
        if re.match(r"\s*[\"']?theme[\"']?\s*[=.]", row):
            return None
    if lines[:first_table] and not lines[first_table - 1].endswith("\n"):
        lines[first_table - 1] += "\n"
    lines.insert(first_table, line + "\n")
    return "".join(lines)


def _toml_value(value: Any) -> str:
    """A value as TOML writes it (strings, numbers, lists and tables of them; for the documentation)."""
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, Path):
        return _toml_value(str(value))
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(item) for item in value) + "]"
    if isinstance(value, dict):
        items = (f"{_toml_key(k)} = {_toml_value(v)}" for k, v in value.items())
        return "{ " + ", ".join(items) + " }" if value else "{}"
    raise TypeError(f"no TOML form for {value!r}")


def _toml_key(key: str) -> str:
    return key if _BARE_KEY.fullmatch(key) else _toml_value(key)


def show_value(value: Any) -> str:
    """A setting's value for ``segadv config show``: as it would be written in the file."""
    return "(none)" if value is None else _toml_value(value)
