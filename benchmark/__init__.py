"""bench.py's library: the loaders that compete (loaders), the stages (stages), timing and deadlines
(measure), the machine's load and the thread count (machine), what the figures allow one to say
(verdict), the training step's fast paths (fastpaths), the scaling sweep (scaling), the hardware's
limits (limits), the JSON and tables (report), bench.png (plot), and one run top to bottom (run).
Options are declared once, in options, and load without torch or DALI; the run loads on first use."""
from common.lazy import on_first_use

from .options import Options, parse

__getattr__ = on_first_use(__name__, {".run": ("bench",)})

__all__ = ["Options", "parse", "bench"]
