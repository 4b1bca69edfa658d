"""The files a spec may name as a data source: text files and token files (pre-tokenised data).

A text file is split into documents at blank lines. A token file is a `.npy`, `.safetensors` or
`.pt` file holding one integer array of token ids: one dimension is one document, two are one
document per row. A `.safetensors` file holds that one tensor (or several, one named
``input_ids``); a `.pt` file holds a tensor saved with `torch.save`. Checked here with numpy
alone (torch only for `.pt`), so `pressroom validate` finds a malformed file in milliseconds;
so is whether Debian's package behind the `austen` source is installed.
"""

from __future__ import annotations

import json
import re
import struct
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

TOKEN_SUFFIXES = (".npy", ".safetensors", ".pt")
#: Where Debian's `r-cran-janeaustenr` keeps Jane Austen's novels (the `austen` source).
AUSTEN_DATA = Path("/usr/lib/R/site-library/janeaustenr/data")
#: The integer dtypes of safetensors' header that token ids may have.
_SAFETENSORS_INTS = {"I8", "I16", "I32", "I64", "U8", "U16", "U32", "U64"}


def text_file_documents(path: Path) -> list[str]:
    """A text file split into documents at blank lines.

    Raises:
        ValueError: the file cannot be read or holds no text.
    """
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise ValueError(f"data.source: cannot read text file {str(path)!r}: {exc}") from None
    docs = [part.strip() for part in re.split(r"\n\s*\n", text) if part.strip()]
    if not docs:
        raise ValueError(f"data.source: text file {str(path)!r} holds no text")
    return docs


def file_documents(source: str) -> int | None:
    """How many documents a file source holds, or None when `source` is no existing file.

    Raises:
        ValueError: a malformed token file or an unreadable text file.
    """
    path = Path(source).expanduser()
    if is_token_file(source):
        return check_token_file(path)
    return len(text_file_documents(path)) if path.is_file() else None


def outside(pinned: tuple[int, int], count: int, source: str) -> str:
    """The error for a held-out range [start, stop) beyond a source's documents."""
    return (
        f"[{pinned[0]}, {pinned[1]}) is outside the {count:,} documents of {source!r} "
        f"(document indices run from 0 to {count - 1:,})"
    )


def austen_missing(folder: Path = AUSTEN_DATA) -> str | None:
    """Why the `austen` source cannot be read for want of its package, or None when it can."""
    if (folder / "Rdata.rdx").is_file():
        return None
    command = "apt-get install r-cran-janeaustenr (scripts/services.sh does)"
    return f"'austen' needs Debian's package r-cran-janeaustenr: {command}"


def is_token_file(source: str) -> bool:
    """Whether a data source names a token file (by its suffix)."""
    return source.lower().endswith(TOKEN_SUFFIXES)


def _safetensors_name(header: dict[str, Any], path: Path) -> str:
    names = [name for name in header if name != "__metadata__"]
    if len(names) == 1:
        return names[0]
    if "input_ids" in names:
        return "input_ids"
    raise ValueError(f"{path} holds {len(names)} tensors {names[:5]}; expected one, or one named 'input_ids'")


def _shape_and_kind(path: Path) -> tuple[tuple[int, ...], bool]:
    """The array's shape, and whether its dtype is an integer one, reading as little as possible."""
    suffix = path.suffix.lower()
    if suffix == ".npy":
        array = np.load(path, mmap_mode="r", allow_pickle=False)
        return array.shape, np.issubdtype(array.dtype, np.integer)
    if suffix == ".safetensors":
        with path.open("rb") as handle:
            (size,) = struct.unpack("<Q", handle.read(8))
            header = json.loads(handle.read(size))
        entry = header[_safetensors_name(header, path)]
        return tuple(entry["shape"]), entry["dtype"] in _SAFETENSORS_INTS
    array = _load(path)
    return array.shape, np.issubdtype(array.dtype, np.integer)


def _first_line(exc: Exception) -> str:
    return str(exc).splitlines()[0] if str(exc) else repr(exc)


def _load(path: Path) -> Any:
    suffix = path.suffix.lower()
    if suffix == ".npy":
        return np.load(path, allow_pickle=False)
    if suffix == ".safetensors":
        from safetensors.numpy import load_file

        tensors = load_file(path)
        return tensors[_safetensors_name(dict.fromkeys(tensors), path)]
    import torch

    loaded = torch.load(path, map_location="cpu", weights_only=True)
    if not isinstance(loaded, torch.Tensor):
        raise TypeError(f"it holds a {type(loaded).__name__}, not one tensor of token ids")
    return loaded.numpy()


def read_tokens(path: Path) -> npt.NDArray[np.int64]:
    """The token ids of a token file as int64, one or two dimensions as stored.

    Raises:
        ValueError: the file cannot be read, or holds no integer array.
    """
    try:
        array = _load(path)
    except Exception as exc:  # numpy, safetensors and torch each raise their own types for a bad file
        raise ValueError(f"cannot read token file {path}: {_first_line(exc)}") from None
    if not np.issubdtype(array.dtype, np.integer):
        raise ValueError(f"{path} holds {array.dtype} values; token ids are integers")
    return np.asarray(array, dtype=np.int64)


def check_token_file(path: Path) -> int:
    """Check a token file's shape and type; return how many documents it holds.

    Raises:
        ValueError: missing, unreadable, not integers, not one or two dimensions, empty, or negative.
    """
    if not path.is_file():
        raise ValueError(f"token file {str(path)!r} does not exist")
    try:
        shape, integer = _shape_and_kind(path)
    except Exception as exc:  # a file numpy or the header parser cannot make sense of
        raise ValueError(f"cannot read token file {path}: {_first_line(exc)}") from None
    if not integer:
        raise ValueError(f"{path} does not hold integer token ids")
    if len(shape) not in (1, 2) or 0 in shape:
        raise ValueError(
            f"{path} holds an array of shape {list(shape)}; expected token ids as [tokens] or [documents, tokens]"
        )
    if path.stat().st_size < (1 << 26):  # small enough to check every id here; else when it is read
        tokens = read_tokens(path)
        if tokens.min() < 0:
            raise ValueError(f"{path} holds a negative token id ({tokens.min()})")
    return 1 if len(shape) == 1 else shape[0]


def token_documents(path: Path) -> list[npt.NDArray[np.int64]]:
    """The documents of a token file: the whole array if it has one dimension, else its rows."""
    tokens = read_tokens(path)
    return [tokens] if tokens.ndim == 1 else list(tokens)
