"""Data: folder and Tiny ImageNet layouts, digits preparation, channel statistics, sharding, bad images."""
import io
import json
import os

import numpy as np
import pytest
from PIL import Image

from mindshuffle import data as D
from mindshuffle.data.checks import _image_problem
from mindshuffle.data.source import _Source
from mindshuffle.recipe import load


def _img(path, value, size=8):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    a = np.zeros((size, size, 3), np.uint8)
    a[..., 0], a[..., 1], a[..., 2] = value, 255 - value, 100
    Image.fromarray(a).save(path)


def test_folder_layout_and_class_order(tmp_path):
    for c, n in (("b_cat", 3), ("a_dog", 2)):
        for i in range(n):
            _img(str(tmp_path / "train" / c / f"{i}.png"), 10 * i)
    _img(str(tmp_path / "val" / "b_cat" / "0.jpg"), 5)
    (tmp_path / "train" / "b_cat" / "notes.txt").write_text("not an image")
    tr = D.scan("folder", str(tmp_path), "train")
    assert tr.classes == ["a_dog", "b_cat"] and len(tr) == 5
    assert list(tr.labels) == [0, 0, 1, 1, 1]
    va = D.scan("imagenet", str(tmp_path), "val", classes=tr.classes)
    assert len(va) == 1 and va.labels[0] == 1          # label from the training class order


def test_folder_errors_name_the_problem(tmp_path):
    with pytest.raises(D.DataError, match="does not exist"):
        D.scan("folder", str(tmp_path / "nope"), "train")
    os.makedirs(tmp_path / "train" / "empty")
    _img(str(tmp_path / "train" / "full" / "0.png"), 1)
    with pytest.raises(D.DataError, match=r"class folder .*empty.* has no images"):
        D.scan("folder", str(tmp_path), "train")
    _img(str(tmp_path / "val" / "other" / "0.png"), 1)
    with pytest.raises(D.DataError, match="not in the training set: other"):
        D.scan("folder", str(tmp_path), "val", classes=["empty", "full"])


def _listing(root):
    return sorted((os.path.relpath(os.path.join(d, f), root), os.lstat(os.path.join(d, f)).st_mtime_ns)
                  for d, dirs, files in os.walk(root) for f in dirs + files)


@pytest.mark.parametrize("link, target", [("a", "."), ("b_cat/loop", ".."), ("b_cat/deep/up", "../.."),
                                          ("a", "a"), ("a", "..")])
def test_symlink_loop_is_an_error_not_a_class(tmp_path, link, target):
    for c in ("b_cat", "c_dog"):
        _img(str(tmp_path / "train" / c / "deep" / "0.png"), 10)
    os.symlink(target, tmp_path / "train" / link)          # relative to the link's own folder
    with pytest.raises(D.DataError) as e:
        D.scan("folder", str(tmp_path), "train")
    assert str(tmp_path / "train" / link) in str(e.value) and "symlink loop" in str(e.value)
    assert "\n" not in str(e.value)


def test_symlinked_class_folder_elsewhere_still_read(tmp_path):
    _img(str(tmp_path / "elsewhere" / "cats" / "0.png"), 10)
    _img(str(tmp_path / "data" / "train" / "dogs" / "0.png"), 20)
    os.symlink(tmp_path / "elsewhere" / "cats", tmp_path / "data" / "train" / "cats")
    tr = D.scan("folder", str(tmp_path / "data"), "train")
    assert tr.classes == ["cats", "dogs"] and len(tr) == 2


def test_digits_refuse_a_folder_not_prepared_by_mindshuffle(tmp_path):
    _img(str(tmp_path / "cats" / "0.png"), 10)
    before = _listing(tmp_path)
    with pytest.raises(D.DataError, match=r"already holds cats and was not prepared by mindshuffle"):
        D.scan("digits", str(tmp_path), "train")
    assert _listing(tmp_path) == before                    # nothing written, nothing touched


def _tiny(root):
    wnids = ["n02", "n01", "n03"]
    (root / "wnids.txt").write_text("\n".join(wnids) + "\n")
    (root / "words.txt").write_text("n01\tgoldfish, Carassius auratus\nn02\ttabby, tabby cat\n"
                                    "n03\tbullfrog\nn99\tunused\n")
    for w in wnids:
        for i in range(2):
            _img(str(root / "train" / w / "images" / f"{w}_{i}.JPEG"), i * 50)
        (root / "train" / w / f"{w}_boxes.txt").write_text("")
    lines = []
    for i, w in enumerate(["n03", "n01", "n01", "n02"]):
        _img(str(root / "val" / "images" / f"val_{i}.JPEG"), 30)
        lines.append(f"val_{i}.JPEG\t{w}\t0\t0\t7\t7")
    (root / "val" / "val_annotations.txt").write_text("\n".join(lines) + "\n")


def test_tiny_imagenet_layout_read_as_is(tmp_path):
    _tiny(tmp_path)
    tr = D.scan("tiny_imagenet", str(tmp_path), "train")
    assert tr.classes == ["n01", "n02", "n03"] and tr.names == ["goldfish", "tabby", "bullfrog"]
    assert len(tr) == 6 and all("/images/" in p for p in tr.paths)
    assert [os.path.basename(p).split("_")[0] for p in tr.paths] == [tr.classes[k] for k in tr.labels]
    va = D.scan("tiny_imagenet", str(tmp_path), "val")
    assert len(va) == 4 and list(va.labels) == [2, 0, 0, 1]
    assert va.paths[0].endswith(os.path.join("val", "images", "val_0.JPEG"))
    with open(tmp_path / "val" / "val_annotations.txt", "a") as f:
        f.write("val_9.JPEG\tn77\t0\t0\t1\t1\n")
    with pytest.raises(D.DataError, match="n77"):
        D.scan("tiny_imagenet", str(tmp_path), "val")
    os.remove(tmp_path / "wnids.txt")
    with pytest.raises(D.DataError, match="wnids.txt"):
        D.scan("tiny_imagenet", str(tmp_path), "train")


def test_digits_prepared_with_fixed_split(tmp_path):
    root = str(tmp_path / "digits")
    tr = D.scan("digits", root, "train")
    va = D.scan("digits", root, "val", classes=tr.classes)
    assert tr.classes == [str(d) for d in range(10)]
    assert len(tr) + len(va) == 1797 and len(va) == 360
    assert not set(map(os.path.basename, tr.paths)) & set(map(os.path.basename, va.paths))
    counts = np.bincount(va.labels, minlength=10)
    assert counts.min() >= 35                                # stratified
    with Image.open(tr.paths[0]) as im:
        assert im.size == (32, 32) and im.mode == "RGB"
    again = D.scan("digits", root, "val", classes=tr.classes)  # second call reuses the files
    assert again.paths == va.paths
    os.remove(os.path.join(root, ".prepared"))                # an interrupted preparation of ours continues
    assert D.scan("digits", root, "train").paths == tr.paths


def test_mean_std_auto_computed_and_cached(tmp_path):
    for c, v in (("a", 0), ("b", 200)):
        _img(str(tmp_path / "train" / c / "0.png"), v)
    tr = D.scan("folder", str(tmp_path), "train")
    mean, std = D.channel_stats(tr)
    # the constant blue channel: std floored at one grey level
    assert mean == pytest.approx([100, 155, 100], abs=1e-3) and std == pytest.approx([100, 100, 1], abs=1e-2)
    cfg = load(None, ["--data_dir", str(tmp_path), "--mean", "auto", "--std", "auto"])
    m2, s2 = D.resolve_stats(cfg, tr)
    cache = tmp_path / "mean_std.json"
    assert m2 == mean and cache.is_file()
    entry = next(iter(json.loads(cache.read_text()).values()))
    assert entry["mean"] == mean and entry["std"] == std
    cfg2 = load(None, ["--data_dir", str(tmp_path), "--mean", "[1, 2, 3]", "--std", "imagenet"])
    assert D.resolve_stats(cfg2, tr) == ([1, 2, 3], D.IMAGENET_STD)


def test_shards_are_disjoint_and_cover_the_epoch():
    n, world = 23, 4
    shards = [D.epoch_indices(n, 3, seed=7, rank=r, world=world) for r in range(world)]
    assert len({len(s) for s in shards}) == 1                       # equal step counts
    flat = np.concatenate(shards)
    assert set(flat.tolist()) == set(range(n)) and len(flat) == 24  # one sample repeated as padding
    even = [D.epoch_indices(20, 0, 7, r, 2) for r in range(2)]
    assert not set(even[0]) & set(even[1])
    assert not np.array_equal(D.epoch_indices(20, 0, 7), D.epoch_indices(20, 1, 7))  # reshuffled per epoch
    assert np.array_equal(D.epoch_indices(20, 1, 7), D.epoch_indices(20, 1, 7))      # reproducible
    val = [D.epoch_indices(5, 0, 7, r, 2, shuffle=False, pad=False) for r in range(2)]
    assert sorted(np.concatenate(val).tolist()) == list(range(5))


def test_unreadable_image_skipped_or_fatal(tmp_path, caplog):
    for i in range(3):
        _img(str(tmp_path / "train" / "a" / f"{i}.png"), i)
    (tmp_path / "train" / "a" / "1.png").write_bytes(b"\x89PNG broken")
    tr = D.scan("folder", str(tmp_path), "train")
    src = _Source(tr, np.arange(3), strict=False)
    with caplog.at_level("WARNING"):
        imgs = [src[k][0] for k in range(3)]
        src[1]
    assert len(imgs) == 3 and np.array_equal(imgs[1], imgs[2])       # the next readable image stands in
    warned = [r for r in caplog.records if "1.png" in r.getMessage()]
    assert len(warned) == 1                                          # named once
    strict = _Source(tr, np.arange(3), strict=True)
    with pytest.raises(D.DataError, match=r"unreadable image .*1\.png"):
        strict[1]
    assert "1.png" in strict.first_error


def test_loader_batches_with_mindcv_transforms(tmp_path):
    for c in ("a", "b"):
        for i in range(3):
            _img(str(tmp_path / "train" / c / f"{i}.png"), 40 * i, size=20)
    cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "16", "--batch_size", "4",
                      "--num_parallel_workers", "1", "--crop_pct", "1.0"])
    tr = D.scan("folder", str(tmp_path), "train")
    tf = D.build_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=True)
    loader, _ = D.build_loader(cfg, tr, np.arange(6), tf, is_training=True)
    batches = list(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert len(batches) == 1 and batches[0][0].shape == (4, 3, 16, 16) and batches[0][1].dtype == np.int32
    vtf = D.build_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=False)
    vl, _ = D.build_loader(cfg, tr, np.arange(6), vtf, is_training=False)
    labels = np.concatenate([b[1] for b in vl.create_tuple_iterator(num_epochs=1, output_numpy=True)])
    assert labels.tolist() == [0, 0, 0, 1, 1, 1]                    # no drop, order kept for evaluation


def test_rotation_and_translate_move_the_image(tmp_path):
    """A bright dot at the centre: with rotation/translate off it stays put; with a shift it moves, and the
    background brought in is 0 (black)."""
    a = np.zeros((32, 32, 3), np.uint8)
    a[14:18, 14:18] = 255
    os.makedirs(tmp_path / "train" / "a")
    for i in range(8):
        Image.fromarray(a).save(str(tmp_path / "train" / "a" / f"{i}.png"))
    tr = D.scan("folder", str(tmp_path), "train")

    def batch(*extra):
        cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "32", "--batch_size", "8",
                          "--num_parallel_workers", "1", "--scale", "[1.0, 1.0]", "--ratio", "[1.0, 1.0]",
                          "--hflip", "0", *extra])
        tf = D.build_transforms(cfg, [0, 0, 0], [1, 1, 1], is_training=True)
        loader, _ = D.build_loader(cfg, tr, np.arange(8), tf, is_training=True)
        return [type(t).__name__ for t in tf], next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]

    names, plain = batch()
    assert "RandomAffine" not in names
    centres = [np.argwhere(img[0] > 128).mean(0) for img in plain]
    assert all(np.abs(c - 15.5).max() < 1.0 for c in centres)
    names, moved = batch("--translate", "0.25", "--rotation", "30")
    assert names[:3] == ["Decode", "RandomAffine", "RandomResizedCrop"]
    centres = np.array([np.argwhere(img[0] > 64).mean(0) for img in moved])
    assert np.abs(centres - 15.5).max() > 2.0                    # shifted by up to 8 px
    assert moved[:, :, 0, 0].max() == 0 and moved.max() > 128   # corners stay background; the dot is there


# -- the pipeline: order, shards, bad files, colour modes, normalisation on the device -------------------------

def _one_per_class(root, n, size=20):
    """``n`` class folders of one PNG each, so a label names its file (label k = file k in scan order)."""
    for k in range(n):
        _img(str(root / "train" / f"c{k:02d}" / "0.png"), 17 * k % 256, size=size)
    return D.scan("folder", str(root), "train")


def _labels(dataset, epochs=1):
    it = dataset.create_tuple_iterator(num_epochs=epochs, output_numpy=True)
    return [np.concatenate([b[1] for b in it]).tolist() for _ in range(epochs)]


def test_loader_and_sink_dataset_follow_epoch_indices(tmp_path):
    """Both builders read exactly epoch_indices' samples in its order, per rank; the sink dataset's k-th pass
    is epoch start+k, also after MindSpore's getters (as data_sink calls them) built pipelines of their own."""
    import mindspore.dataset as ds
    tr = _one_per_class(tmp_path, 13)
    cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "16", "--batch_size", "2",
                      "--num_parallel_workers", "1", "--seed", "5"])
    tf, prep = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=True)
    assert prep is not None
    steps = 3                                            # 13 files, 2 ranks: 7 each (padded), 3 batches of 2
    for rank in range(2):
        want = [D.epoch_indices(13, e, 5, rank, 2)[:steps * 2].tolist() for e in range(3, 6)]
        for e in range(3, 6):
            loader, _ = D.build_loader(cfg, tr, D.epoch_indices(13, e, 5, rank, 2)[:steps * 2], tf, True)
            assert _labels(loader) == [want[e - 3]]
        sink, _ = D.build_train_dataset(cfg, tr, tf, rank, 2, steps, start_epoch=3)
        assert sink.get_col_names() == ["image", "label"] and sink.get_dataset_size() == steps
        assert sink.output_shapes()[0] == [2, 16, 16, 3] and sink.output_types()[0] == np.uint8
        assert _labels(sink, epochs=3) == want
    seed, runs = ds.config.get_seed(), []                # one worker: the same seed gives the same batches
    for _ in range(2):
        ds.config.set_seed(11)
        loader, _ = D.build_loader(cfg, tr, np.arange(12), tf, True)
        runs.append(np.concatenate([b[0] for b in loader.create_tuple_iterator(num_epochs=1, output_numpy=True)]))
    ds.config.set_seed(seed)
    assert np.array_equal(runs[0], runs[1])


def _jpeg_bytes(size=(64, 48), seed=0):
    rng = np.random.default_rng(seed)
    a = np.clip(rng.normal(128, 40, (size[1] // 8, size[0] // 8, 3)), 0, 255).astype(np.uint8)
    buf = io.BytesIO()
    Image.fromarray(a).resize(size, Image.BICUBIC).save(buf, format="JPEG", quality=90)
    return buf.getvalue()


def test_cheap_checks_refuse_what_would_crash_the_decoder():
    """MindSpore 2.7.1's decoder dies (SIGFPE/SIGSEGV) on some of these, so the reader must refuse them."""
    good = _jpeg_bytes()
    sos = good.index(b"\xff\xda")
    dht = bytearray(good)
    dht[dht.index(b"\xff\xc4") + 4] = 0x57               # a Huffman table index that does not exist
    png = io.BytesIO()
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(png, format="PNG")
    png = png.getvalue()
    assert _image_problem(good) is None and _image_problem(png) is None
    assert _image_problem(b"") == "empty file, 0 bytes"
    assert "header" in _image_problem(good[:sos // 2])                 # cut inside the header
    assert "end-of-image" in _image_problem(good[:len(good) // 2 + sos // 2])   # cut inside the data
    assert "Huffman" in _image_problem(bytes(dht))
    assert "IEND" in _image_problem(png[:-12]) and "PNG" in _image_problem(png[:20])
    assert "not a JPEG" in _image_problem(b"GIF89a....")


def _bad_folder(root):
    """Six good PNGs in two classes, then a JPEG cut in half, a zero-byte file, and a PNG whose compressed data
    is damaged (it passes the cheap checks; only a decoder finds out)."""
    for k in range(6):
        _img(str(root / "train" / f"c{k % 2}" / f"{k}.png"), 30 * k, size=20)
    jpg = _jpeg_bytes()
    (root / "train" / "c0" / "cut.jpg").write_bytes(jpg[:len(jpg) // 2])
    (root / "train" / "c1" / "empty.jpg").write_bytes(b"")
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 255, (20, 20, 3), dtype=np.uint8)).save(buf, "PNG")
    png = bytearray(buf.getvalue())
    at = png.index(b"IDAT") + 20
    png[at:at + 200] = bytes(200)
    (root / "train" / "c1" / "zz_damaged.png").write_bytes(bytes(png))
    return D.scan("folder", str(root), "train")


def test_bad_images_skipped_and_named_once(tmp_path, caplog):
    tr = _bad_folder(tmp_path)
    assert len(tr) == 9
    cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "16", "--batch_size", "3",
                      "--num_parallel_workers", "2", "--shuffle", "False"])
    tf, _ = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=False)
    with caplog.at_level("WARNING", logger="mindshuffle.data"):
        for _ in range(2):                               # two epochs, each file named once in all
            loader, source = D.build_loader(cfg, tr, np.arange(9), tf, is_training=False)
            labels = _labels(loader)[0]
            assert len(labels) == 9 and source.first_error is None
    for name, why in (("cut.jpg", "truncated JPEG"), ("empty.jpg", "empty file, 0 bytes"),
                      ("zz_damaged.png", "cannot be decoded")):
        named = [r.getMessage() for r in caplog.records if name in r.getMessage()]
        assert len(named) == 1 and why in named[0] and "skipped" in named[0], named


def test_strict_data_stops_naming_the_file(tmp_path):
    tr = _bad_folder(tmp_path)
    cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "16", "--batch_size", "3",
                      "--num_parallel_workers", "1", "--strict_data", "True"])
    tf, _ = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=False)
    for name, why in (("cut.jpg", "truncated JPEG"), ("empty.jpg", "empty file"),
                      ("zz_damaged.png", "cannot be decoded")):
        good = [k for k, p in enumerate(tr.paths) if p.endswith(".png") and "zz" not in p]
        i = next(k for k, p in enumerate(tr.paths) if p.endswith(name))
        idx = np.array(good[:2] + [i] + good[2:5])
        loader, source = D.build_loader(cfg, tr, idx, tf, is_training=False)
        with pytest.raises(RuntimeError):               # what the training loop catches
            _labels(loader)
        assert name in source.first_error and why in source.first_error, source.first_error


def test_odd_colour_modes_decoded_to_rgb(tmp_path, caplog):
    """Grayscale PNG, CMYK JPEG and RGBA PNG are used, as 3-channel images of the right content."""
    rgb = np.zeros((20, 20, 3), np.uint8)
    rgb[..., 0], rgb[..., 1], rgb[..., 2] = 200, 120, 40
    folder = tmp_path / "train" / "a"
    os.makedirs(folder)
    Image.fromarray(rgb).convert("L").save(folder / "gray.png")
    Image.fromarray(rgb).convert("CMYK").save(folder / "cmyk.jpg", format="JPEG", quality=95)
    Image.fromarray(rgb).convert("RGBA").save(folder / "rgba.png")
    tr = D.scan("folder", str(tmp_path), "train")
    cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "16", "--batch_size", "3",
                      "--num_parallel_workers", "1", "--crop_pct", "1.0"])
    tf, _ = D.input_transforms(cfg, D.IMAGENET_MEAN, D.IMAGENET_STD, is_training=False)
    with caplog.at_level("WARNING", logger="mindshuffle.data"):
        loader, _ = D.build_loader(cfg, tr, np.arange(3), tf, is_training=False)
        (x, _), = list(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))
    assert not caplog.records and x.shape == (3, 16, 16, 3) and x.dtype == np.uint8
    gray = round(0.299 * 200 + 0.587 * 120 + 0.114 * 40)
    by_name = dict(zip([os.path.basename(p) for p in tr.paths], x.reshape(3, -1, 3).mean(1)))
    assert np.abs(by_name["gray.png"] - gray).max() < 2
    assert np.abs(by_name["cmyk.jpg"] - [200, 120, 40]).max() < 6
    assert np.abs(by_name["rgba.png"] - [200, 120, 40]).max() < 1


def test_image_prep_equals_host_normalisation(tmp_path):
    """The device-side ImagePrep (graph mode) gives MindCV's host Normalize + HWC2CHW result on real images."""
    import mindspore as ms
    folder = tmp_path / "train" / "a"
    os.makedirs(folder)
    for k in range(4):
        (folder / f"{k}.jpg").write_bytes(_jpeg_bytes((96, 72), seed=k))
    tr = D.scan("folder", str(tmp_path), "train")
    cfg = load(None, ["--data_dir", str(tmp_path), "--image_resize", "32", "--batch_size", "4",
                      "--num_parallel_workers", "1"])
    mean, std = [120.0, 110.0, 100.0], [60.0, 55.0, 50.0]
    host_tf = D.build_transforms(cfg, mean, std, is_training=False)
    tf, prep = D.input_transforms(cfg, mean, std, is_training=False)
    assert [type(t).__name__ for t in host_tf][-2:] == ["Normalize", "HWC2CHW"] and len(tf) == len(host_tf) - 2

    def batch(transforms):
        loader, _ = D.build_loader(cfg, tr, np.arange(4), transforms, is_training=False)
        return next(loader.create_tuple_iterator(num_epochs=1, output_numpy=True))[0]

    want, raw = batch(host_tf), batch(tf)
    assert raw.dtype == np.uint8 and raw.shape == (4, 32, 32, 3) and want.shape == (4, 3, 32, 32)
    @ms.jit
    def step(x):                                         # as a compiled step would apply it
        return prep(x)

    got = step(ms.Tensor(raw)).asnumpy()
    assert got.dtype == np.float32 and np.allclose(got, want, atol=1e-5)
    erase = load(None, ["--data_dir", str(tmp_path), "--re_prob", "0.25"])   # erasing needs the host tensor
    for training in (True, False):
        tf2, prep2 = D.input_transforms(erase, mean, std, is_training=training)
        assert prep2 is None and type(tf2[-1]).__name__ in ("HWC2CHW", "RandomErasing")
