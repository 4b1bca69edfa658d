"""Data sources: the offline default corpus (the standard library's docstrings), Jane Austen's
novels (`austen`), a text file, a token file, a `datasets` dataset."""

from __future__ import annotations

import ast
import functools
import hashlib
import json
import logging
import os
import sys
import sysconfig
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import numpy.typing as npt

from ..sources import is_token_file, text_file_documents, token_documents
from .austen import austen_chapters

logger = logging.getLogger(__name__)

# Folders of the standard library that hold tests, generated code or demos rather than prose.
_SKIP = {"test", "tests", "idlelib", "lib2to3", "site-packages", "ensurepip", "turtledemo", "__pycache__", "venv"}
_MIN_WORDS = 20


def stdlib_docstrings(cache_dir: Path | None = None) -> list[str]:
    """Docstrings of the Python standard library with at least 20 words, in a fixed order.

    Real English technical prose that is on every machine with Python; read with `ast`, so no
    module is imported. Cached as JSON under `cache_dir` (parsing takes a few seconds).
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    key = hashlib.sha256(f"{sys.version}:{root}".encode()).hexdigest()[:12]
    cached = cache_dir / f"stdlib-docstrings-{key}.json" if cache_dir else None
    if cached and cached.exists():
        try:
            return list(json.loads(cached.read_text()))
        except (OSError, ValueError):
            logger.warning("ignoring an unreadable corpus cache %s", cached)
    docs = list(_parse_stdlib(root))
    if cached:
        cached.parent.mkdir(parents=True, exist_ok=True)
        tmp = cached.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(docs))
        os.replace(tmp, cached)
    return docs


@functools.cache
def _parse_stdlib(root: Path) -> tuple[str, ...]:
    docs: list[str] = []
    for path in sorted(root.rglob("*.py")):
        if _SKIP & set(path.relative_to(root).parts):
            continue
        try:
            tree = ast.parse(path.read_text(encoding="utf-8"))
        except (SyntaxError, UnicodeDecodeError, OSError):
            continue
        for node in ast.walk(tree):
            if isinstance(node, ast.Module | ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef):
                doc = ast.get_docstring(node)
                if doc and len(doc.split()) >= _MIN_WORDS:
                    docs.append(doc)
    return tuple(docs)


def dataset_documents(reference: str, text_field: str) -> Iterator[str]:
    """Texts of a `datasets` dataset named ``NAME[:CONFIG[:SPLIT]]``, streamed.

    Raises:
        ValueError: `datasets` is not installed, or the dataset cannot be reached.
    """
    try:
        import datasets
    except ImportError:
        raise ValueError("data.source: a dataset source needs the package 'datasets' (pip install datasets)") from None
    name, _, rest = reference.partition(":")
    config, _, split = rest.partition(":")
    try:
        stream = datasets.load_dataset(name, config or None, split=split or "train", streaming=True)
    except Exception as exc:  # datasets raises many types for "unreachable"/"unknown"
        raise ValueError(f"data.source: cannot load dataset {reference!r}: {exc}") from None
    for row in stream:
        text = row.get(text_field)
        if not isinstance(text, str):
            raise ValueError(f"data.text_field: dataset {reference!r} rows have no text field {text_field!r}")
        if text.strip():
            yield text


Document = str | npt.NDArray[np.int64]


def documents(source: str, text_field: str, cache_dir: Path | None, key: str = "data.source") -> Iterator[Document]:
    """The documents of a data source, in a fixed order: texts, or token ids from a token file.

    `source` is ``default`` (the standard library's docstrings), ``austen`` (Jane Austen's novels,
    one document per chapter), a text file, a token file or ``dataset:...``; `key` names the
    spec key in errors.
    """
    if source == "default":
        yield from stdlib_docstrings(cache_dir)
    elif source == "austen":
        try:
            yield from austen_chapters()
        except ValueError as exc:
            raise ValueError(f"{key}: {exc}") from None
    elif source.startswith("dataset:"):
        yield from dataset_documents(source.removeprefix("dataset:"), text_field)
    else:
        path = Path(source).expanduser()
        if not path.is_file():
            raise ValueError(
                f"{key}: {source!r} is neither 'default', 'dataset:NAME[:CONFIG[:SPLIT]]', 'austen' nor an "
                "existing file"
            )
        if is_token_file(source):
            try:
                yield from token_documents(path)
            except ValueError as exc:
                raise ValueError(f"{key}: {exc}") from None
        else:
            yield from text_file_documents(path)
