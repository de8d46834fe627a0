"""``spikeprep config NAME OUT.yaml``: write one of the shipped training configs, ready to edit and train."""
from __future__ import annotations

from pathlib import Path

import click

from model.shipped_configs import example_configs, vrt_names
from schemas.atomic import atomic_write_text
from schemas.config import edit_config_text, read_config_text
from spikeprep.errors import InputError


def _listing() -> str:
    lines = ["training configs (NAME):"]
    for name, path in example_configs().items():
        first = path.read_text().splitlines()[0].lstrip("# ").strip()
        lines.append(f"  {name:20s} {first}")
    lines.append("VRT presets (MODEL.VRT_CFG): " + ", ".join(vrt_names()))
    return "\n".join(lines)


@click.command(epilog="""\b
The shipped configs are inside the installed package (model/configs/deblur/*.yaml), so this works
wherever spikeprep is installed. OUT keeps the shipped file's comments; --data-root, --save-dir and --k
set DATA.ROOT, LOG.SAVE_DIR and DATA.K in it (paths as given: they are read relative to the folder you
run `spikeprep train` from). DATA.NORM is written later by `spikeprep ingest --write-config OUT.yaml`.
\b
Examples:
  spikeprep config --list
  spikeprep config demo_tiny my_demo.yaml --data-root store --save-dir outputs
  spikeprep config vrt_spike_baseline gopro.yaml --data-root /data/gopro_store
""")
@click.argument("name", required=False)
@click.argument("out", required=False, type=click.Path(dir_okay=False, path_type=Path))
@click.option("--data-root", help="DATA.ROOT: the store `spikeprep ingest --out` wrote [the shipped placeholder]")
@click.option("--save-dir", help="LOG.SAVE_DIR: where training writes ckpts/, logs/, metrics/, visuals/ "
              "[the shipped value]")
@click.option("--k", type=click.IntRange(min=1), help="DATA.K: voxel bins per exposure (the store's) [the shipped value]")
@click.option("--overwrite", is_flag=True, help="replace OUT if it exists")
@click.option("--list", "list_only", is_flag=True, help="list the shipped configs and VRT presets, then exit")
def config_cmd(name: str | None, out: Path | None, data_root: str | None, save_dir: str | None, k: int | None,
               overwrite: bool, list_only: bool) -> None:
    """Write the shipped training config NAME to OUT.yaml (`--list` shows the names)."""
    if list_only:
        click.echo(_listing())
        return
    shipped = example_configs()
    if name is None or out is None:
        raise click.UsageError("give NAME and OUT.yaml (shipped names: " + ", ".join(shipped) + ")")
    if name not in shipped:
        raise InputError(None, f"no shipped config named {name!r}", fix="use one of " + ", ".join(shipped))
    if out.exists() and not overwrite:
        raise InputError(out, "exists", fix="choose another OUT, or pass --overwrite to replace it")
    if not out.parent.is_dir():
        raise InputError(out.parent, "no such folder", fix="create it first, or choose another OUT")
    updates: dict[str, object] = {}
    if data_root is not None:
        updates["DATA.ROOT"] = data_root
    if save_dir is not None:
        updates["LOG.SAVE_DIR"] = save_dir
    if k is not None:
        updates["DATA.K"] = k
    text = edit_config_text(read_config_text(shipped[name]), updates, str(out))
    atomic_write_text(out, text)
    click.echo(f"wrote {out} (from {name}); next: spikeprep ingest RAW --out DATA_ROOT --config {out} "
               f"--write-config {out}")
