"""Build a kit: what a GPU machine without network needs to run this project, for its Python and
platform, in parts that each fit one copy beside the repository. The kit carries DALI for the CUDA
major of the target's torch (the version requirements.txt pins) with its dependencies, grad-cam (a
source archive on PyPI: its pure-Python wheel is built here) with its own, and the CIFAR-10 JPEG
archive; not what the target already has (--target-has)."""
import json
import re
import shutil
import subprocess
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from common.cli import UserError, option
from common.tables import markdown

from . import cifar, fetch, parts, wheels
from .closure import closure
from .target import Target

ROOT = Path(__file__).resolve().parents[1]
MIB = 2 ** 20
COPY_LIMIT = 64 * MIB  # what one copy to the GPU machine carries, the repository included
HEADROOM = 2 * MIB     # for the repository's growth and untracked files travelling with it
# What the GPU machine has (its torch, torchvision, numpy, matplotlib, opencv, scipy, scikit-learn,
# tqdm) and what those require (Pillow and packaging by matplotlib, six by its python-dateutil,
# typing-extensions by torch): installed beside them, a second copy would shadow theirs.
TARGET_HAS = ("torch", "torchvision", "numpy", "pillow", "matplotlib", "opencv-python-headless", "scipy",
              "scikit-learn", "tqdm", "packaging", "six", "typing-extensions")


@dataclass(frozen=True)
class Options:
    data: str = option("", "the CIFAR-10 JPEG archive the kit carries (train/<class>/*.jpg, test/<class>/*.jpg)")
    out: str = option(".gpu-kit", "the kit's folder: parts/ (the kit), downloads/ (kept for the next build)")
    python: str = option("3.12", "the target's Python, major.minor")
    platform: str = option("manylinux_2_28_x86_64", "the target's wheel platform (older manylinux tags count too)")
    cuda: int = option(13, "the CUDA major of the target's torch (torch.version.cuda): DALI is built per major")
    source: str = option("index", "where the wheels come from: the package index, or the packages installed in "
                                  "this interpreter (a kit for this very Python, without network)",
                         choices=("index", "installed"))
    prune: bool = option(True, "leave out what no pipeline loads (offline/prune.py says what and why)")
    compression: str = option("xz", "xz (smallest), or none (fastest: tests)", choices=("xz", "none"))
    part_mib: float = option(0.0, "the size of a part in MiB (default: what fits a 64 MiB copy beside the repository)")
    target_has: str = option(",".join(TARGET_HAS), "what the target has already, comma-separated: not carried")


def build(o: Options) -> dict:
    """The kit in OUT/parts (parts, SHA256SUMS, kit.json); what kit.json says."""
    started = time.perf_counter()
    target, out = Target(o.python, o.platform), Path(o.out)
    if o.source == "installed" and o.python != Target.running().python:
        raise UserError(f"--source installed builds for this interpreter's Python "
                        f"({Target.running().python}), not --python {o.python}: use --source index")
    if not o.data:
        raise UserError("--data: give the CIFAR-10 JPEG archive (../shared/data/cifar10-jpeg.tar.xz)")
    if not re.fullmatch(r"3\.\d+", o.python):
        raise UserError(f"--python {o.python!r}: give the target's Python as major.minor, e.g. 3.12")
    part_bytes = int(o.part_mib * MIB) if o.part_mib > 0 else fitting_part()
    images = {split: len(items) for split, items in cifar.read(o.data).items()}  # a bad archive fails now
    downloads = out / "downloads" / f"{target.tag}-{target.platform}"  # reused by the next build for it
    source = fetch.installed if o.source == "installed" else fetch.downloader(downloads, target)
    dists, left = closure(roots(o.cuda), [n for n in o.target_has.split(",") if n.strip()], target, source)
    out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=out) as tmp:
        kit, new_parts = Path(tmp) / "kit", Path(tmp) / "parts"
        (kit / "wheels").mkdir(parents=True)
        new_parts.mkdir()
        written = [wheels.write(d, kit / "wheels", target, o.prune) for d in dists]
        shutil.copyfile(o.data, kit / Path(o.data).name)
        manifest = dict(target=asdict(target), pruned=o.prune, left_to_target=left,
                        wheels=[described(d, w) for d, w in zip(dists, written)],
                        data=dict(file=Path(o.data).name, bytes=Path(o.data).stat().st_size, images=images))
        (kit / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n")
        made = parts.write(kit, new_parts, part_bytes, o.compression)
        packed = {f"kit/{p.relative_to(kit).as_posix()}": p.stat().st_size for p in kit.rglob("*") if p.is_file()}
        if parts.listing(parts.verify(new_parts)) != packed:  # read back as the installer will
            raise RuntimeError(f"the parts in {new_parts} do not give back the kit that was packed")
        report = {**manifest, "compression": o.compression, "part_bytes": part_bytes,
                  "parts": [dict(file=name, bytes=size) for name, size in made],
                  "seconds": round(time.perf_counter() - started)}
        (new_parts / "kit.json").write_text(json.dumps(report, indent=2) + "\n")
        replace(new_parts, out / "parts")
    return report


def roots(cuda: int) -> list:
    """DALI for that CUDA major and grad-cam, at the versions requirements.txt pins."""
    pins = dict(re.findall(r"^([A-Za-z0-9_.-]+)==(\S+)", (ROOT / "requirements.txt").read_text(), re.MULTILINE))
    dali = next(v for name, v in pins.items() if re.fullmatch(r"nvidia-dali-cuda\d+0", name))
    return [f"nvidia-dali-cuda{cuda}0=={dali}", f"grad-cam=={pins['grad-cam']}"]


def fitting_part() -> int:
    """The largest part that fits one copy beside the repository (its tracked files, as a copy sends
    them), with some room to spare, in whole MiB."""
    try:
        files = subprocess.run(["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        raise UserError("cannot list the repository's files (git ls-files) to size the parts: "
                        "pass --part-mib") from None
    size = sum((ROOT / f).stat().st_size for f in files.decode().split("\0") if f and (ROOT / f).is_file())
    return (COPY_LIMIT - size - HEADROOM) // MIB * MIB


def described(dist, written: wheels.Written) -> dict:
    return dict(name=dist.name, version=dist.version, file=written.path.name,
                downloaded_bytes=Path(dist.origin).stat().st_size if dist.origin.endswith(".whl") else None,
                content_bytes=written.content, kept_bytes=written.kept, pruned_bytes=written.pruned)


def replace(new: Path, old: Path):
    """new takes old's place: a kit's parts are never a mix of two builds."""
    if old.exists():
        gone = old.with_name(old.name + ".old")
        shutil.rmtree(gone, ignore_errors=True)
        old.rename(gone)
        shutil.rmtree(gone)
    new.rename(old)


def summary(report: dict) -> str:
    """The kit's sizes, as a table, and its parts."""
    rows = [[w["name"], w["version"], mib(w["downloaded_bytes"]), mib(w["content_bytes"]), mib(w["kept_bytes"])]
            for w in report["wheels"]]
    rows.append(["(data) " + report["data"]["file"], "", mib(report["data"]["bytes"]), "", ""])
    total = [sum(w[k] or 0 for w in report["wheels"]) for k in ("downloaded_bytes", "content_bytes", "kept_bytes")]
    rows.append(["total", "", mib(total[0] + report["data"]["bytes"]), mib(total[1]), mib(total[2])])
    sizes = ", ".join(f"{p['file']} {mib(p['bytes'])}" for p in report["parts"])
    kit = sum(p["bytes"] for p in report["parts"])
    return (markdown(["package", "version", "wheel MiB", "unpacked MiB", "kept MiB"], rows)
            + f"\n\nkit ({report['compression']}): {mib(kit)} MiB in {len(report['parts'])} parts of at most "
              f"{mib(report['part_bytes'])} MiB: {sizes}\nleft to the target: "
            + "; ".join(f"{n} {', '.join(s)}" for n, s in sorted(report["left_to_target"].items())))


def mib(n) -> str:
    return "" if n is None else f"{n / MIB:.1f}"
