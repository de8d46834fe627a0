"""Non-learned restorations of a blur frame from its exposure's spike counts (DESIGN section 8).

They answer, for any store, "how much do these spikes say about the sharp frame?", and they are the floor
a trained spike arm must clear. Every function works on one frame: its stored counts ``counts [K, Hs, Ws]``
(K bins over the exposure window, the native spike grid) and its blur frame ``blur [3, H, W]`` float RGB in
[0, 1] on the RGB grid, ``H = Hs * sy`` and ``W = Ws * sx``. Inputs are never modified; outputs are float64
RGB ``[3, H, W]`` (unclipped; the scorer clips as validation does).

* **TFP** (texture from playback): the spike rate over the centred ``width`` bins of the window, i.e. the
  intensity near the middle of the exposure (the sharp frame's instant in the GoPro-derived sets).
* **TFI** (texture from interval): the rate ``1 / ISI`` of the inter-spike interval that spans the window's
  centre. It needs spike times, so it applies only where a bin is at most one spike frame wide
  (``n_ticks <= K``): then a non-empty bin is one spike at that bin's time. Elsewhere it is not defined.
* **LSQ**: one linear map, the same for every pixel, from ``(K counts, blur R, G, B, 1)`` to sharp RGB,
  fitted by least squares on the training split (``LsqAccumulator``); the counts are those of the spike
  pixel under each RGB pixel, as the model sees them.

Rate to intensity. A spike rate is not an intensity until it is mapped through the sensor's response and
the RGB camera's tone curve, neither of which a store records. TFP and TFI get that map from the frame
itself, without ground truth: over the whole window the spike rate measures the same light the blur frame
integrated, so the monotone (isotonic) regression of blur luma on the full-window rate is the frame's
rate-to-luma curve (``rate_to_luma``). The centre rate is then read through that curve, and the luma change
is added to every channel of the blur (the spikes are monochrome: colour comes from the blur frame).
Luma is Rec.601 (``spikeprep.images.LUMA_601``); on a spike grid coarser than the RGB grid the curve is
fitted against the blur luma averaged over each spike pixel's block, and the luma change is replicated.
"""
from __future__ import annotations

import numpy as np

from spikeprep.images import LUMA_601


# ---- grids ------------------------------------------------------------------------------------------
def grid_scale(counts: np.ndarray, blur: np.ndarray) -> tuple[int, int]:
    """``(sy, sx)``: the integer ratio of the RGB grid ``blur [3, H, W]`` to the spike grid ``counts [K, Hs, Ws]``."""
    if counts.ndim != 3 or blur.ndim != 3 or blur.shape[0] != 3:
        raise ValueError(f"expected counts [K, Hs, Ws] and blur [3, H, W], got {counts.shape} and {blur.shape}")
    (hs, ws), (h, w) = counts.shape[1:], blur.shape[1:]
    if hs == 0 or ws == 0 or h % hs or w % ws:
        raise ValueError(f"RGB grid {h}x{w} is not an integer multiple of the spike grid {hs}x{ws}")
    return h // hs, w // ws


def replicate(a: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """``[..., Hs, Ws]`` -> ``[..., Hs*sy, Ws*sx]``: each spike pixel repeated over its RGB block."""
    sy, sx = scale
    return np.repeat(np.repeat(a, sy, axis=-2), sx, axis=-1)


def block_mean(a: np.ndarray, scale: tuple[int, int]) -> np.ndarray:
    """``[H, W]`` -> ``[H/sy, W/sx]``: the mean over each spike pixel's RGB block."""
    sy, sx = scale
    h, w = a.shape
    return a.reshape(h // sy, sy, w // sx, sx).mean(axis=(1, 3))


def luma(rgb: np.ndarray) -> np.ndarray:
    """Rec.601 luma ``[H, W]`` of RGB ``[3, H, W]`` (float64)."""
    return np.tensordot(np.asarray(LUMA_601, np.float64), rgb.astype(np.float64), axes=1)


# ---- rate -> luma ----------------------------------------------------------------------------------
def isotonic_fit(x: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Least-squares non-decreasing fit of ``y`` on ``x``: ``(knots, values)`` at the distinct ``x``.

    Pool-adjacent-violators on the per-value means, weighted by how many samples share each value.
    """
    xs, inverse, counts = np.unique(np.asarray(x, np.float64).ravel(), return_inverse=True, return_counts=True)
    sums = np.bincount(inverse, weights=np.asarray(y, np.float64).ravel(), minlength=len(xs))
    means, weights, sizes = [], [], []
    for m, w in zip(sums / counts, counts.astype(np.float64)):
        means.append(m), weights.append(w), sizes.append(1)
        while len(means) > 1 and means[-2] > means[-1]:
            w2 = weights[-2] + weights[-1]
            means[-2] = (means[-2] * weights[-2] + means[-1] * weights[-1]) / w2
            weights[-2], sizes[-2] = w2, sizes[-2] + sizes[-1]
            del means[-1], weights[-1], sizes[-1]
    return xs, np.repeat(means, sizes)


def rate_to_luma(full_rate: np.ndarray, blur_luma: np.ndarray):
    """The frame's rate-to-luma curve: ``f(rate) -> luma``, the isotonic regression of ``blur_luma`` on
    ``full_rate`` (both on the spike grid), linear between knots and constant beyond them."""
    knots, values = isotonic_fit(full_rate, blur_luma)
    return lambda rate: np.interp(rate, knots, values)


def _with_luma(blur: np.ndarray, counts: np.ndarray, rate: np.ndarray) -> np.ndarray:
    """Blur RGB with its luma replaced by ``rate`` (spike grid) read through the frame's own curve."""
    scale = grid_scale(counts, blur)
    blur_luma = block_mean(luma(blur), scale)
    curve = rate_to_luma(counts.sum(axis=0, dtype=np.float64) / counts.shape[0], blur_luma)
    delta = replicate(curve(rate) - blur_luma, scale)
    return blur.astype(np.float64) + delta[None]


# ---- TFP / TFI -----------------------------------------------------------------------------------------
def centred_bins(num_bins: int, width: int) -> slice:
    """The ``width`` bins centred in ``num_bins``; ``ValueError`` when they cannot be centred exactly."""
    if not 1 <= width <= num_bins:
        raise ValueError(f"TFP width {width} must be between 1 and K={num_bins} bins")
    if (num_bins - width) % 2:
        raise ValueError(f"TFP width {width} cannot be centred in K={num_bins} bins; use a width of the same "
                         f"parity as K (e.g. {width + 1 if width < num_bins else width - 1})")
    start = (num_bins - width) // 2
    return slice(start, start + width)


def tfp_rate(counts: np.ndarray, width: int) -> np.ndarray:
    """TFP (texture from playback): the mean count per bin over the centred ``width`` of the ``K`` bins of
    ``counts [K, Hs, Ws]``, float64 ``[Hs, Ws]``. On bins one spike frame wide (``spikeprep view`` on a raw
    recording) that is the spike rate per frame over a window of ``width`` frames."""
    return counts[centred_bins(counts.shape[0], width)].sum(axis=0, dtype=np.float64) / width


def tfp(counts: np.ndarray, blur: np.ndarray, width: int) -> np.ndarray:
    """TFP restoration: ``tfp_rate`` over the centred ``width`` bins, as luma, blur's colour."""
    return _with_luma(blur, counts, tfp_rate(counts, width))


def tfi_applies(num_bins: int, n_ticks: int) -> bool:
    """Whether TFI is defined on these voxels: every bin at most one spike frame wide."""
    return n_ticks <= num_bins


def tfi_rate(counts: np.ndarray) -> np.ndarray:
    """TFI (texture from interval): ``1 / ISI`` (spikes per bin) of the interval spanning the centre of
    ``counts [K, Hs, Ws]``, float64 ``[Hs, Ws]``.

    Needs bins at most one spike frame wide (``tfi_applies``), so that a non-empty bin is one spike at its
    bin's time. The interval runs from the last spike before the centre (bins ``< K/2``) to the first at or
    after it; a pixel without a spike on one side keeps the full-window rate.
    """
    k = counts.shape[0]
    if counts.max(initial=0) > 1:
        raise ValueError("TFI needs at most one spike per bin (bins one spike frame wide); these voxels hold "
                         f"up to {int(counts.max())}")
    fired = counts > 0
    half = k // 2
    idx = np.arange(k).reshape(k, 1, 1)
    last_before = np.where(fired[:half], idx[:half], -1).max(axis=0)
    first_after = np.where(fired[half:], idx[half:], k + k).min(axis=0)
    both = (last_before >= 0) & (first_after < k)
    full_rate = counts.sum(axis=0, dtype=np.float64) / k
    return np.where(both, 1.0 / np.maximum(first_after - last_before, 1), full_rate)


def tfi(counts: np.ndarray, blur: np.ndarray) -> np.ndarray:
    """TFI restoration: ``tfi_rate`` as luma, blur's colour (a pixel without a spike on one side of the
    centre keeps the full-window rate, i.e. its blur luma)."""
    return _with_luma(blur, counts, tfi_rate(counts))


# ---- least squares ------------------------------------------------------------------------------------
def lsq_features(counts: np.ndarray, blur: np.ndarray) -> np.ndarray:
    """Design matrix ``[H*W, K + 4]`` float64: per RGB pixel its spike pixel's K counts, blur R, G, B and 1."""
    scale = grid_scale(counts, blur)
    k, (h, w) = counts.shape[0], blur.shape[1:]
    x = np.empty((h * w, k + 4), np.float64)
    x[:, :k] = replicate(counts, scale).reshape(k, -1).T
    x[:, k:k + 3] = blur.reshape(3, -1).T
    x[:, k + 3] = 1.0
    return x


class LsqAccumulator:
    """Least squares over many frames in bounded memory: accumulates ``X^T X`` and ``X^T Y`` per frame.

    ``solve()`` returns the coefficients ``[K + 4, 3]`` that ``np.linalg.lstsq(X, Y)`` gives on all frames'
    rows stacked (the minimum-norm solution when X is rank-deficient, since ``pinv(X^T X) X^T = pinv(X)``).
    """

    def __init__(self, num_bins: int):
        self.num_bins = int(num_bins)
        self.xtx = np.zeros((num_bins + 4, num_bins + 4), np.float64)
        self.xty = np.zeros((num_bins + 4, 3), np.float64)
        self.rows = 0

    def add(self, counts: np.ndarray, blur: np.ndarray, sharp: np.ndarray) -> None:
        """Add one frame's pixels (counts ``[K, Hs, Ws]``, blur and sharp ``[3, H, W]`` in [0, 1])."""
        if counts.shape[0] != self.num_bins:
            raise ValueError(f"counts have {counts.shape[0]} bins, the fit has K={self.num_bins}")
        if sharp.shape != blur.shape:
            raise ValueError(f"sharp {sharp.shape} and blur {blur.shape} differ")
        x = lsq_features(counts, blur)
        y = sharp.reshape(3, -1).T.astype(np.float64)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.rows += x.shape[0]

    def input_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation ``[K + 3]`` of each input but the constant (K counts, blur R, G, B)
        over every added pixel, from ``X^T X`` (a constant input gets std 0); ``ValueError`` before any frame."""
        if self.rows == 0:
            raise ValueError("no training pixels to take input moments of")
        n = self.num_bins + 3
        mean = self.xtx[:n, n] / self.rows
        second = np.diag(self.xtx)[:n] / self.rows
        return mean, np.sqrt(np.maximum(second - mean ** 2, 0.0))

    def solve(self) -> np.ndarray:
        """Coefficients ``[K + 4, 3]``; ``ValueError`` before any frame was added."""
        if self.rows == 0:
            raise ValueError("no training pixels to fit the least-squares map on")
        return np.linalg.lstsq(self.xtx, self.xty, rcond=None)[0]


def lsq_restore(counts: np.ndarray, blur: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Apply fitted coefficients ``[K + 4, 3]``: RGB ``[3, H, W]``."""
    h, w = blur.shape[1:]
    return (lsq_features(counts, blur) @ coef).T.reshape(3, h, w)
