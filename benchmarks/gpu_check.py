"""The GPU smoke check of issue 13: one number per "likely" item, on one GPU, in a few minutes.

Run it through ``benchmarks/gpu_check.sh`` (it sets the environment and a time limit). Sections, in order:

  device    what the device rule and the AMP choice give (bf16 native or emulated; RANK without LOCAL_RANK)
  ddp       effb7 and effb7pp: `segadv train` under torchrun (nccl on CUDA, gloo on the CPU), 1 epoch,
            then a resume for a 2nd epoch (RNG restore + per-rank reseed, scaler, sampler state)
  signs     FGSM signs and predictions: batch vs one by one, CPU vs CUDA, TF32 on vs off (with
            deterministic cuDNN), and one batch forwarded alone vs inside a sweep-sized chunk
  fp16      non-finite logits of adversarial images under fp16 / bf16 autocast; fp16 vs fp32 signs
  memory    peak memory of effb7pp input gradients at batch 16 and 64, of an 11-eps sweep at batch 64
            (gradient + forward chunks), and of a bf16 channels-last training step at batch 64
            (with cudnn.benchmark off / on, and a host sync per step vs none)
  util      GPU utilisation (nvidia-smi samples) during `segadv sweep --limit 256`

Attacks are called only through ``core.attacks.gradients.input_gradients`` and ``core.attacks.fast_gradient.fgsm`` and
the
``segadv sweep`` CLI, so the check survives a rework of the attack engine. ``--device cpu --quick``
runs every section at tiny sizes (to check the script itself); CUDA-only numbers then print ``n/a``.

    python benchmarks/gpu_check.py [--device cuda] [--quick] [--sections ddp,signs] [--work DIR]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import traceback
from pathlib import Path

import numpy as np
import torch

SECTIONS = ("device", "ddp", "signs", "fp16", "memory", "util", "robust", "certify")
EPS = 0.009  # the paper's


class Check:
    """Sizes for a full run on a GPU, or tiny ones (--quick) for trying the script on a CPU."""

    def __init__(self, args):
        self.device = torch.device(args.device)
        self.cuda = self.device.type == "cuda"
        self.quick = args.quick
        self.work = Path(args.work)
        self.img = 64 if args.quick else 224
        self.small_batch, self.big_batch = (2, 4) if args.quick else (16, 64)
        self.ddp_slices, self.ddp_batch = (8, 4) if args.quick else (64, 32)  # 2 steps per epoch
        self.sweep_limit = 16 if args.quick else 256
        self.timeout = args.timeout
        self.data = None
        self.summary: list[tuple[str, str]] = []

    def note(self, item: str, result: str) -> None:
        self.summary.append((item, result))
        print(f"  => {item}: {result}", flush=True)


def say(text: str = "") -> None:
    print(text, flush=True)


def synchronise(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


@contextlib.contextmanager
def tf32(enabled: bool):
    """TF32 for cuDNN convolutions and matmuls on or off; off also makes cuDNN deterministic."""
    saved = (
        torch.backends.cudnn.allow_tf32,
        torch.backends.cuda.matmul.allow_tf32,
        torch.backends.cudnn.deterministic,
        torch.backends.cudnn.benchmark,
    )
    torch.backends.cudnn.allow_tf32 = enabled
    torch.backends.cuda.matmul.allow_tf32 = enabled
    torch.backends.cudnn.deterministic = not enabled
    torch.backends.cudnn.benchmark = False
    try:
        yield
    finally:
        (
            torch.backends.cudnn.allow_tf32,
            torch.backends.cuda.matmul.allow_tf32,
            torch.backends.cudnn.deterministic,
            torch.backends.cudnn.benchmark,
        ) = saved


def slices(check: Check, count: int, size: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """``count`` demo slices with organs (repeated when the demo has fewer) and their masks, on the CPU."""
    from core.data.gitract import with_organs
    from core.data.open import open_dataset

    records = with_organs(open_dataset(check.data))
    size = size or check.img
    images, masks = [], []
    for index in range(count):
        image, mask = records[index % len(records)].load(size)
        images.append(torch.from_numpy(image)[None])
        masks.append(torch.from_numpy(mask).float())
    return torch.stack(images), torch.stack(masks)


def random_model(name: str, device: torch.device):
    from core.models.registry import build_model

    torch.manual_seed(0)
    return build_model(name, encoder_weights=None).to(device).eval()


def demo_model(device: torch.device):
    from core.models.checkpoints import load_checkpoint
    from core.paths import demo_checkpoint

    model, meta = load_checkpoint(demo_checkpoint(), device)
    return model.eval(), meta["img_size"]


def signs(model, image, target, precision="fp32") -> torch.Tensor:
    from core.attacks.gradients import input_gradients

    return input_gradients(model, image, target, ("bce",), "textbook", precision=precision)["bce"].sign


def fgsm_predictions(model, image, target) -> tuple[torch.Tensor, torch.Tensor]:
    from core.attacks.fast_gradient import fgsm

    adversarial = fgsm(model, image, target, EPS, "bce", "textbook")
    with torch.no_grad():
        return adversarial, model(adversarial) > 0


def differ(a: torch.Tensor, b: torch.Tensor) -> str:
    a, b = a.cpu(), b.cpu()
    pixels = (a != b).float().mean().item()
    images = (a != b).flatten(1).any(1).sum().item()
    return f"{pixels:.2e} of pixels differ, in {images}/{a.shape[0]} images"


def run(command: list[str], check: Check, env: dict | None = None, timeout: float | None = None):
    started = time.perf_counter()
    try:
        done = subprocess.run(
            command,
            env={**os.environ, **(env or {})},
            capture_output=True,
            text=True,
            timeout=timeout or check.timeout,
            cwd=check.work,
        )
    except subprocess.TimeoutExpired as exc:
        return None, f"timed out after {exc.timeout:.0f} s", time.perf_counter() - started
    return done.returncode, done.stdout + done.stderr, time.perf_counter() - started


# --- sections -------------------------------------------------------------------------------------


def section_device(check: Check) -> None:
    from core.devices import describe_device, resolve_device
    from core.training.loop import amp_dtype_for

    say(
        f"device {describe_device(check.device)}, torch {torch.__version__}, CUDA {torch.version.cuda}, "
        f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'n/a'}"
    )
    if check.cuda:
        native = torch.cuda.is_bf16_supported(including_emulation=False)
        emulated = torch.cuda.is_bf16_supported(including_emulation=True)
        capability = ".".join(map(str, torch.cuda.get_device_capability(check.device)))
        check.note(
            "bf16 detection",
            f"compute capability {capability}: native bf16 {native}, with emulation "
            f"{emulated}; training autocasts to {amp_dtype_for(check.device)}",
        )
        saved = {key: os.environ.pop(key, None) for key in ("LOCAL_RANK", "RANK")}
        try:
            os.environ["RANK"] = "3"  # as srun-style launchers set it, without LOCAL_RANK
            chosen = resolve_device("cuda")
        finally:
            for key, value in saved.items():
                os.environ.pop(key, None)
                if value is not None:
                    os.environ[key] = value
        check.note("RANK without LOCAL_RANK", f"RANK=3 with {torch.cuda.device_count()} GPU(s) -> {chosen}")
    else:
        check.note("bf16 detection", f"n/a on the CPU (training autocasts to {amp_dtype_for(check.device)})")
        check.note("RANK without LOCAL_RANK", "n/a on the CPU")


def section_ddp(check: Check) -> None:
    segadv = shutil.which("segadv") or str(Path(sys.executable).with_name("segadv"))
    for name in ("effb7", "effb7pp"):
        out = check.work / f"{name}.safetensors"
        common = [
            sys.executable,
            "-m",
            "torch.distributed.run",
            "--standalone",
            "--nproc-per-node",
            "1",
            segadv,
            "train",
            "--model",
            name,
            "--encoder-weights",
            "none",
            "--device",
            str(check.device.type),
            "--data",
            str(check.data),
            "--img-size",
            str(check.img),
            "--batch-size",
            str(check.ddp_batch),
            "--limit-slices",
            str(check.ddp_slices),
            "--workers",
            "0" if check.quick else "4",
            "--out",
            str(out),
        ]
        results = []
        for label, extra in (
            ("epoch 1", ["--epochs", "1"]),
            ("resume, epoch 2", ["--epochs", "2", "--resume", str(out.with_name(f"{name}.resume.pt"))]),
        ):
            code, output, seconds = run(common + extra, check, env={"COLUMNS": "200"})
            lines = [line for line in output.splitlines() if line.startswith(("training ", "epoch ", "best ", "error"))]
            say(f"  {name} {label}: exit {code}, {seconds:.1f} s")
            for line in lines[-3:]:
                say(f"    {line.strip()}")
            if code != 0:
                say("    " + "\n    ".join(output.strip().splitlines()[-8:]))
            results.append(f"{label} {'ok' if code == 0 else f'FAILED ({code})'} in {seconds:.0f} s")
        backend = "nccl" if check.cuda else "gloo"
        check.note(f"DDP {name} ({backend}, 1 process)", "; ".join(results))


def section_signs(check: Check) -> None:
    n = check.small_batch
    models = [("effb7pp (random weights)", lambda device: (random_model("effb7pp", device), check.img))]
    models.append(("small (demo checkpoint)", demo_model))
    for label, make in models:
        model, size = make(check.device)
        image, target = slices(check, n, size)
        image, target = image.to(check.device), target.to(check.device)
        say(f"  {label}, {n} slices at {size} x {size}, loss bce, eps {EPS}")
        results = {}
        for tf32_on in (True, False) if check.cuda else (False,):
            with tf32(tf32_on) if check.cuda else contextlib.nullcontext():
                synchronise(check.device)
                started = time.perf_counter()
                batch_sign = signs(model, image, target)
                synchronise(check.device)
                seconds = time.perf_counter() - started
                single_sign = torch.cat([signs(model, image[i : i + 1], target[i : i + 1]) for i in range(n)])
                adversarial, batch_pred = fgsm_predictions(model, image, target)
                single_pred = torch.cat(
                    [fgsm_predictions(model, image[i : i + 1], target[i : i + 1])[1] for i in range(n)]
                )
                with torch.no_grad():  # as a sweep forwards it: inside a chunk of 8 eps groups
                    chunk = model(adversarial.repeat(8, 1, 1, 1))[:n] > 0
            setting = ("TF32 on" if tf32_on else "TF32 off, deterministic") if check.cuda else "CPU"
            results[tf32_on] = (batch_sign, batch_pred)
            check.note(
                f"{label}: batch vs one by one, {setting}",
                f"signs {differ(batch_sign, single_sign)}; predictions {differ(batch_pred, single_pred)}; "
                f"gradient of the batch {seconds * 1000:.0f} ms",
            )
            check.note(
                f"{label}: batch alone vs in a sweep chunk, {setting}", f"predictions {differ(batch_pred, chunk)}"
            )
        if check.cuda:
            cpu_model, _ = make(torch.device("cpu"))
            cpu_sign = signs(cpu_model, image.cpu(), target.cpu())
            _, cpu_pred = fgsm_predictions(cpu_model, image.cpu(), target.cpu())
            for tf32_on, (batch_sign, batch_pred) in results.items():
                setting = "TF32 on" if tf32_on else "TF32 off"
                check.note(
                    f"{label}: CPU vs CUDA, {setting}",
                    f"signs {differ(cpu_sign, batch_sign)}; predictions {differ(cpu_pred, batch_pred)}",
                )
            del cpu_model
        del model
        empty_cache(check)


def section_fp16(check: Check) -> None:
    from core.attacks.fast_gradient import fgsm

    n = check.small_batch
    if not check.cuda:
        say("  (CPU: fp16 / bf16 autocast run on the CPU; the numbers that matter are CUDA's)")
    for label, make in (
        ("effb7pp (random weights)", lambda d: (random_model("effb7pp", d), check.img)),
        ("small (demo checkpoint)", demo_model),
    ):
        model, size = make(check.device)
        image, target = slices(check, n, size)
        image, target = image.to(check.device), target.to(check.device)
        fp32 = signs(model, image, target)
        for precision in ("fp16", "bf16"):
            try:
                half = signs(model, image, target, precision)
                check.note(f"{label}: {precision} vs fp32 input-gradient signs", differ(fp32, half))
            except Exception as exc:  # autocast of this dtype may be missing on this device
                check.note(f"{label}: {precision} signs", f"n/a ({type(exc).__name__}: {exc})")
        eps_values = (0.0, EPS, 0.03, 0.1, 0.3, 1.0)
        adversarial = [fgsm(model, image, target, eps, "bce", "textbook") if eps else image for eps in eps_values]
        for dtype in ("float16", "bfloat16"):
            counts = []
            try:
                for batch in adversarial:
                    with torch.no_grad(), torch.autocast(check.device.type, dtype=getattr(torch, dtype)):
                        logits = model(batch)
                    bad = ~torch.isfinite(logits.float())
                    counts.append(f"{bad.flatten(1).any(1).sum().item()} ({bad.float().mean().item():.0e})")
                result = (
                    f"{', '.join(counts)} of {n} images (share of logits) "
                    f"at eps {', '.join(f'{e:g}' for e in eps_values)}"
                )
            except Exception as exc:  # autocast of this dtype may be missing on this device
                result = f"n/a ({type(exc).__name__}: {exc})"
            check.note(f"{label}: images with non-finite {dtype} logits", result)
        del model
        empty_cache(check)


def empty_cache(check: Check) -> None:
    if check.cuda:
        torch.cuda.empty_cache()


@contextlib.contextmanager
def peak(check: Check, results: list, label: str):
    """Peak memory allocated inside the block (CUDA), or n/a; an out-of-memory error is a result too."""
    empty_cache(check)
    if check.cuda:
        torch.cuda.reset_peak_memory_stats(check.device)
    base = torch.cuda.memory_allocated(check.device) if check.cuda else 0
    started = time.perf_counter()
    try:
        yield
        synchronise(check.device)
        seconds = time.perf_counter() - started
        if check.cuda:
            used = (torch.cuda.max_memory_allocated(check.device) - base) / 2**20
            results.append(f"{label}: {used:,.0f} MiB above the model, {seconds * 1000:.0f} ms")
        else:
            results.append(f"{label}: n/a on the CPU, {seconds * 1000:.0f} ms")
    except torch.OutOfMemoryError:
        results.append(f"{label}: out of memory")
    check.note(label, results[-1].split(": ", 1)[1])


def section_memory(check: Check) -> None:
    from core.attacks.gradients import input_gradients
    from core.training.loop import make_loss

    model = random_model("effb7pp", check.device)
    results: list[str] = []
    for batch in (check.small_batch, check.big_batch):
        image, target = slices(check, batch)
        image, target = image.to(check.device), target.to(check.device)
        with peak(check, results, f"effb7pp fp32 input gradients, batch {batch}"):
            input_gradients(model, image, target, ("bce",), "textbook", precision="fp32")
    eps_values = np.linspace(0, 0.03, 11)
    n = check.big_batch
    # As core.evaluation.scoring.sweep does it: one gradient, then the 11 x n adversarial images without autograd in
    # chunks of whole eps groups of about 128 images (its CUDA default).
    per_chunk = min(len(eps_values), max(1, 128 // n))
    with peak(
        check, results, f"effb7pp sweep of 11 eps at batch {n} (gradient, then forward chunks of {per_chunk * n})"
    ):
        sign = input_gradients(model, image, target, ("bce",), "textbook", precision="fp32")["bce"].sign
        with torch.no_grad():
            for start in range(0, len(eps_values), per_chunk):
                group = torch.tensor(eps_values[start : start + per_chunk], device=check.device, dtype=image.dtype)
                adversarial = (image[None] + group.view(-1, 1, 1, 1, 1) * sign[None].to(image.dtype)).clamp(0, 1)
                model(adversarial.flatten(0, 1))
    for chunk in (n, 2 * n, 4 * n, 11 * n):
        with peak(check, results, f"effb7pp no-grad forward of {chunk} images"), torch.no_grad():
            model(image.repeat(chunk // n, 1, 1, 1))
    del model
    empty_cache(check)

    # A training step as core.training takes it on CUDA: bf16 autocast, channels-last, AdamW.
    model = random_model("effb7pp", check.device).train()
    if check.cuda:
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, weight_decay=1e-3)
    loss_fn = make_loss()
    image, target = slices(check, check.big_batch)
    memory_format = torch.channels_last if check.cuda else torch.contiguous_format
    image = image.to(check.device).contiguous(memory_format=memory_format)
    target = target.to(check.device).contiguous(memory_format=memory_format)
    dtype = torch.bfloat16

    def step():
        optimizer.zero_grad(set_to_none=True)
        with torch.autocast(check.device.type, dtype=dtype):
            logits = model(image)
        loss = loss_fn(logits.float(), target)
        loss.backward()
        optimizer.step()
        return loss.detach()

    with peak(check, results, f"effb7pp bf16 channels-last training step, batch {check.big_batch}"):
        step()
    steps = 2 if check.quick else 8
    for benchmark in (False, True):
        torch.backends.cudnn.benchmark = benchmark
        step()  # warm-up (and cuDNN's search when benchmarking)
        for sync_each in (True, False):
            synchronise(check.device)
            started = time.perf_counter()
            for _ in range(steps):
                loss = step()
                if sync_each:
                    float(loss)  # what reading the loss every step costs
            float(loss)
            per_step = (time.perf_counter() - started) / steps
            check.note(
                f"training step, cudnn.benchmark {'on' if benchmark else 'off'}, "
                f"{'loss read every step' if sync_each else 'loss read once'}",
                f"{per_step * 1000:.0f} ms per step of {check.big_batch} ({check.big_batch / per_step:.0f} images/s)",
            )
    torch.backends.cudnn.benchmark = False
    del model, optimizer
    empty_cache(check)


def section_util(check: Check) -> None:
    checkpoint = check.work / "effb7pp.safetensors"
    if not checkpoint.is_file():
        say("  (no effb7pp checkpoint from the ddp section: sweeping the bundled demo checkpoint)")
        checkpoint = None
    segadv = shutil.which("segadv") or str(Path(sys.executable).with_name("segadv"))
    command = [
        segadv,
        "sweep",
        "--data",
        str(check.data),
        "--split",
        "all",
        "--limit",
        str(check.sweep_limit),
        "--device",
        str(check.device),
        "--losses",
        "bce",
        "--out-dir",
        str(check.work / "sweep"),
    ]
    if checkpoint is not None:
        command[2:2] = ["--checkpoint", str(checkpoint)]
    smi = shutil.which("nvidia-smi") if check.cuda else None
    samples: list[float] = []
    stop = threading.Event()

    def sample():
        index = check.device.index or 0
        query = [
            smi,
            f"--id={index}",
            "--query-gpu=utilization.gpu,memory.used",
            "--format=csv,noheader,nounits",
            "-lms",
            "200",
        ]
        with subprocess.Popen(query, stdout=subprocess.PIPE, text=True) as sampler:
            for line in sampler.stdout:
                if stop.is_set():
                    break
                with contextlib.suppress(ValueError):
                    samples.append(float(line.split(",")[0]))
            sampler.terminate()

    thread = threading.Thread(target=sample, daemon=True) if smi else None
    if thread:
        thread.start()
    code, output, seconds = run(command, check)
    stop.set()
    say(f"  segadv sweep --limit {check.sweep_limit} on {check.device}: exit {code}, {seconds:.1f} s")
    if code != 0:
        say("    " + "\n    ".join(output.strip().splitlines()[-8:]))
    if samples:
        busy = [value for value in samples if value > 0]
        check.note(
            f"GPU utilisation during segadv sweep --limit {check.sweep_limit}",
            f"mean {statistics.mean(samples):.0f} %, median {statistics.median(samples):.0f} %, "
            f"{sum(v < 10 for v in samples) / len(samples):.0%} of {len(samples)} samples below 10 % "
            f"({len(busy)} non-zero), sweep {seconds:.1f} s",
        )
    else:
        check.note(
            f"GPU utilisation during segadv sweep --limit {check.sweep_limit}",
            f"n/a (no nvidia-smi samples); sweep exit {code} in {seconds:.1f} s",
        )


def section_robust(check: Check) -> None:
    """Slices per second of FGSM, APGD-100 and the ensemble on effb7pp at 224 x 224, batch 64, bf16, the
    APGD / PGD time ratio and the pass counts (benchmarks/bench_attacks.py --robust, parts r1 and r2)."""
    script = Path(__file__).with_name("bench_attacks.py")
    if check.quick:
        sizes = ["--model", "small", "--img-size", "64", "--batch", "2", "--slices", "2", "--steps", "3"]
    else:
        sizes = [
            "--model",
            "effb7pp",
            "--img-size",
            "224",
            "--batch",
            "64",
            "--split",
            "all",
            "--slices",
            "64",
            "--steps",
            "100",
            "--precision",
            "bf16",
        ]
    command = [
        sys.executable,
        str(script),
        "--robust",
        "--parts",
        "r1,r2",
        "--device",
        str(check.device),
        "--pairs",
        "1",
        *sizes,
    ]
    code, output, seconds = run(command, check, timeout=max(check.timeout, 200.0))
    say("    " + "\n    ".join(output.strip().splitlines()[-14:]))
    check.note("robustness attacks (bench_attacks.py --robust r1,r2)", f"exit {code} in {seconds:.0f} s; lines above")


def section_certify(check: Check) -> None:
    """Seconds per slice of randomized-smoothing certification (n = 100 and 1000) against FGSM and PGD-10 on
    the bundled demo checkpoint (benchmarks/bench_certify.py)."""
    script = Path(__file__).with_name("bench_certify.py")
    sizes = ["--limit", "1", "--n", "100"] if check.quick else ["--limit", "16", "--n", "100,1000"]
    command = [sys.executable, str(script), "--device", str(check.device), *sizes]
    code, output, seconds = run(command, check, timeout=max(check.timeout, 200.0))
    say("    " + "\n    ".join(output.strip().splitlines()[-6:]))
    check.note("certify (bench_certify.py)", f"exit {code} in {seconds:.0f} s; lines above")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--device", default="cuda", help="cuda, cuda:N or cpu")
    parser.add_argument("--quick", action="store_true", help="tiny sizes, to try the script on a CPU")
    parser.add_argument("--sections", default=",".join(SECTIONS), help=f"comma list of {', '.join(SECTIONS)}")
    parser.add_argument(
        "--work", default=None, help="folder for the demo data, checkpoints and outputs (default: a temporary one)"
    )
    parser.add_argument("--timeout", type=float, default=150.0, help="seconds for each subprocess")
    args = parser.parse_args()
    sections = [name.strip() for name in args.sections.split(",") if name.strip()]
    unknown = [name for name in sections if name not in SECTIONS]
    if unknown:
        parser.error(f"unknown sections {unknown}; choose from {', '.join(SECTIONS)}")
    temporary = args.work is None
    args.work = args.work or tempfile.mkdtemp(prefix="segadv-gpu-check-")
    Path(args.work).mkdir(parents=True, exist_ok=True)
    check = Check(args)
    if check.cuda and not torch.cuda.is_available():
        say("error: CUDA is not available here; try --device cpu --quick")
        return 2

    from core.data.demo import write_demo_dataset

    started = time.perf_counter()
    check.data = check.work / "demo"
    if not (check.data / "train.csv").is_file():
        write_demo_dataset(check.data, seed=0, size="tiny" if args.quick else "default", overwrite=True)
    say(
        f"segadv GPU check on {check.device}{' (quick)' if args.quick else ''}; work folder {check.work}; "
        f"demo data in {time.perf_counter() - started:.1f} s"
    )
    failed = []
    for name in sections:
        say(f"\n[{name}]")
        section_started = time.perf_counter()
        try:
            globals()[f"section_{name}"](check)
        except Exception:  # one broken section must not hide the others' numbers
            failed.append(name)
            traceback.print_exc()
            check.note(name, "FAILED (traceback above)")
        say(f"  ({name}: {time.perf_counter() - section_started:.1f} s)")
    say(f"\nsummary ({time.perf_counter() - started:.0f} s in all)")
    for item, result in check.summary:
        say(f"  {item}: {result}")
    if temporary:
        shutil.rmtree(check.work, ignore_errors=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
