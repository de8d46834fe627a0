"""``schemas.test_report``: the record ``spikeprep test`` writes, round-trip and validation."""
from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from schemas.config import NormConfig
from schemas.test_report import (TEST_REPORT_VERSION, TestInputs, TestModel, TestReport, read_test_report,
                                 write_test_report)

# The keys users read in test_<time>.json (version 1's dictionary): the record keeps every one, in order.
V1_KEYS = ["version", "created", "checkpoint", "arm", "exp", "step", "model", "inputs", "output", "format",
           "sequences", "frames", "clips", "clip_len", "tile", "overlap", "device", "device_name", "torch_threads",
           "seconds_model", "seconds_first_clip", "seconds_per_frame", "seconds_per_frame_total", "seconds_setup",
           "peak_memory_mib", "peak_memory_method", "peak_rss_mib", "notes"]


def _report(**changes) -> TestReport:
    fields = dict(
        created="2026-01-01T00:00:00", checkpoint="/c/best.pth", arm="spike", exp="e", step=7,
        model=TestModel(VRT_CFG="tiny", K=8, NORM=NormConfig(MEAN=0.5, STD=0.25)),
        inputs=TestInputs(blur=None, spike_vox="/s", store="/s", splits=["val"]), output="/out", format="png",
        sequences={"seq_002": 6}, frames=6, clips=2, clip_len=3, tile=[0, 256, 256], overlap=[2, 20, 20],
        device="cpu", device_name="x86_64", torch_threads=1, seconds_model=1.5, seconds_first_clip=1.0,
        seconds_per_frame=0.25, seconds_per_frame_total=0.5, seconds_setup=0.1, peak_memory_mib=100.0,
        peak_memory_method="peak RSS (ru_maxrss) of the process", peak_rss_mib=100.0, notes=["a note"])
    return TestReport(**{**fields, **changes})


def test_round_trip_keeps_the_keys_users_read(tmp_path):
    path = write_test_report(tmp_path / "metrics" / "test_x.json", _report())
    assert read_test_report(path) == _report()
    raw = json.loads(path.read_text())
    assert list(raw) == V1_KEYS and raw["version"] == TEST_REPORT_VERSION == 2
    assert raw["model"] == {"VRT_CFG": "tiny", "K": 8, "NORM": {"MEAN": 0.5, "STD": 0.25}}
    assert list(raw["inputs"]) == ["blur", "spike_vox", "store", "splits"]
    assert not list(tmp_path.glob("metrics/*.tmp*"))  # written atomically: no temp file left


@pytest.mark.parametrize("changes", [dict(arm="other"), dict(format="bmp"), dict(frames=0), dict(step=-1),
                                     dict(tile=[256, 256]), dict(seconds_model=-1.0), dict(version=1),
                                     dict(unknown=1)])
def test_invalid_reports_are_refused(changes):
    with pytest.raises(ValidationError):
        _report(**changes)


def test_the_record_is_frozen():
    with pytest.raises(ValidationError):
        _report().frames = 3


def test_another_version_or_a_damaged_file_names_the_file(tmp_path):
    path = write_test_report(tmp_path / "r.json", _report())
    raw = path.read_text()
    path.write_text(raw.replace('"version": 2', '"version": 1'))
    with pytest.raises(ValueError, match=r"r\.json: test report version 1, this spikeprep reads version 2; "
                                         r"re-run `spikeprep test`"):
        read_test_report(path)
    path.write_text(raw[: len(raw) // 2])
    with pytest.raises(ValueError, match=r"r\.json: not a readable test report"):
        read_test_report(path)
    path.write_text(raw.replace('"frames": 6', '"frames": -6'))
    with pytest.raises(ValueError, match=r"r\.json: invalid test report"):
        read_test_report(path)
