"""Search spaces: layers, level schemes, budgets, profiles. Pure numpy, no torch.

Example:
    >>> import numpy as np
    >>> from spaces import LayerInfo, Space, SparsityScheme
    >>> layers = [LayerInfo(f"block.{i}.fc", (128, 128), 128 * 128, block=i) for i in range(6)]
    >>> space = Space(layers, SparsityScheme(target=0.6), model="demo")
    >>> profile = space.sample(np.random.default_rng(0))
    >>> space.is_feasible(profile), round(space.average(profile), 3)
    (True, 0.6)
"""

from ._fidelity import Fidelity
from ._jobs import (
    PARAMS,
    Job,
    JobParams,
    LatencyParams,
    LayerErrorsParams,
    NoParams,
    OwlParams,
    RelaxParams,
    job_params,
    parse_job,
)
from ._layers import FUSED, GRANULARITIES, LayerInfo, Unit, make_units
from ._mixed import MixedScheme
from ._profile import Profile
from ._registry import SCHEMES, scheme_from_dict
from ._schemes import BitwidthScheme, DropScheme, LevelScheme, SparsityScheme
from ._space import Space

__all__ = [
    "FUSED",
    "GRANULARITIES",
    "PARAMS",
    "SCHEMES",
    "BitwidthScheme",
    "DropScheme",
    "Fidelity",
    "Job",
    "JobParams",
    "LatencyParams",
    "LayerErrorsParams",
    "LayerInfo",
    "LevelScheme",
    "MixedScheme",
    "NoParams",
    "OwlParams",
    "Profile",
    "RelaxParams",
    "Space",
    "SparsityScheme",
    "Unit",
    "job_params",
    "make_units",
    "parse_job",
    "scheme_from_dict",
]
