"""What crafting each source's attack once saves in a transfer matrix: measured side by side, as a ratio.

(a) ``core.evaluation.transfer.transfer``: per batch, ONE attack per source (every model, and with three models or
    more each leave-one-out ensemble), whose adversarial batch is then scored on every target (a forward
    pass each), plus one clean forward pass per target;
(b) per pair, as a loop over ``segadv attack``-style runs would: for every (source, target) the attack is
    crafted again on the source, then the target scores the clean and the adversarial batch.

Both give the same numbers (checked here: every cell's mean DSC after the attack is equal); only the cost
differs. With S sources and T targets (a) runs S attacks and T (S + 1) forward passes, (b) S T attacks and
2 S T forward passes; an attack of k steps costs about k (c + 1) forward passes (c: a backward over a
forward), so the saving grows with the steps: about T for PGD.

Uses the bundled demo checkpoints (``checkpoints/demo_*.safetensors``) when there are two or more,
otherwise random-weight ``small``, ``small-fpn`` and ``small-unetpp`` models.

    python benchmarks/bench_transfer.py [--threads 1] [--method pgd --steps 5] [--limit 16]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.attacks.config import AttackConfig
from core.attacks.runner import AttackContext, run_attack
from core.evaluation.scoring import batches, score_slices, summarise
from core.evaluation.transfer import LogitEnsemble, transfer, transfer_sources
from core.models.inference import predict
from core.models.loaded import LoadedModel


def _models(args):
    """([LoadedModel], img_size, description)."""
    from core.models.checkpoints import load_checkpoint
    from core.models.registry import build_model
    from segadv_tui.cli.transfer import bundled_checkpoints

    paths = bundled_checkpoints()
    if len(paths) >= 2 and not args.random:
        loaded = [load_checkpoint(path, device=args.device) for path in paths]
        models = [
            LoadedModel(meta.get("model") or path.stem, model.eval()) for path, (model, meta) in zip(paths, loaded)
        ]
        return models, int(loaded[0][1]["img_size"]), f"bundled checkpoints {', '.join(p.name for p in paths)}"
    models = []
    for seed, name in enumerate(("small", "small-fpn", "small-unetpp")):
        torch.manual_seed(seed)
        models.append(LoadedModel(name, build_model(name).to(args.device).eval()))
    return models, args.img_size, "random-weight small, small-fpn, small-unetpp"


def per_pair(models, records, img_size, config, *, batch_size, device):
    """(source, target) -> Summary, crafting the attack once for every pair."""
    sources = transfer_sources([loaded.label for loaded in models])
    rows = {}
    for source in sources:
        attacked = (
            LogitEnsemble([models[i].model for i in source.members])
            if source.is_ensemble
            else models[source.members[0]].model
        )
        for label, target_model in ((loaded.label, loaded.model) for loaded in models):
            results = []
            for chunk, images, truth in batches(records, img_size, batch_size, device):
                # Random starts are seeded per slice id, as in core.evaluation.transfer and core.evaluation.
                context = AttackContext(ids=[r.id for r in chunk], reference=truth)
                output = run_attack(attacked, images, truth, config, context)
                clean_pred = predict(target_model, images, config.precision)
                adv_pred = predict(target_model, output.adversarial, config.precision)
                results += score_slices(
                    [r.id for r in chunk],
                    config.eps,
                    images,
                    output.adversarial,
                    clean_pred,
                    adv_pred,
                    truth,
                    labels=target_model.labels,
                    empty=config.empty,
                    score=config.score,
                )
            rows[source.label, label] = summarise(results)
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--method", default="fgsm")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--eps", type=float, default=0.009)
    parser.add_argument("--limit", type=int, default=16, help="test slices with organs")
    parser.add_argument("--batch-size", type=int, default=8)
    parser.add_argument("--img-size", type=int, default=128, help="for random-weight models")
    parser.add_argument("--random", action="store_true", help="random-weight models even where checkpoints are bundled")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from core.data.gitract import select_slices
    from core.data.open import open_dataset

    models, img_size, description = _models(args)
    records = select_slices(open_dataset(), "test", limit=args.limit)
    config = AttackConfig.for_method(
        args.method, eps=args.eps, **({"steps": args.steps} if args.method != "fgsm" else {})
    )
    sources = transfer_sources([loaded.label for loaded in models])
    print(
        f"{description}; {len(records)} test slices at {img_size} px, batch {args.batch_size}, {config.label}; "
        f"{len(sources)} sources x {len(models)} targets; {torch.get_num_threads()} thread(s) on {args.device}"
    )

    started = time.perf_counter()
    once = transfer(models, records, img_size, config, batch_size=args.batch_size, device=args.device)
    once_s = time.perf_counter() - started
    started = time.perf_counter()
    pairs = per_pair(models, records, img_size, config, batch_size=args.batch_size, device=args.device)
    pairs_s = time.perf_counter() - started

    differences = [abs(once.cell(s, t).summary.mean_adv - summary.mean_adv) for (s, t), summary in pairs.items()]
    same = np.allclose(differences, 0.0, atol=1e-12)
    print(f"one attack per source:  {once_s:7.2f} s  ({once.attacks} attack runs)")
    print(f"one attack per pair:    {pairs_s:7.2f} s  ({len(pairs) * (once.attacks // len(sources))} attack runs)")
    print(
        f"ratio {pairs_s / once_s:.2f}x; same numbers in every cell: {same} (largest difference {max(differences):.2g})"
    )


if __name__ == "__main__":
    main()
