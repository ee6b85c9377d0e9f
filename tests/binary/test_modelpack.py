"""Bit-packed binary/ternary weights in model files (fxpsim.binary.modelpack, issue 19 item 5):
round trips per method, 1 bit per binary and 2 per ternary weight, and the reader's checks on
forged packed members (length, dtype, pad bits, sign bits of zeros, scales)."""

import numpy as np
import pytest

from fxpsim.binary.packing import n_words
from fxpsim.errors import FxpsimError
from fxpsim.graph import build_network
from fxpsim.modelfile import Model, load_model, save_model
from fxpsim.train.data import Preprocess

EXACT = ("bnn", "bc", "ttq", "bcs")  # forward passes bit-identical after a round trip
SCALED = ("twn", "bwn")  # rebuilt from float32 scales


def _model(method, seed=0):
    tail = "-bn-sign" if method == "bnn" else "-bn-relu"
    net = build_network(f"bconv4x3{method}{tail}-flatten-bfc10{method}-bn", (1, 8, 8), 10, dtype=np.float32)
    rng = np.random.default_rng(seed)
    for layer in net.layers:
        for v in layer.params.values():
            v[...] = rng.normal(size=v.shape)
        if "wp" in layer.params:
            layer.params["wp"][...], layer.params["wn"][...] = 0.7, 0.4
    return Model(net, Preprocess("none", np.zeros((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32)))


@pytest.mark.parametrize("method", EXACT + SCALED)
def test_round_trip_and_bits_per_weight(tmp_path, method):
    model = _model(method)
    path = save_model(tmp_path / "m.npz", model)
    back = load_model(path)
    x = np.random.default_rng(1).normal(size=(6, 1, 8, 8))
    a, b = model.network.forward(x), back.network.forward(x)
    if method in EXACT:
        np.testing.assert_array_equal(a, b)
    else:
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-5)
    for i, layer in enumerate(back.network.layers):
        if hasattr(layer, "codes"):
            np.testing.assert_array_equal(layer.codes(), model.network.layers[i].codes())
    with np.load(path) as z:
        if method == "bcs":
            assert not any(n.startswith("packed/") for n in z.files)
            return
        w = z["packed/0.W"]
        assert w.dtype == np.uint64 and len(w) == n_words(4 * 9) * (2 if method in ("twn", "ttq") else 1)
        assert len(z["packed/4.W"]) == n_words(144 * 10) * (2 if method in ("twn", "ttq") else 1)
        assert "state/0.W" not in z.files


def _forge(tmp_path, method, change):
    path = save_model(tmp_path / "m.npz", _model(method))
    with np.load(path) as z:
        arrays = {n: z[n] for n in z.files}
    change(arrays)
    bad = tmp_path / "bad.npz"
    np.savez(bad, **arrays)
    return bad


def _set(name, value):
    return lambda a: a.__setitem__(name, value)


@pytest.mark.parametrize("method,change,match", [
    ("bnn", lambda a: a.__setitem__("packed/4.W", a["packed/4.W"][:-1]), "shape.*needs uint64 \\(23,\\)"),
    ("bnn", lambda a: a.__setitem__("packed/4.W", a["packed/4.W"].astype(np.int64)), "dtype int64"),
    ("bnn", lambda a: a.__setitem__("packed/0.W", a["packed/0.W"] | np.uint64(1 << 40)), "pad bits"),
    ("twn", lambda a: a.__setitem__("packed/0.W", np.array([0, 1], np.uint64)), "sign bits of zero weights"),
    ("twn", lambda a: a.pop("packed/0.W.scale"), "missing \\['packed/0.W.scale'\\]"),
    ("twn", lambda a: a.__setitem__("packed/0.W.scale", np.array([np.nan], np.float32)), "NaN"),
    ("twn", lambda a: a.__setitem__("packed/0.W.scale", np.array([-1.0], np.float32)), "negative"),
    ("bnn", lambda a: a.__setitem__("packed/1.W", np.zeros(1, np.uint64)), "not a binary layer"),
    ("bnn", lambda a: a.__setitem__("packed/0.W.scale", np.ones(4, np.float32)), "scale of no packed layer"),
    ("bnn", lambda a: a.__setitem__("state/0.W", np.ones((4, 1, 3, 3), np.float32)), "unexpected"),
])
def test_forged_packed_members_give_one_line(tmp_path, method, change, match):
    with pytest.raises(FxpsimError, match=match) as err:
        load_model(_forge(tmp_path, method, change))
    assert "\n" not in str(err.value)
