"""Augmentation keys from MindCV: auto_augment policies, mixup/cutmix soft targets, repeated augmentation."""
import collections
import csv
import os
import random

import numpy as np
import pytest

from mindshuffle import data as D
from mindshuffle.recipe import RecipeError, load
from mindshuffle.train.inputs import TrainInputs
from cli_helpers import tool as _tool
from test_train import base_args, make_dataset

CLASSES = 6


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    return make_dataset(str(tmp_path_factory.mktemp("aug_ds")))


def _cfg(**kw):
    return load(None, {"data_dir": "unused", **{k: str(v) for k, v in kw.items()}})


def _constant_batch(n=6, size=12):
    """Image i is the constant value 10 * (i + 1) in every channel and pixel; its label is i."""
    values = 10.0 * (np.arange(n) + 1)
    images = np.ones((n, 3, size, size), np.float32) * values[:, None, None, None]
    return images, np.arange(n, dtype=np.int32), values


def _onehot(i, c=CLASSES):
    return np.eye(c, dtype=np.float32)[i]


def test_mixup_mixes_images_and_labels_with_one_lam():
    mix = D.batch_mix(_cfg(mixup=0.4), CLASSES)
    mixed_any = False
    for _ in range(5):  # five batches of one epoch: five draws
        images, labels, values = _constant_batch()
        x, target = mix(images.copy(), labels)
        assert target.shape == (6, CLASSES) and target.dtype == np.float32
        for i in range(6):
            j = 5 - i  # MindCV mixes the batch with its mirror image
            lam = (x[i, 0, 0, 0] - values[j]) / (values[i] - values[j])
            assert np.allclose(x[i], x[i, 0, 0, 0])  # mixup: the whole image, one weight
            np.testing.assert_allclose(target[i], lam * _onehot(i) + (1 - lam) * _onehot(j), atol=1e-5)
            mixed_any |= not np.isclose(lam, 1.0)
    assert mixed_any


def test_cutmix_lam_is_the_pasted_area_fraction():
    mix = D.batch_mix(_cfg(cutmix=1.0), CLASSES)
    seen = 0
    for _ in range(8):
        images, labels, values = _constant_batch()
        x, target = mix(images.copy(), labels)
        for i in range(6):
            j = 5 - i
            pasted = np.mean(x[i] == values[j])
            assert np.all((x[i] == values[i]) | (x[i] == values[j]))  # pixels are one image's or the other's
            np.testing.assert_allclose(target[i], (1 - pasted) * _onehot(i) + pasted * _onehot(j), atol=1e-6)
            seen += 0 < pasted < 1
    assert seen


def test_cutmix_prob_zero_leaves_batches_alone_with_one_hot_targets():
    mix = D.batch_mix(_cfg(mixup=1.0, cutmix=1.0, cutmix_prob=0), CLASSES)
    images, labels, _ = _constant_batch()
    x, target = mix(images.copy(), labels)
    np.testing.assert_array_equal(x, images)
    np.testing.assert_array_equal(target, np.eye(CLASSES, dtype=np.float32)[labels])
    assert D.batch_mix(_cfg(), CLASSES) is None  # off by default


def test_soft_target_loss_folds_in_label_smoothing_as_mindcv():
    """The loss on mixed targets is cross-entropy against (1 - s) * target + s / C (MindCV's CrossEntropySmooth)."""
    import mindspore as ms
    from mindshuffle.train.build import make_loss
    logits = np.random.default_rng(0).normal(size=(4, CLASSES)).astype(np.float32)
    target = 0.7 * np.eye(CLASSES, dtype=np.float32)[[0, 1, 2, 3]] + 0.3 * np.eye(CLASSES, dtype=np.float32)[
        [3, 2, 1, 0]]
    loss = float(make_loss(_cfg(label_smoothing=0.1))(ms.Tensor(logits), ms.Tensor(target)).asnumpy())
    logp = logits - np.log(np.exp(logits).sum(1, keepdims=True))
    want = -(((0.9 * target + 0.1 / CLASSES) * logp).sum(1)).mean()
    assert loss == pytest.approx(want, rel=1e-5)


def test_mixed_batches_leave_the_pipeline_normalised_on_the_host(data_dir):
    cfg = load(None, {"data_dir": data_dir, "mixup": "0.2", "cutmix": "1.0", "image_resize": "16",
                      "batch_size": "4", "num_parallel_workers": "1"})
    files = D.scan("folder", data_dir, "train")
    tf, prep = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, True)
    assert prep is None  # mixing needs the float CHW batch
    loader, _ = D.build_loader(cfg, files, np.arange(len(files)), tf, is_training=True)
    batches = list(loader.create_tuple_iterator(output_numpy=True))
    assert batches
    for x, y in batches:
        assert x.shape == (4, 3, 16, 16) and y.shape == (4, len(files.classes)) and y.dtype == np.float32
        np.testing.assert_allclose(y.sum(1), 1.0, atol=1e-5)


def _draws(mix, batches=3):
    out = []
    for _ in range(batches):
        images, labels, _ = _constant_batch()
        out.append(mix(images, labels))
    return out


def _same(a, b):
    return all(np.array_equal(x, y) and np.array_equal(s, t) for (x, s), (y, t) in zip(a, b))


def test_mixing_is_a_function_of_seed_rank_and_epoch():
    """A resumed run mixes epoch e as the uninterrupted run did: the draws depend on (seed, rank, epoch) only,
    not on numpy's global state or on what was drawn before; mixing leaves the global state alone."""
    cfg = _cfg(mixup=0.4, cutmix=1.0, seed=5)
    np.random.seed(0)
    first = _draws(D.batch_mix(cfg, CLASSES, rank=1, start_epoch=3))
    np.random.seed(123)
    _draws(D.batch_mix(cfg, CLASSES, rank=1, start_epoch=2))          # another epoch drawn in between
    state = np.random.get_state()[1].copy()
    again = _draws(D.batch_mix(cfg, CLASSES, rank=1, start_epoch=3))
    assert _same(first, again) and np.array_equal(np.random.get_state()[1], state)
    assert not _same(first, _draws(D.batch_mix(cfg, CLASSES, rank=0, start_epoch=3)))
    assert not _same(first, _draws(D.batch_mix(cfg, CLASSES, rank=1, start_epoch=4)))
    assert not _same(first, _draws(D.batch_mix(_cfg(mixup=0.4, cutmix=1.0, seed=6), CLASSES, 1, 3)))


def test_mixup_off_epoch_stops_mixing_from_that_epoch_on():
    """mixup_off_epoch 2 with 2 batches per epoch: epochs 0 and 1 mixed, epoch 2 plain with one-hot targets."""
    mix = D.batch_mix(_cfg(mixup=1.0, cutmix=1.0, mixup_off_epoch=2), CLASSES, steps_per_epoch=2)
    images, labels, _ = _constant_batch()
    out = _draws(mix, batches=6)
    assert all(not np.array_equal(x, images) for x, _ in out[:4])
    for x, target in out[4:]:
        np.testing.assert_array_equal(x, images)
        np.testing.assert_array_equal(target, np.eye(CLASSES, dtype=np.float32)[labels])
    x, target = _draws(D.batch_mix(_cfg(mixup=1.0, mixup_off_epoch=2), CLASSES, start_epoch=2), 1)[0]
    np.testing.assert_array_equal(x, images)   # a per-epoch loader of epoch 2 (0-based)


def test_a_resumed_run_mixes_as_the_uninterrupted_one(data_dir):
    """Host feed: the loader of epoch e mixes alike however often it is built. Sink mode (one pipeline for every
    epoch, the epoch known by counting batches): the dataset built to resume at epoch 1 mixes epoch 1 as the one
    built at epoch 0 did; with numpy's global state (as before) the two differed."""
    cfg = load(None, {"data_dir": data_dir, "mixup": "0.5", "cutmix": "1.0", "image_resize": "16",
                      "batch_size": "4", "num_parallel_workers": "1", "crop_pct": "1.0", "seed": "3"})
    files = D.scan("folder", data_dir, "train")
    tf = D.build_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=False)   # no random crops
    steps = len(files) // 4

    def loader(epoch):
        idx = D.epoch_indices(len(files), epoch, cfg.seed, 0, 1)[:steps * 4]
        dataset, _ = D.build_loader(cfg, files, idx, tf, is_training=True, epoch=epoch)
        return list(dataset.create_tuple_iterator(output_numpy=True))

    def sink(start, epochs):
        dataset, _ = D.build_train_dataset(cfg, files, tf, 0, 1, steps, start)
        dataset.output_shapes()                                # a getter first, as MindSpore's data_sink does
        it = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
        return [list(it) for _ in range(epochs)]

    def equal(a, b):
        return len(a) == len(b) == steps and all(np.array_equal(x, u) and np.array_equal(y, v)
                                                 for (x, y), (u, v) in zip(a, b))

    np.random.seed(1)
    first = loader(1)
    np.random.seed(2)
    assert equal(first, loader(1)) and not equal(first, loader(2))
    fresh, resumed = sink(0, 2), sink(1, 1)
    assert equal(fresh[1], resumed[0]) and not equal(fresh[0], fresh[1])


def test_auto_augment_epochs_repeat_after_a_resume_and_differ_by_rank(data_dir):
    """The engine seeds each epoch's augmentation (MindSpore's ops and the Python/numpy states MindCV's policies
    draw from) by (seed, rank, epoch): one worker gives the same images for the same epoch whatever ran before,
    another rank other images."""
    import random
    from mindshuffle.train.inputs import seed_augmentation
    cfg = load(None, {"data_dir": data_dir, "auto_augment": "randaug-m9-mstd0.5", "image_resize": "16",
                      "batch_size": "4", "num_parallel_workers": "1", "seed": "3"})
    files = D.scan("folder", data_dir, "train")
    tf, _ = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, True)
    idx = np.arange(len(files))

    def images(rank, epoch):
        seed_augmentation(cfg.seed, rank, epoch)
        dataset, _ = D.build_loader(cfg, files, idx, tf, is_training=True)
        return np.concatenate([x for x, _ in dataset.create_tuple_iterator(output_numpy=True)])

    first = images(0, 4)
    random.seed(99)
    np.random.seed(99)
    assert np.array_equal(first, images(0, 4))
    assert not np.array_equal(first, images(1, 4)) and not np.array_equal(first, images(0, 5))
    assert seed_augmentation(3, 0, 4) == 3004   # rank 0's seed as before ranks were counted in


def _shards(n, epoch, world, repeats, seed=7):
    return [D.epoch_indices(n, epoch, seed, r, world, repeats=repeats) for r in range(world)]


@pytest.mark.parametrize("world", [2, 4])
def test_repeated_augmentation_shards_are_distinct_and_complete(world):
    repeats = 3
    for n in (12, 13):
        for epoch in range(3):
            shards = _shards(n, epoch, world, repeats)
            assert len({len(s) for s in shards}) == 1
            stream = np.stack(shards, 1).reshape(-1)  # position p of the epoch's stream went to rank p % world
            body, wrap = stream[:n * repeats], stream[n * repeats:]
            assert collections.Counter(body.tolist()) == {i: repeats for i in range(n)}
            assert len(wrap) == (-n * repeats) % world and np.array_equal(wrap, body[:len(wrap)])
            for k in range(n):  # the r copies of an image sit on r different ranks (when there are >= r)
                ranks = {p % world for p in np.flatnonzero(body == k)}
                assert len(ranks) == min(repeats, world)
        assert not np.array_equal(_shards(n, 0, world, repeats)[0], _shards(n, 1, world, repeats)[0])


@pytest.mark.parametrize("world", [2, 4])
def test_repeated_augmentation_is_mindcvs_rule(world):
    """Unshuffled, each rank's shard cut to the epoch's usual length is MindCV's RepeatAugSampler's."""
    from mindcv.data.distributed_sampler import RepeatAugSampler
    n = 13
    for rank in range(world):
        theirs = list(RepeatAugSampler(n, world, rank, shuffle=False, num_repeats=3, selected_round=0))
        ours = D.epoch_indices(n, 0, 0, rank, world, shuffle=False, repeats=3)[:len(theirs)]
        assert ours.tolist() == theirs


def test_repeated_augmentation_keeps_the_epoch_length(data_dir):
    """The train inputs cut each rank's repeated shard to the steps of an epoch without repeats."""
    plain = TrainInputs(load(None, {"data_dir": data_dir, "batch_size": "4"}), 2)
    rep = TrainInputs(load(None, {"data_dir": data_dir, "batch_size": "4", "aug_repeats": "3"}), 2)
    assert rep.steps == plain.steps
    idx = [rep.indices(1, r, 2) for r in range(2)]
    assert len(idx[0]) == len(idx[1]) == rep.steps * 4
    assert max(collections.Counter(np.concatenate(idx).tolist()).values()) > 1  # copies across the ranks


POLICIES = ["randaug-m9-mstd0.5-inc1", "autoaug", "3a", "trivialaugwide", "augmix"]


@pytest.mark.parametrize("policy", POLICIES)
def test_auto_augment_policies_build_change_images_and_repeat_under_a_seed(policy):
    cfg = _cfg(auto_augment=policy, image_resize=32)
    tf = D.build_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=True)
    ops = [t for t in tf if type(t).__module__.startswith("mindcv")]
    assert len(ops) == 1
    img = np.random.RandomState(1).randint(0, 255, (32, 32, 3)).astype(np.uint8)

    def run(seed):
        random.seed(seed)
        np.random.seed(seed)
        return np.asarray(ops[0](img.copy()))

    changed = 0
    for seed in range(4):
        a, b = run(seed), run(seed)
        np.testing.assert_array_equal(a, b)
        changed += not np.array_equal(a.astype(np.float32), img.astype(np.float32))
    assert changed


@pytest.mark.parametrize("policy,on_device", [("randaug-m9-mstd0.5", True), ("augmix", False)])
def test_auto_augment_runs_in_the_pipeline(data_dir, policy, on_device):
    """uint8-preserving policies keep the device normalisation (ImagePrep); AugMix's float images do not."""
    cfg = load(None, {"data_dir": data_dir, "auto_augment": policy, "image_resize": "16", "batch_size": "4",
                      "num_parallel_workers": "1"})
    files = D.scan("folder", data_dir, "train")
    tf, prep = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, True)
    assert (prep is not None) == on_device
    loader, _ = D.build_loader(cfg, files, np.arange(len(files)), tf, is_training=True)
    x, y = next(loader.create_tuple_iterator(output_numpy=True))
    assert x.shape == ((4, 16, 16, 3) if on_device else (4, 3, 16, 16))
    assert x.dtype == (np.uint8 if on_device else np.float32) and y.dtype == np.int32


@pytest.mark.parametrize("form", ["space", "equals"])
def test_keys_parse_in_both_forms(form):
    given = {"auto_augment": "randaug-m9-mstd0.5-inc1", "mixup": "0.2", "cutmix": "1.0", "cutmix_prob": "0.5",
             "aug_repeats": "3"}
    argv = ["--data_dir", "x"]
    for k, v in given.items():
        argv += [f"--{k}", v] if form == "space" else [f"--{k}={v}"]
    cfg = load(None, argv)
    assert (cfg.auto_augment, cfg.mixup, cfg.cutmix, cfg.cutmix_prob, cfg.aug_repeats) == \
        ("randaug-m9-mstd0.5-inc1", 0.2, 1.0, 0.5, 3)
    off = load(None, ["--data_dir", "x"])
    assert (off.auto_augment, off.mixup, off.cutmix, off.aug_repeats) == ("", 0.0, 0.0, 0)


@pytest.mark.parametrize("key,value,says", [
    ("auto_augment", "randaugment", "randaug-m9-mstd0.5-inc1"),
    ("auto_augment", "randaug-q3", "MindCV's forms"),
    ("auto_augment", "trivialaugwide-mstd0.5", "trivialaugwide[-mN]"),
    ("mixup", "-0.1", ">= 0"),
    ("cutmix", "-1", ">= 0"),
    ("cutmix_prob", "1.5", "between 0 and 1"),
    ("cutmix_prob", "-0.5", ">= 0"),
    ("aug_repeats", "-1", ">= 0"),
    ("aug_repeats", "1.5", "integer"),
])
def test_bad_values_are_one_line_recipe_errors(key, value, says):
    for argv in (["--data_dir", "x", f"--{key}", value], ["--data_dir", "x", f"--{key}={value}"]):
        with pytest.raises(RecipeError) as e:
            load(None, argv)
        assert key in str(e.value) and says in str(e.value) and "\n" not in str(e.value)


def test_train_with_mixup_cutmix_and_randaugment(data_dir, tmp_path):
    run = str(tmp_path / "run")
    args = base_args(data_dir, run, "--mixup", "0.2", "--cutmix", "1.0", "--auto_augment", "randaug-m9-mstd0.5",
                     "--epoch_size", "1", "--val_interval", "1")
    assert _tool("train").main(args) == 0
    with open(os.path.join(run, "metrics.csv")) as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == 1
    row = rows[0]
    top1 = [v for k, v in row.items() if "top1" in k and "train" in k]
    assert top1 and 0.0 <= float(top1[0]) <= 100.0


def test_train_top1_with_soft_targets_counts_the_larger_share():
    """The step counts a prediction correct when it is the argmax of the mixed target (lr 0: logits unchanged)."""
    import dataclasses
    import mindspore as ms
    from mindshuffle.train.build import make_loss, make_optimizer
    from mindshuffle.train.plan import resolve
    from mindshuffle.train.step import TrainStep, compile_fn
    from test_step import CLASSES as C, _cfg as step_cfg, _twin
    cfg = step_cfg()
    plan = dataclasses.replace(resolve(cfg, 0, 1, 1), sink_size=1)
    net = _twin()
    net.set_train(True)
    x = np.random.default_rng(3).standard_normal((8, 3, 8, 8)).astype(np.float32)
    predicted = net(ms.Tensor(x)).asnumpy().argmax(1)
    first = (predicted + np.array([0, 0, 0, 1, 1, 2, 3, 0])) % C  # 4 of 8 targets lean to the predicted class
    target = 0.6 * np.eye(C, dtype=np.float32)[first] + 0.4 * np.eye(C, dtype=np.float32)[(first + 1) % C]
    step = TrainStep(net, make_loss(cfg), make_optimizer(net, cfg, np.zeros(1, np.float32), 1.0), plan)
    compile_fn(step.step, plan)(ms.Tensor(x), ms.Tensor(target))
    m = step.metrics.read()
    assert m["seen"] == 8 and m["correct"] == 4
