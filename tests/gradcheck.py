"""Finite-difference gradients for the layer tests (the network's and the binary trainer's)."""

import numpy as np


def numeric_grad(f, arr, eps=1e-6):
    """Central differences of scalar ``f()`` w.r.t. every entry of ``arr`` (perturbed in place)."""
    grad = np.zeros_like(arr)
    it = np.nditer(arr, flags=["multi_index"])
    for _ in it:
        idx = it.multi_index
        old = arr[idx]
        arr[idx] = old + eps
        plus = f()
        arr[idx] = old - eps
        minus = f()
        arr[idx] = old
        grad[idx] = (plus - minus) / (2 * eps)
    return grad
