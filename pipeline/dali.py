"""DALI pipelines: training augmentation (padded crop, flip, cutout, normalise) and plain evaluation.

The pixel work runs in DALI, on the GPU when the pipeline has a device_id and on DALI's CPU backend
when device_id is None. The random draws (order, crop offset, flip, cutout centre) are made by numpy
from (seed, epoch) and fed in beside the images: every epoch is then a pure function of the seed,
so `--resume` continues bit-exactly, and every rank of a sharded run sees different draws.
"""
import numpy as np
import torch
from nvidia.dali import fn, pipeline_def, types

PAD = 4        # random crop: image zero-padded by 4 on each side, 9 x 9 = 81 offsets
CUTOUT = 16    # cutout square side (DeVries & Taylor 2017), centre uniform over the image, clipped

DALI_DTYPE = {torch.float16: types.FLOAT16, torch.float32: types.FLOAT}


class TrainSource:
    """The training stream of one shard: batch `it` of epoch `start_epoch + epoch_idx`, as DALI asks."""

    def __init__(self, images, labels, batch_size, seed, shard_id=0, num_shards=1,
                 start_epoch=0, start_step=0, device_id=None):
        self.images, self.labels = _resident(images, device_id), labels
        self.batch_size, self.seed = batch_size, seed
        self.per_shard = len(labels) // num_shards  # equal shards: every rank runs the same steps
        self.shard = slice(shard_id * self.per_shard, (shard_id + 1) * self.per_shard)
        self.start_epoch, self.start_step = start_epoch, start_step
        self._cached = (None, None)

    def __len__(self):  # full batches per epoch; the remainder is reshuffled into later epochs
        return self.per_shard // self.batch_size

    def draws(self, epoch: int) -> dict:
        """Order and augmentation of one epoch for this shard (shared permutation across shards)."""
        if self._cached[0] != epoch:
            n, size = len(self.labels), self.images.shape[1]
            rng = np.random.default_rng([self.seed, epoch])
            draws = dict(index=rng.permutation(n),
                         crop_start=rng.integers(-PAD, PAD + 1, (n, 2)).astype(np.int32),
                         flip=rng.integers(0, 2, n).astype(np.int32),
                         cutout_anchor=(rng.integers(0, size, (n, 2)) - CUTOUT // 2).astype(np.float32))
            self._cached = (epoch, {k: v[self.shard] for k, v in draws.items()})
        return self._cached[1]

    def _batch(self, info) -> tuple:
        step = info.iteration + (self.start_step if info.epoch_idx == 0 else 0)
        if step >= len(self):
            raise StopIteration  # DALI's end-of-epoch signal
        rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
        return {k: v[rows] for k, v in self.draws(self.start_epoch + info.epoch_idx).items()}

    def image_batch(self, info):
        return _gather(self.images, self._batch(info)["index"])

    def param_batch(self, info):
        d = self._batch(info)
        return self.labels[d["index"]], d["crop_start"], d["flip"], d["cutout_anchor"]


class EvalSource:
    """Shard `shard_id` of [0, N) in order, every index exactly once; the last batch may be short."""

    def __init__(self, images, labels, batch_size, shard_id=0, num_shards=1, device_id=None):
        n = len(labels)
        self.index = np.arange(shard_id * n // num_shards, (shard_id + 1) * n // num_shards)
        self.images, self.labels, self.batch_size = _resident(images, device_id), labels, batch_size

    def __len__(self):
        return -(-len(self.index) // self.batch_size)

    def _rows(self, info):
        if info.iteration >= len(self):
            raise StopIteration
        return self.index[info.iteration * self.batch_size:(info.iteration + 1) * self.batch_size]

    def image_batch(self, info):
        return _gather(self.images, self._rows(info))

    def label_batch(self, info):
        return self.labels[self._rows(info)]


def _resident(images: np.ndarray, device_id):
    """On a GPU the whole uint8 set lives in device memory (150 MB for CIFAR-10): no copies per batch."""
    return images if device_id is None else torch.from_numpy(images).to(f"cuda:{device_id}")


def _gather(images, index: np.ndarray):
    if isinstance(images, np.ndarray):
        return images[index]
    return images[torch.from_numpy(index).to(images.device, non_blocking=True)]


def normalise(images, mean, std, dtype, layout, mirror=None):
    """uint8 HWC -> (x/255 - mean)/std in the training dtype and layout, in one fused DALI operator."""
    return fn.crop_mirror_normalize(images, mirror=0 if mirror is None else mirror,
                                    mean=[255 * m for m in mean], std=[255 * s for s in std],
                                    dtype=DALI_DTYPE[dtype], output_layout=layout)


@pipeline_def
def train_pipeline(source: TrainSource, mean, std, dtype, layout, gpu):
    images = fn.external_source(source.image_batch, batch_info=True, layout="HWC",
                                device="gpu" if gpu else "cpu")
    labels, crop_start, flip, cutout_anchor = fn.external_source(
        source.param_batch, num_outputs=4, batch_info=True)
    images = augment(images, crop_start, flip, cutout_anchor, mean, std, dtype, layout)
    return images, labels.gpu() if gpu else labels


def augment(images, crop_start, flip, cutout_anchor, mean, std, dtype, layout, cutout=CUTOUT):
    """The training augmentation of uint8 HWC images, given each sample's random draws."""
    # Padded random crop: a window at offset -4..4 of the image, zeros where it leaves the image.
    images = fn.slice(images, start=crop_start, rel_shape=[1.0, 1.0], axis_names="HW",
                      out_of_bounds_policy="pad", fill_values=0)
    # Cutout: the square takes the mean colour (~0 once normalised, as in DeVries & Taylor); erase
    # clips it at the borders. On uint8, before normalising: 20 % faster than on the float output.
    images = fn.erase(images, anchor=cutout_anchor, shape=[cutout, cutout], axis_names="HW",
                      fill_value=cutout_fill(mean))
    return normalise(images, mean, std, dtype, layout, mirror=flip)  # + horizontal flip


def cutout_fill(mean) -> list:
    """The mean colour as uint8 pixel values: what a cut-out square holds before normalisation."""
    return [round(255 * m) for m in mean]


@pipeline_def
def eval_pipeline(source: EvalSource, mean, std, dtype, layout, gpu):
    images = fn.external_source(source.image_batch, batch_info=True, layout="HWC",
                                device="gpu" if gpu else "cpu")
    labels = fn.external_source(source.label_batch, batch_info=True)
    return normalise(images, mean, std, dtype, layout), labels.gpu() if gpu else labels
