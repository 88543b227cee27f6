"""How close to the hardware's limits: the training step's FLOP/s against the device's peak in the step's
precision (a listed GPU's dense bf16 tensor-core peak; a CPU's fp32 vector peak, estimated from its
flags and clock), and each pipeline's bytes moved per second against the GPU's memory bandwidth.
Unknown peaks (an unlisted GPU, bf16 on a CPU) get the achieved figures and null fractions."""
import os
import re

from torch.utils.flop_counter import FlopCounterMode

# From NVIDIA's datasheets: dense (not 2:4 sparse) bf16 tensor-core TFLOP/s, memory GB/s. Matched
# against torch.cuda.get_device_name(); the first match wins, so the specific names come first.
GPUS = (
    (r"H100.*PCIe", 756.0, 2000.0),
    (r"H100 (80GB HBM3|SXM)", 989.4, 3350.0),   # SXM5 reports itself as "NVIDIA H100 80GB HBM3"
    (r"H200(?! NVL)", 989.4, 4800.0),
    (r"A100.*80GB.*PCIe", 312.0, 1935.0),
    (r"A100.*80GB", 312.0, 2039.0),
    (r"A100", 312.0, 1555.0),                     # the 40 GB parts, SXM4 and PCIe
    (r"\bL4\b", 121.0, 300.0),
)


FMA_PIPES = 2  # vector FMA units per core on every x86-64 core this targets (Skylake-SP on, Zen 2 on)


def hardware(name: str, gpu: bool, threads: int = 1) -> dict:
    """{bf16_peak_tflops, fp32_peak_tflops, memory_gbps}: a listed GPU's bf16 peak and bandwidth, a
    CPU's fp32 peak over the threads the run uses; None for what is not known."""
    match = next((row for row in GPUS if gpu and re.search(row[0], name)), (None, None, None))
    return dict(bf16_peak_tflops=match[1], fp32_peak_tflops=None if gpu else cpu_fp32_peak(threads),
                memory_gbps=match[2])


def cpu_fp32_peak(cores: int, cpuinfo="/proc/cpuinfo") -> float | None:
    """FMA lanes x 2 FLOPs x FMA_PIPES x clock x cores, in TFLOP/s. The clock is the one /proc/cpuinfo
    reports (in a VM often the base clock: turbo can lift a fraction of it past 1). AMD before Zen 5
    (family 26) splits a 512-bit FMA into two 256-bit halves, so only Intel and Zen 5 count 16 lanes."""
    try:
        with open(cpuinfo) as f:
            fields = dict(line.split(":", 1) for line in f.read().split("\n\n")[0].splitlines() if ":" in line)
        info = {k.strip(): v.strip() for k, v in fields.items()}
        flags, mhz = info["flags"].split(), float(info["cpu MHz"])
    except (OSError, KeyError, ValueError):
        return None
    wide = "avx512f" in flags and (info.get("vendor_id") == "GenuineIntel" or int(info.get("cpu family", 0)) >= 26)
    lanes = 16 if wide else 8 if "fma" in flags else 4
    return lanes * 2 * FMA_PIPES * mhz * 1e6 * cores / 1e12


def step_flops(step, x, y) -> int:
    """FLOPs of one training step (forward and backward) on this batch, as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return counter.get_total_flops()


def peak_for(device: dict, precision: str):
    """The device's peak in TFLOP/s for a step in this precision (fp16 runs on bf16's tensor cores)."""
    return device["fp32_peak_tflops"] if precision == "fp32" else device["bf16_peak_tflops"]


def compute(results: dict, peaks: dict, flops_per_image: float) -> dict:
    """{stage: achieved TFLOP/s and its fraction of the peak} for each stage of peaks ({stage: the peak
    in that stage's precision, or None})."""
    out = {}
    for stage, peak in peaks.items():
        achieved = flops_per_image * results[stage]["median"] / 1e12
        out[stage] = dict(tflops=achieved, fraction_of_peak=achieved / peak if peak else None)
    return out


def traffic(results: dict, bytes_per_image: dict, bandwidth_gbps) -> dict:
    """{stage: GB/s moved (the uint8 image read and the output written, per image) and its fraction
    of the memory bandwidth} for the pipeline stages."""
    out = {}
    for stage, per_image in bytes_per_image.items():
        gbps = per_image * results[stage]["median"] / 1e9
        out[stage] = dict(bytes_per_image=per_image, gbps=gbps,
                          fraction_of_bandwidth=gbps / bandwidth_gbps if bandwidth_gbps else None)
    return out
