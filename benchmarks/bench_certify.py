"""What a certificate costs: randomized smoothing (``segadv certify``) against the attacks, side by side.

Certifying a slice takes n + n0 forward passes (no backward); FGSM takes one forward and one backward,
PGD-k about k of each. This prints seconds per slice for FGSM, PGD-10 and certify at n = 100 and 1000 on
the same slices and model, and the ratios to FGSM, with the load average beside them.

    python benchmarks/bench_certify.py [--limit 4] [--threads 2] [--device cpu] [--n 100,1000]
"""

from __future__ import annotations

import argparse
import os
import time

import torch

from core.attacks.config import AttackConfig
from core.data.gitract import open_dataset, select_slices
from core.evaluation.certify import CertifyConfig, certify
from core.evaluation.scoring import evaluate
from core.models.checkpoints import load_checkpoint
from core.paths import demo_checkpoint


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--n", default="100,1000", help="comma list of sample counts to certify with")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    model, meta = load_checkpoint(demo_checkpoint(), device)
    records = select_slices(open_dataset(), "test", limit=args.limit)
    size = meta["img_size"]

    def seconds(work) -> float:
        started = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return (time.perf_counter() - started) / len(records)

    evaluate(model, records[:1], size, AttackConfig(), device=device)  # warm-up: the first pass pays for set-up
    rows = [
        ("FGSM", 2, seconds(lambda: evaluate(model, records, size, AttackConfig(), device=device))),
        (
            "PGD-10",
            20,
            seconds(
                lambda: evaluate(
                    model, records, size, AttackConfig.for_method("pgd", eps=0.009, steps=10), device=device
                )
            ),
        ),
    ]
    for n in (int(part) for part in args.n.split(",")):
        config = CertifyConfig(n=n, n0=16, batch_size=64 if device.type == "cuda" else 16)
        rows.append(
            (
                f"certify n={n}",
                config.forward_passes,
                seconds(lambda: certify(model, records, size, config, device=device)),
            )
        )
    fgsm = rows[0][2]
    print(f"{len(records)} slices at {size} px, {meta['model']} on {device}; load average {os.getloadavg()[0]:.2f}")
    print(f"{'method':<16} {'passes/slice':>13} {'s/slice':>9} {'x FGSM':>8}")
    for name, passes, value in rows:
        print(f"{name:<16} {passes:>13} {value:>9.3f} {value / fgsm:>8.1f}")


if __name__ == "__main__":
    main()
