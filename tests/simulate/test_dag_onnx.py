"""ONNX import of a residual network (Add of two tensors, Concat, GlobalAveragePool, grouped and depthwise
Conv, Clip(0, 6)) against onnxruntime; built with onnx.helper, no torch."""

import numpy as np
import pytest

pytest.importorskip("onnxruntime")

from fxpsim.errors import FxpsimError
from fxpsim.interop.onnx_import import import_onnx
from fxpsim.simulate import Simulator, profile
from fxpsim.sweep import wide_config
from fxpsim.train.data import load_dataset
from interop.onnx_models import graph_model, node, ort_run, save, tensor

SCALE = 1 / 16


def residual_onnx(seed=0, pool="GlobalAveragePool"):
    rng = np.random.default_rng(seed)
    w = lambda *shape: rng.normal(0, np.sqrt(2 / np.prod(shape[1:])), shape)  # noqa: E731
    inits = [tensor("w1", w(4, 1, 3, 3)), tensor("b1", rng.normal(0, 0.1, 4)),
             tensor("w2", w(4, 2, 3, 3)), tensor("b2", rng.normal(0, 0.1, 4)),   # group 2
             tensor("w3", w(4, 1, 3, 3)), tensor("b3", rng.normal(0, 0.1, 4)),   # depthwise
             tensor("w4", w(2, 4, 1, 1)), tensor("b4", rng.normal(0, 0.1, 2)),
             tensor("wf", w(6, 10) / 2), tensor("bf", rng.normal(0, 0.1, 10)),
             tensor("lo", np.float32(0)), tensor("hi", np.float32(6))]
    nodes = [node("Conv", ["x", "w1", "b1"], ["c1"], pads=[1, 1, 1, 1]), node("Relu", ["c1"], ["a"]),
             node("Conv", ["a", "w2", "b2"], ["c2"], pads=[1, 1, 1, 1], group=2), node("Relu", ["c2"], ["r2"]),
             node("Conv", ["r2", "w3", "b3"], ["c3"], pads=[1, 1, 1, 1], group=4),
             node("Add", ["a", "c3"], ["d"]), node("Clip", ["d", "lo", "hi"], ["e"]),
             node("Conv", ["e", "w4", "b4"], ["f"]), node("Concat", ["e", "f"], ["g"], axis=1),
             node(pool, ["g"], ["h"]), node("Flatten", ["h"], ["hf"]), node("Gemm", ["hf", "wf", "bf"], ["y"])]
    return graph_model(nodes, inits, [1, 8, 8])


def test_residual_onnx_equals_onnxruntime_float_and_wide_fixed_point(tmp_path):
    m = residual_onnx()
    imp = import_onnx(save(m, tmp_path / "res.onnx"), dataset="digits", input_scale=SCALE)
    net = imp.model.network
    assert net.is_dag and [layer.kind for layer in net.layers].count("add") == 1
    assert [getattr(layer, "groups", 1) for layer in net.layers if layer.kind == "conv2d"] == [1, 2, 4, 1]
    digits = load_dataset("digits")
    x = digits.x_test
    ref = ort_run(m, (x * SCALE).astype(np.float32))
    got = net.forward(imp.model.preprocess.apply(x))
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5)
    sim = Simulator(imp.model)
    res = sim.simulate(x, wide_config(profile(sim, x), frac_bits=20))
    assert np.array_equal(res.predictions, ref.argmax(1))
    assert np.abs(res.logits - ref).max() <= 2.0 ** -12


def test_join_of_a_constant_or_wrong_axis_is_refused(tmp_path):
    m = residual_onnx()
    cat = next(n for n in m.graph.node if n.op_type == "Concat")
    cat.attribute[0].i = 2
    with pytest.raises(FxpsimError, match="Concat\\(axis=2\\): fxpsim joins along channels"):
        import_onnx(save(m, tmp_path / "bad.onnx"), dataset="digits")
