"""Texts whose words join the OCR vocabulary: help-center files or folders (Markdown, text, HTML)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

SUFFIXES = {".md", ".markdown", ".txt", ".html", ".htm"}
_TAG = re.compile(r"<[^>]+>")


def vocabulary_texts(paths: list[Path]) -> Iterator[str]:
    """The text of every help-center file under `paths` (HTML tags dropped); unreadable files skipped."""
    for root in paths:
        root = Path(root)
        files = sorted(p for p in root.rglob("*") if p.is_file()) if root.is_dir() else [root]
        for path in files:
            if path.suffix.lower() not in SUFFIXES:
                continue
            try:
                text = path.read_text(encoding="utf-8", errors="replace")
            except OSError:
                continue
            yield _TAG.sub(" ", text) if path.suffix.lower() in (".html", ".htm") else text
