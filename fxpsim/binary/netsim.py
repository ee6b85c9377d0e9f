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

Since issue 13 these steps are the stages of the one
:class:`fxpsim.simulate.Simulator` (engine ``xnor``, :mod:`fxpsim.binary.engine`;
the config :func:`fxpsim.binary.stages.bnn_config` makes from this class's
arguments): :meth:`BnnSimulator.run` chains them and keeps what this
class always reported (hidden ±1 activations, popcount widths). Pooling
before the threshold, both orders: :mod:`fxpsim.binary.pooling`.

:meth:`BnnSimulator.float_reference` is the float ±1 computation of the
same trained model (float64 ±1 arrays, :func:`fxpsim.binary.reference.conv2d_float`,
:func:`fxpsim.binary.batchnorm_float`); hidden activations and output dots
are bit-exact equal to the integer run.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..errors import FxpsimError, check
from ..graph.layers import AvgPool2D, BatchNorm, Dense, Dropout, Flatten, MaxPool2D
from ..qformat import QFormat, dequantize, int_bits_for
from ..simulate.post import post_int
from ..simulate.simulator import Simulator, convert_raw
from .bnn import BatchNormParams, batchnorm_float, sign
from .engine import scale_format
from .pooling import POOL_ON, maxpool_float, maxpool_int, threshold_then_pool
from .popcount import popcount_width
from .reference import conv2d_float
from .stages import bnn_config, is_binary_stage
from .train_layers import BinaryConv2D, BinaryDense, SignActivation

__all__ = ["BnnLayer", "BnnSimResult", "BnnSimulator", "bnn_layers", "maxpool_int", "threshold_then_pool"]

UQ8 = QFormat(8, 0, signed=False)
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
            self.fmt_scale = scale_format(last.bn, scale_bits)
        else:
            self.fmt_scale = None
            self.fmt_w = fmt_w or QFormat(int_bits_for(float(np.abs(last.weights).max())),
                                          16 - int_bits_for(float(np.abs(last.weights).max())))
        self.sim = Simulator(model)
        self.config = bnn_config(self.sim.stages, fmt_x=fmt_x, fmt_y=fmt_y, acc_bits=self.acc_bits,
                                 scale_bits=scale_bits, pool_on=pool_on, fmt_w=fmt_w)
        self._params = None

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

    def run(self, x_raw: np.ndarray) -> BnnSimResult:
        """The integer network on raw inputs of ``fmt_x``: ``(B, K)``, or ``(B, C, H, W)`` for a conv.

        The stages of :class:`fxpsim.simulate.Simulator` under :attr:`config` (engine xnor for the
        BNN layers, dense for a plain output fc), one after the other, their ±1 outputs kept."""
        sim, config = self.sim, self.config
        if self._params is None:
            self._params = [sim.stage_params(i, cfg) for i, cfg in enumerate(config)]
        h = np.asarray(self._input(x_raw), dtype=np.int64)
        hidden, widths, wrapped = [], [], 0
        for i, cfg in enumerate(config):
            if i:
                h = convert_raw(h, config[i - 1].fmt_y, cfg.fmt_x, cfg.rounding)
            w, b = self._params[i]
            res = sim.run_kernel(i, h, w, b, cfg)
            stage = sim.stages[i]
            wrapped += int(res.stats.outputs_affected)
            if is_binary_stage(stage):
                width = popcount_width(stage.fan_in, self.acc_bits)
                widths.append(replace(width, dot_bits=w.bound.bit_length() + 1) if w.bitplane else width)
                if stage.binary.sign:
                    hidden.append((res.y >> cfg.fmt_y.frac_bits).astype(np.int8))
            h = res.y
            for op, layer in stage.post:
                h = post_int(op, layer, h, cfg.fmt_y, cfg, sim.seed)
        return BnnSimResult(dequantize(res.y, self.fmt_y), res.y, res.acc, tuple(hidden), tuple(widths), wrapped)

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
                    acc = maxpool_float(acc, *layer.pool)
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
