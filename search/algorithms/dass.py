"""The algorithm side of a DASS-style differentiable search over per-unit levels.

A worker runs the gradient loop (softmax-relaxed levels, the fitness plus an augmented
Lagrangian on the expected cost, weights frozen) and returns the learned logits; this object
asks for that job, rounds the logits to a profile that meets the budget exactly with
`Space.project`, and evaluates the profile like any other method's answer. The relaxed loss
is never the result. DASS: arXiv:2207.06968; how the multiplier lands the budget: docs/design.md,
"DASS ends on the budget by solving for one multiplier".
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt

from spaces import Fidelity, Job, Profile, RelaxParams, Space

from ._oneshot import OneShot
from ._queue import FIXED_BATCH
from ._validate import MAX_TOKENS, finite_float, int_at_least, non_negative_float, one_of, positive_float, require
from .base import Candidate

logger = logging.getLogger(__name__)

INITS = ("uniform", "flat")


@dataclass(frozen=True)
class DASSConfig:
    """Parameters of the relaxation (passed to the worker) and of the final evaluation.

    Args:
        steps: gradient steps.
        lr: learning rate of the logits.
        tau_start / tau_end: softmax temperature, annealed from start to end.
        rho: penalty weight of the augmented Lagrangian, on the normalised cost gap.
        mu0: the Lagrange multiplier's starting value.
        gumbel: sample Gumbel-softmax instead of the plain softmax.
        tokens_per_step: calibration tokens per gradient step.
        init: ``"uniform"``, logits peaked at the uniform profile (at the target where no
            level meets it), or ``"flat"``, all zero.
        final_tokens: tokens of the rounded profile's evaluation.
        max_retries: retries of a failed job or evaluation.

    Example:
        >>> DASSConfig(steps=50).tau_end
        0.1
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    steps: int = 200
    lr: float = 0.05
    tau_start: float = 1.0
    tau_end: float = 0.1
    rho: float = 10.0
    mu0: float = 0.0
    gumbel: bool = False
    tokens_per_step: int = 2048
    init: str = "uniform"
    final_tokens: int = 65536
    max_retries: int = 2

    def __post_init__(self) -> None:
        owner = type(self).__name__
        int_at_least(owner, "steps", self.steps, 1)
        for name in ("lr", "tau_start", "tau_end"):
            object.__setattr__(self, name, positive_float(owner, name, getattr(self, name)))
        object.__setattr__(self, "rho", non_negative_float(owner, "rho", self.rho))
        object.__setattr__(self, "mu0", finite_float(owner, "mu0", self.mu0))
        require(isinstance(self.gumbel, bool), owner, "gumbel", self.gumbel, "true or false")
        int_at_least(owner, "tokens_per_step", self.tokens_per_step, 1, MAX_TOKENS)
        one_of(owner, "init", self.init, INITS)
        int_at_least(owner, "final_tokens", self.final_tokens, 1, MAX_TOKENS)
        int_at_least(owner, "max_retries", self.max_retries, 0)


def log_softmax(logits: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Numerically stable ``log(softmax(logits))`` of one vector."""
    shifted = logits - logits.max()
    return np.asarray(shifted - np.log(np.exp(shifted).sum()), dtype=np.float64)


class DASS(OneShot):
    """Ask one ``relax`` job, round its logits with `Space.project`, evaluate the result.

    The ``relax`` candidate has ``profile=None``, fidelity = tokens per gradient step, and
    params: every `DASSConfig` field the loop needs, ``init_logits`` (per unit, aligned with
    ``space.levels[i]``), ``target_cost`` (the budget) and ``cost_scale`` (the summed mean
    one-level cost of the units: the worker divides the cost gap by it, so ``rho`` reads in
    "levels per unit"). The worker returns ``data={"logits": [[...] per unit],
    "expected_cost": float, "target_cost": float, "trace": [...]}``. The gradient steps'
    tokens (steps x tokens_per_step, as the worker reports them) count in `tokens_asked`.

    History: the relaxed expected average (sparsity, bits or dropped share, under the final
    distribution) against the target and their ``relative_gap``, the rounded profile's exact
    cost and average, then the evaluation (see `OneShot`).

    Args:
        space: the search space (any scheme).
        config: the relaxation's parameters.
        seed: passed to the worker to seed Gumbel noise.

    Raises:
        ValueError: (in `tell`) logits of the wrong shape or not finite.

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(4)]
        >>> [job] = DASS(Space(layers, SparsityScheme(0.5)), DASSConfig(steps=10)).ask(5)
        >>> str(job.job), job.params["steps"], len(job.params["init_logits"])
        ('relax', 10, 4)
    """

    name: ClassVar[str] = "dass"

    def __init__(self, space: Space, config: DASSConfig | None = None, seed: int = 0) -> None:
        self.config = config or DASSConfig()
        super().__init__(space, seed, max_retries=self.config.max_retries, final_tokens=self.config.final_tokens)
        self.seeded = self.config.gumbel  # the seed only seeds the Gumbel noise; the data batch is fixed
        self.cost_scale = float(sum(np.mean(np.diff(costs)) if len(costs) > 1 else 0.0 for costs in space.costs)) or 1.0

    def init_logits(self) -> list[list[float]]:
        """Per unit, the starting logits over its levels (see `DASSConfig.init`)."""
        if self.config.init == "flat":
            return [[0.0] * len(levels) for levels in self.space.levels]
        uniform = self.space.uniform()
        out = []
        for unit, levels in zip(self.space.units, self.space.levels, strict=True):
            meaning = np.asarray([self.space.scheme.meaning(unit, level) for level in levels])
            centre = (
                self.space.scheme.target if uniform is None else self.space.scheme.meaning(unit, uniform[unit.name])
            )
            # One level's spacing as the width: neighbours of the centre start at -0.5.
            width = (meaning.max() - meaning.min()) / (len(levels) - 1) if len(levels) > 1 else 1.0
            out.append((-0.5 * ((meaning - centre) / width) ** 2).tolist())
        return out

    def _statistics(self) -> Candidate | None:
        c = self.config
        params = RelaxParams(
            steps=c.steps,
            lr=c.lr,
            tau_start=c.tau_start,
            tau_end=c.tau_end,
            rho=c.rho,
            mu0=c.mu0,
            gumbel=c.gumbel,
            tokens_per_step=c.tokens_per_step,
            init=c.init,
            init_logits=tuple(tuple(row) for row in self.init_logits()),
            target_cost=self.space.budget,
            cost_scale=self.cost_scale,
            seed=self.seed,
        )
        # The relaxation forwards (and back-propagates) its steps' tokens: the worker reports
        # them and `tell` counts them, so a comparison at equal tokens charges DASS for its search.
        return self._candidate(None, Fidelity(c.tokens_per_step, batch=FIXED_BATCH), job=Job.RELAX, params=params)

    def _choose(self, data: Mapping[str, Any] | None) -> tuple[Profile, dict[str, Any]]:
        data = data or {}
        logits = data.get("logits")
        if not isinstance(logits, list) or len(logits) != len(self.space):
            raise ValueError(
                f"DASS: the relax job must return data['logits'] with one list per unit ({len(self.space)})"
            )
        scores = []
        for name, levels, row in zip(self.space.names, self.space.levels, logits, strict=True):
            values = np.asarray(row, dtype=np.float64)
            if values.shape != (len(levels),) or not np.isfinite(values).all():
                raise ValueError(f"DASS: logits of {name!r} must be {len(levels)} finite numbers, got {row!r}")
            scores.append(log_softmax(values))
        profile = self.space.project(scores)
        expected = data.get("expected_cost")
        # The budget in the target's own units (average sparsity, bits, dropped share): the
        # integer costs of a sparsity space are steps around the uniform profile, with budget 0,
        # so a gap relative to them would mean nothing.
        average = self.space.expected_average([np.exp(score) for score in scores])
        target = float(self.space.scheme.target)
        gap = (average - target) / target
        facts = {
            "expected_cost": None if expected is None else float(expected),
            "target_cost": float(data.get("target_cost", self.space.budget)),
            "expected_average": average,
            "target_average": target,
            "relative_gap": gap,
            "rounded_cost": self.space.cost(profile),
            "rounded_average": self.space.average(profile),
            "steps": len(data.get("trace", [])),
        }
        logger.info(
            "%s: relaxed expected average %.6g vs target %.6g (%+.2f%%); rounded to %.6g",
            self.name, average, target, 100 * gap, facts["rounded_average"],
        )  # fmt: skip
        return profile, facts
