"""How much the shared gradient saves, and what the robustness attacks cost and find: measured side by side
in one run, printed as ratios.

(a) an eps sweep of k values through ``core.evaluation.scoring.sweep`` (one forward + backward, then the k
    adversarial batches through the model without autograd) against a full FGSM per eps, as attack
    libraries do (forward + backward + a forward to score the adversarial image, k times);
(b) one FGSM eps step from the gradient cache (one forward pass, plus scoring) against one plain
    forward pass of the same batch.

Runs on the bundled demo checkpoint when present, otherwise on a random-weight ``small`` model, over a
batch of demo slices that have organs. On a CUDA machine try e.g.
``--device cuda --model effb7pp --img-size 224 --batch 64 --precision bf16``.

    python benchmarks/bench_attacks.py [--threads 1] [--repeats 5]
    python benchmarks/bench_attacks.py --robust [--slices 8] [--threads 1]

``--robust`` measures instead, on the first ``--slices`` test slices with organs of the demo data:
(r1) APGD-100 against PGD-100 (BCE, eps 0.009), CPU time per slice (goal: at most 1.1x), and what
     each adds per step around a model that costs nothing;
(r2) the passes through the model per slice of each attack, counted with a forward hook, against
     ``core.attacks.ensemble.passes_per_slice``;
(r3) robust DSC of FGSM, PGD-k and APGD-k (k = ``--table-steps``) with every loss, and of the
     ensemble, at eps 0.003 and 0.009 (PGD keeps its best iterate);
(r4) the goal: at eps 0.009 the ensemble (100 steps per member, at most 4 x PGD-100's passes) against
     the best single PGD-100 run (any loss, best iterate): at least 0.05 lower mean DSC.

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

from core.attacks.config import AttackConfig
from core.attacks.fast_gradient import fgsm
from core.attacks.gradient_cache import GradientCache
from core.attacks.gradients import input_gradients
from core.evaluation.scoring import sweep
from core.losses import per_image_loss
from core.metrics import dice_per_organ
from core.models.inference import precision_autocast, predict


def _load_model(args):
    """(model, img_size, description): the demo checkpoint, or a registry model with random weights."""
    from core.models.registry import build_model

    if args.model is None:
        try:
            from core.models.checkpoints import load_checkpoint
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
    from core.data.gitract import with_organs
    from core.data.open import open_dataset

    records = with_organs(open_dataset().records)
    if not records:
        raise SystemExit("the demo data set has no slices with organs")
    chosen = [records[i % len(records)] for i in np.linspace(0, len(records) - 1, count).astype(int)]
    loaded = [record.load(size) for record in chosen]
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
    parser.add_argument(
        "--model", default=None, help="registry model with random weights instead of the demo checkpoint"
    )
    parser.add_argument("--img-size", type=int, default=None, help="default: the checkpoint's, else 128")
    parser.add_argument("--batch", type=int, default=4, help="slices per batch")
    parser.add_argument("--k", type=int, default=10, help="eps values in the sweep")
    parser.add_argument("--loss", default="bce")
    parser.add_argument("--precision", default="fp32", choices=("fp32", "bf16", "fp16"))
    parser.add_argument(
        "--chunk", type=int, default=None, help="images per no-grad forward in the sweep (default: core's)"
    )
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    parser.add_argument("--robust", action="store_true", help="measure the robustness attacks instead (see the doc)")
    parser.add_argument("--slices", type=int, default=8, help="--robust: slices with organs to attack")
    parser.add_argument(
        "--split", default="test", help="--robust: the demo split they come from (test has 41 with organs)"
    )
    parser.add_argument(
        "--steps", type=int, default=100, help="--robust: steps of PGD / APGD / each ensemble member in r1, r2, r4"
    )
    parser.add_argument(
        "--table-steps", type=int, default=10, help="--robust: steps of PGD / APGD in the loss table (r3)"
    )
    parser.add_argument("--pairs", type=int, default=2, help="--robust: alternating PGD / APGD runs timed in r1")
    parser.add_argument(
        "--parts", default="r1,r2,r3,r4", help="--robust: which parts to run, e.g. r1,r2 for throughput only"
    )
    args = parser.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    if args.robust:
        robust_benchmark(args)
        return

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
        stacked = torch.stack(
            [torch.autograd.grad(per_image_loss(name, detached, masks).sum(), detached)[0] for name in losses]
        )
        return torch.autograd.grad(logits, x, grad_outputs=stacked, is_grads_batched=True)[0].sign()

    def losses_separately():
        return [input_gradients(model, images, masks, (name,), precision=precision) for name in losses]

    functions = {
        "sweep": shared_gradient_sweep,
        "naive": fgsm_per_eps,
        "warm": cached_sweep,
        "cached": cached_eps_step,
        "forward": plain_forward,
        "retained": losses_one_forward_retained,
        "batched": losses_one_forward_batched,
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
    print(
        f"batch: {args.batch} demo slices at {size} x {size}; k = {args.k} eps values; loss {args.loss}; "
        f"median of {args.repeats} interleaved rounds"
    )
    print()
    print(f"(a) eps sweep, shared gradient      {median['sweep'] * 1e3:9.1f} ms")
    print(f"    full FGSM per eps (k attacks)   {median['naive'] * 1e3:9.1f} ms")
    print(f"    speed-up                        {median['naive'] / median['sweep']:9.2f} x   (goal >= 3x)")
    print(
        f"    sweep with the gradient cached  {median['warm'] * 1e3:9.1f} ms   "
        f"speed-up {median['naive'] / median['warm']:.2f} x"
    )
    print(f"(b) one eps step from the cache     {median['cached'] * 1e3:9.1f} ms")
    print(f"    one plain forward pass          {median['forward'] * 1e3:9.1f} ms")
    print(f"    ratio                           {median['cached'] / median['forward']:9.2f} x   (goal <= 1.3x)")
    print(f"(c) gradients of {len(losses)} losses ({', '.join(losses)}):")
    print(
        f"    one forward, backward per loss  {median['retained'] * 1e3:9.1f} ms   "
        "(core.attacks.gradients.input_gradients)"
    )
    print(f"    one forward, is_grads_batched   {median['batched'] * 1e3:9.1f} ms")
    print(f"    one forward per loss            {median['separate'] * 1e3:9.1f} ms")
    print(
        f"throughput (adversarial slices scored per second): sweep {args.batch * args.k / median['sweep']:.1f}, "
        f"FGSM per eps {args.batch * args.k / median['naive']:.1f}, plain forward {args.batch / median['forward']:.1f}"
    )


class PassCounter:
    """Images through the model, with autograd on (forward + backward: our attacks take a gradient after
    every such forward) and off (forward only), counted by a forward hook."""

    def __init__(self, model):
        self.forward_backward = self.forward = 0
        model.register_forward_hook(self._count)

    def _count(self, module, inputs, output) -> None:
        if torch.is_grad_enabled():
            self.forward_backward += inputs[0].shape[0]
        else:
            self.forward += inputs[0].shape[0]

    def take(self) -> tuple[int, int]:
        counts = self.forward_backward, self.forward
        self.forward_backward = self.forward = 0
        return counts


def robust_benchmark(args) -> None:
    from core.attacks.config import ENSEMBLE
    from core.attacks.ensemble import passes_per_slice
    from core.data.gitract import select_slices
    from core.data.open import open_dataset
    from core.evaluation.scoring import attack_slice, batches, summarise

    model, size, description = _load_model(args)
    records = select_slices(open_dataset(), args.split, organs_only=True, limit=args.slices)
    loaded = list(batches(records, size, args.batch, args.device))
    counter = PassCounter(model)
    n = len(records)

    parts = {part.strip() for part in args.parts.split(",")}

    def run(config):
        """(summary, CPU seconds per slice, wall seconds per slice, passes per slice (fb, f)) of ``config``."""
        config = config.replace(precision=args.precision)
        counter.take()
        rows = []
        cpu, wall = time.process_time(), time.perf_counter()
        for chunk, images, truth in loaded:
            rows += attack_slice(model, images, truth, config, ids=[r.id for r in chunk])
        _synchronise(args.device)
        cpu, wall = (time.process_time() - cpu) / n, (time.perf_counter() - wall) / n
        fb, f = counter.take()
        return summarise(rows), cpu, wall, (fb / n, f / n)

    print(f"model: {description}, {args.device}, torch threads {torch.get_num_threads()}")
    print(f"slices: the first {n} {args.split} slices with organs of the demo data, batches of {args.batch}")

    steps = args.steps
    pgd100 = AttackConfig.for_method("pgd", steps=steps, best_iterate=True, eps=0.009)
    apgd100 = AttackConfig.for_method("apgd", steps=steps, eps=0.009)
    fgsm_summary, fgsm_cpu, fgsm_wall, _ = run(AttackConfig(eps=0.009))  # also the warm-up
    # Alternating pairs, so that load from other processes hits both alike; the medians are compared.
    pairs = [(run(pgd100), run(apgd100)) for _ in range(args.pairs)]
    pgd_summary, _, _, pgd_passes = pairs[0][0]
    apgd_summary, _, _, apgd_passes = pairs[0][1]
    pgd_cpu, pgd_wall = (statistics.median(pair[0][i] for pair in pairs) for i in (1, 2))
    apgd_cpu, apgd_wall = (statistics.median(pair[1][i] for pair in pairs) for i in (1, 2))
    pgd_step, apgd_step = _bookkeeping_per_step(args, steps)
    clean = pgd_summary.mean_clean
    print(f"clean mean DSC {clean:.4f}")
    print()
    # On a shared CPU our own process time is the fair measure; a GPU works while the CPU waits.
    cuda = args.device.startswith("cuda")
    timed = "wall time" if cuda else "CPU time of this process; wall time in brackets"
    pgd_time, apgd_time = (pgd_wall, apgd_wall) if cuda else (pgd_cpu, apgd_cpu)
    ensemble100 = AttackConfig.for_method("ensemble", steps=steps, eps=0.009)
    ensemble_summary, ensemble_cpu, ensemble_wall, ensemble_passes = run(ensemble100)
    ensemble_time = ensemble_wall if cuda else ensemble_cpu
    print(f"(r1) time per slice, BCE, eps 0.009 ({timed})")
    print(
        f"    {f'PGD-{steps} (best iterate)':32s}{pgd_time * 1e3:9.0f} ms  ({pgd_wall * 1e3:.0f} ms)   "
        f"DSC {pgd_summary.mean_adv:.4f}"
    )
    print(
        f"    {f'APGD-{steps}':32s}{apgd_time * 1e3:9.0f} ms  ({apgd_wall * 1e3:.0f} ms)   "
        f"DSC {apgd_summary.mean_adv:.4f}"
    )
    print(
        f"    ratio                           {apgd_time / pgd_time:9.2f} x   (goal <= 1.1x; median of {args.pairs} "
        f"alternating pairs)"
    )
    print(
        f"    bookkeeping per step, {args.batch} slices, on a per-pixel model that costs nothing: "
        f"PGD {pgd_step:.2f} ms, "
        f"APGD {apgd_step:.2f} ms (APGD's own {apgd_step - pgd_step:+.2f} ms)"
    )
    print(
        f"    slices per second: FGSM {1 / (fgsm_wall if cuda else fgsm_cpu):.1f}, APGD-{steps} {1 / apgd_time:.2f}, "
        f"ensemble {1 / ensemble_time:.3f}"
    )
    if "r2" in parts:
        print()
        print(
            "(r2) passes through the model per slice: counted (forward + backward, forward only) "
            "vs core.attacks.ensemble.passes_per_slice"
        )
        for label, config, counted in (
            (f"PGD-{steps}", pgd100, pgd_passes),
            (f"APGD-{steps}", apgd100, apgd_passes),
            (f"ensemble ({len(ENSEMBLE)} x APGD-{steps})", ensemble100, ensemble_passes),
        ):
            stated = passes_per_slice(config)
            print(
                f"    {label:30s}  counted {counted[0]:.0f} + {counted[1]:.0f}, stated {stated['forward_backward']} + "
                f"{stated['forward']}"
            )
        print(f"    ensemble members: {', '.join(member.name for member in ENSEMBLE)}")
    if "r3" in parts:
        _loss_table(args, run, clean)
    if "r4" in parts:
        _goal(run, pgd100, pgd_summary, ensemble100, ensemble_summary, ensemble_cpu, steps)


def _bookkeeping_per_step(args, steps: int) -> tuple[float, float]:
    """CPU ms per step of PGD (best iterate) and APGD around a model that costs nothing (per-pixel
    linear): what each attack adds to the passes through a real model."""
    from core.attacks.runner import AttackContext, run_attack

    class PerPixel(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.weight = torch.nn.Parameter(torch.tensor([1.0, -2.0, 3.0]).view(1, 3, 1, 1))

        def forward(self, image):
            return self.weight * image - 0.5

    model = PerPixel().to(args.device)
    size = args.img_size or 128
    generator = torch.Generator().manual_seed(0)
    image = torch.rand(args.batch, 1, size, size, generator=generator).to(args.device)
    truth = (torch.rand(args.batch, 3, size, size, generator=generator) > 0.5).float().to(args.device)
    context = AttackContext(ids=[str(i) for i in range(args.batch)], reference=truth)
    per_step = []
    for config in (
        AttackConfig.for_method("pgd", steps=steps, best_iterate=True),
        AttackConfig.for_method("apgd", steps=steps),
    ):
        times = []
        for _ in range(3):
            started = time.process_time()
            run_attack(model, image, truth, config, context)
            _synchronise(args.device)
            times.append((time.process_time() - started) / steps * 1e3)
        per_step.append(statistics.median(times))
    return per_step[0], per_step[1]


def _loss_table(args, run, clean) -> None:
    from core.attacks.config import ENSEMBLE
    from core.names import LOSS_NAMES

    print()
    k = args.table_steps
    print(f"(r3) robust mean DSC (clean {clean:.4f}) by attack and loss; PGD-{k} keeps its best iterate")
    print(
        f"    {'loss':14s}"
        + "".join(
            f"{f'{name} eps {eps:g}':>21s}" for eps in (0.003, 0.009) for name in ("FGSM", f"PGD-{k}", f"APGD-{k}")
        )
    )
    for loss in LOSS_NAMES:
        cells = []
        for eps in (0.003, 0.009):
            for config in (
                AttackConfig(loss=loss, eps=eps),
                AttackConfig.for_method("pgd", loss=loss, steps=k, best_iterate=True, eps=eps),
                AttackConfig.for_method("apgd", loss=loss, steps=k, eps=eps),
            ):
                cells.append(run(config)[0].mean_adv)
        print(f"    {loss:14s}" + "".join(f"{value:21.4f}" for value in cells), flush=True)
    small = [run(AttackConfig.for_method("ensemble", steps=k, eps=eps))[0].mean_adv for eps in (0.003, 0.009)]
    print(f"    ensemble of {len(ENSEMBLE)} x APGD-{k}: eps 0.003 {small[0]:.4f}, eps 0.009 {small[1]:.4f}")


def _goal(run, pgd100, pgd_summary, ensemble100, ensemble_summary, ensemble_cpu, steps) -> None:
    from core.attacks.ensemble import passes_per_slice
    from core.names import LOSS_NAMES

    print()
    print(
        f"(r4) goal at eps 0.009: the ensemble ({steps} steps per member) vs the best single PGD-{steps} "
        "(any loss, best iterate)"
    )
    single = {"bce": pgd_summary.mean_adv}
    for loss in LOSS_NAMES[1:]:
        single[loss] = run(pgd100.replace(loss=loss))[0].mean_adv
    print(f"    PGD-{steps} by loss: " + ", ".join(f"{loss} {value:.4f}" for loss, value in single.items()))
    best_loss = min(single, key=single.get)
    gap = single[best_loss] - ensemble_summary.mean_adv
    budget = passes_per_slice(ensemble100)["forward_backward"] / passes_per_slice(pgd100)["forward_backward"]
    print(f"    {f'best single PGD-{steps}':32s}{single[best_loss]:.4f} ({best_loss})")
    print(
        f"    ensemble                        {ensemble_summary.mean_adv:.4f}  "
        f"({budget:.1f} x PGD-{steps}'s forward + backward passes; "
        f"{ensemble_cpu:.1f} s CPU per slice)"
    )
    print(f"    gap                             {gap:.4f}   (goal >= 0.05 at <= 4 x the budget)")


if __name__ == "__main__":
    main()
