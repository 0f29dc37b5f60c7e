"""The ``segadv`` command line: a Typer app; each module of this package registers its subcommands on ``app``.

Command modules import torch and the heavy parts of ``core`` inside the command functions, so that
``segadv --help`` stays fast.

Errors take one path, whoever runs a command (``main``, or a test's ``CliRunner``): a
``core.errors.SegadvError`` (bad input) is one line ``error: ...`` and exit status 2; any other exception
is a bug in segadv, reported in one line that names the log file holding its traceback, exit status 1.
"""

from __future__ import annotations

import os
import sys
from typing import NoReturn

import typer
from rich.console import Console
from rich.markup import escape
from typer.core import TyperGroup
from typer.exceptions import TyperException

from core.errors import SegadvError
from segadv_tui.bug_report import bug_message, one_line, write_bug_report

# Piped or redirected, Rich would wrap and truncate tables at 80 columns ("resnext101_32x…"): there is no
# screen to fit, so a table printed to a pipe or a file gets the width it needs (up to PIPE_WIDTH), unless
# COLUMNS says otherwise.
PIPE_WIDTH = 400


def _width(stream) -> int | None:
    try:
        interactive = stream.isatty()
    except (AttributeError, ValueError):
        interactive = False
    return None if interactive or os.environ.get("COLUMNS") else PIPE_WIDTH


console = Console(width=_width(sys.stdout))
err_console = Console(stderr=True, width=_width(sys.stderr))


def stdout_carries_a_file() -> None:
    """An output written to ``-`` (standard output): tables and "wrote" lines move to stderr, so the
    file reaches its reader alone (``segadv attack --json - | jq``)."""
    console.file = sys.stderr


def print_error(message: str) -> None:
    """The one form of a user error: ``error: message`` on one line of stderr."""
    err_console.print(f"[bold red]error:[/] {escape(' '.join(message.split()))}", highlight=False, soft_wrap=True)


def fail(message: str, code: int = 2) -> NoReturn:
    """Print ``message`` as a one-line error and exit with ``code``."""
    print_error(message)
    raise typer.Exit(code)


def report_bug(error: BaseException) -> None:
    """One line saying it is a bug and where its traceback went (stderr, if no log file can be written)."""
    log = write_bug_report(error)
    if log is None:
        import traceback

        traceback.print_exception(type(error), error, error.__traceback__, file=sys.stderr)
    err_console.print(f"[bold red]{escape(bug_message(error, log))}[/]", highlight=False, soft_wrap=True)


def _reader_left(error: BrokenPipeError) -> bool:
    """Whether ``error`` is our standard output's reader gone (``| head``), not a pipe inside a command
    (a data loader worker, a subprocess), which is a bug to report: the write end of a pipe whose reader
    has closed polls as an error."""
    import select

    try:
        poller = select.poll()
        poller.register(sys.stdout.fileno(), select.POLLOUT)
        return any(events & select.POLLERR for _, events in poller.poll(0))
    except (OSError, ValueError, AttributeError):  # no stdout, or no poll (Windows)
        return False


class _Commands(TyperGroup):
    """Runs every subcommand under the one error path (see the module's docstring)."""

    def invoke(self, ctx):
        from segadv_tui.cli._runs import recording

        try:
            with recording(ctx):  # the run index's record of the command, closed however it ends
                return super().invoke(ctx)
        except (TyperException, typer.Exit, typer.Abort):  # usage errors, fail(), Ctrl-C: Typer's own
            raise
        except KeyboardInterrupt:
            # Ctrl-C outside a run that keeps its finished part (segadv_tui.cli._outcome): Typer would turn
            # it into exit status 130 without a word.
            err_console.print("interrupted; nothing finished was written", highlight=False)
            raise typer.Exit(130) from None
        except BrokenPipeError as exc:
            if _reader_left(exc):  # run() ends quietly
                raise
            report_bug(exc)
            raise typer.Exit(1) from None
        except SegadvError as exc:
            fail(one_line(exc))
        except Exception as exc:
            report_bug(exc)
            raise typer.Exit(1) from None


app = typer.Typer(
    name="segadv",
    help="Adversarial attacks on medical image segmentation models (UW-Madison GI Tract, U-Net family).",
    cls=_Commands,
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)


def _register_commands() -> None:
    # Each import registers its commands on ``app`` (decorators run at import time).
    from segadv_tui.cli import (  # noqa: F401
        # -- command modules: keep one import per line, alphabetical --
        attack,
        certify,
        config,
        corrupt,
        demo_data,
        models,
        report,
        robust,
        runs,
        study,
        train,
        transfer,
        universal,
    )


def main() -> None:
    _register_commands()
    run(app)


def run(command: typer.Typer) -> NoReturn:
    """Run a Typer app (``segadv``, or ``segadv-tui``'s launcher) as a program, each error reported once."""
    try:
        # Not standalone: usage errors come back to us and are shown as one line, not a box.
        code = command(standalone_mode=False)
    except TyperException as exc:  # usage errors: unknown command, bad option value
        ctx = getattr(exc, "ctx", None)
        hint = f" (see: {ctx.command_path} --help)" if ctx is not None else ""
        if exc.format_message():  # empty after no_args_is_help has printed the help
            print_error(f"{exc.format_message()}{hint}")
        sys.exit(exc.exit_code or 2)
    except SegadvError as exc:  # raised outside _Commands (segadv-tui's launcher, option parsing)
        print_error(one_line(exc))
        sys.exit(2)
    except (KeyboardInterrupt, typer.Abort):
        err_console.print("interrupted")
        sys.exit(130)
    except BrokenPipeError as exc:
        if not _reader_left(exc):
            report_bug(exc)
            sys.exit(1)
        # `segadv ... | head`: the reader left; nothing more to say (Python's documented way out).
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        sys.exit(1)
    except Exception as exc:
        report_bug(exc)
        sys.exit(1)
    sys.exit(code if isinstance(code, int) else 0)
