"""Input-pipeline throughput: mindshuffle's loaders against MindCV's, with the Ascend recipe's transforms.

It times full epochs over an ImageNet-like folder (generated once: 2,000 JPEGs of 500x375 px, quality 90, 20
classes, smooth noise and shapes that compress like photos) for three loaders, all with the recipe's training
transforms (configs/shufflenet_v2_0.5_ascend.yaml: random resized crop to 224 px, horizontal flip 0.5, colour
jitter 0.4, bilinear, ImageNet mean/std), batch 64 and the same number of workers:

  mindcv   MindCV 0.3.0's create_dataset("imagenet") + create_transforms + create_loader,
  host     mindshuffle's build_loader with build_transforms (normalised on the host: float32 CHW out),
  device   mindshuffle's build_loader with input_transforms (uint8 HWC out; the compiled step normalises).

Every round times every loader once (one epoch each, in a rotated order), and the result is the median over
``--rounds`` rounds; the ratios against MindCV come from the same run. Each epoch is read with the iterator the
training loop uses (``create_tuple_iterator(num_epochs=1)``, MindSpore tensors). Nothing is written unless
``--write FILE`` is given (the report is appended to it).

    python bench/bench_pipeline.py --rounds 5
"""
from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import shlex
import statistics
import sys
import time

os.environ.setdefault("GLOG_v", "3")

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(HERE)
sys.path.insert(0, ROOT)

LOADERS = ("mindcv", "host", "device")
TARGET = 1.1  # mindshuffle / MindCV img/s


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--data", default="/tmp/mindshuffle_bench_imagenet", help="the generated folder (cached)")
    p.add_argument("--images", type=int, default=2000)
    p.add_argument("--classes", type=int, default=20)
    p.add_argument("--config", default=os.path.join(ROOT, "configs", "shufflenet_v2_0.5_ascend.yaml"))
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--workers", type=int, default=2, help="num_parallel_workers for every loader")
    p.add_argument("--rounds", type=int, default=5, help="interleaved rounds; the median is reported")
    p.add_argument("--loaders", default=",".join(LOADERS), help="comma list of mindcv, host, device")
    p.add_argument("--write", default="", help="append the Markdown report to this file (e.g. bench/RESULTS.md)")
    return p.parse_args(argv)


# -- the data ----------------------------------------------------------------------------------------------

def photo_like(rng, width: int = 500, height: int = 375):
    """An RGB uint8 image with a photo's mix of smooth shading, edges and sensor-like noise."""
    import numpy as np
    from PIL import Image, ImageDraw, ImageFilter
    out = np.zeros((height, width, 3), np.float32)
    for cells, amp in ((4, 90.0), (12, 40.0), (40, 20.0), (125, 14.0)):  # noise at four scales
        small = rng.normal(0, 1, (cells * 3 // 4 + 2, cells + 2, 3)).astype(np.float32)
        small = ((small - small.min()) / (np.ptp(small) + 1e-6) * 255).astype(np.uint8)
        layer = np.asarray(Image.fromarray(small).resize((width, height), Image.BICUBIC), np.float32)
        out += (layer - 128) * (amp / 128)
    out += rng.uniform(60, 190, 3).astype(np.float32)
    img = Image.fromarray(np.clip(out, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(img)
    for _ in range(int(rng.integers(4, 10))):  # a few hard-edged objects
        x0, y0 = int(rng.integers(0, width)), int(rng.integers(0, height))
        box = [x0, y0, x0 + int(rng.integers(20, 200)), y0 + int(rng.integers(20, 150))]
        fill = tuple(int(v) for v in rng.integers(0, 256, 3))
        (draw.ellipse if rng.random() < 0.5 else draw.rectangle)(box, fill=fill)
    img = np.asarray(img.filter(ImageFilter.GaussianBlur(1.0)), np.float32)
    return np.clip(img + rng.normal(0, 6, img.shape).astype(np.float32), 0, 255).astype(np.uint8)


def make_data(root: str, images: int, classes: int) -> dict:
    """``root/train/class_<k>/<i>.jpg`` once; a marker file records what is there. Returns its description."""
    import numpy as np
    from PIL import Image
    marker = os.path.join(root, ".generated.json")
    want = {"images": images, "classes": classes, "size": [500, 375], "quality": 90, "seed": 0}
    if os.path.isfile(marker):
        with open(marker) as f:
            have = json.load(f)
        if {k: have.get(k) for k in want} == want:
            return have
        raise SystemExit(f"{root} holds another generated set ({have}); pass another --data")
    print(f"generating {images} JPEGs in {root} (once) ...", flush=True)
    rng = np.random.default_rng(0)
    total = 0
    for i in range(images):
        folder = os.path.join(root, "train", f"class_{i % classes:02d}")
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"{i:05d}.jpg")
        Image.fromarray(photo_like(rng)).save(path, quality=90)
        total += os.path.getsize(path)
    have = dict(want, mean_kb=round(total / images / 1024, 1))
    with open(marker, "w") as f:
        json.dump(have, f)
    return have


# -- the loaders -------------------------------------------------------------------------------------------

def recipe(args):
    from mindshuffle.recipe import load
    return load(args.config, ["--data_dir", args.data, "--dataset", "folder", "--num_parallel_workers",
                              str(args.workers), "--batch_size", str(args.batch), "--device_target", "CPU",
                              "--distribute", "False"])


def make_loaders(args, cfg) -> dict:
    """name -> a function building that loader's dataset for one epoch."""
    from mindcv.data import create_dataset, create_loader, create_transforms
    from mindshuffle import data as D
    files = D.scan("folder", args.data, "train")
    mean, std = D.resolve_stats(cfg, files)
    idx = D.epoch_indices(len(files), 0, cfg.seed)
    idx = idx[:len(idx) // args.batch * args.batch]
    host_tf = D.build_transforms(cfg, mean, std, is_training=True)
    device_tf, prep = D.input_transforms(cfg, mean, std, is_training=True)
    assert prep is not None, "the recipe should allow normalisation on the device"

    def mindcv():
        dataset = create_dataset(name="imagenet", root=args.data, split="train", shuffle=True,
                                 num_parallel_workers=args.workers)
        tf = create_transforms("imagenet", image_resize=cfg.image_resize, is_training=True, scale=tuple(cfg.scale),
                               ratio=tuple(cfg.ratio), hflip=cfg.hflip, color_jitter=cfg.color_jitter,
                               interpolation=cfg.interpolation, mean=mean, std=std)
        return create_loader(dataset, batch_size=args.batch, drop_remainder=True, is_training=True,
                             num_classes=len(files.classes), transform=tf, num_parallel_workers=args.workers)

    return {"mindcv": mindcv,
            "host": lambda: D.build_loader(cfg, files, idx, host_tf, is_training=True)[0],
            "device": lambda: D.build_loader(cfg, files, idx, device_tf, is_training=True)[0]}


def time_epoch(build) -> tuple:
    """(images, seconds, first batch's image shape and dtype) of one full epoch, iterator creation included."""
    dataset = build()
    t0 = time.perf_counter()
    n, shape = 0, None
    for x, _ in dataset.create_tuple_iterator(num_epochs=1):
        n += x.shape[0]
        shape = shape or (tuple(x.shape[1:]), str(x.dtype))
    return n, time.perf_counter() - t0, shape


# -- the report --------------------------------------------------------------------------------------------

def machine() -> str:
    cpu = platform.processor() or "?"
    try:
        with open("/proc/cpuinfo") as f:
            cpu = next(ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name"))
    except (OSError, StopIteration):
        pass
    return f"{cpu}, {os.cpu_count()} logical CPUs, {platform.system()} {platform.release()}"


def report(args, data: dict, rates: dict, shapes: dict, started: str, seconds: float, loads: tuple) -> str:
    import mindcv
    import mindspore
    names = [n for n in LOADERS if n in rates]
    med = {n: statistics.median(rates[n]) for n in names}
    rows = []
    for n in names:
        ratio = "-"
        if "mindcv" in med and n != "mindcv":
            per_round = [a / b for a, b in zip(rates[n], rates["mindcv"])]
            r = med[n] / med["mindcv"]
            ratio = (f"{r:.2f} ({'meets' if r >= TARGET else 'misses'} {TARGET}; rounds "
                     f"{min(per_round):.2f}-{max(per_round):.2f})")
        rows.append(f"| {n} | {shapes[n][0]} {shapes[n][1]} | {med[n]:.0f} | "
                    f"{min(rates[n]):.0f}-{max(rates[n]):.0f} | {ratio} |")
    cmd = "python bench/bench_pipeline.py " + " ".join(shlex.quote(a) for a in sys.argv[1:])
    return "\n".join([
        f"- command (from the repository root): `{cmd.strip()}`",
        f"- started {started}, took {seconds:.0f} s; load average {loads[0]:.1f} at start, {loads[1]:.1f} at end",
        f"- machine: {machine()}",
        f"- versions: mindspore {mindspore.__version__}, mindcv {mindcv.__version__}, python "
        f"{platform.python_version()}",
        f"- data: {data['images']} JPEGs, 500x375 px, quality 90, {data['classes']} classes, "
        f"{data.get('mean_kb', '?')} KiB each on average ({args.data})",
        f"- batch {args.batch}, {args.workers} workers, the recipe's training transforms; median of {args.rounds} "
        f"interleaved rounds of one full epoch each (drop_remainder)",
        "",
        "| loader | image out | img/s (median) | img/s (range) | / MindCV |",
        "|---|---|---|---|---|",
        *rows,
    ])


def main(argv=None) -> int:
    args = parse_args(argv)
    started = datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    t_start, load0 = time.time(), os.getloadavg()[0]
    data = make_data(args.data, args.images, args.classes)
    cfg = recipe(args)
    builders = make_loaders(args, cfg)
    names = [n for n in args.loaders.split(",") if n]
    rates = {n: [] for n in names}
    shapes = {}
    for r in range(args.rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for n in order:
            images, seconds, shapes[n] = time_epoch(builders[n])
            rates[n].append(images / seconds)
        print(f"round {r + 1}/{args.rounds}: " + ", ".join(f"{n} {rates[n][-1]:.0f}" for n in names) + " img/s",
              flush=True)
    text = report(args, data, rates, shapes, started, time.time() - t_start, (load0, os.getloadavg()[0]))
    print("\n" + text)
    if args.write:
        with open(args.write, "a") as f:
            f.write("\n" + text + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
