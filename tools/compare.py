"""Curves and summary rows of several training runs side by side.

    python tools/compare.py RUN_DIR RUN_DIR [...] [--out DIR] [--labels a,b]
"""
import argparse
import os
import sys

import _entry  # noqa: F401,E402  (one clear line when mindshuffle is not installed)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Compare mindshuffle runs: overlaid curves + summary table")
    ap.add_argument("run_dirs", nargs="+")
    ap.add_argument("--out", default="compare", help="output folder (default ./compare)")
    ap.add_argument("--labels", default="", help="comma-separated labels, one per run")
    args = ap.parse_args(argv)
    from mindshuffle.plots import have_matplotlib
    from mindshuffle.report import RunDataError, compare_runs
    labels = [s for s in args.labels.split(",") if s] or None
    if labels and len(labels) != len(args.run_dirs):
        print(f"error: --labels has {len(labels)} names for {len(args.run_dirs)} runs; give one per run",
              file=sys.stderr)
        return 2
    if not have_matplotlib():
        print("error: matplotlib is not installed; pip install 'mindshuffle[plots]'", file=sys.stderr)
        return 2
    try:
        res = compare_runs(args.run_dirs, args.out, labels)
    except RunDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"comparison: {res['report']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
