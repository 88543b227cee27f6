"""User mistakes become one line on stderr and exit code 2; options are declared once, on a dataclass."""
import argparse
import contextvars
import dataclasses
import sys

# True while run() runs a script's main: a message then names an option as its flag; from Python (a
# notebook building a Config) it names the field. spelled() is the one place that decides.
_COMMAND_LINE = contextvars.ContextVar("command_line", default=False)


class UserError(ValueError):
    """Something the user can fix (a flag, a file, the data); the message says what and how."""


class UsageError(UserError):
    """A flag value that cannot work."""


class Stopped(Exception):
    """A run stopped early on a signal, after saving what it had (the message says how to go on); a
    script exits 128 + the signal's number, as a shell expects."""

    def __init__(self, message: str, signum: int):
        super().__init__(message)
        self.code = 128 + signum


class Incomplete(Exception):
    """A run that could not finish but kept what it had measured (the message says where); a script
    exits 1: not the user's mistake, and not a crash either."""


class Parser(argparse.ArgumentParser):
    """argparse, but a bad flag raises UsageError like every other user mistake: one line and exit 2
    under run(), an exception for a caller that parses a command line itself (a sweep's train.py options)."""

    def error(self, message):
        raise UsageError(f"{message} (see --help)")


def fail(message: str, code: int = 2):
    print(f"error: {message}", file=sys.stderr, flush=True)
    sys.exit(code)


def run(main):
    """Call main(); a user mistake prints `error: ...` (no traceback) and exits 2; a run stopped by a
    signal says how to resume and exits 128 + the signal; one that could not finish exits 1. Library
    code raises, never exits: a notebook sees the same message as an exception."""
    speaking = _COMMAND_LINE.set(True)
    try:
        main()
    except UserError as e:
        fail(str(e))
    except Incomplete as e:
        fail(str(e), code=1)
    except Stopped as e:
        print(e, flush=True)
        sys.exit(e.code)
    finally:
        _COMMAND_LINE.reset(speaking)


def spelled(field: str, value=None) -> str:
    """An option as its reader gives it: `--find-lr-steps 100` to a script's user (under run()),
    `find_lr_steps=100` to Python code such as a notebook's Config(...); value None: the name alone."""
    if _COMMAND_LINE.get():
        name = f"--{field.replace('_', '-')}"
        return name if value is None else f"{name} {value}"
    return f"{field}=" if value is None else f"{field}={value!r}"


def option(default, help=None, **argparse_kw):
    """A dataclass field that is also a command-line option: help text and argparse keywords
    (choices, type, metavar) live beside the default. help=None: a field with no flag."""
    return dataclasses.field(default=default, metadata={"help": help, **argparse_kw})


def check_choices(options):
    """For a dataclass built in Python: every field declared with choices holds one of them (argparse
    checks the command line's; the message is the one it would give, as one line)."""
    for f in dataclasses.fields(options):
        choices, value = f.metadata.get("choices"), getattr(options, f.name)
        if choices is not None and value not in choices:
            raise UsageError(f"--{f.name.replace('_', '-')} {value!r}: choose from {', '.join(map(str, choices))}")


def add_options(parser: argparse.ArgumentParser, cls):
    """One --flag per field of the dataclass cls that has help; the default is shown, not repeated.
    Booleans get --x/--no-x. With argument_default=SUPPRESS the parsed namespace holds only the
    flags that were given."""
    for f in dataclasses.fields(cls):
        kw = dict(f.metadata)
        text = kw.pop("help", None)
        if text is None:
            continue
        if f.type in (bool, "bool"):
            kw.setdefault("action", argparse.BooleanOptionalAction)
            shown = "on" if f.default else "off"
        else:
            kw.setdefault("type", {"int": int, "float": float, "str": str}.get(f.type, f.type))
            shown = f.default
        # A help text that explains its own default, or an empty default, shows nothing more.
        help_text = text if "default" in text or f.default == "" else f"{text} (default {shown})"
        parser.add_argument(f"--{f.name.replace('_', '-')}", help=help_text, **kw)


def parse(cls, argv, description: str = "") -> dict:
    """The options of the dataclass cls given in argv, by field name; flags not given are absent (so
    the defaults stay the dataclass's, or a checkpoint's). The scripts' one parser."""
    parser = Parser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter,
                    argument_default=argparse.SUPPRESS)
    add_options(parser, cls)
    return vars(parser.parse_args(argv))
