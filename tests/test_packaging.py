"""Issue 18 item 1: spikeprep installed from its wheel works outside the repository.

The wheel is built from the tracked files (a copy, so the checkout gets no build/ folder), installed
without dependencies into a venv made with ``--system-site-packages`` outside the repository (the
dependencies come from the environment running the tests), and the tiny path runs there end to end
from a folder that is not the repository: ``spikeprep config`` -> synth -> ingest -> train -> test.
"""
from __future__ import annotations

import os
import shutil
import site
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import pytest
import yaml

from model.shipped_configs import example_configs, resolve_vrt_cfg, vrt_config_files, vrt_names
from schemas.config import ConfigError, edit_config_text, load_config
from spikeprep.errors import InputError

ROOT = Path(__file__).resolve().parents[1]


def _tracked_copy(dest: Path) -> Path:
    """The tracked files of the checkout (symlinks kept) plus untracked, not ignored ones."""
    if shutil.which("git") is None or not (ROOT / ".git").exists():
        pytest.skip("needs a git checkout to know the tracked files")
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=ROOT,
                            capture_output=True, check=True).stdout.decode().split("\0")
    for rel in filter(None, listed):
        src = ROOT / rel
        if not src.exists() and not src.is_symlink():  # deleted in the working tree
            continue
        (dest / rel).parent.mkdir(parents=True, exist_ok=True)
        if src.is_symlink():
            os.symlink(os.readlink(src), dest / rel)
        else:
            shutil.copy2(src, dest / rel)
    return dest


@pytest.fixture(scope="module")
def wheel(tmp_path_factory) -> Path:
    src = _tracked_copy(tmp_path_factory.mktemp("src"))
    out = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--quiet", "--no-deps", "--no-build-isolation",
                    "-w", str(out), str(src)], check=True, capture_output=True)
    (whl,) = out.glob("spikeprep-*.whl")
    return whl


def test_wheel_holds_the_configs_the_kernel_source_and_the_license(wheel):
    names = set(zipfile.ZipFile(wheel).namelist())
    shipped = {f"model/configs/{p.parent.name}/{p.name}" for p in (ROOT / "configs").glob("*/*.yaml")}
    assert shipped and shipped <= names
    assert {"model/nets/csrc/cpu_attention.c", "spikeprep/__main__.py"} <= names
    assert any(n.endswith("/licenses/LICENSE") for n in names)
    meta = zipfile.ZipFile(wheel).read(next(n for n in names if n.endswith("/METADATA"))).decode()
    assert "License-Expression: MIT" in meta and "Classifier: Intended Audience :: Science/Research" in meta


@pytest.mark.slow
def test_installed_wheel_runs_the_tiny_path_outside_the_repository(wheel, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", "--without-pip", str(venv)], check=True)
    py = venv / "bin" / "python"
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True, check=True).stdout.strip()
    # The dependencies: this environment's site-packages, after the venv's own (a .pth line only appends
    # the folder; the .pth files in it, such as an editable install of spikeprep, are not run).
    Path(purelib, "test_deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")
    subprocess.run([sys.executable, "-m", "pip", "--python", str(py), "install", "--quiet", "--no-deps",
                    str(wheel)], check=True, capture_output=True)
    work = tmp_path / "work"
    work.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env.update(OMP_NUM_THREADS="1")

    def run(*args: str) -> str:
        start = time.perf_counter()
        proc = subprocess.run([str(py), "-m", "spikeprep", *args], cwd=work, env=env, capture_output=True,
                              text=True, timeout=600)
        assert proc.returncode == 0, f"spikeprep {' '.join(args)}: {proc.stdout}\n{proc.stderr}"
        print(f"spikeprep {args[0]}: {time.perf_counter() - start:.1f} s")
        return proc.stdout + proc.stderr

    where = subprocess.run([str(py), "-c", "import cli, model, schemas, spikeprep; print(model.__file__)"],
                           cwd=work, env=env, capture_output=True, text=True, check=True).stdout
    assert Path(where.strip()).is_relative_to(venv), where
    run("config", "demo_tiny", "cfg.yaml", "--data-root", "store", "--save-dir", "outputs", "--k", "8")
    run("synth", "raw", "--preset", "tiny", "--height", "64", "--width", "80", "--frames", "6",
        "--exposure-ticks", "16", "--no-progress")
    run("ingest", "raw", "--out", "store", "--config", "cfg.yaml", "--write-config", "cfg.yaml", "--no-progress")
    raw = yaml.safe_load((work / "cfg.yaml").read_text())
    assert raw["MODEL"]["VRT_CFG"] == "tiny" and raw["DATA"]["NORM"]["STD"] != 1.0  # ingest wrote NORM
    run("train", "--config", "cfg.yaml", "--exp", "spike", "--max-steps", "2", "--val-every", "2",
        "--workers", "0", "--no-progress", "--no-vgg", "--no-reliance", "--device", "cpu")
    assert (work / "outputs" / "ckpts" / "spike" / "last.pth").is_file()
    run("test", "--ckpt", "outputs/ckpts/spike/last.pth", "--store", "store", "--output", "outputs/test/spike",
        "--no-progress", "--device", "cpu")
    assert sorted((work / "outputs" / "test" / "spike").rglob("*.png"))


# ---- MODEL.VRT_CFG: a preset name, or a file relative to the config's own folder ----------------------
def test_vrt_cfg_names_the_presets_and_the_shipped_files():
    assert {"tiny", "deblur", "deblur_train_kair"} <= set(vrt_names())
    import inspect

    from model.nets.vrt import VRT, VRT_PRESETS

    assert set(VRT_PRESETS) <= set(vrt_names())  # every preset has its shipped file of the same name
    defaults = inspect.signature(VRT.__init__).parameters
    for name in VRT_PRESETS:  # ... which builds exactly the preset: its overrides restate VRT's defaults
        shipped = yaml.safe_load(resolve_vrt_cfg(name).read_text())
        assert shipped["preset"] == name
        assert all(defaults[k].default == v for k, v in (shipped["overrides"] or {}).items())
    assert resolve_vrt_cfg("deblur_train_kair") == vrt_config_files()["deblur_train_kair"]


def test_vrt_cfg_path_is_read_relative_to_the_config_folder(tmp_path, monkeypatch):
    folder = tmp_path / "exp"
    (folder / "arch").mkdir(parents=True)
    (folder / "arch" / "mine.yaml").write_text("preset: tiny\noverrides: {}\n")
    text = example_configs()["demo_tiny"].read_text().replace('VRT_CFG: "tiny"', 'VRT_CFG: "arch/mine.yaml"')
    (folder / "cfg.yaml").write_text(text)
    monkeypatch.chdir(tmp_path)  # not the config's folder
    cfg = load_config(folder / "cfg.yaml")
    assert Path(cfg.MODEL.VRT_CFG) == (folder / "arch" / "mine.yaml").resolve()
    assert resolve_vrt_cfg(cfg.MODEL.VRT_CFG) == (folder / "arch" / "mine.yaml").resolve()


def test_legacy_repository_paths_resolve_from_the_package(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # what older configs and checkpoints hold, read outside the repository
    assert Path(resolve_vrt_cfg("configs/vrt/tiny.yaml")).read_text() == (ROOT / "configs/vrt/tiny.yaml").read_text()


def test_unknown_vrt_cfg_names_the_presets_and_the_places_tried(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    with pytest.raises(InputError, match=r"not a VRT preset \(deblur, deblur_train_kair, tiny\).*tried") as err:
        resolve_vrt_cfg("arch/nope.yaml")
    assert "Fix:" in str(err.value)


# ---- spikeprep config and the config text editor ------------------------------------------------------
def test_config_command_writes_a_valid_config_keeping_comments(tmp_path):
    from click.testing import CliRunner

    from cli.main import main

    out = tmp_path / "mine.yaml"
    res = CliRunner().invoke(main, ["config", "vrt_spike_baseline", str(out), "--data-root", "/data/store",
                                    "--save-dir", "runs", "--k", "16"])
    assert res.exit_code == 0, res.output
    cfg = load_config(out)
    assert (cfg.DATA.ROOT, cfg.LOG.SAVE_DIR, cfg.DATA.K, cfg.MODEL.VRT_CFG) == ("/data/store", "runs", 16, "deblur")
    shipped = example_configs()["vrt_spike_baseline"].read_text().splitlines()
    changed = [b for a, b in zip(shipped, out.read_text().splitlines()) if a != b]
    assert len(changed) == 3 and len(out.read_text().splitlines()) == len(shipped)
    again = CliRunner().invoke(main, ["config", "vrt_spike_baseline", str(out)])
    assert again.exit_code == 2 and "--overwrite" in again.output and "Traceback" not in again.output
    listing = CliRunner().invoke(main, ["config", "--list"])
    assert listing.exit_code == 0 and all(n in listing.output for n in [*example_configs(), *vrt_names()])
    bad = CliRunner().invoke(main, ["config", "nope", str(tmp_path / "x.yaml")])
    assert bad.exit_code == 2 and "demo_tiny" in bad.output and not (tmp_path / "x.yaml").exists()


def test_edit_config_text_refuses_missing_keys_and_bad_values():
    text = example_configs()["demo_tiny"].read_text()
    with pytest.raises(ConfigError, match="no DATA.NOPE line"):
        edit_config_text(text, {"DATA.NOPE": 1}, "x.yaml")
    with pytest.raises(ConfigError, match="x.yaml: .*DATA.K"):
        edit_config_text(text, {"DATA.K": 0}, "x.yaml")  # K must be positive
    assert edit_config_text(text, {}, "x.yaml") == text


def test_the_command_line_starts_without_torch():
    # `spikeprep --help` and `spikeprep config` must not wait seconds for torch and basicsr: command
    # modules import the model when their command runs.
    code = "import sys, cli.main; heavy = {'torch', 'basicsr'} & set(sys.modules); print(sorted(heavy))"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT, timeout=120)
    assert proc.returncode == 0 and proc.stdout.strip() == "[]", proc.stdout + proc.stderr


def test_python_dash_m_spikeprep_is_the_cli():
    proc = subprocess.run([sys.executable, "-m", "spikeprep", "--help"], capture_output=True, text=True, cwd=ROOT,
                          timeout=120)
    assert proc.returncode == 0 and "Usage: spikeprep" in proc.stdout and "config" in proc.stdout


# ---- the Dockerfile (not built here: no registry to pull the base image from; README "Docker") -------
def test_dockerfile_runtime_stage_is_unprivileged_without_compiler_or_test_packages():
    text = (ROOT / "Dockerfile").read_text()
    stages = text.split("\nFROM ")
    assert len(stages) == 3, "a build stage and a runtime stage"
    build, runtime = stages[1], stages[2]
    assert "python -m model.nets.cpu_attention /opt/spikeprep/cpu_attention.so" in build  # the kernel, at build time
    assert "--constraint" in build and "[test]" not in text and "pytest" not in text  # runtime dependencies only
    assert "gcc" not in runtime and "SPIKEPREP_KERNEL_LIB=/opt/spikeprep/cpu_attention.so" in runtime
    users = [line.split()[1] for line in runtime.splitlines() if line.startswith("USER ")]
    assert users and users[-1] not in ("root", "0")
    for label in ("title", "description", "version", "revision", "licenses"):
        assert f"org.opencontainers.image.{label}=" in runtime
    ignored = (ROOT / ".dockerignore").read_text().split()
    assert {".git", ".venv", "outputs"} <= set(ignored)
