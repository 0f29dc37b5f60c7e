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


def test_the_explorer_opens_a_decathlon_folder(tmp_path, monkeypatch):
    """The real app on a Decathlon folder and a checkpoint of its labels: the slice tree is case -> slices
    (no days), the first frame comes, and the legend names the data's labels."""
    import asyncio

    import torch
    from tui_pilot import first_frame, make_app

    from core.models.checkpoints import save_checkpoint
    from core.models.registry import build_model
    from segadv_tui.widgets.slices import SliceBrowser

    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    root = make_dataset(tmp_path / "d")
    torch.manual_seed(0)
    checkpoint = save_checkpoint(
        tmp_path / "m.safetensors", build_model("small", labels=open_dataset(root).labels), img_size=32
    )

    async def scenario():
        app = make_app(root, checkpoint)
        async with app.run_test(size=(160, 48)) as pilot:
            await first_frame(pilot, app)
            tree = app.screen.query_one(SliceBrowser)
            cases = [str(node.label) for node in tree.root.children]
            assert cases and all("day" not in case for case in cases)
            legend = " ".join(str(w.render()) for w in app.screen.query("#legend"))
            names = open_dataset(root).labels.titles.values()
            assert all(title.lower() in legend.lower() for title in names), legend

    asyncio.run(scenario())


def test_the_data_takes_the_kind_of_the_checkpoint_it_was_started_with(tmp_path, tiny_demo):
    """``ExplorerOptions.label_kind``: --checkpoint's kind for a Decathlon folder that can take it; None (the
    data's own) without --checkpoint, for UW-Madison data, and for regions under a softmax checkpoint."""
    import torch

    from core.labels import label_set
    from core.models.checkpoints import save_checkpoint
    from core.models.registry import build_model
    from segadv_tui.state import ExplorerOptions

    root = make_dataset(tmp_path / "d")
    regions = make_dataset(tmp_path / "r", labels={"background": 0, "Grey matter": [1, 2], "white-matter": 2})
    torch.manual_seed(0)
    saved = {
        kind: save_checkpoint(
            tmp_path / f"{kind}.safetensors",
            build_model("small", labels=label_set(["grey_matter", "white_matter"], kind)),
            img_size=32,
        )
        for kind in ("sigmoid", "softmax")
    }
    assert ExplorerOptions(data=root, checkpoint=saved["sigmoid"]).label_kind() == "sigmoid"
    assert ExplorerOptions(data=root, checkpoint=saved["softmax"]).label_kind() == "softmax"
    assert ExplorerOptions(data=regions, checkpoint=saved["sigmoid"]).label_kind() == "sigmoid"
    assert ExplorerOptions(data=regions, checkpoint=saved["softmax"]).label_kind() is None
    assert ExplorerOptions(data=root).label_kind() is None
    assert ExplorerOptions(data=tiny_demo, checkpoint=saved["sigmoid"]).label_kind() is None
