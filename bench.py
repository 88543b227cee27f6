"""Training throughput in images/s, so that "fast" is a number: the DALI pipeline against a torchvision
DataLoader doing the same augmentation, the training step alone (the ceiling), and the training step
fed by each loader. An aligned table on stdout, every figure in a JSON file. Results: BENCHMARKS.md.

  python bench.py --data-dir data              # the CIFAR-10 store (run train.py once to fetch it)
  python bench.py --synthetic 50000            # no dataset at hand: random uint8 images, labelled so
  python bench.py --synthetic 50000 --batch-size 128 --json bench-128.json

Each measurement is `--warmup` untimed runs then `--repeats` timed ones (median, min, max). A run is
one pass over the benchmark images for the pipeline stages and `--model-steps` training steps for the
model stages. The defaults follow the device: on a GPU the whole set and one epoch of steps; on a CPU
(ResNet18 trains at ~100 img/s on 2 cores) 10,240 images and one step, about a minute in all.
"""
import argparse
import gc
import itertools
import json
import os
import platform
import resource
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch
import torchvision
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms

from common import cli
import nets
import pipeline
from training import config, rng
from training.build import build_model, build_optimizer, precision
from training.step import train_step
from common import device as devices
from common.cli import UsageError
from pipeline.dali import CUTOUT, PAD

CPU_IMAGES = 10_240  # pipeline passes on a CPU: 20 batches of 512, a few seconds for the baseline
STAGES = {  # JSON key: table label
    "pipeline_dali": "pipeline  DALI",
    "pipeline_baseline": "pipeline  DataLoader",
    "model_only": "model only (train_step)",
    "e2e_dali": "end-to-end  DALI",
    "e2e_baseline": "end-to-end  DataLoader",
}


def parse_args(argv) -> argparse.Namespace:
    p = cli.Parser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data-dir", default="data", help="CIFAR-10 store folder (default ./data)")
    p.add_argument("--synthetic", type=int, default=0, metavar="N",
                   help="benchmark on N random uint8 32x32 images instead of CIFAR-10")
    p.add_argument("--device", choices=("auto", "cuda", "cpu"), default="auto")
    p.add_argument("--model", choices=sorted(nets.MODELS), default="resnet18")
    p.add_argument("--batch-size", type=int, default=config.Config.batch_size)
    p.add_argument("--precision", choices=("bf16", "fp16", "fp32"), default=config.Config.precision)
    p.add_argument("--channels-last", action=argparse.BooleanOptionalAction, default=True)
    p.add_argument("--compile", action=argparse.BooleanOptionalAction, default=False,
                   help="torch.compile the model (the warm-up run pays for the compilation)")
    p.add_argument("--images", type=int, default=0,
                   help=f"images per pipeline pass (default: all on a GPU, {CPU_IMAGES} on a CPU)")
    p.add_argument("--workers", type=int, default=os.cpu_count() or 1,
                   help="DataLoader worker processes (default: the number of cores)")
    p.add_argument("--repeats", type=int, default=3, help="timed runs per measurement (default 3)")
    p.add_argument("--warmup", type=int, default=1, help="untimed runs first (default 1)")
    p.add_argument("--model-steps", type=int, default=0,
                   help="training steps per model-stage run (default: an epoch on a GPU, 1 on a CPU)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default="bench.json", help="where to write the figures (default bench.json)")
    args = p.parse_args(argv)
    problems = [
        (args.synthetic < 0, f"--synthetic must be >= 0 (got {args.synthetic})"),
        (args.images < 0, f"--images must be >= 0 (got {args.images})"),
        (args.workers < 0, f"--workers must be >= 0 (got {args.workers})"),
        (args.repeats < 1, f"--repeats must be >= 1 (got {args.repeats})"),
        (args.warmup < 0, f"--warmup must be >= 0 (got {args.warmup})"),
        (args.model_steps < 0, f"--model-steps must be >= 0 (got {args.model_steps})"),
    ]
    for bad, message in problems:
        if bad:
            raise UsageError(message)
    return args


# ------------------------------------------------------------------------------------------- data
def load_images(args) -> tuple:
    """(images, labels, description): real CIFAR-10, or random images only when asked for by name."""
    if args.synthetic:
        rng = np.random.default_rng(args.seed)
        images = rng.integers(0, 256, (args.synthetic, 32, 32, 3), dtype=np.uint8)
        return images, rng.integers(0, 10, args.synthetic), "synthetic (random uint8)"
    try:  # a benchmark measures, it does not fetch 170 MB behind the user's back
        data = pipeline.load_cifar10(args.data_dir, download=False)
    except pipeline.DataError as e:
        raise pipeline.DataError(f"{e}; or benchmark on random images: --synthetic 50000") from None
    return data.train_images, data.train_labels, f"CIFAR-10 train ({args.data_dir})"


class Cutout:
    """Zero a size x size square whose centre is uniform over the image, clipped at the borders (the
    DALI pipeline's cutout; torchvision's RandomErasing draws its own size and never clips). After
    Normalize, 0 is the mean colour, as in DALI."""

    def __init__(self, size: int):
        self.size = size

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        top = int(torch.randint(x.shape[-2], ())) - self.size // 2
        left = int(torch.randint(x.shape[-1], ())) - self.size // 2
        x[..., max(top, 0):top + self.size, max(left, 0):left + self.size] = 0
        return x


class TorchvisionSet(Dataset):
    """The baseline, as torchvision's CIFAR10 does it: a PIL image per sample from the uint8 array,
    then the DALI pipeline's augmentation one image at a time."""

    def __init__(self, images, labels):
        self.images, self.labels = images, labels
        self.transform = transforms.Compose([
            transforms.RandomCrop(images.shape[1], padding=PAD), transforms.RandomHorizontalFlip(),
            transforms.ToTensor(), transforms.Normalize(pipeline.MEAN, pipeline.STD), Cutout(CUTOUT)])

    def __len__(self):
        return len(self.labels)

    def __getitem__(self, i):
        return self.transform(Image.fromarray(self.images[i])), int(self.labels[i])


def baseline_batches(loader, device, channels_last):
    """The DataLoader's batches on the device in the layout the model runs in, as a training loop has them."""
    layout = torch.channels_last if channels_last else torch.contiguous_format
    for x, y in loader:
        yield x.to(device, non_blocking=True, memory_format=layout), y.to(device, non_blocking=True)


def first_forever(batches):
    """The model alone: the first batch, already on the device, again and again (a copy: DALI reuses
    its buffers). Lazy, so the batch is drawn when the stage starts."""
    x, y = (t.clone() for t in next(batches))
    while True:
        yield x, y


def forever(loader):
    """Batches across as many epochs as asked for (each loader reshuffles at every pass). A loader,
    not a generator: an exhausted one would make this spin for ever."""
    return (batch for _ in iter(int, 1) for batch in loader)


# --------------------------------------------------------------------------------------- measuring
def measure(run, sync, warmup: int, repeats: int) -> dict:
    """img/s of run() (which returns how many images it processed): untimed warm-up runs, then timed ones.
    cpu_per_wall is this process's CPU seconds per second (DataLoader workers are other processes):
    below the thread count in a model stage, something else had the cores and the figure is low."""
    for _ in range(warmup):
        run()
    sync()
    rates, wall, cpu = [], 0.0, time.process_time()
    for _ in range(repeats):
        t0 = time.perf_counter()
        n = run()
        sync()
        rates.append(n / (time.perf_counter() - t0))
        wall += time.perf_counter() - t0
    return dict(median=statistics.median(rates), min=min(rates), max=max(rates), runs=rates,
                images_per_run=n, cpu_per_wall=(time.process_time() - cpu) / wall)


def one_pass(batches_of):
    """A run of a pipeline stage: one epoch; the batches exist on the device, a sync waits for the last."""
    return lambda: sum(len(y) for _, y in batches_of())


def steps(step, batches, n: int):
    """A run of a model stage: n training steps on the next n batches."""
    def run():
        count = 0
        for x, y in itertools.islice(batches, n):
            step(x, y)
            count += len(y)
        return count
    return run


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


# ------------------------------------------------------------------------------------------- main
def main(argv=None):
    t_start, load_start = time.perf_counter(), os.getloadavg()[0]
    args = parse_args(sys.argv[1:] if argv is None else argv)
    # train.py's own Config checks and device choice: the benchmark trains as train.py does.
    cfg = config.build(dict(model=args.model, batch_size=args.batch_size, precision=args.precision,
                                  channels_last=args.channels_last, compile=args.compile,
                                  device=args.device, seed=args.seed),
                             None)
    device = devices.choose(cfg.device)
    gpu = device.index if device.type == "cuda" else None
    all_images, all_labels, source = load_images(args)
    n = args.images or (len(all_labels) if gpu is not None else min(len(all_labels), CPU_IMAGES))
    if n > len(all_labels):
        raise UsageError(f"--images {n} but the data holds {len(all_labels)} images")
    if n < cfg.batch_size:
        raise UsageError(f"{n} images make no full batch of {cfg.batch_size}: lower --batch-size")
    rng.seed_everything(cfg.seed)
    dtype = precision(cfg, device)[2]

    runs, model_steps = stages(cfg, device, dtype, args.workers, all_images[:n], all_labels[:n],
                               args.model_steps)
    results, memory = measure_all(runs, gpu, args.warmup, args.repeats)
    memory["worker_rss_peak_mb"] = peak_rss_mb(resource.RUSAGE_CHILDREN) if args.workers else 0.0

    report = dict(
        device={**describe_device(device), "load_average_start": load_start,
                "load_average_end": os.getloadavg()[0]},  # other processes on the machine skew figures
        versions=versions(),
        config=dict(model=cfg.model, batch_size=cfg.batch_size, precision=cfg.precision,
                    loader_dtype=str(dtype).removeprefix("torch."), baseline_dtype="float32",
                    channels_last=cfg.channels_last, compile=cfg.compile, workers=args.workers,
                    repeats=args.repeats,
                    warmup=args.warmup, model_steps=model_steps, seed=cfg.seed,
                    torch_threads=torch.get_num_threads()),
        data=dict(source=source, synthetic=bool(args.synthetic), images=n, available=len(all_labels),
                  image_shape=list(all_images.shape[1:])),
        results=results, ratios=ratios(results), memory=memory,
        seconds=time.perf_counter() - t_start)
    Path(args.json).write_text(json.dumps(report, indent=2) + "\n")
    print(table(report))
    print(f"figures: {args.json}")


def stages(cfg, device, dtype, workers: int, images, labels, model_steps: int) -> tuple:
    """({stage: run}, steps per model-stage run). Both loaders shuffle and augment the same images."""
    gpu = device.index if device.type == "cuda" else None
    dali = pipeline.train_loader(images, labels, mean=pipeline.MEAN, std=pipeline.STD,
                                 batch_size=cfg.batch_size, seed=cfg.seed, device_id=gpu, dtype=dtype,
                                 channels_last=cfg.channels_last)
    baseline = DataLoader(TorchvisionSet(images, labels), batch_size=cfg.batch_size, shuffle=True,
                          num_workers=workers, pin_memory=gpu is not None, drop_last=True,
                          persistent_workers=workers > 0, generator=torch.Generator().manual_seed(cfg.seed))
    model_steps = model_steps or (len(dali) if gpu is not None else 1)
    step = training_step(cfg, device)
    dali_stream = forever(dali)
    return {
        "pipeline_dali": one_pass(lambda: dali),
        "pipeline_baseline": one_pass(lambda: baseline_batches(baseline, device, cfg.channels_last)),
        "model_only": steps(step, first_forever(dali_stream), model_steps),
        "e2e_dali": steps(step, dali_stream, model_steps),
        "e2e_baseline": steps(step, baseline_batches(forever(baseline), device, cfg.channels_last),
                              model_steps),
    }, model_steps


def measure_all(runs: dict, gpu, warmup: int, repeats: int) -> tuple:
    """(results, memory) of every stage in turn; the runs are consumed (their loaders end with them)."""
    sync = torch.cuda.synchronize if gpu is not None else (lambda: None)
    results, rss, gpu_peak = {}, {}, {}
    for key in list(runs):
        print(f"measuring {STAGES[key]} ...", file=sys.stderr, flush=True)
        if gpu is not None:
            torch.cuda.reset_peak_memory_stats()
        results[key] = measure(runs.pop(key), sync, warmup, repeats)
        rss[key] = peak_rss_mb()
        if gpu is not None:
            gpu_peak[key] = torch.cuda.max_memory_allocated() / 2**20
    gc.collect()  # the last DataLoader iterator goes: its workers exit and their peak RSS is counted
    memory = dict(host_rss_peak_mb=peak_rss_mb(), host_rss_peak_mb_after=rss,
                  gpu_max_allocated_mb=gpu_peak if gpu is not None else None)
    if gpu is not None:  # DALI's buffers live outside PyTorch's allocator: only the device total shows them
        free, total = torch.cuda.mem_get_info()
        memory["gpu_device_used_mb"] = (total - free) / 2**20
    return results, memory


def training_step(cfg, device):
    """training.step.train_step with the model, optimizer, autocast and scaler set up as training.loop.fit does."""
    model = build_model(cfg, 10, device)
    optimizer = build_optimizer(cfg, model, device)
    amp, scaler, _ = precision(cfg, device)
    step_model = torch.compile(model) if cfg.compile else model
    return lambda x, y: train_step(step_model, optimizer, scaler, amp, x, y, cfg.label_smoothing)


def ratios(r: dict) -> dict:
    """From the medians. The tax is the share of the ceiling lost to feeding the model."""
    e2e_over_model = r["e2e_dali"]["median"] / r["model_only"]["median"]
    return dict(pipeline_dali_over_baseline=r["pipeline_dali"]["median"] / r["pipeline_baseline"]["median"],
                e2e_dali_over_model_only=e2e_over_model, data_loading_tax=1 - e2e_over_model,
                e2e_dali_over_e2e_baseline=r["e2e_dali"]["median"] / r["e2e_baseline"]["median"])


def describe_device(device) -> dict:
    if device.type == "cuda":
        return dict(type="cuda", name=torch.cuda.get_device_name(device), cores=os.cpu_count())
    name = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo") as f:
            name = next(line.split(":", 1)[1].strip() for line in f if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return dict(type="cpu", name=name, cores=os.cpu_count())


def versions() -> dict:
    return dict(python=platform.python_version(), torch=torch.__version__,
                torchvision=torchvision.__version__,
                dali=sys.modules["nvidia.dali"].__version__)  # imported by pipeline, its only importer


def table(report: dict) -> str:
    c, d, res, rat, mem = (report[k] for k in ("config", "data", "results", "ratios", "memory"))
    dev = report["device"]
    lines = [f"{c['model']} | {dev['type']}: {dev['name']} ({dev['cores']} cores) | batch {c['batch_size']} | "
             f"{c['precision']}, loader {c['loader_dtype']}{', channels-last' if c['channels_last'] else ''}",
             f"{d['images']} {d['source']} images | {c['workers']} DataLoader workers | {c['warmup']} warm-up + "
             f"{c['repeats']} timed runs of 1 pass / {c['model_steps']} steps",
             "",
             f"{'img/s':>36}{'median':>12}{'min':>12}{'max':>12}{'cpu/wall':>10}"]
    for key, label in STAGES.items():
        lines.append(f"{label:<36}" + "".join(f"{res[key][s]:>12,.0f}" for s in ("median", "min", "max"))
                     + f"{res[key]['cpu_per_wall']:>10.2f}")
    lines += ["",
              f"{'DALI / DataLoader, pipeline':<36}{rat['pipeline_dali_over_baseline']:>12.1f}x",
              f"{'end-to-end DALI / model only':<36}{rat['e2e_dali_over_model_only']:>12.2f}"
              f"   data-loading tax {rat['data_loading_tax']:.1%}",
              f"{'end-to-end DALI / DataLoader':<36}{rat['e2e_dali_over_e2e_baseline']:>12.2f}x",
              f"{'peak host RSS':<36}{mem['host_rss_peak_mb']:>10,.0f}MB"
              f"   largest DataLoader worker {mem['worker_rss_peak_mb']:,.0f} MB"]
    if mem["gpu_max_allocated_mb"] is not None:
        lines.append(f"{'GPU max allocated (torch)':<36}{max(mem['gpu_max_allocated_mb'].values()):>10,.0f}MB"
                     f"   device in use at the end {mem['gpu_device_used_mb']:,.0f} MB")
    lines.append(f"{'wall time':<36}{report['seconds']:>11.0f}s   load average "
                 f"{dev['load_average_start']:.1f} -> {dev['load_average_end']:.1f} (other processes skew figures)")
    return "\n".join(lines)


if __name__ == "__main__":
    cli.run(main)
