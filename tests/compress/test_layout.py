"""fxpsim.compress is self-contained, and the old fxpsim.sparse.<module> paths re-export it unchanged."""

import importlib

import pytest

from test_imports import import_graph

MOVED = {"prune": ("apply_mask", "check_sparsity", "mask_sparsity", "sparsity_mask", "threshold_mask"),
         "sharing": ("SharedWeights", "centroid_gradients", "compression_rate", "kmeans_share", "index_bits"),
         "huffman": ("HuffmanCode", "huffman_code", "huffman_lengths"),
         "lowrank": ("LowRank", "multiplications", "truncated_svd"),
         "retrain": ("MaskHook", "PruneConfig", "iterative_prune", "select_layers", "sensitivity", "sparsity_of"),
         }
FINETUNE = ("SharingHook", "fine_tune_shared", "share_weights")


def test_compress_never_imports_sparse():
    """EIE's storage (fxpsim.sparse) may use compression, not the other way round: no cycle through the shims."""
    graph = import_graph(toplevel_only=False)
    mods = [m for m in graph if m == "fxpsim.compress" or m.startswith("fxpsim.compress.")]
    assert "fxpsim.compress.finetune" in mods
    for mod in mods:
        assert not any(t == "fxpsim.sparse" or t.startswith("fxpsim.sparse.") for t in graph[mod]), (mod, graph[mod])


@pytest.mark.parametrize("module", sorted(MOVED))
def test_old_paths_re_export_the_same_objects(module):
    old = importlib.import_module(f"fxpsim.sparse.{module}")
    new = importlib.import_module(f"fxpsim.compress.{module}")
    for name in MOVED[module]:
        assert getattr(old, name) is getattr(new, name), name
    assert set(old.__all__) >= set(MOVED[module])


def test_retrain_path_re_exports_the_sharing_fine_tune():
    old = importlib.import_module("fxpsim.sparse.retrain")
    new = importlib.import_module("fxpsim.compress.finetune")
    for name in FINETUNE:
        assert getattr(old, name) is getattr(new, name), name
