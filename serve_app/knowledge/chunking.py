"""Help-center documents (Markdown, plain text, HTML) -> titled sections -> overlapping chunks.

Chunks follow headings: each carries its heading path ("Title > Section") and at most `max_words`
words, split at paragraph boundaries where possible, with `overlap` words repeated between consecutive
chunks of a long section so an answer that straddles a cut stays retrievable.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass
from pathlib import Path

from serve_app.errors import UnsupportedDocument

SUFFIXES = {".md": "markdown", ".markdown": "markdown", ".txt": "text", ".html": "html", ".htm": "html"}
_HEADING = re.compile(r"^(#{1,6})\s+(.*?)\s*#*\s*$")
_ANCHOR = re.compile(r"<a\s+name=\"[^\"]*\"\s*>\s*</a>", re.I)
_ESCAPE = re.compile(r"\\([\\`*_{}\[\]()#+\-.!<>|])")


@dataclass(frozen=True)
class Chunk:
    ordinal: int
    heading: str
    content: str

    @property
    def text_for_embedding(self) -> str:
        return f"{self.heading}\n{self.content}" if self.heading else self.content


@dataclass(frozen=True)
class Document:
    source: str
    title: str
    text: str

    @property
    def content_hash(self) -> str:
        return hashlib.sha256(f"{self.title}\n{self.text}".encode()).hexdigest()


def _clean_markdown(text: str) -> str:
    return _ESCAPE.sub(r"\1", _ANCHOR.sub("", text)).replace("\r\n", "\n")


def _html_to_markdown(html: str) -> tuple[str, str]:
    from bs4 import BeautifulSoup

    soup = BeautifulSoup(html, "html.parser")
    for tag in soup(["script", "style", "nav", "footer", "header"]):
        tag.decompose()
    title = soup.title.get_text(" ", strip=True) if soup.title else ""
    lines = []
    for node in soup.find_all(["h1", "h2", "h3", "h4", "h5", "h6", "p", "li", "pre", "td"]):
        text = node.get_text(" ", strip=True)
        if not text:
            continue
        if node.name[0] == "h" and node.name[1:].isdigit():
            lines.append(f"\n{'#' * int(node.name[1:])} {text}\n")
        else:
            lines.append(text + "\n")
    return title, "\n".join(lines)


def load_document(path: Path, root: Path) -> Document:
    """Read one file; the source is its path relative to the ingested folder (POSIX, no suffix kept)."""
    kind = SUFFIXES.get(path.suffix.lower())
    if kind is None:
        raise UnsupportedDocument(f"{path}: unsupported file type (use {', '.join(sorted(SUFFIXES))})")
    raw = path.read_text(encoding="utf-8", errors="replace").replace("\x00", "")  # Postgres text has no NUL
    source = path.relative_to(root).as_posix() if path != root else path.name
    title = ""
    if kind == "html":
        title, raw = _html_to_markdown(raw)
    text = _clean_markdown(raw) if kind != "text" else raw.replace("\r\n", "\n")
    if not title:
        first = next((m for line in text.splitlines() if (m := _HEADING.match(line))), None)
        title = first.group(2) if first else path.stem.replace("-", " ").replace("_", " ")
    return Document(source=source, title=title.strip(), text=text.strip())


def _sections(doc: Document) -> list[tuple[str, str]]:
    """(heading path, body) per heading; text before the first heading belongs to the title."""
    path: list[tuple[int, str]] = []
    sections: list[tuple[str, list[str]]] = [(doc.title, [])]
    for line in doc.text.splitlines():
        match = _HEADING.match(line)
        if match:
            level, name = len(match.group(1)), match.group(2)
            path = [p for p in path if p[0] < level] + [(level, name)]
            names = [n for _, n in path]
            if names and names[0] != doc.title:
                names.insert(0, doc.title)
            sections.append((" > ".join(dict.fromkeys(names)), []))
        else:
            sections[-1][1].append(line)
    return [(h, "\n".join(body).strip()) for h, body in sections if "\n".join(body).strip()]


def _pack(paragraphs: list[list[str]], max_words: int, overlap: int) -> list[str]:
    """Greedy packing of paragraphs into chunks; a paragraph that fits a chunk is not cut."""
    chunks: list[str] = []
    current: list[str] = []
    fresh = 0  # words in `current` that are not the overlap carried from the previous chunk

    def flush() -> None:
        nonlocal current, fresh
        chunks.append(" ".join(current))
        current, fresh = (current[-overlap:] if overlap else []), 0

    for words in paragraphs:
        if fresh and len(current) + len(words) > max_words and len(words) <= max_words - overlap:
            flush()
        for word in words:
            if len(current) >= max_words:
                flush()
            current.append(word)
            fresh += 1
    if fresh:
        flush()
    return chunks


def chunk_document(doc: Document, max_words: int = 180, overlap: int = 30) -> list[Chunk]:
    if max_words < 20 or not 0 <= overlap < max_words // 2:
        raise ValueError("max_words must be >= 20 and overlap in [0, max_words / 2)")
    chunks: list[Chunk] = []
    for heading, body in _sections(doc):
        paragraphs = [p.split() for p in re.split(r"\n\s*\n", body) if p.strip()]
        for content in _pack(paragraphs, max_words, overlap):
            chunks.append(Chunk(len(chunks), heading, content))
    return chunks


def iter_files(root: Path) -> list[Path]:
    if root.is_file():
        return [root]
    if not root.is_dir():
        raise FileNotFoundError(f"no such file or folder: {root}")
    return sorted(p for p in root.rglob("*") if p.is_file() and p.suffix.lower() in SUFFIXES)
