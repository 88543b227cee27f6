"""The run's data: the dataset split into train / val / test, and its loaders, made from one Setup
(the fixed context of a run: config, process, data, parts, precision)."""
import sys
from dataclasses import dataclass

import numpy as np

import pipeline
from common import device as devices

from .build import Precision, precision
from .config import Config
from .distributed import Process


@dataclass(frozen=True)
class Setup:
    """What a run works with and never changes: built once by prepare(), passed down whole."""
    cfg: Config
    process: Process
    data: pipeline.Dataset
    parts: dict               # "train", "test" (and "val"): (items, labels)
    precision: Precision

    def spec(self, batch_size: int, seed=None) -> pipeline.BatchSpec:
        """What every loader of the run shares (normalisation, device, dtype, layout, shard), at
        batch_size; seed None: the run's."""
        return pipeline.BatchSpec(
            mean=self.data.mean, std=self.data.std, batch_size=batch_size, device=self.process.device,
            dtype=self.precision.loader_dtype, channels_last=self.cfg.channels_last,
            seed=self.cfg.seed if seed is None else seed, shard_id=self.process.rank, num_shards=self.process.world)

    def train_loader(self, batch_size: int, start_epoch=0, start_step=0, seed=None):
        """Shuffled, augmented batches from (start_epoch, start_step); seed None: the run's."""
        return self.data.train_loader(self.parts["train"], self.spec(batch_size, seed), start_epoch, start_step)

    def eval_loaders(self) -> dict:
        """One per held-out part ("test", "val"): every image of this shard exactly once per pass."""
        spec = self.spec(self.cfg.batch_size)
        return {k: self.data.eval_loader(self.parts[k], spec) for k in self.parts if k != "train"}


def prepare(cfg: Config, process: Process) -> Setup:
    """Open and check the data (a missing or broken dataset fails here, before anything is written)."""
    data = pipeline.open_dataset(cfg.data, cfg.data_dir, cfg.image_size, loader=cfg.loader,
                                 skip_bad_images=cfg.skip_bad_images)
    emulated = devices.emulated_bf16(cfg.precision, process.device)
    for note in (data.note, emulated) if process.main else ():
        if note:
            print(f"note: {note}", file=sys.stderr, flush=True)
    return Setup(cfg, process, data, split(cfg, data), precision(cfg, process.device))


def split(cfg: Config, data: pipeline.Dataset) -> dict:
    """{"train", "val", "test"}: (items, labels). The limits keep every class's share (a list sorted by
    class, as image folders are, stays mixed); the validation rows are a seeded share of the limited
    training images, so a small run evaluates a small validation set."""
    (items, labels), (test_items, test_labels) = data.train, data.test
    pool = pipeline.subset(labels, cfg.limit_train, cfg.seed)
    order = pool[np.random.default_rng(cfg.seed).permutation(len(pool))]
    n_val = int(round(cfg.val_split * len(order)))
    val, train = np.sort(order[:n_val]), np.sort(order[n_val:])
    test = pipeline.test_subset(test_labels, cfg.limit_test)
    parts = {"train": (items[train], labels[train]), "test": (test_items[test], test_labels[test])}
    if n_val:
        parts["val"] = (items[val], labels[val])
    return parts
