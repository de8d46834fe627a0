"""README "Deblurring your own recording" runs as written: each `$ spikeprep ...` line of its console block is
run in a fresh folder, in order, with the exit status the block gives it, and every output line the block
shows is in what the command printed (durations, dates and the machine's speed masked; `...` skips lines).
The block is the real output of these commands, so a change that alters what a user sees fails here until
the README is updated."""
from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SECTION = "## Deblurring your own recording"
EXIT = re.compile(r"\s+# exit (\d+)\b.*$")

# What differs between runs of the same commands: wall times and rates, dates in file names, the machine.
VOLATILE = [
    (re.compile(r"\d+(\.\d+)? s/frame"), "<T> s/frame"),
    (re.compile(r"\d+(\.\d+)? step/s"), "<R> step/s"),
    (re.compile(r"\bin \d+(\.\d+)? s\b"), "in <T> s"),
    (re.compile(r"\(\d+(\.\d+)? s\)"), "(<T> s)"),
    (re.compile(r"\d{8}_\d{6}"), "<DATE>"),
    (re.compile(r"peak memory \d+(\.\d+)? MiB"), "peak memory <M> MiB"),
    (re.compile(r"ETA \d\d:\d\d(:\d\d)?"), "ETA <T>"),
    (re.compile(r"loss \d+\.\d+"), "loss <L>"),
    (re.compile(r"/\S*/results/"), "results/"),
]


def _mask(line: str) -> str:
    for pattern, repl in VOLATILE:
        line = pattern.sub(repl, line)
    return line.rstrip()


def walkthrough() -> list[tuple[list[str], int, list[str]]]:
    """``(argv after 'spikeprep', expected exit status, expected output lines)`` per command of the section's
    console block."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    start = text.index(SECTION)
    end = text.find("\n## ", start + len(SECTION))
    section = text[start:end if end > 0 else None]
    block = re.search(r"```console\n(.*?)```", section, flags=re.S)
    assert block, f"README {SECTION!r} has no ```console block"
    steps: list[tuple[list[str], int, list[str]]] = []
    for line in block.group(1).splitlines():
        if line.startswith("$ "):
            command = line[2:]
            status = EXIT.search(command)
            command = EXIT.sub("", command)
            argv = shlex.split(command)
            assert argv[0] == "spikeprep", line
            steps.append((argv[1:], int(status.group(1)) if status else 0, []))
        elif line.strip() and line.strip() != "..." and steps:
            steps[-1][2].append(_mask(line))
    return steps


def test_the_walkthrough_parses():
    steps = walkthrough()
    commands = [argv[0] for argv, _, _ in steps]
    assert commands[:2] == ["synth", "config"] and {"ingest", "audit", "train", "test", "view"} <= set(commands)
    assert any("--fix" in argv for argv, _, _ in steps)
    assert all(expected for _, _, expected in steps[1:]), "every command shows some of its output"


def test_a_changed_line_would_fail():
    """The masks hide times, not results: a different offset or frame count is still a difference."""
    assert _mask("train/seq_000     fixed  -1.4389e-03   -28.78") != _mask("train/seq_000     fixed  -1.4389e-03   -28.79")
    assert _mask("clock fix (72 frames scanned in 4.5 s;") == _mask("clock fix (72 frames scanned in 10.3 s;")


def test_deblurring_your_own_recording_runs_as_the_readme_says(tmp_path):
    env = dict(os.environ, PYTHONPATH=str(ROOT), OMP_NUM_THREADS="1", MKL_NUM_THREADS="1")
    for argv, status, expected in walkthrough():
        proc = subprocess.run([sys.executable, "-m", "cli.main", *argv], cwd=tmp_path, env=env,
                              capture_output=True, text=True, timeout=900, stdin=subprocess.DEVNULL)
        printed = proc.stdout + "\n" + proc.stderr
        assert proc.returncode == status, f"spikeprep {shlex.join(argv)}: exit {proc.returncode}\n{printed}"
        got = {_mask(line) for line in re.split(r"[\r\n]", printed)}
        missing = [line for line in expected if line not in got]
        assert not missing, (f"spikeprep {shlex.join(argv)}: README lines not printed:\n" + "\n".join(missing)
                             + "\n--- printed:\n" + printed)
    assert (tmp_path / "results" / "video" / "seq_002.mp4").stat().st_size > 0
