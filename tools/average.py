"""Average checkpoints into one model checkpoint: weights and BatchNorm statistics (timm's avg_checkpoints).

The command lives in mindshuffle/cli/average.py; installed, it is also `mindshuffle-average` (or `mindshuffle average`).
"""
from _entry import run

if __name__ == "__main__":
    run("average")
