"""List the registered models with their metadata.

The command lives in mindshuffle/cli/models.py; installed, it is also `mindshuffle-models` (or `mindshuffle models`).
"""
from _entry import run

if __name__ == "__main__":
    run("models")
