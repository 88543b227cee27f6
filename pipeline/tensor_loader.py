"""The peer DALI has to beat: the whole uint8 training set resident on the device as one tensor, and
every batch augmented by a handful of whole-batch torch ops (the approach of the fastest CIFAR-10
scripts: airbench, KellerJordan's cifar10-loader). No DALI here, and no per-image Python.

Same augmentation as pipeline/dali.py, with the same distributions: padded random crop (81 offsets,
zeros outside the image), horizontal flip (p = 0.5), cutout 16x16 (on 32 px) whose centre is uniform over the
image, clipped at the borders and filled with round(255 * mean) on uint8 (~0 once normalised), then
(x/255 - mean)/std in the training dtype and layout. The draws come from a torch generator seeded by
(seed, epoch) on the device, so an epoch is a pure function of both (they are not DALI's numbers).
As a training loader (`--loader torch`) it does what the DALI one does: every rank of a sharded run takes
its own equal slice of one permutation per epoch, and a run resumes at (start_epoch, start_step).

Per batch, three steps do the pixel work:
  gather + crop + flip   one index_select of 32x32 windows from the padded, pre-mirrored store
  cutout                 x + square * (fill - x) on uint8 (wraps exactly: gives fill or x)
  normalise              to float, then one multiply and one add by constants tiled to the layout
"""
import numpy as np
import torch
import torch.nn.functional as F

from common.device import resident

from .spec import PAD, BatchSpec, cutout_fill, cutout_side


class TensorLoader:
    """Shuffled, augmented full batches of images (N x H x W x 3 uint8) and their int64 labels on
    spec.device, for spec's shard; pass k over it is epoch start_epoch + k, the first pass starting at
    batch start_step; len() is the number of full batches of a shard (the rest waits for a later
    epoch's shuffle). Batches are fresh tensors: they stay valid however many batches follow. The
    padded store is shared by every loader of the same images on the device."""

    def __init__(self, images: np.ndarray, labels, spec: BatchSpec, start_epoch=0, start_step=0):
        self.device, self.batch_size, self.seed = spec.device, spec.batch_size, spec.seed
        self.epoch, self.start_step = start_epoch, start_step
        self.dtype, self.channels_last = spec.dtype or torch.float32, spec.channels_last
        self.count, self.size = len(images), images.shape[1]
        self.per_shard = self.count // spec.num_shards  # equal shards: every rank runs the same steps
        self.shard = slice(spec.shard_id * self.per_shard, (spec.shard_id + 1) * self.per_shard)
        self.cutout = cutout_side(self.size)  # 16 on 32 px images, as in the DALI pipeline
        self.labels = torch.as_tensor(np.asarray(labels), dtype=torch.int64, device=self.device)
        self.windows = resident(images, self.device, _windows)
        self.scale, self.shift = _tiled_normalisation(spec.mean, spec.std, self.size, self.channels_last,
                                                      self.device)
        # The fill colour along one row of pixels (H W C order), to match a row of the uint8 batch.
        self.fill = torch.tensor(cutout_fill(spec.mean), dtype=torch.uint8, device=self.device).repeat(self.size)
        # The uint8 stages of a batch reuse their memory: on a CPU, fresh allocations cost ~8 % (page faults).
        self.scratch = torch.empty((3, self.batch_size, self.size, 3 * self.size), dtype=torch.uint8,
                                   device=self.device)

    def __len__(self):
        return self.per_shard // self.batch_size

    def __iter__(self):
        draws = self.draws(self.epoch)
        first, self.start_step = self.start_step, 0  # only the resumed epoch starts midway
        self.epoch += 1
        for step in range(first, len(self)):
            rows = slice(step * self.batch_size, (step + 1) * self.batch_size)
            yield self.augment(draws["start"][rows], draws["square_rows"][rows],
                               draws["square_cols"][rows]), draws["labels"][rows]

    def draws(self, epoch: int) -> dict:
        """One epoch's order and augmentation for this shard's images, as the indices the batches use:
        drawn for the whole set (one permutation shared by every rank), then sliced."""
        n, size, dev = self.count, self.size, self.device
        seed = int(np.random.SeedSequence([self.seed, epoch]).generate_state(1)[0])  # (seed, epoch) mixed
        g = torch.Generator(dev).manual_seed(seed)
        order = torch.randperm(n, generator=g, device=dev)
        offset = torch.randint(0, 2 * PAD + 1, (n, 2), generator=g, device=dev)  # 0..8: -4..4 shifted
        flip = torch.randint(0, 2, (n,), generator=g, device=dev)
        centre = torch.randint(0, size, (n, 2), generator=g, device=dev)
        side = size + 2 * PAD
        # Window of image i: stored as 2i (as is) or 2i + 1 (mirrored, where column x is side-1-x).
        column = torch.where(flip == 1, 2 * PAD - offset[:, 1], offset[:, 1])
        start = (2 * order + flip) * side * side + offset[:, 0] * side + column
        inside = torch.arange(size, device=dev)
        low = centre - self.cutout // 2  # the square: [low, low + cutout) in each axis, clipped
        square = ((inside >= low[:, :, None]) & (inside < low[:, :, None] + self.cutout)).to(torch.uint8)
        draws = dict(start=start, labels=self.labels[order], square_rows=square[:, 0],
                     square_cols=square[:, 1].repeat_interleave(3, dim=1))  # one entry per byte of a row
        return {k: v[self.shard] for k, v in draws.items()}

    def augment(self, start, square_rows, square_cols) -> torch.Tensor:
        """One batch from its draws; a fresh tensor in the training dtype and layout."""
        batch, size = len(start), self.size
        x, square, gap = self.scratch
        torch.index_select(self.windows, 0, start, out=x.view(batch, size, size, 3))
        torch.mul(square_rows[:, :, None], square_cols[:, None, :], out=square)  # 1 inside the cutout square
        x.addcmul_(square, torch.sub(self.fill, x, out=gap))  # uint8 arithmetic wraps: exactly fill or x
        if not self.channels_last:
            x = x.view(batch, size, size, 3).permute(0, 3, 1, 2).contiguous()  # planes: a uint8 copy
        x = x.reshape(batch, -1).float().mul_(self.scale).add_(self.shift).to(self.dtype)
        if self.channels_last:  # NHWC memory seen as NCHW: channels-last, no copy
            return x.view(batch, size, size, 3).permute(0, 3, 1, 2)
        return x.view(batch, 3, size, size)


def _windows(images: torch.Tensor) -> torch.Tensor:
    """Every size x size window of the zero-padded images and their mirror images, as one view: window p
    starts at pixel p of the flat store, so one index_select of B window numbers gathers, crops and
    flips a batch (rows of size*3 contiguous bytes). The mirrored copy doubles the store (2 x 240 MB
    for CIFAR-10) and saves a pass over every batch."""
    size = images.shape[1]
    padded = F.pad(images, (0, 0, PAD, PAD, PAD, PAD))
    store = torch.stack([padded, padded.flip(2)], 1).flatten(0, 1).contiguous()
    n, side = store.shape[:2]
    last = (n - 1) * side * side + 2 * PAD * (side + 1)  # the last window any draw can pick
    return store.as_strided((last + 1, size, size, 3), (3, 3 * side, 3, 1))


def _tiled_normalisation(mean, std, size: int, channels_last: bool, device) -> tuple:
    """(scale, shift) with x * scale + shift = (x/255 - mean)/std, one entry per value of a flattened
    image: a long contiguous inner dimension vectorises, a broadcast over 3 channels does not (7x)."""
    mean, std = torch.tensor(mean, dtype=torch.float32), torch.tensor(std, dtype=torch.float32)
    def tile(t):  # NHWC: the 3 values over and over; NCHW: each value for a whole plane
        return t.repeat(size * size) if channels_last else t.repeat_interleave(size * size)
    return tile(1 / (255 * std)).to(device), tile(-mean / std).to(device)
