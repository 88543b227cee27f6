"""Class activation maps from the grad-cam library (pytorch_grad_cam), one call for every method."""
import contextlib
import io

import numpy as np
import torch
from torch import nn

from .layers import block
from .options import CAM_CLASSES

GRADIENT_FREE = ("scorecam", "ablationcam")  # a forward pass per channel of the layer: slow on a CPU
MASKED_BATCH = 64  # masked or ablated copies per forward pass (ScoreCAM, AblationCAM)
CAM_BATCH = 32     # images per call: ScoreCAM holds a masked copy of each per channel of the layer


def cams(model: nn.Module, layer: nn.Module, images: torch.Tensor, classes, method="gradcam") -> np.ndarray:
    """(N, H, W) float32 maps in [0, 1] at the image size: where `layer` sees each image's class;
    CAM_BATCH images per call."""
    # grad-cam brings scikit-learn and torchvision's models (seconds to import): loaded with the first map.
    import pytorch_grad_cam
    from pytorch_grad_cam.utils.model_targets import ClassifierOutputTarget
    targets = [ClassifierOutputTarget(int(c)) for c in classes]  # one per sample
    out = None
    with getattr(pytorch_grad_cam, CAM_CLASSES[method])(model=model, target_layers=[layer]) as cam:  # hooks off on exit
        cam.batch_size = MASKED_BATCH  # read by ScoreCAM and AblationCAM only
        # float32: fp16 breaks the resize and EigenCAM's SVD. Gradients on: the hooks need them.
        # The gradient-free methods draw a progress bar per image on stderr: not ours to show.
        with torch.enable_grad(), contextlib.redirect_stderr(io.StringIO()):
            out = [cam(input_tensor=images[i:i + CAM_BATCH].float(), targets=targets[i:i + CAM_BATCH])
                   for i in range(0, len(images), CAM_BATCH)]
    if out is None:  # the library's __exit__ swallows an IndexError and returns nothing
        raise RuntimeError(f"{method} failed on {len(images)} images")
    return np.concatenate(out)


def maker(method: str, layer: str):
    """The method as a map function (model, images, classes) -> maps, its layer found by name in
    whichever model it is given: the sanity check hands it randomised copies."""
    return lambda model, images, classes: cams(model, block(model, layer), images, classes, method)

