"""Image folders decoded by DALI (CPU backend): checks before training, eval coverage, training
determinism, resizing, and the augmentation draws; on real CIFAR-10 JPEGs where the archive is present."""
import dataclasses
import json
import os
import re
import shutil
import tarfile
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import train
import viz
from common import cli
from nets import checkpoint
from pipeline import DataError, eval_loader, open_dataset, open_folder, train_loader
from pipeline import folder as folder_module
from pipeline.dali import PAD
from tests.conftest import ARCHIVE, CLASSES, need_archive
from tests.test_pipeline import cpu_spec, crop_flip_cutout, images_of, raw_with_cutout

PER_CLASS = {"train": 20, "test": 10}


@pytest.fixture(scope="session")
def jpegs(tmp_path_factory):
    """The first 20 training and 10 test JPEGs of each class, streamed out of the real archive."""
    need_archive()
    root = tmp_path_factory.mktemp("cifar-jpeg")
    with tarfile.open(ARCHIVE, "r|xz") as tar:  # a stream: only the wanted members are written
        for member in tar:
            split, _, name = (member.name.split("/") + ["", ""])[:3]
            if member.isfile() and int(name.split(".")[0]) < PER_CLASS[split]:
                tar.extract(member, root, filter="data")
    return root


def open_(root, tmp_path, image_size=None):
    return open_folder(root, image_size, cache_dir=tmp_path / "cache")


def copy_of(src, dst, per_class=2):
    """A small folder: the first per_class images of each split's first two classes."""
    for split in ("train", "test"):
        for cls in CLASSES[:2]:
            (dst / split / cls).mkdir(parents=True)
            for f in sorted((src / split / cls).iterdir())[:per_class]:
                shutil.copy(f, dst / split / cls / f.name)
    return dst


def decoded(files):
    return torch.from_numpy(np.stack([np.asarray(Image.open(f).convert("RGB")) for f in files]))


def test_scan_classes_and_statistics(jpegs, tmp_path):
    data = open_(jpegs, tmp_path)
    assert data.classes == tuple(CLASSES)
    assert len(data.train_files) == 200 and len(data.test_files) == 100
    assert data.train_labels.tolist() == [y for y in range(10) for _ in range(20)]
    assert all(f.endswith(f"{CLASSES[y]}/{i % 20:04d}.jpg")
               for i, (f, y) in enumerate(zip(data.train_files, data.train_labels)))
    assert (data.image_size, data.resize) == (32, False)
    x = decoded(data.train_files).double() / 255  # PIL decodes these JPEGs as DALI does
    torch.testing.assert_close(torch.tensor(data.mean), x.mean((0, 1, 2)).float(), atol=1e-5, rtol=0)
    torch.testing.assert_close(torch.tensor(data.std), x.std((0, 1, 2), correction=0).float(),
                               atol=1e-5, rtol=0)


@contextmanager
def zeroed_unseen(path: Path):
    """The file's bytes zeroed meanwhile, its size and mtime kept: the cache's key cannot see the change
    and no decoder reads zeros, so an open that succeeds meanwhile took the file's facts from the cache."""
    original, stat = path.read_bytes(), path.stat()
    try:
        path.write_bytes(bytes(len(original)))
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))
        yield
    finally:
        path.write_bytes(original)
        os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


def test_statistics_are_cached_until_a_file_changes(jpegs, tmp_path):
    root = copy_of(jpegs, tmp_path / "data")
    first = open_(root, tmp_path)
    victim = root / "train" / CLASSES[0] / "0000.jpg"
    with zeroed_unseen(victim):
        again = open_(root, tmp_path)  # a cache hit: nothing decoded, or the zeros would be refused
    assert (again.mean, again.std, again.image_size) == (first.mean, first.std, first.image_size)
    assert sorted(root.iterdir()) == [root / "test", root / "train"]  # nothing written beside the images
    victim.write_bytes((root / "train" / CLASSES[1] / "0000.jpg").read_bytes())
    os.utime(victim, ns=(1, 1))
    changed = open_(root, tmp_path)
    assert changed.mean != first.mean  # measured again


@pytest.mark.parametrize("num_shards", [1, 3])
def test_eval_covers_every_test_file_once(jpegs, tmp_path, num_shards):
    data = open_(jpegs, tmp_path)
    index = np.arange(len(data.test_files))  # label = file index, so coverage and order are visible
    seen, pixels = [], []
    for shard in range(num_shards):
        spec = cpu_spec(16, data.mean, data.std, shard_id=shard, num_shards=num_shards)
        loader = eval_loader(data.test_files, index, spec, decode=data.decode)
        for _ in range(2):  # a second pass reads the same shard again
            x, y, sizes = images_of(loader)
            assert len(sizes) == len(loader) and all(s == 16 for s in sizes[:-1])
            assert y.dtype == torch.int64 and y.tolist() == sorted(y.tolist())
        seen += y.tolist()
        pixels.append(x)
    assert seen == index.tolist()  # 100 files, 16 per batch: 6 full batches and a short one
    mean, std = torch.tensor(data.mean)[:, None, None], torch.tensor(data.std)[:, None, None]
    expected = (decoded(data.test_files).permute(0, 3, 1, 2) / 255 - mean) / std
    torch.testing.assert_close(torch.cat(pixels), expected.float(), atol=1e-4, rtol=0)


def epoch_of(data, epoch=0, seed=0, start_step=0, shard_id=0, num_shards=1, batch_size=32):
    index = np.arange(len(data.train_files))
    spec = cpu_spec(batch_size, data.mean, data.std, seed=seed, shard_id=shard_id, num_shards=num_shards)
    loader = train_loader(data.train_files, index, spec, start_epoch=epoch, start_step=start_step,
                          decode=data.decode)
    return loader, images_of(loader)


def test_train_batches_are_a_function_of_seed_and_epoch(jpegs, tmp_path):
    data = open_(jpegs, tmp_path)
    loader, (x, y, sizes) = epoch_of(data)
    assert len(loader) == 6 and sizes == [32] * 6  # 200 // 32 full batches; the rest sits out
    assert x.shape == (192, 3, 32, 32) and x.dtype == torch.float32 and y.dtype == torch.int64
    assert len(set(y.tolist())) == 192
    again = epoch_of(data)[1]
    assert torch.equal(x, again[0]) and torch.equal(y, again[1])
    for other in (epoch_of(data, epoch=1)[1], epoch_of(data, seed=1)[1]):
        assert not torch.equal(y, other[1]) and not torch.equal(x, other[0])
    # Resuming inside the epoch continues it exactly; the pass after is the next epoch.
    resumed, (rx, ry, _) = epoch_of(data, start_step=4)
    assert torch.equal(rx, x[128:]) and torch.equal(ry, y[128:])
    assert torch.equal(images_of(resumed)[1], epoch_of(data, epoch=1)[1][1])


def test_train_shards_split_each_epoch(jpegs, tmp_path):
    data = open_(jpegs, tmp_path)
    parts = [epoch_of(data, shard_id=s, num_shards=3, batch_size=16)[1][1] for s in range(3)]
    assert [len(p) for p in parts] == [64] * 3  # 200 // 3 // 16 = 4 batches on every rank
    assert len(set(torch.cat(parts).tolist())) == 192


def write_png(path, array):
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.asarray(array, np.uint8)).save(path)


def test_every_image_format_and_file_name_is_read(tmp_path):
    """Each extension DALI decodes, in any case; grey, CMYK, RGBA, palette and 16-bit images; spaces and
    non-ASCII names. Other files are skipped with one note, hidden ones silently."""
    root, rgb = tmp_path / "data", smooth(1)
    images = {f"rgb{ext}": Image.fromarray(rgb) for ext in folder_module.IMAGE_EXTENSIONS}
    images |= {"UPPER.JPG": Image.fromarray(rgb), "Mixed.Png": Image.fromarray(rgb),
               "grey.png": Image.fromarray(rgb[..., 0]), "grey.jpg": Image.fromarray(rgb[..., 0]),
               "cmyk.jpg": Image.fromarray(rgb).convert("CMYK"),
               "palette.png": Image.fromarray(rgb).convert("P"),
               "rgba.png": Image.fromarray(np.dstack([rgb, rgb[..., :1]])),
               "sixteen bit.png": Image.fromarray(rgb[..., 1].astype(np.uint16) * 257 + 100),
               "café 猫 ñ.webp": Image.fromarray(rgb)}
    (root / "train" / "a" / ".git").mkdir(parents=True)
    for name, image in images.items():
        image.save(root / "train" / "a" / name, **({"lossless": True} if name.endswith(".webp") else {}))
    for name in ("README.txt", "labels.json", "Thumbs.db", "desktop.ini", ".DS_Store", ".git/x.jpg"):
        (root / "train" / "a" / name).write_text("not an image")
    write_png(root / "test" / "a" / "0.png", rgb)
    data = open_(root, tmp_path)
    assert sorted(os.path.basename(f) for f in data.train_files) == sorted(images)
    assert data.note == ("skipped 4 files that are not images: train/a/README.txt, train/a/Thumbs.db, "
                         "train/a/desktop.ini and 1 more")
    spec = cpu_spec(64, (0, 0, 0), (1, 1, 1), channels_last=False)
    x, _, _ = images_of(eval_loader(data.train_files, data.train_labels, spec, decode=data.decode))
    for f, got in zip(data.train_files, (x * 255).round().to(torch.uint8).permute(0, 2, 3, 1)):
        image = Image.open(f)  # PIL's decode (libjpeg-turbo too), but 16 bits are rounded as DALI does
        want = (np.round(np.asarray(image) / 257)[..., None].repeat(3, -1) if image.mode == "I;16"
                else np.asarray(image.convert("RGB")))
        assert np.abs(got.numpy().astype(int) - want).max() <= 1, f


def test_other_sizes_are_resized(tmp_path):
    colours = {"red": (200, 30, 40), "blue": (20, 60, 220)}
    for split in ("train", "test"):
        for cls, colour in colours.items():
            for i in range(3):
                write_png(tmp_path / "data" / split / cls / f"{i}.png", np.full((48, 48, 3), colour))
    write_png(tmp_path / "data" / "train" / "red" / "3.png", np.full((32, 32, 3), colours["red"]))
    with pytest.raises(DataError, match=r"must share one square size.*48x48.*: choose one to resize them "
                                        r"to \(--image-size\)$"):
        open_(tmp_path / "data", tmp_path)
    data = open_(tmp_path / "data", tmp_path, image_size=32)
    assert (data.image_size, data.resize) == (32, True)
    red, blue = torch.tensor(colours["red"]), torch.tensor(colours["blue"])
    torch.testing.assert_close(torch.tensor(data.mean), (4 * red + 3 * blue).float() / 7 / 255,
                               atol=1e-6, rtol=0)  # flat colours: resizing keeps them exactly
    spec = cpu_spec(4, (0, 0, 0), (1, 1, 1))
    x, y, _ = images_of(eval_loader(data.test_files, data.test_labels, spec, decode=data.decode))
    assert x.shape == (6, 3, 32, 32)
    expected = torch.tensor([colours[data.classes[i]] for i in y.tolist()]) / 255
    torch.testing.assert_close(x, expected[:, :, None, None].expand_as(x), atol=1e-6, rtol=0)
    x, _, _ = images_of(train_loader(data.train_files, data.train_labels, spec, decode=data.decode))
    assert x.shape == (4, 3, 32, 32)


def position_folder(tmp_path, size):
    """A folder of one PNG whose pixels name their position (R = 100 + row, G = 100 + col); blue is a
    checkerboard of 50 and 150, so the cutout colour (the mean, blue 100) is told apart."""
    rows, cols = np.meshgrid(np.arange(size), np.arange(size), indexing="ij")
    for split in ("train", "test"):
        write_png(tmp_path / "data" / split / "c" / "0.png",
                  np.stack([100 + rows, 100 + cols, 50 + 100 * ((rows + cols) % 2)], -1))
    return open_(tmp_path / "data", tmp_path)


def augmented(data, n, seed=0, epoch=0, shard_id=0, num_shards=1):
    """n augmented copies of data's one image: raw R, G per output pixel, -1 where cut out."""
    spec = cpu_spec(128, data.mean, data.std, seed=seed, shard_id=shard_id, num_shards=num_shards)
    loader = train_loader([data.train_files[0]] * n, np.arange(n), spec, start_epoch=epoch, decode=data.decode)
    x, _, _ = images_of(loader)
    return raw_with_cutout(x, data.mean, data.std)


def test_augmentation_draws_match_cifar(tmp_path):
    """Same distributions as dali.TrainSource: all 81 offsets, fair flips, a 16 px cutout anywhere."""
    draws = [crop_flip_cutout(img) for img in augmented(position_folder(tmp_path, 32), 1024)]
    assert {(dy, dx) for dy, dx, _, _ in draws} == {(a, b) for a in range(-PAD, PAD + 1)
                                                   for b in range(-PAD, PAD + 1)}
    assert abs(np.mean([f for _, _, f, _ in draws]) - 0.5) < 4 * (0.25 / len(draws)) ** 0.5
    sides = [(int(cut.any(1).sum()), int(cut.any(0).sum())) for _, _, _, cut in draws]
    assert max(sides) == (16, 16) and min(min(s) for s in sides) == 8


def test_draws_depend_on_seed_epoch_and_shard(tmp_path):
    """One image repeated: only the draws can differ, and each rank gets its own."""
    data = position_folder(tmp_path, 32)
    first = augmented(data, 256)
    assert torch.equal(first, augmented(data, 256))
    for other in (augmented(data, 256, seed=1), augmented(data, 256, epoch=1),
                  augmented(data, 512, shard_id=1, num_shards=2)):
        assert not torch.equal(first, other)


def test_cutout_scales_with_image_size(tmp_path):
    cut = augmented(position_folder(tmp_path, 64), 256)[:, 0] == -1
    sides = torch.stack([cut.any(2).sum(1), cut.any(1).sum(1)], 1)
    assert sides.max() == 32 and sides.min() == 16 and (cut.sum((1, 2)) == sides.prod(1)).all()


def smooth(seed, size=32):
    """A smooth random RGB image (JPEG keeps it close)."""
    rng = np.random.default_rng(seed)
    ramp = np.linspace(0, 1, size)
    low, high = rng.integers(0, 128, 3), rng.integers(128, 256, 3)
    return (low + (high - low) * (ramp[:, None, None] + ramp[None, :, None]) / 2).astype(np.uint8)


def small_folder(root, n_train=6, n_test=2, ext=".jpg"):
    """Two classes, n_train and n_test smooth 32 px images each."""
    for split, n in (("train", n_train), ("test", n_test)):
        for y, cls in enumerate(("a", "b")):
            for i in range(n):
                write_png(root / split / cls / f"{i}{ext}", smooth(100 * y + 10 * (split == "test") + i))
    return root


def break_some(root):
    """The usual ways an image file is broken, across classes and splits; returns them in scan order."""
    good = (root / "train" / "a" / "0.jpg").read_bytes()
    victims = {"train/a/1.jpg": b"", "train/a/2.jpg": good[:300], "train/a/3.jpg": b"not an image\n",
               "train/b/4.jpg": good[:len(good) // 2], "test/a/1.png": None}
    for name, data in victims.items():
        if data is None:  # a PNG without its last bytes: PIL decodes it, DALI refuses it
            (root / "test" / "a" / "1.jpg").unlink()
            write_png(root / name, smooth(7))
            data = (root / name).read_bytes()[:-2]
        (root / name).write_bytes(data)
    return [str(root / name) for name in victims]


def test_every_broken_file_is_reported_at_once_and_remembered(tmp_path, monkeypatch):
    # Small batches: the broken files fall in several batches, some two to a batch.
    monkeypatch.setattr(folder_module, "HEADER_BATCH", 4)
    monkeypatch.setattr(folder_module, "DECODE_BATCH", 4)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    root = small_folder(tmp_path / "data")
    bad = break_some(root)
    listing = sorted(root.rglob("*"))
    with pytest.raises(DataError) as error:
        open_folder(root)
    first = ", ".join(map(re.escape, bad[:3]))
    found = re.fullmatch(f"5 files cannot be read or decoded as images \\(truncated, corrupt or not image "
                         f"files\\): {first} and 2 more \\(all listed in (.+)\\): replace or remove them, "
                         "or pass --skip-bad-images to train without them", str(error.value))
    assert found, str(error.value)
    assert Path(found[1]).parent == tmp_path / "xdg" / "cifar-dali" / "folders"  # never the image folder
    assert Path(found[1]).read_text().splitlines() == bad and sorted(root.rglob("*")) == listing
    # What the inspection found is cached: neither the error again nor the run without them decodes.
    with zeroed_unseen(root / "train" / "b" / "0.jpg"):
        with pytest.raises(DataError, match="^5 files cannot"):
            open_dataset("imagefolder", root)
        data = open_dataset("imagefolder", root, skip_bad_images=True)
    (train_files, _), (test_files, _) = data.train, data.test
    assert data.bad_files == tuple(bad) and not set(bad) & (set(train_files) | set(test_files))
    assert (len(train_files), len(test_files)) == (12 - 4, 4 - 1)
    assert data.note == ("left out 5 images that cannot be decoded (--skip-bad-images): "
                         f"{', '.join(bad[:3])} and 2 more")
    x = decoded(train_files).double() / 255  # the statistics are the remaining images'
    torch.testing.assert_close(torch.tensor(data.mean), x.mean((0, 1, 2)).float(), atol=1e-5, rtol=0)
    # A class left with no image that decodes is refused, skipping or not.
    for f in (root / "train" / "b").iterdir():
        f.write_bytes(b"")
    emptied = re.escape(str(root / "train" / "b"))
    with pytest.raises(DataError, match=f"^{emptied} holds no image that can be decoded"):
        open_folder(root, skip_bad_images=True)


def test_one_broken_file_is_named_alone(tmp_path):
    root = small_folder(tmp_path / "data")
    (root / "train" / "b" / "2.jpg").write_text("not an image\n")
    with pytest.raises(DataError, match=f"^{re.escape(str(root / 'train' / 'b' / '2.jpg'))} cannot be read "
                                        "or decoded as an image .*: replace or remove it, or pass "
                                        "--skip-bad-images to train without it$"):
        open_(root, tmp_path)
    assert not list((tmp_path / "cache").glob("*.txt"))  # no list for one file


def test_a_jpeg_decoded_only_with_damage_reported_is_a_broken_file(tmp_path, capfd):
    """libjpeg-turbo decodes a JPEG whose entropy-coded data is damaged, printing "Corrupt JPEG data"
    at every decode (every epoch): the inspection, which reads the native log, finds it up front."""
    root = small_folder(tmp_path / "data")
    damaged = root / "train" / "b" / "3.jpg"
    data = bytearray(damaged.read_bytes())
    at = (data.find(b"\xff\xda") + len(data)) // 2  # in the scan, past its start-of-scan marker
    data[at:at + 4] = b"\xff\xd0\x00\xff"  # a restart marker where none belongs
    damaged.write_bytes(bytes(data))
    # DALI decodes it, and says so only on descriptor 2.
    rows, bad = folder_module._run_all(folder_module._stats_pipeline, [str(damaged)], 1, lambda: False,
                                       image_size=32, resize=False)
    assert len(rows[0]) == 1 and not bad and "Corrupt JPEG data" in capfd.readouterr().err
    with pytest.raises(DataError, match=f"^{re.escape(str(damaged))} cannot be read or decoded as an image"):
        open_(root, tmp_path)
    assert capfd.readouterr().err == ""


def test_dali_native_log_stays_off_the_terminal(tmp_path, capfd):
    """DALI's C++ side writes to descriptor 2 itself (Python's sys.stderr never sees it), so this is
    checked at the descriptor: the one error line, nothing else."""
    root = small_folder(tmp_path / "data")
    bad = break_some(root)
    # Without the inspection's redirection the same header reader does print.
    folder_module._run_all(folder_module._header_pipeline, bad[1:2], 1, lambda: False)
    assert "[jpeg_parser]" in capfd.readouterr().err
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: open_(root, tmp_path))
    err = capfd.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and err.startswith("error: 5 files cannot"), err


def test_empty_class_and_unknown_test_class(tmp_path):
    root = small_folder(tmp_path / "data")
    (root / "train" / "zebra" / ".hidden").mkdir(parents=True)
    with pytest.raises(DataError, match=f"^{re.escape(str(root / 'train' / 'zebra'))} holds no images"):
        open_(root, tmp_path)
    (root / "train" / "zebra" / "notes.txt").write_text("only words")  # not an image either
    (root / "train" / "zebra" / "clip.gif").write_bytes(b"GIF89a")  # DALI does not decode GIF
    with pytest.raises(DataError, match=f"^{re.escape(str(root / 'train' / 'zebra'))} holds no images"):
        open_(root, tmp_path)
    shutil.rmtree(root / "train" / "zebra")
    shutil.copytree(root / "test" / "a", root / "test" / "zebra")
    with pytest.raises(DataError, match="class 'zebra' has no folder in .*train"):
        open_(root, tmp_path)


def test_cli_refuses_a_broken_folder(tmp_path, capfd, monkeypatch):
    """At the descriptor: DALI's own log would come before the one line."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    root = small_folder(tmp_path / "data")
    break_some(root)
    (root / "train" / "a" / "README.txt").write_text("where these came from\n")
    run = tmp_path / "run"
    with pytest.raises(SystemExit) as exit_:
        cli.run(lambda: train.main(["--data", "imagefolder", "--data-dir", str(root), "--out", str(run),
                                    "--device", "cpu", "--epochs", "1"]))
    lines = capfd.readouterr().err.splitlines()
    assert exit_.value.code == 2 and lines[-1].startswith("error: 5 files cannot be read"), lines
    assert all(line.startswith("note: ") for line in lines[:-1]), lines
    assert not run.exists()


def test_cli_trains_on_real_jpegs_and_resized_pngs(jpegs, tmp_path, monkeypatch):
    """A short run on the real JPEG folder, then on 48 px PNGs resized to 32 (--image-size)."""
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    pngs = tmp_path / "pngs"
    rng = np.random.default_rng(0)
    for split, n in (("train", 8), ("test", 3)):
        for cls in ("cat", "dog"):
            (pngs / split / cls).mkdir(parents=True)
            for i in range(n):
                Image.fromarray(rng.integers(0, 256, (48, 48, 3), dtype=np.uint8)).save(
                    pngs / split / cls / f"{i}.png")
    for root, extra, n_test in ((jpegs, [], 100), (pngs, ["--image-size", "32"], 6)):
        run = tmp_path / f"run-{root.name}"
        train.main(["--data", "imagefolder", "--data-dir", str(root), "--out", str(run), "--device", "cpu",
                    "--epochs", "1", "--batch-size", "16", "--limit-train", "48", "--precision", "fp32",
                    "--scheduler", "none", *extra])
        state = checkpoint.load(run / "last.pt")
        assert state["history"][0]["test_count"] == n_test  # every test file once
        assert state["image_size"] == 32
        assert state["classes"] == (CLASSES if root == jpegs else ["cat", "dog"])
        # viz.py explains it from the checkpoint alone: classes, size and normalisation are stored.
        viz.main(["--checkpoint", str(run / "last.pt"), "--n", "2", "--method", "gradcam", "--device", "cpu",
                  "--faithfulness-images", "0"])  # the comparison: test_viz.py
        summary = json.loads((run / "viz" / "summary.json").read_text())
        assert summary["test_images"] == n_test and (run / "viz" / "gradcam.png").stat().st_size > 5000


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU (none visible)")
def test_gpu_decodes_and_resizes_the_same_files_as_the_cpu(tmp_path):
    """The image-folder path on a GPU: the "mixed" decoder (nvJPEG for JPEGs, the CPU for PNGs) and the
    resize on the device, against the CPU path on the same files and draws. nvJPEG's chroma upsampling
    differs from libjpeg-turbo's, so pixels agree within a few values, not exactly."""
    root = tmp_path / "data"
    for split, n in (("train", 16), ("test", 5)):
        for y, cls in enumerate(("a", "b")):
            for i in range(n):
                size, ext = (48, ".jpg") if i % 3 else (32, ".png")  # 4:2:0 JPEGs to resize, PNGs as they are
                write_png(root / split / cls / f"{i}{ext}", smooth(100 * y + i, size))
    data = open_(root, tmp_path, image_size=32)
    assert data.resize
    cpu = cpu_spec(8, (0, 0, 0), (1, 1, 1), channels_last=False, seed=3)
    gpu = dataclasses.replace(cpu, device=torch.device("cuda", 0))
    for make, items in ((eval_loader, data.test_files), (train_loader, data.train_files)):
        labels = np.arange(len(items))
        x_cpu, y_cpu, _ = images_of(make(items, labels, cpu, decode=data.decode))
        x_gpu, y_gpu, _ = images_of(make(items, labels, gpu, decode=data.decode))
        assert x_gpu.device.type == "cuda" and torch.equal(y_gpu.cpu(), y_cpu)
        diff = (x_gpu.cpu() - x_cpu).abs() * 255
        assert diff.max() <= 8 and diff.mean() <= 1, (diff.max(), diff.mean())
