"""The Colab set-up rule (common/colab.py): DALI's wheel follows torch's CUDA major, Colab's torch is
kept, only what is missing is installed. Fake version strings, no network, no pip."""
import pytest

from common import colab
from common.cli import UserError
from tests.conftest import ROOT

REQUIREMENTS = """# a comment line
torch==2.14.1
torchvision==0.29.1
nvidia-dali-cuda130==2.4.0
grad-cam==1.5.7  # CAMs
matplotlib==3.11.2
"""
COLAB = {"torch": "2.9.0+cu126", "torchvision": "0.24.0+cu126", "matplotlib": "3.10.0"}


@pytest.mark.parametrize("cuda, wheel", [("12.6", "nvidia-dali-cuda120"), ("12.0", "nvidia-dali-cuda120"),
                                         ("13.0", "nvidia-dali-cuda130"), ("13.2", "nvidia-dali-cuda130"),
                                         (None, "nvidia-dali-cuda130")])
def test_dali_wheel_follows_torch_cuda_major(cuda, wheel):
    assert colab.dali_wheel(cuda) == wheel


@pytest.mark.parametrize("cuda", ["11.8", "14.0", "1.0"])
def test_unsupported_cuda_major_is_one_line_naming_the_supported(cuda):
    with pytest.raises(UserError) as error:
        colab.dali_wheel(cuda)
    message = str(error.value)
    assert "\n" not in message
    assert f"CUDA {cuda}" in message
    assert "CUDA 12 (nvidia-dali-cuda120)" in message and "CUDA 13 (nvidia-dali-cuda130)" in message


def test_only_missing_requirements_with_the_matching_dali_and_colab_torch_held():
    assert colab.pip_arguments(REQUIREMENTS, "12.6", COLAB) == [
        "nvidia-dali-cuda120==2.4.0", "grad-cam==1.5.7", "torch==2.9.0+cu126", "torchvision==0.24.0+cu126"]


def test_installed_names_compare_as_pip_does():
    installed = {**COLAB, "grad-cam": "1.5.7", "nvidia-dali-cuda130": "2.4.0"}
    assert colab.canonical("Grad_CAM") == "grad-cam"
    assert colab.pip_arguments(REQUIREMENTS, "13.0", installed) == []  # nothing missing: pip is not run
    # The other CUDA major's DALI counts as missing: one CUDA major per process.
    assert colab.pip_arguments(REQUIREMENTS, "12.6", installed)[0] == "nvidia-dali-cuda120==2.4.0"


def test_unsupported_torch_cuda_is_refused_before_any_install():
    with pytest.raises(UserError, match="CUDA 11.8"):
        colab.pip_arguments(REQUIREMENTS, "11.8", COLAB)


def test_the_real_requirements_never_install_torch():
    text = (ROOT / "requirements.txt").read_text()
    arguments = colab.pip_arguments(text, "12.6", COLAB)
    assert any(a.startswith("nvidia-dali-cuda120==") for a in arguments)
    assert any(a.startswith("grad-cam==") for a in arguments)
    assert not any(a.startswith(("nvidia-dali-cuda130", "matplotlib")) for a in arguments)
    assert [a for a in arguments if a.startswith("torch")] == ["torch==2.9.0+cu126", "torchvision==0.24.0+cu126"]
