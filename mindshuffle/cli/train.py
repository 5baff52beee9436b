"""Train a recipe: standalone, or data-parallel under msrun.

    python tools/train.py --config configs/shufflenet_v2_0.5_cpu.yaml [--key value ...]   (-c works too)
    python tools/train.py -c configs/shufflenet_v2_0.5_ascend.yaml --dry_run True   (print the run plan, train nothing)
    python tools/train.py --resume RUN_DIR [--key value ...]
    msrun --bind_core True --worker_num 8 --local_worker_num 8 python tools/train.py --config configs/shufflenet_v2_0.5_ascend.yaml
"""
import os
import sys

from .common import pop_option

os.environ.setdefault("GLOG_v", "3")

USAGE = ("usage: python tools/train.py --config RECIPE.yaml [--key value ...]\n"
         "       python tools/train.py --resume RUN_DIR [--key value ...]\n"
         "Every recipe key can be overridden, e.g. --lr 0.1 --distribute False; keys: README.md, Recipe keys")


def main(argv=None, callbacks=()) -> int:
    """``callbacks``: extra ``mindshuffle.train.callbacks.Callback`` objects (tests hook faults in here)."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or argv[0] in ("-h", "--help"):
        print(__doc__.strip() + "\n\n" + USAGE)
        return 0 if argv else 2
    from mindshuffle import recipe as R
    from mindshuffle.errors import MindshuffleError, WorkerFailedError
    from mindshuffle.registry import UnknownModelError
    try:
        config = pop_option(argv, "--config", "-c")
        resume_dir = pop_option(argv, "--resume")
        if resume_dir:
            saved = os.path.join(resume_dir, "recipe.yaml")
            if not os.path.isfile(saved):
                raise R.RecipeError(f"cannot resume: {saved!r} does not exist; --resume takes a run folder "
                                    f"written by tools/train.py")
            cfg = R.load(saved, argv)
            cfg.ckpt_save_dir = resume_dir
            if config:
                cfg.config = os.path.abspath(config)
        else:  # without --config every key comes from its default or the command line
            cfg = R.load(config, argv)
        from mindshuffle.train import Interrupted, fit
        try:
            fit(cfg, resume=bool(resume_dir), callbacks=callbacks)
        except Interrupted as e:
            print(str(e), file=sys.stderr)
            return 130
        except WorkerFailedError as e:  # not a user error: exit 1; upper case so msrun's log digest shows it
            print(f"ERROR: {e}", file=sys.stderr)
            return 1
    except SystemExit as e:
        print(e, file=sys.stderr)
        return 2
    except (MindshuffleError, UnknownModelError, FileNotFoundError, FloatingPointError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted before training started; nothing to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
