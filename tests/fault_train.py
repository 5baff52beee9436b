"""tools/train.py (mindshuffle.cli.train) with test-only fault hooks (the product has none), for tests/test_faults.py.

    MINDSHUFFLE_TEST_STEP_FAULT=E:S   pause after step S of epoch E (a callback), so a test can kill -9 there
    MINDSHUFFLE_TEST_SAVE_FAULT=pause:N   pause the N-th checkpoint save after its temporary file is written,
                                          before the rename
    MINDSHUFFLE_TEST_SAVE_FAULT=enospc:N  the N-th save fails half-way as on a full disk
    MINDSHUFFLE_TEST_HIDE_LAST_RANK=R     rank R sees no last.ckpt (a node whose run folder is not the shared one)
A pause prints "fault hook: paused <where>" on stderr and sleeps until the test kills the process.
"""
import errno
import os
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402

from mindshuffle import checkpoints  # noqa: E402
from mindshuffle.cli import train as train_tool  # noqa: E402
from mindshuffle.train.callbacks import Callback  # noqa: E402

STEP_FAULT = "MINDSHUFFLE_TEST_STEP_FAULT"
SAVE_FAULT = "MINDSHUFFLE_TEST_SAVE_FAULT"


def pause(where: str) -> None:
    print(f"fault hook: paused {where}", file=sys.stderr, flush=True)
    time.sleep(3600)


class PauseAtStep(Callback):
    def __init__(self, epoch: int, step: int):
        self.at = (epoch, step)

    def on_call_end(self, run, epoch, step, losses):
        if epoch == self.at[0] and step >= self.at[1]:  # the first host call that reaches the step
            pause(f"after epoch {epoch} step {self.at[1]}")


def install_save_fault(spec: str) -> None:
    """Wrap MindSpore's checkpoint writer as mindshuffle's atomic save calls it (into a temporary file)."""
    kind, _, nth = spec.partition(":")
    real, count = ms.save_checkpoint, [0]

    def save(obj, tmp, *args, **kwargs):
        real(obj, tmp, *args, **kwargs)
        count[0] += 1
        if count[0] != int(nth or 1):
            return
        if kind == "enospc":
            os.chmod(tmp, 0o600)
            os.truncate(tmp, os.path.getsize(tmp) // 2)  # a write that stopped half-way
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), tmp)
        pause(f"before renaming {tmp}")

    checkpoints.ms.save_checkpoint = save


def hide_last_checkpoint() -> None:
    real = os.path.isfile

    def isfile(path):
        return False if str(path).endswith("last.ckpt") else real(path)

    os.path.isfile = isfile


def main() -> int:
    callbacks = []
    if os.environ.get("MINDSHUFFLE_TEST_HIDE_LAST_RANK", "-") == os.environ.get("RANK_ID"):
        hide_last_checkpoint()
    if os.environ.get(STEP_FAULT):
        callbacks.append(PauseAtStep(*(int(v) for v in os.environ[STEP_FAULT].split(":"))))
    if os.environ.get(SAVE_FAULT):
        install_save_fault(os.environ[SAVE_FAULT])
    return train_tool.main(sys.argv[1:], callbacks=callbacks)


if __name__ == "__main__":
    sys.exit(main())
