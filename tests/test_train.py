"""Training end to end on a generated folder dataset: run folder, metrics, checkpoints, validate.py, resume."""
import csv
import json
import os
import shutil

import mindspore as ms
import numpy as np
import pytest
from PIL import Image

from mindshuffle import create_model, runfiles
from mindshuffle.train import build
from mindshuffle.recipe import load
from cli_helpers import tool as _tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CLASSES = 5
# The engine tests train ShuffleNet V2 x0.5 with 2/1/1 units per stage (both unit kinds, every code path) instead
# of 4/8/4: a third of the graph-compile time per run. The demo test below trains the full network.
SHALLOW_REPEATS = (2, 1, 1)
SHALLOW = ("--model_kwargs", f"{{repeats: {list(SHALLOW_REPEATS)}}}")


def shallow_net(num_classes=CLASSES, **kwargs):
    """The network the engine tests train (``SHALLOW``), built directly."""
    return create_model("shufflenet_v2_x0_5", num_classes=num_classes, repeats=SHALLOW_REPEATS, **kwargs)


def make_dataset(root, train_per_class=8, val_per_class=2, size=20, classes=CLASSES, seed=0):
    """Class k: a bright horizontal band at row band k on noise - easy to learn, cheap to read."""
    rng = np.random.default_rng(seed)
    for split, n in (("train", train_per_class), ("val", val_per_class)):
        for k in range(classes):
            folder = os.path.join(root, split, f"class_{k}")
            os.makedirs(folder, exist_ok=True)
            for i in range(n):
                a = rng.integers(0, 60, (size, size, 3), dtype=np.uint8)
                band = size // classes
                a[k * band:(k + 1) * band] = 230
                Image.fromarray(a).save(os.path.join(folder, f"{i}.png"))
    return root


def base_args(data_dir, run_dir, *extra):
    return ["--data_dir", data_dir, "--ckpt_save_dir", run_dir, "--model", "shufflenet_v2_x0_5",
            "--device_target", "CPU", "--image_resize", "16", "--batch_size", "8", "--epoch_size", "2",
            "--num_parallel_workers", "1", "--lr", "0.05", "--warmup_epochs", "0", "--crop_pct", "1.0",
            "--scale", "[0.6, 1.0]", "--hflip", "0", "--mean", "auto", "--std", "auto", "--seed", "3",
            "--val_interval", "2", *SHALLOW, *extra]  # validate at the end only: one eval graph compile


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("folder_ds")))


@pytest.fixture(scope="module")
def full_run(data_dir, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "full")
    assert _tool("train").main(base_args(data_dir, run)) == 0
    return run


@pytest.fixture(scope="module")
def resumed_run(data_dir, tmp_path_factory):
    run = str(tmp_path_factory.mktemp("runs") / "resumed")
    train = _tool("train")
    assert train.main(base_args(data_dir, run, "--stop_after_epoch", "1")) == 0
    interrupted = {
        "metrics": runfiles.read_metrics(os.path.join(run, "metrics.csv")),
        "summary": os.path.isfile(os.path.join(run, "summary.json")),
        "state": json.loads(ms.load_checkpoint(os.path.join(run, "last.ckpt"))["mindshuffle_state"]),
    }
    shutil.copytree(run, run + "_epoch1")                    # for the resume tests below
    assert train.main(["--resume", run]) == 0
    return run, interrupted


def _weights(path):
    return {k: v.asnumpy() for k, v in ms.load_checkpoint(path).items() if isinstance(v, ms.Parameter)}


def test_run_folder_metrics_and_checkpoints(full_run):
    for name in ("recipe.yaml", "train.log", "classes.json", "metrics.csv", "last.ckpt", "best.ckpt",
                 "best_confusion.npy", "best_per_class.csv", "summary.json"):
        assert os.path.isfile(os.path.join(full_run, name)), name
    with open(os.path.join(full_run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert tuple(rows[0]) == runfiles.METRICS_COLUMNS and [r["epoch"] for r in rows] == ["1", "2"]
    assert rows[0]["val_top1"] == "" and rows[1]["val_top1"] and rows[1]["val_top5"]   # val_interval 2
    assert all(float(r["img_s"]) > 0 and float(r["train_loss"]) > 0 for r in rows)
    assert float(rows[1]["lr"]) < float(rows[0]["lr"])                       # linear decay
    ck = ms.load_checkpoint(os.path.join(full_run, "last.ckpt"))
    state = json.loads(ck["mindshuffle_state"])
    assert state["epoch"] == 2 and state["step"] == 10                       # 40 images / batch 8 = 5 steps
    assert int(ck["global_step"].asnumpy().reshape(-1)[0]) == 10
    assert any(k.startswith("moments.") for k in ck)                         # optimizer state for resume
    assert not any(k.startswith("moments.") for k in ms.load_checkpoint(os.path.join(full_run, "best.ckpt")))
    summary = json.load(open(os.path.join(full_run, "summary.json")))
    for col in runfiles.SUMMARY_COLUMNS:
        assert col in summary
    n_params = sum(p.size for p in shallow_net().trainable_params())
    assert summary["cards"] == 1 and summary["resolution"] == 16 and summary["params (M)"] == round(n_params / 1e6, 3)
    assert summary["top-1"] == pytest.approx(float(rows[-1]["val_top1"]), abs=0.01)
    recipe = load(os.path.join(full_run, "recipe.yaml"))
    assert recipe.lr == 0.05 and recipe.ckpt_save_dir == full_run and recipe.num_classes == 0
    assert json.load(open(os.path.join(full_run, "classes.json")))["classes"] == [f"class_{k}" for k in range(5)]


def test_validate_reads_the_checkpoint_back(full_run, capsys):
    summary = json.load(open(os.path.join(full_run, "summary.json")))
    ckpt = os.path.join(full_run, "last.ckpt")
    rc = _tool("validate").main(["--config", os.path.join(full_run, "recipe.yaml"), "--ckpt_path", ckpt])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"top-1 {summary['top-1']:.2f}%" in out                           # same number as training's val
    conf = np.load(os.path.join(full_run, "last_confusion.npy"))
    assert conf.shape == (CLASSES, CLASSES) and conf.sum() == 10 and (conf.sum(1) == 2).all()
    with open(os.path.join(full_run, "last_per_class.csv")) as f:
        per_class = list(csv.DictReader(f))
    assert [r["name"] for r in per_class] == [f"class_{k}" for k in range(5)]
    assert sum(int(r["correct"]) for r in per_class) == int(np.trace(conf))


def test_validate_bad_checkpoint_exit_2(full_run, tmp_path, capsys):
    bad = tmp_path / "bad.ckpt"
    bad.write_bytes(b"")
    rc = _tool("validate").main(["--config", os.path.join(full_run, "recipe.yaml"), "--ckpt_path", str(bad)])
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "empty" in err[0]


def test_finished_run_is_not_overwritten(full_run, data_dir, capsys):
    before = os.path.getmtime(os.path.join(full_run, "last.ckpt"))
    rc = _tool("train").main(base_args(data_dir, full_run))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and "finished run" in err[0] and "--overwrite True" in err[0]
    assert os.path.getmtime(os.path.join(full_run, "last.ckpt")) == before


def test_resume_continues_exactly(full_run, resumed_run):
    run, interrupted = resumed_run
    assert len(interrupted["metrics"]) == 1 and not interrupted["summary"]
    assert interrupted["state"]["epoch"] == 1 and interrupted["state"]["step"] == 5
    rows = runfiles.read_metrics(os.path.join(run, "metrics.csv"))
    full_rows = runfiles.read_metrics(os.path.join(full_run, "metrics.csv"))
    assert [r["epoch"] for r in rows] == [1, 2] and os.path.isfile(os.path.join(run, "summary.json"))
    assert rows[1]["lr"] == pytest.approx(full_rows[1]["lr"])                # same LR position
    a, b = _weights(os.path.join(full_run, "last.ckpt")), _weights(os.path.join(run, "last.ckpt"))
    assert a.keys() == b.keys()
    assert int(b["global_step"].reshape(-1)[0]) == 10
    # MindSpore on CPU gives the same result for the same inputs: the resumed run matches bit for bit
    # (weights, BN statistics and optimizer moments)
    for k in a:
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
    assert rows[1]["train_loss"] == pytest.approx(full_rows[1]["train_loss"], rel=1e-4)
    # steps.csv: appended per epoch, cut back to the checkpoint on resume: every step once, same losses
    steps = [runfiles.read_steps(os.path.join(r, "steps.csv"), 10 ** 9) for r in (full_run, run)]
    assert [s[0] for s in steps[1]] == list(range(1, 11))
    np.testing.assert_allclose([s[3] for s in steps[1]], [s[3] for s in steps[0]], rtol=1e-4)


def _listing(folder):
    return sorted((n, os.path.getmtime(os.path.join(folder, n)), os.path.getsize(os.path.join(folder, n)))
                  for n in os.listdir(folder))


def test_refused_resume_changes_nothing(resumed_run, tmp_path, capsys):
    run = str(tmp_path / "copy")
    shutil.copytree(resumed_run[0] + "_epoch1", run)
    before = _listing(run)
    assert _tool("train").main(["--resume", run, "--ema", "True"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "holds no EMA state" in err[0], err
    assert _listing(run) == before


def test_resume_with_another_batch_size_rebuilds_the_lr_table(resumed_run, tmp_path, capsys):
    run = str(tmp_path / "copy")
    shutil.copytree(resumed_run[0] + "_epoch1", run)
    assert _tool("train").main(["--resume", run, "--batch_size", "4"]) == 0
    out = capsys.readouterr().out
    assert "resume on 1 card(s) x batch 4 (was 1 x 8): 10 steps per epoch now, learning-rate table rebuilt; " \
           "continuing with epoch 2 at step 10" in out
    state = json.loads(ms.load_checkpoint(os.path.join(run, "last.ckpt"))["mindshuffle_state"])
    assert (state["epoch"], state["step"], state["batch_size"]) == (2, 20, 4)
    assert int(_weights(os.path.join(run, "last.ckpt"))["global_step"].reshape(-1)[0]) == 20
    rows = runfiles.read_metrics(os.path.join(run, "metrics.csv"))
    assert [r["epoch"] for r in rows] == [1, 2] and rows[1]["lr"] == pytest.approx(0.05 / 20, rel=1e-4)
    steps = runfiles.read_steps(os.path.join(run, "steps.csv"), 10 ** 9)
    assert [s[0] for s in steps] == [1, 2, 3, 4, 5] + list(range(11, 21))


def test_steps_csv_resume_drops_an_unsaved_epoch_and_a_cut_line(tmp_path):
    path = str(tmp_path / "steps.csv")
    runfiles.write_steps(path, [])
    runfiles.append_steps(path, [(1, 1, 0.1, 2.0), (2, 1, 0.1, 1.5)])
    runfiles.append_steps(path, [(3, 2, 0.05, 1.0)])
    with open(path, "a") as f:
        f.write("4,2,0.0")                                                   # a process killed mid-write
    assert [r[0] for r in runfiles.read_steps(path, 10)] == [1, 2, 3]
    assert runfiles.read_steps(path, 2) == [(1, 1, 0.1, 2.0), (2, 1, 0.1, 1.5)]


def test_freeze_backbone_and_weight_decay_groups():
    cfg = load(None, ["--data_dir", "/d", "--model", "shufflenet_v2_x0_5", "--freeze_backbone", "True"])
    net = build.build_model(cfg, 7)
    assert [p.name for p in net.trainable_params()] == ["classifier.weight"]
    cfg2 = load(None, ["--data_dir", "/d", "--model", "shufflenet_v2_x0_5_tv"])
    net2 = build.build_model(cfg2, 7)
    groups = build.param_groups(net2, cfg2)
    decay = {p.name for p in groups[0]["params"]}
    rest = {p.name for p in groups[1]["params"]}
    assert "conv1.conv.weight" in decay and "classifier.weight" in decay
    assert "classifier.bias" in rest and "conv1.bn.gamma" in rest and "conv1.bn.beta" in rest
    assert not any(".bn." in n or n.endswith("bias") for n in decay)
    assert groups[0]["weight_decay"] == 4e-5 and groups[1]["weight_decay"] == 0.0


# -- issue 8: plots and report from a real run -------------------------------------------------------------

def _valid_png(path):
    with Image.open(path) as im:
        im.verify()
    with Image.open(path) as im:
        return im.size


def test_run_writes_steps_confusions_and_report(full_run):
    with open(os.path.join(full_run, "metrics.csv"), newline="") as f:
        metrics = list(csv.DictReader(f))
    with open(os.path.join(full_run, "steps.csv"), newline="") as f:
        steps = list(csv.DictReader(f))
    per_epoch = 5 * 8 // 8  # 40 train images, batch 8, drop_remainder
    assert [int(r["step"]) for r in steps] == list(range(1, 2 * per_epoch + 1))
    assert {int(r["epoch"]) for r in steps} == {1, 2}
    # the epoch's mean loss in metrics.csv is the mean of its step losses (equal batches)
    ep2 = [float(r["loss"]) for r in steps if r["epoch"] == "2"]
    assert float(metrics[-1]["train_loss"]) == pytest.approx(np.mean(ep2), rel=1e-3)
    train_cm = np.load(os.path.join(full_run, "train_confusion.npy"))
    assert train_cm.shape == (CLASSES, CLASSES) and train_cm.sum() == 5 * 8
    assert (train_cm.sum(1) == 8).all()
    report = open(os.path.join(full_run, "report.md"), encoding="utf-8").read()
    last = metrics[-1]
    assert f"val top-1 {float(last['val_top1']):.2f}%" in report
    assert f"train loss {float(last['train_loss']):.4f}" in report
    summary = json.load(open(os.path.join(full_run, "summary.json")))
    assert f"| {summary['model']} | {summary['params (M)']} |" in report
    for name in ("accuracy", "loss", "lr", "confusion_train", "confusion_val"):
        png = os.path.join(full_run, "report", f"{name}.png")
        assert f"report/{name}.png" in report
        w, h = _valid_png(png)
        assert w > 100 and h > 100
        assert "<svg" in open(os.path.join(full_run, "report", f"{name}.svg"), encoding="utf-8").read(4000)


def test_report_and_compare_tools(full_run, tmp_path):
    out = str(tmp_path / "rep")
    assert _tool("report").main([full_run, "--out", out]) == 0
    assert _valid_png(os.path.join(out, "confusion_val.png"))
    cmp_dir = str(tmp_path / "cmp")
    assert _tool("compare").main([full_run, full_run, "--out", cmp_dir, "--labels", "a,b"]) == 0
    text = open(os.path.join(cmp_dir, "compare.md"), encoding="utf-8").read()
    assert "| a | shufflenet_v2_x0_5 |" in text and "| b | shufflenet_v2_x0_5 |" in text
    assert _valid_png(os.path.join(cmp_dir, "compare_val_top1.png"))
    assert _tool("report").main([str(tmp_path / "nothing")]) == 2
    assert _tool("compare").main([full_run, full_run, "--labels", "only_one"]) == 2


def test_report_shows_the_lr_the_run_used(data_dir, tmp_path):
    """The recipe's lr is tuned for global batch 16; this run is 1 card x 8: lr and min_lr are halved."""
    run = str(tmp_path / "scaled")
    args = base_args(data_dir, run, "--global_batch_size", "16", "--min_lr", "0.002", "--epoch_size", "1",
                     "--val_interval", "1")
    assert _tool("train").main(args) == 0
    summary = json.load(open(os.path.join(run, "summary.json")))
    assert summary["lr"] == pytest.approx(0.025) and summary["min_lr"] == pytest.approx(0.001)
    report = open(os.path.join(run, "report.md"), encoding="utf-8").read()
    assert "| lr | 0.025 (recipe 0.05 for global batch 16, scaled linearly to 1 card(s) x 8) |" in report
    assert "| min_lr | 0.001 (recipe 0.002 for global batch 16" in report
    assert "| global_batch_size | 16 |" in report and "| lr | 0.05 |" not in report


def test_confusion_plot_lists_most_confused_pairs_for_many_classes(tmp_path):
    from mindshuffle.plots import most_confused, plot_confusion
    rng = np.random.default_rng(0)
    cm = np.diag(rng.integers(5, 10, 40))
    cm[3, 7] = 4
    cm[12, 1] = 2
    assert most_confused(cm, None, 2) == [("3", "7", 4, pytest.approx(4 / (cm[3].sum()))),
                                           ("12", "1", 2, pytest.approx(2 / cm[12].sum()))]
    paths = plot_confusion(cm, str(tmp_path / "cm40"))
    assert [os.path.splitext(p)[1] for p in paths] == [".png", ".svg"]
    assert "3 -&gt; 7: 4" in open(paths[1], encoding="utf-8").read() or "3 -> 7: 4" in open(paths[1]).read()


def test_training_checkpoint_carries_its_preprocessing(full_run):
    from mindshuffle.checkpoints import checkpoint_metadata
    meta = checkpoint_metadata(os.path.join(full_run, "best.ckpt"))
    state = json.loads(str(ms.load_checkpoint(os.path.join(full_run, "best.ckpt"))["mindshuffle_state"]))
    assert meta.model == "shufflenet_v2_x0_5" and meta.num_classes == CLASSES
    assert meta.class_names == [f"class_{k}" for k in range(CLASSES)]
    assert meta.preprocess["channel_order"] == "RGB"
    assert meta.preprocess["mean"] == pytest.approx(state["mean"])


def test_checkpoint_rebuilds_the_model_kwargs_variant(full_run, data_dir, tmp_path, capsys):
    """A run with ``model_kwargs`` records them: infer/export rebuild the same shallow net from the checkpoint
    alone; the full-depth model does not fit it and the error says how it was built."""
    from mindshuffle.checkpoints import CheckpointError, checkpoint_metadata
    from mindshuffle.export import load_checkpoint_model
    from mindshuffle.models.shufflenet_v2 import ShuffleUnitV2
    ckpt = os.path.join(full_run, "best.ckpt")
    assert checkpoint_metadata(ckpt).model_kwargs == {"repeats": [2, 1, 1]}
    net = load_checkpoint_model(ckpt)
    assert net.model_kwargs == {"repeats": [2, 1, 1]} and net.num_classes == CLASSES
    assert sum(isinstance(c, ShuffleUnitV2) for _, c in net.cells_and_names()) == 4
    with pytest.raises(CheckpointError, match="built with model_kwargs {'repeats': \\[2, 1, 1\\]}"):
        load_checkpoint_model(ckpt, model="shufflenet_v2_x0_5", num_classes=CLASSES, repeats=(4, 8, 4))
    for bad, words in (("{widht: 2}", "unexpected keyword argument 'widht'"), ("{layout: tf}", "unknown layout")):
        rc = _tool("train").main(base_args(data_dir, str(tmp_path / "r"), "--model_kwargs", bad))
        err = capsys.readouterr().err.strip().splitlines()
        assert rc == 2 and len(err) == 1 and "'model_kwargs'" in err[0] and words in err[0], err


def test_bgr_transform_swaps_channels_before_normalising(rng):
    from mindshuffle.data import build_transforms
    cfg = load(None, {"image_resize": 8, "crop_pct": 1.0, "dataset": "folder", "data_dir": "unused"})
    img = rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)
    mean, std = [10.0, 20.0, 30.0], [2.0, 3.0, 4.0]
    rgb = build_transforms(cfg, mean, std, is_training=False)
    bgr = build_transforms(cfg, mean[::-1], std[::-1], is_training=False, bgr=True)
    assert len(bgr) == len(rgb) + 1

    def run(tfs, x):
        import io
        buf = io.BytesIO()
        Image.fromarray(x).save(buf, format="PNG")
        x = np.frombuffer(buf.getvalue(), np.uint8)   # the loader hands encoded bytes to Decode
        for t in tfs:
            x = t(x)
        return np.asarray(x)
    a, b = run(rgb, img), run(bgr, img)
    np.testing.assert_allclose(b, a[::-1], rtol=1e-5, atol=1e-4)   # CHW: channel axis reversed


def test_validate_uses_the_checkpoint_preprocessing(full_run, tmp_path, monkeypatch):
    """A checkpoint that records BGR 0-255 input (as converted Megvii weights do) is validated that way."""
    from mindshuffle import evaluate
    from mindshuffle.checkpoints import save_checkpoint
    from mindshuffle.evaluate import run_validation
    net = shallow_net(checkpoint_path=os.path.join(full_run, "best.ckpt"))
    net.preprocess = {"channel_order": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1]}
    ckpt = save_checkpoint(net, str(tmp_path / "bgr.ckpt"))
    seen = {}
    real = evaluate.build_transforms

    def spy(cfg, mean, std, is_training, bgr=False):
        seen.update(mean=list(mean), std=list(std), bgr=bgr)
        return real(cfg, mean, std, is_training, bgr=bgr)
    monkeypatch.setattr(evaluate, "build_transforms", spy)
    cfg = load(os.path.join(full_run, "recipe.yaml"), {"ckpt_path": ckpt})
    res = run_validation(cfg)
    assert seen == {"mean": [0.0, 0.0, 0.0], "std": [1.0, 1.0, 1.0], "bgr": True}
    assert 0 <= res["top1"] <= 100


@pytest.fixture(scope="module")
def ema_runs(data_dir, tmp_path_factory):
    """The same 2-epoch recipe with weight EMA: uninterrupted, and stopped after epoch 1 then resumed."""
    root = tmp_path_factory.mktemp("ema_runs")
    train = _tool("train")
    ema = ("--ema", "True", "--ema_decay", "0.8", "--val_interval", "1")
    full, resumed = str(root / "full"), str(root / "resumed")
    assert train.main(base_args(data_dir, full, *ema)) == 0
    assert train.main(base_args(data_dir, resumed, *ema, "--stop_after_epoch", "1")) == 0
    assert train.main(["--resume", resumed]) == 0
    return full, resumed


def test_ema_run_saves_and_validates_the_averaged_weights(ema_runs, capsys):
    full, _ = ema_runs
    ck = ms.load_checkpoint(os.path.join(full, "last.ckpt"))
    assert float(ck["ema_updates"].asnumpy()) == 10.0                        # one update per step
    names = [k for k, v in ck.items() if isinstance(v, ms.Parameter) and k.startswith("train.")]
    assert sorted(names) == sorted("train." + k for k in shallow_net().parameters_dict())   # every weight, BN stats
    averaged, trained = ck["conv1.conv.weight"].asnumpy(), ck["train.conv1.conv.weight"].asnumpy()
    assert np.abs(averaged - trained).max() > 1e-6                             # two different weight sets
    best = ms.load_checkpoint(os.path.join(full, "best.ckpt"))
    assert not any(k.startswith(("train.", "ema_updates")) for k in best)
    # validate.py reads last.ckpt like any other checkpoint and measures what training reported: the average
    summary = json.load(open(os.path.join(full, "summary.json")))
    rc = _tool("validate").main(["--config", os.path.join(full, "recipe.yaml"), "--ckpt_path",
                                 os.path.join(full, "last.ckpt")])
    out = capsys.readouterr().out
    assert rc == 0, out
    assert f"top-1 {summary['top-1']:.2f}%" in out


def test_ema_run_resumes_exactly(ema_runs):
    full, resumed = ema_runs
    a, b = _weights(os.path.join(full, "last.ckpt")), _weights(os.path.join(resumed, "last.ckpt"))
    assert a.keys() == b.keys() and "ema_updates" in a
    for k in a:   # averaged and trained weights, BN statistics, moments, the EMA update count
        np.testing.assert_allclose(b[k], a[k], rtol=1e-5, atol=1e-6, err_msg=k)
