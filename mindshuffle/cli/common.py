"""What the commands share: the weights arguments (--ckpt_path / --model / --pretrained) and the one-line
error with exit code 2."""
import argparse
import os
import sys

__all__ = ["add_weights_args", "add_accelerate_arg", "weights_file", "pop_option", "error"]


def add_weights_args(ap, ckpt_help: str = "checkpoint (mindshuffle, converted or MindCV)") -> None:
    ap.add_argument("--ckpt_path", default="", help=ckpt_help)
    ap.add_argument("--model", default=None, help="registered model name (default: from the checkpoint)")
    ap.add_argument("--pretrained", action="store_true",
                    help="without --ckpt_path: the model's published weights (downloaded once, then cached)")


def add_accelerate_arg(ap) -> None:
    """``--accelerate True|False``, read like the recipe key of that name (the CPU accelerator; default on)."""
    from ..recipe import KEYS, RecipeError, coerce
    key = next(k for k in KEYS if k.name == "accelerate")

    def parse(v):
        try:
            return coerce("accelerate", v)
        except RecipeError as e:
            raise argparse.ArgumentTypeError(str(e)) from None

    ap.add_argument("--accelerate", type=parse, default=key.default, metavar="BOOL", help=key.help)


def weights_file(args) -> str:
    """The checkpoint a command loads ('' = none): ``--ckpt_path`` (it must exist), else with ``--pretrained``
    the model's published weights, downloaded and verified once. Sets MindSpore's graph mode on the CPU.
    Raises ``CheckpointError``."""
    from ..errors import CheckpointError
    if args.ckpt_path and not os.path.isfile(args.ckpt_path):
        raise CheckpointError(f"checkpoint {args.ckpt_path!r} does not exist")
    import mindspore as ms
    from ..pretrained import checkpoint_or_pretrained
    ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")
    return checkpoint_or_pretrained(args.ckpt_path, args.model, args.pretrained)


def pop_option(argv: list, *flags: str):
    """Remove the first of ``flags`` (``--config PATH``, ``--config=PATH``, ``-c PATH``) from ``argv`` and return
    its value; None when absent. A flag without a value raises ``RecipeError``."""
    from ..errors import RecipeError
    for i, a in enumerate(argv):
        for flag in flags:
            if a == flag:
                if i + 1 >= len(argv):
                    raise RecipeError(f"{flag} needs a value")
                val = argv[i + 1]
                del argv[i:i + 2]
                return val
            if a.startswith(flag + "="):
                del argv[i]
                return a.split("=", 1)[1]
    return None


def error(e) -> int:
    """Print ``error: <e>`` as one line on stderr; the exit code of a refused command (2)."""
    print(f"error: {e}", file=sys.stderr)
    return 2
