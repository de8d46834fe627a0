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


# ---- links between the repository's documents ---------------------------------------------------------
DOCS = ("README.md", "DESIGN.md", "benchmarks/RESULTS.md")
LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(path: Path) -> set[str]:
    """The #fragments GitHub makes of a markdown file's headings: lower case, punctuation but '-' and '_'
    dropped, spaces to '-'; a repeated heading gets '-1', '-2', ... Headings inside code fences are not
    headings."""
    seen: dict[str, int] = {}
    anchors, fenced = set(), False
    for line in path.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if fenced or not (m := re.match(r"#{1,6} (.+)", line)):
            continue
        slug = re.sub(r"[^\w\- ]", "", m.group(1).strip().lower()).replace(" ", "-")
        n = seen.get(slug, 0)
        seen[slug] = n + 1
        anchors.add(slug if n == 0 else f"{slug}-{n}")
    return anchors


def _links(path: Path):
    fenced = False
    for n, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        if line.startswith("```"):
            fenced = not fenced
        if not fenced:
            for target in LINK.findall(re.sub(r"`[^`]*`", "", line)):
                yield n, target


def test_the_anchor_slugs_follow_github():
    assert "models-modelfusetype" in _anchors(ROOT / "README.md")
    assert "the-store-data_root" in _anchors(ROOT / "README.md")
    assert "7-model-original-sections-5-and-10-with-the-departures-of-section-9" in _anchors(ROOT / "DESIGN.md")
    assert {"overall-val-32-frames", "overall-val-32-frames-1"} <= _anchors(ROOT / "benchmarks/RESULTS.md")


def test_every_relative_link_and_anchor_resolves():
    """A moved section or a renamed heading fails here, not in a reader's browser."""
    broken = []
    for doc in DOCS:
        source = ROOT / doc
        for n, target in _links(source):
            if re.match(r"[a-z]+:", target):  # http(s):, mailto:
                continue
            file_part, _, fragment = target.partition("#")
            linked = (source.parent / file_part).resolve() if file_part else source
            if not linked.exists() or ROOT not in linked.parents:
                broken.append(f"{doc}:{n}: {target} (no such file in the repository)")
            elif fragment and fragment not in _anchors(linked):
                broken.append(f"{doc}:{n}: {target} (no heading makes #{fragment})")
    assert not broken, "\n".join(broken)
