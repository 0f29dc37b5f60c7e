"""A result object kept in the run index: pickled and compressed, read back by an unpickler that builds
only the types a result is made of.

Why pickle: a cached rerun must render the same tables and files as the computed run, so it needs the
very object the computation returned (dataclasses holding numpy arrays), not its JSON. Why restricted:
an index is a plain file (``--runs`` may name one somebody else made), and a plain unpickler runs
whatever callable a file names. This one resolves only ``core``'s dataclasses and enums, numpy's array
reconstructors and numpy's array, scalar and dtype classes, and a few built-in types; anything else is refused
(``StoredResultError``).
"""

from __future__ import annotations

import dataclasses
import enum
import io
import pickle
import zlib

import numpy

ALLOWED_BUILTINS = frozenset(
    {"dict", "list", "tuple", "set", "frozenset", "int", "float", "str", "bytes", "bool", "complex", "slice"}
)
# numpy's own functions that rebuild arrays and scalars (numpy 1 and 2 name their module differently)
ALLOWED_NUMPY_FUNCTIONS = frozenset(
    {
        ("numpy.core.multiarray", "_reconstruct"),
        ("numpy._core.multiarray", "_reconstruct"),
        ("numpy.core.multiarray", "scalar"),
        ("numpy._core.multiarray", "scalar"),
        ("numpy.core.numeric", "_frombuffer"),
        ("numpy._core.numeric", "_frombuffer"),
    }
)
PATH_CLASSES = frozenset({"Path", "PosixPath", "WindowsPath", "PurePath", "PurePosixPath", "PureWindowsPath"})


class StoredResultError(Exception):
    """A stored result that cannot be read back (damaged, or naming a callable it may not)."""


class _ResultUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str):
        if module == "builtins" and name in ALLOWED_BUILTINS:
            return super().find_class(module, name)
        if (module, name) in ALLOWED_NUMPY_FUNCTIONS:
            return super().find_class(module, name)
        if module == "pathlib" and name in PATH_CLASSES:
            return super().find_class(module, name)
        if module == "core" or module.startswith("core."):
            found = super().find_class(module, name)
            # a dataclass's constructor only stores its fields; another class's might do anything
            if isinstance(found, type) and (dataclasses.is_dataclass(found) or issubclass(found, enum.Enum)):
                return found
        elif module in ("numpy", "numpy.dtypes"):
            found = super().find_class(module, name)
            if isinstance(found, type) and (issubclass(found, (numpy.generic, numpy.dtype)) or found is numpy.ndarray):
                return found
        raise StoredResultError(f"a stored result names {module}.{name}, which a result is not made of")


def dump_result(result) -> bytes:
    """``result`` pickled and compressed."""
    return zlib.compress(pickle.dumps(result, protocol=pickle.HIGHEST_PROTOCOL), 1)


def load_result(blob: bytes):
    """The object ``dump_result`` stored, or ``StoredResultError``."""
    try:
        return _ResultUnpickler(io.BytesIO(zlib.decompress(blob))).load()
    except StoredResultError:
        raise
    except Exception as exc:  # zlib.error, pickle.UnpicklingError, a class that no longer exists, ...
        raise StoredResultError(f"a stored result cannot be read back: {exc}") from exc
