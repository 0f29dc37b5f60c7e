"""Why PGD-10 hardly beats FGSM on a model: the same slices under FGSM and PGD variants, side by side, and
what the PGD iterates do.

For each eps it prints the mean DSC (over the first ``--slices`` test slices with labels, as ``segadv attack
--limit`` picks them) of: FGSM; BIM-10 (no random start); PGD-10 as ``segadv attack --method pgd`` runs it
(random start, step 2.5 eps / 10, the last iterate scored); the same with ``--best-iterate``; PGD-10 with
twice the step; PGD-50; PGD-10 with SEA's masked CE. Then, for PGD-10 from the clean image (BIM), per step:
the mean loss, the mean DSC, the share of the loss carried by pixels the clean prediction already got
wrong, and the share of input pixels whose gradient is exactly zero. Finally how linear the loss is in the
ball: the loss gained at the FGSM point against the first-order prediction ``eps * ||grad||_1``.

    python benchmarks/pgd_vs_fgsm.py --checkpoint runs/mni-unet.safetensors --data mni152 [--slices 32]
        [--eps 0.009,0.03] [--threads 1]
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import torch

from core.attacks.config import AttackConfig
from core.attacks.iterative import pgd
from core.evaluation.scoring import attack_slice, batches
from core.losses import per_image_loss
from core.models.inference import masks_from_logits, output_kind

VARIANTS = (  # (name, method, config values)
    ("FGSM", "fgsm", {}),
    ("BIM-10", "bim", {}),
    ("PGD-10 (CLI default: last iterate)", "pgd", {}),
    ("PGD-10 best iterate", "pgd", {"best_iterate": True}),
    ("PGD-10 step 5 eps / 10, best", "pgd", {"best_iterate": True, "step_size_factor": 0.5}),
    ("PGD-50 best iterate", "pgd", {"best_iterate": True, "steps": 50}),
    ("PGD-10 masked CE, best", "pgd", {"best_iterate": True, "loss": "masked-bce"}),
)


def pixel_ce(logits: torch.Tensor, truth: torch.Tensor, kind: str) -> torch.Tensor:
    """Per-pixel cross-entropy (N, H, W) for softmax, per-pixel BCE summed over labels for sigmoid."""
    if kind == "softmax":
        classes = torch.cat([1 - truth.amax(1, keepdim=True), truth], 1).argmax(1)
        return torch.nn.functional.cross_entropy(logits, classes, reduction="none")
    return torch.nn.functional.binary_cross_entropy_with_logits(logits, truth, reduction="none").sum(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--data", required=True)
    parser.add_argument("--slices", type=int, default=32)
    parser.add_argument("--eps", default="0.009,0.03")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    from core.data.gitract import select_slices
    from core.data.open import open_dataset
    from core.models.checkpoints import load_checkpoint

    model, meta = load_checkpoint(args.checkpoint, device="cpu")
    kind = output_kind(model)
    size = int(meta["img_size"])
    records = select_slices(open_dataset(args.data, kind=kind), "test", organs_only=True, limit=args.slices)
    loaded = list(batches(records, size, args.batch, "cpu"))
    print(
        f"{meta['model']} ({kind}), {size} px, {len(records)} test slices with labels, "
        f"torch threads {torch.get_num_threads()}"
    )
    for eps in (float(e) for e in args.eps.split(",")):
        print(f"\neps {eps:g} (L-inf), loss bce (cross-entropy for softmax):")
        for name, method, values in VARIANTS:
            values = dict(values)
            factor = values.pop("step_size_factor", None)
            if factor is not None:
                values["step_size"] = 2.5 * eps / values.get("steps", 10) / factor
            config = AttackConfig.for_method(method, eps=eps, labels=model.labels, **values)
            started = time.perf_counter()
            results = [
                row
                for chunk, images, truth in loaded
                for row in attack_slice(model, images, truth, config, ids=[r.id for r in chunk])
            ]
            clean = np.mean([r.mean_clean for r in results])
            adv = np.mean([r.mean_adv for r in results])
            linf = max(r.linf for r in results)
            print(
                f"  {name:36s} mean DSC {adv:.4f} (clean {clean:.4f}, drop {clean - adv:.4f}); L-inf {linf:.4f}; "
                f"{time.perf_counter() - started:.1f} s"
            )
        trace(model, loaded, eps, kind)


def trace(model, loaded, eps: float, kind: str) -> None:
    """BIM-10's iterates, step by step (the random start would only blur the picture), and the loss's linearity."""
    from core.metrics import mean_dice_on_device

    steps: dict[int, list] = {}
    for _, images, truth in loaded:
        with torch.no_grad():
            clean_wrong = masks_from_logits(model(images), kind).bool() != truth.bool()
            clean_wrong = clean_wrong.any(1)  # (N, H, W): a pixel whose label set the clean prediction got wrong

        def on_step(step, total, adversarial, logits, values, truth=truth, clean_wrong=clean_wrong):
            ce = pixel_ce(logits, truth, kind)
            prediction = masks_from_logits(logits, kind)
            dsc = mean_dice_on_device(prediction, truth.bool(), "one")
            x = adversarial.detach().requires_grad_(True)
            with torch.enable_grad():
                loss = per_image_loss("bce", model(x), truth, kind=kind).sum()
                (grad,) = torch.autograd.grad(loss, x)
            steps.setdefault(step, []).append(
                (
                    values.sum().item(),
                    dsc.sum().item(),
                    (ce * clean_wrong).sum().item() / ce.sum().item() * len(values),
                    (grad == 0).float().mean(dim=(1, 2, 3)).sum().item(),
                    clean_wrong.float().mean(dim=(1, 2)).sum().item(),
                    len(values),
                )
            )

        pgd(model, images, truth, eps, steps=10, loss="bce", random_start=False, on_step=on_step)
    print(
        f"  BIM-10 at eps {eps:g}, per step (before the step): mean loss, mean DSC, the share of the loss on the "
        "pixels the clean prediction got wrong, the share of input pixels with a zero gradient"
    )
    for step, parts in sorted(steps.items()):
        count = sum(p[5] for p in parts)
        loss, dsc, wrong, zero, wrong_pixels = (sum(p[i] for p in parts) / count for i in range(5))
        print(
            f"    step {step + 1:2d}: loss {loss:.4f}  DSC {dsc:.4f}  on clean-wrong pixels ({wrong_pixels:.1%} of "
            f"the pixels) {wrong:.0%}  zero grad {zero:.1%}"
        )
    gained, predicted, count = 0.0, 0.0, 0
    for _, images, truth in loaded:
        x = images.detach().requires_grad_(True)
        with torch.enable_grad():
            loss = per_image_loss("bce", model(x), truth, kind=kind)
            (grad,) = torch.autograd.grad(loss.sum(), x)
        step = eps * grad.sign()
        after = (x + step).clamp(0, 1)
        with torch.no_grad():
            gained += (per_image_loss("bce", model(after), truth, kind=kind) - loss).sum().item()
        predicted += (grad * (after - images)).sum().item()
        count += len(images)
    print(
        f"  linearity at eps {eps:g}: FGSM's mean loss gain {gained / count:.4g} against the first-order prediction "
        f"{predicted / count:.4g} "
        f"(ratio {gained / predicted:.2f}; 1 = linear in the ball, where one signed step is already the maximiser)"
    )


if __name__ == "__main__":
    main()
