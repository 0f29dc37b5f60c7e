"""The ``segadv-tui`` command line: check the arguments, set up the terminal, run the app.

Bad arguments end here with one line and exit status 2, before the full-screen app starts. This module
stays light (no torch, no Textual at import) so ``--help`` and argument errors are instant.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import typer

from segadv_tui.cli import fail, run
from segadv_tui.serve import HEARTBEAT_S

command = typer.Typer(add_completion=False, pretty_exceptions_enable=False)
SERVE_HOST, SERVE_PORT = "127.0.0.1", 8000


@command.command(help="Explore adversarial attacks on segmentation models, slice by slice, from the keyboard.")
def segadv_tui(
    context: typer.Context,
    data: Path | None = typer.Option(
        None,
        "--data",
        help="A data folder: UW-Madison (train.csv + train/) "
        "or Decathlon / nnU-Net (dataset.json); default: the built-in demo.",
    ),
    slice_axis: str | None = typer.Option(
        None,
        "--slice-axis",
        help="How a Decathlon folder's volumes are cut: axial (default), coronal or sagittal (or 2, 1, 0).",
    ),
    image: Path | None = typer.Option(
        None, "--image", help="Open one PNG slice without ground truth (target = prediction)."
    ),
    checkpoints: list[Path] = typer.Option(
        [], "--checkpoints", help="A folder or .safetensors file of checkpoints (repeatable)."
    ),
    checkpoint: Path | None = typer.Option(None, "--checkpoint", help="The checkpoint to open first."),
    deltas: list[Path] = typer.Option(
        [],
        "--delta",
        help="A universal perturbation (segadv universal) to open, "
        "its scale stepped with eps (repeatable; u: the next).",
    ),
    limit: int | None = typer.Option(None, "--limit", min=1, help="Table II: at most this many test slices."),
    graphics: str | None = typer.Option(
        None, "--graphics", help="Pictures: auto | halfblock | kitty | sixel (default: the settings file's, else auto)."
    ),
    truecolor: bool = typer.Option(
        False, "--truecolor", help="Force 24-bit colour (for terminals that do not announce it)."
    ),
    export_dir: Path = typer.Option(Path("."), "--export-dir", help="Where e / x and Table II exports go."),
    device: str = typer.Option("auto", "--device", help="auto (CUDA when available, else CPU), cpu, cuda or cuda:N."),
    metrics: str = typer.Option(
        "dsc",
        "--metrics",
        help="Scores table: dsc, plus columns of hd95 (mm) and nsd (within --nsd-tolerance mm), e.g. dsc,hd95,nsd.",
    ),
    nsd_tolerance: float | None = typer.Option(
        None, "--nsd-tolerance", metavar="MM", help="NSD's tolerance in mm (default 2: about one pixel at 224)."
    ),
    serve: bool = typer.Option(False, "--serve", help="Serve the explorer to a browser tab (textual-serve) instead."),
    host: str = typer.Option(
        SERVE_HOST,
        "--host",
        help="--serve: the address to listen on (default: this machine only; from elsewhere, through an SSH tunnel).",
    ),
    port: int = typer.Option(SERVE_PORT, "--port", min=1, max=65535, help="--serve: the port to listen on."),
    token: str | None = typer.Option(
        None,
        "--token",
        envvar="SEGADV_TUI_TOKEN",
        help="--serve: the token the URL carries (default: a new random one each start; "
        "the variable keeps it out of the process list).",
    ),
    no_token: bool = typer.Option(
        False,
        "--no-token",
        help="--serve: no token: anyone who reaches the port can use the explorer as you (a warning is printed).",
    ),
    heartbeat: float = typer.Option(
        HEARTBEAT_S,
        "--serve-heartbeat",
        min=0.1,
        hidden=True,
        help="--serve: seconds between pings to a browser (tests make it short).",
    ),
) -> None:
    if truecolor:
        # Rich and Textual read these when they are first imported: set them before.
        os.environ["COLORTERM"] = "truecolor"
        os.environ["TEXTUAL_COLOR_SYSTEM"] = "truecolor"
    from segadv_tui.config import load_settings
    from segadv_tui.render.graphics import GRAPHICS, choose_graphics, register_graphics

    # The settings file: a problem in it is a notification in the app (naming the file and the key), and
    # the command line wins over it.
    settings = load_settings()
    if graphics is None:
        graphics = settings["graphics"]
    else:
        settings.override("graphics", graphics, "--graphics")
    if graphics not in GRAPHICS:
        fail(f"--graphics must be one of {', '.join(GRAPHICS)}, not {graphics!r}")
    if data is not None and image is not None:
        fail("give --data or --image, not both")
    if data is not None and not data.is_dir():
        fail(f"--data {data}: no such folder")
    if data is not None:
        from core.data.open import DataError, data_layout

        try:
            data_layout(data)
        except DataError as exc:
            fail(f"--data {data}: {exc}")
    axis = _slice_axis(slice_axis, data if data is not None or image is not None else settings["data"], image)
    if image is not None and not image.is_file():
        fail(f"--image {image}: no such file")
    if image is not None:
        # Read here (numpy and Pillow only), so a slice segadv cannot read is one line before the app starts.
        from core.data.gitract import DataError, read_slice

        try:
            read_slice(image)
        except DataError as exc:  # names the file
            fail(f"--image: {exc}")
    folders, files = [], []
    for path in checkpoints:
        if path.is_dir():
            folders.append(path)
        elif path.is_file():
            files.append(path)
        else:
            fail(f"--checkpoints {path}: no such folder or file")
    if checkpoint is not None:
        if not checkpoint.is_file():
            fail(f"--checkpoint {checkpoint}: no such file")
        files.append(checkpoint)
    for path in deltas:
        # Read here (torch loads), so a file that is not a perturbation is one line before the app starts.
        from core.attacks.universal import load_delta
        from core.errors import SegadvError

        try:
            load_delta(path)
        except SegadvError as exc:  # names the file
            fail(f"--delta: {' '.join(str(exc).split())}")
    if device.strip().lower() != "auto":
        # An explicit device is checked before the full-screen app starts (torch loads here); auto is
        # resolved by the same rule in the app's first worker, so the screen paints at once.
        from core.devices import resolve_device

        device = str(resolve_device(device))
    from segadv_tui.cli._metrics import metric_fields

    scores = metric_fields(metrics, nsd_tolerance)  # a bad value: one line, before the app starts
    if not export_dir.is_dir():
        fail(f"--export-dir {export_dir}: no such folder")
    if not os.access(export_dir, os.W_OK | os.X_OK):
        fail(f"--export-dir {export_dir}: a folder you cannot write to")
    if not serve and context.get_parameter_source("token").name == "ENVIRONMENT":
        token = None  # SEGADV_TUI_TOKEN may stay exported for the times the explorer is served
    if not serve and ((host, port) != (SERVE_HOST, SERVE_PORT) or token is not None or no_token):
        fail("--host, --port, --token and --no-token go with --serve")
    if serve:
        from segadv_tui.serve import new_token, port_problem, token_problem

        if token is not None and no_token:
            fail("give --token or --no-token, not both")
        if token is not None and token_problem(token):
            fail(token_problem(token))
        problem = port_problem(host, port)
        if problem:
            fail(f"--serve: cannot listen on {host}:{port}: {problem}")
        token = None if no_token else token or new_token()
    if not serve:
        problem = _terminal_problem()
        if problem:
            fail(problem)

    if checkpoints:
        settings.override("checkpoint_dirs", folders, "--checkpoints")
    else:
        folders = list(settings["checkpoint_dirs"])
    if data is None and image is None:
        data = settings["data"] or _demo_data()

    if serve:
        from segadv_tui.serve import serve as serve_app

        # Each browser tab runs this command again, with what was checked here and no terminal to ask.
        arguments = ["--graphics", "halfblock", "--export-dir", str(export_dir.resolve())]
        arguments += ["--data", str(data.resolve())] if data is not None else ["--image", str(image.resolve())]
        for path in [*folders, *(files[:-1] if checkpoint is not None else files)]:
            arguments += ["--checkpoints", str(path.resolve())]
        if checkpoint is not None:
            arguments += ["--checkpoint", str(checkpoint.resolve())]
        for path in deltas:
            arguments += ["--delta", str(path.resolve())]
        if limit is not None:
            arguments += ["--limit", str(limit)]
        if slice_axis is not None:
            arguments += ["--slice-axis", str(axis)]
        arguments += ["--device", device, "--metrics", metrics]
        if nsd_tolerance is not None:
            arguments += ["--nsd-tolerance", str(nsd_tolerance)]
        serve_app(host, port, arguments, token, heartbeat)
        return

    from segadv_tui.gc_pause import pause as pause_collector

    pause_collector()  # from here to the first frame: Textual's import and start, torch's (segadv_tui.gc_pause)
    renderer = register_graphics(choose_graphics(graphics))
    # The app paints at once and loads torch and the models in a worker, with a loading indicator.
    from segadv_tui.app import SegadvApp
    from segadv_tui.lifetime import end_on_signals

    app = SegadvApp(
        data=data,
        slice_axis=axis,
        image=image,
        checkpoint_dirs=folders,
        checkpoints=files,
        checkpoint=checkpoint,
        deltas=deltas,
        limit=limit,
        graphics=renderer,
        export_dir=export_dir,
        device=device,
        **scores,
        eps_step=settings["eps_step"],
        test_fraction=settings["split"],
        view=settings["default_view"],
        certify_samples=settings["certify_samples"],
        certify_sigma=settings["certify_sigma"],
        settings=settings,
    )
    end_on_signals(app)  # SIGTERM, SIGHUP: the terminal restored and the process gone within seconds, workers or not
    app.run()
    return app.return_code  # 128 + the signal's number after SIGTERM / SIGHUP


def _slice_axis(value: str | None, data: Path | None, image: Path | None) -> int:
    """The canonical axis --slice-axis names (default axial), or one line: a bad value, or --slice-axis
    for data that is not a Decathlon folder (UW-Madison's slices are already cut)."""
    from core.data.decathlon import DEFAULT_SLICE_AXIS, parse_slice_axis
    from core.errors import OptionError

    if value is None:
        return DEFAULT_SLICE_AXIS
    try:
        axis = parse_slice_axis(value, "--slice-axis")
    except OptionError as exc:
        fail(str(exc))
    if data is None or not (Path(data) / "dataset.json").is_file():
        opened = f"--image {image}" if image is not None else data or "the demo data"
        fail(f"--slice-axis cuts a Decathlon folder's volumes, but {opened} is not one; leave it out")
    return axis


def _terminal_problem() -> str | None:
    """Why the full-screen app cannot run here (None: it can).

    Without a terminal the app never exits and writes escape codes to whatever its output is (Textual
    draws on stderr; a redirected stdout means output is wanted in a file, which the app never writes).
    TERM=dumb announces a terminal without cursor movement or colour, which the app needs. A driver
    named in TEXTUAL_DRIVER needs no terminal: textual-serve runs each browser tab's explorer that way,
    its output a pipe.
    """
    if os.environ.get("TEXTUAL_DRIVER"):
        return None
    for name, stream in (("standard output", sys.stdout), ("standard error", sys.stderr)):
        if stream is None or not stream.isatty():
            return (
                f"segadv-tui is a full-screen app and its {name} is not a terminal: run it in a terminal, "
                f"or use segadv-tui --serve for a browser, or the segadv commands for output to files"
            )
    if os.environ.get("TERM", "").lower() == "dumb":
        return (
            "segadv-tui needs a terminal with cursor movement and colour, and TERM=dumb says this one has "
            "neither: run it in another terminal (xterm, tmux, an SSH session), or use segadv-tui --serve"
        )
    return None


def _demo_data() -> Path:
    """The built-in demo data; made on first use with a progress bar, before the full-screen app starts."""
    from core.data.demo import demo_data_dir
    from segadv_tui.cli._common import progress_bar

    try:
        with progress_bar("preparing the built-in demo data (first use only)") as progress:
            return demo_data_dir(progress=progress)
    except OSError as exc:
        fail(f"cannot write the demo data to the cache folder: {exc}")


def main() -> None:
    run(command)  # the CLI's error path: bad input is one line and exit 2, a bug names its log file


if __name__ == "__main__":
    main()
