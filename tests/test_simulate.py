"""Whole-network integer simulation: folding, exactness against the Python-int twin, configs."""

from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest

from fxpsim.config import LayerConfig, NetworkConfig
from fxpsim.datapath import dense as dense_datapath
from fxpsim.datapath.engines import BitSerialCycles, SparseLayerStats
from fxpsim.experiments.stripes import nonnegative_inputs, unsigned_inputs
from fxpsim.errors import FxpsimError
from fxpsim.kernels import reference
from fxpsim.modelfile import load_model
from fxpsim.network import build_network
from fxpsim.qformat import QFormat, quantize
from fxpsim.search import accumulator_search
from fxpsim.simulate import Evaluator, Simulator, build_stages, config_from_profile, convert_raw, profile
from fxpsim.sweep import wide_config
from fxpsim.train.data import load_dataset

MODELS = Path(__file__).resolve().parents[1] / "models"


def _net(spec, shape=(1, 8, 8), seed=0):
    net = build_network(spec, shape, 10, seed=seed)
    rng = np.random.default_rng(seed + 1)
    for layer in net.layers:  # give BatchNorm non-trivial inference statistics
        if layer.kind == "batchnorm":
            n = layer.params["gamma"].shape[0]
            layer.params["gamma"][...] = rng.uniform(-1.5, 1.5, n)
            layer.params["beta"][...] = rng.normal(0, 0.3, n)
            layer.buffers["running_mean"][...] = rng.normal(0, 0.3, n)
            layer.buffers["running_var"][...] = rng.uniform(0.2, 2.0, n)
    return net


def _inputs(n=64, shape=(1, 8, 8), seed=3):
    return np.random.default_rng(seed).normal(0, 1, (n,) + shape)


def test_stages_fold_batchnorm_and_fuse_relu():
    net = _net("conv4x3p1-bn-relu-maxpool2-conv8x3-relu-fc16-bn-relu-dropout50-fc10")
    stages = build_stages(net)
    assert [s.name for s in stages] == ["conv1", "conv2", "fc1", "fc2"]
    assert [s.relu for s in stages] == [True, True, True, False]
    assert stages[0].post[0][0] == "maxpool2d" and stages[0].fan_in == 9
    x = _inputs()
    sim = Simulator(net)
    trace = sim.float_trace(x)
    # folded float weights reproduce the float network exactly (up to float rounding)
    np.testing.assert_allclose(trace[-1][1], net.forward(x.astype(np.float64)), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("spec, shape", [
    ("conv4x3p1-bn-relu-maxpool2-conv8x3s2-relu-fc16-bn-relu-dropout50-fc10", (1, 8, 8)),
    ("dropout10-conv3x3p1-avgpool2-fc10", (2, 6, 6)),
    ("fc12-tanh-fc10", (3, 4, 4)),  # a flatten before the first Dense
])
def test_a_stage_knows_its_shapes_and_counts(spec, shape):
    """Stage is THE record of a compute layer: its shapes and per-image counts are the float trace's."""
    net = _net(spec, shape)
    sim = Simulator(net)
    x = _inputs(2, shape)
    h = x
    for s, (kernel_out, stage_out) in zip(sim.stages, sim.float_trace(x)):
        assert s.in_shape == (h.shape[1:] if s.kind == "conv2d" else (h[0].size,))  # Dense: flat input
        assert (s.out_shape, s.stage_out_shape) == (kernel_out.shape[1:], stage_out.shape[1:])
        assert (s.inputs, s.kernel_outputs, s.outputs) == (h[0].size, kernel_out[0].size, stage_out[0].size)
        assert s.weights == s.W.size and s.macs == s.fan_in * kernel_out[0].size
        assert s.out_channels == kernel_out.shape[1]
        h = stage_out
    bare = replace(sim.stages[0], in_shape=None)
    with pytest.raises(FxpsimError, match="weights only.*in_shape"):
        bare.inputs


def test_profiles_derive_from_the_stages():
    """A LayerProfile holds its stage: name, fan-in and weight ranges come from it, not a copy."""
    net = _net("conv4x3p1-bn-relu-maxpool2-fc10")
    sim = Simulator(net)
    prof = profile(sim, _inputs(20))
    for p, s in zip(prof, sim.stages):
        assert p.stage is s and (p.name, p.fan_in) == (s.name, s.fan_in)
        assert (p.max_abs_w, p.max_abs_b) == (float(np.abs(s.W).max()), float(np.abs(s.b).max()))
    assert "conv1" in repr(prof[0]) and "W(" in repr(sim.stages[0])  # no array dumps


def test_wide_formats_reproduce_the_float_network():
    net = _net("conv4x3p1-bn-relu-avgpool2-fc16-relu-fc10")
    x = _inputs(200)
    sim = Simulator(net)
    prof = profile(sim, x)
    cfg = wide_config(prof, frac_bits=16)
    res = sim.simulate(x, cfg)
    float_logits = net.forward(x.astype(np.float64))
    np.testing.assert_allclose(res.logits, float_logits, atol=2e-3)
    assert np.mean(res.predictions == float_logits.argmax(1)) >= 0.99
    assert all(s.overflow_count == 0 for s in res.layer_stats)


@pytest.mark.parametrize("overflow", ["wrap", "clip"])
def test_simulation_equals_python_int_reference(overflow):
    net = _net("conv3x3p1-bn-relu-maxpool2-fc12-relu-fc10", seed=5)
    x = _inputs(3, seed=9)
    sim = Simulator(net)
    prof = profile(sim, x)
    cfg = config_from_profile(prof, weight_bits=6, data_bits=6, acc_bits=9, overflow=overflow)
    fast = sim.simulate(x, cfg)
    slow = Simulator(net, backend=reference).simulate(x, cfg)
    np.testing.assert_array_equal(fast.logits, slow.logits)
    np.testing.assert_array_equal(fast.predictions, slow.predictions)
    assert fast.layer_stats == slow.layer_stats
    assert sum(s.overflow_count for s in fast.layer_stats) > 0  # the narrow accumulator did overflow


def test_evaluator_cache_gives_the_same_answers():
    net = _net("fc32-relu-fc16-relu-fc10", shape=(64,))
    x = _inputs(100, shape=(64,))
    y = np.random.default_rng(0).integers(0, 10, 100)
    sim = Simulator(net)
    prof = profile(sim, x)
    ev = Evaluator(sim, x, y)
    cfg = config_from_profile(prof, weight_bits=5, data_bits=5, acc_bits=12, overflow="clip")
    first = ev.accuracy(cfg)
    for i in range(3):
        ev.accuracy(cfg.with_layer(i, acc_bits=10))
    assert ev.accuracy(cfg) == first == sim.simulate(x, cfg, y).accuracy


def test_a2q_after_a_plain_config_of_the_same_formats_gets_its_own_weights():
    """Issue 13: the weight cache keyed on (i, fmt_w, fmt_x, acc_bits, overflow, rounding), no a2q.

    Through one shared Evaluator, an A2Q config after the plain config of the same formats
    reused the unshrunk weights; it must equal a fresh Evaluator, stage by stage, bit for bit.
    """
    model = load_model(MODELS / "digits-cnn.npz")
    data = load_dataset("digits")
    x, y = data.x_train[:150], data.y_train[:150]
    sim = Simulator(model)
    search_ev = Evaluator(sim, x, y)
    a2q, choices = accumulator_search(search_ev, profile(sim, search_ev.x, prepared=True), 16, "a2q", "wrap")
    assert any(ch.candidate.violating_channels for ch in choices)  # A2Q shrinks some channel here
    plain = a2q.with_all(a2q=False)
    shared = Evaluator(sim, x, y)
    fresh = Evaluator(sim, x, y)
    plain_out = shared.stage_outputs(plain)
    shared_out, fresh_out = shared.stage_outputs(a2q), fresh.stage_outputs(a2q)
    assert any(np.any(p[0] != f[0]) for p, f in zip(plain_out, fresh_out))  # A2Q changes the outputs
    for (s_k, s_y, s_st), (f_k, f_y, f_st) in zip(shared_out, fresh_out):
        np.testing.assert_array_equal(s_k, f_k)
        np.testing.assert_array_equal(s_y, f_y)
        assert s_st == f_st
    assert [shared.layer_error(a2q, i) for i in range(len(a2q))] == [
        fresh.layer_error(a2q, i) for i in range(len(a2q))]
    assert shared.accuracy(a2q) == fresh.accuracy(a2q)


def test_config_json_round_trip_and_mismatch(tmp_path):
    net = _net("fc16-relu-fc10", shape=(64,))
    sim = Simulator(net)
    cfg = config_from_profile(profile(sim, _inputs(20, shape=(64,))), acc_bits=24, overflow="clip")
    path = cfg.save(tmp_path / "c.json")
    assert NetworkConfig.load(path) == cfg
    with pytest.raises(FxpsimError, match="compute layers"):
        sim.check_config(NetworkConfig(cfg.layers[:1]))
    bad = cfg.with_layer(0, name="conv1")
    with pytest.raises(FxpsimError, match="does not match"):
        sim.check_config(bad)
    (tmp_path / "x.json").write_text("{\"layers\": []}")
    with pytest.raises(FxpsimError, match="not an fxpsim configuration"):
        NetworkConfig.load(tmp_path / "x.json")
    with pytest.raises(FxpsimError, match="acc_bits"):
        LayerConfig("fc1", QFormat(1, 7), QFormat(1, 7), QFormat(1, 7), acc_bits=70)


def test_unmappable_layers_are_named():
    net = _net("fc16-relu-bn-fc10", shape=(64,))
    with pytest.raises(FxpsimError, match="no integer mapping"):
        build_stages(net)


def test_outputs_outside_their_format_are_counted_per_layer():
    net = _net("fc16-relu-fc10", shape=(64,))
    x = _inputs(50, shape=(64,))
    sim = Simulator(net)
    cfg = config_from_profile(profile(sim, x), acc_bits=40, overflow="clip")
    assert all(s.outputs_out_of_format == 0 for s in sim.simulate(x, cfg).layer_stats)
    narrow = cfg.with_layer(0, fmt_y=QFormat(1, 6)).with_layer(1, fmt_x=QFormat(1, 6))
    stats = sim.simulate(x, narrow).layer_stats
    assert stats[0].outputs_out_of_format > 0 and stats[0].out_max <= QFormat(1, 6).max_value


# ---------------------------------------------------------------- engines per stage (issue 13 item 3)

@pytest.fixture(scope="module")
def digits():
    return load_dataset("digits")


def _narrow_config(sim, digits, overflow):
    """8-bit formats, 12-bit accumulators: every model overflows in its first layer."""
    return config_from_profile(profile(sim, digits.x_train[:200]), weight_bits=8, data_bits=8, acc_bits=12,
                               overflow=overflow)


def _engine_cases():
    for name in ("digits-mlp", "digits-cnn"):
        for overflow in ("wrap", "clip", "ideal"):
            yield name, overflow, "sparse", dict(pes=4, index_bits=2)
        for overflow in ("wrap", "ideal"):
            yield name, overflow, "bitserial", dict(lanes=16)
        yield name, "wrap", "bitserial", dict(lanes=3, msb_first=1, brick_order="stripes")
        yield name, "clip", "bitserial", dict(lanes=1)  # unsigned inputs (stage 0 stays dense)


@pytest.mark.parametrize("name, overflow, engine, options", list(_engine_cases()))
def test_every_engine_equals_the_dense_run_where_the_semantics_say_so(digits, name, overflow, engine, options):
    """Sparse: always bit-identical; bit-serial: wrap/ideal always, clip with unsigned activations and
    lanes=1. Logits, every stage's raw kernel and stage outputs (also through an Evaluator), and the
    statistics are equal, but those of each engine's own sequence of additions: ``additions`` (sparse
    skips zero terms) and, bit-serial, ``overflow_count``/``outputs_affected`` (one addition per bit)."""
    sim = Simulator(load_model(MODELS / f"{name}.npz"))
    dense = _narrow_config(sim, digits, overflow)
    layers = None
    if engine == "bitserial" and overflow == "clip":
        dense = unsigned_inputs(dense, nonnegative_inputs(sim.stages))
        layers = dense.names[1:]  # the first layer's input is signed (standardized pixels)
        assert all(not c.fmt_x.signed for c in dense.layers[1:])
    cfg = dense.with_engine(engine, layers, **options)
    assert all(sim.engines[c.engine].equals_dense(c) for c in cfg)
    cmp = sim.compare(digits.x_test, cfg, dense, digits.y_test, batch_size=300)  # two batches
    np.testing.assert_array_equal(cmp.result.logits, cmp.reference.logits)
    assert cmp.logits_identical and cmp.images_differing == 0
    assert all(a.outputs_equal == a.outputs > 0 for a in cmp.stages)
    assert cmp.result.accuracy == cmp.reference.accuracy
    own = dict(additions=0) if engine == "sparse" else dict(additions=0, overflow_count=0, outputs_affected=0)
    for got, want, c in zip(cmp.result.layer_stats, cmp.reference.layer_stats, cfg):
        if c.engine != "dense":
            got, want = replace(got, **own), replace(want, **own)
        assert got == want
    overflows = sum(s.overflow_count for s in cmp.reference.layer_stats)
    assert overflows > 0 if overflow != "ideal" else overflows == 0
    kind = SparseLayerStats if engine == "sparse" else BitSerialCycles
    ran = [c.engine != "dense" for c in cfg]
    assert [isinstance(e, kind) for e in cmp.result.engine_extras] == ran
    assert [e is None for e in cmp.reference.engine_extras] == [True] * len(cfg)
    for got, want, on in zip(cmp.result.layer_stats, cmp.reference.layer_stats, ran):
        assert (got.additions != want.additions) == on  # the engine's own count: it did run
    x, y = digits.x_test[:120], digits.y_test[:120]
    for (ek, ey, es), (dk, dy, ds) in zip(Evaluator(sim, x, y).stage_outputs(cfg),
                                          Evaluator(sim, x, y).stage_outputs(dense)):
        np.testing.assert_array_equal(ek, dk)
        np.testing.assert_array_equal(ey, dy)
        if es.extras is not None:
            es, ds = replace(es, **own), replace(ds, **own)
        assert es == ds


def test_bit_serial_clip_of_signed_bricks_may_differ_and_is_counted(digits):
    """Clip with signed activations and lanes > 1 adds other partial sums: outputs can differ, and the
    comparison counts them per stage (the semantics do not promise equality here)."""
    sim = Simulator(load_model(MODELS / "digits-mlp.npz"))
    dense = _narrow_config(sim, digits, "clip")
    cfg = dense.with_engine("bitserial", lanes=16)
    assert not sim.engines["bitserial"].equals_dense(cfg[0])
    cmp = sim.compare(digits.x_test, cfg, dense, digits.y_test)
    assert not cmp.logits_identical and cmp.images_differing > 0
    assert 0 < cmp.stages[0].outputs_equal < cmp.stages[0].outputs
    assert cmp.stages[0].engine == "bitserial"


def test_a_stage_the_evaluator_cache_serves_keeps_its_engine_extras(digits):
    """The cycles ride in the stats of each stage output, so a cached stage reports the timing of
    the run that filled the cache: the same as a fresh simulation of the same images."""
    sim = Simulator(load_model(MODELS / "digits-cnn.npz"))
    cfg = _narrow_config(sim, digits, "wrap").with_engine("sparse", pes=8)
    x, y = digits.x_test[:100], digits.y_test[:100]
    ev = Evaluator(sim, x, y)
    first = [st.extras for _, _, st in ev.stage_outputs(cfg)]
    served = [st.extras for _, _, st in ev.stage_outputs(cfg)]  # every stage from the cache
    fresh = sim.simulate(x, cfg, y).engine_extras
    for a, b, c in zip(first, served, fresh):
        assert a.record() == b.record() == c.record() and c.images == 100


def test_bit_serial_cycles_add_up_over_batches(digits):
    sim = Simulator(load_model(MODELS / "digits-cnn.npz"))
    cfg = _narrow_config(sim, digits, "wrap").with_engine("bitserial", lanes=4)
    one = sim.simulate(digits.x_test, cfg, batch_size=1000).engine_extras
    many = sim.simulate(digits.x_test, cfg, batch_size=100).engine_extras
    assert one == many
    for e, s, c in zip(one, sim.stages, cfg):
        k = s.fan_in
        assert e.cycles_per_output == -(-k // 4) * c.fmt_x.width  # ceil(K / lanes) * p
        assert e.sip_cycles == e.outputs * e.cycles_per_output


def test_sparse_engine_refuses_too_many_pes_before_allocating():
    net = build_network("fc2", (20000,), 2)
    sim = Simulator(net)
    cfg = NetworkConfig((LayerConfig("fc1", "Q1.7", "Q1.7", "Q4.4", 24).with_engine("sparse", pes=4096),))
    with pytest.raises(FxpsimError, match=r"layer fc1: pes=4096 x 20000 input columns need 1250 MiB .* use "
                                          r"fewer PEs"):
        sim.simulate(np.zeros((1, 20000)), cfg)


# ---------------------------------------------------------------- max_abs_prefix (DESIGN.md, on request)

def _stage_inputs(sim, x, cfg):
    """Per stage, its raw kernel inputs in ``fmt_x`` (the Simulator's own chaining)."""
    h = quantize(sim.prepare(x), cfg[0].fmt_x, cfg[0].rounding, "clip", sim.seed)
    inputs = []
    for i, c in enumerate(cfg):
        if i > 0:
            h = convert_raw(h, cfg[i - 1].fmt_y, c.fmt_x, c.rounding, sim.seed)
        inputs.append(h)
        h = sim.run_stage(i, h, c)[1]
    return inputs


@pytest.mark.parametrize("overflow", ["clip", "wrap"])
def test_prefix_stats_are_the_dense_datapaths_on_each_stages_raw_inputs(digits, overflow):
    """simulate(prefix_stats=True): per stage, max over batches of fxpsim.datapath.dense's exact
    max_abs_prefix on the stage's raw inputs; the Python-int twin agrees; prefixes include the final
    sum, so max_abs_prefix >= max_abs_acc. Without the flag the field is None and the table unchanged."""
    sim = Simulator(load_model(MODELS / "digits-cnn.npz"))
    cfg = _narrow_config(sim, digits, overflow)
    x = digits.x_test[:300]
    got = sim.simulate(x, cfg, batch_size=150, prefix_stats=True).layer_stats  # two batches
    for s, c, h, st in zip(sim.stages, cfg, _stage_inputs(sim, x, cfg), got):
        w, b = sim.quantized_params(sim.stages.index(s), c)
        if s.kind == "dense":
            want = dense_datapath.dense(h.reshape(len(h), -1), w, b, c, prefix_stats=True)
        else:
            want = dense_datapath.conv2d(h, w, b, c, stride=s.stride, padding=s.padding, prefix_stats=True)
        assert st.max_abs_prefix == want.stats.max_abs_prefix >= st.max_abs_acc
    plain = sim.simulate(x, cfg, batch_size=150)
    assert [replace(s, max_abs_prefix=None) for s in got] == plain.layer_stats
    assert all(s.max_abs_prefix is None for s in plain.layer_stats)
    assert "max_abs_prefix_lsb" not in plain.stats_table().columns
    assert list(sim.simulate(x[:5], cfg, prefix_stats=True).stats_table().columns) == \
        list(plain.stats_table().columns) + ["max_abs_prefix_lsb"]
    twin = Simulator(sim.model, backend=reference).simulate(x[:5], cfg, prefix_stats=True).layer_stats
    assert twin == sim.simulate(x[:5], cfg, prefix_stats=True).layer_stats


def test_a_clip_register_of_max_abs_prefix_bits_never_saturates(digits):
    """max_abs_prefix sizes an exact clip accumulator: BW_acc = its bit length + 1 gives no overflow
    and the wide run's logits."""
    sim = Simulator(load_model(MODELS / "digits-cnn.npz"))
    wide = _narrow_config(sim, digits, "clip")
    for i in range(len(wide)):
        wide = wide.with_layer(i, acc_bits=40)
    x = digits.x_test[:200]
    ref = sim.simulate(x, wide, prefix_stats=True)
    assert all(s.overflow_count == 0 for s in ref.layer_stats)
    exact = wide
    for i, s in enumerate(ref.layer_stats):
        exact = exact.with_layer(i, acc_bits=s.max_abs_prefix.bit_length() + 1)
    res = sim.simulate(x, exact, prefix_stats=True)
    assert all(s.overflow_count == 0 for s in res.layer_stats)
    np.testing.assert_array_equal(res.logits, ref.logits)
    assert [s.max_abs_prefix for s in res.layer_stats] == [s.max_abs_prefix for s in ref.layer_stats]


def test_prefix_stats_on_the_sparse_engine_equal_dense_and_bit_serial_refuses(digits):
    """Sparse adds in the dense order (zero terms left out): the same max_abs_prefix, also through an
    Evaluator; bit-serial adds per activation bit and refuses, in one line naming the fix."""
    sim = Simulator(load_model(MODELS / "digits-cnn.npz"))
    dense = _narrow_config(sim, digits, "clip")
    x, y = digits.x_test[:150], digits.y_test[:150]
    cmp = sim.compare(x, dense.with_engine("sparse", pes=4), dense, y, prefix_stats=True)
    got = [s.max_abs_prefix for s in cmp.result.layer_stats]
    assert None not in got and got == [s.max_abs_prefix for s in cmp.reference.layer_stats]
    ev = Evaluator(sim, x, y, prefix_stats=True)
    assert [st.max_abs_prefix for _, _, st in ev.stage_outputs(dense.with_engine("sparse", pes=4))] == got
    serial = dense.with_engine("bitserial", [dense.names[-1]], lanes=1)
    for run in (lambda: sim.simulate(x, serial, prefix_stats=True),
                lambda: Evaluator(sim, x, y, prefix_stats=True).accuracy(serial)):
        with pytest.raises(FxpsimError, match=rf"^layer {dense.names[-1]}: engine bitserial cannot give "
                                              r"max_abs_prefix exactly .*: run that layer on engine dense") as e:
            run()
        assert "\n" not in str(e.value)
    with pytest.raises(FxpsimError, match="prefix_stats='yes' is not a bool"):
        sim.simulate(x, dense, prefix_stats="yes")


def test_sparse_simulator_passes_prefix_stats_through():
    """SparseSimulator.simulate asks its stages for max_abs_prefix like the Simulator does."""
    from fxpsim.sparse.netsim import SparseSimulator

    model = load_model(MODELS / "digits-mlp.npz")
    data = load_dataset("digits")
    sim = Simulator(model)
    prof = profile(sim, data.x_train[:50])
    cfg = config_from_profile(prof, 8, 8, acc_bits=20, overflow="clip")
    dense_run = sim.simulate(data.x_test[:20], cfg, prefix_stats=True)
    sparse_run = SparseSimulator(model, 4, 4).simulate(data.x_test[:20], cfg, prefix_stats=True)
    assert [s.max_abs_prefix for s in sparse_run.layer_stats] == [s.max_abs_prefix for s in dense_run.layer_stats]
    assert all(s.max_abs_prefix is not None for s in sparse_run.layer_stats)
