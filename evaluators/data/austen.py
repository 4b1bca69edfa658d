"""Jane Austen's six novels, read from Debian's `r-cran-janeaustenr` without R.

The package (MIT; the novels are in the public domain) stores each novel as an R character
vector of lines in R's lazy-load database (`data/Rdata.rdx`, a gzip-compressed index, and
`data/Rdata.rdb`, one compressed serialized object per variable). This module reads the few
kinds of R object those files hold, in R's XDR serialization, and splits each novel into its
chapters: one document per chapter, paragraphs separated by blank lines.
"""

from __future__ import annotations

import bz2
import functools
import gzip
import lzma
import re
import struct
import zlib
from pathlib import Path
from typing import Any

from ..sources import AUSTEN_DATA, austen_missing

NOVELS = ("sensesensibility", "prideprejudice", "mansfieldpark", "emma", "northangerabbey", "persuasion")
_CHAPTER = re.compile(r"^\s*chapter\s+([ivxlc]+|\d+)\b", re.IGNORECASE)
# R's SEXP types this reader understands
_NIL, _SYM, _LIST, _CHAR, _LGL, _INT, _REAL, _STR, _VEC = 254, 1, 2, 9, 10, 13, 14, 16, 19
_REF = 255


class _Reader:
    """R's XDR serialization (format 2 or 3) of symbols, pairlists and atomic/generic vectors."""

    def __init__(self, raw: bytes) -> None:
        if raw[:2] != b"X\n":
            raise ValueError("not an XDR-serialized R object")
        self.raw, self.pos = raw, 2
        self.refs: list[Any] = []
        version = self.int()
        self.pos += 8  # the writer's and the oldest reader's R versions
        if version == 3:
            self.pos += 4 + self.int()  # the native encoding's name

    def int(self) -> int:
        (value,) = struct.unpack_from(">i", self.raw, self.pos)
        self.pos += 4
        return int(value)

    def item(self) -> Any:
        flags = self.int()
        kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
        if kind == _NIL:
            return None
        if kind == _REF:
            return self.refs[(flags >> 8 or self.int()) - 1]
        if kind == _SYM:
            symbol = self.item()
            self.refs.append(symbol)
            return symbol
        if kind == _LIST:  # a pairlist, read as a dict of tag -> value
            out: dict[Any, Any] = {}
            while kind == _LIST:
                if has_attr:
                    self.item()
                tag = self.item() if has_tag else len(out)
                out[tag] = self.item()
                flags = self.int()
                kind, has_attr, has_tag = flags & 0xFF, flags & (1 << 9), flags & (1 << 10)
            if kind != _NIL:
                raise ValueError(f"unexpected R object type {kind} ending a pairlist")
            return out
        if kind == _CHAR:
            length = self.int()
            if length < 0:
                return None
            text = self.raw[self.pos : self.pos + length].decode("utf-8", errors="replace")
            self.pos += length
            return text
        length = self.int()
        if kind in (_LGL, _INT):
            value: Any = list(struct.unpack_from(f">{length}i", self.raw, self.pos))
            self.pos += 4 * length
        elif kind == _REAL:
            value = list(struct.unpack_from(f">{length}d", self.raw, self.pos))
            self.pos += 8 * length
        elif kind in (_STR, _VEC):
            value = [self.item() for _ in range(length)]
        else:
            raise ValueError(f"R object type {kind} is not one this reader knows")
        if has_attr:
            attributes = self.item()
            if "names" in attributes:
                value = dict(zip(attributes["names"], value, strict=True))
        return value


def _entry(rdb: bytes, offset: int, length: int) -> Any:
    blob = rdb[offset : offset + length]
    size, body = struct.unpack_from(">i", blob)[0], blob[4:]
    if body[:1] == b"\x78":  # zlib, R's default
        raw = zlib.decompress(body)
    else:
        kinds = {b"Z": zlib.decompress, b"2": bz2.decompress, b"X": lzma.decompress, b"0": bytes}
        raw = kinds[body[:1]](body[1:])
    if len(raw) != size:
        raise ValueError("a truncated R lazy-load entry")
    return _Reader(raw).item()


@functools.cache
def _novels(folder: Path) -> dict[str, list[str]]:
    index = _Reader(gzip.decompress((folder / "Rdata.rdx").read_bytes())).item()
    rdb = (folder / "Rdata.rdb").read_bytes()
    return {name: _entry(rdb, *index["variables"][name]) for name in NOVELS}


def _chapters(lines: list[str]) -> list[str]:
    chapters: list[list[str]] = []
    for line in lines:
        if _CHAPTER.match(line or ""):
            chapters.append([])
        elif chapters:
            chapters[-1].append(line or "")
    docs = []
    for chapter in chapters:
        paragraphs = re.split(r"\n\s*\n", "\n".join(chapter))
        text = "\n\n".join(" ".join(p.split()) for p in paragraphs if p.strip())
        if text:
            docs.append(text)
    return docs


def austen_chapters(folder: Path = AUSTEN_DATA) -> list[str]:
    """Every chapter of the six novels, in publication order of the package's list.

    Raises:
        ValueError: the package is not installed, or its data cannot be read.
    """
    missing = austen_missing(folder)
    if missing:
        raise ValueError(missing)
    try:
        novels = _novels(folder)
    except (OSError, ValueError, KeyError, struct.error, zlib.error) as exc:
        raise ValueError(f"'austen': cannot read {folder}: {exc}") from None
    return [chapter for name in NOVELS for chapter in _chapters(novels[name])]
