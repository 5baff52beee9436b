"""The digits demo (tools/demo.py) on scikit-learn's real handwriting: the slowest test, in a file of its own
so that pytest-xdist can run it beside the other training tests."""
import json
import os

import mindspore as ms

from cli_helpers import tool as _tool


def test_digits_demo_learns_real_handwriting(tmp_path, capsys):
    """tools/demo.py end to end on scikit-learn's real digits, shortened to 6 epochs (the shipped recipe runs 30):
    the shipped recipe (EMA, rotation/shift augmentation) already reads most of the 360 validation digits."""
    run = str(tmp_path / "run")
    rc = _tool("demo").main(["--data_dir", str(tmp_path / "digits"), "--ckpt_save_dir", run, "--epoch_size", "6",
                             "--val_interval", "6"])
    out = capsys.readouterr().out
    assert rc == 0, out
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["epochs"] == 6 and summary["top-1"] >= 93.0, out
    assert f"val top-1 {summary['top-1']:.2f}%" in out                       # validate.py agrees with training
    assert "ema_updates" in ms.load_checkpoint(os.path.join(run, "last.ckpt"))
