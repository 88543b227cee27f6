"""How faithful a CAM is: ROAD (Rong et al. 2022), from the grad-cam library."""
import numpy as np
import torch
from pytorch_grad_cam.metrics.road import ROADLeastRelevantFirstAverage, ROADMostRelevantFirstAverage
from pytorch_grad_cam.utils.model_targets import ClassifierOutputSoftmaxTarget
from torch import nn

ROAD_PERCENTILES = (20, 40, 60, 80)  # remove 80, 60, 40 and 20 % of the pixels; averaged


def faithfulness(model: nn.Module, images: torch.Tensor, maps: np.ndarray, classes) -> dict:
    """Mean change of the class's softmax confidence when the most relevant (MoRF) or the least
    relevant (LeRF) pixels are removed by noisy linear imputation, averaged over ROAD_PERCENTILES.
    A faithful map: MoRF falls far, LeRF hardly; lerf - morf > 0."""
    targets = [ClassifierOutputSoftmaxTarget(int(c)) for c in classes]
    torch.manual_seed(0)  # the imputer adds noise: the same numbers on every run
    morf = ROADMostRelevantFirstAverage(list(ROAD_PERCENTILES))(images.float(), maps, targets, model)
    lerf = ROADLeastRelevantFirstAverage(list(ROAD_PERCENTILES))(images.float(), maps, targets, model)
    return {"morf": float(np.mean(morf)), "lerf": float(np.mean(lerf)), "score": float(np.mean(lerf - morf))}


def signed(score: float) -> str:
    """A score with its sign (+0.123, −0.123), and 0.000 unsigned where it rounds to zero: a bare
    "-0.000" reads as a verdict it is not."""
    text = f"{score:+.3f}"
    return "0.000" if float(text) == 0 else text.replace("-", "−")
