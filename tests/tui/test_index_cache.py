"""The explorer's index cache (``segadv_tui.index_cache``) on real trees: a second open comes from the cache
and equals a fresh index; a slice file added, removed or renamed, or train.csv changed, is indexed again;
a damaged entry is indexed again; old entries are pruned. The opening slice kept beside an index opens the
next start before the index is read."""

from __future__ import annotations

import os
import shutil

import pytest

from core.data.gitract import open_dataset
from segadv_tui.index_cache import KEEP, OPENING, cached_opening, entry_path, index_key, load_index, save_index
from segadv_tui.state import opening_slice


@pytest.fixture()
def tree(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    root = tmp_path / "data"
    shutil.copytree(tiny_demo, root)
    return root


def indexed(root, test_fraction=0.1):
    dataset, key = load_index(root)
    assert dataset is None
    dataset = open_dataset(root)
    save_index(root, key, dataset, (test_fraction, opening_slice(dataset.records, test_fraction)))
    return dataset


def test_a_second_open_is_the_cached_index_and_equals_a_fresh_one(tree):
    fresh = indexed(tree)
    cached, _ = load_index(tree)
    assert cached is not None and cached is not fresh
    assert [r.id for r in cached.records] == [r.id for r in open_dataset(tree).records]
    assert cached.fingerprint() == open_dataset(tree).fingerprint()
    record = cached.records[0]
    image, masks = record.load(64)
    assert image.shape == (64, 64) and masks.shape[-2:] == (64, 64)


def test_the_opening_slice_kept_beside_the_index_is_the_index_choice_while_the_tree_and_split_stay(tree):
    dataset = indexed(tree, test_fraction=0.25)
    key = index_key(tree)
    assert cached_opening(tree, key, 0.25) == opening_slice(dataset.records, 0.25)
    assert cached_opening(tree, key, 0.1) is None  # another split: the index decides
    assert cached_opening(tree, "another tree's key", 0.25) is None
    entry = entry_path(tree.absolute()).with_suffix(OPENING)
    entry.write_bytes(b"\x80 not a pickle")
    assert cached_opening(tree, key, 0.25) is None


@pytest.mark.parametrize("change", ["add", "remove", "rename", "csv"])
def test_a_changed_tree_is_indexed_again(tree, change):
    first = indexed(tree)
    record = first.records[0]
    if change == "add":
        os.link(record.path, record.path.with_name("slice_0999" + record.path.name[len("slice_0000") :]))
    elif change == "remove":
        record.path.unlink()
    elif change == "rename":
        record.path.rename(record.path.with_name("slice_0998" + record.path.name[len("slice_0000") :]))
    else:
        with (tree / "train.csv").open("a") as file:
            file.write("\n")
    dataset, _ = load_index(tree)
    assert dataset is None
    assert cached_opening(tree, index_key(tree), 0.1) is None  # nor its opening slice


def test_a_damaged_entry_is_indexed_again_and_saving_repairs_it(tree):
    indexed(tree)
    entry = entry_path(tree.absolute())
    entry.write_bytes(entry.read_bytes()[:100])
    assert load_index(tree)[0] is None
    indexed(tree)
    assert load_index(tree)[0] is not None


def test_only_the_latest_entries_are_kept(tiny_demo, tmp_path, monkeypatch):
    monkeypatch.setenv("SEGADV_CACHE", str(tmp_path / "cache"))
    roots = []
    for index in range(KEEP + 2):
        root = tmp_path / f"data{index}"
        os.symlink(tiny_demo, root)  # another root, the same tree
        roots.append(root)
        indexed(root)
    assert len(list((tmp_path / "cache" / "index").glob("*.pickle"))) == KEEP
    assert len(list((tmp_path / "cache" / "index").glob(f"*{OPENING}"))) == KEEP
    assert load_index(roots[-1])[0] is not None


@pytest.mark.parametrize("collecting", [True, False])
def test_loading_leaves_the_cyclic_collector_as_it_found_it(tree, collecting):
    import gc

    indexed(tree)
    (gc.enable if collecting else gc.disable)()
    try:
        cached, _ = load_index(tree)
        damaged = entry_path(tree)
        damaged.write_bytes(damaged.read_bytes()[:100])
        assert cached is not None and load_index(tree)[0] is None  # a damaged entry too
        assert gc.isenabled() is collecting
    finally:
        gc.enable()
