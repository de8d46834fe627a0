"""Image-quality metrics for validation, ``spikeprep test`` and ``spikeprep compare`` (DESIGN section 8).

Every metric works on uint8 ``[H, W, 3]`` RGB frames, the way basicsr evaluates restoration results:

* ``image_metrics``: PSNR on RGB, PSNR on Y (ITU-R BT.601, basicsr's conversion), SSIM on RGB and SSIM on
  Y. These *are* basicsr's ``calculate_psnr`` / ``calculate_ssim`` (crop_border 0, ``test_y_channel`` for
  the Y ones), so numbers are comparable with the literature and with any basicsr-based baseline.
* ``motion_boundary_mask`` / ``static_mask`` + ``masked_metrics``: the same metrics restricted to motion
  boundaries, the pixels where the sharp frame differs most from the blurred one (where deblurring actually
  matters), or to the static half, where they differ least (where a restoration must leave the frame
  alone: grain there is the restoration's own). With an all-True mask they reduce to ``image_metrics``
  (SSIM up to float summation order).
* ``LPIPSMetric``: AlexNet LPIPS (the ``lpips`` package). Its trunk needs torchvision's ImageNet AlexNet
  weights, read from torchvision's cache or a given path and never downloaded; without them
  ``LPIPSUnavailable`` (or ``lpips_or_reason``'s reason) says so, and reports print "not computed". A
  metric on random weights would be a number that measures nothing, so there is no fallback.
* ``mean_metrics``: the per-frame rows averaged into one record (``schemas.val_report.Metrics`` fields).
"""
from __future__ import annotations

import contextlib
import io
import math
import os
import re
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path

import cv2
import numpy as np
import torch
from basicsr.metrics.metric_util import to_y_channel
from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim
from torchvision.models import AlexNet_Weights

METRIC_KEYS = ("psnr_rgb", "psnr_y", "ssim", "ssim_y")
SSIM_WINDOW = 11          # basicsr's _ssim: 11x11 Gaussian, sigma 1.5, 'valid' region
SSIM_SIGMA = 1.5
_SSIM_HALF = SSIM_WINDOW // 2


# ---- conversion --------------------------------------------------------------------------------------

def tensor_to_uint8(x: torch.Tensor) -> np.ndarray:
    """Float ``[3, H, W]`` RGB in [0, 1] (any device/dtype) -> uint8 ``[H, W, 3]`` RGB.

    Clamp to [0, 1], scale by 255 and round, in float32, as basicsr's ``tensor2img`` does (but keeping RGB
    order). A leading batch dimension of 1 is accepted. The input is never modified.
    """
    if x.ndim == 4 and x.shape[0] == 1:
        x = x[0]
    if x.ndim != 3 or x.shape[0] != 3:
        raise ValueError(f"expected a [3, H, W] RGB tensor, got shape {tuple(x.shape)}")
    # Out-of-place clamp: ``.float()`` and ``.cpu()`` return ``x`` itself for a float32 CPU tensor, so
    # basicsr's in-place ``clamp_`` would write into the caller's tensor.
    t = x.detach().float().cpu().clamp(0.0, 1.0)
    img = t.permute(1, 2, 0).numpy()
    # float32 * 255 then round: exact inverse of u8 / 255 for every u8 value.
    return (img * 255.0).round().astype(np.uint8)


def _check_pair(img: np.ndarray, ref: np.ndarray) -> None:
    if img.shape != ref.shape:
        raise ValueError(f"image shapes differ: {img.shape} vs {ref.shape}")
    if img.ndim != 3 or img.shape[2] != 3:
        raise ValueError(f"expected [H, W, 3] RGB images, got shape {img.shape}")


def _y_channel(img: np.ndarray) -> np.ndarray:
    """basicsr's Y channel (float64 ``[H, W, 1]``, range [0, 255]) of an RGB image.

    basicsr's ``to_y_channel`` expects BGR (OpenCV order), so the channels are flipped first.
    """
    return to_y_channel(np.ascontiguousarray(img[..., ::-1])).astype(np.float64)


# ---- full-frame metrics ------------------------------------------------------------------------------

def image_metrics(img: np.ndarray, ref: np.ndarray) -> dict[str, float]:
    """PSNR (RGB), PSNR (Y), SSIM (RGB) and SSIM (Y) of uint8 ``[H, W, 3]`` RGB ``img`` against ``ref``.

    Exactly basicsr's ``calculate_psnr`` / ``calculate_ssim`` with ``crop_border=0``, ``input_order='HWC'``;
    the Y metrics use ``test_y_channel=True`` on the channel-flipped (BGR) images. PSNR is ``inf`` for
    identical images.
    """
    _check_pair(img, ref)
    bgr, ref_bgr = img[..., ::-1], ref[..., ::-1]
    return {
        "psnr_rgb": float(calculate_psnr(img, ref, crop_border=0, input_order="HWC")),
        "psnr_y": float(calculate_psnr(bgr, ref_bgr, crop_border=0, input_order="HWC", test_y_channel=True)),
        "ssim": float(calculate_ssim(img, ref, crop_border=0, input_order="HWC", test_y_channel=False)),
        "ssim_y": float(calculate_ssim(bgr, ref_bgr, crop_border=0, input_order="HWC", test_y_channel=True)),
    }


# ---- motion-boundary metrics -------------------------------------------------------------------------

def _ranked_mask(blur: np.ndarray, sharp: np.ndarray, fraction: float, largest: bool) -> np.ndarray:
    """Bool ``[H, W]`` mask of ``max(1, round(fraction * H * W))`` pixels ranked by the mean absolute
    difference of ``sharp`` and ``blur`` over the 3 channels (in float): the largest (``largest``) or the
    smallest differences. The ranking is stable: among equal differences the earlier pixel (row-major
    order) wins, so the mask is deterministic."""
    _check_pair(blur, sharp)
    if not 0.0 < fraction <= 1.0:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    h, w = blur.shape[:2]
    diff = np.abs(sharp.astype(np.float64) - blur.astype(np.float64)).mean(axis=2).ravel()
    count = min(h * w, max(1, round(fraction * h * w)))
    # Stable sort (of the negated differences for the largest first): ties in pixel order.
    order = np.argsort(-diff if largest else diff, kind="stable")
    mask = np.zeros(h * w, dtype=bool)
    mask[order[:count]] = True
    return mask.reshape(h, w)


def motion_boundary_mask(blur: np.ndarray, sharp: np.ndarray, fraction: float = 0.05) -> np.ndarray:
    """Bool ``[H, W]`` mask of the ``fraction`` of pixels where ``sharp`` and ``blur`` differ most.

    The difference is the mean absolute difference over the 3 channels (in float). Exactly
    ``max(1, round(fraction * H * W))`` pixels are selected by a stable ranking: among equal differences
    the earlier pixel (row-major order) wins, so the mask is deterministic. When ``blur == sharp``
    everywhere there is no motion to measure and the mask is all False.
    """
    mask = _ranked_mask(blur, sharp, fraction, largest=True)
    if np.array_equal(blur, sharp):
        return np.zeros_like(mask)
    return mask


def static_mask(blur: np.ndarray, sharp: np.ndarray, fraction: float = 0.5) -> np.ndarray:
    """Bool ``[H, W]`` mask of the ``fraction`` of pixels where ``sharp`` and ``blur`` differ least: the
    static part of the frame, where the best restoration is the blur itself.

    The same difference and stable ranking as ``motion_boundary_mask`` (``max(1, round(fraction * H * W))``
    pixels, ties to the earlier pixel), from the other end; a frame with no motion at all is all static,
    so the mask is never empty.
    """
    return _ranked_mask(blur, sharp, fraction, largest=False)


def _psnr_from_mse(mse: float) -> float:
    # basicsr's formula, including inf for a perfect match.
    if mse == 0:
        return float("inf")
    return float(10.0 * np.log10(255.0 * 255.0 / mse))


def _ssim_map(img: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """SSIM map of one float64 channel, computed exactly as basicsr's ``_ssim`` (before its mean).

    Shape ``(H - 10, W - 10)``; entry ``[i, j]`` belongs to pixel ``(i + 5, j + 5)``.
    """
    c1 = (0.01 * 255) ** 2
    c2 = (0.03 * 255) ** 2
    kernel = cv2.getGaussianKernel(SSIM_WINDOW, SSIM_SIGMA)
    window = np.outer(kernel, kernel.transpose())
    s = slice(_SSIM_HALF, -_SSIM_HALF)
    mu1 = cv2.filter2D(img, -1, window)[s, s]
    mu2 = cv2.filter2D(ref, -1, window)[s, s]
    mu1_sq = mu1 ** 2
    mu2_sq = mu2 ** 2
    mu1_mu2 = mu1 * mu2
    sigma1_sq = cv2.filter2D(img ** 2, -1, window)[s, s] - mu1_sq
    sigma2_sq = cv2.filter2D(ref ** 2, -1, window)[s, s] - mu2_sq
    sigma12 = cv2.filter2D(img * ref, -1, window)[s, s] - mu1_mu2
    return ((2 * mu1_mu2 + c1) * (2 * sigma12 + c2)) / ((mu1_sq + mu2_sq + c1) * (sigma1_sq + sigma2_sq + c2))


def masked_metrics(img: np.ndarray, ref: np.ndarray, mask: np.ndarray) -> dict[str, float | None]:
    """``image_metrics`` restricted to the pixels where ``mask`` (bool ``[H, W]``) is True.

    PSNR comes from the MSE over the masked pixels (RGB: all 3 channels; Y: basicsr's Y channel, as in
    ``image_metrics``). SSIM is the mean of basicsr's SSIM map over the masked pixels, per channel, then
    averaged over channels (SSIM Y: the map of basicsr's Y channel); the map only
    covers the 'valid' region (5 pixels in from each border), so mask
    pixels outside it count for PSNR but not for SSIM. A value with no pixels to average is ``None``.
    """
    _check_pair(img, ref)
    mask = np.asarray(mask)
    if mask.shape != img.shape[:2]:
        raise ValueError(f"mask shape {mask.shape} does not match image shape {img.shape[:2]}")
    mask = mask.astype(bool, copy=False)
    out: dict[str, float | None] = dict.fromkeys(METRIC_KEYS)
    if not mask.any():
        return out

    a, b = img.astype(np.float64), ref.astype(np.float64)
    # Boolean indexing keeps row-major order, so an all-True mask sums the same elements in the same order
    # as basicsr's np.mean over the whole image: identical PSNR.
    out["psnr_rgb"] = _psnr_from_mse(float(np.mean((a[mask] - b[mask]) ** 2)))
    ya, yb = _y_channel(img), _y_channel(ref)
    out["psnr_y"] = _psnr_from_mse(float(np.mean((ya[mask] - yb[mask]) ** 2)))

    h, w = mask.shape
    valid = mask[_SSIM_HALF:h - _SSIM_HALF, _SSIM_HALF:w - _SSIM_HALF]
    if valid.size and valid.any():
        per_channel = [_ssim_map(a[..., c], b[..., c])[valid].mean() for c in range(a.shape[2])]
        out["ssim"] = float(np.array(per_channel).mean())
        out["ssim_y"] = float(_ssim_map(ya[..., 0], yb[..., 0])[valid].mean())
    return out


def mean_metrics(rows: Iterable[Mapping[str, float | None]]) -> dict[str, float | None]:
    """Per-key mean over per-frame ``rows``, ignoring ``None`` values; ``frames`` is the number of rows.

    A key with no value in any row is ``None``. The keys of ``image_metrics`` are always present (so an
    empty input still gives a complete record); other keys (e.g. ``lpips``) appear when a row has them.
    """
    values: dict[str, list[float]] = {k: [] for k in METRIC_KEYS}
    frames = 0
    for row in rows:
        frames += 1
        for key, value in row.items():
            if key == "frames":
                continue
            values.setdefault(key, [])
            if value is not None:
                values[key].append(float(value))
    out: dict[str, float | None] = {"frames": frames}
    for key, vals in values.items():
        # fsum: exact-as-possible sum, and inf (identical frames) stays inf.
        out[key] = math.fsum(vals) / len(vals) if vals else None
    return out


# ---- LPIPS -------------------------------------------------------------------------------------------

class LPIPSUnavailable(FileNotFoundError):
    """The AlexNet ImageNet weights that LPIPS needs are not on this machine (or not usable)."""

    def __init__(self, message: str, *, path: Path, reason: str):
        super().__init__(message)
        self.path = path
        self.reason = reason  # short form for reports: "<path> missing"


def alexnet_weights_path(explicit: str | os.PathLike | None = None) -> Path:
    """Where the AlexNet weights are: ``explicit`` if given, else torchvision's cache file."""
    if explicit is not None:
        return Path(explicit)
    name = Path(AlexNet_Weights.IMAGENET1K_V1.url).name
    return Path(torch.hub.get_dir()) / "checkpoints" / name


def _lpips_linear_weights_path() -> Path:
    import lpips

    return Path(lpips.__file__).parent / "weights" / "v0.1" / "alex.pth"


class LPIPSMetric:
    """AlexNet LPIPS v0.1 on uint8 ``[H, W, 3]`` RGB frames; build with ``LPIPSMetric.load``.

    Every weight comes from a file: the AlexNet trunk from torchvision's ImageNet checkpoint, the linear
    layers from the ``lpips`` package. ``__call__`` gives the standard scalar LPIPS (per-layer spatial
    average); ``distance_map`` gives lpips's ``spatial=True`` map, whose mean is close to but not exactly
    the scalar (lpips upsamples each layer's map bilinearly to the image size, which does not preserve the
    mean when the layer size does not divide the image size).
    """

    def __init__(self, net: torch.nn.Module, device: torch.device):
        self.net = net
        self.device = device

    @classmethod
    def load(cls, device: str | torch.device = "cpu",
             weights_path: str | os.PathLike | None = None) -> LPIPSMetric:
        """Build the metric from local files; ``LPIPSUnavailable`` when the AlexNet weights are missing."""
        import lpips

        path = alexnet_weights_path(weights_path)
        name = Path(AlexNet_Weights.IMAGENET1K_V1.url).name
        if not path.is_file():
            raise LPIPSUnavailable(
                f"AlexNet ImageNet weights for LPIPS not found at {path}. Fix: copy torchvision's {name} "
                f"({AlexNet_Weights.IMAGENET1K_V1.url}) there (or point TORCH_HOME at a cache that has it, "
                "or pass its path), or run without LPIPS (reports then say \"LPIPS: not computed\"); it is "
                "never replaced by random weights", path=path, reason=f"{path} missing")
        lin_path = _lpips_linear_weights_path()
        if not lin_path.is_file():
            raise LPIPSUnavailable(
                f"LPIPS linear-layer weights not found at {lin_path}: the lpips package is incomplete; "
                "reinstall lpips", path=lin_path, reason=f"{lin_path} missing")

        # Both the (random, then overwritten) construction and torchvision's deprecated `pretrained=`
        # path run here: keep the caller's RNG stream untouched (training resumes bit-for-bit even when
        # validation builds LPIPS), and silence lpips's prints and torchvision's deprecation warnings.
        # pnet_rand=True / pretrained=False: lpips itself would download the trunk or torch.load the
        # linear weights without checks; we load both ourselves below.
        with torch.random.fork_rng(devices=[]), warnings.catch_warnings(), \
                contextlib.redirect_stdout(io.StringIO()):
            warnings.simplefilter("ignore")
            net = lpips.LPIPS(net="alex", version="0.1", pretrained=False, pnet_rand=True,
                              spatial=False, verbose=False)

        # Linear layers: every lin weight must be in the package file.
        lin_state = torch.load(lin_path, map_location="cpu", weights_only=True)  # stored on CUDA
        missing, unexpected = net.load_state_dict(lin_state, strict=False)
        # `lins.{i}` is lpips' ModuleList alias of `lin{i}` (same tensors): only the `lin{i}` names count.
        lin_missing = [k for k in missing if re.match(r"lin\d\.", k)]
        if lin_missing or unexpected:
            raise LPIPSUnavailable(
                f"{lin_path} does not match lpips' AlexNet linear layers (missing {lin_missing}, "
                f"unexpected {unexpected}); reinstall lpips", path=lin_path, reason=f"{lin_path} unusable")

        # Trunk: lpips splits torchvision's alexnet.features into slice1..slice5 whose children keep the
        # original indices ("0", "1", ...), so features.{i}.* maps to slice{k}.{i}.*; strict load checks
        # that every trunk parameter is covered and every shape matches.
        state = torch.load(path, map_location="cpu", weights_only=True)
        trunk: dict[str, torch.Tensor] = {}
        try:
            for key in net.net.state_dict():
                _slice, index, param = key.split(".", 2)
                trunk[key] = state[f"features.{index}.{param}"]
            net.net.load_state_dict(trunk, strict=True)
        except (KeyError, RuntimeError, TypeError, AttributeError) as err:
            raise LPIPSUnavailable(
                f"{path} is not a torchvision AlexNet state_dict ({err!r}); replace it with torchvision's "
                f"{name} ({AlexNet_Weights.IMAGENET1K_V1.url})",
                path=path, reason=f"{path} is not a torchvision AlexNet state_dict") from None

        for p in net.parameters():
            p.requires_grad_(False)
        device = torch.device(device)
        net = net.to(device).eval()  # eval: the linear layers' dropout must be off
        return cls(net, device)

    def _to_input(self, img: np.ndarray) -> torch.Tensor:
        # uint8 RGB -> [1, 3, H, W] in [-1, 1], as lpips expects.
        t = torch.from_numpy(np.ascontiguousarray(img)).to(self.device)
        return t.permute(2, 0, 1)[None].float() / 127.5 - 1.0

    @torch.no_grad()
    def _run(self, img: np.ndarray, ref: np.ndarray, spatial: bool) -> torch.Tensor:
        _check_pair(img, ref)
        # One network serves both outputs: lpips reads `spatial` at forward time.
        previous = self.net.spatial
        self.net.spatial = spatial
        try:
            return self.net(self._to_input(img), self._to_input(ref))
        finally:
            self.net.spatial = previous

    def __call__(self, img: np.ndarray, ref: np.ndarray) -> float:
        """LPIPS distance between uint8 ``[H, W, 3]`` RGB images (0 for identical images)."""
        return float(self._run(img, ref, spatial=False).item())

    def distance_map(self, img: np.ndarray, ref: np.ndarray) -> np.ndarray:
        """``[H, W]`` float32 LPIPS map (lpips ``spatial=True``), e.g. for means over motion boundaries."""
        return self._run(img, ref, spatial=True)[0, 0].cpu().numpy()


def lpips_or_reason(device: str | torch.device = "cpu", weights_path: str | os.PathLike | None = None
                    ) -> tuple[LPIPSMetric | None, str | None]:
    """``(metric, None)``, or ``(None, "not computed (weights unavailable: <path> missing)")`` for reports."""
    try:
        return LPIPSMetric.load(device=device, weights_path=weights_path), None
    except LPIPSUnavailable as err:
        return None, f"not computed (weights unavailable: {err.reason})"
