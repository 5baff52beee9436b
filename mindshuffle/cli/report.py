"""Plots and a one-page report.md of a training run.

    python tools/report.py RUN_DIR [--out DIR]
"""
import argparse
import sys



def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description="Plots (PNG+SVG) and report.md of a mindshuffle run folder")
    ap.add_argument("run_dir")
    ap.add_argument("--out", default=None, help="folder for the plots (default RUN_DIR/report)")
    args = ap.parse_args(argv)
    from mindshuffle.plots import have_matplotlib
    from mindshuffle.report import RunDataError, make_report
    if not have_matplotlib():
        print("error: matplotlib is not installed; pip install 'mindshuffle[plots]'", file=sys.stderr)
        return 2
    try:
        res = make_report(args.run_dir, args.out)
    except RunDataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"report: {res['report']}")
    for p in res["plots"]:
        print(f"plot:   {p}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
