"""A package's heavy names loaded on first use (PEP 562), so that a script parses its options, and refuses
a bad flag, before torch and DALI are imported (seconds each, more on a busy machine)."""
import importlib


def on_first_use(package: str, modules: dict):
    """The package's __getattr__: modules maps a submodule (".loop") to the names it provides; each is
    imported from it the first time it is asked for, then kept in the package as a plain attribute."""
    where = {name: module for module, names in modules.items() for name in names}

    def __getattr__(name: str):
        if name not in where:
            raise AttributeError(f"module {package!r} has no attribute {name!r}")
        value = getattr(importlib.import_module(where[name], package), name)
        setattr(importlib.import_module(package), name, value)
        return value
    return __getattr__
