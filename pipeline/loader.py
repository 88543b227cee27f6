"""The PyTorch side: (images, labels) tensors on the training device, one epoch per pass, len() batches."""
import os

import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from .dali import EvalSource, TrainSource, eval_pipeline, train_pipeline


class DaliLoader:
    """Wraps DALI's PyTorch iterator. Tensors are DALI-owned buffers reused a few batches later:
    consume them in the step or `.clone()` them."""

    def __init__(self, pipeline, num_batches: int, channels_last: bool, reader_name=None):
        self.num_batches, self.channels_last = num_batches, channels_last
        # PARTIAL: a short last batch is returned as it is, never padded or repeated. A pipeline fed by
        # one of DALI's readers never ends by itself: reader_name makes the reader's shard one pass.
        self.iterator = DALIGenericIterator(pipeline, ["images", "labels"], auto_reset=True,
                                            last_batch_policy=LastBatchPolicy.PARTIAL,
                                            prepare_first_batch=False, reader_name=reader_name)

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for out in self.iterator:
            images, labels = out[0]["images"], out[0]["labels"]
            # DALI emitted NHWC: viewed as NCHW it is channels-last memory, no transpose needed.
            yield (images.permute(0, 3, 1, 2) if self.channels_last else images), labels


def make_pipeline(pipeline_fn, batch_size, seed, device_id, dtype, channels_last, **graph):
    """One of the pipelines above, on the GPU device_id (None: DALI's CPU backend)."""
    return pipeline_fn(**graph, dtype=dtype, gpu=device_id is not None,
                       layout="HWC" if channels_last else "CHW", batch_size=batch_size,
                       num_threads=min(4, os.cpu_count() or 1), device_id=device_id, seed=seed,
                       prefetch_queue_depth=2)


def _build(pipeline_fn, source, batch_size, seed, device_id, mean, std, dtype, channels_last):
    pipe = make_pipeline(pipeline_fn, batch_size, seed, device_id, dtype, channels_last,
                         source=source, mean=mean, std=std)
    return DaliLoader(pipe, len(source), channels_last)


def train_loader(images, labels, *, mean, std, batch_size, seed, device_id=None,
                 dtype=torch.float32, channels_last=True, shard_id=0, num_shards=1,
                 start_epoch=0, start_step=0) -> DaliLoader:
    """Shuffled, augmented full batches; pass k over it is epoch start_epoch + k (resumed at start_step)."""
    source = TrainSource(images, labels, batch_size, seed, shard_id, num_shards,
                         start_epoch, start_step, device_id)
    return _build(train_pipeline, source, batch_size, seed, device_id, mean, std, dtype, channels_last)


def eval_loader(images, labels, *, mean, std, batch_size, device_id=None, dtype=torch.float32,
                channels_last=True, shard_id=0, num_shards=1) -> DaliLoader:
    """Normalised only, in order; each image of this shard exactly once per pass."""
    source = EvalSource(images, labels, batch_size, shard_id, num_shards, device_id)
    return _build(eval_pipeline, source, batch_size, 0, device_id, mean, std, dtype, channels_last)
