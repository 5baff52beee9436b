"""The command lines: one module per verb, each with ``main(argv=None) -> exit code``.

Installed, each is a console command (``mindshuffle-train``, ``mindshuffle-validate``, ...) and a verb of
``mindshuffle <verb>``; in a checkout, ``python tools/<verb>.py`` runs the same ``main``. Bad input ends a
command with one line on stderr and exit code 2.
"""
import importlib
import sys

VERBS = {
    "train": "train a recipe (standalone or under msrun)",
    "validate": "top-1/top-5, per-class accuracy and confusion matrix of a checkpoint",
    "infer": "classify images with a checkpoint",
    "export": "export a checkpoint to MindIR or ONNX",
    "convert": "convert PyTorch (torchvision, Megvii) weights to a MindSpore checkpoint",
    "models": "list the registered models",
    "report": "plots and report.md of a run folder",
    "average": "average checkpoints (the k best or last epochs of a run) into one",
}

__all__ = ["VERBS", "main"]


def _usage() -> str:
    rows = "\n".join(f"  {verb:<9} {text}" for verb, text in VERBS.items())
    return f"usage: mindshuffle <command> [arguments]   (mindshuffle <command> --help)\n\ncommands:\n{rows}"


def main(argv=None) -> int:
    """``mindshuffle <verb> ...``: run that verb's ``main`` with the rest of the arguments."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(_usage())
        return 0 if argv else 2
    verb = argv.pop(0)
    if verb not in VERBS:
        print(f"error: unknown command {verb!r}; one of: {', '.join(VERBS)}", file=sys.stderr)
        return 2
    return importlib.import_module(f"{__name__}.{verb}").main(argv)
