"""Convert PyTorch ShuffleNet weights (torchvision V2, Megvii ShuffleNet-Series V2/V1) to a mindshuffle checkpoint.

The command lives in mindshuffle/cli/convert.py; installed, it is also `mindshuffle-convert` (or `mindshuffle convert`).
"""
from _entry import run

if __name__ == "__main__":
    run("convert")
