"""The explorer's cache of data set indexes: a Kaggle root indexed once is opened from the cache while its
files have not changed, so a real-scale tree (36,720 slices, 110,160 CSV rows: seconds to read, parse and
check) opens in a fraction of that at the next start.

The key is the tree as the index saw it: train.csv's size and modification time, and those of every
folder down to ``scans/`` (adding, removing or renaming a slice file changes its folder's), with the code
that indexed it (the reader's source file and segadv's version). A stale, unreadable or foreign entry is
read again from the files, and a cache that cannot be written is skipped: the cache only ever saves time.
The entries are pickles in the user's own cache folder (``core.paths.cache_dir()/index``), written
atomically (``core.files``).
"""

from __future__ import annotations

import hashlib
import os
import pickle
import sys
from pathlib import Path

from core.paths import cache_dir
from segadv_tui.gc_pause import paused

KEEP = 8  # entries kept (the most recently written): a data root not opened for a while is indexed again
OPENING = ".opening"  # the suffix of an entry's opening slice (``cached_opening``)


def index_key(root: Path) -> str:
    """The key ``root``'s tree has now (``tree_key`` with the reader's source)."""
    from core.data import gitract

    return tree_key(Path(root).absolute(), gitract.__file__)


def load_index(root: Path, key: str | None = None):
    """(the data set at ``root`` from the cache, or None where it must be indexed from the files; the key
    to save a fresh index under). ``key``: the tree's ``index_key``, where known already."""
    root = Path(root).absolute()  # as given: the cached records carry their paths under it
    key = key or index_key(root)
    try:
        cached = _unpickle(entry_path(root).read_bytes())
    except Exception:  # noqa: BLE001  absent, truncated or from another version: index the files
        return None, key
    if isinstance(cached, dict) and cached.get("key") == key:
        return cached["dataset"], key
    return None, key


def save_index(root: Path, key: str, dataset, opening: tuple[float, object] | None = None) -> None:
    """Keep ``dataset``, indexed from ``root`` whose tree had ``key`` before, unless the tree changed since;
    ``opening``: (a test fraction, the explorer's opening slice under it), kept beside it in a small file
    that the next start reads before the index (``cached_opening``)."""
    root = Path(root).absolute()  # as given: the cached records carry their paths under it
    if index_key(root) != key:  # changed while it was read: this index may be neither
        return
    entry = entry_path(root)
    if opening is not None:
        _write_opening(entry, key, *opening)
    _write(entry, {"key": key, "dataset": dataset})
    _prune(entry.parent)


def save_opening(root: Path, key: str, test_fraction: float, record) -> None:
    """Keep ``record``, the opening slice under ``test_fraction``, beside ``root``'s cached index (saved
    under another split), unless the tree changed since it had ``key``."""
    root = Path(root).absolute()
    if index_key(root) == key:
        _write_opening(entry_path(root), key, test_fraction, record)


def _write_opening(entry: Path, key: str, test_fraction: float, record) -> None:
    _write(entry.with_suffix(OPENING), {"key": key, "test_fraction": test_fraction, "record": record})


def cached_opening(root: Path, key: str, test_fraction: float):
    """The opening slice kept with ``root``'s index (``save_index``) where the tree is still as it was
    (``key``) and the split the same, else None: a real-scale tree's first frame need not wait for its
    37 MB index."""
    try:
        cached = _unpickle(entry_path(Path(root).absolute()).with_suffix(OPENING).read_bytes())
    except Exception:  # noqa: BLE001  absent, truncated or from another version: the index decides
        return None
    if isinstance(cached, dict) and cached.get("key") == key and cached.get("test_fraction") == test_fraction:
        return cached.get("record")
    return None


def _unpickle(data: bytes):
    """``pickle.loads`` with the cyclic collector paused: a real-scale index is some 300,000 objects, and the
    collections their allocation sets off walk them again and again (half the time of loading, measured).
    The pause is counted with the launch's (``gc_pause``), which may end in another thread meanwhile."""
    with paused():
        return pickle.loads(data)


def entry_path(root: Path) -> Path:
    name = hashlib.sha256(str(root).encode()).hexdigest()[:20]
    return cache_dir() / "index" / f"{name}.pickle"


def tree_key(root: Path, reader: str) -> str:
    """A hash of what the index depends on (see the module's doc); cheap: a few hundred stat calls."""
    digest = hashlib.sha256()
    from core import __version__

    digest.update(f"{__version__} {sys.version_info[:2]} {root}\n".encode())
    for path in (Path(reader), root / "train.csv", root / "train"):
        digest.update(_stat_line(path))
    for case in _folders(root / "train"):
        digest.update(_stat_line(case))
        for day in _folders(case):
            digest.update(_stat_line(day))
            digest.update(_stat_line(day / "scans"))
    return digest.hexdigest()


def _stat_line(path: Path) -> bytes:
    try:
        stat = os.stat(path)
    except OSError:
        return f"{path} -\n".encode()
    return f"{path} {stat.st_size} {stat.st_mtime_ns} {stat.st_ino}\n".encode()


def _folders(path: Path) -> list[Path]:
    try:
        return sorted(Path(entry.path) for entry in os.scandir(path) if entry.is_dir())
    except OSError:
        return []


def _prune(folder: Path) -> None:
    try:
        for pattern in ("*.pickle", f"*{OPENING}"):
            entries = sorted(folder.glob(pattern), key=lambda path: path.stat().st_mtime_ns, reverse=True)
            for old in entries[KEEP:]:
                old.unlink()
    except OSError:  # another explorer pruned it first
        pass


def _write(entry: Path, payload: dict) -> None:
    from core.files import write_bytes

    try:
        entry.parent.mkdir(parents=True, exist_ok=True)
        write_bytes(entry, pickle.dumps(payload, protocol=pickle.HIGHEST_PROTOCOL))
    except (OSError, pickle.PicklingError):  # a full disk, a read-only home: the next start indexes again
        pass
