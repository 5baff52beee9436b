"""The CPU kernels as MindSpore operators: ``ops.Custom`` (AOT) wrappers, with their gradients, of the functions
in ``csrc/*.cc``, compiled into one library by ``build.library()``. Each factory takes that library's path and
returns its operator, made once per path and arguments.

MindSpore 2.7.1 runs a 3x3 depthwise convolution on CPU about as slowly as a dense one with C times the
work (forward and both gradients); it is ~30% of a ShuffleNet V2 training step. Its training-mode BatchNorm
(forward and backward) and the stem's ReLU + padded max pool are another ~45%, several times slower than the
memory traffic they need. The operators:
- ``depthwise3x3``: 3x3 depthwise convolution (``csrc/dwconv3x3.cc``);
- ``batchnorm_train``: training-mode BatchNorm with batch statistics, optionally fused with the ReLU after it,
  which also returns the updated moving statistics (``csrc/batchnorm.cc``);
- ``bn_relu_maxpool``: the ShuffleNet stem's BatchNorm + ReLU + 3x3 stride-2 max pool (padding 1), same file;
- ``shuffle_split``: ShuffleNet V2's channel shuffle + split into even and odd channels (``csrc/shuffle.cc``);
  ``cat_shuffle_split``: the same on the concatenation of two tensors, without making it;
- ``global_avg_pool``: the classifier head's global average pool (``csrc/pool.cc``);
- for inference with folded BatchNorm (``csrc/infer.cc``, no gradients): ``act_cat_split``, ``act_cat`` and
  ``act_avgpool`` apply a 1x1 conv's bias and ReLU while they shuffle, concatenate or pool its output
  (``depthwise3x3(..., act_in=True)`` while it pads it), and ``stem_conv_pool`` is conv1 + bias + ReLU + max pool;
  ``conv1x1`` is the 1x1 convolution on threads that do not spin (``csrc/conv1x1.cc``).
Where they are used, and that they compute what MindSpore's layers compute: ``cells.py``,
tests/test_accel.py.
"""
from __future__ import annotations

import mindspore as ms
from mindspore import ops

__all__ = ["depthwise3x3", "batchnorm_train", "bn_relu_maxpool", "shuffle_split", "cat_shuffle_split", "global_avg_pool",
           "act_cat_split", "act_cat", "act_avgpool", "stem_conv_pool", "conv1x1"]

_OPS: dict = {}


def _cached(lib: str, key, build):
    """``build(lib)``, made once per library and ``key``."""
    if (lib, key) not in _OPS:
        _OPS[(lib, key)] = build(lib)
    return _OPS[(lib, key)]


def depthwise3x3(lib: str, stride: int, bias: bool = False, act_in: bool = False):
    """``op(x, weight)``: 3x3 depthwise conv, padding 1, NCHW float32, weight (C, 1, 3, 3), with its gradient;
    ``bias=True``: ``op(x, weight, bias)`` for inference (no gradient); ``act_in=True``: ``op(x, bias_in, weight,
    bias)``, the conv of ``relu(x + bias_in)`` (inference)."""
    if stride not in (1, 2):
        return None
    return _cached(lib, (stride, bias, act_in), lambda lib: _depthwise3x3(lib, stride, bias, act_in))


def _depthwise3x3(lib: str, stride: int, bias: bool, act_in: bool):
    s = f"s{stride}"
    if act_in:
        return ops.Custom(f"{lib}:dw3x3_{s}_fwd_act", out_dtype=lambda x, bi, w, b: x, func_type="aot",
                          out_shape=lambda x, bi, w, b: (x[0], x[1], (x[2] - 1) // stride + 1,
                                                         (x[3] - 1) // stride + 1))
    if bias:
        return ops.Custom(f"{lib}:dw3x3_{s}_fwd_bias", out_dtype=lambda x, w, b: x, func_type="aot",
                          out_shape=lambda x, w, b: (x[0], x[1], (x[2] - 1) // stride + 1, (x[3] - 1) // stride + 1))

    def out_shape(x, w):
        return (x[0], x[1], (x[2] - 1) // stride + 1, (x[3] - 1) // stride + 1)

    grad_x = ops.Custom(f"{lib}:dw3x3_{s}_bwd_x", out_shape=lambda dy, w, x: x, out_dtype=lambda dy, w, x: x,
                        func_type="aot")
    grad_w = ops.Custom(f"{lib}:dw3x3_{s}_bwd_w", out_shape=lambda dy, x: (x[1], 1, 3, 3),
                        out_dtype=lambda dy, x: x, func_type="aot")

    def bprop(x, w, out, dout):
        return grad_x(dout, w, x), grad_w(dout, x)

    return ops.Custom(f"{lib}:dw3x3_{s}_fwd", out_shape=out_shape, out_dtype=lambda x, w: x, func_type="aot",
                      bprop=bprop)


def _zeros_like(*tensors):
    return tuple(ops.zeros_like(t) for t in tensors)


def batchnorm_train(lib: str, relu: bool):
    """``op(x, gamma, beta, moving_mean, moving_variance, hyper)`` -> ``(y, mean, rstd, new_moving_mean,
    new_moving_variance)``: training-mode BatchNorm of NCHW float32 ``x`` with the batch statistics, followed by
    a ReLU when ``relu``; ``hyper`` = ``[eps, momentum]`` (float32) with nn.BatchNorm2d's meaning (moving =
    momentum * moving + (1 - momentum) * batch statistic, unbiased variance). The gradient flows to x, gamma
    and beta only; the caller assigns the new moving statistics."""
    return _cached(lib, ("bn", relu), lambda lib: _batchnorm_train(lib, relu))


def _batchnorm_train(lib: str, relu: bool):
    name = "bn_relu_train" if relu else "bn_train"
    grad = ops.Custom(f"{lib}:{name}_bwd", out_shape=lambda dy, x, g, b, m, r: (x, g, g),
                      out_dtype=lambda dy, x, g, b, m, r: (x, g, g), func_type="aot")

    def bprop(x, gamma, beta, mm, mv, hyper, out, dout):
        dx, dgamma, dbeta = grad(dout[0], x, gamma, beta, out[1], out[2])
        return (dx, dgamma, dbeta) + _zeros_like(mm, mv, hyper)

    return ops.Custom(f"{lib}:{name}_fwd", out_shape=lambda x, g, b, mm, mv, h: (x, g, g, g, g),
                      out_dtype=lambda x, g, b, mm, mv, h: (x, g, g, g, g), func_type="aot", bprop=bprop)


def bn_relu_maxpool(lib: str):
    """``op(z, gamma, beta, moving_mean, moving_variance, hyper)`` -> ``(pooled, mean, rstd, new_moving_mean,
    new_moving_variance, index)``: ``batchnorm_train(relu=True)`` followed by a 3x3 stride-2 max pool with
    padding 1 (MindSpore's ``nn.MaxPool2d(3, 2, pad_mode="pad", padding=1)``), in one pass over the pooled map;
    ``index`` (int32) is where each maximum came from, for the gradient."""
    return _cached(lib, ("bn_relu_maxpool",), _bn_relu_maxpool)


def _bn_relu_maxpool(lib: str):
    grad = ops.Custom(f"{lib}:bn_relu_maxpool_bwd", out_shape=lambda dp, z, i, g, b, m, r: (z, g, g),
                      out_dtype=lambda dp, z, i, g, b, m, r: (z, g, g), func_type="aot")

    def bprop(z, gamma, beta, mm, mv, hyper, out, dout):
        dz, dgamma, dbeta = grad(dout[0], z, out[5], gamma, beta, out[1], out[2])
        return (dz, dgamma, dbeta) + _zeros_like(mm, mv, hyper)

    def out_shape(z, g, b, mm, mv, h):
        pooled = (z[0], z[1], (z[2] - 1) // 2 + 1, (z[3] - 1) // 2 + 1)
        return pooled, g, g, g, g, pooled

    return ops.Custom(f"{lib}:bn_relu_maxpool_fwd", out_shape=out_shape,
                      out_dtype=lambda z, g, b, mm, mv, h: (z, g, g, g, g, ms.int32), func_type="aot", bprop=bprop)


def shuffle_split(lib: str):
    """``op(x)`` -> ``(x[:, 0::2], x[:, 1::2])`` for NCHW ``x`` with 4-byte elements and an even channel count,
    with its gradient (the two halves interleaved back)."""
    return _cached(lib, ("shuffle_split",), _shuffle_split)


def _shuffle_split(lib: str):
    def merged(a, b):
        return a[0], a[1] * 2, a[2], a[3]

    merge = ops.Custom(f"{lib}:shuffle_merge", out_shape=merged, out_dtype=lambda a, b: a, func_type="aot")

    def bprop(x, out, dout):
        return (merge(dout[0], dout[1]),)

    def halves(x):
        half = (x[0], x[1] // 2, x[2], x[3])
        return half, half

    return ops.Custom(f"{lib}:shuffle_split", out_shape=halves, out_dtype=lambda x: (x, x), func_type="aot",
                      bprop=bprop)


def cat_shuffle_split(lib: str):
    """``op(a, b)`` -> ``shuffle_split()(concat((a, b), 1))`` without the concat (NCHW, 4-byte elements, the
    channel counts adding up to an even number), with its gradient."""
    return _cached(lib, ("cat_shuffle_split",), _cat_shuffle_split)


def _cat_shuffle_split(lib: str):
    merge = ops.Custom(f"{lib}:cat_shuffle_merge", out_shape=lambda e, o, a, b: (a, b),
                       out_dtype=lambda e, o, a, b: (a, b), func_type="aot")

    def bprop(a, b, out, dout):
        return merge(dout[0], dout[1], a, b)

    def halves(a, b):
        half = (a[0], (a[1] + b[1]) // 2, a[2], a[3])
        return half, half

    return ops.Custom(f"{lib}:cat_shuffle_split", out_shape=halves, out_dtype=lambda a, b: (a, a),
                      func_type="aot", bprop=bprop)


def global_avg_pool(lib: str):
    """``op(x)`` -> ``x.mean((2, 3))`` for NCHW float32 ``x``, with its gradient."""
    return _cached(lib, ("global_avg_pool",), _global_avg_pool)


def _global_avg_pool(lib: str):
    grad = ops.Custom(f"{lib}:global_avg_pool_bwd", out_shape=lambda dy, x: x, out_dtype=lambda dy, x: x,
                      func_type="aot")

    def bprop(x, out, dout):
        return (grad(dout, x),)

    return ops.Custom(f"{lib}:global_avg_pool_fwd", out_shape=lambda x: (x[0], x[1]), out_dtype=lambda x: x,
                      func_type="aot", bprop=bprop)


# -- inference with folded BatchNorm (csrc/infer.cc): no gradients --------------------------------------------

def act_cat_split(lib: str):
    """``op(a, bias_a, b, bias_b)`` -> ``(e, o)``: ``shuffle_split()(concat((relu(a + bias_a), relu(b + bias_b)), 1))``
    in one copy (biases per channel, broadcast over N, H, W)."""
    def halves(a, ba, b, bb):
        half = (a[0], (a[1] + b[1]) // 2, a[2], a[3])
        return half, half

    return _cached(lib, ("act_cat_split",), lambda lib: ops.Custom(
        f"{lib}:act_cat_split", out_shape=halves, out_dtype=lambda a, ba, b, bb: (a, a), func_type="aot"))


def act_cat(lib: str):
    """``op(a, bias_a, b, bias_b)`` -> ``concat((relu(a + bias_a), relu(b + bias_b)), 1)``."""
    return _cached(lib, ("act_cat",), lambda lib: ops.Custom(
        f"{lib}:act_cat", out_shape=lambda a, ba, b, bb: (a[0], a[1] + b[1], a[2], a[3]),
        out_dtype=lambda a, ba, b, bb: a, func_type="aot"))


def act_avgpool(lib: str):
    """``op(x, bias)`` -> ``relu(x + bias).mean((2, 3))``."""
    return _cached(lib, ("act_avgpool",), lambda lib: ops.Custom(
        f"{lib}:act_avgpool", out_shape=lambda x, b: (x[0], x[1]), out_dtype=lambda x, b: x, func_type="aot"))


def stem_conv_pool(lib: str):
    """``op(x, weight, bias)``: 3x3 conv (stride 2, padding 1) + bias, ReLU, then a 3x3 stride-2 max pool with
    padding 1, in one pass (the conv map is not written out). NCHW float32, weight (Co, Ci, 3, 3). """
    def out_shape(x, w, b):
        hc, wc = (x[2] - 1) // 2 + 1, (x[3] - 1) // 2 + 1
        return x[0], w[0], (hc - 1) // 2 + 1, (wc - 1) // 2 + 1

    return _cached(lib, ("stem_conv_pool",), lambda lib: ops.Custom(
        f"{lib}:stem_conv_pool", out_shape=out_shape, out_dtype=lambda x, w, b: x, func_type="aot"))


def conv1x1(lib: str):
    """``op(x, weight)``: 1x1 convolution without bias, NCHW float32, weight (Co, Ci, 1, 1) (inference, no
    gradient)."""
    return _cached(lib, ("conv1x1",), lambda lib: ops.Custom(
        f"{lib}:conv1x1_fwd", out_shape=lambda x, w: (x[0], w[0], x[2], x[3]), out_dtype=lambda x, w: x,
        func_type="aot"))
