"""QCDQ import and the Brevitas fixtures (issue 15, items 2-3 and 5).

- the committed Brevitas fixtures (``make_brevitas_fixtures.py``; Brevitas is not needed here):
  fxpsim's integer run of each import equals Brevitas' own outputs bit for bit (ideal
  accumulators, as QONNX computes), and the QONNX and QCDQ exports of one network import to the
  same model and config, narrow weight formats included;
- QCDQ groups built with ``onnx.helper``: the formats they map to (Clip widths, narrow), the
  same config as the QONNX twin, and each refusal one line naming the node.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from onnx import numpy_helper

from fxpsim import FxpsimError
from fxpsim.interop.onnx_import import import_onnx
from fxpsim.interop.qcdq import clip_width
from fxpsim.simulate import Simulator

from .onnx_models import graph_model, node, qcdq, quant, save, tensor

FIXTURES = Path(__file__).with_name("fixtures")
NAMES = ("brevitas_mlp", "brevitas_cnn")
FORMATS = {"brevitas_mlp": [("UQ0.8", "Q2.6n", "UQ3.3"), ("UQ3.3", "Q2.6", "Q6.2")],
           "brevitas_cnn": [("UQ0.8", "Q2.6", "UQ3.5"), ("UQ3.5", "Q2.4n", "Q5.3")]}


def _fixture(name: str, kind: str):
    return import_onnx(FIXTURES / f"{name}_{kind}.onnx", dataset="digits", input_scale=1 / 16)


@pytest.mark.parametrize("kind", ["qonnx", "qcdq"])
@pytest.mark.parametrize("name", NAMES)
def test_brevitas_fixture_runs_bit_identical_to_brevitas(name, kind):
    imp = _fixture(name, kind)
    assert [(str(c.fmt_x), str(c.fmt_w), str(c.fmt_y)) for c in imp.config] == FORMATS[name]
    assert imp.model.metadata["source"]["format"] == kind and imp.notes == ()
    x = np.load(FIXTURES / f"{name}_in.npy", allow_pickle=False)
    want = np.load(FIXTURES / f"{name}_out.npy", allow_pickle=False)
    images = (x.astype(np.float64) * 16).reshape(-1, 1, 8, 8)  # the digits pixels the model read / 16
    got = Simulator(imp.model).simulate(images, imp.config).logits
    np.testing.assert_array_equal(got, want.astype(np.float64))
    assert len(np.unique(want)) > 20 and (want.argmax(1) == got.argmax(1)).all()


@pytest.mark.parametrize("name", NAMES)
def test_qonnx_and_qcdq_exports_import_to_the_same_model_and_config(name):
    a, b = _fixture(name, "qonnx"), _fixture(name, "qcdq")
    assert a.config == b.config
    la, lb = a.model.network.layers, b.model.network.layers
    assert [type(v).__name__ for v in la] == [type(v).__name__ for v in lb]
    for u, v in zip(la, lb):
        assert u.params.keys() == v.params.keys()
        for k in u.params:
            np.testing.assert_array_equal(u.params[k], v.params[k])


# --------------------------------------------------------------------------- QCDQ groups from onnx.helper

def _mlp(make_in, make_w=None):
    """Input quantizer ``make_in`` (Quant or QCDQ), a MatMul 64 -> 10 with an int8 weight."""
    rng = np.random.default_rng(0)
    w_int = rng.integers(-127, 128, (64, 10)).astype(np.int8)
    nodes, inits = make_in
    nodes = nodes if isinstance(nodes, list) else [nodes]
    if make_w is None:  # Brevitas' weights: an int8 initializer [Clip] DequantizeLinear
        inits = [*inits, numpy_helper.from_array(w_int, "W_int"), tensor("W_s", np.array(2.0 ** -7, np.float32)),
                 numpy_helper.from_array(np.array(0, np.int8), "W_zp")]
        nodes = [*nodes, node("DequantizeLinear", ["W_int", "W_s", "W_zp"], ["Wq"], name="w_dq")]
    else:
        wq, wi = make_w
        inits = [*inits, *wi, tensor("W", w_int.astype(np.float32) / 128)]
        nodes = [*nodes, wq]
    return graph_model([*nodes, node("MatMul", ["h", "Wq"], ["y"], name="fc")], inits, [64])


def test_qcdq_groups_map_to_formats_and_match_their_qonnx_twin(tmp_path):
    for bits, signed, fmt in ((8, False, "UQ1.7"), (5, False, "UQ-2.7"), (6, True, "Q-1.7")):
        cd = import_onnx(save(_mlp(qcdq("q_in", "x", "h", 7, bits, signed)), tmp_path / "c.onnx"))
        qo = import_onnx(save(_mlp(quant("q_in", "x", "h", 7, bits, signed),
                                   quant("q_w", "W", "Wq", 7, 8, True)), tmp_path / "q.onnx"))
        assert str(cd.config[0].fmt_x) == fmt and cd.config == qo.config
        np.testing.assert_array_equal(cd.model.network.layers[1].params["W"], qo.model.network.layers[1].params["W"])


@pytest.mark.parametrize("lo, hi, signed, want", [(-128, 127, True, (8, False)), (-127, 127, True, (8, True)),
                                                  (-4, 3, True, (3, False)), (-3, 3, True, (3, True)),
                                                  (-1, 0, True, (1, False)), (0, 255, False, (8, False)),
                                                  (0, 62, False, (6, True)), (0, 2, False, (2, True)),
                                                  (0, 1, False, (1, False))])
def test_clip_bounds_give_width_and_narrow(lo, hi, signed, want):
    assert clip_width("n", lo, hi, 8, signed) == want


@pytest.mark.parametrize("lo, hi, signed", [(0, 5, False), (-100, 127, True), (0, 0, False), (-2, 3, True),
                                            (1, 255, False), (-256, 255, True)])
def test_other_clip_bounds_are_refused(lo, hi, signed):
    with pytest.raises(FxpsimError, match=rf"node c: Clip\({lo}, {hi}\) on .* not a Q-format"):
        clip_width("node c", lo, hi, 8, signed)


def _refused(tmp_path, model, match):
    with pytest.raises(FxpsimError, match=match) as exc:
        import_onnx(save(model, tmp_path / "bad.onnx"))
    assert "\n" not in str(exc.value)


def _with_input_qcdq(scale=2.0 ** -7, zp=0, clip=None, dq_scale=None):
    np_t = np.uint8
    inits = [tensor("s", np.array(scale, np.float32)), numpy_helper.from_array(np.array(zp, np_t), "zp"),
             tensor("s2", np.array(scale if dq_scale is None else dq_scale, np.float32))]
    nodes = [node("QuantizeLinear", ["x", "s", "zp"], ["q"], name="in_ql")]
    q = "q"
    if clip is not None:
        inits += [numpy_helper.from_array(np.array(v, np_t), n) for v, n in zip(clip, ("lo", "hi"))]
        nodes.append(node("Clip", ["q", "lo", "hi"], ["qc"], name="in_clip"))
        q = "qc"
    nodes.append(node("DequantizeLinear", [q, "s2", "zp"], ["h"], name="in_dq"))
    return nodes, inits


def test_refused_qcdq(tmp_path):
    _refused(tmp_path, _mlp(_with_input_qcdq(scale=0.0173)),
             r"node in_ql \(QuantizeLinear\): scale 0\.0173 is not a power of two: not a Q-format")
    _refused(tmp_path, _mlp(_with_input_qcdq(zp=3)), r"node in_ql \(QuantizeLinear\): zero point 3 is not 0")
    _refused(tmp_path, _mlp(_with_input_qcdq(dq_scale=2.0 ** -6)), r"node in_ql \(QuantizeLinear\): scale 0\.007812 "
                                                                    r"differs from its node in_dq")
    _refused(tmp_path, _mlp(_with_input_qcdq(clip=(0, 100))), r"node in_clip \(Clip\): Clip\(0, 100\)")
    lone = graph_model([node("QuantizeLinear", ["x", "s", "zp"], ["y"], name="ql")],
                       [tensor("s", np.array(0.5, np.float32)), numpy_helper.from_array(np.array(0, np.int8), "zp")],
                       [64])
    _refused(tmp_path, lone, r"node ql \(QuantizeLinear\): no DequantizeLinear after it: .*integer ops "
                             r"\(QLinear\*, \*Integer\) are not imported")
    bipolar = _mlp((node("BipolarQuant", ["x", "bs"], ["h"], name="bq", domain="qonnx.custom_op.general"),
                    [tensor("bs", np.array(1.0, np.float32))]))
    _refused(tmp_path, bipolar, r"node bq \(BipolarQuant\): BipolarQuant \(binary layers\) is not imported")
    trunc = _mlp((node("Trunc", ["x", "ts", "tz", "tin", "tout"], ["h"], name="tr", domain="qonnx.custom_op.general",
                       rounding_mode="FLOOR"),
                  [tensor(n, np.array(v, np.float32)) for n, v in (("ts", 2.0 ** -7), ("tz", 0.0), ("tin", 10.0),
                                                                   ("tout", 8.0))]))
    _refused(tmp_path, trunc, r"node tr \(Trunc\): QONNX Trunc .* is not imported: export a plain AveragePool "
                              r"with a Quant after it")


def test_readme_brevitas_commands_run_as_written(tmp_path, monkeypatch, capsys):
    """README's "From PyTorch / Brevitas" commands, line for line (run from the repository's paths)."""
    from fxpsim.cli import main

    readme = (Path(__file__).resolve().parents[2] / "README.md").read_text()
    block = readme.split("### From PyTorch / Brevitas", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    lines = [line.split("#", 1)[0].split() for line in block.strip().splitlines()]
    assert len(lines) == 4 and all(cmd[0] == "fxpsim" for cmd in lines)
    monkeypatch.chdir(tmp_path)
    (tmp_path / "tests").symlink_to(Path(__file__).resolve().parents[1])
    for cmd in lines:
        assert main(cmd[1:]) == 0, cmd
    out = capsys.readouterr().out
    assert "qonnx: wrote 1 file" in out
    again = import_onnx(tmp_path / "back.onnx", dataset="digits")
    assert again.config == import_onnx(tmp_path / "back_qcdq.onnx", dataset="digits").config
    assert [str(c.fmt_w) for c in again.config] == ["Q2.6n", "Q2.6"]
