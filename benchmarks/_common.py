"""Shared by the benchmark scripts: machine description, RSS, and RESULTS.md section updates."""
from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu_description() -> str:
    """``nproc N, CPU <model name>`` from /proc/cpuinfo (``unknown`` elsewhere)."""
    model = platform.processor() or "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"nproc {os.cpu_count()}, CPU {model}"


def load_average() -> str:
    """``load average 1m 5m 15m`` of the machine (``load average n/a`` where unavailable)."""
    try:
        return "load average %.2f %.2f %.2f" % os.getloadavg()
    except OSError:
        return "load average n/a"


def rss_kib() -> int:
    """Resident set size of this process (KiB), from /proc/self/status."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    return 0


def write_section(path: Path, section: str, body: str) -> None:
    """Replace the ``section`` heading's block of a markdown file with ``body`` (append if absent)."""
    text = path.read_text() if path.exists() else "# Benchmark results\n"
    lines = text.splitlines()
    start = next((i for i, line in enumerate(lines) if line.strip() == section), None)
    new = body.rstrip("\n").splitlines()
    if start is None:
        lines = lines + ([""] if lines and lines[-1].strip() else []) + new
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        tail = lines[end:]
        lines = lines[:start] + new + ([""] + tail if tail else [])
    path.write_text("\n".join(lines) + "\n")
