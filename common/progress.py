"""Progress bars with one rule for training and explaining: a widget in a Jupyter kernel (when
ipywidgets is there), a text bar on a terminal, nothing otherwise: a text bar's carriage returns would
litter log files and saved notebooks."""
import sys


def bar(iterable=None, *, enabled: bool = True, **tqdm_kw):
    """tqdm over iterable (or updated by hand with total=...), on stdout, gone when it ends."""
    from tqdm import tqdm as make
    if "ipykernel" in sys.modules:
        try:
            import ipywidgets  # noqa: F401  (tqdm's notebook bar draws with it)
            from tqdm.notebook import tqdm as make
        except ImportError:
            enabled = False
    elif not sys.stdout.isatty():
        enabled = False
    return make(iterable, leave=False, file=sys.stdout, disable=not enabled, **tqdm_kw)
