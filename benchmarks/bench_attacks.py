"""How much the shared gradient saves: measured side by side in one run, printed as ratios.

(a) an eps sweep of k values through ``core.evaluation.sweep`` (one forward + backward, then the k
    adversarial batches through the model without autograd) against a full FGSM per eps, as attack
    libraries do (forward + backward + a forward to score the adversarial image, k times);
(b) one FGSM eps step from the gradient cache (one forward pass, plus scoring) against one plain
    forward pass of the same batch.

Runs on the bundled demo checkpoint when present, otherwise on a random-weight ``small`` model, over a
batch of demo slices that have organs. On a CUDA machine try e.g.
``--device cuda --model effb7pp --img-size 224 --batch 64 --precision bf16``.

    python benchmarks/bench_attacks.py [--threads 1] [--repeats 5]

On a shared machine pass ``--threads 1``: with more torch threads than free cores every timing is
dominated by oversubscription. Expect (a) to be about k (c + 1) / (c + k), where c is the cost of
forward + backward over that of a forward pass (about 2 to 3 for the small model on a CPU): 2.5x to 3.1x
at k = 10 on a CPU, more on a GPU, where the k batches of adversarial images go through in one pass.
"""

from __future__ import annotations

import argparse
import statistics
import time

import numpy as np
import torch

from core.attack_config import AttackConfig
from core.attacks import GradientCache, fgsm, input_gradients, precision_autocast
from core.evaluation import sweep
from core.losses import per_image_loss
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
    parser.add_argument("--chunk", type=int, default=None, help="images per no-grad forward in the sweep (default: core's)")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)

    model, size, description = _load_model(args)
    images, masks = _demo_batch(size, args.batch, args.device)
    eps_values = [float(e) for e in np.linspace(0.003, 0.03, args.k)]
    chunk = args.chunk
    precision = args.precision
    config = AttackConfig(loss=args.loss, precision=precision)

    def shared_gradient_sweep():
        return sweep(model, images, masks, eps_values, config, chunk_size=chunk)

    def fgsm_per_eps():
        for eps in eps_values:
            adversarial = fgsm(model, images, masks, eps, args.loss, precision=precision)
            with precision_autocast(images.device, precision):
                dice_per_organ(predict(model, adversarial), masks)

    cache = GradientCache()
    key = ("bench", "batch", args.loss, "gt", "textbook")
    sweep(model, images, masks, eps_values[:1], config, cache=cache, cache_key=key)

    def cached_sweep():
        return sweep(model, images, masks, eps_values, config, cache=cache, cache_key=key, chunk_size=chunk)

    def cached_eps_step():
        return sweep(model, images, masks, eps_values[-1:], config, cache=cache, cache_key=key)

    def plain_forward():
        with precision_autocast(images.device, precision):
            return predict(model, images)

    losses = ("bce", "focal", "focal+dice")

    def losses_one_forward_retained():  # what core does: one forward, one backward per loss
        return input_gradients(model, images, masks, losses, precision=precision)

    def losses_one_forward_batched():  # the alternative: one vmapped backward over stacked d loss / d logits
        x = images.clone().requires_grad_(True)
        logits = model(x)
        detached = logits.detach().requires_grad_(True)
        stacked = torch.stack([torch.autograd.grad(per_image_loss(name, detached, masks).sum(), detached)[0] for name in losses])
        return torch.autograd.grad(logits, x, grad_outputs=stacked, is_grads_batched=True)[0].sign()

    def losses_separately():
        return [input_gradients(model, images, masks, (name,), precision=precision) for name in losses]

    functions = {
        "sweep": shared_gradient_sweep, "naive": fgsm_per_eps, "warm": cached_sweep, "cached": cached_eps_step,
        "forward": plain_forward, "retained": losses_one_forward_retained, "batched": losses_one_forward_batched,
        "separate": losses_separately,
    }
    for function in functions.values():
        function()  # warm-up
    timings = {name: [] for name in functions}
    # Interleaved rounds so that load from other processes hits every side alike.
    for _ in range(args.repeats):
        for name, function in functions.items():
            timings[name].append(_median_seconds(function, 3 if name in ("cached", "forward") else 1, args.device))
    median = {name: statistics.median(values) for name, values in timings.items()}

    print(f"model: {description}, {args.device}, {precision}, torch threads {torch.get_num_threads()}")
    print(f"batch: {args.batch} demo slices at {size} x {size}; k = {args.k} eps values; loss {args.loss}; "
          f"median of {args.repeats} interleaved rounds")
    print()
    print(f"(a) eps sweep, shared gradient      {median['sweep'] * 1e3:9.1f} ms")
    print(f"    full FGSM per eps (k attacks)   {median['naive'] * 1e3:9.1f} ms")
    print(f"    speed-up                        {median['naive'] / median['sweep']:9.2f} x   (goal >= 3x)")
    print(f"    sweep with the gradient cached  {median['warm'] * 1e3:9.1f} ms   speed-up {median['naive'] / median['warm']:.2f} x")
    print(f"(b) one eps step from the cache     {median['cached'] * 1e3:9.1f} ms")
    print(f"    one plain forward pass          {median['forward'] * 1e3:9.1f} ms")
    print(f"    ratio                           {median['cached'] / median['forward']:9.2f} x   (goal <= 1.3x)")
    print(f"(c) gradients of {len(losses)} losses ({', '.join(losses)}):")
    print(f"    one forward, backward per loss  {median['retained'] * 1e3:9.1f} ms   (core.attacks.input_gradients)")
    print(f"    one forward, is_grads_batched   {median['batched'] * 1e3:9.1f} ms")
    print(f"    one forward per loss            {median['separate'] * 1e3:9.1f} ms")
    print(f"throughput (adversarial slices scored per second): sweep {args.batch * args.k / median['sweep']:.1f}, "
          f"FGSM per eps {args.batch * args.k / median['naive']:.1f}, plain forward {args.batch / median['forward']:.1f}")


if __name__ == "__main__":
    main()
