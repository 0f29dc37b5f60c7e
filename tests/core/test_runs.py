"""The run index (``core.runs``): records, the results cache's storage, several writers at once, a locked
or damaged index, the checkpoint hash cache and the restricted unpickler. Real SQLite files throughout."""

from __future__ import annotations

import hashlib
import multiprocessing
import os
import pickle
import sqlite3
import time

import numpy as np
import pytest

from core.attacks.config import AttackConfig
from core.results import SliceResult
from core.runs import index as index_module
from core.runs.index import RunIndex, RunIndexError, default_index_path
from core.runs.keys import cache_key, file_sha256
from core.runs.recorder import RunRecorder
from core.runs.stored import StoredResultError, dump_result, load_result

WRITES_PER_PROCESS = 25


def test_the_default_index_follows_segadv_runs_then_xdg(monkeypatch, tmp_path):
    monkeypatch.setenv("SEGADV_RUNS", str(tmp_path / "mine.sqlite"))
    assert default_index_path() == tmp_path / "mine.sqlite"
    monkeypatch.delenv("SEGADV_RUNS")
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    assert default_index_path() == tmp_path / "data" / "segadv" / "runs.sqlite"
    monkeypatch.delenv("XDG_DATA_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert default_index_path() == tmp_path / "home" / ".local" / "share" / "segadv" / "runs.sqlite"


def test_a_record_opens_running_and_closes_with_everything_it_was_given(tmp_path):
    path = tmp_path / "deep" / "runs.sqlite"
    with RunIndex(path) as index:
        run_id = index.open_run("attack", ["segadv", "attack", "--limit", "2"], 100.0, device="cpu", split="test")
        assert index.get(run_id).status == "running"
        payload = {"command": "attack", "rows": [{"slice_id": "a", "dsc": [0.5, None]}]}
        index.update_run(
            run_id, status="done", ended=101.5, summary={"dsc_adv": 0.25}, result_json=payload, files=["x"]
        )
    # a second connection (a new process would be the same) reads what the first wrote
    with RunIndex(path) as index:
        record = index.get(run_id, with_result=True)
        assert index.get(run_id).result_json is None  # not read unless asked for
        assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert (record.command, record.argv, record.status, record.started, record.ended) == (
        "attack",
        ["segadv", "attack", "--limit", "2"],
        "done",
        100.0,
        101.5,
    )
    assert (record.device, record.split, record.summary, record.files) == ("cpu", "test", {"dsc_adv": 0.25}, ["x"])
    assert record.result_json == payload


def test_an_unknown_status_is_refused(tmp_path):
    with RunIndex(tmp_path / "runs.sqlite") as index:
        run_id = index.open_run("attack", ["segadv"], 0.0)
        with pytest.raises(ValueError, match="finished"):
            index.update_run(run_id, status="finished")


def test_the_cache_serves_the_newest_done_result_and_names_the_run_that_computed_it(tmp_path):
    with RunIndex(tmp_path / "runs.sqlite") as index:
        assert index.cached("k") is None
        first = index.open_run("attack", ["segadv"], 10.0)
        index.update_run(first, status="done", cache_key="k", result=b"first")
        failed = index.open_run("attack", ["segadv"], 11.0)
        index.update_run(failed, status="failed", cache_key="k", result=b"never served")
        assert index.cached("k") == (first, 10.0, b"first")
        again = index.open_run("attack", ["segadv"], 12.0, cached_from=first)
        index.update_run(again, status="done", cache_key="k", result=b"first")
        assert index.cached("k") == (first, 10.0, b"first")  # served by `again`, computed by `first`
        assert index.remove([first, 999]) == [first]
        assert index.cached("k") == (again, 12.0, b"first")  # the copy outlives the original
        assert index.cached("other") is None


def _append_records(path: str, writer: int, count: int) -> None:
    """One process's writes: ``count`` records opened and closed, each in its own transactions."""
    for number in range(count):
        with RunIndex(path) as index:
            run_id = index.open_run("attack", [f"writer{writer}", str(number)], time.time())
            index.update_run(run_id, status="done", summary={"writer": writer, "number": number})


def test_two_processes_appending_at_once_lose_nothing(tmp_path):
    path = str(tmp_path / "runs.sqlite")
    RunIndex(path).close()  # made first, as a user's index would be
    context = multiprocessing.get_context("spawn")
    writers = [context.Process(target=_append_records, args=(path, w, WRITES_PER_PROCESS)) for w in range(2)]
    for process in writers:
        process.start()
    for process in writers:
        process.join(120)
    assert [process.exitcode for process in writers] == [0, 0]
    with RunIndex(path) as index:
        records = index.records()
    assert len(records) == 2 * WRITES_PER_PROCESS == len({record.id for record in records})
    assert {record.status for record in records} == {"done"}
    written = sorted((record.summary["writer"], record.summary["number"]) for record in records)
    assert written == [(w, n) for w in range(2) for n in range(WRITES_PER_PROCESS)]


def _hold_lock(connection: sqlite3.Connection):
    connection.execute("BEGIN EXCLUSIVE")
    connection.execute("INSERT INTO file_hashes VALUES ('held', 0, 0, 'x')")


def test_a_locked_index_is_an_error_naming_it_after_the_busy_timeout(tmp_path):
    path = tmp_path / "runs.sqlite"
    RunIndex(path).close()
    holder = sqlite3.connect(path, isolation_level=None)
    _hold_lock(holder)
    try:
        with RunIndex(path, timeout=0.2) as index:
            started = time.perf_counter()
            with pytest.raises(RunIndexError, match="runs.sqlite.*locked"):
                index.open_run("attack", ["segadv"], 0.0)
            assert time.perf_counter() - started >= 0.2  # it waited for the lock first
            assert index.records() == []  # reading goes on while a writer holds the lock (WAL)
    finally:
        holder.execute("ROLLBACK")
        holder.close()


def test_the_recorder_warns_once_and_lets_the_work_go_on_when_the_index_is_locked(tmp_path, monkeypatch):
    path = tmp_path / "runs.sqlite"
    RunIndex(path).close()
    monkeypatch.setattr(index_module, "BUSY_TIMEOUT_S", 0.1)
    warnings = []
    holder = sqlite3.connect(path, isolation_level=None)
    _hold_lock(holder)
    try:
        recorder = RunRecorder(path, "attack", ["segadv", "attack"], warnings.append)
        recorder.open(device="cpu")
        assert recorder.lookup({"config": 1}, use_cache=True) is None
        recorder.keep("result")
        recorder.close("done")
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert len(warnings) == 1 and "locked" in warnings[0] and "not recorded" in warnings[0]
    with RunIndex(path) as index:
        assert index.records() == []


@pytest.mark.parametrize(
    "damage",
    [
        pytest.param(lambda path: path.write_bytes(b"not a database at all" * 100), id="not-sqlite"),
        pytest.param(lambda path: path.mkdir(), id="a-folder"),
        pytest.param(lambda path: (path.parent / "blocker").write_text("x"), id="folder-is-a-file"),
    ],
)
def test_a_damaged_or_unwritable_index_is_one_warning(tmp_path, damage):
    path = tmp_path / "runs.sqlite"
    damage(path)
    if (tmp_path / "blocker").exists():
        path = tmp_path / "blocker" / "runs.sqlite"
    warnings = []
    recorder = RunRecorder(path, "attack", ["segadv"], warnings.append)
    recorder.open()
    assert recorder.file_sha256(__file__) == file_sha256(__file__)  # hashes are still made, read directly
    recorder.close("done")
    assert len(warnings) == 1 and str(path) in warnings[0], warnings


def test_a_crash_between_open_and_close_leaves_failed_and_no_result(tmp_path):
    path = tmp_path / "runs.sqlite"
    recorder = RunRecorder(path, "attack", ["segadv"], pytest.fail)
    recorder.open()
    recorder.lookup({"config": 1}, use_cache=True)
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        recorder.keep("half a result")
        recorder.close("failed", error="RuntimeError: boom", result_json={"half": True})
    with RunIndex(path) as index:
        (record,) = index.records()
        assert (record.status, record.error) == ("failed", "RuntimeError: boom")
        assert index.get(record.id, with_result=True).result_json is None
        assert index.cached(record.cache_key) is None


def test_a_done_run_is_served_to_the_next_recorder_with_the_same_key_only(tmp_path):
    path = tmp_path / "runs.sqlite"
    result = {"numbers": np.arange(3.0)}
    first = RunRecorder(path, "attack", ["segadv"], pytest.fail)
    first.open()
    assert first.lookup({"config": {"eps": 0.009}}, use_cache=True) is None
    first.keep(result)
    first.close("done")
    second = RunRecorder(path, "attack", ["segadv"], pytest.fail)
    second.open()
    hit = second.lookup({"config": {"eps": 0.009}}, use_cache=True)
    assert hit is not None and hit.run_id == first.run_id and np.array_equal(hit.result["numbers"], result["numbers"])
    assert second.lookup({"config": {"eps": 0.009}}, use_cache=False) is None  # --no-cache
    assert second.lookup({"config": {"eps": 0.008}}, use_cache=True) is None


def test_the_key_changes_with_any_field_and_not_with_their_order():
    assert cache_key({"a": 1, "b": [1, 2]}) == cache_key({"b": [1, 2], "a": 1})
    assert cache_key({"a": 1, "b": [1, 2]}) != cache_key({"a": 1, "b": [2, 1]})
    assert cache_key({"a": 1}) != cache_key({"a": 1.5})


def test_a_file_is_hashed_once_per_size_and_mtime(tmp_path, monkeypatch):
    checkpoint = tmp_path / "model.safetensors"
    checkpoint.write_bytes(b"weights" * 1000)
    reads = []
    real = index_module.file_sha256
    monkeypatch.setattr(index_module, "file_sha256", lambda path: reads.append(path) or real(path))
    with RunIndex(tmp_path / "runs.sqlite") as index:
        expected = hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        assert index.file_sha256(checkpoint) == expected
    with RunIndex(tmp_path / "runs.sqlite") as index:  # another process later: still not read again
        assert index.file_sha256(checkpoint) == expected
        assert len(reads) == 1
        checkpoint.write_bytes(b"other weights" * 1000)
        assert index.file_sha256(checkpoint) == hashlib.sha256(checkpoint.read_bytes()).hexdigest()
        assert len(reads) == 2


def test_a_result_comes_back_equal_and_a_hostile_pickle_is_refused(tmp_path):
    row = SliceResult(
        "case1_day1_slice_0001", 0.009, np.array([1.0, np.nan, 0.5]), np.array([0.0, np.nan, 0.25]), 0.009, 1.2
    )
    result = {"config": AttackConfig(method="pgd", organs=("stomach",)), "rows": [row], "path": tmp_path}
    back = load_result(dump_result(result))
    assert back["config"] == result["config"] and back["path"] == tmp_path
    assert back["rows"][0].to_dict() == row.to_dict()

    class Hostile:
        def __reduce__(self):
            return (print, ("pwned",))

    with pytest.raises(StoredResultError, match="builtins.print"):
        load_result(__import__("zlib").compress(pickle.dumps(Hostile())))
    with pytest.raises(StoredResultError, match="posix.system|os.system"):
        load_result(__import__("zlib").compress(b"cos\nsystem\n(S'true'\ntR."))
    with pytest.raises(StoredResultError):
        load_result(b"not zlib")


def test_a_record_left_running_by_a_killed_process_is_shown_as_gone(tmp_path):
    import subprocess
    import sys

    from segadv_tui.render.runs import status_text

    code = (
        "import os, sys; from core.runs.recorder import RunRecorder; "
        "r = RunRecorder(sys.argv[1], 'attack', ['segadv'], print); r.open(); os._exit(9)"  # no finally runs
    )
    subprocess.run([sys.executable, "-c", code, str(tmp_path / "runs.sqlite")], check=False, timeout=120)
    with RunIndex(tmp_path / "runs.sqlite") as index:
        (record,) = index.records()
        mine = index.get(
            index.open_run("attack", ["segadv"], 0.0, host=__import__("socket").gethostname(), pid=os.getpid())
        )
    assert record.status == "running" and status_text(record) == "running (its process is gone)"
    assert status_text(mine) == "running"
