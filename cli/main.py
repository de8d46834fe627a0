"""``spikeprep``: the command-line entry point (DESIGN section 2).

Each subcommand lives in its own module and is registered here. Errors that spikeprep raises on
purpose (bad input files, bad configs) are printed as one clear message with exit status 2, never as a
traceback; unexpected exceptions still show their traceback, because those are bugs.
"""
from __future__ import annotations

import sys

import click

from schemas.config import ConfigError
from spikeprep.errors import SpikeprepError

EPILOG = """\b
Examples:
  spikeprep synth data/raw --preset demo          # realistic synthetic raw data
  spikeprep synth data/raw --layout per-frame-dat --misalign seq_000:3
  spikeprep config vrt_spike_baseline my.yaml --data-root data/store   # a shipped config to edit
  spikeprep ingest data/raw --out data/store --config my.yaml --write-config my.yaml
  spikeprep audit data/store --overlays 8
  spikeprep train --config CFG --exp spike ; spikeprep train --config CFG --exp base --no-spike
  spikeprep test --ckpt outputs/ckpts/spike/best.pth --store data/store --output outputs/test/spike
  spikeprep compare spike base
  spikeprep baselines data/store                   # blur, TFP, TFI, least squares: the floor to clear
  spikeprep view rec.dat --height 250 --width 400  # TFP/TFI frames and video of a recording
"""


class _FriendlyGroup(click.Group):
    def invoke(self, ctx: click.Context):
        try:
            return super().invoke(ctx)
        except (SpikeprepError, ConfigError) as err:
            click.echo(f"error: {err}", err=True)
            sys.exit(2)


@click.group(cls=_FriendlyGroup, epilog=EPILOG, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="spikeprep")
def main() -> None:
    """Spike-camera-guided video deblurring: raw spikes -> audited store -> VRT(+spike) training."""


def _register() -> None:
    from cli.baselines_cmd import baselines_cmd
    from cli.compare_cmd import compare_cmd
    from cli.config_cmd import config_cmd
    from cli.store_cmds import audit_cmd, ingest_cmd, stats_cmd, verify_cmd
    from cli.synth_cmd import synth
    from cli.test_cmd import test_cmd
    from cli.train_cmd import train_cmd
    from cli.view_cmd import view_cmd

    main.add_command(synth)
    main.add_command(config_cmd, "config")
    main.add_command(ingest_cmd, "ingest")
    main.add_command(audit_cmd, "audit")
    main.add_command(stats_cmd, "stats")
    main.add_command(verify_cmd, "verify")
    main.add_command(train_cmd, "train")
    main.add_command(test_cmd, "test")
    main.add_command(compare_cmd, "compare")
    main.add_command(baselines_cmd, "baselines")
    main.add_command(view_cmd, "view")


_register()

if __name__ == "__main__":
    main()
