"""The PyTorch side: (images, labels) tensors on the training device, one epoch per pass, len() batches."""
import os

import torch
from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from .dali import Decode, EvalSource, TrainSource, eval_pipeline, train_pipeline


class DaliLoader:
    """Wraps DALI's PyTorch iterator. Under DALI 2.x's default dynamic executor each batch is handed
    out zero-copy (DLPack) and owns its buffer: a tensor stays valid however many batches follow."""

    def __init__(self, pipeline, num_batches: int, channels_last: bool):
        self.num_batches, self.channels_last = num_batches, channels_last
        self.batch_size = pipeline.max_batch_size
        # PARTIAL: a short last batch is returned as it is, never padded or repeated.
        self.iterator = DALIGenericIterator(pipeline, ["images", "labels"], auto_reset=True,
                                            last_batch_policy=LastBatchPolicy.PARTIAL,
                                            prepare_first_batch=False)

    def __len__(self):
        return self.num_batches

    def __iter__(self):
        for out in self.iterator:
            images, labels = out[0]["images"], out[0]["labels"]
            # DALI emitted NHWC: viewed as NCHW it is channels-last memory, no transpose needed.
            yield (images.permute(0, 3, 1, 2) if self.channels_last else images), labels


def _build(pipeline_fn, source, batch_size, seed, device_id, mean, std, dtype, channels_last, decode,
           num_threads=None):
    """One of the pipelines, on the GPU device_id (None: DALI's CPU backend), wrapped for PyTorch."""
    pipe = graph(pipeline_fn, source, gpu=device_id is not None, device_id=device_id, batch_size=batch_size,
                 seed=seed, mean=mean, std=std, dtype=dtype, channels_last=channels_last, decode=decode,
                 num_threads=num_threads)
    return DaliLoader(pipe, len(source), channels_last)


def graph(pipeline_fn, source, *, gpu: bool, device_id, batch_size, seed, mean, std, dtype, channels_last,
          decode, num_threads=None):
    """The pipeline, not built: GPU operators when gpu. gpu with device_id None is a graph no machine can
    run but any can check (tests/test_dali_graphs.py serialises it). num_threads: DALI's CPU worker
    threads (default: the cores, at most 4)."""
    return pipeline_fn(source=source, mean=mean, std=std, dtype=dtype, gpu=gpu,
                       layout="HWC" if channels_last else "CHW", decode_as=decode, batch_size=batch_size,
                       num_threads=num_threads or min(4, os.cpu_count() or 1), device_id=device_id, seed=seed,
                       prefetch_queue_depth=2)


def train_loader(items, labels, *, mean, std, batch_size, seed, device_id=None,
                 dtype=torch.float32, channels_last=True, shard_id=0, num_shards=1,
                 start_epoch=0, start_step=0, decode: Decode | None = None, num_threads=None) -> DaliLoader:
    """Shuffled, augmented full batches; pass k over it is epoch start_epoch + k (resumed at start_step).
    items: uint8 N x H x W x 3 images, or file paths with decode."""
    source = TrainSource(items, labels, batch_size, seed, shard_id, num_shards,
                         start_epoch, start_step, device_id, decode)
    return _build(train_pipeline, source, batch_size, seed, device_id, mean, std, dtype, channels_last,
                  decode, num_threads)


def eval_loader(items, labels, *, mean, std, batch_size, device_id=None, dtype=torch.float32,
                channels_last=True, shard_id=0, num_shards=1, decode: Decode | None = None) -> DaliLoader:
    """Normalised only, in order; each item of this shard exactly once per pass."""
    source = EvalSource(items, labels, batch_size, shard_id, num_shards, device_id, decode)
    return _build(eval_pipeline, source, batch_size, 0, device_id, mean, std, dtype, channels_last, decode)
