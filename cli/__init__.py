"""The ``spikeprep`` command line (thin: parse, call library functions, print)."""
