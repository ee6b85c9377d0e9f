"""The float layers with forward and backward (the Layer protocol: :mod:`.base`).

Backward formulas (lecture notes, backpropagation through each node):

=============  ================================================================
layer          gradient
=============  ================================================================
Dense          ``y = x W + b``: ``dW = x^T dy``, ``db = sum_i dy``, ``dx = dy W^T``
Conv2D         the same on im2col patches; ``dx`` by col2im (overlaps summed)
MaxPool2D      ``dy`` routed to the arg-max of each window (first on ties)
AvgPool2D      ``dy / k^2`` spread over each window
ReLU           ``dx = dy [x > 0]``
Tanh           ``dx = dy (1 - y^2)``
Sigmoid        ``dx = dy y (1 - y)``
BatchNorm      ``dx = (gamma / (m sigma)) (m dy - sum dy - x_hat sum(dy x_hat))``
Dropout        ``dx = dy * mask / (1 - p)`` (inverted dropout)
=============  ================================================================

Importing this package registers every kind below (in this order) in
:data:`fxpsim.graph.registry.LAYER_KINDS`.
"""

from .base import DEFAULT_DTYPE, Layer, as_float, check_ndim
from .dense import Dense
from .conv import Conv2D
from .pool import AvgPool2D, MaxPool2D
from .flatten import Flatten
from .activations import ReLU, Sigmoid, Tanh
from .batchnorm import BatchNorm
from .dropout import Dropout

__all__ = ["DEFAULT_DTYPE", "AvgPool2D", "BatchNorm", "Conv2D", "Dense", "Dropout", "Flatten", "Layer",
           "MaxPool2D", "ReLU", "Sigmoid", "Tanh", "as_float", "check_ndim"]
