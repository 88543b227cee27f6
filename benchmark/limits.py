"""How close to the hardware's limits: the training step's FLOP/s against the GPU's dense bf16 peak, and
each pipeline's bytes moved per second against the GPU's memory bandwidth. Unknown hardware (any CPU,
an unlisted GPU) gets the achieved figures and null fractions."""
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


def hardware(name: str, gpu: bool) -> dict:
    """{bf16_peak_tflops, memory_gbps} of the GPU called name; None for what is not known."""
    match = next((row for row in GPUS if gpu and re.search(row[0], name)), (None, None, None))
    return dict(bf16_peak_tflops=match[1], memory_gbps=match[2])


def step_flops(step, x, y) -> int:
    """FLOPs of one training step (forward and backward) on this batch, as torch counts them."""
    with FlopCounterMode(display=False) as counter:
        step(x, y)
    return counter.get_total_flops()


def compute(results: dict, model_stages, flops_per_image: float, peak_tflops) -> dict:
    """{stage: achieved TFLOP/s and its fraction of the peak} for the stages that train."""
    out = {}
    for stage in model_stages:
        achieved = flops_per_image * results[stage]["median"] / 1e12
        out[stage] = dict(tflops=achieved, fraction_of_peak=achieved / peak_tflops if peak_tflops else None)
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
