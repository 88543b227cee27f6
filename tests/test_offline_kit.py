"""The offline kit and the CIFAR-10 converter, on the CPU without network. A kit is built from this
interpreter's own DALI, grad-cam and their dependencies (pruned, uncompressed for speed, cut into
parts), installed by the installer into a temporary folder and probed by a fresh interpreter that
sees torch but not the .venv's DALI; a missing part, a flipped byte and a killed install each leave
nothing half-installed. The converter turns a tiny JPEG archive into batch files that the project's
loader reads, and into image folders."""
import io
import json
import os
import pickle
import shutil
import signal
import subprocess
import sys
import sysconfig
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import offline
import pipeline
from common.cli import UserError
from tests.conftest import CLASSES, ROOT, SUBPROCESS_LIMIT

MIB = 2 ** 20


def jpeg(seed: int, size=32) -> bytes:
    pixels = np.random.default_rng(seed).integers(0, 256, (size, size, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", quality=90)
    return out.getvalue()


def write_archive(path, members: dict):
    """members: {name in the archive: bytes}, as a .tar.xz."""
    with tarfile.open(path, "w:xz") as tar:
        for name, data in members.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return path


def cifar_members(train=3, test=2, classes=CLASSES) -> dict:
    return {f"{split}/{cls}/{i:04d}.jpg": jpeg(hash((split, cls, i)) % 2 ** 32)
            for split, n in (("train", train), ("test", test)) for cls in classes for i in range(n)}


@pytest.fixture(scope="module")
def archive(tmp_path_factory):
    return write_archive(tmp_path_factory.mktemp("archive") / "cifar10-jpeg.tar.xz", cifar_members())


def offline_cli(*args, python=sys.executable) -> subprocess.CompletedProcess:
    return subprocess.run([python, "-m", "offline", *map(str, args)], cwd=ROOT, capture_output=True, text=True,
                          timeout=SUBPROCESS_LIMIT)


def one_error_line(proc) -> str:
    assert proc.returncode == 2, proc.stderr[-3000:]
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("error: "), proc.stderr[-3000:]
    return proc.stderr


# ------------------------------------------------------------------------------------ the converter
def test_converter_writes_batches_the_loader_reads_and_folders(archive, tmp_path):
    proc = offline_cli("convert", archive, tmp_path / "cifar", tmp_path / "folders")
    assert proc.returncode == 0, proc.stderr
    assert "30 training and 20 test images" in proc.stdout
    batches = tmp_path / "cifar" / "cifar-10-batches-py"
    assert sorted(p.name for p in batches.iterdir()) == [
        "batches.meta", *(f"data_batch_{k}" for k in range(1, 6)), "test_batch"]
    data = pipeline.open_dataset("cifar10", tmp_path / "cifar", download=False)
    assert data.classes == tuple(CLASSES) and "does not match the published" in data.note
    assert [len(x) for x, _ in (data.train, data.test)] == [30, 20]
    assert np.bincount(data.train[1]).tolist() == [3] * 10 and np.bincount(data.test[1]).tolist() == [2] * 10

    # Each row is the JPEG's decoded pixels under its own label, found back through its file name.
    with open(batches / "data_batch_1", "rb") as f:
        entry = pickle.load(f, encoding="latin1")
    members = cifar_members()
    for row, label, name in zip(entry["data"], entry["labels"], entry["filenames"]):
        cls, file = name.split("_", 1)
        assert CLASSES[label] == cls
        decoded = np.asarray(Image.open(io.BytesIO(members[f"train/{cls}/{file}"])).convert("RGB"))
        assert np.array_equal(row.reshape(3, 32, 32).transpose(1, 2, 0), decoded)
    assert len(set(entry["labels"])) > 1  # shuffled: a batch mixes the classes, as the published ones do

    folders = sorted(p.relative_to(tmp_path / "folders").as_posix() for p in (tmp_path / "folders").rglob("*.jpg"))
    assert folders == sorted(members)
    assert all((tmp_path / "folders" / name).read_bytes() == members[name] for name in members)
    assert not list(tmp_path.glob("**/.*partial*"))


@pytest.mark.parametrize("members, says", [
    ({"README": b"no images"}, "holds no images under train/<class>/ or test/<class>/"),
    (cifar_members(classes=["cat", "dog"]) | {"test/bird/0000.jpg": jpeg(1)},
     "the classes of train/ (cat, dog) and test/"),
    (cifar_members(classes=["cat"]) | {"train/cat/9999.jpg": b"not a jpeg"}, "train/cat/9999.jpg cannot be decoded"),
    (cifar_members(classes=["cat"]) | {"test/cat/big.jpg": jpeg(2, size=40)}, "test/cat/big.jpg is 40x40, not 32x32"),
])
def test_converter_refuses_a_bad_archive_and_writes_nothing(tmp_path, members, says):
    bad = write_archive(tmp_path / "bad.tar.xz", members)
    with pytest.raises(UserError, match="^" + str(bad)) as e:
        offline.convert(bad, tmp_path / "out", tmp_path / "folders")
    assert says in str(e.value)
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    assert not (tmp_path / "folders").exists()


def test_converter_bad_input_is_one_line_and_exit_2(archive, tmp_path):
    not_tar = tmp_path / "photo.tar.xz"
    not_tar.write_bytes(b"\xfd7zXZ\x00 garbage")
    assert "is not a readable tar archive" in one_error_line(offline_cli("convert", not_tar, tmp_path / "out"))
    assert "no such file" in one_error_line(offline_cli("convert", tmp_path / "none.tar.xz", tmp_path / "out"))
    (tmp_path / "out" / "cifar-10-batches-py").mkdir(parents=True)
    (tmp_path / "out" / "cifar-10-batches-py" / "mine").write_text("kept")
    assert "already exists: delete it" in one_error_line(offline_cli("convert", archive, tmp_path / "out"))
    assert (tmp_path / "out" / "cifar-10-batches-py" / "mine").read_text() == "kept"


# ------------------------------------------------------------------------------------------- the kit
@pytest.fixture(scope="module")
def kit(archive, tmp_path_factory):
    """A kit for this Python from its installed packages: pruned, uncompressed (for speed), in parts of
    the default size. Half a GB: deleted with the module's other big folders when it ends."""
    out = tmp_path_factory.mktemp("kit")
    report = offline.build(offline.Options(data=str(archive), out=str(out), python=offline.Target.running().python,
                                           source="installed", compression="none"))
    yield out / "parts", report
    shutil.rmtree(out)


@pytest.fixture(scope="module")
def python_without_dali(kit, tmp_path_factory):
    """An interpreter that sees this .venv's packages except the kit's (DALI, grad-cam and their
    dependencies): `python -S` (no site-packages) with a copy of site-packages made of links, the kit's
    files left out. So what the fresh interpreter imports from the kit cannot come from the .venv."""
    import importlib.metadata as md
    folder = tmp_path_factory.mktemp("without-dali")
    dists = [md.distribution(w["name"]) for w in kit[1]["wheels"]]
    kit_files = {Path(d.locate_file(f)).resolve() for d in dists for f in d.files}
    site = folder / "site-packages"
    mirror(Path(sysconfig.get_paths()["purelib"]), site, kit_files, {p for f in kit_files for p in f.parents})
    python = folder / "python"
    python.write_text(f'#!/bin/sh\nPYTHONPATH="${{PYTHONPATH:+$PYTHONPATH:}}{site}" exec {sys.executable} -S "$@"\n')
    python.chmod(0o755)
    return python


def mirror(source: Path, target: Path, leave_out: set, holding: set) -> bool:
    """target: links to source's entries, except the files in leave_out; a folder that holds some of
    them is made anew (recursively), and left out too when nothing else is in it. Whether target holds
    anything."""
    target.mkdir()
    for entry in source.iterdir():
        path = entry.resolve()
        if path in leave_out or entry.name == "__pycache__" and path in holding:
            continue
        if entry.is_dir() and path in holding:
            if not mirror(entry, target / entry.name, leave_out, holding):
                (target / entry.name).rmdir()
        else:
            (target / entry.name).symlink_to(path)
    return any(target.iterdir())


def install(kit_parts, dest, python, *extra):
    return offline_cli("install", kit_parts, dest, "--python", python, *extra)


@pytest.fixture(scope="module")
def killed_then_installed(kit, python_without_dali, tmp_path_factory):
    """The installer killed while it unpacks, then run again: (the folder, what the first run left, the
    second run)."""
    parts, _ = kit
    where = tmp_path_factory.mktemp("install")
    dest = where / "kit"
    first = subprocess.Popen([sys.executable, "-m", "offline", "install", parts, dest, "--python", python_without_dali],
                             cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, start_new_session=True)
    deadline = time.monotonic() + SUBPROCESS_LIMIT
    while not list(where.glob(".kit.partial-*/kit/wheels/*.whl")):  # unpacking has begun
        assert first.poll() is None and time.monotonic() < deadline, first.communicate()
        time.sleep(0.01)
    os.killpg(first.pid, signal.SIGKILL)
    first.communicate()
    left = sorted(p.name for p in where.iterdir())
    second = install(parts, dest, python_without_dali)
    yield dest, left, second
    shutil.rmtree(where)


def test_the_kit_is_pruned_and_each_part_fits_one_copy_beside_the_repository(kit):
    parts, report = kit
    names = [p["file"] for p in report["parts"]]
    assert sorted(p.name for p in parts.iterdir()) == sorted(names + ["SHA256SUMS", "kit.json"])
    tracked = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout.decode()
    repository = sum((ROOT / f).stat().st_size for f in tracked.split("\0") if f and (ROOT / f).is_file())
    assert report["part_bytes"] % MIB == 0 and report["part_bytes"] + repository <= 63 * MIB  # 1 MiB to spare
    assert [p["bytes"] for p in report["parts"]][:-1] == [report["part_bytes"]] * (len(names) - 1)
    sums = dict(reversed(line.split()) for line in (parts / "SHA256SUMS").read_text().splitlines())
    assert set(sums) == set(names) and all(len(d) == 64 for d in sums.values())

    wheels = {w["name"]: w for w in report["wheels"]}
    assert {"nvidia-dali-cuda130", "grad-cam", "ttach", "nvidia-nvimgcodec-cu13", "libcst"} <= set(wheels)
    assert not {"torch", "numpy", "pillow", "six"} & {n.lower() for n in wheels}  # the target has them
    dali = wheels["nvidia-dali-cuda130"]
    tag = offline.Target.running().tag
    assert dali["file"] == f"nvidia_dali_cuda130-{dali['version']}-{tag}-{tag}-manylinux_2_28_x86_64.whl"
    assert set(dali["pruned_bytes"]) == {"extension modules for other Pythons", "C/C++ headers",
                                         "DALI plugins for TensorFlow, JAX, Paddle, Numba, Triton"}
    assert dali["kept_bytes"] + sum(dali["pruned_bytes"].values()) == dali["content_bytes"]
    assert "<=1.17,>=1.16 (nvidia-dali-cuda130 2.4.0)" in report["left_to_target"]["six"]


def test_a_killed_install_leaves_nothing_and_the_next_run_starts_clean(killed_then_installed):
    dest, left, second = killed_then_installed
    assert len(left) == 1 and left[0].startswith(".kit.partial-")  # never the folder itself
    assert second.returncode == 0, second.stderr[-3000:]
    assert second.stdout.splitlines()[0] == f"removing {dest.parent / left[0]}, left by an interrupted install"
    assert sorted(p.name for p in dest.parent.iterdir()) == ["kit"]
    assert sorted(p.name for p in dest.iterdir()) == ["cifar", "installed.json", "site"]


def test_a_fresh_interpreter_runs_the_project_pipeline_from_the_kit_alone(killed_then_installed, python_without_dali):
    dest, _, second = killed_then_installed
    without = subprocess.run([python_without_dali, "-c", "import nvidia.dali"], capture_output=True, text=True)
    assert "No module named 'nvidia.dali'" in without.stderr  # the interpreter alone has no DALI
    probe = json.loads((dest / "installed.json").read_text())["probe"]
    assert probe["dali_path"] == "site/nvidia/dali/__init__.py" and probe["grad_cam_path"].startswith("site/")
    assert probe["batch"] == [30, 3, 32, 32]  # the training pipeline ran on DALI's CPU backend
    assert json.loads(second.stdout.splitlines()[-2]) == probe
    backends = sorted(p.name for p in (dest / "site" / "nvidia" / "dali").glob("backend_impl.*.so"))
    assert backends == [f"backend_impl.cpython-{offline.Target.running().tag[2:]}-x86_64-linux-gnu.so"]
    assert not (dest / "site" / "nvidia" / "dali" / "include").exists()


def test_the_installer_names_a_missing_or_damaged_part(kit, tmp_path):
    parts, report = kit
    names = [p["file"] for p in report["parts"]]
    broken = tmp_path / "parts"
    broken.mkdir()
    for name in [*names, "SHA256SUMS"]:
        os.link(parts / name, broken / name)
    (broken / names[1]).unlink()
    said = one_error_line(install(broken, tmp_path / "kit", sys.executable))
    assert said == f"error: kit part {names[1]} is missing from {broken}: copy it there and run again\n"

    shutil.copyfile(parts / names[1], broken / names[1])
    with open(broken / names[1], "r+b") as f:  # one flipped bit, mid-part
        f.seek(MIB)
        byte = f.read(1)
        f.seek(MIB)
        f.write(bytes([byte[0] ^ 1]))
    said = one_error_line(install(broken, tmp_path / "kit", sys.executable))
    assert said == (f"error: kit part {names[1]} is damaged in {broken} (SHA-256 differs from SHA256SUMS): "
                    "copy it again and run again\n")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["parts"]  # nothing installed, nothing begun


def test_the_installer_leaves_what_it_did_not_make(kit, killed_then_installed, tmp_path):
    parts, _ = kit
    dest, _, _ = killed_then_installed
    again = install(parts, dest, sys.executable)
    assert again.returncode == 0 and again.stdout.startswith(f"{dest} already holds this kit"), again.stderr
    (tmp_path / "kit").mkdir()
    (tmp_path / "kit" / "mine").write_text("kept")
    said = one_error_line(install(parts, tmp_path / "kit", sys.executable))
    assert "holds something else: move it away" in said and (tmp_path / "kit" / "mine").read_text() == "kept"


def test_bad_input_to_the_builder_and_the_installer_is_one_line_and_exit_2(archive, tmp_path):
    said = one_error_line(offline_cli("build", "--data", archive, "--python", "three", "--out", tmp_path / "kit"))
    assert "--python 'three': give the target's Python as major.minor" in said
    said = one_error_line(offline_cli("build", "--data", tmp_path / "none.tar.xz", "--out", tmp_path / "kit"))
    assert "none.tar.xz: no such file" in said
    said = one_error_line(offline_cli("install", tmp_path, tmp_path / "kit", "--python", "/no/such/python"))
    assert "--python /no/such/python: not an executable" in said
    said = one_error_line(offline_cli("install", tmp_path, tmp_path / "kit"))
    assert said == f"error: no SHA256SUMS in {tmp_path}: copy it there with the kit's parts\n"
    assert not (tmp_path / "kit").exists()


def test_a_kit_from_installed_packages_is_for_this_python_only(archive, tmp_path):
    with pytest.raises(UserError, match="--source installed builds for this interpreter's Python"):
        offline.build(offline.Options(data=str(archive), out=str(tmp_path), python="3.99", source="installed"))
