"""The CIFAR-10 store and the DALI train/eval pipelines, on DALI's CPU backend."""
import pickle

import numpy as np
import pytest
import torch

from pipeline import MEAN, STD, BatchSpec, DataError, eval_loader, load_cifar10, open_dataset, train_loader
from pipeline.dali import CUTOUT, PAD, cutout_fill
from pipeline.cifar import STORE_NAME
from tests.conftest import CLASSES, fails, write_cifar


def read_pickles(root):
    def one(name):
        with open(root / "cifar-10-batches-py" / name, "rb") as f:
            return pickle.load(f, encoding="latin1")
    train = [one(f"data_batch_{i}") for i in range(1, 6)]
    test = one("test_batch")
    x = np.concatenate([b["data"] for b in train]).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    y = np.concatenate([b["labels"] for b in train])
    tx = test["data"].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
    return x, y, tx, np.array(test["labels"])


def test_store_equals_pickles_and_is_reused(cifar_dir):
    data = load_cifar10(cifar_dir, download=False)
    x, y, tx, ty = read_pickles(cifar_dir)
    assert data.train_images.shape == (500, 32, 32, 3) and data.train_images.dtype == np.uint8
    np.testing.assert_array_equal(data.train_images, x)
    np.testing.assert_array_equal(data.train_labels, y)
    np.testing.assert_array_equal(data.test_images, tx)
    np.testing.assert_array_equal(data.test_labels, ty)
    assert data.classes == tuple(CLASSES)
    assert not data.official  # synthetic files do not match the published MD5s
    # A second run reads only the store: the batch files may be gone.
    for f in (cifar_dir / "cifar-10-batches-py").iterdir():
        f.unlink()
    again = load_cifar10(cifar_dir, download=False)
    np.testing.assert_array_equal(again.train_images, x)
    assert again.classes == tuple(CLASSES)


def test_a_copy_off_the_published_checksums_is_noted_once_per_process(cifar_dir, tmp_path, capsys):
    """A notebook's find_lr then fit (two runs' set-ups in one process) print the note once, not twice."""
    from training import Config
    from training.setup import prepare
    from training.distributed import Process
    cpu = Process(rank=0, world=1, local_rank=0, device=torch.device("cpu"))
    for _ in range(2):
        prepare(Config(data_dir=str(cifar_dir), device="cpu", limit_train=20, limit_test=10), cpu)
    assert capsys.readouterr().err == (f"note: {cifar_dir} does not match the published CIFAR-10 checksums; "
                                       "using it as given\n")
    other = write_cifar(tmp_path / "other")  # another copy is another note
    assert "does not match" in open_dataset("cifar10", other).note and open_dataset("cifar10", other).note == ""


def cpu_spec(batch_size: int, mean=MEAN, std=STD, **kw) -> BatchSpec:
    """Batches for DALI's CPU backend (float32, channels-last unless kw says otherwise)."""
    return BatchSpec(mean, std, batch_size, torch.device("cpu"), **kw)


def images_of(loader):
    out = [(x.float().clone(), y.clone()) for x, y in loader]
    return torch.cat([x for x, _ in out]), torch.cat([y for _, y in out]), [len(y) for _, y in out]


def test_eval_pass_covers_each_image_once_in_order():
    n, batch = 1000, 128
    images = np.random.default_rng(0).integers(0, 256, (n, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(n, dtype=np.int64)  # label = index, so the order is visible
    loader = eval_loader(images, labels, cpu_spec(batch))
    assert len(loader) == 8
    for _ in range(2):  # restartable: the second pass is the same
        x, y, sizes = images_of(loader)
        assert sizes == [128] * 7 + [104]
        assert y.dtype == torch.int64 and y.tolist() == list(range(n))
        assert x.shape == (n, 3, 32, 32)
    # Normalisation constants, checked on untouched pixels.
    expected = (torch.from_numpy(images).float() / 255 - torch.tensor(MEAN)) / torch.tensor(STD)
    torch.testing.assert_close(x, expected.permute(0, 3, 1, 2), atol=1e-5, rtol=1e-5)


def test_eval_shards_partition_the_set():
    n = 1000
    labels = np.arange(n, dtype=np.int64)
    images = np.zeros((n, 32, 32, 3), np.uint8)
    seen = []
    for shard in range(3):
        loader = eval_loader(images, labels, cpu_spec(64, shard_id=shard, num_shards=3))
        seen += images_of(loader)[1].tolist()
    assert sorted(seen) == list(range(n))


def position_images(n):
    """n copies of an image whose pixels name their own position: R = 100 + row, G = 100 + col."""
    rows, cols = np.meshgrid(np.arange(32), np.arange(32), indexing="ij")
    image = np.stack([100 + rows, 100 + cols, np.full_like(rows, 50)], -1).astype(np.uint8)
    return np.repeat(image[None], n, 0)


def augmented(seed=1, n=512, batch=128, epoch=0):
    """Position images augmented by the training pipeline; returns raw R, G per output pixel (0 where
    padded, -1 where cut out)."""
    images = position_images(n)
    loader = train_loader(images, np.arange(n, dtype=np.int64), cpu_spec(batch, seed=seed, channels_last=False),
                          start_epoch=epoch)
    x, y, _ = images_of(loader)
    return raw_with_cutout(x, MEAN, STD), y


def raw_with_cutout(x, mean, std):
    """Raw R, G of normalised images, -1 where cut out: the cutout colour is the only pixel whose
    blue is the mean's (test images keep blue away from it)."""
    raw = torch.round((x * torch.tensor(std)[:, None, None] + torch.tensor(mean)[:, None, None]) * 255)
    cut = raw == torch.tensor(cutout_fill(mean), dtype=raw.dtype)[:, None, None]
    assert torch.equal(cut[:, 2], cut.all(1)), "a cut pixel holds the whole mean colour"
    return torch.where(cut[:, 2:], torch.full_like(raw, -1), raw)[:, :2]


def crop_flip_cutout(img):
    """(dy, dx, flipped, cutout mask) of one augmented image, read back from its pixel values."""
    r, g = img
    cut = r == -1
    inside = (r > 0) & ~cut
    i = int(inside.sum(1).argmax())  # the row with most image pixels (at least 12 of them)
    j = int(inside[i].nonzero()[0])
    dy = int(r[i, j]) - 100 - i
    flipped = bool((g[i][inside[i]].diff() < 0).all())  # columns run backwards after a mirror
    src_col = int(g[i, j]) - 100
    dx = src_col - (31 - j) if flipped else src_col - j
    return dy, dx, flipped, cut


def test_train_augmentation_crop_flip_cutout():
    n = 2048
    px, y = augmented(n=n, batch=256)
    assert px.shape == (n, 2, 32, 32) and sorted(y.tolist()) == list(range(n))
    assert_augmentation(px)


def assert_augmentation(px):
    """Raw R, G of augmented position images (from raw_with_cutout): every pixel is where a crop offset
    and a flip put it; each cutout is one clipped square; offsets, flips and cutout centres follow the
    training augmentation's distributions. Returns the count of each crop offset."""
    n = len(px)
    offsets, flips, full, clipped = {}, 0, 0, 0
    rr, cc = torch.meshgrid(torch.arange(32), torch.arange(32), indexing="ij")
    for img in px:
        dy, dx, flipped, cut = crop_flip_cutout(img)
        offsets[dy, dx] = offsets.get((dy, dx), 0) + 1
        flips += bool(flipped)
        # Every pixel is where the crop offset and the flip put it (or padding, or cutout).
        src_r, src_c = rr + dy, (31 - cc if flipped else cc) + dx
        in_image = (src_r >= 0) & (src_r < 32) & (src_c >= 0) & (src_c < 32)
        expect_r = torch.where(in_image, 100 + src_r, torch.zeros_like(src_r)).float()
        expect_g = torch.where(in_image, 100 + src_c, torch.zeros_like(src_c)).float()
        assert torch.equal(torch.where(cut, expect_r, img[0]), expect_r)
        assert torch.equal(torch.where(cut, expect_g, img[1]), expect_g)
        # Cutout: exactly one axis-aligned square, 16 x 16 or clipped at the border (>= 8 x 8).
        rows, cols = cut.any(1).nonzero().flatten(), cut.any(0).nonzero().flatten()
        assert cut.sum() == len(rows) * len(cols)
        assert rows.max() - rows.min() + 1 == len(rows) and cols.max() - cols.min() + 1 == len(cols)
        assert CUTOUT // 2 <= len(rows) <= CUTOUT and CUTOUT // 2 <= len(cols) <= CUTOUT
        full += len(rows) == len(cols) == CUTOUT
        clipped += len(rows) < CUTOUT or len(cols) < CUTOUT
    assert set(offsets) == {(a, b) for a in range(-PAD, PAD + 1) for b in range(-PAD, PAD + 1)}
    assert abs(flips / n - 0.5) < 4 * (0.25 / n) ** 0.5  # within 4 sigma of p = 0.5
    # Centre uniform over 32 x 32: a square fits whole only for centres in 8..24 in both axes.
    assert abs(full / n - (17 / 32) ** 2) < 0.05 and clipped > 0
    return offsets


def test_same_seed_same_batches_other_seed_or_epoch_differs():
    a, ya = augmented(seed=3, n=256)
    b, yb = augmented(seed=3, n=256)
    assert torch.equal(a, b) and torch.equal(ya, yb)
    c, yc = augmented(seed=4, n=256)
    assert not torch.equal(a, c) and not torch.equal(ya, yc)
    d, _ = augmented(seed=3, n=256, epoch=1)
    assert not torch.equal(a, d)


class PlantedCode:
    """Unpickling this runs code (creates a file): the batch reader must refuse it, not run it."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (open, (self.marker, "w"))


def damage(root, how):
    path = root / "cifar-10-batches-py" / "data_batch_3"
    if how == "truncated":
        path.write_bytes(path.read_bytes()[:5000])
    elif how == "wrong shape":
        with open(path, "wb") as f:
            pickle.dump({"data": np.zeros((10, 3000), np.uint8), "labels": [0] * 10}, f, protocol=2)
    elif how == "bad labels":
        with open(path, "wb") as f:
            pickle.dump({"data": np.zeros((10, 3072), np.uint8), "labels": [12] * 10}, f, protocol=2)
    elif how == "planted code":
        with open(path, "wb") as f:
            pickle.dump({"data": PlantedCode(root / "pwned"), "labels": []}, f, protocol=2)
    return path


@pytest.mark.parametrize("how, words", [
    ("truncated", "truncated or not a CIFAR-10 batch file"),
    ("wrong shape", "'data' must be N x 3072 uint8, found (10, 3000)"),
    ("bad labels", "'labels' must be 10 ints in [0, 10)"),
    ("planted code", "refused to load io.open"),
])
def test_broken_batch_file_is_named_and_nothing_is_written(cifar_dir, how, words):
    path = damage(cifar_dir, how)
    with pytest.raises(DataError) as e:
        load_cifar10(cifar_dir, download=False)
    assert str(path) in str(e.value) and words in str(e.value) and "delete" in str(e.value)
    assert sorted(p.name for p in cifar_dir.iterdir()) == ["cifar-10-batches-py"]  # no store, no temp
    assert not (cifar_dir / "pwned").exists()


def test_unreadable_store_says_to_delete_it(cifar_dir):
    load_cifar10(cifar_dir, download=False)
    store = cifar_dir / STORE_NAME
    store.write_bytes(store.read_bytes()[:1000])
    with pytest.raises(DataError, match="unreadable .*delete it to rebuild"):
        load_cifar10(cifar_dir, download=False)


def test_missing_dataset_with_download_off(tmp_path):
    with pytest.raises(DataError, match="CIFAR-10 not found in .* downloading is off: put "
                                        "cifar-10-python.tar.gz"):
        load_cifar10(tmp_path, download=False)


def test_broken_batch_through_train_py_exits_2_without_traceback(cifar_dir, tmp_path, capsys):
    import train
    damage(cifar_dir, "truncated")
    err = fails(train.main, ["--data-dir", cifar_dir, "--out", tmp_path / "run", "--device", "cpu"], capsys)
    assert "data_batch_3 is truncated" in err and not (tmp_path / "run").exists()


def test_dali_device_id_of_every_torch_device():
    """The one mapping from a torch device to DALI's device_id: a bare "cuda" is GPU 0, not the CPU."""
    def device_id(device):
        return BatchSpec(MEAN, STD, 8, torch.device(device)).dali_device_id
    assert device_id("cpu") is None
    assert device_id("cuda") == 0
    assert device_id("cuda:3") == 3


def test_loaders_share_one_resident_copy_and_upload_an_epochs_order_once(monkeypatch):
    """On a GPU (here the CPU stands in for it): the train, test and validation sources and a rebuilt
    train source (batch ramp) of one array hold one device copy, freed with the last of them; each
    epoch's order goes to the device once and every batch is gathered there by a slice of it."""
    import dataclasses
    import gc
    import types
    import weakref
    from common.device import resident
    from pipeline import dali
    devices = []
    monkeypatch.setattr(dali, "resident", lambda array, device: devices.append(device) or resident(array, "cpu"))
    images = np.random.default_rng(0).integers(0, 256, (200, 32, 32, 3), dtype=np.uint8)
    labels = np.arange(200)
    gpu = BatchSpec(MEAN, STD, 32, torch.device("cuda", 1))
    train = dali.TrainSource(images, labels, gpu)
    ramped = dali.TrainSource(images, labels, dataclasses.replace(gpu, batch_size=64), start_epoch=2)
    test = dali.EvalSource(images, labels, gpu)
    assert devices == [torch.device("cuda", 1)] * 3  # DALI's GPU
    assert isinstance(train.items, torch.Tensor) and train.items is ramped.items is test.items
    assert dali.TrainSource(images.copy(), labels, gpu).items is not train.items
    assert isinstance(test.rows, torch.Tensor)  # the eval order, uploaded once
    info = lambda step, epoch=0: types.SimpleNamespace(iteration=step, epoch_idx=epoch)  # noqa: E731
    rows = train.draws(0)["rows"]
    assert isinstance(rows, torch.Tensor)
    for step in range(6):
        index = train.param_batch(info(step))[0]  # labels = indices
        assert torch.equal(train.image_batch(info(step)), torch.from_numpy(images[index]))
        assert train.draws(0)["rows"] is rows  # one upload per epoch, not one per batch
    train.image_batch(info(0, epoch=1))
    later = train.draws(1)  # the next epoch's order, uploaded once
    assert later["rows"] is not rows and torch.equal(later["rows"], torch.from_numpy(later["index"]))
    copy = weakref.ref(train.items)
    del train, ramped, test
    gc.collect()
    assert copy() is None  # no cache keeps the device copy alive
