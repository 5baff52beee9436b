"""Per-layer params, FLOPs (multiply-adds) and memory access cost (MAC) of a registered model.

    python tools/profile.py --model shufflenet_v2_x1_0 --image-size 224
    python tools/profile.py --model shufflenet_v2_x1_0 --markdown --min-flops 1e6   # Markdown, big layers only
    python tools/profile.py --model shufflenet_v2_x0_5 --csv prof.csv --md prof.md  # write files too
"""
import argparse
import os
import sys

os.environ.setdefault("GLOG_v", "3")
import _entry  # noqa: F401,E402  (one clear line when mindshuffle is not installed)
from mindshuffle.fileio import markdown_table  # noqa: E402


def _group_table(prof, markdown: bool, by: str = "type") -> str:
    """Totals per layer type (sorted by MAC) or per top-level module (network order)."""
    head = [by, "layers", "MFLOPs", "FLOPs %", "MAC (M)", "MAC %", "params"]
    rows = []
    groups = sorted(prof.by_type().items(), key=lambda kv: -kv[1]["mac"]) if by == "type" else prof.by_module().items()
    for kind, d in groups:
        rows.append([kind, str(d["count"]), f"{d['flops'] / 1e6:.2f}", f"{100 * d['flops'] / max(1, prof.flops):.1f}",
                     f"{d['mac'] / 1e6:.2f}", f"{100 * d['mac'] / max(1, prof.mac):.1f}", f"{d['params']:,}"])
    if markdown:
        return markdown_table(head, rows, align="l" + "r" * len(head))
    w = [max(len(r[k]) for r in [head] + rows) for k in range(len(head))]
    return "\n".join("  ".join(c.ljust(x) if k == 0 else c.rjust(x) for k, (c, x) in enumerate(zip(r, w)))
                     for r in [head] + rows)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True, help="registered model name (tools/models.py lists them)")
    ap.add_argument("--image-size", type=int, default=224, help="input height = width in pixels (default 224)")
    ap.add_argument("--num-classes", type=int, default=1000)
    ap.add_argument("--in-channels", type=int, default=3)
    ap.add_argument("--min-flops", type=float, default=0, help="hide layers with fewer multiply-adds in the table")
    ap.add_argument("--markdown", action="store_true", help="print Markdown tables")
    ap.add_argument("--csv", metavar="PATH", help="also write the per-layer table as CSV")
    ap.add_argument("--md", metavar="PATH", help="also write the tables as Markdown")
    ap.add_argument("--device", default="CPU", help="MindSpore device_target (default CPU)")
    args = ap.parse_args(argv)
    if args.image_size < 8:
        print(f"error: --image-size {args.image_size} is too small; use at least 8 (224 for the paper's numbers)",
              file=sys.stderr)
        return 2

    import mindspore as ms
    from mindshuffle.research.analysis import profile_model
    from mindshuffle.builder import model_info
    from mindshuffle.registry import UnknownModelError

    ms.set_context(mode=ms.GRAPH_MODE, device_target=args.device)
    try:
        info = model_info(args.model)
    except UnknownModelError as e:
        print(f"error: {e} (tools/models.py lists them)", file=sys.stderr)
        return 2
    try:
        prof = profile_model(args.model, image_size=args.image_size, num_classes=args.num_classes,
                             in_channels=args.in_channels)
    except (ValueError, RuntimeError) as e:
        print(f"error: cannot profile {args.model} at {args.image_size} px: {str(e).splitlines()[0]}",
              file=sys.stderr)
        return 2
    table = prof.table(markdown=args.markdown, min_flops=int(args.min_flops))
    types = _group_table(prof, args.markdown)
    modules = _group_table(prof, args.markdown, by="module")
    totals = (f"{args.model} at {args.image_size}x{args.image_size}: "
              f"params {prof.params:,} ({prof.params / 1e6:.3f} M), FLOPs {prof.flops / 1e6:.2f} M multiply-adds, "
              f"MAC {prof.mac / 1e6:.2f} M elements")
    ref = ""
    if info.flops and args.image_size == 224 and args.num_classes == 1000 and args.in_channels == 3:
        ref = f"published FLOPs {info.flops:.2f} M ({100 * (prof.flops / 1e6 - info.flops) / info.flops:+.2f}%)"
        if info.params:
            ref += f", published params {info.params:,}"
    print(table)
    print()
    print(modules)
    print()
    print(types)
    print()
    print(totals)
    if ref:
        print(ref)
    from mindshuffle.research.analysis import write_text_atomic
    if args.csv:
        prof.to_csv(args.csv)
    if args.md:
        md = "\n\n".join([prof.table(markdown=True, min_flops=int(args.min_flops)), _group_table(prof, True, "module"),
                          _group_table(prof, True),
                          totals + ("; " + ref if ref else "")])
        write_text_atomic(args.md, md + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
