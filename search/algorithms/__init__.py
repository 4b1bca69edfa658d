"""Search algorithms as pure ask/tell objects (numpy and `spaces` only).

`ALGORITHMS` maps a name (the one a spec file uses) to the algorithm class and its config
dataclass; every class is built as ``cls(space, config, seed)``.

Example:
    >>> from spaces import LayerInfo, Space, SparsityScheme
    >>> layers = [LayerInfo(f"l{i}", (64, 64), 4096, block=i) for i in range(8)]
    >>> cls, config_cls = ALGORITHMS["evopress"]
    >>> algo = cls(Space(layers, SparsityScheme(0.5)), config_cls.preset("cpu-small"), 0)
    >>> len(algo.ask(64))
    16
"""

from __future__ import annotations

from ._queue import json_float, read_float
from ._stages import SCHEDULES, Schedule, matched_budget
from ._start import STARTS
from ._validate import MAX_COUNT, MAX_TOKENS, int_at_least, wrong_kind
from .base import Algorithm, Candidate, Result, candidate_from_dict, candidate_to_dict
from .baselines import OWL, AdditiveDP, AdditiveDPConfig, OWLConfig, Uniform, UniformConfig, owl_problem, owl_sparsities
from .constraint import Constraint, ConstraintError
from .dass import DASS, DASSConfig
from .evopress import EvoPress, EvoPressConfig
from .random_search import RandomSearch, RandomSearchConfig, RandomSearchSH, RandomSearchSHConfig

ALGORITHMS: dict[str, tuple[type[Algorithm], type]] = {
    cls.name: (cls, config)
    for cls, config in (
        (EvoPress, EvoPressConfig),
        (RandomSearch, RandomSearchConfig),
        (RandomSearchSH, RandomSearchSHConfig),
        (DASS, DASSConfig),
        (Uniform, UniformConfig),
        (OWL, OWLConfig),
        (AdditiveDP, AdditiveDPConfig),
    )
}
#: The algorithms that take a `constraint` (``cls(space, config, seed, constraint)``) and ask only
#: for profiles that meet it.
CONSTRAINED = ("evopress", "random", "random-sh")

__all__ = [
    "ALGORITHMS",
    "CONSTRAINED",
    "DASS",
    "MAX_COUNT",
    "MAX_TOKENS",
    "OWL",
    "SCHEDULES",
    "STARTS",
    "AdditiveDP",
    "AdditiveDPConfig",
    "Algorithm",
    "Candidate",
    "Constraint",
    "ConstraintError",
    "DASSConfig",
    "EvoPress",
    "EvoPressConfig",
    "OWLConfig",
    "RandomSearch",
    "RandomSearchConfig",
    "RandomSearchSH",
    "RandomSearchSHConfig",
    "Result",
    "Schedule",
    "Uniform",
    "UniformConfig",
    "candidate_from_dict",
    "candidate_to_dict",
    "int_at_least",
    "json_float",
    "matched_budget",
    "owl_problem",
    "owl_sparsities",
    "read_float",
    "wrong_kind",
]
