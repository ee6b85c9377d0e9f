"""Engine ``xnor``: BNN models through the one Simulator (issue 13, item 3).

Three implementations must agree bit for bit on random BNNs (MLP and conv, max pooling, flatten
before the BatchNorm, binary or fixed-point output, gamma < 0 / = 0 / ties, narrow and 62-bit
accumulators, input widths 1..12, K = 1): the Simulator on engine xnor, its Python-int twin
(:class:`fxpsim.datapath.xnor_reference.ReferenceXnorEngine`, dense fc on the dense twin) and the
stand-alone :class:`fxpsim.binary.netsim.BnnSimulator` as it was before the engine existed.
"""

import dataclasses

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_array_equal

from fxpsim.binary.netsim import BnnSimulator
from fxpsim.binary.pooling import POOL_ON
from fxpsim.binary.stages import bnn_config
from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.datapath import reference
from fxpsim.datapath.xnor_reference import ReferenceXnorEngine
from fxpsim.errors import FxpsimError
from fxpsim.qformat import QFormat, dequantize
from fxpsim.simulate import Simulator

from strategies import batchnorm_st, bitplane_input_st, pm1_st

from .legacy_bnn import LegacyBnnSimulator
from .test_netsim import _model, _set_params, conv_bnn_st

ACC_BITS = st.sampled_from([1, 2, 3, 5, 8, 12, 20, 32, 62])


def _three_ways(model, fmt, x, acc_bits, pool_on):
    """Simulator (xnor) == its twin == the pre-engine BnnSimulator == today's (a wrapper)."""
    old = LegacyBnnSimulator(model, fmt_x=fmt, acc_bits=acc_bits, pool_on=pool_on).run(x)
    new = BnnSimulator(model, fmt_x=fmt, acc_bits=acc_bits, pool_on=pool_on).run(x)
    for f in ("y_raw", "acc_out"):
        assert_array_equal(getattr(new, f), getattr(old, f))
    assert len(new.hidden) == len(old.hidden) and new.widths == old.widths
    for a, b in zip(new.hidden, old.hidden):
        assert a.dtype == b.dtype and a.shape == b.shape
        assert_array_equal(a, b)
    assert new.outputs_wrapped == old.outputs_wrapped
    sim = Simulator(model)
    cfg = bnn_config(sim.stages, fmt_x=fmt, acc_bits=acc_bits, pool_on=pool_on)
    xf = dequantize(x, fmt)
    res = sim.simulate(xf, cfg, batch_size=3)
    assert_array_equal(res.logits, old.logits)
    assert sum(s.outputs_affected for s in res.layer_stats) == old.outputs_wrapped
    twin = Simulator(model, backend=reference)
    twin.engines["xnor"] = ReferenceXnorEngine()
    ref = twin.simulate(xf, cfg, batch_size=3)
    assert_array_equal(ref.logits, res.logits)
    assert ref.layer_stats == res.layer_stats
    return res


@st.composite
def mlp_bnn_st(draw):
    """(Model, fmt_x, raw input): flatten-bfc..bnn-bn-sign..., K around word boundaries and K = 1."""
    k = draw(st.sampled_from([1, 2, 5, 63, 64, 65, 130]))
    toks = ["flatten"]
    for _ in range(draw(st.integers(0, 2))):
        toks += [f"bfc{draw(st.sampled_from([1, 2, 7, 64, 65]))}bnn", "bn", "sign"]
    toks += draw(st.sampled_from([["bfc3bnn", "bn"], ["fc3"]])) if len(toks) > 1 else [["bfc3bnn", "bn"]][0]
    shape = (1, 1, k)
    model = _model("-".join(toks), shape, n_classes=3)
    x, fmt = draw(bitplane_input_st((draw(st.integers(1, 6)),) + shape))
    _set_params(model, lambda s: draw(pm1_st(s)), lambda n, b: draw(batchnorm_st(n, b)),
                max(abs(fmt.raw_min), fmt.raw_max))
    return model, fmt, x


@settings(max_examples=30, deadline=None)
@given(conv_bnn_st(), ACC_BITS, st.sampled_from(POOL_ON))
def test_conv_bnn_engine_equals_twin_and_bnn_simulator(case, acc_bits, pool_on):
    _three_ways(*case, acc_bits, pool_on)


@settings(max_examples=30, deadline=None)
@given(mlp_bnn_st(), ACC_BITS)
def test_mlp_bnn_engine_equals_twin_and_bnn_simulator(case, acc_bits):
    _three_ways(*case, acc_bits, "dots")


def _fixed_model(seed=1):
    rng = np.random.default_rng(seed)
    model = _model("bconv4x3p1bnn-maxpool2-bn-sign-bfc5bnn-bn-sign-bfc3bnn-bn", (1, 6, 6), n_classes=3)
    _set_params(model, lambda s: rng.choice([-1.0, 1.0], size=s),
                lambda n, b: __import__("fxpsim.binary", fromlist=["x"]).BatchNormParams(
                    rng.normal(size=n), rng.normal(size=n), rng.normal(size=n) * b / 4, rng.random(n) * b + 1), 255)
    return model, rng.integers(0, 256, size=(7, 1, 6, 6)).astype(np.float64)


def test_wrapping_is_counted_and_ideal_never_wraps():
    model, x = _fixed_model()
    sim = Simulator(model)
    narrow = sim.simulate(x, bnn_config(sim.stages, acc_bits=4))
    assert narrow.layer_stats[0].outputs_affected > 0  # |dot| up to 9 * 255 in a 4-bit register
    ideal = sim.simulate(x, bnn_config(sim.stages, acc_bits=4).with_all(overflow="ideal"))
    assert all(s.outputs_affected == 0 for s in ideal.layer_stats)
    assert_array_equal(ideal.logits, sim.simulate(x, bnn_config(sim.stages, acc_bits=62)).logits)


def test_stage_cutting_stats_and_float_reference():
    model, x = _fixed_model()
    sim = Simulator(model)
    assert sim.names == ["conv1", "fc1", "fc2"]
    assert [s.binary.pm1_input for s in sim.stages] == [False, True, True]
    assert [s.binary.sign for s in sim.stages] == [True, True, False]
    res = sim.simulate(x, bnn_config(sim.stages), y=np.zeros(len(x), int))
    hidden = res.layer_stats[:2]
    assert all(s.abs_error_sum == 0 for s in hidden)  # ±1 outputs equal the float model's Sign
    assert res.layer_stats[0].additions == 7 * 4 * 6 * 6 * 9  # K per dot, before pooling
    assert res.float_accuracy is not None
    plan = sim.compile(bnn_config(sim.stages), max_batch=7)
    assert_array_equal(plan(x).logits, res.logits)


def test_config_json_round_trip_with_engine_xnor():
    model, _ = _fixed_model()
    cfg = bnn_config(Simulator(model).stages, pool_on="bits", scale_bits=20)
    again = NetworkConfig.from_json(cfg.to_json())
    assert again == cfg and again[0].engine == "xnor" and again[0].options == {"pool_on": "bits", "scale_bits": 20}


@pytest.mark.parametrize("change,match", [
    (dict(engine="dense"), "BNN stage.*engine dense does not run.*engine xnor"),
    (dict(overflow="clip"), "wraps.*overflow wrap"),
    (dict(fmt_w=QFormat(1, 0)), "±1 weights.*fmt_w Q1.0.*Q2.0"),
    (dict(a2q=True), "a2q"),
    (dict(rounding="stochastic"), "deterministically"),
    (dict(order="tree"), "order"),
])
def test_bad_xnor_configs_give_one_line(change, match):
    model, x = _fixed_model()
    sim = Simulator(model)
    cfg = bnn_config(sim.stages)
    layer = dataclasses.replace(cfg[0], **change) if "engine" not in change else cfg[0].with_engine("dense")
    bad = cfg.with_layer(0, **{f.name: getattr(layer, f.name) for f in dataclasses.fields(layer)
                               if f.name in change or (f.name.startswith("engine") and "engine" in change)})
    with pytest.raises(FxpsimError, match=match) as err:
        sim.simulate(x, bad)
    assert "\n" not in str(err.value)


def test_hidden_layer_input_format_and_output_format_checks():
    model, x = _fixed_model()
    sim = Simulator(model)
    cfg = bnn_config(sim.stages)
    with pytest.raises(FxpsimError, match="fc1 reads the ±1 outputs.*fmt_x Q4.2"):
        sim.simulate(x, cfg.with_layer(0, fmt_y="Q4.2").with_layer(1, fmt_x="Q4.2"))
    with pytest.raises(FxpsimError, match="Sign gives ±1, which fmt_y Q1.0"):
        sim.simulate(x, cfg.with_layer(0, fmt_y="Q1.0"))


def test_xnor_engine_refuses_a_fixed_point_stage_and_xnor_method():
    from fxpsim.graph import build_network
    from fxpsim.modelfile import Model
    from fxpsim.train.data import Preprocess

    net = build_network("flatten-fc4-relu-fc3", (1, 4, 4), 3, dtype=np.float64)
    model = Model(net, Preprocess("none", np.zeros((1, 1, 1), np.float32), np.ones((1, 1, 1), np.float32)))
    sim = Simulator(model)
    cfg = NetworkConfig(tuple(LayerConfig(s.name, "Q2.6", "Q4.4", "Q4.4", 24, engine="xnor") for s in sim.stages))
    with pytest.raises(FxpsimError, match="fc1 is a fixed-point stage, which engine xnor does not run"):
        sim.simulate(np.zeros((2, 1, 4, 4)), cfg)
    with pytest.raises(FxpsimError, match="XNOR-Net"):
        Simulator(_model("bfc4xnor-bn-sign-bfc3xnor-bn", (1, 4, 4), 3))
    with pytest.raises(FxpsimError, match="no BNN layer"):
        bnn_config(sim.stages)
