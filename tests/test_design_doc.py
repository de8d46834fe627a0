"""DESIGN.md is the repository's own design: every citation of it in product code resolves to one of its
headings, and no product file points at a document outside the repository."""
from __future__ import annotations

import re
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PRODUCT = ("model", "spikeprep", "cli", "schemas", "configs")
CITATION = re.compile(r"(DESIGN section|original section)\s+(\d+(?:\.\d+)?)")


def _headings() -> tuple[set[str], set[str]]:
    design, original = set(), set()
    for line in (ROOT / "DESIGN.md").read_text(encoding="utf-8").splitlines():
        if m := re.match(r"## (\d+)\. ", line):
            design.add(m.group(1))
        if m := re.match(r"### original section (\d+(?:\.\d+)?):", line):
            original.add(m.group(1))
    return design, original


def _product_files():
    for top in PRODUCT:
        for path in sorted((ROOT / top).rglob("*")):
            if path.suffix in (".py", ".yaml", ".c") and path.is_file():
                yield path


def test_every_citation_names_a_design_heading():
    design, original = _headings()
    assert design >= {str(i) for i in range(11)}
    unresolved = []
    for path in [*_product_files(), ROOT / "README.md", ROOT / "Makefile"]:
        for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            for kind, number in CITATION.findall(line):
                known = design if kind == "DESIGN section" else original
                # "original section 5.1" resolves to its own heading, or to the whole section's ("original section 4").
                if number not in known and number.split(".")[0] not in known:
                    unresolved.append(f"{path.relative_to(ROOT)}:{n}: {kind} {number}")
    assert not unresolved, "citations without a DESIGN.md heading:\n" + "\n".join(unresolved)


def test_no_product_file_points_outside_the_repository():
    outside = re.compile(r"shared/(DESIGN\.md|spec/|reference/)|original_design_zh")
    hits = [f"{p.relative_to(ROOT)}:{n}" for p in [*_product_files(), ROOT / "README.md"]
            for n, line in enumerate(p.read_text(encoding="utf-8").splitlines(), 1) if outside.search(line)]
    assert not hits, hits
