"""`spikeprep baselines`: TFP, TFI and the least-squares map, against independent oracles (numpy's lstsq,
hand-counted intervals, a brute-force isotonic fit) and scored exactly like validation."""
from __future__ import annotations

import json

import numpy as np
import pytest
import yaml
import zarr
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from cli.main import main as cli
from model.baseline_scores import score_baselines
from model.metrics import image_metrics, masked_metrics, motion_boundary_mask, static_mask
from schemas.baselines import baselines_path, read_baselines_report
from spikeprep import baselines as bl
from spikeprep.images import read_rgb
from spikeprep.lsq import fit_lsq
from spikeprep.store import read_manifest

from conftest import TRAIN_K, tiny_config_dict


# ---- the least-squares map ---------------------------------------------------------------------------
def _stacked_design(store, split):
    """X [N, K+4] and Y [N, 3] of every kept frame of ``split``, read straight from zarr and the PNGs."""
    rows = read_manifest(store).to_pydict()
    xs, ys = [], []
    for i, s in enumerate(rows["split"]):
        if s != split or rows["status"][i] != "ok":
            continue
        counts = zarr.open_array(store / split / rows["seq"][i] / "spike_vox.zarr" / "counts", mode="r")[rows["vox_index"][i]]
        blur = read_rgb(store / rows["blur"][i]).astype(np.float64) / 255
        sharp = read_rgb(store / rows["sharp"][i]).astype(np.float64) / 255
        sy, sx = blur.shape[1] // counts.shape[1], blur.shape[2] // counts.shape[2]
        up = np.repeat(np.repeat(counts, sy, axis=1), sx, axis=2)
        xs.append(np.concatenate([up.reshape(counts.shape[0], -1), blur.reshape(3, -1),
                                  np.ones((1, blur.shape[1] * blur.shape[2]))]).T)
        ys.append(sharp.reshape(3, -1).T)
    return np.concatenate(xs), np.concatenate(ys)


def test_lsq_map_equals_numpy_lstsq_on_a_tiny_store(train_store):
    coef, frames = fit_lsq(train_store, "train")
    x, y = _stacked_design(train_store, "train")
    expected = np.linalg.lstsq(x, y, rcond=None)[0]
    assert coef.shape == (TRAIN_K + 4, 3) and frames == 12
    np.testing.assert_allclose(coef, expected, rtol=1e-6, atol=1e-7)   # normal equations vs QR: rounding only


def test_lsq_accumulator_gives_the_minimum_norm_solution_when_a_bin_is_always_empty(rng):
    acc = bl.LsqAccumulator(4)
    frames = []
    for _ in range(3):
        counts = rng.integers(0, 3, (4, 6, 5)).astype(np.uint8)
        counts[2] = 0                                   # rank-deficient design: bin 2 never fires
        blur, sharp = rng.random((3, 12, 10)), rng.random((3, 12, 10))
        acc.add(counts, blur, sharp)
        frames.append((counts, blur, sharp))
    x = np.concatenate([bl.lsq_features(c, b) for c, b, _ in frames])
    y = np.concatenate([s.reshape(3, -1).T for *_, s in frames])
    np.testing.assert_allclose(acc.solve(), np.linalg.lstsq(x, y, rcond=None)[0], atol=1e-9)
    assert acc.rows == 3 * 120
    # per input (counts at every RGB pixel they cover, blur RGB): mean and std of the stacked rows
    mean, std = acc.input_moments()
    np.testing.assert_allclose(mean, x[:, :7].mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(std, x[:, :7].std(axis=0), rtol=1e-9, atol=1e-12)
    assert std[2] == 0                                # the bin that never fires
    for empty in (bl.LsqAccumulator(4).solve, bl.LsqAccumulator(4).input_moments):
        with pytest.raises(ValueError, match="no training pixels"):
            empty()


def test_lsq_features_replicate_each_spike_pixel_over_its_rgb_block():
    counts = np.arange(2 * 2 * 3, dtype=np.uint8).reshape(2, 2, 3)
    blur = np.zeros((3, 4, 6))
    x = bl.lsq_features(counts, blur)
    assert x.shape == (24, 2 + 4)
    grid = x[:, 0].reshape(4, 6)
    assert (grid[0:2, 0:2] == counts[0, 0, 0]).all() and (grid[2:4, 4:6] == counts[0, 1, 2]).all()
    assert (x[:, -1] == 1).all()
    with pytest.raises(ValueError, match="integer multiple"):
        bl.lsq_features(counts, np.zeros((3, 5, 6)))


# ---- rate to luma, TFP, TFI ---------------------------------------------------------------------------
def _brute_isotonic(xs, ys, ws):
    """Minimise sum w (f - y)^2 over non-decreasing f by exhaustive pooling of contiguous blocks (small n)."""
    n = len(xs)
    best, best_cost = None, np.inf
    for mask in range(1 << (n - 1)):                  # every way to cut the sorted values into blocks
        cuts = [i + 1 for i in range(n - 1) if mask >> i & 1]
        f = np.empty(n)
        for a, b in zip([0, *cuts], [*cuts, n]):
            f[a:b] = np.average(ys[a:b], weights=ws[a:b])
        if np.all(np.diff(f) >= -1e-12):
            cost = float(np.sum(ws * (f - ys) ** 2))
            if cost < best_cost:
                best, best_cost = f, cost
    return best


@given(st.lists(st.tuples(st.integers(0, 6), st.floats(0, 1)), min_size=1, max_size=24))
def test_isotonic_fit_is_the_least_squares_monotone_fit(pairs):
    x = np.array([p[0] for p in pairs], float)
    y = np.array([p[1] for p in pairs])
    knots, values = bl.isotonic_fit(x, y)
    assert np.all(np.diff(knots) > 0) and np.all(np.diff(values) >= -1e-12)
    xs, inv, counts = np.unique(x, return_inverse=True, return_counts=True)
    means = np.bincount(inv, weights=y) / counts
    np.testing.assert_allclose(values, _brute_isotonic(xs, means, counts.astype(float)), atol=1e-9)


def test_tfp_reads_the_centre_rate_through_the_frames_own_curve():
    # Left half static at rate 1 per bin, right half static at rate 2 (the curve: rate 1 -> luma .3,
    # 2 -> .6); one pixel bright in the centre bins only: its TFP luma is the curve at its centre rate.
    k = 8
    counts = np.ones((k, 4, 4), np.uint8)
    counts[:, :, 2:] = 2
    counts[:, 0, 0] = [0, 0, 0, 2, 2, 0, 0, 0]       # full-window rate 0.5, centre (2 bins) rate 2
    blur = np.empty((3, 4, 4))
    blur[:, :, :2], blur[:, :, 2:] = 0.3, 0.6
    out = bl.tfp(counts, blur, 2)
    np.testing.assert_allclose(out[:, 1:, :], blur[:, 1:, :])          # static pixels keep their blur
    np.testing.assert_allclose(out[:, 0, 0], blur[:, 0, 0] + 0.6 - 0.3)   # luma .3 -> .6, colour kept
    with pytest.raises(ValueError, match="parity"):
        bl.tfp(counts, blur, 3)
    with pytest.raises(ValueError, match="between 1 and K"):
        bl.tfp(counts, blur, 9)


def test_tfi_uses_the_interval_that_spans_the_centre():
    k = 8
    counts = np.zeros((k, 1, 3), np.uint8)
    counts[[2, 5], 0, 0] = 1                     # spikes at bins 2 and 5: ISI 3 bins -> 1/3 spike per bin
    counts[[0, 3, 4, 7], 0, 1] = 1               # 3 | 4 spans the centre: ISI 1
    counts[[5, 6], 0, 2] = 1                     # nothing before the centre: keeps the full-window rate
    blur = np.empty((3, 1, 3))
    blur[:, 0] = [0.2, 0.6, 0.2]                 # full-window rates 0.25, 0.5, 0.25: curve 0.25 -> .2, 0.5 -> .6
    knots_rate = counts.sum(0)[0] / k
    assert bl.tfi_applies(k, 8) and not bl.tfi_applies(k, 9)
    out = bl.tfi(counts, blur)
    curve = bl.rate_to_luma(counts.sum(0, dtype=float) / k, bl.block_mean(bl.luma(blur), (1, 1)))
    expected = curve(np.array([1 / 3, 1.0, knots_rate[2]]))
    np.testing.assert_allclose(bl.luma(out)[0], expected)
    np.testing.assert_allclose(expected, [0.2 + (1 / 3 - 0.25) / 0.25 * 0.4, 0.6, 0.2])
    with pytest.raises(ValueError, match="at most one spike per bin"):
        bl.tfi(counts * 2, blur)


# ---- scored like validation, the report, the command ---------------------------------------------------
def test_baselines_are_scored_like_validation(train_store):
    report = score_baselines(train_store, "val", clip_len=3)
    assert [r.name for r in report.rows] == ["blur", "tfp_2", "tfp_4", "tfi", "lsq", "lsq_gated"]
    tfi = report.row("tfi")
    assert tfi.overall is None and "n_ticks 16 > K 8" in tfi.note
    assert report.frames == 6 and report.fit_frames == 12
    # the blur row equals basicsr's metrics of the stored PNGs, frame by frame, and the boundary mask's
    rows = read_manifest(train_store).to_pydict()
    psnr_y, b_psnr, s_psnr, ssim_y = [], [], [], []
    for i, s in enumerate(rows["split"]):
        if s == "val":
            blur = read_rgb(train_store / rows["blur"][i]).transpose(1, 2, 0)
            sharp = read_rgb(train_store / rows["sharp"][i]).transpose(1, 2, 0)
            psnr_y.append(image_metrics(blur, sharp)["psnr_y"])
            b_psnr.append(masked_metrics(blur, sharp, motion_boundary_mask(blur, sharp))["psnr_y"])
            s_psnr.append(masked_metrics(blur, sharp, static_mask(blur, sharp))["psnr_y"])
            ssim_y.append(image_metrics(blur, sharp)["ssim_y"])
    assert report.row("blur").overall.psnr_y == pytest.approx(np.mean(psnr_y), abs=1e-9)
    # the issue-29 columns: SSIM on Y and the static half, the same numbers validation reports
    assert report.row("blur").overall.ssim_y == pytest.approx(np.mean(ssim_y), abs=1e-12)
    assert report.row("blur").static.psnr_y == pytest.approx(np.mean(s_psnr), abs=1e-9)
    assert report.static_fraction == 0.5 and all(r.static is not None for r in report.rows if r.overall)
    assert report.row("blur").boundary.psnr_y == pytest.approx(np.mean(b_psnr), abs=1e-9)
    assert report.row("lsq").boundary.psnr_y > report.row("blur").boundary.psnr_y
    # the gated map (the shipped head's start) leaves still areas closer to the blur than the plain map does
    assert report.row("lsq_gated").static.psnr_y > report.row("lsq").static.psnr_y


def test_baselines_command_writes_a_versioned_report(train_store, tmp_path):
    """--config gives the clip length of the validation the baselines stand beside (its DATA.CLIP_LEN, 3)."""
    config = tmp_path / "config.yaml"
    config.write_text(yaml.safe_dump(tiny_config_dict(train_store, tmp_path / "outputs")))
    out = tmp_path / "b.json"
    res = CliRunner().invoke(cli, ["baselines", str(train_store), "--config", str(config), "--no-progress",
                                   "--out", str(out)])
    assert res.exit_code == 0, res.output
    assert "| lsq: least squares" in res.output and "not applicable" in res.output
    report = read_baselines_report(out)
    assert "static PSNR Y" in res.output and "SSIM Y" in res.output
    assert report.version == 2 and report.clip_len == 3 and len(report.lsq_coefficients) == TRAIN_K + 4
    bad = CliRunner().invoke(cli, ["baselines", str(train_store), "--tfp-bins", "3", "--no-progress",
                                   "--out", str(tmp_path / "c.json")])
    assert bad.exit_code == 2 and "parity" in bad.output
    assert baselines_path(train_store, "val").name == "val.json"
    raw = json.loads(out.read_text())
    raw["version"] = 9
    out.write_text(json.dumps(raw))
    with pytest.raises(ValueError, match="version 9"):
        read_baselines_report(out)


def test_lsq_features_with_taps_read_each_neighbour_as_a_zero_padded_convolution_does():
    """The 3x3 neighbourhood columns against torch's conv2d (zero padding): X @ w equals the convolution."""
    import torch

    rng = np.random.default_rng(1)
    counts, blur = rng.integers(0, 4, (2, 3, 4)).astype(np.float64), rng.random((3, 6, 8))
    w = rng.normal(size=(2, 3, 3))
    x = bl.lsq_features(counts, blur, taps=3)
    assert x.shape == (48, 2 * 9 + 4) and np.all(x[:, -1] == 1)
    rgb_counts = torch.from_numpy(bl.replicate(counts, (2, 2)))[None]
    conv = torch.nn.functional.conv2d(rgb_counts, torch.from_numpy(w)[None], padding=1)[0, 0].numpy()
    assert np.allclose(x[:, :18] @ w.ravel(), conv.ravel())
    assert np.array_equal(bl.lsq_features(counts, blur, taps=1), x[:, [4, 13, 18, 19, 20, 21]])
    with pytest.raises(ValueError, match="odd"):
        bl.lsq_features(counts, blur, taps=2)
    acc = bl.LsqAccumulator(2, taps=3)
    acc.add(counts.astype(np.uint8), blur, np.clip(blur + 0.01, 0, 1))
    assert acc.solve().shape == (22, 3) and bl.coef_taps(acc.solve(), 2) == 3
    assert np.isclose(acc.count_rms(), np.sqrt(np.mean(bl.replicate(counts, (2, 2)) ** 2)))
