"""pretrained=True the way MindCV and torchvision users get weights, proven against a real HTTP server on
127.0.0.1 serving made checkpoints under the publishers' real paths and file names (the mirror setting,
MINDSHUFFLE_WEIGHTS_MIRROR, points the real download code at it)."""
import dataclasses
import glob
import hashlib
import http.server
import os
import socket
import subprocess
import sys
import threading
from urllib.parse import urlparse

import mindspore as ms
import numpy as np
import pytest

from conftest import ROOT, randomize
from mindshuffle import create_model
from mindshuffle.checkpoints import CheckpointError
from mindshuffle.convert_names import merge_group_convs, to_mindshuffle_names, uses_group_convs
from mindshuffle.fileio import TMP_PREFIX
from mindshuffle.hub import DownloadError, HashMismatchError, checkpoints_dir, home_dir, mirrored
from mindshuffle.pretrained import converted_path
from mindshuffle.weights_table import WEIGHTS, list_weights, weights_for, weights_markdown

X = ms.Tensor(np.random.default_rng(1).normal(size=(2, 3, 64, 64)).astype(np.float32))


class _Handler(http.server.BaseHTTPRequestHandler):
    files: dict = {}      # URL path -> bytes
    cut: set = set()      # paths whose body is cut off half way (the connection closes mid-body)
    hits: list = []

    def do_GET(self):  # noqa: N802 (http.server's name)
        self.hits.append(self.path)
        body = self.files.get(self.path)
        if body is None:
            self.send_error(404)
            return
        self.send_response(200)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body[: len(body) // 2] if self.path in self.cut else body)
        self.wfile.flush()
        if self.path in self.cut:
            self.close_connection = True

    def log_message(self, *args):
        pass


class Server:
    def __init__(self):
        handler = type("H", (_Handler,), {"files": {}, "cut": set(), "hits": []})
        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
        self.handler = handler
        self.base = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        self.thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self.thread.start()

    def serve(self, url: str, body: bytes, cut: bool = False) -> None:
        """Serve ``body`` at the path of the publisher's ``url`` (the mirror keeps paths)."""
        path = urlparse(url).path
        self.handler.files[path] = body
        if cut:
            self.handler.cut.add(path)

    @property
    def hits(self):
        return self.handler.hits

    def stop(self):
        if self.thread.is_alive():
            self.httpd.shutdown()
            self.httpd.server_close()


@pytest.fixture
def home(tmp_path, monkeypatch):
    monkeypatch.setenv("MINDSHUFFLE_HOME", str(tmp_path / "home"))
    monkeypatch.delenv("MINDSHUFFLE_WEIGHTS_MIRROR", raising=False)
    return tmp_path / "home"


@pytest.fixture
def server(home, monkeypatch):
    s = Server()
    monkeypatch.setenv("MINDSHUFFLE_WEIGHTS_MIRROR", s.base)
    yield s
    s.stop()


def _refused_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]  # closed on exit: nothing listens there


def _sha256(b: bytes) -> str:
    return hashlib.sha256(b).hexdigest()


def _patch(monkeypatch, model: str, tag, **changes):
    """Replace one table entry (e.g. with the hash of a made file); returns the new entry."""
    old = weights_for(model, tag)
    new = dataclasses.replace(old, **changes)
    monkeypatch.setitem(WEIGHTS, model, [new if w is old else w for w in WEIGHTS[model]])
    return new


def _leftovers(home):
    return glob.glob(os.path.join(str(home), "**", TMP_PREFIX + "*"), recursive=True)


@pytest.fixture(scope="module")
def mindcv_v2_file(tmp_path_factory):
    """A MindCV-made shufflenet_v2_x0_5 checkpoint (random weights, 1000 classes) and its logits."""
    import mindcv
    net = randomize(mindcv.models.create_model("shufflenet_v2_x0_5"), seed=5)
    path = str(tmp_path_factory.mktemp("made") / "made.ckpt")
    ms.save_checkpoint(net, path)
    with open(path, "rb") as f:
        return f.read(), net(X).asnumpy()


def _close(want, got):
    scale = float(np.abs(want).max())
    assert scale > 1e-2 and float(np.abs(want - got).max()) <= 1e-4 * scale


# ---------------------------------------------------------------------------------------------------------
# the table

def test_table_urls_and_hashes_are_the_publishers():
    tv = weights_for("shufflenet_v2_x1_0_tv")
    assert tv.url == "https://download.pytorch.org/models/shufflenetv2_x1-5666bf0f80.pth"
    assert tv.check == "sha256-prefix" and tv.expected_hash == "5666bf0f80"  # torch.hub's rule on the name
    assert weights_for("shufflenet_v2_x0_5").url.endswith("/shufflenetv2/shufflenet_v2_x0_5-8c841061.ckpt")
    v1_new = weights_for("shufflenet_v1_g3_x0_5", "mindcv-910v2")
    assert v1_new.file_name == "shufflenet_v1_g3_05-56209ef3-910v2.ckpt"
    for w in list_weights():
        assert w.url.startswith("https://") and w.url_source and w.metrics_source and w.recipe
        assert w.top1 and w.top5 and w.check in ("sha256", "sha256-prefix", "none")
        assert w.check != "none" or w.publisher == "MindCV"  # MindCV publishes no hash; the others are checked
        create_model(w.model)  # every entry names a registered model


def test_cache_folder_and_mirror(monkeypatch, tmp_path):
    monkeypatch.delenv("MINDSHUFFLE_HOME", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert home_dir() == str(tmp_path / "xdg" / "mindshuffle")
    monkeypatch.setenv("MINDSHUFFLE_HOME", str(tmp_path / "mine"))
    assert checkpoints_dir() == str(tmp_path / "mine" / "checkpoints")
    monkeypatch.setenv("MINDSHUFFLE_WEIGHTS_MIRROR", "https://mirror.example.cn/ms/")
    assert mirrored("https://download.pytorch.org/models/a-1.pth") == "https://mirror.example.cn/ms/models/a-1.pth"


# ---------------------------------------------------------------------------------------------------------
# download, verify, cache

def test_first_use_downloads_and_verifies_second_is_offline(server, home, monkeypatch, mindcv_v2_file):
    body, want = mindcv_v2_file
    w = _patch(monkeypatch, "shufflenet_v2_x0_5", "mindcv", check="sha256", sha256=_sha256(body))
    server.serve(w.url, body)
    net = create_model("shufflenet_v2_x0_5", pretrained=True)
    net.set_train(False)
    _close(want, net(X).asnumpy())
    cached = os.path.join(checkpoints_dir(), "shufflenet_v2_x0_5-8c841061.ckpt")  # the publisher's file name
    assert os.path.isfile(cached) and len(server.hits) == 1 and not _leftovers(home)
    server.stop()  # offline from here on
    again = create_model("shufflenet_v2_x0_5", pretrained=True)
    again.set_train(False)
    _close(want, again(X).asnumpy())
    assert len(server.hits) == 1


def test_corrupted_download_is_rejected_and_removed(server, home, monkeypatch, mindcv_v2_file):
    body, _ = mindcv_v2_file
    w = _patch(monkeypatch, "shufflenet_v2_x0_5", "mindcv", check="sha256", sha256=_sha256(body))
    bad = bytearray(body)
    bad[len(bad) // 3] ^= 0xFF
    server.serve(w.url, bytes(bad))
    with pytest.raises(HashMismatchError, match="deleted"):
        create_model("shufflenet_v2_x0_5", pretrained=True)
    assert not os.path.exists(os.path.join(checkpoints_dir(), w.file_name)) and not _leftovers(home)


def test_truncated_download_without_published_hash_is_rejected(server, home, mindcv_v2_file):
    body, _ = mindcv_v2_file
    w = weights_for("shufflenet_v2_x0_5")
    assert w.check == "none"  # MindCV's real entry: no hash, so the file must at least be a readable checkpoint
    server.serve(w.url, body[: len(body) // 2])
    with pytest.raises(CheckpointError, match="cannot be read"):
        create_model("shufflenet_v2_x0_5", pretrained=True)
    assert os.listdir(checkpoints_dir()) == [] and not _leftovers(home)


def test_corrupted_cached_file_is_deleted(server, home, monkeypatch, mindcv_v2_file):
    body, _ = mindcv_v2_file
    w = _patch(monkeypatch, "shufflenet_v2_x0_5", "mindcv", check="sha256", sha256=_sha256(body))
    os.makedirs(checkpoints_dir())
    cached = os.path.join(checkpoints_dir(), w.file_name)
    with open(cached, "wb") as f:
        f.write(body[:-10])
    with pytest.raises(HashMismatchError, match="deleted"):
        create_model("shufflenet_v2_x0_5", pretrained=True)
    assert not os.path.exists(cached) and server.hits == []


def test_interrupted_download_leaves_no_file(server, home, mindcv_v2_file):
    body, _ = mindcv_v2_file
    w = weights_for("shufflenet_v2_x0_5")
    server.serve(w.url, body, cut=True)
    with pytest.raises(DownloadError, match="interrupted"):
        create_model("shufflenet_v2_x0_5", pretrained=True)
    assert not os.path.exists(os.path.join(checkpoints_dir(), w.file_name)) and not _leftovers(home)


def test_no_network_says_which_url_and_where_to_put_the_file(home, monkeypatch):
    monkeypatch.setenv("MINDSHUFFLE_WEIGHTS_MIRROR", f"http://127.0.0.1:{_refused_port()}")
    with pytest.raises(DownloadError) as e:
        create_model("shufflenet_v2_x1_0", pretrained=True)
    msg = str(e.value)
    assert "\n" not in msg and "/toolkits/mindcv/shufflenet/shufflenetv2/shufflenet_v2_x1_0-0da4b7fa.ckpt" in msg
    assert os.path.join(checkpoints_dir(), "shufflenet_v2_x1_0-0da4b7fa.ckpt") in msg


def test_hand_placed_file_is_used_without_network(home, monkeypatch, mindcv_v2_file):
    body, want = mindcv_v2_file
    monkeypatch.setenv("MINDSHUFFLE_WEIGHTS_MIRROR", f"http://127.0.0.1:{_refused_port()}")
    os.makedirs(checkpoints_dir())
    with open(os.path.join(checkpoints_dir(), "shufflenet_v2_x0_5.ckpt"), "wb") as f:
        f.write(body)
    net = create_model("shufflenet_v2_x0_5", pretrained=True)
    net.set_train(False)
    _close(want, net(X).asnumpy())


def test_other_num_classes_fine_tunes(server, home, mindcv_v2_file):
    body, _ = mindcv_v2_file
    server.serve(weights_for("shufflenet_v2_x0_5").url, body)
    full = create_model("shufflenet_v2_x0_5", pretrained=True)
    ten = create_model("shufflenet_v2_x0_5", pretrained=True, num_classes=10)
    assert len(server.hits) == 1
    got = {p.name: p.asnumpy() for p in ten.get_parameters()}
    assert got["classifier.weight"].shape == (10, 1024)
    body_params = [p for p in full.get_parameters() if not p.name.startswith("classifier.")]
    assert len(body_params) > 100
    for p in body_params:
        np.testing.assert_array_equal(p.asnumpy(), got[p.name])


def test_torchvision_pth_is_converted_once_and_cached(server, home, monkeypatch, tmp_path):
    import torch
    from test_convert import TV_WIDTHS, TVNet, randomize as torch_randomize
    src = torch_randomize(TVNet(TV_WIDTHS[0.5], 1000), seed=7)
    torch.save(src.state_dict(), tmp_path / "tv.pth")
    body = (tmp_path / "tv.pth").read_bytes()
    real = weights_for("shufflenet_v2_x0_5_tv")
    server.serve(real.url, body)
    # the real entry: the made file's SHA-256 does not start with the publisher's f707e7126e -> refused
    with pytest.raises(HashMismatchError, match="f707e7126e"):
        create_model("shufflenet_v2_x0_5_tv", pretrained=True)
    w = _patch(monkeypatch, "shufflenet_v2_x0_5_tv", "torchvision", sha256=_sha256(body)[:10])
    net = create_model("shufflenet_v2_x0_5_tv", pretrained="torchvision")
    net.set_train(False)
    with torch.no_grad():
        want = src(torch.from_numpy(X.asnumpy())).numpy()
    _close(want, net(X).asnumpy())
    assert os.path.isfile(converted_path(w)) and os.path.isfile(os.path.join(checkpoints_dir(), w.file_name))
    server.stop()
    os.remove(os.path.join(checkpoints_dir(), w.file_name))  # the converted file alone is enough now
    again = create_model("shufflenet_v2_x0_5_tv", pretrained=True)
    again.set_train(False)
    _close(want, again(X).asnumpy())


def test_unknown_tag_and_model_without_weights(home):
    with pytest.raises(CheckpointError, match="mindcv-910v2"):
        create_model("shufflenet_v2_x0_5", pretrained="nonexistent")
    with pytest.raises(CheckpointError, match="no published pretrained weights"):
        create_model("shufflenet_v1_g8_x0_5", pretrained=True)


# ---------------------------------------------------------------------------------------------------------
# MindCV >= 0.4's ShuffleNet V1 (PR #763): one conv per group

def _group_conv_layout(params: dict, groups: int) -> dict:
    """MindCV 0.3.0 grouped 1x1 conv weights -> the names PR #763's GroupConv gives them
    (``features.N.branch_main_1.0.convs.<i>.weight``), split per group along the output channels."""
    out = {}
    for name, p in params.items():
        v = p.asnumpy()
        unit = name.split(".")[1] if name.startswith("features.") else None
        grouped = name.endswith(("branch_main_1.0.weight", "branch_main_2.2.weight"))
        if unit is not None and grouped:
            g = 1 if (unit == "0" and ".branch_main_1." in name) else groups  # the first unit's pw1 is not grouped
            for i, part in enumerate(np.split(v, g, axis=0)):
                out[name[: -len("weight")] + f"convs.{i}.weight"] = part
        else:
            out[name] = v
    return out


def test_mindcv_groupconv_v1_same_logits_as_grouped(server, home, tmp_path):
    import mindcv
    src = randomize(mindcv.models.create_model("shufflenet_v1_g3_05"), seed=6)
    want = src(X).asnumpy()
    params = {p.name: p for p in src.get_parameters()}
    split = _group_conv_layout(params, 3)
    assert uses_group_convs(split) and "features.1.branch_main_1.0.convs.2.weight" in split
    merged = merge_group_convs(split)
    for k, v in params.items():
        np.testing.assert_array_equal(merged[k], v.asnumpy())
    path = str(tmp_path / "groupconv.ckpt")
    ms.save_checkpoint([{"name": k, "data": ms.Tensor(v)} for k, v in split.items()], path)
    assert "GroupConv" in to_mindshuffle_names(ms.load_checkpoint(path))["mindshuffle_meta"]
    w = weights_for("shufflenet_v1_g3_x0_5", "mindcv-910v2")  # MindCV's current V1 file uses this layout
    with open(path, "rb") as f:
        server.serve(w.url, f.read())
    net = create_model("shufflenet_v1_g3_05", pretrained="mindcv-910v2")
    net.set_train(False)
    _close(want, net(X).asnumpy())


# ---------------------------------------------------------------------------------------------------------
# tools

def _run(args, env_extra):
    env = dict(os.environ, **env_extra)
    return subprocess.run([sys.executable, *args], capture_output=True, text=True, env=env, cwd=ROOT, timeout=300)


def test_tools_pretrained_without_network_exit_2_one_line(tmp_path):
    env = {"MINDSHUFFLE_HOME": str(tmp_path), "MINDSHUFFLE_WEIGHTS_MIRROR": f"http://127.0.0.1:{_refused_port()}"}
    r = _run(["tools/export.py", "--model", "shufflenet_v2_x0_5", "--pretrained", "-o", str(tmp_path / "m")], env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr
    assert "shufflenet_v2_x0_5-8c841061.ckpt" in lines[0] and "by hand" in lines[0] and "Traceback" not in r.stderr
    r = _run(["tools/validate.py", "--model", "shufflenet_v2_x1_0_tv", "--pretrained", "--data_dir",
              str(tmp_path)], env)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1 and "shufflenetv2_x1-5666bf0f80.pth" in lines[0], r.stderr


def test_convert_tool_on_a_file_that_is_not_pytorch(tmp_path):
    txt = tmp_path / "notes.pth"
    txt.write_text("not a checkpoint\n")
    ckpt = tmp_path / "model.ckpt"
    ms.save_checkpoint([{"name": "w", "data": ms.Tensor(np.ones(3, np.float32))}], str(ckpt))
    for path, why in ((txt, "neither a zip nor a pickle"), (ckpt, "MindSpore checkpoint")):
        r = _run(["tools/convert.py", str(path), "-o", str(tmp_path / "out.ckpt")], {})
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1, r.stderr
        assert "not a PyTorch checkpoint" in lines[0] and why in lines[0] and "weights_only" not in r.stderr


def test_models_tool_and_readme_list_the_weights():
    r = _run(["tools/models.py", "--weights", "--markdown"], {})
    assert r.returncode == 0 and r.stdout.strip() == weights_markdown()
    with open(os.path.join(ROOT, "README.md"), encoding="utf-8") as f:
        readme = f.read()
    missing = [row for row in weights_markdown().splitlines() if row not in readme]
    assert not missing, f"README weights table out of date (tools/models.py --weights --markdown): {missing[:2]}"
