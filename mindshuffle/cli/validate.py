"""Validate a checkpoint: top-1, top-5 (with >= 5 classes), per-class accuracy and the confusion matrix,
saved beside the checkpoint as <stem>_confusion.npy/.csv and <stem>_per_class.csv.

    python tools/validate.py -c configs/digits_demo.yaml --ckpt_path runs/digits_demo/best.ckpt   (-c or --config)
    python tools/validate.py --model shufflenet_v2_x1_0 --pretrained --data_dir /path/to/imagenet

On CPU the model runs with BatchNorm folded on mindshuffle's CPU kernels (``--accelerate False``: MindSpore's
kernels only).
"""
import os
import sys

from .common import pop_option

os.environ.setdefault("GLOG_v", "3")


def main(argv=None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip())
        return 0 if argv else 2
    from mindshuffle import recipe as R
    from mindshuffle.checkpoints import CheckpointError
    from mindshuffle.errors import DataError
    from mindshuffle.registry import UnknownModelError
    try:
        config = pop_option(argv, "--config", "-c")  # -c as in MindCV's validate.py
        cfg = R.load(config, argv)
        if not cfg.ckpt_path and cfg.pretrained:  # the model's published weights (downloaded once, cached)
            from mindshuffle.pretrained import pretrained_checkpoint
            cfg.ckpt_path = pretrained_checkpoint(cfg.model)
        if not cfg.ckpt_path:
            raise R.RecipeError("no checkpoint: pass --ckpt_path RUN_DIR/best.ckpt (or --pretrained for the "
                                "model's published weights)")
        from mindshuffle.evaluate import run_validation
        res = run_validation(cfg)
    except (R.RecipeError, DataError, CheckpointError, UnknownModelError, FileNotFoundError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    top5 = "-" if res["top5"] is None else f"{res['top5']:.2f}"
    print(f"{cfg.model} {os.path.basename(cfg.ckpt_path)}: {res['samples']} images, top-1 {res['top1']:.2f}%, "
          f"top-5 {top5}%")
    worst = res["worst"]
    if worst:
        print("lowest per-class accuracy: " + ", ".join(f"{n} {a:.1f}%" for n, a in worst))
    print("saved: " + ", ".join(res["paths"].values()))
    return 0


if __name__ == "__main__":
    sys.exit(main())
