"""Average checkpoints into one model checkpoint: weights and BatchNorm statistics (timm's avg_checkpoints).

    python tools/average.py RUN_DIR --best 3 -o avg.ckpt    (the 3 kept epoch_<N>.ckpt with the best val top-1)
    python tools/average.py RUN_DIR --last 3 -o avg.ckpt    (the 3 latest kept epoch_<N>.ckpt)
    python tools/average.py a.ckpt b.ckpt c.ckpt -o avg.ckpt
    python tools/validate.py -c RUN_DIR/recipe.yaml --ckpt_path avg.ckpt

A run folder keeps epoch_<N>.ckpt files with keep_checkpoint_max > 1 (ckpt_save_policy latest_k or top_k).
The output keeps the first file's metadata (model, classes, preprocessing) and drops the optimizer state.
"""
import argparse
import os
import sys

os.environ.setdefault("GLOG_v", "3")

from .common import error  # noqa: E402


def _inputs(args) -> list:
    from mindshuffle.average import pick_checkpoints
    from mindshuffle.errors import CheckpointError
    if args.best or args.last:
        if len(args.inputs) != 1 or not os.path.isdir(args.inputs[0]):
            raise CheckpointError(f"--best/--last pick from one run folder; got {' '.join(args.inputs)!r}")
        return pick_checkpoints(args.inputs[0], best=args.best, last=args.last)
    folders = [p for p in args.inputs if os.path.isdir(p)]
    if folders:
        raise CheckpointError(f"{folders[0]!r} is a folder: give --best K or --last K to pick its epoch "
                              f"checkpoints, or checkpoint files")
    return list(args.inputs)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("inputs", nargs="+", help="a run folder (with --best/--last) or checkpoint files")
    pick = ap.add_mutually_exclusive_group()
    pick.add_argument("--best", type=int, default=0, metavar="K", help="the K best kept epochs by val top-1")
    pick.add_argument("--last", type=int, default=0, metavar="K", help="the K latest kept epochs")
    ap.add_argument("-o", "--output", required=True, help="the averaged checkpoint (written atomically)")
    args = ap.parse_args(argv)
    from mindshuffle.errors import MindshuffleError
    try:
        paths = _inputs(args)
        from mindshuffle.average import save_average
        res = save_average(paths, args.output)
    except (MindshuffleError, OSError) as e:
        return error(e)
    print(f"averaged {res['count']} checkpoint(s) of {res['model']} ({res['params']} parameters): "
          f"{', '.join(os.path.basename(p) for p in paths)} -> {res['output']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
