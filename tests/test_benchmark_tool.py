"""mindshuffle.research.benchmark and the three tools (profile, guidelines, benchmark) at tiny sizes."""
import csv
import json
import os
import shutil

import numpy as np
import pytest
from mindspore import nn

from mindshuffle.research import benchmark as B
from cli_helpers import tool as _tool

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


class Small(nn.Cell):
    def __init__(self, classes=5):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, has_bias=False)
        self.fc = nn.Dense(4, classes)

    def construct(self, x):
        return self.fc(self.conv(x).mean((2, 3)))


def test_measure_counts_calls():
    calls = []
    m = B.measure(lambda: calls.append(1), warmup=2, repeats=3)
    assert len(calls) == 1 + 2 + 3 and m["repeats"] == 3 and m["min_ms"] <= m["median_ms"] <= m["max_ms"]
    seen = []
    r = B.measure_interleaved({"a": lambda: seen.append("a"), "b": lambda: seen.append("b")}, warmup=1, repeats=2)
    assert seen.count("a") == seen.count("b") == 4 and set(r) == {"a", "b"}
    with pytest.raises(ValueError):
        B.measure(lambda: None, repeats=0)


def test_inference_and_train_step():
    net = Small()
    r = B.inference(net, batch_size=2, image_size=8, warmup=0, repeats=2)
    assert r["batch_size"] == 2 and r["img_per_s"] == pytest.approx(2e3 / r["ms_per_batch"]) and r["compile_s"] >= 0
    assert r["ms_per_batch"] == r["t_median_ms"]
    r = B.inference(net, batch_size=2, image_size=8, warmup=0, repeats=3, statistic="min")
    assert r["ms_per_batch"] == r["t_min_ms"] <= r["t_median_ms"]
    with pytest.raises(ValueError, match="statistic"):
        B.inference(net, batch_size=2, image_size=8, warmup=0, repeats=1, statistic="mean")
    before = net.fc.weight.asnumpy().copy()
    t = B.train_step(net, batch_size=2, image_size=8, num_classes=5, warmup=0, repeats=1)
    assert t["img_per_s"] > 0 and not np.allclose(before, net.fc.weight.asnumpy())
    assert B.peak_rss_mb() > 10


def test_mindcv_reference_names():
    assert B.mindcv_name("shufflenet_v2_x1_0") == "shufflenet_v2_x1_0"
    assert B.mindcv_name("shufflenet_v1_g3_x1_0") == "shufflenet_v1_g3_10"  # through our alias
    assert B.mindcv_name("shufflenet_v2_x1_0_tv") is None


def test_benchmark_model_with_reference():
    r = B.benchmark_model("shufflenet_v2_x0_5", batch_sizes=(1,), train_batch_size=0, image_size=32, warmup=0,
                          repeats=1, reference=True, isolate=False)
    assert r["model"] == "shufflenet_v2_x0_5" and r["latency_ms"] > 0 and r["peak_rss_mb"] > 100
    assert r["params_M"] == pytest.approx(1.365792) and r["train_img_per_s"] is None
    ref = r["reference"]
    assert ref["model"] == "shufflenet_v2_x0_5" and ref["params_M"] == pytest.approx(1.365792)
    assert ref["throughput"][1] > 0
    assert r["fuse"] == "fast"  # mindshuffle's inference as deployed: folded, native kernels on CPU
    with pytest.raises(ValueError, match="fuse 'folded'"):
        B.benchmark_model("shufflenet_v2_x0_5", fuse="folded")


def test_benchmark_tool_writes_outputs(tmp_path, capsys):
    # default mode: the model runs in its own process
    rc = _tool("benchmark").main(["shufflenet_v2_x0_5", "--batch-sizes", "1", "--train-batch-size", "0",
                                  "--image-size", "32", "--warmup", "0", "--repeats", "1", "--no-reference",
                                  "--out-dir", str(tmp_path), "--name", "b"])
    assert rc == 0
    out = capsys.readouterr().out
    assert "shufflenet_v2_x0_5" in out and "MindCV" in out
    rows = list(csv.reader(open(tmp_path / "b.csv")))
    assert len(rows) == 2 and rows[1][0] == "shufflenet_v2_x0_5" and float(rows[1][4]) > 0
    data = json.loads((tmp_path / "b.json").read_text())
    assert data["results"][0]["reference"] is None and data["meta"]["isolate"] is True
    assert data["meta"]["fuse"] == "fast" and "--fuse fast" in (tmp_path / "b.md").read_text()
    assert data["results"][0]["peak_rss_mb"] > 100
    assert (tmp_path / "b.md").read_text().startswith("| model |")


def test_profile_tool_writes_outputs(tmp_path, capsys):
    rc = _tool("profile").main(["--model", "shufflenet_v2_x0_5", "--image-size", "224", "--min-flops", "2e6",
                                "--csv", str(tmp_path / "p.csv"), "--md", str(tmp_path / "p.md")])
    assert rc == 0
    out = capsys.readouterr().out
    assert "FLOPs 40.48 M" in out and "published FLOPs 40.48 M (-0.01%)" in out
    assert (tmp_path / "p.csv").read_text().splitlines()[-1].startswith("total,")
    assert "| conv1.conv |" in (tmp_path / "p.md").read_text()


def test_guidelines_tool_writes_outputs(tmp_path, capsys):
    # one width column each keeps it short; the full three-column run is what the README shows
    rc = _tool("guidelines").main(["--experiments", "G1,G4", "--widths", "G1=64", "--widths", "G4=4",
                                   "--depth", "1", "--image-size", "4", "--batch-size", "1", "--warmup", "0",
                                   "--repeats", "1", "--out-dir", str(tmp_path)])
    assert rc == 0
    out = capsys.readouterr().out
    assert "Table 1 - G1" in out and "Table 4 - G4" in out and "1480 / 723 / 232" in out
    rows = list(csv.DictReader(open(tmp_path / "guidelines.csv")))
    assert len(rows) == 4 + 4 and {r["experiment"] for r in rows} == {"G1", "G4"}
    assert (tmp_path / "guidelines.md").read_text().count("**Table") == 2


def _files(folder):
    return {f: (os.stat(os.path.join(folder, f)).st_mtime_ns, open(os.path.join(folder, f), "rb").read())
            for f in sorted(os.listdir(folder))}


def test_tools_leave_committed_results_alone(tmp_path, monkeypatch, capsys):
    """Without --out-dir the results go to a new folder under runs/; an existing result is replaced only with
    --overwrite. Run in a copy of bench/results: the repository's own files are never touched."""
    shutil.copytree(os.path.join(ROOT, "bench", "results"), tmp_path / "bench" / "results")
    monkeypatch.chdir(tmp_path)
    committed = _files("bench/results")
    assert {"benchmark.csv", "guidelines.md"} <= set(committed)
    guidelines = ["--experiments", "G4", "--widths", "G4=4", "--depth", "1", "--image-size", "4", "--batch-size",
                  "1", "--warmup", "0", "--repeats", "1"]
    assert _tool("guidelines").main(guidelines) == 0
    assert _tool("benchmark").main(["shufflenet_v2_x0_5", "--batch-sizes", "1", "--train-batch-size", "0",
                                    "--image-size", "32", "--warmup", "0", "--repeats", "1", "--no-reference",
                                    "--no-isolate"]) == 0
    assert _files("bench/results") == committed
    made = sorted(os.listdir("runs"))
    assert [m.split("-")[0] for m in made] == ["benchmark", "guidelines"]
    assert set(os.listdir(os.path.join("runs", made[0]))) == {"benchmark.csv", "benchmark.md", "benchmark.json"}
    capsys.readouterr()
    for tool, argv in (("guidelines", guidelines), ("benchmark", ["shufflenet_v2_x0_5"])):
        assert _tool(tool).main(argv + ["--out-dir", "bench/results"]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and "bench/results/" in err[0] and "exists already" in err[0] and "--overwrite" in err[0]
    assert _files("bench/results") == committed
    assert _tool("guidelines").main(guidelines + ["--out-dir", "bench/results", "--overwrite"]) == 0
    after = _files("bench/results")
    assert after["guidelines.md"] != committed["guidelines.md"] and after["benchmark.csv"] == committed["benchmark.csv"]


@pytest.mark.parametrize("tool,argv,needle", [
    ("profile", ["--model", "shufflenet_v7"], "unknown model 'shufflenet_v7'"),
    ("benchmark", ["shufflenet_v7_x1_0"], "unknown model 'shufflenet_v7_x1_0'"),
    ("benchmark", ["nothing_*"], "no model matches"),
    ("benchmark", ["shufflenet_v2_x0_5", "--batch-sizes", "1,x"], "--batch-sizes"),
    ("guidelines", ["--experiments", "G5"], "unknown experiment 'G5'"),
    ("guidelines", ["--widths", "G2=1,2,3,4"], "give 1 to 3 positive widths"),
    ("guidelines", ["--widths", "G2=64,128,256", "--experiments", "G2"], "in FLOPs (> 1%)"),
])
def test_bad_input_exits_2_with_one_line(tool, argv, needle, capsys, tmp_path):
    rc = _tool(tool).main(argv + (["--out-dir", str(tmp_path)] if tool != "profile" else []))
    err = capsys.readouterr().err.strip().splitlines()
    assert rc == 2 and len(err) == 1 and needle in err[0]
