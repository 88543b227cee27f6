"""Where a kit's distributions come from: the package index (pip download for the target's Python and
platform, into a folder reused by the next build), or this interpreter's installed packages (a kit for
this very Python without the network: the tests, an offline rebuild)."""
import importlib.metadata as md
import subprocess
import sys
from pathlib import Path

from common.cli import UserError

from . import wheels
from .target import Target

PIP_TIMEOUT = 1800  # seconds for one pip call: DALI's wheel alone is about 200 MB


def installed(requirements: list) -> dict:
    """fetch() from this interpreter's packages."""
    from packaging.utils import canonicalize_name
    found = {}
    for req in requirements:
        try:
            found[canonicalize_name(req.name)] = wheels.from_installed(req.name)
        except md.PackageNotFoundError:
            raise UserError(f"{req.name} is not installed in {sys.prefix}: a kit from installed packages "
                            "needs every one it carries; build from the package index instead") from None
    return found


def downloader(folder: Path, target: Target):
    """fetch() from the package index, for target: each requirement's wheel (or its source archive,
    built here into a wheel when it is pure Python, as grad-cam's is) saved in folder."""
    def fetch(requirements: list) -> dict:
        from packaging.utils import canonicalize_name
        if not requirements:
            return {}
        folder.mkdir(parents=True, exist_ok=True)
        # --no-deps: the closure walks the metadata itself (and pip allows source archives with --platform
        # only then); --prefer-binary: a wheel for the target over a newer source archive.
        pip(["download", "--no-deps", "--prefer-binary", *target.pip_flags(), "-d", folder,
             *merged(requirements)])
        return {canonicalize_name(r.name): wheels.from_wheel(wheel_for(folder, r)) for r in requirements}
    return fetch


def merged(requirements: list) -> list:
    """One argument per name, every specifier asked for joined: pip download takes a name once."""
    from packaging.utils import canonicalize_name
    specs = {}
    for r in requirements:
        specs.setdefault(canonicalize_name(r.name), []).extend(str(s) for s in r.specifier)
    return [name + ",".join(s) for name, s in specs.items()]


def wheel_for(folder: Path, req) -> Path:
    """The newest file in folder that satisfies req, as a wheel (a pure-Python source archive is built)."""
    from packaging.utils import (InvalidSdistFilename, InvalidWheelFilename, canonicalize_name,
                                 parse_sdist_filename, parse_wheel_filename)
    candidates = []
    for path in folder.iterdir():
        try:
            name, version = (parse_wheel_filename(path.name)[:2] if path.suffix == ".whl"
                             else parse_sdist_filename(path.name))
        except (InvalidWheelFilename, InvalidSdistFilename):
            continue
        if name == canonicalize_name(req.name) and req.specifier.contains(version, prereleases=True):
            candidates.append((version, path.suffix == ".whl", path))
    if not candidates:
        raise UserError(f"pip saved nothing for {req} in {folder}: is the package index reachable?")
    version, is_wheel, path = max(candidates)
    return path if is_wheel else built(path, folder)


def built(sdist: Path, folder: Path) -> Path:
    from packaging.utils import parse_wheel_filename
    before = set(folder.glob("*.whl"))
    pip(["wheel", "--no-deps", "-w", folder, sdist])
    wheel = next(iter(set(folder.glob("*.whl")) - before))
    if any(t.platform != "any" for t in parse_wheel_filename(wheel.name)[3]):
        wheel.unlink()
        raise UserError(f"{sdist.name} has no wheel for the target and builds a platform wheel here "
                        f"({wheel.name}): build it on a machine like the target")
    return wheel


def pip(args: list):
    command = [sys.executable, "-m", "pip", "--disable-pip-version-check", *map(str, args)]
    print("$ pip " + " ".join(map(str, args)), flush=True)
    proc = subprocess.run(command, capture_output=True, text=True, timeout=PIP_TIMEOUT)
    if proc.returncode != 0:
        last = (proc.stderr.strip().splitlines() or ["no output"])[-1]
        raise UserError(f"pip {args[0]} failed ({last}): is the package index reachable from here?")
