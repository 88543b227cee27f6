"""What a run found, as one JSON document (written whole, or partial with the failed stage when a stage
overruns) and as markdown tables on stdout (the same text pastes into BENCHMARKS.md)."""
import json
import os
import platform
import resource
import sys

import torch
import torchvision

from common.files import write_text
from common.tables import markdown

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
                dali=sys.modules["nvidia.dali"].__version__)  # imported by pipeline, its only importer


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
            f"model stages {c['model_repeats']} rounds of {c['model_steps']} steps | "
            f"{c['workers']} DataLoader workers")
    stages = markdown(["img/s", "median", "min", "max", "cpu/wall"],
                      [[LABELS[k], *(f"{res[k][s]:,.0f}" for s in ("median", "min", "max")),
                        f"{res[k]['cpu_per_wall']:.2f}"] for k in PIPELINES + MODELS if k in res])
    parts = [head, stages]
    if "ratios" in report:
        parts += [ratio_table(report["ratios"]), limit_table(report)]
    if report.get("scaling"):
        parts.append(scaling_table(report["scaling"]))
    m = report["memory"]
    parts.append(f"peak host RSS {m['host_rss_peak_mb']:,.0f} MB, largest DataLoader worker "
                 f"{m['worker_rss_peak_mb']:,.0f} MB"
                 + (f", GPU max allocated (torch) {m['gpu_max_allocated_mb']:,.0f} MB, device in use "
                    f"{m['gpu_device_used_mb']:,.0f} MB" if m["gpu_max_allocated_mb"] is not None else ""))
    parts.append(f"wall time {report['seconds']:.0f} s | load average {dev['load_average_start']:.2f} -> "
                 f"{dev['load_average_end']:.2f} (other processes skew the figures)")
    return "\n\n".join(parts)


def ratio_table(r: dict) -> str:
    tax = r["data_loading_tax_by_loader"]
    rows = [[f"DALI / {NAMES[k]}", f"{r[f'pipeline_dali_over_{k}']:.2f}x", f"{r[f'e2e_dali_over_{k}']:.2f}x"]
            for k in ("torch_ops", "dataloader")]
    rows += [[f"data-loading tax, {NAMES[k]}", "", share(v)] for k, v in tax.items()]
    return markdown(["ratio", "pipeline alone", "end to end"], rows)


def limit_table(report: dict) -> str:
    lim, dev = report["limits"], report["device"]
    rows = [[LABELS[k], f"{v['tflops']:.3g} TFLOP/s", share(v["fraction_of_peak"])]
            for k, v in lim["model"].items()]
    rows += [[LABELS[k], f"{v['gbps']:.3g} GB/s", share(v["fraction_of_bandwidth"])]
             for k, v in lim["pipelines"].items()]
    return (f"{lim['flops_per_image'] / 1e9:.2f} GFLOP per training image; peaks of this device: bf16 "
            f"{dev['bf16_peak_tflops'] or 'unknown'} TFLOP/s, memory "
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
