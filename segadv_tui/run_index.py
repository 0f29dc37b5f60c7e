"""The explorer in the run index (``core.runs``): a Table II it computes is recorded like ``segadv table``'s,
under the same key, so a Table II computed before, by the CLI or the app, opens at once.

The key is the CLI's (``core.runs.keys.computation_fields`` with ``table_ii_key``): the checkpoints' content
hashes, the data's fingerprint, the slices, the attack (less its loss), the losses, the device type and the
code. The explorer's Table II scores the test split's slices with organs, as ``segadv table`` does by
default, so the two meet when the checkpoints, --limit and the attack agree.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from core.models.loaded import LoadedModel

ARGV = ["segadv-tui", "(Table II screen)"]


@dataclass(frozen=True)
class TableIIRun:
    """A Table II and where it came from: ``served_from`` the run that computed it (None: computed now)."""

    result: Any  # core.evaluation.scoring.TableII
    served_from: int | None


def table_ii_run(
    state,
    models: list[LoadedModel],
    records: list,
    attack,
    losses,
    compute: Callable[[], Any],
    *,
    use_cache: bool,
    warn: Callable[[str], None],
) -> TableIIRun:
    """``compute()`` (``core.evaluation.scoring.table_ii`` of ``models`` over ``records``), or the result the
    run index holds under the same key, recorded either way (``warn``: one line if the index fails). A
    cancelled or failed computation closes its record as interrupted or failed, with no result."""
    import torch

    from core.attacks.control import AttackCancelled
    from core.devices import describe_device
    from core.runs.keys import computation_fields, selection_fingerprint, table_ii_key, table_ii_relabelled
    from core.runs.recorder import RunRecorder
    from segadv_tui.render.runs import key_numbers

    recorder = RunRecorder(None, "table", ARGV, warn)
    paths = list(state.loaded)
    device = torch.device(state.device or "cpu")
    hashes = [recorder.file_sha256(path) for path in paths]
    recorder.open(
        device=describe_device(device),
        checkpoints=[{"path": str(path), "sha256": digest} for path, digest in zip(paths, hashes)],
        data=str(state.dataset.root),
        data_fingerprint=state.dataset.fingerprint(),
        split="test",
        selection={"slices": len(records), "fingerprint": selection_fingerprint(records)},
    )
    fields = computation_fields(
        "table",
        table_ii_key(attack, losses),
        checkpoints=hashes,
        data_fingerprint=state.dataset.fingerprint(),
        records=records,
        device_type=device.type,
    )
    status, error = "failed", None
    try:
        hit = recorder.lookup(fields, use_cache=use_cache)
        result = hit.result if hit is not None else compute()
        result = table_ii_relabelled(result, [model.label for model in models])
        recorder.keep(result)
        status = "done"
    except AttackCancelled:
        status = "interrupted"
        raise
    except BaseException as exc:
        error = f"{type(exc).__name__}: {exc}"
        raise
    finally:
        payload = {"command": "table", **result.to_dict()} if status == "done" else None
        recorder.close(
            status,
            error=error,
            **({"result_json": payload, "summary": key_numbers(payload)} if payload is not None else {}),
        )
    return TableIIRun(result, hit.run_id if hit is not None else None)
