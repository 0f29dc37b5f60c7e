"""The explorer's slice loading takes a Decathlon record as it takes a UW-Madison one (segadv_tui.frames)."""

from __future__ import annotations

import numpy as np
from decathlon_files import make_dataset

from core.data.open import open_dataset
from segadv_tui.frames import SliceCache, load_slice_data


def test_a_decathlon_record_loads_with_its_masks(tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    record = open_dataset(make_dataset(tmp_path / "d")).by_id("b_z004")
    data = load_slice_data(record, 32)
    image, masks = record.load(32)
    assert data.id == "b_z004" and np.array_equal(data.image, image) and np.array_equal(data.truth, masks)
    assert SliceCache().get(record, 32).truth.shape == (2, 32, 32)
