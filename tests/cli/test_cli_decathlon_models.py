"""A Decathlon folder end to end, with the two kinds of model issue 19 names: a sigmoid ``smp:`` network
(``segadv train --output sigmoid``) and a softmax ``monai:UNet`` (the data's default). Each is trained from
the command line for one epoch at 32 px, then ``attack``, ``robust``, ``table``, ``transfer`` and the
explorer (under Pilot) run on it, and dataset.json's label names must appear in every output. Also:
``--slice-axis`` reaches the reader, and what is refused in one line.
"""

from __future__ import annotations

import asyncio
import csv
import json
from pathlib import Path

import pytest
import torch
from decathlon_files import make_dataset
from typer.testing import CliRunner

from core.data.open import open_dataset
from core.models.checkpoints import checkpoint_labels, read_checkpoint_meta, save_checkpoint
from core.models.registry import build_model

NAMES = ["grey_matter", "white_matter"]  # decathlon_files.V2_LABELS, as identifiers
TITLES = ["Grey matter", "white-matter"]  # and as dataset.json writes them
# The two models: a tiny smp network made sigmoid by --output, and a tiny MONAI UNet, softmax by default.
MODELS = {
    "sigmoid": ("smp:Unet:tu-mobilenetv3_small_050", {"decoder_channels": [16, 8, 8, 8, 8]}, ["--output", "sigmoid"]),
    "softmax": ("monai:UNet", {"channels": [4, 8, 16], "strides": [2, 2], "num_res_units": 1}, []),
}


def invoke(*args):
    from segadv_tui import cli

    cli._register_commands()
    return CliRunner().invoke(cli.app, [str(a) for a in args])


@pytest.fixture(scope="module")
def folder(tmp_path_factory) -> Path:
    return make_dataset(tmp_path_factory.mktemp("decathlon") / "Dataset001_Tiny")


@pytest.fixture(scope="module")
def trained(folder, tmp_path_factory) -> dict[str, Path]:
    """Each kind's checkpoint, trained by ``segadv train`` on the folder (one epoch, 32 px)."""
    out = tmp_path_factory.mktemp("trained")
    checkpoints = {}
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("SEGADV_CACHE", str(out / "cache"))
        for kind, (model, spec, options) in MODELS.items():
            (out / f"{kind}.json").write_text(json.dumps(spec))
            checkpoint = out / f"{kind}.safetensors"
            result = invoke(
                "train", "--model", model, "--model-spec", out / f"{kind}.json", "--encoder-weights", "none",
                "--img-size", "32", "--batch-size", "4", "--workers", "0", "--epochs", "1", "--data", folder,
                "--slice-axis", "axial", "--out", checkpoint, *options,
            )  # fmt: skip
            assert result.exit_code == 0, result.output
            assert all(name in result.output for name in NAMES), result.output  # the epoch's validation DSC
            checkpoints[kind] = checkpoint
    return checkpoints


@pytest.fixture()
def cli(run, monkeypatch, tmp_path):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    return run


def rows(path: Path) -> list[dict]:
    with open(path, newline="") as file:
        return list(csv.DictReader(file))


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_train_records_the_kind_and_the_data_labels(trained, kind):
    meta = read_checkpoint_meta(trained[kind])
    labels = checkpoint_labels(trained[kind], meta)
    assert (labels.kind, list(labels.names), list(labels.titles.values())) == (kind, NAMES, TITLES)
    assert meta["train_args"]["output"] == {"sigmoid": "sigmoid", "softmax": None}[kind]  # softmax: the data's default
    assert meta["train_args"]["slice_axis"] == 2


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_attack_robust_table_and_transfer_name_the_data_labels(cli, folder, trained, kind, tmp_path):
    checkpoint = trained[kind]
    attack = cli("attack", "-c", checkpoint, "--data", folder, "--eps", "0.02", "--json", "a.json", "--csv", "a.csv")
    assert attack.exit_code == 0, attack.output
    payload = json.loads((tmp_path / "a.json").read_text())
    assert payload["labels"]["kind"] == kind and [label["name"] for label in payload["labels"]["labels"]] == NAMES
    assert list(payload["summary"]["dsc_clean"]) == NAMES and payload["rows"]
    assert all(row["slice_id"].split("_")[1][0] == "z" for row in payload["rows"])  # axial by default
    assert {f"dsc_clean_{name}" for name in NAMES} <= set(rows(tmp_path / "a.csv")[0])
    assert all(title in attack.stdout for title in TITLES)

    robust = cli("robust", "-c", checkpoint, "--data", folder, "--method", "fgsm", "--eps", "0,0.02", "-o", "r")
    assert robust.exit_code == 0, robust.output
    header = set(rows(tmp_path / "r" / "robust.csv")[0])
    assert all(any(name in column for column in header) for name in NAMES), header
    assert all(title in robust.stdout for title in TITLES)
    robust_json = json.loads((tmp_path / "r" / "robust.json").read_text())
    assert [label["name"] for label in robust_json["labels"]["labels"]] == NAMES

    table = cli(
        "table",
        "-c",
        checkpoint,
        "--data",
        folder,
        "--losses",
        "bce,dice",
        "--json",
        "t.json",
        "--csv",
        "t.csv",
        "--md",
        "t.md",
    )
    assert table.exit_code == 0, table.output
    # Table II's table and CSV are means over the labels, as the paper's, and its caption names them; its JSON
    # keys each label's scores.
    averaged = "(mean over Grey matter, white-matter)"
    assert averaged in (tmp_path / "t.md").read_text() and averaged in " ".join(table.stdout.split())
    table_json = json.loads((tmp_path / "t.json").read_text())
    assert table_json["labels"]["kind"] == kind
    assert list(table_json["rows"][0]["summaries"]["bce"]["dsc_clean"]) == NAMES

    # A second checkpoint of the same labels and kind: a real small U-Net, untrained.
    torch.manual_seed(0)
    other = save_checkpoint(
        tmp_path / "other.safetensors", build_model("small", labels=open_dataset(folder, kind=kind).labels), img_size=32
    )
    transfer = cli("transfer", "-c", checkpoint, "-c", other, "--data", folder, "--eps", "0.02", "-o", "x")
    assert transfer.exit_code == 0, transfer.output
    # Its table is of means over the labels, which its caption names; the CSV and JSON key each label's scores.
    assert averaged in " ".join(transfer.stdout.split())
    cells = rows(tmp_path / "x" / "transfer.csv")
    assert len(cells) == 4 and all(f"dsc_adv_{name}" in cells[0] for name in NAMES), cells[0]
    assert json.loads((tmp_path / "x" / "transfer.json").read_text())["labels"]["kind"] == kind


@pytest.mark.parametrize(("axis", "letter"), [("coronal", "y"), ("0", "x"), ("axial", "z")])
def test_slice_axis_reaches_the_reader(cli, folder, trained, axis, letter, tmp_path):
    result = cli(
        "attack", "-c", trained["softmax"], "--data", folder, "--slice-axis", axis, "--all-slices", "--json", "a.json"
    )
    assert result.exit_code == 0, result.output
    payload = json.loads((tmp_path / "a.json").read_text())
    expected = [r.id for r in open_dataset(folder, slice_axis="xyz".index(letter)).split()[1]]
    assert [row["slice_id"] for row in payload["rows"]] == expected and expected[0].split("_")[1][0] == letter


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--slice-axis", "diagonal"],
            "error: --slice-axis 'diagonal': expected axial (2), coronal (1) or sagittal (0)",
        ),
        (["--slice-axis", "3"], "error: --slice-axis '3': expected axial (2), coronal (1) or sagittal (0)"),
    ],
)
def test_a_bad_slice_axis_is_one_line(cli, folder, trained, args, message):
    checkpoint = ["-c", trained["softmax"]]
    for command in (
        ["attack"], ["sweep"], ["table"], ["figure"], ["robust"], ["transfer", *checkpoint], ["universal"],
        ["study", "luminosity"], ["certify"], ["corrupt"],
    ):  # fmt: skip
        result = cli(*command, *checkpoint, "--data", folder, *args)
        assert (result.exit_code, result.stderr.strip().splitlines()) == (2, [message]), command
    result = cli("train", "--model", "small", "--encoder-weights", "none", "--data", folder, *args)
    assert (result.exit_code, result.stderr.strip().splitlines()) == (2, [message])


def test_slice_axis_on_uw_madison_data_is_one_line(cli, tiny_demo):
    result = cli("attack", "--data", tiny_demo, "--slice-axis", "coronal", "--limit", "1")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --slice-axis cuts a Decathlon folder's volumes, but '{tiny_demo}' holds UW-Madison slices; "
        "leave --slice-axis out"
    ]


def test_train_output_softmax_on_overlapping_labels_is_one_line(cli, tiny_demo):
    result = cli("train", "--model", "small", "--encoder-weights", "none", "--data", tiny_demo, "--output", "softmax")
    assert result.exit_code == 2
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith("error: --output softmax: ") and "large_bowel, small_bowel, stomach (sigmoid)" in line
    bad = cli("train", "--model", "small", "--encoder-weights", "none", "--output", "logits")
    assert bad.exit_code == 2 and bad.stderr.strip() == "error: unknown --output 'logits'; choose from sigmoid, softmax"


def test_a_checkpoint_of_the_other_kind_is_refused_naming_both(cli, tmp_path, trained):
    """A softmax checkpoint on data whose labels are regions (sigmoid only): the data opens as its own kind
    and the refusal names both sets."""
    root = make_dataset(tmp_path / "regions", labels={"background": 0, "Grey matter": [1, 2], "white-matter": 2})
    result = cli("attack", "-c", trained["softmax"], "--data", root)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: softmax.safetensors segments grey_matter, white_matter (softmax), but data {root} holds "
        "grey_matter, white_matter (sigmoid); use a checkpoint trained on this data's labels"
    ]


@pytest.mark.parametrize("kind", ["sigmoid", "softmax"])
def test_the_explorer_opens_the_folder_with_either_checkpoint(folder, trained, kind, monkeypatch, tmp_path):
    """The real app on the Decathlon folder and a checkpoint trained on it, sigmoid or softmax: the data
    takes the checkpoint's kind, the first frame comes, and the Scores table names dataset.json's labels."""
    from tui_pilot import first_frame, make_app

    from segadv_tui.widgets.scores import ScoresTable

    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))

    async def scenario():
        app = make_app(folder, trained[kind], slice_axis=1)
        async with app.run_test(size=(160, 48)) as pilot:
            await first_frame(pilot, app)
            state = app.explorer.state
            assert state.dataset.labels.kind == kind and state.dataset.slice_axis == 1
            assert state.frame.slice_id.split("_")[1][0] == "y"  # coronal
            table = app.query_one(ScoresTable)
            shown = [str(table.get_row(name)[0]) for name in NAMES]
            assert shown == TITLES
            assert all(table.cell_text(name, "clean") for name in NAMES)
            assert not [message for severity, message in app.notices if severity == "error"], app.notices

    asyncio.run(scenario())


def _resume_sigmoid_run(cli, folder, trained, *options):
    """The sigmoid run's resume file, resumed with ``options``: (its path, the result)."""
    model, _, _ = MODELS["sigmoid"]
    resume = trained["sigmoid"].with_name("sigmoid.resume.pt")
    result = cli(
        "train", "--model", model, "--model-spec", trained["sigmoid"].with_name("sigmoid.json"),
        "--encoder-weights", "none", "--img-size", "32", "--batch-size", "4", "--workers", "0", "--epochs", "2",
        "--data", folder, "--out", "again.safetensors", "--resume", resume, *options,
    )  # fmt: skip
    return resume, result


def test_resuming_with_the_other_output_is_one_line(cli, folder, trained):
    """The sigmoid run's resume file, resumed as a softmax run (no --output: the data's default)."""
    resume, result = _resume_sigmoid_run(cli, folder, trained)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {resume}: was saved by a run whose model segments grey_matter, white_matter (sigmoid), not "
        "grey_matter, white_matter (softmax); resume with that run's --data and --output"
    ]


def test_resuming_along_another_slice_axis_is_one_line(cli, folder, trained):
    """The sigmoid run (axial slices) resumed with coronal ones: other slices, named as such."""
    resume, result = _resume_sigmoid_run(cli, folder, trained, "--output", "sigmoid", "--slice-axis", "coronal")
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        f"error: {resume}: was saved by a run with slice axis 2, not 1; resume with that run's --slice-axis"
    ]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--slice-axis", "up"], "error: --slice-axis 'up': expected axial (2), coronal (1) or sagittal (0)"),
        (
            ["--slice-axis", "1"],
            "error: --slice-axis cuts a Decathlon folder's volumes, but {demo} is not one; leave it out",
        ),
        (
            ["--slice-axis", "1", "--image", "{png}"],
            "error: --slice-axis cuts a Decathlon folder's volumes, but --image {png} is not one; leave it out",
        ),
    ],
)  # fmt: skip
def test_the_explorer_checks_slice_axis_before_it_starts(folder, tiny_demo, args, message):
    """segadv-tui's argument check: one line and exit 2, before the app (which needs a terminal) starts."""
    from segadv_tui.launch import command

    png = next((tiny_demo / "train").rglob("*.png"))
    data = ["--data", str(folder if "up" in args else tiny_demo)] if "--image" not in args else []
    shown = [arg.format(png=png) for arg in args]
    result = CliRunner().invoke(command, [*data, *shown])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [message.format(demo=tiny_demo, png=png)]


def test_train_cuts_the_volumes_along_slice_axis(cli, folder, tmp_path):
    """Two training cases of 12 x 10 x 6 voxels: 12 axial slices, 20 coronal ones, 24 sagittal ones."""
    train, _ = open_dataset(folder).split()
    assert len({record.case for record in train}) == 2
    for axis, number, slices in (("coronal", 1, 20), ("sagittal", 0, 24)):
        out = tmp_path / f"{axis}.safetensors"
        result = cli(
            "train", "--model", "small", "--encoder-weights", "none", "--img-size", "32", "--batch-size", "8",
            "--workers", "0", "--epochs", "1", "--data", folder, "--slice-axis", axis, "--out", out,
        )  # fmt: skip
        assert result.exit_code == 0, result.output
        assert f"{slices} training slices" in result.output, result.output
        assert read_checkpoint_meta(out)["train_args"]["slice_axis"] == number
