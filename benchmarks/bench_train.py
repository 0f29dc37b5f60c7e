"""Training throughput (images/s) of two registry models, measured side by side in one run.

One training step is what ``segadv train`` does per batch: kornia augmentation of image and masks,
forward, MONAI Dice + Focal loss, backward, AdamW step. The models take turns step by step (after
warm-up steps), so a busy machine slows both alike and the ratio stays meaningful. Random slices and
masks: throughput does not depend on the pixel values.

    python benchmarks/bench_train.py [--models small,vgg] [--img-size 224] [--batch 8] [--steps 3] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from core.models import build_model
from core.organs import ORGANS
from core.training import make_augmentation, make_loss


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", default="small,vgg", help="comma list of registry names (first is the reference)")
    parser.add_argument("--img-size", type=int, default=224)
    parser.add_argument("--batch", type=int, default=8)
    parser.add_argument("--steps", type=int, default=3, help="timed steps per model")
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
    runs = {}
    for name in names:
        model = build_model(name).to(args.device).train()
        runs[name] = (model, torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-3))

    def step(name: str) -> float:
        model, optimizer = runs[name]
        _synchronise(args.device)
        started = time.perf_counter()
        with torch.no_grad():
            x, y = augment(images, masks)
        optimizer.zero_grad(set_to_none=True)
        loss_fn(model(x), (y > 0.5).float()).backward()
        optimizer.step()
        _synchronise(args.device)
        return time.perf_counter() - started

    for _ in range(args.warmup):
        for name in names:
            step(name)
    seconds = {name: [] for name in names}
    for _ in range(args.steps):
        for name in names:
            seconds[name].append(step(name))

    print(f"training throughput, {args.device}, torch threads {torch.get_num_threads()}, batch {args.batch} "
          f"at {args.img_size} x {args.img_size}, median of {args.steps} steps after {args.warmup} warm-up")
    reference = names[0]
    rate = {name: args.batch / statistics.median(times) for name, times in seconds.items()}
    for name in names:
        print(f"  {name:8s} {rate[name]:8.2f} images/s   ({statistics.median(seconds[name]):.2f} s per step)   "
              f"{rate[reference] / rate[name]:.2f} x slower than {reference}" if name != reference else
              f"  {name:8s} {rate[name]:8.2f} images/s   ({statistics.median(seconds[name]):.2f} s per step)")


if __name__ == "__main__":
    main()
