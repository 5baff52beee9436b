"""Run the paper's guideline experiments G1-G4 on this device and print paper-shaped tables.

    python tools/guidelines.py                          # all four, CPU-sized defaults, batch 8, 56x56 maps
    python tools/guidelines.py --experiments G1,G4 --repeats 10
    python tools/guidelines.py --gpu-widths             # the paper's GPU-column widths (slow on a CPU)
    python tools/guidelines.py --widths G2=96,192,384   # own base widths (checked for equal FLOPs)

Writes <out-dir>/guidelines.csv (one row per setting) and <out-dir>/guidelines.md (the tables); <out-dir> is a
new runs/guidelines-<date>-<time> unless given. Existing files are never replaced without --overwrite (the
committed results: --out-dir bench/results --overwrite).
"""
import argparse
import csv
import io
import os
import sys
import time

os.environ.setdefault("GLOG_v", "3")
import _entry  # noqa: F401,E402  (one clear line when mindshuffle is not installed)


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _parse_widths(items, experiments):
    out = {}
    for item in items or ():
        key, _, val = item.partition("=")
        key = key.strip().upper()
        if key not in experiments or not val:
            raise ValueError(f"--widths {item!r}: expected e.g. G2=68,136,272 for one of {', '.join(experiments)}")
        try:
            ws = tuple(int(v) for v in val.split(","))
        except ValueError:
            raise ValueError(f"--widths {item!r}: widths must be integers, e.g. G2=68,136,272") from None
        if not 1 <= len(ws) <= 3 or min(ws) < 1:
            raise ValueError(f"--widths {item!r}: give 1 to 3 positive widths (the x1, x2, x4 columns)")
        out[key] = ws
    return out


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--experiments", default="G1,G2,G3,G4", help="comma-separated subset of G1,G2,G3,G4")
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--image-size", type=int, default=56, help="feature map height = width (paper: 56)")
    ap.add_argument("--depth", type=int, default=10, help="blocks per network (paper: 10)")
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per setting")
    ap.add_argument("--statistic", choices=("median", "min"), default="median",
                    help="report the median (default) or the fastest of the repeats (on a busy shared machine)")
    ap.add_argument("--gpu-widths", action="store_true", help="base widths near the paper's GPU columns")
    ap.add_argument("--widths", action="append", metavar="GN=W1,W2,W3", help="base widths of one experiment")
    ap.add_argument("--out-dir", default=time.strftime("runs/guidelines-%Y%m%d-%H%M%S"),
                    help="where guidelines.csv and guidelines.md go (default: a new folder under runs/)")
    ap.add_argument("--overwrite", action="store_true", help="replace guidelines.csv/.md in --out-dir")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--device", default="CPU", help="MindSpore device_target (default CPU)")
    args = ap.parse_args(argv)

    from mindshuffle.research import guidelines as G
    from mindshuffle.errors import OutputExistsError
    from mindshuffle.fileio import refuse_existing

    exps = [e.strip().upper() for e in args.experiments.split(",") if e.strip()]
    bad = [e for e in exps if e not in G.EXPERIMENTS]
    if bad or not exps:
        what = ", ".join(repr(b) for b in bad) or repr(args.experiments)
        return _fail(f"unknown experiment {what}; choose from {', '.join(G.EXPERIMENTS)}")
    for flag in ("batch_size", "image_size", "depth", "repeats"):
        if getattr(args, flag) < 1:
            return _fail(f"--{flag.replace('_', '-')} must be >= 1, got {getattr(args, flag)}")
    try:
        custom = _parse_widths(args.widths, G.EXPERIMENTS)
    except ValueError as e:
        return _fail(str(e))
    widths = {e: custom.get(e, (G.GPU_WIDTHS if args.gpu_widths else G.DEFAULT_WIDTHS)[e]) for e in exps}
    csv_path = os.path.join(args.out_dir, "guidelines.csv")
    md_path = os.path.join(args.out_dir, "guidelines.md")
    try:
        refuse_existing([] if args.overwrite else [csv_path, md_path])
    except OutputExistsError as e:
        return _fail(str(e))

    import mindspore as ms
    from tqdm import tqdm
    from mindshuffle.research.analysis import write_text_atomic

    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device)
    for e in exps:  # fail fast: equal FLOPs scale with depth and map size alike, so a tiny copy tells
        try:
            G.check_equal_flops(G.settings(e, widths[e], depth=1), image_size=4)
        except (G.UnequalFlopsError, ValueError) as err:
            return _fail(str(err))
    total = sum(G.n_settings(e, widths[e]) for e in exps)
    results = []
    with tqdm(total=total, desc="guidelines", unit="setting", file=sys.stderr) as bar:
        for e in exps:
            bar.set_postfix_str(e)
            try:
                res = G.run_experiment(e, widths[e], args.batch_size, args.image_size, args.warmup, args.repeats,
                                       args.depth, progress=lambda s: bar.update(1), statistic=args.statistic)
            except (G.UnequalFlopsError, ValueError) as err:
                bar.close()
                return _fail(str(err))
            results.append(res)
            tqdm.write(G.format_table(res, markdown=args.markdown) + "\n", file=sys.stdout)

    rows = [r for res in results for r in G.to_csv_rows(res)]
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=list(rows[0]))
    writer.writeheader()
    writer.writerows(rows)
    write_text_atomic(csv_path, buf.getvalue())
    write_text_atomic(md_path, "\n\n".join(G.format_table(r, markdown=True) for r in results) + "\n")
    print(f"wrote {csv_path} and {md_path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
