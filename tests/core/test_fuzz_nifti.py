"""The NIfTI reader fuzzed: mutated headers and cut files, written from a real NIfTI volume with a header
extension, give a volume or a ``SegadvError`` in one line, never another exception, never more than
``MEMORY_BOUND`` (tests/hostile.py). ``SEGADV_FUZZ_EXAMPLES`` sets the count (as test_fuzz_readers.py)."""

from __future__ import annotations

import gzip
import os
import tempfile
from datetime import timedelta
from functools import cache
from pathlib import Path

import nibabel as nib
import numpy as np
from hostile import result_or_refusal, unique_path
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from core.data.nifti import read_header, read_volume

EXAMPLES = int(os.environ.get("SEGADV_FUZZ_EXAMPLES", "60"))
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=timedelta(seconds=5),
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
)
FOLDER = Path(tempfile.mkdtemp(prefix="segadv-fuzz-nifti-"))


@cache
def original() -> bytes:
    """A small real volume (LPS, int16) with one header extension, as stored uncompressed."""
    image = nib.Nifti1Image(np.arange(6 * 5 * 4, dtype=np.int16).reshape(6, 5, 4), np.diag([-1.0, -2.0, 3.0, 1.0]))
    image.header.extensions.append(nib.nifti1.Nifti1Extension(6, b"fuzzed"))
    path = FOLDER / "original.nii"
    nib.save(image, path)
    return path.read_bytes()


def read_both(path: Path):
    header = read_header(path)
    return header, read_volume(path)


edits = st.lists(st.tuples(st.integers(0, 420), st.integers(0, 255)), min_size=1, max_size=8)


@FUZZ
@given(edits=edits, cut=st.one_of(st.none(), st.integers(0, 700)), compressed=st.booleans())
def test_mutated_nifti_files_are_read_or_refused_in_one_line(edits, cut, compressed):
    data = bytearray(original())
    for position, value in edits:
        data[position] = value
    data = data[:cut] if cut is not None else data
    suffix = ".nii.gz" if compressed else ".nii"
    path = unique_path(FOLDER, suffix)
    path.write_bytes(gzip.compress(bytes(data)) if compressed else bytes(data))
    outcome = result_or_refusal(read_both, path)
    if not isinstance(outcome, Exception):
        header, volume = outcome
        assert volume.shape == header.shape or volume.shape[:3] == header.shape


json_values = st.recursive(
    st.none() | st.booleans() | st.integers(-5, 70000) | st.text(max_size=50),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=30), inner, max_size=6),
    max_leaves=20,
)


@FUZZ
@given(labels=json_values, extra=st.dictionaries(st.sampled_from(["file_ending", "training", "modality"]), json_values))
def test_any_dataset_json_labels_give_a_label_set_or_one_line(labels, extra):
    import json

    from core.data.dataset_json import read_description

    root = Path(tempfile.mkdtemp(dir=FOLDER))
    (root / "dataset.json").write_text(json.dumps({"labels": labels, **extra}))
    outcome = result_or_refusal(read_description, root)
    if not isinstance(outcome, Exception):
        assert len(outcome.labels) == len(outcome.values.channels) >= 1
