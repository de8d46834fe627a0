"""The spike head: spikes reach the restored frame directly (``FUSE.TYPE: ResidualTemporalCrossAttnSpikeHead``).

VRT restores a frame as ``blur + conv_last(h)``, ``h = conv_first(aligned input) + conv_after_body(stages
1-8)``: every feature the fusion changes must cross stages 5-8 and the head before it touches the output.
Within the steps a CPU (or a short GPU run) gives, those stages barely move (benchmarks/RESULTS.md, "Why the
spikes did not count"), so spikes fused only there cannot show. The spike head adds a short, zero-initialised path
beside VRT's head, per frame at full resolution::

    recon = blur + conv_last(h) + [conv3x3(Fs'_1) + conv3x3(spike_vox) + conv3x3(h)]  (one channel, added to R, G, B)

with Fs'_1 the spike branch's full-resolution features (after its temporal self-attention), spike_vox the
normalised voxels themselves and h VRT's reconstruction features. Spikes are monochrome (a spike camera
integrates luma), so the head predicts a luma correction, the same for the three channels; colour stays
VRT's (adding d to R, G and B adds d to Rec.601 luma, whose weights sum to 1). The three convolutions start
at zero, so the spike arm's output equals plain VRT's at initialisation.

The fitted spike head (``FUSE.TYPE: ResidualTemporalCrossAttnFittedSpikeHead``, ``FittedSpikeHead``) adds two
inputs and starts somewhere else::

    ... + conv3x3(standardised counts) + conv3x3(standardised blur)   counts = expm1(spike_vox * STD + MEAN)

Why: the model's voxels are ``(log1p(count) - MEAN) / STD`` (DESIGN section 6), but light is linear in the
counts, not in their logarithm: on the acceptance store a per-pixel least-squares map from the normalised
voxels + blur RGB to the sharp luma scores 1.55 dB below the same map from the counts
(``benchmarks/lsq_inputs.py``), so a linear head on the voxels starts from a worse family than the baseline it
must clear. The fitted head undoes the normalisation exactly (its MEAN and STD are buffers, saved with the
weights), standardises counts and blur by their training-split moments (buffers too), and its new centre
taps and bias start at the least-squares map of ``spikeprep baselines``,
fitted on the training split before step 0 (``FittedSpikeHead.fit_start``): the spike arm starts where the
least-squares baseline ends, and training adds the spatial context, the spike features and VRT's own
restoration. It is therefore not plain VRT at initialisation.
"""
from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from spikeprep.baselines import GATE_BOX, GATE_EPS, LsqAccumulator
from spikeprep.lsq import fit_gated_lsq, lsq_accumulate
from spikeprep.errors import SpikeprepError
from spikeprep.images import LUMA_601
from spikeprep.spike_deblur_dataset import SpikeDeblurDataset


class SpikeHead(nn.Module):
    """``(Fs'_1, spike_vox, h)`` -> a luma correction ``[B, T, 1, H, W]`` (added to every RGB channel); zero at
    initialisation.

    Args:
        spike_channels: C_1 of Fs'_1.
        num_bins: K of the voxels.
        head_channels: channels of VRT's reconstruction features h (conv_last's input, C_1).
    """

    def __init__(self, spike_channels: int, num_bins: int, head_channels: int):
        super().__init__()
        out_channels = 1
        self.from_spike_features = nn.Conv2d(spike_channels, out_channels, 3, padding=1)
        self.from_voxels = nn.Conv2d(num_bins, out_channels, 3, padding=1, bias=False)
        self.from_vrt = nn.Conv2d(head_channels, out_channels, 3, padding=1, bias=False)
        for conv in (self.from_spike_features, self.from_voxels, self.from_vrt):
            nn.init.zeros_(conv.weight)
            if conv.bias is not None:
                nn.init.zeros_(conv.bias)

    def forward(self, fs1: torch.Tensor, spike_vox: torch.Tensor, h: torch.Tensor,
                blur: torch.Tensor | None = None) -> torch.Tensor:
        """``fs1 [B, T, C, H, W]``, ``spike_vox [B, T, K, H, W]``, ``h [B, C_h, T, H, W]`` (conv3d layout,
        as VRT holds it) -> ``[B, T, 1, H, W]``. ``blur [B, T, 3, H, W]`` is read by ``FittedSpikeHead`` only."""
        b, t, _, height, width = fs1.shape
        flat = lambda x: x.reshape(b * t, -1, height, width)  # noqa: E731
        out = (self.from_spike_features(flat(fs1)) + self.from_voxels(flat(spike_vox))
               + self.from_vrt(flat(h.transpose(1, 2))))
        return out.reshape(b, t, -1, height, width)


class FittedSpikeHead(SpikeHead):
    """``SpikeHead`` that also reads the spike counts (the voxels' normalisation undone) and the blur frame, and
    starts at the least-squares map from ``(counts, blur RGB, 1)`` to the sharp luma (module docstring).

    Both new inputs pass through an affine normalisation ``(x - input_mean) / input_scale`` (buffers) chosen
    at the start: ``fit_start`` divides the counts by their RMS over the training split and leaves the blur as
    it is, which measured better than centring and standardising both (benchmarks/RESULTS.md, "Spike
    ablation").

    Its start has one entry point, ``fit_start``, which the trainer calls before step 0 of a run from scratch;
    until then it is zero, like ``SpikeHead``. Loading is the state_dict's: the fitted weights and the
    normalisation buffers travel with the weights, so a resumed run and ``spikeprep test`` load them as they
    were fitted.

    Args: as ``SpikeHead``.
    """

    def __init__(self, spike_channels: int, num_bins: int, head_channels: int):
        super().__init__(spike_channels, num_bins, head_channels)
        self.from_counts = nn.Conv2d(num_bins, 1, 3, padding=1, bias=False)
        self.from_blur = nn.Conv2d(3, 1, 3, padding=1, bias=False)
        for conv in (self.from_counts, self.from_blur):
            nn.init.zeros_(conv.weight)
        # (MEAN, STD) of the voxels' log1p(count) normalisation; mean and scale of (K counts, blur R, G, B)
        self.register_buffer("voxel_norm", torch.tensor([0.0, 1.0]))
        self.register_buffer("input_mean", torch.zeros(num_bins + 3))
        self.register_buffer("input_scale", torch.ones(num_bins + 3))

    def fitted_parameters(self) -> list[nn.Parameter]:
        """The parameters ``fit_start`` sets (TRAIN.OPTIM.FITTED_HEAD_LR_SCALE applies to them): the count and
        blur taps and the bias."""
        return [self.from_counts.weight, self.from_blur.weight, self.from_spike_features.bias]

    def counts(self, spike_vox: torch.Tensor) -> torch.Tensor:
        """The stored counts ``[..., K, H, W]`` of normalised voxels (the Dataset's normalisation undone)."""
        mean, std = self.voxel_norm[0], self.voxel_norm[1]
        return torch.expm1(spike_vox * std + mean).clamp_min(0)

    def normalised(self, counts: torch.Tensor, blur: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(counts, blur)`` (``[N, K, H, W]``, ``[N, 3, H, W]``) minus ``input_mean``, over ``input_scale``."""
        k = counts.shape[1]
        view = lambda v: v.view(1, -1, 1, 1)  # noqa: E731
        return ((counts - view(self.input_mean[:k])) / view(self.input_scale[:k]),
                (blur - view(self.input_mean[k:])) / view(self.input_scale[k:]))

    def fit_start(self, train_ds: SpikeDeblurDataset, say: Callable[[str], None]) -> None:
        """Start at the least-squares map of the training split ``train_ds`` (its normal equations over every
        kept frame, ``spikeprep.lsq.lsq_accumulate``, with ``totals_only`` as the Dataset serves). The counts
        are divided by their RMS over the split, the blur is left as it is, and the voxel normalisation is the
        Dataset's. The fit is deterministic, so DDP's replicas agree without a broadcast.

        Raises ``SpikeprepError`` when no training frame could be read; starts at zero (and says so) when the
        split holds no spike.
        """
        acc, frames = lsq_accumulate(train_ds.root, train_ds.split, totals_only=train_ds.totals_only)
        count_rms = self._check_split(frames, acc, train_ds, say)
        if count_rms is None:
            return
        k = acc.num_bins
        self.start_from_least_squares(acc.solve(), np.zeros(k + 3), np.array([count_rms] * k + [1.0] * 3),
                                      train_ds.norm_mean, train_ds.norm_std)
        say(f"spike head: started at the least-squares map of {frames} {train_ds.split} frames"
            f"{' (totals-only counts: DATA.TOTALS_ONLY)' if train_ds.totals_only else ''}")

    @staticmethod
    def _check_split(frames: int, acc: LsqAccumulator, train_ds: SpikeDeblurDataset,
                     say: Callable[[str], None]) -> float | None:
        """The counts' RMS over the split; None (said) when it holds no spike; ``SpikeprepError`` with no frame."""
        root, split = train_ds.root, train_ds.split
        if frames == 0:      # every training sample unreadable: the training loop's own check would come too late
            raise SpikeprepError(
                f"{root}: every {split} frame was unreadable, so the fitted spike head has no least-squares start "
                f"(the warnings above name the files). Fix: re-run `spikeprep ingest` for the damaged sequences "
                f"(a rerun rebuilds what changed) or remove them")
        count_rms = acc.count_rms()
        if count_rms == 0:
            say(f"spike head: no spike in the {frames} {split} frames of {root}; it starts at zero instead of "
                "the least-squares map")
            return None
        return count_rms

    @torch.no_grad()
    def start_from_least_squares(self, coef: np.ndarray, input_mean: np.ndarray, input_scale: np.ndarray,
                                 norm_mean: float, norm_std: float) -> None:
        """Set the head to the luma of ``spikeprep.baselines``' least-squares map.

        ``coef [K * t**2 + 4, 3]`` maps ``(K counts over a t x t neighbourhood, blur R, G, B, 1)`` to sharp RGB
        (``spikeprep.baselines.lsq_features``; t is 1 or the head's kernel size); its luma is ``coef @ LUMA_601``
        (least squares is linear in its targets, so this is the least-squares fit of the sharp luma). VRT's
        output already holds the blur, so the blur taps get that luma minus Rec.601's weights.
        ``input_mean``/``input_scale [K + 3]`` normalise the inputs (a scale of 0 is taken as 1);
        ``norm_mean``/``norm_std`` are the Dataset's voxel normalisation.
        """
        k = self.from_counts.in_channels
        coef = np.asarray(coef, np.float64)
        taps = self.from_counts.kernel_size[0]
        fitted_taps = round(np.sqrt(max(coef.shape[0] - 4, 0) / k)) if coef.ndim == 2 else 0
        if coef.ndim != 2 or fitted_taps not in (1, taps) or coef.shape != (k * fitted_taps ** 2 + 4, 3):
            raise ValueError(f"least-squares coefficients are {coef.shape}, expected {(k + 4, 3)} or "
                             f"{(k * taps ** 2 + 4, 3)}")
        mean, scale = (np.asarray(a, np.float64) for a in (input_mean, input_scale))
        if mean.shape != (k + 3,) or scale.shape != (k + 3,) or not (np.isfinite(mean).all()
                                                                     and np.isfinite(scale).all()):
            raise ValueError(f"input normalisation must be finite [{k + 3}] arrays, got {mean.shape} and "
                             f"{scale.shape}")
        scale = np.where(scale > 0, scale, 1.0)
        luma_w = np.asarray(LUMA_601, np.float64)
        y = coef @ luma_w
        kt = k * fitted_taps ** 2
        count_w = y[:kt].reshape(k, fitted_taps, fitted_taps)
        w = np.concatenate([count_w.sum(axis=(1, 2)), y[kt:kt + 3] - luma_w])  # d = w . x + y[-1], x = mean + scale * z
        dtype = self.from_counts.weight.dtype
        self.voxel_norm.copy_(torch.tensor([norm_mean, norm_std], dtype=self.voxel_norm.dtype))
        self.input_mean.copy_(torch.as_tensor(mean, dtype=self.input_mean.dtype))
        self.input_scale.copy_(torch.as_tensor(scale, dtype=self.input_scale.dtype))
        self.from_counts.weight.zero_()
        first = (taps - fitted_taps) // 2
        window = slice(first, first + fitted_taps)
        self.from_counts.weight[0, :, window, window] = torch.as_tensor(count_w * scale[:k, None, None], dtype=dtype)
        self.from_blur.weight[0, :, taps // 2, taps // 2] = torch.as_tensor(w[k:] * scale[k:], dtype=dtype)
        self.from_spike_features.bias[0] = float(y[kt + 3] + w @ mean)

    def forward(self, fs1: torch.Tensor, spike_vox: torch.Tensor, h: torch.Tensor,
                blur: torch.Tensor | None = None) -> torch.Tensor:
        """As ``SpikeHead.forward``, plus ``blur [B, T, 3, H, W]`` (required)."""
        if blur is None:
            raise ValueError("FittedSpikeHead reads the blur clip: pass blur [B, T, 3, H, W]")
        b, t, _, height, width = fs1.shape
        flat = lambda x: x.reshape(b * t, -1, height, width)  # noqa: E731
        counts, blur_z = self.normalised(self.counts(flat(spike_vox)), flat(blur))
        extra = self.from_counts(counts) + self.from_blur(blur_z)
        return super().forward(fs1, spike_vox, h) + extra.reshape(b, t, -1, height, width)


class GatedSpikeHead(FittedSpikeHead):
    """``FittedSpikeHead`` whose correction passes a per-pixel gate (``FUSE.TYPE:
    ResidualTemporalCrossAttnGatedSpikeHead``), so the spikes act where things move and leave still areas to
    VRT::

        d    = FittedSpikeHead(Fs'_1, spike_vox, h, blur)              the luma correction
        gate = sigmoid(slope * (log(E + eps) - threshold) + conv3x3(h) + conv3x3(Fs'_1))
        out  = gate * d,    E = mean of d^2 over a GATE_BOX x GATE_BOX window (d taken as a constant)

    Why: the fitted head applies one linear map everywhere, so on still areas it adds the counts' quantisation
    noise to a blur frame that was already right: grain, and on a store with little motion a spike arm below
    plain VRT (benchmarks/RESULTS.md, "Spike arm: gated heads"). ``fit_start`` starts it at the gated
    least-squares map of the training split (``spikeprep.lsq.fit_gated_lsq``): the map over the counts' 3x3
    neighbourhood, and the gate's slope and threshold fitted to it; the two gate convolutions start at zero,
    so at step 0 the head is exactly that non-learned map. Training then moves the map, the gate's scalars
    and the convolutions that let VRT's features h and the spike branch's Fs'_1 open or close the gate.

    Args: as ``SpikeHead``, and
        gate_from_features: False leaves out the two gate convolutions (the gate reads the correction's energy
            alone; ``FUSE.TYPE: ResidualTemporalCrossAttnEnergyGatedSpikeHead``).
        gates_vrt: the gate also scales VRT's own residual (``FUSE.TYPE:
            ResidualTemporalCrossAttnMotionGatedSpikeHead``): ``recon = blur + gate * (conv_last(h) + d)``, so
            where the spikes see no motion the output is the blur, which there is already sharp. The model
            calls ``gated_restoration`` instead of adding ``forward``'s correction to VRT's output.
    """

    def __init__(self, spike_channels: int, num_bins: int, head_channels: int, gate_from_features: bool = True,
                 gates_vrt: bool = False):
        super().__init__(spike_channels, num_bins, head_channels)
        self.gates_vrt = gates_vrt
        self.gate_from_vrt = self.gate_from_spike_features = None
        if gate_from_features:
            self.gate_from_vrt = nn.Conv2d(head_channels, 1, 3, padding=1, bias=False)
            self.gate_from_spike_features = nn.Conv2d(spike_channels, 1, 3, padding=1, bias=False)
            for conv in (self.gate_from_vrt, self.gate_from_spike_features):
                nn.init.zeros_(conv.weight)
        # (slope 1, not 0: at 0 the threshold would get no gradient until the slope moved, and the slope none
        # while the correction is zero; fit_start sets both)
        self.gate_slope = nn.Parameter(torch.ones(()))
        self.gate_threshold = nn.Parameter(torch.zeros(()))
        self.register_buffer("gate_box", torch.tensor(GATE_BOX))

    def fitted_parameters(self) -> list[nn.Parameter]:
        """As ``FittedSpikeHead``'s, and the gate's slope and threshold."""
        return [*super().fitted_parameters(), self.gate_slope, self.gate_threshold]

    def gate(self, d: torch.Tensor, fs1: torch.Tensor, h: torch.Tensor) -> torch.Tensor:
        """The gate ``[N, 1, H, W]`` on the correction ``d [N, 1, H, W]``; ``fs1 [N, C, H, W]``, ``h [N, C_h, H, W]``."""
        box = int(self.gate_box)
        energy = F.avg_pool2d(d.detach().square(), box, stride=1, padding=box // 2, count_include_pad=False)
        logit = self.gate_slope * (torch.log(energy + GATE_EPS) - self.gate_threshold)
        if self.gate_from_vrt is not None:
            logit = logit + self.gate_from_vrt(h) + self.gate_from_spike_features(fs1)
        return torch.sigmoid(logit)

    def gate_and_correction(self, fs1: torch.Tensor, spike_vox: torch.Tensor, h: torch.Tensor,
                            blur: torch.Tensor | None) -> tuple[torch.Tensor, torch.Tensor]:
        """``(gate, d)``, both ``[B, T, 1, H, W]``: the gate and the ungated correction ``FittedSpikeHead`` gives."""
        d = super().forward(fs1, spike_vox, h, blur)
        b, t, _, height, width = d.shape
        flat = lambda x: x.reshape(b * t, -1, height, width)  # noqa: E731
        return self.gate(flat(d), flat(fs1), flat(h.transpose(1, 2))).reshape(d.shape), d

    def forward(self, fs1: torch.Tensor, spike_vox: torch.Tensor, h: torch.Tensor,
                blur: torch.Tensor | None = None) -> torch.Tensor:
        """As ``FittedSpikeHead.forward``: the gated correction ``[B, T, 1, H, W]``."""
        g, d = self.gate_and_correction(fs1, spike_vox, h, blur)
        return g * d

    def gated_restoration(self, fs1: torch.Tensor, spike_vox: torch.Tensor, h: torch.Tensor, blur: torch.Tensor,
                          vrt_residual: torch.Tensor) -> torch.Tensor:
        """``blur + gate * (vrt_residual + d)`` ``[B, T, 3, H, W]`` (``gates_vrt``); ``vrt_residual [B, T, 3, H,
        W]`` is VRT's output minus its input, ``conv_last(h)``."""
        g, d = self.gate_and_correction(fs1, spike_vox, h, blur)
        return blur + g * (vrt_residual + d)

    def fit_start(self, train_ds: SpikeDeblurDataset, say: Callable[[str], None]) -> None:
        """Start at the gated least-squares map of the training split (``spikeprep.lsq.fit_gated_lsq``, with
        ``totals_only`` as the Dataset serves): the map's 3x3 count taps, centre blur taps and bias as
        ``FittedSpikeHead.fit_start`` sets them, then the gate's slope and threshold. Errors as there."""
        taps = self.from_counts.kernel_size[0]
        acc, frames = lsq_accumulate(train_ds.root, train_ds.split, totals_only=train_ds.totals_only, taps=taps)
        count_rms = self._check_split(frames, acc, train_ds, say)
        if count_rms is None:
            return
        fit = fit_gated_lsq(train_ds.root, train_ds.split, acc, totals_only=train_ds.totals_only,
                            box=int(self.gate_box))
        k = self.from_counts.in_channels
        self.start_from_least_squares(fit.coef, np.zeros(k + 3), np.array([count_rms] * k + [1.0] * 3),
                                      train_ds.norm_mean, train_ds.norm_std)
        with torch.no_grad():
            self.gate_slope.fill_(fit.slope)
            self.gate_threshold.fill_(fit.threshold)
        say(f"spike head: started at the gated least-squares map of {frames} {train_ds.split} frames "
            f"(3x3 count taps; gate slope {fit.slope:.3g}, threshold {fit.threshold:.3g})"
            f"{' (totals-only counts: DATA.TOTALS_ONLY)' if train_ds.totals_only else ''}")
