"""Every relative link and image in README.md and docs/*.md points to a file or folder of the repository."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def broken_links(markdown_file):
    """The relative targets in `markdown_file` (web addresses and in-page anchors aside) that do not exist."""
    text = markdown_file.read_text(encoding="utf-8")
    text = re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links
    missing = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        if not (markdown_file.parent / target.split("#")[0]).exists():
            missing.append(target)
    return missing


def test_every_relative_link_in_the_docs_exists():
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    problems = {f.relative_to(REPO).as_posix(): broken_links(f) for f in files}
    assert not {name: links for name, links in problems.items() if links}


def test_the_check_catches_a_missing_image_and_ignores_web_links(tmp_path):
    (tmp_path / "here.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text("![a](here.png) ![b](gone.png) [c](https://example.org) [d](#top) [e](page.md#x)\n")
    assert broken_links(page) == ["gone.png"]
