"""Faults around a store that others use (issue 28): readers and writers of one store, a read-only store,
a full disk during ingest, and where ingest's align log goes.

The read-only and disk-full cases run twice where the machine allows: on a real read-only bind mount / a
small tmpfs (needs root and mount rights: skipped with the reason otherwise), and simulated (an ``os.open``
that answers EROFS, an ``fsync`` that answers ENOSPC), which always runs. Each test's name says which.
"""
from __future__ import annotations

import contextlib
import errno
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

import spikeprep.store as store_mod
from cli.main import main
from spikeprep.ingest import IngestOptions, ingest

from conftest import TRAIN_K, TRAIN_TREE, tiny_config_dict

ROOT = Path(__file__).resolve().parents[1]
OPTS = IngestOptions(num_bins=8, crop_size=32)


def tree_digest(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): p.stat().st_mtime_ns for p in sorted(root.rglob("*")) if p.is_file()}


def cli(*args) -> tuple[int, str]:
    res = CliRunner().invoke(main, [str(a) for a in args])
    assert "Traceback" not in res.output, res.output
    if res.exception is not None and not isinstance(res.exception, SystemExit):
        raise res.exception
    return res.exit_code, res.output


@contextlib.contextmanager
def lock_held_by_another_process(store: Path, command: str, shared: bool):
    """A second process holding the store's lock as ``command`` does, until the block ends; yields its pid."""
    code = ("import sys; from pathlib import Path; from spikeprep.store import store_lock\n"
            f"with store_lock(Path({str(store)!r}), {command!r}, shared={shared}):\n"
            "    print('held', flush=True); sys.stdin.readline()")
    holder = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env=dict(os.environ, PYTHONPATH=str(ROOT)),
                              stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        yield holder.pid
    finally:
        holder.communicate("\n", timeout=60)


# ---- readers and writers of one store ------------------------------------------------------------------
@pytest.fixture
def store(synth_tree, tmp_path) -> tuple[Path, Path]:
    raw = synth_tree()
    out = tmp_path / "store"
    ingest(raw, out, OPTS, log_dir=None, progress=False)
    return raw, out


def test_writers_refuse_while_a_training_reads_naming_it(store, tmp_path):
    """`ingest --force` during a training used to rewrite the shards under it (the training then stopped on
    "every batch unreadable"); `audit` took no lock at all. Both now refuse at once, naming the reader."""
    raw, out = store
    before = tree_digest(out)
    with lock_held_by_another_process(out, "train", shared=True) as pid:
        for args in (["ingest", raw, "--out", out, "--k", "8", "--crop", "32", "--force", "--no-progress"],
                     ["audit", out, "--crop", "32", "--overlays", "0", "--no-progress"]):
            code, output = cli(*args)
            assert code == 2, output
            assert "reading this store" in output and f"pid {pid}" in output and "store_lock" in output, output
        # a second reader is welcome: readers share the lock
        code, output = cli("verify", out, "--no-progress")
        assert code == 0, output
    assert tree_digest(out) == before
    assert cli("audit", out, "--crop", "32", "--overlays", "0", "--no-progress")[0] in (0, 1)   # lock gone


def test_readers_refuse_while_a_writer_runs_naming_it(store, tmp_path):
    _, out = store
    cfg = tiny_config_dict(out, tmp_path / "outputs")
    cfg["DATA"]["K"] = 8          # the lock refuses before the frames (48x64, below the crop) are read
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    with lock_held_by_another_process(out, "ingest", shared=False) as pid:
        for args in (["verify", out, "--no-progress"],
                     ["train", "--config", tmp_path / "cfg.yaml", "--dry-run", "--device", "cpu", "--workers", "0"],
                     ["baselines", out, "--out", tmp_path / "b.json", "--no-progress"],
                     ["test", "--ckpt", tmp_path / "none.pth", "--store", out, "--output", tmp_path / "t"]):
            code, output = cli(*args)
            assert code == 2, (args, output)
            assert "is writing this store" in output and f"pid {pid}" in output, (args, output)
    assert not (tmp_path / "outputs").exists() and not (tmp_path / "t").exists()


def test_audit_holds_the_write_lock(store, monkeypatch):
    """audit rewrites manifest.parquet and dataset.json: it holds the store's lock while it runs."""
    import spikeprep.audit as audit_mod

    _, out = store
    seen = []

    def write_manifest(root, rows):
        with pytest.raises(Exception, match="writing this store"):     # a reader now is refused
            store_mod.store_lock(root, "verify", shared=True).acquire()
        seen.append(root)
        return store_mod.write_manifest(root, rows)

    monkeypatch.setattr(audit_mod, "write_manifest", write_manifest)
    audit_mod.audit(out, audit_mod.AuditOptions(crop_size=32), progress=False)
    assert seen == [out]


# ---- a read-only store ---------------------------------------------------------------------------------
READ_ONLY_REFUSED = ("the store is read-only", "Fix:", "verify, stats")


def _check_writers_refused(raw: Path, store: Path) -> None:
    for args in (["audit", store, "--crop", "64", "--overlays", "0", "--no-progress"],
                 ["ingest", raw, "--out", store, "--k", str(TRAIN_K), "--crop", "64", "--no-progress"]):
        code, output = cli(*args)
        assert code == 2, (args, output)
        assert all(f in output for f in READ_ONLY_REFUSED) and str(store) in output, (args, output)


def test_read_only_store_simulated(synth_tree, train_store, tmp_path, monkeypatch):
    """Simulated: every open of the lock file for writing answers EROFS (no mount needed)."""
    real_open = os.open

    def read_only_open(path, flags, *args):
        if str(path).endswith(store_mod.LOCK_FILENAME) and flags & (os.O_RDWR | os.O_WRONLY | os.O_CREAT):
            raise OSError(errno.EROFS, os.strerror(errno.EROFS), str(path))
        return real_open(path, flags, *args)

    store = tmp_path / "store"
    shutil.copytree(train_store, store)
    before = tree_digest(store)
    monkeypatch.setattr(store_mod.os, "open", read_only_open)
    _check_writers_refused(synth_tree(**TRAIN_TREE), store)
    assert tree_digest(store) == before


@pytest.fixture
def read_only_mount(train_store, tmp_path):
    """A copy of ``train_store`` behind a read-only bind mount (skipped where this process cannot mount)."""
    src, mnt = tmp_path / "src", tmp_path / "ro"
    shutil.copytree(train_store, src)
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a read-only bind mount needs root (the simulated test covers the errors)")
    if subprocess.run(["mount", "--bind", str(src), str(mnt)], capture_output=True).returncode:
        pytest.skip("mount --bind is not allowed here (the simulated test covers the errors)")
    try:
        if subprocess.run(["mount", "-o", "remount,ro,bind", str(mnt)], capture_output=True).returncode:
            pytest.skip("remount read-only is not allowed here (the simulated test covers the errors)")
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_read_only_store_on_a_read_only_mount(synth_tree, read_only_mount, tmp_path):
    """Real read-only mount: audit and a no-op ingest rerun are clear errors; every reading command works."""
    store = read_only_mount
    with pytest.raises(OSError):
        (store / "probe").write_text("x")                                  # it really is read-only
    _check_writers_refused(synth_tree(**TRAIN_TREE), store)
    assert cli("verify", store, "--no-progress")[0] == 0
    assert cli("stats", store)[0] == 0
    code, output = cli("baselines", store, "--no-progress")                # its default report goes into the store
    assert code == 2 and "read-only" in output and "--out" in output, output
    code, output = cli("baselines", store, "--out", tmp_path / "baselines.json", "--no-progress")
    assert code == 0 and (tmp_path / "baselines.json").is_file(), output
    cfg = tiny_config_dict(store, tmp_path / "outputs")
    (tmp_path / "cfg.yaml").write_text(yaml.safe_dump(cfg))
    code, output = cli("train", "--config", tmp_path / "cfg.yaml", "--dry-run", "--device", "cpu", "--workers", "0",
                       "--no-vgg")
    assert code == 0, output
    code, output = cli("test", "--ckpt", _checkpoint(cfg, tmp_path / "spike.pth"), "--store", store, "--split", "val",
                       "--output", tmp_path / "test", "--device", "cpu", "--no-progress")
    assert code == 0 and sorted((tmp_path / "test").rglob("*.png")), output


def _checkpoint(cfg: dict, path: Path) -> Path:
    """An untrained spike-arm checkpoint of ``cfg`` (as tests/test_test_cmd.py makes them: no trainer)."""
    import torch

    from model.checkpoint import CKPT_VERSION, save_checkpoint
    from model.nets.integrate_vrt import build_model
    from schemas.config import parse_config

    config = parse_config(cfg)
    torch.manual_seed(0)
    return save_checkpoint(path, dict(version=CKPT_VERSION, arm="spike", exp="t", step=1,
                                      model=build_model(config, use_spike=True).state_dict(),
                                      config=config.model_dump(mode="json"), config_text="", best_psnr=None))


# ---- a full disk during ingest -------------------------------------------------------------------------
def _check_disk_full(code: int, output: str, out: Path, file_fragment: str) -> None:
    assert code == 2, output
    assert "no space left on the device" in output and file_fragment in output and "Fix:" in output, output
    assert not (out / "dataset.json").exists()                          # nothing looks complete
    assert not list(out.glob("*/.*.partial")), list(out.rglob("*"))      # no half-built sequence left


@pytest.mark.parametrize("workers", [1, 2])
def test_disk_full_during_ingest_simulated(synth_tree, tmp_path, monkeypatch, workers):
    """Simulated: every fsync answers ENOSPC, so the first sequence record cannot be written (with 2 workers
    the error is raised in a worker process and crosses to the parent whole)."""
    def no_space(fd):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    raw = synth_tree()                     # made before the disk "fills"
    monkeypatch.setattr(os, "fsync", no_space)
    out = tmp_path / "store"
    code, output = cli("ingest", raw, "--out", out, "--k", "8", "--crop", "32", "--no-progress",
                       "--workers", workers)
    _check_disk_full(code, output, out, "ingest.json")


@pytest.fixture
def small_tmpfs(tmp_path):
    """A 700 KiB tmpfs (the tiny store needs about 1.3 MiB; skipped where this process cannot mount)."""
    mnt = tmp_path / "small"
    mnt.mkdir()
    if os.geteuid() != 0 or shutil.which("mount") is None:
        pytest.skip("a tmpfs needs root (the simulated test covers a full disk)")
    if subprocess.run(["mount", "-t", "tmpfs", "-o", "size=700k", "tmpfs", str(mnt)], capture_output=True).returncode:
        pytest.skip("mounting a tmpfs is not allowed here (the simulated test covers a full disk)")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", str(mnt)], check=True)


def test_disk_full_during_ingest_on_a_small_tmpfs(synth_tree, small_tmpfs):
    out = small_tmpfs / "store"
    code, output = cli("ingest", synth_tree(), "--out", out, "--k", "8", "--crop", "32", "--no-progress")
    _check_disk_full(code, output, out, str(out))


# ---- the align log goes into the store, not the current folder ------------------------------------------
def test_align_log_goes_into_the_store_not_the_current_folder(synth_tree, tmp_path, monkeypatch):
    cwd = tmp_path / "cwd"
    cwd.mkdir()
    monkeypatch.chdir(cwd)
    out = tmp_path / "store"
    code, output = cli("ingest", synth_tree(), "--out", out, "--k", "8", "--crop", "32", "--no-progress")
    assert code in (0, 1), output
    assert list(cwd.iterdir()) == []                                    # nothing where the user did not point
    (log,) = (out / "logs").glob("align_*.txt")
    assert f"align log: {log}" in output
    assert cli("verify", out, "--no-progress")[0] == 0                  # the store's readers do not mind it
