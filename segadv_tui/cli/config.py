"""``segadv config path | show | edit``: the explorer's settings file (``segadv_tui.config``)."""

from __future__ import annotations

import os
import shlex
import subprocess
import textwrap

import typer

from segadv_tui.cli import app, console, err_console, fail

config_app = typer.Typer(
    help="The explorer's settings file (keys, theme, renderer, default view, folders, eps step, split).",
    no_args_is_help=True,
)
app.add_typer(config_app, name="config")


@config_app.command()
def path() -> None:
    """Print the settings file's path ($SEGADV_CONFIG, else $XDG_CONFIG_HOME/segadv/config.toml)."""
    from segadv_tui.config import config_path

    console.print(str(config_path()), highlight=False, soft_wrap=True)


@config_app.command()
def show() -> None:
    """Print every key: its value in effect and where it came from, its default and what it does; then
    the binding ids a keymap can use. A problem in the file is one line on stderr each, and exit status 2."""
    from segadv_tui.config import KEYS, documentation, keymap_bindings, load_settings, show_value

    settings = load_settings()
    exists = settings.path.is_file()
    lines = [
        f"# settings file: {settings.path}" + ("" if exists else " (not there: every key at its default)"),
        *documentation().splitlines()[:2],
        "",
    ]
    for key in KEYS:
        lines += [f"# {line}" for line in textwrap.wrap(key.help, 100)]
        lines.append(f"# default: {show_value(key.default or None)}; from: {settings.sources[key.name]}")
        value = settings[key.name]
        lines += [f"{key.name} = {show_value(value)}" if value is not None else f"# {key.name}: not set", ""]
    lines.append("# binding ids for keymap (default keys):")
    lines += [
        f"#   {binding.id:<20} {binding.key:<28} {binding.tooltip or binding.description}"
        for binding in keymap_bindings()
    ]
    console.print("\n".join(lines), highlight=False, markup=False, soft_wrap=True)
    for problem in settings.problems:
        err_console.print(f"warning: {problem}", highlight=False, markup=False, soft_wrap=True)
    if settings.problems:
        raise typer.Exit(2)


@config_app.command()
def edit() -> None:
    """Open the settings file in $VISUAL or $EDITOR (vi without either); a new file starts as the documented
    template. Checked when the editor exits: a problem is one line on stderr each, and exit status 2."""
    from core.files import write_text
    from segadv_tui.config import config_path, documentation, load_settings

    target = config_path()
    if not target.exists():
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            write_text(target, documentation())
        except OSError as exc:  # core.files' WriteError too: it names the file
            fail(f"cannot write {target}: {exc.strerror or exc}")
    editor = os.environ.get("VISUAL") or os.environ.get("EDITOR") or "vi"
    try:
        finished = subprocess.run([*shlex.split(editor), str(target)])
    except OSError as exc:
        fail(f"cannot start the editor {editor!r} (from $VISUAL / $EDITOR): {exc.strerror or exc}")
    if finished.returncode != 0:
        fail(f"the editor {editor!r} exited with status {finished.returncode}; {target} is as it left it")
    settings = load_settings(target)
    for problem in settings.problems:
        err_console.print(f"warning: {problem}", highlight=False, markup=False, soft_wrap=True)
    if settings.problems:
        raise typer.Exit(2)
    console.print(f"{target}: every key is good", highlight=False, markup=False, soft_wrap=True)
