"""The run index: one SQLite file (stdlib ``sqlite3``, WAL mode) recording every run of a command and
holding the results cache.

Where: ``$SEGADV_RUNS``, else ``$XDG_DATA_HOME/segadv/runs.sqlite``, else ``~/.local/share/segadv/runs.sqlite``
(a front end's ``--runs PATH`` comes first). Several processes write at once (two terminals, the explorer,
a torchrun job's rank 0): WAL lets readers go on while one writes, each write is one short transaction,
and a writer that finds the file locked waits up to ``BUSY_TIMEOUT_S`` before giving up
(``RunIndexError``; the front ends turn it into one warning and go on computing).

A record (``RunRecord``) is opened as ``running`` before the work and closed as ``done``, ``interrupted``
or ``failed``; only a ``done`` record holds a result. It keeps the result twice: the JSON the command
writes (``result_json``: the per-slice rows, for ``runs show`` / ``export``) and the result object itself
(``core.runs.stored``), which the cache hands back so a rerun renders exactly what the first run did.
Both are zlib-compressed. Checkpoint hashes are cached by (path, size, mtime) in the same file, so a large
checkpoint is read once.
"""

from __future__ import annotations

import json
import os
import sqlite3
import zlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from core.errors import SegadvError
from core.runs.keys import file_sha256

BUSY_TIMEOUT_S = 5.0
SCHEMA_VERSION = 1
STATUSES = ("running", "done", "interrupted", "failed")

SCHEMA = """
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    command TEXT NOT NULL,
    argv TEXT NOT NULL,
    status TEXT NOT NULL,
    started REAL NOT NULL,
    ended REAL,
    wall_seconds REAL,
    cpu_seconds REAL,
    host TEXT,
    pid INTEGER,
    versions TEXT,
    device TEXT,
    checkpoints TEXT,
    data TEXT,
    data_fingerprint TEXT,
    split TEXT,
    selection TEXT,
    config TEXT,
    cache_key TEXT,
    cached_from INTEGER,
    summary TEXT,
    files TEXT,
    error TEXT,
    result_json BLOB,
    result BLOB
);
CREATE INDEX IF NOT EXISTS runs_by_key ON runs (cache_key, status);
CREATE TABLE IF NOT EXISTS file_hashes (
    path TEXT NOT NULL,
    size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL,
    sha256 TEXT NOT NULL,
    PRIMARY KEY (path, size, mtime_ns)
);
"""

# Columns holding JSON (lists, dicts) rather than text or numbers.
JSON_COLUMNS = ("argv", "versions", "checkpoints", "selection", "config", "summary", "files")
LISTED_COLUMNS = (
    "id, command, argv, status, started, ended, wall_seconds, cpu_seconds, host, pid, versions, device, "
    "checkpoints, data, data_fingerprint, split, selection, config, cache_key, cached_from, summary, files, error"
)


class RunIndexError(SegadvError):
    """The index cannot be opened, read or written (damaged, locked, not writable); names the file."""


def default_index_path() -> Path:
    """``$SEGADV_RUNS``, else the XDG data folder's ``segadv/runs.sqlite``."""
    override = os.environ.get("SEGADV_RUNS")
    if override:
        return Path(override).expanduser()
    base = os.environ.get("XDG_DATA_HOME") or Path.home() / ".local" / "share"
    return Path(base).expanduser() / "segadv" / "runs.sqlite"


@dataclass
class RunRecord:
    """One row of the index, its JSON columns decoded (``result_json`` only when asked for)."""

    id: int
    command: str
    argv: list[str]
    status: str
    started: float
    ended: float | None = None
    wall_seconds: float | None = None
    cpu_seconds: float | None = None
    host: str | None = None
    pid: int | None = None
    versions: dict = field(default_factory=dict)
    device: str | None = None
    checkpoints: list = field(default_factory=list)
    data: str | None = None
    data_fingerprint: str | None = None
    split: str | None = None
    selection: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    cache_key: str | None = None
    cached_from: int | None = None
    summary: dict = field(default_factory=dict)
    files: list = field(default_factory=list)
    error: str | None = None
    result_json: dict | None = None


def _encode(column: str, value):
    if column in JSON_COLUMNS:
        return json.dumps(value, default=str)
    if column == "result_json":
        return zlib.compress(json.dumps(value, default=str).encode(), 6)
    return value


class RunIndex:
    """A connection to the index at ``path`` (made, with its folder, on first use). Every failure is a
    ``RunIndexError`` naming the file. Use as a context manager, or ``close()``."""

    def __init__(self, path: str | os.PathLike | None = None, *, timeout: float | None = None):
        self.path = Path(path).expanduser() if path is not None else default_index_path()
        timeout = BUSY_TIMEOUT_S if timeout is None else timeout
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            # autocommit: each write below is its own short transaction (BEGIN IMMEDIATE ... COMMIT)
            self.connection = sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc
        try:
            self.connection.execute(f"PRAGMA busy_timeout = {int(timeout * 1000)}")
            if self.connection.execute("PRAGMA user_version").fetchone()[0] != SCHEMA_VERSION:
                # one transaction (executescript commits any open one first, so it begins its own)
                self.connection.executescript(
                    f"BEGIN IMMEDIATE;\n{SCHEMA}\nPRAGMA user_version = {SCHEMA_VERSION};\nCOMMIT;"
                )
            if self.connection.execute("PRAGMA journal_mode").fetchone()[0] != "wal":
                self.connection.execute("PRAGMA journal_mode = WAL")
        except (OSError, sqlite3.Error) as exc:
            self.connection.close()
            raise self._error(exc) from exc

    def _error(self, exc: BaseException) -> RunIndexError:
        return RunIndexError(f"run index {str(self.path)!r}: {exc}")

    def _writing(self):
        return _Transaction(self)

    def close(self) -> None:
        self.connection.close()

    def __enter__(self) -> RunIndex:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _run(self, sql: str, parameters: Sequence = ()) -> list:
        try:
            return self.connection.execute(sql, parameters).fetchall()
        except (OSError, sqlite3.Error) as exc:
            raise self._error(exc) from exc

    # -- writing -------------------------------------------------------------------------------------

    def open_run(self, command: str, argv: Sequence[str], started: float, **fields) -> int:
        """A new record, status ``running``; returns its id."""
        values = {"command": command, "argv": list(argv), "status": "running", "started": started, **fields}
        columns = ", ".join(values)
        marks = ", ".join("?" for _ in values)
        with self._writing():
            cursor = self.connection.execute(
                f"INSERT INTO runs ({columns}) VALUES ({marks})", [_encode(c, v) for c, v in values.items()]
            )
        return int(cursor.lastrowid or 0)  # always set after an INSERT

    def update_run(self, run_id: int, *, result: bytes | None = None, **fields) -> None:
        """Set ``fields`` of record ``run_id`` (``result``: the stored result object's bytes)."""
        if "status" in fields and fields["status"] not in STATUSES:
            raise ValueError(f"unknown run status {fields['status']!r}")
        values = {column: _encode(column, value) for column, value in fields.items()}
        if result is not None:
            values["result"] = result
        if not values:
            return
        assignments = ", ".join(f"{column} = ?" for column in values)
        with self._writing():
            self.connection.execute(f"UPDATE runs SET {assignments} WHERE id = ?", [*values.values(), run_id])

    def remove(self, run_ids: Iterable[int]) -> list[int]:
        """Delete the records ``run_ids`` (and the results they hold); returns the ids that existed."""
        ids = list(dict.fromkeys(int(i) for i in run_ids))
        removed = []
        with self._writing():
            for run_id in ids:
                if self.connection.execute("DELETE FROM runs WHERE id = ?", (run_id,)).rowcount:
                    removed.append(run_id)
        return removed

    # -- reading -------------------------------------------------------------------------------------

    def cached(self, cache_key: str) -> tuple[int, float, bytes] | None:
        """The newest ``done`` record with ``cache_key`` that holds a result: (the run that computed it, when
        that run started, the stored result's bytes), or None. A cached rerun names the run it was served
        from, while that record exists."""
        rows = self._run(
            "SELECT COALESCE(origin.id, run.id), COALESCE(origin.started, run.started), run.result FROM runs AS run "
            "LEFT JOIN runs AS origin ON origin.id = run.cached_from "
            "WHERE run.cache_key = ? AND run.status = 'done' AND run.result IS NOT NULL ORDER BY run.id DESC LIMIT 1",
            (cache_key,),
        )
        return tuple(rows[0]) if rows else None

    def stored_result(self, run_id: int) -> bytes | None:
        """The result object record ``run_id`` stored (``core.runs.stored``), or None."""
        rows = self._run("SELECT result FROM runs WHERE id = ?", (int(run_id),))
        return rows[0][0] if rows else None

    def get(self, run_id: int, *, with_result: bool = False) -> RunRecord | None:
        columns = LISTED_COLUMNS + (", result_json" if with_result else "")
        rows = self._run(f"SELECT {columns} FROM runs WHERE id = ?", (int(run_id),))
        return self._record(rows[0], with_result) if rows else None

    def records(self, *, last: int | None = None, command: str | None = None) -> list[RunRecord]:
        """The records, oldest first (``last``: only the newest ``last``; ``command``: of that command)."""
        where, parameters = ("WHERE command = ?", [command]) if command else ("", [])
        limit = f"LIMIT {int(last)}" if last is not None else ""
        rows = self._run(f"SELECT {LISTED_COLUMNS} FROM runs {where} ORDER BY id DESC {limit}", parameters)
        return [self._record(row, False) for row in reversed(rows)]

    def _record(self, row: Sequence, with_result: bool) -> RunRecord:
        names = [name.strip() for name in LISTED_COLUMNS.split(",")] + (["result_json"] if with_result else [])
        values = dict(zip(names, row))
        for column in JSON_COLUMNS:
            if values[column] is not None:
                values[column] = json.loads(values[column])
            else:
                values.pop(column)
        if with_result and values["result_json"] is not None:
            values["result_json"] = json.loads(zlib.decompress(values["result_json"]))
        return RunRecord(**values)

    # -- the checkpoint hash cache --------------------------------------------------------------------

    def file_sha256(self, path: str | os.PathLike) -> str:
        """The sha256 of the file at ``path``, read from the index when its (path, size, mtime) was hashed
        before; an ``OSError`` if the file cannot be read."""
        resolved = Path(path).expanduser().resolve()
        stat = resolved.stat()
        key = (str(resolved), stat.st_size, stat.st_mtime_ns)
        rows = self._run("SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?", key)
        if rows:
            return rows[0][0]
        digest = file_sha256(resolved)
        with self._writing():
            self.connection.execute("DELETE FROM file_hashes WHERE path = ?", (key[0],))
            self.connection.execute("INSERT INTO file_hashes VALUES (?, ?, ?, ?)", (*key, digest))
        return digest


class _Transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on error): the write lock is taken at the start, so
    a busy index makes the writer wait (busy timeout) instead of failing halfway."""

    def __init__(self, index: RunIndex):
        self.index = index

    def __enter__(self) -> None:
        try:
            self.index.connection.execute("BEGIN IMMEDIATE")
        except (OSError, sqlite3.Error) as exc:
            raise self.index._error(exc) from exc

    def __exit__(self, exc_type, exc, traceback) -> None:
        connection = self.index.connection
        if exc_type is None:
            try:
                connection.execute("COMMIT")
                return
            except (OSError, sqlite3.Error) as error:
                exc = error
        if connection.in_transaction:
            try:
                connection.execute("ROLLBACK")
            except sqlite3.Error:
                pass  # the connection is closed with the error below; SQLite rolls back then
        if isinstance(exc, (OSError, sqlite3.Error)):
            raise self.index._error(exc) from exc
