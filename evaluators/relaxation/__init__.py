"""The worker side of the DASS-style search (arXiv:2207.06968): a relaxed model over per-unit
levels (`model`) and the gradient loop that trains its logits (`loop`). See docs/design.md."""

from .loop import relax
from .model import RelaxedModel

__all__ = ["RelaxedModel", "relax"]
