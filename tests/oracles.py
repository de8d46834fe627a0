"""Test oracles shared by several test files.

``voxelize`` is the original design document's reference voxelizer (section 3.3), kept verbatim: the
exactness oracle for our Numba voxelizer, SpikeSource and ingest, and the "reference" row of
benchmarks/voxelizer.py (which puts tests/ on sys.path to import it).
"""
import numpy as np


def voxelize(events, t0, t1, H, W, K=32):
    """
    将事件流体素化为 K 个时间段的计数图
    
    Args:
        events: (N, 3/4) -> (t, y, x) 或 (t, y, x, p)
        t0, t1: 时间窗口起止
        H, W: 图像高宽
        K: 体素段数
    
    Returns:
        vox: (K, H, W) 体素化计数
    """
    vox = np.zeros((K, H, W), dtype=np.float32)
    dur = (t1 - t0)
    bin_idx = np.floor((events[:,0] - t0) / max(dur, 1e-9) * K).astype(np.int64)
    bin_idx = np.clip(bin_idx, 0, K-1)
    ys = events[:,1].astype(np.int64)
    xs = events[:,2].astype(np.int64)
    np.add.at(vox, (bin_idx, ys, xs), 1.0)
    return vox  # 后续再做 log1p 与标准化



def voxelize_exact(frames, times, t0, t1, K=32):
    """The reference bin expression ``floor((t - t0) / (t1 - t0) * K)``, clipped to ``[0, K-1]``, evaluated
    in exact rational arithmetic: the oracle of tick-exact binning (frame-based sources, DESIGN section 3).

    frames: upright binary frames [N, H, W]; times: each frame's exact time (``fractions.Fraction``, e.g.
    ``Fraction(start) + Fraction(j) / Fraction(rate)``); t0, t1: the window's exact edges. Frames with
    ``t0 <= t < t1`` are counted. Returns uint32 [K, H, W].
    """
    import math
    from fractions import Fraction

    t0, t1 = Fraction(t0), Fraction(t1)
    frames = np.asarray(frames)
    out = np.zeros((K,) + frames.shape[1:], dtype=np.uint32)
    for f, t in enumerate(times):
        t = Fraction(t)
        if t0 <= t < t1:
            k = min(max(math.floor((t - t0) / (t1 - t0) * K), 0), K - 1)
            out[k] += frames[f].astype(np.uint32)
    return out
