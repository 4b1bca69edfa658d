"""Calibration and held-out token blocks, and the minibatches evaluations draw from them."""

from __future__ import annotations

import hashlib
import logging
import math
import random
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch

from spaces import Fidelity

from ..config import DataSpec
from ..sources import outside
from .corpus import Document, documents

logger = logging.getLogger(__name__)

_SPLIT_CODE = {"calibration": 0, "heldout": 1}


@dataclass(frozen=True)
class Batch:
    """Token blocks to forward; `attention_mask` marks exactly `tokens` real tokens."""

    input_ids: torch.Tensor  # (B, S) long
    attention_mask: torch.Tensor  # (B, S) long, 1 = a token that counts

    @property
    def tokens(self) -> int:
        return int(self.attention_mask.sum())

    def chunks(self, rows: int) -> Iterator[Batch]:
        """Consecutive groups of at most `rows` sequences (to bound activation memory)."""
        for start in range(0, self.input_ids.shape[0], rows):
            yield Batch(self.input_ids[start : start + rows], self.attention_mask[start : start + rows])

    def to(self, device: torch.device | str) -> Batch:
        return Batch(self.input_ids.to(device), self.attention_mask.to(device))


class TokenData:
    """Fixed-length token blocks: a calibration pool and a disjoint held-out pool.

    Documents are assigned whole to one split (held-out first), so no text is in both. Every
    block has `seq_len` tokens; encoders get their ``[CLS]``/``[SEP]`` around each block.

    Args:
        spec: the data section of a spec.
        tokenizer: a `transformers` tokenizer.
        task: ``"causal-lm"`` or ``"encoder"``.
        seed: fixes the document order and every minibatch.
        cache_dir: where the default corpus caches its parse.

    Raises:
        ValueError: the source holds fewer tokens than the spec asks for.
    """

    def __init__(self, spec: DataSpec, tokenizer: Any, task: str, seed: int, cache_dir: Path | None = None) -> None:
        self.spec = spec
        self.seed = seed
        self.seq_len = spec.seq_len
        specials = (tokenizer.cls_token_id, tokenizer.sep_token_id) if task == "encoder" else (None, None)
        self._prefix = [specials[0]] if specials[0] is not None else []
        self._suffix = [specials[1]] if specials[1] is not None else []
        separator = tokenizer.sep_token_id if task == "encoder" else tokenizer.eos_token_id
        self._separator = [separator] if separator is not None else []
        self.pad_id = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else 0
        content = self.seq_len - len(self._prefix) - len(self._suffix)
        if content < 1:
            raise ValueError(f"data.seq_len {self.seq_len} leaves no room for tokens besides the special ones")
        need_held = math.ceil(spec.heldout_tokens / self.seq_len)
        need_cal = math.ceil(spec.calibration_tokens / self.seq_len)
        targets = (need_held * content, need_cal * content)
        self._tokenizer, self._vocab = tokenizer, len(tokenizer)
        held_docs, cal_docs = self._split(spec, seed, cache_dir)
        streams = [self._fill(held_docs, targets[0]), self._fill(cal_docs, targets[1])]
        if len(streams[0]) < targets[0] or len(streams[1]) < targets[1]:
            got = len(streams[0]) + len(streams[1])
            raise ValueError(
                f"data.source {spec.source!r} gives {got:,} tokens, but held-out + calibration need "
                f"{targets[0] + targets[1]:,}; lower data.calibration_tokens or use a larger source"
            )
        self.heldout = self._blocks(streams[0], need_held, content)
        self.calibration = self._blocks(streams[1], need_cal, content)
        digest = hashlib.sha256(self.calibration.tobytes() + self.heldout.tobytes())
        self.fingerprint = digest.hexdigest()[:16]

    @staticmethod
    def _split(spec: DataSpec, seed: int, cache_dir: Path | None) -> tuple[Iterator[Document], Iterator[Document]]:
        """The documents held-out and calibration blocks are cut from, in the order they are used."""
        texts: Iterator[Document] = documents(spec.source, spec.text_field, cache_dir)
        if spec.heldout_source is not None:  # held-out from another source, in its own order
            held = documents(spec.heldout_source, spec.text_field, cache_dir, key="data.heldout_source")
            return held, _shuffled(texts, seed, spec.source)
        if spec.heldout_documents is not None:  # pinned: these documents, in order, and only these
            docs = list(texts)
            start, stop = spec.heldout_documents
            if stop > len(docs):
                raise ValueError(f"data.heldout_documents: {outside((start, stop), len(docs), spec.source)}")
            return iter(docs[start:stop]), _shuffled(iter(docs[:start] + docs[stop:]), seed, spec.source)
        # one iterator: held-out takes the first documents, calibration continues after them
        texts = _shuffled(texts, seed, spec.source)
        return texts, texts

    def _fill(self, docs: Iterator[Document], target: int) -> list[int]:
        """Whole documents' tokens, each followed by the separator, until `target` are taken."""
        stream: list[int] = []
        for doc in docs:
            if isinstance(doc, str):
                ids = self._tokenizer(doc, add_special_tokens=False, verbose=False)["input_ids"]
            else:
                if doc.size and not 0 <= doc.min() <= doc.max() < self._vocab:
                    raise ValueError(
                        f"data.source: a token file holds ids from {doc.min()} to {doc.max()}, outside the "
                        f"tokenizer's vocabulary of {self._vocab:,}; was it made with this model's tokenizer?"
                    )
                ids = doc.tolist()
            stream.extend(ids + self._separator)
            if len(stream) >= target:
                break
        return stream

    def _blocks(self, stream: list[int], count: int, content: int) -> npt.NDArray[np.int64]:
        rows = [self._prefix + stream[i * content : (i + 1) * content] + self._suffix for i in range(count)]
        return np.asarray(rows, dtype=np.int64)

    def _pool(self, split: str) -> npt.NDArray[np.int64]:
        return self.calibration if split == "calibration" else self.heldout

    def batch(self, fidelity: Fidelity) -> Batch:
        """Exactly `fidelity.tokens` tokens: whole random blocks of the split, the last one cut.

        The blocks depend only on (seed, split, batch), so every worker and every candidate with
        the same fidelity sees the same tokens.

        Raises:
            ValueError: more tokens than the split holds.
        """
        pool = self._pool(fidelity.split)
        count = math.ceil(fidelity.tokens / self.seq_len)
        if count > len(pool):
            raise ValueError(
                f"an evaluation asks for {fidelity.tokens:,} {fidelity.split} tokens, but the {fidelity.split} "
                f"pool holds {len(pool) * self.seq_len:,}; raise data.{_pool_key(fidelity.split)}"
            )
        rng = np.random.default_rng([self.seed, _SPLIT_CODE[fidelity.split], *fidelity.batch])
        rows = np.sort(rng.choice(len(pool), size=count, replace=False))
        return self._make(pool[rows], fidelity.tokens)

    def first(self, tokens: int, split: str = "calibration") -> Batch:
        """The first `tokens` tokens of a split, in order (a fixed subset, e.g. for statistics)."""
        pool = self._pool(split)
        count = min(math.ceil(tokens / self.seq_len), len(pool))
        return self._make(pool[:count], min(tokens, count * self.seq_len))

    def _make(self, rows: npt.NDArray[np.int64], tokens: int) -> Batch:
        ids = torch.from_numpy(rows.copy())
        mask = torch.ones_like(ids)
        cut = rows.shape[0] * self.seq_len - tokens
        if cut:
            keep = self.seq_len - cut
            mask[-1, keep:] = 0
            ids[-1, keep:] = self.pad_id
            if self._suffix and keep >= len(self._prefix) + len(self._suffix):
                # An encoder's cut block still ends in [SEP], as every input it was trained on did.
                ids[-1, keep - len(self._suffix) : keep] = torch.tensor(self._suffix)
        return Batch(ids, mask)


def _shuffled(docs: Iterator[Document], seed: int, source: str) -> Iterator[Document]:
    """A finite source's whole documents in an order fixed by the seed; a dataset is streamed as is."""
    if source.startswith("dataset:"):
        return docs
    shuffled = list(docs)
    random.Random(seed).shuffle(shuffled)
    return iter(shuffled)


def _pool_key(split: str) -> str:
    return "calibration_tokens" if split == "calibration" else "heldout_tokens"
