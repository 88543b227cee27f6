"""Shared fixtures: a small synthetic CIFAR-10 written in the real `cifar-10-batches-py` pickle format."""
import pickle
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def write_cifar(root: Path, per_batch=100, n_test=1000, seed=0) -> Path:
    """Write data_batch_1..5, test_batch and batches.meta as CIFAR-10 distributes them (rows of
    3072 uint8 = R, G, B planes of 32 x 32). Each class has its own colour tint, so a model can learn."""
    rng = np.random.default_rng(seed)
    tints = rng.integers(0, 256, (10, 3))
    batches = root / "cifar-10-batches-py"
    batches.mkdir(parents=True)

    def batch(n):
        labels = rng.integers(0, 10, n)
        noise = rng.integers(0, 256, (n, 3, 32, 32))
        images = (noise + tints[labels][:, :, None, None]) // 2
        return {"batch_label": "synthetic", "labels": labels.tolist(),
                "data": images.reshape(n, 3072).astype(np.uint8),
                "filenames": [f"{i}.png" for i in range(n)]}

    for name, n in [(f"data_batch_{i}", per_batch) for i in range(1, 6)] + [("test_batch", n_test)]:
        with open(batches / name, "wb") as f:
            pickle.dump(batch(n), f, protocol=2)
    with open(batches / "batches.meta", "wb") as f:
        pickle.dump({"label_names": CLASSES, "num_cases_per_batch": per_batch, "num_vis": 3072}, f,
                    protocol=2)
    return root


@pytest.fixture
def cifar_dir(tmp_path):
    return write_cifar(tmp_path / "data")


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    """One synthetic CIFAR-10 shared by the runs of a test module."""
    return write_cifar(tmp_path_factory.mktemp("cifar") / "data")
