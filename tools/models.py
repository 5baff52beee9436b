"""List the registered models with their metadata.

    python tools/models.py                 # table on stdout
    python tools/models.py --markdown      # the README's model table
    python tools/models.py "shufflenet_v2_*"
"""
import argparse
import os
import sys

sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from mindshuffle.modelzoo import model_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    args = ap.parse_args(argv)
    text = model_table(args.pattern, markdown=args.markdown)
    if not text:
        print(f"error: no model matches {args.pattern!r}; try tools/models.py without a pattern", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
