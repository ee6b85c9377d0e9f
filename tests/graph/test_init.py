"""Weight initialisation: statistics of each scheme, fans, seeding."""

import numpy as np
import pytest

from fxpsim.errors import FxpsimError
from fxpsim.graph.build import build_network
from fxpsim.graph.init import INIT_SCHEMES, init_weight, parse_init


@pytest.mark.parametrize("scheme", INIT_SCHEMES)
def test_init_statistics(scheme):
    rng = np.random.default_rng(0)
    shape = (64, 32, 5, 5)  # fan_in 800, fan_out 1600
    w = init_weight(shape, scheme, rng)
    expected_std = {"small": 0.01, "xavier-uniform": np.sqrt(6 / 2400) / np.sqrt(3),
                    "xavier-normal": 1 / np.sqrt(800), "he": np.sqrt(2 / 800)}[scheme]
    assert w.std() == pytest.approx(expected_std, rel=0.02)
    assert abs(w.mean()) < 0.02 * expected_std * 10
    if scheme == "xavier-uniform":
        assert np.abs(w).max() <= np.sqrt(6 / 2400)


def test_init_dense_fans_and_seeding():
    w = init_weight((300, 100), "he", np.random.default_rng(0))
    assert w.std() == pytest.approx(np.sqrt(2 / 300), rel=0.02)
    a = build_network("lenet5", (1, 28, 28), 10, seed=1, init="xavier-uniform")
    b = build_network("lenet5", (1, 28, 28), 10, seed=1, init="glorot")
    c = build_network("lenet5", (1, 28, 28), 10, seed=2, init="xavier-uniform")
    for (_, pa, _), (_, pb, _), (key, pc, _) in zip(a.params_and_grads(), b.params_and_grads(),
                                                   c.params_and_grads()):
        np.testing.assert_array_equal(pa, pb)
        if key.endswith(".b"):
            assert not pa.any()  # biases start at zero
        else:
            assert pa.dtype == np.float32 and not np.array_equal(pa, pc)
    assert parse_init("Kaiming") == "he"
    with pytest.raises(FxpsimError, match="unknown initialisation"):
        parse_init("xavier")
