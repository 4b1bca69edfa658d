"""A relaxed model over per-unit levels: per-unit logits, and the weights a level distribution
induces (what the DASS-style loop, `loop`, trains).

How a unit's level distribution becomes weights:

- Nested databases (magnitude, Wanda): one ranking per layer. The weight at rank j is kept
  with probability 1 - sum_l p_l [j < k_l], k_l the layer's pruned count at level l. The
  forward pass uses the hard mask that prunes the expected count round(sum_l p_l k_l); the
  gradient flows through the soft keep-probabilities (the straight-through trick of BESA).
- Stored levels (SparseGPT, GPTQ, RTN, drop): the forward pass uses the stored weight of the
  level nearest (in cost) to the unit's expected cost, and the gradient flows through the
  mixture sum_l p_l W_l (straight-through, as for nested masks). A mixture rather than
  single-path sampling because it gives every level a gradient at every step, with no
  sampling variance on top of the minibatch's. The price is memory: every stored level of
  every layer is held at once (levels x the compressible weights: about 1.5 GB in float32 for
  all-MiniLM-L6-v2 at 17 levels, trivial for the tiny models); fine for small models, too
  much for billion-parameter ones, which should use a nested compressor for the search.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Sequence
from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ..evaluator import Evaluator

logger = logging.getLogger(__name__)


class RelaxedModel:
    """Per-unit logits over levels, and the relaxed weights a level distribution induces.

    Args:
        evaluator: holds the model, its inventory, database, space and dense teacher. Building
            a `RelaxedModel` over stored levels switches the evaluator through every level to
            read them, then puts back the settings it held.
        init_logits: per unit, the starting logits.
        cost_scale: divides the costs in `probabilities`' shift, so a shift reads in logits per level.

    Attributes:
        logits: per unit, a float64 leaf tensor that requires grad (the only thing that trains).
    """

    def __init__(self, evaluator: Evaluator, init_logits: Sequence[Sequence[float]], cost_scale: float = 1.0) -> None:
        self.evaluator = evaluator
        self.space = evaluator.space
        device = evaluator.device
        self.logits = [torch.tensor(row, dtype=torch.float64, device=device, requires_grad=True) for row in init_logits]
        self.costs = [torch.tensor(c, dtype=torch.float64, device=device) for c in self.space.costs]
        self.cost_scale = cost_scale
        # The costs padded into one matrix (levels past a unit's own add nothing), for bisection.
        width = max(len(c) for c in self.costs)
        self._padded_costs = torch.zeros((len(self.costs), width), dtype=torch.float64)
        for i, c in enumerate(self.costs):
            self._padded_costs[i, : len(c)] = c.cpu() / cost_scale
        # A mixed space's N:M levels are stored masks, not ranks of the nested ranking: read
        # every level of such a space as stored weights.
        self.nested = evaluator.db.nested and self.space.scheme.name != "mixed"
        self._unit_of = {layer.name: i for i, unit in enumerate(self.space.units) for layer in unit.layers}
        if self.nested:
            self._prepare_nested()
        else:
            self._prepare_stored()

    # --- setup ----------------------------------------------------------------------------------

    def _prepare_nested(self) -> None:
        teacher = self.evaluator.teacher_model
        self._counts: dict[str, torch.Tensor] = {}  # per layer, its pruned count at each level of its unit
        for unit, levels in zip(self.space.units, self.space.levels, strict=True):
            per_level = [self.space.scheme.layer_settings(unit, level) for level in levels]
            for layer in unit.layers:
                self._counts[layer.name] = torch.tensor([s[layer.name] for s in per_level], dtype=torch.float64)
        self._dense: dict[str, torch.Tensor] = {}
        self._order: dict[str, torch.Tensor] = {}
        self._bucket: dict[str, torch.Tensor] = {}
        self._sort: dict[str, torch.Tensor] = {}
        for name, counts in self._counts.items():
            weight = teacher.get_submodule(name).weight  # the dense copy, in the layer's own layout
            assert isinstance(weight, torch.Tensor)
            self._dense[name] = weight.detach()
            order = self.evaluator.pruning_order(name).long()  # rank of each weight; the evaluator caches it
            ascending, sort = torch.sort(counts)
            # Levels that keep the weight at rank j are those with k_l <= j: their number, per
            # weight, indexes the tail sums of the sorted probabilities (see `_nested_weight`).
            self._bucket[name] = torch.searchsorted(ascending.to(order.device), order.double(), right=True)
            self._order[name] = order
            self._sort[name] = sort.to(order.device)

    def _prepare_stored(self) -> None:
        ev = self.evaluator
        saved = ev.settings()
        width = max(len(levels) for levels in self.space.levels)
        weights: dict[str, list[torch.Tensor]] = {name: [] for name in self._unit_of}
        biases: dict[str, list[torch.Tensor]] = {}
        # Read every level through the evaluator's own switching, so a level means here exactly
        # what it means in an evaluation (dense 16-bit settings, dropped biases, ...).
        for k in range(width):
            ev.apply(self.space.from_array([levels[min(k, len(levels) - 1)] for levels in self.space.levels]))
            for name, i in self._unit_of.items():
                if k >= len(self.space.levels[i]):
                    continue
                module = ev.inventory.modules[name]
                weight = module.weight
                assert isinstance(weight, torch.Tensor)
                weights[name].append(weight.detach().clone())
                bias = getattr(module, "bias", None)
                if isinstance(bias, torch.Tensor):
                    biases.setdefault(name, []).append(bias.detach().clone())
        ev.restore(saved)
        self._stacks = {name: torch.stack(w) for name, w in weights.items()}  # (L, *weight shape)
        self._bias_stacks = {name: torch.stack(b) for name, b in biases.items()}  # (L, out)
        held = sum(t.numel() * t.element_size() for t in self._stacks.values())
        logger.info("relaxed model: holding every stored level of every layer, %.1f MB", held / 2**20)

    # --- the relaxation ---------------------------------------------------------------------------

    def probabilities(
        self, tau: float, shift: float = 0.0, generator: torch.Generator | None = None
    ) -> list[torch.Tensor]:
        """Per unit, softmax((logits - shift * costs / cost_scale + Gumbel noise) / tau); no
        noise without a generator."""
        out = []
        for a in self._shifted(shift):
            if generator is not None:
                u = torch.rand(a.shape, generator=generator, dtype=a.dtype).to(a.device)
                a = a - torch.log(-torch.log(u.clamp(1e-20, 1.0 - 1e-12)))
            out.append(torch.softmax(a / tau, dim=-1))
        return out

    def budget_shift(self, tau: float, target: float) -> float:
        """The multiplier s for which softmax((logits - s * costs / cost_scale) / tau) has
        expected cost `target` (to float precision).

        The expected cost falls monotonically as s grows (its derivative is minus a variance),
        from the dearest profile's cost to the cheapest's, so bisection finds s for any budget
        in between. Not differentiated: the fitness gradient is taken at the shifted point.
        """
        costs = self._padded_costs
        logits = torch.full(costs.shape, -math.inf, dtype=torch.float64)
        for i, a in enumerate(self.logits):
            logits[i, : len(a)] = a.detach().cpu()
        goal = target / self.cost_scale

        def excess(shift: float) -> float:
            return float((torch.softmax((logits - shift * costs) / tau, dim=-1) * costs).sum()) - goal

        low, high = -1.0, 1.0
        while excess(low) < 0 and low > -1e9:
            low *= 2
        while excess(high) > 0 and high < 1e9:
            high *= 2
        for _ in range(100):
            middle = 0.5 * (low + high)
            if excess(middle) > 0:
                low = middle
            else:
                high = middle
        return 0.5 * (low + high)

    def expected_cost(self, probs: Sequence[torch.Tensor]) -> torch.Tensor:
        """sum_i p_i . c_i in the space's cost units (float64, differentiable)."""
        return torch.stack([p @ c for p, c in zip(probs, self.costs, strict=True)]).sum()

    def weights(self, probs: Sequence[torch.Tensor]) -> dict[str, torch.Tensor]:
        """Parameter name -> the relaxed tensor that replaces it in the forward pass."""
        out: dict[str, torch.Tensor] = {}
        for name, i in self._unit_of.items():
            p = probs[i]
            if self.nested:
                out[f"{name}.weight"] = self._nested_weight(name, p)
            else:
                out.update(self._stored_weight(name, p))
        return out

    def _nested_weight(self, name: str, p: torch.Tensor) -> torch.Tensor:
        dense, counts = self._dense[name], self._counts[name].to(p.device)
        sorted_p = p[self._sort[name]]
        # tail[m] = probability that a level with the m-th smallest count or more prunes the weight
        tail = torch.cat([sorted_p.flip(0).cumsum(0).flip(0), sorted_p.new_zeros(1)])
        soft = (1.0 - tail[self._bucket[name]]).to(dense.dtype)
        hard = (self._order[name] >= torch.round(p.detach() @ counts)).to(dense.dtype)
        return dense * (hard + soft - soft.detach())

    def _stored_weight(self, name: str, p: torch.Tensor) -> dict[str, torch.Tensor]:
        out = {}
        for key, stacks in (("weight", self._stacks), ("bias", self._bias_stacks)):
            if name in stacks:
                stack = stacks[name]
                out[f"{name}.{key}"] = torch.tensordot(p.to(stack.dtype), stack, dims=1)
        return out

    def final_logits(self, tau: float, shift: float) -> list[list[float]]:
        """Per unit, the shifted logits / tau: their softmax is `probabilities(tau, shift)`."""
        return [(a.detach() / tau).cpu().tolist() for a in self._shifted(shift)]

    def _shifted(self, shift: float) -> list[torch.Tensor]:
        """Per unit, logits - shift * costs / cost_scale."""
        return [a - shift * c / self.cost_scale for a, c in zip(self.logits, self.costs, strict=True)]
