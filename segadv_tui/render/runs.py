"""The run index's records as tables (``core.runs.index.RunRecord``): the list, one record, runs side by side
with the configuration that differs named, and the rows an export writes. Used by ``segadv runs`` and
``segadv report``."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Sequence

from segadv_tui.render.tables import MISSING, Table, number

# How many key numbers the list shows per run (the headline ones come first in a record's summary).
LISTED_NUMBERS = 3


def key_numbers(payload: dict) -> dict[str, float | int | None]:
    """The numbers a record shows and compares, flattened from a command's JSON, the headline first: an
    attack's mean DSC clean / adversarial and attack success then per organ; a sweep's adversarial DSC per
    loss and eps; Table II's clean and adversarial DSC per model and loss; robustness's adversarial DSC per
    checkpoint and eps; a transfer matrix's attack success per (source, target); else a top-level summary's
    numbers."""
    numbers: dict[str, float | int | None] = {}
    if payload.get("command") == "table" and isinstance(payload.get("rows"), list):
        for row in payload["rows"]:
            numbers[f"dsc_clean[{row['label']}]"] = row.get("dsc_clean")
            for loss, value in (row.get("dsc_adv") or {}).items():
                numbers[f"dsc_adv[{row['label']},{loss}]"] = value
        return numbers
    if payload.get("command") == "sweep" and isinstance(payload.get("entries"), list):
        for entry in payload["entries"]:
            numbers[f"dsc_adv[{entry['loss']}@{entry['eps']:g}]"] = entry["summary"].get("mean_adv")
        return numbers
    if payload.get("command") == "robust" and isinstance(payload.get("curves"), list):
        for curve in payload["curves"]:
            for point in curve.get("points", []):
                numbers[f"dsc_adv[{curve['label']}@{point['eps']:g}]"] = point["summary"].get("mean_adv")
        return numbers
    if payload.get("command") == "transfer" and isinstance(payload.get("cells"), list):
        for cell in payload["cells"]:
            numbers[f"attack_success[{cell['source']}->{cell['target']}]"] = cell["summary"].get("mean_attack_success")
        return numbers
    summary = payload.get("summary")
    if isinstance(summary, dict):
        for short, name in (
            ("dsc_clean", "mean_clean"),
            ("dsc_adv", "mean_adv"),
            ("attack_success", "mean_attack_success"),
        ):
            if name in summary:
                numbers[short] = summary[name]
        for name, value in summary.items():
            if isinstance(value, dict):
                numbers.update({f"{name}[{part}]": item for part, item in value.items() if _is_number(item)})
            elif (
                value is not None
                and _is_number(value)
                and name not in ("mean_clean", "mean_adv", "mean_attack_success")
            ):
                numbers[name] = value
    return numbers


def _is_number(value) -> bool:
    return value is None or (isinstance(value, (int, float)) and not isinstance(value, bool))


def when(timestamp: float | None) -> str:
    """A record's time as the tables show it: local time to the second."""
    return MISSING if timestamp is None else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(timestamp))


def command_text(record) -> str:
    """The command line as typed (``segadv attack --limit 2``), arguments with spaces quoted."""
    import shlex

    return shlex.join(record.argv)


def short_command(record) -> str:
    """The command line with each path cut to its last part (``-c tiny.safetensors``): what the list shows."""
    import shlex
    from pathlib import PurePath

    return shlex.join(PurePath(arg).name if "/" in arg and not arg.endswith("/") else arg for arg in record.argv)


def value_text(value) -> str:
    """A number to 4 decimals, None as "n/a", anything else as compact JSON."""
    if value is None:
        return MISSING
    if isinstance(value, float):
        return number(value) if math.isfinite(value) else MISSING
    if isinstance(value, (int, str)):
        return str(value)
    return json.dumps(value, default=str, separators=(",", ":"))


def status_text(record) -> str:
    """done, failed, ...; "(cached, run N)" for a result served from run N; a record left running by a process
    of this machine that no longer exists (killed: no finally ran) says so."""
    if record.cached_from:
        return f"{record.status} (cached, run {record.cached_from})"
    if record.status == "running" and not _alive(record):
        return "running (its process is gone)"
    return record.status


def _alive(record) -> bool:
    """Whether the process that opened ``record`` may still run (unknowable for another machine's)."""
    import os
    import socket

    if record.pid is None or record.host != socket.gethostname():
        return True
    try:
        os.kill(record.pid, 0)
    except ProcessLookupError:
        return False
    except OSError:  # another user's process: it exists
        return True
    return True


def runs_table(records: Sequence, title: str = "runs") -> Table:
    """One line per record: id, when, command, status, seconds and its first key numbers."""
    rows = []
    for record in records:
        numbers = list(record.summary.items())[:LISTED_NUMBERS]
        command = short_command(record)
        rows.append(
            (
                str(record.id),
                when(record.started),
                command,
                status_text(record),
                number(record.wall_seconds, 1),
                ", ".join(f"{name} {value_text(value)}" for name, value in numbers),
            )
        )
    return Table(
        title,
        ("id", "when", "command", "status", "seconds", "key numbers"),
        tuple(rows),
        justify=("right", "left", "left", "left", "right", "left"),
    )


def record_table(record) -> Table:
    """One record's provenance: a row per field."""
    checkpoints = "; ".join(f"{item['path']} (sha256 {item['sha256'][:16]})" for item in record.checkpoints)
    rows = [
        ("command line", command_text(record)),
        ("status", status_text(record) + (f": {record.error}" if record.error else "")),
        ("started", when(record.started)),
        ("ended", when(record.ended)),
        ("wall / CPU seconds", f"{number(record.wall_seconds, 2)} / {number(record.cpu_seconds, 2)}"),
        ("host, pid", f"{record.host}, {record.pid}"),
        ("versions", ", ".join(f"{name} {value}" for name, value in record.versions.items())),
        ("device", record.device or MISSING),
        ("checkpoints", checkpoints or MISSING),
        ("data", f"{record.data} (fingerprint {record.data_fingerprint})" if record.data else MISSING),
        ("split", record.split or MISSING),
        ("selection", value_text(record.selection) if record.selection else MISSING),
        ("configuration", value_text(record.config) if record.config else MISSING),
        ("cache key", (record.cache_key or MISSING)[:16]),
        ("files", ", ".join(record.files) or MISSING),
    ]
    return Table(f"run {record.id}: {record.command}", ("field", "value"), tuple(rows), justify=("left", "left"))


def numbers_table(records: Sequence, title: str = "key numbers") -> Table:
    """The records' key numbers side by side: a row per number (in first-seen order), a column per run."""
    names = list(dict.fromkeys(name for record in records for name in record.summary))
    rows = tuple(
        (name, *(value_text(record.summary.get(name)) if name in record.summary else "" for record in records))
        for name in names
    )
    return Table(title, ("number", *(f"run {record.id}" for record in records)), rows)


def flat_configuration(record) -> dict[str, object]:
    """What decides a record's result, flattened to dotted names: its cache key's fields (``config.eps``,
    ``losses``, ``checkpoints`` as content hashes, ``data_fingerprint``, ...), then the provenance the key
    leaves out (checkpoint paths, the data folder, the split, the device, the versions)."""
    flat: dict[str, object] = {}

    def walk(prefix: str, value) -> None:
        if isinstance(value, dict) and value:
            for key, item in value.items():
                walk(f"{prefix}.{key}" if prefix else key, item)
        elif isinstance(value, list) and value and any(isinstance(item, (dict, list)) for item in value):
            for index, item in enumerate(value):
                walk(f"{prefix}.{index}", item)
        elif prefix not in flat:
            flat[prefix] = value

    walk("", record.config)
    provenance = {
        "command": record.command,
        "checkpoint_paths": [item.get("path") for item in record.checkpoints],
        "data": record.data,
        "data_fingerprint": record.data_fingerprint,
        "split": record.split,
        "selection": record.selection,
        "device": record.device,
        "versions": record.versions,
    }
    walk("", provenance)
    return flat


def differences_table(records: Sequence) -> Table:
    """The configuration keys whose values differ between ``records``, a column per run; empty rows when
    the runs were configured alike."""
    flats = [flat_configuration(record) for record in records]
    names = list(dict.fromkeys(name for flat in flats for name in flat))
    missing = object()
    differing = [
        name for name in names if len({json.dumps(flat.get(name, missing), default=str) for flat in flats}) > 1
    ]
    rows = tuple(
        (name, *(value_text(flat[name]) if name in flat else "(absent)" for flat in flats)) for name in differing
    )
    caption = "" if differing else "the same configuration (checkpoints, data, slices, attack, versions)"
    return Table(
        f"configuration that differs ({len(differing)} keys)",
        ("key", *(f"run {record.id}" for record in records)),
        rows,
        caption=caption,
        justify=("left",) * (len(records) + 1),
    )


def export_rows(records: Sequence) -> tuple[list[str], list[list]]:
    """One row per result row of each record (an attack's slices, Table II's models, a sweep's points; a
    record without rows gives its key numbers as one row), nested fields flattened to dotted columns,
    preceded by the run's id, command, status and start time; the columns are the union over the records."""
    table: list[dict] = []
    for record in records:
        head = {
            "run_id": record.id,
            "command": record.command,
            "status": record.status,
            "started": when(record.started),
        }
        result = record.result_json or {}
        items = result.get("rows") if isinstance(result.get("rows"), list) else result.get("entries")
        if isinstance(items, list) and items:
            table += [{**head, **_flat(item)} for item in items]
        else:
            table.append({**head, **record.summary})
    header = list(dict.fromkeys(name for row in table for name in row))
    return header, [[row.get(name) for name in header] for row in table]


def _flat(item: dict, prefix: str = "") -> dict:
    flat: dict = {}
    for key, value in item.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat(value, f"{name}."))
        elif isinstance(value, list):
            flat[name] = json.dumps(value, default=str)
        else:
            flat[name] = value
    return flat
