"""Models and what is saved of them (nets.checkpoint). The model names load without torch, being option
choices; the models load on first use."""
from common.lazy import on_first_use

MODELS = ("resnet18", "resnet34")  # each a constructor of that name in nets/resnet.py

__getattr__ = on_first_use(__name__, {".resnet": ("ResNet", "BasicBlock")})


def create(name: str, num_classes: int = 10, zero_init_residual: bool = False):
    """The one model factory: a ResNet."""
    from . import resnet
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return getattr(resnet, name)(num_classes, zero_init_residual)
