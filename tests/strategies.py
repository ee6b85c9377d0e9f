"""Hypothesis strategies shared by the tests (named ``*_st``, brevitas style)."""

from hypothesis import strategies as st

from fxpsim.qformat import MAX_WIDTH, Overflow, QFormat, Rounding

rounding_st = st.sampled_from(list(Rounding))
deterministic_rounding_st = st.sampled_from([r for r in Rounding if r is not Rounding.STOCHASTIC])
overflow_st = st.sampled_from([Overflow.WRAP, Overflow.CLIP])


@st.composite
def qformat_st(draw, min_width: int = 1, max_width: int = MAX_WIDTH, signed=None):
    """Any valid format, int_bits and frac_bits possibly negative."""
    width = draw(st.integers(min_width, max_width))
    int_bits = draw(st.integers(-8, width + 8))
    is_signed = draw(st.booleans()) if signed is None else signed
    return QFormat(int_bits, width - int_bits, is_signed)


@st.composite
def raw_st(draw, fmt: QFormat):
    """A raw integer of ``fmt``, with the edges (min, max, 0, +-1) drawn often."""
    edges = [fmt.raw_min, fmt.raw_max, 0, min(1, fmt.raw_max), max(-1, fmt.raw_min)]
    return draw(st.one_of(st.sampled_from(edges), st.integers(fmt.raw_min, fmt.raw_max)))


# --- fxpsim.stripes: bit-serial layers -------------------------------------------------------

@st.composite
def raw_array_st(draw, fmt: QFormat, shape):
    """An int64 array of raw values of ``fmt``, a drawn share of them range edges.

    Built from a drawn seed with NumPy (element-wise drawing is ~50x slower
    for the few hundred values a layer needs); the seed is what shrinks.
    """
    import numpy as np
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    values = rng.integers(fmt.raw_min, fmt.raw_max, size=shape, endpoint=True, dtype=np.int64)
    edges = np.array([fmt.raw_min, fmt.raw_max, 0, min(1, fmt.raw_max), max(-1, fmt.raw_min)], np.int64)
    share = draw(st.sampled_from([0.0, 0.3, 0.8]))
    at_edge = rng.random(shape) < share
    values[at_edge] = rng.choice(edges, size=int(at_edge.sum()))
    return values


@st.composite
def bit_serial_dense_st(draw, signed=None, max_k: int = 40):
    """(x, w, b, fmt_x, fmt_w, acc_bits, lanes): a small dense layer whose
    accumulator is drawn near the operands' width, so saturation is common."""
    fmt_x = draw(qformat_st(min_width=1, max_width=10, signed=signed))
    fmt_w = draw(qformat_st(min_width=1, max_width=8, signed=True))
    m, k, n = draw(st.integers(1, 4)), draw(st.integers(1, max_k)), draw(st.integers(1, 5))
    acc_bits = draw(st.integers(max(2, fmt_x.width + fmt_w.width - 3), fmt_x.width + fmt_w.width + 7))
    fl_acc = fmt_x.frac_bits + fmt_w.frac_bits
    acc_fmt = QFormat(acc_bits - fl_acc, fl_acc)
    lanes = draw(st.sampled_from([1, 2, 3, 4, 16, 64]))
    x = draw(raw_array_st(fmt_x, (m, k)))
    w = draw(raw_array_st(fmt_w, (k, n)))
    b = draw(st.one_of(st.none(), raw_array_st(acc_fmt, (n,))))
    return x, w, b, fmt_x, fmt_w, acc_bits, lanes


@st.composite
def bit_serial_conv_st(draw):
    """(x, w, b, stride, padding, fmt_x, fmt_w, acc_bits, lanes): a small NCHW conv layer."""
    fmt_x = draw(qformat_st(min_width=1, max_width=8))
    fmt_w = draw(qformat_st(min_width=1, max_width=6, signed=True))
    kh = draw(st.integers(1, 3))
    bsz, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    h, w_ = draw(st.integers(kh, 6)), draw(st.integers(kh, 6))
    stride, padding = draw(st.integers(1, 2)), draw(st.integers(0, 1))
    acc_bits = draw(st.integers(max(2, fmt_x.width + fmt_w.width - 2), fmt_x.width + fmt_w.width + 6))
    fl_acc = fmt_x.frac_bits + fmt_w.frac_bits
    lanes = draw(st.sampled_from([1, 3, 4, 16]))
    x = draw(raw_array_st(fmt_x, (bsz, c, h, w_)))
    w = draw(raw_array_st(fmt_w, (f, c, kh, kh)))
    b = draw(st.one_of(st.none(), raw_array_st(QFormat(acc_bits - fl_acc, fl_acc), (f,))))
    return x, w, b, stride, padding, fmt_x, fmt_w, acc_bits, lanes


precision_profile_st = st.lists(st.integers(1, 16), min_size=1, max_size=8)
"""A valid Stripes precision profile (bits per conv layer)."""


@st.composite
def layer_shape_st(draw):
    """A conv or fc LayerShape with small, possibly unaligned dimensions."""
    from fxpsim.stripes import LayerShape
    if draw(st.booleans()):
        return LayerShape.fc("fc", draw(st.integers(1, 600)), draw(st.integers(1, 600)))
    k = draw(st.integers(1, 5))
    return LayerShape.conv("conv", draw(st.integers(1, 70)), draw(st.integers(1, 600)), k,
                           draw(st.integers(k, 40)), stride=draw(st.integers(1, 3)))


# --- binary / ternary layers (fxpsim.binary) -------------------------------
import numpy as _np  # noqa: E402

# K at and around word boundaries (pad bits) drawn often, K = 1 included
binary_k_st = st.one_of(st.sampled_from([1, 2, 63, 64, 65, 127, 128, 129]), st.integers(1, 200))


def _values(draw, shape, choices):
    """Random values from ``choices`` (seeded from hypothesis) or a constant fill."""
    fill = draw(st.sampled_from(["random", "random", "random", "first", "last"]))
    if fill == "first":
        return _np.full(shape, choices[0], dtype=_np.int64)
    if fill == "last":
        return _np.full(shape, choices[-1], dtype=_np.int64)
    rng = _np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    return rng.choice(_np.array(choices, dtype=_np.int64), size=shape)


@st.composite
def pm1_st(draw, shape):
    """A ±1 int64 array of ``shape`` (random, all -1 or all +1)."""
    return _values(draw, shape, [-1, 1])


@st.composite
def ternary_st(draw, shape):
    """A {-1, 0, +1} int64 array of ``shape``."""
    return _values(draw, shape, [-1, 0, 1])


@st.composite
def binary_dense_shape_st(draw, max_b: int = 9, max_n: int = 12):
    """(B, K, N) with B covering 4-row blocks and tails, K around word boundaries."""
    return draw(st.integers(1, max_b)), draw(binary_k_st), draw(st.integers(1, max_n))


@st.composite
def bitplane_input_st(draw, shape):
    """(raw ints, QFormat) for the BNN first layer: UQ8.0 pixels or a signed format up to 12 bits."""
    fmt = draw(st.one_of(st.just(QFormat(8, 0, False)),
                         st.builds(lambda w, i, s: QFormat(i, w - i, s),
                                   st.integers(1, 12), st.integers(-2, 6), st.booleans())))
    rng = _np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    edge = draw(st.sampled_from(["random", "min", "max"]))
    if edge == "min":
        return _np.full(shape, fmt.raw_min, dtype=_np.int64), fmt
    if edge == "max":
        return _np.full(shape, fmt.raw_max, dtype=_np.int64), fmt
    return rng.integers(fmt.raw_min, fmt.raw_max + 1, size=shape), fmt


@st.composite
def conv_shape_st(draw):
    """((B, C, H, W), (F, C, kh, kw), stride, padding) with the kernel fitting the padded input."""
    b, c, f = draw(st.integers(1, 3)), draw(st.integers(1, 9)), draw(st.integers(1, 5))
    kh, kw = draw(st.integers(1, 4)), draw(st.integers(1, 4))
    padding, stride = draw(st.integers(0, 2)), draw(st.integers(1, 3))
    h = draw(st.integers(max(1, kh - 2 * padding), 9))
    w = draw(st.integers(max(1, kw - 2 * padding), 9))
    return (b, c, h, w), (f, c, kh, kw), stride, padding


@st.composite
def batchnorm_st(draw, n: int, acc_bound: int = 64):
    """BatchNorm parameters for ``n`` neurons: gamma with zeros and negatives, ties drawn often.

    Means on integers and beta = 0 put BN(a) = 0 exactly at an integer a
    (the +1-at-0 tie of Sign); large |beta|/small |gamma| push thresholds
    outside the accumulator range.
    """
    from fxpsim.binary import BatchNormParams

    rng = _np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = rng.integers(0, 5, size=n)
    gamma = rng.normal(size=n) * _np.where(kind == 0, 0.0, 1.0)
    gamma[kind == 1] = -_np.abs(gamma[kind == 1])
    mean = _np.where(rng.random(n) < 0.5, rng.integers(-acc_bound, acc_bound + 1, size=n),
                     rng.normal(size=n) * acc_bound / 2)
    beta = _np.where(rng.random(n) < 0.4, 0.0, rng.normal(size=n) * _np.where(kind == 4, 1e3, 2.0))
    var = _np.where(rng.random(n) < 0.1, 0.0, rng.random(n) * acc_bound)
    eps = draw(st.sampled_from([1e-5, 1e-4, 1.0]))
    return BatchNormParams(gamma, beta, mean, var, eps)


@st.composite
def bnn_mlp_st(draw, max_layers: int = 4):
    """(BnnMlp, raw 8-bit-ish input) with layer widths around word boundaries, K = 1 allowed."""
    from fxpsim.binary import BnnMlp

    n_layers = draw(st.integers(1, max_layers))
    sizes = [draw(binary_k_st) for _ in range(n_layers)] + [draw(st.integers(1, 10))]
    batch = draw(st.integers(1, 9))
    x, fmt = draw(bitplane_input_st((batch, sizes[0])))
    weights = [draw(pm1_st((sizes[i], sizes[i + 1]))) for i in range(n_layers)]
    bound = max(abs(fmt.raw_min), fmt.raw_max) * sizes[0]
    bns = [draw(batchnorm_st(sizes[i + 1], bound if i == 0 else sizes[i])) for i in range(n_layers)]
    return BnnMlp(weights, bns, fmt), x


# --- the integer datapath (fxpsim.kernels) -------------------------------------------

datapath_overflow_st = st.sampled_from([Overflow.WRAP, Overflow.CLIP, Overflow.IDEAL])
activation_st = st.sampled_from(["none", "relu"])


def _raw_array(draw, fmt: QFormat, shape):
    """Raw ints of ``fmt``: uniform, extremes only, mostly zero or all zero (edges often)."""
    import numpy as np

    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kind = draw(st.sampled_from(["uniform", "uniform", "extremes", "sparse", "zeros"]))
    if kind == "zeros":
        return np.zeros(shape, dtype=np.int64)
    if kind == "extremes":
        return rng.choice(np.array([fmt.raw_min, fmt.raw_max], dtype=np.int64), size=shape)
    a = rng.integers(fmt.raw_min, fmt.raw_max, size=shape, endpoint=True, dtype=np.int64)
    if kind == "sparse":
        a[rng.random(shape) < 0.7] = 0
    return a


@st.composite
def datapath_config_st(draw, max_acc_bits: int = 40):
    """Keyword arguments of dense/conv2d: formats, BW_acc 2..max_acc_bits, modes, seed."""
    fmt_x = draw(qformat_st(min_width=1, max_width=16))
    fmt_w = draw(qformat_st(min_width=1, max_width=16))
    fmt_y = draw(qformat_st(min_width=1, max_width=16))
    return dict(fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y,
                acc_bits=draw(st.integers(2, max_acc_bits)),
                overflow=draw(datapath_overflow_st), rounding=draw(rounding_st),
                activation=draw(activation_st), seed=draw(st.integers(0, 2**63)))


def _bias(draw, cfg, n):
    import numpy as np

    if draw(st.booleans()):
        return None
    half = 1 << (cfg["acc_bits"] - 1)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    scale = draw(st.sampled_from([half, max(1, half >> 4), 1]))
    return rng.integers(max(-half, -scale), min(half - 1, scale), size=n, endpoint=True)


@st.composite
def dense_case_st(draw, max_batch: int = 4, max_k: int = 300, max_n: int = 5):
    """``(x, w, b, kwargs)`` for :func:`fxpsim.kernels.dense`; operand widths 1..16."""
    bsz = draw(st.integers(1, max_batch))
    k = draw(st.integers(1, max_k))
    n = draw(st.integers(1, max_n))
    cfg = draw(datapath_config_st())
    x = _raw_array(draw, cfg["fmt_x"], (bsz, k))
    w = _raw_array(draw, cfg["fmt_w"], (k, n))
    return x, w, _bias(draw, cfg, n), cfg


@st.composite
def conv_case_st(draw):
    """``(x, w, b, kwargs)`` for :func:`fxpsim.kernels.conv2d`: small NCHW, stride, padding."""
    kh, kw = draw(st.integers(1, 3)), draw(st.integers(1, 3))
    pad = draw(st.integers(0, 2))
    stride = draw(st.integers(1, 3))
    h = draw(st.integers(max(1, kh - 2 * pad), 7))
    wd = draw(st.integers(max(1, kw - 2 * pad), 7))
    bsz, c, f = draw(st.integers(1, 2)), draw(st.integers(1, 3)), draw(st.integers(1, 3))
    cfg = draw(datapath_config_st())
    cfg.update(stride=stride, padding=pad)
    x = _raw_array(draw, cfg["fmt_x"], (bsz, c, h, wd))
    w = _raw_array(draw, cfg["fmt_w"], (f, c, kh, kw))
    return x, w, _bias(draw, cfg, f), cfg


# --- sparse storage and the EIE datapath (fxpsim.sparse) ------------------------------------

@st.composite
def sparse_matrix_st(draw, max_rows: int = 40, max_cols: int = 12, floats: bool = False):
    """A 2-D matrix with a drawn density (all-zero and long zero runs included), ints or floats."""
    import numpy as np

    rows, cols = draw(st.integers(1, max_rows)), draw(st.integers(1, max_cols))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    density = draw(st.sampled_from([0.0, 0.02, 0.1, 0.5, 1.0]))
    if floats:
        m = rng.normal(size=(rows, cols))
    else:
        m = rng.integers(-128, 128, size=(rows, cols))
        m[m == 0] = 1
    return np.where(rng.random((rows, cols)) < density, m, 0 * m)


@st.composite
def sparse_dense_case_st(draw):
    """``(x, w, b, kwargs, n_pes, index_bits)``: a dense_case_st layer with its weights pruned
    to a drawn sparsity and its activations zeroed at a drawn rate (EIE skips both)."""
    import numpy as np

    x, w, b, cfg = draw(dense_case_st(max_batch=4, max_k=80, max_n=12))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    w = np.where(rng.random(w.shape) < draw(st.sampled_from([0.0, 0.5, 0.9, 1.0])), 0, w)
    x = np.where(rng.random(x.shape) < draw(st.sampled_from([0.0, 0.5, 0.9])), 0, x)
    return x, w, b, cfg, draw(st.sampled_from([1, 2, 3, 9])), draw(st.sampled_from([1, 1, 2, 4]))


# --- the datapath's fast paths near the rails (fxpsim.kernels.datapath, issue 13) ----------

_FAST_PATH_TARGETS = ("int16 lanes", "int32 lanes", "int64 lanes", "int64 lanes", "wide products",
                      "huge sums")
"""What a fast-path config aims at: a lane width of the per-step kernels (BW_acc up to 16,
32, 62: full lanes included), products wider than BW_acc (the int64 kernel), or sums
beyond 2**53 and 2**63 (int64 and Python-int exact sums)."""


def _width_st(cap: int):
    """An operand width 1..cap, the widths 1 and 2 drawn often."""
    return st.one_of(st.sampled_from([1, 2]), st.integers(1, max(1, cap)), st.integers(1, max(1, cap)))


def _fast_path_config(draw, k: int, target=None, overflow=None):
    target = draw(st.sampled_from(_FAST_PATH_TARGETS)) if target is None else target
    if target == "wide products":  # wx + ww > BW_acc (a product wider than the accumulator)
        acc_bits = draw(st.integers(1, 60))
        wx = draw(st.integers(max(1, acc_bits - 30), 31))
        ww = draw(st.integers(max(1, acc_bits + 1 - wx), min(31, 62 - wx)))
    elif target == "huge sums":
        acc_bits = draw(st.integers(41, 62))
        wx, ww = draw(st.integers(28, 31)), draw(st.integers(28, 31))  # bound 2**53..2**63 and beyond
    else:
        acc_bits = draw({"int16 lanes": st.one_of(st.just(16), st.integers(1, 16)),
                         "int32 lanes": st.one_of(st.just(32), st.integers(17, 31), st.integers(17, 31)),
                         "int64 lanes": st.one_of(st.just(62), st.integers(33, 62),
                                                  st.integers(41, 62))}[target])
        wx = draw(_width_st(min(31, acc_bits - 1)))
        ww = draw(_width_st(min(31, acc_bits - wx)))
    fmts = []
    for width in (wx, ww):
        ib = draw(st.integers(-3, width + 3))
        fmts.append(QFormat(ib, width - ib, draw(st.booleans())))
    fmt_x, fmt_w = fmts
    shift = draw(st.sampled_from([1, 1, 1, 2, 3, 0, -1, -3, 7, 30]))
    frac_y = fmt_x.frac_bits + fmt_w.frac_bits - shift
    width_y = draw(st.sampled_from([1, 2, 8, 16, 32, 62]))
    fmt_y = QFormat(width_y - frac_y, frac_y, draw(st.booleans()))
    if overflow is None:
        overflow = draw(st.sampled_from([Overflow.WRAP, Overflow.WRAP, Overflow.CLIP, Overflow.CLIP,
                                         Overflow.CLIP, Overflow.IDEAL]))
    overflow = Overflow(overflow)
    mag_x, mag_w = (max(-f.raw_min, f.raw_max) for f in (fmt_x, fmt_w))
    worst = (1 << (acc_bits - 1)) + k * mag_x * mag_w
    if overflow is Overflow.IDEAL and worst >= 1 << 63:
        overflow = Overflow.CLIP  # the unbounded reference needs int64
    cfg = dict(fmt_x=fmt_x, fmt_w=fmt_w, fmt_y=fmt_y, acc_bits=acc_bits, overflow=overflow,
               rounding=draw(rounding_st), activation=draw(activation_st),
               seed=draw(st.integers(0, 2**63)), prefix_stats=draw(st.sampled_from([True, True, False])))
    return cfg, target


@st.composite
def fast_path_config_st(draw, k: int):
    """Keyword arguments of dense/conv2d for a reduction of length ``k``.

    Aimed at one of ``_FAST_PATH_TARGETS`` (BW_acc 1..62, 41..62 often);
    operand formats of width 1..31 (1 and 2 often), signed or not; an output
    shift FL_acc - FL_y mostly of 1..3 bits, so ties at .5 lsb occur (0 and
    left shifts too); every rounding mode, wrap / clip / ideal (ideal only
    where int64 holds it), activation, and ``prefix_stats`` mostly on.
    """
    return _fast_path_config(draw, k)[0]


def _rails(acc_bits: int):
    return -(1 << (acc_bits - 1)), (1 << (acc_bits - 1)) - 1


@st.composite
def rail_bias_st(draw, acc_bits: int, n: int):
    """``n`` raw biases of a BW_acc accumulator, or None: each at or next to a rail
    (acc_min, acc_max, +-1, +-2), zero or uniform, in all-rail, mixed and uniform mixes."""
    import numpy as np

    kind = draw(st.sampled_from(["rails", "mixed", "mixed", "uniform", "none"]))  # shrinks to rails
    if kind == "none":
        return None
    lo, hi = _rails(acc_bits)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    near = np.array(sorted({min(hi, max(lo, v)) for v in (lo, lo + 1, lo + 2, hi, hi - 1, hi - 2)}),
                    dtype=np.int64)
    b = rng.choice(near, size=n)
    if kind == "uniform":
        b = rng.integers(lo, hi, size=n, endpoint=True, dtype=np.int64)
    elif kind == "mixed":  # only some outputs at risk
        other = np.where(rng.random(n) < 0.5, 0, rng.integers(lo >> 8, (hi >> 8) + 1, size=n))
        b = np.where(rng.random(n) < 0.3, b, other)
    return b


def _fast_values(rng, fmt: QFormat, size: int, kind: str):
    """``size`` raw ints of ``fmt``: uniform, the extremes (most negative included), small
    magnitudes (+-1, +-2: sums that land on a rail), or non-negative magnitudes."""
    import numpy as np

    if kind == "extremes":
        return rng.choice(np.array([fmt.raw_min, fmt.raw_max], dtype=np.int64), size=size)
    if kind == "small":
        small = np.array([v for v in (-2, -1, 1, 2) if fmt.raw_min <= v <= fmt.raw_max] or [0], np.int64)
        return rng.choice(small, size=size)
    v = rng.integers(fmt.raw_min, fmt.raw_max, size=size, endpoint=True, dtype=np.int64)
    return np.abs(np.maximum(v, -fmt.raw_max)) if kind == "magnitude" else v


def _row_sums(x, w, row: int):
    """Exact (Python int) ``x[row] @ w``, over the row's non-zero inputs only."""
    import numpy as np

    nz = np.flatnonzero(x[row])
    return [sum(int(x[row, k]) * int(w[k, j]) for k in nz) for j in range(w.shape[1])]


def _adjust_bias(draw, b, x, w, cfg):
    """Make row 0's accumulators end exactly on a rail ("full"), or on a tie at .5 lsb of the
    output shift ("tie"), where the bias can absorb the difference; else ``b`` as drawn."""
    import numpy as np

    how = draw(st.sampled_from(["as-drawn", "as-drawn", "full", "tie"]))
    shift = cfg["fmt_x"].frac_bits + cfg["fmt_w"].frac_bits - cfg["fmt_y"].frac_bits
    if how == "as-drawn" or x.shape[0] == 0 or (how == "tie" and not 1 <= shift < cfg["acc_bits"]):
        return b
    lo, hi = _rails(cfg["acc_bits"])
    b = np.zeros(w.shape[1], dtype=np.int64) if b is None else b.copy()
    rail = draw(st.sampled_from([lo, hi]))
    for j, s0 in enumerate(_row_sums(x, w, 0)):
        if how == "full":
            v = rail - s0
        else:
            v = int(b[j]) + (((1 << (shift - 1)) - (int(b[j]) + s0)) % (1 << shift))
            v -= (1 << shift) if v > hi else 0
        if lo <= v <= hi:
            b[j] = v
    return b


def _fast_path_case(draw, rows: int, k: int, n: int, density: str, budget: int = 1 << 14,
                    target=None, overflow=None):
    """``(x, w, b, kwargs)``: x (rows, k) of the drawn density, w (k, n), rail biases;
    ``sparse`` x holds about ``budget / n`` non-zeros."""
    import numpy as np

    cfg, target = _fast_path_config(draw, k, target, overflow)
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = ["uniform", "extremes"] + ([] if target == "huge sums" else ["small", "magnitude"])
    xk, wk = draw(st.sampled_from(kinds)), draw(st.sampled_from(kinds))
    x = np.zeros((rows, k), dtype=np.int64)
    if density == "dense":
        x[:] = _fast_values(rng, cfg["fmt_x"], rows * k, xk).reshape(rows, k)
    elif density == "sparse":  # a share of the entries
        mask = rng.random((rows, k)) < min(0.3, budget / (rows * k * n))
        x[mask] = _fast_values(rng, cfg["fmt_x"], int(mask.sum()), xk)
    else:  # "few": 0..6 non-zeros per row (the first and last k drawn often)
        nnz = rng.integers(0 if draw(st.booleans()) else 1, 7, size=rows)
        r = np.repeat(np.arange(rows), nnz)
        c = rng.choice(np.array([0, k - 1] + list(rng.integers(0, k, size=6))), size=r.size)
        x[r, c] = _fast_values(rng, cfg["fmt_x"], r.size, xk)
        if draw(st.booleans()) and k * n <= 1 << 14:  # one fully dense row
            x[rows // 2] = _fast_values(rng, cfg["fmt_x"], k, xk)
    w = _fast_values(rng, cfg["fmt_w"], k * n, wk).reshape(k, n)
    if wk == "magnitude":  # one sign per column: the exact check can prove such outputs safe
        w = w * rng.choice(np.array([-1, 1]), size=n) if cfg["fmt_w"].raw_min < 0 else w
    b = _adjust_bias(draw, draw(rail_bias_st(cfg["acc_bits"], n)), x, w, cfg)
    return x, w, b, cfg


@st.composite
def rail_dense_case_st(draw, max_batch: int = 6, max_k: int = 40, max_n: int = 6):
    """A small dense call (below 2**18 MACs, K = 1 often) near the accumulator rails."""
    rows, n = draw(st.integers(1, max_batch)), draw(st.integers(1, max_n))
    k = draw(st.one_of(st.just(1), st.integers(1, max_k)))
    return _fast_path_case(draw, rows, k, n, draw(st.sampled_from(["dense", "dense", "sparse", "few"])))


@st.composite
def big_dense_case_st(draw, min_macs: int = 1 << 18, target=None, overflow=None):
    """A dense call of at least ``min_macs`` MACs (the fast path's exact checks run), with
    mostly-zero x so a zero-skipping exact model stays fast.

    Shapes: ``short`` (<= 128 rows: no row sample), ``long`` (129..320 rows: the
    sample of :func:`_all_sequential_pays` decides), ``tall`` (K of 16..32 and
    rows by the ten thousand). Biases at the rails, rows that end on
    a rail exactly, every lane and kernel of :func:`fast_path_config_st`;
    ``target`` (one of ``_FAST_PATH_TARGETS``) and ``overflow`` fix those draws.
    """
    shape = draw(st.sampled_from(["long", "short", "long", "long", "tall"]))
    if shape == "tall":
        k = draw(st.integers(16, 32))
        return _fast_path_case(draw, -(-min_macs // k), k, 1, "sparse", 1 << 11, target, overflow)
    rows = draw(st.integers(1, 128) if shape == "short" else st.integers(129, 320))
    n = draw(st.integers(1, 6))
    k = -(-min_macs // (rows * n)) + draw(st.integers(0, 3))
    return _fast_path_case(draw, rows, k, n, draw(st.sampled_from(["few", "sparse"])),
                           target=target, overflow=overflow)


@st.composite
def big_conv_case_st(draw, min_macs: int = 1 << 18):
    """``(x, w, b, kwargs)`` for conv2d with at least ``min_macs`` MACs: a few non-zero pixels
    per image, biases at the rails, the fast-path configs of :func:`fast_path_config_st`."""
    import numpy as np

    bsz, c = draw(st.integers(1, 2)), draw(st.integers(2, 4))
    kh, kw = draw(st.sampled_from([3, 5])), draw(st.sampled_from([3, 5]))
    pad, stride = draw(st.integers(0, 2)), draw(st.integers(1, 2))
    h, wd = draw(st.integers(16, 40)), draw(st.integers(16, 40))
    rows = bsz * ((h + 2 * pad - kh) // stride + 1) * ((wd + 2 * pad - kw) // stride + 1)
    kk = c * kh * kw
    f = max(draw(st.integers(1, 6)), -(-min_macs // (rows * kk)))
    cfg = draw(fast_path_config_st(kk))
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    kinds = ["uniform", "extremes", "small"]
    x = np.zeros((bsz, c, h, wd), dtype=np.int64)
    nnz = draw(st.integers(0, 40))
    pos = tuple(rng.integers(0, s, size=nnz) for s in x.shape)
    x[pos] = _fast_values(rng, cfg["fmt_x"], nnz, draw(st.sampled_from(kinds)))
    w = _fast_values(rng, cfg["fmt_w"], f * kk, draw(st.sampled_from(kinds))).reshape(f, c, kh, kw)
    cfg.update(stride=stride, padding=pad)
    return x, w, draw(rail_bias_st(cfg["acc_bits"], f)), cfg
