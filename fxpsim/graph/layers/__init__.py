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
GlobalAvgPool  ``dy / (H W)`` spread over each channel's map
Clip           ``dx = dy [lo < x < hi]`` (ReLU6: clip(0, 6))
Identity       ``dx = dy``
Add            ``dx_j = dy`` for every input (residual)
Concat         ``dx_j`` = the channel slice of ``dy`` input ``j`` filled
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
from .globalpool import GlobalAvgPool
from .clip import Clip, Identity
from .merge import Add, Concat, MergeLayer

__all__ = ["DEFAULT_DTYPE", "Add", "AvgPool2D", "BatchNorm", "Clip", "Concat", "Conv2D", "Dense", "Dropout",
           "Flatten", "GlobalAvgPool", "Identity", "Layer", "MaxPool2D", "MergeLayer", "ReLU", "Sigmoid", "Tanh",
           "as_float", "check_ndim"]
