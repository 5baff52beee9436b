"""Speed of registered models on this device: latency (batch 1), throughput, training-step throughput,
graph compile time and peak memory, with MindCV's model of the same name as a reference.

    python tools/benchmark.py shufflenet_v2_x0_5 shufflenet_v2_x1_0
    python tools/benchmark.py "shufflenet_v2_x*" --batch-sizes 1,32 --train-batch-size 32 --repeats 10
    python tools/benchmark.py shufflenet_v2_x1_0 --no-reference --no-isolate --image-size 112

Every model (and its MindCV reference) runs in its own process, so compile times and memory peaks are its
own. Results go to <out-dir>/<name>.csv, .md and .json; <out-dir> is a new runs/benchmark-<date>-<time> unless
given. Existing files are never replaced without --overwrite (the committed results: --out-dir bench/results
--overwrite).
"""
import argparse
import csv
import io
import json
import os
import platform
import sys
import time

os.environ.setdefault("GLOG_v", "3")
import _entry  # noqa: F401,E402  (one clear line when mindshuffle is not installed)
from mindshuffle.fileio import markdown_table  # noqa: E402


def _fail(msg: str) -> int:
    print(f"error: {msg}", file=sys.stderr)
    return 2


def _ints(text: str, flag: str) -> tuple:
    try:
        vals = tuple(int(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ValueError(f"{flag} {text!r}: expected comma-separated integers, e.g. 1,8,32") from None
    if not vals or min(vals) < 1:
        raise ValueError(f"{flag} {text!r}: batch sizes must be >= 1")
    return vals


def _f(v, spec=".1f") -> str:
    return "-" if v is None else format(v, spec)


def rows_of(results: list, batch_sizes: tuple) -> tuple:
    """(header, rows) of the summary table: one row per model."""
    head = ["model", "params (M)", "MFLOPs (224 px)", "image", "latency bs1 (ms)"]
    head += [f"img/s bs{b}" for b in batch_sizes]
    head += ["train img/s", "compile (s)", "train compile (s)", "peak RSS (MiB)",
             f"MindCV img/s bs{batch_sizes[-1]}", "MindCV train img/s", "speed-up infer / train"]
    rows = []
    for r in results:
        ref = r.get("reference") or {}
        bl = batch_sizes[-1]
        ours_i, ref_i = r["throughput"].get(bl), (ref.get("throughput") or {}).get(bl)
        ours_t, ref_t = r.get("train_img_per_s"), ref.get("train_img_per_s")
        up = "-"
        if ref_i:
            up = f"{ours_i / ref_i:.2f}x / " + (f"{ours_t / ref_t:.2f}x" if ours_t and ref_t else "-")
        rows.append([r["model"], _f(r["params_M"], ".3f"), _f(r["flops_M"], ".1f"), str(r["image_size"]),
                     _f(r.get("latency_ms"), ".2f")] + [_f(r["throughput"].get(b)) for b in batch_sizes]
                    + [_f(ours_t), _f(r.get("compile_s"), ".2f"), _f(r.get("train_compile_s"), ".2f"),
                       _f(r.get("peak_rss_mb"), ".0f"), _f(ref_i), _f(ref_t), up])
    return head, rows


def render(head, rows, markdown: bool) -> str:
    if markdown:
        return markdown_table(head, rows, align="l" + "r" * len(head))
    w = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
    return "\n".join("  ".join(c.ljust(x) if k == 0 else c.rjust(x) for k, (c, x) in enumerate(zip(r, w)))
                     for r in [head] + rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("models", nargs="+", help="registered names or shell patterns (tools/models.py lists them)")
    ap.add_argument("--batch-sizes", default="1,8", help="inference batch sizes (default 1,8; 1 gives latency)")
    ap.add_argument("--train-batch-size", type=int, default=8, help="training-step batch size (0: skip training)")
    ap.add_argument("--image-size", type=int, default=224)
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--repeats", type=int, default=5, help="timed runs per measurement")
    ap.add_argument("--statistic", choices=("median", "min"), default="median",
                    help="report the median (default) or the fastest of the repeats (on a busy shared machine)")
    ap.add_argument("--fuse", choices=("fast", "plain", "none"), default="fast",
                    help="how mindshuffle's model runs: fast (default, as validate/infer/train run it on CPU: the "
                         "CPU accelerator, inference with BatchNorm folded), plain (folded, plain ops, as "
                         "exported) or none (as built); MindCV's runs as it ships")
    ap.add_argument("--no-reference", action="store_true", help="skip MindCV's same-name model")
    ap.add_argument("--no-isolate", action="store_true", help="run everything in this process (faster start; "
                    "compile times and memory peaks then mix)")
    ap.add_argument("--out-dir", default=time.strftime("runs/benchmark-%Y%m%d-%H%M%S"),
                    help="where the results go (default: a new folder under runs/)")
    ap.add_argument("--overwrite", action="store_true", help="replace <name>.csv/.md/.json in --out-dir")
    ap.add_argument("--name", default="benchmark", help="file name stem of the outputs (default benchmark)")
    ap.add_argument("--markdown", action="store_true", help="print the table as Markdown")
    ap.add_argument("--device", default="CPU", help="MindSpore device_target (default CPU)")
    args = ap.parse_args(argv)

    try:
        batch_sizes = _ints(args.batch_sizes, "--batch-sizes")
    except ValueError as e:
        return _fail(str(e))
    if args.repeats < 1 or args.warmup < 0 or args.train_batch_size < 0 or args.image_size < 32:
        return _fail("--repeats must be >= 1, --warmup and --train-batch-size >= 0, --image-size >= 32")

    stem = os.path.join(args.out_dir, args.name)
    from mindshuffle.errors import OutputExistsError
    from mindshuffle.fileio import refuse_existing
    try:
        refuse_existing([] if args.overwrite else [stem + ext for ext in (".csv", ".md", ".json")])
    except OutputExistsError as e:
        return _fail(str(e))

    import mindspore as ms
    from tqdm import tqdm
    from mindshuffle.research import benchmark as B
    from mindshuffle.builder import list_models, model_info
    from mindshuffle.registry import UnknownModelError

    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device)
    names = []
    for pat in args.models:
        if any(ch in pat for ch in "*?["):
            found = list_models(pat)
            if not found:
                return _fail(f"no model matches {pat!r}; tools/models.py lists them")
            names += found
        else:
            try:
                names.append(model_info(pat).name)
            except UnknownModelError as e:
                return _fail(f"{e} (tools/models.py lists them)")
    names = list(dict.fromkeys(names))

    results = []
    with tqdm(names, desc="benchmark", unit="model", file=sys.stderr) as bar:
        for n in bar:
            bar.set_postfix_str(n)
            try:
                r = B.benchmark_model(n, batch_sizes, args.train_batch_size, args.image_size, args.num_classes,
                                      args.warmup, args.repeats, reference=not args.no_reference,
                                      isolate=not args.no_isolate, statistic=args.statistic, fuse=args.fuse)
            except (RuntimeError, ValueError) as e:
                bar.close()
                return _fail(f"benchmark of {n} failed: {str(e).splitlines()[0]}")
            results.append(r)

    head, rows = rows_of(results, batch_sizes)
    print(render(head, rows, args.markdown))
    _write(stem, head, rows, results, args, batch_sizes)
    return 0


def _write(stem: str, head: list, rows: list, results: list, args, batch_sizes: tuple) -> None:
    """<stem>.csv (the table), .md (the table and how it was measured) and .json (everything)."""
    import mindspore as ms
    from mindshuffle.research.analysis import write_text_atomic
    meta = dict(date=time.strftime("%Y-%m-%d %H:%M:%S"), host=platform.node(), machine=platform.machine(),
                cpus=os.cpu_count(), mindspore=ms.__version__, device=args.device, batch_sizes=batch_sizes,
                train_batch_size=args.train_batch_size, image_size=args.image_size, warmup=args.warmup,
                repeats=args.repeats, isolate=not args.no_isolate, statistic=args.statistic, fuse=args.fuse)
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(head)
    w.writerows(rows)
    write_text_atomic(stem + ".csv", buf.getvalue())
    note = (f"{meta['date']}, MindSpore {meta['mindspore']}, {args.device}, {meta['cpus']} CPUs, graph mode, "
            f"{args.statistic} of {args.repeats} after {args.warmup} warm-up runs; mindshuffle inference "
            f"with --fuse {args.fuse}")
    write_text_atomic(stem + ".md", render(head, rows, True) + "\n\n" + note + "\n")
    write_text_atomic(stem + ".json", json.dumps(dict(meta=meta, results=results), indent=1, default=str) + "\n")
    print(f"wrote {stem}.csv, {stem}.md and {stem}.json")


if __name__ == "__main__":
    sys.exit(main())
