"""The PyTorch side: (images, labels) tensors on the training device, one epoch per pass, len() batches."""
import os

from nvidia.dali.plugin.pytorch import DALIGenericIterator, LastBatchPolicy

from .dali import Decode, EvalSource, TrainSource, eval_pipeline, train_pipeline
from .spec import BatchSpec


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


def pipeline_options(spec: BatchSpec, gpu: bool | None = None, num_threads=None) -> dict:
    """What a pipeline function takes beside its source and spec: GPU operators when gpu (None: when
    spec's device is a GPU), and DALI's Pipeline arguments. gpu with a CPU spec makes a graph no machine
    can run but any can check (tests/test_dali_graphs.py serialises it). num_threads: DALI's CPU worker
    threads (default: the cores, at most 4)."""
    device_id = spec.dali_device_id
    return dict(gpu=device_id is not None if gpu is None else gpu, batch_size=spec.batch_size,
                num_threads=num_threads or min(4, os.cpu_count() or 1), device_id=device_id, seed=spec.seed,
                prefetch_queue_depth=2)


def train_loader(items, labels, spec: BatchSpec, *, start_epoch=0, start_step=0, decode: Decode | None = None,
                 num_threads=None) -> DaliLoader:
    """Shuffled, augmented full batches; pass k over it is epoch start_epoch + k (resumed at start_step).
    items: uint8 N x H x W x 3 images, or file paths with decode."""
    source = TrainSource(items, labels, spec, start_epoch, start_step, decode)
    pipe = train_pipeline(source, spec, **pipeline_options(spec, num_threads=num_threads))
    return DaliLoader(pipe, len(source), spec.channels_last)


def eval_loader(items, labels, spec: BatchSpec, *, decode: Decode | None = None) -> DaliLoader:
    """Normalised only, in order; each item of this shard exactly once per pass. No draws: spec.seed
    changes nothing."""
    source = EvalSource(items, labels, spec, decode)
    return DaliLoader(eval_pipeline(source, spec, **pipeline_options(spec)), len(source), spec.channels_last)
