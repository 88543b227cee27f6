"""The checkpoint's model and data, and one pass over the test set through the same DALI eval
pipeline and normalisation as training."""
import numpy as np
import torch
from torch import nn

import nets
import pipeline
from common import device as devices
from nets import checkpoint
from training.step import logits_of

EVAL_BATCH = 256


def weights_of(state: dict) -> str:
    """Which weights viz explains: the moving average when the run kept one (what it evaluated beside
    the raw weights, usually the better of the two), else the raw weights."""
    return "ema" if state.get("ema") else "model"


def load_model(state: dict, path, device) -> nn.Module:
    """The checkpoint's weights (weights_of) in a fresh uncompiled float32 model, in eval mode."""
    try:
        model = nets.create(state["config"]["model"], num_classes=len(state["classes"]))
        model.load_state_dict(state[weights_of(state)])
    except (KeyError, ValueError, RuntimeError) as e:
        reason = str(e).strip().splitlines()[0][:120]
        raise checkpoint.CheckpointError(f"{path}: its weights do not fit the model it names ({reason}): "
                                         "pass a file written by train.py") from None
    return model.float().eval().to(device)


def open_data(state: dict, data_dir: str) -> pipeline.Dataset:
    """The run's dataset (never downloaded: viz explains what exists), checked against its classes."""
    cfg = state["config"]
    data = pipeline.open_dataset(cfg.get("data", "cifar10"), data_dir, cfg.get("image_size", 0),
                                 download=False)
    if list(data.classes) != list(state["classes"]):
        raise pipeline.DataError(f"{data_dir} holds classes {list(data.classes)[:4]}..., the checkpoint "
                                 f"{list(state['classes'])[:4]}...: pass the run's data with --data-dir")
    return data


def test_loader(data: pipeline.Dataset, state: dict, limit: int, device):
    """(loader, labels) of the test set, or of its first `limit` images, normalised as in training."""
    items, labels = (a[:limit or None] for a in data.test)
    loader = data.eval_loader(items, labels, mean=tuple(state["mean"]), std=tuple(state["std"]),
                              batch_size=EVAL_BATCH, device_id=devices.dali_id(device), dtype=torch.float32,
                              channels_last=state["config"].get("channels_last", True))
    return loader, labels


@torch.inference_mode()
def predict(model, loader, tta: bool) -> tuple:
    """Softmax outputs (N x classes) and labels of every test image, in test-set order; with tta the
    mirror images' logits are averaged in, as training's evaluation did."""
    probs, labels = [], []
    for x, y in loader:
        probs.append(logits_of(model, x.float(), tta).softmax(1).cpu())
        labels.append(y.cpu())
    return torch.cat(probs).numpy(), torch.cat(labels).numpy()


def gather(loader, index) -> torch.Tensor:
    """The normalised images at test-set positions `index`, in that order (one more pass)."""
    wanted, found, start = set(map(int, index)), {}, 0
    for x, _ in loader:
        for i in wanted.intersection(range(start, start + len(x))):
            found[i] = x[i - start].float().clone()  # a copy: a view would keep its whole batch alive
        start += len(x)
    return torch.stack([found[int(i)] for i in index])


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix
