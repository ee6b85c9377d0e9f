"""Binary and ternary compute layers cut into the Simulator's stages (issue 13: one engine).

:func:`binary_compute` reads one ``bfc``/``bconv`` layer of a network for
:func:`fxpsim.simulate.stages.build_stages`:

- method ``bnn`` (±1 weights and activations, BNN Algorithm 4): a stage on
  engine ``xnor`` (:mod:`fxpsim.binary.engine`): the ±1 weight codes, a zero
  bias, and its :class:`~fxpsim.binary.engine.BnnBlock` (``[maxpool]-bn-sign``
  of a hidden layer, ``-bn`` of the output layer), all fused into the stage;
- binary/ternary weights with real activations (BinaryConnect, BWN, TWN,
  TTQ): a fixed-point stage whose weights are the layer's ``W~`` (codes times
  their scale), its BatchNorm folded and ReLU fused as for any Dense/Conv2D.

XNOR-Net (method ``xnor``) scales each input by its mean magnitude at run
time, which no integer stage holds: refused with one line.
"""

from __future__ import annotations

import numpy as np

from ..errors import FxpsimError, check
from .bnn import BatchNormParams
from .engine import BnnBlock

__all__ = ["BINARY_COMPUTE", "binary_compute", "bnn_config", "is_binary_stage"]

BINARY_COMPUTE = {"bdense": "dense", "bconv2d": "conv2d"}
"""Binary layer kinds and the compute kind of their stage."""
_SKIP = ("flatten", "dropout")
_BNN_SPEC = "bfc<N>bnn-bn-sign / bconv...bnn[-maxpool<n>]-bn-sign, the output layer bfc<n>bnn-bn"


def is_binary_stage(stage) -> bool:
    """True for a stage the xnor engine runs (it carries a :class:`BnnBlock`)."""
    return getattr(stage, "binary", None) is not None


def binary_compute(layers, shapes, i: int, name: str):
    """Layer ``i`` (a binary layer) as a stage: ``(W, b, block, end)``.

    ``block`` is None for a fixed-point stage (the caller folds the BatchNorm and
    fuses the ReLU that follow, ``end`` = i + 1); for a BNN stage ``end`` is the
    index after its Sign (hidden) or BatchNorm (output)."""
    comp = layers[i]
    kind = BINARY_COMPUTE[comp.kind]
    check(comp.method != "xnor", f"layer {name} ({comp.token()}) is XNOR-Net: its run-time input scaling has "
                                 "no integer stage; train with method bnn (or bwn for binary weights only)")
    if comp.method != "bnn":
        b = comp.params.get("b")
        b = np.zeros(comp.params["W"].shape[0 if kind == "conv2d" else 1]) if b is None else b
        return np.asarray(comp.quantized_weights(), np.float64), np.asarray(b, np.float64), None, i + 1
    codes = comp.codes()
    before = [layer.kind for layer in layers[:i] if layer.kind not in _SKIP + ("maxpool2d",)]
    pm1 = bool(before) and before[-1] == "sign"  # a previous Sign's ±1 (max pooling keeps them ±1)
    j, pool = i + 1, None
    while j < len(layers) and layers[j].kind in _SKIP + ("maxpool2d",):
        if layers[j].kind == "maxpool2d":
            check(kind == "conv2d" and pool is None,
                  f"layer {name} ({comp.token()}): a max pooling here has no integer BNN mapping: expected "
                  f"{_BNN_SPEC}")
            pool = (int(layers[j].size), int(layers[j].stride))
        j += 1
    nxt = layers[j] if j < len(layers) else None
    if nxt is None or nxt.kind != "batchnorm":
        got = "nothing" if nxt is None else nxt.kind
        why = "average pooling has no integer BNN mapping" if got == "avgpool2d" else "a BNN layer needs its BatchNorm"
        raise FxpsimError(f"layer {name} ({comp.token()}) is followed by {got}: {why}, expected {_BNN_SPEC}")
    bn = BatchNormParams(nxt.params["gamma"], nxt.params["beta"], nxt.buffers["running_mean"],
                         nxt.buffers["running_var"], nxt.eps)
    flat = kind == "conv2d" and len(shapes[j]) == 1
    rest = [layer.kind for layer in layers[j + 1:] if layer.kind not in _SKIP]
    if not rest:  # the output layer
        check(kind == "dense", f"the output layer {name} ({comp.token()}) is a conv: end the network in "
                               "bfc<n>bnn-bn or a plain fc<n>")
        return codes.astype(np.float64), np.zeros(codes.shape[1]), BnnBlock(bn, pool, False, flat, pm1), j + 1
    check(rest[0] == "sign", f"hidden layer {name} ({comp.token()}) must end in sign, expected {_BNN_SPEC}; "
                             f"got {rest[0]} after its bn")
    k = j + 1
    while layers[k].kind in _SKIP:
        k += 1
    n = codes.shape[0 if kind == "conv2d" else 1]
    return codes.astype(np.float64), np.zeros(n), BnnBlock(bn, pool, True, flat, pm1), k + 1


def bnn_config(stages, *, fmt_x="UQ8.0", fmt_y="Q16.16", acc_bits: int = 32, scale_bits: int = 24,
               pool_on: str = "dots", fmt_w=None):
    """The default config of a BNN model's stages (what :class:`fxpsim.binary.netsim.BnnSimulator` ran).

    BNN stages on engine xnor, weights ``Q2.0`` (±1), wrapping ``acc_bits`` registers; the first
    layer's input ``fmt_x`` (raw pixels, UQ8.0), hidden outputs ±1 in ``Q2.0``, the output layer's
    BatchNorm to ``fmt_y``. A plain output fc on the ±1 activations runs on engine dense, weights in
    ``fmt_w`` (default 16 bits, int bits from its weights), its output in ``fmt_y``."""
    from ..config import LayerConfig, NetworkConfig
    from ..qformat import QFormat, int_bits_for
    from .engine import PM1

    check(any(is_binary_stage(s) for s in stages), "the model has no BNN layer (bfc/bconv of method bnn): "
                                                   "make its config with Config.uniform or fxpsim search")
    layers, prev = [], QFormat.parse(fmt_x)
    for s in stages:
        if is_binary_stage(s):
            out = PM1 if s.binary.sign else QFormat.parse(fmt_y)
            layers.append(LayerConfig(s.name, PM1, prev, out, acc_bits, "wrap", engine="xnor",
                                      engine_options={"scale_bits": scale_bits, "pool_on": pool_on}))
        else:
            ib = int_bits_for(float(np.abs(s.W).max()))
            w = QFormat.parse(fmt_w) if fmt_w is not None else QFormat(ib, 16 - ib)
            out = QFormat.parse(fmt_y)
            layers.append(LayerConfig(s.name, w, prev, out, acc_bits, "wrap"))
        prev = out
    return NetworkConfig(tuple(layers))
