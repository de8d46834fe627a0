"""spikeprep.images: the one frame reader/writer (channel order, sizes, errors that name the file)."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from spikeprep.errors import InputError
from spikeprep.images import LUMA_601, read_rgb, write_rgb


@pytest.mark.parametrize("suffix", [".png", ".bmp"])
def test_write_then_read_is_exact_and_channels_first(tmp_path, rng, suffix):
    rgb = rng.integers(0, 256, (5, 7, 3), dtype=np.uint8)
    path = tmp_path / f"f{suffix}"
    write_rgb(path, rgb)
    back = read_rgb(path, (5, 7))
    assert back.shape == (3, 5, 7) and back.dtype == np.uint8
    np.testing.assert_array_equal(back.transpose(1, 2, 0), rgb)


def test_channel_order_matches_opencv_bgr_on_disk(tmp_path):
    rgb = np.zeros((2, 2, 3), np.uint8)
    rgb[..., 0] = 200  # pure red
    write_rgb(tmp_path / "red.png", rgb)
    bgr = cv2.imread(str(tmp_path / "red.png"), cv2.IMREAD_COLOR)
    assert (bgr[..., 2] == 200).all() and (bgr[..., :2] == 0).all()
    assert (read_rgb(tmp_path / "red.png")[0] == 200).all()


def test_size_mismatch_names_the_file_and_the_expectation(tmp_path):
    write_rgb(tmp_path / "a.png", np.zeros((4, 6, 3), np.uint8))
    with pytest.raises(InputError, match=r"a\.png: decodes to 4x6, its header says 8x6"):
        read_rgb(tmp_path / "a.png", (8, 6), expected="its header says")


def test_undecodable_file_is_an_input_error(tmp_path):
    bad = tmp_path / "bad.png"
    bad.write_bytes(b"\x89PNG\r\n\x1a\n not really")
    with pytest.raises(InputError, match="bad.png: unreadable image"):
        read_rgb(bad)


def test_write_refuses_wrong_arrays_and_reports_failed_writes(tmp_path):
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        write_rgb(tmp_path / "x.png", np.zeros((4, 4, 3), np.float32))
    with pytest.raises(ValueError, match=r"uint8 \[H, W, 3\]"):
        write_rgb(tmp_path / "x.png", np.zeros((3, 4, 4), np.uint8))
    with pytest.raises(InputError, match="missing_dir.*cannot write the image"):
        write_rgb(tmp_path / "missing_dir" / "x.png", np.zeros((4, 4, 3), np.uint8))


def test_luma_weights_are_rec601():
    assert LUMA_601 == (0.299, 0.587, 0.114) and sum(LUMA_601) == pytest.approx(1.0)


# ---- issue 28, item 7: EXIF orientation is ignored (the spikes know no EXIF) ------------------------------
def _top_white_with_exif_orientation(path, orientation: int = 3) -> np.ndarray:
    """Write an 8x12 frame, top half white, carrying EXIF orientation ``orientation`` (3: turn 180 degrees);
    return its stored pixels as RGB [H, W, 3]."""
    from PIL import Image

    rgb = np.zeros((8, 12, 3), np.uint8)
    rgb[:4] = 255
    image = Image.fromarray(rgb)
    exif = image.getexif()
    exif[0x0112] = orientation          # the Orientation tag
    kwargs = {"quality": 100} if path.suffix == ".jpg" else {}
    image.save(path, exif=exif.tobytes(), **kwargs)
    return rgb


@pytest.mark.parametrize("suffix", [".jpg", ".png"])
def test_exif_orientation_is_ignored(tmp_path, suffix):
    path = tmp_path / f"blur{suffix}"
    stored = _top_white_with_exif_orientation(path)
    # the file really carries the tag: OpenCV's default read turns it (what the frames used to get)
    turned = cv2.imread(str(path), cv2.IMREAD_COLOR)
    assert turned[:4].mean() < 20 and turned[4:].mean() > 235
    back = read_rgb(path, (8, 12)).transpose(1, 2, 0)
    assert np.abs(back.astype(int) - stored).max() <= 2    # as stored (JPEG at quality 100: within 2 levels)


def test_every_image_read_ignores_exif():
    """The rule holds everywhere images are read: no cv2.imread without IMREAD_FLAGS, no PIL decode of a frame."""
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    offenders = []
    for package in ("spikeprep", "model", "cli", "benchmarks"):
        for path in (root / package).rglob("*.py"):
            for n, line in enumerate(path.read_text().splitlines(), 1):
                if ("cv2.imread(" in line and "IMREAD_FLAGS" not in line) or "exif_transpose" in line:
                    offenders.append(f"{path.relative_to(root)}:{n}: {line.strip()}")
    assert not offenders, offenders
