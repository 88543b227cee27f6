"""One benchmark run, top to bottom: data, the three loaders, the pipeline stages, the model stages,
(the fast paths, the scaling sweep), the limits; then the JSON, the tables and bench.png. Every group
of stages takes the run's fixed context (Bench) and returns its figures; only this module writes them
into the report. A stage past its deadline ends the run with exit code 1 and the JSON of what was
measured, the failed stage named in it."""
import gc
import os
import resource
import sys
import time
from dataclasses import dataclass

import numpy as np
import torch

import pipeline
from common import cli, device as devices
from common.cli import UsageError
from training import Config, precision, resolve, seed_everything

from . import fastpaths, limits, loaders, machine, measure, plot, report, scaling, stages
from .measure import Deadline, StageOverrun
from .options import CPU_IMAGES, CPU_MODEL_SECONDS, Options


@dataclass(frozen=True)
class Threads:
    """Threads that each find a core (machine.py): --threads, or the cores other processes leave free."""
    count: int
    workers: int            # the DataLoader's worker processes
    chosen_from: str
    others_cores_start: float | None

    def as_config(self) -> dict:
        return dict(threads=self.count, threads_from=self.chosen_from, others_cores_start=self.others_cores_start,
                    workers=self.workers, torch_threads=self.count, dali_threads=min(4, self.count))


@dataclass(frozen=True)
class Bench:
    """What every group of stages works with, fixed for the run: built once by start(), passed whole."""
    opts: Options
    cfg: Config              # the training options the model stages use, resolved
    device: torch.device
    dtype: torch.dtype       # what the DALI and torch-ops loaders emit
    images: np.ndarray       # the images a pipeline pass covers, and their labels
    labels: np.ndarray
    threads: Threads
    record: report.Record    # the report so far: saved after each group, and by the watchdog

    def deadline(self, stage: str) -> Deadline:
        return Deadline(stage, self.opts.stage_timeout, self.record.stuck)

    def sync(self):
        if self.device.type == "cuda":
            torch.cuda.synchronize()

    def progress(self, stage: str, index: int, repeats: int, rate):
        """One line on stderr per run of a stage, as it goes."""
        what = "warm-up" if index < 0 else f"run {index + 1}/{repeats}"
        figure = "" if rate is None else f"{rate:>12,.0f} img/s"
        print(f"[{self.record.seconds():6.1f} s] {stage:<32} {what:<9}{figure}", file=sys.stderr, flush=True)

    def loader(self, name: str, batch_size: int | None = None, threads: int | None = None):
        """Loader `name` over the images; threads None: the run's (DALI: at most 4; DataLoader: --workers)."""
        if threads is None:
            threads = self.threads.workers if name == "dataloader" else min(4, self.threads.count)
        return loaders.build(name, self.images, self.labels, loaders.Spec(
            pipeline.BatchSpec(mean=pipeline.MEAN, std=pipeline.STD, batch_size=batch_size or self.cfg.batch_size,
                               device=self.device, dtype=self.dtype, channels_last=self.cfg.channels_last,
                               seed=self.cfg.seed),
            threads=threads, timeout=self.opts.stage_timeout))


def bench(opts: Options):
    b = start(opts)
    with measure.torch_threads(b.threads.count):
        measure_all(b)
    plot.draw(b.record.doc, opts.png_path)
    print(report.tables(b.record.doc))
    print(f"\nfigures: {opts.json}, {opts.png_path}")


def start(opts: Options) -> Bench:
    """The data, the device, the threads and the batch, checked before anything is measured."""
    record = report.Record(opts.json)
    base = dict(model=opts.model, batch_size=opts.batch_size or Config.batch_size, precision=opts.precision,
                channels_last=opts.channels_last, compile=opts.compile, device=opts.device, seed=opts.seed)
    cfg = resolve(Config(**base))
    device = devices.choose(cfg.device)
    if problem := cfg.compile and devices.compile_problem(device.type):
        raise UsageError(problem)
    images, labels, source = loaders.load_images(opts)
    n = opts.images or (len(labels) if device.type == "cuda" else min(len(labels), CPU_IMAGES))
    if n > len(labels):
        raise UsageError(f"--images {n} but the data holds {len(labels)} images")
    threads = choose_threads(opts)
    seed_everything(cfg.seed)
    batch_from = "--batch-size" if opts.batch_size else "train.py's default"
    if not opts.batch_size and device.type == "cpu":
        batch, batch_from = cpu_batch(cfg, device, threads.count, n)
        cfg = resolve(Config(**{**base, "batch_size": batch}))
    if n < cfg.batch_size:
        raise UsageError(f"{n} images make no full batch of {cfg.batch_size}: lower --batch-size")
    b = Bench(opts, cfg, device, precision(cfg, device).loader_dtype, images[:n], labels[:n], threads, record)
    record.doc.update(header(b, source, len(labels)))
    record.doc["config"].update(threads.as_config(), batch_size_from=batch_from)
    return b


def choose_threads(opts: Options) -> Threads:
    if opts.threads:
        return Threads(opts.threads, opts.workers if opts.workers is not None else opts.threads, "--threads", None)
    cores, others = machine.free_cores()
    count = machine.threads_for(cores, others)
    how = "cores free at the start" if others is not None else "cores (load unknown)"
    return Threads(count, opts.workers if opts.workers is not None else count, how, others)


def cpu_batch(cfg: Config, device, threads: int, images: int) -> tuple:
    """(the largest power-of-two batch up to cfg's whose model stages fit CPU_MODEL_SECONDS at the speed
    a probe step measures, how it was chosen): CPUs differ several-fold in training speed, so a fixed
    batch made the default run's length depend on the CPU."""
    with measure.torch_threads(threads):
        rate = stages.probe(cfg, device)
    steps = 1 + len(stages.MODELS) * 2  # a warm-up step, then 2 rounds of one step per model stage
    batch = stages.PROBE_BATCH
    while batch * 2 <= min(cfg.batch_size, images) and steps * batch * 2 / rate <= CPU_MODEL_SECONDS:
        batch *= 2
    return batch, f"a probe step: {rate:.0f} img/s, so {batch} keeps the model stages near {CPU_MODEL_SECONDS} s"


def header(b: Bench, source: str, available: int) -> dict:
    """The report before anything is measured: what runs where, on what."""
    opts, cfg, n = b.opts, b.cfg, len(b.labels)
    gpu, described = b.device.type == "cuda", report.describe_device(b.device)
    variants, skipped = fastpaths.runnable(opts.fast_path_variants, b.device)
    steps = opts.model_steps or (n // cfg.batch_size if gpu else 1)
    rounds = opts.model_repeats or (opts.repeats if gpu else min(opts.repeats, 2))
    return dict(
        device={**described, **limits.hardware(described["name"], gpu, b.threads.count),
                "load_average_start": os.getloadavg()[0]},  # other processes on the machine skew the figures
        versions=report.versions(),
        config=dict(model=cfg.model, batch_size=cfg.batch_size, precision=cfg.precision,
                    loader_dtype=str(b.dtype).removeprefix("torch."), dataloader_dtype="float32",
                    channels_last=cfg.channels_last, compile=cfg.compile, repeats=opts.repeats,
                    warmup=opts.warmup, run_seconds=opts.run_seconds, model_repeats=rounds, model_steps=steps,
                    seed=cfg.seed, stage_timeout=opts.stage_timeout,
                    fast_paths=gpu if opts.fast_paths is None else opts.fast_paths,
                    fast_path_variants=variants, fast_path_skipped=skipped,
                    precision_emulated=devices.emulated_bf16(cfg.precision, b.device)),
        data=dict(source=source, synthetic=bool(opts.synthetic), images=n, available=available,
                  image_shape=list(b.images.shape[1:])),
        results={},
        memory=dict(host_rss_peak_mb_after={}, gpu_max_allocated_mb=None, gpu_device_used_mb=None),
        fast_paths=None, scaling=None, failed=None, complete=False)


def measure_all(b: Bench):
    """Every group of stages, the JSON rewritten after each; then the verdicts. A stage past its
    deadline ends the run (cli.Incomplete: exit 1) with what was measured."""
    doc = b.record.doc
    try:
        batch = measure_stages(b)
        if doc["config"]["fast_paths"] and doc["config"]["fast_path_variants"]:
            measure_fast_paths(b, batch)
        del batch
        if b.opts.scaling:
            doc["scaling"] = scaling.sweep(b.loader, lambda stage, loader: alone(b, stage, loader),
                                           batch_sizes=b.opts.scaling_batches, batch_size=b.cfg.batch_size,
                                           images=len(b.labels))
            doc["memory"]["host_rss_peak_mb_after"]["scaling"] = report.peak_rss_mb()
    except StageOverrun as e:
        doc["failed"] = dict(stage=e.stage, message=str(e))
        b.record.save(finish(b))
        raise cli.Incomplete(f"{e}; the figures so far are in {b.opts.json}") from None
    report.judge(doc)
    b.record.save(finish(b))


def measure_stages(b: Bench):
    """The pipeline stages, then the model stages (the JSON saved after each); ratios and limits from
    their medians. Returns the batch the model trained on alone."""
    doc, c = b.record.doc, b.record.doc["config"]
    built = {name: b.loader(name) for name in loaders.NAMES}
    deadlines = {k: b.deadline(k) for k in stages.PIPELINES + stages.MODELS}
    if b.device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    doc["results"].update(stages.pipelines(built, deadlines, warmup=b.opts.warmup, repeats=b.opts.repeats,
                                           seconds=b.opts.run_seconds, sync=b.sync, progress=b.progress))
    doc["memory"]["host_rss_peak_mb_after"]["pipelines"] = report.peak_rss_mb()
    b.record.save()
    found, flops_per_image, batch = stages.models(
        built, stages.trainer(b.cfg, b.device), deadlines, stages.Rounds(b.opts.warmup, c["model_repeats"],
                                                                         c["model_steps"]), b.sync, b.progress)
    doc["results"].update(found)
    doc["memory"]["host_rss_peak_mb_after"]["models"] = report.peak_rss_mb()
    if b.device.type == "cuda":  # the loaders and the model stages; the fast paths count their own
        doc["memory"]["gpu_max_allocated_mb"] = torch.cuda.max_memory_allocated() / 2**20
    del built
    gc.collect()  # the DataLoader's workers exit: their peak RSS is counted
    doc["ratios"] = report.ratios(doc["results"])
    doc["limits"] = limits_of(doc, flops_per_image, b.dtype)
    b.record.save()
    return batch


def measure_fast_paths(b: Bench, batch):
    """The training step's variants (fastpaths.py), the JSON saved after each one."""
    doc = b.record.doc

    def saved(found: dict):
        doc["fast_paths"] = dict(variants=found)
        b.record.save()
    found = fastpaths.measure(b, doc["config"]["fast_path_variants"], batch, saved)
    peaks = {name: limits.peak_for(doc["device"], f["precision"]) for name, f in found.items()}
    doc["limits"]["fast_paths"] = limits.compute(found, peaks, doc["limits"]["flops_per_image"])
    saved(found)


def alone(b: Bench, stage: str, loader) -> dict:
    """One loader alone, as the pipeline stages are measured (the scaling sweep's points)."""
    run = {stage: measure.passes(loader, b.opts.run_seconds)}
    return measure.interleaved(run, {stage: b.deadline(stage)}, warmup=b.opts.warmup, repeats=b.opts.repeats,
                               sync=b.sync, progress=b.progress)[stage]


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


def finish(b: Bench) -> dict:
    doc = b.record.doc
    doc["memory"].update(host_rss_peak_mb=report.peak_rss_mb(),
                         worker_rss_peak_mb=report.peak_rss_mb(resource.RUSAGE_CHILDREN))
    if b.device.type == "cuda":  # DALI's buffers live outside PyTorch's allocator: the device total shows them
        free, total = torch.cuda.mem_get_info()
        doc["memory"]["gpu_device_used_mb"] = (total - free) / 2**20
    doc["device"]["load_average_end"] = os.getloadavg()[0]
    doc["seconds"], doc["complete"] = b.record.seconds(), doc["failed"] is None
    return doc
