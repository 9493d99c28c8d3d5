"""Every document the code cites is in the repository.

Comments, docstrings, help strings and the YAML presets cite sections of the repository's own documents
as ``docs/<name>.md §<number>`` (e.g. ``docs/model.md §2.4``). This test scans every source file under
``src/`` (the presets in ``src/larpanda/configs`` included; ``configs/`` links there) and checks that

* every ``§`` is part of such a citation, the document exists in ``docs/``, and the section number is
  the number of one of its headings (``## 3 Title``, ``### 3.2 Title``, ...);
* no issue-tracker number (``issue 11``, ``issue 10 item 4``, ``issue #7``) appears: a reader of the
  repository cannot resolve one;
* no design document that lives outside the repository is named (the project's working notes).
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
DOCS = REPO / "docs"
SCAN_ROOTS = (REPO / "src", REPO / "configs")
TEXT_SUFFIXES = {".py", ".yaml", ".yml", ".json", ".js", ".md", ".txt", ".toml", ".cfg", ".html"}
SKIP_PARTS = {"__pycache__"}

HEADING = re.compile(r"^#{1,6}\s+(\d+(?:\.\d+)*)\.?\s")
CITATION = re.compile(r"docs/([A-Za-z0-9_.-]+\.md) §(\d+(?:\.\d+)*)")
ISSUE = re.compile(r"\bissues?\s*#?\s*\d+", re.IGNORECASE)
EXTERNAL_DOCS = re.compile(r"\b(spec-model|spec-data|reference-cpu(?:\.md)?|ecosystem\.md|common\.md)\b")


def source_files() -> list[Path]:
    files = set()
    for root in SCAN_ROOTS:
        if not root.exists():
            continue
        for p in root.rglob("*"):
            if not p.is_file() or p.suffix not in TEXT_SUFFIXES:
                continue
            rel = p.relative_to(root)
            if SKIP_PARTS & set(rel.parts) or any(part.endswith(".egg-info") for part in rel.parts):
                continue
            files.add(p.resolve())
    return sorted(files)


def sections(doc: Path) -> set[str]:
    """Section numbers of the numbered headings of a markdown file (outside fenced code blocks)."""
    out, fenced = set(), False
    for line in doc.read_text(encoding="utf-8").splitlines():
        if line.lstrip().startswith("```"):
            fenced = not fenced
            continue
        m = None if fenced else HEADING.match(line)
        if m:
            out.add(m.group(1))
    return out


def lines_of(path: Path):
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        return
    for i, line in enumerate(text.splitlines(), 1):
        yield i, line


def _where(path: Path, i: int) -> str:
    try:
        return f"{path.relative_to(REPO)}:{i}"
    except ValueError:
        return f"{path}:{i}"


def test_sources_found():
    files = source_files()
    assert any(p.suffix == ".py" for p in files), "no Python source found under src/"
    assert any(p.suffix == ".yaml" for p in files), "no YAML preset found under src/ or configs/"


def test_section_citations_resolve():
    cache: dict[str, set[str] | None] = {}
    bad = []
    for path in source_files():
        for i, line in lines_of(path):
            if "§" not in line:
                continue
            cited = list(CITATION.finditer(line))
            if line.count("§") != len(cited):
                bad.append(f"{_where(path, i)}: '§' not in the form 'docs/<doc>.md §<n>': {line.strip()[:160]}")
                continue
            for m in cited:
                name, sec = m.group(1), m.group(2)
                if name not in cache:
                    doc = DOCS / name
                    cache[name] = sections(doc) if doc.is_file() else None
                if cache[name] is None:
                    bad.append(f"{_where(path, i)}: docs/{name} does not exist")
                elif sec not in cache[name]:
                    bad.append(f"{_where(path, i)}: docs/{name} has no section {sec}")
    assert not bad, f"{len(bad)} unresolvable citation(s):\n" + "\n".join(bad[:60])


def test_no_issue_numbers():
    bad = [f"{_where(path, i)}: {line.strip()[:160]}"
           for path in source_files() for i, line in lines_of(path) if ISSUE.search(line)]
    assert not bad, f"{len(bad)} issue number(s) in the sources:\n" + "\n".join(bad[:60])


def test_no_external_documents_named():
    bad = [f"{_where(path, i)}: {line.strip()[:160]}"
           for path in source_files() for i, line in lines_of(path) if EXTERNAL_DOCS.search(line)]
    assert not bad, f"{len(bad)} reference(s) to documents outside the repository:\n" + "\n".join(bad[:60])


@pytest.mark.parametrize("name", ["design.md", "model.md"])
def test_docs_have_numbered_sections(name):
    doc = DOCS / name
    assert doc.is_file(), f"docs/{name} is missing"
    secs = sections(doc)
    tops = {s for s in secs if "." not in s}
    assert tops and tops == {str(k) for k in range(1, len(tops) + 1)}, f"docs/{name}: top sections {sorted(tops)}"
    for s in secs:  # every subsection has its parent section
        if "." in s:
            assert s.rsplit(".", 1)[0] in secs, f"docs/{name}: section {s} has no parent heading"


def test_heading_parser():
    assert HEADING.match("## 3 Command line").group(1) == "3"
    assert HEADING.match("### 3.2 Commands").group(1) == "3.2"
    assert HEADING.match("#### 4.1.2. Deep").group(1) == "4.1.2"
    assert HEADING.match("## Command line") is None
    m = CITATION.search("see docs/model.md §2.4 and")
    assert m and m.groups() == ("model.md", "2.4")
    assert ISSUE.search("the baseline (issue 11)") and ISSUE.search("Issue #7") and not ISSUE.search("an issue")
