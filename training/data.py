"""The run's data: the dataset split into train / val / test, and a DALI loader for each part."""
import numpy as np

import pipeline
from common import device as devices

from .config import Config
from .distributed import Process


def split(cfg: Config, data: pipeline.Dataset) -> dict:
    """{"train", "val", "test"}: (items, labels); the validation rows are fixed by the seed."""
    (items, labels), (test_items, test_labels) = data.train, data.test
    order = np.random.default_rng(cfg.seed).permutation(len(labels))
    n_val = int(round(cfg.val_split * len(order)))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    train = train[:cfg.limit_train or None]
    test = slice(0, cfg.limit_test or None)
    parts = {"train": (items[train], labels[train]), "test": (test_items[test], test_labels[test])}
    if n_val:
        parts["val"] = (items[val], labels[val])
    return parts


def loader_options(cfg: Config, data: pipeline.Dataset, process: Process, dtype) -> dict:
    """What every loader of the run shares: normalisation, batch, device, dtype, layout, shard."""
    return dict(mean=data.mean, std=data.std, batch_size=cfg.batch_size,
                device_id=devices.dali_id(process.device), dtype=dtype,
                channels_last=cfg.channels_last, shard_id=process.rank, num_shards=process.world)


def eval_loaders(data: pipeline.Dataset, parts: dict, options: dict) -> dict:
    return {k: data.eval_loader(*parts[k], **options) for k in parts if k != "train"}
