"""Deep Compression's stages sized in EIE's CSC storage, and the PE cycles of :mod:`fxpsim.sparse.pipeline`."""

import numpy as np

from fxpsim.compress.sharing import kmeans_share
from fxpsim.qformat import QFormat
from fxpsim.sparse.csc import encode, storage
from fxpsim.sparse.kernel import sparse_dense
from fxpsim.sparse.pe import eie_matrix
from fxpsim.sparse.pipeline import compress_layer, network_stages, pe_cycles


def test_compress_layer_counts_bits_padding_and_huffman():
    rng = np.random.default_rng(3)
    w = rng.normal(size=(200, 12)) * (rng.random((200, 12)) < 0.05)  # long gaps: padding at 2 index bits
    m = eie_matrix(w)
    enc = encode(m, 2, 2)
    assert enc.n_padding > 0
    shared = kmeans_share(w, 4)
    lc = compress_layer("fc1", "dense", w, n_pes=2, index_bits=2, shared=shared, huffman=True)
    assert lc.padding_entries == enc.n_padding and lc.nonzeros == np.count_nonzero(w)
    assert lc.dense_bits == w.size * 32
    assert lc.pruned_bits == storage(enc, 32).total_bits
    assert lc.value_bits_shared == 3  # 4 clusters + the padding zero
    entries = enc.n_entries
    pointers = storage(enc, 32).pointer_total
    assert lc.shared_bits == entries * (3 + 2) + pointers + 4 * 32
    assert lc.huffman_bits <= lc.shared_bits
    stages = network_stages([lc])
    assert [s["stage"] for s in stages] == ["dense", "pruned", "shared", "huffman"]
    assert stages[0]["compression_rate"] == 1.0
    assert all(a["compression_rate"] < b["compression_rate"] for a, b in zip(stages, stages[1:]))


def test_pe_cycles_equal_the_sparse_kernel_timing():
    rng = np.random.default_rng(5)
    w = rng.integers(-100, 100, (64, 30)) * (rng.random((64, 30)) < 0.2)
    x = rng.integers(0, 50, (9, 64)) * (rng.random((9, 64)) < 0.5)
    enc = encode(eie_matrix(w), 4, 3)
    res = sparse_dense(x, enc, None, fmt_x=QFormat(8, 0), fmt_w=QFormat(8, 0), fmt_y=QFormat(16, 0),
                       acc_bits=32)
    cyc = pe_cycles(enc, x != 0)
    np.testing.assert_array_equal(cyc.sum(axis=0), res.pe.entries)
    assert int(cyc.max(axis=1).sum()) == res.pe.queued_cycles
