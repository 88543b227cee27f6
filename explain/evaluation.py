"""The checkpoint's model and data, and one pass over the test set (or a class-balanced part of it)
through the same DALI eval pipeline and normalisation as training."""
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

import nets
import pipeline
from common import progress
from common.cli import UsageError
from nets import checkpoint
from training import logits_of

from .options import CPU_TEST_IMAGES

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
    """The run's test data as the checkpoint recorded it (classes, image size, whether broken files were
    left out), checked against its classes; never downloaded (viz explains what exists), and an image
    folder's training split is never opened: viz does not need it."""
    cfg = state["config"]
    data = pipeline.open_dataset(cfg.get("data", "cifar10"), data_dir, state["image_size"], download=False,
                                 skip_bad_images=cfg.get("skip_bad_images", False), classes=state["classes"])
    if list(data.classes) != list(state["classes"]):
        raise pipeline.DataError(f"{data_dir} holds classes {list(data.classes)[:4]}..., the checkpoint "
                                 f"{list(state['classes'])[:4]}...: pass the run's data with --data-dir")
    return data


def test_limit(limit, device: torch.device) -> int:
    """How many test images to evaluate: `limit` (0: all), or by default all on a GPU and CPU_TEST_IMAGES
    on the CPU, where a pass over all of CIFAR-10's 10,000 takes minutes."""
    if limit is None:
        return 0 if device.type == "cuda" else CPU_TEST_IMAGES
    if limit < 0:
        raise UsageError(f"--limit-test must be >= 0 (got {limit})")
    return limit


def test_index(data: pipeline.Dataset, limit: int) -> np.ndarray:
    """Test-set positions to evaluate: all, or `limit` of them keeping every class's share."""
    return pipeline.test_subset(data.test[1], limit)


def test_loader(data: pipeline.Dataset, state: dict, index: np.ndarray, device):
    """A loader over the test images at `index`, in that order, normalised as in training."""
    items, labels = data.test
    spec = pipeline.BatchSpec(mean=tuple(state["mean"]), std=tuple(state["std"]), batch_size=EVAL_BATCH,
                              device=device, dtype=torch.float32,
                              channels_last=state["config"].get("channels_last", True))
    return data.eval_loader((items[index], labels[index]), spec)


@dataclass(frozen=True)
class Predictions:
    """What the model said about some test images: softmax outputs, true labels, test-set positions."""
    index: np.ndarray   # each image's position in the whole test set ("test #i")
    labels: np.ndarray
    probs: np.ndarray   # N x classes

    def __len__(self):
        return len(self.labels)

    @property
    def preds(self) -> np.ndarray:
        return self.probs.argmax(1)

    @property
    def conf(self) -> np.ndarray:
        return self.probs.max(1)

    @property
    def accuracy(self) -> float:
        return float((self.preds == self.labels).mean()) if len(self) else 0.0

    def take(self, rows) -> "Predictions":
        return Predictions(self.index[rows], self.labels[rows], self.probs[rows])

    def wrong(self, n: int) -> "Predictions":
        """The first n misclassified, in test order."""
        return self.take(np.flatnonzero(self.preds != self.labels)[:n])

    def right(self, n: int) -> "Predictions":
        return self.take(np.flatnonzero(self.preds == self.labels)[:n])


@torch.inference_mode()
def predict(model, loader, index: np.ndarray, tta: bool) -> Predictions:
    """One pass: every image's softmax output, in loader order; with tta the mirror images' logits are
    averaged in, as training's evaluation did. A progress bar where one shows cleanly (a terminal, a
    notebook), none in a log."""
    probs, labels = [], []
    with progress.bar(total=len(index), desc="test pass", unit="img") as bar:
        for x, y in loader:
            probs.append(logits_of(model, x.float(), tta).softmax(1).cpu())
            labels.append(y.cpu())
            bar.update(len(y))
    return Predictions(index, torch.cat(labels).numpy(), torch.cat(probs).numpy())


def images(data: pipeline.Dataset, state: dict, index: np.ndarray, device) -> torch.Tensor:
    """The normalised test images at `index` (a few), in that order, on `device`."""
    return torch.cat([x.float() for x, _ in test_loader(data, state, index, device)]).to(device)


def confusion_matrix(labels: np.ndarray, preds: np.ndarray, num_classes: int) -> np.ndarray:
    """Counts: row = true class, column = predicted class."""
    matrix = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(matrix, (labels, preds), 1)
    return matrix
