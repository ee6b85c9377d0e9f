"""The integer datapath engines (DESIGN.md), one module per engine, simple to complex.

- :mod:`.core`: what every engine shares: the call's checks (the
  LayerConfig itself is validated once, in its ``__post_init__``),
  requantization, the counter-based stochastic bits, im2col and conv
  geometry, the :class:`~.core.OverflowStats` record.
- :mod:`.dense`: the bit-parallel dense/conv engine (de Bruin et al., DSD
  2018) with its exact fast paths; :mod:`.jit` its Numba leaf kernels;
  :mod:`.reference` its plain-Python twin.
- :mod:`.sparse`: EIE's engine on a per-PE column schedule (Han et al.,
  ISCA 2016); :mod:`fxpsim.sparse.kernel` decodes the CSC format into it.
- :mod:`.xnor`: the XNOR-popcount kernels and the popcount helper (XNOR-Net,
  BNN); :mod:`fxpsim.binary.layers` validates and packs for them.
- :mod:`.bitserial`: Stripes' bit-serial inner products (Judd et al., MICRO 2016).

Engines take ``(x, w, b, cfg)`` with a :class:`~fxpsim.config.LayerConfig`
or the keyword form (``fmt_x=, fmt_w=, fmt_y=, acc_bits=, ...``).
Import the modules (``from fxpsim.datapath import dense``); this package
re-exports nothing, so ``fxpsim.datapath.dense`` stays the module.
"""
