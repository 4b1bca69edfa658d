"""Baselines: the uniform profile, OWL's outlier-weighted sparsity, and the additive-error DP.

Each asks for at most one statistics job, turns its output into one feasible profile and
evaluates that profile once, like every other method's answer. OWL: arXiv:2310.05175; the
additive-error DP assumes that per-layer errors add up, which EvoPress (arXiv:2410.14649)
questions; how they compare here: docs/benchmarks.md.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

from spaces import Fidelity, Job, OwlParams, Profile, Space

from ._oneshot import OneShot
from ._queue import FIXED_BATCH
from ._validate import MAX_TOKENS, int_at_least, positive_float, require
from .base import Candidate

logger = logging.getLogger(__name__)

#: Tokens of a final evaluation: the reference sparsity schedule's last stage.
FINAL_TOKENS = 65536
#: Tokens a statistics job names in its fidelity (the reference's 64 sequences of 2,048). The
#: worker forwards its spec's ``data.stats_tokens`` and reports that; `tokens_asked` counts the report.
STATISTICS_TOKENS = 131072


@dataclass(frozen=True)
class UniformConfig:
    """The uniform baseline.

    Args:
        final_tokens: tokens of its one evaluation.
        max_retries: retries of a failed evaluation.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    final_tokens: int = FINAL_TOKENS
    max_retries: int = 2

    def __post_init__(self) -> None:
        int_at_least(type(self).__name__, "final_tokens", self.final_tokens, 1, MAX_TOKENS)
        int_at_least(type(self).__name__, "max_retries", self.max_retries, 0)


class Uniform(OneShot):
    """Every unit at the target: one evaluation.

    Args:
        space: a space with a uniform profile.
        config: tokens and retries.
        seed: unused (`seeded` is False) but kept for a uniform constructor.

    Raises:
        ValueError: the space has no uniform profile (a fractional bit target, or depth).

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(4)]
        >>> [dict(c.profile) for c in Uniform(Space(layers, SparsityScheme(0.5))).ask(5)]
        [{'l0': 0, 'l1': 0, 'l2': 0, 'l3': 0}]
    """

    name: ClassVar[str] = "uniform"
    seeded = False

    def __init__(self, space: Space, config: UniformConfig | None = None, seed: int = 0) -> None:
        self.config = config or UniformConfig()
        super().__init__(space, seed, max_retries=self.config.max_retries, final_tokens=self.config.final_tokens)
        uniform = space.uniform()
        if uniform is None:
            raise ValueError(
                f"the {space.scheme.name} space at target {space.scheme.target} has no uniform profile "
                "(no single level meets the budget on every unit); use another baseline"
            )
        self._uniform = uniform

    def _statistics(self) -> Candidate | None:
        return None

    def _choose(self, data: Mapping[str, Any] | None) -> tuple[Profile, dict[str, Any]]:
        return self._uniform, {}


@dataclass(frozen=True)
class OWLConfig:
    """OWL (outlier-weighted layerwise sparsity).

    Args:
        M: a weight is an outlier when its score ``|W|*||X||`` exceeds M times its block's mean.
        lam: lambda, half the spread of block sparsities around the target.
        statistics_tokens: calibration tokens of the outlier pass.
        final_tokens: tokens of the evaluation.
        max_retries: retries of a failed job or evaluation.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    M: float = 5.0
    lam: float = 0.08
    statistics_tokens: int = STATISTICS_TOKENS
    final_tokens: int = FINAL_TOKENS
    max_retries: int = 2

    def __post_init__(self) -> None:
        owner = type(self).__name__
        for name in ("M", "lam"):
            object.__setattr__(self, name, positive_float(owner, name, getattr(self, name)))
        require(self.lam < 0.5, owner, "lam", self.lam, "a number in (0, 0.5): sparsities move by up to 2*lam")
        int_at_least(owner, "statistics_tokens", self.statistics_tokens, 1, MAX_TOKENS)
        int_at_least(owner, "final_tokens", self.final_tokens, 1, MAX_TOKENS)
        int_at_least(owner, "max_retries", self.max_retries, 0)


def owl_sparsities(ratios: Mapping[int, float], target: float, lam: float) -> dict[int, float]:
    """OWL's per-block sparsity: ``S - (r_b - mean r)``, ``r = 2*lam*(D - min D)/(max D - min D)``.

    Args:
        ratios: block index -> D_b, its share of outlier scores (a ratio or a percentage).
        target: S, the average sparsity.
        lam: lambda.

    Returns:
        block index -> sparsity; all at `target` when every block has the same ratio.

    Example:
        >>> owl_sparsities({0: 1.0, 1: 3.0}, 0.5, 0.25)
        {0: 0.75, 1: 0.25}
    """
    blocks = sorted(ratios)
    d = np.asarray([float(ratios[b]) for b in blocks])
    spread = d.max() - d.min()
    r = 2.0 * lam * (d - d.min()) / spread if spread > 0 else np.zeros_like(d)
    sparsity = target - (r - r.mean())
    return {b: float(s) for b, s in zip(blocks, sparsity, strict=True)}


class OWL(OneShot):
    """OWL's per-block sparsities, rounded to the nearest feasible profile, evaluated once.

    It asks one ``owl_scores`` job with params ``{"M": M}``; the worker answers
    ``data={"ratios": {"<block index>": D_b}}``. Every unit of block b wishes for OWL's
    sparsity of b; `Space.nearest` finds the feasible profile closest to those wishes.

    Args:
        space: a sparsity space.
        config: M, lambda and tokens.
        seed: unused (`seeded` is False) but kept for a uniform constructor.

    Raises:
        ValueError: the space is not a sparsity space; (in `tell`) the ratios miss a block.

    Example:
        >>> from spaces import LayerInfo, Space, SparsityScheme
        >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(4)]
        >>> [(str(c.job), dict(c.params)) for c in OWL(Space(layers, SparsityScheme(0.5))).ask(5)]
        [('owl_scores', {'M': 5.0})]
    """

    name: ClassVar[str] = "owl"
    seeded = False

    def __init__(self, space: Space, config: OWLConfig | None = None, seed: int = 0) -> None:
        self.config = config or OWLConfig()
        problem = owl_problem(space)
        if problem is not None:
            raise ValueError(problem)
        super().__init__(space, seed, max_retries=self.config.max_retries, final_tokens=self.config.final_tokens)

    def _statistics(self) -> Candidate | None:
        fidelity = Fidelity(self.config.statistics_tokens, batch=FIXED_BATCH)
        return self._candidate(None, fidelity, job=Job.OWL_SCORES, params=OwlParams(self.config.M))

    def _choose(self, data: Mapping[str, Any] | None) -> tuple[Profile, dict[str, Any]]:
        return owl_profile(self.space, data, self.config.lam)


def owl_problem(space: Space) -> str | None:
    """Why OWL cannot set `space`'s levels (None: it can): it sets per-block sparsities."""
    if space.scheme.name != "sparsity":
        return f"OWL sets per-block sparsities; this space's scheme is {space.scheme.name!r}"
    return None


def owl_profile(space: Space, data: Mapping[str, Any] | None, lam: float) -> tuple[Profile, dict[str, Any]]:
    """OWL's profile from an ``owl_scores`` job's output (`OWL`; EvoPress's ``start: owl``).

    Returns:
        the feasible profile nearest OWL's per-block sparsities, and those sparsities.

    Raises:
        ValueError: the output has no ratios, or misses a block.
    """
    raw = (data or {}).get("ratios")
    if not isinstance(raw, Mapping):
        raise ValueError(f"OWL: the owl_scores job must return data['ratios'] (block -> ratio), got {data!r}")
    ratios = {int(b): float(v) for b, v in raw.items()}
    missing = sorted({unit.block for unit in space.units} - set(ratios))
    if missing:
        raise ValueError(f"OWL: the owl_scores job returned no outlier ratio for blocks {missing}")
    wished = owl_sparsities(ratios, space.scheme.target, lam)
    profile = space.nearest([wished[unit.block] for unit in space.units])
    return profile, {"block_sparsity": {str(b): s for b, s in wished.items()}}


@dataclass(frozen=True)
class AdditiveDPConfig:
    """The additive-error DP baseline.

    Args:
        statistics_tokens: calibration tokens of the per-layer error pass.
        final_tokens: tokens of the evaluation.
        max_retries: retries of a failed job or evaluation.
    """

    __pydantic_config__: ClassVar[dict[str, Any]] = {"extra": "forbid"}

    statistics_tokens: int = STATISTICS_TOKENS
    final_tokens: int = FINAL_TOKENS
    max_retries: int = 2

    def __post_init__(self) -> None:
        owner = type(self).__name__
        int_at_least(owner, "statistics_tokens", self.statistics_tokens, 1, MAX_TOKENS)
        int_at_least(owner, "final_tokens", self.final_tokens, 1, MAX_TOKENS)
        int_at_least(owner, "max_retries", self.max_retries, 0)


class AdditiveDP(OneShot):
    """Per-layer errors summed and minimised under the budget: "errors add up".

    It asks one ``layer_errors`` job; the worker answers
    ``data={"errors": {layer name: {str(setting): error}}}`` with a setting for every value
    `Space.layer_choices` lists. A unit's score at a level is minus the sum of its layers'
    errors at the settings that level gives; `Space.project` picks the feasible profile with
    the best total.

    Args:
        space: the search space (any scheme).
        config: tokens.
        seed: unused (`seeded` is False) but kept for a uniform constructor.

    Raises:
        ValueError: (in `tell`) an error is missing or not finite.

    Example:
        >>> from spaces import LayerInfo, Space, DropScheme
        >>> layers = [LayerInfo(f"l{i}", (8, 8), 64, block=i) for i in range(4)]
        >>> [str(c.job) for c in AdditiveDP(Space(layers, DropScheme(0.25))).ask(5)]
        ['layer_errors']
    """

    name: ClassVar[str] = "additive-dp"
    seeded = False

    def __init__(self, space: Space, config: AdditiveDPConfig | None = None, seed: int = 0) -> None:
        self.config = config or AdditiveDPConfig()
        super().__init__(space, seed, max_retries=self.config.max_retries, final_tokens=self.config.final_tokens)

    def _statistics(self) -> Candidate | None:
        return self._candidate(None, Fidelity(self.config.statistics_tokens, batch=FIXED_BATCH), job=Job.LAYER_ERRORS)

    def _choose(self, data: Mapping[str, Any] | None) -> tuple[Profile, dict[str, Any]]:
        return additive_dp_profile(self.space, data)


def additive_dp_profile(space: Space, data: Mapping[str, Any] | None) -> tuple[Profile, dict[str, Any]]:
    """The additive DP's profile from a ``layer_errors`` job's output (`AdditiveDP`; EvoPress's
    ``start: dp``).

    Returns:
        the feasible profile with the least summed error, and that predicted error.

    Raises:
        ValueError: an error is missing or not finite.
    """
    errors = (data or {}).get("errors")
    if not isinstance(errors, Mapping):
        raise ValueError(f"AdditiveDP: the layer_errors job must return data['errors'], got {data!r}")
    scores = []
    for unit, levels in zip(space.units, space.levels, strict=True):
        row = []
        for level in levels:
            total = 0.0
            for layer, setting in space.scheme.layer_settings(unit, level).items():
                try:
                    value = float(errors[layer][str(setting)])
                except (KeyError, TypeError):
                    raise ValueError(
                        f"AdditiveDP: no error for layer {layer!r} at setting {setting} (level {level} of "
                        f"{unit.name!r}) in the layer_errors job's output"
                    ) from None
                if not np.isfinite(value):
                    raise ValueError(f"AdditiveDP: the error of {layer!r} at setting {setting} is {value}")
                total += value
            row.append(-total)
        scores.append(row)
    profile = space.project(scores)
    return profile, {
        "predicted_error": -sum(
            row[levels.index(profile[unit.name])]
            for unit, levels, row in zip(space.units, space.levels, scores, strict=True)
        )
    }
