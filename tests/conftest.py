"""Shared test set-up: graph mode on CPU, quiet MindSpore logs, small fixtures."""
import os
import sys

os.environ.setdefault("GLOG_v", "3")  # MindSpore: errors only
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
if ROOT not in sys.path:
    sys.path.insert(0, ROOT)

import mindspore as ms  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402

ms.set_context(mode=ms.GRAPH_MODE, device_target="CPU")


@pytest.fixture
def rng():
    return np.random.default_rng(0)


class GraphCall(ms.nn.Cell):
    """``fn(*inputs)`` as a graph (e.g. custom operators, which are graph-mode operators)."""

    def __init__(self, fn):
        super().__init__()
        self.fn = fn

    def construct(self, *inputs):
        return self.fn(*inputs)


def trainable_count(net) -> int:
    return int(sum(np.prod(p.shape) for p in net.trainable_params()))


def randomize(net, seed=0):
    """He-scaled random weights and random BatchNorm statistics, so logits are far from trivial."""
    rng = np.random.default_rng(seed)
    for p in net.get_parameters():
        shape, name = p.shape, p.name
        if name.endswith("moving_variance"):
            v = rng.uniform(0.5, 2.0, shape)
        elif name.endswith(("moving_mean", "beta")):
            v = rng.normal(0, 0.2, shape)
        elif name.endswith("gamma"):
            v = rng.uniform(0.5, 1.5, shape)
        elif len(shape) >= 2:
            v = rng.normal(0, (2.0 / np.prod(shape[1:])) ** 0.5, shape)
        else:
            v = rng.normal(0, 0.1, shape)
        p.set_data(ms.Tensor(v.astype(np.float32)))
    net.set_train(False)
    return net
