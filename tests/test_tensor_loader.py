"""The torch-ops loader (pipeline/tensor_loader.py), bench's peer and `--loader torch`'s training loader:
DALI's augmentation and distributions, dtype, layout, normalisation, epochs as a function of (seed,
epoch), exact resume, disjoint covering shards, open_dataset(loader="torch"). CPU only; the same code
runs on a GPU (tests/test_gpu.py)."""
import subprocess
import sys

import numpy as np
import pytest
import torch

import pipeline
from common.cli import UsageError
from pipeline import MEAN, STD
from pipeline.spec import PAD, cutout_fill
from pipeline.tensor_loader import TensorLoader
from tests.conftest import ROOT
from tests.test_pipeline import assert_augmentation, cpu_spec, images_of, position_images, raw_with_cutout


def loader(images, seed=1, batch=256, start_epoch=0, start_step=0, **kw):
    return TensorLoader(images, np.arange(len(images)), cpu_spec(batch, seed=seed, **kw), start_epoch, start_step)


def test_augmentation_is_dalis_crop_flip_cutout_with_its_distributions():
    n = 4096
    x, y, sizes = images_of(loader(position_images(n), batch=512))
    assert sizes == [512] * 8 and sorted(y.tolist()) == list(range(n))
    offsets = assert_augmentation(raw_with_cutout(x, MEAN, STD))  # the DALI pipeline's own checks
    # The 81 offsets roughly uniform: Pearson's chi-square with 80 degrees of freedom (mean 80, sd 12.6).
    expected = n / (2 * PAD + 1) ** 2
    assert sum((c - expected) ** 2 / expected for c in offsets.values()) < 80 + 5 * 12.6


@pytest.mark.parametrize("channels_last, dtype", [(True, torch.float32), (False, torch.float32),
                                                  (True, torch.float16)])
def test_dtype_layout_and_normalisation(channels_last, dtype):
    colour = (10, 200, 60)
    images = np.broadcast_to(np.array(colour, np.uint8), (300, 32, 32, 3)).copy()
    batches = list(loader(images, batch=128, channels_last=channels_last, dtype=dtype))
    assert len(batches) == 2  # full batches only: 44 images wait for another epoch
    x, y = batches[0]
    assert x.shape == (128, 3, 32, 32) and x.dtype == dtype and y.dtype == torch.int64
    assert x.is_contiguous(memory_format=torch.channels_last if channels_last else torch.contiguous_format)
    # Each value is the image's colour, the zero padding or the cutout's mean colour, normalised.
    raw = torch.tensor([colour, (0, 0, 0), cutout_fill(MEAN)], dtype=torch.float32)
    allowed = (raw / 255 - torch.tensor(MEAN)) / torch.tensor(STD)  # 3 values x 3 channels
    distance = (x.float()[:, :, None] - allowed.T.to(dtype).float()[None, :, :, None, None]).abs()
    assert distance.amin(2).max() < 1e-6  # (batch, channel, which value, row, column)
    kind = distance.argmin(2)
    assert (kind == kind[:, :1]).all()  # a pixel is one of the three in every channel
    assert (kind == 0).float().mean() > 0.5 and (kind == 1).any() and (kind == 2).any()


def test_epochs_are_a_function_of_seed_and_epoch():
    images = np.random.default_rng(0).integers(0, 256, (512, 32, 32, 3), dtype=np.uint8)
    run = loader(images, seed=3)
    first, second = images_of(run)[:2], images_of(run)[:2]
    again = images_of(loader(images, seed=3))[:2]
    resumed = images_of(loader(images, seed=3, start_epoch=1))[:2]
    other = images_of(loader(images, seed=4))[:2]
    assert all(torch.equal(a, b) for a, b in zip(first, again))
    assert all(torch.equal(a, b) for a, b in zip(second, resumed))
    assert not torch.equal(first[1], second[1]) and not torch.equal(first[0], second[0])
    assert not torch.equal(first[1], other[1])


def test_needs_no_dali():
    """The loader and what it imports never load DALI (here they could not: DALI is blocked). The package
    pipeline/ imports DALI for its other modules, so this loads the module without pipeline/__init__.py."""
    code = ("import sys, types; sys.modules['nvidia.dali'] = None\n"
            "sys.modules['pipeline'] = package = types.ModuleType('pipeline')\n"
            "package.__path__ = ['pipeline']\n"
            "import numpy as np\n"
            "import torch\n"
            "from pipeline.spec import BatchSpec\n"
            "from pipeline.tensor_loader import TensorLoader\n"
            "images = np.zeros((64, 32, 32, 3), np.uint8)\n"
            "spec = BatchSpec((0.5,) * 3, (0.25,) * 3, 32, torch.device('cpu'))\n"
            "x, y = next(iter(TensorLoader(images, np.arange(64), spec)))\n"
            "assert x.shape == (32, 3, 32, 32)\n"
            "assert not [m for m in sys.modules if m.startswith('nvidia.dali') and sys.modules[m]]")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr[-2000:]


def labels_and_pixels(loader):
    return [(y.clone(), x.clone()) for x, y in loader]


def test_a_resumed_epoch_is_the_tail_of_the_full_one():
    images = np.random.default_rng(1).integers(0, 256, (640, 32, 32, 3), dtype=np.uint8)
    run = loader(images, seed=5, batch=64)
    next(iter(run))  # epoch 0 (only started); the next pass is epoch 1
    full = labels_and_pixels(run)
    resumed = loader(images, seed=5, batch=64, start_epoch=1, start_step=7)
    assert len(resumed) == len(full) == 10
    tail = labels_and_pixels(resumed)
    assert len(tail) == 3 and all(torch.equal(a, b) and torch.equal(c, d) for (a, c), (b, d) in zip(tail, full[7:]))
    # The pass after the resumed one is a whole epoch again: epoch 2, as the uninterrupted run's.
    assert all(torch.equal(a[0], b[0]) for a, b in zip(labels_and_pixels(resumed), labels_and_pixels(run)))


def test_shards_take_disjoint_equal_slices_of_one_permutation():
    n, shards, batch = 1000, 3, 37  # 333 images = 9 batches per shard; 1 image waits for a later epoch
    images = np.zeros((n, 32, 32, 3), np.uint8)
    seen = []
    for shard in range(shards):
        run = loader(images, seed=2, batch=batch, shard_id=shard, num_shards=shards)
        assert len(run) == 9  # every rank the same number of steps
        seen.append(torch.cat([y for _, y in run]).tolist())
    flat = sum(seen, [])
    assert len(flat) == len(set(flat)) == 999  # disjoint, and together all but the remainder
    whole = torch.cat([y for _, y in loader(images, seed=2, batch=333)]).tolist()  # one shard's worth a batch
    assert seen == [whole[i * 333:(i + 1) * 333] for i in range(shards)]  # slices of one permutation


def test_open_dataset_trains_from_it_with_the_dali_loaders_spec(cifar_dir):
    data = pipeline.open_dataset("cifar10", cifar_dir, download=False, loader="torch")
    spec = cpu_spec(100, mean=data.mean, std=data.std, shard_id=1, num_shards=2)
    run = data.train_loader(data.train, spec, start_epoch=3, start_step=1)
    assert isinstance(run, TensorLoader) and run.batch_size == 100 and len(run) == 250 // 100
    batches = list(run)
    assert len(batches) == 1 and batches[0][0].shape == (100, 3, 32, 32) and batches[0][1].dtype == torch.int64
    assert isinstance(data.eval_loader(data.test, spec), pipeline.DaliLoader)  # evaluation stays DALI's
    with pytest.raises(UsageError, match="--loader torch trains on CIFAR-10 only .*: use --loader dali"):
        pipeline.open_dataset("imagefolder", cifar_dir, loader="torch")
