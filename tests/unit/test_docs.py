"""The README stays a front page, and the docs' links lead somewhere."""

import re

import pytest

from tests.helpers import ROOT

DOCS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "assets" / "README.md"]
LINK = re.compile(r"\]\(([^)\s]+)\)")


def test_the_readme_stays_short():
    lines = (ROOT / "README.md").read_text().count("\n")
    assert lines <= 200, f"README.md has {lines} lines: move detail to docs/"


def test_the_readme_gives_both_commands_on_one_line_each():
    text = (ROOT / "README.md").read_text()
    assert "pip install -r requirements.txt && python app.py" in text
    assert "bash scripts/setup-dev.sh && . .venv/bin/activate && ruff check . && basedpyright && python -m pytest" in text
    # CI runs what the README says.
    ci = (ROOT / ".ci" / "run").read_text()
    for command in ("bash scripts/setup-dev.sh", "ruff check .", "basedpyright", "python -m pytest"):
        assert command in ci


def anchors(path):
    """GitHub's heading anchors: lower case, punctuation dropped, spaces to dashes."""
    out = set()
    for line in path.read_text().splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            out.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return out


@pytest.mark.parametrize("doc", DOCS, ids=lambda p: str(p.relative_to(ROOT)))
def test_relative_links_lead_to_files_and_headings(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if target.startswith(("http://", "https://", "mailto:")):
            continue
        path, _, anchor = target.partition("#")
        dest = (doc.parent / path).resolve() if path else doc
        if not dest.exists():
            broken.append(target)
        elif anchor and dest.suffix == ".md" and anchor not in anchors(dest):
            broken.append(target)
    assert broken == []


def test_the_architecture_map_names_every_module():
    """docs/ARCHITECTURE.md's map stays true as modules are added: each one is named in it."""
    text = (ROOT / "docs" / "ARCHITECTURE.md").read_text()
    missing = [str(path.relative_to(ROOT)) for package in ("phi_demo", "phi_demo_dev")
               for path in sorted((ROOT / package).rglob("*.py"))
               if path.stem not in ("__init__", "__main__") and not re.search(rf"\b{path.stem}\b", text)]
    assert missing == []
