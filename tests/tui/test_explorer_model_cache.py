"""The explorer fills the model cache after its first frame and opens the checkpoint from it at the next start,
with the same frame (core.models.compiled)."""

from __future__ import annotations

import numpy as np
from tui_pilot import first_frame, make_app, pilot_test, settle

from core.models.compiled import CompiledSegmenter, cache_key, entry_path
from core.models.registry import GrayscaleSegmenter
from core.paths import demo_checkpoint


async def _first_frame(data):
    app = make_app(data, demo_checkpoint())
    async with app.run_test(size=(160, 48)) as pilot:
        await first_frame(pilot, app)
        await settle(pilot, app)  # the eps curve, and the model cache's trace
        return type(app.explorer.attacker.model), app.explorer.state.frame.result, app.notices


@pilot_test
async def test_the_second_start_attacks_the_cached_model_and_shows_the_same_frame(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    entry = entry_path(cache_key(demo_checkpoint(), "cpu"), ".pt")
    assert not entry.exists()
    built, first, notices = await _first_frame(tiny_demo)
    assert built is GrayscaleSegmenter and entry.is_file() and notices == []
    compiled, second, notices = await _first_frame(tiny_demo)
    assert compiled is CompiledSegmenter and notices == []
    assert second.slice_id == first.slice_id
    assert np.array_equal(second.dsc_clean, first.dsc_clean, equal_nan=True)
    assert np.array_equal(second.dsc_adv, first.dsc_adv, equal_nan=True)
    assert np.array_equal(second.pictures.adversarial, first.pictures.adversarial)
