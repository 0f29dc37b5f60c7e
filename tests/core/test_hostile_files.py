"""Hostile files (issue 23): every value a checkpoint, a delta, a slice PNG or train.csv holds is checked
before it is used, and a bad one is one line naming the file, the key and the value (exit 2 from the
CLI), never a bug report or an allocation the file commanded."""

from __future__ import annotations

import contextlib
import json
import re
import struct
import tracemalloc
import zlib

import numpy as np
import pytest
import torch
from hostile import DEMO_CHECKPOINT, DEMO_DELTA, hostile_checkpoints, safetensors_parts, with_meta, write_safetensors

from core.attacks.universal import DeltaError, UniversalDelta, load_delta, save_delta
from core.data.gitract import DataError, GITractDataset, read_slice
from core.data.rle import RLEError, rle_decode
from core.models.checkpoints import CheckpointError, read_checkpoint_meta, read_safetensors_meta


def one_error_line(result, path) -> str:
    assert result.exit_code == 2, result.output
    (line,) = result.stderr.strip().splitlines()
    assert line.startswith(f"error: {path}: "), line
    return line


# -- issue 23's table, through the real CLI ---------------------------------------------------------------

TABLE = {
    "header length 2^40": "header of 1099511627776 bytes",
    "tensor offsets past the end": "the header promises",
    "model os.system": "metadata model = 'os.system': expected a segadv model",
    "classes a, b": "metadata classes = ['a', 'b']: expected ['large_bowel', 'small_bowel', 'stomach']",
    "train_args nested 100,000 deep": "metadata train_args is JSON nested more than 16 deep",
    "img_size 1000000000": "metadata img_size = 1000000000: expected a whole number of pixels from 1 to 4096",
    "img_size 40000": "metadata img_size = 40000: expected a whole number of pixels from 1 to 4096",
}


@pytest.fixture(scope="module")
def hostile(tmp_path_factory):
    return hostile_checkpoints(tmp_path_factory.mktemp("hostile"))


@pytest.mark.parametrize("name", TABLE)
def test_each_file_of_the_table_is_one_line_and_exit_2(run, hostile, tiny_demo, name):
    path = hostile[name]
    line = one_error_line(run("attack", "-c", path, "--data", tiny_demo, "--limit", "1"), path)
    assert TABLE[name] in line


# -- every checkpoint metadata value ---------------------------------------------------------------------

BAD_META = [
    ("format", '"segadv-checkpoint/9"', "format = 'segadv-checkpoint/9': not a file this segadv reads"),
    ("arch", '"FPN"', "arch = 'FPN': model 'small' is Unet"),
    ("encoder", '"resnet34"', "encoder = 'resnet34': model 'small' is mobilenet_v2"),
    ("title", "[1]", "title = [1]: expected a string"),
    ("params", '"4M"', "params = '4M': expected a parameter count"),
    ("in_channels", "true", "in_channels = True: expected 1"),
    ("in_channels", "3", "in_channels = 3: expected 1"),
    ("img_size", "128.0", "img_size = 128.0: expected a whole number of pixels"),
    ("img_size", "0", "img_size = 0: expected a whole number of pixels from 1 to 4096"),
    ("normalisation", '"sepia"', "normalisation = 'sepia': expected one of none, imagenet"),
    ("input_transposed", '"yes"', "input_transposed = 'yes': expected true or false"),
    ("train_args", "[1, 2]", "train_args = [1, 2]: expected an object of training arguments"),
    ("train_args", '{"lr": {"deep": 1}}', "train_args = {'lr': {'deep': 1}}: expected an object of training"),
    ("epoch", "-1", "epoch = -1: expected an epoch number or null"),
    ("val_dsc", '{"mean": "high"}', "val_dsc = {'mean': 'high'}: expected an object of DSC values"),
    ("val_dsc", '{"mean": 7}', "val_dsc = {'mean': 7}: expected an object of DSC values from 0 to 1"),
    ("data_fingerprint", "5", "data_fingerprint = 5: expected a string or null"),
    ("segadv_version", "1", "segadv_version = 1: expected a version string"),
    ("dtype", '"int8"', "dtype = 'int8': expected one of float32, float16"),
    ("defence", '"pgd"', "defence = 'pgd': expected an object or null"),
    ("defence", '{"method": "pgd"}', "defence lacks loss, eps, steps"),
    (
        "defence",
        '{"method": "pgd", "loss": "bce", "eps": 0.01, "steps": "3", "step_size": 0.01, "ratio": 1, '
        '"warmup_epochs": 0, "check": null, "collapsed_epochs": []}',
        "defence.steps = '3': expected a count",
    ),
    (
        "defence",
        '{"method": "pgd", "loss": "bce", "eps": 0.01, "steps": 3, "step_size": 0.01, "ratio": 1, '
        '"warmup_epochs": 0, "check": {"eps": "x"}, "collapsed_epochs": []}',
        "defence.check lacks slices",
    ),
    ("val_dsc", "NaN", "val_dsc = nan: expected an object of DSC values"),
    ("epoch", "1" * 5000, "metadata epoch is not JSON"),
    ("val_dsc", '{"mean": 1' + "0" * 400 + "}", "val_dsc = {'mean': 1000"),  # too large for a float: found by fuzzing
    ("odd\nkey", "[", "metadata 'odd\\nkey' is not JSON"),
    ("train_args", '"' + "x" * (1 << 21) + '"', "metadata train_args is 2097154 bytes of JSON; segadv reads at most"),
]


@pytest.mark.parametrize("key, raw, expected", BAD_META, ids=[f"{key}={raw[:20]}" for key, raw, _ in BAD_META])
def test_every_metadata_value_is_checked_and_named(tmp_path, key, raw, expected):
    header, size = safetensors_parts(DEMO_CHECKPOINT)
    path = write_safetensors(tmp_path / "edited.safetensors", with_meta(header, **{key: raw}), size)
    for read in (read_checkpoint_meta, read_safetensors_meta):
        with pytest.raises(CheckpointError) as caught:
            read(path)
        message = str(caught.value)
        assert message.startswith(f"{path}: ") and expected in message and "\n" not in message
        assert len(message) < 400


def test_the_image_size_is_what_the_architecture_takes(tmp_path):
    """smp's FPN and U-Net++ need a multiple of 32 (their encoders halve the input five times); its U-Net
    pads inside and takes any size up to the bound."""
    header, size = safetensors_parts(CHECKPOINTS_FPN)
    for img_size, refused in ((100, True), (96, False), (4096, False), (4128, True)):
        path = write_safetensors(
            tmp_path / f"fpn{img_size}.safetensors", with_meta(header, img_size=str(img_size)), size
        )
        if refused:
            with pytest.raises(
                CheckpointError,
                match=rf"img_size = {img_size}: expected a multiple of 32 from 32 to 4096 "
                r"\(model 'small-fpn', smp FPN\)",
            ):
                read_checkpoint_meta(path)
        else:
            assert read_checkpoint_meta(path)["img_size"] == img_size
    header, size = safetensors_parts(DEMO_CHECKPOINT)
    path = write_safetensors(tmp_path / "unet100.safetensors", with_meta(header, img_size="100"), size)
    assert read_checkpoint_meta(path)["img_size"] == 100


CHECKPOINTS_FPN = DEMO_CHECKPOINT.with_name("demo_small_fpn.safetensors")


def test_every_bundled_file_passes_the_checks():
    for path in sorted(DEMO_CHECKPOINT.parent.glob("*.safetensors")):
        meta = read_safetensors_meta(path)
        if path == DEMO_DELTA:
            assert load_delta(path).eps == meta["eps"]
        else:
            assert read_checkpoint_meta(path) == meta


def test_segadv_info_of_a_bad_defence_is_one_line_not_a_bug(run, tmp_path):
    """``segadv info`` formats the defence's numbers: a string there was a TypeError (a bug report)."""
    header, size = safetensors_parts(DEMO_CHECKPOINT.with_name("demo_small_at.safetensors"))
    defence = json.loads(header["__metadata__"]["defence"])
    defence["step_size"] = "0.015"
    path = write_safetensors(tmp_path / "at.safetensors", with_meta(header, defence=json.dumps(defence)), size)
    line = one_error_line(run("info", path), path)
    assert "metadata defence.step_size = '0.015': expected a number" in line


# -- the safetensors header itself -------------------------------------------------------------------------


@pytest.mark.parametrize(
    "edit, expected",
    [
        (
            lambda h: h.update(x={"dtype": "F32", "shape": [1]}),
            "tensor 'x' = {'dtype': 'F32', 'shape': [1]}: not a safetensors entry",
        ),
        (lambda h: h.update(x={"dtype": "F32", "shape": [1], "data_offsets": [8, 4]}), "tensor 'x'"),
        (lambda h: h.update(x={"dtype": "F32", "shape": ["a"], "data_offsets": [0, 4]}), "tensor 'x'"),
        (lambda h: h.update(x=[1, 2]), "tensor 'x' = [1, 2]: not a safetensors entry"),
        (lambda h: h.update(__metadata__=["format"]), "__metadata__ = ['format']: not a map of strings to strings"),
        (lambda h: h["__metadata__"].update(img_size=128), "__metadata__ = {"),
        (lambda h: h.update(x=json.loads("[" * 500 + "]" * 500)), "its header is JSON nested more than 16 deep"),
    ],
)
def test_malformed_header_entries_are_named(tmp_path, edit, expected):
    header, size = safetensors_parts(DEMO_CHECKPOINT)
    edit(header)
    path = write_safetensors(tmp_path / "h.safetensors", header, size)
    with pytest.raises(CheckpointError) as caught:
        read_checkpoint_meta(path)
    assert str(caught.value).startswith(f"{path}: ") and expected in str(caught.value)


def test_a_header_nested_past_the_interpreter_limit_is_a_bad_file(tmp_path):
    text = b'{"x": ' + b"[" * 100_000 + b"]" * 100_000 + b"}"
    path = write_safetensors(tmp_path / "deep.safetensors", text, 0)
    with pytest.raises(CheckpointError, match="its header is JSON nested more than 16 deep"):
        read_checkpoint_meta(path)


# -- universal perturbations ---------------------------------------------------------------------------------

BAD_DELTA_META = [
    ("eps", '"0.03"', "metadata eps = '0.03': expected a number from 0 to 1"),
    ("eps", "2", "metadata eps = 2: expected a number from 0 to 1"),
    ("organs", '["Liver!"]', "metadata organs = ['Liver!']: expected a list of distinct label names"),
    ("organs", '["stomach", "stomach"]', "metadata organs = ['stomach', 'stomach']"),
    ("img_size", "1000000000", "metadata img_size = 1000000000: expected a whole number of pixels from 1 to 4096"),
    ("img_size", "64", "tensor delta is 'F32' [128, 128]; expected 'F32' [64, 64] (metadata img_size = 64)"),
    ("loss_history", "[" * 100_000 + "]" * 100_000, "metadata loss_history is JSON nested more than 16 deep"),
    ("checkpoint", "7", "metadata checkpoint = 7: expected a string or null"),
]


@pytest.mark.parametrize(
    "key, raw, expected", BAD_DELTA_META, ids=[f"{key}={raw[:20]}" for key, raw, _ in BAD_DELTA_META]
)
def test_every_delta_value_is_checked(tmp_path, key, raw, expected):
    header, _ = safetensors_parts(DEMO_DELTA)
    data = DEMO_DELTA.read_bytes()[-65536:]
    path = write_safetensors(tmp_path / "d.safetensors", with_meta(header, **{key: raw}), data)
    with pytest.raises(DeltaError) as caught:
        load_delta(path)
    assert expected in str(caught.value) and str(path) in str(caught.value)


def test_a_delta_tensor_entry_is_named_in_one_line(tmp_path):  # found by fuzzing: a dtype of "\n"
    header, _ = safetensors_parts(DEMO_DELTA)
    header["delta"]["dtype"] = "\n" * 100
    path = write_safetensors(tmp_path / "d.safetensors", header, DEMO_DELTA.read_bytes()[-65536:])
    with pytest.raises(DeltaError) as caught:
        load_delta(path)
    assert str(caught.value) == (
        f"{path}: tensor delta is '\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n\\n' [128, 128]; "
        f"expected 'F32' [128, 128] (metadata img_size = 128)"
    )


@pytest.mark.parametrize("value", [float("nan"), 0.5])
def test_a_delta_beyond_its_eps_or_not_finite_is_refused(tmp_path, value):
    delta = torch.zeros(8, 8)
    delta[3, 4] = value
    path = save_delta(tmp_path / "d.safetensors", UniversalDelta(delta, 0.03, ("stomach",)))
    with pytest.raises(DeltaError, match=r"the delta reaches (nan|0\.5), beyond its metadata eps = 0\.03"):
        load_delta(path)


# -- foreign .pt files (issue 17): what the file is, never advice to turn the safety off -----------------------


class _RunsCode:
    def __reduce__(self):
        return (print, ("ran",))


def test_a_state_dict_key_with_a_newline_is_quoted(tmp_path):
    from core.models.checkpoints import load_checkpoint

    torch.save({"odd\nkey": torch.zeros(1)}, tmp_path / "w.pt")
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(tmp_path / "w.pt", model_name="small")
    assert "unexpected keys: 'odd\\nkey'" in str(caught.value) and "\n" not in str(caught.value)


def test_random_bytes_are_not_a_torch_file_and_a_code_pickle_is_refused(run, tmp_path, tiny_demo):
    noise = tmp_path / "noise.pt"
    noise.write_bytes(np.random.default_rng(0).integers(0, 256, 4096, dtype=np.uint8).tobytes())
    evil = tmp_path / "evil.pt"
    torch.save({"w": torch.zeros(1), "x": _RunsCode()}, evil)
    for path, expected in (
        (noise, "not a PyTorch file (torch.save writes a zip archive or a pickle"),
        (evil, "refused: it holds a pickled print, and segadv loads tensors and plain data only"),
    ):
        line = one_error_line(run("attack", "-c", path, "--model", "small", "--data", tiny_demo, "--limit", "1"), path)
        assert expected in line and "weights_only" not in line and "trust" not in line


# -- slice PNGs -------------------------------------------------------------------------------------------------


def png(width: int, height: int, idat: bytes) -> bytes:
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def test_a_decompression_bomb_is_refused_before_it_is_decoded(tmp_path):
    """5000 x 5000 zero pixels compress to 25 KB: under Pillow's own bound (89 M pixels), over segadv's
    (2^24), so it is refused from its header, with nothing allocated for it."""
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(5000, 5000, zlib.compress(bytes(5001 * 5000), 9)))
    assert bomb.stat().st_size < 100_000
    huge = tmp_path / "huge.png"
    huge.write_bytes(png(100_000, 100_000, zlib.compress(b"\0" * 1000)))
    for path, size in ((bomb, "5000 x 5000"), (huge, "100000 x 100000")):
        tracemalloc.start()
        try:
            with pytest.raises(
                DataError,
                match=f"^{re.escape(str(path))}: its PNG header says {size} pixels; "
                "segadv reads slices of at most 16777216",
            ):
                read_slice(path)
            peak = tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()
        assert peak < 1 << 20


def test_a_chunk_that_claims_4_gb_makes_no_allocation_for_it(tmp_path):
    """Found by fuzzing: Pillow skips the rest of a chunk with one ``read(length)``, and a file's ``read``
    allocates the 4 GB a damaged length claims before it finds the file is 100 bytes long."""
    data = bytearray(png(8, 8, zlib.compress(b"\0" * 72)))
    at = data.index(b"IDAT") - 4
    data[at : at + 4] = struct.pack(">I", 0xFFFFFF7F)
    path = tmp_path / "long.png"
    path.write_bytes(data)
    tracemalloc.start()
    try:
        with contextlib.suppress(DataError):
            read_slice(path)
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_a_png_cut_inside_its_header_is_not_a_png(tmp_path):  # found by fuzzing: a struct.error
    path = tmp_path / "cut.png"
    path.write_bytes(b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR")
    with pytest.raises(DataError, match="not a PNG file"):
        read_slice(path)


def test_only_png_is_read(tmp_path):
    from PIL import Image

    path = tmp_path / "slice_0001_8_8_1.50_1.50.png"
    Image.fromarray(np.zeros((8, 8), np.uint8)).save(path, format="TIFF")
    with pytest.raises(DataError, match="not a PNG file"):
        read_slice(path)


# -- train.csv and the file names --------------------------------------------------------------------------------


def kaggle_root(tmp_path, rows: str, names=("slice_0001_8_8_1.50_1.50.png",)):
    scans = tmp_path / "root" / "train" / "case1" / "case1_day1" / "scans"
    scans.mkdir(parents=True)
    for name in names:
        (scans / name).write_bytes(png(8, 8, zlib.compress(b"\0" * 72)))
    (tmp_path / "root" / "train.csv").write_text("id,class,segmentation\n" + rows)
    return tmp_path / "root"


def test_numbers_too_long_for_python_in_ids_and_file_names(tmp_path):
    root = kaggle_root(tmp_path, f"case1_day1_slice_{'9' * 5000},stomach,\n")
    with pytest.raises(
        DataError,
        match=r"line 2: id 'case1_day1_slice_9{43}'\.\.\. \(5017 characters\) is not like "
        r"case123_day20_slice_0065$",
    ):
        GITractDataset(root)
    names = (
        f"slice_0001_{'9' * 200}_8_1.50_1.50.png",
        "slice_0002_100000_100000_1.50_1.50.png",
        "slice_0003_8_8_0.00_1.50.png",
    )
    root = kaggle_root(tmp_path / "b", "", names)
    problems = GITractDataset(root).problems
    assert problems == [
        f"train/case1/case1_day1/scans/{names[0]}: not named slice_NNNN_W_H_PW_PH.png; ignored",
        f"train/case1/case1_day1/scans/{names[1]}: file name gives 100000 x 100000 pixels, more than the 16777216 "
        f"segadv reads; ignored",
        f"train/case1/case1_day1/scans/{names[2]}: file name gives a pixel spacing of 0 mm; ignored",
    ]


@pytest.mark.parametrize(
    "token", ["²", "٣", "1_0", "9" * 5000], ids=["superscript", "arabic-indic", "underscore", "5000 digits"]
)
def test_rle_tokens_are_ascii_whole_numbers(token):
    with pytest.raises(RLEError, match="is not an integer|too large for any image"):
        rle_decode(f"1 {token}", 8, 8)


def test_an_rle_for_an_image_beyond_the_bound_is_not_painted():
    with pytest.raises(RLEError, match="mask shape 100000 x 100000 is more than"):
        rle_decode("1 1", 100_000, 100_000)


# -- the explorer's --image and --export-dir, before the app starts ----------------------------------------------


def segadv_tui(tmp_path, *args: str):
    import subprocess
    import sys

    code = "from segadv_tui.launch import main\nmain()"
    return subprocess.run(
        [sys.executable, "-c", code, *args], capture_output=True, text=True, cwd=tmp_path, timeout=120
    )


def test_the_explorer_reads_its_image_before_it_starts(tmp_path):
    bomb = tmp_path / "bomb.png"
    bomb.write_bytes(png(5000, 5000, zlib.compress(bytes(5001 * 5000), 9)))
    result = segadv_tui(tmp_path, "--image", str(bomb))
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [
        f"error: --image: {bomb}: its PNG header says 5000 x 5000 pixels; "
        "segadv reads slices of at most 16777216 pixels"
    ]


def test_the_explorer_refuses_an_export_folder_it_cannot_write(tmp_path):
    import os

    read_only = "/proc/sys"  # read-only even for root, where a chmod would not stop a write
    if not os.path.isdir(read_only) or os.access(read_only, os.W_OK):
        pytest.skip(f"{read_only} is not a read-only folder here")
    result = segadv_tui(tmp_path, "--export-dir", read_only)
    assert result.returncode == 2
    assert result.stderr.strip().splitlines() == [f"error: --export-dir {read_only}: a folder you cannot write to"]


def test_a_file_name_with_a_newline_is_one_problem_line(tmp_path):  # found by fuzzing
    root = kaggle_root(tmp_path, "", ("\n.png",))
    assert GITractDataset(root).problems == [
        "'train/case1/case1_day1/scans/\\n.png': not named slice_NNNN_W_H_PW_PH.png; ignored"
    ]


def test_a_train_csv_with_thousands_of_columns_is_named_in_one_short_line(tmp_path):  # found by fuzzing
    root = kaggle_root(tmp_path, "")
    (root / "train.csv").write_text("id,class,segmentation" + ",x" * 5000 + "\ncase1_day1_slice_0001,stomach,\n")
    with pytest.raises(DataError) as caught:
        GITractDataset(root)
    assert str(caught.value).endswith(
        "line 2: 3 fields, expected 5003 (id, class, segmentation, x, x, x, ... (5003 columns))"
    )


def test_a_file_name_that_is_not_utf8_is_one_problem_line(tmp_path):
    import os

    root = kaggle_root(tmp_path, "", ())
    scans = root / "train" / "case1" / "case1_day1" / "scans"
    (scans / os.fsdecode(b"\xff.png")).write_bytes(b"")
    assert GITractDataset(root).problems == [
        "'train/case1/case1_day1/scans/\\udcff.png': not named slice_NNNN_W_H_PW_PH.png; ignored"
    ]
