"""What every command-line entry point shares: user mistakes become one line on stderr and exit 2."""
import argparse
import sys

from nets.checkpoint import CheckpointError
from pipeline import DataError


class UsageError(ValueError):
    """A flag value that cannot work (the message says which and what to do)."""


USER_ERRORS = (UsageError, DataError, CheckpointError)


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag is one line and exit 2 like every other user mistake."""

    def error(self, message):
        fail(f"{message} (see --help)")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(main):
    """Call main(); a user mistake prints `error: ...` (no traceback) and exits 2."""
    try:
        main()
    except USER_ERRORS as e:
        fail(str(e))
