"""The integer BNN run of ``fxpsim.binary.netsim.BnnSimulator`` as it was before engine xnor
existed (kernel calls, thresholds and the output BatchNorm chained by hand), frozen here as the
reference the engine must equal bit for bit (issue 13: ``fxpsim binary``'s reports stay identical)."""

import numpy as np

from fxpsim.binary.bnn import batchnorm_fixed, fold_bn_sign
from fxpsim.binary.layers import bitplane_conv2d, bitplane_dense, xnor_conv2d, xnor_dense
from fxpsim.binary.netsim import BnnSimResult, BnnSimulator
from fxpsim.binary.packing import pack_weights
from fxpsim.binary.pooling import maxpool_int, threshold_then_pool
from fxpsim.datapath import dense as datapath
from fxpsim.qformat import QFormat, dequantize, quantize

PM1 = QFormat(2, 0)


class LegacyBnnSimulator(BnnSimulator):
    """BnnSimulator's checks and formats, with the pre-engine ``run``."""

    def _sign_layer(self, acc: np.ndarray, layer: object, bound: int, frac: int) -> np.ndarray:
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

