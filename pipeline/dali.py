"""DALI pipelines: training augmentation (padded crop, flip, cutout, normalise) and plain evaluation.

The pixel work runs in DALI, on the GPU when the BatchSpec's device is one and on DALI's CPU backend
otherwise. The images come in through external sources: uint8 arrays (CIFAR-10's store, resident in
GPU memory on a GPU) or the bytes of image files, decoded by DALI (nvJPEG on a GPU).
The random draws (order, crop offset, flip, cutout centre) are made by numpy from (seed, epoch) and
fed in beside the images: every epoch is a pure function of the seed, so `--resume` continues with the
same batches and draws (mid-epoch too, by starting at the step), one pipeline serves every epoch, and
every rank of a sharded run sees different draws.

On a GPU the uint8 set is resident once per device, shared by every loader made from the same array
(common.device.resident), and each epoch's order is uploaded once; a batch is gathered on the GPU.
"""
from typing import NamedTuple

import numpy as np
import torch
import nvidia.dali
from nvidia.dali import fn, pipeline_def, types

from common.device import resident

from .spec import CUTOUT, PAD, BatchSpec, cutout_fill, cutout_side

DALI_VERSION = nvidia.dali.__version__  # for reports: this package is DALI's only importer
DALI_DTYPE = {torch.float16: types.FLOAT16, torch.float32: types.FLOAT, None: types.FLOAT}  # None: float32


class Decode(NamedTuple):
    """Items are image files: decode them to image_size (resizing when some image is another size)."""
    image_size: int
    resize: bool


class TrainSource:
    """The training stream of spec's shard: batch `it` of epoch `start_epoch + epoch_idx`, as DALI asks.
    items: N x H x W x 3 uint8 images, or N file paths when decode is given."""

    def __init__(self, items, labels, spec: BatchSpec, start_epoch=0, start_step=0, decode: Decode | None = None):
        self.items, self.labels = _resident(items, spec, decode), np.asarray(labels)
        self.batch_size, self.seed, self.decode = spec.batch_size, spec.seed, decode
        self.image_size = decode.image_size if decode else items.shape[1]
        self.cutout = cutout_side(self.image_size)
        self.per_shard = len(labels) // spec.num_shards  # equal shards: every rank runs the same steps
        self.shard = slice(spec.shard_id * self.per_shard, (spec.shard_id + 1) * self.per_shard)
        self.start_epoch, self.start_step = start_epoch, start_step
        self._cached = (None, None)

    def __len__(self):  # full batches per epoch; the remainder is reshuffled into later epochs
        return self.per_shard // self.batch_size

    def draws(self, epoch: int) -> dict:
        """Order and augmentation of one epoch for this shard (shared permutation across shards)."""
        if self._cached[0] != epoch:
            n, size = len(self.labels), self.image_size
            rng = np.random.default_rng([self.seed, epoch])
            draws = dict(index=rng.permutation(n),
                         crop_start=rng.integers(-PAD, PAD + 1, (n, 2)).astype(np.int32),
                         flip=rng.integers(0, 2, n).astype(np.int32),
                         cutout_anchor=(rng.integers(0, size, (n, 2)) - self.cutout // 2).astype(np.float32))
            draws = {k: v[self.shard] for k, v in draws.items()}
            draws["rows"] = _where_items_are(draws["index"], self.items)  # one upload per epoch
            self._cached = (epoch, draws)
        return self._cached[1]

    def _batch(self, info) -> dict:
        step = info.iteration + (self.start_step if info.epoch_idx == 0 else 0)
        if step >= len(self):
            raise StopIteration  # DALI's end-of-epoch signal
        rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
        return {k: v[rows] for k, v in self.draws(self.start_epoch + info.epoch_idx).items()}

    def image_batch(self, info):
        return _gather(self.items, self._batch(info)["rows"])

    def param_batch(self, info):
        d = self._batch(info)
        return self.labels[d["index"]], d["crop_start"], d["flip"], d["cutout_anchor"]


class EvalSource:
    """Shard spec.shard_id of [0, N) in order, every index exactly once; the last batch may be short."""

    def __init__(self, items, labels, spec: BatchSpec, decode: Decode | None = None):
        n, shard, shards = len(labels), spec.shard_id, spec.num_shards
        self.index = np.arange(shard * n // shards, (shard + 1) * n // shards)
        self.items, self.labels = _resident(items, spec, decode), np.asarray(labels)
        self.rows = _where_items_are(self.index, self.items)
        self.batch_size, self.decode = spec.batch_size, decode

    def __len__(self):
        return -(-len(self.index) // self.batch_size)

    def _batch(self, info) -> slice:
        if info.iteration >= len(self):
            raise StopIteration
        return slice(info.iteration * self.batch_size, (info.iteration + 1) * self.batch_size)

    def image_batch(self, info):
        return _gather(self.items, self.rows[self._batch(info)])

    def label_batch(self, info):
        return self.labels[self.index[self._batch(info)]]


def _resident(items, spec: BatchSpec, decode):
    """On a GPU the uint8 set lives in device memory (150 MB for CIFAR-10), one copy per device for
    every loader of that array. Each batch is gathered there into a fresh tensor, which DALI copies into
    its own buffer. File paths stay on the host: DALI decodes their bytes."""
    if decode is not None:
        return np.asarray(items)
    gpu = spec.dali_device_id
    return items if gpu is None else resident(items, torch.device("cuda", gpu))


def _where_items_are(index: np.ndarray, items):
    """The index on the items' device (one upload, sliced per batch), or as it is for host items."""
    return torch.from_numpy(index).to(items.device) if isinstance(items, torch.Tensor) else index


def _gather(items, rows):
    """A batch: gathered where the images are (on the GPU for a resident set, rows already there), or
    the bytes of the files."""
    if isinstance(items, torch.Tensor) or items.dtype == np.uint8:
        return items[rows]
    return [np.fromfile(path, dtype=np.uint8) for path in items[rows]]  # encoded files


def decode(encoded, image_size: int, resize: bool, gpu: bool):
    """Encoded files -> uint8 HWC RGB (grey and RGBA images too); "mixed" decodes with nvJPEG."""
    images = fn.decoders.image(encoded, device="mixed" if gpu else "cpu", output_type=types.RGB)
    return fn.resize(images, size=[image_size, image_size]) if resize else images


def images_in(source, gpu: bool):
    """The source's images as uint8 HWC, on the GPU when gpu."""
    if source.decode is None:
        return fn.external_source(source.image_batch, batch_info=True, layout="HWC",
                                  device="gpu" if gpu else "cpu")
    encoded = fn.external_source(source.image_batch, batch_info=True)
    return decode(encoded, source.decode.image_size, source.decode.resize, gpu)


def normalise(images, spec: BatchSpec, mirror=None):
    """uint8 HWC -> (x/255 - mean)/std in spec's dtype and layout, in one fused DALI operator."""
    return fn.crop_mirror_normalize(images, mirror=0 if mirror is None else mirror,
                                    mean=[255 * m for m in spec.mean], std=[255 * s for s in spec.std],
                                    dtype=DALI_DTYPE[spec.dtype],
                                    output_layout="HWC" if spec.channels_last else "CHW")


@pipeline_def
def train_pipeline(source: TrainSource, spec: BatchSpec, gpu: bool):
    images = images_in(source, gpu)
    labels, crop_start, flip, cutout_anchor = fn.external_source(
        source.param_batch, num_outputs=4, batch_info=True)
    images = augment(images, crop_start, flip, cutout_anchor, spec, source.cutout)
    return images, labels.gpu() if gpu else labels


def augment(images, crop_start, flip, cutout_anchor, spec: BatchSpec, cutout=CUTOUT):
    """The training augmentation of uint8 HWC images, given each sample's random draws."""
    # Padded random crop: a window at offset -4..4 of the image, zeros where it leaves the image.
    images = fn.slice(images, start=crop_start, rel_shape=[1.0, 1.0], axis_names="HW",
                      out_of_bounds_policy="pad", fill_values=0)
    # Cutout: the square takes the mean colour; erase clips it at the borders. On uint8, before
    # normalising: 20 % faster than on the float output.
    images = fn.erase(images, anchor=cutout_anchor, shape=[cutout, cutout], axis_names="HW",
                      fill_value=cutout_fill(spec.mean))
    return normalise(images, spec, mirror=flip)  # + horizontal flip


@pipeline_def
def eval_pipeline(source: EvalSource, spec: BatchSpec, gpu: bool):
    images = images_in(source, gpu)
    labels = fn.external_source(source.label_batch, batch_info=True)
    return normalise(images, spec), labels.gpu() if gpu else labels
