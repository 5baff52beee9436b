"""Checkpoint policy (keep_checkpoint_max, ckpt_save_policy latest_k / top_k, across --resume) and checkpoint
averaging (tools/average.py), on real short trainings of a tiny generated folder dataset (graph mode)."""
import json
import os

import mindspore as ms
import numpy as np
import pytest

from cli_helpers import tool as _tool
from mindshuffle import runfiles
from mindshuffle.average import average_checkpoints
from mindshuffle.checkpoints import save_checkpoint
from mindshuffle.meta import META_KEY
from test_train import base_args, make_dataset, shallow_net

K = 2


def _train_in_two(data_dir, run, *policy):
    """4 epochs, validated every epoch, stopped after epoch 2 and resumed: (epochs kept after epoch 2, run)."""
    train = _tool("train")
    args = base_args(data_dir, run, "--epoch_size", "4", "--val_interval", "1", "--keep_checkpoint_max", str(K),
                     *policy)
    assert train.main(args + ["--stop_after_epoch", "2"]) == 0
    mid = sorted(runfiles.epoch_checkpoints(run))
    assert train.main(["--resume", run]) == 0
    return mid, run


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("policy_ds")), train_per_class=6, seed=1)


@pytest.fixture(scope="module")
def top_run(data_dir, tmp_path_factory):
    return _train_in_two(data_dir, str(tmp_path_factory.mktemp("runs") / "top"), "--ckpt_save_policy", "top_k")


@pytest.fixture(scope="module")
def latest_run(data_dir, tmp_path_factory):
    return _train_in_two(data_dir, str(tmp_path_factory.mktemp("runs") / "latest"), "--ckpt_save_policy",
                         "latest_k")


def _kept_json(run):
    with open(os.path.join(run, runfiles.KEPT_FILE)) as f:
        return json.load(f)


def _params(path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items() if isinstance(v, ms.Parameter)}


def test_top_k_keeps_the_k_best_by_val_top1_across_a_resume(top_run):
    mid, run = top_run
    assert mid == [1, 2]                                          # k = 2: both epochs before the stop
    rows = runfiles.read_metrics(os.path.join(run, "metrics.csv"))
    assert [r["epoch"] for r in rows] == [1, 2, 3, 4] and all(r["val_top1"] is not None for r in rows)
    best = sorted(sorted(rows, key=lambda r: (r["val_top1"], r["epoch"]), reverse=True)[:K], key=lambda r: r["epoch"])
    expected = [int(r["epoch"]) for r in best]
    assert expected != [3, 4], "this seed's run no longer tells top_k from latest_k apart; pick another seed"
    assert sorted(runfiles.epoch_checkpoints(run)) == expected    # on disk: exactly these, the rest deleted
    kept = _kept_json(run)
    assert kept["ckpt_save_policy"] == "top_k" and [e["epoch"] for e in kept["kept"]] == expected
    for e, r in zip(kept["kept"], best):
        assert e["val_top1"] == pytest.approx(r["val_top1"], abs=1e-3)
    for name in ("last.ckpt", "best.ckpt"):                       # beside the policy's files, as before
        assert os.path.isfile(os.path.join(run, name))


def test_latest_k_keeps_the_k_latest_across_a_resume(latest_run):
    mid, run = latest_run
    assert mid == [1, 2]
    assert sorted(runfiles.epoch_checkpoints(run)) == [3, 4]
    assert [e["epoch"] for e in _kept_json(run)["kept"]] == [3, 4]
    ckpt = ms.load_checkpoint(os.path.join(run, "epoch_4.ckpt"))
    assert json.loads(ckpt["mindshuffle_state"])["epoch"] == 4 and META_KEY in ckpt
    assert not any(k.startswith("moments.") for k in ckpt)       # a model checkpoint, as best.ckpt
    last = _params(os.path.join(run, "last.ckpt"))
    for k, v in _params(os.path.join(run, "epoch_4.ckpt")).items():
        np.testing.assert_array_equal(v, last[k], err_msg=k)     # epoch 4 = the final weights


def test_default_keeps_only_last_and_best(tmp_path, data_dir):
    """keep_checkpoint_max 1 (the default): no epoch files, no checkpoints.json; runs are as before."""
    run = str(tmp_path / "default")
    assert _tool("train").main(base_args(data_dir, run, "--epoch_size", "1", "--val_interval", "1")) == 0
    assert runfiles.epoch_checkpoints(run) == {} and not os.path.exists(os.path.join(run, runfiles.KEPT_FILE))
    assert os.path.isfile(os.path.join(run, "last.ckpt")) and os.path.isfile(os.path.join(run, "best.ckpt"))


def test_averaging_identical_checkpoints_returns_it(latest_run, tmp_path):
    src = os.path.join(latest_run[1], "epoch_4.ckpt")
    out = str(tmp_path / "same.ckpt")
    assert _tool("average").main([src, src, src, "-o", out]) == 0
    a, b = _params(src), _params(out)
    assert a.keys() == b.keys()
    for k in a:
        np.testing.assert_array_equal(b[k], a[k], err_msg=k)
    meta_in = json.loads(ms.load_checkpoint(src)[META_KEY])
    meta_out = json.loads(ms.load_checkpoint(out)[META_KEY])
    assert meta_out.pop("averaged") == {"count": 3, "files": ["epoch_4.ckpt"] * 3}
    assert meta_out == meta_in and meta_in["model"] == "shufflenet_v2_x0_5" and meta_in["class_names"]


def test_averaging_two_checkpoints_is_the_elementwise_mean(latest_run, tmp_path):
    run = latest_run[1]
    a_path, b_path = os.path.join(run, "epoch_3.ckpt"), os.path.join(run, "last.ckpt")
    out = str(tmp_path / "mean.ckpt")
    assert _tool("average").main([a_path, b_path, "-o", out]) == 0
    a, b, m = _params(a_path), _params(b_path), _params(out)
    bn = [k for k in m if k.endswith(("moving_mean", "moving_variance"))]
    assert bn and any(not np.array_equal(a[k], b[k]) for k in bn)   # the statistics moved between the epochs
    counters = ("epoch_num", "step_num")
    for k in set(m) - set(counters):
        np.testing.assert_allclose(m[k], (a[k].astype(np.float64) + b[k]) / 2, rtol=1e-6, atol=1e-7, err_msg=k)
    # optimizer state of last.ckpt is dropped; counters come from the last file, not averaged
    assert not any(k.startswith(("moments.", "global_step", "learning_rate")) for k in m)
    assert set(m) == set(a)
    assert [int(m[k]) for k in counters] == [int(b[k]) for k in counters] and int(m["epoch_num"]) == 4
    assert json.loads(ms.load_checkpoint(out)["mindshuffle_state"])["epoch"] == 4


def test_average_best_k_of_a_run_validates(top_run, tmp_path, capsys):
    run = top_run[1]
    out = str(tmp_path / "avg.ckpt")
    assert _tool("average").main([run, "--best", str(K), "-o", out]) == 0
    kept = [e["file"] for e in _kept_json(run)["kept"]]
    assert json.loads(ms.load_checkpoint(out)[META_KEY])["averaged"]["files"] == kept
    capsys.readouterr()
    rc = _tool("validate").main(["--config", os.path.join(run, "recipe.yaml"), "--ckpt_path", out])
    captured = capsys.readouterr()
    assert rc == 0, captured.err
    assert "avg.ckpt: 10 images, top-1" in captured.out


def test_average_last_one_picks_the_latest(latest_run):
    from mindshuffle.average import pick_checkpoints
    run = latest_run[1]
    assert pick_checkpoints(run, last=1) == [os.path.join(run, "epoch_4.ckpt")]


def _refused(capsys, argv, needle):
    capsys.readouterr()
    rc = _tool("average").main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0], err
    return err[0]


def test_average_refuses_mixed_models_and_bad_requests(latest_run, tmp_path, capsys):
    run = latest_run[1]
    other = str(tmp_path / "other.ckpt")
    save_checkpoint(shallow_net(num_classes=3), other)            # another class count: another classifier
    out = str(tmp_path / "never.ckpt")
    _refused(capsys, [os.path.join(run, "epoch_4.ckpt"), other, "-o", out], "not the same model")
    _refused(capsys, [run, "--best", "3", "-o", out], "has only 2 epoch checkpoint(s)")
    empty = tmp_path / "empty_run"
    empty.mkdir()
    _refused(capsys, [str(empty), "--last", "2", "-o", out], "holds no epoch_<N>.ckpt")
    _refused(capsys, [run, "-o", out], "give --best K or --last K")
    assert not os.path.exists(out)


def test_average_of_the_raw_function_drops_ema_bookkeeping(latest_run):
    params, extra = average_checkpoints([os.path.join(latest_run[1], "last.ckpt")])
    assert "global_step" not in params and not any(k.startswith(("moments.", "train.")) for k in params)
    assert extra["epoch_num"] == 4 and META_KEY in extra
