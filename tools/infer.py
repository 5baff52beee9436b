"""Classify images with a checkpoint: top-k classes with names and probabilities.

The command lives in mindshuffle/cli/infer.py; installed, it is also `mindshuffle-infer` (or `mindshuffle infer`).
"""
from _entry import run

if __name__ == "__main__":
    run("infer")
