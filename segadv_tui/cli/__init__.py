"""The ``segadv`` command line: a Typer app; each module of this package registers its subcommands on ``app``.

Command modules import torch and the heavy parts of ``core`` inside the command functions, so that
``segadv --help`` stays fast.
"""

from __future__ import annotations

import sys

import typer
from rich.console import Console
from typer.exceptions import TyperException

app = typer.Typer(
    name="segadv",
    help="Adversarial attacks on medical image segmentation models (UW-Madison GI Tract, U-Net family).",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

console = Console()
err_console = Console(stderr=True)


class UserError(Exception):
    """Bad input from the user: reported as one clear line and exit status 2, never a traceback."""


def fail(message: str, code: int = 2) -> None:
    """Print ``message`` as a one-line error and exit with ``code``."""
    err_console.print(f"[bold red]error:[/] {message}", highlight=False, soft_wrap=True)
    raise typer.Exit(code)


def _register_commands() -> None:
    # Each import registers its commands on ``app`` (decorators run at import time).
    from segadv_tui.cli import (  # noqa: F401
        # -- command modules: keep one import per line, alphabetical --
        attack,
        demo_data,
        models,
        robust,
        train,
    )


def main() -> None:
    _register_commands()
    try:
        # Not standalone: usage errors come back to us and are shown as one line, not a box.
        code = app(standalone_mode=False)
    except TyperException as exc:  # usage errors: unknown command, bad option value
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        err_console.print(f"[bold red]error:[/] {exc.format_message()}{hint}", highlight=False, soft_wrap=True)
        sys.exit(exc.exit_code or 2)
    except (UserError, FileNotFoundError, ValueError) as exc:  # the last line of defence
        err_console.print(f"[bold red]error:[/] {exc}", highlight=False, soft_wrap=True)
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    sys.exit(code if isinstance(code, int) else 0)
