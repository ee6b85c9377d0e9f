"""Training-side binary and ternary layers for the NumPy trainer (the Layer API of fxpsim.graph).

``BinaryDense`` / ``BinaryConv2D`` keep real-valued weights ``W`` (the
parameter the optimizer updates) and compute with quantized weights
``W~ = q(W)``; ``method`` picks ``q``:

=========  ==========================================================  =====================================
method     forward weights ``W~`` (and input)                          backward to the real weights ``W``
=========  ==========================================================  =====================================
``bc``     BinaryConnect deterministic: ``sign(W)`` (+1 at 0)            ``dW = dW~ 1{|W| <= 1}``
``bcs``    BinaryConnect stochastic: +1 w.p. ``hard_sigmoid(W)``         as ``bc``
           while training (seeded stream); at test the real weights
           ``W`` = E[samples] (BinaryConnect Sec. 2.6, as the paper)
``bnn``    BNN: ``sign(W)``; activations by a :class:`SignActivation`    as ``bc``
``bwn``    BWN: ``A sign(W)``, ``A = mean|W|`` per output filter         ``dW = dW~ A 1{|W|<=1} + sign(W)/n sum(dW~ sign(W))``
``xnor``   XNOR-Net: weights as ``bwn``; input ``sign(x)`` scaled by     as ``bwn``; ``dx`` through the STE of
           ``beta = mean|x|`` (dense, per row) or ``K = box_k(mean_c|x|)`` ``sign(x)`` (beta/K held constant)
``twn``    TWN: ``alpha * t``, ``t`` in {-1,0,1}, ``Delta = 0.7 mean|W|``  ``dW = dW~`` (straight through)
``ttq``    TTQ: ``+W_p`` / 0 / ``-W_n``, ``Delta = 0.05 max|W|``,        ``fxpsim.binary.ttq_grads`` (Zhu et al.
           ``W_p``, ``W_n`` trained per layer                            Eq. 7, 8)
=========  ==========================================================  =====================================

``bwn`` / ``xnor`` differentiate ``W~ = A(W) sign(W)`` exactly with the
straight-through rule for sign (XNOR-Net Sec. 3.1 writes the same with
the cross term approximated by ``1/n``). Layers of methods ``bnn`` and
``xnor`` have no bias (a BatchNorm follows them: BNN's inference folds it
into the sign threshold); the others keep one.

After every optimizer step the trainer calls :meth:`post_update`: the real
weights are clipped to [-1, 1] (BinaryConnect Sec. 2.4; BNN Algorithm 1),
and TTQ's scales kept > 0.

:class:`SignActivation` (kind ``sign``): BNN's ``sign`` (+1 at 0) with the
straight-through estimator ``dx = dy 1{|x| <= 1}`` ("hardtanh" gradient).

Spec tokens (:func:`fxpsim.graph.build_network`): ``bfc<N>[method]``,
``bconv<C>x<k>[s<stride>][p<pad>][method]``, ``sign``; the method
defaults to ``bc``. :func:`binary_spec` turns a float architecture into
the variant of a method.
"""

from __future__ import annotations

import re
from contextlib import contextmanager

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import FxpsimError, check
from ..graph.layers import Conv2D, Dense, Layer
from ..graph.registry import TokenRule, register_layer, register_tokens
from .quantizers import binarize_stochastic, bwn_binarize, ttq_grads, ttq_ternarize, twn_ternarize

METHODS = ("bc", "bcs", "bnn", "bwn", "xnor", "twn", "ttq")
METHOD_NAMES = {
    "bc": "BinaryConnect (deterministic)",
    "bcs": "BinaryConnect (stochastic)",
    "bnn": "Binarized Neural Network",
    "bwn": "Binary-Weight-Network",
    "xnor": "XNOR-Net",
    "twn": "Ternary Weight Network",
    "ttq": "Trained Ternary Quantization",
}
_NO_BIAS = ("bnn", "xnor")
WEIGHT_BITS = {"bc": 1, "bcs": 1, "bnn": 1, "bwn": 1, "xnor": 1, "twn": 2, "ttq": 2}
"""Bits per stored weight of each method (ternary: two bit-planes)."""
TWN_FACTOR = 0.7
TTQ_THRESHOLD = 0.05


def parse_method(name) -> str:
    """Canonical method name or a one-line error."""
    key = str(name).strip().lower()
    key = {"binaryconnect": "bc", "bc-det": "bc", "bc-stoch": "bcs", "bc-stochastic": "bcs",
           "xnor-net": "xnor", "xnornet": "xnor"}.get(key, key)
    if key not in METHODS:
        raise FxpsimError(f"unknown binary method {name!r}: use one of {', '.join(METHODS)} "
                          "(bcs = stochastic BinaryConnect)")
    return key


def _sign(x: np.ndarray) -> np.ndarray:
    """sign with +1 at 0, in the dtype of ``x``."""
    return np.where(x >= 0, x.dtype.type(1), x.dtype.type(-1))


@contextmanager
def _swapped(layer: Layer, params: dict, grads: dict):
    """Run the float layer's code on other parameter arrays (the quantized weights)."""
    saved = layer.params, layer.grads
    layer.params, layer.grads = params, grads
    try:
        yield
    finally:
        layer.params, layer.grads = saved


class _BinaryMixin:
    """What BinaryDense and BinaryConv2D share: quantizers, gradients, clipping."""

    kind = "binary"
    method = "bc"

    def _init_binary(self, method: str, dtype) -> None:
        self.method = parse_method(method)
        if self.method in _NO_BIAS:
            del self.params["b"], self.grads["b"]
        if self.method == "ttq":
            self._add_param("wp", np.zeros(1, dtype=dtype))
            self._add_param("wn", np.zeros(1, dtype=dtype))
        self.rng = np.random.default_rng(0)  # bcs: the Network sets its own stream
        self._qcache = None

    # ---- quantized weights
    def _out_axis(self) -> int:
        return 1 if self.params["W"].ndim == 2 else 0

    def quantized_weights(self, training: bool = False) -> np.ndarray:
        """``W~`` of the method (float64); stochastic BinaryConnect samples only while training."""
        w = np.asarray(self.params["W"], dtype=np.float64)
        m = self.method
        if m in ("bc", "bnn"):
            return np.where(w >= 0, 1.0, -1.0)
        if m == "bcs":  # test time: the real weights, the expectation of the samples (BC Sec. 2.6)
            return binarize_stochastic(w, self.rng) if training else w
        if m in ("bwn", "xnor"):
            return bwn_binarize(w, self._out_axis()).value
        if m == "twn":
            return twn_ternarize(w, TWN_FACTOR).value
        self._init_ttq_scales()
        return ttq_ternarize(w, float(self.params["wp"][0]), float(self.params["wn"][0]), TTQ_THRESHOLD).value

    def codes(self) -> np.ndarray:
        """Integer weight codes: ±1 (binary methods) or {-1, 0, +1} (ternary), int8."""
        w = np.asarray(self.params["W"], dtype=np.float64)
        if self.method == "twn":
            return twn_ternarize(w, TWN_FACTOR).codes
        if self.method == "ttq":
            self._init_ttq_scales()
            return ttq_ternarize(w, float(self.params["wp"][0]), float(self.params["wn"][0]),
                                 TTQ_THRESHOLD).codes
        return np.where(w >= 0, 1, -1).astype(np.int8)

    def _init_ttq_scales(self) -> None:
        """TTQ's W_p, W_n start at the mean magnitude of the weights above the threshold (once)."""
        if self.params["wp"][0] > 0 and self.params["wn"][0] > 0:
            return
        w = np.abs(np.asarray(self.params["W"], dtype=np.float64))
        big = w[w > TTQ_THRESHOLD * w.max(initial=0.0)]
        s = float(big.mean()) if big.size else 1.0
        self.params["wp"][...] = s
        self.params["wn"][...] = s

    # ---- gradients to the real weights
    def _real_weight_grad(self, dwq: np.ndarray) -> None:
        """Turn ``dL/dW~`` (in ``grads['W']``) into ``dL/dW`` in place (see the module table)."""
        w = np.asarray(self.params["W"], dtype=np.float64)
        g = np.asarray(dwq, dtype=np.float64)
        m = self.method
        inside = np.abs(w) <= 1.0
        if m in ("bc", "bcs", "bnn"):
            out = np.where(inside, g, 0.0)
        elif m in ("bwn", "xnor"):
            axes = tuple(i for i in range(w.ndim) if i != self._out_axis())
            n = np.prod([w.shape[i] for i in axes])
            sgn = np.where(w >= 0, 1.0, -1.0)
            a = np.mean(np.abs(w), axis=axes, keepdims=True)
            out = g * a * inside + sgn / n * np.sum(g * sgn, axis=axes, keepdims=True)
        elif m == "twn":
            out = g
        else:
            tern = ttq_ternarize(w, float(self.params["wp"][0]), float(self.params["wn"][0]), TTQ_THRESHOLD)
            out, dwp, dwn = ttq_grads(tern, g)
            self.grads["wp"][...] = dwp
            self.grads["wn"][...] = dwn
        self.grads["W"][...] = out

    def post_update(self) -> None:
        """After an optimizer step: clip the real weights to [-1, 1]; keep TTQ scales > 0."""
        np.clip(self.params["W"], -1.0, 1.0, out=self.params["W"])
        if self.method == "ttq":
            for name in ("wp", "wn"):
                np.maximum(self.params[name], 1e-6, out=self.params[name])

    def _run(self, parent, x, wq, training):
        """The float layer's forward on ``wq`` (and a zero bias where there is none)."""
        b = self.params.get("b")
        if b is None:
            b = np.zeros(wq.shape[0] if wq.ndim == 4 else wq.shape[1], dtype=x.dtype)
        dw = np.zeros(wq.shape, dtype=x.dtype)
        tmp_params = {"W": wq.astype(x.dtype, copy=False), "b": b}
        tmp_grads = {"W": dw, "b": np.zeros_like(b)}
        with _swapped(self, tmp_params, tmp_grads):
            y = parent.forward(self, x, training)
            cache = self._cache
        self._qcache = (tmp_params, tmp_grads, cache)
        return y

    def _run_backward(self, parent, dout, input_grad):
        tmp_params, tmp_grads, cache = self._qcache
        with _swapped(self, tmp_params, tmp_grads):
            self._cache = cache
            dx = parent.backward(self, dout, input_grad=input_grad)
        self._real_weight_grad(tmp_grads["W"])
        if "b" in self.grads:
            self.grads["b"][...] = tmp_grads["b"]
        return dx

    # ---- XNOR-Net input scaling
    def _input_scale(self, x: np.ndarray) -> np.ndarray:
        raise NotImplementedError

    def forward(self, x, training=False):
        wq = self.quantized_weights(training)
        if self.method != "xnor":
            self._xcache = None
            return self._run(self._parent, x, wq, training)
        scale = self._input_scale(x)
        xb = _sign(x)
        y = self._run(self._parent, xb, wq, training)  # no bias for xnor
        self._xcache = (x, scale)
        return y * scale

    def backward(self, dout, input_grad=True):
        if self._xcache is None:
            return self._run_backward(self._parent, dout, input_grad)
        x, scale = self._xcache
        dxb = self._run_backward(self._parent, dout * scale, input_grad)
        if dxb is None:
            return None
        return np.where(np.abs(x) <= 1, dxb, dxb.dtype.type(0))  # STE of sign(x)

    def config(self):
        cfg = self._parent.config(self)
        cfg["kind"] = self.kind
        cfg["method"] = self.method
        return cfg

    def token(self) -> str:
        """This layer's spec token (``bfc<N><method>`` / ``bconv...<method>``)."""
        raise NotImplementedError


class BinaryDense(_BinaryMixin, Dense):
    """Dense layer with binary/ternary weights (``method``): ``y = x W~ + b``."""

    kind = "bdense"
    _parent = Dense

    def __init__(self, n_in: int, n_out: int, method: str = "bc", dtype=np.float32) -> None:
        Dense.__init__(self, n_in, n_out, dtype=dtype)
        self._init_binary(method, dtype)

    def _input_scale(self, x):
        return np.mean(np.abs(x), axis=1, keepdims=True).astype(x.dtype)  # beta per row (XNOR-Net Eq. 11)

    def token(self) -> str:
        return f"bfc{self.n_out}{self.method}"


class BinaryConv2D(_BinaryMixin, Conv2D):
    """Conv2D with binary/ternary weights (``method``), NCHW, as :class:`fxpsim.graph.layers.Conv2D`."""

    kind = "bconv2d"
    _parent = Conv2D

    def __init__(self, c_in: int, c_out: int, k: int, stride: int = 1, padding: int = 0, method: str = "bc",
                 dtype=np.float32) -> None:
        Conv2D.__init__(self, c_in, c_out, k, stride, padding, dtype=dtype)
        self._init_binary(method, dtype)

    def _input_scale(self, x):
        """XNOR-Net's K = A * k: ``A = mean_c |x|``, averaged over each k x k window (zero padding)."""
        a = np.mean(np.abs(x), axis=1)
        p, k, s = self.padding, self.k, self.stride
        if p:
            a = np.pad(a, ((0, 0), (p, p), (p, p)))
        win = sliding_window_view(a, (k, k), axis=(1, 2))[:, ::s, ::s]
        return win.mean(axis=(3, 4))[:, None].astype(x.dtype)

    def token(self) -> str:
        tok = f"bconv{self.c_out}x{self.k}"
        tok += f"s{self.stride}" if self.stride != 1 else ""
        tok += f"p{self.padding}" if self.padding else ""
        return tok + self.method


class SignActivation(Layer):
    """BNN's activation ``sign(x)`` (+1 at 0); backward: straight-through ``dy 1{|x| <= 1}``."""

    kind = "sign"

    def forward(self, x, training=False):
        self._cache = np.abs(x) <= 1
        return _sign(x)

    def backward(self, dout):
        return dout * self._cache


BINARY_LAYERS = (BinaryDense, BinaryConv2D, SignActivation)

# ---------------------------------------------------------------- spec tokens

_METHOD_RE = "(" + "|".join(sorted(METHODS, key=len, reverse=True)) + ")?"
BFC_RE = re.compile(r"bfc(\d+)" + _METHOD_RE)
BCONV_RE = re.compile(r"bconv(\d+)x(\d+)(?:s(\d+))?(?:p(\d+))?" + _METHOD_RE)


def _is_compute(tok: str) -> bool:
    return re.fullmatch(r"(fc\d+|conv\d+x\d+(?:s\d+)?(?:p\d+)?)", tok) is not None


def binary_spec(spec: str, method: str) -> str:
    """The ``method`` variant of a float spec string.

    - ``bc``, ``bcs``, ``bwn``, ``twn``, ``ttq``: every fc/conv becomes its
      binary/ternary twin; everything else stays.
    - ``bnn``: every fc/conv binary; activations become ``sign``; a BatchNorm
      after every layer (pooling kept between the layer and its BatchNorm,
      as in BNN's conv blocks); no sign after the last layer (its BatchNorm
      gives the logits). A ``dropout`` before a fc/conv stays on that layer's
      input (BNN's MLP: dropout on the input and on the binary hidden
      activations); the integer simulator skips it.
    - ``xnor``: as ``bnn`` without the ``sign`` (each XNOR layer binarizes
      its own input); the first layer takes the real input, so it is
      ``bwn`` (XNOR-Net keeps the first layer's input real-valued).
    """
    method = parse_method(method)
    tokens = [t for t in spec.split("-") if t]
    check(all(not t.startswith(("bfc", "bconv")) and t != "sign" for t in tokens),
          f"spec {spec!r} already has binary layers: give the float architecture to binarize")
    if method not in ("bnn", "xnor"):
        return "-".join(f"b{t}{method}" if _is_compute(t) else t for t in tokens)
    computes = [i for i, t in enumerate(tokens) if _is_compute(t)]
    check(bool(computes), f"spec {spec!r} has no fc/conv layer to binarize")
    out = []
    for n, i in enumerate(computes):
        end = computes[n + 1] if n + 1 < len(computes) else len(tokens)
        start = computes[n - 1] + 1 if n else 0
        out += [t for t in tokens[start:i] if t.startswith("dropout")]  # on this layer's (binary) input
        m = "bwn" if method == "xnor" and n == 0 else method
        out.append(f"b{tokens[i]}{m}")
        out += [t for t in tokens[i + 1:end] if t.startswith(("maxpool", "avgpool", "flatten"))]
        out.append("bn")
        if method == "bnn" and n + 1 < len(computes):
            out.append("sign")
    return "-".join(out)


def parse_binary_token(tok: str, shape: tuple, dtype):
    """A layer for a binary spec token on input ``shape``, or None if ``tok`` is not one.

    Used by :func:`fxpsim.graph.spec.parse_spec`; the caller inserts a Flatten
    before a ``bfc`` on non-flat input.
    """
    m = BFC_RE.fullmatch(tok)
    if m:
        check(len(shape) == 1, f"bfc needs flat input, got shape {shape}")
        check(int(m[1]) >= 1, "bfc size must be >= 1")
        return BinaryDense(shape[0], int(m[1]), m[2] or "bc", dtype=dtype)
    m = BCONV_RE.fullmatch(tok)
    if m:
        check(len(shape) == 3, f"bconv needs (C, H, W) input, got shape {shape}")
        return BinaryConv2D(shape[0], int(m[1]), int(m[2]), int(m[3] or 1), int(m[4] or 0), m[5] or "bc",
                            dtype=dtype)
    if tok == "sign":
        return SignActivation()
    return None


# the kinds for model files (fxpsim.graph.network.layer_from_config) and the tokens for spec strings
for _cls in BINARY_LAYERS:
    register_layer(_cls)
register_tokens(TokenRule(("bfc",), parse_binary_token, flat_input=True))  # a Flatten goes before a bfc
register_tokens(TokenRule(("bconv", "sign"), parse_binary_token))
