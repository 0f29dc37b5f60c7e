"""Training throughput (images/s) of registry models, plainly and adversarially, measured side by side in one run.

One training step is what ``segadv train`` does per batch: kornia augmentation of image and masks,
(with ``--adv``) the adversarial batch of ``core.training.adversarial``, forward, MONAI Dice + Focal loss,
backward, AdamW step. The first model trains with every defence of ``--defences`` (plain, fgsm-rs,
pgd-K), the others plainly. All runs take turns step by step (after warm-up steps), so a busy machine
slows them alike and the ratios stay meaningful. Random slices and masks: throughput does not depend on
the pixel values.

    python benchmarks/bench_train.py [--models small,vgg] [--defences plain,fgsm-rs,pgd-3] [--img-size 224]
        [--batch 8] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from core.models.registry import build_model
from core.organs import ORGANS
from core.training.adversarial import adversarial_batch, make_defence
from core.training.loop import make_augmentation, make_loss


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small,vgg", help="comma list of registry names (first is the reference)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument(
        "--defences",
        default="plain,fgsm-rs,pgd-3",
        help="comma list for the first model: plain, fgsm-rs, pgd-K (K attack steps)",
    )
    parser.add_argument("--eps", type=float, default=0.009, help="the adversarial eps")
    parser.add_argument("--steps", type=int, default=3, help="timed steps per run")
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--threads", type=int, default=None)
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    torch.manual_seed(0)
    names = [name.strip() for name in args.models.split(",") if name.strip()]
    images = torch.rand(args.batch, 1, args.img_size, args.img_size, device=args.device)
    masks = (torch.rand(args.batch, len(ORGANS), args.img_size, args.img_size, device=args.device) > 0.7).float()
    augment = make_augmentation().to(args.device)
    loss_fn = make_loss()
    defences = [name.strip() for name in args.defences.split(",") if name.strip()]
    runs = {}  # label -> (model, optimizer, defence or None)
    for index, name in enumerate(names):
        for defence_name in defences if index == 0 else ["plain"]:
            model = build_model(name).to(args.device).train()
            optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-3)
            label = name if defence_name == "plain" else f"{name} {defence_name}"
            runs[label] = (model, optimizer, _defence(defence_name, args.eps))
    generator = torch.Generator(device=args.device).manual_seed(0)

    def step(label: str) -> float:
        model, optimizer, defence = runs[label]
        _synchronise(args.device)
        started = time.perf_counter()
        with torch.no_grad():
            x, y = augment(images, masks)
        if defence is not None:
            y = (y > 0.5).float()
            x = adversarial_batch(model, x, y, defence, defence.eps, generator=generator)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), (y > 0.5).float()).backward()
        optimizer.step()
        _synchronise(args.device)
        return time.perf_counter() - started

    for _ in range(args.warmup):
        for label in runs:
            step(label)
    seconds = {label: [] for label in runs}
    for _ in range(args.steps):
        for label in runs:
            seconds[label].append(step(label))

    print(
        f"training throughput, {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch} "
        f"at {args.img_size} x {args.img_size}, adversarial eps {args.eps:g}, median of {args.steps} steps "
        f"after {args.warmup} warm-up"
    )
    reference = next(iter(runs))
    rate = {label: args.batch / statistics.median(times) for label, times in seconds.items()}
    width = max(len(label) for label in runs)
    for label in runs:
        line = f"  {label:{width}s} {rate[label]:8.2f} images/s   ({statistics.median(seconds[label]):.2f} s per step)"
        if label != reference:
            line += f"   {rate[reference] / rate[label]:.2f} x slower than {reference}"
        print(line)


def _defence(name: str, eps: float):
    """None for plain training, else the ``Defence`` of ``fgsm-rs`` or ``pgd-K``."""
    if name == "plain":
        return None
    if name == "fgsm-rs":
        return make_defence("fgsm-rs", eps)
    if name.startswith("pgd-") and name[4:].isdigit():
        return make_defence("pgd", eps, steps=int(name[4:]))
    raise SystemExit(f"unknown defence {name!r}; choose from plain, fgsm-rs, pgd-K")


if __name__ == "__main__":
    main()
