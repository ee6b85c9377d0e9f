"""The layer graph shared by the NumPy trainer and the fixed-point simulator.

Every layer has ``kind``, ``params``/``grads`` (trainable arrays, same keys),
``buffers`` (non-trainable state), ``forward(x, training=False)``,
``backward(dout) -> dx``, ``config()`` and ``output_shape(input_shape)``
(shapes without the batch axis). Images are NCHW. A layer computes in the
dtype of its input (float32 when training, float64 in the gradient tests);
``backward`` overwrites ``grads`` in place (it never accumulates), so an
optimizer may keep references to the arrays, and must update ``params`` in
place too.

Backward formulas (lecture notes, backpropagation through each node):

=============  ================================================================
layer          gradient
=============  ================================================================
Dense          ``y = x W + b``: ``dW = x^T dy``, ``db = sum_i dy``, ``dx = dy W^T``
Conv2D         the same on im2col patches; ``dx`` by col2im (overlaps summed)
MaxPool2D      ``dy`` routed to the arg-max of each window (first on ties)
AvgPool2D      ``dy / k^2`` spread over each window
ReLU           ``dx = dy [x > 0]``
Tanh           ``dx = dy (1 - y^2)``
Sigmoid        ``dx = dy y (1 - y)``
BatchNorm      ``dx = (gamma / (m sigma)) (m dy - sum dy - x_hat sum(dy x_hat))``
Dropout        ``dx = dy * mask / (1 - p)`` (inverted dropout)
=============  ================================================================
"""

from __future__ import annotations

import re
from typing import Iterable

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from .errors import FxpsimError
from .train.init import init_layer, parse_init

DEFAULT_DTYPE = np.float32


def _as_float(x: np.ndarray) -> np.ndarray:
    """Float input as is; integer input (e.g. uint8 pixels) as float32."""
    x = np.asarray(x)
    return x if np.issubdtype(x.dtype, np.floating) else x.astype(DEFAULT_DTYPE)


class Layer:
    """Base class: no parameters, identity shape."""

    kind = "layer"
    _has_params = False  # constructor takes dtype

    def __init__(self) -> None:
        self.params: dict[str, np.ndarray] = {}
        self.grads: dict[str, np.ndarray] = {}
        self.buffers: dict[str, np.ndarray] = {}
        self._cache = None

    def _add_param(self, name: str, value: np.ndarray) -> None:
        self.params[name] = value
        self.grads[name] = np.zeros_like(value)

    def _set_grad(self, name: str, value: np.ndarray) -> None:
        self.grads[name][...] = value

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        raise NotImplementedError

    def backward(self, dout: np.ndarray) -> np.ndarray:
        """``dL/dx`` from ``dL/dy`` of the last forward; fills ``grads`` in place."""
        raise NotImplementedError

    def config(self) -> dict:
        """JSON-able constructor arguments plus ``kind``."""
        return {"kind": self.kind}

    @classmethod
    def from_config(cls, cfg: dict, dtype=DEFAULT_DTYPE) -> "Layer":
        args = {k: v for k, v in cfg.items() if k != "kind"}
        if cls._has_params:
            args["dtype"] = dtype
        return cls(**args)

    def output_shape(self, input_shape: tuple[int, ...]) -> tuple[int, ...]:
        return tuple(input_shape)

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v}" for k, v in self.config().items() if k != "kind")
        return f"{type(self).__name__}({args})"


def _check_ndim(layer: Layer, x: np.ndarray, ndims: tuple[int, ...]) -> None:
    if x.ndim not in ndims:
        want = " or ".join(f"{n}-d" for n in ndims)
        raise FxpsimError(f"{layer.kind} got input of shape {x.shape}: expected {want} (batch first)")


# ---------------------------------------------------------------- dense, conv


class Dense(Layer):
    """Fully connected: ``y = x W + b`` with ``W (n_in, n_out)``, ``b (n_out,)``."""

    kind = "dense"
    _has_params = True

    def __init__(self, n_in: int, n_out: int, dtype=DEFAULT_DTYPE) -> None:
        super().__init__()
        self.n_in, self.n_out = int(n_in), int(n_out)
        self._add_param("W", np.zeros((self.n_in, self.n_out), dtype=dtype))
        self._add_param("b", np.zeros(self.n_out, dtype=dtype))

    def forward(self, x, training=False):
        _check_ndim(self, x, (2,))
        w = self.params["W"].astype(x.dtype, copy=False)
        self._cache = x
        return x @ w + self.params["b"].astype(x.dtype, copy=False)

    def backward(self, dout, input_grad=True):
        x = self._cache
        self._set_grad("W", x.T @ dout)
        self._set_grad("b", dout.sum(axis=0))
        if not input_grad:
            return None
        return dout @ self.params["W"].astype(dout.dtype, copy=False).T

    def config(self):
        return {"kind": self.kind, "n_in": self.n_in, "n_out": self.n_out}

    def output_shape(self, input_shape):
        if tuple(input_shape) != (self.n_in,):
            raise FxpsimError(f"dense layer with n_in={self.n_in} got input shape {tuple(input_shape)}")
        return (self.n_out,)


def _conv_out(size: int, k: int, stride: int, padding: int) -> int:
    return (size + 2 * padding - k) // stride + 1


def _windows(x: np.ndarray, k: int, stride: int, ho: int, wo: int) -> np.ndarray:
    """View ``(B, C, ho, wo, k, k)`` of the k x k windows of ``x (B, C, H, W)`` at ``stride``."""
    win = sliding_window_view(x, (k, k), axis=(2, 3))
    return win[:, :, : stride * (ho - 1) + 1 : stride, : stride * (wo - 1) + 1 : stride]


def pool_reduce(x: np.ndarray, k: int, stride: int, ufunc) -> np.ndarray:
    """``ufunc`` (np.maximum, np.add, ...) folded over the k x k windows of ``x (B, C, H, W)``
    at ``stride`` (no padding, floor mode), window order row-major: ``(B, C, ho, wo)``.

    k*k strided elementwise passes; reducing the 6-d window view with ``.max(axis=...)``
    instead took 38 ms per LeNet-5 pooling call on 500 images (measured).
    """
    ho = (x.shape[2] - k) // stride + 1
    wo = (x.shape[3] - k) // stride + 1
    win = _windows(x, k, stride, ho, wo)
    y = win[..., 0, 0].copy()
    for i in range(k):
        for j in range(k):
            if i or j:
                ufunc(y, win[..., i, j], out=y)
    return y


class Conv2D(Layer):
    """2-D convolution (cross-correlation), NCHW, square kernel, zero padding.

    ``y[b, f, i, j] = b_f + sum_{c, u, v} W[f, c, u, v] x_pad[b, c, s i + u, s j + v]``,
    output size ``(H + 2p - k) // s + 1``. Computed by im2col (patches from a
    strided view) and one matrix product.
    """

    kind = "conv2d"
    _has_params = True

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.c_in, self.c_out, self.k = int(c_in), int(c_out), int(k)
        self.stride, self.padding = int(stride), int(padding)
        if min(self.c_in, self.c_out, self.k, self.stride) < 1 or self.padding < 0:
            raise FxpsimError(
                f"conv2d c_in={c_in} c_out={c_out} k={k} stride={stride} padding={padding}: "
                "sizes and stride must be >= 1 and padding >= 0"
            )
        self._add_param("W", np.zeros((self.c_out, self.c_in, self.k, self.k), dtype=dtype))
        self._add_param("b", np.zeros(self.c_out, dtype=dtype))

    def forward(self, x, training=False):
        _check_ndim(self, x, (4,))
        bsz, _, h, w = x.shape
        k, s, p = self.k, self.stride, self.padding
        ho, wo = _conv_out(h, k, s, p), _conv_out(w, k, s, p)
        # batch-last layout (C, H, W, B): every copy below moves runs of B contiguous values
        xt = np.ascontiguousarray(x.transpose(1, 2, 3, 0))
        if p:
            xt = np.pad(xt, ((0, 0), (p, p), (p, p), (0, 0)))
        win = sliding_window_view(xt, (k, k), axis=(1, 2))[:, : s * (ho - 1) + 1 : s, : s * (wo - 1) + 1 : s]
        cols = win.transpose(0, 4, 5, 1, 2, 3).reshape(self.c_in * k * k, ho * wo * bsz)  # im2col
        wmat = self.params["W"].astype(x.dtype, copy=False).reshape(self.c_out, -1)
        out = wmat @ cols
        out += self.params["b"].astype(x.dtype, copy=False)[:, None]
        self._cache = (cols, xt.shape, (h, w), ho, wo)
        return np.ascontiguousarray(out.reshape(self.c_out, ho, wo, bsz).transpose(3, 0, 1, 2))

    def backward(self, dout, input_grad=True):
        cols, padded_shape, (h, w), ho, wo = self._cache
        k, s, p = self.k, self.stride, self.padding
        dflat = dout.transpose(1, 2, 3, 0).reshape(self.c_out, -1)
        self._set_grad("W", (dflat @ cols.T).reshape(self.params["W"].shape))
        self._set_grad("b", dflat.sum(axis=1))
        if not input_grad:
            return None
        wmat = self.params["W"].astype(dout.dtype, copy=False).reshape(self.c_out, -1)
        dcols = (wmat.T @ dflat).reshape(self.c_in, k, k, ho, wo, -1)
        dxt = np.zeros(padded_shape, dtype=dout.dtype)  # col2im: overlapping windows add up
        for i in range(k):
            for j in range(k):
                dxt[:, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s] += dcols[:, i, j]
        return np.ascontiguousarray(dxt[:, p : p + h, p : p + w].transpose(3, 0, 1, 2))

    def config(self):
        return {"kind": self.kind, "c_in": self.c_in, "c_out": self.c_out, "k": self.k,
                "stride": self.stride, "padding": self.padding}

    def output_shape(self, input_shape):
        if len(input_shape) != 3 or input_shape[0] != self.c_in:
            raise FxpsimError(
                f"conv2d with c_in={self.c_in} got input shape {tuple(input_shape)}: expected ({self.c_in}, H, W)"
            )
        _, h, w = input_shape
        ho, wo = _conv_out(h, self.k, self.stride, self.padding), _conv_out(w, self.k, self.stride, self.padding)
        if ho < 1 or wo < 1:
            raise FxpsimError(
                f"conv2d kernel {self.k} (padding {self.padding}) does not fit input {h}x{w}: "
                "use a smaller kernel, padding, or fewer pooling layers before it"
            )
        return (self.c_out, ho, wo)


# ---------------------------------------------------------------- pooling


class _Pool2D(Layer):
    def __init__(self, size: int, stride: int | None = None) -> None:
        super().__init__()
        self.size = int(size)
        self.stride = self.size if stride is None else int(stride)
        if self.size < 1 or self.stride < 1:
            raise FxpsimError(f"{self.kind} size={size} stride={stride}: both must be >= 1")

    def config(self):
        return {"kind": self.kind, "size": self.size, "stride": self.stride}

    def _out_hw(self, h, w):
        return (h - self.size) // self.stride + 1, (w - self.size) // self.stride + 1

    def output_shape(self, input_shape):
        if len(input_shape) != 3:
            raise FxpsimError(f"{self.kind} got input shape {tuple(input_shape)}: expected (C, H, W)")
        c, h, w = input_shape
        ho, wo = self._out_hw(h, w)
        if ho < 1 or wo < 1:
            raise FxpsimError(f"{self.kind} window {self.size} does not fit input {h}x{w}: use a smaller window")
        return (c, ho, wo)


class MaxPool2D(_Pool2D):
    """Max over ``size x size`` windows at ``stride`` (default = size); no padding, floor mode.

    The gradient goes to the first maximum of each window (row-major) on ties.
    """

    kind = "maxpool2d"

    def forward(self, x, training=False):
        _check_ndim(self, x, (4,))
        ho, wo = self._out_hw(*x.shape[2:])
        y = pool_reduce(x, self.size, self.stride, np.maximum)
        self._cache = (_windows(x, self.size, self.stride, ho, wo), y, x.shape)  # a view, for backward
        return y

    def backward(self, dout):
        win, y, shape = self._cache
        k, s = self.size, self.stride
        arg = np.full(y.shape, k * k - 1, dtype=np.int16)  # window position of the maximum
        for idx in reversed(range(k * k - 1)):  # lowest index written last: the first maximum wins
            np.putmask(arg, win[..., idx // k, idx % k] == y, idx)
        ho, wo = dout.shape[2:]
        dx = np.zeros(shape, dtype=dout.dtype)
        for idx in range(k * k):
            i, j = divmod(idx, k)
            view = dx[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s]
            if s >= k:  # windows do not overlap: each input gets at most one gradient
                np.multiply(dout, arg == idx, out=view)
            else:
                view += np.where(arg == idx, dout, 0)
        return dx


class AvgPool2D(_Pool2D):
    """Mean over ``size x size`` windows at ``stride`` (default = size); no padding, floor mode."""

    kind = "avgpool2d"

    def forward(self, x, training=False):
        _check_ndim(self, x, (4,))
        self._cache = x.shape
        return pool_reduce(x, self.size, self.stride, np.add) / x.dtype.type(self.size * self.size)

    def backward(self, dout):
        k, s = self.size, self.stride
        ho, wo = dout.shape[2:]
        share = dout / dout.dtype.type(k * k)
        dx = np.zeros(self._cache, dtype=dout.dtype)
        for i in range(k):
            for j in range(k):
                dx[:, :, i : i + s * (ho - 1) + 1 : s, j : j + s * (wo - 1) + 1 : s] += share
        return dx


class Flatten(Layer):
    """``(B, C, H, W) -> (B, C*H*W)`` in C order (channel, row, column)."""

    kind = "flatten"

    def forward(self, x, training=False):
        self._cache = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, dout):
        return dout.reshape(self._cache)

    def output_shape(self, input_shape):
        return (int(np.prod(input_shape)),)


# ---------------------------------------------------------------- activations


class ReLU(Layer):
    """``max(0, x)``; gradient ``[x > 0]``."""

    kind = "relu"

    def forward(self, x, training=False):
        self._cache = x > 0
        return np.maximum(x, x.dtype.type(0))

    def backward(self, dout):
        return dout * self._cache


class Tanh(Layer):
    """``tanh(x)``; gradient ``1 - tanh(x)^2``."""

    kind = "tanh"

    def forward(self, x, training=False):
        y = np.tanh(x)
        self._cache = y
        return y

    def backward(self, dout):
        y = self._cache
        return dout * (1 - y * y)


class Sigmoid(Layer):
    """``1 / (1 + exp(-x))``, computed as ``(1 + tanh(x/2)) / 2`` (no overflow); gradient ``y (1 - y)``."""

    kind = "sigmoid"

    def forward(self, x, training=False):
        y = 0.5 * (1 + np.tanh(0.5 * x))
        self._cache = y
        return y

    def backward(self, dout):
        y = self._cache
        return dout * y * (1 - y)


# ---------------------------------------------------------------- normalisation, dropout


class BatchNorm(Layer):
    """Batch normalisation (Ioffe and Szegedy 2015; lecture notes "Batch Normalization").

    Per feature for ``(B, F)`` input, per channel for ``(B, C, H, W)`` (spatial
    BN: statistics over batch, rows and columns). Training:
    ``x_hat = (x - mu_B) / sqrt(sigma_B^2 + eps)``, ``y = gamma x_hat + beta``
    with the batch mean and (biased) variance; the running averages are
    updated as ``r <- momentum r + (1 - momentum) batch_stat``. Test: the
    running averages replace the batch statistics.
    """

    kind = "batchnorm"
    _has_params = True

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: float = 0.9, dtype=DEFAULT_DTYPE):
        super().__init__()
        self.num_features, self.eps, self.momentum = int(num_features), float(eps), float(momentum)
        if self.num_features < 1 or self.eps <= 0 or not 0 <= self.momentum < 1:
            raise FxpsimError(
                f"batchnorm num_features={num_features} eps={eps} momentum={momentum}: "
                "need num_features >= 1, eps > 0, 0 <= momentum < 1"
            )
        self._add_param("gamma", np.ones(self.num_features, dtype=dtype))
        self._add_param("beta", np.zeros(self.num_features, dtype=dtype))
        self.buffers["running_mean"] = np.zeros(self.num_features, dtype=dtype)
        self.buffers["running_var"] = np.ones(self.num_features, dtype=dtype)

    def _axes_shape(self, x):
        _check_ndim(self, x, (2, 4))
        if x.shape[1] != self.num_features:
            raise FxpsimError(f"batchnorm over {self.num_features} features got input of shape {x.shape}")
        return ((0,), (1, -1)) if x.ndim == 2 else ((0, 2, 3), (1, -1, 1, 1))

    def forward(self, x, training=False):
        axes, bshape = self._axes_shape(x)
        gamma = self.params["gamma"].astype(x.dtype, copy=False).reshape(bshape)
        beta = self.params["beta"].astype(x.dtype, copy=False).reshape(bshape)
        if training:
            mean = x.mean(axis=axes)
            var = x.var(axis=axes)
            m = self.momentum
            self.buffers["running_mean"][...] = m * self.buffers["running_mean"] + (1 - m) * mean
            self.buffers["running_var"][...] = m * self.buffers["running_var"] + (1 - m) * var
        else:
            mean = self.buffers["running_mean"].astype(x.dtype, copy=False)
            var = self.buffers["running_var"].astype(x.dtype, copy=False)
        inv_std = (1 / np.sqrt(var + x.dtype.type(self.eps))).astype(x.dtype, copy=False).reshape(bshape)
        x_hat = (x - mean.reshape(bshape)) * inv_std
        self._cache = (x_hat, inv_std, axes, bshape, training)
        return gamma * x_hat + beta

    def backward(self, dout):
        x_hat, inv_std, axes, bshape, training = self._cache
        self._set_grad("gamma", (dout * x_hat).sum(axis=axes))
        self._set_grad("beta", dout.sum(axis=axes))
        gamma = self.params["gamma"].astype(dout.dtype, copy=False).reshape(bshape)
        dx_hat = dout * gamma
        if not training:  # statistics are constants at test time
            return dx_hat * inv_std
        m = dout.size // self.num_features
        sum_d = dx_hat.sum(axis=axes).reshape(bshape)
        sum_dx = (dx_hat * x_hat).sum(axis=axes).reshape(bshape)
        return (inv_std / m) * (m * dx_hat - sum_d - x_hat * sum_dx)

    def config(self):
        return {"kind": self.kind, "num_features": self.num_features, "eps": self.eps, "momentum": self.momentum}

    def output_shape(self, input_shape):
        if len(input_shape) not in (1, 3) or input_shape[0] != self.num_features:
            raise FxpsimError(
                f"batchnorm over {self.num_features} features got input shape {tuple(input_shape)}"
            )
        return tuple(input_shape)


class Dropout(Layer):
    """Inverted dropout: drop each unit with probability ``p`` while training.

    Training: ``y = x * mask / (1 - p)`` with ``mask ~ Bernoulli(1 - p)``
    drawn from ``self.rng`` (the owning :class:`Network`'s generator, so
    training is deterministic for a seed); test: identity. (The notes'
    "vanilla" dropout instead scales by the keep probability at test time;
    their ``p`` is the keep probability, ours the drop probability.)
    """

    kind = "dropout"

    def __init__(self, p: float, rng: np.random.Generator | None = None) -> None:
        super().__init__()
        self.p = float(p)
        if not 0 <= self.p < 1:
            raise FxpsimError(f"dropout p={p}: the drop probability must be in [0, 1)")
        self.rng = rng if rng is not None else np.random.default_rng(0)

    def forward(self, x, training=False):
        if not training or self.p == 0:
            self._cache = None
            return x
        rdtype = x.dtype if x.dtype in (np.float32, np.float64) else np.float64
        keep = self.rng.random(x.shape, dtype=rdtype) >= self.p
        self._cache = keep.astype(x.dtype) / x.dtype.type(1 - self.p)
        return x * self._cache

    def backward(self, dout):
        return dout if self._cache is None else dout * self._cache

    def config(self):
        return {"kind": self.kind, "p": self.p}


LAYER_KINDS: dict[str, type[Layer]] = {
    cls.kind: cls for cls in (Dense, Conv2D, MaxPool2D, AvgPool2D, Flatten, ReLU, Tanh, Sigmoid, BatchNorm, Dropout)
}


_EXTENSION_KINDS = ("bdense", "bconv2d", "sign")  # fxpsim.binary.train_layers, imported on first use


def _load_extensions() -> None:
    """Import the modules that register extra layer kinds (binary layers pull in Numba: lazily)."""
    from .binary import train_layers  # noqa: F401  (registers into LAYER_KINDS)


def _extension_token(tok: str, shape: tuple, dtype):
    """A binary layer for ``bfc``/``bconv``/``sign`` tokens, else None."""
    if not (tok.startswith(("bfc", "bconv")) or tok == "sign"):
        return None
    from .binary.train_layers import parse_binary_token

    return parse_binary_token(tok, shape, dtype)


def layer_from_config(cfg: dict, dtype=DEFAULT_DTYPE) -> Layer:
    """Rebuild a layer (parameters zero) from its :meth:`Layer.config`."""
    kind = cfg.get("kind") if isinstance(cfg, dict) else None
    if kind not in LAYER_KINDS and kind in _EXTENSION_KINDS:
        _load_extensions()
    if kind not in LAYER_KINDS:
        raise FxpsimError(f"unknown layer kind {kind!r}: expected one of {', '.join(LAYER_KINDS)}")
    try:
        return LAYER_KINDS[kind].from_config(cfg, dtype=dtype)
    except TypeError as err:
        raise FxpsimError(f"bad {kind} layer config {cfg}: {err}") from None


# ---------------------------------------------------------------- network


class Network:
    """A sequential stack of layers on inputs of ``input_shape`` (no batch axis).

    ``seed`` seeds the generator that Dropout layers draw their masks from.
    """

    def __init__(self, layers: Iterable[Layer], input_shape: tuple[int, ...], seed: int | None = 0) -> None:
        self.layers = list(layers)
        self.input_shape = tuple(int(s) for s in input_shape)
        self.seed = seed
        self.rng = np.random.default_rng(seed)
        for layer in self.layers:
            if isinstance(layer, Dropout) or getattr(layer, "method", None) == "bcs":
                layer.rng = self.rng
        self.shapes = [self.input_shape]  # shapes[i] = input of layer i; shapes[-1] = output
        for layer in self.layers:
            self.shapes.append(tuple(layer.output_shape(self.shapes[-1])))

    @property
    def output_shape(self) -> tuple[int, ...]:
        return self.shapes[-1]

    def forward(self, x: np.ndarray, training: bool = False) -> np.ndarray:
        x = _as_float(x)
        if tuple(x.shape[1:]) != self.input_shape:
            raise FxpsimError(
                f"network input has shape {x.shape}: expected (batch, {', '.join(map(str, self.input_shape))})"
            )
        for layer in self.layers:
            x = layer.forward(x, training)
        return x

    def backward(self, dout: np.ndarray, input_grad: bool = True) -> np.ndarray | None:
        """Fill every layer's ``grads``; return ``dL/dx`` of the network input.

        ``input_grad=False`` (training) stops at the first layer with
        parameters, skipping the input gradient nobody uses; returns None.
        """
        first = next((i for i, layer in enumerate(self.layers) if layer.params), 0)
        for i in reversed(range(len(self.layers))):
            layer = self.layers[i]
            if not input_grad and i == first and isinstance(layer, (Dense, Conv2D)):
                layer.backward(dout, input_grad=False)
                return None
            dout = layer.backward(dout)
        return dout

    def predict(self, x: np.ndarray, batch_size: int = 1000) -> np.ndarray:
        """Test-mode outputs (logits) of ``x``, in batches."""
        outs = [self.forward(x[i : i + batch_size]) for i in range(0, len(x), batch_size)]
        return np.concatenate(outs) if outs else np.zeros((0, *self.output_shape))

    def params_and_grads(self) -> list[tuple[str, np.ndarray, np.ndarray]]:
        """``[(key, param, grad), ...]`` with keys like ``"3.W"``; arrays by reference."""
        return [
            (f"{i}.{name}", layer.params[name], layer.grads[name])
            for i, layer in enumerate(self.layers)
            for name in layer.params
        ]

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of all params and buffers, keys ``"<layer index>.<name>"``."""
        state = {}
        for i, layer in enumerate(self.layers):
            for name, arr in (*layer.params.items(), *layer.buffers.items()):
                state[f"{i}.{name}"] = arr.copy()
        return state

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Copy ``state`` into the params/buffers (in place); keys and shapes must match exactly."""
        targets = {}
        for i, layer in enumerate(self.layers):
            for name, arr in (*layer.params.items(), *layer.buffers.items()):
                targets[f"{i}.{name}"] = arr
        missing, extra = sorted(set(targets) - set(state)), sorted(set(state) - set(targets))
        if missing or extra:
            raise FxpsimError(
                f"state does not match the network: missing {missing or 'none'}, unexpected {extra or 'none'}"
            )
        for key, arr in targets.items():
            value = np.asarray(state[key])
            if value.shape != arr.shape:
                raise FxpsimError(f"state {key!r} has shape {value.shape}: the network expects {arr.shape}")
            arr[...] = value

    def astype(self, dtype) -> "Network":
        """Convert params, grads and buffers to ``dtype`` (e.g. float64 for gradient checks); returns self."""
        for layer in self.layers:
            for store in (layer.params, layer.grads, layer.buffers):
                for name in store:
                    store[name] = store[name].astype(dtype)
        return self

    def to_config(self) -> dict:
        """JSON-able architecture: ``{"input_shape", "seed", "layers": [layer configs]}``."""
        return {"input_shape": list(self.input_shape), "seed": self.seed,
                "layers": [layer.config() for layer in self.layers]}

    @classmethod
    def from_config(cls, cfg: dict, dtype=DEFAULT_DTYPE) -> "Network":
        """Rebuild from :meth:`to_config` with zero params (then :meth:`load_state_dict`)."""
        try:
            layers = [layer_from_config(c, dtype) for c in cfg["layers"]]
            return cls(layers, tuple(cfg["input_shape"]), cfg.get("seed", 0))
        except (KeyError, TypeError) as err:
            raise FxpsimError(f"bad network config: {err!r}; expected keys input_shape, layers") from None

    def spec(self) -> str:
        """The spec string of this stack; ``build_network(net.spec(), ...)`` rebuilds the same layers."""
        tokens = []
        for i, layer in enumerate(self.layers):
            nxt = self.layers[i + 1] if i + 1 < len(self.layers) else None
            if isinstance(layer, Flatten) and isinstance(nxt, Dense):
                continue  # re-inserted automatically before the fc
            tokens.append(_token(layer))
        return "-".join(tokens)

    def __repr__(self) -> str:
        return f"Network({self.spec()!r}, input_shape={self.input_shape})"


def _token(layer: Layer) -> str:
    if hasattr(layer, "token"):  # binary layers: bfc/bconv with their method
        return layer.token()
    if isinstance(layer, Conv2D):
        tok = f"conv{layer.c_out}x{layer.k}"
        tok += f"s{layer.stride}" if layer.stride != 1 else ""
        return tok + (f"p{layer.padding}" if layer.padding else "")
    if isinstance(layer, Dense):
        return f"fc{layer.n_out}"
    if isinstance(layer, _Pool2D):
        name = "maxpool" if isinstance(layer, MaxPool2D) else "avgpool"
        return f"{name}{layer.size}" + (f"s{layer.stride}" if layer.stride != layer.size else "")
    if isinstance(layer, BatchNorm):
        return "bn"
    if isinstance(layer, Dropout):
        return f"dropout{layer.p * 100:g}"
    return layer.kind  # flatten, relu, tanh, sigmoid


# ---------------------------------------------------------------- architectures and specs

GRAMMAR = (
    "tokens joined by '-': conv<C>x<k>[s<stride>][p<pad>], fc<N>, relu, tanh, sigmoid, "
    "maxpool<k>[s<stride>], avgpool<k>[s<stride>], bn, dropout<percent>, flatten; binary: "
    "bfc<N>[method], bconv<C>x<k>[s<stride>][p<pad>][method], sign (method bc|bcs|bnn|bwn|xnor|twn|ttq)"
)


def _mlp(input_shape, n_classes):
    size = int(np.prod(input_shape))
    return _lenet300(input_shape, n_classes) if size >= 256 else _mlp_small(input_shape, n_classes)


def _lenet300(input_shape, n_classes):
    return f"fc300-relu-fc100-relu-fc{n_classes}"


def _mlp_small(input_shape, n_classes):
    return f"fc64-relu-fc32-relu-fc{n_classes}"


def _lenet5(input_shape, n_classes):
    return f"conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-fc120-relu-fc84-relu-fc{n_classes}"


def _lenet5_caffe(input_shape, n_classes):
    return f"conv20x5-maxpool2-conv50x5-maxpool2-fc500-relu-fc{n_classes}"


def _cnn_small(input_shape, n_classes):
    return f"conv16x3p1-relu-maxpool2-conv32x3p1-relu-maxpool2-fc{n_classes}"


ARCHITECTURES = {
    "mlp": (_mlp, "lenet300 for inputs of >= 256 values (28x28 MNIST), else mlp-small"),
    "lenet300": (_lenet300, "LeNet-300-100: fc300-relu-fc100-relu-fc<n> (Han et al. 2015)"),
    "mlp-small": (_mlp_small, "fc64-relu-fc32-relu-fc<n>, for 8x8 digits"),
    "lenet5": (_lenet5, "LeCun's LeNet-5 on 28x28: conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-"
                        "fc120-relu-fc84-relu-fc<n>"),
    "lenet5-caffe": (_lenet5_caffe, "Caffe's LeNet (the 'LeNet-5' of Han et al.): conv20x5-maxpool2-"
                                    "conv50x5-maxpool2-fc500-relu-fc<n>, 431k weights"),
    "cnn-small": (_cnn_small, "for 8x8 digits: conv16x3p1-relu-maxpool2-conv32x3p1-relu-maxpool2-fc<n>, "
                              "6k weights (98.9-99.2 % on a digits test split in a quick Adam run)"),
}

_TOKEN_RES = [
    (re.compile(r"conv(\d+)x(\d+)(?:s(\d+))?(?:p(\d+))?"), "conv"),
    (re.compile(r"fc(\d+)"), "fc"),
    (re.compile(r"(maxpool|avgpool)(\d+)(?:s(\d+))?"), "pool"),
    (re.compile(r"dropout(\d+(?:\.\d+)?)"), "dropout"),
    (re.compile(r"(relu|tanh|sigmoid|bn|flatten)"), "plain"),
]


def _bad(tok: str, spec: str, why: str = "") -> FxpsimError:
    names = ", ".join(ARCHITECTURES)
    why = f" ({why})" if why else ""
    return FxpsimError(
        f"bad token {tok!r} in architecture spec {spec!r}{why}: expected an architecture name "
        f"({names}) or {GRAMMAR}"
    )


def resolve_spec(arch_or_spec: str, input_shape: tuple[int, ...], n_classes: int) -> str:
    """Named architecture -> its spec string for this input/classes; a spec string as is."""
    key = str(arch_or_spec).strip().lower()
    if key in ARCHITECTURES:
        return ARCHITECTURES[key][0](tuple(input_shape), int(n_classes))
    return key


def parse_spec(spec: str, input_shape: tuple[int, ...], dtype=DEFAULT_DTYPE) -> list[Layer]:
    """Layers (parameters zero) for a spec string on inputs of ``input_shape``.

    A Flatten is inserted before any fc whose input is not already flat.
    """
    if not spec:
        raise _bad(spec, spec, "empty")
    shape = tuple(int(s) for s in input_shape)
    layers: list[Layer] = []

    def add(layer: Layer, tok: str) -> None:
        nonlocal shape
        try:
            shape = tuple(layer.output_shape(shape))
        except FxpsimError as err:
            raise FxpsimError(f"token {tok!r} in architecture spec {spec!r} does not fit: {err}") from None
        layers.append(layer)

    for tok in spec.split("-"):
        try:
            if tok.startswith("bfc") and len(shape) != 1:
                add(Flatten(), "flatten")
            ext = _extension_token(tok, shape, dtype)
        except FxpsimError as err:
            raise _bad(tok, spec, str(err)) from None
        if ext is not None:
            add(ext, tok)
            continue
        for regex, what in _TOKEN_RES:
            m = regex.fullmatch(tok)
            if m:
                break
        else:
            raise _bad(tok, spec)
        try:
            if what == "conv":
                c_out, k, s, p = int(m[1]), int(m[2]), int(m[3] or 1), int(m[4] or 0)
                if len(shape) != 3:
                    raise FxpsimError(f"conv needs (C, H, W) input, got shape {shape}")
                add(Conv2D(shape[0], c_out, k, s, p, dtype=dtype), tok)
            elif what == "fc":
                if len(shape) != 1:
                    add(Flatten(), "flatten")
                n_out = int(m[1])
                if n_out < 1:
                    raise FxpsimError("fc size must be >= 1")
                add(Dense(shape[0], n_out, dtype=dtype), tok)
            elif what == "pool":
                cls = MaxPool2D if m[1] == "maxpool" else AvgPool2D
                add(cls(int(m[2]), int(m[3]) if m[3] else None), tok)
            elif what == "dropout":
                pct = float(m[1])
                if not 0 <= pct < 100:
                    raise FxpsimError("dropout percent must be in [0, 100)")
                add(Dropout(pct / 100), tok)
            elif tok == "bn":
                add(BatchNorm(shape[0], dtype=dtype), tok)
            else:
                add(LAYER_KINDS[tok](), tok)
        except FxpsimError as err:
            msg = str(err)
            if msg.startswith("token "):
                raise
            raise _bad(tok, spec, msg) from None
    return layers


def build_network(arch_or_spec: str, input_shape: tuple[int, ...], n_classes: int, seed: int = 0,
                  init: str = "he", dtype=DEFAULT_DTYPE) -> Network:
    """A freshly initialised network from an architecture name or a spec string.

    The last fc layer must have ``n_classes`` outputs and the network must end
    with a flat ``(n_classes,)`` output. Weights are drawn by ``init``
    (:mod:`fxpsim.train.init`) from a generator seeded by ``seed``; Dropout
    masks come from a second, independent stream of the same seed.
    """
    init = parse_init(init)
    if int(n_classes) < 2:
        raise FxpsimError(f"n_classes={n_classes}: a classifier needs at least 2 classes")
    spec = resolve_spec(arch_or_spec, input_shape, n_classes)
    layers = parse_spec(spec, input_shape, dtype)
    dense = [layer for layer in layers if isinstance(layer, Dense)]
    if not dense:
        raise FxpsimError(f"architecture spec {spec!r} has no fc layer: end it with fc{n_classes}")
    if dense[-1].n_out != int(n_classes):
        raise FxpsimError(
            f"architecture spec {spec!r} ends with fc{dense[-1].n_out} but the data has {n_classes} classes: "
            f"make the last fc fc{n_classes}"
        )
    init_seq, dropout_seq = np.random.SeedSequence(seed).spawn(2)
    rng = np.random.default_rng(init_seq)
    for layer in layers:
        init_layer(layer, init, rng)
    net = Network(layers, input_shape, seed=int(dropout_seq.generate_state(1)[0]))
    if net.output_shape != (int(n_classes),):
        raise FxpsimError(f"architecture spec {spec!r} outputs shape {net.output_shape}, not ({n_classes},)")
    return net
