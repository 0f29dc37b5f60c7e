"""The attack explorer under Pilot: the real app, the bundled demo checkpoint, the tiny demo data.

Scores shown in the app are checked against core called directly (core.attacks.fast_gradient.fgsm / bim, not the
app's cached-gradient path); waiting is on workers and messages, never on wall-clock time.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from textual.command import CommandList
from tui_pilot import first_frame, make_app, pilot_test, settle, until

from core.attacks.config import AttackConfig
from core.attacks.fast_gradient import fgsm
from core.attacks.iterative import bim
from core.data.gitract import load_slice, open_dataset, with_organs
from core.metrics import dice_per_organ, mean_dsc
from core.models.checkpoints import load_checkpoint
from core.models.inference import predict
from core.models.loaded import LoadedModel
from core.organs import ORGANS
from core.paths import demo_checkpoint
from segadv_tui.app import SegadvApp
from segadv_tui.attacker import SliceAttacker
from segadv_tui.frames import load_slice_data
from segadv_tui.keys import EXPLORER_KEYS
from segadv_tui.messages import FrameReady
from segadv_tui.render.tables import format_score
from segadv_tui.screens.explorer import WorkerHooks
from segadv_tui.state import opening_slice
from segadv_tui.widgets.scores import ABSENT_MARK, ScoresTable

SIZE = (160, 50)


@pytest.fixture(scope="module")
def checkpoint() -> Path:
    return demo_checkpoint()


@pytest.fixture(scope="module")
def model_and_meta(checkpoint):
    return load_checkpoint(checkpoint)


def expected_scores(model, meta, record, settings: AttackConfig) -> tuple[np.ndarray, np.ndarray, float, float]:
    """Per-organ DSC clean and adversarial and their means, computed by core directly."""
    image, masks = load_slice(record, meta["img_size"])
    x = torch.from_numpy(image)[None, None]
    truth = torch.from_numpy(masks)[None].bool()
    if settings.method == "fgsm":
        adversarial = fgsm(model, x, truth.float(), settings.eps, loss=settings.loss, mode=settings.mode)
    else:
        adversarial = bim(model, x, truth.float(), settings.eps, steps=settings.steps, loss=settings.loss)
    dsc = dice_per_organ(torch.cat([predict(model, x), predict(model, adversarial)]), torch.cat([truth, truth]))
    means = mean_dsc(dsc)
    return dsc[0], dsc[1], float(means[0]), float(means[1])


def table_values(app: SegadvApp) -> dict[str, tuple[str, str, str]]:
    """The scores shown, without the mark of an organ absent from the truth."""
    table = app.query_one(ScoresTable)
    return {
        row: tuple(table.cell_text(row, col).removesuffix(ABSENT_MARK) for col in ("clean", "adv", "as"))
        for row in (*ORGANS, "mean")
    }


def assert_table_matches(app: SegadvApp, model, meta, record, settings: AttackConfig) -> None:
    clean, adv, mean_clean, mean_adv = expected_scores(model, meta, record, settings)
    shown = table_values(app)
    table = app.query_one(ScoresTable)
    for i, organ in enumerate(ORGANS):
        assert shown[organ][:2] == (format_score(clean[i]), format_score(adv[i])), organ
        # The empty-organ rule's scores are marked: exactly those of the organs the truth lacks.
        assert table.cell_text(organ, "clean").endswith(ABSENT_MARK) == (not record.rles[i]), organ
    assert shown["mean"][:2] == (format_score(mean_clean), format_score(mean_adv))


@pilot_test
async def test_eps_keys_input_help_and_exports(tiny_demo, checkpoint, model_and_meta, tmp_path):
    """One session: step eps from the keyboard and check the table against core, type eps values,
    open the help, export the figure and the scores."""
    model, meta = model_and_meta
    app = make_app(tiny_demo, checkpoint, export_dir=tmp_path)
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        first = state.source
        await pilot.press("j")  # the next slice with organs
        await settle(pilot, app)
        assert state.source != first and state.frame.slice_id == state.source.id
        for _ in range(3):
            await pilot.press("plus")
        await settle(pilot, app)
        assert state.attack.eps == pytest.approx(0.012)
        assert app.query_one("#attack-eps").value == "0.012"
        assert "eps 0.012" in str(app.query_one("#scores-status").render())
        assert state.frame.config.eps == pytest.approx(0.012)
        assert_table_matches(app, model, meta, state.source, state.attack)
        # AS is n/a exactly where the clean DSC is 0.
        for clean, _, success in table_values(app).values():
            assert (success == "n/a") == (clean == "0.000")

        # Exports: the figure as PNG, the scores as CSV and Markdown, each with the mode the umask allows
        # (0644 under 022; a temporary file's 0600 would keep them from colleagues on a shared box).
        for umask, folder in ((0o022, tmp_path), (0o077, tmp_path / "private")):
            folder.mkdir(exist_ok=True)
            state.options.export_dir = folder
            previous = os.umask(umask)
            try:
                await pilot.press("e", "x")
                await settle(pilot, app)
            finally:
                os.umask(previous)
            modes = {path.suffix: path.stat().st_mode & 0o777 for path in folder.iterdir() if path.is_file()}
            assert modes == dict.fromkeys([".png", ".csv", ".md"], 0o666 & ~umask), umask
        (png,) = tmp_path.glob("*.png")
        assert state.frame.slice_id in png.name and "eps0.012" in png.name
        assert Image.open(png).size[0] > 500
        csv = next(tmp_path.glob("*_scores.csv")).read_text().splitlines()
        assert csv[0] == "Organ,DSC clean,DSC adv,AS"
        assert csv[-1].split(",")[1] == f"{state.frame.result.mean_clean:.4f}"
        assert next(tmp_path.glob("*_scores.md")).read_text().count("| Mean |") == 1

        # Coarse steps, back to zero, and never below zero.
        await pilot.press("right_square_bracket", "right_square_bracket", "left_square_bracket", "minus")
        assert state.attack.eps == pytest.approx(0.012 + 0.005 - 0.001)
        await pilot.press("0", "minus")
        assert state.attack.eps == 0.0
        await settle(pilot, app)
        assert state.frame.config.eps == 0.0
        assert all(clean == adv for clean, adv, _ in table_values(app).values())  # eps 0 changes nothing

        # Typed values: text is refused, out of range is clamped, a good value is used.
        eps_input = app.query_one("#attack-eps")
        for typed in ("abc", "7", "0.02"):
            await pilot.press("i")
            assert eps_input.has_focus
            eps_input.value = typed
            await pilot.press("enter")
            if typed == "abc":
                assert state.attack.eps == 0.0
        assert any("must be a number" in message for _, message in app.notices)
        assert any("clamped" in message for _, message in app.notices)
        await settle(pilot, app)
        assert state.frame.config.eps == pytest.approx(0.02)

        # The help screen lists every binding.
        await pilot.press("question_mark")
        text = str(app.screen.query_one("#help-keys").render())
        for binding in EXPLORER_KEYS:
            assert binding.tooltip in text
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


@pilot_test
async def test_switching_loss_method_and_slices(tiny_demo, checkpoint, model_and_meta):
    model, meta = model_and_meta
    dataset = open_dataset(tiny_demo)
    app = make_app(tiny_demo, checkpoint)
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        await pilot.press("l")
        await settle(pilot, app)
        assert state.frame.config.loss == "focal"
        assert app.query_one("#attack-loss").value == "focal"
        assert_table_matches(app, model, meta, state.source, state.attack)

        # Only slices with organs by default; o shows all; j / k step through them.
        browser = app.query_one("#slices")
        assert browser.records == with_organs(dataset.records)
        await pilot.press("o")
        assert browser.records == dataset.records
        start = browser.records.index(state.source)
        await pilot.press("j", "j", "k")
        assert state.source == dataset.records[start + 1]

        await pilot.press("m")
        await settle(pilot, app)
        assert state.frame.config.method == "bim" and state.frame.slice_id == state.source.id
        assert app.query_one("#attack-method").value == "bim"
        assert_table_matches(app, model, meta, state.source, state.attack)
        # The paper's variant is FGSM only: p is refused for BIM and the mode select is disabled.
        await pilot.press("p")
        assert state.attack.mode == "textbook"
        assert app.query_one("#attack-mode").disabled

        # The command palette offers the losses by name.
        await pilot.press("ctrl+p", *"loss dice")
        await until(pilot, app, lambda: app.screen.query_one(CommandList).option_count, "palette hits")
        assert "Dice" in str(app.screen.query_one(CommandList).get_option_at_index(0).prompt)
        await pilot.press("enter")
        await settle(pilot, app)
        assert state.frame.config.loss == "dice" and state.frame.config.method == "bim"


@pilot_test
async def test_stale_requests_are_skipped_and_dropped(tiny_demo, checkpoint):
    """The first eps step is held inside its computation while four more keys arrive: only the newest
    is computed and shown; the held one gives up at its next check; none queues behind it."""
    entered, release = threading.Event(), threading.Event()

    def hold_first_step(request) -> None:
        if request.attack.eps == pytest.approx(0.010):
            entered.set()
            assert release.wait(timeout=60)

    app = make_app(tiny_demo, checkpoint, hooks=WorkerHooks(on_frame_start=hold_first_step))
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        computed = explorer.attacker.computations
        await pilot.press("plus")
        while not entered.is_set():
            await pilot.pause()
        await pilot.press("plus", "plus", "plus", "plus")
        release.set()
        await settle(pilot, app)
        assert state.frame.config.eps == pytest.approx(0.014)
        assert explorer.attacker.computations == computed + 1  # only the newest request ran to the end

        # A frame that arrives for an old request is dropped, whatever it holds.
        data = load_slice_data(state.source, state.attacked.img_size)
        old = explorer.attacker.compute(data, state.attack.with_eps(0.5), request_id=state.latest_request - 1)
        explorer.post_message(FrameReady(old))
        await settle(pilot, app)
        assert state.dropped_frames == 1
        assert state.frame.config.eps == pytest.approx(0.014)


def test_iterative_attack_stops_at_its_next_check(tiny_demo, model_and_meta):
    model, meta = model_and_meta
    record = with_organs(open_dataset(tiny_demo).records)[0]
    attacker = SliceAttacker(model, "demo")
    data = load_slice_data(record, meta["img_size"])
    checks = []

    def stop_after_three_checks() -> bool:
        checks.append(1)
        return len(checks) > 3

    frame = attacker.compute(data, AttackConfig(method="bim", steps=50), should_stop=stop_after_three_checks)
    assert frame is None and attacker.computations == 0
    assert len(checks) == 4  # two checks before the attack, then one per BIM step until the stop


@pilot_test
async def test_bad_checkpoint_and_corrupt_slice_notify(tiny_demo, checkpoint, tmp_path):
    data = tmp_path / "data"
    shutil.copytree(tiny_demo, data)
    dataset = open_dataset(data)
    first = opening_slice(dataset.records)
    shown = with_organs(dataset.records)  # the browser's order: j moves to the next of these
    second = shown[shown.index(first) + 1]
    first.path.write_bytes(b"\x89PNG broken")
    broken = tmp_path / "broken.safetensors"
    broken.write_bytes(b"not a checkpoint at all")
    app = make_app(data, checkpoint, checkpoints=[broken])
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        # The first slice cannot be read: a notification naming it, and the app goes on.
        await until(pilot, app, lambda: app.notices, "a notification")
        assert any(first.path.name in message for severity, message in app.notices if severity == "error")
        await pilot.press("j")
        await first_frame(pilot, app)
        assert state.frame.slice_id == second.id

        # Choosing the broken checkpoint: a notification naming it; the old model stays in use.
        listing = app.query_one("#checkpoints")
        listing.focus()
        listing.highlighted = [e.path for e in listing.entries].index(broken)
        await pilot.press("enter")
        await settle(pilot, app)
        assert any(str(broken) in message for severity, message in app.notices if severity == "error")
        await pilot.press("plus")
        await settle(pilot, app)
        assert state.frame.config.eps == pytest.approx(0.010)
        assert app.is_running


@pilot_test
async def test_lone_png_uses_the_prediction_as_target(real_samples, checkpoint):
    """Also started with kitty graphics (textual-image): every view shows kitty pictures, g cycles to
    half-block and back."""
    from textual_image.widget import TGPImage

    from segadv_tui.render.graphics import register_graphics
    from segadv_tui.widgets.images import HalfBlockView, PictureViews

    png = next(real_samples.glob("*.png"))
    app = make_app(None, checkpoint, image=png, graphics=register_graphics("kitty"))
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        views = app.query_one(PictureViews)
        assert len(views.current().query(TGPImage)) == 2 and not app.query(HalfBlockView)
        await pilot.press("g")
        assert len(views.current().query(HalfBlockView)) == 2 and not app.query(TGPImage)
        await pilot.press("g")
        for view, pictures in (("difference", 2), ("grid", 8), ("focus", 1)):
            await pilot.press("v")
            assert views.view == view
            shown = views.current().query(TGPImage)
            assert len(shown) == pictures and all(picture.image is not None for picture in shown)
            if view == "grid":
                assert app.query_one("#image-truth").heading.startswith("Target")
        assert state.attack.target == "pred" and not state.frame.has_truth
        # Against its own prediction the clean DSC is 1 for every organ.
        assert all(clean == "1.000" for clean, _, _ in table_values(app).values())
        await pilot.press("t")
        assert state.attack.target == "pred"
        # A typed eps, good or bad, leaves Target off: a lone PNG has no truth to attack.
        target = app.query_one("#attack-target")
        for typed in ("0.02", "abc"):
            await pilot.press("i")
            app.query_one("#attack-eps").value = typed
            await pilot.press("enter")
            assert target.disabled, typed


@pilot_test
async def test_table_ii_runs_over_a_few_slices(tiny_demo, checkpoint, model_and_meta, tmp_path):
    from core.evaluation.scoring import table_ii

    model, meta = model_and_meta
    app = make_app(tiny_demo, checkpoint, limit=2, export_dir=tmp_path)
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        await pilot.press("T")
        screen = app.screen
        await until(pilot, app, lambda: screen.table is not None, "the Table II run")
        (row,) = screen.table.rows
        records = state.table_ii_records()
        assert len(records) == 2
        expected = table_ii([LoadedModel("demo", model, meta)], records, screen.losses, AttackConfig(eps=0.009))
        assert row[2] == f"{expected.rows[0].dsc_clean:.4f}"
        assert [cell.split()[0] for cell in row[3:]] == [f"{expected.rows[0].dsc_adv[l]:.4f}" for l in screen.losses]
        umask = os.umask(0o022)
        try:
            await pilot.press("x")
        finally:
            os.umask(umask)
        assert {p.stat().st_mode & 0o777 for p in tmp_path.glob("table_ii_*")} == {0o644}
        csv = (tmp_path / "table_ii_fgsm_eps0.009.csv").read_text()
        assert csv.splitlines()[0].startswith("Model,Parameters,Normal,FGSM BCE")
        assert (tmp_path / "table_ii_fgsm_eps0.009.md").read_text().count("|") > 10
        await pilot.press("escape")
        assert app.screen is app.screen_stack[0]


@pilot_test
async def test_small_and_large_terminals_resizing_and_quitting_while_computing(tiny_demo, checkpoint):
    app = make_app(tiny_demo, checkpoint)
    state = app.explorer.state
    async with app.run_test(size=(60, 20)) as pilot:
        await first_frame(pilot, app)
        assert app.screen.has_class("-no-sidebar") and app.screen.has_class("-tiny")
        assert not app.query_one("#image-perturbation").display
        await pilot.press("m", "plus")  # a BIM step, then resize while it runs
        await pilot.resize_terminal(300, 100)
        await settle(pilot, app)
        assert not app.screen.has_class("-no-sidebar")
        assert app.query_one("#image-perturbation").display
        assert state.frame.config.method == "bim"
        await pilot.press("b")
        assert app.screen.has_class("-no-sidebar")
        await pilot.press("right_square_bracket", "q")  # quit while that BIM step runs
    assert app.return_code == 0


@pytest.mark.parametrize(
    ("module", "absent"),
    [
        ("segadv_tui.attacker", ("textual", "rich")),  # the frame logic is Textual-free
        ("segadv_tui.launch", ("torch", "textual")),  # --help and argument errors are instant
        # the app paints first; torch, smp and MONAI load in its worker
        ("segadv_tui.app", ("torch", "monai", "segmentation_models_pytorch")),
        # the explorer checks its bindings against this screen on the UI thread, before torch has loaded
        ("segadv_tui.screens.table_ii", ("torch",)),
    ],
)
def test_import_layering(module, absent):
    code = f"import sys, {module}; print(*[name in sys.modules for name in {absent!r}])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.split() == ["False"] * len(absent)


# Run in a fresh process (this one has torch loaded). Every torch import the UI thread starts before
# torch has finished loading is recorded with its stack; the workers' first imports of segadv, core or
# torch wait until the UI has painted and handled some keys, so a torch import on the UI thread cannot
# hide behind a worker that happened to be quicker, nor wait on one (it would freeze the screen).
UI_THREAD_IMPORTS = """
import asyncio, builtins, json, sys, threading, traceback
from pathlib import Path

sys.path.insert(0, {tests!r})
MAIN, GATED = threading.main_thread(), ("core", "segadv_tui", "torch")
gate, ui_imports, recording, original_import = threading.Event(), [], [], builtins.__import__


def torch_ready():
    torch = sys.modules.get("torch")
    return torch is not None and not getattr(getattr(torch, "__spec__", None), "_initializing", False)


def watching_import(name, globals=None, locals=None, fromlist=(), level=0):
    top = name.partition(".")[0] if level == 0 else ""
    if threading.current_thread() is MAIN:
        if top == "torch" and not torch_ready() and not recording:
            ui_imports.append("".join(traceback.format_stack(limit=25)))
            recording.append(name)  # torch's own imports while it loads are not new findings
            try:
                return original_import(name, globals, locals, fromlist, level)
            finally:
                recording.pop()
    elif top in GATED and not gate.is_set():
        gate.wait()  # at a worker's outermost import: it holds no import lock the UI could wait for
    return original_import(name, globals, locals, fromlist, level)


builtins.__import__ = watching_import
from tui_pilot import make_app


async def scenario():
    app = make_app(Path({data!r}), Path({checkpoint!r}))
    async with app.run_test(size=(160, 50)) as pilot:
        await pilot.pause()
        await pilot.press("plus", "T", "question_mark")  # bindings are checked (check_action) on each key
        await pilot.pause()
        await pilot.press("escape", "minus")
        await pilot.pause()
        gate.set()
        for _ in range(1000):  # until the model has loaded: from then on torch is there for everyone
            await app.workers.wait_for_complete()
            await pilot.pause()
            if app.explorer.attacker is not None:
                break
    print(json.dumps({{"ui": ui_imports, "model_loaded": app.explorer.attacker is not None}}))


asyncio.run(scenario())
"""


def test_the_ui_thread_never_imports_torch_before_the_worker_has_loaded_it(tiny_demo, checkpoint):
    code = UI_THREAD_IMPORTS.format(
        tests=str(Path(__file__).parent.parent), data=str(tiny_demo), checkpoint=str(checkpoint)
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    seen = json.loads(result.stdout.strip().splitlines()[-1])
    assert seen["model_loaded"]  # the workers loaded torch and the model
    assert seen["ui"] == [], f"{len(seen['ui'])} torch import(s) on the UI thread, the first:\n{seen['ui'][0]}"


@pilot_test
async def test_a_bug_in_a_worker_is_a_notification_with_a_log_and_the_app_goes_on(
    tiny_demo, checkpoint, tmp_path, monkeypatch
):
    monkeypatch.setenv("SEGADV_STATE", str(tmp_path / "state"))
    started = []

    def planted_bug(request):  # the frame worker calls this as its computation starts
        started.append(request.id)
        if len(started) == 1:
            raise ZeroDivisionError("a planted bug")

    app = make_app(tiny_demo, checkpoint, hooks=WorkerHooks(on_frame_start=planted_bug))
    state = app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, app, lambda: any("bug in segadv" in m for _, m in app.notices), "the bug's notification")
        (log,) = (tmp_path / "state").glob("bug-*.log")
        message = next(m for severity, m in app.notices if "bug in segadv" in m and severity == "error")
        assert "ZeroDivisionError: a planted bug" in message and str(log) in message
        assert "Traceback" in log.read_text() and "planted_bug" in log.read_text()
        await pilot.press("plus")
        await first_frame(pilot, app)
        assert state.frame.config.eps == pytest.approx(0.010) and app.is_running


def test_bad_arguments_are_one_line_before_start(tmp_path):
    from typer.testing import CliRunner

    from segadv_tui.launch import command

    for arguments, expected in (
        (["--data", str(tmp_path / "nowhere")], "no such folder"),
        (["--data", str(tmp_path)], "holds neither dataset.json nor train.csv"),
        (["--graphics", "ascii"], "--graphics must be one of"),
        (["--checkpoints", str(tmp_path / "none")], "no such folder or file"),
    ):
        result = CliRunner().invoke(command, arguments)
        output = " ".join(result.output.split())
        assert result.exit_code == 2, arguments
        assert expected in output and "Traceback" not in output


@pilot_test
async def test_a_live_pgd_run_repaints_while_it_runs_and_a_key_cancels_it(tiny_demo, checkpoint):
    """Every PGD step repaints (interval 0 here); the run is held at its third step while + is pressed:
    it gives up at its next check, its frame never arrives, and the new eps is computed and shown."""
    at_step_two, release = threading.Event(), threading.Event()

    def hold(live) -> None:
        if live.config.eps == pytest.approx(0.009) and live.step == 2:
            at_step_two.set()
            assert release.wait(timeout=60)

    app = make_app(tiny_demo, checkpoint, hooks=WorkerHooks(on_live=hold, live_interval=0.0))
    explorer, state = app.explorer, app.explorer.state
    async with app.run_test(size=SIZE) as pilot:
        await first_frame(pilot, app)
        explorer.set_attack(state.attack.replace(method="pgd", steps=6))
        while not at_step_two.is_set():
            await pilot.pause()
        for _ in range(2000):  # the worker is held: wait for the UI thread alone, not for the workers
            if state.live_steps == 3:
                break
            await pilot.pause()
        assert state.live_steps == 3  # steps 0, 1 and 2 repainted
        assert state.frame.config.method == "fgsm"  # the PGD frame itself has not arrived: these were live
        live_line = str(app.query_one("#scores-live").render())
        assert live_line.startswith("PGD 2/6") and "DSC" in live_line and "loss" in live_line
        computed = explorer.attacker.computations
        await pilot.press("plus")
        release.set()
        await settle(pilot, app)
        assert state.frame.config.method == "pgd" and state.frame.config.eps == pytest.approx(0.010)
        assert explorer.attacker.computations == computed + 1  # the held run was abandoned, not finished
        assert str(app.query_one("#scores-live").render()).startswith("PGD 6/6")
        assert state.live.config.eps == pytest.approx(0.010) and len(state.live.mean_dsc) == 6
