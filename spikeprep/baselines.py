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
def lsq_features(counts: np.ndarray, blur: np.ndarray, taps: int = 1) -> np.ndarray:
    """Design matrix ``[H*W, K * taps**2 + 4]`` float64: per RGB pixel the K counts of its spike pixel (``taps``
    1) or of the ``taps x taps`` neighbourhood around it on the RGB grid (the counts replicated onto the RGB
    grid, zero outside the frame: what a ``taps x taps`` convolution with zero padding reads), then blur R,
    G, B and 1. Neighbourhood columns run count bin first, then row offset, then column offset, the layout of
    a convolution weight ``[K, taps, taps]``."""
    if taps < 1 or taps % 2 == 0:
        raise ValueError(f"taps must be odd and positive, got {taps}")
    scale = grid_scale(counts, blur)
    k, (h, w) = counts.shape[0], blur.shape[1:]
    kt = k * taps * taps
    x = np.empty((h * w, kt + 4), np.float64)
    rgb_counts = replicate(counts, scale)
    if taps == 1:
        x[:, :k] = rgb_counts.reshape(k, -1).T
    else:
        r = taps // 2
        padded = np.pad(rgb_counts, ((0, 0), (r, r), (r, r)))
        cols = x[:, :kt].reshape(h * w, k, taps, taps)
        for dy in range(taps):
            for dx in range(taps):
                cols[:, :, dy, dx] = padded[:, dy:dy + h, dx:dx + w].reshape(k, -1).T
    x[:, kt:kt + 3] = blur.reshape(3, -1).T
    x[:, kt + 3] = 1.0
    return x


class LsqAccumulator:
    """Least squares over many frames in bounded memory: accumulates ``X^T X`` and ``X^T Y`` per frame.

    ``solve()`` returns the coefficients ``[K * taps**2 + 4, 3]`` that ``np.linalg.lstsq(X, Y)`` gives on all
    frames' rows stacked (the minimum-norm solution when X is rank-deficient, since
    ``pinv(X^T X) X^T = pinv(X)``). ``taps``: the counts' neighbourhood (``lsq_features``); 1 is the per-pixel
    map of ``spikeprep baselines``.
    """

    def __init__(self, num_bins: int, taps: int = 1):
        self.num_bins = int(num_bins)
        self.taps = int(taps)
        n = self.num_bins * self.taps ** 2 + 4
        self.xtx = np.zeros((n, n), np.float64)
        self.xty = np.zeros((n, 3), np.float64)
        self.rows = 0

    def add(self, counts: np.ndarray, blur: np.ndarray, sharp: np.ndarray) -> None:
        """Add one frame's pixels (counts ``[K, Hs, Ws]``, blur and sharp ``[3, H, W]`` in [0, 1])."""
        if counts.shape[0] != self.num_bins:
            raise ValueError(f"counts have {counts.shape[0]} bins, the fit has K={self.num_bins}")
        if sharp.shape != blur.shape:
            raise ValueError(f"sharp {sharp.shape} and blur {blur.shape} differ")
        x = lsq_features(counts, blur, self.taps)
        y = sharp.reshape(3, -1).T.astype(np.float64)
        self.xtx += x.T @ x
        self.xty += x.T @ y
        self.rows += x.shape[0]

    def input_moments(self) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of each input but the constant (the count columns, blur R, G, B)
        over every added pixel, from ``X^T X`` (a constant input gets std 0); ``ValueError`` before any frame."""
        if self.rows == 0:
            raise ValueError("no training pixels to take input moments of")
        n = self.xtx.shape[0] - 1
        mean = self.xtx[:n, n] / self.rows
        second = np.diag(self.xtx)[:n] / self.rows
        return mean, np.sqrt(np.maximum(second - mean ** 2, 0.0))

    def count_rms(self) -> float:
        """The root mean square of the counts over every added pixel (each pixel's own bins, not its
        neighbours': the same for any ``taps``)."""
        mean, std = self.input_moments()
        k, t = self.num_bins, self.taps
        centre = [b * t * t + (t // 2) * t + t // 2 for b in range(k)]
        return float(np.sqrt(np.mean(mean[centre] ** 2 + std[centre] ** 2)))

    def solve(self) -> np.ndarray:
        """Coefficients ``[K * taps**2 + 4, 3]``; ``ValueError`` before any frame was added."""
        if self.rows == 0:
            raise ValueError("no training pixels to fit the least-squares map on")
        return np.linalg.lstsq(self.xtx, self.xty, rcond=None)[0]


def coef_taps(coef: np.ndarray, num_bins: int) -> int:
    """The counts' neighbourhood ``taps`` of least-squares coefficients ``[K * taps**2 + 4, 3]``."""
    taps = int(round(np.sqrt(max(coef.shape[0] - 4, 0) / num_bins)))
    if coef.ndim != 2 or coef.shape[0] != num_bins * taps ** 2 + 4:
        raise ValueError(f"least-squares coefficients are {coef.shape}; with K={num_bins} expected "
                         f"[K * taps**2 + 4, 3] for an odd taps")
    return taps


def lsq_restore(counts: np.ndarray, blur: np.ndarray, coef: np.ndarray) -> np.ndarray:
    """Apply fitted coefficients ``[K * taps**2 + 4, 3]``: RGB ``[3, H, W]``."""
    h, w = blur.shape[1:]
    return (lsq_features(counts, blur, coef_taps(coef, counts.shape[0])) @ coef).T.reshape(3, h, w)


# ---- gated least squares (the gated spike head's start) -------------------------------------------------
# The least-squares map corrects every pixel by the same linear rule, so where nothing moves it adds the
# counts' quantisation noise to a blur frame that was already right (grain on still areas; README, "Models").
# The gate scales the map's luma correction d per pixel by sigmoid(slope * (log(E + GATE_EPS) - threshold)),
# E the mean of d^2 over a GATE_BOX x GATE_BOX window: a large, spatially coherent correction is motion, a
# small incoherent one is noise. slope and threshold are fitted on the training split (``fit_gate``).
GATE_BOX = 9
GATE_EPS = 1e-10


def local_energy(d: np.ndarray, box: int = GATE_BOX) -> np.ndarray:
    """The mean of ``d**2`` over the ``box x box`` window around each pixel of ``d [H, W]``, the window cut at
    the frame's border (torch's ``avg_pool2d(..., count_include_pad=False)``)."""
    from scipy.ndimage import uniform_filter

    sq = d.astype(np.float64) ** 2
    inside = uniform_filter(np.ones_like(sq), box, mode="constant")
    return uniform_filter(sq, box, mode="constant") / inside


def gate(d: np.ndarray, slope: float, threshold: float, box: int = GATE_BOX) -> np.ndarray:
    """The gate ``[H, W]`` in (0, 1) on the luma correction ``d [H, W]``."""
    z = slope * (np.log(local_energy(d, box) + GATE_EPS) - threshold)
    return 0.5 * (1.0 + np.tanh(0.5 * z))                      # the logistic sigmoid, without overflow


def fit_gate(corrections: list[np.ndarray], blur_luma: list[np.ndarray], sharp_luma: list[np.ndarray],
             box: int = GATE_BOX, max_pixels: int = 200_000, charbonnier_eps: float | None = None
             ) -> tuple[float, float]:
    """``(slope, threshold)`` minimising the mean squared luma error of ``blur + gate * d`` over the frames
    (every pixel, or an even subsample of ``max_pixels``), or with ``charbonnier_eps`` the mean Charbonnier
    error ``sqrt(e^2 + eps^2)`` (the trainer's loss), by Nelder-Mead from a few starts (deterministic). With
    no correction anywhere the gate is moot: ``(0.0, 0.0)``."""
    from scipy.optimize import minimize

    feats = [np.log(local_energy(d, box) + GATE_EPS).ravel() for d in corrections]
    f, d = np.concatenate(feats), np.concatenate([c.ravel() for c in corrections]).astype(np.float64)
    if not np.any(d):
        return 0.0, 0.0
    r = (np.concatenate([s.ravel() for s in sharp_luma]) - np.concatenate([b.ravel() for b in blur_luma]))
    step = max(1, f.size // max_pixels)
    f, d, r = f[::step], d[::step], r[::step]

    def loss(p: np.ndarray) -> float:
        g = 0.5 * (1.0 + np.tanh(0.5 * p[0] * (f - p[1])))
        e2 = (g * d - r) ** 2
        return float(np.mean(e2 if charbonnier_eps is None else np.sqrt(e2 + charbonnier_eps ** 2)))

    centre = float(np.median(f))
    fits = [minimize(loss, [slope, centre + shift], method="Nelder-Mead", options=dict(xatol=1e-4, fatol=1e-12))
            for slope in (1.0, 3.0) for shift in (-2.0, 0.0, 2.0)]
    best = min(fits, key=lambda fit: fit.fun)
    return float(best.x[0]), float(best.x[1])


def gated_lsq_restore(counts: np.ndarray, blur: np.ndarray, coef: np.ndarray, slope: float, threshold: float,
                      box: int = GATE_BOX) -> np.ndarray:
    """The gated least-squares restoration ``[3, H, W]``: the blur plus the gated luma correction of
    ``lsq_restore`` on every channel."""
    d = luma(lsq_restore(counts, blur, coef)) - luma(blur)
    return blur.astype(np.float64) + (gate(d, slope, threshold, box) * d)[None]
