"""The configs that ship inside the package, and how ``MODEL.VRT_CFG`` names a VRT.

``model/configs`` is the repository's ``configs/`` (a link in the source tree, real files in the wheel), so
an installed spikeprep carries the example training configs (``configs/deblur/*.yaml``) and the VRT
architecture files (``configs/vrt/*.yaml``) wherever it is installed; ``spikeprep config NAME OUT.yaml``
writes one of the examples for a user to edit.

``MODEL.VRT_CFG`` is one of:

- a name: the stem of a shipped VRT file, ``deblur``, ``tiny`` (the ``model.nets.vrt.VRT_PRESETS`` of those
  names, no overrides) or ``deblur_train_kair``;
- a YAML file of the form ``{preset: ..., overrides: {...}}``. ``schemas.config.load_config`` resolves a
  relative path against the config file's own folder; a path that is not there is tried against the
  current folder, then against this package (so ``configs/vrt/tiny.yaml``, the form older configs and
  checkpoints hold, works from an installed wheel too).
"""
from __future__ import annotations

from pathlib import Path

from spikeprep.errors import InputError

PACKAGE_DIR = Path(__file__).resolve().parent
CONFIG_DIR = PACKAGE_DIR / "configs"


def _yaml_files(folder: Path) -> dict[str, Path]:
    return {p.stem: p for p in sorted(folder.glob("*.yaml"))}


def example_configs() -> dict[str, Path]:
    """The shipped training configs by name (``demo_tiny``, ``vrt_spike_baseline``)."""
    return _yaml_files(CONFIG_DIR / "deblur")


def vrt_config_files() -> dict[str, Path]:
    """The shipped VRT architecture files by name (``deblur``, ``deblur_train_kair``, ``tiny``)."""
    return _yaml_files(CONFIG_DIR / "vrt")


def vrt_names() -> list[str]:
    """Every name ``MODEL.VRT_CFG`` accepts without a path: the shipped VRT files (one per
    ``model.nets.vrt.VRT_PRESETS`` entry, same name, and variants such as ``deblur_train_kair``)."""
    return sorted(vrt_config_files())


def resolve_vrt_cfg(vrt_cfg: str) -> Path:
    """The VRT YAML file that ``vrt_cfg`` names (a shipped one by name, or a path); InputError if none."""
    shipped = vrt_config_files()
    if vrt_cfg in shipped:
        return shipped[vrt_cfg]
    path = Path(vrt_cfg).expanduser()
    tried = [path] if path.is_absolute() else [Path.cwd() / path, PACKAGE_DIR / path]
    for candidate in tried:
        if candidate.is_file():
            return candidate
    raise InputError(None, f"MODEL.VRT_CFG {vrt_cfg!r}: not a VRT preset ({', '.join(vrt_names())}) and no such "
                     f"file (tried {', '.join(str(p) for p in tried)})",
                     fix="name a preset, or give a YAML file's path relative to the config file's folder")
