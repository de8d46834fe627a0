"""The one restore loop (DESIGN section 8), shared by validation and ``spikeprep test``.

``Restorer`` runs the model on one clip at a time through ``tiled_inference`` (under ``no_grad``, fp16 autocast
with AMP, model time measured); ``restore_clips`` converts the frames no earlier clip produced to uint8
(``tensor_to_uint8``) and, when asked, writes them as PNGs. A non-finite output is ``NonFiniteOutput``, never
an image.
"""
from __future__ import annotations

import time
from collections.abc import Callable, Hashable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from model.metrics import tensor_to_uint8
from model.nets.integrate_vrt import SpikeVRT, tiled_inference
from spikeprep.errors import SpikeprepError
from spikeprep.images import write_rgb
from spikeprep.spike_deblur_dataset import first_seen

TileSpec = Sequence[int] | Callable[[torch.Size], Sequence[int]]


class Restorer:
    """``model`` on one clip at a time: ``tiled_inference`` with ``tile``/``overlap`` (frames, height,
    width; ``tile`` may be a function of the clip's ``[T, 3, H, W]`` shape), under ``no_grad`` and fp16
    autocast when ``amp``. ``seconds`` adds up the model time (CUDA synchronised), ``first_clip_seconds``
    is the first clip's (warm-up included)."""

    def __init__(self, model: SpikeVRT, device: torch.device, *, tile: TileSpec, overlap: Sequence[int],
                 amp: bool = False):
        self.model, self.device, self.tile, self.overlap, self.amp = model, device, tile, tuple(overlap), amp
        self.seconds = 0.0
        self.first_clip_seconds: float | None = None

    def _sync(self) -> None:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @torch.no_grad()
    def __call__(self, blur: torch.Tensor, spike: torch.Tensor | None) -> torch.Tensor:
        """The restored clip ``[T, 3, H, W]`` (on the CPU) of ``blur [T, 3, H, W]`` and ``spike [T, K, H, W]``."""
        tile = tuple(self.tile(blur.shape) if callable(self.tile) else self.tile)
        b = blur[None].to(self.device)
        v = None if spike is None else spike[None].to(self.device)
        self._sync()
        t0 = time.perf_counter()
        with torch.autocast(self.device.type, dtype=torch.float16, enabled=self.amp):
            recon = tiled_inference(self.model, b, v, tile=tile, overlap=self.overlap, out_device="cpu")[0]
        self._sync()
        elapsed = time.perf_counter() - t0
        self.seconds += elapsed
        self.first_clip_seconds = elapsed if self.first_clip_seconds is None else self.first_clip_seconds
        return recon

    def frames(self, blur: torch.Tensor, spike: torch.Tensor | None, positions: Iterable[int]) -> dict[int, np.ndarray]:
        """uint8 ``[H, W, 3]`` restorations of the clip's frames at ``positions``.

        Raises:
            NonFiniteOutput: the model's output for one of them holds a NaN or an infinity (as uint8 it would
                be a constant-colour image that looks like a result).
        """
        recon = self(blur, spike)
        out = {}
        for k in positions:
            frame = recon[k].float()
            finite = torch.isfinite(frame)
            if not bool(finite.all()):
                bad = int((~finite).sum())
                raise NonFiniteOutput(f"clip position {k}: {bad} of {frame.numel()} output values are NaN or "
                                      "infinite", k, bad, frame.numel())
            out[k] = tensor_to_uint8(frame)
        return out


class NonFiniteOutput(SpikeprepError):
    """The model restored a frame to NaN or infinite values; ``position``: the frame's position in its clip,
    ``bad`` of ``total`` values are not finite."""

    def __init__(self, message: str, position: int, bad: int, total: int):
        super().__init__(message)
        self.position, self.bad, self.total = position, bad, total


@dataclass(frozen=True)
class Clip:
    """One clip to restore: ``frames`` name its frames within sequence ``seq`` (frame_idx, or positions);
    ``index`` is the Dataset's clip index and ``sharp`` its sharp frames, where there are some."""

    seq: str
    frames: Sequence[Hashable]
    blur: torch.Tensor                 # [T, 3, H, W] RGB in [0, 1]
    spike: torch.Tensor | None         # [T, K, H, W] normalised voxels; None for the spike-free arm
    index: int | None = None
    sharp: torch.Tensor | None = None


@dataclass(frozen=True)
class RestoredClip:
    """A clip's frames that no earlier clip produced: ``new`` ``[(position, frame)]``, ``recon[position]``
    uint8 ``[H, W, 3]``, and ``paths[position]`` where each was written (empty when not written)."""

    clip: Clip
    new: list[tuple[int, Hashable]]
    recon: dict[int, np.ndarray]
    paths: dict[int, Path]


def restore_clips(restorer: Restorer, clips: Iterable[Clip],
                  recon_path: Callable[[str, Hashable], Path] | None = None,
                  params: list[int] | None = None) -> Iterator[RestoredClip]:
    """Restore each clip's frames that no earlier clip produced (a clip with none is skipped); with
    ``recon_path(seq, frame)`` each is written there (``write_rgb`` with ``params``: None, its default)."""
    done: set = set()
    for clip in clips:
        new = first_seen(done, clip.seq, clip.frames)
        if not new:
            continue
        try:
            recon = restorer.frames(clip.blur, clip.spike, [k for k, _ in new])
        except NonFiniteOutput as err:
            frame = dict(new).get(err.position, clip.frames[err.position])
            where = f" (its image would be {recon_path(clip.seq, frame)})" if recon_path is not None else ""
            raise NonFiniteOutput(f"the model's output for sequence {clip.seq}, frame {frame}{where} is not "
                                  f"finite: {err.bad} of {err.total} values are NaN or infinite", err.position,
                                  err.bad, err.total) from None
        paths = {}
        if recon_path is not None:
            for k, frame in new:
                paths[k] = recon_path(clip.seq, frame)
                paths[k].parent.mkdir(parents=True, exist_ok=True)
                write_rgb(paths[k], recon[k], params)
        yield RestoredClip(clip, new, recon, paths)
