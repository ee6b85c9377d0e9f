"""The architecture zoo: named architectures as spec strings for an input shape and class count.

``ARCHITECTURES[name] = (function(input_shape, n_classes) -> spec string, description)``;
:func:`fxpsim.graph.spec.resolve_spec` looks names up here.
"""

from __future__ import annotations

import numpy as np


def _mlp(input_shape, n_classes):
    size = int(np.prod(input_shape))
    return _lenet300(input_shape, n_classes) if size >= 256 else _mlp_small(input_shape, n_classes)


def _lenet300(input_shape, n_classes):
    return f"fc300-relu-fc100-relu-fc{n_classes}"


def _mlp_small(input_shape, n_classes):
    return f"fc64-relu-fc32-relu-fc{n_classes}"


def _lenet5(input_shape, n_classes):
    return f"conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-fc120-relu-fc84-relu-fc{n_classes}"


def _lenet5_caffe(input_shape, n_classes):
    return f"conv20x5-maxpool2-conv50x5-maxpool2-fc500-relu-fc{n_classes}"


def _cnn_small(input_shape, n_classes):
    return f"conv16x3p1-relu-maxpool2-conv32x3p1-relu-maxpool2-fc{n_classes}"


ARCHITECTURES = {
    "mlp": (_mlp, "lenet300 for inputs of >= 256 values (28x28 MNIST), else mlp-small"),
    "lenet300": (_lenet300, "LeNet-300-100: fc300-relu-fc100-relu-fc<n> (Han et al. 2015)"),
    "mlp-small": (_mlp_small, "fc64-relu-fc32-relu-fc<n>, for 8x8 digits"),
    "lenet5": (_lenet5, "LeCun's LeNet-5 on 28x28: conv6x5-relu-maxpool2-conv16x5-relu-maxpool2-"
                        "fc120-relu-fc84-relu-fc<n>"),
    "lenet5-caffe": (_lenet5_caffe, "Caffe's LeNet (the 'LeNet-5' of Han et al.): conv20x5-maxpool2-"
                                    "conv50x5-maxpool2-fc500-relu-fc<n>, 431k weights"),
    "cnn-small": (_cnn_small, "for 8x8 digits: conv16x3p1-relu-maxpool2-conv32x3p1-relu-maxpool2-fc<n>, "
                              "6k weights (98.9-99.2 % on a digits test split in a quick Adam run)"),
}
