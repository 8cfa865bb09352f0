"""Every relative link in the repository's markdown files points at a file or folder that exists.

Checks inline links and images (``[text](target)``, ``![alt](target)``), reference definitions
(``[name]: target``) and HTML ``src=`` / ``href=`` attributes, outside fenced code blocks and code
spans. URLs with a scheme (``https:``, ``mailto:``) are skipped. A path is resolved against the
file's folder (a leading ``/`` means the repository root) after dropping any ``?query``; a
``#fragment`` on a markdown file (or alone, for the same file) must name one of its headings, as
GitHub makes heading anchors (lower case, punctuation dropped, spaces to hyphens, ``-1``, ``-2``
for repeats). No network.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SKIP_DIRS = {".git", "runs", "build", "dist", ".venv", ".pytest_cache", "__pycache__", "node_modules"}

_FENCE = re.compile(r"^\s*(```|~~~)")
_CODE_SPAN = re.compile(r"(`+)(?:(?!\1).)+\1")
_INLINE = re.compile(r"!?\[(?:[^\[\]]|\[[^\]]*\])*\]\(\s*<?([^)\s>]+)>?(?:\s+[\"'(][^)]*)?\)")
_REFERENCE = re.compile(r"^\s{0,3}\[[^\]]+\]:\s*<?(\S+?)>?(?:\s+.*)?$")
_HTML = re.compile(r"""(?:src|href)\s*=\s*["']([^"']+)["']""", re.IGNORECASE)
_SCHEME = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*:")
_HEADING = re.compile(r"^\s{0,3}#{1,6}\s+(.*?)\s*#*\s*$")


def markdown_files(root: Path = ROOT) -> list[Path]:
    """The committed ``*.md`` files (``git ls-files``), or every ``*.md`` outside build and run folders
    when ``root`` is not a git checkout."""
    try:
        out = subprocess.run(["git", "ls-files", "-z", "--", "*.md"], cwd=root, capture_output=True, check=True)
        files = [root / p for p in out.stdout.decode().split("\0") if p]
        return [f for f in files if f.exists()]  # deleted in the work tree but not yet committed
    except (OSError, subprocess.CalledProcessError):
        return [p for p in root.rglob("*.md") if not SKIP_DIRS & set(p.relative_to(root).parts)]


def link_targets(text: str) -> list[tuple[int, str]]:
    """(line number, target) of every link in markdown ``text``, outside code blocks and code spans."""
    found, fenced = [], False
    for number, line in enumerate(text.splitlines(), 1):
        if _FENCE.match(line):
            fenced = not fenced
            continue
        if fenced:
            continue
        line = _CODE_SPAN.sub("", line)
        targets = _INLINE.findall(line) + _HTML.findall(line)
        ref = _REFERENCE.match(line)
        if ref:
            targets.append(ref.group(1))
        found += [(number, t) for t in targets]
    return found


def heading_anchors(text: str) -> set[str]:
    """GitHub's anchors of the ATX headings of markdown ``text`` (outside fenced code blocks)."""
    anchors, seen, fenced = set(), {}, False
    for line in text.splitlines():
        if _FENCE.match(line):
            fenced = not fenced
            continue
        heading = None if fenced else _HEADING.match(line)
        if heading:
            slug = re.sub(r"[^\w\- ]", "", heading.group(1).replace("`", "").lower()).replace(" ", "-")
            n = seen.get(slug, 0)
            seen[slug] = n + 1
            anchors.add(f"{slug}-{n}" if n else slug)
    return anchors


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: target`` for each relative link of ``path`` whose file or folder does not exist,
    or whose ``#fragment`` names no heading of the markdown file it points at."""
    broken = []
    for number, target in link_targets(path.read_text(encoding="utf-8")):
        if _SCHEME.match(target):
            continue
        local, _, fragment = target.split("?", 1)[0].partition("#")
        resolved = path if not local else root / local.lstrip("/") if local.startswith("/") else path.parent / local
        ok = resolved.exists()
        if ok and fragment and resolved.suffix.lower() == ".md" and resolved.is_file():
            ok = fragment in heading_anchors(resolved.read_text(encoding="utf-8"))
        if not ok:
            broken.append(f"{path.relative_to(root)}:{number}: {target}")
    return broken


def test_checker_finds_a_broken_link_and_passes_good_ones(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# Page\n## 2. Test-time flip: today's `k`\n## 2. Test-time flip: today's `k`\n")
    (tmp_path / "fig.png").write_bytes(b"")
    md = tmp_path / "README.md"
    md.write_text(
        "[ok](docs/page.md#page) ![fig](fig.png \"title\") [dir](docs/) [web](https://example.org/x.md)\n"
        "[anchor](#top) [root](/docs/page.md) <img src=\"fig.png\"> [s2](docs/page.md#2-test-time-flip-todays-k-1)\n"
        "`[in a code span](missing-span.md)`\n"
        "```\n[in a fence](missing-fence.md)\n```\n"
        "[gone](docs/missing.md) and ![gone too](nofig.png)\n"
        "[ref]: docs/also-missing.md\n"
        "[no such section](docs/page.md#3-test-time-flip) [no such anchor here](#nowhere)\n"
        "# Top\n"
    )
    assert broken_links(md, tmp_path) == [
        "README.md:7: docs/missing.md", "README.md:7: nofig.png", "README.md:8: docs/also-missing.md",
        "README.md:9: docs/page.md#3-test-time-flip", "README.md:9: #nowhere"]


def test_markdown_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/README.md", "docs/quality-log.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    assert broken_links(path) == []
