"""`Fidelity`: how much data one evaluation uses, and which data."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

SPLITS = ("calibration", "heldout")


@dataclass(frozen=True)
class Fidelity:
    """The tokens an evaluation forwards.

    Args:
        tokens: exactly this many tokens are forwarded.
        batch: names the minibatch; every candidate with the same batch (and seed) sees the
            same tokens, e.g. ``(generation, stage)``.
        split: ``"calibration"`` for the search, ``"heldout"`` for the final report.
    """

    tokens: int
    batch: tuple[int, ...] = (0,)
    split: str = "calibration"

    def __post_init__(self) -> None:
        if self.tokens <= 0:
            raise ValueError(f"Fidelity.tokens must be positive, got {self.tokens}")
        if self.split not in SPLITS:
            raise ValueError(f"Fidelity.split must be one of {SPLITS}, got {self.split!r}")
        object.__setattr__(self, "batch", tuple(int(b) for b in self.batch))

    def to_dict(self) -> dict[str, Any]:
        return {"tokens": self.tokens, "batch": list(self.batch), "split": self.split}

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> Fidelity:
        return cls(int(data["tokens"]), tuple(data.get("batch", (0,))), str(data.get("split", "calibration")))
