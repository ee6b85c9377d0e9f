"""Augmentation of training batches (fxpsim.train.augment): identities, exact quarter turns, a
differential test against scipy's affine transform, seeded determinism, parsing, the fit hook."""

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st
from scipy import ndimage

from fxpsim import FxpsimError
from fxpsim.network import build_network
from fxpsim.train.augment import Augment, parse_augment, random_rotate, random_shift, rotate
from fxpsim.train.trainer import TrainConfig, fit

images_st = st.tuples(st.integers(1, 4), st.integers(1, 3), st.integers(1, 9), st.integers(1, 9),
                      st.integers(0, 2**32 - 1))


def _images(b, c, h, w, seed):
    return np.random.default_rng(seed).standard_normal((b, c, h, w)).astype(np.float32)


@given(images_st)
def test_rotation_by_zero_and_shift_by_zero_are_the_identity(shape):
    x = _images(*shape)
    np.testing.assert_array_equal(rotate(x, 0.0), x)
    np.testing.assert_array_equal(random_shift(x, 0, np.random.default_rng(0)), x)
    np.testing.assert_array_equal(Augment()(x, np.random.default_rng(0)), x)


@pytest.mark.parametrize("k", [1, 2, 3, -1])
def test_quarter_turns_are_exact_rot90_counter_clockwise(k):
    x = _images(3, 2, 5, 5, k + 7)
    np.testing.assert_array_equal(rotate(x, 90.0 * k), np.rot90(x, k, axes=(2, 3)))
    y = _images(2, 1, 4, 6, 3)  # a half turn of a non-square image too
    np.testing.assert_array_equal(rotate(y, 180.0), y[:, :, ::-1, ::-1])


def test_known_small_case_45_degrees_of_a_3x3_one_hot():
    x = np.zeros((1, 1, 3, 3))
    x[0, 0, 0, 1] = 1.0  # top centre; a counter-clockwise eighth turn moves it between top and left
    out = rotate(x, 45.0)[0, 0]
    s = np.sqrt(0.5)
    # (0, 1) reads the input at (1 - s, 1 + s), (1, 0) at (1 - s, 1 - s): bilinear weight s (1 - s) each
    np.testing.assert_allclose([out[0, 1], out[1, 0]], [s * (1 - s)] * 2, atol=1e-9)  # coordinates to 1e-9 px
    assert out[0, 0] == 1.0  # reads (1 - 2s, 1), clamped to the edge pixel (0, 1): edges repeat
    assert out[1, 1] == 0 and out[2, 2] == 0 and out[1, 2] == 0


@given(images_st, st.floats(-45, 45))
def test_rotation_matches_scipy_affine_transform_bilinear_nearest(shape, angle):
    x = _images(*shape).astype(np.float64)
    h, w = x.shape[2:]
    t = np.deg2rad(angle)
    matrix = np.array([[np.cos(t), np.sin(t)], [-np.sin(t), np.cos(t)]])
    centre = np.array([(h - 1) / 2, (w - 1) / 2])
    offset = centre - matrix @ centre
    out = rotate(x, angle)
    for i in range(x.shape[0]):
        for c in range(x.shape[1]):
            ref = ndimage.affine_transform(x[i, c], matrix, offset, order=1, mode="nearest")
            np.testing.assert_allclose(out[i, c], ref, atol=1e-7)


def test_each_image_gets_its_own_angle_and_shapes_dtype_are_kept():
    x = _images(4, 2, 7, 9, 1)
    angles = [0.0, 10.0, -10.0, 90.0]
    out = rotate(x, angles)
    assert out.shape == x.shape and out.dtype == x.dtype and out.flags.c_contiguous
    for i, a in enumerate(angles):
        np.testing.assert_array_equal(out[i], rotate(x[i:i + 1], a)[0])


def test_augment_is_seeded_and_shift_draws_come_first():
    x = _images(8, 1, 8, 8, 2)
    aug = Augment(shift=2, rotate=10)
    a, b = aug(x, Augment.rng(5)), aug(x, Augment.rng(5))
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(a, aug(x, Augment.rng(6)))
    rng = Augment.rng(5)  # the same stream, step by step: shift draws, then the angles
    np.testing.assert_array_equal(a, random_rotate(random_shift(x, 2, rng), 10, rng))
    # shift alone draws exactly what the trainer drew before rotations existed (old models repeat)
    np.testing.assert_array_equal(Augment(shift=1)(x, Augment.rng(0)), random_shift(x, 1, Augment.rng(0)))


def test_parse_augment_and_one_line_errors():
    assert parse_augment("shift=2,rotate=10") == Augment(2, 10.0)
    assert parse_augment(" rotate=7.5 ") == Augment(0, 7.5)
    assert parse_augment("none") == Augment() and not Augment().active
    for bad in ("shift=2,shift=3", "spin=3", "shift=1.5", "rotate=60", "rotate=-3", "shift=-1", "rotate=nan"):
        with pytest.raises(FxpsimError) as err:
            parse_augment(bad)
        assert "\n" not in str(err.value) and ("shift" in str(err.value) or "rotate" in str(err.value))


def test_fit_with_augmentation_is_deterministic_and_needs_images():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((64, 1, 8, 8)).astype(np.float32)
    y = rng.integers(0, 10, 64)
    weights = []
    for _ in range(2):
        net = build_network("conv4x3p1-relu-maxpool2-fc10", (1, 8, 8), 10, seed=0)
        fit(net, x, y, TrainConfig(epochs=2, shift=1, rotate=10, val_fraction=0), progress=False)
        weights.append(net.state_dict())
    for k in weights[0]:
        np.testing.assert_array_equal(weights[0][k], weights[1][k])
    plain = build_network("conv4x3p1-relu-maxpool2-fc10", (1, 8, 8), 10, seed=0)
    fit(plain, x, y, TrainConfig(epochs=2, shift=1, val_fraction=0), progress=False)
    assert not np.array_equal(plain.state_dict()["0.W"], weights[0]["0.W"])  # the rotation is used
    flat = build_network("fc10", (64,), 10, seed=0)
    with pytest.raises(FxpsimError, match="needs image input"):
        fit(flat, x.reshape(64, 64), y, TrainConfig(epochs=1, rotate=5), progress=False)
