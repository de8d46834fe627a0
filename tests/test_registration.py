"""Spike and RGB images that do not line up (issue 30): registration given at ingest, assumed for RGB of another
size, measured by the audit, fixed by ``audit --fix`` (before the clock, kill-safe), and the synthetic rig."""
from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import cv2
import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cli.main import main
from schemas.clock_fix import FIXED, clock_fix_path, read_clock_fix
from schemas.registration import (ALIGNED, FIXED as REG_FIXED, UNFIXED, Registration, RegistrationFix,
                                  read_registration_fix, registration_fix_path)
from schemas.sequence_record import read_sequence_record
from schemas.spike_meta import SpikeMeta
from spikeprep.audit import MISALIGNED, AuditOptions, audit
from spikeprep.clock_fix import fix_store
from spikeprep.errors import InputError
from spikeprep.images import read_rgb, write_rgb
from spikeprep.ingest import IngestOptions, ingest
from spikeprep.registration import (FrameEstimate, RegistrationOptions, corner_error, estimate_frame,
                                    estimate_sequence, resample_rgb, scale_homography, store_matrix, store_to_spike,
                                    upsampled_intensity)
from spikeprep.spike_source import SpikeSource
from spikeprep.store import read_frame, read_manifest_rows, read_store_info
from test_clock_fix import fix_killed_at_each, tree_digest
from spikeprep.synth import load_photo

ROOT = Path(__file__).resolve().parents[1]
REAL = ROOT.parent / "shared" / "data" / "real"
OPTS = IngestOptions(num_bins=16, crop_size=32)
# The audit's geometry (64x80 spike grid, 32-tick exposures, K = 16), 24 frames; the RGB camera sees the spike
# camera's view through a small affine (up to 2.5 px, 0.8 degrees, 1.5 %) at a non-integer resolution
WARPED = dict(height=64, width=80, frames=24, exposure_ticks=32, gap_ticks=8, motion_px=4.0, val_seqs=0,
              train_seqs=2, rgb_size=(100, 125), rgb_warp=(2.5, 0.8, 0.015))


def truth(raw: Path, name: str) -> np.ndarray:
    entry = next(s for s in json.loads((raw / "synth.json").read_text())["sequences"] if s["name"] == name)
    return np.array(entry["rgb_homography"], np.float64).reshape(3, 3)


def stored_error(store: Path, raw: Path, key: str) -> float:
    """How far a store's registration of ``key`` is from the truth, at the stored frame's corners (px)."""
    seq = read_store_info(store).sequences[key]
    a = store_to_spike(seq.registration.scale, seq.registration.spike_crop)
    m = seq.registration.matrix @ a
    return corner_error(np.linalg.inv(m) @ truth(raw, key.split("/")[1]) @ a, (seq.H, seq.W))


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    mse = float(np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2))
    return math.inf if mse == 0 else 10 * math.log10(255.0 ** 2 / mse)


# ---- ingest -------------------------------------------------------------------------------------------------
def test_resampling_a_pure_integer_shrink_is_opencv_area_resize():
    img = np.random.default_rng(0).integers(0, 256, (64, 96, 3), dtype=np.uint8)
    out = resample_rgb(img, scale_homography(2, 2), (32, 48))
    np.testing.assert_array_equal(out, cv2.resize(img, (48, 32), interpolation=cv2.INTER_AREA))


def test_ingest_with_a_given_homography_matches_an_opencv_reference(synth_tree, tmp_path):
    """meta.json gives the homography: each stored frame is the raw frame resampled through it (against a
    supersampled OpenCV warp, area-averaged), the kept spike pixels are those the RGB frame covers, their counts
    the raw counts untouched, and the manifest and the sequence record keep the registration."""
    raw = synth_tree(**WARPED, rgb_homography_in_meta=True)
    store = tmp_path / "store"
    result = ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert any("by the rgb_homography of spike/meta.json" in n for n in result.registration_notes)
    info = read_store_info(store)
    seq = info.sequences["train/seq_000"]
    reg = seq.registration
    given = np.array(SpikeMeta.model_validate_json((raw / "train/seq_000/spike/meta.json").read_text())
                     .rgb_homography)
    np.testing.assert_allclose(reg.matrix, given / given[2, 2])
    assert reg.source == "meta" and reg.scale == 2 and (seq.H, seq.W) == (2 * seq.Hs, 2 * seq.Ws)
    y0, x0, hs, ws = reg.spike_crop
    assert (hs, ws) == (seq.Hs, seq.Ws) and hs >= 60 and ws >= 74           # a few px of the edges are lost
    m = store_matrix(reg)
    corners_raw = cv2.perspectiveTransform(np.array([[[0, 0], [seq.W - 1, seq.H - 1]]], np.float64), m)[0]
    assert corners_raw.min() >= 0 and corners_raw[1][0] <= 124 and corners_raw[1][1] <= 99

    rows = [r for r in read_manifest_rows(store) if r.seq == "seq_000"]
    assert all(r.rgb_homography == list(reg.homography) for r in rows)
    assert read_sequence_record(store / "train/seq_000/ingest.json").info.registration == reg
    k = 4                                                      # reference: warp at 4x the grid, then area
    hi = m @ np.linalg.inv(scale_homography(k, k))
    for r in rows[:3]:
        src = read_rgb(raw / "train/seq_000/blur" / f"{r.frame_idx:06d}.png").transpose(1, 2, 0)
        ref = cv2.resize(cv2.warpPerspective(src, hi, (seq.W * k, seq.H * k), flags=cv2.INTER_LINEAR
                                             | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE),
                         (seq.W, seq.H), interpolation=cv2.INTER_AREA)
        stored = read_rgb(store / r.blur).transpose(1, 2, 0)
        assert stored.shape == ref.shape and psnr(stored, ref) > 38, psnr(stored, ref)
        counts = read_frame(store / "train/seq_000/spike_vox.zarr/counts", r.vox_index)
        whole = SpikeSource(raw / "train/seq_000/spike").window(r.t0, r.t1, OPTS.num_bins).counts
        np.testing.assert_array_equal(counts, whole[:, y0:y0 + hs, x0:x0 + ws])


def test_rgb_of_a_non_integer_size_is_assumed_the_same_field_of_view(synth_tree, tmp_path):
    raw = synth_tree(height=48, width=64, frames=4, exposure_ticks=16, gap_ticks=4, margin_ticks=6,
                     rgb_size=(100, 133))
    store = tmp_path / "store"
    res = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(store), "--k", "8", "--crop", "32",
                                    "--no-progress"])
    assert res.exit_code in (0, 1), res.output
    assert "resampled onto the spike grid 48x64 x 2 = 96x128 by an assumed same field of view" in res.output
    assert "give rgb_homography in spike/meta.json" in res.output
    seq = read_store_info(store).sequences["train/seq_000"]
    assert seq.registration.source == "assumed_scale" and seq.registration.spike_crop == (0, 0, 48, 64)
    src = read_rgb(raw / "train/seq_000/blur/000001.png").transpose(1, 2, 0)
    stored = read_rgb(store / "train/seq_000/blur/000001.png").transpose(1, 2, 0)
    assert psnr(stored, cv2.resize(src, (128, 96), interpolation=cv2.INTER_AREA)) > 35


def test_an_aspect_ratio_no_field_of_view_explains_is_refused(synth_tree, tmp_path):
    raw = synth_tree(height=48, width=64, frames=2, exposure_ticks=16, gap_ticks=4, margin_ticks=6,
                     rgb_size=(100, 200))
    with pytest.raises(InputError, match="cannot see the same field of view") as err:
        ingest(raw, tmp_path / "store", OPTS, log_dir=None, progress=False)
    assert "blur" in str(err.value) and "rgb_homography" in str(err.value)
    assert not (tmp_path / "store").exists()                 # refused before anything was written
    res = CliRunner().invoke(main, ["ingest", str(raw), "--out", str(tmp_path / "s"), "--no-progress"])
    assert res.exit_code == 2 and "rgb_homography" in res.output and "Traceback" not in res.output


def test_meta_rgb_homography_needs_version_3_and_a_usable_matrix():
    base = dict(format="dat", layout="stream", height=8, width=8, rate_hz=2e4, start_s=0.0, stream_file="s.dat")
    assert SpikeMeta(**base, version=2).rgb_homography is None                  # old records still read
    ok = SpikeMeta(**base, rgb_homography=[[2, 0, 1], [0, 2, 1], [0, 0, 1]])
    assert ok.version == 3
    with pytest.raises(ValueError, match="needs version 3"):
        SpikeMeta(**base, version=2, rgb_homography=[[2, 0, 1], [0, 2, 1], [0, 0, 1]])
    with pytest.raises(ValueError, match="orientation"):
        SpikeMeta(**base, rgb_homography=[[-2, 0, 1], [0, 2, 1], [0, 0, 1]])


# ---- the estimate -----------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def scene() -> np.ndarray:
    gray = cv2.cvtColor(load_photo("astronaut"), cv2.COLOR_RGB2GRAY).astype(np.float32) / 255.0
    return cv2.resize(gray, (160, 128), interpolation=cv2.INTER_AREA)


def small_warp(data, model: str, hw: tuple[int, int]) -> np.ndarray:
    """A random beam-splitter warp about the image centre: up to 3 px, 1 degree, 2 % (and a perspective part
    moving the corners by up to about half a pixel for a homography)."""
    h, w = hw
    shift = np.array([data.draw(st.floats(-3, 3)), data.draw(st.floats(-3, 3))])
    angle = math.radians(data.draw(st.floats(-1, 1)))
    zoom = 1 + data.draw(st.floats(-0.02, 0.02))
    c = np.array([(w - 1) / 2, (h - 1) / 2])
    m = np.eye(3)
    m[:2, :2] = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    m[:2, 2] = c - m[:2, :2] @ c + shift
    if model == "homography":
        m[2, :2] = [data.draw(st.floats(-4e-5, 4e-5)), data.draw(st.floats(-4e-5, 4e-5))]
    return m


def motion_blurred(scene: np.ndarray, length: float, angle: float) -> np.ndarray:
    """The scene averaged along a straight motion of ``length`` px (as an exposure integrates it)."""
    steps = max(1, int(math.ceil(length * 2)))
    out = np.zeros_like(scene)
    for t in np.linspace(-0.5, 0.5, steps):
        m = np.float32([[1, 0, t * length * math.cos(angle)], [0, 1, t * length * math.sin(angle)]])
        out += cv2.warpAffine(scene, m, scene.shape[::-1], flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    return out / steps


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=st.data(), model=st.sampled_from(["affine", "homography"]), blur=st.sampled_from([0.0, 6.0]))
def test_the_estimate_recovers_small_warps_within_0_3_px(scene, data, model, blur):
    """Spikes (Poisson counts of 32 ticks) and a blur frame of the same exposure (motion blurred alike) seen
    through a known warp: each frame's estimate finds it within half a pixel at the corners, the sequence's
    robust one (4 frames) within 0.3 px."""
    hw = scene.shape
    rng = np.random.default_rng(data.draw(st.integers(0, 2**16)))
    frames, true = [], small_warp(data, model, hw)
    for i in range(4):
        exposed = motion_blurred(scene, blur, rng.uniform(0, math.pi)) if blur else scene
        spikes = rng.poisson(exposed * 32).astype(np.float32)
        luma = cv2.warpPerspective(exposed, np.linalg.inv(true), hw[::-1], flags=cv2.INTER_LINEAR
                                   | cv2.WARP_INVERSE_MAP, borderMode=cv2.BORDER_REPLICATE)   # luma(R u) = scene(u)
        luma = np.round(luma * 255) / 255
        frames.append(estimate_frame(spikes, luma, RegistrationOptions(model=model), i))
    for f in frames:       # one frame: within half a pixel (RESULTS.md "Registration": worst 0.51 px at 16 px of blur)
        assert f.problem is None and corner_error(np.linalg.inv(true) @ f.matrix, hw) <= 0.5
    seq = estimate_sequence(frames, hw, RegistrationOptions(model=model))
    assert seq.trusted and corner_error(np.linalg.inv(true) @ seq.matrix, hw) <= 0.3
    assert seq.residual_px == pytest.approx(corner_error(true, hw), abs=0.3)


def test_a_flat_scene_is_not_trusted_with_its_reason():
    flat = np.full((64, 80), 0.5)
    noise = np.random.default_rng(0).poisson(16, (64, 80)).astype(np.float32)
    frames = [estimate_frame(noise, flat, RegistrationOptions(), i) for i in range(6)]
    assert all(f.problem == "flat" for f in frames)
    seq = estimate_sequence(frames, (64, 80))
    assert not seq.trusted and seq.reason_code == "flat_scene" and "flat" in seq.reason
    few = estimate_sequence([FrameEstimate(0, np.eye(3), 0.9, None)], (64, 80))
    assert few.reason_code == "too_few_frames"
    apart = [FrameEstimate(i, np.array([[1, 0, 3.0 * (i % 2)], [0, 1, 0], [0, 0, 1]]), 0.9, None) for i in range(6)]
    assert estimate_sequence(apart, (64, 80)).reason_code == "frames_disagree"


def test_registration_fix_record_rules():
    base = dict(split="train", seq="s", given_homography=None, raw_size=(10, 10), residual_px=1.0, spread_px=0.1,
                frames_total=4, frames_used=[0, 1])
    with pytest.raises(ValueError, match="homography"):
        RegistrationFix(verdict=REG_FIXED, reason_code=None, reason=None, homography=None, **base)
    with pytest.raises(ValueError, match="reason"):
        RegistrationFix(verdict=UNFIXED, reason_code=None, reason=None, homography=None, **base)
    RegistrationFix(verdict=UNFIXED, reason_code="flat_scene", reason="flat", homography=None, **base)
    with pytest.raises(ValueError, match="spike_crop"):
        Registration(homography=(1, 0, 0, 0, 1, 0, 0, 0, 1), source="meta", raw_size=(4, 4), scale=1,
                     spike_crop=(0, 0, 0, 4))


# ---- the store: measure, fix, keep, refuse ----------------------------------------------------------------
@pytest.fixture(scope="module")
def warped_store(synth_tree, tmp_path_factory):
    """(raw, store before the fix, store after ``fix_store``) of two sequences seen through a small affine."""
    raw = synth_tree(**WARPED)
    base = tmp_path_factory.mktemp("reg")
    before = base / "before"
    ingest(raw, before, OPTS, log_dir=None, progress=False)
    after = shutil.copytree(before, base / "after")
    report = fix_store(after, progress=False)
    return raw, before, after, report


def test_the_audit_measures_the_misregistration_and_the_fix_removes_it(warped_store, tmp_path):
    raw, before, after, report = warped_store
    was = audit(shutil.copytree(before, tmp_path / "before"), AuditOptions(crop_size=32), progress=False)
    for key in ("train/seq_000", "train/seq_001"):
        assert stored_error(before, raw, key) > 1.0                            # the pure-scale guess is off
        measured = was.registration[key]
        assert measured.trusted and measured.residual_px == pytest.approx(stored_error(before, raw, key), abs=0.3)
        assert {r.audit_registration_px for r in was.rows if r.seq == key[6:]} == {measured.residual_px}
        assert stored_error(after, raw, key) < 0.3                             # the fix, against the truth
    assert was.totals()[MISALIGNED] == 0                                      # never read as a clock error
    for r in report.registrations:
        assert r.verdict == REG_FIXED and r.residual_px > 1.0
    for r in report.records:                                                  # and no clock correction made
        assert r.verdict != FIXED or abs(r.offset_ticks) <= 1.0
    now = audit(shutil.copytree(after, tmp_path / "after"), AuditOptions(crop_size=32), overlays=2, progress=False)
    assert all(e.residual_px < 0.5 for e in now.registration.values())
    # a frame may still sit at the audit's noise floor (a flat top 2 ticks off: RESULTS.md, "Audit precision")
    assert now.totals()[MISALIGNED] <= 1 and now.totals()["aligned"] >= was.totals()["aligned"] >= 20
    assert now.overlays


def test_an_ingest_rerun_keeps_the_registration_fix(warped_store, tmp_path):
    raw, _, after, _ = warped_store
    store = shutil.copytree(after, tmp_path / "store")
    digest = tree_digest(store)
    result = ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert tree_digest(store) == digest
    assert sum("registration fix kept" in n for n in result.registration_notes) == 2


def test_a_flat_scene_is_left_unfixed_with_its_reason(synth_tree, tmp_path):
    raw = shutil.copytree(synth_tree(**dict(WARPED, train_seqs=1)), tmp_path / "raw")
    for png in (raw / "train/seq_000").glob("*/*.png"):
        write_rgb(png, np.full((100, 125, 3), 128, np.uint8))
    store = tmp_path / "store"
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    before = read_store_info(store).sequences["train/seq_000"].registration
    res = CliRunner().invoke(main, ["audit", str(store), "--fix", "--crop", "32", "--overlays", "0", "--no-progress"])
    assert "Traceback" not in res.output, res.output
    record = read_registration_fix(registration_fix_path(store, "train", "seq_000"))
    assert record.verdict == UNFIXED and record.reason_code == "flat_scene" and record.homography is None
    assert "left as it was (flat_scene)" in res.output and "not measured (flat_scene)" in res.output
    assert read_store_info(store).sequences["train/seq_000"].registration == before


def test_clock_and_registration_errors_together_are_both_found(synth_tree, tmp_path):
    raw = synth_tree(**dict(WARPED, train_seqs=1, clock={"seq_000": (25.0, 1000.0)}))
    store = tmp_path / "store"
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    report = fix_store(store, progress=False)
    clock = read_clock_fix(clock_fix_path(store, "train", "seq_000"))
    assert clock.verdict == FIXED and abs(clock.offset_ticks - 25.0) <= 1.5, clock
    assert report.registrations[0].verdict == REG_FIXED
    assert stored_error(store, raw, "train/seq_000") < 0.3
    after = audit(store, AuditOptions(crop_size=32), progress=False)
    assert after.totals()[MISALIGNED] == 0 and after.registration["train/seq_000"].residual_px < 0.5


def test_fix_killed_anywhere_is_completed_byte_identical_by_a_rerun(warped_store, tmp_path):
    """SIGKILL after a registration record is written, after dataset.json is moved aside, while a sequence is
    rebuilt (its PNGs resampled): a rerun ends byte-identical to an uninterrupted fix."""
    _, before, after, _ = warped_store
    clean = tree_digest(after)
    signs = {
        "a registration record is written": lambda s: any((s / "audit" / "registration").rglob("seq_*.json")),
        "dataset.json is moved aside": lambda s: (s / "audit" / "clock" / "fix_pending.json").exists(),
        "a sequence is being rebuilt": lambda s: any(p.name.endswith(".partial") for p in s.glob("*/.*")),
    }
    landed = []
    for what, store, killed in fix_killed_at_each(before, tmp_path, signs):
        if killed:
            landed.append(what)
            if what != "a registration record is written":
                assert not (store / "dataset.json").exists()
        fix_store(store, progress=False)
        assert tree_digest(store) == clean, what
    assert len(landed) >= 2 and set(landed) - {"a registration record is written"}, landed


# ---- the real S-VRT GoPro file --------------------------------------------------------------------------
def test_svrt_gopro_sharp_frame_warped_by_a_known_homography_is_found_from_its_spikes():
    """The S-VRT file's 360x640 spikes (the 20 frames around the sharp instant, summed) and its 720x1280 sharp
    frame, warped by a known homography (2.5 px, 0.6 degrees, 1.2 %, a perspective part), resampled with the
    pure-scale first guess: the estimate finds the warp on top of the data's own registration (measured on the
    unwarped frame: the published pair is itself about 0.4 spike px apart) within 0.3 spike px at the corners."""
    dat, png = REAL / "svrt_gopro_000226_360x640.dat", REAL / "svrt_gopro_000226_sharp_720x1280.png"
    if not dat.is_file() or not png.is_file():
        pytest.skip(f"{REAL} is absent (the real recordings live beside the project, not in it)")
    from spikeprep.formats.dat import read_dat

    spikes = upsampled_intensity(read_dat(dat, 360, 640)[34:54].sum(axis=0), (360, 640))   # upright
    rgb = read_rgb(png).astype(np.float32)
    luma_raw = (0.299 * rgb[0] + 0.587 * rgb[1] + 0.114 * rgb[2]) / 255.0
    c = np.array([639.5, 359.5])
    angle, zoom = math.radians(0.6), 1.012
    warp = np.eye(3)
    warp[:2, :2] = zoom * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    warp[:2, 2] = c - warp[:2, :2] @ c + [2.5, -1.5]
    warp[2, :2] = [3e-6, -2e-6]
    seen = cv2.warpPerspective(luma_raw, warp, (1280, 720), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
    m = scale_homography(2, 2) @ store_to_spike(1, (0, 0, 360, 640))           # the pure-scale first guess
    options = RegistrationOptions(model="homography")
    own = estimate_frame(spikes, resample_rgb(luma_raw, m, (360, 640)), options)
    found = estimate_frame(spikes, resample_rgb(seen, m, (360, 640)), options)
    assert own.problem is None and found.problem is None
    true_residual = np.linalg.inv(m) @ warp @ m                                  # store px -> store px
    assert corner_error(true_residual, (360, 640)) > 3
    assert corner_error(np.linalg.inv(true_residual @ own.matrix) @ found.matrix, (360, 640)) < 0.3


# ---- synth's rig options --------------------------------------------------------------------------------
def test_synth_rig_truth_registers_the_warped_frames_back_onto_the_render(synth_tree, tmp_path):
    """The same scene with and without the rig's warp: the spikes are the same, the truth is in synth.json (and
    in meta.json only when asked), and ingesting the warped frames with the true homography gives back the
    unwarped render (area-reduced to the spike grid, on the kept spike pixels)."""
    plain = synth_tree(**dict(WARPED, train_seqs=1, frames=4, rgb_size=None, rgb_warp=(0.0, 0.0, 0.0)))
    warped = synth_tree(**dict(WARPED, train_seqs=1, frames=4, rgb_homography_in_meta=True))
    info = json.loads((warped / "synth.json").read_text())
    entry = info["sequences"][0]
    assert entry["rgb_size"] == [100, 125] and len(entry["rgb_homography"]) == 9
    assert "rgb_homography" not in json.loads((plain / "synth.json").read_text())["sequences"][0]
    seq = "train/seq_000"
    assert (plain / seq / "spike/stream.dat").read_bytes() == (warped / seq / "spike/stream.dat").read_bytes()
    assert read_rgb(warped / seq / "blur/000000.png").shape == (3, 100, 125)
    store = tmp_path / "store"
    ingest(warped, store, OPTS, log_dir=None, progress=False)
    y0, x0, h, w = read_store_info(store).sequences[seq].registration.spike_crop
    for i in range(4):
        stored = read_rgb(store / seq / f"blur/{i:06d}.png").transpose(1, 2, 0)
        reduced = cv2.resize(stored, (w, h), interpolation=cv2.INTER_AREA)
        render = read_rgb(plain / seq / f"blur/{i:06d}.png").transpose(1, 2, 0)[y0:y0 + h, x0:x0 + w]
        assert psnr(reduced, render) > 30, psnr(reduced, render)


def test_synth_cli_rig_registration_options(tmp_path):
    res = CliRunner().invoke(main, ["synth", str(tmp_path / "raw"), "--preset", "tiny", "--frames", "2",
                                    "--rgb-size", "100", "133", "--rgb-warp", "2", "0.5", "0.01", "--no-progress"])
    assert res.exit_code == 0, res.output
    info = json.loads((tmp_path / "raw" / "synth.json").read_text())
    assert info["config"]["rgb_size"] == [100, 133] and info["config"]["rgb_warp"] == [2.0, 0.5, 0.01]
    h = np.array(info["sequences"][0]["rgb_homography"]).reshape(3, 3)
    assert corner_error(np.linalg.inv(scale_homography(100 / 48, 133 / 64)) @ h, (48, 64)) > 0.1
    bad = CliRunner().invoke(main, ["synth", str(tmp_path / "bad"), "--preset", "tiny", "--rgb-warp", "1", "1", "0.7",
                                    "--no-progress"])
    assert bad.exit_code == 2 and "rgb_warp" in bad.output


def test_cli_fix_with_the_homography_model_recovers_a_perspective_rig(synth_tree, tmp_path):
    """A rig whose cameras differ by a homography with a perspective part (given per sequence in synth's
    ``rgb_homography``): `audit --fix --registration-model homography` brings the store within 0.3 px of it."""
    c = np.array([62.0, 49.5])
    warp = np.eye(3)
    angle = math.radians(0.5)
    warp[:2, :2] = 1.01 * np.array([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]])
    warp[:2, 2] = c - warp[:2, :2] @ c + [1.8, -1.2]
    warp[2, :2] = [6e-5, -4e-5]                  # the far corners move by about half a pixel more than affine
    h = warp @ scale_homography(100 / 64, 125 / 80)
    raw = synth_tree(**dict(WARPED, train_seqs=1, rgb_warp=(0.0, 0.0, 0.0),
                            rgb_homography={"seq_000": tuple(float(v) for v in h.ravel())}))
    store = tmp_path / "store"
    ingest(raw, store, OPTS, log_dir=None, progress=False)
    assert stored_error(store, raw, "train/seq_000") > 1.5
    res = CliRunner().invoke(main, ["audit", str(store), "--fix", "--crop", "32", "--overlays", "0",
                                    "--registration-model", "homography", "--no-progress"])
    assert "Traceback" not in res.output and "registration fix (estimated before the clock" in res.output, res.output
    assert stored_error(store, raw, "train/seq_000") < 0.3
    assert "train/seq_000" in res.output and " px over " in res.output


@settings(max_examples=30, deadline=None)
@given(data=st.data(), scale=st.integers(1, 3), ratio=st.floats(1.0, 3.5))
def test_the_kept_spike_pixels_are_all_seen_by_the_rgb_camera(data, scale, ratio):
    """Every stored pixel of the cropped grid lies, with its whole footprint, inside the raw RGB frame, and a
    small warp costs only a few spike pixels at the edges."""
    from spikeprep.registration import linear_scale, valid_spike_crop

    hs, ws = 24, 32
    raw = (int(round(hs * ratio)), int(round(ws * ratio)))
    h = small_warp(data, "homography", raw) @ scale_homography(raw[0] / hs, raw[1] / ws)
    crop = valid_spike_crop(h @ store_to_spike(scale, (0, 0, hs, ws)), (hs, ws), scale, raw)
    assert crop is not None
    y0, x0, ch, cw = crop
    m = h @ store_to_spike(scale, crop)
    v, u = np.mgrid[0:ch * scale, 0:cw * scale]
    xy = cv2.perspectiveTransform(np.c_[u.ravel(), v.ravel()].astype(np.float64)[None], m)[0]
    half = linear_scale(m) / 2 - 1e-3
    assert xy[:, 0].min() >= half - 0.5 and xy[:, 0].max() <= raw[1] - 0.5 - half
    assert xy[:, 1].min() >= half - 0.5 and xy[:, 1].max() <= raw[0] - 0.5 - half
    assert ch >= hs - 6 and cw >= ws - 6                    # a few pixels of a small warp's edges, no more
