"""Checkpoints in: MindCV's ShuffleNet checkpoints as they are, metadata, mismatch messages, fine-tuning loads."""
import json
import logging

import numpy as np
import mindspore as ms
import pytest

from conftest import randomize
from mindshuffle import create_model
from mindshuffle.checkpoints import (CheckpointError, checkpoint_metadata, load_model_weights, save_checkpoint,
                                     uses_authors_shuffle, uses_pool_same)
from mindshuffle.convert_names import META_KEY, detect_layout
from mindshuffle.meta import STATE_KEY, CheckpointMeta


@pytest.fixture(scope="module")
def x():
    return ms.Tensor(np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32))


def _close(a, b):
    scale = float(np.abs(a).max())
    assert scale > 1e-2
    diff = float(np.abs(a - b).max())
    assert diff <= 1e-4 * scale, (diff, scale)
    return diff


@pytest.fixture(scope="module")
def mindcv_v2(tmp_path_factory, x):
    import mindcv
    src = randomize(mindcv.models.create_model("shufflenet_v2_x0_5", num_classes=10), seed=2)
    path = str(tmp_path_factory.mktemp("mcv") / "mindcv_v2.ckpt")
    ms.save_checkpoint(src, path)
    return path, src(x).asnumpy()


def test_mindcv_v2_checkpoint_loads_as_is(mindcv_v2, x, tmp_path):
    path, want = mindcv_v2
    assert detect_layout(ms.load_checkpoint(path)) == "v2"
    net = create_model("shufflenet_v2_x0_5", num_classes=10, checkpoint_path=path)
    assert uses_pool_same(net), "MindCV's weights need MindCV's 'same' pooling"
    net.set_train(False)
    diff = _close(want, net(x).asnumpy())
    print(f"MindCV shufflenet_v2_x0_5 -> mindshuffle: max |diff| {diff:.2e}")
    # re-saved in mindshuffle's names, the checkpoint remembers the pooling and the preprocessing
    again = save_checkpoint(net, str(tmp_path / "ours.ckpt"))
    meta = checkpoint_metadata(again)
    assert meta.model == "shufflenet_v2_x0_5" and meta.pool_same is True
    assert meta.preprocess["channel_order"] == "RGB"
    net2 = create_model("shufflenet_v2_x0_5", num_classes=10, checkpoint_path=again)
    assert uses_pool_same(net2)
    for a, b in zip(net.get_parameters(), net2.get_parameters()):
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_mindcv_v1_checkpoint_loads_as_is(tmp_path, x):
    import mindcv
    src = randomize(mindcv.models.create_model("shufflenet_v1_g3_05", num_classes=6), seed=4)
    path = str(tmp_path / "mindcv_v1.ckpt")
    ms.save_checkpoint(src, path)
    net = create_model("shufflenet_v1_g3_05", num_classes=6, checkpoint_path=path)
    assert uses_pool_same(net) and uses_authors_shuffle(net)
    net.set_train(False)
    diff = _close(src(x).asnumpy(), net(x).asnumpy())
    print(f"MindCV shufflenet_v1_g3_05 -> mindshuffle: max |diff| {diff:.2e}")


def test_other_architecture_lists_mismatches(mindcv_v2):
    path, _ = mindcv_v2
    with pytest.raises(CheckpointError) as e:
        create_model("shufflenet_v2_x1_0", num_classes=10, checkpoint_path=path)
    msg = str(e.value)
    assert "does not fit model 'shufflenet_v2_x1_0'" in msg and "of other shape" in msg
    assert "stage2.0.branch_main.0.conv.weight" in msg or "conv" in msg
    with pytest.raises(CheckpointError) as e:
        create_model("shufflenet_v1_g3_x0_5", num_classes=10, checkpoint_path=path)
    assert "missing from the checkpoint" in str(e.value) and "not in the model" in str(e.value)


def test_model_recorded_in_checkpoint_is_named(tmp_path):
    net = create_model("shufflenet_v2_x0_5", num_classes=4)
    path = save_checkpoint(net, str(tmp_path / "a.ckpt"))
    with pytest.raises(CheckpointError, match="saved from 'shufflenet_v2_x0_5'"):
        create_model("shufflenet_v2_x1_0", num_classes=4, checkpoint_path=path)


def test_new_num_classes_keeps_all_but_classifier(mindcv_v2, caplog):
    path, _ = mindcv_v2
    with caplog.at_level(logging.WARNING, logger="mindshuffle.checkpoints"):
        net = create_model("shufflenet_v2_x0_5", num_classes=3, checkpoint_path=path)
    assert "everything but the classifier" in caplog.text and "3 classes" in caplog.text
    assert net.load_report["skipped_classifier"] == ["classifier.weight"]
    src = ms.load_checkpoint(path)
    np.testing.assert_array_equal(net.conv5.conv.weight.asnumpy(), src["conv_last.0.weight"].asnumpy())
    assert net.classifier.weight.shape == (3, 1024)


def test_checkpoint_meta_type():
    """The one metadata type: JSON round trip keeping keys it does not know, preprocessing checked and completed
    on the way in, an engine-only checkpoint described by its run state, anything unreadable read as empty."""
    meta = CheckpointMeta(model="shufflenet_v2_x0_5", num_classes="3", model_kwargs={"repeats": [2, 1, 1]},
                          preprocess={"input_size": 64, "mean": [0.5] * 3, "std": [0.25] * 3, "scale": 1 / 255},
                          extra={"from_a_newer_version": 1})
    assert meta.num_classes == 3 and meta.preprocess["resize"] == 73
    assert meta.preprocess["mean"] == pytest.approx([127.5] * 3) and meta.preprocess["channel_order"] == "RGB"
    again = CheckpointMeta.from_json(meta.to_json())
    assert again == meta and json.loads(meta.to_json())["from_a_newer_version"] == 1
    assert "v1_shuffle" not in json.loads(meta.to_json()) and json.loads(meta.to_json())["pool_same"] is False
    assert meta.rebuild_kwargs("shufflenet_v2_x0_5", {"drop_rate": 0.1}) == {"repeats": [2, 1, 1], "drop_rate": 0.1}
    assert meta.rebuild_kwargs("shufflenet_v2_x1_0", {}) == {}
    for junk in ("{", "[1, 2]", None, 7):
        assert CheckpointMeta.from_json(junk) == CheckpointMeta()
    assert CheckpointMeta().input_preprocess()["input_size"] == 224   # unknown: ImageNet's defaults
    with pytest.raises(CheckpointError, match="channel_order"):
        CheckpointMeta.from_json('{"preprocess": {"channel_order": "YUV"}}')
    with pytest.raises(CheckpointError, match="malformed.*num_classes|malformed.*int"):
        CheckpointMeta.from_json('{"num_classes": "ten"}')
    state = {"model": "shufflenet_v2_x1_0", "num_classes": 10, "mean": [1, 2, 3], "std": [4, 5, 6], "image_resize": 32}
    old = CheckpointMeta.from_checkpoint({STATE_KEY: json.dumps(state)})
    assert (old.model, old.num_classes, old.preprocess["mean"], old.preprocess["input_size"]) == \
        ("shufflenet_v2_x1_0", 10, [1, 2, 3], 32)
    assert CheckpointMeta.from_checkpoint({META_KEY: meta.to_json(), STATE_KEY: json.dumps(state)}) == meta


def test_metadata_roundtrip(tmp_path):
    net = randomize(create_model("shufflenet_v2_x0_5", num_classes=3))
    net.preprocess = {"channel_order": "BGR", "mean": [0, 0, 0], "std": [1, 1, 1], "input_size": 64}
    net.class_names = ["cat", "dog", "owl"]
    path = save_checkpoint(net, str(tmp_path / "m.ckpt"), append_dict={"epoch_num": 7})
    meta = checkpoint_metadata(path)
    assert meta.num_classes == 3 and meta.class_names == ["cat", "dog", "owl"]
    assert meta.preprocess["resize"] == 73 and meta.pool_same is False
    net2 = create_model("shufflenet_v2_x0_5", num_classes=3)
    extras = load_model_weights(net2, path)
    assert net2.preprocess["channel_order"] == "BGR" and net2.class_names == ["cat", "dog", "owl"]
    assert json.loads(extras[META_KEY])["model"] == "shufflenet_v2_x0_5"
    for a, b in zip(net.get_parameters(), net2.get_parameters()):
        assert a.name == b.name
        np.testing.assert_array_equal(a.asnumpy(), b.asnumpy())


def test_missing_and_truncated_checkpoints(tmp_path):
    with pytest.raises(CheckpointError, match="does not exist"):
        create_model("shufflenet_v2_x0_5", checkpoint_path=str(tmp_path / "nope.ckpt"))
    bad = tmp_path / "cut.ckpt"
    bad.write_bytes(b"\x08\x01garbage")
    with pytest.raises(CheckpointError, match="cannot be read"):
        create_model("shufflenet_v2_x0_5", checkpoint_path=str(bad))


def test_finetune_recipe_from_mindcv_checkpoint(mindcv_v2, tmp_path):
    """configs/finetune_*: a MindCV checkpoint, a new class count, frozen backbone, a folder dataset."""
    import os
    from PIL import Image
    root = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
    rng = np.random.default_rng(0)
    for split, n in (("train", 6), ("val", 2)):
        for k in range(3):
            os.makedirs(tmp_path / "data" / split / f"c{k}")
            for i in range(n):
                a = rng.integers(0, 60, (16, 16, 3), dtype=np.uint8)
                a[:, :, k] = 220
                Image.fromarray(a).save(tmp_path / "data" / split / f"c{k}" / f"{i}.png")
    from mindshuffle.cli import train
    path, _ = mindcv_v2
    run = str(tmp_path / "run")
    rc = train.main(["--config", os.path.join(root, "configs", "finetune_shufflenet_v2_x1_0_cpu.yaml"),
                     "--model", "shufflenet_v2_x0_5", "--ckpt_path", path, "--data_dir", str(tmp_path / "data"),
                     "--ckpt_save_dir", run, "--freeze_backbone", "True", "--image_resize", "16",
                     "--batch_size", "6", "--epoch_size", "1", "--warmup_epochs", "0", "--num_parallel_workers", "1",
                     "--crop_pct", "1.0"])
    assert rc == 0
    src = ms.load_checkpoint(path)
    got = ms.load_checkpoint(os.path.join(run, "last.ckpt"))
    # the backbone is the MindCV checkpoint's, untouched; the classifier is new, for 3 classes, and trained
    for theirs, ours in (("conv_last.0.weight", "conv5.conv.weight"),
                         ("features.3.branch_main.5.weight", "stage2.3.branch_main.2.conv.weight"),
                         ("first_conv.1.gamma", "conv1.bn.gamma")):
        np.testing.assert_array_equal(got[ours].asnumpy(), src[theirs].asnumpy())
    assert got["classifier.weight"].shape == (3, 1024)
