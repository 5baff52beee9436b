"""The command modules as tests call them in-process: ``mindshuffle.cli.<verb>`` for the zoo commands, the
script ``tools/<name>.py`` for the others (with tools/ on sys.path, as when Python runs a script there)."""
import importlib
import importlib.util
import os
import sys

from mindshuffle.cli import VERBS

TOOLS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "tools")


def tool(name: str):
    """The module whose ``main(argv)`` runs command ``name``."""
    if name in VERBS:
        return importlib.import_module(f"mindshuffle.cli.{name}")
    if TOOLS not in sys.path:
        sys.path.insert(0, TOOLS)
    spec = importlib.util.spec_from_file_location(f"tool_{name}", os.path.join(TOOLS, f"{name}.py"))
    mod = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(mod)
    return mod
