"""Held-out perplexity of a causal LM by the standard sliding-window evaluation.

The token stream is read in windows of `seq_len` tokens that start every `stride` tokens. Each
window is forwarded on its own (nothing is carried from one window to the next), and only the
tokens no earlier window scored are scored in it. With ``stride < seq_len`` every token after the
first is scored exactly once, with at least ``seq_len - stride`` tokens of context once the first
window is passed; this costs about ``seq_len / stride`` times the forward passes. With
``stride == seq_len`` it is the plain evaluation on disjoint blocks, where the first token of each
block has no context and is not scored. The last window ends at the stream's end and may be
shorter.

Example:
    >>> [tuple(w) for w in windows(7, seq_len=4, stride=2)]  # (begin, end, first scored)
    [(0, 4, 1), (2, 6, 4), (4, 7, 6)]
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn


class Window(NamedTuple):
    """Tokens ``[begin, end)`` are forwarded; the targets ``[first, end)`` are scored."""

    begin: int
    end: int
    first: int


@dataclass(frozen=True)
class Perplexity:
    """The summed negative log-likelihood (nats) of `targets` scored tokens."""

    nll: float
    targets: int

    @property
    def value(self) -> float:
        """exp(mean negative log-likelihood per scored token)."""
        return math.exp(self.nll / self.targets)


def windows(length: int, seq_len: int, stride: int) -> list[Window]:
    """The sliding windows over a stream of `length` tokens.

    Raises:
        ValueError: fewer than 2 tokens, `seq_len` below 2, or a stride outside 1..seq_len.
    """
    if length < 2 or seq_len < 2:
        raise ValueError(f"perplexity needs at least 2 tokens and windows of at least 2 (got {length}, {seq_len})")
    if not 1 <= stride <= seq_len:
        raise ValueError(f"the perplexity stride {stride} must be between 1 and the window length {seq_len}")
    out: list[Window] = []
    scored = 1  # the first token has no context: it is never a target
    for begin in range(0, length, stride):
        end = min(begin + seq_len, length)
        if scored < end:
            out.append(Window(begin, end, max(scored, begin + 1)))
            scored = end
        if end == length:
            break
    return out


@torch.no_grad()
def sliding_perplexity(model: nn.Module, tokens: torch.Tensor, seq_len: int, stride: int, rows: int = 8) -> Perplexity:
    """The perplexity of `model` on the 1-D token stream `tokens` (see the module's docstring).

    Args:
        model: a causal LM whose output has ``.logits`` (B, S, V).
        tokens: (N,) token ids.
        seq_len: tokens per window.
        stride: tokens between window starts (1..seq_len).
        rows: windows forwarded together.
    """
    device = next(model.parameters()).device
    stream = tokens.reshape(-1).to(device)
    spans = windows(stream.numel(), seq_len, stride)
    full = [w for w in spans if w.end - w.begin == seq_len]
    groups = [full[i : i + rows] for i in range(0, len(full), rows)]
    groups += [[w] for w in spans if w.end - w.begin < seq_len]  # the last window may be short
    nll, count = 0.0, 0
    for group in groups:
        ids = torch.stack([stream[w.begin : w.end] for w in group])
        logits = model(input_ids=ids, use_cache=False).logits
        for row, w in enumerate(group):  # position p predicts token p + 1
            logp = F.log_softmax(logits[row, w.first - w.begin - 1 : w.end - w.begin - 1].double(), dim=-1)
            targets = ids[row, w.first - w.begin :]
            nll -= float(logp.gather(-1, targets.unsqueeze(-1)).sum())
            count += targets.numel()
    return Perplexity(nll, count)


__all__ = ["Perplexity", "Window", "sliding_perplexity", "windows"]
