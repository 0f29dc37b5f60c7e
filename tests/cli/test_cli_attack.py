"""The headless attack commands end to end: ``segadv attack / sweep / table / figure`` on the tiny demo data.

The numbers the files hold are checked against direct calls of ``core.evaluation`` (the engine the
commands are meant to report, not re-implement), the PNGs by their layout and colours.
"""

from __future__ import annotations

import csv
import json
import math
import shutil
import xml.etree.ElementTree as ElementTree

import numpy as np
import pytest
import torch
from PIL import Image

from core.data.gitract import GITractDataset
from core.evaluation.scoring import AttackConfig, evaluate
from core.models.checkpoints import load_checkpoint
from core.organs import ORGANS
from segadv_tui.render.imagery import FN_COLOUR, FP_COLOUR, TP_COLOUR

IMG_SIZE = 64
LIMIT = 2


@pytest.fixture(scope="module")
def checkpoint(small_checkpoint):
    return small_checkpoint


@pytest.fixture(scope="module")
def test_slices(tiny_test_slices):
    return tiny_test_slices[:LIMIT]


@pytest.fixture(scope="module")
def reference(checkpoint, test_slices):
    """core's own evaluation of the default attack (FGSM, BCE, eps 0.009, textbook, target gt)."""
    model, _ = load_checkpoint(checkpoint)
    return evaluate(model, test_slices, IMG_SIZE, AttackConfig())


def _common(checkpoint, tiny_demo):
    return ["--checkpoint", checkpoint, "--data", tiny_demo, "--limit", LIMIT]


def _close(a, b):
    return (a is None and b is None) or (
        a is not None and b is not None and math.isclose(a, b, rel_tol=0, abs_tol=1e-12)
    )


def test_attack_files_hold_core_evaluation(run, checkpoint, tiny_demo, reference):
    result = run("attack", *_common(checkpoint, tiny_demo), "--json", "a.json", "--csv", "a.csv")
    assert result.exit_code == 0, result.output
    assert "Large bowel" in result.stdout and "mean" in result.stdout
    assert f"{reference.summary.mean_adv:.4f}" in result.stdout

    written = json.loads(open("a.json").read())
    assert written["summary"] == json.loads(json.dumps(reference.summary.to_dict()))
    assert written["config"]["eps"] == 0.009 and written["config"]["loss"] == "bce"
    assert written["slices"] == LIMIT and written["img_size"] == IMG_SIZE
    assert [row["slice_id"] for row in written["rows"]] == [row.slice_id for row in reference.rows]

    with open("a.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == LIMIT
    for row, expected in zip(rows, reference.rows):
        assert row["slice_id"] == expected.slice_id
        for organ in ORGANS:
            for column, values in (
                ("dsc_clean", expected.dsc_clean),
                ("dsc_adv", expected.dsc_adv),
                ("as", expected.attack_success),
            ):
                cell = row[f"{column}_{organ}"]
                value = values[ORGANS.index(organ)]
                assert _close(float(cell) if cell else None, value if np.isfinite(value) else None)
        assert _close(float(row["dsc_adv_mean"]), expected.mean_adv)
        assert float(row["linf"]) == pytest.approx(expected.linf) and float(row["linf"]) <= 0.009 + 1e-6


def test_sweep_writes_json_csv_png_and_matches_a_single_attack(run, checkpoint, tiny_demo, reference):
    result = run(
        "sweep", *_common(checkpoint, tiny_demo), "--eps", "0:0.009:0.0045", "--losses", "bce,focal", "--out-dir", "out"
    )
    assert result.exit_code == 0, result.output

    written = json.loads(open("out/sweep.json").read())
    assert written["eps_values"] == [0.0, 0.0045, 0.009] and written["losses"] == ["bce", "focal"]
    entries = {(e["loss"], e["eps"]): e["summary"] for e in written["entries"]}
    # The shared-gradient sweep at 0.009 with BCE is the plain attack's result, to the last digit.
    assert entries["bce", 0.009] == json.loads(json.dumps(reference.summary.to_dict()))
    for loss in ("bce", "focal"):
        assert entries[loss, 0.0]["mean_adv"] == entries[loss, 0.0]["mean_clean"]
        assert entries[loss, 0.0]["mean_attack_success"] in (0.0, None)

    with open("out/sweep.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [(r["loss"], float(r["eps"])) for r in rows] == [
        (l, e) for l in ("bce", "focal") for e in (0.0, 0.0045, 0.009)
    ]
    assert float(rows[2]["dsc_adv_mean"]) == pytest.approx(reference.summary.mean_adv, abs=1e-12)

    with Image.open("out/sweep.png") as png:  # two journal columns (7.2 in) at 300 dpi
        assert png.format == "PNG" and png.width == 2160 and 600 <= png.height <= 1000
        assert png.info["dpi"] == pytest.approx((300, 300), abs=0.05)

    listed = run(
        "sweep",
        "--checkpoint",
        checkpoint,
        "--data",
        tiny_demo,
        "--limit",
        1,
        "--eps",
        "0.009, 0",
        "--losses",
        "bce",
        "--json",
        "l.json",
        "--csv",
        "l.csv",
        "--out",
        "l.pdf",
        "--width",
        "single",
    )
    assert listed.exit_code == 0, listed.output
    assert json.loads(open("l.json").read())["eps_values"] == [0.0, 0.009]
    pdf = open("l.pdf", "rb").read()
    assert pdf.startswith(b"%PDF-") and b"/CreationDate" not in pdf and b"/MediaBox [ 0 0 252 " in pdf  # 3.5 in


@pytest.mark.parametrize(
    "text, expected",
    [
        ("0:0.03:0.003", [round(0.003 * i, 12) for i in range(11)]),  # float steps still reach the stop
        ("0:0.01:0.003", [0.0, 0.003, 0.006, 0.009]),  # a stop between steps is not exceeded
        ("0.02:0.02:0.001", [0.02]),
        ("0.009,0,0.005,0.009", [0.0, 0.005, 0.009]),  # sorted, duplicates dropped
        ("0.01", [0.01]),
    ],
)
def test_eps_lists(text, expected):
    from segadv_tui.cli._common import parse_eps_list

    assert parse_eps_list(text) == pytest.approx(expected, abs=1e-15)


def test_a_choice_takes_any_case_and_a_bad_one_is_core_s_one_line_error():
    from core.errors import OptionError
    from segadv_tui.cli._common import parse_losses

    assert parse_losses(" BCE,Focal ,bce") == ["bce", "focal"]
    with pytest.raises(OptionError, match="^unknown loss 'foo'; choose from bce, focal"):
        parse_losses("bce,FOO")


def test_table_writes_markdown_csv_json_with_best_attack_in_bold(run, checkpoint, tiny_demo, tmp_path):
    second = shutil.copy(checkpoint, tmp_path / "copy.safetensors")
    result = run(
        "table",
        "--checkpoint",
        checkpoint,
        "--checkpoint",
        second,
        "--data",
        tiny_demo,
        "--limit",
        LIMIT,
        "--losses",
        "bce,focal+dice,focal",
        "--md",
        "t.md",
        "--csv",
        "t.csv",
        "--json",
        "t.json",
    )
    assert result.exit_code == 0, result.output
    assert "Table II" in result.stdout

    lines = open("t.md").read().splitlines()
    assert lines[0] == "| Model | Parameters | Normal | FGSM BCE | FGSM Focal + Dice | FGSM Focal |"
    assert lines[1].startswith("| --- |")
    table = json.loads(open("t.json").read())
    assert table["eps"] == 0.009 and table["losses"] == ["bce", "focal+dice", "focal"]
    for line, row in zip(lines[2:4], table["rows"]):
        cells = [c.strip() for c in line.strip("|").split("|")]
        assert row["label"] in cells[0] and cells[1] == "4.13M"
        losses = cells[3:]
        bold = [i for i, c in enumerate(losses) if c.startswith("**") and c.endswith("**")]
        lowest = min(row["dsc_adv"].values())
        assert bold == [i for i, loss in enumerate(table["losses"]) if row["dsc_adv"][loss] == lowest]  # ties all bold
        assert row["best_loss"] in [table["losses"][i] for i in bold]
        assert [float(c.strip("*")) for c in losses] == [round(row["dsc_adv"][loss], 4) for loss in table["losses"]]

    with open("t.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [r["checkpoint"] for r in rows] == [str(checkpoint), str(second)]
    assert float(rows[0]["dsc_fgsm_bce"]) == table["rows"][0]["dsc_adv"]["bce"]
    assert int(rows[0]["parameters"]) == table["rows"][0]["params"]


def test_figure_png_has_the_panel_layout(run, checkpoint, tiny_demo, test_slices):
    record = test_slices[0]
    result = run("figure", "--checkpoint", checkpoint, "--data", tiny_demo, "--slice", record.id, "--out", "fig.png")
    assert result.exit_code == 0, result.output

    model, _ = load_checkpoint(checkpoint)
    expected = evaluate(model, [record], IMG_SIZE, AttackConfig()).summary
    assert f"mean DSC {expected.mean_clean:.4f} -> {expected.mean_adv:.4f}" in result.stdout

    # 2 rows x 4 panels of 64 px scaled x4, 12 px apart: see segadv_tui.render.figures.attack_figure.
    pad, panel, title = 12, 256, 25
    picture = np.asarray(Image.open("fig.png").convert("RGB"))
    assert picture.shape[1] == pad + 4 * (panel + pad)

    def panel_at(row: int, column: int) -> np.ndarray:
        top = pad + row * (title + panel + pad) + title
        left = pad + column * (panel + pad)
        return picture[top : top + panel, left : left + panel]

    clean_input = panel_at(0, 0)
    assert (clean_input[..., 0] == clean_input[..., 1]).all() and (clean_input[..., 1] == clean_input[..., 2]).all()
    allowed = {(0, 0, 0), TP_COLOUR, FP_COLOUR, FN_COLOUR}
    for column in (1, 3):  # the clean and adversarial difference maps
        colours = {tuple(c) for c in panel_at(1, column).reshape(-1, 3)}
        assert colours <= allowed and len(colours) > 1


def test_figure_pdf_and_svg_are_the_journal_panels(run, checkpoint, tiny_demo, test_slices):
    common = ["figure", "--checkpoint", checkpoint, "--data", tiny_demo, "--slice", test_slices[0].id]
    result = run(*common, "--out", "fig.pdf", "--width", "single")
    assert result.exit_code == 0, result.output
    assert "wrote fig.pdf (single column): slice" in result.stdout
    pdf = open("fig.pdf", "rb").read()
    assert pdf.startswith(b"%PDF-") and b"/CreationDate" not in pdf and b"/MediaBox [ 0 0 252 " in pdf
    assert pdf.count(b"/Subtype /Image") == 6  # the six panels, embedded as pictures
    result = run(*common, "--out", "fig.svg")
    assert result.exit_code == 0, result.output
    svg = ElementTree.parse("fig.svg").getroot()
    assert svg.get("width") == "518.4pt"  # 7.2 in
    assert len(svg.findall(".//{http://www.w3.org/2000/svg}image")) == 6


@pytest.mark.parametrize(
    "args, named",
    [
        (["attack", "--checkpoint", "missing.safetensors"], "missing.safetensors"),
        (["attack", "--eps", "-1"], "-1"),
        (["attack", "--eps", "abc"], "abc"),
        (["sweep", "--eps", "0:0.03:0"], "0:0.03:0"),
        (["sweep", "--eps", "0:0.03"], "0:0.03"),
        (["attack", "--loss", "hinge"], "hinge"),
        (["table", "--losses", "bce,hinge"], "hinge"),
        (["attack", "--split", "val"], "val"),
        (["attack", "--method", "cw"], "cw"),
        (["attack", "--method", "bim", "--mode", "paper"], "paper"),
        (["attack", "--data", "nowhere"], "nowhere"),
        (["figure", "--slice", "case1_day1_slice_9999"], "case1_day1_slice_9999"),
        (["attack", "--json", "."], "--json '.'"),
        (["attack", "--method", "erase", "--organs", "liver"], "liver"),
        (["attack", "--device", "tpu"], "tpu"),
        (["attack", "--device", "cuda:3"], "cuda:3"),
        (["table", "--device", "cuda"], "cuda"),
        (["attack", "--steps", "0", "--method", "pgd"], "steps"),
    ],
)
def test_bad_input_is_one_line_naming_the_value(run, checkpoint, tiny_demo, args, named):
    command, *rest = args
    defaults = {"--checkpoint": checkpoint, "--data": tiny_demo}
    for option, value in defaults.items():
        if option not in rest:
            rest += [option, value]
    result = run(command, *rest)
    assert result.exit_code != 0
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    assert lines[0].startswith("error:") and named in lines[0] and "Traceback" not in result.output


def test_unknown_slice_suggests_real_ids(run, checkpoint, tiny_demo, test_slices):
    near = test_slices[0].id[:-1] + "x"  # a typo of a real id
    result = run("figure", "--checkpoint", checkpoint, "--data", tiny_demo, "--slice", near)
    assert result.exit_code != 0 and near in result.stderr
    suggested = result.stderr.strip().split("; try ")[1].split(", ")
    ids = {record.id for record in GITractDataset(tiny_demo)}
    assert suggested and set(suggested) <= ids and all(s.startswith("case119_day2_slice_000") for s in suggested)


def test_bundled_demo_checkpoint_runs_by_default(run, tiny_demo):
    from core.paths import demo_checkpoint

    try:
        demo_checkpoint()
    except FileNotFoundError:
        pytest.skip("the bundled demo checkpoint is not there yet")
    result = run("attack", "--data", tiny_demo, "--limit", LIMIT, "--json", "demo.json")
    assert result.exit_code == 0, result.output
    written = json.loads(open("demo.json").read())
    assert written["checkpoint"] == str(demo_checkpoint()) and written["summary"]["scored"] == LIMIT


def test_table_ii_markdown_bolds_every_loss_tied_for_the_lowest_dsc():
    from core.attacks.config import AttackConfig
    from core.evaluation.scoring import TableII, TableIIRow
    from segadv_tui.render.tables import table_ii_table

    rows = [
        TableIIRow(
            "a.safetensors",
            "VGG U-Net",
            18_440_000,
            0.7509,
            {"bce": 0.4063, "focal+dice": 0.5772, "focal": 0.5105},
            "bce",
        ),
        TableIIRow("b.safetensors", "Tied", 4_130_000, 0.5, {"bce": 0.3, "focal+dice": 0.4, "focal": 0.3}, "bce"),
    ]
    table = TableII(AttackConfig(eps=0.009), ["bce", "focal+dice", "focal"], rows)
    lines = table_ii_table(table, caption="caption").to_markdown().splitlines()
    assert lines[2] == "| VGG U-Net | 18.44M | 0.7509 | **0.4063** | 0.5772 | 0.5105 |"  # the paper's first row
    assert lines[3] == "| Tied | 4.13M | 0.5000 | **0.3000** | 0.4000 | **0.3000** |"


def test_erase_is_reachable_from_the_cli_and_equals_core(run, checkpoint, tiny_demo, test_slices):
    result = run(
        "attack",
        *_common(checkpoint, tiny_demo),
        "--method",
        "erase",
        "--organs",
        "stomach,small_bowel",
        "--eps",
        "0.03",
        "--steps",
        "3",
        "--json",
        "e.json",
    )
    assert result.exit_code == 0, result.output
    written = json.loads(open("e.json").read())
    assert written["config"]["method"] == "erase" and written["config"]["organs"] == ["small_bowel", "stomach"]
    assert written["config"]["method_label"] == "Erase small_bowel+stomach (3 steps)"
    model, _ = load_checkpoint(checkpoint)
    expected = evaluate(
        model, test_slices, IMG_SIZE, AttackConfig(method="erase", organs=("small_bowel", "stomach"), eps=0.03, steps=3)
    )
    assert written["summary"] == json.loads(json.dumps(expected.summary.to_dict()))


def test_json_records_the_device_and_auto_is_the_default(run, checkpoint, tiny_demo):
    result = run("attack", *_common(checkpoint, tiny_demo), "--json", "d.json")
    assert result.exit_code == 0, result.output
    expected = "cuda:0" if torch.cuda.is_available() else "cpu"
    assert json.loads(open("d.json").read())["device"].startswith(expected)


def test_the_method_help_lists_the_registry(run):
    """--method's own help names every registry method with its summary (the names alone appear in other
    options' help too, so a check on the whole page could not fail)."""
    import typer

    from core.attacks.config import METHOD_LIST
    from segadv_tui import cli

    assert run("attack", "--help").exit_code == 0  # registers the commands, and the help renders
    attack = typer.main.get_command(cli.app).commands["attack"]
    method_help = next(param.help for param in attack.params if param.name == "method")
    assert [method.name for method in METHOD_LIST if f"{method.name}: {method.summary}" in method_help] == [
        method.name for method in METHOD_LIST
    ]
