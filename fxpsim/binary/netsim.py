"""Whole-network integer simulation of a trained BNN (binary and fixed-point layers in one network).

:class:`BnnSimulator` takes a model trained with method ``bnn`` and runs it
as hardware does, BNN (Courbariaux, Hubara et al. 2016) Algorithm 4. The
network is (:func:`bnn_layers` checks the order)::

    [bconv<F>x<k>[s<s>][p<p>]bnn[-maxpool<n>]-bn-sign]*  (conv blocks; pool BEFORE the BatchNorm)
    [bfc<N>bnn-bn-sign]*  bfc<n>bnn-bn                    (or a last plain fc<n>)

1. first layer (dense or conv) from the 8-bit input by bit planes,
   ``a1 = sum_n 2^(n-1) XnorDotProduct(a0^n, W1b)``
   (:func:`fxpsim.binary.bitplane_dense` / :func:`~fxpsim.binary.bitplane_conv2d`),
   the input being the raw pixels (preprocessing ``none``) as raw integers
   of ``fmt_x`` (default UQ8.0);
2. hidden layers XNOR-popcount (:func:`fxpsim.binary.xnor_dense`,
   :func:`~fxpsim.binary.xnor_conv2d` with exact zero padding), max pooling
   on the integer dots, then BatchNorm + sign folded into one integer
   threshold per channel (:func:`fxpsim.binary.fold_bn_sign`); a flatten
   before the first dense layer;
3. output layer: BatchNorm in fixed point (:func:`fxpsim.binary.batchnorm_fixed`),
   or a fixed-point Dense on the ±1 activations through the integer
   datapath (:func:`fxpsim.datapath.dense.dense`, weights in ``fmt_w``,
   ``acc_bits`` accumulator): a binary and a fixed-point layer in one network.

Pooling and the threshold: ``s(d) = Sign(BN(d))`` is nondecreasing in the
dot ``d`` where gamma > 0 and nonincreasing where gamma < 0 (constant at
gamma = 0), so ``s(maxpool(d)) = maxpool(s(d))`` (an OR of the bits) where
gamma >= 0 but ``= minpool(s(d))`` (an AND) where gamma < 0.
``pool_on="dots"`` (default) pools the integer dots and compares once;
``pool_on="bits"`` compares every dot and pools the 1-bit results
(:func:`threshold_then_pool`); both equal the float order.

:meth:`BnnSimulator.float_reference` is the float ±1 computation of the
same trained model (float64 ±1 arrays, :func:`fxpsim.binary.reference.conv2d_float`,
:func:`fxpsim.binary.batchnorm_float`); hidden activations and output dots
are bit-exact equal to the integer run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..datapath import dense as datapath
from ..errors import FxpsimError, check
from ..graph.geometry import pool_reduce
from ..graph.layers import AvgPool2D, BatchNorm, Dense, Dropout, Flatten, MaxPool2D
from ..qformat import QFormat, dequantize, int_bits_for, quantize
from .bnn import BatchNormParams, SignThreshold, batchnorm_fixed, batchnorm_float, fold_bn_sign, sign
from .layers import bitplane_conv2d, bitplane_dense, xnor_conv2d, xnor_dense
from .packing import pack_weights
from .reference import conv2d_float
from .train_layers import BinaryConv2D, BinaryDense, SignActivation

UQ8 = QFormat(8, 0, signed=False)
PM1 = QFormat(2, 0)  # ±1 activations as raw integers of a 2-bit signed format
POOL_ON = ("dots", "bits")
CONV_SPEC = "bconv<F>x<k>[s<s>][p<p>]bnn[-maxpool<n>]-bn-sign"
DENSE_SPEC = "bfc<N>bnn-bn-sign"
NET_SPEC = f"{CONV_SPEC} ... {DENSE_SPEC} ... bfc<n>bnn-bn (or a last plain fc<n>)"


@dataclass(frozen=True, slots=True, eq=False)
class BnnLayer:
    """One layer of the integer BNN: ±1 weights, its BatchNorm (None for a fixed-point fc)."""

    name: str
    weights: np.ndarray  # ±1 int8 (K, N) dense or (F, C, kh, kw) conv; float64 real weights for a fixed-point fc
    bn: BatchNormParams | None
    bias: np.ndarray | None  # fixed-point fc only
    binary: bool
    conv: tuple | None = None
    """Conv ``(stride, padding)``; None for a dense layer."""
    pool: tuple | None = None
    """Max pooling ``(size, stride)`` between the conv and its BatchNorm, or None."""
    bn_flat: bool = False
    """The BatchNorm is per feature of the flattened ``(C*H*W)`` map, not per channel."""

    @property
    def k(self) -> int:
        """Dot length K: fan-in of one output (``C*kh*kw`` for a conv)."""
        return int(np.prod(self.weights.shape[1:])) if self.conv is not None else self.weights.shape[0]


@dataclass(frozen=True, slots=True, eq=False)
class BnnSimResult:
    """Integer run of a BNN: outputs, dots, hidden activations and widths."""

    logits: np.ndarray
    """Dequantized outputs (float64) of the fixed-point output stage."""
    y_raw: np.ndarray
    """Raw ints of ``fmt_y``."""
    acc_out: np.ndarray
    """Output layer's integer accumulators (dots; for a fixed-point fc its accumulator)."""
    hidden: tuple
    """±1 int8 activations after each hidden layer (NCHW after a per-channel conv block)."""
    widths: tuple
    """:class:`fxpsim.binary.PopcountWidth` of each binary layer."""
    outputs_wrapped: int
    """Outputs changed by a too-narrow accumulator (binary layers and the fixed-point fc)."""


def _check_pool(y: np.ndarray, size: int) -> None:
    check(y.ndim == 4 and min(y.shape[2:]) >= size,
          f"max pooling {size}x{size} needs NCHW input at least {size}x{size}, got shape {y.shape}")


def _pool_windows(y: np.ndarray, size: int, stride: int) -> np.ndarray:
    """View ``(B, C, OH, OW, size, size)`` of the pooling windows (no padding, floor mode)."""
    _check_pool(y, size)
    return sliding_window_view(y, (size, size), axis=(2, 3))[:, :, ::stride, ::stride]


def maxpool_int(y: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Max pooling of integer dots ``(B, C, H, W)``: exact, the float pool of the same values."""
    y = np.asarray(y)
    _check_pool(y, size)
    return pool_reduce(y, size, stride, np.maximum)


def threshold_then_pool(acc: np.ndarray, thr: SignThreshold, size: int, stride: int,
                        flat: bool = False) -> np.ndarray:
    """``Sign(BN(maxpool(acc)))`` as compare-then-pool on 1-bit values (BNN Algorithm 4).

    Each dot is compared with its channel's threshold, then the bits are
    pooled: OR (max) where the compare is ``a >= t`` (gamma >= 0), AND (min)
    where flipped ``a <= t`` (gamma < 0: BN+sign decreases, so max pooling
    of the dots is a min pooling of the signs). ``flat``: one threshold per
    pooled position (a BatchNorm over the flattened map); returns ``(B, C*OH*OW)``.
    """
    win = _pool_windows(np.asarray(acc, dtype=np.int64), size, stride)
    b, c, oh, ow = win.shape[:4]
    shape = (1, c, oh, ow, 1, 1) if flat else (1, c, 1, 1, 1, 1)
    t, f = thr.threshold.reshape(shape), thr.flip.reshape(shape)
    bits = np.where(f, win <= t, win >= t)
    out = np.where(f[..., 0, 0], bits.all(axis=(4, 5)), bits.any(axis=(4, 5)))
    a = np.where(out, 1, -1).astype(np.int8)
    return a.reshape(b, -1) if flat else a


def _maxpool_float(a: np.ndarray, size: int, stride: int) -> np.ndarray:
    """Float reference max pooling by window offsets (shares no code with :func:`maxpool_int`)."""
    oh = (a.shape[2] - size) // stride + 1
    ow = (a.shape[3] - size) // stride + 1
    out = np.full(a.shape[:2] + (oh, ow), -np.inf)
    for i in range(size):
        for j in range(size):
            np.maximum(out, a[:, :, i:i + stride * (oh - 1) + 1:stride, j:j + stride * (ow - 1) + 1:stride],
                       out=out)
    return out


def bnn_layers(network) -> list[BnnLayer]:
    """The BNN layers of a trained ``network`` (spec in the module doc); one clear error otherwise."""

    keep = [i for i, layer in enumerate(network.layers) if not isinstance(layer, (Flatten, Dropout))]
    layers = [network.layers[i] for i in keep]
    shapes = [network.shapes[i] for i in keep]  # input shape of each kept layer
    out: list[BnnLayer] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        conv = isinstance(layer, BinaryConv2D)
        name = f"{'conv' if conv else 'fc'}{len(out) + 1}"
        if isinstance(layer, (BinaryDense, BinaryConv2D)):
            tok, expected = layer.token(), CONV_SPEC if conv else DENSE_SPEC
            check(layer.method == "bnn", f"layer {name} is a {layer.method} binary layer: the integer BNN "
                  "simulator runs method bnn (binary weights and activations); train with --method bnn")
            check(not (conv and out and out[-1].conv is None),
                  f"layer {name} ({tok}) is a conv after a dense layer: expected {NET_SPEC}")
            j, pool = i + 1, None
            if conv and j < len(layers) and isinstance(layers[j], MaxPool2D):
                pool = (layers[j].size, layers[j].stride)
                j += 1
            nxt = layers[j] if j < len(layers) else None
            if not isinstance(nxt, BatchNorm):
                got = "nothing" if nxt is None else nxt.kind
                why = "average pooling has no integer BNN mapping" if isinstance(nxt, AvgPool2D) \
                    else "a BNN layer needs its BatchNorm"
                raise FxpsimError(f"layer {name} ({tok}) is followed by {got}: {why}, expected {expected}")
            bn = BatchNormParams(nxt.params["gamma"], nxt.params["beta"], nxt.buffers["running_mean"],
                                 nxt.buffers["running_var"], nxt.eps)
            last = j + 1 >= len(layers)
            check(not (conv and last), f"the output layer {name} ({tok}) is a conv: end the network in "
                  "bfc<n>bnn-bn or a plain fc<n>")
            if not last:
                check(isinstance(layers[j + 1], SignActivation),
                      f"hidden layer {name} ({tok}) must end in sign, expected {expected}; "
                      f"got {layers[j + 1].kind} after its bn")
            out.append(BnnLayer(name, layer.codes(), bn, None, True,
                                conv=(layer.stride, layer.padding) if conv else None, pool=pool,
                                bn_flat=conv and len(shapes[j]) == 1))
            i = j + (1 if last else 2)
        elif isinstance(layer, Dense) and i == len(layers) - 1 and out:
            out.append(BnnLayer(name, np.asarray(layer.params["W"], np.float64),
                                None, np.asarray(layer.params["b"], np.float64), False))
            i += 1
        else:
            raise FxpsimError(f"layer {layer.kind} at position {i} has no place in an integer BNN: "
                              f"expected {NET_SPEC}")
    check(bool(out) and out[0].binary, "the network has no binary first layer: train with --method bnn")
    return out


class BnnSimulator:
    """Run a trained BNN model on the integer datapath (see the module docstring).

    ``fmt_x``: the first layer's input format (raw pixels, default UQ8.0);
    ``scale_bits``: width of the output BatchNorm's scale ``gamma/sigma``;
    ``fmt_y``: the output format; ``acc_bits``: popcount / accumulator
    width (checked and reported per layer); ``fmt_w``: a fixed-point
    output fc's weights (default: 16 bits, int bits from the weights);
    ``pool_on``: ``"dots"`` (max pool the integer dots, then compare) or
    ``"bits"`` (compare, then OR/AND the bits: :func:`threshold_then_pool`).
    """

    def __init__(self, model, *, fmt_x: QFormat = UQ8, scale_bits: int = 24, fmt_y: QFormat = QFormat(16, 16),
                 acc_bits: int = 32, fmt_w: QFormat | None = None, pool_on: str = "dots"):
        self.model = model
        self.layers = bnn_layers(model.network)
        self.fmt_x, self.fmt_y, self.acc_bits = fmt_x, fmt_y, int(acc_bits)
        check(pool_on in POOL_ON, f"pool_on={pool_on!r}: use one of {', '.join(POOL_ON)}")
        self.pool_on = pool_on
        check(model.preprocess.mode == "none" or (np.all(model.preprocess.mean == 0)
                                                    and np.all(model.preprocess.std == 1)),
              f"the model's preprocessing is {model.preprocess.mode!r}: BNN Algorithm 4 takes the raw 8-bit "
              "input, train with --preprocess none")
        self.input_shape = tuple(model.network.input_shape) if self.layers[0].conv is not None else None
        last = self.layers[-1]
        if last.binary:
            g = last.bn.gamma / np.sqrt(last.bn.var + last.bn.eps)
            ib = int_bits_for(float(np.abs(g).max()))
            self.fmt_scale = QFormat(ib, int(scale_bits) - ib)
        else:
            self.fmt_scale = None
            self.fmt_w = fmt_w or QFormat(int_bits_for(float(np.abs(last.weights).max())),
                                          16 - int_bits_for(float(np.abs(last.weights).max())))

    def input_raw(self, x: np.ndarray) -> np.ndarray:
        """Raw integers of ``fmt_x`` from images: ``(B, K)``, or NCHW for a conv first layer."""
        xf = self.model.preprocess.apply(x).astype(np.float64)
        xf = xf.reshape((len(x),) + self.input_shape) if self.input_shape else xf.reshape(len(x), -1)
        raw = np.ldexp(xf, self.fmt_x.frac_bits)
        check(bool(np.all(raw == np.round(raw))), f"input values are not exact in {self.fmt_x}: "
              "give raw integer pixels (8-bit) or a format with enough frac bits")
        return raw.astype(np.int64)

    def _input(self, x_raw) -> np.ndarray:
        x = np.asarray(x_raw)
        if self.input_shape is None:
            return x
        check(x.ndim >= 2 and int(np.prod(x.shape[1:])) == int(np.prod(self.input_shape)),
              f"conv BNN input has shape {x.shape}: expected (B, {', '.join(map(str, self.input_shape))})")
        return x.reshape((len(x),) + self.input_shape)

    def _sign_layer(self, acc: np.ndarray, layer: BnnLayer, bound: int, frac: int) -> np.ndarray:
        """Hidden ±1 activations: [max pool], BN + sign as integer thresholds, [flatten]."""
        thr = fold_bn_sign(layer.bn, -bound, bound, frac)
        if layer.pool is not None and self.pool_on == "bits":
            return threshold_then_pool(acc, thr, *layer.pool, flat=layer.bn_flat)
        if layer.pool is not None:
            acc = maxpool_int(acc, *layer.pool)
        return thr.apply(acc.reshape(len(acc), -1) if layer.bn_flat else acc)

    def run(self, x_raw: np.ndarray) -> BnnSimResult:
        """The integer network on raw inputs of ``fmt_x``: ``(B, K)``, or ``(B, C, H, W)`` for a conv."""
        acc_bits = self.acc_bits
        hidden, widths, wrapped = [], [], 0
        a = None
        n = len(self.layers)
        max_x = max(abs(self.fmt_x.raw_min), self.fmt_x.raw_max)
        x_raw = self._input(x_raw)
        for li, layer in enumerate(self.layers):
            k = layer.k
            if layer.conv is None and a is not None:
                a = a.reshape(len(a), -1)  # flatten (C order, as fxpsim.graph.layers.Flatten)
            if not layer.binary:  # fixed-point fc on the ±1 activations, integer datapath
                w_raw = quantize(layer.weights, self.fmt_w, "nearest-even", "clip")
                fl_acc = self.fmt_w.frac_bits + PM1.frac_bits
                b_raw = quantize(layer.bias, QFormat.from_width(acc_bits, acc_bits - fl_acc),
                                 "nearest-even", "clip")
                res = datapath.dense(a.astype(np.int64), w_raw, b_raw, fmt_x=PM1, fmt_w=self.fmt_w,
                                    fmt_y=self.fmt_y, acc_bits=acc_bits, overflow="wrap")
                wrapped += int(res.stats.outputs_affected)
                return BnnSimResult(dequantize(res.y, self.fmt_y), res.y, res.acc, tuple(hidden),
                                    tuple(widths), wrapped)
            if layer.conv is not None:
                stride, padding = layer.conv
                if li == 0:
                    res = bitplane_conv2d(x_raw, self.fmt_x, layer.weights, stride=stride, padding=padding,
                                          acc_bits=acc_bits)
                else:
                    res = xnor_conv2d(a, layer.weights, stride=stride, padding=padding, pad_mode="zero",
                                      acc_bits=acc_bits)
            elif li == 0:
                res = bitplane_dense(x_raw.reshape(len(x_raw), -1), self.fmt_x, pack_weights(layer.weights),
                                     acc_bits=acc_bits)
            else:
                res = xnor_dense(a, pack_weights(layer.weights), acc_bits=acc_bits)
            frac, bound = (self.fmt_x.frac_bits, max_x * k) if li == 0 else (0, k)
            widths.append(res.width)
            wrapped += res.outputs_wrapped
            if li == n - 1:
                y = batchnorm_fixed(res.y, layer.bn, fmt_scale=self.fmt_scale, fmt_y=self.fmt_y,
                                    frac_bits_acc=frac, acc_max_abs=bound)
                return BnnSimResult(dequantize(y, self.fmt_y), y, res.y, tuple(hidden), tuple(widths), wrapped)
            a = self._sign_layer(res.y, layer, bound, frac)
            hidden.append(a)
        raise AssertionError("unreachable: the last layer returns")

    def float_reference(self, x_raw: np.ndarray) -> tuple[np.ndarray, tuple]:
        """The trained model's float ±1 computation: (output dots or fc output, hidden ±1 activations)."""
        a = np.ldexp(np.asarray(self._input(x_raw), dtype=np.float64), -self.fmt_x.frac_bits)
        hidden = []
        for li, layer in enumerate(self.layers):
            if layer.conv is None:
                a = a.reshape(len(a), -1)
            if not layer.binary:
                return a @ layer.weights + layer.bias, tuple(hidden)
            if layer.conv is not None:
                acc = conv2d_float(a, layer.weights, *layer.conv)
                if layer.pool is not None:
                    acc = _maxpool_float(acc, *layer.pool)
                if layer.bn_flat:
                    acc = acc.reshape(len(acc), -1)
            else:
                acc = a @ layer.weights.astype(np.float64)
            if li == len(self.layers) - 1:
                return acc, tuple(hidden)
            a = sign(batchnorm_float(acc, layer.bn))
            hidden.append(a)
        raise AssertionError("unreachable")

    def predict(self, x: np.ndarray, batch_size: int = 2000) -> np.ndarray:
        """Class predictions of the integer network for images ``x``."""
        preds = []
        for i in range(0, len(x), batch_size):
            res = self.run(self.input_raw(x[i:i + batch_size]))
            preds.append(res.y_raw.argmax(axis=1))
        return np.concatenate(preds) if preds else np.zeros(0, dtype=np.int64)
