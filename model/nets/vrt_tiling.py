"""Any-size and tiled inference for clip models such as VRT.

Everything here works on lists of ``[B, T, C_i, H, W]`` tensors that share B, T, H and W (e.g. the
RGB clip and, for the fused model, a spike voxel grid ``[B, T, K, H, W]``), so a model that takes
several aligned inputs is padded and tiled exactly like plain VRT.

* :func:`pad_spatial` / :func:`padded_forward`: mirror-pad H and W up to multiples of ``multiple``
  and at least ``min_size`` (VRT needs multiples of 8 and >= 64), run, crop back.
* :func:`tiled_forward`: temporal clips and spatial tiles with overlap, the scheme of VRT's test
  script: clip starts ``range(0, T - tile_t, tile_t - overlap_t) + [max(0, T - tile_t)]`` (same
  rule spatially); overlapping frames are averaged with equal weights; inside a clip, at every
  interior tile edge ``overlap // 2`` pixels of the tile output are dropped (zero weight) and the
  rest is averaged. A tile size of 0 (or >= the axis) means no tiling on that axis, and with one
  tile covering the input the result equals ``fn(inputs)`` exactly.

Inputs of any size, tiled: ``tiled_forward(lambda tiles: padded_forward(lambda ts: model(*ts), tiles),
inputs, tile, overlap)``; ``model.nets.integrate_vrt.tiled_inference`` does exactly this for the fused model.
The official VRT README's settings for its deblur models: DVD/REDS ``tile=(12, 256, 256)``, GoPro
``tile=(18, 192, 192)``, ``overlap=(2, 20, 20)``.
"""

from __future__ import annotations

from typing import Callable, Sequence

import torch
from torch import Tensor

__all__ = ["mirror_indices", "pad_spatial", "padded_forward", "tile_starts", "tiled_forward"]

TileFn = Callable[[list[Tensor]], Tensor]


def mirror_indices(n: int, target: int, device: torch.device | str | None = None) -> Tensor:
    """Indices that extend an axis of length ``n`` to ``target`` by symmetric mirroring.

    The first ``n`` indices are the identity; then the axis is reflected including the edge sample
    (``..., n-2, n-1 | n-1, n-2, ...``), repeating with period ``2n`` if ``target > 2n``.
    """
    j = torch.arange(target, device=device) % (2 * n)
    return torch.where(j < n, j, 2 * n - 1 - j)


def _padded_size(n: int, multiple: int, min_size: int) -> int:
    return max(-(-n // multiple) * multiple, -(-min_size // multiple) * multiple)


def pad_spatial(x: Tensor, multiple: int = 8, min_size: int = 64) -> tuple[Tensor, tuple[int, int]]:
    """Mirror-pad the last two axes of ``x`` to multiples of ``multiple`` that are >= ``min_size``.

    Returns the padded tensor and the original (H, W). Nothing is copied if no padding is needed.
    """
    h, w = x.shape[-2:]
    hp, wp = _padded_size(h, multiple, min_size), _padded_size(w, multiple, min_size)
    if hp != h:
        x = x.index_select(-2, mirror_indices(h, hp, x.device))
    if wp != w:
        x = x.index_select(-1, mirror_indices(w, wp, x.device))
    return x, (h, w)


def padded_forward(fn: TileFn, inputs: Sequence[Tensor], *, multiple: int = 8, min_size: int = 64,
                   scale: int = 1) -> Tensor:
    """Run ``fn(list_of_padded_inputs)`` on mirror-padded inputs and crop its output.

    Args:
        fn: maps the list of padded ``[B, T, C_i, H', W']`` tensors to ``[B, T, C, H'*scale, W'*scale]``.
        inputs: tensors sharing H and W.
        multiple, min_size: padding targets (VRT: 8 and 64).
        scale: spatial upscaling of ``fn`` (1 for deblurring).
    """
    inputs = list(inputs)
    _check_same_hw(inputs)
    padded = [pad_spatial(t, multiple, min_size)[0] for t in inputs]
    h, w = inputs[0].shape[-2:]
    return fn(padded)[..., : h * scale, : w * scale]


def tile_starts(n: int, tile: int, overlap: int) -> list[int]:
    """Start offsets of tiles of length ``tile`` covering ``n`` with at least ``overlap`` overlap.

    ``range(0, n - tile, tile - overlap)`` plus a last tile flush with the end; a single start 0
    when ``tile`` is 0 or covers the axis.
    """
    if tile <= 0 or tile >= n:
        return [0]
    if not 0 <= overlap < tile:
        raise ValueError(f"overlap {overlap} must be in [0, tile={tile})")
    return list(range(0, n - tile, tile - overlap)) + [n - tile]


def _check_same_hw(inputs: Sequence[Tensor]) -> None:
    if not inputs:
        raise ValueError("need at least one input")
    b, t = inputs[0].shape[:2]
    hw = inputs[0].shape[-2:]
    for x in inputs:
        if x.ndim != 5 or x.shape[:2] != (b, t) or x.shape[-2:] != hw:
            raise ValueError(f"inputs must be [B, T, C, H, W] with equal B, T, H, W; got "
                             f"{[tuple(i.shape) for i in inputs]}")


def _spatial_tiles(fn: TileFn, clip: list[Tensor], tile_h: int, tile_w: int, ov_h: int, ov_w: int,
                   scale: int, out_device: torch.device | None) -> Tensor:
    h, w = clip[0].shape[-2:]
    hs, ws = tile_starts(h, tile_h, ov_h), tile_starts(w, tile_w, ov_w)
    th = h if len(hs) == 1 else tile_h
    tw = w if len(ws) == 1 else tile_w
    acc: Tensor | None = None
    weight: Tensor | None = None
    for h0 in hs:
        for w0 in ws:
            out = fn([x[..., h0:h0 + th, w0:w0 + tw] for x in clip])
            if out_device is not None:
                out = out.to(out_device)
            if acc is None:
                acc = out.new_zeros(*out.shape[:-2], h * scale, w * scale)
                weight = out.new_zeros(1, 1, 1, h * scale, w * scale)
            keep = out.new_ones(1, 1, 1, th * scale, tw * scale)
            # Drop overlap // 2 pixels at every interior edge (the tile's least reliable border).
            cut_h, cut_w = (ov_h // 2) * scale, (ov_w // 2) * scale
            if cut_h:
                if h0 != hs[-1]:
                    keep[..., -cut_h:, :] = 0
                if h0 != hs[0]:
                    keep[..., :cut_h, :] = 0
            if cut_w:
                if w0 != ws[-1]:
                    keep[..., :, -cut_w:] = 0
                if w0 != ws[0]:
                    keep[..., :, :cut_w] = 0
            sl = (..., slice(h0 * scale, (h0 + th) * scale), slice(w0 * scale, (w0 + tw) * scale))
            acc[sl] += out * keep
            weight[sl] += keep
    assert acc is not None and weight is not None
    return acc / weight


def tiled_forward(fn: TileFn, inputs: Sequence[Tensor], tile: Sequence[int] = (12, 256, 256),
                  overlap: Sequence[int] = (2, 20, 20), *, scale: int = 1,
                  out_device: torch.device | str | None = None) -> Tensor:
    """Tiled inference over time and space.

    Args:
        fn: maps a list of input tiles ``[B, t, C_i, h, w]`` (same order as ``inputs``) to an output
            tile ``[B, t, C, h*scale, w*scale]``. Tiles may be smaller than ``tile`` when the input
            is (no padding here; wrap ``fn`` with :func:`padded_forward` if the model needs it).
        inputs: ``[B, T, C_i, H, W]`` tensors sharing B, T, H and W.
        tile: (frames, height, width) per tile; 0 disables tiling on that axis.
        overlap: (frames, height, width) overlaps.
        scale: spatial scale of ``fn`` (1 for deblurring).
        out_device: where outputs are accumulated (e.g. 'cpu' to keep full frames off the GPU).

    Returns:
        ``[B, T, C, H*scale, W*scale]``.
    """
    inputs = list(inputs)
    _check_same_hw(inputs)
    tile_t, tile_h, tile_w = tile
    ov_t, ov_h, ov_w = overlap
    t = inputs[0].shape[1]
    out_dev = torch.device(out_device) if out_device is not None else None
    starts = tile_starts(t, tile_t, ov_t)
    tt = t if len(starts) == 1 else tile_t
    acc: Tensor | None = None
    weight: Tensor | None = None
    for d0 in starts:
        clip = [x[:, d0:d0 + tt] for x in inputs]
        out = _spatial_tiles(fn, clip, tile_h, tile_w, ov_h, ov_w, scale, out_dev)
        if len(starts) == 1:
            return out
        if acc is None:
            acc = out.new_zeros(out.shape[0], t, *out.shape[2:])
            weight = out.new_zeros(1, t, 1, 1, 1)
        acc[:, d0:d0 + tt] += out
        weight[:, d0:d0 + tt] += 1
    assert acc is not None and weight is not None
    return acc / weight
