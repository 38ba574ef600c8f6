"""The documentation leads somewhere: every relative link in README.md and docs/*.md names a file
that exists and, with a #anchor, a heading of that file by GitHub's slugs; the README links every
page of docs/; and the layout in the README's Development section names what the repository
holds."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
README = ROOT / "README.md"
DOCS = ROOT / "docs"

FENCED_BLOCK = re.compile(r"^```.*?^```[^\n]*$", re.MULTILINE | re.DOTALL)
CODE_SPAN = re.compile(r"`[^`\n]*`")
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")
HEADING = re.compile(r"^#{1,6}[ \t]+(.+?)[ \t]*$", re.MULTILINE)
# http:, https:, mailto:: a link that leaves the repository.
SCHEME = re.compile(r"[A-Za-z][A-Za-z0-9+.-]*:")
# A file or folder named in a layout entry's description: `config.py`, `unit/`.
LAYOUT_NAME = re.compile(r"(?<![\w/.-])[\w.-]+(?:\.py|/)(?![\w/])")


def pages() -> list[Path]:
    return [README, *sorted(DOCS.glob("*.md"))]


def prose(markdown: str) -> str:
    """The text outside fenced code blocks, where a `#` line is a shell comment, not a heading."""
    return FENCED_BLOCK.sub("", markdown)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: its text lower-cased, punctuation dropped, spaces as -."""
    text = re.sub(r"\[([^\]]*)\]\([^)]*\)", r"\1", heading)  # a link counts by its text
    return re.sub(r"[^\w\- ]", "", text.lower()).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Each heading's anchor; a repeated heading gets -1, -2, ... as on GitHub."""
    seen: dict[str, int] = {}
    found = set()
    for heading in HEADING.findall(prose(page.read_text())):
        base = slug(heading)
        repeats = seen.get(base, 0)
        seen[base] = repeats + 1
        found.add(f"{base}-{repeats}" if repeats else base)
    return found


def link_targets(page: Path) -> list[str]:
    """The targets of the page's links and images, outside code."""
    return LINK.findall(CODE_SPAN.sub("code", prose(page.read_text())))


def broken_links(page: Path) -> list[str]:
    broken = []
    for target in link_targets(page):
        if SCHEME.match(target):
            continue
        path, _, anchor = target.partition("#")
        linked = (page.parent / path) if path else page
        if not linked.exists():
            broken.append(f"{page.name}: {target}: no file {path}")
        elif anchor and (linked.suffix != ".md" or anchor not in anchors(linked)):
            broken.append(f"{page.name}: {target}: no heading #{anchor} in {linked.name}")
    return broken


def test_every_relative_link_leads_to_a_file_and_its_heading() -> None:
    assert [problem for page in pages() for problem in broken_links(page)] == []


def test_a_missing_file_or_heading_is_found(tmp_path: Path) -> None:
    (tmp_path / "other.md").write_text(
        "# Other\n\n## The `ingest` command\n\n## Twice\n\n## Twice\n"
    )
    page = tmp_path / "page.md"
    page.write_text(
        "# Page\n\n## Guarantees, and the faults that prove them\n\n"
        "[good](other.md#the-ingest-command), [again](other.md#twice-1), "
        "[here](#guarantees-and-the-faults-that-prove-them), [out](https://example.com/x#y),\n"
        "[gone](missing.md), [no heading](other.md#nowhere), [no local](#nowhere),\n"
        "![picture](missing.png), `[in code](missing.md)`\n\n"
        "```bash\n# Not a heading\n[in a block](missing.md)\n```\n\n[shell](#not-a-heading)\n"
    )
    assert broken_links(page) == [
        "page.md: missing.md: no file missing.md",
        "page.md: other.md#nowhere: no heading #nowhere in other.md",
        "page.md: #nowhere: no heading #nowhere in page.md",
        "page.md: missing.png: no file missing.png",
        "page.md: #not-a-heading: no heading #not-a-heading in page.md",
    ]


def test_the_readme_links_every_page_of_docs() -> None:
    linked = {(ROOT / target.partition("#")[0]).resolve() for target in link_targets(README)}
    assert sorted(page.name for page in DOCS.glob("*.md") if page.resolve() not in linked) == []


def layout() -> dict[str, str]:
    """The layout block of the README's Development section: each path with its description."""
    section = README.read_text().split("\n## Development\n", 1)[1].split("\n## ", 1)[0]
    block = FENCED_BLOCK.search(section)
    assert block, "the Development section has no layout block"
    entries: dict[str, str] = {}
    for line in block.group().splitlines()[1:-1]:
        if line.startswith(" "):
            entries[next(reversed(entries))] += line
        else:
            path, _, description = line.partition(" ")
            entries[path] = description
    return entries


def test_the_layout_in_the_readme_names_what_the_repository_holds() -> None:
    entries = layout()
    for path, description in entries.items():
        assert (ROOT / path).exists(), path
        folder = ROOT / path if path.endswith("/") else (ROOT / path).parent
        for name in LAYOUT_NAME.findall(CODE_SPAN.sub("", description)):
            assert (folder / name).exists(), f"{path}: {name}"
    tracked = subprocess.run(
        ["git", "ls-files"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout.splitlines()
    folders = {name.split("/")[0] for name in tracked if "/" in name}
    assert sorted(folders - {path.split("/")[0] for path in entries}) == []
