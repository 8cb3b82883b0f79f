"""The README and the reference in docs/ hold together: every local link and image resolves, every anchor names
a heading of its page (as GitHub makes them), every docs page is linked from the README, and the README stays a
short introduction."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md")), ROOT / "notebooks" / "README.md"]
LINK = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(([^()\s]+)(?:\s+\"[^\"]*\")?\)")
README_MAX_LINES = 300  # issue 20: the README had grown past 600 lines; the reference lives in docs/


def prose(text: str) -> str:
    """The page without fenced code blocks and inline code, where brackets are not links."""
    text = re.sub(r"^```.*?^```", "", text, flags=re.S | re.M)
    return re.sub(r"`[^`\n]*`", "", text)


def links(page: Path) -> list[str]:
    return LINK.findall(prose(page.read_text(encoding="utf-8")))


def local(target: str) -> bool:
    return not re.match(r"^[a-z][a-z0-9+.-]*:", target)  # http:, https:, mailto: ... are not checked here


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped (hyphens and underscores kept), spaces
    to hyphens."""
    text = re.sub(r"!?\[([^\]]*)\]\([^)]*\)", r"\1", heading).strip().lower()
    return re.sub(r"[^\w\- ]", "", text).replace(" ", "-")


def anchors(page: Path) -> set[str]:
    """Every heading's anchor on the page, with GitHub's -1, -2 ... for repeated headings."""
    seen: dict[str, int] = {}
    out = set()
    for line in re.sub(r"^```.*?^```", "", page.read_text(encoding="utf-8"), flags=re.S | re.M).splitlines():
        match = re.match(r"^#{1,6}\s+(.*)$", line)
        if match:
            base = slug(match.group(1).replace("`", ""))
            out.add(base if base not in seen else f"{base}-{seen[base]}")
            seen[base] = seen.get(base, 0) + 1
    return out


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_local_link_and_image_names_a_file_that_exists(page):
    missing = []
    for target in filter(local, links(page)):
        path = target.split("#", 1)[0]
        if path and not (page.parent / path).exists():
            missing.append(target)
    assert missing == [], f"{page.relative_to(ROOT)} links to files that do not exist: {missing}"


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_anchor_names_a_heading_of_its_page(page):
    broken = []
    for target in filter(local, links(page)):
        if "#" not in target:
            continue
        path, anchor = target.split("#", 1)
        linked = (page.parent / path) if path else page
        if linked.suffix == ".md" and anchor not in anchors(linked):
            broken.append(target)
    assert broken == [], f"{page.relative_to(ROOT)} links to headings that do not exist: {broken}"


def test_every_docs_page_is_linked_from_the_readme():
    linked = {(ROOT / t.split("#", 1)[0]).resolve() for t in links(ROOT / "README.md") if local(t)}
    unlinked = [p.name for p in sorted((ROOT / "docs").glob("*.md")) if p.resolve() not in linked]
    assert unlinked == [], f"docs pages the README does not link: {unlinked}"


def test_the_readme_stays_a_short_introduction():
    lines = (ROOT / "README.md").read_text(encoding="utf-8").count("\n")
    assert lines <= README_MAX_LINES, f"README.md has {lines} lines: move reference sections to docs/"


def test_the_link_checker_finds_a_broken_link_and_a_broken_anchor(tmp_path):
    page = tmp_path / "page.md"
    page.write_text("# A title\n\nSee [gone](missing.md), [here](#a-title), [there](#nowhere) and `[code](x.md)`.\n")
    assert links(page) == ["missing.md", "#a-title", "#nowhere"]
    assert not (tmp_path / "missing.md").exists()
    assert "a-title" in anchors(page) and "nowhere" not in anchors(page)
    assert slug("`make demo`: earlier figures and wall time".replace("`", "")) == \
        "make-demo-earlier-figures-and-wall-time"


def code_lines(page: Path) -> list[str]:
    """Each line of the page's code blocks and each inline code span: where commands are written."""
    text = page.read_text(encoding="utf-8")
    blocks = re.findall(r"^```.*?^```", text, flags=re.S | re.M)
    spans = re.findall(r"`([^`\n]+)`", re.sub(r"^```.*?^```", "", text, flags=re.S | re.M))
    return [line for block in blocks for line in block.splitlines()] + spans


def named(pattern: str) -> dict[str, set[str]]:
    """What `pattern`'s group names in the README's and the docs' code, with the pages that name it."""
    out: dict[str, set[str]] = {}
    for page in PAGES[:-1]:
        for line in code_lines(page):
            for name in re.findall(pattern, line):
                out.setdefault(name, set()).add(page.name)
    return out


def test_every_cureflow_command_and_make_target_the_docs_name_exists():
    import typer.main

    from pipelines.cli import app

    commands = set(typer.main.get_command(app).commands)
    makefile = (ROOT / "Makefile").read_text(encoding="utf-8")
    targets = set(re.findall(r"^([a-z][a-z-]*):", makefile, flags=re.M))
    cli = named(r"(?:^|[\s/])cureflow[ \t]+(?:--quiet[ \t]+)?([a-z][a-z-]+)(?!\w)")
    make = named(r"(?:^|\s)make[ \t]+([a-z][a-z-]+)(?!\w)")
    assert {"score", "serve", "train"} <= set(cli) and {"install", "test", "demo"} <= set(make)
    assert {c: p for c, p in cli.items() if c not in commands} == {}, "commands the cureflow CLI does not have"
    assert {t: p for t, p in make.items() if t not in targets} == {}, "targets the Makefile does not have"
