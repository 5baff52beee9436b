"""Weight EMA and writing parameters that a compiled training step already uses (graph mode, CPU)."""
import mindspore as ms
import numpy as np
import pytest
from mindspore import Tensor, nn, ops

from mindshuffle.ema import COUNT_NAME, TRAIN_PREFIX, WeightEMA
from mindshuffle.paramwrite import ParameterWriter


def _trainer(ema_decay=None):
    """A dense layer + BatchNorm trained by SGD in one compiled step; with ``ema_decay`` an EMA follows."""
    net = nn.SequentialCell(nn.Dense(4, 3), nn.BatchNorm1d(3))
    net.set_train(True)
    opt = nn.SGD(net.trainable_params(), 0.1)
    ema = WeightEMA(net, ema_decay) if ema_decay else None

    def loss_fn(x):
        return (net(x) ** 2).sum() + (net[0].weight ** 2).sum()

    grad_fn = ms.value_and_grad(loss_fn, None, opt.parameters)

    @ms.jit
    def train(x):
        loss, grads = grad_fn(x)
        return ops.depend(loss, opt(grads))

    @ms.jit
    def average():
        return ema()

    def step(x):   # as the engine runs them: the EMA in its own graph after the train step
        loss = train(x)
        if ema is not None:
            average()
        return loss

    return net, ema, step


def _snapshot(params):
    return [p.asnumpy().copy() for p in params]   # asnumpy() can be a view that later steps overwrite


def test_ema_follows_the_weights_with_the_ramped_decay(rng):
    net, ema, step = _trainer(ema_decay=0.5)
    x = Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    avg = ema.averages()
    assert len(avg) == len(list(net.get_parameters())) == 6                   # BN statistics included
    for n in (1, 2, 3):
        step(x)
        w = _snapshot(net.get_parameters())
        d = min(0.5, n / (n + 9.0))                                           # 0.1, 0.18, 0.25
        avg = [d * a + (1 - d) * b for a, b in zip(avg, w)]
        for a, got in zip(avg, ema.averages()):
            np.testing.assert_allclose(got, a, rtol=1e-5, atol=1e-6)
    assert float(ema.updates.asnumpy()) == 3.0
    assert not np.allclose(avg[0], w[0])                                      # an average, not a copy


def test_swap_exchanges_and_training_goes_on_from_the_trained_weights(rng):
    net, ema, step = _trainer(ema_decay=0.9)
    x = Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    step(x)
    w, a = _snapshot(net.get_parameters()), ema.averages()
    ema.swap()
    for got, want in zip(_snapshot(net.get_parameters()), a):
        np.testing.assert_array_equal(got, want)
    ema.swap()
    for got, want in zip(_snapshot(net.get_parameters()), w):
        np.testing.assert_array_equal(got, want)
    step(x)   # the compiled step sees what swap wrote: it moves the weights Python sees, and the average follows
    w2 = _snapshot(net.get_parameters())
    assert np.abs(w2[0] - w[0]).max() > 1e-3
    d = 2 / 11
    np.testing.assert_allclose(ema.averages()[0], d * a[0] + (1 - d) * w2[0], rtol=1e-5, atol=1e-6)


def test_parameter_writer_updates_what_the_compiled_step_uses(rng):
    net, _, step = _trainer()
    x = Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    step(x)                                   # compiled
    mean = net[1].moving_mean
    new_w = rng.standard_normal((3, 4)).astype(np.float32)
    ParameterWriter([net[0].weight, mean]).write([new_w, np.full(3, 5.0, np.float32)])
    np.testing.assert_array_equal(net[0].weight.asnumpy(), new_w)
    bias = net[0].bias.asnumpy().copy()
    step(x)
    # SGD started from the written weight (the loss has a 2*w term: w moves towards 0 from new_w) ...
    moved = net[0].weight.asnumpy()
    assert np.abs(moved - new_w).max() > 1e-3 and np.abs(moved - new_w).max() < np.abs(new_w).max()
    # ... and BatchNorm's update started from the written statistic: 0.9 * 5 + 0.1 * batch mean
    batch_mean = (x.asnumpy() @ new_w.T + bias).mean(0)
    np.testing.assert_allclose(mean.asnumpy(), 0.9 * 5.0 + 0.1 * batch_mean, rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match="2 values for 1 parameters"):
        ParameterWriter([mean]).write([np.zeros(3), np.zeros(3)])


def test_state_round_trip_and_resume_guard(rng, tmp_path):
    net, ema, step = _trainer(ema_decay=0.9)
    x = Tensor(rng.standard_normal((8, 4)).astype(np.float32))
    step(x)
    step(x)
    state = ema.state()
    assert COUNT_NAME in state and all(TRAIN_PREFIX + p.name in state for p in net.get_parameters())
    np.testing.assert_array_equal(state["0.weight"].asnumpy(), ema.averages()[0])
    path = str(tmp_path / "s.ckpt")
    ms.save_checkpoint([{"name": k, "data": v} for k, v in state.items()], path)
    saved = ms.load_checkpoint(path)
    net2, ema2, _ = _trainer(ema_decay=0.9)
    ema2.load_state(saved, path)
    for p, q in zip(list(net.get_parameters()), list(net2.get_parameters())):
        np.testing.assert_array_equal(q.asnumpy(), p.asnumpy(), err_msg=p.name)
    for a, b in zip(ema.averages(), ema2.averages()):
        np.testing.assert_array_equal(b, a)
    assert float(ema2.updates.asnumpy()) == 2.0
    plain = {k: v for k, v in saved.items() if not k.startswith(TRAIN_PREFIX) and k != COUNT_NAME}
    with pytest.raises(ValueError, match="written with ema: False"):
        ema2.load_state(plain, path)
    with pytest.raises(ValueError, match="between 0 and 1"):
        WeightEMA(net, 1.0)
