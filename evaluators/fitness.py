"""Fitness functions: how far a compressed model's outputs are from the dense model's.

Pure tensor functions. Sums are returned (not means) so callers can add them over chunks and
divide once; accumulation is float64.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F


@dataclass(frozen=True)
class TopK:
    """A compact teacher distribution per token: the top-K log-probabilities and their ids.

    With K >= vocabulary size this is the exact distribution. Memory: 6*K bytes per token
    (fp16 values, int32 ids).
    """

    logp: torch.Tensor  # (N, K) float16
    ids: torch.Tensor  # (N, K) int32

    @property
    def nbytes(self) -> int:
        return self.logp.numel() * self.logp.element_size() + self.ids.numel() * self.ids.element_size()


def teacher_topk(logits: torch.Tensor, k: int) -> TopK:
    """Keep the K most likely tokens of each row of `logits` (N, V)."""
    logp = F.log_softmax(logits.float(), dim=-1)
    k = min(k, logp.shape[-1])
    values, ids = logp.topk(k, dim=-1, sorted=False)
    exact = k == logp.shape[-1]
    # fp16 loses too much for an exact teacher; keep fp32 then (K = V only happens on small vocabularies)
    return TopK(values if exact else values.half(), ids.to(torch.int32))


def kl_terms(teacher: TopK, student_logits: torch.Tensor) -> torch.Tensor:
    """Per token, KL(teacher || student) on the teacher's top-K tokens plus one tail bucket.

    The tail bucket holds the probability outside the top K for each model; KL of these coarsened
    distributions is a lower bound on the full KL (data processing) and equals it when K = V.
    Differentiable in `student_logits` (the relaxed search back-propagates through it).

    Args:
        teacher: from `teacher_topk`, N tokens.
        student_logits: (N, V).

    Returns:
        (N,) float64.
    """
    logq = F.log_softmax(student_logits.double(), dim=-1)  # (N, V)
    logp_top = teacher.logp.double()  # (N, K)
    logq_top = logq.gather(-1, teacher.ids.long())  # (N, K)
    kl = (logp_top.exp() * (logp_top - logq_top)).sum(-1)  # (N,)
    if teacher.ids.shape[-1] < student_logits.shape[-1]:
        p_tail = (1.0 - logp_top.exp().sum(-1)).clamp_min(0.0)
        q_tail = (1.0 - logq_top.exp().sum(-1)).clamp_min(1e-12)
        tail = torch.where(p_tail > 0, p_tail * (p_tail.clamp_min(1e-300).log() - q_tail.log()), 0.0)
        kl = kl + tail
    return kl


def kl_sum(teacher: TopK, student_logits: torch.Tensor) -> float:
    """Sum over tokens of `kl_terms`.

    Args:
        teacher: from `teacher_topk`, N tokens.
        student_logits: (N, V).
    """
    return float(kl_terms(teacher, student_logits).sum())


def mean_pool(hidden: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Sentence embeddings: the mean of the token states under the mask, L2-normalised.

    Args:
        hidden: (B, S, H); mask: (B, S).
    Returns:
        (B, H) float32.
    """
    weights = mask.unsqueeze(-1).to(hidden.dtype)
    pooled = (hidden * weights).sum(1) / weights.sum(1).clamp_min(1.0)
    return F.normalize(pooled.float(), dim=-1)


def distortion_terms(teacher: torch.Tensor, student: torch.Tensor, metric: str) -> torch.Tensor:
    """Per sequence, the embedding distortion: ``1 - cosine`` or normalised MSE (differentiable).

    Args:
        teacher, student: (B, H) embeddings.
        metric: ``"cosine"`` or ``"nmse"``.

    Returns:
        (B,) float64.

    Raises:
        ValueError: an unknown metric.
    """
    t, s = teacher.double(), student.double()
    if metric == "cosine":
        return 1.0 - F.cosine_similarity(t, s, dim=-1)
    if metric == "nmse":
        return (t - s).square().sum(-1) / t.square().sum(-1).clamp_min(1e-30)
    raise ValueError(f"unknown embedding metric {metric!r}; allowed: 'cosine', 'nmse'")


def distortion_sum(teacher: torch.Tensor, student: torch.Tensor, metric: str) -> float:
    """Sum over sequences of `distortion_terms`.

    Args:
        teacher, student: (B, H) embeddings.
        metric: ``"cosine"`` or ``"nmse"``.
    """
    return float(distortion_terms(teacher, student, metric).sum())
