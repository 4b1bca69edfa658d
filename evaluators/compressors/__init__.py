"""Compressors as pure tensor functions: a weight (and calibration statistics) in, weights out.

Pruning: `magnitude_ranking` and `wanda_ranking` give nested orders that `apply_ranking` cuts at
any count; `sparsegpt_prune` gives one exactly-counted weight per requested count. Quantisation:
`rtn_quantize` and `gptq_quantize` return fake-quantised weights on `quant_params`'s grid.

Hessians are X^T X summed over calibration tokens, shape (in, in); weights are (out, in).

Example:
    >>> import torch
    >>> from evaluators.compressors import magnitude_ranking, apply_ranking
    >>> weight = torch.tensor([[0.5, -3.0], [2.0, -0.1]])
    >>> apply_ranking(weight, magnitude_ranking(weight), 2)
    tensor([[ 0., -3.],
            [ 2.,  0.]])
"""

from .gptq import gptq_quantize
from .ranking import apply_ranking, magnitude_ranking, wanda_ranking
from .rtn import quant_params, rtn_quantize
from .sparsegpt import sparsegpt_prune

__all__ = [
    "apply_ranking",
    "gptq_quantize",
    "magnitude_ranking",
    "quant_params",
    "rtn_quantize",
    "sparsegpt_prune",
    "wanda_ranking",
]
