"""Validate a checkpoint: top-1, top-5 (with >= 5 classes), per-class accuracy and the confusion matrix,

The command lives in mindshuffle/cli/validate.py; installed, it is also `mindshuffle-validate` (or `mindshuffle validate`).
"""
from _entry import run

if __name__ == "__main__":
    run("validate")
