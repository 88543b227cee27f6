"""Every GPU pipeline the project can make, checked on a CPU: built with its GPU operators but for a CPU
BatchSpec, so `device_id=None` (no GPU needed, none used), serialised (DALI then checks argument
names, GPU data fed to CPU operators and GPU argument inputs), and each operator of the serialised
graph looked up in DALI's registry for the device it runs on. So a GPU-only mistake fails the CPU
suite instead of the first minutes on a GPU. Not checked here: dtype, layout and value rules (DALI
checks those when it runs), and the DLPack handoff to torch (tests/test_gpu.py, on a GPU)."""
import itertools
import types

import numpy as np
import pytest
import torch
from nvidia.dali import backend, fn

import pipeline.dali as dali
from pipeline import MEAN, STD, BatchSpec
from pipeline.dali import Decode, EvalSource, TrainSource, eval_pipeline, train_pipeline
from pipeline.loader import pipeline_options

SOURCES = {"cifar": None, "folder": Decode(32, resize=False), "folder-resize": Decode(32, resize=True)}
VARIANTS = list(itertools.product(("train", "eval"), (torch.float16, torch.float32), (True, False), SOURCES))


# ------------------------------------------------------------------ reading a serialised pipeline
def varint(data: bytes, i: int) -> tuple:
    value = shift = 0
    while True:
        byte, i = data[i], i + 1
        value, shift = value | (byte & 0x7F) << shift, shift + 7
        if byte < 0x80:
            return value, i


def fields(data: bytes) -> list:
    """(field number, value) of one protobuf message: ints for varints, bytes otherwise."""
    out, i = [], 0
    while i < len(data):
        key, i = varint(data, i)
        if key & 7 == 0:
            value, i = varint(data, i)
        elif key & 7 == 2:
            size, i = varint(data, i)
            value, i = data[i:i + size], i + size
        else:  # fixed 64 or 32 bits
            size = 8 if key & 7 == 1 else 4
            value, i = data[i:i + size], i + size
        out.append((key >> 3, value))
    return out


def port(data: bytes) -> dict:
    """DALI's InputOutput message: name, device, whether it is an argument input."""
    f = dict(fields(data))
    return {"name": f[1].decode(), "device": f[2].decode(), "argument": bool(f.get(3, 0))}


def read_graph(serialized: bytes) -> tuple:
    """([(operator, device, [inputs])], [outputs]) of DALI's PipelineDef: op = field 5 (OpDef: name 1,
    input 2, args 4; the device is the argument named "device"), pipeline outputs = field 7."""
    ops, outputs = [], []
    for number, value in fields(serialized):
        if number == 5:
            op = fields(value)
            args = {dict(fields(a))[1]: dict(fields(a)) for n, a in op if n == 4}
            ops.append((dict(op)[1].decode(), args[b"device"][5].decode(), [port(v) for n, v in op if n == 2]))
        elif number == 7:
            outputs.append(port(value))
    assert ops and outputs, "nothing read from the serialised pipeline: has DALI's format changed?"
    return ops, outputs


REGISTRY = {"gpu": backend.RegisteredGPUOps(), "mixed": backend.RegisteredMixedOps(),
            "cpu": backend.RegisteredCPUOps()}


def gpu_graph_problems(make) -> list:
    """What would fail when the graph make() defines runs on a GPU, as far as a CPU can tell; [] when
    nothing. DALI checks some things as the graph is defined, the rest when it is serialised."""
    try:
        ops, outputs = read_graph(make().serialize())
    except (KeyError, RuntimeError, TypeError, ValueError) as e:
        return [f"serialize: {type(e).__name__}: {e}"]
    problems = []
    for name, device, inputs in ops:
        if name not in REGISTRY[device]:
            problems.append(f"{name} has no {device} implementation")
        for i in inputs:  # argument inputs always, and every input of a CPU or mixed operator: host data
            if i["device"] != "cpu" and (i["argument"] or device != "gpu"):
                problems.append(f"{name} ({device}) takes {i['name']} from the {i['device']}")
    return problems + [f"output {o['name']} stays on the {o['device']}" for o in outputs if o["device"] != "gpu"]


def operators(pipe) -> list:
    return sorted((name, device) for name, device, _ in read_graph(pipe.serialize())[0])


# -------------------------------------------------------------------------- the project's graphs
def build(kind: str, dtype=torch.float16, channels_last=True, source="cifar", gpu=True):
    """The project's pipeline as the loaders make it (pipeline.loader.pipeline_options), with GPU
    operators, for no device: the sources keep their items on the host and are never called."""
    decode, n = SOURCES[source], 64
    items = np.zeros((n, 32, 32, 3), np.uint8) if decode is None else np.array([f"{i}.jpg" for i in range(n)])
    labels, spec = np.arange(n), BatchSpec(MEAN, STD, 16, torch.device("cpu"), dtype, channels_last)
    if kind == "train":
        src, pipeline_fn = TrainSource(items, labels, spec, decode=decode), train_pipeline
    else:
        src, pipeline_fn = EvalSource(items, labels, spec, decode=decode), eval_pipeline
    return pipeline_fn(src, spec, **pipeline_options(spec, gpu=gpu, num_threads=1))


def expected_operators(kind: str, source: str) -> list:
    """The pixel work on the GPU: uint8 images uploaded by the source, or files decoded by nvJPEG
    ("mixed") and resized there; the draws and labels come from the host."""
    images = [("ExternalSource", "gpu")] if SOURCES[source] is None else (
        [("ExternalSource", "cpu"), ("decoders__Image", "mixed")] + [("Resize", "gpu")] * SOURCES[source].resize)
    if kind == "train":  # labels, crop start, flip, cutout anchor; padded crop, cutout, flip + normalise
        work = [("ExternalSource", "cpu")] * 4 + [("Slice", "gpu"), ("Erase", "gpu"), ("CropMirrorNormalize", "gpu")]
    else:
        work = [("ExternalSource", "cpu"), ("CropMirrorNormalize", "gpu")]
    return sorted(images + work)


@pytest.mark.parametrize("kind, dtype, channels_last, source", VARIANTS,
                         ids=[f"{k}-{str(d)[6:]}-{'HWC' if c else 'CHW'}-{s}" for k, d, c, s in VARIANTS])
def test_every_gpu_pipeline_is_valid_for_the_gpu(kind, dtype, channels_last, source):
    assert gpu_graph_problems(lambda: build(kind, dtype, channels_last, source)) == []
    assert operators(build(kind, dtype, channels_last, source)) == expected_operators(kind, source)


def test_the_cpu_variant_has_only_cpu_operators():
    """The same function with gpu=False: the check above would see its outputs left on the host."""
    assert {device for _, device in operators(build("train", source="folder-resize", gpu=False))} == {"cpu"}
    problems = gpu_graph_problems(lambda: build("train", source="folder-resize", gpu=False))
    assert len(problems) == 2 and all(p.endswith("stays on the cpu") for p in problems), problems  # images, labels


# -------------------------------------------------------------------- planted GPU-only mistakes
class Planted:
    """pipeline.dali's `fn` with some operators replaced by a mistaken version."""

    def __init__(self, **replaced):
        self.replaced = replaced

    def __getattr__(self, name):
        return self.replaced[name] if name in self.replaced else getattr(fn, name)


def on_the_mixed_path(change):
    """fn.decoders.image, changed by change(encoded, arguments) -> (encoded, arguments) where it would
    run on the GPU ("mixed") only; the CPU path stays right."""
    def image(encoded, device, **kw):
        if device == "mixed":
            encoded, kw = change(encoded, {**kw, "device": device})
            return fn.decoders.image(encoded, **kw)
        return fn.decoders.image(encoded, device=device, **kw)
    return types.SimpleNamespace(image=image)


# name: (the mistaken operators, what the check says, whether the CPU graph takes the same path)
MISTAKES = {
    "an argument name wrong on the GPU path": (  # DALI's argument is hw_decoder_load
        dict(decoders=on_the_mixed_path(lambda encoded, kw: (encoded, {**kw, "hw_decoder_loads": 0.5}))),
        'serialize: KeyError: \'Argument "hw_decoder_loads" is not defined for operator "decoders__Image".', False),
    "device gpu for an operator that has only a mixed one": (  # given GPU data, DALI lets it be
        dict(decoders=on_the_mixed_path(lambda encoded, kw: (encoded.gpu(), {**kw, "device": "gpu"}))),
        "decoders__Image has no gpu implementation", False),
    "GPU data into a CPU operator": (
        dict(erase=lambda images, **kw: fn.erase(images, **{**kw, "device": "cpu"})),
        'The input 0 for cpu operator `nvidia.dali.fn.erase` is stored on incompatible device "gpu"', False),
    "a GPU argument input": (
        dict(slice=lambda images, start, **kw: fn.slice(images, start=start.gpu(), **kw)),
        "Invalid device \"gpu\" for argument 'start' of operator 'nvidia.dali.fn.slice'", True),
}


@pytest.mark.parametrize("mistake", MISTAKES)
def test_a_planted_gpu_mistake_fails_the_check(monkeypatch, mistake):
    replaced, says, on_cpu_too = MISTAKES[mistake]
    monkeypatch.setattr(dali, "fn", Planted(**replaced))
    problems = gpu_graph_problems(lambda: build("train", source="folder-resize"))
    assert len(problems) == 1 and says in problems[0], problems
    # A GPU-only mistake: the CPU graph of the same code is fine, so no CPU test could have seen it.
    cpu_problems = gpu_graph_problems(lambda: build("train", source="folder-resize", gpu=False))
    assert any(says in p for p in cpu_problems) == on_cpu_too, cpu_problems
