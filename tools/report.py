"""Plots and a one-page report.md of a training run.

The command lives in mindshuffle/cli/report.py; installed, it is also `mindshuffle-report` (or `mindshuffle report`).
"""
from _entry import run

if __name__ == "__main__":
    run("report")
