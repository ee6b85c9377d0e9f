"""Data augmentation of training images: random whole-pixel shifts and small rotations.

The lecture notes list data augmentation among the regularisers ("translations, rotations, ...
of the training images"): each training mini-batch is transformed by a seeded draw, the test
and validation images never are. Both transforms keep the shape ``(B, C, H, W)`` and fill what
comes in from outside the image by repeating the edge pixels (the background of MNIST-like data).

- :func:`random_shift`: each image translated by ``(dy, dx)``, whole pixels in ``[-shift, shift]``.
- :func:`rotate`: each image rotated about its centre by its own angle (degrees, counter-clockwise
  as displayed, rows down), bilinear interpolation; :func:`random_rotate` draws the angles
  uniformly in ``[-degrees, degrees]``.
- :class:`Augment` (``shift=2,rotate=10`` on the CLI) applies both in that order; the same seed
  gives the same batches (:meth:`Augment.rng`).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import numpy as np

from ..errors import FxpsimError, check

MAX_ROTATE = 45.0
"""Largest rotation accepted (degrees): the notes' "small rotations"; beyond, a 6 and a 9 swap roles."""

_COORD_DIGITS = 9
"""Sample coordinates are rounded to 1e-9 pixel, so that angles whose sine and cosine are exact
multiples of 1/2 on paper (0, 90, 180 degrees) sample pixel centres exactly."""


def random_shift(x: np.ndarray, shift: int, rng: np.random.Generator) -> np.ndarray:
    """Images ``(B, C, H, W)`` each translated by ``(dy, dx)`` drawn from ``[-shift, shift]``.

    The image is padded by repeating its edge pixels (the background of
    MNIST-like data), then cropped at the drawn offset.
    """
    b, _, h, w = x.shape
    padded = np.pad(x, ((0, 0), (0, 0), (shift, shift), (shift, shift)), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, (h, w), axis=(2, 3))  # (B, C, 2s+1, 2s+1, H, W)
    dy, dx = rng.integers(0, 2 * shift + 1, size=(2, b))
    return np.ascontiguousarray(windows[np.arange(b), :, dy, dx])


def rotate(x: np.ndarray, degrees) -> np.ndarray:
    """Images ``(B, C, H, W)`` rotated about their centre, image ``i`` by ``degrees[i]`` (or one angle).

    Inverse mapping: output pixel ``(r, c)`` samples the input at ``R(-theta) ((r, c) - centre) +
    centre``, centre ``((H - 1) / 2, (W - 1) / 2)``, by bilinear interpolation with the edge
    pixels repeated outside (``scipy.ndimage.affine_transform(order=1, mode="nearest")``).
    Positive angles turn the picture counter-clockwise as displayed (row 0 at the top).
    """
    check(x.ndim == 4, f"rotate needs images (N, C, H, W), got shape {x.shape}")
    b, _, h, w = x.shape
    theta = np.deg2rad(np.broadcast_to(np.asarray(degrees, dtype=np.float64), (b,)))
    cos, sin = np.cos(theta)[:, None, None], np.sin(theta)[:, None, None]
    rr, cc = np.meshgrid(np.arange(h) - (h - 1) / 2, np.arange(w) - (w - 1) / 2, indexing="ij")
    # output (r, c) looks at the input point rotated by -theta (rows point down: the sign of sin flips)
    src_r = np.round(cos * rr + sin * cc + (h - 1) / 2, _COORD_DIGITS)
    src_c = np.round(-sin * rr + cos * cc + (w - 1) / 2, _COORD_DIGITS)
    src_r, src_c = np.clip(src_r, 0, h - 1), np.clip(src_c, 0, w - 1)
    r0, c0 = np.floor(src_r).astype(np.intp), np.floor(src_c).astype(np.intp)
    r1, c1 = np.minimum(r0 + 1, h - 1), np.minimum(c0 + 1, w - 1)
    fr, fc = (src_r - r0)[:, None], (src_c - c0)[:, None]  # (B, 1, H, W)
    img = np.arange(b)[:, None, None]

    def at(r, c):  # (B, C, H, W): input pixels (r, c) of each image, every channel
        return np.moveaxis(x[img, :, r, c], -1, 1)

    top = at(r0, c0) * (1 - fc) + at(r0, c1) * fc
    bottom = at(r1, c0) * (1 - fc) + at(r1, c1) * fc
    return np.ascontiguousarray((top * (1 - fr) + bottom * fr).astype(x.dtype, copy=False))


def random_rotate(x: np.ndarray, degrees: float, rng: np.random.Generator) -> np.ndarray:
    """Each image rotated by an angle drawn uniformly from ``[-degrees, degrees]`` (:func:`rotate`)."""
    return rotate(x, rng.uniform(-degrees, degrees, size=len(x)))


@dataclass(frozen=True, slots=True)
class Augment:
    """Training-batch augmentation: a random shift by up to ``shift`` pixels, then a random
    rotation by up to ``rotate`` degrees; ``Augment()`` is off."""

    shift: int = 0
    rotate: float = 0.0

    def __post_init__(self) -> None:
        check(isinstance(self.shift, (int, np.integer)) and not isinstance(self.shift, bool) and self.shift >= 0,
              f"augmentation shift={self.shift!r} must be a whole number of pixels >= 0, e.g. shift=2")
        check(isinstance(self.rotate, (int, float)) and math.isfinite(self.rotate)
              and 0 <= self.rotate <= MAX_ROTATE,
              f"augmentation rotate={self.rotate!r} must be 0 to {MAX_ROTATE:g} degrees (small rotations), "
              "e.g. rotate=10")
        object.__setattr__(self, "shift", int(self.shift))
        object.__setattr__(self, "rotate", float(self.rotate))

    @property
    def active(self) -> bool:
        return bool(self.shift or self.rotate)

    @staticmethod
    def rng(seed: int) -> np.random.Generator:
        """The augmentation stream of a training run seeded by ``seed`` (apart from the batch order)."""
        return np.random.default_rng(np.random.SeedSequence([seed, 0x6175]))

    def check_images(self, shape: tuple[int, ...]) -> None:
        """A one-line error unless ``shape`` is a batch of images ``(N, C, H, W)``."""
        check(not self.active or len(shape) == 4,
              f"augmentation {self} needs image input (N, C, H, W), got shape {tuple(shape)}: "
              "drop --augment/--shift for flat data")

    def __call__(self, x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """``x`` transformed with draws from ``rng`` (shift draws first, then angles); ``x`` if off."""
        if self.shift:
            x = random_shift(x, self.shift, rng)
        if self.rotate:
            x = random_rotate(x, self.rotate, rng)
        return x

    def __str__(self) -> str:
        return f"shift={self.shift},rotate={self.rotate:g}"


def parse_augment(text: str) -> Augment:
    """``"shift=2,rotate=10"`` (either key, any order; ``none`` or ``""``: off) as an :class:`Augment`."""
    text = str(text).strip().lower()
    if text in ("", "none", "off"):
        return Augment()
    values: dict[str, str] = {}
    for part in text.split(","):
        m = re.fullmatch(r"\s*(shift|rotate)\s*=\s*([0-9.eE+-]+)\s*", part)
        if m is None or m.group(1) in values:
            raise FxpsimError(f"augmentation {text!r}: {part.strip()!r} is not shift=PIXELS or rotate=DEGREES "
                              "(each once); write e.g. shift=2,rotate=10")
        values[m.group(1)] = m.group(2)
    try:
        shift = int(values.get("shift", "0"))
        angle = float(values.get("rotate", "0"))
    except ValueError:
        raise FxpsimError(f"augmentation {text!r}: shift takes whole pixels and rotate degrees, "
                          "e.g. shift=2,rotate=10") from None
    return Augment(shift, angle)
