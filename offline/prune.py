"""What a kit leaves out of the wheels it carries: only files that no pipeline of this project can load,
on the CPU or on a GPU. What a CPU process maps is not the test: the GPU paths (nvJPEG's "mixed"
decoding through nvImageCodec and its extensions, nvCOMP, the CUDA kernels in libdali_operators and the
libraries in nvidia/dali/.libs, all of which libdali_operators needs at load time) load more. So every
library stays; what goes is listed below, each with the reason it cannot be loaded."""
import re

from .target import Target

# A CPython extension module: name.cpython-312-x86_64-linux-gnu.so (cpython-313t: free-threaded).
EXTENSION = re.compile(r"\.cpython-(\d+t?)-[^/]+\.so$")

RULES = (
    # The wheels of DALI and nvImageCodec are one file for every Python from 3.9 to 3.15t, with an
    # extension module (backend_impl, python_function_plugin, nvimgcodec_impl) per version: the import
    # system loads only the one whose tag matches the running interpreter.
    ("extension modules for other Pythons",
     lambda path, target: bool((m := EXTENSION.search(path)) and m.group(1) != target.tag[2:])),
    # C/C++ headers (DALI's include/ alone is 1,000 files with Boost): read when compiling against the
    # library (a custom operator), never at run time. The __init__.py beside them stays: it is a module.
    ("C/C++ headers",
     lambda path, target: bool(re.match(r"nvidia/[^/]+/include/", path)) and not path.endswith("__init__.py")),
    # DALI's plugins for other frameworks: the project's pipelines reach PyTorch through
    # nvidia.dali.plugin.pytorch only, and DALI imports a plugin only when it is imported by name.
    ("DALI plugins for TensorFlow, JAX, Paddle, Numba, Triton",
     lambda path, target: bool(re.match(r"nvidia/dali/plugin/(tf|jax|paddle|numba|triton)(\.py$|/)", path))),
    # nvCOMP's command-line tool (nvlzcat): an executable, not a library; DALI loads lib64/ only.
    ("nvCOMP's command-line tool",
     lambda path, target: path.startswith("nvidia/libnvcomp/bin/")),
)


def reason(path: str, target: Target) -> str | None:
    """Why the file at this path inside a wheel is left out of a kit for target, or None: it stays."""
    return next((why for why, applies in RULES if applies(path, target)), None)
