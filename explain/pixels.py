"""Model inputs (normalised) and pixels (RGB in [0, 1]) in torch: attacks work on pixels, pictures
show them. The same arithmetic as DALI's normalisation in pipeline/dali.py, inverted too."""
import numpy as np
import torch


def _stats(mean, std, like: torch.Tensor):
    return (torch.as_tensor(mean, dtype=like.dtype, device=like.device).view(1, -1, 1, 1),
            torch.as_tensor(std, dtype=like.dtype, device=like.device).view(1, -1, 1, 1))


def to_pixels(images: torch.Tensor, mean, std) -> torch.Tensor:
    """Normalised images back to RGB in [0, 1] (the clamp only absorbs float error)."""
    m, s = _stats(mean, std, images)
    return (images * s + m).clamp(0, 1)


def normalise(pixels: torch.Tensor, mean, std) -> torch.Tensor:
    m, s = _stats(mean, std, pixels)
    return (pixels - m) / s


def hwc(pixels: torch.Tensor) -> np.ndarray:
    """One CHW image as the HWC float32 array matplotlib and grad-cam's overlay take."""
    return pixels.permute(1, 2, 0).detach().cpu().numpy().astype(np.float32)
