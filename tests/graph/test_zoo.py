"""The architecture zoo: every named architecture builds, with the papers' layer sizes."""

import numpy as np
import pytest

from fxpsim.errors import FxpsimError
from fxpsim.graph.build import build_network
from fxpsim.graph.layers import Conv2D, Flatten, MaxPool2D, ReLU
from fxpsim.graph.zoo import ARCHITECTURES


@pytest.mark.parametrize("name", sorted(ARCHITECTURES))
@pytest.mark.parametrize("input_shape", [(1, 8, 8), (1, 28, 28)])
def test_architectures_build_and_shapes(name, input_shape):
    if name == "lenet5" or name == "lenet5-caffe":
        if input_shape == (1, 8, 8):
            with pytest.raises(FxpsimError, match="does not fit"):
                build_network(name, input_shape, 10)
            return
    net = build_network(name, input_shape, 10, seed=0)
    x = np.zeros((2, *input_shape), dtype=np.float32)
    h = x
    for layer, shape_in, shape_out in zip(net.layers, net.shapes, net.shapes[1:]):
        assert h.shape[1:] == shape_in
        h = layer.forward(h)
        assert h.shape[1:] == shape_out == layer.output_shape(shape_in)
    assert h.shape == (2, 10)
    rebuilt = build_network(net.spec(), input_shape, 10, seed=0)
    assert [layer.config() for layer in rebuilt.layers] == [layer.config() for layer in net.layers]


def test_named_architectures():
    assert build_network("lenet5", (1, 28, 28), 10).spec() == (
        "conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-fc120-relu-fc84-relu-fc10")
    assert build_network("mlp", (1, 28, 28), 10).spec() == "fc300-relu-fc100-relu-fc10"
    assert build_network("mlp", (1, 8, 8), 10).spec() == "fc64-relu-fc32-relu-fc10"
    assert build_network("cnn-small", (1, 8, 8), 10).spec() == (
        "conv16x3p1-relu-maxpool2-conv32x3p1-relu-maxpool2-fc10")
    caffe = build_network("lenet5-caffe", (1, 28, 28), 10)
    assert sum(p.size for _, p, _ in caffe.params_and_grads()) == 431080  # Han et al.'s 431K
    lenet = build_network("LeNet5", (1, 28, 28), 10)
    assert [type(layer) for layer in lenet.layers][:7] == [Conv2D, ReLU, MaxPool2D, Conv2D, ReLU, MaxPool2D, Flatten]
    assert lenet.shapes[7] == (256,)
