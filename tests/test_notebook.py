"""The alignment notebook runs top to bottom on a synthetic, audited store (nbclient)."""
from __future__ import annotations

import os
from pathlib import Path

import nbformat
from nbclient import NotebookClient

from spikeprep.audit import AuditOptions, audit
from spikeprep.ingest import IngestOptions, ingest

from conftest import AUDIT_TREE

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "alignment_overlays.ipynb"


def test_notebook_executes(synth_tree, tmp_path, monkeypatch):
    store = tmp_path / "store"
    ingest(synth_tree(**AUDIT_TREE), store, IngestOptions(num_bins=16, crop_size=32), log_dir=None, progress=False)
    audit(store, AuditOptions(crop_size=32), progress=False)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    monkeypatch.setenv("SPIKEPREP_STORE", str(store))
    monkeypatch.delenv("MPLBACKEND", raising=False)  # the kernel shows figures inline
    root = str(Path(__file__).resolve().parents[1])
    monkeypatch.setenv("PYTHONPATH", root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    NotebookClient(nb, timeout=180, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    outputs = [o for cell in nb.cells if cell.cell_type == "code" for o in cell.get("outputs", [])]
    assert not [o for o in outputs if o.output_type == "error"]
    text = "".join(o.get("text", "") for o in outputs if o.output_type == "stream")
    assert "K=16, 12 frames in 3 sequences" in text
    images = [o for o in outputs if "image/png" in o.get("data", {})]
    assert len(images) >= 3  # labelled overlays, all curves, the failing frames' curves
    assert "verdict colours: {'aligned': '#2ca02c'" in text
    # issue 18: line colours come from the sorted sequence list, not hash() (which changes every run)
    assert not [c for c in nb.cells if c.cell_type == "code" and "hash(" in c.source]
    tables = [o for o in outputs if "text/html" in o.get("data", {})]
    assert any("train/seq_001" in o["data"]["text/html"] for o in tables)
