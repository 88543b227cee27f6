"""Install a kit on the target, all or nothing: check every part against SHA256SUMS, unpack into a
temporary folder beside DEST, install the wheels there (pip, --no-index --no-deps --target: nothing is
fetched or built; the target's own torch, numpy, Pillow... stay in use), convert the CIFAR-10 archive,
and probe the result in a fresh interpreter. Only then is the folder renamed to DEST. A run that was
killed leaves its temporary folder, which the next run deletes before it starts.

DEST/site holds the packages (put it on PYTHONPATH), DEST/cifar the data (--data-dir), DEST/cifar-folders
the same images as image folders when asked for, DEST/installed.json what was installed and the probe's
findings. Standard library only, and the project's converter (numpy, Pillow)."""
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from common.cli import UserError

from . import cifar, parts

ROOT = Path(__file__).resolve().parents[1]
RECORD = "installed.json"
STEP_TIMEOUT = 900  # seconds for pip or the probe: only a hung one gets near it


class Failed(Exception):
    """The kit is whole but did not install or run here (the message says what failed); DEST is untouched."""


def install(parts_dir, dest, python: str = sys.executable, folders: bool = False) -> dict:
    """The kit in parts_dir installed as dest; what installed.json records. Nothing happens to a dest
    that exists (it holds this kit already, or something else: refused), before any part is read."""
    parts_dir, dest = Path(parts_dir), Path(dest).absolute()
    if shutil.which(python) is None:
        raise UserError(f"--python {python}: not an executable; give the interpreter to install for")
    sums = parts_dir / parts.SUMS
    done = json.loads((dest / RECORD).read_text()) if (dest / RECORD).is_file() else {}
    if sums.is_file() and done.get("sums") == sums.read_text():
        print(f"{dest} already holds this kit", flush=True)
        return done
    if dest.exists():
        raise UserError(f"{dest} exists and holds something else: move it away or install into another folder")
    paths = parts.verify(parts_dir)
    for leftover in dest.parent.glob(f".{dest.name}.partial-*"):
        print(f"removing {leftover}, left by an interrupted install", flush=True)
        shutil.rmtree(leftover)
    dest.parent.mkdir(parents=True, exist_ok=True)
    stage = Path(tempfile.mkdtemp(prefix=f".{dest.name}.partial-", dir=dest.parent))
    try:
        record = build(paths, stage, python, folders)
        (stage / RECORD).write_text(json.dumps({**record, "sums": sums.read_text()}, indent=2) + "\n")
        stage.rename(dest)
    except BaseException:
        shutil.rmtree(stage, ignore_errors=True)
        raise
    return record


def build(paths: list, stage: Path, python: str, folders: bool) -> dict:
    """Everything the install makes, in stage."""
    parts.extract(paths, stage)
    kit = stage / "kit"
    manifest = json.loads((kit / "manifest.json").read_text())
    check_python(manifest, python)
    run([python, "-m", "pip", "install", "--no-index", "--no-deps", "--no-compile", "--no-cache-dir",
         "--disable-pip-version-check", "--quiet", "--target", stage / "site",
         *sorted((kit / "wheels").glob("*.whl"))], "pip install")
    images = cifar.convert(kit / manifest["data"]["file"], stage / "cifar",
                           stage / "cifar-folders" if folders else None)
    shutil.rmtree(kit)  # the wheels and the archive are installed and converted: only the results stay
    probe = json.loads(run([python, "-m", "offline.probe", stage / "cifar"], "the probe",
                           site=stage / "site").splitlines()[-1])
    for key in ("dali_path", "grad_cam_path"):
        if not Path(probe[key]).is_relative_to(stage / "site"):
            raise Failed(f"the probe imported {probe[key]}, not the kit's copy: remove that installation "
                         "from the interpreter's path, or install with another --python")
        probe[key] = str(Path(probe[key]).relative_to(stage))
    return {"target": manifest["target"], "wheels": [w["file"] for w in manifest["wheels"]], "images": images,
            "probe": probe}


def check_python(manifest: dict, python: str):
    version = subprocess.run([python, "-c", "import sys; print('%d.%d' % sys.version_info[:2])"],
                             capture_output=True, text=True).stdout.strip()
    wanted = manifest["target"]["python"]
    if version != wanted:
        raise UserError(f"this kit is for Python {wanted} and {python} is Python {version or '?'}: run the "
                        f"installer with that Python (--python), or build a kit with --python {version}")


def run(command: list, what: str, site: Path | None = None) -> str:
    """command's output; Failed with its last line if it fails. site: put first on the path."""
    env = dict(os.environ)
    if site:
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(site), str(ROOT), env.get("PYTHONPATH")]))
    proc = subprocess.run([str(c) for c in command], cwd=ROOT, env=env, capture_output=True, text=True,
                          timeout=STEP_TIMEOUT)
    if proc.returncode != 0:
        last = ((proc.stderr or proc.stdout).strip().splitlines() or ["no output"])[-1]
        raise Failed(f"{what} failed (exit {proc.returncode}): {last}")
    return proc.stdout
