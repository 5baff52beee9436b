"""Classify images with a checkpoint: top-k classes with names and probabilities.

    python tools/infer.py --ckpt_path run/best.ckpt photo.jpg
    python tools/infer.py --ckpt_path run/best.ckpt --labels data/tiny-imagenet-200 --topk 3 images/
    python tools/infer.py --ckpt_path shufflenet_v2_x1_0_tv.ckpt --labels imagenet_classes.txt list.txt --json
    python tools/infer.py --model shufflenet_v2_x1_0 --pretrained --labels imagenet_classes.txt photo.jpg

Inputs: image files, folders (searched recursively) and .txt lists (one path a line). The checkpoint's own
preprocessing is used (e.g. BGR 0-255 for converted Megvii weights). Labels: a text file (one name a line),
Tiny ImageNet's folder or words.txt, a folder of class folders; by default the names the checkpoint recorded.
An unreadable image is reported by name on stderr and the others go on; the exit code is then 1.
On CPU the model runs with BatchNorm folded on mindshuffle's CPU kernels (``--accelerate False``: MindSpore's
kernels only).
"""
import argparse
import json
import os
import sys

os.environ.setdefault("GLOG_v", "3")

from .common import add_accelerate_arg, add_weights_args, error, weights_file  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="images, folders or .txt lists of images")
    add_weights_args(ap)
    ap.add_argument("--labels", default=None, help="class names: text file, words.txt, or class-folder root")
    ap.add_argument("--topk", type=int, default=5)
    ap.add_argument("--batch_size", type=int, default=8)
    ap.add_argument("--json", action="store_true", help="one JSON object per image on stdout")
    add_accelerate_arg(ap)
    args = ap.parse_args(argv)
    if not args.ckpt_path and not args.pretrained:
        return error("give --ckpt_path, or --model NAME --pretrained for its published weights")
    from mindshuffle.errors import MindshuffleError
    from mindshuffle.registry import UnknownModelError
    try:
        ckpt = weights_file(args)
        from mindshuffle.export import Predictor
        pred = Predictor(ckpt, model=args.model, labels=args.labels, topk=args.topk,
                         batch_size=args.batch_size, accelerate=args.accelerate)
        results = pred.predict(args.inputs)
    except (MindshuffleError, UnknownModelError, OSError) as e:
        return error(e)
    failed = 0
    for r in results:
        if "error" in r:
            failed += 1
            print(f"error: {r['path']}: {r['error']}", file=sys.stderr)
            continue
        if args.json:
            print(json.dumps({"path": r["path"], "top": [{"index": i, "name": n, "prob": round(p, 6)}
                                                         for i, n, p in r["top"]]}))
        else:
            tops = "  ".join(f"{n} ({p:.1%})" for _, n, p in r["top"])
            print(f"{r['path']}: {tops}")
    if failed:
        print(f"{failed} of {len(results)} images could not be read", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
