"""Export a model from a checkpoint to MindIR and/or ONNX for deployment.

The command lives in mindshuffle/cli/export.py; installed, it is also `mindshuffle-export` (or `mindshuffle export`).
"""
from _entry import run

if __name__ == "__main__":
    run("export")
