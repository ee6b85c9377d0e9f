"""Binary and ternary layers: bit packing, XNOR-popcount, BNN Algorithm 4, quantizers.

Methods: BinaryConnect (Courbariaux & Bengio, NIPS 2015), BNN (Courbariaux,
Hubara et al., NIPS 2016, incl. Algorithm 4), XNOR-Net / BWN (Rastegari et
al., ECCV 2016), TWN (Li et al. 2016), TTQ (Zhu et al., ICLR 2017).

Modules, simple to complex: ``popcount`` (the one popcount helper and the
width check), ``packing`` (64 values per uint64, +1 -> bit 1), ``kernels``
(Numba), ``layers`` (dense/conv, binary/ternary/bit-plane), ``bnn``
(BatchNorm -> threshold folding, fixed-point output BN, Algorithm 4),
``reference`` (float ±1 twins), ``quantizers`` (training-side functions).
"""

from .bnn import (
    BatchNormParams,
    BnnMlp,
    BnnResult,
    SignThreshold,
    batchnorm_fixed,
    batchnorm_float,
    bnn_mlp,
    fold_bn_sign,
    sign,
)
from .layers import (
    PAD_MODES,
    BinaryResult,
    bitplane_conv2d,
    bitplane_dense,
    im2col,
    ternary_conv2d,
    ternary_dense,
    xnor_conv2d,
    xnor_dense,
)
from .packing import (
    PackedBits,
    PackedWeights,
    bit_planes,
    pack_bits01,
    pack_signs,
    pack_ternary,
    pack_ternary_weights,
    pack_weights,
    unpack_signs,
    unpack_weights,
)
from .popcount import PopcountWidth, popcount64, popcount_array, popcount_bits, popcount_kernel, popcount_width
from .quantizers import (
    ScaledBinary,
    Ternary,
    binarize,
    binarize_stochastic,
    bwn_binarize,
    hard_sigmoid,
    ste_grad,
    ttq_grads,
    ttq_ternarize,
    twn_ternarize,
    xnor_input_scale,
)

__all__ = [
    "PAD_MODES", "BatchNormParams", "BinaryResult", "BnnMlp", "BnnResult", "PackedBits", "PackedWeights",
    "PopcountWidth", "ScaledBinary", "SignThreshold", "Ternary", "batchnorm_fixed", "batchnorm_float",
    "binarize", "binarize_stochastic", "bit_planes", "bitplane_conv2d", "bitplane_dense", "bnn_mlp",
    "bwn_binarize", "fold_bn_sign", "hard_sigmoid", "im2col", "pack_bits01", "pack_signs", "pack_ternary",
    "pack_ternary_weights", "pack_weights", "popcount64", "popcount_array", "popcount_bits",
    "popcount_kernel", "popcount_width", "sign", "ste_grad", "ternary_conv2d", "ternary_dense",
    "ttq_grads", "ttq_ternarize", "twn_ternarize", "unpack_signs", "unpack_weights", "xnor_conv2d",
    "xnor_dense", "xnor_input_scale",
]
