"""The CPU accelerator's build and its off switches: a portable target by default, sources that compile without
x86 intrinsics (and with every compiler here) to kernels that compute the same, a private cache that loads only
the library it recorded, and every way to be off (no compiler, a failing compiler, not CPU, switched off) leaves
the plain model running and says so in one log line."""
import hashlib
import logging
import os
import platform
import shutil
import subprocess

import numpy as np
import pytest
import mindspore as ms
from mindspore import Tensor, nn

from conftest import GraphCall

from mindshuffle import accel, recipe
from mindshuffle.accel import accelerate
from mindshuffle.accel.cpu import build, kernels as K
from mindshuffle.models.shufflenet_v2 import ShuffleNetV2

RNG = np.random.default_rng(3)


@pytest.fixture
def fresh(monkeypatch, tmp_path):
    """A process-new accelerator: nothing built or logged yet, the cache under tmp_path."""
    monkeypatch.setattr(build, "_state", {})
    monkeypatch.setattr(build, "_logged", set())
    monkeypatch.setenv("MINDSHUFFLE_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("MINDSHUFFLE_NATIVE", raising=False)
    return tmp_path


def _off_lines(caplog):
    return [r.getMessage() for r in caplog.records if r.getMessage().startswith("CPU accelerator off")]


def _tiny():
    return ShuffleNetV2(widths=(8, 16, 32, 64, 128), repeats=(1, 1, 1), num_classes=4)


def _fake_compiler(tmp_path, body="exit 1"):
    path = tmp_path / "fake-c++"
    path.write_text(f"#!/bin/sh\n{body}\n")
    path.chmod(0o755)
    return str(path)


def test_isa_level_names_a_portable_target():
    v3 = {"avx", "avx2", "fma", "bmi1", "bmi2", "movbe", "sse4_2", "popcnt", "ssse3"}
    assert build.isa_level("x86_64", v3) == "x86-64-v3"
    assert build.isa_level("x86_64", v3 - {"fma"}) == "x86-64-v2"
    assert build.isa_level("x86_64", {"sse2"}) == "x86-64"
    assert build.isa_level("aarch64", set()) == "armv8-a"
    assert build.isa_level("riscv64", set()) is None


def test_flags_are_portable_unless_native_is_asked_for(monkeypatch):
    monkeypatch.delenv("MINDSHUFFLE_CXXFLAGS", raising=False)
    monkeypatch.delenv("MINDSHUFFLE_MARCH", raising=False)
    sets = build.flags()
    assert not any("-march=native" in f for f in sets)
    assert sets[-1] == build.BASE_FLAGS  # a named target that fails is retried without -march
    monkeypatch.setenv("MINDSHUFFLE_MARCH", "native")
    assert build.flags()[0] == build.BASE_FLAGS + ["-march=native"]
    monkeypatch.setenv("MINDSHUFFLE_CXXFLAGS", "-O2 -shared -fPIC")
    assert build.flags() == [["-O2", "-shared", "-fPIC"]]


def _generic_flags():
    if platform.machine() in ("x86_64", "AMD64"):  # SSE2 only: the generic vector path of simd.h (VW = 4)
        return ["-O2", "-march=x86-64", "-mno-sse4.2", "-mno-avx", "-shared", "-fPIC"]
    return ["-O2", "-shared", "-fPIC"]


@pytest.mark.parametrize("cxx", ["g++", "clang++"])
def test_sources_compile_generic_with_each_compiler_and_compute_the_same(cxx, tmp_path):
    """The kernel sources compiled for the plain x86-64 target (no AVX: no x86 intrinsics anywhere, simd.h's
    generic vectors) by each compiler here give the same results as the library the accelerator built."""
    if shutil.which(cxx) is None:
        pytest.skip(f"{cxx} not installed")
    lib = build.library()
    if lib is None:
        pytest.skip(f"CPU accelerator off: {build.off_reason()}")
    generic = str(tmp_path / "generic.so")
    proc = subprocess.run([cxx, *_generic_flags(), "-o", generic, *build.SOURCES], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr[-2000:]
    x = Tensor(RNG.standard_normal((2, 6, 9, 8)).astype(np.float32))
    w3 = Tensor(RNG.standard_normal((6, 1, 3, 3)).astype(np.float32))
    w1 = Tensor(RNG.standard_normal((5, 6, 1, 1)).astype(np.float32))
    b = Tensor(RNG.standard_normal(6).astype(np.float32))
    outs = []
    for path in (lib, generic):
        ops = (K.depthwise3x3(path, 2), K.conv1x1(path), K.global_avg_pool(path), K.act_cat_split(path))
        outs.append([GraphCall(ops[0])(x, w3), GraphCall(ops[1])(x, w1), GraphCall(ops[2])(x),
                     *GraphCall(ops[3])(x, b, x, b)])
    assert len(outs[1]) == 5
    for a, b in zip(*outs):
        np.testing.assert_allclose(a.asnumpy(), b.asnumpy(), rtol=1e-5, atol=1e-5)


def test_compiler_failing_without_output_leaves_the_plain_model(fresh, monkeypatch, caplog):
    monkeypatch.setenv("CXX", _fake_compiler(fresh))
    net = _tiny()
    with caplog.at_level(logging.WARNING, logger="mindshuffle"):
        assert accelerate(net, "train") is net and type(net) is ShuffleNetV2
        accelerate(_tiny(), "infer")
    lines = _off_lines(caplog)
    assert len(lines) == 1 and "exit 1: no output" in lines[0], lines
    assert not accel.status().on
    assert not any(n.endswith(".so") for n in os.listdir(fresh / "cache" / build.FOLDER))  # nothing left behind
    net.set_train(False)
    assert net(Tensor(np.ones((1, 3, 32, 32), np.float32))).shape == (1, 4)


def test_no_compiler_is_said_once(fresh, monkeypatch, caplog):
    monkeypatch.delenv("CXX", raising=False)
    monkeypatch.setenv("PATH", str(fresh))
    with caplog.at_level(logging.WARNING, logger="mindshuffle"):
        net = accelerate(_tiny(), "train")
        accelerate(_tiny(), "train")
    assert type(net) is ShuffleNetV2
    assert _off_lines(caplog) == ["CPU accelerator off: no C++ compiler found (install g++ or set CXX); "
                                  "using MindSpore's kernels"]


def test_off_switches_and_other_targets(fresh, monkeypatch, caplog):
    """MINDSHUFFLE_NATIVE=0 and a non-CPU target: one line each when asked for directly; ``default`` (what the
    engine, validate, infer and the Predictor call) is silent on other targets and when not enabled."""
    net = _tiny()
    with caplog.at_level(logging.WARNING, logger="mindshuffle"):
        accel.default(net, "train", enabled=False)
        assert type(net) is ShuffleNetV2 and not _off_lines(caplog)
        monkeypatch.setenv("MINDSHUFFLE_NATIVE", "0")
        accelerate(net, "train")
        accelerate(net, "infer")
        monkeypatch.delenv("MINDSHUFFLE_NATIVE")
        real = ms.get_context
        monkeypatch.setattr(ms, "get_context", lambda key: "Ascend" if key == "device_target" else real(key))
        accel.default(net, "train")
        assert _off_lines(caplog) == ["CPU accelerator off: switched off by MINDSHUFFLE_NATIVE=0; using MindSpore's "
                                      "kernels"]
        accelerate(net, "train")
    assert _off_lines(caplog)[1:] == ["CPU accelerator off: the device target is Ascend, not CPU; using "
                                      "MindSpore's kernels"]
    assert type(net) is ShuffleNetV2  # untouched


@pytest.mark.parametrize("problem", ["open to others", "belongs to another user"])
def test_a_cache_folder_that_is_not_private_is_refused(fresh, monkeypatch, problem):
    folder = fresh / "cache" / build.FOLDER
    folder.mkdir(parents=True)
    if problem == "open to others":
        folder.chmod(0o755)
    else:
        if os.getuid() != 0:
            pytest.skip("needs root to give a folder to another user")
        folder.chmod(0o700)
        os.chown(folder, 4321, 4321)
    monkeypatch.setenv("CXX", _fake_compiler(fresh, "echo compiled >&2; exit 1"))  # must not even be run
    st = accel.status()
    assert not st.on and problem in st.reason and str(folder) in st.reason


def _target(cxx: str) -> str:
    folder, why = build.cache_folder()
    assert folder and not why
    assert (os.stat(folder).st_mode & 0o777) == 0o700
    return os.path.join(folder, f"kernels-{build._tag(cxx, build.flags())}.so")


@pytest.mark.parametrize("record", ["none", "wrong"])
def test_a_planted_library_is_never_loaded(fresh, monkeypatch, record):
    """A library in the cache that this process did not record (no SHA-256 beside it, or another one) is not
    loaded: with a compiler that fails the accelerator is off; with the real one it is built anew."""
    cxx = _fake_compiler(fresh)
    monkeypatch.setenv("CXX", cxx)
    target = _target(cxx)
    planted = b"\x7fELF planted by someone else"
    with open(target, "wb") as f:
        f.write(planted)
    if record == "wrong":
        with open(target + ".sha256", "w") as f:
            f.write("0" * 64 + "\n")
    assert build.library() is None and "build failed" in build.off_reason()
    with open(target, "rb") as f:
        assert f.read() == planted  # untouched, and not loaded


def test_the_built_library_is_recorded_and_a_planted_one_is_replaced(fresh, monkeypatch):
    monkeypatch.delenv("CXX", raising=False)
    cxx = build.compiler()
    if cxx is None:
        pytest.skip("no C++ compiler")
    target = _target(cxx)
    with open(target, "wb") as f:
        f.write(b"planted")
    assert build.library() == target
    with open(target, "rb") as f:
        data = f.read()
    assert data != b"planted"
    with open(target + ".sha256", encoding="ascii") as f:
        assert f.read().strip() == hashlib.sha256(data).hexdigest()
    assert sorted(os.listdir(os.path.dirname(target))) == sorted([os.path.basename(target),
                                                                  os.path.basename(target) + ".sha256"])


def test_accelerate_is_a_recipe_key_and_an_infer_flag(tmp_path):
    base = ["--dataset", "digits"]
    assert recipe.load(None, base).accelerate is True
    assert recipe.load(None, base + ["--accelerate", "False"]).accelerate is False
    with pytest.raises(recipe.RecipeError, match="accelerate"):
        recipe.load(None, base + ["--accelerate", "maybe"])
    from mindshuffle.cli.infer import main
    with pytest.raises(SystemExit) as e:
        main(["--accelerate", "maybe", "x.jpg"])
    assert e.value.code == 2
