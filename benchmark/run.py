"""One benchmark run, top to bottom: data, the three loaders, the pipeline stages, the model stages,
(the scaling sweep), the limits; then the JSON, the tables and bench.png. A stage past its deadline
ends the run with exit code 1 and the JSON of what was measured, the failed stage named in it."""
import gc
import os
import resource
import sys
import time
from functools import partial

import torch

from common import cli, device as devices
from common.cli import UsageError
from training import config, rng
from training.build import precision

from . import fastpaths, limits, load, loaders, measure, plot, report, scaling, stages
from .measure import Deadline, StageOverrun
from .options import CPU_IMAGES, Options


def bench(opts: Options):
    started, load_start = time.perf_counter(), os.getloadavg()[0]
    base = dict(model=opts.model, batch_size=opts.batch_size, precision=opts.precision,
                channels_last=opts.channels_last, compile=opts.compile, device=opts.device, seed=opts.seed)
    cfg = config.build(base)
    device = devices.choose(cfg.device)
    problem = cfg.compile and devices.compile_problem(device.type)
    if problem:
        raise UsageError(problem)
    images, labels, source = loaders.load_images(opts)
    n = opts.images or (len(labels) if device.type == "cuda" else min(len(labels), CPU_IMAGES))
    if n > len(labels):
        raise UsageError(f"--images {n} but the data holds {len(labels)} images")
    if n < cfg.batch_size:
        raise UsageError(f"{n} images make no full batch of {cfg.batch_size}: lower --batch-size")
    watched = choose_threads(opts)
    rng.seed_everything(cfg.seed)
    dtype = precision(cfg, device).loader_dtype
    doc = header(opts, cfg, device, dtype, source, n, len(labels), images.shape[1:])
    doc["config"].update(watched)
    doc["device"]["load_average_start"] = load_start  # other processes on the machine skew the figures
    with measure.torch_threads(opts.threads):
        measure_all(doc, opts, cfg, base, device, dtype, images[:n], labels[:n], started)
    plot.draw(doc, opts.png)
    print(report.tables(doc))
    print(f"\nfigures: {opts.json}, {opts.png}")


def choose_threads(opts) -> dict:
    """Threads that each find a core (load.py): --threads, or the cores other processes leave free now;
    sets opts.threads and opts.workers, and returns how they were chosen."""
    others, how = None, "--threads"
    if not opts.threads:
        cores, others = load.free_cores()
        opts.threads = load.threads_for(cores, others)
        how = "cores free at the start" if others is not None else "cores (load unknown)"
    opts.workers = opts.threads if opts.workers is None else opts.workers
    return dict(threads=opts.threads, threads_from=how, others_cores_start=others, workers=opts.workers,
                torch_threads=opts.threads, dali_threads=min(4, opts.threads))


def measure_all(doc: dict, opts, cfg, base: dict, device, dtype, images, labels, started: float):
    """Every group of stages, the JSON rewritten after each; then the verdicts. A stage past its
    deadline ends the run (cli.Incomplete: exit 1) with what was measured."""
    deadline = partial(Deadline, limit=opts.stage_timeout, on_stuck=partial(stuck, doc, opts.json, started))
    build = partial(build_loader, opts, cfg, device, dtype, images, labels)
    sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)
    progress = partial(progress_line, started)
    save = partial(report.write, doc, opts.json)
    try:
        batch = measure_stages(doc, opts, cfg, device, dtype, build, deadline, sync, progress, save)
        if doc["config"]["fast_paths"] and doc["config"]["fast_path_variants"]:
            measure_fast_paths(doc, opts, base, device, batch, deadline, sync, progress, save)
        del batch
        if opts.scaling:
            alone = partial(measure_alone, opts, deadline, sync, progress)
            doc["scaling"] = scaling.sweep(build, alone, batch_sizes=opts.scaling_batches,
                                           batch_size=cfg.batch_size, images=len(labels))
            doc["memory"]["host_rss_peak_mb_after"]["scaling"] = report.peak_rss_mb()
    except StageOverrun as e:
        doc["failed"] = dict(stage=e.stage, message=str(e))
        report.write(finish(doc, device, started), opts.json)
        raise cli.Incomplete(f"{e}; the figures so far are in {opts.json}") from None
    report.judge(doc)
    report.write(finish(doc, device, started), opts.json)


def header(opts, cfg, device, dtype, source: str, n: int, available: int, shape) -> dict:
    """The report before anything is measured: what runs where, on what."""
    gpu, described = device.type == "cuda", report.describe_device(device)
    variants, skipped = fastpaths.runnable(opts.fast_path_variants, device)
    steps = opts.model_steps or (n // cfg.batch_size if gpu else 1)
    rounds = opts.model_repeats or (opts.repeats if gpu else min(opts.repeats, 2))
    return dict(
        device={**described, **limits.hardware(described["name"], gpu, opts.threads)},
        versions=report.versions(),
        config=dict(model=cfg.model, batch_size=cfg.batch_size, precision=cfg.precision,
                    loader_dtype=str(dtype).removeprefix("torch."), dataloader_dtype="float32",
                    channels_last=cfg.channels_last, compile=cfg.compile, repeats=opts.repeats,
                    warmup=opts.warmup, run_seconds=opts.run_seconds, model_repeats=rounds, model_steps=steps,
                    seed=cfg.seed, stage_timeout=opts.stage_timeout,
                    fast_paths=gpu if opts.fast_paths is None else opts.fast_paths,
                    fast_path_variants=variants, fast_path_skipped=skipped,
                    precision_emulated=devices.emulated_bf16(cfg.precision, device)),
        data=dict(source=source, synthetic=bool(opts.synthetic), images=n, available=available,
                  image_shape=list(shape)),
        results={},
        memory=dict(host_rss_peak_mb_after={}, gpu_max_allocated_mb=None, gpu_device_used_mb=None),
        fast_paths=None, scaling=None, failed=None, complete=False)


def build_loader(opts, cfg, device, dtype, images, labels, name: str, batch_size: int, threads=None):
    """Loader `name`; threads None: the run's (DALI: --threads, at most 4; DataLoader: --workers)."""
    if threads is None:
        threads = opts.workers if name == "dataloader" else min(4, opts.threads)
    return loaders.build(name, images, labels, batch_size=batch_size, seed=cfg.seed, device=device,
                         dtype=dtype, channels_last=cfg.channels_last, threads=threads,
                         timeout=opts.stage_timeout)


def measure_stages(doc: dict, opts, cfg, device, dtype, build, deadline, sync, progress, save):
    """The pipeline stages, then the model stages (the JSON saved after each); ratios and limits from
    their medians. Returns the batch the model trained on alone."""
    built = {name: build(name, cfg.batch_size) for name in loaders.NAMES}
    deadlines = {k: deadline(k) for k in stages.PIPELINES + stages.MODELS}
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    results = doc["results"]
    results.update(stages.pipelines(built, deadlines, warmup=opts.warmup, repeats=opts.repeats,
                                    seconds=opts.run_seconds, sync=sync, progress=progress))
    doc["memory"]["host_rss_peak_mb_after"]["pipelines"] = report.peak_rss_mb()
    save()
    c = doc["config"]
    found, flops_per_image, batch = stages.models(
        built, stages.trainer(cfg, device), deadlines, warmup=opts.warmup, repeats=c["model_repeats"],
        steps_per_run=c["model_steps"], sync=sync, progress=progress)
    results.update(found)
    doc["memory"]["host_rss_peak_mb_after"]["models"] = report.peak_rss_mb()
    if device.type == "cuda":  # the loaders and the model stages; the fast paths count their own
        doc["memory"]["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del built
    gc.collect()  # the DataLoader's workers exit: their peak RSS is counted
    doc["ratios"] = report.ratios(results)
    doc["limits"] = limits_of(doc, flops_per_image, dtype)
    save()
    return batch


def measure_fast_paths(doc: dict, opts, base: dict, device, batch, deadline, sync, progress, save):
    """The training step's variants (fastpaths.py), the JSON saved after each one."""
    def saved(found):
        doc["fast_paths"] = dict(variants=found)
        save()
    c = doc["config"]
    found = fastpaths.measure(c["fast_path_variants"], base, device, batch, deadline, warmup=opts.warmup,
                              repeats=c["model_repeats"], steps_per_run=c["model_steps"], sync=sync,
                              progress=progress, save=saved)
    peaks = {name: limits.peak_for(doc["device"], f["precision"]) for name, f in found.items()}
    doc["limits"]["fast_paths"] = limits.compute(found, peaks, doc["limits"]["flops_per_image"])
    saved(found)


def measure_alone(opts, deadline, sync, progress, stage: str, loader) -> dict:
    """One loader alone, as the pipeline stages are measured (the scaling sweep's points)."""
    run = {stage: measure.passes(loader, opts.run_seconds)}
    return measure.interleaved(run, {stage: deadline(stage)}, warmup=opts.warmup, repeats=opts.repeats,
                               sync=sync, progress=progress)[stage]


def limits_of(doc: dict, flops_per_image: float, dtype) -> dict:
    """Achieved TFLOP/s of the model stages; bytes per second of the pipelines, counted as the uint8
    image read plus the output written (each loader's dtype: the DataLoader's is float32)."""
    pixels = doc["data"]["image_shape"][0] * doc["data"]["image_shape"][1] * 3
    out_bytes = {"dali": dtype.itemsize, "torch_ops": dtype.itemsize, "dataloader": 4}
    peak = limits.peak_for(doc["device"], doc["config"]["precision"])
    moved = {f"pipeline_{k}": pixels * (1 + b) for k, b in out_bytes.items()}
    return dict(flops_per_image=flops_per_image,
                model=limits.compute(doc["results"], dict.fromkeys(stages.MODELS, peak), flops_per_image),
                pipelines=limits.traffic(doc["results"], moved, doc["device"]["memory_gbps"]))


def finish(doc: dict, device, started: float) -> dict:
    memory = doc["memory"]
    memory.update(host_rss_peak_mb=report.peak_rss_mb(),
                  worker_rss_peak_mb=report.peak_rss_mb(resource.RUSAGE_CHILDREN))
    if device.type == "cuda":  # DALI's buffers live outside PyTorch's allocator: the device total shows them
        free, total = torch.cuda.mem_get_info()
        memory["gpu_device_used_mb"] = (total - free) / 2**20
    doc["device"]["load_average_end"] = os.getloadavg()[0]
    doc["seconds"], doc["complete"] = time.perf_counter() - started, doc["failed"] is None
    return doc


def progress_line(started: float, stage: str, index: int, repeats: int, rate):
    """One line on stderr per run of a stage, as it goes."""
    what = "warm-up" if index < 0 else f"run {index + 1}/{repeats}"
    figure = "" if rate is None else f"{rate:>12,.0f} img/s"
    print(f"[{time.perf_counter() - started:6.1f} s] {stage:<32} {what:<9}{figure}", file=sys.stderr,
          flush=True)


def stuck(doc: dict, path, started: float, stage: str, message: str):
    """The watchdog's way out when a stage hangs inside one call: record it, say so, end the process."""
    doc["failed"] = dict(stage=stage, message=message)
    doc["seconds"] = time.perf_counter() - started
    report.write(doc, path)
    try:
        cli.fail(f"{message}; the figures so far are in {path}", code=1)
    finally:
        os._exit(1)  # sys.exit in this thread would end only the thread; the main one is stuck
