"""Convert PyTorch ShuffleNet weights (torchvision V2, Megvii ShuffleNet-Series V2/V1) to a mindshuffle checkpoint.

    python tools/convert.py shufflenetv2_x1-5666bf0f80.pth -o shufflenet_v2_x1_0_tv.ckpt
    python tools/convert.py ShuffleNetV2.0.5x.pth.tar -o shufflenet_v2_x0_5_megvii.ckpt
    python tools/convert.py snetv1_group3_0.5x.pth.tar -o shufflenet_v1_g3_x0_5.ckpt --model shufflenet_v1_g3_x0_5

Needs torch (pip install 'mindshuffle[convert]'). The checkpoint records the model name and the preprocessing
the weights expect, so tools/validate.py, tools/infer.py and tools/export.py need nothing else.
"""
import argparse
import os
import sys

os.environ.setdefault("GLOG_v", "3")


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("src", help="PyTorch checkpoint (.pth / .pth.tar)")
    ap.add_argument("-o", "--output", required=True, help="mindshuffle checkpoint to write (.ckpt)")
    ap.add_argument("--source", default="auto", choices=["auto", "torchvision", "megvii"],
                    help="layout of the PyTorch file (default: told from its keys)")
    ap.add_argument("--model", default=None, help="registered model name (default: told from the shapes)")
    ap.add_argument("--no-verify", action="store_true", help="skip loading the result into the model")
    args = ap.parse_args(argv)
    if not os.path.isfile(args.src):
        print(f"error: PyTorch checkpoint {args.src!r} does not exist", file=sys.stderr)
        return 2

    from mindshuffle.checkpoints import CheckpointError
    from mindshuffle.converters import convert_file
    from mindshuffle.registry import UnknownModelError
    try:
        meta = convert_file(args.src, args.output, source=args.source, model=args.model,
                            verify=not args.no_verify)
    except (CheckpointError, UnknownModelError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    pre = meta.input_preprocess()
    print(f"converted {args.src} ({meta.source}) -> {args.output}")
    print(f"  model {meta.model}, {meta.num_classes} classes; input {pre['channel_order']} "
          f"mean {pre['mean']} std {pre['std']} (0-255 scale), resize {pre['resize']}, crop {pre['input_size']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
