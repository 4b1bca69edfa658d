"""The worker side of the DASS-style search: a relaxed model over per-unit levels, and its loop.

Every unit i gets logits a_i over its levels (`Space.levels[i]`); p_i = softmax(a_i / tau),
with optional Gumbel noise and tau annealed geometrically from ``tau_start`` to ``tau_end``.
The model's weights stay frozen; only the logits train, against

    fitness(relaxed model) + mu * g + (rho / 2) * g**2,   g = (E[cost] - C) / cost_scale,

with E[cost] = sum_i p_i . c_i and mu <- mu + rho * g after every step (an augmented
Lagrangian). The augmented Lagrangian alone does not end on the budget: with Adam on a softmax
whose temperature falls, the multiplier winds up, every unit moves the same way at once, and
the logits saturate on one side of the budget (measured on the tiny Llama at 3.5 bits: 80
steps ended with the expected average at 4.0 bits, 14 % over). So the fitness is taken at the
distribution shifted onto the budget, softmax((a_i - s c_i / cost_scale) / tau), with the one
scalar s found by bisection at every step (the expected cost falls monotonically in s); the
penalty keeps the unshifted logits near the budget so that s stays small. The returned logits
are the shifted ones: their expected cost is the budget to float precision.

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

The relaxed weights are passed to the model with `torch.func.functional_call`: nothing is
copied into or written over the model, so the evaluator holds exactly the profile it held
before the job. After the last step the logits are returned as ``a_i / tau_end`` (their
softmax is the final distribution); the algorithm rounds them with `Space.project`. The
relaxed loss is never a result.
"""

from __future__ import annotations

import contextlib
import logging
import math
import time
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torch.func import functional_call

from spaces import Fidelity, RelaxParams

from . import fitness as fit
from .data import Batch

if TYPE_CHECKING:
    from .evaluator import Evaluator

logger = logging.getLogger(__name__)


class _Substituted(nn.Module):
    """The model, called with some parameters replaced by other tensors (nothing is written)."""

    def __init__(self, model: nn.Module, tensors: Mapping[str, torch.Tensor]) -> None:
        super().__init__()
        self.inner = model
        self.tensors = dict(tensors)

    def forward(self, **inputs: Any) -> Any:
        return functional_call(self.inner, self.tensors, args=(), kwargs=inputs)


@contextlib.contextmanager
def _frozen(model: nn.Module) -> Iterator[None]:
    """No model parameter requires a gradient inside; the flags are restored afterwards."""
    flags = [(p, p.requires_grad) for p in model.parameters()]
    for p, _ in flags:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p, flag in flags:
            p.requires_grad_(flag)


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
            order = self.evaluator._order(name).long()  # rank of each weight; the evaluator caches it
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
        ev._restore(saved)
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


def relax(evaluator: Evaluator, config: RelaxParams, fidelity: Fidelity) -> dict[str, Any]:
    """Run the DASS-style gradient loop on the evaluator's model and return the learned logits.

    Every step draws a fresh minibatch of ``fidelity.tokens`` tokens (batch
    ``(*fidelity.batch, step)``), takes the dense outputs from the evaluator's teacher cache,
    and makes one step on the logits. The evaluator's weights and settings are the same
    afterwards.

    Args:
        evaluator: the `Evaluator` (model, database, space, data, teacher).
        config: the loop's parameters (what `search.algorithms.DASS` sends); `init_logits`
            must fit the evaluator's space.
        fidelity: tokens per gradient step, the base of the minibatches' names, the split.

    Returns:
        ``{"logits": per unit, one number per level of ``space.levels[i]`` (softmax = the final
        distribution), "expected_cost": E[cost] under it, "target_cost": C, "mu": the final
        multiplier, "trace": one record per step}``; JSON-able.

    Raises:
        ValueError: `init_logits` that do not fit the space (see `RelaxParams.check_levels`), or
            more tokens than the data has.

    Example:
        >>> data = relax(evaluator, DASS(evaluator.space).ask(1)[0].params, Fidelity(512))  # doctest: +SKIP
        >>> evaluator.space.project([log_softmax(np.asarray(row)) for row in data["logits"]])  # doctest: +SKIP
    """
    space = evaluator.space
    config.check_levels(space.levels)
    start = time.perf_counter()
    relaxed = RelaxedModel(evaluator, config.init_logits, config.cost_scale)
    optimizer = torch.optim.SGD(relaxed.logits, lr=config.lr, momentum=0.9)
    generator = torch.Generator().manual_seed(config.seed) if config.gumbel else None
    target = config.target_cost / config.cost_scale
    mu = config.mu0
    trace: list[dict[str, float]] = []
    with _frozen(evaluator.model):
        for step in range(config.steps):
            tau = config.tau(step)
            probs = relaxed.probabilities(tau)
            shift = relaxed.budget_shift(tau, config.target_cost)
            # The fitness sees the distribution shifted onto the budget (with Gumbel noise, a
            # sample around it); the penalty pulls the unshifted logits towards the budget too,
            # so that the shift stays small and no logit saturates far from it.
            sampled = relaxed.probabilities(tau, shift, generator)
            batch = evaluator.data.batch(Fidelity(fidelity.tokens, (*fidelity.batch, step), fidelity.split))
            key = (fidelity.split, (*fidelity.batch, step), fidelity.tokens)
            optimizer.zero_grad(set_to_none=True)
            weights = relaxed.weights(sampled)
            value, grads = _fitness_gradients(evaluator, weights, batch, key)
            gap = relaxed.expected_cost(probs) / config.cost_scale - target
            penalty = mu * gap + 0.5 * config.rho * gap.square()
            # One backward pass through the relaxation: the penalty and the fitness share it.
            outputs = [penalty, *(weights[name] for name in grads)]
            torch.autograd.backward(outputs, [torch.ones_like(penalty), *grads.values()])
            _normalise_gradients(relaxed.logits)
            optimizer.step()
            violation = float(gap.detach())
            mu += config.rho * violation
            trace.append({"step": step, "tau": tau, "fitness": value, "gap": violation, "mu": mu, "shift": shift})
            logger.debug(
                "relax step %d: tau %.3g fitness %.6g gap %+.4g mu %.4g shift %.4g",
                step,
                tau,
                value,
                violation,
                mu,
                shift,
            )
    shift = relaxed.budget_shift(config.tau_end, config.target_cost)
    with torch.no_grad():
        expected = float(relaxed.expected_cost(relaxed.probabilities(config.tau_end, shift)))
    logger.info(
        "relaxed %d units in %d steps (%.1fs): expected cost %.6g vs target %.6g (gap %+.4f per cost scale)",
        len(space), config.steps, time.perf_counter() - start, expected, config.target_cost,
        (expected - config.target_cost) / config.cost_scale,
    )  # fmt: skip
    return {
        "logits": relaxed.final_logits(config.tau_end, shift),
        "expected_cost": expected,
        "target_cost": config.target_cost,
        "mu": mu,
        "trace": trace,
    }


def _normalise_gradients(logits: Sequence[torch.Tensor]) -> None:
    """Divide every logit's gradient by the root mean square over all of them.

    The step then has a fixed size (``lr``) whatever the fitness's scale, while the units keep
    their relative sizes: which layer matters more is the whole signal. Adam, which normalises
    each coordinate on its own, erased it: on all-MiniLM-L6-v2 at 70 % sparsity every unit moved
    alike and the rounded profile was the uniform one (held-out 0.309); with this, 60 steps gave
    0.272.
    """
    grads = [a.grad for a in logits if a.grad is not None]
    if not grads:
        return
    rms = torch.cat([g.reshape(-1) for g in grads]).square().mean().sqrt()
    if rms > 0:
        for g in grads:
            g.div_(rms)


def _fitness_gradients(
    evaluator: Evaluator, weights: Mapping[str, torch.Tensor], batch: Batch, key: tuple[Any, ...]
) -> tuple[float, dict[str, torch.Tensor]]:
    """The fitness of the relaxed weights on `batch` (as `Evaluator.measure` defines it), and its
    gradient with respect to each relaxed tensor that has one.

    The model's graph is built and freed one chunk at a time, on detached copies of the
    weights; the caller pushes the summed gradients through the relaxation once.
    """
    leaves = {name: w.detach().requires_grad_() for name, w in weights.items()}
    model = _Substituted(evaluator.model, leaves)
    with torch.no_grad():
        teacher = evaluator._teacher_parts(batch, key)
    count = batch.tokens if evaluator.task == "causal-lm" else int(batch.input_ids.shape[0])
    total = 0.0
    for chunk, reference in zip(batch.chunks(evaluator._rows()), teacher, strict=True):
        chunk = chunk.to(evaluator.device)
        outputs = evaluator._outputs(model, chunk)
        if evaluator.task == "causal-lm":
            keep = chunk.attention_mask.reshape(-1).bool()
            terms = fit.kl_terms(reference, outputs.reshape(-1, outputs.shape[-1])[keep])
        else:
            terms = fit.distortion_terms(reference, outputs, evaluator.metric)
        loss = terms.sum() / count
        torch.autograd.backward(loss)
        total += float(loss.detach())
    return total, {name: leaf.grad for name, leaf in leaves.items() if leaf.grad is not None}
