"""Train a recipe: standalone, or data-parallel under msrun.

The command lives in mindshuffle/cli/train.py; installed, it is also `mindshuffle-train` (or `mindshuffle train`).
"""
from _entry import run

if __name__ == "__main__":
    run("train")
