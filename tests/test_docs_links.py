"""Every relative link in the repository's markdown files points at a file or folder that exists.

Checks inline links and images (``[text](target)``, ``![alt](target)``), reference definitions
(``[name]: target``) and HTML ``src=`` / ``href=`` attributes, outside fenced code blocks and code
spans. URLs with a scheme (``https:``, ``mailto:``) and in-page anchors (``#...``) are skipped; a
``#fragment`` or ``?query`` after a path is dropped before the path is resolved against the file's
folder (a leading ``/`` means the repository root). No network.
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


def broken_links(path: Path, root: Path = ROOT) -> list[str]:
    """``file:line: target`` for each relative link of ``path`` whose file or folder does not exist."""
    broken = []
    for number, target in link_targets(path.read_text(encoding="utf-8")):
        if target.startswith("#") or _SCHEME.match(target):
            continue
        local = re.split(r"[#?]", target, maxsplit=1)[0]
        if not local:
            continue
        resolved = root / local.lstrip("/") if local.startswith("/") else path.parent / local
        if not resolved.exists():
            broken.append(f"{path.relative_to(root)}:{number}: {target}")
    return broken


def test_checker_finds_a_broken_link_and_passes_good_ones(tmp_path):
    (tmp_path / "docs").mkdir()
    (tmp_path / "docs" / "page.md").write_text("# page\n")
    (tmp_path / "fig.png").write_bytes(b"")
    md = tmp_path / "README.md"
    md.write_text(
        "[ok](docs/page.md#page) ![fig](fig.png \"title\") [dir](docs/) [web](https://example.org/x.md)\n"
        "[anchor](#top) [root](/docs/page.md) <img src=\"fig.png\">\n"
        "`[in a code span](missing-span.md)`\n"
        "```\n[in a fence](missing-fence.md)\n```\n"
        "[gone](docs/missing.md) and ![gone too](nofig.png)\n"
        "[ref]: docs/also-missing.md\n"
    )
    assert broken_links(md, tmp_path) == [
        "README.md:7: docs/missing.md", "README.md:7: nofig.png", "README.md:8: docs/also-missing.md"]


def test_markdown_files_are_found():
    names = {p.relative_to(ROOT).as_posix() for p in markdown_files()}
    assert {"README.md", "docs/README.md", "docs/quality-log.md"} <= names


@pytest.mark.parametrize("path", markdown_files(), ids=lambda p: p.relative_to(ROOT).as_posix())
def test_relative_links_resolve(path):
    assert broken_links(path) == []
