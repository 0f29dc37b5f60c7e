"""How much the shared gradient saves: measured side by side in one run, printed as ratios.

(a) an eps sweep of k values through ``core.attacks.sweep`` (one forward + backward, then the k
    adversarial batches through the model without autograd) against a full FGSM per eps, as attack
    libraries do (forward + backward + a forward to score the adversarial image, k times);
(b) one FGSM eps step from the gradient cache (one forward pass, plus scoring) against one plain
    forward pass of the same batch.

Runs on the bundled demo checkpoint when present, otherwise on a random-weight ``small`` model, over a
batch of demo slices that have organs. On a CUDA machine try e.g.
``--device cuda --model effb7pp --img-size 224 --batch 64 --precision bf16``.

    python benchmarks/bench_attacks.py [--threads 1] [--repeats 5]
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from core.attacks import GradientCache, fgsm, precision_autocast, sweep
from core.metrics import dice_per_organ, predict


def _load_model(args):
    """(model, img_size, description): the demo checkpoint, or a registry model with random weights."""
    from core.models import build_model

    if args.model is None:
        try:
            from core.checkpoints import load_checkpoint
            from core.paths import demo_checkpoint

            path = demo_checkpoint()
            model, meta = load_checkpoint(path, device=args.device)
            return model.eval(), args.img_size or int(meta["img_size"]), f"demo checkpoint {path.name}"
        except FileNotFoundError:
            pass
    name = args.model or "small"
    torch.manual_seed(0)
    model = build_model(name).to(args.device).eval()
    return model, args.img_size or 128, f"{name} (random weights)"


def _demo_batch(size: int, count: int, device: str):
    from core.data import load_slice, open_dataset, with_organs

    records = with_organs(open_dataset().records)
    if not records:
        raise SystemExit("the demo data set has no slices with organs")
    chosen = [records[i % len(records)] for i in np.linspace(0, len(records) - 1, count).astype(int)]
    loaded = [load_slice(record, size) for record in chosen]
    images = torch.from_numpy(np.stack([image for image, _ in loaded])).unsqueeze(1).to(device)
    masks = torch.from_numpy(np.stack([mask for _, mask in loaded])).float().to(device)
    return images, masks


def _synchronise(device: str) -> None:
    if device.startswith("cuda"):
        torch.cuda.synchronize()


def _median_seconds(function, repeats: int, device: str) -> float:
    times = []
    for _ in range(repeats):
        _synchronise(device)
        started = time.perf_counter()
        function()
        _synchronise(device)
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--model", default=None, help="registry model with random weights instead of the demo checkpoint")
    parser.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else 128")
    parser.add_argument("--batch", type=int, default=4, help="slices per batch")
    parser.add_argument("--k", type=int, default=10, help="eps values in the sweep")
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument("--chunk", type=int, default=None, help="images per no-grad forward in the sweep (default: all k * batch)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, size, description = _load_model(args)
    images, masks = _demo_batch(size, args.batch, args.device)
    eps_values = [float(e) for e in np.linspace(0.003, 0.03, args.k)]
    chunk = args.chunk or args.k * args.batch
    precision = args.precision

    def shared_gradient_sweep():
        return sweep(model, images, masks, eps_values, args.loss, chunk_size=chunk, precision=precision)

    def fgsm_per_eps():
        for eps in eps_values:
            adversarial = fgsm(model, images, masks, eps, args.loss, precision=precision)
            with precision_autocast(images.device, precision):
                dice_per_organ(predict(model, adversarial), masks)

    cache = GradientCache()
    key = ("bench", "batch", args.loss, "gt", "textbook")
    sweep(model, images, masks, eps_values[:1], args.loss, cache=cache, cache_key=key, precision=precision)

    def cached_eps_step():
        return sweep(model, images, masks, eps_values[-1:], args.loss, cache=cache, cache_key=key, precision=precision)

    def plain_forward():
        with precision_autocast(images.device, precision):
            return predict(model, images)

    for function in (shared_gradient_sweep, fgsm_per_eps, cached_eps_step, plain_forward):
        function()  # warm-up
    timings = {name: [] for name in ("sweep", "naive", "cached", "forward")}
    # Interleaved rounds so that load from other processes hits both sides alike.
    for _ in range(args.repeats):
        timings["sweep"].append(_median_seconds(shared_gradient_sweep, 1, args.device))
        timings["naive"].append(_median_seconds(fgsm_per_eps, 1, args.device))
        timings["cached"].append(_median_seconds(cached_eps_step, 3, args.device))
        timings["forward"].append(_median_seconds(plain_forward, 3, args.device))
    median = {name: statistics.median(values) for name, values in timings.items()}

    print(f"model: {description}, {args.device}, {precision}, torch threads {torch.get_num_threads()}")
    print(f"batch: {args.batch} demo slices at {size} x {size}; k = {args.k} eps values; loss {args.loss}; "
          f"median of {args.repeats} interleaved rounds")
    print()
    print(f"(a) eps sweep, shared gradient      {median['sweep'] * 1e3:9.1f} ms")
    print(f"    full FGSM per eps (k attacks)   {median['naive'] * 1e3:9.1f} ms")
    print(f"    speed-up                        {median['naive'] / median['sweep']:9.2f} x   (goal >= 3x)")
    print(f"(b) one eps step from the cache     {median['cached'] * 1e3:9.1f} ms")
    print(f"    one plain forward pass          {median['forward'] * 1e3:9.1f} ms")
    print(f"    ratio                           {median['cached'] / median['forward']:9.2f} x   (goal <= 1.3x)")
    print(f"throughput (adversarial slices scored per second): sweep {args.batch * args.k / median['sweep']:.1f}, "
          f"FGSM per eps {args.batch * args.k / median['naive']:.1f}, plain forward {args.batch / median['forward']:.1f}")


if __name__ == "__main__":
    main()
