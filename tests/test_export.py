"""Models out: ONNX parity with onnxruntime, MindIR with a dynamic batch, and the image predictor."""
import json
import os
import stat

import numpy as np
import mindspore as ms
import pytest
from PIL import Image

from conftest import randomize
from mindshuffle import create_model
from mindshuffle.checkpoints import save_checkpoint, set_authors_shuffle, set_pool_same
from mindshuffle.export import (PredictError, Predictor, export_model, load_checkpoint_model, load_labels,
                                preprocess_image)
from cli_helpers import tool as _tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


X = np.random.default_rng(5).normal(size=(2, 3, 64, 64)).astype(np.float32)


@pytest.fixture(scope="module")
def ckpt(tmp_path_factory):
    """A 3-class x0.5 checkpoint with metadata (64 px input, class names) and its logits on X."""
    net = randomize(create_model("shufflenet_v2_x0_5", num_classes=3), seed=1)
    net.preprocess = {"input_size": 64}
    net.class_names = ["apple", "banana", "cherry"]
    path = save_checkpoint(net, str(tmp_path_factory.mktemp("ck") / "fruit.ckpt"))
    return path, net(ms.Tensor(X)).asnumpy(), net


def _close(want, got):
    scale = float(np.abs(want).max())
    diff = float(np.abs(want - got).max())
    assert scale > 1e-2 and diff <= 1e-4 * scale, (diff, scale)
    return diff


def test_onnx_matches_mindspore(ckpt, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    path, want, _ = ckpt
    net = load_checkpoint_model(path)            # model and class count from the checkpoint
    out = export_model(net, str(tmp_path / "fruit"), "ONNX", input_size=64, batch_size=2, dynamic_batch=True)
    assert out.endswith(".onnx") and os.path.isfile(out)
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    name = sess.get_inputs()[0].name
    diff = _close(want, sess.run(None, {name: X})[0])
    print(f"ONNX vs MindSpore: max |diff| {diff:.2e}")
    try:
        import onnx  # noqa: F401  (the batch axis is marked symbolic only with the onnx package)
    except ImportError:
        return
    _close(want[:1], sess.run(None, {name: X[:1]})[0])


def test_onnx_v1_with_mindcv_pooling(tmp_path):
    ort = pytest.importorskip("onnxruntime")
    net = randomize(create_model("shufflenet_v1_g3_x0_5", num_classes=4), seed=3)
    set_authors_shuffle(set_pool_same(net))
    want = net(ms.Tensor(X)).asnumpy()
    out = export_model(net, str(tmp_path / "v1.onnx"), "ONNX", input_size=64, batch_size=2)
    sess = ort.InferenceSession(out, providers=["CPUExecutionProvider"])
    _close(want, sess.run(None, {sess.get_inputs()[0].name: X})[0])


def test_mindir_dynamic_batch(ckpt, tmp_path):
    path, want, _ = ckpt
    out = export_model(load_checkpoint_model(path), str(tmp_path / "fruit"), "MINDIR", input_size=64,
                       dynamic_batch=True)
    cell = ms.nn.GraphCell(ms.load(out))
    _close(want, cell(ms.Tensor(X)).asnumpy())
    _close(want[1:], cell(ms.Tensor(X[1:])).asnumpy())
    assert not [f for f in os.listdir(tmp_path) if f.startswith(".tmp")]


@pytest.mark.parametrize("fmt", ["ONNX", "MINDIR"])
def test_export_keeps_the_folder_mode(tmp_path, fmt):
    """MindSpore's ONNX writer chmods the folder it writes into to 0700; an export must not."""
    out = tmp_path / "shared"
    out.mkdir()
    os.chmod(out, 0o755)
    net = create_model("shufflenet_v2_x0_5", num_classes=3, repeats=(1, 1, 1))
    path = export_model(net, str(out / "model"), fmt, input_size=32)
    assert oct(stat.S_IMODE(os.stat(out).st_mode)) == oct(0o755)
    assert oct(stat.S_IMODE(os.stat(path).st_mode)) == oct(0o644)
    assert os.listdir(out) == [os.path.basename(path)]        # no private folder or temporary file left


def _images(folder):
    """One image of each kind users have: RGB JPEG, RGBA PNG, grayscale PNG, palette GIF, 16-bit PNG."""
    folder.mkdir()
    rng = np.random.default_rng(0)
    rgb = rng.integers(0, 255, (80, 100, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(folder / "a.jpg", quality=90)
    Image.fromarray(np.dstack([rgb, np.full((80, 100), 128, np.uint8)])).save(folder / "b.png")
    Image.fromarray(rgb[:, :, 0]).save(folder / "c.png")
    Image.fromarray(rgb).convert("P").save(folder / "d.gif")
    Image.fromarray((rgb[:, :, 1].astype(np.uint16) * 200)).save(folder / "e.png")
    (folder / "broken.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return folder


def test_predictor_reads_every_kind_and_reports_bad_files(ckpt, tmp_path):
    path, _, net = ckpt
    folder = _images(tmp_path / "imgs")
    # the saved model itself, at the batch shape it already ran (one graph compile for the whole module);
    # test_infer_and_export_tools builds the predictor from the checkpoint file
    pred = Predictor(net=net, topk=2, batch_size=2)
    assert pred.names == ["apple", "banana", "cherry"] and pred.pre["input_size"] == 64
    res = pred.predict([str(folder), str(tmp_path / "missing.png")])
    by = {os.path.basename(r["path"]): r for r in res}
    assert set(by) == {"a.jpg", "b.png", "c.png", "d.gif", "e.png", "broken.jpg", "missing.png"}
    assert "cannot read image" in by["broken.jpg"]["error"] and "no such file" in by["missing.png"]["error"]
    for name in ("a.jpg", "b.png", "c.png", "d.gif", "e.png"):
        top = by[name]["top"]
        assert len(top) == 2 and top[0][2] >= top[1][2] and 0 < top[0][2] <= 1
        assert top[0][1] in pred.names
    # the predictor's probabilities are the network's softmax on the preprocessed image
    x = preprocess_image(Image.open(folder / "a.jpg").convert("RGB"), pred.pre)
    logits = pred.net(ms.Tensor(np.stack([x] * pred.batch_size))).asnumpy()[0]
    p = np.exp(logits - logits.max())
    p /= p.sum()
    assert by["a.jpg"]["top"][0][0] == int(np.argmax(p))
    assert by["a.jpg"]["top"][0][2] == pytest.approx(float(p.max()), rel=1e-4)


def test_preprocess_channel_order_and_scale():
    red = Image.new("RGB", (40, 30), (255, 0, 0))
    bgr = preprocess_image(red, {"channel_order": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1], "input_size": 32})
    assert bgr.shape == (3, 32, 32)
    assert np.allclose(bgr[2], 255) and np.allclose(bgr[0], 0)
    rgb = preprocess_image(red, {"input_size": 32})   # ImageNet mean/std in 0-255 units
    assert np.allclose(rgb[0], (255 - 123.675) / 58.395, atol=1e-4)
    scaled = preprocess_image(red, {"input_size": 32, "mean": [0.485, 0.456, 0.406], "std": [0.229, 0.224, 0.225],
                                    "scale": 1 / 255})
    assert np.allclose(scaled, rgb, atol=1e-3)


def test_label_sources(tmp_path):
    tiny = tmp_path / "tiny-imagenet-200"
    tiny.mkdir()
    (tiny / "wnids.txt").write_text("n02\nn01\nn03\n")
    (tiny / "words.txt").write_text("n00\tentity\nn01\tgoldfish, Carassius auratus\nn02\tsalamander\n"
                                    "n03\tbullfrog, Rana catesbeiana\n")
    assert load_labels(str(tiny), 3) == ["goldfish", "salamander", "bullfrog"]
    assert load_labels(str(tiny / "words.txt"), 3) == ["goldfish", "salamander", "bullfrog"]
    folders = tmp_path / "data"
    for c in ("zebra", "ant", "moth"):
        (folders / "train" / c).mkdir(parents=True)
    assert load_labels(str(folders), 3) == ["ant", "moth", "zebra"]
    (tmp_path / "l.txt").write_text("x\ny\n\nz\n")
    assert load_labels(str(tmp_path / "l.txt"), 3) == ["x", "y", "z"]
    (tmp_path / "l.json").write_text(json.dumps({"1": "b", "0": "a", "2": "c"}))
    assert load_labels(str(tmp_path / "l.json"), 3) == ["a", "b", "c"]
    with pytest.raises(PredictError, match="name 3 classes but the model has 5"):
        load_labels(str(tmp_path / "l.txt"), 5)
    alone = tmp_path / "alone"
    alone.mkdir()
    (alone / "words.txt").write_text("n01\tgoldfish\n")
    with pytest.raises(PredictError, match="wnids.txt"):
        load_labels(str(alone / "words.txt"), 1)


def test_infer_and_export_tools(ckpt, tmp_path, capsys):
    path, _, _ = ckpt
    folder = _images(tmp_path / "imgs")
    infer = _tool("infer")
    labels = tmp_path / "names.txt"
    labels.write_text("red\ngreen\nblue\n")
    rc = infer.main(["--ckpt_path", path, "--labels", str(labels), "--topk", "3", "--json", str(folder)])
    out, err = capsys.readouterr()
    assert rc == 1                                    # one unreadable image
    rows = [json.loads(line) for line in out.splitlines()]
    assert len(rows) == 5 and all(len(r["top"]) == 3 for r in rows)
    assert {t["name"] for t in rows[0]["top"]} == {"red", "green", "blue"}
    assert "broken.jpg" in err and "1 of 6 images could not be read" in err
    rc = infer.main(["--ckpt_path", str(tmp_path / "nope.ckpt"), str(folder)])
    assert rc == 2 and capsys.readouterr().err.count("\n") == 1
    rc = infer.main(["--ckpt_path", path, "--labels", str(tmp_path / "nope.txt"), str(folder)])
    err = capsys.readouterr().err
    assert rc == 2 and "nope.txt" in err and err.count("\n") == 1

    export = _tool("export")
    rc = export.main(["--ckpt_path", path, "--model", "shufflenet_v2_x1_0"])
    err = capsys.readouterr().err
    assert rc == 2 and "does not fit model 'shufflenet_v2_x1_0'" in err and err.count("\n") == 1
    rc = export.main(["--model", "shufflenet_v2_x0_5", "--ckpt_path", str(tmp_path / "none.ckpt")])
    err = capsys.readouterr().err
    assert rc == 2 and "none.ckpt" in err and err.count("\n") == 1
