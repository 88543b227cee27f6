"""What a run found, as one JSON document (written whole, or partial with the failed stage when a stage
overruns) and as markdown tables on stdout (the same text pastes into BENCHMARKS.md)."""
import json
import os
import platform
import resource
import time

import torch
import torchvision

import pipeline
from common import cli
from common.files import write_text
from common.tables import markdown

from . import fastpaths, verdict
from .loaders import NAMES
from .stages import LABELS, MODELS, PIPELINES


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
                dali=pipeline.DALI_VERSION)


def peak_rss_mb(who=resource.RUSAGE_SELF) -> float:
    return resource.getrusage(who).ru_maxrss / 1024  # Linux reports KiB


def ratios(r: dict) -> dict:
    """From the medians. A loader's data-loading tax is the share of the ceiling (model only) lost to
    feeding the model with it; data_loading_tax alone is DALI's."""
    tax = {k: 1 - r[f"e2e_{k}"]["median"] / r["model_only"]["median"] for k in NAMES}
    return dict(
        pipeline_dali_over_torch_ops=r["pipeline_dali"]["median"] / r["pipeline_torch_ops"]["median"],
        pipeline_dali_over_dataloader=r["pipeline_dali"]["median"] / r["pipeline_dataloader"]["median"],
        e2e_dali_over_torch_ops=r["e2e_dali"]["median"] / r["e2e_torch_ops"]["median"],
        e2e_dali_over_dataloader=r["e2e_dali"]["median"] / r["e2e_dataloader"]["median"],
        e2e_dali_over_model_only=1 - tax["dali"], data_loading_tax=tax["dali"],
        data_loading_tax_by_loader=tax)


def judge(report: dict):
    """What the figures allow one to say (verdict.py): DALI against each peer, alone and end to end;
    each loader's tax; the defaults the run would choose; and a warning for each doubtful figure."""
    r, c = report["results"], report["config"]
    report["verdicts"] = dict(
        comparisons={f"{kind}_dali_over_{peer}": verdict.compare(
            r[f"{kind}_dali"], r[f"{kind}_{peer}"], plain(f"{kind}_dali"), plain(f"{kind}_{peer}"))
            for kind in ("pipeline", "e2e") for peer in ("torch_ops", "dataloader")},
        taxes={k: verdict.tax(r[f"e2e_{k}"], r["model_only"], NAMES[k]) for k in NAMES})
    choices = dict(loader=verdict.choose({"dali": r["e2e_dali"], "torch": r["e2e_torch_ops"]}, "dali"))
    if report.get("fast_paths"):
        choices.update(fast_path_choices(report["fast_paths"]["variants"], c["precision"],
                                         "default" if c["compile"] else "eager"))
    report["recommendation"] = choices
    variants = (report.get("fast_paths") or {}).get("variants", {})
    figures = {plain(k): f for k, f in r.items()} | {fastpaths.label(k): f for k, f in variants.items()}
    report["warnings"] = [f"{name}: unreliable: {'; '.join(f['unreliable'])}"
                          for name, f in figures.items() if f["unreliable"]]
    report["warnings"] += [verdict.tax_said(t, NAMES[k]) for k, t in report["verdicts"]["taxes"].items()
                           if t["impossible"]]
    if c.get("precision_emulated"):
        report["warnings"].append(f"the model stages: {c['precision_emulated']}")
    if c["fast_paths"]:
        report["warnings"] += [f"{fastpaths.label(k)}: not measured: {why}"
                               for k, why in c["fast_path_skipped"].items()]


def plain(stage: str) -> str:
    """A stage's label on one line (the labels' double spaces are where the pictures break them)."""
    return " ".join(LABELS[stage].split())


def summary_lines(report: dict) -> list:
    """The verdicts in a few short lines (bench.png's): DALI against the torch-ops peer, impossible
    taxes, the choices."""
    comparisons = report["verdicts"]["comparisons"]
    lines = [f"{where}: " + verdict.said(comparisons[f"{kind}_dali_over_torch_ops"], "DALI", "torch ops",
                                         why=False)
             for kind, where in (("pipeline", "loader alone"), ("e2e", "end to end"))]
    lines += [verdict.tax_said(t, NAMES[k]) for k, t in report["verdicts"]["taxes"].items()
              if t["impossible"]]
    return lines + recommendation_lines(report["recommendation"], why=False).splitlines()[1:]


def fast_path_choices(variants: dict, precision: str, mode: str) -> dict:
    """Precision from the variants that differ only in it (eager where measured so), compile mode from
    those at the precision with the most modes; the current defaults are `precision` and `mode`."""
    by_mode, by_precision = {}, {}
    for name, f in variants.items():
        p, m = name.split(":")
        by_mode.setdefault(m, {})[p] = f
        by_precision.setdefault(p, {})[m] = f
    at_mode = "eager" if len(by_mode.get("eager", {})) > 1 else max(by_mode, key=lambda m: len(by_mode[m]))
    at_precision = max(by_precision, key=lambda p: (len(by_precision[p]), p == precision))
    return dict(precision={**verdict.choose(by_mode[at_mode], precision), "measured_with": at_mode},
                compile={**verdict.choose(by_precision[at_precision], mode), "measured_with": at_precision})


class Record:
    """The run's report as it grows, and its file: rewritten after each group of stages so that a run
    cut short keeps what it measured."""

    def __init__(self, path):
        self.path, self.doc, self.started = path, {}, time.perf_counter()

    def seconds(self) -> float:
        return time.perf_counter() - self.started

    def save(self, doc: dict | None = None):
        write(self.doc if doc is None else doc, self.path)

    def stuck(self, stage: str, message: str):
        """The watchdog's way out when a stage hangs inside one call: record it, say so, end the process."""
        self.doc["failed"] = dict(stage=stage, message=message)
        self.doc["seconds"] = self.seconds()
        self.save()
        try:
            cli.fail(f"{message}; the figures so far are in {self.path}", code=1)
        finally:
            os._exit(1)  # sys.exit in this thread would end only the thread; the main one is stuck


def write(report: dict, path):
    write_text(path, json.dumps(report, indent=2) + "\n")


def share(x) -> str:
    return "n/a" if x is None else f"{x:.1%}"


def tables(report: dict) -> str:
    c, d, dev, res = report["config"], report["data"], report["device"], report["results"]
    head = (f"{c['model']} | {dev['type']}: {dev['name']} ({dev['cores']} cores) | batch {c['batch_size']} | "
            f"{c['precision']}, loaders emit {c['loader_dtype']} (DataLoader float32)"
            f"{', channels-last' if c['channels_last'] else ''}\n"
            f"{d['images']:,} {d['source']} images per pass | "
            f"{c['warmup']} warm-up + {c['repeats']} timed runs of >= {c['run_seconds']:g} s, interleaved; "
            f"model stages {c['model_repeats']} rounds of {c['model_steps']} steps"
            f"{' (an epoch)' if c['model_steps'] == d['images'] // c['batch_size'] else ''}\n"
            f"threads {c['threads']} ({threads_from(c)}): torch {c['torch_threads']}, "
            f"DALI {c['dali_threads']}, DataLoader workers {c['workers']}")
    parts = [head, stage_table({LABELS[k]: res[k] for k in PIPELINES + MODELS if k in res})]
    if "verdicts" in report:
        parts += [ratio_table(report["verdicts"]), limit_table(report)]
    if report.get("fast_paths"):
        parts.append(fast_path_table(report))
    if "recommendation" in report:
        parts.append(recommendation_lines(report["recommendation"]))
    if report.get("scaling"):
        parts.append(scaling_table(report["scaling"]))
    m = report["memory"]
    parts.append(f"peak host RSS {m['host_rss_peak_mb']:,.0f} MB, largest DataLoader worker "
                 f"{m['worker_rss_peak_mb']:,.0f} MB"
                 + (f", GPU max allocated (torch) {m['gpu_max_allocated_mb']:,.0f} MB, device in use "
                    f"{m['gpu_device_used_mb']:,.0f} MB" if m["gpu_max_allocated_mb"] is not None else ""))
    parts.append(f"wall time {report['seconds']:.0f} s | load average {dev['load_average_start']:.2f} -> "
                 f"{dev['load_average_end']:.2f} (this run's own threads count in it)")
    if report.get("warnings"):
        parts.append("\n".join(f"warning: {w}" for w in report["warnings"]))
    return "\n\n".join(parts)


def threads_from(c: dict) -> str:
    others = c["others_cores_start"]
    return c["threads_from"] + ("" if others is None else f": others used {others:.2f} cores")


def cores(x) -> str:
    return "n/a" if x is None else f"{x:.2f}"


def stage_table(stages: dict, title: str = "img/s") -> str:
    """Median, min, max and spread of each stage's runs, other processes' cores during them, this
    process's CPU per second, and whether the figure can be trusted (verdict.py)."""
    rows = [[name, *(f"{f[s]:,.0f}" for s in ("median", "min", "max")), f"{f['max'] / f['min']:.2f}x",
             cores(f["others_cores"]), f"{f['cpu_per_wall']:.2f}", "NO" if f["unreliable"] else "yes"]
            for name, f in stages.items()]
    return markdown([title, "median", "min", "max", "spread", "others' cores", "cpu/wall", "reliable"], rows)


def ratio_table(v: dict) -> str:
    """DALI against each peer, alone and end to end (the ratio of medians, its range over the runs and
    what it allows one to say), then each loader's data-loading tax."""
    rows = []
    for peer in ("torch_ops", "dataloader"):
        cells = [v["comparisons"][f"{kind}_dali_over_{peer}"] for kind in ("pipeline", "e2e")]
        rows.append([f"DALI / {NAMES[peer]}", *(f"{c['ratio']:.2f}x ({c['low']:.2f}-{c['high']:.2f}) "
                                                f"{verdict.word(c)}" for c in cells)])
    rows += [[f"data-loading tax, {NAMES[k]}", "", f"{t['value']:.1%}"
              + (" IMPOSSIBLE" if t["impossible"] else " UNRELIABLE" if t["unreliable"] else "")]
             for k, t in v["taxes"].items()]
    return markdown(["ratio (range over the runs)", "pipeline alone", "end to end"], rows)


def fast_path_table(report: dict) -> str:
    variants, lim = report["fast_paths"]["variants"], report["limits"].get("fast_paths", {})
    rows = [[fastpaths.label(k), f"{f['median']:,.0f}", f"{f['min']:,.0f} - {f['max']:,.0f}",
             f"{f['warmup_seconds']:.1f}", "n/a" if f["gpu_peak_mb"] is None else f"{f['gpu_peak_mb']:,.0f}",
             f"{lim[k]['tflops']:.3g}" if k in lim else "", "NO" if f["unreliable"] else "yes"]
            for k, f in variants.items()]
    return ("the training step alone, each fast path (warm-up: compiling included; GPU peak: above what "
            "was resident before it)\n\n"
            + markdown(["variant", "img/s median", "min - max", "warm-up s", "GPU peak MB", "TFLOP/s",
                        "reliable"], rows))


def recommendation_lines(choices: dict, why: bool = True) -> str:
    names = dict(loader="loader (train.py --loader, end to end)",
                 precision="precision", compile="compile mode")
    lines = [verdict.choice_said(names[k] + (f" (at {c['measured_with']})" if "measured_with" in c else ""),
                                 c, why) for k, c in choices.items()]
    return ("defaults this run would choose (a recommendation: the project's defaults change only from "
            "figures measured on a GPU):\n" + "\n".join(f"- {line}" for line in lines))


def limit_table(report: dict) -> str:
    lim, dev = report["limits"], report["device"]
    rows = [[LABELS[k], f"{v['tflops']:.3g} TFLOP/s", share(v["fraction_of_peak"])]
            for k, v in lim["model"].items()]
    rows += [[LABELS[k], f"{v['gbps']:.3g} GB/s", share(v["fraction_of_bandwidth"])]
             for k, v in lim["pipelines"].items()]
    fp32 = "" if dev["fp32_peak_tflops"] is None else f"fp32 {dev['fp32_peak_tflops']:.3g} TFLOP/s (estimated), "
    return (f"{lim['flops_per_image'] / 1e9:.2f} GFLOP per training image; peaks of this device: bf16 "
            f"{dev['bf16_peak_tflops'] or 'unknown'} TFLOP/s, {fp32}memory "
            f"{dev['memory_gbps'] or 'unknown'} GB/s\n\n"
            + markdown(["stage", "achieved", "of the peak"], rows))


def scaling_table(scaling: dict) -> str:
    out = []
    for axis, title in (("batch_size", "batch size"), ("threads", "threads")):
        keys = sorted({k for per in scaling[axis].values() for k in per})
        rows = [[NAMES[name], *(f"{per[k]['median']:,.0f}" if k in per else "" for k in keys)]
                for name, per in scaling[axis].items()]
        out.append(markdown([f"img/s by {title}", *map(str, keys)], rows))
    return "\n\n".join(out)
