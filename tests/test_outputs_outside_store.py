"""Issue 28, item 6: no command writes inside a store (DATA_ROOT) except into its own part of it.

A file there that ingest did not write makes the next ingest refuse the store ("holds files spikeprep did not
write"), so each command refuses such an output before it writes anything: `test` (tests/test_test_cmd.py),
`train`'s LOG.SAVE_DIR (tests/test_train.py), and here `view`, `baselines`, `audit --curves`, `verify --json`
and `compare`. `baselines` may write into DATA_ROOT/baselines and `audit` into DATA_ROOT/audit: their parts.
"""
from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner

from cli.main import main
from spikeprep.errors import InputError
from spikeprep.store import enclosing_store, refuse_output_in_store


def _listing(store: Path) -> list[tuple[str, int]]:
    return sorted((str(p.relative_to(store)), p.stat().st_mtime_ns) for p in store.rglob("*"))


@pytest.mark.parametrize("command", ["view", "baselines", "audit", "verify", "compare"])
def test_a_command_whose_output_lies_inside_a_store_is_refused_before_it_writes(train_store, command):
    seq = next(p.name for p in (train_store / "val").iterdir() if p.is_dir())
    target, args = {
        "view": (train_store / "val" / "view", ["view", train_store, "--seq", f"val/{seq}", "--video", "none",
                                                  "--no-progress", "--out"]),
        "baselines": (train_store / "val" / "baselines.json", ["baselines", train_store, "--no-progress", "--out"]),
        "audit": (train_store / "val" / "curves.png", ["audit", train_store, "--no-progress", "--curves"]),
        "verify": (train_store / "verify.json", ["verify", train_store, "--no-progress", "--json"]),
        "compare": (train_store / "outputs", ["compare", "spike", "base", "--outputs"]),
    }[command]
    before = _listing(train_store)
    result = CliRunner().invoke(main, [*map(str, args), str(target)])
    assert result.exit_code == 2, result.output
    assert f"lies inside the store {train_store}" in result.output and "Fix:" in result.output, result.output
    assert "Traceback" not in result.output and _listing(train_store) == before


def test_own_parts_of_the_store_and_paths_outside_are_allowed(train_store, tmp_path):
    own = train_store / "baselines"
    refuse_output_in_store(own / "val.json", "--out", own=own)                   # baselines' default
    refuse_output_in_store(tmp_path / "outputs" / "metrics", "--outputs")
    assert enclosing_store(tmp_path / "elsewhere") is None
    assert enclosing_store(train_store / "val" / "not_yet" / "x.png") == train_store.resolve()
    with pytest.raises(InputError, match=r"only .*baselines is this command's part"):
        refuse_output_in_store(train_store / "audit" / "val.json", "--out", own=own)
    link = tmp_path / "link"                   # a symlink cannot hide the store
    os.symlink(train_store, link)
    with pytest.raises(InputError, match="lies inside the store"):
        refuse_output_in_store(link / "val" / "out", "--output")
