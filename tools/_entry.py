"""What every script in tools/ shares: the package must be installed (``pip install -e .`` in the repository),
and the zoo commands run their ``mindshuffle.cli`` module, exactly as the installed ``mindshuffle-<verb>`` does."""
import importlib
import importlib.util
import sys

if importlib.util.find_spec("mindshuffle") is None:
    print("error: mindshuffle is not installed in this Python; run `pip install -e .` in the repository "
          "(README.md, Install)", file=sys.stderr)
    sys.exit(2)


def run(verb: str) -> None:
    """Run ``mindshuffle.cli.<verb>.main()`` with this script's arguments and exit with its code."""
    sys.exit(importlib.import_module(f"mindshuffle.cli.{verb}").main())
