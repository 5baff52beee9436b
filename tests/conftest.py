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


def trainable_count(net) -> int:
    return int(sum(np.prod(p.shape) for p in net.trainable_params()))
