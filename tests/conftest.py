"""Shared test set-up: the hypothesis profile and the path to shared data."""

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile(
    "fxpsim",
    deadline=None,
    derandomize=True,  # fixed seed: the same examples on every run
    max_examples=int(os.environ.get("FXPSIM_HYPOTHESIS_EXAMPLES", "100")),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)
settings.load_profile("fxpsim")

MNIST_DIR = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


@pytest.fixture
def mnist_dir() -> Path:
    """The full MNIST beside the checkout (as in CI), or skip with the reason."""
    if not (MNIST_DIR / "train-images-idx3-ubyte.gz").exists():
        pytest.skip(f"full MNIST not found at {MNIST_DIR}")
    return MNIST_DIR
