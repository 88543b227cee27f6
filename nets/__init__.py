"""Models and what is saved of them."""
from .resnet import ResNet, resnet18, resnet34

MODELS = {"resnet18": resnet18, "resnet34": resnet34}


def create(name: str, num_classes: int = 10, zero_init_residual: bool = False) -> ResNet:
    """The one model factory."""
    if name not in MODELS:
        raise ValueError(f"unknown model {name!r}; choose one of {', '.join(MODELS)}")
    return MODELS[name](num_classes, zero_init_residual)
