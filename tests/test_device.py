"""common.device: the switch that makes any CPU behave as one without native bf16, and what follows
from it (the precision auto picks, the note for an explicit bf16)."""
import torch

from common import device as devices
from training import Config
from training.config import resolve

CPU = torch.device("cpu")


def test_the_switch_makes_bf16_emulated_and_auto_pick_fp32(monkeypatch):
    monkeypatch.setenv(devices.BF16_SWITCH, "emulated")
    assert devices.cpu_has_native_bf16() is False
    assert resolve(Config(device="cpu")).precision == "fp32"
    note = devices.emulated_bf16("bf16", CPU)
    assert note.startswith("bf16 is emulated on this CPU") and "--precision fp32" in note
    assert devices.emulated_bf16("fp32", CPU) is None and devices.emulated_bf16("bf16", torch.device("cuda")) is None


def test_without_the_switch_the_cpus_flags_decide(monkeypatch):
    monkeypatch.delenv(devices.BF16_SWITCH, raising=False)
    with open("/proc/cpuinfo") as f:
        flags = next(line for line in f if line.startswith("flags")).split()
    native = "avx512_bf16" in flags or "amx_bf16" in flags
    assert devices.cpu_has_native_bf16() is native
    assert resolve(Config(device="cpu")).precision == ("bf16" if native else "fp32")
    assert (devices.emulated_bf16("bf16", CPU) is None) is native
