"""Whole-network integer simulation of a trained BNN (binary and fixed-point layers in one network).

:class:`BnnSimulator` takes a model trained with method ``bnn``
(``[flatten]-bfc<N>bnn-bn-sign-...-bfc<M>bnn-bn``, optionally ending in a
plain ``fc<n>`` fixed-point layer instead of the last binary layer's
BatchNorm) and runs it as hardware does, BNN Algorithm 4:

1. first layer from the 8-bit input by bit planes
   (:func:`fxpsim.binary.bitplane_dense`), the input being the raw pixels
   (preprocessing ``none``) as raw integers of ``fmt_x`` (default UQ8.0);
2. hidden layers XNOR-popcount (:func:`fxpsim.binary.xnor_dense`) with
   BatchNorm + sign folded into one integer threshold per neuron
   (:func:`fxpsim.binary.fold_bn_sign`);
3. output layer: BatchNorm in fixed point (:func:`fxpsim.binary.batchnorm_fixed`),
   or a fixed-point Dense on the ±1 activations through the integer
   datapath (:func:`fxpsim.kernels.dense`, weights in ``fmt_w``,
   ``acc_bits`` accumulator): a binary and a fixed-point layer in one network.

:meth:`BnnSimulator.float_reference` is the float ±1 computation of the
same trained model (float64 ±1 matrices, :func:`fxpsim.binary.batchnorm_float`);
hidden activations and output dots are bit-exact equal to the integer run.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .. import kernels
from ..errors import FxpsimError, check
from ..qformat import QFormat, dequantize, int_bits_for, quantize
from .bnn import BatchNormParams, batchnorm_fixed, batchnorm_float, fold_bn_sign, sign
from .layers import bitplane_dense, xnor_dense
from .packing import pack_weights

UQ8 = QFormat(8, 0, signed=False)
PM1 = QFormat(2, 0)  # ±1 activations as raw integers of a 2-bit signed format


@dataclass(frozen=True, slots=True, eq=False)
class BnnLayer:
    """One layer of the integer BNN: ±1 weights, its BatchNorm (None for a fixed-point fc)."""

    name: str
    weights: np.ndarray  # ±1 int8 (K, N); float64 real weights for a fixed-point fc
    bn: BatchNormParams | None
    bias: np.ndarray | None  # fixed-point fc only
    binary: bool


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
    """±1 int8 activations after each hidden layer."""
    widths: tuple
    """:class:`fxpsim.binary.PopcountWidth` of each binary layer."""
    outputs_wrapped: int
    """Outputs changed by a too-narrow accumulator (binary layers and the fixed-point fc)."""


def bnn_layers(network) -> list[BnnLayer]:
    """The BNN layers of a trained ``network``; one clear error if it is not a BNN MLP."""
    from .train_layers import BinaryDense, SignActivation
    from ..network import BatchNorm, Dense, Dropout, Flatten

    layers = [layer for layer in network.layers if not isinstance(layer, (Flatten, Dropout))]
    out: list[BnnLayer] = []
    i = 0
    while i < len(layers):
        layer = layers[i]
        name = f"fc{len(out) + 1}"
        if isinstance(layer, BinaryDense):
            check(layer.method == "bnn", f"layer {name} is a {layer.method} binary layer: the integer BNN "
                  "simulator runs method bnn (binary weights and activations); train with --method bnn")
            nxt = layers[i + 1] if i + 1 < len(layers) else None
            check(isinstance(nxt, BatchNorm), f"layer {name} ({layer.token()}) is not followed by bn: "
                  "a BNN layer needs its BatchNorm (spec bfc<N>bnn-bn-sign)")
            bn = BatchNormParams(nxt.params["gamma"], nxt.params["beta"], nxt.buffers["running_mean"],
                                 nxt.buffers["running_var"], nxt.eps)
            last = i + 2 >= len(layers)
            if not last:
                check(isinstance(layers[i + 2], SignActivation),
                      f"hidden layer {name} must end in sign (bfc<N>bnn-bn-sign), got {layers[i + 2].kind}")
            out.append(BnnLayer(name, layer.codes(), bn, None, True))
            i += 2 if last else 3
        elif isinstance(layer, Dense) and i == len(layers) - 1 and out:
            out.append(BnnLayer(name, np.asarray(layer.params["W"], np.float64),
                                None, np.asarray(layer.params["b"], np.float64), False))
            i += 1
        else:
            raise FxpsimError(f"layer {layer.kind} at position {i} has no place in an integer BNN MLP: "
                              "expected bfc<N>bnn-bn-sign ... bfc<n>bnn-bn (or a last plain fc<n>)")
    check(bool(out) and out[0].binary, "the network has no binary first layer: train with --method bnn")
    return out


class BnnSimulator:
    """Run a trained BNN model on the integer datapath (see the module docstring).

    ``fmt_x``: the first layer's input format (raw pixels, default UQ8.0);
    ``scale_bits``: width of the output BatchNorm's scale ``gamma/sigma``;
    ``fmt_y``: the output format; ``acc_bits``: popcount / accumulator
    width (checked and reported per layer); ``fmt_w``: a fixed-point
    output fc's weights (default: 16 bits, int bits from the weights).
    """

    def __init__(self, model, *, fmt_x: QFormat = UQ8, scale_bits: int = 24, fmt_y: QFormat = QFormat(16, 16),
                 acc_bits: int = 32, fmt_w: QFormat | None = None):
        self.model = model
        self.layers = bnn_layers(model.network)
        self.fmt_x, self.fmt_y, self.acc_bits = fmt_x, fmt_y, int(acc_bits)
        check(model.preprocess.mode == "none" or (np.all(model.preprocess.mean == 0)
                                                    and np.all(model.preprocess.std == 1)),
              f"the model's preprocessing is {model.preprocess.mode!r}: BNN Algorithm 4 takes the raw 8-bit "
              "input, train with --preprocess none")
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
        """Raw integers of ``fmt_x`` from images (preprocessing ``none``: the pixels themselves)."""
        xf = self.model.preprocess.apply(x).reshape(len(x), -1).astype(np.float64)
        raw = np.ldexp(xf, self.fmt_x.frac_bits)
        check(bool(np.all(raw == np.round(raw))), f"input values are not exact in {self.fmt_x}: "
              "give raw integer pixels (8-bit) or a format with enough frac bits")
        return raw.astype(np.int64)

    def run(self, x_raw: np.ndarray) -> BnnSimResult:
        """The integer network on raw inputs ``(B, K)`` of ``fmt_x``."""
        acc_bits = self.acc_bits
        hidden, widths, wrapped = [], [], 0
        a = None
        n = len(self.layers)
        max_x = max(abs(self.fmt_x.raw_min), self.fmt_x.raw_max)
        for li, layer in enumerate(self.layers):
            k = layer.weights.shape[0]
            if not layer.binary:  # fixed-point fc on the ±1 activations, integer datapath
                w_raw = quantize(layer.weights, self.fmt_w, "nearest-even", "clip")
                fl_acc = self.fmt_w.frac_bits + PM1.frac_bits
                b_raw = quantize(layer.bias, QFormat.from_width(acc_bits, acc_bits - fl_acc),
                                 "nearest-even", "clip")
                res = kernels.dense(a.astype(np.int64), w_raw, b_raw, fmt_x=PM1, fmt_w=self.fmt_w,
                                    fmt_y=self.fmt_y, acc_bits=acc_bits, overflow="wrap")
                wrapped += int(res.stats.outputs_affected)
                return BnnSimResult(dequantize(res.y, self.fmt_y), res.y, res.acc, tuple(hidden),
                                    tuple(widths), wrapped)
            pw = pack_weights(layer.weights)
            if li == 0:
                res = bitplane_dense(x_raw, self.fmt_x, pw, acc_bits=acc_bits)
                frac, bound = self.fmt_x.frac_bits, max_x * k
            else:
                res = xnor_dense(a, pw, acc_bits=acc_bits)
                frac, bound = 0, k
            widths.append(res.width)
            wrapped += res.outputs_wrapped
            if li == n - 1:
                y = batchnorm_fixed(res.y, layer.bn, fmt_scale=self.fmt_scale, fmt_y=self.fmt_y,
                                    frac_bits_acc=frac, acc_max_abs=bound)
                return BnnSimResult(dequantize(y, self.fmt_y), y, res.y, tuple(hidden), tuple(widths), wrapped)
            a = fold_bn_sign(layer.bn, -bound, bound, frac).apply(res.y)
            hidden.append(a)
        raise AssertionError("unreachable: the last layer returns")

    def float_reference(self, x_raw: np.ndarray) -> tuple[np.ndarray, tuple]:
        """The trained model's float ±1 computation: (output dots or fc output, hidden ±1 activations)."""
        a = np.ldexp(np.asarray(x_raw, dtype=np.float64), -self.fmt_x.frac_bits)
        hidden = []
        for li, layer in enumerate(self.layers):
            if not layer.binary:
                return a @ layer.weights + layer.bias, tuple(hidden)
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
