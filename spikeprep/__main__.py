"""``python -m spikeprep``: the same command as the ``spikeprep`` script.

The one import against the package direction (cli -> model -> spikeprep -> schemas): this file is an entry
point, not library code, and nothing imports it.
"""
from cli.main import main

if __name__ == "__main__":
    main(prog_name="spikeprep")
