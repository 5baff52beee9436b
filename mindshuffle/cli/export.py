"""Export a model from a checkpoint to MindIR and/or ONNX for deployment.

    python tools/export.py --ckpt_path run/best.ckpt --format MINDIR --dynamic_batch -o deploy/model
    python tools/export.py --ckpt_path shufflenet_v2_x1_0_tv.ckpt --format ONNX --input_size 224 -o model.onnx
    python tools/export.py --model shufflenet_v2_x0_5 --ckpt_path mindcv_shufflenet_v2_x0_5.ckpt --format both
    python tools/export.py --model shufflenet_v2_x1_0 --pretrained --format ONNX     (published weights)

The model name and class count come from the checkpoint (pass --model for checkpoints that do not record
them, e.g. MindCV's). BatchNorm is folded into the convolutions (--no_fuse keeps it).
"""
import argparse
import os
import sys

os.environ.setdefault("GLOG_v", "3")

from .common import add_weights_args, error, weights_file  # noqa: E402


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    add_weights_args(ap)
    ap.add_argument("--num_classes", type=int, default=None, help="default: from the checkpoint")
    ap.add_argument("--format", default="MINDIR", type=str.upper, choices=["MINDIR", "ONNX", "BOTH"])
    ap.add_argument("--input_size", type=int, default=None, help="image side (default: the checkpoint's, 224)")
    ap.add_argument("--batch_size", type=int, default=1)
    ap.add_argument("--dynamic_batch", action="store_true",
                    help="any batch size at run time (MindIR natively; ONNX by marking the axis, needs onnx)")
    ap.add_argument("--no_fuse", action="store_true", help="keep BatchNorm layers instead of folding them")
    ap.add_argument("-o", "--output", default=None, help="output path without suffix (default: beside the "
                                                          "checkpoint, or ./<model>)")
    args = ap.parse_args(argv)
    if not args.ckpt_path and not args.model:
        return error("give --ckpt_path (and/or --model to export a model with its initial weights)")
    from mindshuffle.errors import MindshuffleError
    from mindshuffle.registry import UnknownModelError
    try:
        ckpt = weights_file(args)
        from mindshuffle.export import export_model, load_checkpoint_model
        net = load_checkpoint_model(ckpt, args.model, args.num_classes)
        size = args.input_size or net.preprocess.get("input_size", 224)
        base = args.output or (os.path.splitext(args.ckpt_path)[0] if args.ckpt_path else net.model_name)
        base = base[: -len(os.path.splitext(base)[1])] if base.lower().endswith((".onnx", ".mindir")) else base
        formats = ["MINDIR", "ONNX"] if args.format == "BOTH" else [args.format]
        if not ckpt:
            print(f"note: no checkpoint: {net.model_name} is exported with its initial weights")
        for fmt in formats:
            path = export_model(net, base, fmt=fmt, input_size=size, batch_size=args.batch_size,
                                dynamic_batch=args.dynamic_batch, fuse=not args.no_fuse)
            batch = "N" if args.dynamic_batch else args.batch_size
            print(f"exported {net.model_name} ({net.num_classes} classes) -> {path}  "
                  f"[input {batch}x3x{size}x{size}, {net.preprocess['channel_order']}]")
    except (MindshuffleError, UnknownModelError, OSError) as e:
        return error(e)
    return 0


if __name__ == "__main__":
    sys.exit(main())
