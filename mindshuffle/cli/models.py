"""List the registered models with their metadata.

    python tools/models.py                 # table on stdout
    python tools/models.py --markdown      # the README's model table
    python tools/models.py "shufflenet_v2_*"
    python tools/models.py --weights [--markdown]   # the published pretrained weights (README's weights table)
"""
import argparse
import sys


from mindshuffle.modelzoo import model_table, weights_table  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("pattern", nargs="?", default="*", help="shell-style name pattern")
    ap.add_argument("--markdown", action="store_true", help="print a Markdown table")
    ap.add_argument("--weights", action="store_true",
                    help="list the published pretrained weights (pretrained=True / a tag) instead of the models")
    args = ap.parse_args(argv)
    text = (weights_table if args.weights else model_table)(args.pattern, markdown=args.markdown)
    if not text:
        what = "model with published weights" if args.weights else "model"
        print(f"error: no {what} matches {args.pattern!r}; try tools/models.py without a pattern", file=sys.stderr)
        return 2
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
