"""The search that chooses the ensemble's members (``core.attacks.config.ENSEMBLE``), re-runnable.

Every candidate is one APGD run: each loss of ``core.names.LOSS_NAMES`` at radius 1 or at SEA's 2 / 1.5 / 1
eps (``--steps`` steps, best iterate, per-slice seeds). On held-out slices (the demo's test slices with
organs after the first ``--skip``, which ``bench_attacks.py --robust`` uses) it measures each run's mean DSC
per slice, then finds the best set of ``--size`` members by the per-slice worst case (what the ensemble
reports: per slice the lowest mean DSC of its members), exhaustively and greedily, with and without the
losses named by ``--new`` (by default ``hallucinate``), and scores the current ensemble on the same slices.
Each set is also split into damage (DSC over organs present in the truth) and hallucination (share of
absent organs predicted), ``core.evaluation.label_split``.

    python benchmarks/ensemble_search.py [--slices 12] [--skip 8] [--steps 100] [--threads 1] [--json out.json]
    python benchmarks/ensemble_search.py --candidates apgd-dice,apgd-hallucinate,apgd-hallucinate@2-1.5-1 ...

``--candidates`` restricts the search to the runs named (as ``EnsembleMember.name`` writes them), e.g. the
current members and the new loss's runs: whether the new loss would enter the ensemble, at a fraction of the
cost of the full search.

Cost: candidates x slices APGD runs (20 x 12 x 100 forward + backward passes of the small model at 128 px by
default: 22 minutes of wall time, one thread, on the shared 2-core machine).
"""

from __future__ import annotations

import argparse
import itertools
import json
import time

import numpy as np
import torch

from core.attacks.config import ENSEMBLE, AttackConfig, EnsembleMember
from core.evaluation.label_split import label_split
from core.evaluation.scoring import attack_slice, batches
from core.names import LOSS_NAMES

SEA_RADII = (2.0, 1.5, 1.0)


def worst_case(dsc: np.ndarray, members: tuple[int, ...]) -> float:
    """Mean over slices of the lowest mean DSC among ``members`` (columns of ``dsc``, slices x runs)."""
    return float(dsc[:, list(members)].min(axis=1).mean())


def best_set(dsc: np.ndarray, allowed: list[int], size: int) -> tuple[tuple[int, ...], float]:
    """The ``size`` runs among ``allowed`` with the lowest worst case (exhaustive; ties: the earlier set)."""
    best = min(itertools.combinations(allowed, size), key=lambda members: worst_case(dsc, members))
    return best, worst_case(dsc, best)


def greedy_set(dsc: np.ndarray, allowed: list[int], size: int) -> tuple[tuple[int, ...], float]:
    chosen: tuple[int, ...] = ()
    for _ in range(size):
        chosen += (min((i for i in allowed if i not in chosen), key=lambda i: worst_case(dsc, chosen + (i,))),)
    return chosen, worst_case(dsc, chosen)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--slices", type=int, default=12, help="held-out slices to search on")
    parser.add_argument("--skip", type=int, default=8, help="test slices with organs skipped first (the benchmark's)")
    parser.add_argument("--steps", type=int, default=100, help="APGD steps per run")
    parser.add_argument("--eps", type=float, default=0.009)
    parser.add_argument("--size", type=int, default=3, help="members in the ensemble")
    parser.add_argument("--new", default="hallucinate", help="comma list of losses the old search did not have")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--json", default=None, help="write every run's per-slice mean DSC here")
    parser.add_argument("--candidates", default=None, help="comma list of run names to search over (default: all)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from core.data.gitract import open_dataset, select_slices
    from core.models.checkpoints import load_checkpoint
    from core.paths import demo_checkpoint

    path = demo_checkpoint()
    model, meta = load_checkpoint(path, device=args.device)
    size = int(meta["img_size"])
    records = select_slices(open_dataset(), "test", organs_only=True)[args.skip : args.skip + args.slices]
    loaded = list(batches(records, size, args.batch, args.device))
    new = {loss.strip() for loss in args.new.split(",") if loss.strip()}
    candidates = [EnsembleMember(loss, radii) for loss in LOSS_NAMES for radii in ((1.0,), SEA_RADII)]
    if args.candidates:
        wanted = [name.strip() for name in args.candidates.split(",") if name.strip()]
        unknown = set(wanted) - {member.name for member in candidates}
        if unknown:
            raise SystemExit(f"unknown candidate run(s): {', '.join(sorted(unknown))}")
        candidates = [member for member in candidates if member.name in wanted]
    print(f"model: {path.name}, {size} px, torch threads {torch.get_num_threads()}, {args.device}")
    print(
        f"slices: test slices with organs {args.skip}..{args.skip + len(records) - 1} of the demo data "
        f"({len(records)}); eps {args.eps:g}; APGD-{args.steps}, best iterate; {len(candidates)} candidate runs"
    )
    rows_by_run = []
    started = time.perf_counter()
    for member in candidates:
        config = AttackConfig.for_method("apgd", loss=member.loss, radii=member.radii, steps=args.steps, eps=args.eps)
        rows = []
        for chunk, images, truth in loaded:
            rows += attack_slice(model, images, truth, config, ids=[record.id for record in chunk])
        rows_by_run.append(rows)
        split = label_split(rows)
        print(
            f"  {member.name:32s} mean DSC {np.mean([r.mean_adv for r in rows]):.4f}   damage {split.damage_adv:.4f}"
            f"   hallucination {split.hallucination_adv:.3f}   ({time.perf_counter() - started:.0f} s)",
            flush=True,
        )
    clean = np.mean([r.mean_clean for r in rows_by_run[0]])
    dsc = np.array([[r.mean_adv for r in rows] for rows in rows_by_run]).T  # slices x runs
    names = [member.name for member in candidates]
    old = [i for i, member in enumerate(candidates) if member.loss not in new]
    everything = list(range(len(candidates)))
    current = tuple(candidates.index(member) for member in ENSEMBLE if member in candidates)
    split0 = label_split(rows_by_run[0])
    print()
    print(
        f"clean mean DSC {clean:.4f} (damage {split0.damage_clean:.4f}, hallucination "
        f"{split0.hallucination_clean:.3f} of {split0.absent_pairs} absent pairs)"
    )

    def describe(label: str, members: tuple[int, ...]) -> None:
        winners = [min(members, key=lambda m: (dsc[s, m], members.index(m))) for s in range(dsc.shape[0])]
        split = label_split([rows_by_run[m][s] for s, m in enumerate(winners)])
        print(
            f"  {label:34s} {worst_case(dsc, members):.4f}   damage {split.damage_adv:.4f}   hallucination "
            f"{split.hallucination_adv:.3f}   {', '.join(names[m] for m in members)}"
        )

    print(f"per-slice worst case of {args.size} members (mean DSC):")
    if len(current) == len(ENSEMBLE):
        describe("current ensemble", current)
    for label, allowed in ((f"without {', '.join(sorted(new))}", old), ("with it", everything)):
        if len(allowed) <= args.size:
            continue
        exhaustive, _ = best_set(dsc, allowed, args.size)
        greedy, _ = greedy_set(dsc, allowed, args.size)
        describe(f"best {args.size}, {label}", exhaustive)
        describe(f"greedy {args.size}, {label}", greedy)
        if len(allowed) > args.size + 1:
            more, _ = best_set(dsc, allowed, args.size + 1)
            describe(f"best {args.size + 1}, {label}", more)
    if args.json:
        with open(args.json, "w") as handle:
            json.dump(
                {
                    "slices": [record.id for record in records],
                    "runs": names,
                    "eps": args.eps,
                    "steps": args.steps,
                    "mean_dsc": dsc.tolist(),
                    "clean": [r.mean_clean for r in rows_by_run[0]],
                },
                handle,
            )


if __name__ == "__main__":
    main()
