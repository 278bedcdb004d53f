"""Every relative link and image in README.md and docs/*.md points to a file of the repository, and every
`#anchor` to a heading of its page (GitHub's heading slugs)."""

import pathlib
import re

REPO = pathlib.Path(__file__).resolve().parents[1]
LINK = re.compile(r"!?\[[^\]]*\]\(([^)\s]+)\)")


def _without_code_blocks(text):
    return re.sub(r"```.*?```", "", text, flags=re.S)  # code blocks hold commands, not links or headings


def heading_anchors(markdown_file):
    """The anchors GitHub gives the headings of `markdown_file` (lower case, punctuation dropped, spaces -> -)."""
    anchors = set()
    for line in _without_code_blocks(markdown_file.read_text(encoding="utf-8")).splitlines():
        if line.startswith("#"):
            title = line.lstrip("#").strip().lower()
            anchors.add(re.sub(r"[^\w\- ]", "", title).replace(" ", "-"))
    return anchors


def broken_links(markdown_file):
    """The relative targets in `markdown_file` (web addresses aside) whose file or heading does not exist."""
    missing = []
    for target in LINK.findall(_without_code_blocks(markdown_file.read_text(encoding="utf-8"))):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        linked = markdown_file.parent / path if path else markdown_file
        if not linked.exists() or (anchor and linked.suffix == ".md" and anchor not in heading_anchors(linked)):
            missing.append(target)
    return missing


def test_every_relative_link_in_the_docs_exists():
    files = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]
    problems = {f.relative_to(REPO).as_posix(): broken_links(f) for f in files}
    assert not {name: links for name, links in problems.items() if links}


def test_the_check_catches_a_missing_image_and_a_missing_heading_and_ignores_web_links(tmp_path):
    (tmp_path / "here.png").write_bytes(b"")
    page = tmp_path / "page.md"
    page.write_text(
        "# APE-GAN Table 1: L-BFGS, JSMA\n\n![a](here.png) ![b](gone.png) [c](https://example.org)\n"
        "[d](#ape-gan-table-1-l-bfgs-jsma) [e](page.md#ape-gan-table-1-l-bfgs-jsma) [f](#gone) [g](page.md#gone)\n"
    )
    assert broken_links(page) == ["gone.png", "#gone", "page.md#gone"]
