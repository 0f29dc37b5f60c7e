"""Every file segadv writes, written one way: atomically, with the permissions of an ordinary new file.

What a path names decides how it is written, so that nothing that is not ours is ever replaced:

- a regular file (or a new name): the bytes go to a temporary file beside it, are fsynced, and the
  temporary is renamed over it, so a crash leaves the old file or the new one, never half of one;
- a symbolic link: the same, beside the link's final target, so the link stays and points at the new file;
- a FIFO, a character device (``/dev/null``, a terminal, ``/dev/stdout`` on a pipe) or ``-`` (standard
  output): written straight into, not atomically, since there is no file to protect; a rename would
  replace the device node itself (as root, ``--json /dev/null`` would break the system);
- a folder, a socket or a block device: refused with a ``WriteError`` that names it.

A log (``CsvLog``: the training history) is the one file written in place: it is replaced atomically when
it starts (empty, or with the rows a resumed run keeps), then appended to a row at a time and flushed, so
``tail -f`` follows it; a FIFO or a device is appended to straight, and never read or replaced.

``check_writable`` applies the same rules before any work is done, so a long run does not end on a path
it could never write. The temporary is created with
mode 0o666 and the kernel applies the user's umask (0644 under umask 022), as ``open(path, "w")``
would; ``tempfile.mkstemp`` makes 0600 files that nobody else on a shared GPU box could read. A file
that is replaced keeps its own permissions, again as ``open(path, "w")`` would.

Also here: the JSON and CSV forms of a missing number (NaN or None: ``null``, an empty cell); tables
show it as "n/a" (``segadv_tui.render.tables.number``). No torch: the front ends import this at start-up.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import secrets
import stat
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any, BinaryIO

from core.errors import SegadvError

_TEMP_ATTEMPTS = 100


class WriteError(SegadvError, OSError):
    """A file segadv cannot write (no such folder, no permission, disk full); the message names it.

    Also an ``OSError``, so code that handles file-system errors in general still sees it. ``reason`` is
    the message without the path, for callers that name the path their own way (an option)."""

    def __init__(self, message: str, reason: str | None = None):
        super().__init__(message)
        self.reason = reason or message


def atomic_write(path: str | os.PathLike, write: Callable[[BinaryIO], object]) -> Path:
    """Create or replace ``path`` with what ``write(stream)`` writes to a binary stream; returns the path.

    An ``OSError`` on the way (the folder, the temporary, the writing, the rename) becomes a
    ``WriteError`` naming ``path``; any other exception from ``write`` passes through. Either way no
    temporary file is left behind and an existing ``path`` is untouched.
    """
    route, path = _route(path)
    if route == "stdout":
        return _write_to_stdout(write)
    if route == "stream":
        return _write_into_stream(path, write)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        temp, stream = _create_temporary(path)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    try:
        with stream:
            write(stream)
            stream.flush()
            os.fsync(stream.fileno())
        _keep_mode_of(path, temp)
        os.replace(temp, path)
    except BaseException as exc:
        temp.unlink(missing_ok=True)
        if isinstance(exc, OSError) and not isinstance(exc, WriteError):
            raise _write_error(path, exc) from exc
        raise
    _fsync_folder(path.parent)
    return path


def temporary_sibling(path: Path, purpose: str) -> Path:
    """A hidden, unique name beside ``path`` (``.NAME.PURPOSE-PID-RANDOM``) for a folder written then renamed."""
    return path.with_name(f".{path.name}.{purpose}-{os.getpid()}-{secrets.token_hex(4)}")


def write_folder(out: str | os.PathLike, fill: Callable[[Path], object], *, overwrite: bool = False) -> Path:
    """``fill`` a new folder and put it at ``out`` whole: written into a hidden sibling and renamed into
    place at the end, so an interrupted run never leaves half of it at ``out``. An existing non-empty
    ``out`` is refused unless ``overwrite`` (then replaced by the new folder)."""
    import shutil

    out = Path(out).expanduser()
    if out.exists() and not out.is_dir():
        raise FileExistsError(f"{out} exists and is not a folder")
    if out.exists() and not overwrite and any(out.iterdir()):
        raise FileExistsError(f"{out} exists and is not empty; choose another folder or overwrite it")
    out.parent.mkdir(parents=True, exist_ok=True)
    temp = temporary_sibling(out, "writing")
    temp.mkdir()
    try:
        fill(temp)
        if out.exists():
            old = temporary_sibling(out, "replaced")
            out.rename(old)
            temp.rename(out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            temp.rename(out)
    finally:
        if temp.exists():
            shutil.rmtree(temp, ignore_errors=True)
    return out


def check_writable(path: str | os.PathLike) -> None:
    """Raise a ``WriteError`` naming ``path`` if ``atomic_write(path, ...)`` could not write it: a folder, a
    socket or a block device, or a file whose folder cannot be made or written. Creates nothing."""
    route, target = _route(path)
    if route == "stdout":
        return
    path = Path(path).expanduser()
    if route == "stream":
        if not os.access(target, os.W_OK):
            raise _cannot_write(path, "permission denied")
        return
    folder = target.parent
    while not folder.exists():  # the writer makes the missing folders: the nearest existing one decides
        if folder.is_symlink():  # a dangling link in the way: mkdir would fail on it
            raise _cannot_write(path, f"{str(folder)!r} is a broken link")
        folder = folder.parent
    if not folder.is_dir():
        raise _cannot_write(path, f"{str(folder)!r} is not a folder")
    if not os.access(folder, os.W_OK | os.X_OK):
        raise _cannot_write(path, f"permission denied in {str(folder)!r}")


def is_stream(path: str | os.PathLike) -> bool:
    """Whether ``atomic_write`` writes ``path`` straight into a stream (``-``, a FIFO, a character device)
    rather than replacing a file."""
    if os.fspath(path) == STDOUT:
        return True
    try:
        return _kind(Path(path).expanduser()) in _STREAMS
    except WriteError:  # cannot even be looked at: not a stream we could write into
        return False


def write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    return atomic_write(path, lambda stream: stream.write(data))


def write_text(path: str | os.PathLike, text: str) -> Path:
    """``text`` as UTF-8, line endings as given (no translation)."""
    return write_bytes(path, text.encode("utf-8"))


def write_json(path: str | os.PathLike, payload: Any) -> Path:
    """``payload`` as indented JSON: NaN and None as null, numpy scalars and arrays as numbers, paths as text."""
    return write_text(path, json.dumps(json_ready(payload), indent=2, allow_nan=False) + "\n")


def write_csv(path: str | os.PathLike, header: Sequence[str], rows: Iterable[Sequence[Any]]) -> Path:
    """A header and rows as CSV; missing numbers (NaN, None) as empty cells, floats at full precision."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(header)
    writer.writerows([csv_cell(cell) for cell in row] for row in rows)
    return write_text(path, buffer.getvalue())


def write_png(path: str | os.PathLike, image) -> Path:
    """A Pillow image as PNG."""
    return atomic_write(path, lambda stream: image.save(stream, format="PNG"))


class CsvLog:
    """A CSV file that grows a row at a time, each row flushed as it is written (``tail -f`` shows it).

    ``keep`` None starts the log afresh (an empty file until the first row brings its header); otherwise
    the rows of an existing log for which ``keep(row)`` holds stay (a resumed run drops the rows it will
    write again) and new rows follow them under the log's own header. The header is the first row's keys;
    a later row's keys that the header lacks are left out and its missing ones are empty cells. Rows are
    dicts; missing numbers are empty cells (``csv_cell``)."""

    def __init__(self, path: str | os.PathLike, keep: Callable[[dict], bool] | None = None):
        route, target = _route(path)
        if route == "stdout":
            raise _cannot_write(Path(path), "a log is a file")
        self.path = Path(path).expanduser()
        self.header: list[str] | None = None
        if route == "file":
            kept: list[dict] = []
            if keep is not None and target.is_file():
                try:
                    with open(target, newline="", encoding="utf-8") as stream:
                        reader = csv.DictReader(stream)
                        self.header = list(reader.fieldnames or []) or None
                        kept = [row for row in reader if keep(row)]
                except (OSError, UnicodeDecodeError, csv.Error) as exc:
                    raise _cannot_write(self.path, f"cannot read it to resume ({exc})") from exc
            atomic_write(target, lambda stream: stream.write(self._text(kept).encode("utf-8")))
        try:
            self._stream = open(target, "a", newline="", encoding="utf-8")
        except OSError as exc:
            raise _write_error(self.path, exc) from exc

    def _text(self, rows: Sequence[Mapping]) -> str:
        if self.header is None:
            return ""
        buffer = io.StringIO()
        writer = csv.DictWriter(buffer, self.header, restval="", extrasaction="ignore", lineterminator="\n")
        writer.writeheader()
        writer.writerows(rows)
        return buffer.getvalue()

    def write(self, row: Mapping[str, Any]) -> None:
        """Append ``row`` (with the header first, in a new log) and flush it to the file."""
        text = ""
        if self.header is None:
            self.header = list(row)
            text = self._text([])
        buffer = io.StringIO()
        csv.DictWriter(buffer, self.header, restval="", extrasaction="ignore", lineterminator="\n").writerow(
            {key: csv_cell(value) for key, value in row.items()}
        )
        try:
            self._stream.write(text + buffer.getvalue())
            self._stream.flush()
        except OSError as exc:
            raise _write_error(self.path, exc) from exc

    def close(self) -> None:
        self._stream.close()


def read_csv_log(path: str | os.PathLike) -> list[dict[str, str]]:
    """The rows of a ``CsvLog`` (or any CSV with a header) as dicts of text; a half-written last line (a
    log being written) is left out."""
    with open(path, newline="", encoding="utf-8") as stream:
        text = stream.read()
    if not text.endswith("\n"):
        text = text[: text.rfind("\n") + 1]
    return list(csv.DictReader(io.StringIO(text)))


# --- missing numbers ------------------------------------------------------------------------------


def json_number(value: Any) -> float | None:
    """A score for JSON: a plain float (never -0.0), or None (null) where it is undefined (None, NaN, inf)."""
    if value is None:
        return None
    value = float(value)
    return value + 0.0 if math.isfinite(value) else None  # + 0.0: -0.0 as 0.0, "-0.0" is no score


def csv_cell(value: Any) -> Any:
    """A CSV cell: an empty cell where a number is undefined (None, NaN, inf), as spreadsheets expect;
    numpy scalars as plain numbers, negative zero as zero; anything else as it is."""
    if value is None:
        return ""
    if hasattr(value, "item") and not isinstance(value, (str, bytes)):  # numpy scalar
        value = value.item()
    if isinstance(value, float):
        return value + 0.0 if math.isfinite(value) else ""  # + 0.0: -0.0 as 0.0
    return value


def json_ready(value: Any) -> Any:
    """``value`` with every float finite or None, numpy values as Python ones, paths as strings, tuples as
    lists; anything JSON cannot hold raises ``TypeError`` (a bug in the caller, not bad input)."""
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return json_number(value)
    if isinstance(value, Mapping):
        return {key: json_ready(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(item) for item in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    if hasattr(value, "tolist"):  # numpy scalar or array
        return json_ready(value.tolist())
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


# --- internals ------------------------------------------------------------------------------------

STDOUT = "-"
_STREAMS = ("a FIFO", "a character device")


def _route(path: str | os.PathLike) -> tuple[str, Path]:
    """How ``path`` is written (the rules in the module's docstring): ("stdout", -), ("stream", the FIFO or
    device) or ("file", the file itself, or a link's final target); a ``WriteError`` for anything else."""
    if os.fspath(path) == STDOUT:
        return "stdout", Path(STDOUT)
    path = Path(path).expanduser()
    kind = _kind(path)
    if kind in _STREAMS:
        return "stream", path
    if kind not in (None, "file"):
        raise _cannot_write(path, f"it is {kind}, not a file")
    return "file", _final_target(path)


def _kind(path: Path) -> str | None:
    """What ``path`` finally names, links followed: None (nothing yet, or a dangling link), "file", or a
    description of something else ("a folder", "a FIFO", ...)."""
    try:
        mode = path.stat().st_mode
    except FileNotFoundError:
        return None
    except NotADirectoryError:  # a file in the way of a folder: the writer's mkdir will say so
        return None
    except OSError as exc:
        raise _write_error(path, exc) from exc
    if stat.S_ISREG(mode):
        return "file"
    for test, kind in (
        (stat.S_ISDIR, "a folder"),
        (stat.S_ISFIFO, "a FIFO"),
        (stat.S_ISCHR, "a character device"),
        (stat.S_ISSOCK, "a socket"),
        (stat.S_ISBLK, "a block device"),
    ):
        if test(mode):
            return kind
    return "not a regular file"


def _final_target(path: Path) -> Path:
    """``path`` with its links followed, so the temporary is made beside the file the link points at and
    the rename keeps the link; ``path`` itself when it is no link."""
    if not path.is_symlink():
        return path
    return Path(os.path.realpath(path))


def _write_to_stdout(write: Callable[[BinaryIO], object]) -> Path:
    sys.stdout.flush()  # text printed before goes first
    write(sys.stdout.buffer)
    sys.stdout.buffer.flush()
    return Path(STDOUT)


def _write_into_stream(path: Path, write: Callable[[BinaryIO], object]) -> Path:
    """Into a FIFO or a character device: no temporary, no rename (that would replace the node itself)."""
    try:
        with open(path, "wb") as stream:
            write(stream)
    except OSError as exc:
        raise _write_error(path, exc) from exc
    return path


def _create_temporary(path: Path) -> tuple[Path, BinaryIO]:
    """A new hidden file beside ``path``, created with mode 0o666 less the umask (the kernel applies it)."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_BINARY", 0)
    for _ in range(_TEMP_ATTEMPTS):
        temp = path.with_name(f".{path.name}.{secrets.token_hex(4)}.tmp")
        try:
            fd = os.open(temp, flags, 0o666)
        except FileExistsError:
            continue
        return temp, os.fdopen(fd, "wb")
    raise FileExistsError(f"no free temporary name beside {path} after {_TEMP_ATTEMPTS} tries")


def _keep_mode_of(path: Path, temp: Path) -> None:
    try:
        mode = stat.S_IMODE(path.stat().st_mode)
    except FileNotFoundError:
        return
    os.chmod(temp, mode)


def _write_error(path: Path, exc: OSError) -> WriteError:
    return _cannot_write(path, exc.strerror or str(exc) or type(exc).__name__)


def _cannot_write(path: str | os.PathLike, reason: str) -> WriteError:
    return WriteError(f"cannot write {os.fspath(path)!r}: {reason}", reason)


def _fsync_folder(folder: Path) -> None:
    # Makes the rename itself durable; not possible on every platform (e.g. Windows), so best effort.
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
